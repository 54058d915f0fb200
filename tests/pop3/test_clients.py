"""Real POP3 clients against the server on loopback: Debian's fetchmail and getmail6, over TLS
with the test's self-signed certificate as the only trusted one."""

from __future__ import annotations

import email
import os
import subprocess
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from hato.servers.base import TlsMode

ALICE = "alice@example.org"


def run_tool(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "FETCHMAILHOME": str(home),
        "LC_ALL": "C.UTF-8",
    }
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)


def read_messages(directory: Path) -> list[Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in sorted(directory.iterdir())]


def fetchmail(env: Any, home: Path, out: Path, *, mode: TlsMode, keep: bool) -> str:
    tls = "ssl" if mode is TlsMode.IMPLICIT else "sslproto tls1.2+"
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll localhost via 127.0.0.1 with proto POP3 port {env.ports[mode]} uidl\n"
        f'  user "{ALICE}" there with password "{env.password}" is "nobody" here\n'
        f'  {tls} sslcertck sslcommonname localhost sslcertfile "{env.cert_file}"\n'
        f"  {'keep' if keep else 'no keep'}\n"
        f"  mda \"/bin/sh -c 'cat > $(mktemp {out}/msg.XXXXXX)'\"\n"
    )
    rc.chmod(0o600)  # fetchmail refuses a password file others can read
    result = run_tool(
        ["fetchmail", "-f", str(rc), "--nodetach", "-v", "--idfile", str(home / "ids")], home
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: no new mail
    return result.stdout + result.stderr


@pytest.mark.parametrize("mode", [TlsMode.IMPLICIT, TlsMode.STARTTLS])
def test_fetchmail(pop3_env: Any, tmp_path: Path, mode: TlsMode) -> None:
    env = pop3_env()
    bodies = [env.message(f"fetch {i}", f"line {i}\r\n.dotted\r\n") for i in range(3)]
    for body in bodies:
        env.deliver(body)
    home = tmp_path / "fetchmail"
    out = home / "out"
    out.mkdir(parents=True)

    log = fetchmail(env, home, out, mode=mode, keep=True)
    assert "3 messages for alice@example.org" in log, log
    if mode is TlsMode.STARTTLS:
        assert "STLS" in log
    received = read_messages(out)
    assert sorted(m["Subject"] for m in received) == ["fetch 0", "fetch 1", "fetch 2"]
    for m in received:
        assert str(m.get_payload()).replace("\r\n", "\n").endswith("\n.dotted\n")
    assert len(env.inbox_uids()) == 3  # keep: leave on server

    env.deliver(env.message("fetch 3"))
    log = fetchmail(env, home, out, mode=mode, keep=False)
    # UIDL: only the new message is fetched; "no keep" deletes what was fetched.
    assert "4 messages (3 seen) for alice@example.org" in log, log
    assert sorted(m["Subject"] for m in read_messages(out))[-1] == "fetch 3"
    assert len(read_messages(out)) == 4
    assert len(env.inbox_uids()) == 3


def test_getmail6(pop3_env: Any, tmp_path: Path) -> None:
    env = pop3_env()
    bodies = [env.message(f"get {i}", "x\r\n.\r\n..y\r\n") for i in range(2)]
    for body in bodies:
        env.deliver(body)
    home = tmp_path / "getmail"
    out = home / "out"
    out.mkdir(parents=True)

    def run(*, delete: bool) -> str:
        rc = home / "getmailrc"
        rc.write_text(
            "[retriever]\n"
            "type = SimplePOP3SSLRetriever\n"
            "server = 127.0.0.1\n"
            f"port = {env.ports[TlsMode.IMPLICIT]}\n"
            f"username = {ALICE}\n"
            f"password = {env.password}\n"
            f"ca_certs = {env.cert_file}\n"
            "[destination]\n"
            "type = MDA_external\n"
            "path = /bin/sh\n"
            f"arguments = ('-c', 'cat > $(mktemp {out}/msg.XXXXXX)')\n"
            "allow_root_commands = true\n"
            "[options]\n"
            "read_all = false\n"
            f"delete = {str(delete).lower()}\n"
            "verbose = 2\n"
        )
        result = run_tool(["getmail", "--rcfile", str(rc), "--getmaildir", str(home)], home)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout + result.stderr

    log = run(delete=False)
    assert "2 messages (" in log and "retrieved" in log, log
    received = read_messages(out)
    assert sorted(m["Subject"] for m in received) == ["get 0", "get 1"]
    for m in received:
        assert str(m.get_payload()).replace("\r\n", "\n") == "x\n.\n..y\n"
    assert len(env.inbox_uids()) == 2

    env.deliver(env.message("get 2"))
    run(delete=True)  # read_all = false: getmail's UIDL state fetches only the new one
    assert sorted(m["Subject"] for m in read_messages(out)) == [
        "get 0",
        "get 1",
        "get 2",
    ]
    # getmail's delete = true removes every message it has seen (DELE + QUIT), old ones too.
    assert env.inbox_uids() == []
