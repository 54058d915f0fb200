"""Run Hato's SMTP MX on an ephemeral loopback port over an existing data directory.

Usage: ``python run_smtp_server.py DATA_DIR``. Prints ``PORT <n>`` on stdout once listening,
then serves until killed. Used by the crash test (SIGKILL at random moments)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from hato.codec.smtp import Limits
from hato.policy.authn import Authenticator
from hato.policy.smtp import Role
from hato.servers.base import Listener, TlsMode
from hato.servers.smtp import SmtpListener, SmtpService, SmtpSettings
from hato.store.sqlite import open_store


async def main(data_dir: Path) -> None:
    store = await open_store(data_dir)
    settings = SmtpSettings(
        hostname="mx.example.test",
        listeners=(SmtpListener(Listener("127.0.0.1", 0, TlsMode.NONE), Role.MX),),
        limits=Limits(max_transactions=1000),
    )
    service = SmtpService(settings, store, Authenticator(store))
    await service.start()
    print(f"PORT {service.port_for(Role.MX, TlsMode.NONE)}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
