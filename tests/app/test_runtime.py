"""The serve lifecycle: all-or-nothing start, graceful stop on a signal, TLS file checks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from runtime_echo import EchoService

from hato.app.config import TlsConfig
from hato.app.runtime import check_tls_files, run_services
from hato.core.errors import ConfigError, ListenError
from hato.ops.tls import make_self_signed

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"


async def _exchange(port: int, line: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line)
    await writer.drain()
    return reader, writer


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def _wait_until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_starts_all_and_stops_gracefully_on_event() -> None:
    asyncio.run(_starts_all_and_stops_gracefully_on_event())


async def _starts_all_and_stops_gracefully_on_event() -> None:
    first, second = EchoService("one"), EchoService("two")
    stop = asyncio.Event()
    runner = asyncio.create_task(run_services([first, second], shutdown_timeout=5, stop_event=stop))
    await _wait_until(lambda: first.running and second.running)
    reader, writer = await _exchange(second.port, b"hello\nBEGIN\n")
    assert await reader.readline() == b"hello\n"
    assert await reader.readline() == b"BEGIN\n"
    stop.set()
    await asyncio.sleep(0.05)
    # Stopping: no new connections, but the open transaction may finish.
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", first.port)
    assert not runner.done()
    writer.write(b"END\n")
    await writer.drain()
    assert await reader.readline() == b"OK\n"
    await _close(writer)
    await asyncio.wait_for(runner, 5)
    assert second.completed == 1 and second.closed_early == 0
    assert not first.running and not second.running


def test_sessions_still_open_after_the_timeout_are_closed() -> None:
    asyncio.run(_sessions_still_open_after_the_timeout_are_closed())


async def _sessions_still_open_after_the_timeout_are_closed() -> None:
    service = EchoService()
    stop = asyncio.Event()
    runner = asyncio.create_task(run_services([service], shutdown_timeout=0.2, stop_event=stop))
    await _wait_until(lambda: service.running)
    reader, writer = await _exchange(service.port, b"BEGIN\n")
    assert await reader.readline() == b"BEGIN\n"
    loop = asyncio.get_running_loop()
    started = loop.time()
    stop.set()
    await asyncio.wait_for(runner, 5)
    assert 0.15 <= loop.time() - started < 3
    assert await reader.read() == b""  # the server closed the idle session
    assert service.closed_early == 1 and service.completed == 0
    await _close(writer)


def test_port_taken_stops_the_started_services_and_raises() -> None:
    asyncio.run(_port_taken_stops_the_started_services_and_raises())


async def _port_taken_stops_the_started_services_and_raises() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = EchoService("first")
        clash = EchoService("clash", port=port)
        third = EchoService("third")
        with pytest.raises(ListenError) as info:
            await run_services([first, clash, third], shutdown_timeout=1)
    assert str(info.value) == f"cannot listen on 127.0.0.1:{port}: address already in use"
    assert first.port != 0 and not first.running  # started, then stopped again
    assert third.port == 0 and not third.running  # never started
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", first.port)


def test_nothing_to_serve_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        asyncio.run(run_services([], shutdown_timeout=1))
    assert str(info.value) == "nothing to serve: every listener is disabled in the configuration"


def _spawn(timeout: float) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), str(HERE)]))
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "runtime_echo.py"), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    assert ready.startswith("READY "), ready
    return proc, int(ready.split()[1])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_in_a_real_process_finishes_in_flight_transaction(sig: signal.Signals) -> None:
    proc, port = _spawn(5.0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            stream = conn.makefile("rwb")
            stream.write(b"BEGIN\n")
            stream.flush()
            assert stream.readline() == b"BEGIN\n"
            proc.send_signal(sig)
            # The listener closes; our session is still served.
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except ConnectionRefusedError:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("listener still accepting after the signal")
            stream.write(b"END\n")
            stream.flush()
            assert stream.readline() == b"OK\n"
            stream.close()
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "STOPPED completed=1 closed_early=0" in out
    assert "event=serve.stopping" in err
    assert "event=serve.stopped service=echo" in err
    assert "Traceback" not in err


def test_check_tls_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed(cert, key, hostnames=["mail.example.test"])
    check_tls_files(TlsConfig(cert=cert, key=key))
    check_tls_files(TlsConfig())  # no TLS configured: nothing to check

    with pytest.raises(ConfigError) as info:
        check_tls_files(TlsConfig(cert=tmp_path / "nope.pem", key=key))
    missing = tmp_path / "nope.pem"
    assert str(info.value) == f"tls.cert: cannot read {missing}: No such file or directory"

    with pytest.raises(ConfigError) as info:
        check_tls_files(TlsConfig(cert=cert, key=tmp_path))
    assert str(info.value).startswith(f"tls.key: cannot read {tmp_path}: ")

    other_cert, other_key = tmp_path / "c2.pem", tmp_path / "k2.pem"
    make_self_signed(other_cert, other_key, hostnames=["other.example.test"])
    with pytest.raises(ConfigError) as info:
        check_tls_files(TlsConfig(cert=cert, key=other_key))
    message = str(info.value)
    assert message.startswith(f"tls.cert: cannot use {cert} with tls.key {other_key}: not PEM")
    assert "\n" not in message

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        check_tls_files(TlsConfig(cert=garbage, key=key))
    assert str(info.value).startswith(f"tls.cert: cannot use {garbage} with tls.key {key}: ")

    # An encrypted key is refused at once instead of waiting at a passphrase prompt.
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError) as info:
        check_tls_files(TlsConfig(cert=cert, key=encrypted))
    assert str(info.value).startswith(f"tls.cert: cannot use {cert} with tls.key {encrypted}: ")
