"""A varied, reproducible mboxrd corpus for the export/import tests."""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass

_QUOTE = re.compile(rb"(?m)^(>*From )")


@dataclass(frozen=True)
class Sample:
    stored: bytes  # the message as the store keeps it (CRLF)
    sender: str  # what the separator line says
    date: int
    flags: frozenset[str]


def _body(rng: random.Random, i: int) -> tuple[list[bytes], list[bytes]]:
    """(extra header lines, body lines), all without line ends."""
    kind = i % 8
    if kind == 0:
        return [], []  # empty body
    if kind == 1:
        text = "日本語のメールです。\nこんにちは、世界。\n" * rng.randint(1, 20)
        return (
            [
                b"MIME-Version: 1.0",
                b"Content-Type: text/plain; charset=ISO-2022-JP",
                b"Content-Transfer-Encoding: 7bit",
            ],
            text.encode("iso-2022-jp").split(b"\n"),
        )
    if kind == 2:
        text = "UTF-8 本文 🐦 ümlaut\n" * rng.randint(1, 50)
        return (
            [
                b"MIME-Version: 1.0",
                b"Content-Type: text/plain; charset=utf-8",
                b"Content-Transfer-Encoding: 8bit",
            ],
            text.encode("utf-8").split(b"\n"),
        )
    if kind == 3:
        return [], [
            b"From the desk of the editor",
            b">From a quoted line",
            b">>From twice quoted",
            b"From someone@example.org Mon Jan  1 00:00:00 2001",  # looks like a separator
            b"From",
            b" From indented",
            b"",
            b"last line",
        ]
    if kind == 4:
        alphabet = bytes(b for b in range(256) if b != 0x0A)  # 8-bit, bare CR included
        lines = [
            bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
            for _ in range(rng.randint(1, 30))
        ]
        return [b"Content-Type: application/octet-stream"], lines
    if kind == 5 and i % 40 == 5:
        # Big: lines longer than the 64 KiB pieces the streaming code works in.
        return [], [
            b"x" * rng.randint(70_000, 140_000),
            b">" * 70_000 + b"From a very long quoted line",
            b">" * 70_000,
            b"tail",
        ]
    if kind == 6:
        return [], [b"body that ends with empty lines", b"", b""]
    size = rng.randint(0, 4000)
    words = [
        rng.choice([b"alpha", b"beta", b"gamma", b"From", b">From", b"delta"])
        for _ in range(size // 6)
    ]
    return [], [b" ".join(words[j : j + 12]) for j in range(0, len(words), 12)]


def make_corpus(count: int, *, seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        date = 1_600_000_000 + i * 3607 + rng.randint(0, 3600)
        header = []
        sender = "MAILER-DAEMON"
        if i % 4 == 1:
            header.append(b"Return-Path: <>")
        elif i % 4 in (2, 3):
            sender = f"user{i}@example.org"
            header.append(f"Return-Path: <{sender}>".encode())
        header += [
            f"From: User {i} <user{i}@example.org>".encode(),
            b"To: u@example.test",
            f"Subject: message {i}".encode(),
            f"Message-ID: <{i}.{seed}@example.org>".encode(),
        ]
        flags: set[str] = set()
        if i % 5 == 0:
            header.append(b"Status: RO")
            flags.add("\\Seen")
        if i % 10 == 3:
            header.append(b"X-Status: AF")
            flags.update({"\\Answered", "\\Flagged"})
        extra, body = _body(rng, i)
        lines = [*header, *extra, b"", *body]
        stored = b"".join(line + b"\r\n" for line in lines)
        samples.append(Sample(stored, sender, date, frozenset(flags)))
    return samples


def render_mboxrd(samples: list[Sample]) -> bytes:
    """An mboxrd file written independently of hato.ops.mbox (stdlib asctime, re quoting)."""
    out = []
    for s in samples:
        out.append(f"From {s.sender} {time.asctime(time.gmtime(s.date))}\n".encode())
        content = s.stored.replace(b"\r\n", b"\n")
        out.append(_QUOTE.sub(rb">\1", content))
        out.append(b"\n")
    return b"".join(out)
