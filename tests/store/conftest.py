"""Fixtures of the store tests: every contract test runs once per backend in BACKENDS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from storekit import BACKENDS, Backend

from hato.core.clock import Clock, FixedClock
from hato.store.api import MailStore

Body = Callable[[MailStore], Awaitable[Any]]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    param: Backend = request.param
    return param


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def run(backend: Backend, tmp_path: Path, clock: Clock) -> Callable[[Body], Any]:
    """``run(body)``: open a fresh store, await ``body(store)`` in a new event loop, close."""

    def runner(body: Body) -> Any:
        async def main() -> Any:
            store = await backend.open(tmp_path / "data", clock)
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(main())

    return runner
