"""Real ManageSieve clients against the server on loopback, over STARTTLS with the test's
self-signed certificate as the only trusted one: sievelib's Client (PyPI) and Debian's
sieve-connect."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from managesieve_harness import ALICE, PASSWORD
from sievelib.managesieve import Client

from hato.servers.base import TlsMode

SCRIPT = (
    'require ["fileinto"];\r\nif header :contains "subject" "spam" {\r\n  fileinto "Junk";\r\n}\r\n'
)


def test_sievelib_client(sieve_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    env = sieve_env()
    # sievelib builds ssl.create_default_context(): trust only the test certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(env.cert_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    client = Client("localhost", env.ports[TlsMode.STARTTLS])
    assert client.connect(ALICE, PASSWORD, starttls=True, authmech="PLAIN")
    try:
        assert client.get_implementation() == "Hato"
        assert "fileinto" in client.get_sieve_capabilities()
        assert client.havespace("filter", len(SCRIPT))
        assert client.checkscript(SCRIPT)
        assert not client.checkscript("InvalidSieveCommand;\r\n")
        assert client.putscript("filter", SCRIPT)
        assert client.putscript("spare", "keep;\r\n")
        assert client.setactive("filter")
        active, others = client.listscripts()
        assert (active, others) == ("filter", ["spare"])
        assert client.getscript("filter") == SCRIPT.replace("\r\n", "\n").rstrip("\n")
        assert not client.deletescript("filter")  # RFC 5804 §2.10: not the active one
        assert client.renamescript("filter", "main")
        assert client.listscripts() == ("main", ["spare"])
        assert client.deletescript("spare")
        assert client.setactive("")
        assert client.listscripts() == (None, ["main"])
        assert not client.getscript("nope")
    finally:
        client.logout()
    stored = env.scripts()
    assert [(s.name, s.active, s.content) for s in stored] == [("main", False, SCRIPT)]


def sieve_connect(env: Any, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, (PASSWORD + "\n").encode())
    os.close(write_fd)
    try:
        return subprocess.run(
            [
                "sieve-connect",
                "--server",
                "localhost",
                "--port",
                str(env.ports[TlsMode.STARTTLS]),
                "--user",
                ALICE,
                "--authmech",
                "PLAIN",
                "--tlscafile",
                str(env.cert_file),
                "--passwordfd",
                str(read_fd),
                *args,
            ],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
            cwd=home,
            pass_fds=(read_fd,),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(read_fd)


def test_sieve_connect(sieve_env: Any, tmp_path: Path) -> None:
    env = sieve_env()
    home = tmp_path / "home"
    home.mkdir()
    local = home / "filter.sieve"
    local.write_text(SCRIPT.replace("\r\n", "\n"))

    def ok(*args: str) -> str:
        result = sieve_connect(env, home, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    ok("--upload", "--localsieve", str(local), "--remotesieve", "filter")
    ok("--activate", "--remotesieve", "filter")
    listing = ok("--list")
    assert listing.splitlines() == ['"filter" ACTIVE']
    out = home / "downloaded.sieve"
    ok("--download", "--remotesieve", "filter", "--localsieve", str(out))
    assert out.read_text().replace("\r\n", "\n") == local.read_text()
    [stored] = env.scripts()
    assert stored.active and stored.content.replace("\r\n", "\n") == local.read_text()

    bad = home / "bad.sieve"
    bad.write_text("#comment\nInvalidSieveCommand;\n")
    result = sieve_connect(env, home, "--checkscript", "--localsieve", str(bad))
    assert result.returncode != 0
    assert "line 2" in result.stdout + result.stderr

    ok("--deactivate")
    ok("--delete", "--remotesieve", "filter")
    assert env.scripts() == []
