"""argon2id password hashes."""

from __future__ import annotations

from hato.core.passwords import hash_password, needs_rehash, verify_password


def test_hash_and_verify() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong")
    assert not needs_rehash(stored)


def test_malformed_hash_is_a_mismatch() -> None:
    assert not verify_password("not-a-hash", "x")
    assert needs_rehash("not-a-hash")
