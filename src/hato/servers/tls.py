"""TLS server contexts for every listener: TLS 1.2 minimum, forward-secret AEAD ciphers.

Implements the server side of RFC 8314 §3 (implicit TLS) and the STARTTLS upgrades of
RFC 3207 / RFC 2595 / RFC 5804 §2.2, with the same settings in every ``ssl.SSLContext``;
cipher choice follows RFC 9325 §4.2 (TLS 1.2 only with ECDHE/DHE and AEAD suites; TLS 1.3
suites are OpenSSL's defaults).

STARTTLS upgrades get their own context without TLS 1.3 session tickets
(``starttls_context``; RFC 8446 §4.6.1: the server MAY send them, so zero is allowed). Tickets
are the only bytes a server sends after the handshake and before the client's next command, and
a client that reads and writes one TLS connection from two threads at once (imaplib2 and
offlineimap: a reader thread in SSL_read beside a writer thread in SSL_write; OpenSSL objects are
not thread-safe) processed them in its reader while its writer sent the command that follows
STARTTLS: about one connection in 500 under load, the command never left the client or failed
with SSL UNEXPECTED_MESSAGE (``tests/imap/test_imap_starttls_stress.py``,
``tests/pop3/test_pop3_stls_stress.py``, ``tests/managesieve/test_managesieve_starttls_stress.py``).
Implicit TLS keeps its tickets: the greeting comes after them, so a client reads both before it
first writes. The cost: no TLS 1.3 session resumption after STARTTLS.

Left out: client certificates, OCSP stapling, SNI-based certificate selection, hot reload
(callers build a new context when the files change).

Security: reads the private key file; errors name the file, never its content.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from hato.core.errors import ListenError

# RFC 9325 §4.2: ephemeral key exchange and AEAD only for TLS 1.2.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS"


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ListenError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from None


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context for ``cert_file`` (PEM chain, leaf first) and ``key_file`` (PEM key).

    Raises ListenError naming the file when either is missing, unreadable, malformed, or the
    key does not belong to the certificate."""
    cert_pem = _read(cert_file, "certificate")
    key_pem = _read(key_file, "key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ListenError(f"TLS certificate {cert_file} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ListenError(f"TLS key {key_file} is not an unencrypted PEM private key") from None
    leaf_public = (
        chain[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_public != key_public:
        raise ListenError(f"TLS key {key_file} does not match certificate {cert_file}")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996 §2-3 and RFC 9325 §3.1.1: no TLS < 1.2
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION  # RFC 9325 §3.3: no TLS-level compression (CRIME)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_SINGLE_ECDH_USE | ssl.OP_SINGLE_DH_USE
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ListenError(
            f"cannot load TLS certificate {cert_file} with key {key_file}: {exc}"
        ) from None
    return ctx


def starttls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """``server_context`` for STARTTLS/STLS upgrades: no TLS 1.3 session tickets (module
    docstring). A context of its own: the implicit-TLS one keeps resumption."""
    ctx = server_context(cert_file, key_file)
    ctx.num_tickets = 0  # RFC 8446 §4.6.1: NewSessionTicket is optional
    return ctx
