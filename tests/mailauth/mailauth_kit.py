"""Test helpers for DKIM/ARC/inbound tests: keys, key records, signing, vector loaders.

Keys are generated per test session (2048/1024-bit RSA with ``cryptography``, a 768-bit
one from fixed primes, because ``cryptography`` refuses to generate keys under 1024 bits,
and Ed25519 with pynacl); messages are signed with dkimpy's signer.
"""

from __future__ import annotations

import base64
import functools
import math
import random
from dataclasses import dataclass
from pathlib import Path

import dkim
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"  # ../shared/vectors

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: lunch\r\n"
    b"Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)


@dataclass(frozen=True)
class RsaKey:
    pem: bytes
    bits: int
    public_b64: str  # SubjectPublicKeyInfo DER, base64 (the p= of a key record)

    def record(self, extra: str = "") -> str:
        return f"v=DKIM1; k=rsa; {extra}p={self.public_b64}"


@dataclass(frozen=True)
class EdKey:
    seed_b64: bytes  # what dkimpy's signer takes
    public_b64: str

    def record(self, extra: str = "") -> str:
        return f"v=DKIM1; k=ed25519; {extra}p={self.public_b64}"


def _rsa_from(private: rsa.RSAPrivateKey) -> RsaKey:
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return RsaKey(pem, private.key_size, base64.b64encode(der).decode())


@functools.lru_cache(maxsize=4)
def rsa_key(bits: int) -> RsaKey:
    if bits >= 1024:
        return _rsa_from(rsa.generate_private_key(public_exponent=65537, key_size=bits))
    return _rsa_from(_small_rsa(bits))


def _is_prime(n: int) -> bool:
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _small_rsa(bits: int) -> rsa.RSAPrivateKey:
    rng = random.Random(bits)
    e = 65537

    def prime(size: int) -> int:
        while True:
            candidate = rng.getrandbits(size) | (1 << (size - 1)) | 1
            if _is_prime(candidate):
                return candidate

    while True:
        p, q = prime(bits // 2), prime(bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and math.gcd(e, phi) == 1:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    return numbers.private_key()


@functools.lru_cache(maxsize=1)
def ed_key() -> EdKey:
    signing = nacl.signing.SigningKey(bytes(range(32)))
    return EdKey(
        base64.b64encode(bytes(signing)),
        base64.b64encode(bytes(signing.verify_key)).decode(),
    )


def sign(
    message: bytes,
    key: RsaKey | EdKey,
    *,
    domain: str = "example.com",
    selector: str = "sel",
    identity: str | None = None,
    algorithm: str | None = None,
    length: bool = False,
    headers: list[bytes] | None = None,
) -> bytes:
    """``message`` with a DKIM-Signature prepended (dkimpy's signer)."""
    if algorithm is None:
        algorithm = "ed25519-sha256" if isinstance(key, EdKey) else "rsa-sha256"
    private = key.seed_b64 if isinstance(key, EdKey) else key.pem
    field = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        private,
        identity=identity.encode() if identity else None,
        signature_algorithm=algorithm.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=headers or [b"from", b"to", b"subject", b"date", b"message-id"],
        length=length,
    )
    return bytes(field) + message


def key_zone(name: str, record: str) -> dict[str, dict[str, list[str]]]:
    return {name: {"TXT": [record]}}


def split_stalwart(raw: bytes) -> tuple[dict[str, dict[str, list[str]]], bytes]:
    """Stalwart vector files: ``name value`` DNS lines, a blank line, the message (LF → CRLF)."""
    dns_part, _, message = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    zone: dict[str, dict[str, list[str]]] = {}
    for line in dns_part.decode().splitlines():
        name, _, value = line.partition(" ")
        zone.setdefault(name.strip().lower(), {"TXT": []})["TXT"].append(value.strip())
    return zone, message.replace(b"\n", b"\r\n")
