"""DKIM signing of outgoing mail from local domains: key files, selectors, rotation, records.

Implements signing per RFC 6376 §5 (DKIM-Signature with relaxed/relaxed canonicalisation,
§3.4; the header fields dkimpy recommends, From over-signed, §5.4) with two signatures per
message: RSA-SHA256 with a 2048-bit key (RFC 8301 §3.1/§3.2: at least 1024, 2048 advised)
and Ed25519-SHA256 (RFC 8463 §3), plus the key records to publish (RFC 6376 §3.6.1:
``v=DKIM1; k=...; p=...`` at ``<selector>._domainkey.<domain>``; RFC 8463 §4 for Ed25519).

Keys live under ``<data_dir>/dkim/<domain>/``: ``<selector>.rsa.pem`` (PKCS#8 PEM),
``<selector>.ed25519.key`` (the 32-byte seed, base64) and ``active.json`` naming the active
selector of each algorithm. ``rotate`` makes a new pair active and keeps the old files, so
their records can stay published until mail signed with them has been delivered.

Leaves out: the ``l=`` body length tag (never used: it allows appended content), ARC
sealing, keys in an HSM.

Security: private keys are written 0600 (through a temporary file and rename) inside 0700
directories and are never logged.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from hato.core.address import domain_to_ascii
from hato.core.errors import NotFound

RSA_BITS = 2048  # RFC 8301 §3.2
ALGORITHMS = ("rsa", "ed25519")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A DKIM key record to publish: ``name`` TXT ``value``."""

    selector: str
    algorithm: str
    name: str
    value: str


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class DkimKeys:
    """The DKIM key files of every local domain under ``root`` (``<data_dir>/dkim``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._cache: dict[str, list[tuple[str, str, bytes]]] = {}

    def _dir(self, domain: str) -> Path:
        name = domain_to_ascii(domain)
        if "/" in name or name.startswith("."):
            raise NotFound(f"invalid domain {domain!r}")
        return self.root / name

    def active(self, domain: str) -> dict[str, str]:
        """Algorithm -> active selector; {} when the domain has no keys."""
        path = self._dir(domain) / "active.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        return {k: str(v) for k, v in data.items() if k in ALGORITHMS}

    def has_keys(self, domain: str) -> bool:
        return bool(self.active(domain))

    def generate(self, domain: str, *, now: float | None = None) -> list[KeyRecord]:
        """Create a new RSA-2048 and Ed25519 key pair, make them active, return their
        records. Used by ``hato domain add`` and ``hato dkim rotate``."""
        stamp = datetime.datetime.fromtimestamp(
            now if now is not None else datetime.datetime.now().timestamp(), datetime.UTC
        ).strftime("%Y%m%d")
        directory = self._dir(domain)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        base = f"hato{stamp}"
        suffix = 0
        while any(directory.glob(f"{base}{_suffix(suffix)}[re].*")):
            suffix += 1
        selector = f"{base}{_suffix(suffix)}"
        rsa_sel, ed_sel = f"{selector}r", f"{selector}e"
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        _write_private(
            directory / f"{rsa_sel}.rsa.pem",
            rsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        ed_key = ed25519.Ed25519PrivateKey.generate()
        seed = ed_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        _write_private(directory / f"{ed_sel}.ed25519.key", base64.b64encode(seed) + b"\n")
        _write_private(
            directory / "active.json",
            json.dumps({"rsa": rsa_sel, "ed25519": ed_sel}).encode(),
        )
        with self._lock:
            self._cache.pop(domain, None)
        return self.records(domain)

    def records(self, domain: str, *, all_selectors: bool = False) -> list[KeyRecord]:
        """The TXT records of the active selectors (or of every key on disk)."""
        directory = self._dir(domain)
        ascii_domain = domain_to_ascii(domain)
        if all_selectors:
            chosen = [
                (p.name.split(".")[0], p.name.split(".")[1])
                for p in sorted(directory.iterdir())
                if p.name.endswith((".rsa.pem", ".ed25519.key"))
            ]
        else:
            chosen = [(sel, alg) for alg, sel in self.active(domain).items()]
        out = []
        for selector, algorithm in chosen:
            public = self._public(directory, selector, algorithm)
            out.append(
                KeyRecord(
                    selector,
                    algorithm,
                    f"{selector}._domainkey.{ascii_domain}",
                    f"v=DKIM1; k={algorithm}; p={public}",  # RFC 6376 §3.6.1
                )
            )
        return out

    @staticmethod
    def _public(directory: Path, selector: str, algorithm: str) -> str:
        if algorithm == "rsa":
            key = serialization.load_pem_private_key(
                (directory / f"{selector}.rsa.pem").read_bytes(), password=None
            )
            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return base64.b64encode(der).decode("ascii")
        seed = base64.b64decode((directory / f"{selector}.ed25519.key").read_bytes())
        public = ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")  # RFC 8463 §4: the raw 32-octet key

    def _signing_keys(self, domain: str) -> list[tuple[str, str, bytes]]:
        with self._lock:
            cached = self._cache.get(domain)
        if cached is not None:
            return cached
        directory = self._dir(domain)
        keys = []
        for algorithm, selector in sorted(self.active(domain).items(), reverse=True):
            if algorithm == "rsa":
                keys.append(
                    (selector, "rsa-sha256", (directory / f"{selector}.rsa.pem").read_bytes())
                )
            else:
                seed = (directory / f"{selector}.ed25519.key").read_bytes().strip()
                keys.append((selector, "ed25519-sha256", seed))
        with self._lock:
            self._cache[domain] = keys
        return keys

    def sign(self, message: bytes, domain: str) -> bytes:
        """The DKIM-Signature fields (RSA first, then Ed25519) to prepend; b"" when the
        domain has no keys."""
        try:
            keys = self._signing_keys(domain)
        except (FileNotFoundError, NotFound):
            return b""
        out = b""
        ascii_domain = domain_to_ascii(domain).encode("ascii")
        for selector, algorithm, key in keys:
            out += dkim.sign(
                message,
                selector.encode("ascii"),
                ascii_domain,
                key,
                canonicalize=(b"relaxed", b"relaxed"),  # RFC 6376 §3.4.2, §3.4.4
                signature_algorithm=algorithm.encode("ascii"),
                linesep=b"\r\n",
            )
        return out

    def signer(self) -> Callable[[bytes, str], bytes]:
        return self.sign


def _suffix(n: int) -> str:
    return "" if n == 0 else f"x{n}"
