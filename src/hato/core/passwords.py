"""Password hashing with argon2id (RFC 9106), the only scheme Hato stores.

Security: plaintext passwords only pass through these functions; they are never logged or
stored. Verification is constant-time inside argon2. Hashes carry their own parameters, so
``needs_rehash`` lets a login upgrade old hashes in place.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# RFC 9106 §4 second recommended option (64 MiB, t=3, p=4) is the library default; we keep it.
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """Return an argon2id PHC string for ``password``."""
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; False on mismatch or a malformed hash."""
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the stored hash uses weaker parameters than the current defaults."""
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
