"""Debian's Dovecot as the real peer of the Maildir export and import.

Hato -> Dovecot: a Maildir written by ``export_maildir`` is read by Dovecot's own imap process
(same folders, subscriptions, UIDs, bytes, sizes, flags, keywords, internal dates).
Dovecot -> Hato: a Maildir that Dovecot wrote (IMAP CREATE/APPEND/SUBSCRIBE; Dovecot saves
files with LF line ends) is imported by ``import_maildir``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dovecot_peer as dovecot
from mail_setup import Snapshot, WithStore, populate, snapshot
from mbox_corpus import Sample

from hato.codec.imap import mutf7
from hato.ops import transfer
from hato.store.api import MailStore
from hato.store.model import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, Account, Mailbox


def imap_date(stamp: float) -> str:
    return time.strftime("%d-%b-%Y %H:%M:%S +0000", time.gmtime(stamp))


def test_dovecot_version_is_the_one_documented() -> None:
    version = subprocess.run(["dovecot", "--version"], capture_output=True, check=True, text=True)
    assert version.stdout.startswith("2.3."), version.stdout


def test_dovecot_reads_a_hato_maildir(
    with_store: WithStore, tmp_path: Path, corpus: list[Sample]
) -> None:
    exported = tmp_path / "Maildir"

    async def scenario(
        store: MailStore, account: Account
    ) -> tuple[list[Mailbox], Snapshot, dict[str, list[int]]]:
        await populate(store, account, corpus[:130])
        removed = 0
        for mailbox in await store.list_mailboxes(account.id):
            # Expunge the first message: UIDs no longer run 1..n, so they must be carried.
            messages = await store.list_messages(mailbox.id)
            if messages:
                removed += len(await store.expunge(mailbox.id, [messages[0].uid]))
        assert await transfer.export_maildir(store, account, exported) == 130 - removed
        mailboxes = await store.list_mailboxes(account.id)
        uids = {m.name: [x.uid for x in await store.list_messages(m.id)] for m in mailboxes}
        return mailboxes, await snapshot(store, account), uids

    mailboxes, state, uids = with_store(scenario)
    conf = dovecot.write_config(tmp_path / "dovecot", exported)
    listed = dovecot.run_imap(conf, [b'a LIST "" "*"\r\n', b'b LSUB "" "*"\r\n'])
    names = {mutf7.encode(m.name): m for m in mailboxes}
    assert set(dovecot.list_mailboxes(listed)) == set(names)
    assert set(dovecot.list_mailboxes(listed, "LSUB")) == {
        mutf7.encode(m.name) for m in mailboxes if m.subscribed
    }
    assert "x.y" in names and "&ZeVnLIqe-" in names and "Tom &- Jerry" in names
    checked = 0
    for encoded, mailbox in names.items():
        uidvalidity, fetched = dovecot.select_and_fetch(conf, encoded)
        assert uidvalidity == mailbox.uidvalidity
        _, messages = state[mailbox.name]
        assert [(f.body, f.flags, f.internal_date) for f in fetched] == [
            (data, flags, imap_date(date)) for data, flags, date in messages
        ], mailbox.name
        assert [f.size for f in fetched] == [len(data) for data, _, _ in messages]
        assert [f.uid for f in fetched] == uids[mailbox.name]  # through dovecot-uidlist
        assert not fetched or fetched[0].uid > 1
        checked += len(fetched)
    assert checked == sum(len(m) for _, m in state.values()) > 100


def test_hato_imports_a_dovecot_maildir(
    with_store: WithStore, tmp_path: Path, corpus: list[Sample]
) -> None:
    written = tmp_path / "Maildir"
    conf = dovecot.write_config(tmp_path / "dovecot", written)
    folders = ["INBOX", "a/b", "日本語", "x.y", "Tom & Jerry/Spike"]
    flag_sets = [
        frozenset({SEEN, "$Forwarded"}),
        frozenset(),
        frozenset({ANSWERED, FLAGGED, "Work", "$label1"}),
        frozenset({DRAFT, DELETED, SEEN}),
    ]
    texts = [s for i, s in enumerate(corpus[:80]) if i % 8 != 4]  # IMAP literals: no NUL
    expected: dict[str, list[tuple[bytes, frozenset[str], float]]] = {f: [] for f in folders}
    commands = [
        b"c%d CREATE %s\r\n" % (i, dovecot.quote(mutf7.encode(f)))
        for i, f in enumerate(folders[1:])
    ]
    commands.append(b"s1 SUBSCRIBE %s\r\n" % dovecot.quote(mutf7.encode("a/b")))
    commands.append(b"s2 SUBSCRIBE %s\r\n" % dovecot.quote(mutf7.encode("日本語")))
    for i, sample in enumerate(texts):
        folder = folders[i % len(folders)]
        flags = flag_sets[i % len(flag_sets)]
        commands.append(
            b'p%d APPEND %s (%s) "%s" {%d+}\r\n%s\r\n'
            % (
                i,
                dovecot.quote(mutf7.encode(folder)),
                " ".join(sorted(flags)).encode(),
                imap_date(sample.date).encode(),
                len(sample.stored),
                sample.stored,
            )
        )
        expected[folder].append((sample.stored, flags, float(sample.date)))
    dovecot.run_imap(conf, commands)
    # Dovecot saved the messages with LF line ends (its default): Hato must restore CRLF.
    some_file = next((written / "cur").iterdir(), None) or next((written / "new").iterdir())
    assert b"\r\n" not in some_file.read_bytes()

    async def scenario(store: MailStore, account: Account) -> Snapshot:
        assert await transfer.import_maildir(store, account, written) == len(texts)
        return await snapshot(store, account)

    state = with_store(scenario)
    for folder in folders:
        assert state[folder][1] == expected[folder], folder
    assert state["a/b"][0] and state["日本語"][0]
    assert not state["x.y"][0] and not state["Tom & Jerry/Spike"][0]
