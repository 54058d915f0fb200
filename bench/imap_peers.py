"""The two IMAP servers of the benchmark, each a child process on a loopback port.

* Hato: this file run as a script (``python3 bench/imap_peers.py DATA_DIR [--profile OUT]``)
  opens the store in DATA_DIR, serves IMAP on 127.0.0.1 (ephemeral port, printed as
  ``PORT n``; plaintext LOGIN allowed on loopback as in demo mode) until SIGTERM. With
  ``--profile`` the whole server runs under cProfile and writes its stats at exit.
* Dovecot: Debian's ``dovecot -F`` with a private config in a temporary directory (its own
  base_dir, state_dir and log; ``ssl = no``; one static user whose password is
  ``PASSWORD``; ``mail_location = maildir:...``). Dovecot refuses to run mail processes as
  root, so the mail is owned by and served as ``nobody``.

Memory: ``rss_kib`` is a process's VmRSS; ``tree_pss_kib`` sums the proportional set size
of a process and all its descendants (Dovecot runs one ``imap`` process per connection, and
PSS counts their shared pages once). CPU: ``tree_cpu_seconds`` sums the same tree's user and
system time, reaped children included.

Security: everything listens on 127.0.0.1 only; files are created under the benchmark's own
temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

USER = "bench@bench.test"
PASSWORD = "bench-password"
NOBODY = 65534


# -- Hato -------------------------------------------------------------------------------------
class HatoProcess:
    """The Hato IMAP server in a child process (this file as a script)."""

    def __init__(self, data_dir: Path, *, profile: Path | None = None) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), str(data_dir)]
        if profile is not None:
            argv += ["--profile", str(profile)]
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1] / "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"PORT "):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"hato server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


async def _serve(data_dir: Path) -> None:
    from hato.core.clock import SystemClock
    from hato.policy.authn import Authenticator
    from hato.servers.base import Listener, TlsMode
    from hato.servers.imap import ImapService, ImapSettings
    from hato.store.sqlite import open_store

    store = await open_store(data_dir)
    auth = Authenticator(store, clock=SystemClock(), plaintext_on_loopback=True)
    service = ImapService(
        ImapSettings(hostname="bench.test",
                     listeners=(Listener("127.0.0.1", 0, TlsMode.NONE),)),
        store, auth,
    )
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"PORT {service.bound[0][1][1]}", flush=True)
    await stop.wait()
    await service.stop(timeout=5)
    await store.close()


def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    if args.profile is None:
        asyncio.run(_serve(args.data_dir))
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(_serve(args.data_dir))
    finally:
        profiler.disable()
        profiler.dump_stats(str(args.profile))


# -- Dovecot ----------------------------------------------------------------------------------
def free_port() -> int:
    """A loopback port free right now (Dovecot's config needs a number)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class DovecotProcess:
    """A private Dovecot instance (``dovecot -c CONF -F``) serving ``maildir`` as USER."""

    def __init__(self, base: Path, maildir: Path) -> None:
        self.base = base
        self.port = free_port()
        home = base / "home"
        home.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "state"):
            (base / sub).mkdir(exist_ok=True)
        for directory in {base, base.parent, maildir.parent}:  # nobody must reach the mail
            os.chmod(directory, 0o755)
        chown_tree(home, NOBODY, NOBODY)
        chown_tree(maildir, NOBODY, NOBODY)
        self.conf = base / "dovecot.conf"
        self.conf.write_text(f"""base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
ssl = no
protocols = imap
listen = 127.0.0.1
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{maildir}
first_valid_uid = {NOBODY}
first_valid_gid = {NOBODY}
default_client_limit = 4000
default_process_limit = 2000
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={home}
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
protocol imap {{
  mail_max_userip_connections = 2000
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
        self.proc = subprocess.Popen(["dovecot", "-c", str(self.conf), "-F"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"dovecot did not start: {self.log()}") from None
                time.sleep(0.1)

    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        self.proc.stderr.close()


# -- memory -----------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_pss_kib(pid: int) -> tuple[int, int]:
    """(sum of Pss over ``pid`` and its descendants, number of processes)."""
    tree = _children()
    todo, total, count = [pid], 0, 0
    while todo:
        current = todo.pop()
        todo.extend(tree.get(current, []))
        try:
            text = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                count += 1
                break
    return total, count


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants, with the children each
    has reaped (Dovecot's per-connection ``imap`` processes end up in the master's)."""
    tree = _children()
    todo, ticks = [pid], 0
    while todo:
        current = todo.pop()
        todo.extend(tree.get(current, []))
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    _main()
