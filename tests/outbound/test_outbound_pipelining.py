"""Outbound client: RSET travels in the same PIPELINING group as the next MAIL (RFC 2920 §3.1).

The peer below answers a command group only once it has seen the group's last command
(DATA): a client that waits for the RSET reply before sending MAIL would stall until its
command timeout, so this test fails for it.
"""

from __future__ import annotations

import asyncio
import ssl

from hato.codec import smtp_client as sc
from hato.outbound.client import Rcpt, SmtpClient, Timeouts
from hato.outbound.tlspolicy import OPPORTUNISTIC

HOST = "127.0.0.1"


async def _group_peer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: list[list[str]]
) -> None:
    writer.write(b"220 peer.test ESMTP\r\n")
    held: list[bytes] = []  # replies held back until the end of a command group
    group: list[str] = []
    while line := await reader.readline():
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
        group.append(verb.decode())
        if verb == b"EHLO":
            writer.write(b"250-peer.test\r\n250 PIPELINING\r\n")
            group.clear()
        elif verb in (b"RSET", b"MAIL", b"RCPT"):
            held.append(b"250 2.0.0 Ok\r\n")  # RFC 2920 §3.1: may appear anywhere in a group
        elif verb == b"DATA":  # the last command of a group: answer all of it now
            writer.write(b"".join(held) + b"354 go ahead\r\n")
            held.clear()
            log.append(group)
            group = []
            while await reader.readline() not in (b".\r\n", b""):
                pass  # the message
            writer.write(b"250 2.0.0 queued\r\n")
        elif verb == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        await writer.drain()
    writer.close()


def test_rset_is_pipelined_with_the_next_transaction() -> None:
    async def main() -> None:
        groups: list[list[str]] = []
        server = await asyncio.start_server(lambda r, w: _group_peer(r, w, groups), HOST, 0)
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
            options = sc.MailOptions(size=40)
            for n in range(3):
                message = f"Subject: {n}\r\n\r\nbody {n}\r\n".encode()
                result = await client.send(
                    "a@example.test", [Rcpt(0, f"r{n}@peer.test")], message, options
                )
                assert result.data is not None and result.data.positive
            await client.quit()
        finally:
            await client.close()
            server.close()
            await server.wait_closed()
        # The first transaction needs no RSET; each later one starts its group with it.
        assert groups == [["MAIL", "RCPT", "DATA"]] + [["RSET", "MAIL", "RCPT", "DATA"]] * 2

    asyncio.run(asyncio.wait_for(main(), 30))
