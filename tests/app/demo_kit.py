"""``hato quickstart --demo`` for the tests that then run ``hato serve`` on it: the demo's
ports moved to free ephemeral ones, so runs never collide."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

PASSWORD = "demo password 4711"
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quickstart_demo(directory: Path) -> tuple[Path, str, set[int]]:
    """Run the quickstart into ``directory``; its configuration (every port moved), what it
    printed, and the ports it had chosen."""
    result = subprocess.run(
        [sys.executable, "-m", "hato.app.cli", "quickstart", "--demo", str(directory),
         "--password-stdin"],
        input=PASSWORD.encode(), capture_output=True, env=ENV, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    config = directory / "hato.toml"
    text = config.read_text()
    ports = {int(p) for p in re.findall(r'"127\.0\.0\.1:(\d+)"', text)}
    for port in ports:
        text = text.replace(f'"127.0.0.1:{port}"', f'"127.0.0.1:{free_port()}"')
    config.write_text(text)
    return config, result.stdout.decode(), ports
