"""The ManageSieve server over real sockets: TLS, SASL, script validation, limits."""

from __future__ import annotations

import base64
import re
import socket
import time
from typing import Any

import pytest
from managesieve_harness import ALICE, BOB, PASSWORD, Conversation

from hato.codec import sasl
from hato.policy.authn import LockoutPolicy
from hato.servers.base import TlsMode
from hato.servers.managesieve import ManageSieveSettings

PLAIN = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()


def login(talk: Conversation) -> None:
    talk.until_status()  # the greeting
    talk.send(f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode())
    assert talk.until_status() == [b'OK "Logged in"\r\n']


def logged_in(env: Any, mode: TlsMode = TlsMode.NONE) -> Conversation:
    talk = Conversation(env.connect(mode))
    login(talk)
    return talk


def command(talk: Conversation, line: bytes) -> list[bytes]:
    talk.send(line)
    return talk.until_status()


def upgrade(env: Any, talk: Conversation, *, pipelined: bytes = b"") -> Conversation:
    talk.send(b"STARTTLS\r\n" + pipelined)
    assert talk.until_status() == [b'OK "Begin TLS negotiation now"\r\n']
    tls = env.client_context().wrap_socket(talk.sock, server_hostname="localhost")
    return Conversation(tls)


def test_starttls_reissues_capabilities_and_drops_pipelined_input(sieve_env: Any) -> None:
    env = sieve_env()  # not demo: no SASL before TLS
    raw = Conversation(env.connect(TlsMode.STARTTLS))
    greeting = raw.until_status()
    # RFC 5804 §1.7: SASL may be empty only when STARTTLS is advertised.
    assert b'"SASL" ""\r\n' in greeting and b'"STARTTLS"\r\n' in greeting
    assert b"OWNER" not in b"".join(greeting)
    # RFC 5804 §2.1 / RFC 8314: no password before TLS.
    assert command(raw, f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode()) == [
        b'NO (ENCRYPT-NEEDED) "use STARTTLS first"\r\n'
    ]
    talk = upgrade(env, raw, pipelined=f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode())
    caps = talk.until_status()  # RFC 5804 §2.2: capabilities again, without STARTTLS
    assert b'"SASL" "SCRAM-SHA-256 SCRAM-SHA-1 PLAIN LOGIN"\r\n' in caps
    assert b"STARTTLS" not in b"".join(caps) and caps[-1] == b"OK\r\n"
    # The AUTHENTICATE sent with STARTTLS was discarded, not run: still not logged in.
    assert command(talk, b"LISTSCRIPTS\r\n") == [b'NO "LISTSCRIPTS needs authentication"\r\n']
    assert command(talk, b"STARTTLS\r\n")[0].startswith(b"NO ")
    assert command(talk, f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode()) == [b'OK "Logged in"\r\n']
    caps = command(talk, b"CAPABILITY\r\n")
    assert b'"OWNER" "alice@example.org"\r\n' in caps and b"STARTTLS" not in b"".join(caps)
    talk.close()


def test_implicit_tls_port(sieve_env: Any) -> None:
    env = sieve_env()
    sock = env.client_context().wrap_socket(
        env.connect(TlsMode.IMPLICIT), server_hostname="localhost"
    )
    talk = Conversation(sock)
    greeting = talk.until_status()
    assert b"STARTTLS" not in b"".join(greeting) and b"PLAIN" in b"".join(greeting)
    talk.send(f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode())
    assert talk.until_status() == [b'OK "Logged in"\r\n']
    talk.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_login(sieve_env: Any, mechanism: str) -> None:
    # RFC 5804 §2.1: SCRAM-SHA-1 is mandatory to implement for ManageSieve servers.
    env = sieve_env()
    talk = Conversation(
        env.client_context().wrap_socket(env.connect(TlsMode.IMPLICIT), server_hostname="localhost")
    )
    talk.until_status()
    client = sasl.client_mechanism(mechanism, ALICE, PASSWORD)
    assert isinstance(client, sasl.ScramClient)
    initial = client.initial()
    assert initial is not None
    first = base64.b64encode(initial).decode()
    talk.send(f'AUTHENTICATE "{mechanism}" "{first}"\r\n'.encode())
    challenge = talk.line()
    assert challenge.startswith(b'"') and challenge.endswith(b'"\r\n')
    final = client.respond(base64.b64decode(challenge.strip().strip(b'"')))
    # RFC 5804 §2.1: a response may be sent as a literal, too.
    encoded = base64.b64encode(final)
    talk.send(b"{%d+}\r\n%s\r\n" % (len(encoded), encoded))
    server_final = base64.b64decode(talk.line().strip().strip(b'"'))
    assert client.respond(server_final) == b""
    assert client.verified  # the server proved it knows the keys (RFC 5802 §3)
    talk.send(b'""\r\n')
    assert talk.until_status() == [b'OK "Logged in"\r\n']
    talk.close()


def test_too_many_failed_logins_end_with_bye(sieve_env: Any) -> None:
    env = sieve_env(demo=True, lockout=LockoutPolicy(max_failures=100))
    talk = Conversation(env.connect())
    talk.until_status()
    bad = base64.b64encode(f"\0{ALICE}\0nope".encode()).decode()
    for _ in range(2):
        assert command(talk, f'AUTHENTICATE "PLAIN" "{bad}"\r\n'.encode()) == [
            b'NO "Authentication failed"\r\n'
        ]
    # RFC 5804 §2.1 example: the third failure gets BYE and the server hangs up.
    assert command(talk, f'AUTHENTICATE "PLAIN" "{bad}"\r\n'.encode()) == [
        b'BYE "Too many failed authentication attempts"\r\n'
    ]
    assert talk.line() == b""
    talk.close()


def test_lockout_gives_trylater(sieve_env: Any) -> None:
    env = sieve_env(demo=True, lockout=LockoutPolicy(max_failures=1))
    bad = base64.b64encode(f"\0{ALICE}\0nope".encode()).decode()
    talk = Conversation(env.connect())
    talk.until_status()
    assert command(talk, f'AUTHENTICATE "PLAIN" "{bad}"\r\n'.encode())[0].startswith(b"NO ")
    assert command(talk, f'AUTHENTICATE "PLAIN" "{PLAIN}"\r\n'.encode()) == [
        b'NO (TRYLATER) "too many failed logins"\r\n'
    ]
    talk.close()


def test_invalid_script_is_refused_with_line_numbers(sieve_env: Any) -> None:
    env = sieve_env(demo=True)
    talk = logged_in(env)
    script = b"#comment\r\nInvalidSieveCommand;\r\n"
    for line in (
        b'PUTSCRIPT "foo" {%d+}\r\n' % len(script),
        b"CHECKSCRIPT {%d+}\r\n" % len(script),
    ):
        talk.send(line + script + b"\r\n")
        answer = talk.line()
        assert answer.startswith(b"NO ")
        if answer.startswith(b"NO {"):  # several errors: a literal with one per line
            size = int(answer[4 : answer.index(b"}")])
            text = talk.read(size)
            assert talk.line() == b"\r\n"
        else:
            text = answer[3:]
        # RFC 5804 §2.6: the message SHOULD give the line number of the first error.
        assert re.match(rb'"?line 2: ', text), text
    assert env.scripts() == []  # RFC 5804 §2.6: an invalid script MUST NOT be stored
    # A script that is not UTF-8 is refused too.
    assert command(talk, b'PUTSCRIPT "foo" {3+}\r\n\xff\xfe;\r\n')[0].startswith(b"NO ")
    talk.close()


def test_putscript_replaces_only_on_success_and_validates_names(sieve_env: Any) -> None:
    env = sieve_env(demo=True)
    talk = logged_in(env)
    assert command(talk, b'PUTSCRIPT "s" "keep;"\r\n') == [b"OK\r\n"]
    bad = b"InvalidSieveCommand;\r\n"
    assert command(talk, b'PUTSCRIPT "s" {%d+}\r\n%s\r\n' % (len(bad), bad))[0].startswith(b"NO")
    assert [s.content for s in env.scripts()] == ["keep;"]  # RFC 5804 §2.6
    # RFC 5804 §1.6: control characters are not allowed in names.
    answer = command(talk, b'PUTSCRIPT {3+}\r\na\nb "keep;"\r\n')
    assert answer[0].startswith(b'NO "script name')
    answer = command(talk, b'PUTSCRIPT "tab\there" "keep;"\r\n')
    assert answer[0].startswith(b'NO "script name')
    # UTF-8 names and content round-trip.
    name = "Entw\u00fcrfe \u732b".encode()
    body = "# \u732b\r\nkeep;\r\n".encode()
    assert command(talk, b'PUTSCRIPT "%s" {%d+}\r\n%s\r\n' % (name, len(body), body)) == [b"OK\r\n"]
    assert command(talk, b'GETSCRIPT "%s"\r\n' % name) == [
        b"{%d}\r\n" % len(body),
        "# \u732b\r\n".encode(),
        b"keep;\r\n",
        b"\r\n",
        b"OK\r\n",
    ]
    # Another account sees none of alice's scripts.
    assert env.scripts(env.bob) == []
    talk.close()


def test_oversized_literal_is_refused_and_the_session_goes_on(sieve_env: Any) -> None:
    env = sieve_env(demo=True, max_script_size=1024)
    talk = logged_in(env)
    big = b"#" * 20_000 + b"\r\nkeep;\r\n"
    talk.send(b'PUTSCRIPT "big" {%d+}\r\n%s\r\n' % (len(big), big))
    assert talk.until_status() == [b'NO (QUOTA/MAXSIZE) "script is too large"\r\n']
    medium = b"#" * 1100 + b"\r\nkeep;\r\n"  # within the literal bound, over the script size
    talk.send(b'PUTSCRIPT "big" {%d+}\r\n%s\r\n' % (len(medium), medium))
    assert talk.until_status() == [b'NO (QUOTA/MAXSIZE) "script is too large"\r\n']
    assert command(talk, b"LISTSCRIPTS\r\n") == [b"OK\r\n"]
    talk.close()


def test_total_quota(sieve_env: Any) -> None:
    env = sieve_env(demo=True, max_script_size=1024, max_total_size=1500)
    talk = logged_in(env)
    script = b"#" * 900 + b"\r\nkeep;\r\n"
    assert command(talk, b'PUTSCRIPT "a" {%d+}\r\n%s\r\n' % (len(script), script)) == [b"OK\r\n"]
    assert command(talk, b'HAVESPACE "b" %d\r\n' % len(script)) == [
        b'NO (QUOTA) "quota exceeded"\r\n'
    ]
    assert command(talk, b'PUTSCRIPT "b" {%d+}\r\n%s\r\n' % (len(script), script)) == [
        b'NO (QUOTA) "quota exceeded"\r\n'
    ]
    assert command(talk, b'HAVESPACE "a" %d\r\n' % len(script)) == [b"OK\r\n"]  # a replacement
    talk.close()


def test_idle_connection_gets_bye(sieve_env: Any) -> None:
    env = sieve_env(demo=True, login_timeout=0.3)
    talk = Conversation(env.connect())
    talk.until_status()
    started = time.monotonic()
    assert talk.line() == b'BYE "idle timeout, closing connection"\r\n'
    assert talk.line() == b""
    assert time.monotonic() - started < 5
    talk.close()


def test_idle_timeout_floor() -> None:
    # RFC 5804 §1.2: at least 30 minutes after authentication.
    with pytest.raises(Exception, match="1800"):
        ManageSieveSettings(hostname="x", listeners=(), idle_timeout=60)


def test_connections_per_address_are_limited(sieve_env: Any) -> None:
    env = sieve_env(demo=True, max_connections_per_ip=2)
    first = Conversation(env.connect())
    second = Conversation(env.connect())
    first.until_status()
    second.until_status()
    third = Conversation(env.connect())
    assert third.line() == b'BYE "too many connections, try again later"\r\n'
    third.close()
    first.close()
    second.close()


def test_logout_in_the_middle_of_pipelined_commands_ignores_the_rest(sieve_env: Any) -> None:
    env = sieve_env(demo=True)
    talk = logged_in(env)
    talk.send(b'LOGOUT\r\nPUTSCRIPT "late" "keep;"\r\n')
    assert talk.until_status() == [b'OK "Logout completed"\r\n']
    assert talk.line() == b""
    assert env.scripts() == []  # RFC 5804 §2.3: commands after LOGOUT are ignored
    talk.close()


def test_client_vanishing_mid_literal_leaves_nothing(sieve_env: Any) -> None:
    env = sieve_env(demo=True)
    talk = logged_in(env)
    talk.send(b'PUTSCRIPT "half" {100+}\r\nkeep;')
    talk.sock.shutdown(socket.SHUT_WR)
    assert talk.line() == b""
    talk.close()
    assert env.scripts() == []


def test_tls_handshake_failure_closes_quietly(sieve_env: Any) -> None:
    env = sieve_env()
    talk = Conversation(env.connect(TlsMode.STARTTLS))
    talk.until_status()
    talk.send(b"STARTTLS\r\n")
    assert talk.until_status() == [b'OK "Begin TLS negotiation now"\r\n']
    talk.send(b"this is not a TLS client hello\r\n" * 4)
    rest = b""
    while chunk := talk.read(1):
        rest += chunk
    assert b"OK" not in rest and b"NO" not in rest  # closed without answering in plaintext
    talk.close()
    # The server still serves others.
    other = Conversation(env.connect(TlsMode.STARTTLS))
    assert other.until_status()[-1] == b"OK\r\n"
    other.close()


def test_bob_logs_in_separately(sieve_env: Any) -> None:
    env = sieve_env(demo=True)
    talk = Conversation(env.connect())
    talk.until_status()
    token = base64.b64encode(f"\0{BOB}\0{PASSWORD}".encode()).decode()
    assert command(talk, f'AUTHENTICATE "PLAIN" "{token}"\r\n'.encode()) == [b'OK "Logged in"\r\n']
    assert command(talk, b'PUTSCRIPT "b" "keep;"\r\n') == [b"OK\r\n"]
    assert [s.name for s in env.scripts(env.bob)] == ["b"] and env.scripts() == []
    talk.close()


def test_stop_says_bye_to_idle_sessions(sieve_env: Any) -> None:
    env = sieve_env(demo=True)
    talk = logged_in(env)
    started = time.monotonic()
    env.call(env.server.stop(timeout=30))
    assert time.monotonic() - started < 5  # a session waiting for a command ends now
    # RFC 5804 §1.2: BYE when the server closes the connection; TRYLATER (§1.3)
    assert talk.line() == b'BYE (TRYLATER) "server shutting down, try again later"\r\n'
    assert talk.line() == b""
    talk.close()
