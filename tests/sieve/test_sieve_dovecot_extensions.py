"""Pigeonhole's vendor extensions in the interpreter: vnd.dovecot.report (spec §3, RFC 5965
reports), vnd.dovecot.pipe/filter/execute (spec-bosch-sieve-extprograms §3-§8) with a fake
program host, and vnd.dovecot.debug."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.codec.sieve import (
    ALL_EXTENSIONS,
    DOVECOT_EXTENSIONS,
    Envelope,
    FileInto,
    Keep,
    Pipe,
    Report,
    SieveError,
    SieveLimits,
    SieveResult,
    parse_script,
    run_script,
)
from hato.codec.sieve.ext_extprograms import (
    Outcome,
    ProgramCall,
    ProgramResult,
    argument_problem,
    name_problem,
)
from hato.codec.sieve.ext_report import FEEDBACK_TYPES, feedback_type, report_message
from hato.core.clock import FixedClock

EXT = ALL_EXTENSIONS | DOVECOT_EXTENSIONS
MESSAGE = (
    b"From: spammer@example.com\r\nTo: victim@example.org\r\nSubject: Offers\r\n"
    b"Message-ID: <1@example.com>\r\n\r\nWe have very interesting offers!\r\n"
)
ENVELOPE = Envelope("spammer@example.com", "victim@example.org", "all@example.org")


@dataclass
class FakePrograms:
    """Answers program calls from a table and records them."""

    table: dict[str, ProgramResult] = field(default_factory=dict)
    calls: list[ProgramCall] = field(default_factory=list)

    def run(self, call: ProgramCall) -> ProgramResult:
        self.calls.append(call)
        return self.table.get(call.program, ProgramResult(Outcome.UNKNOWN, detail="none"))


def run(
    text: str,
    *,
    programs: FakePrograms | None = None,
    limits: SieveLimits | None = None,
    envelope: Envelope = ENVELOPE,
) -> SieveResult:
    return run_script(
        parse_script(text, extensions=EXT),
        message=MESSAGE,
        envelope=envelope,
        environment={"host": "mx.example.org"},
        mailbox_exists=lambda name: True,
        duplicate_tracker=None,
        clock=FixedClock(1_700_000_000.0),
        limits=limits or SieveLimits(),
        programs=programs,
    )


def compile_errors(text: str) -> list[str]:
    with pytest.raises(SieveError) as info:
        parse_script(text, extensions=EXT)
    return [message for _, message in info.value.errors]


# -- vnd.dovecot.report ---------------------------------------------------------------------


def test_the_extensions_are_only_there_when_the_host_offers_them() -> None:
    with pytest.raises(SieveError, match="unknown Sieve capability"):
        parse_script('require "vnd.dovecot.report";\n')  # ALL_EXTENSIONS by default
    parse_script('require "vnd.dovecot.report";\n', extensions=EXT)


@pytest.mark.parametrize("kind", sorted(FEEDBACK_TYPES))
def test_every_registered_feedback_type_compiles(kind: str) -> None:
    parse_script(
        f'require "vnd.dovecot.report";\nreport "{kind}" "x" "a@example.com";\n', extensions=EXT
    )


@pytest.mark.parametrize(
    ("kind", "why"),
    [("?????", "MIME token"), ("spam", "registered"), ("", "MIME token"), ("ab use", "token")],
)
def test_a_bad_literal_feedback_type_is_a_compile_error(kind: str, why: str) -> None:
    errors = compile_errors(f'require "vnd.dovecot.report";\nreport "{kind}" "x" "a@b.example";\n')
    assert why in errors[0]


def test_a_bad_literal_address_is_a_compile_error() -> None:
    errors = compile_errors('require "vnd.dovecot.report";\nreport "abuse" "x" "not an address";\n')
    assert "specified report address" in errors[0]


def test_a_computed_feedback_type_is_checked_at_run_time() -> None:
    script = (
        'require ["vnd.dovecot.report", "variables"];\n'
        'set "t" "bulk";\nreport "${t}" "x" "a@b.example";\n'
    )
    result = run(script)
    assert result.implicit_keep and not result.actions  # RFC 5228 §2.10.6
    assert "feedback type 'bulk' is invalid" in result.errors[0][1]


def test_report_keeps_the_implicit_keep_and_sends_one_per_type_and_recipient() -> None:
    script = (
        'require "vnd.dovecot.report";\n'
        'report "abuse" "first" "abuse@example.net";\n'
        'report "Abuse" "second" "ABUSE@example.net";\n'  # the same report: the first text
        'report :headers_only "fraud" "third" "abuse@example.net";\n'
    )
    result = run(script)
    assert result.implicit_keep  # the extension's §3: MUST NOT cancel the implicit keep
    assert result.actions == (
        Report("abuse", "first", "abuse@example.net"),
        Report("fraud", "third", "abuse@example.net", headers_only=True),
    )


def test_no_report_to_the_account_running_the_script() -> None:
    result = run('require "vnd.dovecot.report";\nreport "abuse" "x" "victim@example.org";\n')
    assert result.actions == ()  # the extension's §3 MUST NOT
    assert "not sending a report" in result.warnings[0][1]


def _parts(data: bytes) -> list[email.message.Message]:
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "feedback-report"  # RFC 5965 §2 (a)
    payload = parsed.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, email.message.Message)]


def test_the_report_message_is_rfc_5965() -> None:
    action = Report("abuse", "This spam slipped through.", "spam-report@example.net")
    out = report_message(
        action,
        original=MESSAGE,
        envelope=ENVELOPE,
        user="victim@example.org",
        now=0.0,
        hostname="mx.example.org",
    )
    assert out.sender == "" and out.recipient == "spam-report@example.net"
    head = email.message_from_bytes(out.message)
    assert head["Auto-Submitted"] == "auto-generated (report)"  # the extension's MUST
    assert head["From"] == "postmaster@example.org"
    assert head["Subject"] == "Report: Offers"
    text, feedback, original = _parts(out.message)
    assert text.get_content_type() == "text/plain"
    assert "This spam slipped through." in str(text.get_payload())
    assert feedback.get_content_type() == "message/feedback-report"
    fields = out.message.split(b"message/feedback-report\r\n\r\n", 1)[1].split(b"\r\n\r\n")[0]
    lines = fields.decode().split("\r\n")
    # RFC 5965 §3.1: the required fields; §3.2/§3.3 what delivery knows
    assert lines[:3] == ["Version: 1", "Feedback-Type: abuse", lines[2]]
    assert lines[2].startswith("User-Agent: Hato/")
    assert "Original-Mail-From: <spammer@example.com>" in lines
    assert "Original-Rcpt-To: <all@example.org>" in lines
    assert "Reporting-MTA: dns; mx.example.org" in lines
    assert original.get_content_type() == "message/rfc822"
    assert b"We have very interesting offers!" in out.message


def test_headers_only_reports_carry_no_body() -> None:
    action = Report("not-spam", "fine", "ham@example.net", headers_only=True)
    out = report_message(action, original=MESSAGE, envelope=ENVELOPE, user="v@example.org", now=0)
    *_, original = _parts(out.message)
    assert original.get_content_type() == "text/rfc822-headers"  # RFC 6522
    assert b"Subject: Offers" in out.message
    assert b"interesting offers" not in out.message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("", "postmaster@example.org"),
        ("postmaster", "postmaster@example.org"),
        ("sender", "spammer@example.com"),
        ("recipient", "victim@example.org"),
        ("orig_recipient", "all@example.org"),
        ("<reporter@example.org>", "reporter@example.org"),
        ("<>", "postmaster@example.org"),
    ],
)
def test_report_from_setting(setting: str, expected: str) -> None:
    action = Report("abuse", "x", "r@example.net")
    out = report_message(
        action,
        original=MESSAGE,
        envelope=ENVELOPE,
        user="victim@example.org",
        now=0,
        setting=setting,
    )
    assert email.message_from_bytes(out.message)["From"] == expected


@given(st.text(max_size=30))
def test_feedback_type_accepts_exactly_registered_tokens(text: str) -> None:
    value, why = feedback_type(text)
    if value is None:
        assert why
    else:
        assert value in FEEDBACK_TYPES and value == text.strip(" \t").lower()


# -- extprograms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../frop",
        "a/b",
        "x\x1a",
        "x\x7f",
        "x\x85",
        "x\u2028",
        "x\u2029",
        "",
        ".",
        "..",
        "e\u0301",
        "a" * 129,
    ],
)
def test_bad_program_names(name: str) -> None:
    assert name_problem(name) is not None


@pytest.mark.parametrize("name", ["program", "sa-learn", "caf\u00e9", "a" * 128, "x.sh"])
def test_good_program_names(name: str) -> None:
    assert name_problem(name) is None


@given(st.text(max_size=140))
def test_a_name_with_a_slash_or_control_never_passes(name: str) -> None:
    bad = any(c == "/" or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name)
    if bad:
        assert name_problem(name) is not None


def test_arguments_limits() -> None:
    assert argument_problem(["a"] * 16) is None  # §4: MUST accept 16 ...
    assert argument_problem(["x" * 1024]) is None  # ... of 1024 octets
    assert argument_problem(["a\r\nb"]) is not None
    assert argument_problem(["a"] * 65) is not None


def test_program_names_must_be_constant() -> None:
    errors = compile_errors(
        'require ["vnd.dovecot.pipe", "variables"];\nset "p" "x";\npipe "${p}";\n'
    )
    assert "constant string" in errors[0]


def test_a_literal_argument_with_a_line_break_is_a_compile_error() -> None:
    errors = compile_errors('require "vnd.dovecot.execute";\nexecute "p" ["a\nb"];\n')
    assert "contains CR, LF or NUL" in errors[0]


def test_pipe_is_an_action_that_cancels_the_keep_unless_copy() -> None:
    result = run('require "vnd.dovecot.pipe";\npipe :try "sa-learn" ["--spam"];\n')
    (pipe,) = result.actions
    assert isinstance(pipe, Pipe) and not result.implicit_keep  # §5
    assert (pipe.program, pipe.args, pipe.try_) == ("sa-learn", ("--spam",), True)
    assert dict(pipe.environment)["ORIG_RECIPIENT"] == "all@example.org"
    copy = run('require ["vnd.dovecot.pipe", "copy"];\npipe :copy "printer";\n')
    assert copy.implicit_keep  # §5.2


def test_pipe_twice_to_one_program_and_pipe_with_reject_are_errors() -> None:
    twice = run('require "vnd.dovecot.pipe";\npipe "a";\npipe "b";\npipe "a";\n')
    assert "already piped" in twice.errors[0][1]  # §5.1
    rejected = run('require ["vnd.dovecot.pipe", "reject"];\npipe "a";\nreject "no";\n')
    assert "conflicts" in rejected.errors[0][1]  # §5.1: incompatible with reject


def test_filter_replaces_the_message_for_the_rest_of_the_run() -> None:
    new = b"Subject: replaced\nX-Filtered: yes\n\nnew body\n"
    host = FakePrograms({"clean": ProgramResult(Outcome.OK, new)})
    script = (
        'require ["vnd.dovecot.filter", "fileinto"];\n'
        'filter "clean" ["--fast"];\n'
        'if header "x-filtered" "yes" { fileinto "Clean"; }\n'
    )
    result = run(script, programs=host)
    (call,) = host.calls
    assert (call.kind, call.program, call.args, call.data) == (
        "filter",
        "clean",
        ("--fast",),
        MESSAGE,
    )
    assert call.environment["HOST"] == "mx.example.org"
    (filed,) = result.actions
    assert isinstance(filed, FileInto)
    assert filed.message == b"Subject: replaced\r\nX-Filtered: yes\r\n\r\nnew body\r\n"


@pytest.mark.parametrize("outcome", [Outcome.FALSE, Outcome.FAILED])
def test_a_failing_filter_changes_nothing_and_is_no_error(outcome: Outcome) -> None:
    host = FakePrograms({"p": ProgramResult(outcome, b"Subject: x\r\n\r\n")})
    result = run('require "vnd.dovecot.filter";\nfilter "p";\n', programs=host)
    assert not result.errors  # §6
    assert result.deliveries() == (Keep(None, None),)


def test_filter_and_execute_as_tests() -> None:
    host = FakePrograms(
        {"yes": ProgramResult(Outcome.OK, b"out"), "no": ProgramResult(Outcome.FALSE, b"junk")}
    )
    script = (
        'require ["vnd.dovecot.execute", "vnd.dovecot.filter", "variables", "fileinto"];\n'
        'if execute :output "v" "no" { fileinto "Wrong"; }\n'
        'if filter "missing" { fileinto "Wrong2"; }\n'  # §8 MAY: unknown is false
        'if execute :input "in" :output "v" "yes" { fileinto "${v}"; }\n'
    )
    result = run(script, programs=host)
    assert not result.errors
    assert [a.mailbox for a in result.actions] == ["out"]  # type: ignore[union-attr]
    assert host.calls[-1].data == b"in"


def test_execute_failure_leaves_the_variable_and_unknown_is_an_error_as_command() -> None:
    host = FakePrograms({"bad": ProgramResult(Outcome.FALSE, b"junk")})
    script = (
        'require ["vnd.dovecot.execute", "variables", "fileinto"];\n'
        'set "v" "kept";\nexecute :output "v" "bad";\nfileinto "${v}";\n'
    )
    assert [a.mailbox for a in run(script, programs=host).actions] == ["kept"]  # type: ignore[union-attr]
    failed = run('require "vnd.dovecot.execute";\nexecute "gone";\n', programs=host)
    assert "not found" in failed.errors[0][1]
    none = run('require "vnd.dovecot.execute";\nexecute "gone";\n')  # no host programs
    assert none.errors


def test_execute_pipe_gives_the_current_message() -> None:
    host = FakePrograms({"cat": ProgramResult(Outcome.OK, b"")})
    run('require "vnd.dovecot.execute";\nexecute :pipe "cat";\n', programs=host)
    assert host.calls[0].data == MESSAGE


def test_debug_log_goes_to_the_result() -> None:
    result = run(
        'require ["vnd.dovecot.debug", "variables"];\nset "a" "b";\ndebug_log "saw ${a}";\n'
    )
    assert result.debug == ("saw b",)


def test_program_runs_are_limited() -> None:
    host = FakePrograms({"p": ProgramResult(Outcome.OK, b"x")})
    script = 'require "vnd.dovecot.execute";\n' + 'execute "p";\n' * 3
    result = run(script, programs=host, limits=SieveLimits(max_program_runs=2))
    assert len(host.calls) == 2 and "program runs exceeds" in result.errors[0][1]
