"""Sender Rewriting Scheme (SRS): forwarded mail leaves with an envelope sender of our own.

Implements the de-facto scheme of Shevek's "Sender Rewriting Scheme" paper and its reference
implementation Mail::SRS (the Guarded variant), one of the schemes RFC 7208 Appendix D.2
means for mediators ("rewriting the MAIL FROM to be in their own domain", with rejected mail
"forwarded back to the original sender"): SPF at the destination checks the reverse-path
(RFC 7208 §2.4), so mail we forward for a remote sender must carry one of our domains:

* ``SRS0=HHHH=TT=orig-domain=orig-local@our-domain`` for an original sender; HHHH is the
  first 4 characters of base64(HMAC-SHA1(secret, lower(TT + orig-domain + orig-local))), TT
  the day number (days since the epoch, mod 1024) in two base32 characters (RFC 4648 §6
  alphabet);
* ``SRS1=HHHH=first-forwarder==HHHH=TT=domain=local@our-domain`` when the sender is already
  an SRS0 address of another forwarder (the hash covers the forwarder and the rest), so a
  bounce goes back through that forwarder only;
* reversal of both at our MX: the hash checked (case-insensitively too, as Mail::SRS allows,
  since some MTAs fold local parts), an SRS0 timestamp at most ``max_age`` days old (21 by
  default, as Mail::SRS).

The secret lives in ``<data_dir>/srs.key`` (one base64 secret per line, created 0600 on first
use; the first line signs, every line verifies, so a new secret can be put first and the old
one kept until its addresses age out).

Leaves out: the "Shortcut" and "Reversible" variants (no database-backed variants either);
rewriting when the result would not be a valid address (a quoted or over-long local part,
RFC 5321 §4.5.3.1.1: 64 octets) — the original sender is kept then.

Security: the secret is generated from ``secrets``, written 0600 through a temporary file and
never logged; the hash comparison is constant-time; a forged or expired SRS address is
refused, so our MX is no open relay for strangers who guess the syntax.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hato.core.address import Address
from hato.core.errors import AddressError, ConfigError

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 §6
HASH_LENGTH = 4  # Mail::SRS default HashLength
MAX_AGE_DAYS = 21  # Mail::SRS default MaxAge
DAY = 86400
_PERIOD = 1024  # two base32 characters: 10 bits of day number
_SRS0 = re.compile(r"(?i:srs0)[=+-](?P<rest>.+)")
_SRS1 = re.compile(r"(?i:srs1)[=+-](?P<hash>[^=]+)=(?P<host>[^=]+)=(?P<rest>.+)")
KEY_FILE = "srs.key"


@dataclass(frozen=True, slots=True)
class Reversed:
    """Where a bounce to one of our SRS addresses goes (``None`` address: invalid, why)."""

    address: str | None
    reason: str = ""


def is_srs(local: str) -> bool:
    """True when ``local`` has the SRS0/SRS1 syntax (whether or not it is valid)."""
    return bool(_SRS0.fullmatch(local) or _SRS1.fullmatch(local))


def day_stamp(now: float) -> str:
    """The two-character timestamp of Mail::SRS: days since the epoch mod 1024 in base32."""
    day = int(now // DAY) % _PERIOD
    return BASE32[day >> 5] + BASE32[day & 31]


def _stamp_age(stamp: str, now: float) -> int | None:
    """Days since ``stamp`` (modulo the 1024-day period), None when malformed."""
    stamp = stamp.upper()
    if len(stamp) != 2 or any(c not in BASE32 for c in stamp):
        return None
    then = (BASE32.index(stamp[0]) << 5) | BASE32.index(stamp[1])
    return (int(now // DAY) - then) % _PERIOD


class Srs:
    """Rewrites forwarded senders and reverses bounces; ``secrets[0]`` signs."""

    def __init__(self, secrets_: Sequence[bytes], *, max_age: int = MAX_AGE_DAYS) -> None:
        if not secrets_ or any(not s for s in secrets_):
            raise ConfigError("srs: at least one non-empty secret is needed")
        self._secrets = tuple(secrets_)
        self.max_age = max_age

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> Srs:
        """The secrets of ``<data_dir>/srs.key``, creating it with a fresh secret if missing."""
        return cls(load_or_create_secrets(data_dir / KEY_FILE))

    def _hash(self, secret: bytes, *parts: str) -> str:
        mac = hmac.new(secret, digestmod=hashlib.sha1)
        for part in parts:
            mac.update(part.lower().encode("utf-8"))  # Mail::SRS hashes lower-cased data
        return base64.b64encode(mac.digest()).decode("ascii")[:HASH_LENGTH]

    def _valid_hash(self, given: str, *parts: str) -> bool:
        for secret in self._secrets:
            expected = self._hash(secret, *parts)
            if hmac.compare_digest(given.encode(), expected.encode()):
                return True
            # Mail::SRS: accept a case-folded hash (some MTAs lower-case local parts)
            if hmac.compare_digest(given.lower().encode(), expected.lower().encode()):
                return True
        return False

    def forward(self, sender: str, *, domain: str, now: float) -> str:
        """The reverse-path to use when we (``domain``) forward mail from ``sender``; the
        sender itself when no valid SRS address can be made (or it is the null path)."""
        if not sender:
            return sender  # RFC 5321 §4.5.5: the null reverse-path stays null
        try:
            address = Address.parse(sender)
        except AddressError:
            return sender
        local, host = address.local, address.domain
        srs1 = _SRS1.fullmatch(local)
        srs0 = _SRS0.fullmatch(local)
        if srs1 is not None:
            # already SRS1: keep the first forwarder and the rest, re-sign for our domain
            first, rest = srs1.group("host"), srs1.group("rest")
            candidate = f"SRS1={self._hash(self._secrets[0], first, rest)}={first}={rest}"
        elif srs0 is not None:
            rest = "=" + srs0.group("rest")  # the separator of the SRS0 address is kept
            candidate = f"SRS1={self._hash(self._secrets[0], host, rest)}={host}={rest}"
        else:
            stamp = day_stamp(now)
            digest = self._hash(self._secrets[0], stamp, host, local)
            candidate = f"SRS0={digest}={stamp}={host}={local}"
        try:
            # RFC 5321 §4.5.3.1.1: never make a local part we could not receive back
            return str(Address.parse(f"{candidate}@{domain}"))
        except AddressError:
            return sender

    def reverse(self, address: Address, *, now: float) -> Reversed:
        """Where a message to our SRS ``address`` goes back to."""
        local = address.unquoted_local
        srs1 = _SRS1.fullmatch(local)
        if srs1 is not None:
            first, rest = srs1.group("host"), srs1.group("rest")
            if not self._valid_hash(srs1.group("hash"), first, rest):
                return Reversed(None, "bad hash")
            return self._checked(f"SRS0{rest}@{first}")
        srs0 = _SRS0.fullmatch(local)
        if srs0 is None:
            return Reversed(None, "not an SRS address")
        fields = srs0.group("rest").split("=", 3)
        if len(fields) != 4:
            return Reversed(None, "malformed")
        digest, stamp, host, orig_local = fields
        age = _stamp_age(stamp, now)
        if age is None:
            return Reversed(None, "bad timestamp")
        if age > self.max_age:
            return Reversed(None, "expired")
        if not self._valid_hash(digest, stamp, host, orig_local):
            return Reversed(None, "bad hash")
        return self._checked(f"{orig_local}@{host}")

    @staticmethod
    def _checked(text: str) -> Reversed:
        try:
            return Reversed(str(Address.parse(text)))
        except AddressError:
            return Reversed(None, "malformed")


def load_or_create_secrets(path: Path) -> list[bytes]:
    """The secrets in ``path`` (one base64 line each); a fresh one is written if missing."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        secret = base64.b64encode(secrets.token_bytes(32)) + b"\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        text = secret.decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the SRS secret {path}: {exc}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"{path}: no SRS secret in the file")
    return [line.encode("ascii") for line in lines]
