"""Date-time field bodies (Date:, Resent-Date:, the tail of Received:) to aware datetimes.

Implements RFC 5322 §3.3 (``[day-of-week ","] day month year hour ":" minute [":" second]
zone``) with the obsolete forms of §4.3: two- and three-digit years (§4.3: 00-49 → 2000-2049,
50-999 → +1900), alphabetic zones (UT/GMT/EST/EDT/CST/CDT/MST/MDT/PST/PDT; military letters
and unknown names taken as -0000, "no information"), comments and folding anywhere. Leniency:
case-insensitive month names, a numeric month, a missing zone (UTC), seconds of 60 (clamped),
and text before the date (Received: "...; date").

Leaves out: dates whose fields are in another order (other than day-month swaps above).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
# RFC 5322 §4.3 obs-zone
_ZONES = {
    "ut": 0, "utc": 0, "gmt": 0, "z": 0,
    "est": -5, "edt": -4, "cst": -6, "cdt": -5, "mst": -7, "mdt": -6, "pst": -8, "pdt": -7,
}  # fmt: skip
_DATE = re.compile(
    r"(?<![0-9A-Za-z])(\d{1,2})[ \t]*[-/ ]?[ \t]*([A-Za-z]{3,9}|\d{1,2})\.?"
    r"[ \t]*[-/ ]?[ \t]*(\d{2,4})"
    r"[ \t,]+(\d{1,2})[ \t]*:[ \t]*(\d{1,2})(?:[ \t]*:[ \t]*(\d{1,2}))?"
    r"(?:[ \t]*([+-])(\d{2})(\d{2})|[ \t]*([A-Za-z]+))?"
)
_COMMENT_FREE = re.compile(r"\([^()]*\)")
_WSP = re.compile(r"[ \t\r\n]+")


def parse_date(text: str) -> datetime | None:
    """Parse an RFC 5322 date-time; None when no complete date and time can be found."""
    clean = _strip_comments(text)
    if clean is None:
        return None
    m = _DATE.search(_WSP.sub(" ", clean))
    if m is None:
        return None
    day = int(m.group(1))
    month_text = m.group(2).lower()
    if month_text.isdigit():
        month = int(month_text)
    else:
        month = _MONTHS.get(month_text[:3], 0)
        if len(month_text) > 3 and not _full_month(month_text):
            return None
    year = int(m.group(3))
    if len(m.group(3)) == 2:
        year += 2000 if year < 50 else 1900  # RFC 5322 §4.3: obs-year
    elif len(m.group(3)) == 3:
        year += 1900
    hour, minute = int(m.group(4)), int(m.group(5))
    second = int(m.group(6)) if m.group(6) else 0
    second = min(second, 59)  # RFC 5322 §3.3: second may be 60 (a leap second)
    if m.group(7):
        offset = int(m.group(8)) * 60 + int(m.group(9))
        if m.group(7) == "-":
            offset = -offset
    elif m.group(10):
        offset = _alpha_zone(m.group(10))
    else:
        offset = 0
    if not (1 <= month <= 12 and hour <= 23 and minute <= 59 and abs(offset) < 24 * 60):
        return None
    try:
        return datetime(
            year, month, day, hour, minute, second, tzinfo=timezone(timedelta(minutes=offset))
        )
    except ValueError:
        return None


def _full_month(text: str) -> bool:
    names = (
        "january", "february", "march", "april", "may", "june", "july", "august",
        "september", "october", "november", "december",
    )  # fmt: skip
    return text in names or text in ("sept",)


def _alpha_zone(name: str) -> int:
    name = name.lower()
    for length in (3, 2, 1):
        hours = _ZONES.get(name[:length])
        if hours is not None:
            return hours * 60
    return 0  # RFC 5322 §4.3: military and other zones are treated as "-0000"


def _strip_comments(text: str) -> str | None:
    """Remove (nested) comments; None when a comment is never closed."""
    if "(" not in text and ")" not in text:
        return text
    previous = None
    while previous != text:
        previous = text
        text = _COMMENT_FREE.sub(" ", text)
    return None if "(" in text else text
