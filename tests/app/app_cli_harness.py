"""Test harness for the app tests: a demo configuration and a CliRunner wrapper for ``hato``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from click.testing import CliRunner, Result

from hato.app.cli import cli
from hato.store.api import MailStore
from hato.store.sqlite import open_store

T = TypeVar("T")

PASSWORD_FOR_TESTS = "a demo password 123"

CONFIG = """\
[server]
hostname = "mail.example.test"
data_dir = "data"
demo = true

[smtp]
submissions_listeners = []

[imap]
tls_listeners = []

[pop3]
tls_listeners = []
"""


class Hato:
    """Runs ``hato`` commands against one configuration through click's CliRunner."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.runner = CliRunner()

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        result = self.runner.invoke(
            cli, [*args, "--config", str(self.config)], input=stdin, prog_name="hato"
        )
        assert "Traceback" not in result.output
        return result

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        return result.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """The one error line (without ``error: ``) of a command that must fail."""
        result = self(*args, stdin=stdin)
        assert result.exit_code != 0, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        return lines[0].removeprefix("error: ")

    def with_store(self, work: Callable[[MailStore], Awaitable[T]]) -> T:
        async def run() -> T:
            store = await open_store(self.config.parent / "data")
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(run())
