"""Fixtures of the ManageSieve tests (the harness lives in managesieve_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from managesieve_harness import EnvFactory, sieve_env_factory


@pytest.fixture
def sieve_env(tmp_path: Path) -> Iterator[EnvFactory]:
    yield from sieve_env_factory(tmp_path)
