"""Golden transcripts: each ``transcripts/*.txt`` file is a POP3 dialogue (``C:`` lines are
sent, consecutive ones together, i.e. pipelined; ``S:`` lines must come back exactly)."""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any

import pytest

from hato.servers.base import TlsMode

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts").glob("*.txt"))
MESSAGES = [
    b"Subject: one\r\n\r\n.dot line\r\nbody\r\n",
    b"Subject: two\r\n\r\nline a\r\nline b\r\n",
]


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript(pop3_env: Any, path: Path) -> None:
    env = pop3_env(demo=True)  # plaintext allowed on loopback, as in `hato demo`
    uids = [env.deliver(m) for m in MESSAGES]
    uidvalidity = env.uidvalidity()
    values = {
        "PASSWORD": env.password,
        "PLAIN_TOKEN": base64.b64encode(f"\0alice@example.org\0{env.password}".encode()).decode(),
        "SIZE1": str(len(MESSAGES[0])),
        "SIZE2": str(len(MESSAGES[1])),
        "TOTAL": str(sum(map(len, MESSAGES))),
        "UIDL1": f"{uids[0]:08X}{uidvalidity:08X}",
        "UIDL2": f"{uids[1]:08X}{uidvalidity:08X}",
    }
    script = [
        (line[:2], line[3:].format(**values))
        for line in path.read_text().splitlines()
        if line[:2] in ("C:", "S:")
    ]
    with socket.create_connection(("127.0.0.1", env.ports[TlsMode.NONE]), timeout=10) as sock:
        reader = sock.makefile("rb")
        try:
            pending: list[str] = []
            for number, (who, text) in enumerate(script, 1):
                if who == "C:":
                    pending.append(text)
                    continue
                if pending:
                    sock.sendall("".join(f"{c}\r\n" for c in pending).encode())
                    pending = []
                got = reader.readline().decode()
                assert got == text + "\r\n", f"{path.name} step {number}"
            assert not pending
            assert reader.readline() == b""  # the server closed after QUIT
        finally:
            reader.close()
