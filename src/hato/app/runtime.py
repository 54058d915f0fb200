"""The ``hato serve`` lifecycle: start every Service in one asyncio process, stop them on a signal.

Start-up is all or nothing: when one service cannot start (``ListenError``: port taken,
unreadable certificate), the ones already started are stopped and the error is raised for the
CLI to print as one line. SIGTERM and SIGINT set the stop event; every service is then stopped
concurrently with ``shutdown_timeout`` so in-flight transactions can finish.

Left out: privilege dropping, systemd notification, reload on SIGHUP.

Security: reads the TLS certificate and key files named by the configuration to check, before
anything listens, that they are readable and match; their contents are never logged.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Sequence

from hato.app.config import TlsConfig
from hato.core.errors import ConfigError
from hato.core.log import event
from hato.servers.base import Service

# Extra time granted beyond ``shutdown_timeout`` for a service's own close-down work.
_STOP_GRACE = 5.0


def _no_passphrase() -> bytes:
    return b""


def check_tls_files(tls: TlsConfig) -> None:
    """Raise ConfigError naming the file when the certificate or key is unreadable or wrong."""
    if tls.cert is None or tls.key is None:
        return
    for key, path in (("tls.cert", tls.cert), ("tls.key", tls.key)):
        try:
            with path.open("rb") as f:
                f.read(1)
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key must fail here, not stop the server at an OpenSSL passphrase prompt.
        context.load_cert_chain(certfile=tls.cert, keyfile=tls.key, password=_no_passphrase)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise ConfigError(
            f"tls.cert: cannot use {tls.cert} with tls.key {tls.key}: not PEM, not a matching "
            f"pair, or an encrypted key ({reason})"
        ) from None


async def _stop_all(services: Sequence[Service], *, timeout: float) -> None:
    """Stop services concurrently (reverse start order); errors are logged, not raised."""

    async def stop_one(service: Service) -> None:
        try:
            await asyncio.wait_for(service.stop(timeout=timeout), timeout + _STOP_GRACE)
        except Exception as exc:  # one service failing to stop must not keep others running
            event("serve.stop.failed", service=service.name, error=repr(exc))
        else:
            event("serve.stopped", service=service.name)

    await asyncio.gather(*(stop_one(s) for s in reversed(services)))


async def run_services(
    services: list[Service],
    *,
    shutdown_timeout: float,
    stop_event: asyncio.Event | None = None,
) -> None:
    """Start ``services``, wait for SIGTERM/SIGINT (or ``stop_event``), then stop them all.

    Raises the first start-up error (after stopping what had started).
    """
    if not services:
        raise ConfigError("nothing to serve: every listener is disabled in the configuration")
    stop = stop_event if stop_event is not None else asyncio.Event()
    loop = asyncio.get_running_loop()
    started: list[Service] = []
    for service in services:
        try:
            await service.start()
        except BaseException as exc:
            event("serve.start.failed", service=service.name, error=str(exc))
            await _stop_all(started, timeout=shutdown_timeout)
            raise
        started.append(service)
        event("serve.started", service=service.name)

    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests), or Windows
            continue
        installed.append(sig)
    try:
        event("serve.ready", services=",".join(s.name for s in started))
        await stop.wait()
        event("serve.stopping", timeout=shutdown_timeout)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await _stop_all(started, timeout=shutdown_timeout)

