"""IMAP sequence sets: parsing, resolution against a mailbox snapshot, compact rendering.

Implements RFC 9051 §9 ``sequence-set`` / ``seq-range`` / ``seq-number`` (``*`` is the largest
number in use, ranges are unordered: ``4:2`` equals ``2:4``), the ``$`` result-variable
marker of RFC 5182 / RFC 9051 §6.4.4.1 (kept as a flag: the session substitutes the saved
result), and the ``uid-set`` rendering used by COPYUID/APPENDUID (RFC 4315) and ESEARCH ALL
(RFC 4731).

Left out: nothing of the grammar; numbers are limited to 32 bits as the grammar says.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_NUMBER = 4_294_967_295  # RFC 9051 §9: nz-number is an unsigned 32-bit integer

STAR = 0  # stands for "*" inside a range (0 is never a valid nz-number)


class SequenceSetError(ValueError):
    """The text is not a valid sequence-set."""


def _parse_number(text: str) -> int:
    if text == "*":
        return STAR
    # RFC 9051 §9: nz-number = digit-nz *DIGIT (no leading zero, never 0)
    if not text or not text.isascii() or not text.isdigit() or text[0] == "0":
        raise SequenceSetError(f"invalid sequence number {text!r}")
    value = int(text)
    if value > MAX_NUMBER:
        raise SequenceSetError(f"sequence number {text} exceeds 32 bits")
    return value


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed sequence set. ``ranges`` hold (low, high) with ``STAR`` (0) for ``*``;
    ``saved`` is True for ``$`` (the saved SEARCH result, RFC 5182)."""

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        if text == "$":
            return cls((), saved=True)
        if not text:
            raise SequenceSetError("empty sequence set")
        ranges: list[tuple[int, int]] = []
        for item in text.split(","):
            if ":" in item:
                low_text, _, high_text = item.partition(":")
                ranges.append((_parse_number(low_text), _parse_number(high_text)))
            else:
                number = _parse_number(item)
                ranges.append((number, number))
        return cls(tuple(ranges))

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SequenceSet:
        """A set holding exactly ``numbers`` (compacted into ranges)."""
        return cls(tuple(_runs(numbers)))

    def resolve_numbers(self, count: int) -> list[int]:
        """Message sequence numbers 1..count selected by the set, ascending, no duplicates.

        Raises SequenceSetError when a number exceeds ``count`` or ``*`` is used on an empty
        mailbox (RFC 9051 §9 seq-number: "The server should respond with a tagged BAD")."""
        if self.saved:
            raise SequenceSetError("$ must be resolved by the session")
        selected: set[int] = set()
        for low, high in self.ranges:
            low = count if low == STAR else low
            high = count if high == STAR else high
            if low == 0 or high == 0 or low > count or high > count:
                raise SequenceSetError("message sequence number out of range")
            if low > high:
                low, high = high, low
            selected.update(range(low, high + 1))
        return sorted(selected)

    def resolve_uids(self, uids: Sequence[int]) -> list[int]:
        """The UIDs of ``uids`` (ascending) that the set selects.

        RFC 9051 §9 seq-number: for UIDs ``*`` is the largest UID in use, so ``3291:*``
        includes the last message even when its UID is below 3291; UIDs that do not exist
        are silently ignored (RFC 9051 §6.4.9)."""
        if self.saved:
            raise SequenceSetError("$ must be resolved by the session")
        if not uids:
            return []
        largest = uids[-1]
        result: set[int] = set()
        for low, high in self.ranges:
            low = largest if low == STAR else low
            high = largest if high == STAR else high
            if low > high:
                low, high = high, low
            start = bisect.bisect_left(uids, low)
            stop = bisect.bisect_right(uids, high)
            result.update(uids[start:stop])
        return sorted(result)

    def contains_uid(self, uid: int, largest: int) -> bool:
        """Whether ``uid`` is in the set when ``*`` stands for ``largest``."""
        for low, high in self.ranges:
            low = largest if low == STAR else low
            high = largest if high == STAR else high
            if min(low, high) <= uid <= max(low, high):
                return True
        return False

    def format(self) -> str:
        if self.saved:
            return "$"
        parts = []
        for low, high in self.ranges:
            low_text = "*" if low == STAR else str(low)
            high_text = "*" if high == STAR else str(high)
            parts.append(low_text if low == high else f"{low_text}:{high_text}")
        return ",".join(parts)


def _runs(numbers: Iterable[int]) -> list[tuple[int, int]]:
    ordered = sorted(set(numbers))
    runs: list[tuple[int, int]] = []
    for n in ordered:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def format_set(numbers: Iterable[int]) -> str:
    """Compact ascending rendering, e.g. ``1:3,7,9:10`` (RFC 4731 §3.1 ESEARCH ALL)."""
    return SequenceSet(tuple(_runs(numbers))).format()


def format_uid_list(numbers: Sequence[int]) -> str:
    """Render UIDs in the given order, joining only consecutive ascending runs.

    RFC 4315 §3 COPYUID: the source and destination sets are matched in order, so the
    order of ``numbers`` must be kept (no sorting)."""
    parts: list[str] = []
    start = prev = -1
    for n in numbers:
        if start >= 0 and n == prev + 1:
            prev = n
            continue
        if start >= 0:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start >= 0:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)
