"""Conformance: Dovecot Pigeonhole's Sieve test suite run through Hato's interpreter.

Every ``.svtest`` file under ``../shared/vectors/sieve/pigeonhole/tests`` is classified as in
``TESTSUITE-EXTENSION.md`` (portable / needs Dovecot settings / Dovecot-only) and run with the
test-side ``vnd.dovecot.testsuite`` extension (``sieve_testsuite.py``). The "dovecot" files
run too: Hato implements vnd.dovecot.report, vnd.dovecot.pipe/filter/execute and
vnd.dovecot.debug (the extprograms tests use the programs in ``extprograms_bin/``, since
Pigeonhole's own are not in the vectors). Files that pass are each a test; the files that do
not pass are listed below with the reason, and the totals are asserted exactly so that both
regressions and unrecorded improvements fail.
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
        "RFC 5228 §2.7.3: a comparator other than i;octet/i;ascii-casemap that is not "
        'declared with require "is also an error, even if the comparator is supported"; '
        "the file uses i;unicode-casemap without requiring comparator-i;unicode-casemap"
    ),
    "extensions/body/text.svtest": (
        "RFC 2045 §5.2 recommends taking an invalid Content-Type (text/plain/stupid) as "
        "text/plain, so body :text sees that part, as IMAP BODYSTRUCTURE does; Pigeonhole "
        "skips it"
    ),
    # Dovecot-only: what Hato does not implement
    "execute/examples.svtest": (
        "compiles ../../examples/*.sieve, outside the collected tests/ folder, and uses "
        "test_binary_save/load (Pigeonhole bytecode)"
    ),
    "extensions/editheader/execute.svtest": "test_multiscript (sieve_before/after chains)",
    "extensions/imap4flags/multiscript.svtest": "test_multiscript (sieve_before/after chains)",
    "extensions/include/execute.svtest": (
        "test_binary_save/load, and a sub-script that itself requires vnd.dovecot.testsuite"
    ),
    "extensions/include/optional.svtest": "test_binary_save/load (Pigeonhole bytecode)",
    "extensions/mime/execute.svtest": "test_binary_save/load (Pigeonhole bytecode)",
    "extensions/ihave/execute.svtest": (
        "RFC 5463 §4 deferred compilation: an unknown command inside 'if ihave' of an "
        "unknown capability is still a compile error in Hato"
    ),
    "extensions/vnd.dovecot/environment/basic.svtest": "vnd.dovecot.environment",
    "extensions/vnd.dovecot/environment/variables.svtest": "vnd.dovecot.environment",
}
# Crash regressions (failures/): Pigeonhole keeps them to show that its testsuite does not
# crash, and their reference outcome is itself a failure: test_message used as a command
# on a message that does not exist fails the running test ("no message in folder ..."), and
# a tag without its parameter is a compile error. Hato must reproduce exactly that outcome.
REFERENCE_FAILURES: dict[str, tuple[str, str]] = {
    "failures/fuzz1.svtest": (
        "Flag changes between stores",
        "no message in folder 'Uninteiesting' with index 0",
    ),
    "failures/fuzz2.svtest": ("sometest", "no message in folder ' .Folder' with index 1"),
    "failures/fuzz3.svtest": ("", "no message in folder 'Folder' with index 2"),
    "failures/mailbox-bad-utf8.svtest": (
        "Mailbox parameter with bad UTF-8",
        "no message in folder 'I\udc9bBOX' with index 0",  # the octet 9B kept as it came
    ),
    "failures/fuzz4.svtest": (
        "",
        "the :importance tag for the notify command requires a string as parameter, "
        "but no parameters were found",
    ),
}
# Totals reached (files and test blocks over the portable + config-dependent files); a file
# that reproduces its reference failure counts as passing.
EXPECTED = {
    "portable": (103, 105),
    "config": (19, 19),
    "dovecot": (13, 22),
    "blocks": (591, 596),  # portable + config
    "dovecot blocks": (56, 77),
}

RUNNABLE = ALL_FILES
PASSING = [n for n in RUNNABLE if n not in KNOWN_FAILING and n not in REFERENCE_FAILURES]


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


def _reproduces(name: str, result: FileResult) -> bool:
    """``result`` is the reference failure of crash regression ``name``."""
    case, reason = REFERENCE_FAILURES[name]
    if name == "failures/fuzz4.svtest":  # a compile error: no test block runs
        return not result.cases and result.error is not None and reason in result.error
    failed = [(c.name, c.reason) for c in result.cases if not c.passed]
    return result.error is None and failed == [(case, reason)]


@pytest.mark.parametrize("name", sorted(REFERENCE_FAILURES))
def test_crash_regression_reproduces_the_reference_outcome(name: str) -> None:
    result = _run(name)
    assert _reproduces(name, result), (result.error, result.cases)


def test_totals_and_known_failures() -> None:
    results = {name: _run(name) for name in RUNNABLE}
    failing = {
        name
        for name, r in results.items()
        if not r.passed and not (name in REFERENCE_FAILURES and _reproduces(name, r))
    }
    assert failing == set(KNOWN_FAILING), (
        f"newly failing: {sorted(failing - set(KNOWN_FAILING))}; "
        f"now passing: {sorted(set(KNOWN_FAILING) - failing)}"
    )
    for kind in ("portable", "config", "dovecot"):
        names = [n for n in RUNNABLE if CLASSES[n] == kind]
        passed = sum(1 for n in names if n not in failing)
        assert (passed, len(names)) == EXPECTED[kind], kind
    for key, kinds in (("blocks", ("portable", "config")), ("dovecot blocks", ("dovecot",))):
        blocks = [c for n, r in results.items() if CLASSES[n] in kinds for c in r.cases]
        assert (sum(c.passed for c in blocks), len(blocks)) == EXPECTED[key], key
