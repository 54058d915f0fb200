"""Child process of test_sqlite_crash: writes blobs and delivers them until it is SIGKILLed.

Usage: ``python crash_child.py DATA_DIR SEED``. Prints ``ready`` once the store is open, then
``ok <mailbox_id> <uid> <sha256>`` after each delivery returned (committed),
``drop <mailbox_id> <uid>`` before an expunge starts and ``gone <mailbox_id> <uid>`` after it
returned (committed).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
from pathlib import Path

from hato.store.model import Credentials, DeliveryTarget
from hato.store.sqlite import open_store

WRITERS = 4
SIZES = (300, 5_000, 120_000, 600_000)


async def main(data_dir: Path, seed: int) -> None:
    store = await open_store(data_dir)
    if not await store.has_domain("example.test"):
        await store.add_domain("example.test")
        await store.add_account("crash@example.test", Credentials(password_hash="x"))
    acc = await store.get_account("crash@example.test")
    assert acc is not None
    print("ready", flush=True)

    async def writer(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        mine: list[tuple[int, int]] = []
        i = 0
        while True:
            if rng.random() < 0.2:
                data = b"Subject: the same every time\r\n\r\nidentical\r\n"  # dedupe path
            else:
                data = f"Subject: {seed}-{n}-{i}\r\n\r\n".encode() + rng.randbytes(
                    rng.choice(SIZES)
                )
            blob = store.blobs.writer()
            for k in range(0, len(data), 65536):
                blob.write(data[k : k + 65536])
            ref = await asyncio.to_thread(blob.commit)
            (got,) = await store.deliver(ref, [DeliveryTarget(acc.id)])
            digest = hashlib.sha256(data).hexdigest()
            print(f"ok {got.mailbox_id} {got.uid} {digest}", flush=True)
            mine.append((got.mailbox_id, got.uid))
            if i % 3 == 2:
                mailbox_id, uid = mine.pop(rng.randrange(len(mine)))
                print(f"drop {mailbox_id} {uid}", flush=True)  # may or may not commit now
                await store.expunge(mailbox_id, [uid])
                print(f"gone {mailbox_id} {uid}", flush=True)
            i += 1

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
