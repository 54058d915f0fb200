"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.codec.imap import mutf7


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("a&b", "a&-b"),  # RFC 3501 §5.1.3: "&" is "&-"
        # RFC 3501 §5.1.3 example: "~peter/mail/台北/日本語"
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("🐦", "&2D3cJg-"),  # outside the BMP: a UTF-16 surrogate pair
        ("tab\there", "tab&AAk-here"),  # control characters are BASE64 too
    ],
)
def test_known_vectors(name: str, encoded: str) -> None:
    assert mutf7.encode(name) == encoded
    assert mutf7.decode(encoded) == name


@pytest.mark.parametrize(
    "bad",
    [
        "&U,BTFw",  # unterminated shift
        "&AGE-",  # RFC 3501 §5.1.3: printable US-ASCII ("a") MUST NOT be BASE64
        "&U,BTFw-&ZeVnLIqe-",  # RFC 3501 §5.1.3: null shift "-&" not permitted
        "&U,BTFx-",  # non-zero padding bits: not the canonical form
        "ü",  # 8-bit characters are not allowed in modified UTF-7
        "&!!-",
    ],
)
def test_malformed_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        mutf7.decode(bad)


@given(st.text(alphabet=st.characters(exclude_categories=("Cs",))))
def test_round_trip(name: str) -> None:
    encoded = mutf7.encode(name)
    assert encoded.isascii()
    assert mutf7.decode(encoded) == name
