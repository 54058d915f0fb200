"""``hato config``, ``hato quickstart``, ``hato serve`` start-up errors, help everywhere, and the
real ``hato`` process (argument errors, hidden password prompt on a terminal)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import click
import pytest
from app_cli_harness import PASSWORD_FOR_TESTS, Hato
from click.testing import CliRunner

from hato.app import confdoc
from hato.app.cli import cli
from hato.app.config import load_config
from hato.core.errors import AuthError
from hato.policy.authn import Authenticator
from hato.store.api import MailStore

SRC = Path(__file__).parents[2] / "src"
ENV = dict(os.environ, PYTHONPATH=str(SRC))


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _all_commands(cli), ids=lambda p: " ".join(p) or "hato")
def test_help_everywhere(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="hato")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: {' '.join(('hato', *path))} ")
    assert result.stderr == ""


def test_bare_group_prints_help() -> None:
    result = CliRunner().invoke(cli, ["account"], prog_name="hato")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: hato account ")


def test_config_check_and_env_var(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["config", "check", "--config", str(config_file)])
    assert (result.exit_code, result.stdout) == (0, "ok\n")
    # Default: $HATO_CONFIG ...
    result = runner.invoke(cli, ["config", "check"], env={"HATO_CONFIG": str(config_file)})
    assert (result.exit_code, result.stdout) == (0, "ok\n")
    # ... then ./hato.toml
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    Path("hato.toml").write_text(config_file.read_text())
    result = runner.invoke(cli, ["config", "check"], env={"HATO_CONFIG": None})
    assert (result.exit_code, result.stdout) == (0, "ok\n")
    Path("hato.toml").unlink()
    result = runner.invoke(cli, ["config", "check"], env={"HATO_CONFIG": None})
    assert result.exit_code == 1
    assert result.stderr == (
        "error: cannot read configuration file hato.toml: No such file or directory\n"
    )


@pytest.mark.parametrize(
    ("append", "message"),
    [
        ('[managesieve]\nmax_script_size = "big"\n',
         'managesieve.max_script_size: expected a size like "50M", got "big"'),
        ("[http]\nlistener = []\n", 'http.listener: unknown key (did you mean "listeners"?)'),
        ("[tls]\ncert = \"missing.pem\"\nkey = \"missing-key.pem\"\n", "tls.cert: cannot read "),
        ("[server\n", "invalid TOML: "),
    ],
)
def test_config_check_reports_one_line(hato: Hato, append: str, message: str) -> None:
    hato.config.write_text(hato.config.read_text() + append)
    assert message in hato.fails("config", "check")


def test_config_doc(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["config", "doc"])
    assert result.exit_code == 0
    assert result.stdout == confdoc.render()
    out = tmp_path / "configuration.md"
    result = runner.invoke(cli, ["config", "doc", "--output", str(out)])
    assert result.stdout == f"{out}: updated\n"
    assert out.read_text(encoding="utf-8") == confdoc.render()
    result = runner.invoke(cli, ["config", "doc", "--output", str(out)])
    assert result.stdout == f"{out}: up to date\n"


def _login(config_path: Path, address: str, password: str) -> bool:
    import asyncio

    from hato.app.cli_base import open_mail_store

    async def run() -> bool:
        store: MailStore = await open_mail_store(load_config(config_path))
        try:
            await Authenticator(store).check_password(
                address, password, remote_ip="127.0.0.1", secure=True
            )
        except AuthError:
            return False
        finally:
            await store.close()
        return True

    return asyncio.run(run())


def test_quickstart_demo(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    runner = CliRunner()
    result = runner.invoke(cli, ["quickstart", "--demo", str(demo)], prog_name="hato")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "account:  demo@example.test" in out
    password = out.split("password: ", 1)[1].split()[0]
    assert len(password) == 16 and password.isascii() and password.isalnum()
    assert "swaks --server 127.0.0.1:2587 --tls --auth PLAIN" in out
    assert f"--auth-password {password}" in out
    assert "127.0.0.1:2143" in out and "127.0.0.1:2110" in out

    config = load_config(demo / "hato.toml")
    assert config.server.demo is True
    assert config.server.hostname == "mail.example.test"
    assert config.server.data_dir == (demo / "data").resolve()
    ports = {path: (lst.host, lst.port) for path, lst in config.listeners()}
    assert ports == {
        "smtp.mx_listeners[0]": ("127.0.0.1", 2525),
        "smtp.submission_listeners[0]": ("127.0.0.1", 2587),
        "smtp.submissions_listeners[0]": ("127.0.0.1", 2465),
        "imap.listeners[0]": ("127.0.0.1", 2143),
        "imap.tls_listeners[0]": ("127.0.0.1", 2993),
        "pop3.listeners[0]": ("127.0.0.1", 2110),
        "pop3.tls_listeners[0]": ("127.0.0.1", 2995),
        "managesieve.listeners[0]": ("127.0.0.1", 24190),
        "http.listeners[0]": ("127.0.0.1", 8080),
    }
    assert (demo / "tls" / "key.pem").stat().st_mode & 0o077 == 0
    check = runner.invoke(cli, ["config", "check", "--config", str(demo / "hato.toml")])
    assert (check.exit_code, check.stdout) == (0, "ok\n")
    assert _login(demo / "hato.toml", "demo@example.test", password)

    again = runner.invoke(cli, ["quickstart", "--demo", str(demo)], prog_name="hato")
    assert again.exit_code == 1
    assert again.stderr == (
        f"error: {demo / 'hato.toml'} already exists; start it with "
        f"'hato serve --config {demo / 'hato.toml'}' or choose another directory\n"
    )
    assert _login(demo / "hato.toml", "demo@example.test", password)  # untouched


def test_quickstart_password_stdin(tmp_path: Path) -> None:
    demo = tmp_path / "d"
    result = CliRunner().invoke(
        cli, ["quickstart", "--demo", str(demo), "--password-stdin"], input=PASSWORD_FOR_TESTS
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD_FOR_TESTS not in result.stdout  # a password the user gave is not echoed
    assert "password: (the password you gave)" in result.stdout
    assert _login(demo / "hato.toml", "demo@example.test", PASSWORD_FOR_TESTS)


def test_serve_startup_errors_are_one_line(hato: Hato, tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    result = CliRunner().invoke(cli, ["serve", "--config", str(missing)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: cannot read configuration file {missing}: No such file or directory\n"
    )
    hato.config.write_text(
        hato.config.read_text() + '[tls]\ncert = "nope/cert.pem"\nkey = "nope/key.pem"\n'
    )
    cert = tmp_path / "nope" / "cert.pem"
    assert hato.fails("serve") == f"tls.cert: cannot read {cert}: No such file or directory"


def test_real_process_help_and_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hato.app.cli", "--help"],
        capture_output=True, text=True, env=ENV, timeout=60, check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: hato ")
    done = subprocess.run(
        [sys.executable, "-m", "hato.app.cli", "domain", "add"],
        capture_output=True, text=True, env=ENV, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "error: Missing argument 'NAME'. (see 'hato domain add --help')\n"


def _read_until(fd: int, marker: bytes, timeout: float = 20.0) -> bytes:
    seen = b""
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"timed out waiting for {marker!r}, got {seen!r}"
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        assert chunk, f"terminal closed before {marker!r}, got {seen!r}"
        seen += chunk
    return seen


def test_hidden_prompt_on_a_terminal(hato: Hato) -> None:
    hato.ok("domain", "add", "example.test")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hato.app.cli", "account", "add", "t@example.test",
         "--config", str(hato.config)],
        stdin=secondary, stdout=secondary, stderr=secondary, env=ENV,
        start_new_session=True,  # no controlling terminal: the prompt uses the pty on stdin
    )
    os.close(secondary)
    try:
        _read_until(primary, b"Password: ")
        os.write(primary, PASSWORD_FOR_TESTS.encode() + b"\n")
        _read_until(primary, b"Repeat password: ")
        os.write(primary, PASSWORD_FOR_TESTS.encode() + b"\n")
        rest = _read_until(primary, b"added account t@example.test")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    assert PASSWORD_FOR_TESTS.encode() not in rest  # hidden: never echoed
    assert _login(hato.config, "t@example.test", PASSWORD_FOR_TESTS)
