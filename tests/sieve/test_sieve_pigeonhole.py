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
    # RFC 5228 §2.7.3 requires `require "comparator-i;unicode-casemap"`; Pigeonhole does not
    "comparators/i-unicode-casemap.svtest": "unrequired comparator is an error (RFC 5228 §2.7.3)",
    "execute/address-normalize.svtest": "redirect envelope address normalisation",
    "execute/errors.svtest": "fileinto into a missing mailbox / invalid name at execution",
    "execute/errors-cpu-limit.svtest": "CPU-time limit (Hato counts instructions)",
    "execute/smtp.svtest": "Dovecot redirect envelope settings and X-Sieve-Redirected-From",
    "extensions/body/content.svtest": "prologue/epilogue boundaries, raw rfc822 exactness",
    "extensions/body/text.svtest": "invalid text/plain/stupid content type read as text",
    "extensions/editheader/addheader.svtest": "line breaks in added values",
    "extensions/editheader/errors.svtest": "Dovecot size settings and error wording",
    "extensions/editheader/protected.svtest": "values with line breaks refused at compile time",
    "extensions/enotify/encodeurl.svtest": "variable size limit in UTF-8 octets after :encodeurl",
    "extensions/enotify/limits.svtest": "Dovecot sieve_notify_max_notifications=0 semantics",
    "extensions/enotify/mailto.svtest": "Dovecot mailto envelope settings",
    "extensions/envelope.svtest": "RFC 5321 path syntax checks and source routes",
    "extensions/extlists/basic.svtest": "extlists (RFC 6134) not implemented",
    "extensions/extlists/errors.svtest": "extlists (RFC 6134) not implemented",
    "extensions/extlists/multiple.svtest": "extlists (RFC 6134) not implemented",
    "extensions/extlists/valid_ext_list.svtest": "extlists (RFC 6134) not implemented",
    "extensions/imap4flags/execute.svtest": "Dovecot's automatic $HasNoAttachment keyword",
    "extensions/imap4flags/flagstore.svtest": "Dovecot's automatic $HasNoAttachment keyword",
    "extensions/metadata/errors.svtest": "mboxmetadata (RFC 5490 §3) not implemented",
    "extensions/spamvirustest/spamtest.svtest": "scores from Dovecot header settings",
    "extensions/spamvirustest/spamtestplus.svtest": "scores from Dovecot header settings",
    "extensions/spamvirustest/virustest.svtest": "scores from Dovecot header settings",
    "extensions/vacation/message.svtest": "Dovecot subject templates and settings",
    "extensions/vacation/reply.svtest": "Dovecot settings and X-Auto-Response-Suppress",
    "extensions/variables/limits.svtest": "variable size limit counted in characters",
    "extensions/vnd.dovecot/report/errors.svtest": "vnd.dovecot.report not implemented",
    "failures/fuzz1.svtest": "Dovecot's automatic $HasNoAttachment keyword",
    "failures/fuzz2.svtest": "Dovecot's automatic $HasNoAttachment keyword",
    "failures/fuzz4.svtest": "Pigeonhole accepts a tag without its parameter here",
    "multiscript/conflicts.svtest": "Pigeonhole's multiscript conflict resolution",
    "plugins/extprograms/errors.svtest": "vnd.dovecot.pipe not implemented",
}
# Totals reached (files and test blocks over the portable + config-dependent files).
EXPECTED = {"portable": (88, 105), "config": (3, 19), "blocks": (498, 584)}

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
