"""Structured log events: key=value fields, secrets redacted, connection id carried."""

from __future__ import annotations

import contextvars
import enum
import io
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hato.core import log
from hato.core.log import (
    EVENT_FORMAT,
    EventFormatter,
    configure,
    current_connection_id,
    event,
    format_event,
    logger,
    new_connection_id,
    skip_thread_and_process_info,
)


def test_secrets_are_redacted() -> None:
    line = format_event("auth.failed", {"user": "demo@example.test", "password": "hunter2"})
    assert "hunter2" not in line
    assert "password=***" in line


def test_values_with_spaces_are_quoted() -> None:
    line = format_event("smtp.rcpt.rejected", {"reason": 'no such "user"', "code": 550})
    assert line == 'event=smtp.rcpt.rejected reason="no such \\"user\\"" code=550'


def test_connection_id_is_included() -> None:
    def run() -> tuple[str, str]:
        cid = new_connection_id()
        return cid, format_event("smtp.connect", {})

    cid, line = contextvars.copy_context().run(run)
    assert f"conn={cid}" in line


# -- the fast paths write what the stdlib path wrote -----------------------------------------


_SECRET_NAMES = {"password", "pass", "passwd", "secret", "token", "auth_data", "response"}


def _reference_format_event(name: str, fields: dict[str, Any]) -> str:
    """format_event as it was before its fast paths: every value through str() and the
    quoting rule, every key through the redaction check."""
    parts = [f"event={name}"]
    cid = current_connection_id()
    if cid is not None and "conn" not in fields:
        parts.append(f"conn={cid}")
    for key, value in fields.items():
        if key.lower() in _SECRET_NAMES:
            shown = "***"
        else:
            text = str(value)
            if text == "" or re.search(r'[ ="\n\r\t]', text) is not None:
                text = text.replace("\\", "\\\\").replace('"', '\\"')
                text = '"' + text.replace("\n", "\\n").replace("\r", "\\r") + '"'
            shown = text
        parts.append(f"{key}={shown}")
    return " ".join(parts)


class _Code(enum.IntEnum):
    OK = 250


class _Kind(enum.Enum):
    MX = "mx"


class _Name(str):
    def __str__(self) -> str:
        return f"name {self!r}"


_VALUES: list[Any] = [
    "plain", "", "two words", "a=b", 'say "hi"', "back\\slash", "line\nbreak", "cr\rlf",
    "tab\there", "ünïcode@exämple.test", 0, -5, 2**70, True, False, None, 1.5, _Code.OK,
    _Kind.MX, _Name("x"), b"bytes", ["a", "b c"], ("t",),
]  # fmt: skip


@pytest.mark.parametrize("value", _VALUES, ids=repr)
def test_format_event_renders_each_value_as_before(value: Any) -> None:
    fields = {"field": value, "code": 250, "rcpt": "alice@example.test"}
    assert format_event("e.x", fields) == _reference_format_event("e.x", fields)

    def in_connection() -> None:
        new_connection_id()
        assert format_event("e.x", fields) == _reference_format_event("e.x", fields)
        with_conn = {"conn": "given", **fields}
        assert format_event("e.x", with_conn) == _reference_format_event("e.x", with_conn)

    contextvars.copy_context().run(in_connection)


def test_value_rendering_golden() -> None:
    line = format_event(
        "smtp.data.accepted",
        {
            "id": "3f2a.1",
            "size": 1034,
            "requiretls": False,
            "reasons": "",
            "note": "a\tb",
            "n": None,
        },
    )
    assert line == (
        'event=smtp.data.accepted id=3f2a.1 size=1034 requiretls=False reasons="" '
        'note="a\tb" n=None'
    )


@pytest.mark.parametrize("key", ["password", "Password", "PASS", "passwd", "secret", "Token",
                                 "auth_data", "AUTH_DATA", "response"])  # fmt: skip
@pytest.mark.parametrize("value", ["hunter2", 123456, True, None, "with space"], ids=repr)
def test_secrets_are_redacted_whatever_the_case_and_type(key: str, value: Any) -> None:
    for _ in range(2):  # the second time, with whatever was learnt about the key the first
        line = format_event("auth.failed", {"user": "demo", key: value, "after": 1})
        assert line == f"event=auth.failed user=demo {key}=*** after=1"


def test_many_field_names_are_still_rendered_and_redacted() -> None:
    # Past the bound of the field-name cache, names are rendered (and checked) each time.
    fields = {f"field{i}": i for i in range(3000)} | {"Secret": "s3cr3t"}
    line = format_event("e.many", fields)
    assert line == _reference_format_event("e.many", fields)
    assert "s3cr3t" not in line and "Secret=***" in line


def _record_at(
    created: float, *, msg: object = "event=e.x a=1", args: Any = ()
) -> logging.LogRecord:
    record = logging.LogRecord("hato", logging.INFO, __file__, 1, msg, args, None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord.__init__ does
    return record


# A second's last millisecond, the next second, a minute, an hour, a day rolling over, and
# back in time (the cache must not be trusted for an earlier second).
_INSTANTS = [
    1_700_000_000.0, 1_700_000_000.0004, 1_700_000_000.001, 1_700_000_000.5, 1_700_000_000.9994,
    1_700_000_000.9999, 1_700_000_001.0, 1_700_000_001.0001, 1_700_000_059.999, 1_700_000_060.0,
    1_700_003_599.9995, 1_700_003_600.0, 1_700_006_399.999, 1_700_006_400.001, 1_699_999_999.999,
    1_700_000_000.0, 1_700_000_000.0, 0.25, 1_750_000_000.123456, 1_700_000_000.5, 1_700_000_002.5,
]  # fmt: skip


def test_event_formatter_equals_logging_formatter() -> None:
    ours, stdlib = EventFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for created in _INSTANTS:
        record = _record_at(created)
        line = ours.format(record)
        assert line == stdlib.format(_record_at(created)), created
        assert record.asctime == stdlib.formatTime(record) and record.message == record.msg


def test_event_formatter_renders_milliseconds_and_rollover() -> None:
    utc = EventFormatter()
    utc.converter = time.gmtime
    lines = [
        utc.format(_record_at(t)) for t in (1_700_000_000.9994, 1_700_000_001.0, 1_700_000_001.0007)
    ]
    assert lines == [
        "2023-11-14 22:13:20,999 INFO event=e.x a=1",
        "2023-11-14 22:13:21,000 INFO event=e.x a=1",
        "2023-11-14 22:13:21,000 INFO event=e.x a=1",
    ]
    # A converter changed within the second is used at once.
    utc.converter = lambda secs: time.gmtime(None if secs is None else secs + 3600)
    assert (
        utc.format(_record_at(1_700_000_001.0007)) == "2023-11-14 23:13:21,000 INFO event=e.x a=1"
    )


def test_event_formatter_follows_changed_time_formats() -> None:
    ours, stdlib = EventFormatter(), logging.Formatter(EVENT_FORMAT)
    assert ours.format(_record_at(1_700_000_000.5)) == stdlib.format(_record_at(1_700_000_000.5))
    for formatter in (ours, stdlib):  # same second, same millisecond: only the format changes
        formatter.default_msec_format = "%s.%03d"
    assert ours.format(_record_at(1_700_000_000.5)) == stdlib.format(_record_at(1_700_000_000.5))
    for formatter in (ours, stdlib):
        formatter.default_time_format = "%H:%M:%S"
    assert ours.format(_record_at(1_700_000_000.5)) == stdlib.format(_record_at(1_700_000_000.5))
    assert ours.format(_record_at(1_700_000_000.5)).startswith(
        time.strftime("%H:%M:%S", time.localtime(1_700_000_000.5)) + ".500 "
    )
    assert ours.formatTime(_record_at(1.0), "%Y") == stdlib.formatTime(_record_at(1.0), "%Y")


def test_event_formatter_equals_logging_formatter_for_other_records() -> None:
    ours, stdlib = EventFormatter(), logging.Formatter(EVENT_FORMAT)

    def both(make: Callable[[], logging.LogRecord]) -> None:
        assert ours.format(make()) == stdlib.format(make())

    both(lambda: _record_at(1_700_000_000.25, msg="n=%d", args=(5,)))
    both(lambda: _record_at(1_700_000_000.25, msg=ValueError("not a str")))
    both(lambda: _record_at(1_700_000_000.25, msg=_Name("sub")))

    class Shouting(logging.LogRecord):
        def getMessage(self) -> str:
            return super().getMessage().upper()

    def shouting() -> logging.LogRecord:
        record = Shouting("hato", logging.INFO, __file__, 1, "event=e.x", (), None)
        record.created, record.msecs = 1_700_000_000.25, 250.0
        return record

    both(shouting)
    assert ours.format(shouting()).endswith(" INFO EVENT=E.X")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()

    def with_exc() -> logging.LogRecord:
        record = _record_at(1_700_000_000.25)
        record.exc_info = exc_info
        return record

    def with_stack() -> logging.LogRecord:
        record = _record_at(1_700_000_000.25)
        record.stack_info = "Stack (most recent call last):\n  here"
        return record

    both(with_exc)
    both(with_stack)
    assert "RuntimeError: boom" in ours.format(with_exc())


# -- events still travel through logging ---------------------------------------------------


@pytest.fixture
def hato_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """The hato logger, its handlers, level and logging's process-wide switches restored."""
    for switch in ("logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, switch, getattr(logging, switch))
    saved = (logger.handlers[:], logger.level, logger.propagate, logger.filters[:])
    yield logger
    logger.handlers[:], logger.level, logger.propagate, logger.filters[:] = saved


def _kept_records(hato: logging.Logger) -> list[logging.LogRecord]:
    """Every record the hato logger handles at INFO and above, kept as it is (its only
    handler: no other one adds to the records)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    hato.handlers[:] = [Keep()]
    hato.setLevel(logging.INFO)
    hato.propagate = False
    return records


def _two_formatters(hato: logging.Logger) -> tuple[io.StringIO, io.StringIO]:
    ours, stdlib = io.StringIO(), io.StringIO()
    for stream, formatter in ((ours, EventFormatter()), (stdlib, logging.Formatter(EVENT_FORMAT))):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        hato.addHandler(handler)
    hato.setLevel(logging.INFO)
    return ours, stdlib


def _some_events() -> None:
    event("smtp.rcpt.accepted", rcpt="alice@example.test", code=250, reasons="")
    event("smtp.data.accepted", id="a.1", size=1034, requiretls=False, password="x")
    event("smtp.internal_error", level=logging.ERROR, error="ValueError('x y')")
    event("smtp.debug", level=logging.DEBUG, never="shown")


@pytest.mark.parametrize("switches", [True, False], ids=["thread-info", "no-thread-info"])
def test_event_writes_the_same_bytes_through_both_formatters(
    hato_logger: logging.Logger, switches: bool
) -> None:
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = switches
    hato_logger.handlers[:] = []
    ours, stdlib = _two_formatters(hato_logger)
    for _ in range(3):
        _some_events()
    lines = ours.getvalue().splitlines()
    assert ours.getvalue() == stdlib.getvalue() and len(lines) == 9
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO event=smtp\.data\.accepted id=a\.1 "
        r"size=1034 requiretls=False password=\*\*\*",
        lines[1],
    )
    assert lines[2].split(" ", 3)[2:] == [
        "ERROR",
        "event=smtp.internal_error error=\"ValueError('x y')\"",
    ]


_SWITCHES = ("logThreads", "logProcesses", "logMultiprocessing")


@pytest.mark.parametrize("switched_on", [(), *((s,) for s in _SWITCHES), _SWITCHES], ids=str)
def test_event_records_are_those_makerecord_makes(
    hato_logger: logging.Logger, switched_on: tuple[str, ...]
) -> None:
    records = _kept_records(hato_logger)
    # Templates made without thread or process information, then switches turned on.
    for switch in _SWITCHES:
        setattr(logging, switch, False)
    event("e.first", level=logging.WARNING)
    event("e.first")
    records.clear()
    for switch in switched_on:
        setattr(logging, switch, True)
    before = time.time()
    for _ in range(3):  # the first of a level may make the template the others copy
        event("e.x", level=logging.WARNING, a=1)
        event("e.y", b="two words")
    after = time.time()
    assert [type(r) for r in records] == [logging.LogRecord] * 6
    if not switched_on:  # Python 3.11's records: events copy a template per level
        assert {logging.INFO, logging.WARNING} <= log._templates.keys()
    log_py = str(Path(log.__file__))
    shown = {
        "logThreads": "threadName",
        "logProcesses": "process",
        "logMultiprocessing": "processName",
    }
    for record in records:
        expected = log.logger.makeRecord("hato", record.levelno, log_py, record.lineno,
                                         record.msg, (), None, "event")  # fmt: skip
        times = ("created", "msecs", "relativeCreated")
        assert {k: v for k, v in vars(record).items() if k not in times} == {
            k: v for k, v in vars(expected).items() if k not in times
        }
        assert vars(record).keys() == vars(expected).keys()
        assert before <= record.created <= after
        assert record.msecs == int((record.created - int(record.created)) * 1000)
        assert abs(record.relativeCreated - (expected.relativeCreated
                   - (expected.created - record.created) * 1000)) < 1e-3  # fmt: skip
        for switch, field in shown.items():
            assert (getattr(record, field) is not None) == (switch in switched_on)
        assert (record.filename, record.funcName) == ("log.py", "event")
    assert [r.getMessage() for r in records[:2]] == ["event=e.x a=1", 'event=e.y b="two words"']
    assert [r.levelname for r in records[:2]] == ["WARNING", "INFO"]


def test_caplog_sees_events(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hato"):
        event("smtp.rcpt.rejected", rcpt="bob@example.test", code=550)
        event("smtp.debug", level=logging.DEBUG, hidden=1)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("hato", logging.INFO, "event=smtp.rcpt.rejected rcpt=bob@example.test code=550")
    ]
    assert "event=smtp.rcpt.rejected" in caplog.text


def test_caplog_sees_events_after_configure(
    hato_logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure("info")
    assert isinstance(hato_logger.handlers[0].formatter, EventFormatter)
    with caplog.at_level(logging.INFO, logger="hato"):
        event("auth.failed", user="demo", password="hunter2")
    assert [r.getMessage() for r in caplog.records] == ["event=auth.failed user=demo password=***"]
    written = capsys.readouterr().err
    assert written.endswith(" INFO event=auth.failed user=demo password=***\n")
    assert "hunter2" not in caplog.text + written


def test_filters_and_propagation_still_apply(
    hato_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hato"):
        hato_logger.addFilter(lambda record: "drop" not in record.getMessage())
        event("e.keep")
        event("e.drop")
        hato_logger.propagate = False
        event("e.unseen")  # caplog's handler sits on the root logger
    assert [r.getMessage() for r in caplog.records] == ["event=e.keep"]


def _switches() -> tuple[bool, bool, bool]:
    return (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)


@pytest.mark.parametrize(
    ("formatter", "kept"),
    [
        (logging.Formatter("%(threadName)s %(message)s"), True),
        (logging.Formatter("{process} {message}", style="{"), True),
        (logging.Formatter("${processName} ${message}", style="$"), True),
        (logging.Formatter("%(thread)d %(message)s"), True),
        (type("Custom", (logging.Formatter,), {})("%(message)s"), True),  # unreadable
        (logging.Formatter("%(asctime)s %(name)s %(message)s"), False),
        (EventFormatter(), False),
        (None, False),
    ],
    ids=[
        "threadName",
        "{process}",
        "${processName}",
        "thread",
        "custom",
        "asctime-name",
        "event-formatter",
        "no-formatter",
    ],
)
def test_thread_and_process_info_is_kept_while_a_handler_shows_it(
    hato_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    formatter: logging.Formatter | None,
    kept: bool,
) -> None:
    for switch in _SWITCHES:
        setattr(logging, switch, True)
    # pytest's own handlers (on the root logger) have formatters that cannot be read.
    assert skip_thread_and_process_info() is False and _switches() == (True,) * 3
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    other = logging.getLogger("hato-test-other")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(formatter)
    other.addHandler(handler)
    try:
        assert skip_thread_and_process_info() is not kept
        assert _switches() == (kept,) * 3
    finally:
        other.removeHandler(handler)


def test_configure_skips_thread_and_process_info(
    hato_logger: logging.Logger, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for switch in _SWITCHES:
        setattr(logging, switch, True)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    configure("warning")
    assert _switches() == (False,) * 3
    assert hato_logger.level == logging.WARNING and len(hato_logger.handlers) == 1
    event("e.shown", level=logging.WARNING, a=1)
    event("e.hidden")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING event=e.shown a=1\n", capsys.readouterr().err
    )


def test_a_record_factory_still_makes_event_records(hato_logger: logging.Logger) -> None:
    class Tagged(logging.LogRecord):
        pass

    records = _kept_records(hato_logger)
    for switch in _SWITCHES:
        setattr(logging, switch, False)
    event("e.before")  # a template for INFO exists
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(Tagged)
    try:
        event("e.tagged", n=1)
    finally:
        logging.setLogRecordFactory(previous)
    assert [(type(r), r.getMessage()) for r in records] == [
        (logging.LogRecord, "event=e.before"),
        (Tagged, "event=e.tagged n=1"),
    ]
