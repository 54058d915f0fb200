"""docs/configuration.md is generated from the schema and must not go stale."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hato.app import confdoc
from hato.app.config import SECTIONS

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == confdoc.render(), (
        "docs/configuration.md is stale: run "
        "'PYTHONPATH=src python3 -m hato.app.confdoc docs/configuration.md'"
    )


def test_every_key_is_documented_with_type_default_and_description() -> None:
    text = confdoc.render()
    for section, cls in SECTIONS:
        assert f"## [{section}]" in text
        for f in dataclasses.fields(cls):
            assert f.metadata["doc"].strip(), f"{section}.{f.name} has no description"
            row = next(line for line in text.splitlines() if f"`{section}.{f.name}`" in line)
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            assert len(cells) == 4 and all(cells), row


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "conf.md"
    assert confdoc.main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == confdoc.render()
    assert capsys.readouterr().out == f"{out}: updated\n"
    assert confdoc.main([str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: up to date\n"
    assert confdoc.main([]) == 0
    assert capsys.readouterr().out == confdoc.render()
    assert confdoc.main(["a", "b"]) == 2
