"""Outlook autodiscover (POX schema): settings for local domains, errors for the rest."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from web_harness import ALICE, HOSTNAME, web_env

from hato.web.autodiscover import (
    OUTLOOK_NS,
    RESPONSE_NS,
    AutodiscoverRequestError,
    parse_request,
)

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
MOBILESYNC = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"


def _request(address: str, schema: str = OUTLOOK_NS) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\r\n<Autodiscover xmlns="{REQUEST_NS}">'
        f"<Request><EMailAddress>{address}</EMailAddress>"
        f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema></Request>"
        "</Autodiscover>"
    ).encode()


def _protocols(body: bytes) -> list[dict[str, str]]:
    root = ET.fromstring(body)
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    ns = {"o": OUTLOOK_NS}
    account = root.find("o:Response/o:Account", ns)
    assert account is not None
    assert account.findtext("o:AccountType", namespaces=ns) == "email"
    assert account.findtext("o:Action", namespaces=ns) == "settings"
    return [
        {child.tag.split("}")[1]: child.text or "" for child in protocol}
        for protocol in account.findall("o:Protocol", ns)
    ]


def test_settings_for_a_local_address(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path) as env, env.client() as c:
            for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
                r = await c.post(path, content=_request(ALICE))
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("application/xml")
                protocols = _protocols(r.content)
                summary = [(p["Type"], p["Port"], p["Encryption"]) for p in protocols]
                # One per type, the implicit-TLS port preferred (RFC 8314 §3).
                assert summary == [("IMAP", "993", "SSL"), ("POP3", "995", "SSL"),
                                   ("SMTP", "465", "SSL")]
                for p in protocols:
                    assert p["Server"] == HOSTNAME
                    assert p["LoginName"] == ALICE
                    assert (p["SPA"], p["AuthRequired"], p["SSL"]) == ("off", "on", "on")

    asyncio.run(scenario())


def test_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path) as env, env.client() as c:
            path = "/autodiscover/autodiscover.xml"
            r = await c.post(path, content=_request("bob@elsewhere.test"))
            assert r.status_code == 404
            r = await c.post(path, content=_request(ALICE, MOBILESYNC))
            assert r.status_code == 200
            root = ET.fromstring(r.content)
            assert root.findtext(f"{{{RESPONSE_NS}}}Response/{{{RESPONSE_NS}}}Error/"
                                 f"{{{RESPONSE_NS}}}ErrorCode") == "601"
            r = await c.post(path, content=b"<not xml")
            assert r.status_code == 400
            r = await c.get(path)
            assert r.status_code == 405

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<Other/>",
        _request("no-at-sign"),
        _request("x@[192.0.2.1]"),
        # Entity expansion ("billion laughs") is refused before parsing.
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]><Autodiscover/>',
    ],
)
def test_unreadable_requests(body: bytes) -> None:
    with pytest.raises(AutodiscoverRequestError):
        parse_request(body)


def test_request_parsing() -> None:
    parsed = parse_request(_request(" Alice@Example.Test "))
    assert (parsed.address.key, parsed.schema) == (ALICE, OUTLOOK_NS)
