"""Hypothesis: parse_script never fails with anything but SieveError, whatever the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hato.codec.sieve import SieveError, parse_script

_WORDS = [
    "require",
    "if",
    "elsif",
    "else",
    "keep",
    "discard",
    "stop",
    "redirect",
    "fileinto",
    "header",
    "address",
    "envelope",
    "exists",
    "size",
    "not",
    "anyof",
    "allof",
    "true",
    "false",
    "set",
    "string",
    "vacation",
    "body",
    "date",
    "include",
    "foreverypart",
    "notify",
    "addheader",
    "deleteheader",
    "setflag",
    "hasflag",
    ":is",
    ":contains",
    ":matches",
    ":regex",
    ":value",
    ":count",
    ":comparator",
    ":over",
    ":under",
    ":copy",
    ":flags",
    ":days",
    ":mime",
    ":anychild",
    ":index",
    ":last",
    '"fileinto"',
    '"variables"',
    '"body"',
    '"a*b"',
    '"${1}"',
    '"${hex:41}"',
    '"${unicode:1F600}"',
    '"x@y.example"',
    '"i;ascii-numeric"',
    '"gt"',
    "12",
    "3K",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ";",
    ",",
    "text:\nline\n.\n",
    "#c\n",
    "/* c */",
    '"\\"',
    "\x00",
    "é",
    "$",
]


def _check(text: str) -> None:
    try:
        parse_script(text)
    except SieveError as exc:
        assert exc.errors and all(isinstance(line, int) for line, _ in exc.errors)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_sieve_error(text: str) -> None:
    _check(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=60))
def test_token_soup_raises_only_sieve_error(words: list[str]) -> None:
    _check('require ["fileinto", "variables", "body", "regex", "relational"];\n' + " ".join(words))


_ALL = (
    'require ["fileinto", "variables", "body", "regex", "relational", "vacation", "enotify",'
    ' "editheader", "imap4flags", "mime", "foreverypart", "extracttext", "date", "index"];\n'
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_WORDS), max_size=60))
def test_scripts_that_compile_run_without_crashing(words: list[str]) -> None:
    from hato.codec.sieve import Envelope, SieveLimits, run_script
    from hato.core.clock import FixedClock

    try:
        script = parse_script(_ALL + " ".join(words))
    except SieveError:
        return
    result = run_script(
        script,
        message=b"From: a@example.org\r\nTo: b@example.net\r\nSubject: x\r\n\r\nbody\r\n",
        envelope=Envelope("a@example.org", "b@example.net"),
        environment={},
        mailbox_exists=lambda name: True,
        duplicate_tracker=None,
        clock=FixedClock(),
        limits=SieveLimits(),
    )
    # the message is never dropped without an explicit action (RFC 5228 §2.10.2)
    assert result.implicit_keep or result.actions
