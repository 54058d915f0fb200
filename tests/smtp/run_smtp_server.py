"""Run Hato's SMTP MX on an ephemeral loopback port over an existing data directory.

Usage: ``python run_smtp_server.py DATA_DIR [--workers N]``. Prints ``PORT <n>`` on stdout
once listening, then serves until killed. Used by the crash tests (SIGKILL at random moments).

With ``--workers N`` the services are built by the production wiring
(``hato.app.wiring.build_services``, ``[smtp] workers = N``: MX sessions in worker processes,
hato.servers.smtp_workers) with only the MX listener, inbound verification off and a
self-signed certificate in ``DATA_DIR-tls`` next to the data directory; the pids of the workers
follow on a ``WORKERS <pid> ...`` line."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from smtpkit import mx_config

from hato.app.wiring import build_services
from hato.codec.smtp import Limits
from hato.policy.authn import Authenticator
from hato.policy.smtp import Role
from hato.servers.base import Listener, TlsMode
from hato.servers.smtp import SmtpListener, SmtpService, SmtpSettings
from hato.servers.smtp_workers import SmtpWorkerPool
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


def worker_config(data_dir: Path, workers: int) -> Any:
    """The configuration of ``--workers``: the MX listener only, in ``workers`` processes."""
    tls_dir = data_dir.parent / f"{data_dir.name}-tls"
    tls_dir.mkdir(exist_ok=True)
    # as Limits(max_transactions=1000) above
    return mx_config(data_dir, tls_dir, workers=workers, max_messages_per_connection=1000)


async def main_with_workers(data_dir: Path, workers: int) -> None:
    store = await open_store(data_dir)
    services = build_services(worker_config(data_dir, workers), store)
    for service in services:
        await service.start()
    (pool,) = [s for s in services if isinstance(s, SmtpWorkerPool)]
    print(f"PORT {pool.port(0)}", flush=True)
    print("WORKERS " + " ".join(str(pid) for pid in pool.worker_pids), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if args.workers is None:
        asyncio.run(main(args.data_dir))
    else:
        asyncio.run(main_with_workers(args.data_dir, args.workers))
