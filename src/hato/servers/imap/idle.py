"""IDLE: push of new messages, expunges and flag changes while the client waits.

Implements RFC 2177 (and RFC 9051 §6.3.13): a continuation request, then untagged EXISTS,
EXPUNGE and FETCH responses as changes happen, until the client sends DONE. Changes are
noticed through ``MailStore.wait_for_change`` (woken right after each commit), so a delivery
shows up within milliseconds. The autologout timer still runs (RFC 2177 §3: clients re-IDLE
every 29 minutes).

Left out: nothing of RFC 2177.
"""

from __future__ import annotations

import asyncio
import contextlib

from hato.codec.imap import response
from hato.codec.imap.commands import Command
from hato.codec.imap.states import State
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.selected import sync
from hato.servers.imap.session import Session


async def _push(session: Session) -> None:
    if session.selected is None or session.account is None:
        return
    await sync(session.store, session.account.id, session.selected,
               allow_expunge=True, condstore=session.condstore, write=session.write,
               qresync=session.qresync)
    await session.flush()


async def cmd_idle(session: Session, command: Command) -> Outcome:
    assert session.account is not None
    session.write(response.continuation("idling"))
    await session.flush()  # the client may answer DONE at once: no store wait before this
    await _push(session)
    done = asyncio.ensure_future(session.read_line())
    watermark = session.selected.modseq if session.selected is not None else 0
    try:
        while not done.done():
            if session.selected is None:
                await asyncio.wait([done])
                break
            change = asyncio.ensure_future(session.store.wait_for_change(
                session.account.id, watermark, session.settings.idle_poll))
            finished, _ = await asyncio.wait([done, change], return_when=asyncio.FIRST_COMPLETED)
            if change in finished:
                watermark = max(watermark, change.result())
                await _push(session)
            else:
                change.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await change
        line = done.result()
    finally:
        if not done.done():
            done.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await done
    if line is None:
        if session.state is State.LOGOUT:
            raise CommandFailed("connection closed", bad=True)
        raise CommandFailed("line too long", bad=True)
    if line.upper() != b"DONE":
        raise CommandFailed("expected DONE", bad=True)  # RFC 2177 §3
    return Outcome("IDLE terminated")
