"""Test setup for the outbound tests: make ``tests/`` importable (``dnsserver``),
``tests/smtp`` (``postfixkit``) and ``tests/app`` (``app_cli_harness``)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for directory in (TESTS, TESTS / "smtp", TESTS / "app"):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
