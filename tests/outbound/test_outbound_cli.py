"""``hato queue ...``, ``hato dns records``, ``hato dkim rotate`` and the DKIM keys that
``hato domain add`` creates."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from app_cli_harness import CONFIG, Hato

from hato.store.api import MailStore
from hato.store.queue import NewQueueEntry, QueueRecipient


def make(tmp_path: Path) -> Hato:
    path = tmp_path / "hato.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return Hato(path)


def test_domain_add_creates_dkim_keys_and_dns_records_lists_everything(tmp_path: Path) -> None:
    hato = make(tmp_path)
    out = hato.ok("domain", "add", "example.test")
    assert "DKIM key hato" in out and "(rsa)" in out and "(ed25519)" in out
    records = hato.ok("dns", "records", "example.test", "--ip", "192.0.2.7")
    assert "example.test. 3600 IN MX 10 mail.example.test." in records
    assert '"v=spf1 mx -all"' in records
    assert records.count("._domainkey.example.test. 3600 IN TXT") == 2
    assert '"v=DKIM1; k=ed25519; p=' in records
    assert "_dmarc.example.test." in records and "v=DMARC1; p=quarantine" in records
    assert '_mta-sts.example.test. 3600 IN TXT "v=STSv1; id=' in records
    assert "_smtp._tls.example.test. 3600 IN TXT" in records and "v=TLSRPTv1;" in records
    assert "_submissions._tcp.example.test. 3600 IN SRV 0 1 465 mail.example.test." in records
    assert "autoconfig.example.test." in records and "PTR of 192.0.2.7" in records
    # RFC 1035 §3.3: no character-string over 255 octets (the RSA key is split)
    for line in records.splitlines():
        for part in line.split('"')[1::2]:
            assert len(part) <= 255
    rotated = hato.ok("dkim", "rotate", "example.test")
    assert rotated.count("._domainkey.example.test. 3600 IN TXT") == 2
    first = {line.split(".")[0] for line in records.splitlines() if "_domainkey" in line}
    second = {line.split(".")[0] for line in rotated.splitlines()}
    assert first.isdisjoint(second)


def queue_one(hato: Hato) -> int:
    async def work(store: MailStore) -> int:
        writer = store.blobs.writer()
        writer.write(b"Subject: x\r\n\r\nbody\r\n")
        blob = await asyncio.to_thread(writer.commit)
        entry = NewQueueEntry(
            blob=blob,
            sender="alice@example.test",
            recipients=(QueueRecipient("x@remote.test"),),
            expires=4e9,
        )
        (eid,) = await store.enqueue([entry])
        return eid

    return hato.with_store(work)


def test_queue_commands(tmp_path: Path) -> None:
    hato = make(tmp_path)
    hato.ok("domain", "add", "example.test")
    hato.ok("account", "add", "alice@example.test", "--password-stdin", stdin="long enough pw\n")
    eid = queue_one(hato)
    listing = hato.ok("queue", "list")
    assert re.search(rf"^{eid}\s+queued", listing, re.M) and "x@remote.test" in listing
    assert hato.ok("queue", "hold", str(eid)) == f"held {eid}\n"
    assert "state: held" in hato.ok("queue", "show", str(eid))
    assert "held" in hato.fails("queue", "retry", str(eid))  # retry is for deferred entries
    assert hato.ok("queue", "release", str(eid)) == f"released {eid}\n"
    assert hato.ok("queue", "bounce", str(eid)) == f"bounced {eid}\n"
    shown = hato.ok("queue", "show", str(eid))
    assert "state: bounced" in shown and "rcpt: x@remote.test failed" in shown
    assert hato.ok("queue", "list") == ""  # final entries only with --all
    assert re.search(rf"^{eid}\s+bounced", hato.ok("queue", "list", "--all"), re.M)

    async def inbox(store: MailStore) -> list[bytes]:
        account = await store.get_account("alice@example.test")
        assert account is not None
        box = await store.get_mailbox(account.id, "INBOX")
        assert box is not None
        return [store.blobs.read(m.blob_id) for m in await store.list_messages(box.id)]

    (dsn,) = hato.with_store(inbox)
    assert b"Returned to sender by the administrator" in dsn
    second = queue_one(hato)
    assert hato.ok("queue", "delete", str(second)) == f"deleted {second}\n"
    assert "no queue entry" in hato.fails("queue", "show", str(second))
