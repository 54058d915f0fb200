"""Mail client autoconfiguration: Thunderbird's ``clientConfig`` v1.1 document for a domain.

Implements the Thunderbird autoconfiguration format v1.1 (the ISPDB file format, served at
``/mail/config-v1.1.xml`` on ``autoconfig.<domain>`` and at
``/.well-known/autoconfig/mail/config-v1.1.xml``): IMAP (RFC 9051) and POP3 (RFC 1939)
incoming servers, SMTP submission (RFC 6409) outgoing servers, each with implicit TLS first
(``SSL``, RFC 8314 §3, which prefers it) then ``STARTTLS``, authentication
``password-cleartext`` (sent only inside TLS) and the whole address as user name
(``%EMAILADDRESS%``). Only ports really configured are listed, and only when a certificate is
configured (without one, no listener can protect a password).

Left out: OAuth2, ``password-encrypted`` (CRAM-MD5; Hato offers SCRAM, which the format cannot
name), webmail and documentation links, the ``<enable>`` instructions.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hato.core.address import domain_to_ascii

PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
HOST_PREFIX = "autoconfig."  # Thunderbird asks http(s)://autoconfig.<domain>/mail/...
MEDIA_TYPE = "application/xml; charset=utf-8"
USERNAME = "%EMAILADDRESS%"  # placeholder Thunderbird replaces with the address typed in
AUTHENTICATION = "password-cleartext"  # plaintext password, protected by TLS


@dataclass(frozen=True, slots=True)
class ServerEntry:
    protocol: str  # "imap", "pop3" or "smtp"
    port: int
    socket_type: str  # "SSL" (implicit TLS) or "STARTTLS"

    @property
    def incoming(self) -> bool:
        return self.protocol != "smtp"


@dataclass(frozen=True, slots=True)
class MailPorts:
    """TCP ports clients should use, by protocol and TLS mode (implicit TLS first)."""

    imap_tls: tuple[int, ...] = ()
    imap_starttls: tuple[int, ...] = ()
    pop3_tls: tuple[int, ...] = ()
    pop3_starttls: tuple[int, ...] = ()
    submissions: tuple[int, ...] = ()  # implicit TLS submission (RFC 8314 §3.3)
    submission: tuple[int, ...] = ()  # STARTTLS submission (RFC 6409)

    def servers(self) -> list[ServerEntry]:
        # RFC 8314 §3: implicit TLS is preferred over STARTTLS, so it comes first.
        table = (
            ("imap", "SSL", self.imap_tls),
            ("imap", "STARTTLS", self.imap_starttls),
            ("pop3", "SSL", self.pop3_tls),
            ("pop3", "STARTTLS", self.pop3_starttls),
            ("smtp", "SSL", self.submissions),
            ("smtp", "STARTTLS", self.submission),
        )
        return [
            ServerEntry(protocol, port, socket_type)
            for protocol, socket_type, ports in table
            for port in ports
        ]

    @property
    def complete(self) -> bool:
        """A client needs somewhere to read and somewhere to send."""
        entries = self.servers()
        return any(e.incoming for e in entries) and any(not e.incoming for e in entries)


def _text(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = text


def client_config(domain: str, *, hostname: str, ports: MailPorts) -> bytes | None:
    """The ``clientConfig`` document for ``domain`` (canonical form), or None when the
    configured ports do not make a usable account (no incoming or no outgoing server)."""
    if not ports.complete:
        return None
    ascii_domain = domain_to_ascii(domain)
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=ascii_domain)
    _text(provider, "domain", ascii_domain)
    if domain != ascii_domain:
        _text(provider, "domain", domain)
    _text(provider, "displayName", f"{domain} mail")
    _text(provider, "displayShortName", domain)
    host = domain_to_ascii(hostname)
    for entry in ports.servers():
        tag = "incomingServer" if entry.incoming else "outgoingServer"
        server = ET.SubElement(provider, tag, type=entry.protocol)
        _text(server, "hostname", host)
        _text(server, "port", str(entry.port))
        _text(server, "socketType", entry.socket_type)
        _text(server, "authentication", AUTHENTICATION)
        _text(server, "username", USERNAME)
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"
