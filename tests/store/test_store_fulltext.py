"""Contract: ``MailStore.search_text`` (IMAP SEARCH TEXT/BODY, RFC 9051 §6.4.4) answers exactly
what a scan with ``hato.store.fulltext`` would: case-insensitive substrings, header vs body,
Japanese in ISO-2022-JP / Shift_JIS / EUC-JP, short queries left to the caller, expunge and
copies."""

from __future__ import annotations

import base64
import random

import pytest
from storekit import account, inbox_id, put_blob

from hato.core.errors import NotFound
from hato.store.api import MailStore
from hato.store.fulltext import TextHits, TextScope, extract, matches
from hato.store.model import DeliveryTarget

TEXT, BODY = TextScope.TEXT, TextScope.BODY


def mail(subject: str, body: bytes, *, headers: str = "") -> bytes:
    return (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: {subject}\r\n{headers}\r\n"
    ).encode() + body


async def answer(store: MailStore, mailbox_id: int, query: str, scope: TextScope) -> set[int]:
    """What a server answers: the index hits, plus its own test of the unindexed messages."""
    hits = await store.search_text(mailbox_id, query, scope=scope)
    assert hits is not None, query
    found = set(hits.uids)
    if hits.unindexed:
        for m in await store.get_messages(mailbox_id, sorted(hits.unindexed)):
            if matches(extract(store.blobs.read(m.blob_id)), query, scope=scope):
                found.add(m.uid)
    return found


async def put(store: MailStore, mailbox_id: int, data: bytes) -> int:
    return (await store.append(mailbox_id, await put_blob(store, data))).uid


def test_substring_case_insensitive_header_and_body(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        one = await put(store, inbox, mail("Quarterly Report", b"The numbers are GOOD.\r\n"))
        two = await put(store, inbox, mail("Hello", b"Meet me at the Stra\xc3\x9fe.\r\n",
                                           headers="Content-Type: text/plain; charset=utf-8\r\n"))
        three = await put(store, inbox, mail("lunch", b"<p>sandwich</p>\r\n",
                                             headers="Content-Type: text/html\r\n"))
        # Substrings, in any case, of a word in the subject or the body (RFC 9051 §6.4.4).
        assert await answer(store, inbox, "terly rep", TEXT) == {one}
        assert await answer(store, inbox, "terly rep", BODY) == set()  # header only
        assert await answer(store, inbox, "numbers ARE good", BODY) == {one}
        assert await answer(store, inbox, "number", TEXT) == {one}
        # Full case folding: "ß" matches "SS".
        assert await answer(store, inbox, "STRASSE", BODY) == {two}
        # HTML is searched as its text: no tags.
        assert await answer(store, inbox, "sandwich", BODY) == {three}
        assert await answer(store, inbox, "<p>sand", BODY) == set()
        # Header values of every message.
        assert await answer(store, inbox, "example.test", TEXT) == {one, two, three}
        assert await answer(store, inbox, "example.test", BODY) == set()
        assert await answer(store, inbox, "no such text", TEXT) == set()

    run(body)


def _encoded_word(text: str, charset: str) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def test_japanese_mail_in_legacy_charsets_is_found_in_utf8(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        jis = await put(store, inbox, mail(
            _encoded_word("会議の議事録", "iso-2022-jp"),
            "日本語のメールです。検索テストをします。\r\n".encode("iso-2022-jp"),
            headers="MIME-Version: 1.0\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\n"
                    "Content-Transfer-Encoding: 7bit\r\n"))
        sjis = await put(store, inbox, mail(
            "weather",
            base64.encodebytes("東京都の天気予報は晴れ\r\n".encode("shift_jis")),
            headers="Content-Type: text/plain; charset=Shift_JIS\r\n"
                    "Content-Transfer-Encoding: base64\r\n"))
        euc = await put(store, inbox, mail(
            "food", "大阪のたこ焼き\r\n".encode("euc-jp"),
            headers="Content-Type: text/plain; charset=EUC-JP\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n"))
        assert await answer(store, inbox, "検索テスト", BODY) == {jis}
        assert await answer(store, inbox, "議事録", TEXT) == {jis}
        assert await answer(store, inbox, "議事録", BODY) == set()  # in the Subject only
        assert await answer(store, inbox, "天気予", TEXT) == {sjis}
        assert await answer(store, inbox, "たこ焼", BODY) == {euc}
        # Two characters have no trigram: the index leaves the query to the caller.
        assert await store.search_text(inbox, "日本", scope=BODY) is None

    run(body)


def test_short_queries_and_unsafe_needles_are_left_to_the_caller(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        await put(store, inbox, mail("subject", b"abc\r\n"))
        for query in ("", "a", "ab", "AB", "a\x1fb", "x\x00yz"):
            assert await store.search_text(inbox, query, scope=TEXT) is None, query
        # Full case folding can make a query longer: "ß" folds to "ss" (still < 3).
        assert await store.search_text(inbox, "ß", scope=TEXT) is None
        assert await store.search_text(inbox, "aß", scope=TEXT) == TextHits(
            frozenset(), frozenset())
        with pytest.raises(NotFound):
            await store.search_text(999_999, "abc", scope=TEXT)

    run(body)


def test_query_syntax_characters_are_plain_text(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        quoted = await put(store, inbox, mail("q", b'he said "yes" OR no * NEAR(x) ^col:\r\n'))
        await put(store, inbox, mail("other", b"yes no\r\n"))
        for query in ('"yes"', '"yes" OR no', "* NEAR(", "^col:", 'said "'):
            assert await answer(store, inbox, query, BODY) == {quoted}, query
        assert await answer(store, inbox, "yes OR", BODY) == set()

    run(body)


def test_expunge_removes_and_copies_share_the_document(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        archive = (await store.get_mailbox(acc.id, "Archive")).id  # type: ignore[union-attr]
        keep = await put(store, inbox, mail("keep", b"unrelated words\r\n"))
        gone = await put(store, inbox, mail("gone", b"a needle in a haystack\r\n"))
        ((_, copied),) = await store.copy(inbox, [gone], archive)
        assert await answer(store, inbox, "needle", BODY) == {gone}
        assert await answer(store, archive, "needle", BODY) == {copied}
        assert await store.expunge(inbox, [gone]) == [gone]
        assert await answer(store, inbox, "needle", BODY) == set()
        assert await answer(store, archive, "needle", BODY) == {copied}  # the copy stays
        await store.expunge(archive, [copied])
        assert await answer(store, archive, "needle", BODY) == set()
        # The same content stored again after its last copy went is found again.
        again = await put(store, inbox, mail("gone", b"a needle in a haystack\r\n"))
        assert await answer(store, inbox, "needle", BODY) == {again}
        assert await answer(store, inbox, "unrelated", BODY) == {keep}

    run(body)


def test_deliver_to_several_accounts_and_move(run) -> None:
    async def body(store: MailStore) -> None:
        alice = await account(store, "alice")
        bob = await account(store, "bob")
        ref = await put_blob(store, mail("party", b"bring a cake\r\n"))
        a, b = await store.deliver(ref, [DeliveryTarget(alice.id), DeliveryTarget(bob.id)])
        assert await answer(store, a.mailbox_id, "cake", BODY) == {a.uid}
        assert await answer(store, b.mailbox_id, "cake", BODY) == {b.uid}
        trash = (await store.get_mailbox(alice.id, "Trash")).id  # type: ignore[union-attr]
        ((_, moved),) = await store.move(a.mailbox_id, [a.uid], trash)
        assert await answer(store, a.mailbox_id, "cake", BODY) == set()
        assert await answer(store, trash, "cake", BODY) == {moved}
        await store.remove_account(f"bob@{bob.domain}")
        assert await answer(store, trash, "cake", BODY) == {moved}

    run(body)


_ALPHABET = "abcABC ßSsİi日本語\"*:\r\n"


def test_index_answers_exactly_what_a_scan_answers(run) -> None:
    """Randomised: for many texts and needles, index + caller == a scan over every message."""
    rng = random.Random(5)

    def text(n: int) -> str:
        return "".join(rng.choice(_ALPHABET) for _ in range(n))

    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        stored: dict[int, bytes] = {}
        for _ in range(30):
            subject = text(8).replace("\r", "").replace("\n", "")
            data = mail(subject, text(60).encode() + b"\r\n",
                        headers="Content-Type: text/plain; charset=utf-8\r\n")
            stored[await put(store, inbox, data)] = data
        texts = {uid: extract(data) for uid, data in stored.items()}
        checked = found = 0
        for _ in range(300):
            query = text(rng.randint(3, 5))
            scope = rng.choice((TEXT, BODY))
            hits = await store.search_text(inbox, query, scope=scope)
            expected = {u for u, t in texts.items() if matches(t, query, scope=scope)}
            if hits is None:
                continue
            assert hits.unindexed == frozenset()
            assert set(hits.uids) == expected, (query, scope)
            checked += 1
            found += bool(expected)
        assert checked > 250 and found > 30

    run(body)


def test_small_mailbox_beside_many_hits_elsewhere(run) -> None:
    """The index spans the whole store: hits in other mailboxes and accounts never leak."""

    async def body(store: MailStore) -> None:
        alice = await account(store, "alice")
        bob = await account(store, "bob")
        inbox = await inbox_id(store, alice.id)
        sent = (await store.get_mailbox(alice.id, "Sent")).id  # type: ignore[union-attr]
        for n in range(6):
            await put(store, inbox, mail(f"m{n}", f"common word {n}\r\n".encode()))
            await put(store, await inbox_id(store, bob.id), mail("b", f"common {n}\r\n".encode()))
        mine = await put(store, sent, mail("s", b"a common reply\r\n"))
        await put(store, sent, mail("t", b"nothing here\r\n"))
        assert await answer(store, sent, "common", BODY) == {mine}  # 13 hits, 2 messages
        assert len(await answer(store, inbox, "common word", BODY)) == 6

    run(body)
