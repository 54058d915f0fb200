"""SASL mechanisms PLAIN, LOGIN, SCRAM-SHA-256 and SCRAM-SHA-1, server and client sides, sans-IO.

Implements PLAIN (RFC 4616 §2), LOGIN (draft-murchison-sasl-login-00 §2), SCRAM-SHA-256
(RFC 5802 §3, §5, §7 with the SHA-256 parameters of RFC 7677 §3), SCRAM-SHA-1 (RFC 5802 as
written; ManageSieve requires it, RFC 5804 §2.1) and SASLprep (RFC 4013 §2,
a profile of stringprep, RFC 3454), complete with mapping, NFKC, prohibited output, bidi and
unassigned code point checks (Unicode 3.2 tables, as the RFCs require).

Each server mechanism is a small state machine: ``receive(client bytes)`` returns an event
(a challenge to send, a password the caller must verify, a SCRAM user whose keys the caller
must ``provide``, or a finished SCRAM proof). Base64 framing, the "*" cancel and the choice of
which mechanisms a connection may use belong to each protocol codec and to hato.policy.authn.

Left out: channel binding (SCRAM-SHA-256-PLUS is never offered; a client requiring it with
gs2 "p=" is refused, RFC 5802 §6), SCRAM mandatory extensions ("m=" is refused with
extensions-not-supported, RFC 5802 §5.1), and any decision about authorization
identities: the authzid is returned to the caller, which refuses proxy authorisation.

Security: handles passwords and password-equivalent SCRAM keys; never logs them; the SCRAM
proof is compared with ``hmac.compare_digest``; client messages are bounded in size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hato.core.errors import AuthError

PLAIN = "PLAIN"
LOGIN = "LOGIN"
SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_1 = "SCRAM-SHA-1"
MECHANISMS = (SCRAM_SHA_256, SCRAM_SHA_1, PLAIN, LOGIN)
# The hash H() of each SCRAM mechanism (RFC 5802 §2.2; RFC 7677 §3 for SHA-256).
SCRAM_DIGESTS = {SCRAM_SHA_256: "sha256", SCRAM_SHA_1: "sha1"}

# RFC 4616 §2 requires accepting 255 octets per field; we accept up to 4 KiB per message.
MAX_CLIENT_MESSAGE = 4096
SCRAM_MIN_ITERATIONS = 4096  # RFC 7677 §4: at least 4096 iterations
SCRAM_SALT_BYTES = 16
_LOGIN_USERNAME_PROMPT = b"Username:"  # draft-murchison-sasl-login-00 §2
_LOGIN_PASSWORD_PROMPT = b"Password:"


class SaslError(AuthError):
    """A SASL exchange failed; ``server_error`` is the RFC 5802 §7 server-error-value if any."""

    def __init__(self, detail: str, *, server_error: str | None = None) -> None:
        super().__init__(detail)
        self.server_error = server_error

    @property
    def server_final(self) -> bytes | None:
        """The RFC 5802 §7 server-final-message ``e=...`` to send, when SCRAM failed."""
        if self.server_error is None:
            return None
        return f"e={self.server_error}".encode("ascii")


# -- SASLprep (RFC 4013) ------------------------------------------------------------------

_PROHIBITED: tuple[Callable[[str], bool], ...] = (
    stringprep.in_table_c12,  # RFC 4013 §2.3: non-ASCII space characters
    stringprep.in_table_c21_c22,  # ASCII and non-ASCII control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogate code points
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties or deprecated
    stringprep.in_table_c9,  # tagging characters
)


def saslprep(text: str, *, allow_unassigned: bool = False) -> str:
    """Prepare ``text`` with SASLprep (RFC 4013 §2); raise SaslError when it is prohibited.

    ``allow_unassigned`` selects "query" strings (RFC 3454 §7): unassigned code points pass.
    """
    # RFC 4013 §2.1: non-ASCII spaces map to SPACE, "commonly mapped to nothing" are removed.
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    # RFC 4013 §2.2: Unicode normalization form KC (of Unicode 3.2, RFC 3454 §2).
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for ch in prepared:
        if any(table(ch) for table in _PROHIBITED):  # RFC 4013 §2.3
            raise SaslError("SASLprep: prohibited character", server_error="invalid-encoding")
        if not allow_unassigned and stringprep.in_table_a1(ch):  # RFC 4013 §2.5
            raise SaslError("SASLprep: unassigned code point", server_error="invalid-encoding")
    # RFC 4013 §2.4 and RFC 3454 §6: bidirectional characters.
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise SaslError("SASLprep: mixed bidi text", server_error="invalid-encoding")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise SaslError(
                "SASLprep: bidi text must start and end RandAL", server_error="invalid-encoding"
            )
    return prepared


def prepare_password(password: str) -> str:
    """The password as it enters hashes: SASLprep as a stored string (RFC 5802 §2.2,
    RFC 4616 §2), or the string unchanged when SASLprep refuses it (as PostgreSQL does),
    so that such passwords still work with every mechanism."""
    try:
        return saslprep(password)
    except SaslError:
        return password


# -- SCRAM keys (RFC 5802 §3) ---------------------------------------------------------------


def _hmac(key: bytes, data: bytes, digest: str = "sha256") -> bytes:
    return hmac.new(key, data, digest).digest()


def _hash(data: bytes, digest: str) -> bytes:
    return hashlib.new(digest, data).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SaslError("invalid base64", server_error="invalid-encoding") from None


@dataclass(frozen=True, slots=True)
class ScramSecrets:
    """What a server stores for one SCRAM hash: the salt, iterations, StoredKey, ServerKey.

    ``digest`` is the hashlib name of H(): "sha256" (SCRAM-SHA-256) or "sha1" (SCRAM-SHA-1)."""

    iterations: int
    salt: bytes
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)
    digest: str = "sha256"

    @classmethod
    def from_password(
        cls,
        password: str,
        *,
        salt: bytes | None = None,
        iterations: int = SCRAM_MIN_ITERATIONS,
        digest: str = "sha256",
    ) -> ScramSecrets:
        """Derive the keys (RFC 5802 §3): SaltedPassword := Hi(Normalize(password), salt, i)."""
        if iterations < 1:
            raise ValueError("SCRAM iteration count must be positive")
        salt = secrets.token_bytes(SCRAM_SALT_BYTES) if salt is None else salt
        salted = _salted_password(password, salt, iterations, digest)
        client_key = _hmac(salted, b"Client Key", digest)
        return cls(
            iterations=iterations,
            salt=salt,
            stored_key=_hash(client_key, digest),
            server_key=_hmac(salted, b"Server Key", digest),
            digest=digest,
        )

    @classmethod
    def parse(cls, text: str, *, digest: str = "sha256") -> ScramSecrets:
        """Parse the stored form ``<iterations>$<b64 salt>$<b64 StoredKey>$<b64 ServerKey>``."""
        parts = text.split("$")
        if len(parts) != 4 or not parts[0].isdigit() or int(parts[0]) < 1:
            raise SaslError("malformed stored SCRAM secrets")
        stored, server = _unb64(parts[2]), _unb64(parts[3])
        size = hashlib.new(digest).digest_size
        if len(stored) != size or len(server) != size:
            raise SaslError("malformed stored SCRAM secrets")
        return cls(int(parts[0]), _unb64(parts[1]), stored, server, digest)

    def format(self) -> str:
        return "$".join(
            (str(self.iterations), _b64(self.salt), _b64(self.stored_key), _b64(self.server_key))
        )

    @classmethod
    def decoy(
        cls,
        username: str,
        key: bytes,
        *,
        iterations: int = SCRAM_MIN_ITERATIONS,
        digest: str = "sha256",
    ) -> ScramSecrets:
        """Secrets for a user that does not exist (or may not log in): a salt stable per
        username and keys nobody knows, so the exchange fails at the proof exactly like a
        wrong password and does not reveal whether the account exists."""
        seed = _hmac(key, b"scram-decoy\x00" + username.encode("utf-8"))
        size = hashlib.new(digest).digest_size
        return cls(
            iterations,
            seed[:SCRAM_SALT_BYTES],
            secrets.token_bytes(size),
            secrets.token_bytes(size),
            digest,
        )


def _salted_password(password: str, salt: bytes, iterations: int, digest: str) -> bytes:
    # RFC 5802 §2.2 Hi() is PBKDF2 with HMAC as the PRF and one block of output.
    normalized = prepare_password(password).encode("utf-8")
    return hashlib.pbkdf2_hmac(digest, normalized, salt, iterations)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _encode_saslname(name: str) -> str:
    # RFC 5802 §5.1: ',' and '=' in usernames are sent as '=2C' and '=3D'.
    return name.replace("=", "=3D").replace(",", "=2C")


def _decode_saslname(text: str) -> str:
    """RFC 5802 §5.1/§7 saslname: '=' must start '=2C' or '=3D', else authentication fails."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "=":
            code = text[i + 1 : i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise SaslError(
                    "bad '=' escape in saslname", server_error="invalid-username-encoding"
                )
            i += 3
            continue
        if ch == "\x00":
            raise SaslError("NUL in saslname", server_error="invalid-username-encoding")
        out.append(ch)
        i += 1
    if not out:
        raise SaslError("empty saslname", server_error="invalid-username-encoding")
    return "".join(out)


def _is_printable_nonce(text: str) -> bool:
    # RFC 5802 §7: printable = %x21-2B / %x2D-7E (printable ASCII except ",").
    return bool(text) and all("\x21" <= ch <= "\x7e" and ch != "," for ch in text)


def _attributes(text: str) -> list[tuple[str, str]]:
    """Split ``a=v,b=w`` into pairs (RFC 5802 §7 attr-val: ALPHA "=" value)."""
    pairs: list[tuple[str, str]] = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not ("A" <= part[0] <= "Z" or "a" <= part[0] <= "z"):
            raise SaslError("malformed SCRAM attribute", server_error="invalid-encoding")
        pairs.append((part[0], part[2:]))
    return pairs


def _utf8(data: bytes, *, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not UTF-8", server_error="invalid-encoding") from None


def _bounded(data: bytes) -> bytes:
    if len(data) > MAX_CLIENT_MESSAGE:
        raise SaslError("SASL message too long", server_error="other-error")
    return data


# -- server-side events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` to the client (the protocol base64-encodes it) and wait for a response."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PasswordReceived:
    """PLAIN or LOGIN finished: the caller must verify ``password`` for ``authcid``."""

    authcid: str
    password: str = field(repr=False)
    authzid: str = ""


@dataclass(frozen=True, slots=True)
class NeedScramSecrets:
    """SCRAM got its client-first message: the caller must ``provide`` the user's keys."""

    authcid: str
    authzid: str = ""


@dataclass(frozen=True, slots=True)
class ScramVerified:
    """SCRAM finished: the client proved knowledge of the password for ``authcid``."""

    authcid: str
    authzid: str = ""


ServerEvent = Challenge | PasswordReceived | NeedScramSecrets | ScramVerified


class ServerMechanism(Protocol):
    name: str

    def receive(self, data: bytes | None) -> ServerEvent:
        """Feed one client message (None: no initial response); raises SaslError."""
        ...


class PlainServer:
    """RFC 4616 §2: one message ``[authzid] NUL authcid NUL passwd``."""

    name = PLAIN

    def __init__(self) -> None:
        self._done = False

    def receive(self, data: bytes | None) -> ServerEvent:
        if self._done:
            raise SaslError("PLAIN exchange already finished")
        if data is None:
            # RFC 4422 §5 (2a): no initial response, so the server sends an empty challenge.
            return Challenge(b"")
        self._done = True
        parts = _bounded(data).split(b"\x00")
        if len(parts) != 3:  # RFC 4616 §2: exactly two NUL delimiters
            raise SaslError("PLAIN message needs exactly two NULs")
        authzid, authcid, passwd = (_utf8(p, what="PLAIN field") for p in parts)
        if not authcid or not passwd:  # RFC 4616 §2: authcid and passwd are 1*SAFE
            raise SaslError("PLAIN authcid or password empty")
        return PasswordReceived(authcid=authcid, password=passwd, authzid=authzid)


class LoginServer:
    """draft-murchison-sasl-login-00 §2: "Username:" then "Password:" challenges."""

    name = LOGIN

    def __init__(self) -> None:
        self._username: str | None = None
        self._done = False

    def receive(self, data: bytes | None) -> ServerEvent:
        if self._done:
            raise SaslError("LOGIN exchange already finished")
        if data is None:
            return Challenge(_LOGIN_USERNAME_PROMPT)
        text = _utf8(_bounded(data), what="LOGIN response")
        if "\x00" in text:
            raise SaslError("NUL in LOGIN response")
        if self._username is None:
            # An initial response, when a client sends one, is the username (draft §2).
            if not text:
                raise SaslError("LOGIN username empty")
            self._username = text
            return Challenge(_LOGIN_PASSWORD_PROMPT)
        self._done = True
        if not text:
            raise SaslError("LOGIN password empty")
        return PasswordReceived(authcid=self._username, password=text)


class ScramServer:
    """RFC 5802 §3/§5 server for the hash of ``name``, without channel binding.

    ``nonce`` (the server part of the nonce) is injectable for known-answer tests.
    """

    name = SCRAM_SHA_256
    digest = "sha256"

    def __init__(self, *, nonce: str | None = None) -> None:
        self._server_nonce = nonce if nonce is not None else secrets.token_urlsafe(18)
        if not _is_printable_nonce(self._server_nonce):
            raise ValueError("server nonce must be printable ASCII without ','")
        self._state = "first"
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._authcid = ""
        self._authzid = ""
        self._secrets: ScramSecrets | None = None

    def receive(self, data: bytes | None) -> ServerEvent:
        state, self._state = self._state, "failed"  # any exception leaves the exchange failed
        if state == "first":
            if data is None:
                # RFC 5802 §5.2 item 2a: SCRAM is client-first; ask for the client-first message.
                self._state = "first"
                return Challenge(b"")
            need = self._client_first(_utf8(_bounded(data), what="client-first-message"))
            self._state = "need-secrets"
            return need
        if state == "final" and data is not None:
            final = self._client_final(_utf8(_bounded(data), what="client-final-message"))
            self._state = "ack"
            return final
        if state == "ack" and data is not None:
            if data:  # RFC 4422 §3.6: additional data goes as a challenge; the response is empty
                raise SaslError("unexpected data after server-final-message")
            self._state = "done"
            return ScramVerified(self._authcid, self._authzid)
        raise SaslError(f"SCRAM message out of sequence in state {state}")

    def _client_first(self, text: str) -> NeedScramSecrets:
        # RFC 5802 §7: client-first-message = gs2-header client-first-message-bare
        flag, sep, rest = text.partition(",")
        authz, sep2, bare = rest.partition(",")
        if not sep or not sep2:
            raise SaslError("malformed gs2-header", server_error="other-error")
        if flag.startswith("p="):
            # RFC 5802 §6: we offer no channel binding, so a client requiring it must fail.
            raise SaslError(
                "channel binding requested", server_error="channel-binding-not-supported"
            )
        if flag not in ("n", "y"):
            raise SaslError("malformed gs2-cbind-flag", server_error="other-error")
        if authz:
            if not authz.startswith("a="):
                raise SaslError("malformed authzid", server_error="other-error")
            self._authzid = _decode_saslname(authz[2:])
        self._gs2_header = f"{flag},{authz},"
        attrs = _attributes(bare)
        if attrs and attrs[0][0] == "m":
            # RFC 5802 §5.1: an unknown mandatory extension MUST cause failure.
            raise SaslError("mandatory extension", server_error="extensions-not-supported")
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r":
            raise SaslError("client-first needs n= then r=", server_error="other-error")
        username = _decode_saslname(attrs[0][1])
        # RFC 5802 §5.1: the server MUST prepare the username with SASLprep (query string).
        try:
            self._authcid = saslprep(username, allow_unassigned=True)
        except SaslError:
            raise SaslError(
                "username fails SASLprep", server_error="invalid-username-encoding"
            ) from None
        if not self._authcid:
            raise SaslError("username empty", server_error="invalid-username-encoding")
        client_nonce = attrs[1][1]
        if not _is_printable_nonce(client_nonce):
            raise SaslError("bad client nonce", server_error="other-error")
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce
        return NeedScramSecrets(self._authcid, self._authzid)

    def provide(self, keys: ScramSecrets) -> Challenge:
        """Give the user's keys (or ``ScramSecrets.decoy``); returns the server-first-message."""
        if self._state != "need-secrets":
            raise SaslError("SCRAM secrets provided out of sequence")
        if keys.digest != self.digest:
            raise SaslError(f"{keys.digest} secrets given to {self.name}")
        self._secrets = keys
        # RFC 5802 §7: server-first-message = nonce "," salt "," iteration-count
        self._server_first = f"r={self._nonce},s={_b64(keys.salt)},i={keys.iterations}"
        self._state = "final"
        return Challenge(self._server_first.encode("ascii"))

    def _client_final(self, text: str) -> Challenge:
        assert self._secrets is not None
        without_proof, sep, proof_attr = text.rpartition(",")
        if not sep or not proof_attr.startswith("p="):
            raise SaslError("client-final needs a proof last", server_error="other-error")
        attrs = _attributes(without_proof)
        if len(attrs) < 2 or attrs[0][0] != "c" or attrs[1][0] != "r":
            raise SaslError("client-final needs c= then r=", server_error="other-error")
        # RFC 5802 §5.1 c: without channel binding, c= is exactly the base64 GS2 header.
        if _unb64(attrs[0][1]) != self._gs2_header.encode("utf-8"):
            raise SaslError("channel binding mismatch", server_error="channel-bindings-dont-match")
        # RFC 5802 §5.1 r: the server MUST verify the nonce it sent in server-first.
        if not hmac.compare_digest(attrs[1][1].encode("utf-8"), self._nonce.encode("ascii")):
            raise SaslError("nonce mismatch", server_error="other-error")
        proof = _unb64(proof_attr[2:])
        if len(proof) != len(self._secrets.stored_key):
            raise SaslError("proof has the wrong length", server_error="invalid-proof")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}"
        auth_bytes = auth_message.encode("utf-8")
        # RFC 5802 §3: ClientKey := ClientProof XOR ClientSignature; H(ClientKey) == StoredKey
        digest = self.digest
        client_signature = _hmac(self._secrets.stored_key, auth_bytes, digest)
        client_key = _xor(proof, client_signature)
        if not hmac.compare_digest(_hash(client_key, digest), self._secrets.stored_key):
            raise SaslError("invalid proof", server_error="invalid-proof")
        server_signature = _hmac(self._secrets.server_key, auth_bytes, digest)
        return Challenge(f"v={_b64(server_signature)}".encode("ascii"))


class ScramSha256Server(ScramServer):
    """SCRAM-SHA-256 (RFC 7677 §3)."""

    name = SCRAM_SHA_256
    digest = "sha256"


class ScramSha1Server(ScramServer):
    """SCRAM-SHA-1 (RFC 5802 §5), the mechanism ManageSieve servers MUST offer (RFC 5804 §2.1)."""

    name = SCRAM_SHA_1
    digest = "sha1"


def server_mechanism(name: str, *, scram_nonce: str | None = None) -> ServerMechanism:
    """A fresh server state machine for ``name`` (upper-case); SaslError when unknown."""
    upper = name.upper()
    if upper == PLAIN:
        return PlainServer()
    if upper == LOGIN:
        return LoginServer()
    if upper == SCRAM_SHA_256:
        return ScramSha256Server(nonce=scram_nonce)
    if upper == SCRAM_SHA_1:
        return ScramSha1Server(nonce=scram_nonce)
    raise SaslError(f"unsupported mechanism {name!r}")


# -- client side ----------------------------------------------------------------------------


class ClientMechanism(Protocol):
    name: str

    def initial(self) -> bytes | None:
        """The initial response (None: wait for the first challenge)."""
        ...

    def respond(self, challenge: bytes) -> bytes:
        """The response to one server challenge; raises SaslError when the server fails."""
        ...


class PlainClient:
    name = PLAIN

    def __init__(self, username: str, password: str, *, authzid: str = "") -> None:
        self._message = "\x00".join((authzid, username, password)).encode("utf-8")

    def initial(self) -> bytes | None:
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        return self._message


class LoginClient:
    name = LOGIN

    def __init__(self, username: str, password: str) -> None:
        self._answers = [username.encode("utf-8"), password.encode("utf-8")]

    def initial(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        # The prompts' texts vary between servers; their order does not (draft §2).
        if not self._answers:
            raise SaslError("LOGIN server sent too many challenges")
        return self._answers.pop(0)


class ScramClient:
    """RFC 5802 §3 client; ``verified`` becomes True once the server proved its key."""

    name = SCRAM_SHA_256
    digest = "sha256"

    def __init__(
        self, username: str, password: str, *, authzid: str = "", nonce: str | None = None
    ) -> None:
        self._password = password
        self._nonce = nonce if nonce is not None else secrets.token_urlsafe(18)
        name = _encode_saslname(saslprep(username, allow_unassigned=True))
        self._gs2 = f"n,{'a=' + _encode_saslname(authzid) if authzid else ''},"
        self._first_bare = f"n={name},r={self._nonce}"
        self._server_signature: bytes | None = None
        self.verified = False

    def initial(self) -> bytes | None:
        return (self._gs2 + self._first_bare).encode("utf-8")

    def respond(self, challenge: bytes) -> bytes:
        text = _utf8(challenge, what="server message")
        if self._server_signature is None:
            return self._client_final(text)
        attrs = dict(_attributes(text))
        if "e" in attrs:
            raise SaslError(f"server error {attrs['e']}", server_error=attrs["e"])
        if not hmac.compare_digest(_unb64(attrs.get("v", "")), self._server_signature):
            raise SaslError("server signature mismatch")
        self.verified = True
        return b""

    def _client_final(self, server_first: str) -> bytes:
        attrs = _attributes(server_first)
        if attrs and attrs[0][0] == "m":
            raise SaslError("mandatory extension from server")
        values = dict(attrs)
        nonce, salt, iterations = values.get("r", ""), values.get("s", ""), values.get("i", "")
        # RFC 5802 §5.1 r: the client MUST verify that the nonce starts with its own.
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce):
            raise SaslError("server nonce does not extend ours")
        if not iterations.isdigit() or int(iterations) < 1:
            raise SaslError("bad iteration count")
        digest = self.digest
        salted = _salted_password(self._password, _unb64(salt), int(iterations), digest)
        client_key = _hmac(salted, b"Client Key", digest)
        stored_key = _hash(client_key, digest)
        without_proof = f"c={_b64(self._gs2.encode('utf-8'))},r={nonce}"
        auth = f"{self._first_bare},{server_first},{without_proof}".encode()
        proof = _xor(client_key, _hmac(stored_key, auth, digest))
        self._server_signature = _hmac(_hmac(salted, b"Server Key", digest), auth, digest)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")


class ScramSha256Client(ScramClient):
    name = SCRAM_SHA_256
    digest = "sha256"


class ScramSha1Client(ScramClient):
    name = SCRAM_SHA_1
    digest = "sha1"


def client_mechanism(name: str, username: str, password: str) -> ClientMechanism:
    """A client for ``name``; SaslError when Hato does not implement it."""
    upper = name.upper()
    if upper == PLAIN:
        return PlainClient(username, password)
    if upper == LOGIN:
        return LoginClient(username, password)
    if upper == SCRAM_SHA_256:
        return ScramSha256Client(username, password)
    if upper == SCRAM_SHA_1:
        return ScramSha1Client(username, password)
    raise SaslError(f"unsupported mechanism {name!r}")
