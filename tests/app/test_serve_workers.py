"""``hato serve`` with ``[smtp] workers``: a signal to the whole process group (Ctrl-C in a
terminal, systemd's SIGTERM) stops the server gracefully: a transaction in flight in a worker
is finished and acknowledged, then the workers and the main process exit cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from demo_kit import ENV, quickstart_demo


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while not re.search(rb"(^|\r\n)\d{3} [^\r\n]*\r\n$", data):
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError(data)
        data += chunk
    return data


def _pids_of_workers(config: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ_cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"hato.servers.smtp_worker" in cmdline and environ_cwd == str(config.parent):
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_group_signal_finishes_the_transaction_in_a_worker(
    tmp_path: Path, sig: signal.Signals
) -> None:
    config, _out, _ports = quickstart_demo(tmp_path / "demo")
    text = config.read_text()
    mx = re.search(r'^mx_listeners\s*=\s*\["127\.0\.0\.1:(\d+)"\]', text, re.M)
    assert mx is not None
    text = text.replace("[smtp]\n", "[smtp]\nworkers = 1\n", 1)
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hato.app.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=ENV, cwd=config.parent,
        start_new_session=True,  # its own process group, as under a shell or systemd
    )  # fmt: skip
    early: list[bytes] = []
    try:
        assert proc.stdout is not None
        while b"event=serve.ready" not in (early[-1] if early else b""):  # signals handled
            line = proc.stdout.readline()
            assert line, b"".join(early).decode()
            early.append(line)
        sock = socket.create_connection(("127.0.0.1", int(mx.group(1))), timeout=20)
        with sock:
            assert _reply(sock).startswith(b"220 ")
            workers = _pids_of_workers(config)
            assert len(workers) == 1
            for line in (b"EHLO client.example", b"MAIL FROM:<a@remote.example>",
                         b"RCPT TO:<demo@example.test>", b"DATA"):  # fmt: skip
                sock.sendall(line + b"\r\n")
                assert _reply(sock)[:1] in (b"2", b"3")
            sock.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
            os.killpg(proc.pid, sig)  # the main process and its worker
            time.sleep(0.5)
            sock.sendall(b"second half\r\n.\r\n")
            answer = _reply(sock)
            assert answer.startswith(b"250 2.0.0")  # finished, not cut short
            while chunk := sock.recv(4096):  # then, the transaction over: 421 and close
                answer += chunk
            assert answer.endswith(b"\r\n421 4.3.2 Service shutting down\r\n")
        output = b"".join(early).decode() + proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "event=serve.stopped service=smtp-workers" in output
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
