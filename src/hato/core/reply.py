"""SMTP reply values: a reply code, an enhanced status code and text, rendered to wire bytes.

Implements RFC 5321 §4.2 (reply syntax: ``code SP text`` and multi-line ``code "-" text``
continuation lines, §4.2.1 code classes) with the enhanced status codes of RFC 2034 §4 and
RFC 3463 §2 (``class.subject.detail``, repeated on every line of a multi-line reply and
agreeing with the reply code's class).

Leaves out: parsing replies (the outbound SMTP client brings its own reader).

Security: reply text is reduced to one line per entry (CR, LF and other control characters
are replaced), so no peer-supplied string can inject an extra reply line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hato.core.errors import UsageError

# RFC 3463 §2: class "." subject "." detail; class 2, 4 or 5; subject and detail 1*3digit.
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. ``text`` holds one line per ``\\n``-separated entry."""

    code: int
    enhanced: str | None
    text: str

    def __post_init__(self) -> None:
        # RFC 5321 §4.2: reply codes are three digits, the first 2-5.
        if not 200 <= self.code <= 599:
            raise UsageError(f"invalid SMTP reply code {self.code}")
        if self.enhanced is not None:
            if not _ENHANCED.fullmatch(self.enhanced):
                raise UsageError(f"invalid enhanced status code {self.enhanced!r}")
            # RFC 2034 §4: the status code must agree with the primary response code.
            if self.enhanced[0] != str(self.code)[0]:
                raise UsageError(f"enhanced code {self.enhanced} disagrees with {self.code}")

    @classmethod
    def lines(cls, code: int, enhanced: str | None, lines: list[str] | tuple[str, ...]) -> Reply:
        """A multi-line reply from its lines (at least one)."""
        return cls(code, enhanced, "\n".join(lines) if lines else "")

    @property
    def is_error(self) -> bool:
        """4yz and 5yz replies (RFC 5321 §4.2.1)."""
        return self.code >= 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_positive(self) -> bool:
        """2yz and 3yz replies."""
        return self.code < 400

    def text_lines(self) -> list[str]:
        return [_CONTROL.sub(" ", line) for line in self.text.split("\n")]

    def to_bytes(self) -> bytes:
        """The reply as it goes on the wire, every line ending in CRLF (RFC 5321 §4.2)."""
        prefix = f"{self.enhanced} " if self.enhanced else ""
        lines = self.text_lines()
        out = []
        for i, line in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"  # RFC 5321 §4.2.1: "-" continues
            body = f"{prefix}{line}".rstrip(" ")
            if body:
                out.append(f"{self.code}{sep}{body}\r\n")
            elif sep == "-":
                out.append(f"{self.code}-\r\n")
            elif self.code == 334:
                out.append("334 \r\n")  # RFC 4954 §4: continue-req = "334" SP [base64]
            else:
                out.append(f"{self.code}\r\n")  # RFC 5321 §4.2: Reply-code [ SP textstring ]
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8").rstrip("\r\n").replace("\r\n", " | ")
