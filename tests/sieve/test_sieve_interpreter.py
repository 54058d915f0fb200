"""Running Sieve scripts: actions, implicit keep, extensions, limits (RFC 5228 and extensions)."""

from __future__ import annotations

from hato.codec.sieve import (
    Discard,
    Envelope,
    FileInto,
    Keep,
    Notify,
    Redirect,
    Reject,
    SieveLimits,
    SieveResult,
    Vacation,
    parse_script,
    run_script,
)
from hato.codec.sieve.compose import notifications, reject_mdn, vacation_reply
from hato.core.clock import FixedClock

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: Lunch plans\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"Date: Mon, 20 Jul 2009 21:44:43 +0300\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)
ENVELOPE = Envelope("alice@example.org", "bob@example.net")


class Tracker:
    def __init__(self, seen: set[str] | None = None) -> None:
        self.keys = seen or set()

    def seen(self, key: str, *, now: float) -> bool:
        return key in self.keys


def run(
    text: str,
    message: bytes = MESSAGE,
    *,
    envelope: Envelope = ENVELOPE,
    limits: SieveLimits | None = None,
    tracker: Tracker | None = None,
    environment: dict[str, str] | None = None,
    mailboxes: frozenset[str] = frozenset({"INBOX", "Work"}),
) -> SieveResult:
    return run_script(
        parse_script(text),
        message=message,
        envelope=envelope,
        environment=environment or {},
        mailbox_exists=lambda name: name in mailboxes,
        duplicate_tracker=tracker,
        clock=FixedClock(1_700_000_000.0),
        limits=limits or SieveLimits(),
    )


def test_empty_script_keeps() -> None:
    # RFC 5228 §2.10.2: implicit keep
    result = run("")
    assert result.actions == () and result.implicit_keep
    assert result.deliveries() == (Keep(),)


def test_fileinto_cancels_implicit_keep_copy_does_not() -> None:
    result = run('require "fileinto"; fileinto "Work";')
    assert result.actions == (FileInto("Work"),) and not result.implicit_keep
    result = run('require ["fileinto", "copy"]; fileinto :copy "Work";')
    assert result.implicit_keep  # RFC 3894 §3


def test_duplicate_actions_collapse() -> None:
    # RFC 5228 §2.10.3: keep twice is one keep; fileinto INBOX is keep
    result = run(
        'require "fileinto"; keep; fileinto "INBOX"; redirect "a@b.example"; '
        'redirect "A <a@b.example>";'
    )
    assert result.actions == (Keep(), Redirect("a@b.example"))


def test_header_matches_sets_match_variables() -> None:
    result = run(
        'require ["fileinto", "variables"];\n'
        'if header :matches "subject" "* plans" { fileinto "Box.${1}"; }'
    )
    assert result.actions == (FileInto("Box.Lunch"),)


def test_address_parts_and_subaddress() -> None:
    msg = MESSAGE.replace(b"bob@example.net", b"bob+lists@Example.NET")
    result = run(
        'require ["subaddress", "fileinto"];\n'
        'if address :detail "to" "lists" { fileinto "Lists"; }\n'
        'if address :domain "to" "example.net" { fileinto "Domain"; }',
        msg,
    )
    assert [a.mailbox for a in result.actions if isinstance(a, FileInto)] == ["Lists", "Domain"]


def test_envelope_null_sender() -> None:
    # RFC 5228 §5.4: the null reverse-path compares as ""
    result = run(
        'require "envelope"; if envelope :is "from" "" { discard; }',
        envelope=Envelope("", "bob@example.net"),
    )
    assert result.actions == (Discard(),)


def test_size_and_exists() -> None:
    result = run('if allof (size :under 1K, exists ["From", "Date"]) { discard; }')
    assert result.actions == (Discard(),)


def test_relational_count_with_numeric_comparator() -> None:
    result = run(
        'require ["relational", "comparator-i;ascii-numeric"];\n'
        'if address :count "eq" :comparator "i;ascii-numeric" ["to", "cc"] "1" { discard; }'
    )
    assert result.actions == (Discard(),)


def test_body_text_contains() -> None:
    result = run('require "body"; if body :text :contains "noon" { discard; }')
    assert result.actions == (Discard(),)


def test_japanese_subject_is_decoded() -> None:
    msg = MESSAGE.replace(b"Subject: Lunch plans", b"Subject: =?UTF-8?B?5pel5pys6Kqe44Gu5Lu25ZCN?=")
    result = run(
        'require "fileinto"; if header :contains "subject" "日本語" { fileinto "JP"; }', msg
    )
    assert result.actions == (FileInto("JP"),)


def test_imap4flags_apply_to_keep() -> None:
    result = run('require "imap4flags"; addflag "\\\\Seen"; addflag ["$Work", "\\\\seen"];')
    assert result.implicit_keep and result.keep_flags == ("\\Seen", "$Work")


def test_editheader_changes_the_stored_message() -> None:
    result = run('require "editheader"; addheader "X-Sieve-Test" "yes"; keep;')
    keep = result.actions[0]
    assert isinstance(keep, Keep) and keep.message is not None
    assert keep.message.startswith(b"X-Sieve-Test: yes\r\n")


def test_editheader_protects_received() -> None:
    msg = b"Received: from x\r\n" + MESSAGE
    result = run('require "editheader"; deleteheader "received"; keep;', msg)
    assert result.actions == (Keep(),)  # unchanged: RFC 5293 §6


def test_reject_conflicts_with_fileinto() -> None:
    # RFC 5429 §2.4: reject with a delivering action is refused; a runtime error keeps
    result = run('require ["reject", "fileinto"]; fileinto "Work"; reject "no";')
    assert result.errors and result.implicit_keep and result.actions == ()


def test_runtime_error_falls_back_to_implicit_keep() -> None:
    # RFC 5228 §2.10.6
    result = run('require "ihave"; discard; error "boom";')
    assert result.implicit_keep and result.actions == ()
    assert result.errors[0][1] == "boom"


def test_redirect_limit() -> None:
    text = "".join(f'redirect "u{i}@example.org";' for i in range(5))
    result = run(text, limits=SieveLimits(max_redirects=4))
    assert result.errors and "redirect" in result.errors[0][1]


def test_instruction_limit() -> None:
    text = 'require "variables";' + 'set "a" "x";' * 50
    result = run(text, limits=SieveLimits(max_instructions=10))
    assert result.errors and "instruction limit" in result.errors[0][1]


def test_vacation_reply_decision_and_compose() -> None:
    result = run('require "vacation"; vacation :days 3 "I am away";')
    vacation = result.actions[0]
    assert isinstance(vacation, Vacation)
    assert vacation.recipient == "alice@example.org"
    assert vacation.sender == "bob@example.net"
    assert vacation.subject == "Auto: Lunch plans"
    assert vacation.period == 3 * 86400
    assert result.implicit_keep  # RFC 5230 §4.7: vacation keeps the implicit keep
    reply = vacation_reply(vacation, now=0)
    assert reply is not None and reply.sender == ""
    assert b"Auto-Submitted: auto-replied" in reply.message
    assert b"In-Reply-To: <m1@example.org>" in reply.message


def test_vacation_not_sent_to_lists_bulk_or_null_sender() -> None:
    # RFC 3834 §2, RFC 5230 §4.6
    for msg, env in (
        (b"List-Id: <x.example>\r\n" + MESSAGE, ENVELOPE),
        (b"Precedence: bulk\r\n" + MESSAGE, ENVELOPE),
        (b"Auto-Submitted: auto-replied\r\n" + MESSAGE, ENVELOPE),
        (MESSAGE, Envelope("", "bob@example.net")),
        (MESSAGE, Envelope("MAILER-DAEMON@example.org", "bob@example.net")),
        (MESSAGE.replace(b"To: bob@example.net", b"To: other@example.net"), ENVELOPE),
    ):
        result = run('require "vacation"; vacation "away";', msg, envelope=env)
        assert result.actions == ()
        assert isinstance(result.withheld[0], Vacation)


def test_vacation_once_per_period_via_tracker() -> None:
    first = run('require "vacation"; vacation "away";')
    vacation = first.actions[0]
    assert isinstance(vacation, Vacation)
    again = run('require "vacation"; vacation "away";', tracker=Tracker({vacation.key}))
    assert again.actions == ()


def test_duplicate_marks_and_tracker() -> None:
    text = 'require "duplicate"; if duplicate { discard; }'
    first = run(text)
    assert first.actions == () and len(first.marks) == 1
    second = run(text, tracker=Tracker({first.marks[0].key}))
    assert second.actions == (Discard(),)


def test_notify_mailto_and_compose() -> None:
    result = run(
        'require "enotify";\n'
        'notify :importance "1" :message "New mail" "mailto:carol@example.com?subject=Hi";'
    )
    notify = result.actions[0]
    assert isinstance(notify, Notify) and notify.importance == 1
    out = notifications(notify, user="bob@example.net", envelope_sender="alice@example.org", now=0)
    assert [o.recipient for o in out] == ["carol@example.com"]
    assert b"Subject: Hi" in out[0].message and b"auto-notified" in out[0].message


def test_reject_mdn() -> None:
    result = run('require "reject"; reject "Go away";')
    assert result.actions == (Reject("Go away"),) and not result.implicit_keep
    mdn = reject_mdn(
        Reject("Go away"),
        original=MESSAGE,
        user="bob@example.net",
        envelope_sender="alice@example.org",
        now=0,
    )
    assert mdn is not None and mdn.recipient == "alice@example.org" and mdn.sender == ""
    assert b"disposition-notification" in mdn.message
    assert reject_mdn(Reject("x"), original=MESSAGE, user="b", envelope_sender="", now=0) is None


def test_date_and_currentdate() -> None:
    result = run(
        'require ["date", "relational"];\n'
        'if allof (date :zone "+0000" "date" "hour" "18", '
        'currentdate :value "ge" "year" "2023") { discard; }'
    )
    assert result.actions == (Discard(),)


def test_mailboxexists_and_create() -> None:
    result = run(
        'require ["mailbox", "fileinto"];\n'
        'if mailboxexists "Nope" { discard; } else { fileinto :create "Nope"; }'
    )
    assert result.actions == (FileInto("Nope", create=True),)


def test_environment_and_spamtest_from_host() -> None:
    result = run(
        'require ["environment", "spamtest", "relational", "comparator-i;ascii-numeric"];\n'
        'if allof (environment "remote-ip" "192.0.2.1",\n'
        '  spamtest :value "ge" :comparator "i;ascii-numeric" "7") { discard; }',
        environment={"remote-ip": "192.0.2.1", "vnd.hato.spamtest": "8"},
    )
    assert result.actions == (Discard(),)


def test_foreverypart_and_mime_header() -> None:
    msg = (
        b"From: a@example.org\r\nTo: bob@example.net\r\nSubject: x\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="bill.pdf"\r\n\r\nxx\r\n--b--\r\n'
    )
    result = run(
        'require ["foreverypart", "mime", "fileinto"];\n'
        "foreverypart {\n"
        '  if header :mime :param "filename" "Content-Disposition" "*.pdf" { }\n'
        '  if header :mime :subtype "Content-Type" "pdf" { fileinto "PDF"; break; }\n'
        "}",
        msg,
    )
    assert result.actions == (FileInto("PDF"),)


def test_include_with_globals() -> None:
    texts = {"sub": 'require ["include", "variables"]; global "who"; set "who" "inner";'}
    script = parse_script(
        'require ["include", "variables", "fileinto"]; global "who";\n'
        'include "sub"; fileinto "${who}";',
        include_loader=lambda loc, n: texts.get(n),
    )
    result = run_script(
        script,
        message=MESSAGE,
        envelope=ENVELOPE,
        environment={},
        mailbox_exists=lambda n: True,
        duplicate_tracker=None,
        clock=FixedClock(),
        limits=SieveLimits(),
    )
    assert result.actions == (FileInto("inner"),)
