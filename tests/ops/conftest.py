"""Fixtures of the export/import tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from mail_setup import WithStore
from mbox_corpus import Sample, make_corpus

from hato.core.passwords import hash_password
from hato.store.api import MailStore
from hato.store.model import Account, Credentials
from hato.store.sqlite import open_store

T = TypeVar("T")


@pytest.fixture(scope="session")
def corpus() -> list[Sample]:
    return make_corpus(1000)


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_password("x")


@pytest.fixture
def with_store(tmp_path: Path, password_hash: str) -> WithStore:
    """Run a scenario against the real SQLite store: ``with_store(fn)`` calls
    ``await fn(store, account)`` for a fresh account u@example.test and closes the store."""

    def run(scenario: Callable[[MailStore, Account], Awaitable[T]]) -> T:
        async def main() -> T:
            store = await open_store(tmp_path / "data")
            try:
                await store.add_domain("example.test")
                account = await store.add_account(
                    "u@example.test", Credentials(password_hash=password_hash)
                )
                return await scenario(store, account)
            finally:
                await store.close()

        return asyncio.run(main())

    return run
