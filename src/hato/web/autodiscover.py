"""Outlook autodiscover (the "POX" schema): IMAP, POP3 and SMTP settings for an address.

Implements the plain-old-XML autodiscover exchange of [MS-OXDSCLI] §2.2.3-§2.2.4 as mail
clients other than Exchange use it: a POST of ``<Autodiscover><Request><EMailAddress>`` with
``AcceptableResponseSchema`` ``.../outlook/responseschema/2006a`` answered by one
``<Protocol>`` per type (IMAP, POP3, SMTP) with ``Encryption`` SSL (implicit TLS, preferred,
RFC 8314 §3) or TLS (STARTTLS), the address as ``LoginName`` and no SPA (NTLM).

Left out: the ``mobilesync`` (ActiveSync) response schema (answered with error 601, provider
not available), redirects (``Action`` redirectAddr / redirectUrl), the JSON v2 endpoint.

Security: the request body is untrusted XML: documents with a DOCTYPE (entity expansion)
are refused before parsing, and the HTTP layer bounds the body size.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hato.core.address import Address, domain_to_ascii
from hato.core.errors import AddressError
from hato.web.autoconfig import MailPorts, ServerEntry

PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
MEDIA_TYPE = "application/xml; charset=utf-8"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
_TYPES = {"imap": "IMAP", "pop3": "POP3", "smtp": "SMTP"}
_ENCRYPTION = {"SSL": "SSL", "STARTTLS": "TLS"}


class AutodiscoverRequestError(ValueError):
    """The POST body is not an autodiscover request we can read."""


@dataclass(frozen=True, slots=True)
class AutodiscoverRequest:
    address: Address
    schema: str  # AcceptableResponseSchema


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_request(body: bytes) -> AutodiscoverRequest:
    """Read the address and response schema; AutodiscoverRequestError when unreadable."""
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise AutodiscoverRequestError("DOCTYPE not allowed")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise AutodiscoverRequestError(f"not XML: {exc}") from None
    if _local(root.tag) != "Autodiscover":
        raise AutodiscoverRequestError("root element is not Autodiscover")
    fields: dict[str, str] = {}
    for request in root:
        if _local(request.tag) != "Request":
            continue
        for child in request:
            fields.setdefault(_local(child.tag), (child.text or "").strip())
    try:
        address = Address.parse(fields.get("EMailAddress", ""))
    except AddressError as exc:
        raise AutodiscoverRequestError(str(exc)) from None
    if address.is_literal:
        raise AutodiscoverRequestError("address literal")
    return AutodiscoverRequest(address, fields.get("AcceptableResponseSchema", OUTLOOK_NS))


def _text(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


def _document(response: ET.Element) -> bytes:
    root = ET.Element("Autodiscover", xmlns=RESPONSE_NS)
    root.append(response)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def error_response(code: str, message: str) -> bytes:
    """An ``<Error>`` response ([MS-OXDSCLI] §2.2.4.1.2: 600 invalid request, 601 provider
    not available for the requested schema)."""
    response = ET.Element("Response")
    error = ET.SubElement(response, "Error")
    _text(error, "ErrorCode", code)
    _text(error, "Message", message)
    ET.SubElement(error, "DebugData")
    return _document(response)


def settings_response(address: Address, *, hostname: str, ports: MailPorts) -> bytes | None:
    """The Outlook settings response, or None when no usable account can be described."""
    if not ports.complete:
        return None
    first: dict[str, ServerEntry] = {}
    for entry in ports.servers():  # implicit TLS first: the preferred one of each type
        first.setdefault(entry.protocol, entry)
    response = ET.Element("Response", xmlns=OUTLOOK_NS)
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    login = f"{address.local}@{domain_to_ascii(address.domain)}"
    for protocol, entry in first.items():
        node = ET.SubElement(account, "Protocol")
        _text(node, "Type", _TYPES[protocol])
        _text(node, "Server", domain_to_ascii(hostname))
        _text(node, "Port", str(entry.port))
        _text(node, "LoginName", login)
        _text(node, "DomainRequired", "off")
        _text(node, "SPA", "off")
        _text(node, "SSL", "on")
        _text(node, "Encryption", _ENCRYPTION[entry.socket_type])
        _text(node, "AuthRequired", "on")
    return _document(response)
