"""Debian's Dovecot as a real peer: a self-contained config in a temporary directory, and
``/usr/lib/dovecot/imap`` run in PREAUTH mode over pipes (no daemon, no network, no root).

Dovecot refuses mail access as root; when the tests run as root, the imap process runs in a
user namespace (``unshare --user``) where it is uid 1000 and the files stay ours.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

IMAP_BINARY = "/usr/lib/dovecot/imap"
_FETCH = re.compile(
    rb"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\) INTERNALDATE \"([^\"]+)\" "
    rb"RFC822\.SIZE (\d+) BINARY\[\] ~?\{(\d+)\}\r\n"
)
_LIST = re.compile(rb'\* (LIST|LSUB) \(([^)]*)\) "/" ("(?:[^"\\]|\\.)*"|\S+)\r\n')
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")


@dataclass(frozen=True)
class Fetched:
    uid: int
    flags: frozenset[str]  # without \Recent
    internal_date: str  # as Dovecot prints it
    size: int
    body: bytes


def write_config(base: Path, maildir: Path) -> Path:
    """A Dovecot config that reads nothing from /etc and writes only under ``base``."""
    uid = 1000 if os.geteuid() == 0 else os.getuid()
    gid = 1000 if os.geteuid() == 0 else os.getgid()
    for sub in ("run", "state"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    conf = base / "dovecot.conf"
    conf.write_text(
        f"""base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = no
protocols = imap
mail_location = maildir:{maildir}
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
first_valid_gid = {gid}
# Dovecot 2.3: folder names holding "." are escaped \\2e on disk by this plugin.
mail_plugins = listescape
namespace inbox {{
  inbox = yes
  separator = /
}}
"""
    )
    return conf


def run_imap(conf: Path, commands: list[bytes], *, user: str = "u") -> bytes:
    """Send the commands (already CRLF-terminated, LITERAL+ for data) and LOGOUT; returns
    everything the server said."""
    argv = [IMAP_BINARY, "-c", str(conf)]
    if os.geteuid() == 0:
        argv = ["unshare", "--user", "--map-user=1000", "--map-group=1000", *argv]
    env = {"USER": user, "HOME": str(conf.parent), "PATH": "/usr/bin:/bin", "TZ": "UTC"}
    script = b"".join(commands) + b"zz LOGOUT\r\n"
    done = subprocess.run(argv, input=script, capture_output=True, env=env, timeout=60, check=False)
    if done.returncode != 0 or b"zz OK" not in done.stdout:
        log = conf.parent / "dovecot.log"
        raise AssertionError(
            f"dovecot imap failed ({done.returncode}): {done.stderr!r} "
            f"{log.read_text() if log.exists() else ''} {done.stdout[-2000:]!r}"
        )
    for line in done.stdout.split(b"\r\n"):
        if re.match(rb"[a-z]\d* (NO|BAD) ", line):
            raise AssertionError(f"dovecot refused a command: {line!r}")
    return done.stdout


def quote(name: str) -> bytes:
    """A mailbox name (already modified UTF-7) as an IMAP quoted string."""
    return b'"' + name.encode("ascii").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def list_mailboxes(output: bytes, kind: str = "LIST") -> dict[str, frozenset[str]]:
    """Mailbox name (modified UTF-7, unquoted) -> attributes, from LIST or LSUB responses."""
    result = {}
    for match in _LIST.finditer(output):
        if match.group(1).decode() != kind:
            continue
        raw = match.group(3)
        if raw.startswith(b'"'):
            raw = re.sub(rb"\\(.)", rb"\1", raw[1:-1])
        result[raw.decode("ascii")] = frozenset(match.group(2).decode().split())
    return result


def parse_fetches(output: bytes) -> list[Fetched]:
    found = []
    pos = 0
    while (match := _FETCH.search(output, pos)) is not None:
        length = int(match.group(5))
        body = output[match.end() : match.end() + length]
        flags = frozenset(match.group(2).decode().split()) - {"\\Recent"}
        found.append(
            Fetched(int(match.group(1)), flags, match.group(3).decode(), int(match.group(4)), body)
        )
        pos = match.end() + length
    return found


def select_and_fetch(conf: Path, mailbox: str) -> tuple[int, list[Fetched]]:
    """(UIDVALIDITY, every message) of one mailbox, read-only (EXAMINE)."""
    output = run_imap(
        conf,
        [
            b"a EXAMINE " + quote(mailbox) + b"\r\n",
            # RFC 3516 BINARY: the exact bytes; BODY[] would show NUL as 0x80 (RFC 3501 §4.3).
            b"b UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BINARY.PEEK[])\r\n",
        ],
    )
    validity = _UIDVALIDITY.search(output)
    assert validity is not None, output[:500]
    return int(validity.group(1)), parse_fetches(output)
