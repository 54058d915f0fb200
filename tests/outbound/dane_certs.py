"""Certificates for the DANE tests, made in the test: a root CA, an intermediate CA and
leaves (EC P-256, one day back to thirty days ahead unless told), plus TLSA data for them."""

from __future__ import annotations

import datetime
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.UTC)


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def spki(self) -> bytes:
        return self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def tlsa(self, usage: int, selector: int = 0, mtype: int = 1) -> tuple[int, int, int, bytes]:
        """A TLSA record (usage, selector, mtype, data) for this certificate."""
        data = self.der if selector == 0 else self.spki
        if mtype == 1:
            data = hashlib.sha256(data).digest()
        elif mtype == 2:
            data = hashlib.sha512(data).digest()
        return (usage, selector, mtype, data)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(
    cn: str,
    issuer: Issued | None,
    *,
    ca: bool,
    names: tuple[str, ...] = (),
    path_length: int | None = None,
    basic_constraints: bool = True,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    key_cert_sign: bool | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    subject: x509.Name | None = None,
    san: list[x509.GeneralName] | None = None,
    name_constraints: x509.NameConstraints | None = None,
) -> Issued:
    """A certificate for ``cn`` signed by ``issuer`` (self-signed when None), with a new
    key unless ``key`` is given; ``subject`` replaces the CN-only subject, ``san`` adds
    names of any form after the DNS ``names``, ``name_constraints`` (RFC 5280 §4.2.1.10)
    goes in as a critical extension."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or _name(cn))
        .issuer_name(issuer.cert.subject if issuer is not None else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after or NOW + datetime.timedelta(days=30))
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if key_cert_sign is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_cert_sign,
                crl_sign=key_cert_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in names] + list(san or ())
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    signer = issuer.key if issuer is not None else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


@dataclass
class Pki:
    root: Issued
    intermediate: Issued

    def leaf(self, *names: str, not_after: datetime.datetime | None = None) -> Issued:
        cn = names[0] if names else "leaf"
        return issue(cn, self.intermediate, ca=False, names=names, not_after=not_after)


def make_pki(label: str = "Test") -> Pki:
    root = issue(f"{label} Root CA", None, ca=True)
    return Pki(root, issue(f"{label} Intermediate CA", root, ca=True, path_length=0))


def server_context(directory: Path, leaf: Issued, *chain: Issued) -> ssl.SSLContext:
    """A TLS server context presenting ``leaf`` then ``chain`` (RFC 7672 §3.1.2: the
    trust anchor is part of the presented chain)."""
    stem = hashlib.sha256(leaf.der).hexdigest()[:12]
    cert_file, key_file = directory / f"{stem}.chain.pem", directory / f"{stem}.key.pem"
    cert_file.write_bytes(leaf.pem + b"".join(c.pem for c in chain))
    key_file.write_bytes(
        leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx
