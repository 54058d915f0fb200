"""A real peer: Hato's queue runner delivers over STARTTLS to a private Debian Postfix found
through MX records on the loopback DNS server; Postfix stores the message in a Maildir."""

from __future__ import annotations

import asyncio
import pwd
import shutil
import time
from pathlib import Path

from outbound_kit import World, certificate, open_world
from postfixkit import PostfixInstance

from dnsserver import DnsServer
from hato.store.queue import QueueRecipient, QueueState


def start_postfix(tmp_path: Path) -> tuple[PostfixInstance, Path]:
    base = tmp_path / "postfix"
    cert, key = certificate(tmp_path, "mx.pf.test")
    postfix_user = pwd.getpwnam("postfix")
    settings = {
        "myhostname": "mx.pf.test",
        "virtual_mailbox_domains": "pf.test",
        "virtual_mailbox_base": str(base / "vmail"),
        "virtual_mailbox_maps": "static:pf.test/",
        "virtual_uid_maps": f"static:{postfix_user.pw_uid}",
        "virtual_gid_maps": f"static:{postfix_user.pw_gid}",
        "smtpd_tls_cert_file": str(base / "cert.pem"),
        "smtpd_tls_key_file": str(base / "key.pem"),
        "smtpd_tls_security_level": "may",
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_loglevel": "1",
    }
    postfix = PostfixInstance(base, settings=settings, smtpd_processes=4)
    shutil.copy(cert, base / "cert.pem")
    shutil.copy(key, base / "key.pem")
    # tlsmgr supplies smtpd's TLS session cache and entropy: without it TLS is disabled
    master = postfix.config / "master.cf"
    master.write_text(
        master.read_text() + "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
    )
    vmail = base / "vmail"
    for directory in (
        vmail,
        vmail / "pf.test",
        *(vmail / "pf.test" / d for d in ("tmp", "new", "cur")),
    ):
        directory.mkdir(mode=0o700)
        shutil.chown(directory, user=postfix_user.pw_uid, group=postfix_user.pw_gid)
    postfix.start()
    return postfix, vmail / "pf.test"


def maildir_messages(maildir: Path) -> list[bytes]:
    new = maildir / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def test_starttls_delivery_to_postfix(tmp_path: Path) -> None:
    postfix, maildir = start_postfix(tmp_path)
    try:

        async def main() -> None:
            zone = {"pf.test": {"MX": [(10, "mx.pf.test")]}, "mx.pf.test": {"A": ["127.0.0.1"]}}
            with DnsServer(zone) as dns:
                world: World = await open_world(tmp_path, dns, port=postfix.port, mta_sts=False)
                try:
                    rcpt = QueueRecipient("user@pf.test", notify=frozenset({"FAILURE"}))
                    await world.queue([rcpt], envid="pf-1")
                    await world.make_runner().run_once()
                    (entry,) = await world.store.list_queue()
                    assert entry.state is QueueState.DELIVERED, entry
                    assert entry.recipients[0].reply is not None
                    reply = entry.recipients[0].reply
                    assert reply.startswith("250 2.0.0 Ok: ") and "queued as" in reply
                    assert "bytes" in reply  # Postfix's BDAT reply: CHUNKING was used
                finally:
                    await world.store.close()

        asyncio.run(main())
        deadline = time.monotonic() + 20
        while not maildir_messages(maildir) and time.monotonic() < deadline:
            time.sleep(0.2)
        (stored,) = maildir_messages(maildir)
        assert b"Subject: hello" in stored and b"\n.leading dot line\n" in stored
        # Postfix's Received field records the TLS session and our EHLO name
        assert b"from out.example.test" in stored
        assert b"(using TLSv1.3" in stored or b"(using TLSv1.2" in stored
        # the local delivery agent logs after the file is in place: wait for the line too
        while "status=sent" not in postfix.read_log() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = postfix.read_log()
        assert "TLS connection established from" in log
        assert "status=sent (delivered to maildir)" in log
    finally:
        postfix.stop()


def test_several_messages_on_one_connection_to_postfix(tmp_path: Path) -> None:
    """Real Postfix smtpd (PIPELINING, CHUNKING): each message's BDAT LAST travels with the
    next transaction's RSET, MAIL and RCPT (RFC 2920 §3.1, RFC 3030 §2); all arrive."""
    postfix, maildir = start_postfix(tmp_path)
    try:

        async def main() -> None:
            zone = {"pf.test": {"MX": [(10, "mx.pf.test")]}, "mx.pf.test": {"A": ["127.0.0.1"]}}
            with DnsServer(zone) as dns:
                world: World = await open_world(tmp_path, dns, port=postfix.port, mta_sts=False)
                try:
                    for n in range(4):
                        await world.queue([f"user{n}@pf.test"])
                    await world.make_runner(per_destination=1).run_once()
                    entries = await world.store.list_queue()
                    assert [e.state for e in entries] == [QueueState.DELIVERED] * 4, entries
                    for entry in entries:
                        reply = entry.recipients[0].reply
                        assert reply is not None and "queued as" in reply
                finally:
                    await world.store.close()

        asyncio.run(main())
        deadline = time.monotonic() + 20
        while len(maildir_messages(maildir)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(maildir_messages(maildir)) == 4
        log = postfix.read_log()
        # one session carried all four; RSET only in the groups sent ahead after BDAT LAST
        assert "mail=4 rcpt=4 bdat=4 rset=3 quit=1" in log
    finally:
        postfix.stop()
