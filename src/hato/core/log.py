"""Structured event logging: stable event names, key=value fields, a connection id.

``event("smtp.rcpt.rejected", rcpt=..., code=550)`` writes one line
``event=smtp.rcpt.rejected conn=3f2a... rcpt=... code=550``. The connection id lives in a
contextvar set by each server per connection (CONVENTIONS.md §12).

Events sit on the hot path of every server (three per message received over SMTP), so this
module keeps the cost of one event small without changing a byte of what is written:
``event`` hands the record straight to the ``hato`` logger's handlers (no ``findCaller``
stack walk) and, once ``skip_thread_and_process_info`` has run, copies it from a template;
``format_event`` takes a fast path for the common value types; ``EventFormatter`` renders
``"%(asctime)s %(levelname)s %(message)s"`` with the date and time formatted once per
second. Records still go through ``Logger.handle`` (filters, handlers, propagation), so
pytest's ``caplog`` and any other handler see every event.

Security: fields named like secrets (password, pass, secret, token, auth_data) are always
written as ``***``; message bodies are never passed to this module.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import secrets
import time
from typing import Any

_conn_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("hato_conn_id", default=None)
_NEEDS_QUOTES = re.compile(r'[ ="\n\r\t]')
_needs_quotes = _NEEDS_QUOTES.search
_REDACTED = frozenset({"password", "pass", "passwd", "secret", "token", "auth_data", "response"})
# " key=" for field names already seen that are not secrets; bounded so that field names
# built at run time cannot grow it without limit (past the bound they are just not cached).
_PREFIXES: dict[str, str] = {}
_PREFIXES_MAX = 1024

EVENT_FORMAT = "%(asctime)s %(levelname)s %(message)s"

logger = logging.getLogger("hato")


def new_connection_id() -> str:
    """A short random id for one connection, set into the logging context."""
    cid = secrets.token_hex(6)
    _conn_id.set(cid)
    return cid


def current_connection_id() -> str | None:
    return _conn_id.get()


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text) is not None:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r")
        return f'"{escaped}"'
    return text


def _prefix(key: str) -> str | None:
    """`` key=`` for a field shown as is, ``None`` for a secret (shown as ``***``)."""
    if key.lower() in _REDACTED:
        return None
    prefix = f" {key}="
    if len(_PREFIXES) < _PREFIXES_MAX:
        _PREFIXES[key] = prefix
    return prefix


def format_event(name: str, fields: dict[str, Any]) -> str:
    """Render an event line; secrets redacted."""
    cid = _conn_id.get()
    line = f"event={name}" if cid is None or "conn" in fields else f"event={name} conn={cid}"
    for key, value in fields.items():
        prefix = _PREFIXES.get(key) or _prefix(key)
        if prefix is None:
            line += f" {key}=***"
            continue
        kind = type(value)
        if kind is str:
            # str(value) is value itself; quoted only when empty or holding a separator.
            if value and _needs_quotes(value) is None:
                line += prefix + value
            else:
                line += prefix + _quote(value)
        elif kind is int or kind is bool:
            # Digits (and a sign) or True/False: never quoted. Subclasses (IntEnum) may
            # render otherwise, so they take the general path.
            line += prefix + str(value)
        else:
            line += prefix + _quote(value)
    return line


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event.

    The record names this function as its origin (``log.py``, ``event``) instead of walking
    the stack for the caller as ``Logger.log`` does: every event would name ``event``
    anyway. It then goes through ``Logger.handle``, as one from ``Logger.log`` does.
    """
    if logger.isEnabledFor(level):
        logger.handle(_record(level, format_event(name, fields)))


_EVENT_LINE = event.__code__.co_firstlineno
# The attributes LogRecord.__init__ sets (Python 3.11). Where it sets others, records are
# built by it alone.
_RECORD_FIELDS = frozenset(
    {
        "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
        "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
        "relativeCreated", "thread", "threadName", "processName", "process",
    }
)  # fmt: skip
# The time logging was loaded, from which LogRecord.__init__ counts relativeCreated.
_LOGGING_START: object = getattr(logging, "_startTime", None)
_templates: dict[int, dict[str, Any]] = {}  # level -> the fields of its records


def _make_record(level: int, message: str) -> logging.LogRecord:
    # What Logger.log would pass on but for the caller, found by a stack walk there.
    return logger.makeRecord(logger.name, level, __file__, _EVENT_LINE, message, (), None, "event")


def _record(level: int, message: str) -> logging.LogRecord:
    """What ``logger.makeRecord`` returns for an event, for less work.

    When records are plain ``LogRecord``s and ``logging`` records no thread or process
    information (``skip_thread_and_process_info`` turns that off), the records of one level
    differ only in their message and time: each it is copied from a template made by
    ``makeRecord`` and given those, computed as ``LogRecord.__init__`` computes them.
    Where ``LogRecord.__init__`` sets other attributes than the ones known here (another
    Python version), records are made by it alone. (A level renamed with
    ``logging.addLevelName`` after its first event keeps its old name in events.)
    """
    if (
        logging.logThreads
        or logging.logProcesses
        or logging.logMultiprocessing
        or logging.getLogRecordFactory() is not logging.LogRecord
    ):
        return _make_record(level, message)
    template = _templates.get(level)
    if template is None:
        made = _make_record(level, message)
        if made.__dict__.keys() == _RECORD_FIELDS and isinstance(_LOGGING_START, float):
            _templates[level] = dict(made.__dict__)
        return made
    assert isinstance(_LOGGING_START, float)  # a template exists only then
    now = time.time()
    record: logging.LogRecord = object.__new__(logging.LogRecord)
    record.__dict__ = fields = template.copy()
    fields["msg"] = message
    fields["created"] = now
    fields["msecs"] = int((now - int(now)) * 1000) + 0.0  # as LogRecord.__init__ (gh-89047)
    fields["relativeCreated"] = (now - _LOGGING_START) * 1000
    return record


class EventFormatter(logging.Formatter):
    """``logging.Formatter(EVENT_FORMAT)``, byte for byte, with less work per record.

    ``asctime`` is ``Formatter.formatTime``'s: the ``YYYY-mm-dd HH:MM:SS`` part rendered
    once per second of the records' creation time (with ``converter`` and
    ``default_time_format``), then ``default_msec_format`` with the milliseconds; the whole
    text is reused while records arrive within the same millisecond. Plain records (a
    ``str`` message without arguments, no exception or stack information) are formatted
    here directly; all others take ``Formatter.format``.
    """

    def __init__(self) -> None:
        super().__init__(EVENT_FORMAT)
        # Each cache is one tuple, replaced whole: threads formatting with this formatter
        # through different handlers (each holding only its own lock) see a consistent one.
        # (second, converter, default_time_format, "YYYY-mm-dd HH:MM:SS")
        self._stamp: tuple[int, Any, str, str] | None = None
        # (second, msecs, converter, default_time_format, default_msec_format, asctime)
        self._asctime: tuple[int, float, Any, str, str, str] | None = None

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        msec_format = self.default_msec_format
        if datefmt or not msec_format:
            return super().formatTime(record, datefmt)
        # time.localtime(float) takes the floor of the second; so does this key.
        second = math.floor(record.created)
        msecs = record.msecs
        converter = self.converter
        time_format = self.default_time_format
        last = self._asctime
        if (
            last is not None
            and last[0] == second
            and last[1] == msecs
            and last[2] is converter
            and last[3] is time_format
            and last[4] is msec_format
        ):
            return last[5]
        stamp = self._stamp
        if stamp is None or stamp[:3] != (second, converter, time_format):
            text = time.strftime(time_format, converter(record.created))
            self._stamp = stamp = (second, converter, time_format, text)
        asctime = msec_format % (stamp[3], msecs)
        self._asctime = (second, msecs, converter, time_format, msec_format, asctime)
        return asctime

    def format(self, record: logging.LogRecord) -> str:
        message = record.msg
        if (
            type(message) is not str
            or record.args
            or record.exc_info
            or record.exc_text
            or record.stack_info
            or type(record) is not logging.LogRecord
        ):
            return super().format(record)
        record.message = message  # what record.getMessage() returns for it
        record.asctime = asctime = self.formatTime(record, self.datefmt)
        return f"{asctime} {record.levelname!s} {message}"


def _shows_thread_or_process(handler: logging.Handler) -> bool:
    """Whether the handler may show a record's thread, process or multiprocessing name."""
    formatter = handler.formatter
    if formatter is None:
        return False  # logging's default format is "%(message)s"
    if type(formatter) not in (logging.Formatter, EventFormatter):
        return True  # cannot tell what another formatter reads
    # Formatter keeps its format string as given, in any of the three styles.
    fmt = formatter._fmt or ""
    return "thread" in fmt or "process" in fmt


def skip_thread_and_process_info() -> bool:
    """Stop ``logging`` from looking up the thread and process ids and names for every record
    (``logging.logThreads``, ``logProcesses``, ``logMultiprocessing``: process-wide
    switches) unless a handler attached to a logger at this point may show them; says
    whether it did. Hato's own format shows none. A handler added later that shows them
    would show ``None``; events are cheapest with the switches off (see ``_record``).
    """
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = [h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers]
    if any(_shows_thread_or_process(h) for h in handlers):
        return False
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    return True


def configure(level: str = "info") -> None:
    """Send Hato's events to stderr with a timestamp; called once by the app layer."""
    handler = logging.StreamHandler()
    handler.setFormatter(EventFormatter())
    root = logging.getLogger("hato")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    skip_thread_and_process_info()
