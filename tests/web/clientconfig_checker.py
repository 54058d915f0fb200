"""A checker for Thunderbird ``clientConfig`` v1.1 documents, run over the ISPDB and over Hato.

The rules are those Thunderbird's reader (``readFromXML``) applies to the elements Hato
emits: root ``clientConfig`` version 1.1, exactly one ``emailProvider`` with an ``id`` and at
least one ``domain`` and a ``displayName``; at least one ``incomingServer`` and one
``outgoingServer``; IMAP/POP3/SMTP servers with exactly one hostname, a port in 1-65535, a
``socketType`` of plain/SSL/STARTTLS, at least one known ``authentication`` value and (for
incoming servers) a ``username``; ``%PLACEHOLDER%`` names from Thunderbird's set. Exchange
servers (``exchange``, ``ews``, ``owa``, ``graph``) need an URL or a host name instead.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

SOCKET_TYPES = {"plain", "SSL", "STARTTLS"}
AUTHENTICATION = {
    "password-cleartext", "plain", "password-encrypted", "secure", "GSSAPI", "NTLM",
    "TLS-client-cert", "OAuth2", "none", "client-IP-address", "smtp-after-pop",
}
INCOMING_TYPES = {"imap", "pop3"}
EXCHANGE_TYPES = {"exchange", "ews", "owa", "graph"}
PLACEHOLDERS = {"EMAILADDRESS", "EMAILLOCALPART", "EMAILDOMAIN", "REALNAME"}
_PLACEHOLDER = re.compile(r"%([A-Z]+)%")
_HOSTNAME = re.compile(r"[A-Za-z0-9%](?:[A-Za-z0-9.%-]*[A-Za-z0-9%])?")


def _texts(parent: ET.Element, tag: str) -> list[str]:
    return [(e.text or "").strip() for e in parent.findall(tag)]


def _check_placeholders(where: str, text: str, problems: list[str]) -> None:
    for name in _PLACEHOLDER.findall(text):
        if name not in PLACEHOLDERS:
            problems.append(f"{where}: unknown placeholder %{name}%")


def _check_server(where: str, server: ET.Element, *, incoming: bool, problems: list[str]) -> None:
    kind = server.get("type")
    allowed = (INCOMING_TYPES | EXCHANGE_TYPES) if incoming else {"smtp"}
    if kind not in allowed:
        problems.append(f"{where}: type {kind!r} not in {sorted(allowed)}")
        return
    if kind in EXCHANGE_TYPES:
        if not (_texts(server, "url") or _texts(server, "hostname")):
            problems.append(f"{where}: exchange server without url or hostname")
        return
    hosts = _texts(server, "hostname")
    if len(hosts) != 1 or not _HOSTNAME.fullmatch(hosts[0]):
        problems.append(f"{where}: needs exactly one valid hostname, got {hosts}")
    else:
        _check_placeholders(f"{where}/hostname", hosts[0], problems)
    ports = _texts(server, "port")
    if len(ports) != 1 or not ports[0].isdigit() or not 1 <= int(ports[0]) <= 65535:
        problems.append(f"{where}: needs exactly one port in 1-65535, got {ports}")
    sockets = _texts(server, "socketType")
    if len(sockets) != 1 or sockets[0] not in SOCKET_TYPES:
        problems.append(f"{where}: socketType must be one of {sorted(SOCKET_TYPES)}: {sockets}")
    auths = _texts(server, "authentication")
    if not auths or any(a not in AUTHENTICATION for a in auths):
        problems.append(f"{where}: authentication values {auths} not all known")
    users = _texts(server, "username")
    if incoming and (len(users) != 1 or not users[0]):
        problems.append(f"{where}: needs one non-empty username, got {users}")
    for user in users:
        _check_placeholders(f"{where}/username", user, problems)


def check_client_config(data: bytes) -> list[str]:
    """Every problem found in the document (empty when it is valid)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]
    problems: list[str] = []
    if root.tag != "clientConfig" or root.get("version") != "1.1":
        problems.append(f"root must be clientConfig version 1.1, got {root.tag} {root.attrib}")
    providers = root.findall("emailProvider")
    if len(providers) != 1:
        return [*problems, f"needs exactly one emailProvider, got {len(providers)}"]
    provider = providers[0]
    if not provider.get("id"):
        problems.append("emailProvider needs an id")
    if not [d for d in _texts(provider, "domain") if d]:
        problems.append("emailProvider needs at least one domain")
    if not [n for n in _texts(provider, "displayName") if n]:
        problems.append("emailProvider needs a displayName")
    incoming = provider.findall("incomingServer")
    outgoing = provider.findall("outgoingServer")
    if not incoming:
        problems.append("needs at least one incomingServer")
    if not outgoing and not any(s.get("type") in EXCHANGE_TYPES for s in incoming):
        problems.append("needs at least one outgoingServer")
    for i, server in enumerate(incoming):
        _check_server(f"incomingServer[{i}]", server, incoming=True, problems=problems)
    for i, server in enumerate(outgoing):
        _check_server(f"outgoingServer[{i}]", server, incoming=False, problems=problems)
    return problems
