"""Interoperability with real IMAP clients from Debian: mutt (batch mode, STARTTLS + SCRAM),
isync's mbsync (two-way sync with changes on both sides) and offlineimap3.

The Debian packages are installed by scripts/test.sh (APT_PACKAGES: mutt isync offlineimap3).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from imap_harness import ALICE, PASSWORD, EnvFactory, ImapEnv

from hato.servers.base import TlsMode
from hato.store.model import DELETED, FLAGGED, SEEN, FlagOp


def _require(tool: str) -> str:
    path = shutil.which(tool)
    assert path is not None, f"{tool} is not installed: run scripts/test.sh (APT_PACKAGES)"
    return path


def _inbox(env: ImapEnv) -> dict[int, frozenset[str]]:
    async def work() -> dict[int, frozenset[str]]:
        mailbox = await env.store.get_mailbox(env.alice.id, "INBOX")
        assert mailbox is not None
        return {m.uid: m.flags for m in await env.store.list_messages(mailbox.id)}

    return env.call(work())


def _server_flags(env: ImapEnv, uids: list[int], flag: str, *, op: FlagOp = FlagOp.ADD) -> None:
    async def work() -> None:
        mailbox = await env.store.get_mailbox(env.alice.id, "INBOX")
        assert mailbox is not None
        await env.store.update_flags(mailbox.id, uids, frozenset({flag}), op=op)
        if flag == DELETED:
            await env.store.expunge(mailbox.id, uids)

    env.call(work())


def test_mutt_reads_the_inbox(imap_env: EnvFactory, tmp_path: Path) -> None:
    mutt = _require("mutt")
    _require("script")
    env = imap_env(demo=False)  # TLS required: mutt must use STARTTLS
    for i in range(5):
        env.deliver(env.message(f"mutt {i}", f"body number {i}\r\n"))
    rc = tmp_path / "muttrc"
    out = tmp_path / "saved.mbox"
    rc.write_text(
        f'set imap_user = "{ALICE}"\nset imap_pass = "{PASSWORD}"\n'
        "set ssl_starttls = yes\nset ssl_force_tls = yes\n"
        f"set certificate_file = {env.cert_file}\n"
        f'set folder = "imap://127.0.0.1:{env.ports[TlsMode.STARTTLS]}/"\n'
        'set spoolfile = "+INBOX"\nset mbox_type = mbox\nset confirmappend = no\n'
        "set confirmcreate = no\nset move = no\nset wait_key = no\nset timeout = 1\n"
    )
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{out}<enter><quit>"
    command = f"{mutt} -n -F {rc} -e 'push \"{keys}\"'"
    # mutt's batch mode still wants a terminal: script(1) provides one.
    result = subprocess.run(
        ["script", "-qfec", command, "/dev/null"], capture_output=True, timeout=60,
        env={**os.environ, "TERM": "vt100", "HOME": str(tmp_path)}, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    saved = out.read_bytes()
    assert saved.count(b"\nFrom ") + saved.startswith(b"From ") == 5
    for i in range(5):
        assert f"body number {i}".encode() in saved
    # Copying is not reading: mutt fetched with BODY.PEEK, so nothing became \Seen.
    assert not any(SEEN in flags for flags in _inbox(env).values())


def _mbsync(tmp_path: Path, env: ImapEnv) -> None:
    mbsync = _require("mbsync")
    rc = tmp_path / "mbsyncrc"
    local = tmp_path / "maildir"
    local.mkdir(exist_ok=True)
    rc.write_text(
        f"IMAPAccount hato\nHost localhost\nPort {env.ports[TlsMode.STARTTLS]}\n"
        f"User {ALICE}\nPass \"{PASSWORD}\"\nSSLType STARTTLS\nCertificateFile {env.cert_file}\n"
        "\nIMAPStore remote\nAccount hato\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel sync\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\n"
        "SyncState *\n"
    )
    result = subprocess.run([mbsync, "-c", str(rc), "sync"], capture_output=True, timeout=120,
                            env={**os.environ, "HOME": str(tmp_path)}, check=False)
    assert result.returncode == 0, result.stderr.decode()[-3000:]


def _local_messages(tmp_path: Path) -> dict[str, Path]:
    """mbsync's Maildir INBOX files by their server UID (the ``,U=<uid>`` name field)."""
    found = {}
    for sub in ("cur", "new"):
        for path in (tmp_path / "maildir" / "INBOX" / sub).iterdir():
            uid = path.name.split(",U=")[1].split(":")[0].split(",")[0]
            found[uid] = path
    return found


@pytest.mark.parametrize("count", [100, pytest.param(1000, marks=pytest.mark.slow)])
def test_mbsync_two_way_sync(imap_env: EnvFactory, tmp_path: Path, count: int) -> None:
    env = imap_env(demo=False)
    uids = [env.deliver(env.message(f"sync {i}", f"text {i}\r\n")) for i in range(count)]
    _mbsync(tmp_path, env)
    local = _local_messages(tmp_path)
    assert sorted(int(u) for u in local) == uids
    # Changes on the near (local) side: 10 read, 5 deleted, 3 new.
    for uid in uids[:10]:
        path = local[str(uid)]
        flags = path.name.rsplit(":2,", 1)[1]
        target = path.parent.parent / "cur" / (path.name.rsplit(":2,", 1)[0] + ":2," +
                                               "".join(sorted(set(flags + "S"))))
        path.rename(target)
    for uid in uids[10:15]:
        local[str(uid)].unlink()
    for i in range(3):
        (tmp_path / "maildir" / "INBOX" / "new" / f"17000000{i}.local{i}.host").write_bytes(
            env.message(f"local {i}", f"written locally {i}\r\n").replace(b"\r\n", b"\n"))
    # Changes on the far (server) side: 10 flagged, 5 expunged, 5 delivered.
    _server_flags(env, uids[20:30], FLAGGED)
    _server_flags(env, uids[30:35], DELETED)
    new_uids = [env.deliver(env.message(f"late {i}")) for i in range(5)]
    _mbsync(tmp_path, env)
    server = _inbox(env)
    expected = count - 5 - 5 + 5 + 3
    assert len(server) == expected
    assert all(SEEN in server[u] for u in uids[:10])
    assert not set(uids[10:15]) & set(server) and not set(uids[30:35]) & set(server)
    assert set(new_uids) <= set(server)
    local = _local_messages(tmp_path)
    assert len(local) == expected
    for uid in uids[20:30]:
        assert "F" in local[str(uid)].name.rsplit(":2,", 1)[1]
    # The UIDs mbsync recorded stay valid: a third run changes nothing.
    before = sorted(p.name for p in local.values())
    _mbsync(tmp_path, env)
    assert sorted(p.name for p in _local_messages(tmp_path).values()) == before
    assert len(_inbox(env)) == expected


def test_offlineimap_downloads_every_folder(imap_env: EnvFactory, tmp_path: Path) -> None:
    offlineimap = _require("offlineimap")
    env = imap_env(demo=False)
    for i in range(7):
        env.deliver(env.message(f"oi {i}"))
    env.deliver(env.message("archived"), mailbox="Archive")
    rc = tmp_path / "offlineimaprc"
    rc.write_text(
        f"[general]\naccounts = hato\nmetadata = {tmp_path / 'meta'}\n"
        "[Account hato]\nlocalrepository = local\nremoterepository = remote\n"
        f"[Repository local]\ntype = Maildir\nlocalfolders = {tmp_path / 'mail'}\n"
        f"[Repository remote]\ntype = IMAP\nremotehost = localhost\n"
        f"remoteport = {env.ports[TlsMode.STARTTLS]}\nremoteuser = {ALICE}\n"
        f"remotepass = {PASSWORD}\nssl = no\nstarttls = yes\nsslcacertfile = {env.cert_file}\n"
    )
    # STARTTLS on the plaintext port (RFC 9051 §6.2.1). imaplib2 used to hang now and then
    # right after it: no TLS 1.3 session tickets after STARTTLS since (test_imap_starttls_stress).
    result = subprocess.run(
        [offlineimap, "-o", "-u", "quiet", "-c", str(rc)], capture_output=True, timeout=120,
        env={**os.environ, "HOME": str(tmp_path)}, check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()[-3000:]
    inbox = list((tmp_path / "mail" / "INBOX").glob("*/*"))
    archive = list((tmp_path / "mail" / "Archive").glob("*/*"))
    assert len(inbox) == 7 and len(archive) == 1
    assert b"Subject: archived" in archive[0].read_bytes()
