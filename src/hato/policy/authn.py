"""Authentication policy: which mechanisms a connection may use, password and SASL checks
against the store, credential derivation, and brute-force lock-out per remote address.

Implements the server side of SASL (RFC 4422 §3, §5) over the mechanisms of hato.codec.sasl
(PLAIN RFC 4616, LOGIN, SCRAM-SHA-256 RFC 5802/7677), the project rule "AUTH only after TLS"
(RFC 8314 §3, RFC 4954 §4 and RFC 2595 §2.1 advise against plaintext passwords in the clear)
with a demo exception for loopback connections, and the RFC 4616 §2 rule that the authzid
must name the authenticated user (Hato offers no proxy authorisation).

Left out: app passwords, per-account (rather than per-address) lock-out, persistence of the
failure counters across restarts, SCRAM-SHA-256-PLUS channel binding.

Security: plaintext passwords only pass through this module to argon2 and PBKDF2; they are
never logged. Unknown, disabled and wrong-password logins fail the same way and take the same
work (a decoy argon2 verification, decoy SCRAM salts). After ``max_failures`` failures from one
address (IPv6: one /64) within ``window`` seconds, attempts are refused for ``lockout`` seconds
without checking the password.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import secrets
from dataclasses import dataclass

from hato.codec import sasl
from hato.core import log
from hato.core.address import Address
from hato.core.clock import Clock, SystemClock
from hato.core.errors import AddressError, AuthError, StoreError
from hato.core.passwords import hash_password, needs_rehash, verify_password
from hato.store.api import MailStore
from hato.store.model import Account, Credentials

# Every mechanism of hato.codec.sasl is accepted; SCRAM-SHA-1 is advertised only where a
# protocol requires it (ManageSieve, RFC 5804 §2.1): RFC 7677 §3 prefers SCRAM-SHA-256.
ALL_MECHANISMS = [m for m in sasl.MECHANISMS if m != sasl.SCRAM_SHA_1]
_MAX_TRACKED_ADDRESSES = 100_000


class AuthLockedOut(AuthError):
    """Too many recent failures from this address: refused without checking credentials."""

    temporary = True
    reply = "too many failed attempts, try again later"


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Brute-force protection: ``max_failures`` within ``window`` s lock out for ``lockout`` s."""

    max_failures: int = 10
    window: float = 900.0
    lockout: float = 900.0


@dataclass(frozen=True, slots=True)
class SaslStep:
    """One step of a SASL exchange, as the protocol should render it."""

    challenge: bytes | None  # data to send (the caller base64-encodes it), when not done
    done: bool
    account: Account | None  # set when done and successful; failure raises AuthError


def make_credentials(
    password: str, *, scram_iterations: int = sasl.SCRAM_MIN_ITERATIONS
) -> Credentials:
    """argon2id hash and SCRAM-SHA-256 and SCRAM-SHA-1 keys for ``password`` (random salts).

    The password is prepared with SASLprep first (RFC 4616 §2: a hashed string MUST be
    prepared before hashing; RFC 5802 §2.2 Normalize)."""
    if scram_iterations < sasl.SCRAM_MIN_ITERATIONS:  # RFC 7677 §4: at least 4096
        raise ValueError("SCRAM-SHA-256 needs at least 4096 iterations")
    keys = sasl.ScramSecrets.from_password(password, iterations=scram_iterations)
    sha1 = sasl.ScramSecrets.from_password(password, iterations=scram_iterations, digest="sha1")
    return Credentials(
        password_hash=hash_password(sasl.prepare_password(password)),
        scram_sha256=keys.format(),
        scram_sha1=sha1.format(),
    )


def _ip(remote_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(remote_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def allow_plaintext(*, secure: bool, remote_ip: str, demo: bool) -> bool:
    """True when passwords may be sent: over TLS, or in demo mode from a loopback address."""
    if secure:
        return True
    addr = _ip(remote_ip)
    return demo and addr is not None and addr.is_loopback


def _throttle_key(remote_ip: str) -> str:
    """IPv4 addresses count one by one; IPv6 by /64 (one host usually owns a whole /64)."""
    addr = _ip(remote_ip)
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr) if addr is not None else remote_ip


class _Throttle:
    """Recent failure times and lock-outs per address, on the monotonic clock."""

    def __init__(self, policy: LockoutPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._failures: dict[str, collections.deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def locked(self, key: str) -> bool:
        until = self._locked_until.get(key)
        if until is None:
            return False
        if self._clock.monotonic() >= until:
            del self._locked_until[key]
            return False
        return True

    def fail(self, key: str) -> bool:
        """Record one failure; True when it starts a lock-out."""
        now = self._clock.monotonic()
        if len(self._failures) >= _MAX_TRACKED_ADDRESSES and key not in self._failures:
            self._prune(now)
        times = self._failures.setdefault(key, collections.deque())
        times.append(now)
        while times and times[0] <= now - self._policy.window:
            times.popleft()
        if len(times) >= self._policy.max_failures:
            self._locked_until[key] = now + self._policy.lockout
            times.clear()
            return True
        return False

    def _prune(self, now: float) -> None:
        horizon = now - self._policy.window
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= horizon]:
            del self._failures[key]
        for key in [k for k, until in self._locked_until.items() if until <= now]:
            del self._locked_until[key]


def _account_key(username: str) -> str | None:
    """The store key for a login name (full address), or None when it is no address."""
    try:
        return Address.parse(username).key
    except AddressError:
        return None


class Authenticator:
    """Checks credentials against the store for every protocol server."""

    def __init__(
        self,
        store: MailStore,
        *,
        clock: Clock | None = None,
        plaintext_on_loopback: bool = False,
        lockout: LockoutPolicy | None = None,
        decoy_key: bytes | None = None,
    ) -> None:
        self._store = store
        self._clock = clock or SystemClock()
        self._demo = plaintext_on_loopback
        self._throttle = _Throttle(lockout or LockoutPolicy(), self._clock)
        self._decoy_key = decoy_key if decoy_key is not None else secrets.token_bytes(32)
        self._decoy_hash: str | None = None

    def mechanisms(
        self, *, secure: bool, remote_ip: str | None = None, scram_sha1: bool = False
    ) -> list[str]:
        """SASL mechanisms to advertise; [] when passwords may not be sent on this connection.

        Without ``remote_ip`` an insecure connection is offered the mechanisms only in demo
        mode; ``start`` and ``check_password`` still enforce the loopback rule. ``scram_sha1``
        adds SCRAM-SHA-1 (for ManageSieve, RFC 5804 §2.1)."""
        if remote_ip is None:
            allowed = secure or self._demo
        else:
            allowed = allow_plaintext(secure=secure, remote_ip=remote_ip, demo=self._demo)
        if not allowed:
            return []
        return list(sasl.MECHANISMS) if scram_sha1 else list(ALL_MECHANISMS)

    def _require_allowed(self, *, secure: bool, remote_ip: str) -> None:
        if not allow_plaintext(secure=secure, remote_ip=remote_ip, demo=self._demo):
            log.event("auth.refused", remote_ip=remote_ip, reason="tls_required")
            raise AuthError(
                "authentication requires TLS", reply="TLS required before authentication"
            )
        key = _throttle_key(remote_ip)
        if self._throttle.locked(key):
            log.event("auth.lockout", remote_ip=remote_ip, state="refused")
            raise AuthLockedOut(f"locked out: {key}")

    def start(self, mechanism: str, *, remote_ip: str, secure: bool) -> SaslExchange:
        """Begin a SASL exchange; AuthError for an unknown or forbidden mechanism."""
        if mechanism.upper() not in sasl.MECHANISMS:
            raise AuthError(f"unsupported mechanism {mechanism!r}", reply="unsupported mechanism")
        self._require_allowed(secure=secure, remote_ip=remote_ip)
        return SaslExchange(self, sasl.server_mechanism(mechanism), remote_ip=remote_ip)

    async def check_password(
        self, username: str, password: str, *, remote_ip: str, secure: bool
    ) -> Account:
        """USER/PASS, LOGIN command, HTTP basic: the account, or AuthError."""
        self._require_allowed(secure=secure, remote_ip=remote_ip)
        return await self._verify(username, password, remote_ip=remote_ip, mechanism="password")

    async def _verify(
        self, username: str, password: str, *, remote_ip: str, mechanism: str
    ) -> Account:
        key = _account_key(username)
        account = await self._store.get_account(key) if key else None
        prepared = sasl.prepare_password(password)
        if account is None or not account.enabled:
            await self._decoy_verify(prepared)
            self._note_failure(username, remote_ip=remote_ip, mechanism=mechanism, reason="unknown")
            raise AuthError(f"authentication failed for {username[:200]!r}")
        stored = account.credentials.password_hash
        ok = await asyncio.to_thread(verify_password, stored, prepared)
        if not ok and prepared != password:
            # Hashes written without SASLprep (older tools) still match the raw string.
            ok = await asyncio.to_thread(verify_password, stored, password)
        if not ok:
            self._note_failure(
                username, remote_ip=remote_ip, mechanism=mechanism, reason="password"
            )
            raise AuthError(f"authentication failed for {username[:200]!r}")
        await self._upgrade(account, password)
        log.event("auth.succeeded", user=account.address, remote_ip=remote_ip, mechanism=mechanism)
        return account

    async def _decoy_verify(self, password: str) -> None:
        """Spend the time a real verification takes, so unknown users are not revealed."""
        if self._decoy_hash is None:
            self._decoy_hash = await asyncio.to_thread(hash_password, secrets.token_hex(16))
        await asyncio.to_thread(verify_password, self._decoy_hash, password)

    async def _upgrade(self, account: Account, password: str) -> None:
        """Rehash with current argon2 parameters, and add SCRAM keys when missing."""
        creds = account.credentials
        complete = creds.scram_sha256 is not None and creds.scram_sha1 is not None
        if complete and not needs_rehash(creds.password_hash):
            return
        try:
            fresh = await asyncio.to_thread(make_credentials, password)
            await self._store.set_credentials(account.address, fresh)
        except StoreError as exc:
            log.event("auth.rehash_failed", user=account.address, error=exc.detail)
            return
        log.event("auth.rehashed", user=account.address)

    def _note_failure(self, username: str, *, remote_ip: str, mechanism: str, reason: str) -> None:
        """Log one failed attempt (never the password) and count it against the address."""
        log.event(
            "auth.failed",
            user=username[:200],
            remote_ip=remote_ip,
            mechanism=mechanism,
            reason=reason,
        )
        if self._throttle.fail(_throttle_key(remote_ip)):
            log.event("auth.lockout", remote_ip=remote_ip, state="started")

    def _authzid_ok(self, authcid: str, authzid: str) -> bool:
        # RFC 4616 §2 / RFC 5802 §5.1 a: authzid empty or naming the same user (no proxying).
        return not authzid or _account_key(authzid) == _account_key(authcid)

    async def _scram_secrets(
        self, authcid: str, digest: str
    ) -> tuple[Account | None, sasl.ScramSecrets]:
        key = _account_key(authcid)
        account = await self._store.get_account(key) if key else None
        if account is not None and account.enabled:
            creds = account.credentials
            stored = creds.scram_sha1 if digest == "sha1" else creds.scram_sha256
            if stored:
                try:
                    return account, sasl.ScramSecrets.parse(stored, digest=digest)
                except sasl.SaslError:
                    log.event("auth.bad_scram_secrets", user=account.address)
        # A disabled or unknown account, or one without keys for this hash (made before
        # SCRAM-SHA-1 existed, until its next password login), fails at the proof like a
        # wrong password.
        return None, sasl.ScramSecrets.decoy(authcid, self._decoy_key, digest=digest)


class SaslExchange:
    """One SASL exchange on one connection; the protocol calls ``step`` per client message."""

    def __init__(
        self, authenticator: Authenticator, mechanism: sasl.ServerMechanism, *, remote_ip: str
    ) -> None:
        self._auth = authenticator
        self._mech = mechanism
        self._remote_ip = remote_ip
        self._account: Account | None = None
        self._username = ""
        self._finished = False

    @property
    def mechanism(self) -> str:
        return self._mech.name

    async def step(self, client_data: bytes | None) -> SaslStep:
        """Feed raw client bytes (None: no initial response); AuthError ends the exchange."""
        if self._finished:
            raise AuthError("SASL exchange already finished")
        try:
            return await self._step(client_data)
        except sasl.SaslError as exc:
            # Malformed messages and wrong SCRAM proofs count as failed attempts; password
            # checks (plain AuthError) were already counted by the Authenticator.
            self._finished = True
            self._auth._note_failure(
                self._username,
                remote_ip=self._remote_ip,
                mechanism=self.mechanism,
                reason=exc.server_error or "malformed",
            )
            raise
        except AuthError:
            self._finished = True
            raise

    async def _step(self, client_data: bytes | None) -> SaslStep:
        event = self._mech.receive(client_data)
        if isinstance(event, sasl.Challenge):
            return SaslStep(challenge=event.data, done=False, account=None)
        self._username = event.authcid
        if not self._auth._authzid_ok(event.authcid, event.authzid):
            raise sasl.SaslError("authzid differs from authcid", server_error="other-error")
        if isinstance(event, sasl.PasswordReceived):
            self._finished = True
            account = await self._auth._verify(
                event.authcid, event.password, remote_ip=self._remote_ip, mechanism=self.mechanism
            )
            return SaslStep(challenge=None, done=True, account=account)
        if isinstance(event, sasl.NeedScramSecrets):
            assert isinstance(self._mech, sasl.ScramServer)
            self._account, keys = await self._auth._scram_secrets(event.authcid, self._mech.digest)
            challenge = self._mech.provide(keys)
            return SaslStep(challenge=challenge.data, done=False, account=None)
        # ScramVerified: the proof matched real (never decoy) keys.
        self._finished = True
        if self._account is None:
            raise sasl.SaslError("proof matched no account", server_error="invalid-proof")
        log.event(
            "auth.succeeded",
            user=self._account.address,
            remote_ip=self._remote_ip,
            mechanism=self.mechanism,
        )
        return SaslStep(challenge=None, done=True, account=self._account)
