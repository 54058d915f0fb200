"""TLS server contexts for every listener: TLS 1.2 minimum, forward-secret AEAD ciphers.

Implements the server side of RFC 8314 §3 (implicit TLS) and the STARTTLS upgrades of
RFC 3207 / RFC 2595 by giving them one ``ssl.SSLContext``; cipher choice follows RFC 9325 §4.2
(TLS 1.2 only with ECDHE/DHE and AEAD suites; TLS 1.3 suites are OpenSSL's defaults).

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
