"""QRESYNC (RFC 7162 §3.2) and the per-mailbox HIGHESTMODSEQ (§3.1.2.1), over raw sockets;
every server byte goes through the strict response-grammar checker."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from imap_ext_client import RawClient, untagged
from imap_harness import EnvFactory, ImapEnv

from hato.servers.base import TlsMode
from hato.store.model import DELETED, FLAGGED, FlagOp


@pytest.fixture
def env(imap_env: EnvFactory) -> ImapEnv:
    return imap_env()


@pytest.fixture
def clients(env: ImapEnv) -> Iterator[list[RawClient]]:
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        client.close()
        client.check()


def _client(env: ImapEnv, clients: list[RawClient]) -> RawClient:
    client = RawClient(env.ports[TlsMode.NONE])
    clients.append(client)
    return client


def _mailbox_id(env: ImapEnv, name: str = "INBOX") -> int:
    async def work() -> int:
        mailbox = await env.store.get_mailbox(env.alice.id, name)
        assert mailbox is not None
        return mailbox.id

    return env.call(work())


def _flags(env: ImapEnv, uids: list[int], flag: str, op: FlagOp = FlagOp.ADD,
           mailbox: str = "INBOX") -> None:
    env.call(env.store.update_flags(_mailbox_id(env, mailbox), uids, frozenset({flag}), op=op))


def _expunge(env: ImapEnv, uids: list[int]) -> None:
    env.call(env.store.expunge(_mailbox_id(env), uids))


def _highest(lines: list[bytes]) -> int:
    for line in lines:
        match = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", line)
        if match:
            return int(match.group(1))
    raise AssertionError(f"no HIGHESTMODSEQ in {lines!r}")


def _fetched(lines: list[bytes]) -> dict[int, tuple[bytes, int]]:
    """UID -> (FLAGS list, MODSEQ) of the FETCH responses (\\Recent left out: it is this
    session's view, RFC 3501 §2.3.2, not the message's state)."""
    out = {}
    for line in untagged(lines, b"FETCH"):
        uid = re.search(rb"UID (\d+)", line)
        flags = re.search(rb"FLAGS \(([^)]*)\)", line)
        modseq = re.search(rb"MODSEQ \((\d+)\)", line)
        assert uid and flags and modseq, line
        kept = b" ".join(f for f in flags.group(1).split() if f != b"\\Recent")
        out[int(uid.group(1))] = (kept, int(modseq.group(1)))
    return out


def _vanished(lines: list[bytes], *, earlier: bool) -> list[bytes]:
    prefix = b"* VANISHED (EARLIER) " if earlier else b"* VANISHED "
    return [line[len(prefix):].rstrip(b"\r\n") for line in lines
            if line.startswith(prefix) and (earlier or b"(EARLIER)" not in line)]


def test_qresync_select_resynchronises_a_disconnected_client(
    env: ImapEnv, clients: list[RawClient]
) -> None:
    uids = [env.deliver(env.message(f"q{i}")) for i in range(5)]
    first = _client(env, clients)
    assert b"QRESYNC" in b"".join(first.ok(b"CAPABILITY"))
    assert first.ok(b"ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC\r\n"
    selected = first.ok(b"SELECT INBOX")
    uidvalidity = env.uidvalidity()
    cached_highest = _highest(selected)
    cache = {uid: flags for uid, (flags, _) in
             _fetched(first.ok(b"UID FETCH 1:* (FLAGS MODSEQ)")).items()}
    assert sorted(cache) == uids
    first.close()
    # While the client is away: a flag change, an expunge, a new message, a message that
    # comes and goes, and a change in another mailbox (which must not touch INBOX's MODSEQ).
    _flags(env, [uids[1]], FLAGGED)
    _flags(env, [uids[2]], DELETED)
    _expunge(env, [uids[2]])
    new = env.deliver(env.message("q5"))
    gone = env.deliver(env.message("q6"))
    _expunge(env, [gone])
    env.deliver(env.message("elsewhere"), mailbox="Archive")
    second = _client(env, clients)
    second.ok(b"ENABLE QRESYNC")
    lines = second.ok(b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, cached_highest))
    # RFC 7162 §3.2.5.1: VANISHED (EARLIER) for the expunged known UIDs (no list given:
    # 1:UIDNEXT-1), before the FETCH (UID FLAGS MODSEQ) of each message changed since.
    assert _vanished(lines, earlier=True) == [b"%d,%d" % (uids[2], gone)]
    vanished_at = next(i for i, line in enumerate(lines) if line.startswith(b"* VANISHED"))
    fetch_at = [i for i, line in enumerate(lines) if b" FETCH " in line]
    assert fetch_at and min(fetch_at) > vanished_at
    changes = _fetched(lines)
    assert sorted(changes) == [uids[1], new]
    assert changes[uids[1]][0] == b"\\Flagged"
    for uid in (uids[2], gone):
        cache.pop(uid, None)
    for uid, (flags, _) in changes.items():
        cache[uid] = flags
    # The cache now equals the server's state, and the new HIGHESTMODSEQ covers it all.
    truth = _fetched(second.ok(b"UID FETCH 1:* (FLAGS MODSEQ)"))
    assert cache == {uid: flags for uid, (flags, _) in truth.items()}
    async def mailbox_highest() -> int:
        mailbox = await env.store.get_mailbox(env.alice.id, "INBOX")
        assert mailbox is not None
        return mailbox.highest_modseq

    assert _highest(lines) == env.call(mailbox_highest())
    assert _highest(lines) >= max(m for _, m in truth.values())


def test_qresync_known_uids_uidvalidity_mismatch_and_bad_without_enable(
    env: ImapEnv, clients: list[RawClient]
) -> None:
    uids = [env.deliver(env.message(f"k{i}")) for i in range(4)]
    client = _client(env, clients)
    # RFC 7162 §3.2.5: QRESYNC parameter and VANISHED modifier need ENABLE QRESYNC.
    bad = client.command(b"SELECT INBOX (QRESYNC (1 1))")
    assert bad[-1].split(b" ")[1] == b"BAD"
    client.ok(b"SELECT INBOX")
    bad = client.command(b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert bad[-1].split(b" ")[1] == b"BAD"
    client.ok(b"ENABLE QRESYNC")
    highest = _highest(client.ok(b"SELECT INBOX"))
    _flags(env, [uids[0], uids[3]], FLAGGED)
    _flags(env, [uids[1]], DELETED)
    _expunge(env, [uids[1]])
    uidvalidity = env.uidvalidity()
    # Only the known UIDs 1:2 are reported (RFC 7162 §3.2.5.1).
    lines = client.ok(b"SELECT INBOX (QRESYNC (%d %d %d:%d))"
                      % (uidvalidity, highest, uids[0], uids[1]))
    assert lines[0] == b"* OK [CLOSED] previous mailbox closed\r\n"
    assert _vanished(lines, earlier=True) == [b"%d" % uids[1]]
    assert sorted(_fetched(lines)) == [uids[0]]
    # With message sequence match data (checked, then not needed: no expunge is forgotten).
    lines = client.ok(b"SELECT INBOX (QRESYNC (%d %d 1:* (1:2 %d,%d)))"
                      % (uidvalidity, highest, uids[0], uids[2]))
    assert _vanished(lines, earlier=True) == [b"%d" % uids[1]]
    # RFC 7162 §3.2.5: another UIDVALIDITY: the remaining parameters are ignored.
    lines = client.ok(b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity + 1, highest))
    assert not _vanished(lines, earlier=True) and not _fetched(lines)


def test_uid_fetch_vanished_modifier(env: ImapEnv, clients: list[RawClient]) -> None:
    uids = [env.deliver(env.message(f"v{i}")) for i in range(5)]
    client = _client(env, clients)
    client.ok(b"ENABLE QRESYNC")
    since = _highest(client.ok(b"EXAMINE INBOX"))
    other = _client(env, clients)
    other.ok(b"SELECT INBOX")
    other.ok(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uids[3])
    other.ok(b"UID EXPUNGE %d" % uids[3])
    other.ok(b"UID STORE %d +FLAGS.SILENT (\\Seen)" % uids[1])
    # RFC 7162 §3.2.6: BAD for FETCH (not UID FETCH) and without CHANGEDSINCE.
    assert client.command(b"FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")[-1].split(b" ")[1] \
        == b"BAD"
    assert client.command(b"UID FETCH 1:* (FLAGS) (VANISHED)")[-1].split(b" ")[1] == b"BAD"
    lines = client.ok(b"UID FETCH %d:%d (FLAGS) (CHANGEDSINCE %d VANISHED)"
                      % (uids[0], uids[4], since))
    # The expunge happened while this session had the message in its view: it is announced
    # by a VANISHED without EARLIER once a command allows it (Hato holds expunges back during
    # every FETCH, RFC 7162 §3.2.10.2), never as EARLIER for a message the client still has.
    assert not _vanished(lines, earlier=False) and not _vanished(lines, earlier=True)
    assert sorted(_fetched(lines)) == [uids[1]]
    assert _vanished(client.ok(b"NOOP"), earlier=False) == [b"%d" % uids[3]]
    # Now the view is current: a second UID FETCH (VANISHED) names it as EARLIER, first.
    lines = client.ok(b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % since)
    assert lines[0] == b"* VANISHED (EARLIER) %d\r\n" % uids[3]
    assert sorted(_fetched(lines)) == [uids[1]]
    # UIDs outside the set are not reported.
    lines = client.ok(b"UID FETCH %d (FLAGS) (CHANGEDSINCE %d VANISHED)" % (uids[0], since))
    assert not _vanished(lines, earlier=True)


def test_vanished_replaces_expunge_and_highestmodseq_in_tagged_ok(
    env: ImapEnv, clients: list[RawClient]
) -> None:
    uids = [env.deliver(env.message(f"e{i}")) for i in range(4)]
    client = _client(env, clients)
    client.ok(b"ENABLE QRESYNC")
    before = _highest(client.ok(b"SELECT INBOX"))
    client.ok(b"STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    lines = client.ok(b"EXPUNGE")
    # RFC 7162 §3.2.7: VANISHED instead of EXPUNGE, and HIGHESTMODSEQ in the tagged OK.
    assert _vanished(lines, earlier=False) == [b"%d,%d" % (uids[0], uids[2])]
    assert not untagged(lines, b"EXPUNGE")
    after = _highest(lines[-1:])
    assert after > before
    status = client.ok(b"STATUS INBOX (HIGHESTMODSEQ)")[0]
    assert status == b"* STATUS INBOX (HIGHESTMODSEQ %d)\r\n" % after
    # Another session expunges: VANISHED at the next command that allows it, not during
    # FETCH (RFC 7162 §3.2.10.2), where HIGHESTMODSEQ is held below the pending expunge
    # (§3.2 and the example of §6).
    other = _client(env, clients)
    other.ok(b"SELECT INBOX")
    other.ok(b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uids[1])
    other.ok(b"UID EXPUNGE %d" % uids[1])
    other.ok(b"UID STORE %d +FLAGS.SILENT (\\Flagged)" % uids[3])
    lines = client.ok(b"FETCH 1:* (FLAGS MODSEQ)")
    assert not _vanished(lines, earlier=False)
    flagged = re.search(rb"FLAGS \(\\Flagged[^)]*\) MODSEQ \((\d+)\)", b"".join(lines))
    assert flagged is not None
    held = [line for line in lines if line.startswith(b"* OK [HIGHESTMODSEQ")]
    assert len(held) == 1 and _highest(held) < int(flagged.group(1))
    lines = client.ok(b"NOOP")
    assert _vanished(lines, earlier=False) == [b"%d" % uids[1]]
    # MOVE reports the moved messages as VANISHED too (RFC 6851 §4.3 with QRESYNC).
    lines = client.ok(b"UID MOVE %d Archive" % uids[3])
    assert _vanished(lines, earlier=False) == [b"%d" % uids[3]]
    lines = client.ok(b"SELECT INBOX")
    assert lines[0] == b"* OK [CLOSED] previous mailbox closed\r\n"
    assert b"* 0 EXISTS\r\n" in lines


def test_highestmodseq_is_per_mailbox(env: ImapEnv, clients: list[RawClient]) -> None:
    env.deliver(env.message("one"))
    client = _client(env, clients)
    client.ok(b"ENABLE CONDSTORE")
    inbox = _highest(client.ok(b"EXAMINE INBOX"))
    # Changes in another mailbox leave INBOX's HIGHESTMODSEQ alone (RFC 7162 §3.1.2.1: the
    # highest mod-sequence of the messages in *this* mailbox).
    archived = env.deliver(env.message("two"), mailbox="Archive")
    _flags(env, [archived], FLAGGED, mailbox="Archive")
    assert _highest(client.ok(b"EXAMINE INBOX")) == inbox
    assert client.ok(b"STATUS INBOX (HIGHESTMODSEQ)")[0] == \
        b"* STATUS INBOX (HIGHESTMODSEQ %d)\r\n" % inbox
    archive = _highest(client.ok(b"EXAMINE Archive"))
    assert archive > inbox
    fetched = _fetched(client.ok(b"UID FETCH 1:* (FLAGS MODSEQ)"))
    assert max(m for _, m in fetched.values()) == archive
