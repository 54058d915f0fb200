"""The queue runner's settle writes, batched: many delivery outcomes in one store transaction.

Each delivery attempt ends in one ``QueueUpdate`` (``hato.store.queue``: state checked against
``TRANSITIONS``). Instead of one unit of work per message, the runner hands its updates to a
``Settler``: while one batch is being written, the updates made meanwhile gather, and go
together in the next ``MailStore.update_queue_many`` call: one thread hop, one transaction and
one group-committed fsync for many deliveries, each change still checked and applied on its
own. The sending side does not wait for the commit; ``drain`` waits for every batch (the
runner calls it before it claims the queue again).

Durability: a DELIVERED mark that has not been committed yet is lost by a crash, and the
entry, still ACTIVE in the store, goes back to QUEUED at the next start (``recover_queue``):
at most the messages of the batch in flight are sent twice, which RFC 5321 §6.1 prefers to
losing one. Nothing is ever marked delivered before the server's reply said so.

Leaves out: retrying a failed batch (its entries stay ACTIVE until the next start, as a failed
single write always left them).

Security: nothing from the network; log fields are ids, states and reply texts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from hato.core import log
from hato.core.errors import HatoError
from hato.store.api import MailStore
from hato.store.queue import QueueUpdate

MAX_WAITING = 512  # updates gathered before a worker waits for the batch being written


@dataclass(frozen=True, slots=True)
class Outcome:
    """One entry's settled attempt: the change to store and the fields of its log event."""

    entry_id: int
    change: QueueUpdate
    fields: dict[str, Any] = field(default_factory=dict)


class Settler:
    """Batches ``Outcome``s into ``update_queue_many`` calls (one writer task at a time)."""

    def __init__(self, store: MailStore, *, max_waiting: int = MAX_WAITING) -> None:
        self._store = store
        self._max_waiting = max_waiting
        self._waiting: list[Outcome] = []
        self._task: asyncio.Task[None] | None = None
        self._written: asyncio.Future[None] | None = None  # resolved after each batch
        self.batches = 0  # store calls made (tests, benchmarks)
        self.settled = 0  # outcomes applied

    async def add(self, outcome: Outcome) -> None:
        """Queue ``outcome`` for the next batch; waits only while too many are waiting."""
        self._waiting.append(outcome)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        while len(self._waiting) >= self._max_waiting and self._task is not None:
            await asyncio.shield(self._batch_written())

    async def drain(self) -> None:
        """Wait until every outcome added so far is written (or its batch failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    def _batch_written(self) -> asyncio.Future[None]:
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
        return self._written

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                await self._write(batch)
                written, self._written = self._written, None
                if written is not None and not written.done():
                    written.set_result(None)
        finally:
            self._task = None
            written, self._written = self._written, None
            if written is not None and not written.done():
                written.set_result(None)

    async def _write(self, batch: list[Outcome]) -> None:
        self.batches += 1
        try:
            errors = await self._store.update_queue_many([(o.entry_id, o.change) for o in batch])
        except HatoError as exc:
            # The entries stay ACTIVE: the next start puts them back to QUEUED (resent).
            log.event(
                "outbound.settle.failed", level=logging.ERROR, entries=len(batch), error=exc.detail
            )
            return
        for outcome, error in zip(batch, errors, strict=True):
            if error is not None:
                log.event(
                    "outbound.settle.refused",
                    level=logging.WARNING,
                    id=outcome.entry_id,
                    error=error.detail,
                )
                continue
            self.settled += 1
            log.event(f"outbound.{outcome.change.state.value}", **outcome.fields)
