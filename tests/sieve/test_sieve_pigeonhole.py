"""Conformance: Dovecot Pigeonhole's Sieve test suite run through Hato's interpreter.

Every ``.svtest`` file under ``../shared/vectors/sieve/pigeonhole/tests`` is classified as in
``TESTSUITE-EXTENSION.md`` (portable / needs Dovecot settings / Dovecot-only) and run with the
test-side ``vnd.dovecot.testsuite`` extension (``sieve_testsuite.py``). Files that pass are
each a test; the files that do not pass yet are listed below with the reason, and the totals
are asserted exactly so that both regressions and unrecorded improvements fail.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from sieve_testsuite import FileResult, run_file

SUITE = Path(__file__).resolve().parents[2] / ".." / "shared" / "vectors" / "sieve" / "pigeonhole"
TESTS = SUITE.resolve() / "tests"

_DOVECOT_ONLY = re.compile(
    r"test_binary_|vnd\.dovecot\.(pipe|filter|execute|debug|environment|report)"
    r"|test_imap_metadata|test_multiscript|\"extprograms|mboxmetadata|servermetadata"
)
_CONFIG = re.compile(r"test_config_(set|reload|unset)")


def classify(path: Path) -> str:
    """ "portable", "config" or "dovecot", by the same greps as TESTSUITE-EXTENSION.md."""
    text = path.read_text("utf-8", "surrogateescape")
    if _DOVECOT_ONLY.search(text):
        return "dovecot"
    if _CONFIG.search(text):
        return "config"
    return "portable"


ALL_FILES = sorted(p.relative_to(TESTS).as_posix() for p in TESTS.rglob("*.svtest"))
CLASSES = {name: classify(TESTS / name) for name in ALL_FILES}

# Files that do not pass, and why. Keep in step with the code: the totals test below fails
# when a file starts or stops passing.
KNOWN_FAILING = {
    # Hato keeps the RFC where Pigeonhole differs:
    "comparators/i-unicode-casemap.svtest": (
        "RFC 5228 §2.7.3: comparators other than i;octet/i;ascii-casemap must be required; "
        "Pigeonhole does not ask for comparator-i;unicode-casemap"
    ),
    "extensions/body/text.svtest": (
        "RFC 2045 §5.2: an invalid Content-Type (text/plain/stupid) is taken as text/plain, "
        "so body :text sees it; Pigeonhole skips the part"
    ),
    "extensions/vacation/reply.svtest": (
        'sieve_vacation_check_recipient=no is not mapped: RFC 5230 §4.5 "MUST NOT respond" '
        "unless the user's address is in To/Cc/Bcc/Resent-*"
    ),
    "failures/fuzz4.svtest": (
        'RFC 5228 §8.2: `:importance o c "..."` leaves the tag without its string and gives '
        "notify a test argument: Hato reports the compile error"
    ),
    # crash regressions without a defined outcome
    "failures/fuzz1.svtest": "reads a message never stored (test_message on a missing folder)",
    "failures/fuzz2.svtest": "reads a message never stored (test_message on a missing index)",
    # not implemented
    "execute/errors-cpu-limit.svtest": "sieve_max_cpu_time: Hato bounds runs by instruction count",
    "execute/smtp.svtest": (
        "redirect envelope sender settings, X-Sieve-Redirected-From and loop detection belong "
        "to the delivery layer and are not emulated"
    ),
    "extensions/enotify/mailto.svtest": (
        "mailto message composition: display names and duplicate removal in To/Cc, Subject "
        "length limit, Dovecot envelope settings"
    ),
    "extensions/vnd.dovecot/report/errors.svtest": "vnd.dovecot.report (Dovecot-only)",
    "plugins/extprograms/errors.svtest": "vnd.dovecot.pipe/filter/execute (Dovecot-only)",
}
# Totals reached (files and test blocks over the portable + config-dependent files).
EXPECTED = {"portable": (98, 105), "config": (15, 19), "blocks": (570, 596)}

RUNNABLE = [n for n in ALL_FILES if CLASSES[n] != "dovecot"]
PASSING = [n for n in RUNNABLE if n not in KNOWN_FAILING]


@functools.cache
def _run(name: str) -> FileResult:
    return run_file(TESTS / name)


def test_classification_matches_the_collection() -> None:
    counts = {
        c: sum(1 for v in CLASSES.values() if v == c) for c in ("portable", "config", "dovecot")
    }
    assert len(ALL_FILES) == 146
    assert counts == {"portable": 105, "config": 19, "dovecot": 22}


@pytest.mark.parametrize("name", PASSING)
def test_svtest_file_passes(name: str) -> None:
    result = _run(name)
    failed = [(c.name, c.reason) for c in result.cases if not c.passed]
    assert result.error is None, result.error
    assert result.cases, "no test blocks ran"
    assert not failed, failed


def test_totals_and_known_failures() -> None:
    results = {name: _run(name) for name in RUNNABLE}
    failing = {name for name, r in results.items() if not r.passed}
    assert failing == set(KNOWN_FAILING), (
        f"newly failing: {sorted(failing - set(KNOWN_FAILING))}; "
        f"now passing: {sorted(set(KNOWN_FAILING) - failing)}"
    )
    for kind in ("portable", "config"):
        names = [n for n in RUNNABLE if CLASSES[n] == kind]
        passed = sum(1 for n in names if results[n].passed)
        assert (passed, len(names)) == EXPECTED[kind], kind
    blocks = [c for r in results.values() for c in r.cases]
    assert (sum(c.passed for c in blocks), len(blocks)) == EXPECTED["blocks"]
