"""A small authoritative DNS server for tests: UDP and TCP on 127.0.0.1, an ephemeral port.

It serves an in-memory zone (a dict), answers with the AA bit, follows in-zone CNAMEs,
tells NXDOMAIN from NODATA (RFC 2308), supports ``*.`` wildcards (RFC 4592, simplified:
the closest ``*`` sibling up the tree), and can be told to let chosen names time out (no
reply at all) or answer SERVFAIL. Built on dnspython's message/wire code; runs in one
background thread so it serves sync and asyncio tests alike.

Usage::

    from dnsserver import DnsServer, TIMEOUT, SERVFAIL

    zone = {
        "example.test": {"MX": [(10, "mx.example.test")], "TXT": ["v=spf1 ip4:127.0.0.2 -all"]},
        "mx.example.test": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "_25._tcp.mx.example.test": {"TLSA": [(3, 1, 1, bytes.fromhex("ab" * 32))]},
        "2.0.0.127.in-addr.arpa": {"PTR": ["mx.example.test"]},
        "www.example.test": {"CNAME": ["example.test"]},
        "slow.example.test": TIMEOUT,              # every type times out
        "broken.example.test": {"TXT": SERVFAIL},  # just TXT fails
    }
    with DnsServer(zone) as server:                 # server.host, server.port
        resolver = DnsPythonResolver([server.host], port=server.port, timeout=1.0)
        ...
        server.set("new.example.test", "A", ["127.0.0.3"])   # zones can change live

Record values: A/AAAA as address text, TXT as a string or a list of strings (one record of
several character-strings; long strings are split at 255 octets), MX as ``(preference,
host)``, PTR/CNAME as a host name, TLSA as ``(usage, selector, mtype, data_bytes)``.
``authenticated=True`` sets the AD bit on every answer (for DANE tests).

Security: binds loopback only; serves whatever the test put in the zone.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TIMEOUT = "TIMEOUT"
SERVFAIL = "SERVFAIL"
TTL = 60

Zone = Mapping[str, Any]


def _key(name: str) -> str:
    return name.rstrip(".").lower()


class DnsServer:
    """An authoritative test server; start with ``with`` or ``start()``/``stop()``."""

    def __init__(
        self, zone: Zone | None = None, *, host: str = "127.0.0.1", authenticated: bool = False
    ) -> None:
        self.host = host
        self.port = 0
        self.authenticated = authenticated
        self.queries: list[tuple[str, str, str]] = []  # (transport, name, type)
        self._zone: dict[str, Any] = {}
        self._lock = threading.Lock()
        for name, entry in (zone or {}).items():
            self._zone[_key(name)] = entry if isinstance(entry, str) else dict(entry)
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False

    # -- zone editing ---------------------------------------------------------------------

    def set(self, name: str, rdtype: str, values: Sequence[Any] | str) -> None:
        """Replace the ``rdtype`` records of ``name`` (or set a TIMEOUT/SERVFAIL marker)."""
        with self._lock:
            entry = self._zone.setdefault(_key(name), {})
            if isinstance(entry, str):
                entry = self._zone[_key(name)] = {}
            entry[rdtype.upper()] = values

    def remove(self, name: str) -> None:
        """Make ``name`` NXDOMAIN (unless names below it remain)."""
        with self._lock:
            self._zone.pop(_key(name), None)

    def set_timeout(self, name: str, rdtype: str | None = None) -> None:
        """Never answer queries for ``name`` (all types, or just ``rdtype``)."""
        self._mark(name, rdtype, TIMEOUT)

    def set_servfail(self, name: str, rdtype: str | None = None) -> None:
        """Answer SERVFAIL for ``name`` (all types, or just ``rdtype``)."""
        self._mark(name, rdtype, SERVFAIL)

    def _mark(self, name: str, rdtype: str | None, marker: str) -> None:
        if rdtype is None:
            with self._lock:
                self._zone[_key(name)] = marker
        else:
            self.set(name, rdtype, marker)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> DnsServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(50):  # find a port free for both UDP and TCP
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        else:
            raise OSError("no port free for both UDP and TCP")
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for worker in self._workers:
            worker.join(timeout=5)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving --------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, "udp")
            sel.register(self._tcp, selectors.EVENT_READ, "tcp")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while not self._stopping:
                for key, _ in sel.select():
                    if key.data == "udp":
                        self._serve_udp()
                    elif key.data == "tcp":
                        self._serve_tcp()

    def _serve_udp(self) -> None:
        assert self._udp is not None
        try:
            wire, peer = self._udp.recvfrom(65535)
        except OSError:
            return
        reply = self._answer(wire, "udp")
        if reply is not None:
            self._udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        try:
            conn, _ = self._tcp.accept()
        except OSError:
            return
        worker = threading.Thread(target=self._tcp_connection, args=(conn,), daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def _tcp_connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            idle = 0.0
            while not self._stopping and idle < 3.0:
                # RFC 7766 §6.2.1: several queries may share one connection.
                try:
                    head = _recv_exact(conn, 2)
                    if head is None:
                        return
                    wire = _recv_exact(conn, struct.unpack("!H", head)[0])
                except TimeoutError:
                    idle += 0.2
                    continue
                except OSError:
                    return
                if wire is None:
                    return
                idle = 0.0
                reply = self._answer(wire, "tcp")
                if reply is not None:  # TIMEOUT: keep the connection silent
                    try:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                    except OSError:
                        return

    def _answer(self, wire: bytes, transport: str) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        if not query.question:
            return None
        question = query.question[0]
        qname = question.name.to_text(omit_final_dot=True).lower()
        qtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((transport, qname, qtype))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if self.authenticated:
            response.flags |= dns.flags.AD
        with self._lock:
            outcome = self._resolve(response, qname, qtype)
        if outcome == TIMEOUT:
            return None
        if outcome == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
            response.answer.clear()
        elif outcome == "NXDOMAIN":
            response.set_rcode(dns.rcode.NXDOMAIN)
        max_size = 65535 if transport == "tcp" else max(512, query.payload)
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()

    def _lookup(self, name: str) -> Any:
        entry = self._zone.get(name)
        if entry is not None:
            return entry
        if any(other.endswith("." + name) for other in self._zone):
            return {}  # empty non-terminal: NODATA
        labels = name.split(".")
        for i in range(1, len(labels)):
            wild = self._zone.get("*." + ".".join(labels[i:]))
            if wild is not None:
                return wild
        return None

    def _resolve(self, response: dns.message.Message, qname: str, qtype: str) -> str:
        name = qname
        for _ in range(9):
            entry = self._lookup(name)
            if entry is None:
                return "NXDOMAIN"
            if isinstance(entry, str):
                return entry
            values = entry.get(qtype, entry.get("*"))
            if isinstance(values, str):
                return values
            if values:
                response.answer.append(_rrset(name, qtype, values))
                return "OK"
            cname = entry.get("CNAME")
            if qtype != "CNAME" and cname and not isinstance(cname, str):
                target = cname[0] if isinstance(cname, list | tuple) else cname
                response.answer.append(_rrset(name, "CNAME", [target]))
                name = _key(target)
                continue
            return "OK"
        return "OK"


def _rrset(name: str, rdtype: str, values: Any) -> dns.rrset.RRset:
    if isinstance(values, str) or (rdtype == "MX" and isinstance(values, tuple)):
        values = [values]
    texts = [_rdata_text(rdtype, value) for value in values]
    return dns.rrset.from_text_list(dns.name.from_text(name), TTL, "IN", rdtype, texts)


def _rdata_text(rdtype: str, value: Any) -> str:
    if rdtype == "TXT":
        parts = [value] if isinstance(value, str) else list(value)
        chunks: list[bytes] = []
        for part in parts:
            raw = part.encode("utf-8") if isinstance(part, str) else bytes(part)
            chunks.extend(raw[i : i + 255] for i in range(0, len(raw), 255) or [0])
        return " ".join(_quote_txt(chunk) for chunk in chunks) if chunks else '""'
    if rdtype == "MX":
        pref, host = value
        return f"{int(pref)} {_fqdn(host)}"
    if rdtype in ("PTR", "CNAME"):
        return _fqdn(value)
    if rdtype == "TLSA":
        usage, selector, mtype, data = value
        return f"{usage} {selector} {mtype} {bytes(data).hex() or '00'}"
    return str(value)


def _quote_txt(raw: bytes) -> str:
    out = []
    for byte in raw:
        if byte in (0x22, 0x5C):
            out.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
