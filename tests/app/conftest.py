"""Fixtures for the app tests: a configuration file over a fresh data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_cli_harness import CONFIG, Hato


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hato.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def hato(config_file: Path) -> Hato:
    return Hato(config_file)
