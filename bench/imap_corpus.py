"""Generated, reproducible mail for the IMAP benchmark: an mboxrd file of realistic messages.

Messages are 1-12 KB of English-like text from a fixed vocabulary (with a Japanese message
every 20th), a third of them multipart/alternative (text + HTML) and one in ten with a small
base64 attachment; dates spread over two years; senders from a pool of 200. The word
``RARE_WORD`` appears in one message of ``RARE_EVERY`` (the benchmark's SEARCH TEXT target).
The same seed always gives the same bytes, so Hato and Dovecot load the same mailbox.
"""

from __future__ import annotations

import base64
import email.header
import email.utils
import random
import time
from pathlib import Path

RARE_WORD = "zephyrine"
RARE_EVERY = 500
MIX_WORDS = ("invoice", "meeting", "quarterly", "holiday", "budget", "議事録", "schedule")

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "more can about said them some could time these two may then do first any my now such like "
    "our over man me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little state good "
    "very make world still own see men work long get here between both life being under never "
    "day same another know while last might us great old year off come since against go came "
    "right used take three invoice meeting quarterly holiday budget schedule report project "
    "customer delivery release server mailbox review contract figures team office travel"
)
_VOCABULARY = tuple(_WORDS.split())
_JAPANESE = (
    "お世話になっております。", "会議の議事録をお送りします。", "来週の予定を確認してください。",
    "よろしくお願いいたします。", "資料を添付しました。", "東京の天気は晴れです。",
)
_FIRST = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy")
_LAST = ("Smith", "Jones", "Tanaka", "Suzuki", "Mueller", "Martin", "Rossi", "Novak")


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(6, 16))]
    return " ".join(words).capitalize() + "."


def _paragraphs(rng: random.Random, size: int) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
        out.append(line)
        length += len(line) + 2
    return "\n\n".join(out)


def _wrap(text: str, width: int = 76) -> str:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "\n".join(lines)


def message(n: int, *, seed: int = 1) -> tuple[bytes, float]:
    """Message number ``n`` (LF line ends) and its date (POSIX seconds)."""
    rng = random.Random(seed * 1_000_003 + n)
    date = 1_650_000_000 + n * 600 + rng.randint(0, 599)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    sender = f"{first.lower()}.{rng.randint(1, 20)}@example.{rng.choice(('com', 'net', 'jp'))}"
    japanese = n % 20 == 7
    if japanese:
        subject_text = rng.choice(_JAPANESE)
        subject = email.header.Header(subject_text, "utf-8").encode()
        text = "\n".join(rng.choice(_JAPANESE) for _ in range(rng.randint(5, 40)))
    else:
        subject = " ".join(rng.choice(_VOCABULARY) for _ in range(rng.randint(2, 7))).title()
        text = _wrap(_paragraphs(rng, rng.choice((600, 1500, 3000, 6000, 10000))))
    if n % RARE_EVERY == 3:
        text += f"\n\nP.S. the {RARE_WORD} file is attached.\n"
    headers = [
        f"From: {first} {last} <{sender}>",
        "To: Bench User <bench@bench.test>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(date)}",
        f"Message-ID: <{n}.{seed}@bench.example>",
        "MIME-Version: 1.0",
    ]
    kind = n % 10
    if kind in (1, 4, 7):  # multipart/alternative, text and HTML
        paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
        html = f"<html><body>{paragraphs}</body></html>"
        body = (
            "This is a multi-part message in MIME format.\n\n--alt\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            f"{text}\n--alt\nContent-Type: text/html; charset=utf-8\n"
            f"Content-Transfer-Encoding: 8bit\n\n{_wrap(html)}\n--alt--\n"
        )
        headers.append('Content-Type: multipart/alternative; boundary="alt"')
    elif kind == 9:  # with an attachment
        blob = base64.encodebytes(rng.randbytes(rng.randint(500, 3000))).decode()
        body = (
            "--mix\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            f"{text}\n--mix\nContent-Type: application/octet-stream\n"
            f'Content-Disposition: attachment; filename="data-{n}.bin"\n'
            f"Content-Transfer-Encoding: base64\n\n{blob}--mix--\n"
        )
        headers.append('Content-Type: multipart/mixed; boundary="mix"')
    else:
        headers.append("Content-Type: text/plain; charset=utf-8")
        headers.append("Content-Transfer-Encoding: 8bit")
        body = text + "\n"
    return ("\n".join(headers) + "\n\n" + body).encode("utf-8"), float(date)


def write_mbox(path: Path, first: int, last: int, *, seed: int = 1) -> int:
    """Write messages ``first``..``last`` as mboxrd (RFC 4155); returns the file's size."""
    with open(path, "wb") as out:
        for n in range(first, last + 1):
            data, date = message(n, seed=seed)
            out.write(b"From bench@bench.test " + time.asctime(time.gmtime(date)).encode() + b"\n")
            for line in data.rstrip(b"\n").split(b"\n"):
                # mboxrd: a line matching >*From gets one more ">".
                if line.lstrip(b">").startswith(b"From "):
                    line = b">" + line
                out.write(line + b"\n")
            out.write(b"\n")
    return path.stat().st_size
