"""Running the administrator's programs for Sieve's vnd.dovecot.pipe/filter/execute.

Implements the host side of Pigeonhole's spec-bosch-sieve-extprograms: the codec
(``hato.codec.sieve.ext_extprograms``) validates and decides, this module runs. A program is
named by the script and looked up in the directory the administrator configured for its
kind (``[sieve] pipe_dir`` / ``filter_dir`` / ``execute_dir``, §3: "the list of valid program
names MUST be limited, subject to administrator configuration"); a kind without a directory
is not offered at all (``ProgramSettings.extensions``). The input (the message or an
:input string) goes to stdin with the configured line ends (CRLF by default, as Pigeonhole's
``sieve_<kind>_input_eol``); stdout is the program's output (the new message for filter,
the :output value for execute), read up to ``max_output`` octets; exit status 0 is success
(§8: any other a "false" result).
Leaves out: Dovecot's script socket services; per-program resource limits beyond the
wall-clock timeout and the output bound (run programs under their own limits if needed).
Security: no shell: the program is executed by its absolute path inside the configured
directory (a name with "/" or ".." never gets here, and the file must be a regular executable
file directly in it), with the script's arguments as argv; the environment is fixed (PATH,
HOME = the program's directory, USER, HOST, SENDER, RECIPIENT, ORIG_RECIPIENT: §4 lets
implementations pass the envelope); the program runs in its own session and process group,
which is killed (SIGKILL) at the timeout (§11: "MUST NOT be allowed to execute
indefinitely") and after it exits, so nothing it started outlives it. Its stderr is logged
at debug level only (cut to 200 characters), its output never.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from hato.codec.sieve.ext_extprograms import (
    Outcome,
    ProgramCall,
    ProgramResult,
    name_problem,
)
from hato.core import log

DEFAULT_TIMEOUT = 10.0  # seconds (Pigeonhole's sieve_<kind>_exec_timeout default)
DEFAULT_MAX_OUTPUT = 64 * 1024 * 1024  # octets read from a program's stdout
_CHUNK = 65536
_STDERR_KEPT = 4096
_ENV_KEYS = ("USER", "HOST", "SENDER", "RECIPIENT", "ORIG_RECIPIENT")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class ProgramDirectory:
    """Where one kind's programs live and how they run. ``timeout``: seconds, > 0;
    ``input_eol``: "crlf" or "lf"."""

    directory: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    input_eol: str = "crlf"

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("a program timeout must be positive (§11: never indefinitely)")
        if self.input_eol not in ("crlf", "lf"):
            raise ValueError(f"input_eol must be crlf or lf, not {self.input_eol!r}")


@dataclass(frozen=True, slots=True)
class ProgramSettings:
    """The three kinds' directories; a kind without one is not offered."""

    pipe: ProgramDirectory = field(default_factory=ProgramDirectory)
    filter: ProgramDirectory = field(default_factory=ProgramDirectory)
    execute: ProgramDirectory = field(default_factory=ProgramDirectory)
    max_output: int = DEFAULT_MAX_OUTPUT
    path: str = SAFE_PATH  # PATH of the programs' environment

    def kind(self, kind: str) -> ProgramDirectory:
        return {"pipe": self.pipe, "filter": self.filter, "execute": self.execute}[kind]

    @property
    def extensions(self) -> frozenset[str]:
        """The vnd.dovecot.* capabilities these directories make available."""
        return frozenset(
            f"vnd.dovecot.{kind}"
            for kind in ("pipe", "filter", "execute")
            if self.kind(kind).directory is not None
        )


def convert_eol(data: bytes, eol: str) -> bytes:
    """Line ends as the program expects them: CRLF (RFC 5322 §2.1) or bare LF."""
    if eol == "lf":
        return data.replace(b"\r\n", b"\n")
    return re.sub(rb"\r?\n", b"\r\n", data)


class ProgramRunner:
    """Runs programs for the interpreter (``hato.codec.sieve.ext_extprograms.Programs``) and
    for delivery's pipe actions. Blocking: call it from a worker thread."""

    def __init__(self, settings: ProgramSettings) -> None:
        self.settings = settings

    def locate(self, kind: str, name: str) -> Path | None:
        """The executable ``name`` stands for, directly inside ``kind``'s directory."""
        directory = self.settings.kind(kind).directory
        if directory is None or name_problem(name) is not None:
            return None
        path = directory.absolute() / name
        if path.parent != directory.absolute():  # never outside (name_problem forbids "/")
            return None
        try:
            info = path.stat()
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or not os.access(path, os.X_OK):
            return None
        return path

    def run(self, call: ProgramCall) -> ProgramResult:
        path = self.locate(call.kind, call.program)
        if path is None:
            log.event("sieve.program.unknown", kind=call.kind, program=call.program)
            return ProgramResult(Outcome.UNKNOWN, detail="no such program")
        config = self.settings.kind(call.kind)
        env = {"PATH": self.settings.path, "HOME": str(path.parent)}
        for key in _ENV_KEYS:
            value = call.environment.get(key, "")
            env[key] = value.replace("\x00", "")
        data = convert_eol(call.data, config.input_eol) if call.data is not None else None
        started = time.monotonic()
        result, stderr = _execute(
            [str(path), *call.args],
            data=data,
            env=env,
            cwd=path.parent,
            timeout=config.timeout,
            max_output=self.settings.max_output,
        )
        log.event(
            "sieve.program",
            kind=call.kind,
            program=call.program,
            outcome=result.outcome.value,
            detail=result.detail,
            seconds=round(time.monotonic() - started, 3),
            output=len(result.output),
        )
        if stderr:
            text = stderr.decode("utf-8", "replace")[:200]
            log.event("sieve.program.stderr", level=10, program=call.program, stderr=text)
        return result


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the program's whole process group (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _execute(
    argv: list[str],
    *,
    data: bytes | None,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    max_output: int,
) -> tuple[ProgramResult, bytes]:
    """Run ``argv`` with ``data`` on stdin; the result and what it wrote to stderr."""
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(  # no shell: argv[0] is an absolute path
            argv,
            stdin=subprocess.PIPE if data else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            close_fds=True,
            start_new_session=True,  # its own process group, killed as a whole
        )
    except OSError as exc:
        return ProgramResult(Outcome.FAILED, detail=f"cannot run: {exc.strerror}"), b""
    out = bytearray()
    err = bytearray()
    try:
        failure = _exchange(proc, data or b"", out, err, deadline=deadline, limit=max_output)
        if failure is None:
            try:
                status = proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failure = "timed out"
        if failure == "timed out":
            failure = f"timed out after {timeout:g}s"
        if failure is not None:
            _kill(proc)
            proc.wait()
            return ProgramResult(Outcome.FAILED, detail=failure), bytes(err)
    finally:
        _kill(proc)  # whatever it left running in its group
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    if status < 0:
        return ProgramResult(Outcome.FAILED, detail=f"killed by signal {-status}"), bytes(err)
    if status != 0:
        return ProgramResult(Outcome.FALSE, bytes(out), f"exit status {status}"), bytes(err)
    return ProgramResult(Outcome.OK, bytes(out)), bytes(err)


def _exchange(
    proc: subprocess.Popen[bytes],
    data: bytes,
    out: bytearray,
    err: bytearray,
    *,
    deadline: float,
    limit: int,
) -> str | None:
    """Feed stdin and drain stdout/stderr until both close; why it failed, or None."""
    assert proc.stdout is not None and proc.stderr is not None
    pending = memoryview(data)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return "timed out"
            for key, _ in sel.select(left):
                if key.fileobj is proc.stdin:
                    try:
                        sent = os.write(key.fd, pending[:_CHUNK])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        sent = len(pending)  # it stopped reading: its exit status decides
                    pending = pending[sent:]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.fileobj is proc.stdout:
                    out += chunk
                    if len(out) > limit:
                        return f"more than {limit} octets of output"
                elif len(err) < _STDERR_KEPT:
                    err += chunk[: _STDERR_KEPT - len(err)]
    return None
