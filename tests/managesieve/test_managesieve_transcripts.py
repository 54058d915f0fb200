"""Golden transcripts: each ``transcripts/*.txt`` file is a ManageSieve dialogue (``C:`` lines
are sent, consecutive ones together, i.e. pipelined; ``S:`` lines must come back exactly;
``${NAME}`` is replaced by the test's values). Every transcript ends with the server closing."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from managesieve_harness import ALICE, PASSWORD, Conversation

from hato.delivery.sieve import MAX_REDIRECTS, SIEVE_EXTENSIONS
from hato.servers.base import TlsMode

TRANSCRIPTS = sorted((Path(__file__).parent / "transcripts").glob("*.txt"))
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_transcript(sieve_env: Any, path: Path) -> None:
    # demo: plaintext SASL allowed on loopback without TLS, as in `hato quickstart --demo`
    env = sieve_env(demo=True, max_script_size=1024, max_scripts=3)
    values = {
        "SIEVE": " ".join(SIEVE_EXTENSIONS),
        "MAXREDIRECTS": str(MAX_REDIRECTS),
        "PLAIN": plain(ALICE, PASSWORD),
        "BAD_PLAIN": plain(ALICE, "wrong password"),
    }
    script = [
        (line[:2], _PLACEHOLDER.sub(lambda m: values[m.group(1)], line[3:]))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line[:2] in ("C:", "S:")
    ]
    talk = Conversation(env.connect(TlsMode.NONE))
    try:
        pending: list[str] = []
        for number, (who, text) in enumerate(script, 1):
            if who == "C:":
                pending.append(text)
                continue
            if pending:
                talk.send("".join(f"{c}\r\n" for c in pending).encode())
                pending = []
            got = talk.line().decode("utf-8")
            assert got == text + "\r\n", f"{path.name} step {number}"
        assert not pending
        assert talk.line() == b""  # the server closed the connection
    finally:
        talk.close()
