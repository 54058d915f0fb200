"""Organizational (registrable) domains from the Public Suffix List (RFC 7489 §3.2).

``registrable_domain("a.b.example.co.uk") == "example.co.uk"``: the longest matching public
suffix plus one label, following the PSL algorithm (publicsuffix.org/list: exception rules
win, wildcards, the implicit ``*`` rule for unlisted TLDs). The list is the one bundled with
the ``publicsuffixlist`` package, parsed once on first use; callers may inject another
``PublicSuffixList`` (e.g. one refreshed by ops).

Used by ``dmarc.py`` where DMARCbis' DNS tree walk cannot decide (see its docstring).

Left out: fetching fresh lists at run time (ops' job), the private-domains section switch
(the whole list is used, as RFC 7489 §A.6.1 leaves the choice open).
"""

from __future__ import annotations

import functools

import idna
from publicsuffixlist import PublicSuffixList

__all__ = ["PublicSuffixList", "default_list", "is_public_suffix", "registrable_domain"]


@functools.lru_cache(maxsize=1)
def default_list() -> PublicSuffixList:
    """The bundled list, parsed on first use (not at import)."""
    return PublicSuffixList()


def _clean(name: str) -> str | None:
    if not name or name.startswith(".") or ".." in name:
        return None  # PSL tests: a leading dot or empty label has no registrable domain
    return name.rstrip(".").lower() or None


def registrable_domain(name: str | None, *, psl: PublicSuffixList | None = None) -> str | None:
    """The organizational domain of ``name`` per RFC 7489 §3.2, or None for a public suffix.

    A-labels stay A-labels and U-labels stay U-labels (the list knows both forms).
    """
    if name is None:
        return None
    cleaned = _clean(name)
    if cleaned is None:
        return None
    result = (psl or default_list()).privatesuffix(cleaned)
    return result if isinstance(result, str) else None


def is_public_suffix(name: str, *, psl: PublicSuffixList | None = None) -> bool:
    """True when ``name`` is itself a public suffix (or malformed)."""
    return registrable_domain(name, psl=psl) is None


def to_ascii(name: str) -> str:
    """The A-label form of a (possibly U-label) domain; unchanged when not convertible."""
    if name.isascii():
        return name.lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return name.lower()
