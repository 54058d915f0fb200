"""Golden transcripts: each ``transcripts/*.txt`` file is an IMAP dialogue on the plaintext port
(demo mode: plaintext LOGIN allowed on loopback). ``C:`` lines are sent, consecutive ones
together (pipelined); ``S:`` lines must come back exactly. ``<<NAME>>`` fields are filled in
from the store (UIDVALIDITY ...). Every server byte is also run through the strict
response-grammar checker."""

from __future__ import annotations

import base64
import re
import socket
from pathlib import Path

import pytest
from imap_harness import ALICE, PASSWORD, EnvFactory

from hato.codec.imap.grammar import check_stream
from hato.servers.base import TlsMode

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts").glob("*.txt"))
MESSAGES = [
    b"From: Ann <ann@example.net>\r\nTo: alice@example.org\r\nSubject: one\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <one@example.net>\r\n\r\n"
    b"First body.\r\n",
    b"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: two\r\n\r\nSecond.\r\n",
]


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript(imap_env: EnvFactory, path: Path) -> None:
    env = imap_env(demo=True, append_limit=2000)
    for message in MESSAGES:
        env.deliver(message)
    values = {
        "PASSWORD": PASSWORD,
        "UIDVALIDITY": str(env.uidvalidity()),
        "PLAIN": base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode(),
        "SIZE1": str(len(MESSAGES[0])),
        "SIZE2": str(len(MESSAGES[1])),
        "BIG": "x" * 2001,
    }
    lazy = {"LISTSVALIDITY": lambda: str(env.uidvalidity("Lists"))}  # exists only later

    def fill(text: str) -> str:
        return re.sub(r"<<(\w+)>>",
                      lambda m: values.get(m.group(1)) or lazy[m.group(1)](), text)

    script = [
        (line[:2], line[3:])
        for line in path.read_text(encoding="utf-8").splitlines()
        if line[:2] in ("C:", "S:")
    ]
    received = bytearray()
    with socket.create_connection(("127.0.0.1", env.ports[TlsMode.NONE]), timeout=10) as sock:
        reader = sock.makefile("rb")
        try:
            pending: list[str] = []
            for number, (who, text) in enumerate(script, 1):
                text = fill(text)
                if who == "C:":
                    pending.append(text)
                    continue
                if pending:
                    sock.sendall("".join(f"{c}\r\n" for c in pending).encode())
                    pending = []
                got = reader.readline()
                received += got
                assert got.decode() == text + "\r\n", f"{path.name} step {number}"
            if pending:
                sock.sendall("".join(f"{c}\r\n" for c in pending).encode())
            rest = reader.read()  # the server closes after LOGOUT
            assert rest == b"", f"{path.name}: unexpected {rest[:200]!r}"
        finally:
            reader.close()
    check_stream(bytes(received))
