"""A private Debian Postfix instance for tests and benchmarks: its own config_directory,
queue_directory and data_directory under a temporary directory, smtpd on one loopback port,
no chroot, logging to a file. Started with ``postfix -c DIR start``, stopped with
``postfix -c DIR stop`` (which waits for master to exit)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
# Debian's master.cf services a relay or a Maildir delivery needs (chroot off everywhere).
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port() -> int:
    """A currently free loopback port (Postfix cannot take a pre-bound socket)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _traversable(path: Path) -> None:
    """Postfix daemons run as user postfix and must reach the queue and data directories:
    add search (x) permission for others on each ancestor (pytest makes them 0700)."""
    for parent in path.resolve().parents:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH and parent.owner() == "root":
            parent.chmod(mode | stat.S_IXOTH)


class PostfixInstance:
    def __init__(self, base: Path, *, settings: dict[str, str], smtpd_processes: int = 100) -> None:
        self.base = base
        self.config = base / "etc"
        self.port = free_port()
        self.log = base / "maillog"
        self.config.mkdir(parents=True)
        (base / "queue").mkdir(mode=0o755)
        (base / "data").mkdir(mode=0o700)
        shutil.chown(base / "data", user="postfix")
        base.chmod(0o755)
        _traversable(base)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": str(base / "queue"),
            "data_directory": str(base / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "relay.test",
            "mydomain": "relay.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "maillog_file": str(self.log),
            "maillog_file_prefixes": str(base),
            "biff": "no",
            "smtputf8_enable": "yes",
            "default_process_limit": str(smtpd_processes),
            **settings,
        }
        (self.config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        smtpd = f"127.0.0.1:{self.port} inet n - n - {smtpd_processes} smtpd\n"
        (self.config / "master.cf").write_text(smtpd + _SERVICES)

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self) -> None:
        result = self._postfix("start")
        if result.returncode != 0:  # seen once under heavy load, without any log: retry once
            time.sleep(1)
            result = self._postfix("start")
        if result.returncode != 0:
            raise RuntimeError(
                f"postfix start failed: {result.stdout}{result.stderr}{self.read_log()}"
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(512).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not listen on {self.port}: {self.read_log()}")

    def stop(self) -> None:
        self._postfix("stop")
        pid_file = self.base / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 15
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 0)
            except (OSError, ValueError):
                break
            time.sleep(0.1)

    def flush(self) -> None:
        self._postfix("flush")

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
