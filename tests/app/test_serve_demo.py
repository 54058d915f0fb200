"""The README's promise, end to end: ``hato quickstart --demo`` then ``hato serve``; a message
sent by swaks (submission, STARTTLS + AUTH) is read back over IMAP and POP3, the HTTP service
answers health and autoconfig requests, and SIGTERM stops the server cleanly. Ports are the
demo's, moved to free ephemeral ports so runs never collide.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from demo_kit import ENV, PASSWORD, quickstart_demo


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hato serve exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never opened")


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    config, out, ports = quickstart_demo(tmp_path / "demo")
    assert "demo@example.test" in out
    assert "swaks" in out  # how to send
    assert "IMAP" in out and "POP3" in out  # how to read
    assert ports == {2525, 2587, 2465, 2143, 2993, 2110, 2995, 24190, 8080}
    return config


def _section_port(config: Path, section: str, key: str) -> int:
    text = config.read_text()
    body = text.split(f"[{section}]", 1)[1].split("\n[", 1)[0]
    match = re.search(rf'^{key}\s*=\s*\["127\.0\.0\.1:(\d+)"\]', body, re.M)
    assert match is not None, (section, key)
    return int(match.group(1))


def test_quickstart_serve_send_and_read(demo: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hato.app.cli", "serve", "--config", str(demo)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV,
    )
    try:
        submission = _section_port(demo, "smtp", "submission_listeners")
        imap_port = _section_port(demo, "imap", "listeners")
        pop3_port = _section_port(demo, "pop3", "listeners")
        sieve_port = _section_port(demo, "managesieve", "listeners")
        http_port = _section_port(demo, "http", "listeners")
        for port in (submission, imap_port, pop3_port, sieve_port, http_port):
            _wait_for_port(port, proc)

        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=20) as r:
            assert r.read() == b"ok\n"
        url = (f"http://127.0.0.1:{http_port}/mail/config-v1.1.xml"
               "?emailaddress=demo@example.test")
        with urllib.request.urlopen(url, timeout=20) as r:
            autoconfig = r.read().decode()
        assert f"<port>{imap_port}</port>" in autoconfig
        assert f"<port>{submission}</port>" in autoconfig

        swaks = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{submission}", "--tls", "--auth", "PLAIN",
             "--auth-user", "demo@example.test", "--auth-password", PASSWORD,
             "--from", "demo@example.test", "--to", "demo@example.test",
             "--header", "Subject: hello from the README", "--body", "鳩 carries mail",
             "--timeout", "20"],
            capture_output=True, timeout=60, check=False,
        )
        assert swaks.returncode == 0, swaks.stdout.decode(errors="replace")
        assert b"250 2.0.0" in swaks.stdout

        tls = ssl.create_default_context(cafile=str(demo.parent / "tls" / "cert.pem"))
        tls.check_hostname = False
        imap = imaplib.IMAP4("127.0.0.1", imap_port)
        imap.starttls(tls)
        imap.login("demo@example.test", PASSWORD)
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"1"])
        typ, fetched = imap.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK"
        raw = fetched[0][1]
        assert isinstance(raw, bytes)
        assert b"Subject: hello from the README" in raw
        assert raw.startswith(b"Return-Path: <demo@example.test>\r\nReceived: ")
        imap.logout()

        pop = poplib.POP3("127.0.0.1", pop3_port)
        pop.stls(tls)
        pop.user("demo@example.test")
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
        lines = pop.retr(1)[1]
        assert b"Subject: hello from the README" in lines
        pop.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    ready = re.search(r"event=serve\.ready services=(\S+)", output)
    assert ready is not None, output
    assert set(ready.group(1).split(",")) == {
        "outbound", "reports", "smtp", "imap", "pop3", "managesieve", "http"
    }
