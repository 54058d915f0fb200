"""Test setup for the reporting tests: make ``tests/`` (``dnsserver``) and ``tests/outbound``
(``outbound_kit``, ``outbound_sink``) importable."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for directory in (TESTS, TESTS / "outbound", TESTS / "reports"):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
