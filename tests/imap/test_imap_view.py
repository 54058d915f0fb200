"""The selected-mailbox view and the FETCH/SEARCH shortcuts behind IMAP speed and memory.

* ``Selected`` keeps parallel arrays (UID, MODSEQ, flag-set id), not an object per message:
  checked against a plain dict model under random changes (Hypothesis), and by the memory an
  opened view of 8,192 messages holds (RFC 9051 §2.3.1.2 sequence numbers stay positions).
* ``snapshot_mailbox`` (SELECT's one read) agrees with ``list_messages``.
* ENVELOPE and header fetches read only the header block (``header_block``): the same header
  fields and ENVELOPE as a parse of the whole message (Hypothesis), and what a big message
  costs to read; rendered ENVELOPEs come from the shared content cache the second time.
"""

from __future__ import annotations

import gc
import io
import tracemalloc
from array import array
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imap_harness import EnvFactory

from hato.codec.imap.bodystructure import envelope_of
from hato.codec.mime import parse_message
from hato.servers.imap import fetch
from hato.servers.imap import selected as selected_module
from hato.servers.imap.cache import ContentCache
from hato.servers.imap.selected import FlagSets, Selected, flags_fetch, open_selected
from hato.store.model import FlagOp, Message

FLAG_POOL = ("\\Seen", "\\Flagged", "\\Deleted", "$Important", "Junk")


def _message(uid: int, flags: frozenset[str], modseq: int) -> Message:
    return Message(mailbox_id=1, uid=uid, blob_id="b", size=1, internal_date=0.0,
                   flags=flags, modseq=modseq, saved_date=0.0, email_id=uid, thread_id=0)


def _view(model: dict[int, tuple[frozenset[str], int]]) -> Selected:
    sets = FlagSets()
    uids = sorted(model)
    return Selected(
        mailbox_id=1, name="INBOX", uidvalidity=7, read_only=False,
        uids=array("I", uids), modseq=1,
        modseqs=array("Q", (model[u][1] for u in uids)),
        flag_ids=array("I", (sets.id_of(model[u][0]) for u in uids)),
        flag_sets=sets,
    )


flag_sets = st.frozensets(st.sampled_from(FLAG_POOL))
operations = st.lists(st.tuples(st.sampled_from(("record", "remove", "add")),
                                st.integers(1, 40), flag_sets, st.integers(1, 10**12)),
                      max_size=60)


@given(st.dictionaries(st.integers(1, 30), st.tuples(flag_sets, st.integers(1, 10**12))),
       operations)
@settings(max_examples=200, deadline=None)
def test_view_matches_a_dict_model(
    initial: dict[int, tuple[frozenset[str], int]],
    ops: list[tuple[str, int, frozenset[str], int]],
) -> None:
    model = dict(initial)
    view = _view(model)
    for op, uid, flags, modseq in ops:
        if op == "record":
            assert view.record(uid, flags, modseq) == (uid in model)
            if uid in model:
                model[uid] = (flags, modseq)
        elif op == "remove" and uid in model:
            assert view.remove(uid) == sorted(model).index(uid) + 1  # its sequence number
            del model[uid]
        elif op == "add":
            uid = max(model, default=0) + uid  # new UIDs only grow (RFC 9051 §2.3.1.1)
            view.add(_message(uid, flags, modseq))
            model[uid] = (flags, modseq)
        uids = sorted(model)
        assert view.uids.tolist() == uids
        assert view.exists == len(uids)
        for seq, known in enumerate(uids, 1):
            assert view.seq_of(known) == seq
            assert view.flags(known) == model[known][0]
            assert view.modseq_of(known) == model[known][1]
        assert view.index(0) == -1 and 0 not in view
        keywords = {f for f, _ in model.values() for f in f if not f.startswith("\\")}
        assert view.keywords() == sorted(keywords)
        unseen = next((s for s, u in enumerate(uids, 1) if "\\Seen" not in model[u][0]), None)
        assert view.first_unseen() == unseen


def test_flags_fetch_renders_the_view_with_recent_for_imap4rev1() -> None:
    view = _view({3: (frozenset({"\\Seen", "$Important"}), 9), 5: (frozenset(), 11)})
    view.recent = {5}
    assert flags_fetch(view, 3, condstore=True) == (
        b"* 1 FETCH (UID 3 FLAGS (\\Seen $Important) MODSEQ (9))\r\n")
    assert flags_fetch(view, 5, condstore=False) == b"* 2 FETCH (UID 5 FLAGS (\\Recent))\r\n"
    view.legacy = False  # RFC 9051: no \Recent after ENABLE IMAP4rev2
    assert flags_fetch(view, 5, condstore=False) == b"* 2 FETCH (UID 5 FLAGS ())\r\n"


def test_content_cache_is_bounded_and_least_recently_used() -> None:
    cache = ContentCache(max_bytes=3 * (100 + 256))
    for name in ("a", "b", "c"):
        cache.put(name, "ENVELOPE", b"x" * 100)
    assert cache.get_bytes("a", "ENVELOPE") is not None  # "a" is now the most recent
    cache.put("d", "ENVELOPE", b"y" * 100)
    assert cache.get("b", "ENVELOPE") is None  # the least recently used went
    assert len(cache) == 3 and cache.size <= cache.max_bytes
    cache.put("e", "header:from", ("alice",))
    assert cache.get_texts("e", "header:from") == ("alice",)
    assert cache.get_bytes("e", "header:from") is None
    cache.put("big", "ENVELOPE", b"z" * 4096)  # larger than the whole cache: not kept
    assert cache.get("big", "ENVELOPE") is None


# -- header blocks ------------------------------------------------------------------------------
_names = st.sampled_from(("From", "To", "Subject", "Date", "Content-Type", "X-Long", "cc"))
_values = st.sampled_from((
    "Alice <alice@example.org>", "=?UTF-8?B?w4ljb2xl?=", "text/plain; charset=utf-8",
    "multipart/mixed; boundary=zz", "Tue, 14 Nov 2023 22:13:20 +0000", "", "a,\r\n b",
    "x\n y", "caf\xe9",
))
_breaks = st.sampled_from(("\r\n", "\n"))


@st.composite
def _raw_messages(draw: st.DrawFn) -> bytes:
    brk = draw(_breaks)
    fields = draw(st.lists(st.tuples(_names, _values), max_size=8))
    head = "".join(f"{name}: {value}{brk}" for name, value in fields)
    body = draw(st.sampled_from(("", "hello\r\n", "--zz\r\n\r\npart\r\n--zz--\r\n",
                                 "\r\n\r\nmore", "a: b\r\n\r\n")))
    separator = draw(st.sampled_from((brk, "", "\r\n", "\n\r\n")))
    return (head + separator + body).encode("utf-8")


@given(_raw_messages())
@settings(max_examples=300, deadline=None)
def test_header_block_parses_to_the_same_header(data: bytes) -> None:
    whole = parse_message(data)
    head = parse_message(fetch.header_block(data))
    assert head.headers == whole.headers
    assert head.param("charset") == whole.param("charset")
    assert envelope_of(head, b"") == envelope_of(whole, data)


class _Blobs:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read_bytes = 0

    def open(self, blob_id: str) -> BinaryIO:
        outer = self

        class Counting(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                chunk = super().read(size)
                outer.read_bytes += len(chunk)
                return chunk

        return Counting(self.data)


@given(_raw_messages(), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_head_read_in_pieces_is_the_header_block(data: bytes, piece: int) -> None:
    blobs = _Blobs(data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetch, "_HEAD_READ", piece)
        head = fetch.read_blobs(blobs, ["m"], head=True)["m"]  # type: ignore[arg-type]
    assert head == fetch.header_block(data)


# -- against the store and the server ---------------------------------------------------------
def test_snapshot_agrees_with_list_messages_and_holds_no_objects(imap_env: EnvFactory) -> None:
    env = imap_env()
    env.deliver(env.message("first"))
    env.deliver(env.message("second"))

    async def work() -> tuple[Any, ...]:
        store = env.store
        inbox = await store.get_mailbox(env.alice.id, "INBOX")
        assert inbox is not None
        # Double the mailbox 12 times: 8,192 messages.
        for _ in range(12):
            uids = [m.uid for m in await store.list_messages(inbox.id)]
            await store.copy(inbox.id, uids, inbox.id)
        listed = await store.list_messages(inbox.id)
        await store.update_flags(inbox.id, [m.uid for m in listed[::3]],
                                 frozenset({"\\Seen", "$Work"}), op=FlagOp.ADD)
        listed = await store.list_messages(inbox.id)
        snapshot = await store.snapshot_mailbox(inbox.id)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            view = await open_selected(store, inbox, read_only=False, display_name="INBOX")
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        return listed, snapshot, view, held, await store.highest_modseq(env.alice.id)

    listed, snapshot, view, held, modseq = env.call(work())
    assert len(listed) == 8192
    assert snapshot.uids.tolist() == [m.uid for m in listed]
    assert snapshot.modseqs.tolist() == [m.modseq for m in listed]
    assert [snapshot.flag_sets[i] for i in snapshot.flag_ids] == [m.flags for m in listed]
    assert len(snapshot.flag_sets) == 2  # each distinct flag set once
    assert snapshot.account_modseq == modseq
    assert snapshot.mailbox.highest_modseq == max(m.modseq for m in listed)
    assert view.uids.tolist() == [m.uid for m in listed]
    # 16 bytes a message in the arrays; a Message object each would be ~500.
    assert held < 40 * 8192, held


def test_envelope_reads_the_header_only_and_is_cached(
    imap_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = imap_env()
    big = env.message("big one", "line of text\r\n" * 20_000)  # 280 KB of body
    env.deliver(big)
    read = {"bytes": 0}
    original = env.store.blobs.open

    def open_blob(blob_id: str) -> BinaryIO:
        handle = original(blob_id)
        real_read = handle.read

        def counted(size: int = -1) -> bytes:
            chunk = real_read(size)
            read["bytes"] += len(chunk)
            return chunk

        handle.read = counted  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(env.store.blobs, "open", open_blob)
    client = env.client()
    client.select("INBOX")
    typ, first = client.fetch("1", "(ENVELOPE)")
    assert typ == "OK"
    assert 0 < read["bytes"] < 64 * 1024  # the header block, not the 280 KB body
    read["bytes"] = 0
    other = env.client()
    other.select("INBOX")
    typ, again = other.fetch("1", "(ENVELOPE)")
    assert typ == "OK" and again == first
    assert read["bytes"] == 0  # from the shared content cache
    expected = envelope_of(parse_message(big), big)
    assert b"ENVELOPE " + expected in first[0]
    assert env.service.content_cache.hits >= 1


def _select_state(client: Any, mailbox: str = "INBOX") -> tuple[Any, ...]:
    typ, data = client.select(mailbox)
    assert typ == "OK", data
    responses = {name: client.untagged_responses.get(name) for name in
                 ("EXISTS", "UNSEEN", "HIGHESTMODSEQ", "UIDNEXT", "FLAGS")}
    typ, fetched = client.fetch("1:*", "(UID FLAGS MODSEQ)")
    assert typ == "OK", fetched
    return responses, fetched


def test_select_from_a_kept_view_equals_a_fresh_one(
    imap_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SELECT of a big mailbox copies the view kept from the last SELECT and applies the
    change log since (flags, expunges, new messages): the same answers as reading the mailbox
    afresh (RFC 9051 §6.3.2, RFC 7162 §3.1.2.1 HIGHESTMODSEQ)."""
    monkeypatch.setattr(selected_module, "KEEP_VIEW_ABOVE", 0)
    env = imap_env()
    for n in range(6):
        env.deliver(env.message(f"m{n}"))
    first = env.client()
    _select_state(first)  # keeps the view
    other = env.client()
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Seen $Work)")
    other.store("2", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.append("INBOX", "(\\Flagged)", None, env.message("new"))
    snapshots: list[int] = []
    original = env.store.snapshot_mailbox

    async def counting(mailbox_id: int) -> Any:
        snapshots.append(mailbox_id)
        return await original(mailbox_id)

    monkeypatch.setattr(env.store, "snapshot_mailbox", counting)
    kept = _select_state(env.client())
    assert snapshots == []  # the kept view, brought up to date from the change log
    env.service.content_cache.views = type(env.service.content_cache.views)()
    fresh = _select_state(env.client())
    assert len(snapshots) == 1
    assert kept == fresh
    assert kept[0]["EXISTS"] == [b"6"]


def test_flag_resync_from_columns_matches_the_message_path(
    imap_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``UID FETCH 1:* (FLAGS)`` over most of a mailbox is rendered from one column read: the
    same responses as message by message (RFC 9051 §7.5.2, \\Recent for IMAP4rev1, RFC 7162
    CHANGEDSINCE and MODSEQ, RFC 5530 EXPUNGEISSUED for a message expunged elsewhere)."""
    env = imap_env()
    for n in range(8):
        env.deliver(env.message(f"m{n}"))
    writer = env.client()
    writer.select("INBOX")
    writer.store("2,5", "+FLAGS", "(\\Seen $Work)")
    env.deliver(env.message("late"))  # \\Recent: no read-write session was told of it
    readers = [env.client(), env.client()]
    for reader in readers:
        reader.select("INBOX", readonly=True)  # EXAMINE does not claim \\Recent
    writer.store("3", "+FLAGS", "(\\Deleted)")
    writer.expunge()  # the readers are not told before their FETCH ends (RFC 9051 §7.5.1)
    commands = [("FETCH", "1:*", "(FLAGS)"), ("FETCH", "2:*", "(UID FLAGS MODSEQ)"),
                ("FETCH", "1:*", "(FLAGS) (CHANGEDSINCE 3)")]

    def answers(reader: Any) -> list[Any]:
        out = []
        for command in commands:
            typ, data = reader.uid(*command)
            out.append((typ, data, reader.untagged_responses.pop("OK", None)))
        return out

    monkeypatch.setattr(fetch, "COLUMN_FETCH_MIN", 10**9)
    by_message = answers(readers[0])
    monkeypatch.setattr(fetch, "COLUMN_FETCH_MIN", 1)
    by_column = answers(readers[1])
    assert by_column == by_message
    # Message 3 is still in the view (its expunge is not announced yet): UID 4 is number 4.
    assert b"4 (UID 4 FLAGS" in b" ".join(by_column[0][1])
    assert b"9 (UID 9 FLAGS (\\Recent))" in by_column[0][1]  # RFC 3501 §2.3.2
    assert readers[0].transcript.count(b"[EXPUNGEISSUED]") == 3
    assert readers[1].transcript.count(b"[EXPUNGEISSUED]") == 3
