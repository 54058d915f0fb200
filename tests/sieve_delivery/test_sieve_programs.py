"""The administrator's programs for vnd.dovecot.pipe/filter/execute (``ProgramRunner``): only
from the configured directory, no shell, a fixed environment, the timeout killing the whole
process group, bounded output; and the [sieve] section that configures them."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from hato.app.config import parse_config
from hato.app.config_sieve import sieve_settings
from hato.codec.sieve.ext_extprograms import Outcome, ProgramCall
from hato.core.errors import ConfigError
from hato.delivery.sieve_programs import (
    ProgramDirectory,
    ProgramRunner,
    ProgramSettings,
    convert_eol,
)

ENV = {
    "USER": "bob@example.test",
    "HOST": "mx.example.test",
    "SENDER": "a@remote.example",
    "RECIPIENT": "bob@example.test",
    "ORIG_RECIPIENT": "bob@example.test",
}


def program(directory: Path, name: str, body: str, *, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(mode)
    return path


def runner(directory: Path, *, timeout: float = 5.0, max_output: int = 1 << 20) -> ProgramRunner:
    kind = ProgramDirectory(directory, timeout=timeout)
    return ProgramRunner(
        ProgramSettings(pipe=kind, filter=kind, execute=kind, max_output=max_output)
    )


def call(name: str, *args: str, data: bytes | None = None, kind: str = "execute") -> ProgramCall:
    return ProgramCall(kind, name, args, data, ENV)


def test_output_status_and_arguments(tmp_path: Path) -> None:
    program(tmp_path, "frame", 'printf "FRAMED %s{ %s }" "$*" "$(cat)"')
    program(tmp_path, "no", "exit 3")
    run = runner(tmp_path)
    result = run.run(call("frame", "a b", data=b"IN"))
    assert (result.outcome, result.output) == (Outcome.OK, b"FRAMED a b{ IN }")
    assert run.run(call("no")).outcome is Outcome.FALSE  # §8: a "false" result


def test_arguments_never_reach_a_shell(tmp_path: Path) -> None:
    program(tmp_path, "echo", 'printf "%s" "$1"')
    marker = tmp_path / "owned"
    result = runner(tmp_path).run(call("echo", f"$(touch {marker}); `touch {marker}`"))
    assert result.output.startswith(b"$(touch")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../outside", "sub/prog", "..", "missing", "plain", "dir"])
def test_only_executables_directly_in_the_directory(tmp_path: Path, name: str) -> None:
    inside = tmp_path / "bin"
    inside.mkdir()
    program(tmp_path, "outside", "echo escaped")  # next to the directory, not in it
    (inside / "sub").mkdir()
    program(inside / "sub", "prog", "echo nested")
    program(inside, "plain", "echo x", mode=0o644)  # not executable
    (inside / "dir").mkdir()
    assert runner(inside).run(call(name)).outcome is Outcome.UNKNOWN


def test_a_kind_without_a_directory_has_no_programs(tmp_path: Path) -> None:
    program(tmp_path, "p", "true")
    only_pipe = ProgramRunner(ProgramSettings(pipe=ProgramDirectory(tmp_path)))
    assert only_pipe.run(call("p", kind="pipe")).outcome is Outcome.OK
    assert only_pipe.run(call("p", kind="filter")).outcome is Outcome.UNKNOWN
    assert only_pipe.settings.extensions == frozenset({"vnd.dovecot.pipe"})


def test_the_environment_is_fixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HATO_SECRET", "leak")
    program(tmp_path, "env", "env")
    output = runner(tmp_path).run(call("env")).output.decode()
    names = {line.split("=", 1)[0] for line in output.splitlines()}
    assert "HATO_SECRET" not in names
    assert {"PATH", "HOME", "USER", "HOST", "SENDER", "RECIPIENT", "ORIG_RECIPIENT"} <= names
    assert f"HOME={tmp_path.absolute()}" in output
    assert "SENDER=a@remote.example" in output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # the program starts a helper in the background, then blocks: both must die
    program(tmp_path, "slow", f"sleep 30 & echo $! > {pids}\nsleep 30")
    started = time.monotonic()
    result = runner(tmp_path, timeout=0.5).run(call("slow"))
    assert result.outcome is Outcome.FAILED and "timed out" in result.detail
    assert time.monotonic() - started < 10
    helper = int(pids.read_text())
    deadline = time.monotonic() + 5
    while _alive(helper) and time.monotonic() < deadline:
        time.sleep(0.05)  # SIGKILL is delivered; the zombie is reaped by init
        try:
            os.waitpid(helper, os.WNOHANG)
        except ChildProcessError:
            pass
    assert not _alive(helper)


def test_output_is_bounded(tmp_path: Path) -> None:
    program(tmp_path, "flood", "yes flood")
    result = runner(tmp_path, max_output=10_000).run(call("flood"))
    assert result.outcome is Outcome.FAILED and "output" in result.detail


def test_a_program_that_does_not_read_its_input_is_judged_by_its_status(tmp_path: Path) -> None:
    program(tmp_path, "ignore", "exit 0")
    result = runner(tmp_path).run(call("ignore", data=b"x" * 1_000_000, kind="pipe"))
    assert result.outcome is Outcome.OK


def test_input_line_ends() -> None:
    assert convert_eol(b"a\nb\r\n", "crlf") == b"a\r\nb\r\n"
    assert convert_eol(b"a\r\nb\n", "lf") == b"a\nb\n"


def test_timeouts_are_finite() -> None:
    with pytest.raises(ValueError):
        ProgramDirectory(Path("/"), timeout=0)  # §11: never indefinitely


# demo mode, and no implicit-TLS listeners: a configuration that needs no certificate
NO_TLS: dict[str, object] = {
    "smtp": {"submissions_listeners": []},
    "imap": {"tls_listeners": []},
    "pop3": {"tls_listeners": []},
}


def test_the_sieve_section(tmp_path: Path) -> None:
    (tmp_path / "pipe").mkdir()
    data = {
        "server": {"hostname": "mx.example.test", "data_dir": "data", "demo": True},
        **NO_TLS,
        "sieve": {
            "max_redirects": 2,
            "max_cpu_time": "2s",
            "redirect_envelope_from": "<bounces@example.test>",
            "report_from": "user_email",
            "report": False,
            "pipe_dir": "pipe",
            "program_timeout": "3s",
            "program_input_eol": "lf",
        },
    }
    config = parse_config(data, base_dir=tmp_path)
    settings = sieve_settings(config.sieve, hostname="mx.example.test")
    assert settings.limits.max_redirects == 2 and settings.limits.max_cpu_time == 2.0
    assert settings.limits.redirect_envelope_from == "<bounces@example.test>"
    assert settings.limits.report_from == "user_email"
    assert settings.programs.pipe == ProgramDirectory(tmp_path / "pipe", 3.0, "lf")
    assert "vnd.dovecot.pipe" in settings.extensions
    assert not {"vnd.dovecot.filter", "vnd.dovecot.report"} & settings.extensions
    assert settings.environment["host"] == "mx.example.test"
    default = sieve_settings(
        parse_config({"server": data["server"], **NO_TLS}, base_dir=tmp_path).sieve,
        hostname="mx.example.test",
    )
    assert default.limits.redirect_envelope_from == ""  # the action's default
    assert "vnd.dovecot.report" in default.extensions
    assert not default.programs.extensions


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("redirect_envelope_from", "somebody"),
        ("redirect_envelope_from", "<not an address>"),
        ("report_from", "default"),
        ("program_input_eol", "cr"),
        ("program_timeout", "0s"),
        ("max_actions", 0),
    ],
)
def test_bad_sieve_settings_name_the_key(tmp_path: Path, key: str, value: object) -> None:
    data = {"server": {"hostname": "mx.example.test"}, "sieve": {key: value}}
    with pytest.raises(ConfigError, match=re.escape(f"sieve.{key}")):
        parse_config(data, base_dir=tmp_path)


def test_a_program_directory_must_exist(tmp_path: Path) -> None:
    data = {
        "server": {"hostname": "mx.example.test", "demo": True},
        **NO_TLS,
        "sieve": {"filter_dir": "nope"},
    }
    config = parse_config(data, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"sieve\.filter_dir"):
        sieve_settings(config.sieve, hostname="mx.example.test")
