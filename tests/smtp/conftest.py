"""Fixtures of the SMTP tests (helpers live in smtpkit.py). Also puts ``tests/`` on
``sys.path`` (``starttls_kit``)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from smtpkit import Harness, default_settings

from hato.ops.tls import make_self_signed

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    make_self_signed(cert, key, hostnames=["mx.example.test"], loopback=True)
    return cert, key


@pytest.fixture
def make_harness(tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def factory(*, demo: bool = False, **overrides: Any) -> Harness:
        harness = Harness(
            tmp_path / f"data{len(made)}", tls_files, default_settings(**overrides), demo=demo
        )
        made.append(harness)
        return harness.start()

    yield factory
    for harness in made:
        harness.close()


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()
