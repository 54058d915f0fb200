"""Hostile input never crashes DKIM or ARC verification (RFC 6376 §8.9, RFC 8617 §5.2.1)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st
from mailauth_kit import MESSAGE, key_zone, rsa_key, sign

from hato.core.dns import StaticResolver
from hato.mailauth import arc, dkim
from hato.mailauth.arc import ArcStatus
from hato.mailauth.dkim import DkimStatus

KEY = rsa_key(1024)
SIGNED = sign(MESSAGE, KEY)
ZONE = key_zone("sel._domainkey.example.com", KEY.record())
ARC_SET = (
    b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.com; s=sel; t=12345; b=AAAA\r\n"
    b"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com;"
    b" s=sel; h=from:to; bh=AAAA; b=AAAA\r\n"
    b"ARC-Authentication-Results: i=1; mx.example.com; spf=pass\r\n"
)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=len(SIGNED) - 1), st.binary(max_size=12))
def test_mutated_signed_messages(position: int, junk: bytes) -> None:
    message = SIGNED[:position] + junk + SIGNED[position + 1 :]
    result = asyncio.run(dkim.verify(message, resolver=StaticResolver(ZONE)))
    assert result.status in set(DkimStatus)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=len(ARC_SET) - 1), st.binary(max_size=12))
def test_mutated_arc_sets(position: int, junk: bytes) -> None:
    message = ARC_SET[:position] + junk + ARC_SET[position + 1 :] + MESSAGE
    result = asyncio.run(arc.verify(message, resolver=StaticResolver(ZONE)))
    assert result.status in (ArcStatus.NONE, ArcStatus.FAIL)  # no valid seal can appear
