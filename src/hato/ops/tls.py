"""Self-signed TLS certificates for first start, demo mode and tests.

Writes an X.509 v3 certificate (RFC 5280 §4.1) with the DNS names and IP addresses in the
subjectAltName extension (RFC 5280 §4.2.1.6; RFC 6125 §6.4.4: clients match names against the
SAN, not the CN), serverAuth extended key usage, and an EC P-256 (default) or RSA-2048 key.

Left out: ACME (hato.ops.acme does real certificates), certificate chains, renewal.

Security: the private key file is created with mode 0600 before any key byte is written,
written to a temporary file in the same directory and renamed into place.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_IPS = ("127.0.0.1", "::1")


def _write_private(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we ask for
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _san(hostnames: list[str], *, loopback: bool) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    ips = list(LOOPBACK_IPS) if loopback else []
    for host in hostnames:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host.encode("idna").decode("ascii").lower()))
    seen: set[str] = set()
    for ip in ips:
        if ip not in seen:
            seen.add(ip)
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
    return names


def make_self_signed(
    cert_file: Path,
    key_file: Path,
    *,
    hostnames: list[str],
    days: int = 825,
    loopback: bool = False,
    key_type: str = "ec",
) -> None:
    """Write a self-signed certificate for ``hostnames`` (the first is the subject CN).

    ``loopback`` adds 127.0.0.1 and ::1 to the SANs; ``key_type`` is "ec" (P-256) or "rsa"
    (2048 bits). ``days`` defaults to 825, the longest validity clients still accept."""
    if not hostnames and not loopback:
        raise ValueError("a certificate needs at least one hostname or loopback=True")
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if key_type == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    elif key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unknown key type {key_type!r}")
    common_name = hostnames[0] if hostnames else "localhost"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(_san(hostnames, loopback=loopback)), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=key_type == "rsa",
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    _write_private(key_file, key_pem, mode=0o600)
    _write_private(cert_file, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
