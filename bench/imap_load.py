"""The IMAP benchmark's load generator: raw IMAP over asyncio sockets (no imaplib).

``ImapClient`` sends one tagged command at a time and reads every response up to its tagged
completion, literals included (RFC 9051 §4.3: ``{n}`` then n octets). ``run_mix`` drives N
concurrent clients through a weighted mix of SELECT, FETCH (flags, envelope, whole body),
SEARCH (TEXT words, UNSEEN, FROM), STORE, APPEND, EXPUNGE and IDLE for a fixed time; each
client has its own seeded random sequence, so both servers see the same operations. Any NO,
BAD, BYE, timeout or dropped connection counts as an error (and the client reconnects).
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from imap_corpus import MIX_WORDS, message

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")
TIMEOUT = 120.0


class ImapError(Exception):
    pass


@dataclass
class Reply:
    status: bytes  # OK, NO or BAD
    lines: list[bytes]  # untagged and continuation lines, literals inlined
    text: bytes  # the tagged line


class ImapClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._tag = 0
        self.leaving = False  # LOGOUT sent: its BYE is expected (RFC 9051 §6.1.3)
        self.last: Reply | None = None  # the last reply of ``ok``

    @classmethod
    async def connect(cls, port: int) -> ImapClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        client = cls(reader, writer)
        greeting = await asyncio.wait_for(reader.readline(), TIMEOUT)
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting {greeting!r}")
        return client

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass

    def _next_tag(self) -> bytes:
        self._tag += 1
        return b"t%d" % self._tag

    async def _line(self) -> bytes:
        """One response line with its literals inlined."""
        line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        if not line:
            raise ImapError("connection closed")
        parts = [line]
        while (match := _LITERAL.search(parts[-1])) is not None:
            parts.append(await asyncio.wait_for(
                self.reader.readexactly(int(match.group(1))), TIMEOUT))
            rest = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            parts.append(rest)
        return b"".join(parts)

    async def command(self, text: bytes, *, literal: bytes | None = None) -> Reply:
        tag = self._next_tag()
        if literal is None:
            self.writer.write(tag + b" " + text + b"\r\n")
        else:  # LITERAL+ (RFC 7888): no round trip for the continuation
            self.writer.write(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        return await self._until(tag)

    async def _until(self, tag: bytes) -> Reply:
        lines: list[bytes] = []
        while True:
            line = await self._line()
            if line.startswith(tag + b" "):
                status = line[len(tag) + 1 :].split(b" ", 1)[0]
                return Reply(status, lines, line)
            if line.startswith(b"* BYE") and not self.leaving:
                raise ImapError(f"BYE: {line!r}")
            lines.append(line)

    async def ok(self, text: bytes, *, literal: bytes | None = None) -> Reply:
        reply = await self.command(text, literal=literal)
        if reply.status != b"OK":
            raise ImapError(f"{text[:60]!r}: {reply.text!r}")
        return reply

    async def logout(self) -> None:
        self.leaving = True
        try:
            await self.ok(b"LOGOUT")
        finally:
            await self.close()

    async def idle(self, seconds: float = 0.0) -> None:
        """IDLE (RFC 2177), wait ``seconds`` for updates, DONE."""
        tag = self._next_tag()
        self.writer.write(tag + b" IDLE\r\n")
        while True:
            line = await self._line()
            if line.startswith(b"+"):
                break
            if line.startswith(tag + b" "):
                raise ImapError(f"IDLE refused: {line!r}")
        if seconds:
            await asyncio.sleep(seconds)
        self.writer.write(b"DONE\r\n")
        reply = await self._until(tag)
        if reply.status != b"OK":
            raise ImapError(f"IDLE: {reply.text!r}")

    async def start_idle(self) -> bytes:
        """Enter IDLE and stay (for the idle-connection memory test); returns the tag."""
        tag = self._next_tag()
        self.writer.write(tag + b" IDLE\r\n")
        while True:
            line = await self._line()
            if line.startswith(b"+"):
                return tag
            if line.startswith(tag + b" "):
                raise ImapError(f"IDLE refused: {line!r}")

    async def end_idle(self, tag: bytes) -> None:
        self.writer.write(b"DONE\r\n")
        await self._until(tag)


async def login(port: int, user: str, password: str) -> ImapClient:
    client = await ImapClient.connect(port)
    await client.ok(b'LOGIN "%s" "%s"' % (user.encode(), password.encode()))
    return client


# -- the mix ----------------------------------------------------------------------------------
MIX: tuple[tuple[str, int], ...] = (
    ("select", 4),
    ("fetch_flags", 18),
    ("fetch_envelope", 14),
    ("fetch_body", 14),
    ("search_text", 6),
    ("search_other", 6),
    ("store", 16),
    ("append", 8),
    ("expunge", 6),
    ("idle", 8),
)


@dataclass
class MixResult:
    ops: int = 0
    errors: int = 0
    seconds: float = 0.0
    by_op: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    error_samples: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def latency_ms(self, op: str) -> float:
        values = self.latencies.get(op) or [0.0]
        return statistics.median(values) * 1000


class _MixClient:
    def __init__(self, n: int, port: int, *, user: str, password: str, uids: int,
                 result: MixResult) -> None:
        self.rng = random.Random(1000 + n)
        self.n = n
        self.port = port
        self.user = user
        self.password = password
        self.uids = uids  # messages preloaded in INBOX: UIDs 1..uids
        self.result = result
        self.mine: list[int] = []  # UIDs this client appended
        self.appended = 0
        self.client: ImapClient | None = None

    async def _connect(self) -> ImapClient:
        client = await login(self.port, self.user, self.password)
        await client.ok(b"SELECT INBOX")
        return client

    def _range(self, width: int) -> bytes:
        start = self.rng.randint(1, max(1, self.uids - width))
        return b"%d:%d" % (start, start + width - 1)

    async def _op(self, client: ImapClient, op: str) -> None:
        rng = self.rng
        if op == "select":
            await client.ok(b"SELECT INBOX")
        elif op == "fetch_flags":
            await client.ok(b"UID FETCH " + self._range(50) + b" (FLAGS)")
        elif op == "fetch_envelope":
            await client.ok(b"UID FETCH " + self._range(20) + b" (UID FLAGS ENVELOPE RFC822.SIZE)")
        elif op == "fetch_body":
            await client.ok(b"UID FETCH %d (BODY.PEEK[])" % rng.randint(1, self.uids))
        elif op == "search_text":
            word = rng.choice(MIX_WORDS).encode()
            await client.ok(b"UID SEARCH CHARSET UTF-8 TEXT {%d+}\r\n" % len(word) + word)
        elif op == "search_other":
            if rng.random() < 0.5:
                await client.ok(b"UID SEARCH UNSEEN")
            else:
                await client.ok(b'UID SEARCH FROM "%s"' % rng.choice((b"alice", b"tanaka")))
        elif op == "store":
            sign = rng.choice((b"+", b"-"))
            flag = rng.choice((b"\\Seen", b"\\Flagged", b"$Important"))
            await client.ok(b"UID STORE %d %sFLAGS (%s)" % (rng.randint(1, self.uids), sign, flag))
        elif op == "append":
            self.appended += 1
            data, _ = message(self.uids + self.n * 100_000 + self.appended, seed=7)
            reply = await client.ok(b"APPEND INBOX (\\Seen)",
                                    literal=data.replace(b"\n", b"\r\n"))
            match = _APPENDUID.search(reply.text)
            if match is None:
                raise ImapError(f"no APPENDUID: {reply.text!r}")
            self.mine.append(int(match.group(1)))
        elif op == "expunge":
            if not self.mine:
                await client.ok(b"NOOP")
                return
            uid = self.mine.pop(rng.randrange(len(self.mine)))
            await client.ok(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
            await client.ok(b"EXPUNGE")
        elif op == "idle":
            await client.idle()
        else:
            raise AssertionError(op)

    async def run(self, deadline: float) -> None:
        names = [name for name, _ in MIX]
        weights = [weight for _, weight in MIX]
        result = self.result
        while time.monotonic() < deadline:
            op = self.rng.choices(names, weights)[0]
            try:
                if self.client is None:
                    self.client = await self._connect()
                started = time.perf_counter()
                await self._op(self.client, op)
                result.latencies[op].append(time.perf_counter() - started)
                result.ops += 1
                result.by_op[op] += 1
            except (TimeoutError, ImapError, OSError, asyncio.IncompleteReadError) as exc:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{op}: {exc!r}"[:300])
                if self.client is not None:
                    await self.client.close()
                    self.client = None
        if self.client is not None:
            try:
                await self.client.logout()
            except (TimeoutError, ImapError, OSError):
                pass
            await self.client.close()


async def run_mix(port: int, *, clients: int, seconds: float, uids: int, user: str,
                  password: str) -> MixResult:
    result = MixResult()
    workers = [_MixClient(n, port, user=user, password=password, uids=uids, result=result)
               for n in range(clients)]
    # Log in first (not timed: Hato checks an argon2id hash, Dovecot a static password).
    for worker in workers:
        worker.client = await worker._connect()
    started = time.monotonic()
    await asyncio.gather(*(w.run(started + seconds) for w in workers))
    result.seconds = time.monotonic() - started
    return result
