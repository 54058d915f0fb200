"""TLS material: self-signed certificates (hato.ops.tls) and server contexts (hato.servers.tls)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hato.core.errors import ListenError
from hato.ops.tls import make_self_signed
from hato.servers.tls import server_context


@pytest.fixture
def material(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, hostnames=["mail.example.test"], loopback=True)
    return cert, key


def test_self_signed_contents(material: tuple[Path, Path]) -> None:
    cert_file, key_file = material
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mail.example.test"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 825 <= lifetime.days <= 826


def test_self_signed_rsa_without_loopback_and_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        make_self_signed(
            tmp_path / "c.pem",
            tmp_path / "k.pem",
            hostnames=["a.test", "192.0.2.1"],
            days=10,
            key_type="rsa",
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.1")]
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert cert.public_key().key_size == 2048
    with pytest.raises(ValueError):
        make_self_signed(
            tmp_path / "c.pem", tmp_path / "k.pem", hostnames=["a.test"], key_type="dsa"
        )


def test_server_context_handshake(material: tuple[Path, Path]) -> None:
    cert_file, key_file = material
    ctx = server_context(cert_file, key_file)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2  # RFC 8996: nothing older than 1.2

    async def main() -> list[str]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"hello\r\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        versions = []
        try:
            for maximum in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                client = ssl.create_default_context(cafile=str(cert_file))
                client.maximum_version = maximum
                for host in ("mail.example.test", "127.0.0.1"):
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", port, ssl=client, server_hostname=host
                    )
                    assert await reader.readline() == b"hello\r\n"
                    versions.append(writer.get_extra_info("ssl_object").version())
                    writer.close()
                    await writer.wait_closed()
            wrong = ssl.create_default_context(cafile=str(cert_file))
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(
                    "127.0.0.1", port, ssl=wrong, server_hostname="other.test"
                )
        finally:
            server.close()
            await server.wait_closed()
        return versions

    assert asyncio.run(main()) == ["TLSv1.2", "TLSv1.2", "TLSv1.3", "TLSv1.3"]


def test_server_context_errors_name_the_file(tmp_path: Path, material: tuple[Path, Path]) -> None:
    cert_file, key_file = material
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other.key"
    make_self_signed(other_cert, other_key, hostnames=["other.test"])
    missing = tmp_path / "missing.pem"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not pem\n")
    cases = [
        (missing, key_file, str(missing)),
        (cert_file, missing, str(missing)),
        (tmp_path, key_file, str(tmp_path)),  # a directory is unreadable as a file
        (garbage, key_file, str(garbage)),
        (cert_file, garbage, str(garbage)),
        (cert_file, other_key, str(other_key)),  # key does not match the certificate
    ]
    for cert, key, named in cases:
        with pytest.raises(ListenError) as info:
            server_context(cert, key)
        assert named in str(info.value), (cert, key)
