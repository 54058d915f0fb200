"""Sieve "date" (RFC 5260): the date and currentdate tests.

Implements RFC 5260 §4 (date: the header's date, from after the last ";" of a Received
field, in the local zone, in :zone, or with :originalzone as written), §5 (currentdate from
the injected clock) and §4.2 (the date parts year, month, day, date, julian, hour, minute,
second, time, iso8601, std11, zone, weekday). The "local" zone is UTC unless the environment
item "vnd.hato.zone" gives an offset such as "+0200". Leaves out: nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from hato.codec.mime import parse_date
from hato.codec.sieve.ext_mime import select_fields
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn

_ZONE = re.compile(r"([+-])([0-9]{2})([0-9]{2})\Z")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _zone(text: str) -> timezone | None:
    m = _ZONE.match(text)
    if m is None:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    if int(m.group(3)) > 59:
        return None
    return timezone(timedelta(minutes=-minutes if m.group(1) == "-" else minutes))


def _local(rt: Runtime) -> timezone:
    zone = _zone(rt.environment.get("vnd.hato.zone", ""))
    return zone if zone is not None else UTC


def _zone_text(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def date_part(moment: datetime, part: str) -> str | None:
    """RFC 5260 §4.2: one date part of ``moment`` as text, None for an unknown part."""
    part = part.lower()
    if part == "year":
        return f"{moment.year:04d}"
    if part == "month":
        return f"{moment.month:02d}"
    if part == "day":
        return f"{moment.day:02d}"
    if part == "date":
        return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    if part == "julian":  # Modified Julian Day: days since 1858-11-17
        return str((moment.date() - datetime(1858, 11, 17).date()).days)
    if part == "hour":
        return f"{moment.hour:02d}"
    if part == "minute":
        return f"{moment.minute:02d}"
    if part == "second":
        return f"{moment.second:02d}"
    if part == "time":
        return f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    if part == "iso8601":
        zone = _zone_text(moment)
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f"{zone[:3]}:{zone[3:]}"
    if part == "std11":
        return (
            f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} "
            f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} "
            f"{_zone_text(moment)}"
        )
    if part == "zone":
        return _zone_text(moment)
    if part == "weekday":
        return str((moment.weekday() + 1) % 7)  # 0 = Sunday
    return None


def _shift(rt: Runtime, cmd: Cmd, *, moment: datetime) -> datetime | None:
    if "originalzone" in cmd.tags:
        return moment
    zone_arg = cmd.tag_string("zone")
    if zone_arg is not None:
        zone = _zone(rt.expand(zone_arg))
        if zone is None:
            return None
        return moment.astimezone(zone)
    return moment.astimezone(_local(rt))


def _date(rt: Runtime, cmd: Cmd) -> bool:
    name = rt.expand(cmd.string(0))
    part = rt.expand(cmd.string(1))
    values: list[str] = []
    for raw in select_fields(cmd, rt.header_values(name)):
        text = raw.rsplit(";", 1)[-1] if name.lower() == "received" else raw
        moment = parse_date(text)
        if moment is None:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        shifted = _shift(rt, cmd, moment=moment)
        value = date_part(shifted, part) if shifted is not None else None
        if value is not None:
            values.append(value)
    return rt.matches(cmd, values, keys=rt.expand_all(cmd.strings(2)))


def _currentdate(rt: Runtime, cmd: Cmd) -> bool:
    now = datetime.fromtimestamp(rt.clock.now(), tz=UTC)
    shifted = _shift(rt, cmd, moment=now)
    value = date_part(shifted, rt.expand(cmd.string(0))) if shifted is not None else None
    values = [value] if value is not None else []
    return rt.matches(cmd, values, keys=rt.expand_all(cmd.strings(1)))


COMMANDS: dict[str, CommandFn] = {}
TESTS: dict[str, TestFn] = {"date": _date, "currentdate": _currentdate}
