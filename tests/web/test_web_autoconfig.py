"""Autoconfig: the ISPDB's 163 clientConfig files and Hato's documents pass one checker;
the endpoints answer for local domains only, with the ports really configured."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from clientconfig_checker import check_client_config
from web_harness import ALICE, DOMAIN, HOSTNAME, PORTS, settings, web_env

from hato.web.autoconfig import MailPorts, client_config

ISPDB = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "autoconfig" / "ispdb"
ISPDB_FILES = sorted(ISPDB.glob("*.xml"))


def test_ispdb_corpus_is_present() -> None:
    assert len(ISPDB_FILES) == 163


@pytest.mark.parametrize("path", ISPDB_FILES, ids=lambda p: p.name)
def test_ispdb_examples_pass_the_checker(path: Path) -> None:
    assert check_client_config(path.read_bytes()) == []


@pytest.mark.parametrize(
    ("mutation", "problem"),
    [
        (lambda x: x.replace(b'version="1.1"', b'version="1.0"'), "root must be clientConfig"),
        (lambda x: x.replace(b"<socketType>SSL<", b"<socketType>TLS<", 1), "socketType"),
        (lambda x: x.replace(b"<port>993<", b"<port>99999<", 1), "port in 1-65535"),
        (lambda x: x.replace(b"password-cleartext", b"password-sometimes", 1), "authentication"),
        (lambda x: x.replace(b"%EMAILADDRESS%", b"%EMAILADRESS%", 1), "unknown placeholder"),
        (lambda x: x.replace(b'type="smtp"', b'type="smtps"'), "type 'smtps'"),
        (lambda x: x.replace(b"online.de</domain>", b"online.de</dom>"), "well-formed"),
    ],
)
def test_checker_rejects_broken_documents(mutation: object, problem: str) -> None:
    original = (ISPDB / "1und1.de.xml").read_bytes()
    assert callable(mutation)
    problems = check_client_config(mutation(original))
    assert any(problem in p for p in problems), problems


def _servers(document: bytes) -> list[tuple[str, str, str, str, str, str]]:
    root = ET.fromstring(document)
    found = []
    for server in root.iter():
        if server.tag in ("incomingServer", "outgoingServer"):
            found.append(
                (
                    str(server.get("type")),
                    server.findtext("hostname", ""),
                    server.findtext("port", ""),
                    server.findtext("socketType", ""),
                    server.findtext("authentication", ""),
                    server.findtext("username", ""),
                )
            )
    return found


def test_generated_document_passes_the_same_checker() -> None:
    document = client_config(DOMAIN, hostname=HOSTNAME, ports=PORTS)
    assert document is not None
    assert check_client_config(document) == []
    cleartext, user = "password-cleartext", "%EMAILADDRESS%"
    assert _servers(document) == [
        ("imap", HOSTNAME, "993", "SSL", cleartext, user),  # RFC 8314 §3: implicit TLS first
        ("imap", HOSTNAME, "143", "STARTTLS", cleartext, user),
        ("pop3", HOSTNAME, "995", "SSL", cleartext, user),
        ("pop3", HOSTNAME, "110", "STARTTLS", cleartext, user),
        ("smtp", HOSTNAME, "465", "SSL", cleartext, user),
        ("smtp", HOSTNAME, "587", "STARTTLS", cleartext, user),
    ]
    root = ET.fromstring(document)
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == DOMAIN
    assert [d.text for d in provider.findall("domain")] == [DOMAIN]


def test_generated_document_lists_only_configured_ports() -> None:
    ports = MailPorts(imap_starttls=(2143,), submission=(2587, 2588))
    document = client_config(DOMAIN, hostname=HOSTNAME, ports=ports)
    assert document is not None
    assert check_client_config(document) == []
    assert [(s[0], s[2], s[3]) for s in _servers(document)] == [
        ("imap", "2143", "STARTTLS"),
        ("smtp", "2587", "STARTTLS"),
        ("smtp", "2588", "STARTTLS"),
    ]


def test_no_document_without_an_incoming_and_an_outgoing_server() -> None:
    assert client_config(DOMAIN, hostname=HOSTNAME, ports=MailPorts()) is None
    assert client_config(DOMAIN, hostname=HOSTNAME, ports=MailPorts(imap_tls=(993,))) is None
    assert client_config(DOMAIN, hostname=HOSTNAME, ports=MailPorts(submissions=(465,))) is None


def test_idn_domain_is_written_as_a_label_and_u_label() -> None:
    document = client_config("bücher.example", hostname="mail.bücher.example", ports=PORTS)
    assert document is not None
    assert check_client_config(document) == []
    root = ET.fromstring(document)
    provider = root.find("emailProvider")
    assert provider is not None
    assert provider.get("id") == "xn--bcher-kva.example"
    assert [d.text for d in provider.findall("domain")] == [
        "xn--bcher-kva.example", "bücher.example",
    ]
    assert {s[1] for s in _servers(document)} == {"mail.xn--bcher-kva.example"}


def test_thunderbird_requests(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path) as env, env.client(base=f"http://autoconfig.{DOMAIN}") as c:
            # Thunderbird: http://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=<addr>
            r = await c.get("/mail/config-v1.1.xml", params={"emailaddress": ALICE})
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/xml")
            assert check_client_config(r.content) == []
            assert _servers(r.content)[0][:4] == ("imap", HOSTNAME, "993", "SSL")
            assert r.headers["cache-control"] == "no-store"
            # The well-known path on the domain itself, without emailaddress: Host decides.
            for host in (DOMAIN, f"autoconfig.{DOMAIN}", f"autoconfig.{DOMAIN}:8080"):
                r = await c.get(
                    "/.well-known/autoconfig/mail/config-v1.1.xml", headers={"host": host}
                )
                assert r.status_code == 200, host
                assert check_client_config(r.content) == []
            # Any Host: the address names the domain.
            r = await c.get(
                "/mail/config-v1.1.xml",
                params={"emailaddress": f"Bob@{DOMAIN.upper()}"},
                headers={"host": "127.0.0.1:8080"},
            )
            assert r.status_code == 200
            # HEAD works like GET without the body.
            r = await c.head("/mail/config-v1.1.xml", params={"emailaddress": ALICE})
            assert r.status_code == 200 and r.content == b""

    asyncio.run(scenario())


def test_unknown_domains_and_bad_addresses(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path) as env, env.client() as c:
            r = await c.get("/mail/config-v1.1.xml", params={"emailaddress": "x@elsewhere.test"})
            assert r.status_code == 404
            r = await c.get("/mail/config-v1.1.xml", params={"emailaddress": "not an address"})
            assert r.status_code == 400
            r = await c.get("/mail/config-v1.1.xml", params={"emailaddress": "x@[127.0.0.1]"})
            assert r.status_code == 404
            for host in ("autoconfig.elsewhere.test", "127.0.0.1", "[::1]:80"):
                r = await c.get("/mail/config-v1.1.xml", headers={"host": host})
                assert r.status_code == 404, host
            r = await c.post("/mail/config-v1.1.xml", params={"emailaddress": ALICE})
            assert r.status_code == 405

    asyncio.run(scenario())


def test_without_client_listeners_there_is_nothing_to_configure(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path, settings(ports=MailPorts())) as env, env.client() as c:
            r = await c.get("/mail/config-v1.1.xml", params={"emailaddress": ALICE})
            assert r.status_code == 404

    asyncio.run(scenario())
