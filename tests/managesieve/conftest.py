"""Fixtures of the ManageSieve tests (the harness lives in managesieve_harness.py); puts
``tests/`` on ``sys.path`` (``starttls_kit``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from managesieve_harness import EnvFactory, sieve_env_factory

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture
def sieve_env(tmp_path: Path) -> Iterator[EnvFactory]:
    yield from sieve_env_factory(tmp_path)
