"""The POP3 server with Python's poplib over loopback: TLS rules, SASL, RFC 1939 semantics."""

from __future__ import annotations

import base64
import contextlib
import poplib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hato.codec import sasl
from hato.core.errors import ConfigError
from hato.policy.authn import LockoutPolicy
from hato.servers.base import Listener, TlsMode
from hato.servers.pop3 import Pop3Settings

ALICE = "alice@example.org"
DOTTED = "first line\r\n.starts with a dot\r\n..two dots\r\n.\r\nlast\r\n"


@contextlib.contextmanager
def connect(env: Any, mode: TlsMode = TlsMode.IMPLICIT) -> Iterator[poplib.POP3]:
    if mode is TlsMode.IMPLICIT:
        client: poplib.POP3 = poplib.POP3_SSL(
            "127.0.0.1", env.ports[mode], context=env.client_context(), timeout=10
        )
    else:
        client = poplib.POP3("127.0.0.1", env.ports[mode], timeout=10)
    try:
        yield client
    finally:
        client.close()


def login(client: poplib.POP3, env: Any, user: str = ALICE) -> None:
    client.user(user)
    client.pass_(env.password if user == ALICE else env.bob_password)


def test_settings_enforce_rfc1939_autologout_minimum() -> None:
    with pytest.raises(ConfigError):
        Pop3Settings("h", (Listener("127.0.0.1", 0, TlsMode.NONE),), idle_timeout=599)


def test_starttls_listener_hides_passwords_until_stls(pop3_env: Any) -> None:
    env = pop3_env()
    with connect(env, TlsMode.STARTTLS) as client:
        assert client.getwelcome().startswith(b"+OK pop.example.org")
        caps = client.capa()
        assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
        for key in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]:
            assert key in caps
        # RFC 5034 §4: no plaintext password mechanism before STLS.
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client._shortcmd("AUTH PLAIN " + base64.b64encode(b"\0a\0b").decode())
        assert client.stls(env.client_context()).startswith(b"+OK")
        caps = client.capa()  # RFC 2595 §4: the client re-issues CAPA after STLS
        assert "STLS" not in caps and "USER" in caps
        assert caps["SASL"] == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
        with pytest.raises(poplib.error_proto, match="TLS active"):
            client._shortcmd("STLS")
        login(client, env)
        assert client.stat() == (0, 0)
        assert client.quit().startswith(b"+OK")


def test_plain_listener_without_demo_refuses_everything(pop3_env: Any) -> None:
    env = pop3_env()
    with connect(env, TlsMode.NONE) as client:
        caps = client.capa()
        assert "STLS" not in caps and "USER" not in caps
        with pytest.raises(poplib.error_proto, match="not available"):
            client._shortcmd("STLS")
        with pytest.raises(poplib.error_proto):
            client.apop(ALICE, env.password)  # APOP is not supported
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.user(ALICE)


def test_retr_top_list_uidl(pop3_env: Any) -> None:
    env = pop3_env()
    first = env.message("one", DOTTED)
    second = env.message("two")
    uids = [env.deliver(first), env.deliver(second)]
    with connect(env) as client:
        login(client, env)
        assert client.stat() == (2, len(first) + len(second))
        resp, listing, _ = client.list()
        assert resp.startswith(b"+OK 2 messages")
        assert listing == [f"1 {len(first)}".encode(), f"2 {len(second)}".encode()]
        assert client.list(2) == f"+OK 2 {len(second)}".encode()
        resp, lines, _octets = client.retr(1)
        # poplib removes the byte-stuffing; what remains is the message exactly.
        assert b"\r\n".join(lines) + b"\r\n" == first
        assert resp == f"+OK {len(first)} octets".encode()
        _, top, _ = client.top(1, 2)
        header, _body = first.split(b"\r\n\r\n", 1)
        assert top == [*header.split(b"\r\n"), b"", b"first line", b".starts with a dot"]
        _, top0, _ = client.top(2, 0)
        assert top0[-1] == b"" and b"Subject: two" in top0
        uidvalidity = env.uidvalidity()
        expected = [f"{n} {uid:08X}{uidvalidity:08X}".encode() for n, uid in enumerate(uids, 1)]
        assert client.uidl()[1] == expected
        assert client.uidl(2) == b"+OK " + expected[1]
        for command in ["RETR 3", "RETR 0", "TOP 1 -1", "LIST x", "DELE 9"]:
            with pytest.raises(poplib.error_proto):
                client._shortcmd(command)
        client.quit()
    with connect(env) as client:
        login(client, env)
        assert client.uidl()[1] == expected  # RFC 1939 §7: unique ids persist across sessions
        client.quit()


def test_dele_takes_effect_only_at_quit(pop3_env: Any) -> None:
    env = pop3_env()
    uids = [env.deliver(env.message(f"m{i}")) for i in range(3)]
    with connect(env) as client:
        login(client, env)
        client.dele(1)
        with pytest.raises(poplib.error_proto, match="deleted"):
            client.retr(1)  # RFC 1939 §5: a deleted message may not be referenced
        assert client.stat()[0] == 2
        assert client.rset().startswith(b"+OK maildrop has 3 messages")
        client.dele(2)
        client.retr(1)
        assert env.inbox_uids() == uids  # nothing removed before UPDATE
        assert client.quit() == b"+OK pop.example.org signing off (2 messages left)"
    assert env.inbox_uids() == [uids[0], uids[2]]
    assert env.seen_uids() == [uids[0]]  # RETR'd messages are flagged \Seen at QUIT

    # A dropped session (no QUIT) enters no UPDATE state: everything stays.
    with connect(env) as client:
        login(client, env)
        client.dele(1)
        client.dele(2)
    time.sleep(0.2)
    assert env.inbox_uids() == [uids[0], uids[2]]


def test_maildrop_is_a_snapshot_and_locked(pop3_env: Any) -> None:
    env = pop3_env()
    env.deliver(env.message("before"))
    with connect(env) as client:
        login(client, env)
        env.deliver(env.message("during"))
        # RFC 1939 §8: messages delivered during the session are not shown in it.
        assert client.stat()[0] == 1
        assert len(client.uidl()[1]) == 1
        with connect(env) as other:
            other.user(ALICE)
            # RFC 2449 §8.1.2: authenticated, but the maildrop is in use.
            with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
                other.pass_(env.password)
            login(other, env, user="bob@example.org")  # another account is independent
            other.quit()
        client.quit()
    with connect(env) as client:
        login(client, env)
        assert client.stat()[0] == 2
        client.quit()


def test_wrong_password_and_lockout(pop3_env: Any) -> None:
    env = pop3_env(lockout=LockoutPolicy(max_failures=3, window=60, lockout=600))
    with connect(env) as client:
        for _ in range(3):
            client.user(ALICE)
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
                client.pass_("wrong")
        client.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            client.pass_(env.password)
        with pytest.raises(poplib.error_proto, match="USER first"):
            client.pass_(env.password)


def sasl_auth(client: poplib.POP3, mechanism: str, user: str, password: str) -> bytes:
    """Run a SASL exchange over poplib's line primitives with Hato's client mechanisms."""
    mech = sasl.client_mechanism(mechanism, user, password)
    initial = mech.initial()
    command = f"AUTH {mechanism}"
    if initial is not None:
        command += " " + (base64.b64encode(initial).decode() or "=")
    client._putcmd(command)
    while True:
        line, _ = client._getline()
        if not line.startswith(b"+ ") and line != b"+":
            break
        challenge = base64.b64decode(line[2:])
        client._putcmd(base64.b64encode(mech.respond(challenge)).decode())
    if isinstance(mech, sasl.ScramSha256Client) and line.startswith(b"+OK"):
        assert mech.verified
    return line


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "SCRAM-SHA-256"])
def test_sasl_mechanisms(pop3_env: Any, mechanism: str) -> None:
    env = pop3_env()
    env.deliver(env.message("hello"))
    with connect(env) as client:
        assert sasl_auth(client, mechanism, ALICE, "wrong").startswith(b"-ERR [AUTH]")
        assert sasl_auth(client, mechanism, ALICE, env.password).startswith(b"+OK")
        assert client.stat()[0] == 1
        with pytest.raises(poplib.error_proto):
            client._shortcmd("AUTH PLAIN =")  # RFC 5034 §4: no AUTH after success
        client.quit()


def test_sasl_plain_shortcmd_cancel_and_errors(pop3_env: Any) -> None:
    env = pop3_env()
    with connect(env) as client:
        # RFC 5034 §4: no initial response -> an empty challenge "+ ".
        client._putcmd("AUTH PLAIN")
        assert client._getline()[0] == b"+ "
        client._putcmd("*")  # cancel
        assert client._getline()[0].startswith(b"-ERR")
        for bad in ["AUTH PLAIN =AAA", "AUTH CRAM-MD5", "AUTH PLAIN AAA=BBB"]:
            with pytest.raises(poplib.error_proto):
                client._shortcmd(bad)
        _resp, mechanisms, _ = client._longcmd("AUTH")
        assert mechanisms == [b"SCRAM-SHA-256", b"PLAIN", b"LOGIN"]
        token = base64.b64encode(f"\0{ALICE}\0{env.password}".encode()).decode()
        assert client._shortcmd("AUTH PLAIN " + token).startswith(b"+OK maildrop has 0")
        client.quit()


def test_stls_discards_pipelined_plaintext(pop3_env: Any) -> None:
    """RFC 2595 §4 / STARTTLS command injection: a USER sent in the clear together with
    STLS must not be taken as if it came over TLS."""
    env = pop3_env()
    raw = socket.create_connection(("127.0.0.1", env.ports[TlsMode.STARTTLS]), timeout=10)
    try:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        raw.sendall(f"STLS\r\nUSER {ALICE}\r\n".encode())
        assert reader.readline() == b"+OK Begin TLS negotiation\r\n"
        reader.close()
        tls = env.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        raw = tls
        tls_reader = tls.makefile("rb")
        tls.sendall(f"PASS {env.password}\r\n".encode())
        assert tls_reader.readline() == b"-ERR USER first\r\n"
        tls_reader.close()
    finally:
        raw.close()


def test_bad_input_and_too_many_errors(pop3_env: Any) -> None:
    env = pop3_env(max_errors=4)
    with connect(env) as client:
        with pytest.raises(poplib.error_proto, match="line too long"):
            client._shortcmd("NOOP " + "x" * 300)
        with pytest.raises(poplib.error_proto, match="not allowed"):
            client._shortcmd("STAT")
        with pytest.raises(poplib.error_proto, match="unknown command"):
            client._shortcmd("HELO")
        with pytest.raises(poplib.error_proto, match="too many bad commands"):
            client._shortcmd("HELO")
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            client._shortcmd("CAPA")


def test_connection_limit_per_address(pop3_env: Any) -> None:
    env = pop3_env(max_connections_per_ip=1)
    with connect(env, TlsMode.NONE) as first:
        assert first.getwelcome().startswith(b"+OK")
        with socket.create_connection(("127.0.0.1", env.ports[TlsMode.NONE]), timeout=10) as raw:
            reply = raw.makefile("rb")
            assert reply.readline().startswith(b"-ERR [SYS/TEMP] too many connections")
            assert reply.readline() == b""  # and closed
            reply.close()
    time.sleep(0.2)
    with connect(env, TlsMode.NONE) as again:
        assert again.getwelcome().startswith(b"+OK")


def test_idle_timeout_closes_without_update(pop3_env: Any) -> None:
    env = pop3_env()
    uid = env.deliver(env.message("stays"))
    object.__setattr__(env.server.settings, "idle_timeout", 0.5)  # below the RFC floor, for speed
    with connect(env) as client:
        login(client, env)
        client.dele(1)
        time.sleep(1.0)
        # RFC 1939 §3: the autologout closes the connection without a response or UPDATE.
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            client.quit()
    assert env.inbox_uids() == [uid]


def test_demo_mode_allows_plaintext_on_loopback(pop3_env: Any) -> None:
    env = pop3_env(demo=True)
    with connect(env, TlsMode.NONE) as client:
        assert "USER" in client.capa()
        login(client, env)
        assert client.quit().startswith(b"+OK")


def test_stop_closes_sessions_and_keeps_mail(pop3_env: Any) -> None:
    env = pop3_env()
    uid = env.deliver(env.message("kept"))
    with connect(env) as client:
        login(client, env)
        client.dele(1)
        env.call(env.server.stop(timeout=0.2))
        with pytest.raises((poplib.error_proto, OSError, EOFError, ssl.SSLError)):
            client.quit()
    assert env.inbox_uids() == [uid]


def test_stop_ends_idle_sessions_at_once(pop3_env: Any) -> None:
    env = pop3_env(demo=True)
    uid = env.deliver(env.message("kept"))
    with connect(env, TlsMode.NONE) as client:
        login(client, env)
        client.dele(1)
        started = time.monotonic()
        env.call(env.server.stop(timeout=30))
        assert time.monotonic() - started < 5  # a session waiting for a command ends now
        # RFC 1939 §3, §6: closed without a response and without UPDATE
        assert client.sock.recv(100) == b""
    assert env.inbox_uids() == [uid]


def test_connection_accepted_while_stopping_gets_no_session(pop3_env: Any) -> None:
    """A socket accepted before stop() whose implicit-TLS handshake ends after it is closed,
    not served by a session that outlives the service."""
    env = pop3_env()
    raw = socket.create_connection(("127.0.0.1", env.ports[TlsMode.IMPLICIT]), timeout=10)
    time.sleep(0.2)  # accepted; the server waits for the ClientHello
    env.call(env.server.stop(timeout=0.2))
    data = b"not read"
    try:
        with env.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            data = tls.recv(100)
    except (ssl.SSLError, OSError):
        data = b""
    finally:
        raw.close()
    assert data == b""  # no greeting: closed


def test_capabilities_are_the_same_in_both_states(pop3_env: Any) -> None:
    """RFC 2449 §5: capabilities available in AUTHORIZATION MUST be announced in both states
    (STLS excepted, RFC 2595 §8: AUTHORIZATION only); RFC 5034 §3: SASL stays after login."""
    env = pop3_env()
    with connect(env, TlsMode.STARTTLS) as client:
        # RFC 1939 §7, RFC 2449 §6: no APOP, so no timestamp in the greeting.
        assert b"<" not in client.getwelcome()
        assert "STLS" in client.capa()
        client.stls(env.client_context())
        before = client.capa()
        login(client, env)
        assert client.capa() == before
    assert before["EXPIRE"] == ["NEVER"]  # RFC 2449 §6.7: nothing is deleted on its own
    assert before["IMPLEMENTATION"] == ["Hato"]  # RFC 2449 §6.9
    assert "LOGIN-DELAY" not in before and "STLS" not in before
    assert set(before) == {
        "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE", "USER", "SASL",
        "IMPLEMENTATION",
    }


def test_message_with_bare_line_feeds_is_sent_with_crlf(pop3_env: Any) -> None:
    """RFC 1939 §3: every line of a multi-line response ends with CRLF, and the response
    with CRLF.CRLF, also for a message stored with bare LFs."""
    env = pop3_env(demo=True)
    env.deliver(b"Subject: lf\n\n.dot\nlast line")
    with socket.create_connection(("127.0.0.1", env.ports[TlsMode.NONE]), timeout=10) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(f"USER {ALICE}\r\nPASS {env.password}\r\nRETR 1\r\nTOP 1 0\r\n".encode())
        assert reader.readline().startswith(b"+OK send PASS")
        assert reader.readline().startswith(b"+OK maildrop has 1")
        assert reader.readline().startswith(b"+OK")
        lines = [reader.readline() for _ in range(5)]
        assert lines == [b"Subject: lf\r\n", b"\r\n", b"..dot\r\n", b"last line\r\n", b".\r\n"]
        assert reader.readline().startswith(b"+OK")
        # RFC 1939 §7: TOP n=0 sends the header and the blank line after it.
        assert [reader.readline() for _ in range(3)] == [b"Subject: lf\r\n", b"\r\n", b".\r\n"]
        reader.close()
