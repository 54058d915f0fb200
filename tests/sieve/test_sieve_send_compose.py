"""What Sieve sends for the user, composed by ``hato.codec.sieve.compose``: the redirect's
envelope sender and loop mark (RFC 5228 §4.2), mailto notifications (RFC 5436 §2: display
names, each address once, the Subject cut as RFC 5435 §3.8 allows, the envelope sender
policy), and the run's CPU-time bound."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.codec.mime import parse_message
from hato.codec.sieve import Envelope, Notify, SieveLimits, parse_script, run_script
from hato.codec.sieve.compose import (
    mark_redirected,
    notifications,
    policy_sender,
    redirect_loop,
    redirect_sender,
)
from hato.core.clock import FixedClock

ENV = Envelope("sirius@example.org", "timo@example.net", "tss@example.net")
NULL = Envelope("", "timo@example.net")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("sender", "sirius@example.org"),
        (" recipient ", "timo@example.net"),
        ("orig_recipient", "tss@example.net"),
        ("user_email", "t.sirainen@example.net"),
        ("<backscatter@example.net> ", "backscatter@example.net"),
        ("<>", ""),
        ("", None),
        ("nonsense", None),
    ],
)
def test_policy_sender_names(setting: str, expected: str | None) -> None:
    assert policy_sender(setting, envelope=ENV, user_email="t.sirainen@example.net") == expected


def test_policy_user_email_falls_back_to_the_final_recipient() -> None:
    assert policy_sender("user_email", envelope=ENV, user_email=None) == "timo@example.net"


@pytest.mark.parametrize("setting", ["", "recipient", "<bounces@example.net>", "user_email"])
def test_redirect_keeps_an_empty_sender_empty(setting: str) -> None:
    # RFC 5228 §4.2: "the outgoing message MUST also have an empty envelope sender address"
    assert redirect_sender(setting, envelope=NULL, user_email="u@example.net") == ""


def test_redirect_sender_defaults_to_the_original() -> None:
    assert redirect_sender("", envelope=ENV, user_email=None) == "sirius@example.org"
    assert redirect_sender("recipient", envelope=ENV, user_email=None) == "timo@example.net"


MESSAGE = b"Received: from a\r\n\tby b; x\r\nSubject: hi\r\n\r\nbody\r\n"


def test_mark_and_loop() -> None:
    marked = mark_redirected(MESSAGE, user="timo@example.net")
    assert marked == (
        b"Received: from a\r\n\tby b; x\r\nX-Sieve-Redirected-From: timo@example.net\r\n"
        b"Subject: hi\r\n\r\nbody\r\n"
    )
    assert redirect_loop(marked, users=("Timo@Example.net",))
    assert not redirect_loop(marked, users=("other@example.net", ""))
    assert not redirect_loop(MESSAGE, users=("timo@example.net",))


@given(st.binary(max_size=300), st.sampled_from(["a@b.example", "x.y@z.example"]))
def test_a_marked_message_is_always_seen_as_a_loop(data: bytes, user: str) -> None:
    # whatever the message holds, the field the mark adds is found again in its header
    if b"\r\n\r\n" not in data or b"\n\n" in data:
        data = b"Subject: s\r\n\r\n" + data.replace(b"\n\n", b"\n")
    marked = mark_redirected(data, user=user)
    assert redirect_loop(marked, users=(user,))
    field_ = f"X-Sieve-Redirected-From: {user}\r\n".encode()
    assert marked.replace(field_, b"", 1) == data  # one field added, nothing else changed


def _notify(method: str, *, message: str = "new mail", sender: str | None = None) -> Notify:
    return Notify(method, sender, 2, (), message)


def _header(data: bytes, name: str) -> str | None:
    field_ = parse_message(data).header(name)
    return field_.text() if field_ is not None else None


def test_mailto_display_names_and_each_address_once() -> None:
    uri = (
        "mailto:%3D%3Futf-8%3Fq%3FG%3DC3%3DBCnther%3F%3D%20M.%20Karotte"
        "%20%3Cg.m.karotte%40example.com%3E,plain@example.com"
        "?cc=plain@example.com,%22Smith%2C%20Bob%22%20%3Cbob@example.com%3E"
    )
    out = notifications(_notify(uri), user="u@example.org", envelope_sender="s@x.example", now=0)
    assert [o.recipient for o in out] == ["g.m.karotte@example.com", "plain@example.com",
                                          "bob@example.com"]  # fmt: skip
    data = out[0].message
    assert _header(data, "to") == "Günther M. Karotte <g.m.karotte@example.com>, plain@example.com"
    assert _header(data, "cc") == '"Smith, Bob" <bob@example.com>'  # the To duplicate dropped


def test_mailto_subject_is_cut_at_256_characters() -> None:
    long = "".join(itertools.islice(itertools.cycle("日本語テキスト"), 400))
    (out,) = notifications(
        _notify("mailto:a@example.com", message=long), user="u@x", envelope_sender="s@x", now=0
    )
    subject = _header(out.message, "subject")
    assert subject is not None and len(subject) == 256  # RFC 5435 §3.8 MAY truncate
    assert subject == long[:255] + "\u2026"


@pytest.mark.parametrize(
    ("setting", "original", "expected"),
    [
        ("", ENV, "nico@frop.example"),  # :from
        ("sender", ENV, "sirius@example.org"),
        ("recipient", ENV, "timo@example.net"),
        ("user_email", ENV, "b.wortel@example.org"),
        ("sender", NULL, ""),  # never a sender when the trigger had <>
    ],
)
def test_mailto_envelope_sender(setting: str, original: Envelope, expected: str) -> None:
    out = notifications(
        _notify("mailto:a@example.com?cc=b@example.com", sender="nico@frop.example"),
        user="bertus@frop.example",
        envelope_sender=original.from_,
        now=0,
        setting=setting,
        envelope=original,
        user_email="b.wortel@example.org",
    )
    assert [o.sender for o in out] == [expected, expected]
    assert _header(out[0].message, "from") == "nico@frop.example"


LOOP = """require ["variables"];
set "n" "x";
""" + "\n".join(f'if string "${{n}}" "y{i}" {{ keep; }}' for i in range(50))


def _cpu_run(limit: float, ticks: list[float]) -> tuple[tuple[int, str], ...]:
    script = parse_script(LOOP)
    clock = iter(ticks)
    result = run_script(
        script,
        message=b"Subject: x\r\n\r\n",
        envelope=ENV,
        environment={},
        mailbox_exists=lambda name: True,
        duplicate_tracker=None,
        clock=FixedClock(0),
        limits=SieveLimits(max_cpu_time=limit),
        cpu_clock=lambda: next(clock),
    )
    return result.errors


def test_cpu_time_limit_stops_the_run() -> None:
    # a CPU clock that advances one second per instruction: the third goes over 2 s
    errors = _cpu_run(2.0, [float(i) for i in range(200)])
    assert errors and "CPU time limit (2s)" in errors[0][1]
    assert errors[0][0] == 3  # the instruction that went over, by its line


def test_cpu_time_limit_zero_means_none() -> None:
    assert _cpu_run(0, [float(i) for i in range(200)]) == ()
    assert _cpu_run(2.0, [0.0] * 200) == ()
