"""Outbound client: command groups on one connection (RFC 2920 §3.1, RFC 5321 §4.1.1.4).

The peer below answers RSET/MAIL/RCPT only at the end of their group (DATA), as RFC 2920
§3.2 lets a server do: a client that waits for the MAIL reply before sending RCPT would stall
until its command timeout. It refuses a nested MAIL (RFC 5321 §4.1.4: a transaction left
open needs RSET) and records the commands of each chunk it reads: the chunk that ends one
message's content also carries the next transaction's envelope when the client sends it
ahead (RFC 2920 §3.1: "the actual transfer of message content is explicitly allowed to be
the first 'command' in a group"), which a client waiting for the "250" cannot produce.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import pytest

from hato.codec import smtp_client as sc
from hato.outbound.client import DeliveryError, Rcpt, SmtpClient, Timeouts
from hato.outbound.tlspolicy import OPPORTUNISTIC

HOST = "127.0.0.1"


async def _group_peer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: list[list[str]]
) -> None:
    writer.write(b"220 peer.test ESMTP\r\n")
    held: list[bytes] = []  # replies held back until the end of a command group
    buffer = b""
    in_data = open_mail = accepted = False
    while data := await reader.read(65536):
        buffer += data
        seen: list[str] = []
        while b"\r\n" in buffer:
            line, buffer = buffer.split(b"\r\n", 1)
            if in_data:
                if line == b".":
                    seen.append(".")
                    in_data = open_mail = False  # RFC 5321 §4.1.1.4: buffers cleared
                    writer.write(b"250 2.0.0 queued\r\n")
                continue
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode()
            seen.append(verb)
            if verb == "EHLO":
                writer.write(b"250-peer.test\r\n250 PIPELINING\r\n")
            elif verb == "RSET":
                open_mail = False
                held.append(b"250 2.0.0 Ok\r\n")
            elif verb == "MAIL":
                held.append(b"503 5.5.1 nested MAIL\r\n" if open_mail else b"250 2.1.0 Ok\r\n")
                open_mail, accepted = True, False
            elif verb == "RCPT":
                refused = b"refused" in line
                accepted = accepted or not refused
                held.append(b"550 5.1.1 no such user\r\n" if refused else b"250 2.1.5 Ok\r\n")
            elif verb == "DATA":  # the last command of a group: answer all of it now
                go = open_mail and accepted
                held.append(b"354 go ahead\r\n" if go else b"554 5.5.1 no valid recipients\r\n")
                writer.write(b"".join(held))
                held.clear()
                in_data = go
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
        if seen:
            chunks.append(seen)
        await writer.drain()
        if seen[-1:] == ["QUIT"]:
            break
    writer.close()


async def _session(
    chunks: list[list[str]], scenario: Callable[[SmtpClient], Awaitable[None]]
) -> None:
    server = await asyncio.start_server(lambda r, w: _group_peer(r, w, chunks), HOST, 0)
    port = server.sockets[0].getsockname()[1]
    client = SmtpClient(
        "peer.test",
        HOST,
        port,
        helo_name="out.example.test",
        policy=OPPORTUNISTIC,
        verify_context=ssl.create_default_context(),
        timeouts=Timeouts(command=3.0, data_init=3.0, final=3.0),
        try_tls=False,
    )
    try:
        await client.connect()
        await scenario(client)
        await client.quit()
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def test_next_envelope_travels_with_the_message_content() -> None:
    async def scenario(client: SmtpClient) -> None:
        options = sc.MailOptions(size=40)
        txs = [
            client.prepare(
                "a@example.test",
                [Rcpt(0, f"r{n}@peer.test")],
                f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(),
                options,
            )
            for n in range(3)
        ]
        for n, tx in enumerate(txs):
            following = txs[n + 1] if n + 1 < len(txs) else None
            result = await client.transact(tx, following=following)
            assert result.data is not None and result.data.positive
            assert client.primed is following

    chunks: list[list[str]] = []
    asyncio.run(asyncio.wait_for(_session(chunks, scenario), 30))
    # One round trip per message: the end of each message's content and the next envelope
    # arrive together; no RSET after a completed transaction (RFC 5321 §4.1.1.4).
    assert chunks == [
        ["EHLO"],
        ["MAIL", "RCPT", "DATA"],
        [".", "MAIL", "RCPT", "DATA"],
        [".", "MAIL", "RCPT", "DATA"],
        ["."],
        ["QUIT"],
    ]


def test_rset_only_after_a_transaction_left_open() -> None:
    async def scenario(client: SmtpClient) -> None:
        options = sc.MailOptions(size=40)
        message = b"Subject: x\r\n\r\nbody\r\n"
        refused = await client.send(
            "a@example.test", [Rcpt(0, "refused@peer.test")], message, options
        )
        assert refused.mail is not None and refused.mail.positive and refused.data is None
        assert refused.rcpts[0].code == 550
        for n in range(2):
            result = await client.send(
                "a@example.test", [Rcpt(0, f"r{n}@peer.test")], message, options
            )
            assert result.mail is not None and result.mail.positive  # no "503 nested MAIL"
            assert result.data is not None and result.data.positive

    chunks: list[list[str]] = []
    asyncio.run(asyncio.wait_for(_session(chunks, scenario), 30))
    assert chunks == [
        ["EHLO"],
        ["MAIL", "RCPT", "DATA"],  # refused recipient: DATA refused, MAIL left open
        ["RSET", "MAIL", "RCPT", "DATA"],  # RFC 5321 §4.1.1.5: RSET, in the same group
        ["."],
        ["MAIL", "RCPT", "DATA"],  # the transaction before was completed: no RSET
        ["."],
        ["QUIT"],
    ]


def test_silent_or_garbled_server_ends_the_session_in_time() -> None:
    """RFC 5321 §4.5.3.2: every reply has a deadline (one watchdog timer per connection);
    a malformed reply ends the session too."""

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 peer.test ESMTP\r\n")
        garble = False
        while line := await reader.readline():
            if line.startswith(b"EHLO"):
                writer.write(b"250-peer.test\r\n250 PIPELINING\r\n")
            elif line.startswith(b"MAIL"):
                garble = b"garble@" in line
            elif line.startswith(b"DATA"):  # MAIL only: RCPT and DATA never answered
                writer.write(b"2x0 garbled\r\n" if garble else b"250 2.1.0 Ok\r\n")
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(stall, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            for command in (0.3, 0.6):
                client = SmtpClient(
                    "peer.test",
                    HOST,
                    port,
                    helo_name="out.example.test",
                    policy=OPPORTUNISTIC,
                    verify_context=ssl.create_default_context(),
                    timeouts=Timeouts(command=command, data_init=command, final=command),
                    try_tls=False,
                )
                await client.connect()
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(DeliveryError):
                    await client.send(
                        "a@example.test", [Rcpt(0, "r@peer.test")], b"x\r\n", sc.MailOptions()
                    )
                assert command <= loop.time() - started < command + 2.0
                await client.close()
            client = SmtpClient(
                "peer.test",
                HOST,
                port,
                helo_name="out.example.test",
                policy=OPPORTUNISTIC,
                verify_context=ssl.create_default_context(),
                timeouts=Timeouts(command=5.0),
                try_tls=False,
            )
            await client.connect()
            with pytest.raises(DeliveryError, match="ProtocolError"):  # "2x0 garbled"
                await client.send(
                    "garble@example.test", [Rcpt(0, "r@peer.test")], b"x\r\n", sc.MailOptions()
                )
            await client.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(main(), 30))
