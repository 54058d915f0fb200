"""DKIM verification against the stored corpora (vectors README §3).

(a) Perl Mail::DKIM's corpus against the ``modern_expected`` column (RFC 6376 + RFC 8301:
rsa-sha1, keys under 1024 bits and pre-standard ``v=`` are permerror). Mapping: ``invalid``
(Mail::DKIM's "could not verify") is permerror (the two DNS-failure cases use rsa-sha1, which
RFC 8301 rejects before any lookup; test_dkim_verify covers DNS failures).
Where the column says ``fail`` for a signature that RFC 6376 §6.1.1 / RFC 8301 already
reject before the crypto step (missing ``v=``, rsa-sha1), we report permerror: both are
"not pass", and the order of checks is §6.1.1 (signature) before §6.1.3 (hashes).
(b) The six Stalwart messages: the last signature passes with the clock pinned.
"""

from __future__ import annotations

import asyncio
import csv

import pytest
from mailauth_kit import VECTORS, split_stalwart

from hato.core.clock import FixedClock
from hato.core.dns import SERVFAIL, TIMEOUT, StaticResolver
from hato.mailauth import dkim
from hato.mailauth.dkim import DkimStatus

CORPUS = VECTORS / "dkim" / "mail-dkim-corpus"
STALWART = VECTORS / "dkim" / "stalwart-mail-auth"
STALWART_TIME = 1667843664  # README §3 (b): 005 carries x= expiry

# RFC 6376 §6.1.1 / RFC 8301 §3.1 reject these before the body/signature check.
CHECKED_EARLIER = {
    "bad_ietf01_1.txt": "missing required tag v=",
    "bad_ietf01_2.txt": "missing required tag v=",
    "bad_ietf01_3.txt": "missing required tag v=",
    "bad_1.txt": "missing required tag v=",
    "bad_1878954.txt": "rsa-sha1 is historic (RFC 8301)",
    "good_ietf01_1.txt": "missing required tag v=",  # strict-mode row: upstream "fail"
}


def _zone() -> dict[str, object]:
    zone: dict[str, object] = {}
    for line in (CORPUS / "FAKE_DNS.dat").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.strip().partition(" ")
        value = value.strip()
        if value == "NXDOMAIN":
            continue
        if value.startswith("~~"):
            zone[name] = {"TXT": TIMEOUT if "timed out" in value else SERVFAIL}
        else:
            zone[name] = {"TXT": ["" if value == '""' else value]}
    return zone


def _rows() -> list[dict[str, str]]:
    with (CORPUS / "expected.tsv").open() as handle:
        lines = [line for line in handle if not line.startswith("#")]
    fields = ["file", "upstream", "mode", "note", "signatures", "modern", "comment"]
    return list(csv.DictReader(lines, fieldnames=fields, delimiter="\t"))


ROWS = _rows()
RESOLVER = StaticResolver(_zone())  # type: ignore[arg-type]


def _expected(row: dict[str, str]) -> DkimStatus:
    if row["file"] in CHECKED_EARLIER:
        return DkimStatus.PERMERROR
    if row["modern"] == "invalid":
        return DkimStatus.PERMERROR
    return DkimStatus(row["modern"])


def test_corpus_is_complete() -> None:
    assert len(ROWS) == 83  # 79 default + 4 strict-mode rows
    assert len(list((CORPUS / "corpus").glob("*.txt"))) == 79


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['mode']}-{r['file']}" for r in ROWS])
def test_mail_dkim_corpus(row: dict[str, str]) -> None:
    message = (CORPUS / "corpus" / row["file"]).read_bytes()
    result = asyncio.run(dkim.verify(message, resolver=RESOLVER, clock=FixedClock(1_700_000_000)))
    assert result.status is _expected(row), [r.detail for r in result.results]
    if row["file"] in CHECKED_EARLIER:
        assert CHECKED_EARLIER[row["file"]] in [r.detail for r in result.results]
    # never a pass where the modern column says not-pass
    assert (result.status is DkimStatus.PASS) == (row["modern"] == "pass")


def test_domainkeys_messages_are_unsigned_for_dkim() -> None:
    """RFC 4870 DomainKey-Signature is not DKIM: result none (README §3 (a))."""
    names = [r["file"] for r in ROWS if r["note"] == "domainkeys"]
    assert len(names) == 16
    for name in names:
        result = asyncio.run(
            dkim.verify((CORPUS / "corpus" / name).read_bytes(), resolver=RESOLVER)
        )
        assert result.results == ()


STALWART_FILES = sorted(STALWART.glob("00*.txt"))


@pytest.mark.parametrize("path", STALWART_FILES, ids=[p.name for p in STALWART_FILES])
def test_stalwart_last_signature_passes(path: object) -> None:
    zone, message = split_stalwart(path.read_bytes())  # type: ignore[attr-defined]
    result = asyncio.run(
        dkim.verify(message, resolver=StaticResolver(zone), clock=FixedClock(STALWART_TIME))
    )
    assert result.results[-1].status is DkimStatus.PASS
    assert result.status is DkimStatus.PASS


def test_stalwart_count() -> None:
    assert len(STALWART_FILES) == 6


def test_rfc8463_example_both_signatures() -> None:
    """001 is RFC 8463 Appendix A: Ed25519 and RSA signatures each pass on their own."""
    zone, message = split_stalwart((STALWART / "001.txt").read_bytes())
    result = asyncio.run(
        dkim.verify(message, resolver=StaticResolver(zone), clock=FixedClock(STALWART_TIME))
    )
    assert [(r.algorithm, r.status, r.selector) for r in result.results] == [
        ("ed25519-sha256", DkimStatus.PASS, "brisbane"),
        ("rsa-sha256", DkimStatus.PASS, "test"),
    ]
    assert result.results[0].key_bits == 256
    assert result.results[0].b == "/gCrinpc"  # RFC 6008 header.b: first 8 characters


def test_expired_signature_is_permerror_later() -> None:
    """RFC 6376 §6.1.1: x= in the past (by the injected clock) → PERMFAIL (expired)."""
    zone, message = split_stalwart((STALWART / "005.txt").read_bytes())
    later = asyncio.run(
        dkim.verify(message, resolver=StaticResolver(zone), clock=FixedClock(1_900_000_000))
    )
    assert later.results[-1].status is DkimStatus.PERMERROR
    assert later.results[-1].detail == "signature expired"
