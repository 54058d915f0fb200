"""SEARCH TEXT / BODY through imaplib, answered by the store's full-text index (RFC 9051 §6.4.4):
substrings, Japanese in ISO-2022-JP searched with CHARSET UTF-8, short queries, NOT/OR,
expunged messages, and the index really used (no message read)."""

from __future__ import annotations

import base64
from typing import Any, BinaryIO

import pytest
from imap_harness import EnvFactory, ImapEnv

from hato.servers.imap import search


def _ok(result: tuple[str, list[Any]]) -> list[Any]:
    typ, data = result
    assert typ == "OK", data
    return data


def _japanese() -> bytes:
    subject = base64.b64encode("会議の議事録".encode("iso-2022-jp")).decode()
    return (
        "From: taro@example.jp\r\nTo: alice@example.org\r\n"
        f"Subject: =?ISO-2022-JP?B?{subject}?=\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=ISO-2022-JP\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    ).encode() + "日本語のメールです。検索テストをします。\r\n".encode("iso-2022-jp")


class _Reads:
    """Counts messages the server reads from the blob store, whole or their header block
    only (every read opens the blob: ``read`` goes through ``open``)."""

    def __init__(self, env: ImapEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = env.store.blobs.open

        def open_blob(blob_id: str) -> BinaryIO:
            self.count += 1
            return original(blob_id)

        monkeypatch.setattr(env.store.blobs, "open", open_blob)


def test_search_text_and_body_through_the_index(
    imap_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = imap_env()
    first = env.deliver(env.message("Quarterly figures", "The results are in.\r\n"))
    second = env.deliver(env.message("lunch", "Quarterly lunch at noon.\r\n"))
    jp = env.deliver(_japanese())
    reads = _Reads(env, monkeypatch)
    client = env.client()
    _ok(client.select("INBOX"))
    assert _ok(client.uid("SEARCH", "TEXT", "quarterly")) == [f"{first} {second}".encode()]
    assert _ok(client.uid("SEARCH", "BODY", "QUARTERLY")) == [f"{second}".encode()]
    assert _ok(client.uid("SEARCH", "TEXT", '"ults are"')) == [f"{first}".encode()]
    assert _ok(client.search(None, "NOT", "BODY", "quarterly")) == [b"1 3"]
    assert _ok(client.search(None, "OR", "BODY", "results", "TEXT", "noon")) == [b"1 2"]
    # AND with other keys: sequence numbers stay those of the whole view.
    assert _ok(client.search(None, "2:3", "TEXT", "quarterly")) == [b"2"]
    assert _ok(client.search(None, "TEXT", "quarterly", "BODY", "noon")) == [b"2"]
    client.literal = "検索テスト".encode()
    assert _ok(client.search("UTF-8", "BODY")) == [b"3"]
    client.literal = "議事録".encode()
    assert _ok(client.uid("SEARCH", "CHARSET", "UTF-8", "TEXT")) == [f"{jp}".encode()]
    client.literal = "議事録".encode()
    assert _ok(client.search("UTF-8", "BODY")) == [b""]  # in the Subject, not the body
    assert reads.count == 0  # every answer came from the index
    # SUBJECT needs the messages: only the index's two candidates are read.
    assert _ok(client.search(None, "TEXT", "quarterly", "NOT", "SUBJECT", "lunch")) == [b"1"]
    assert reads.count == 2
    # Two characters: the index cannot answer, the server reads the messages.
    assert _ok(client.uid("SEARCH", "BODY", "no")) == [f"{second}".encode()]
    assert reads.count == 2 + 3


def test_search_after_expunge_and_copy(imap_env: EnvFactory) -> None:
    env = imap_env()
    env.deliver(env.message("one", "alpha bravo\r\n"))
    env.deliver(env.message("two", "charlie delta\r\n"))
    client = env.client()
    _ok(client.select("INBOX"))
    _ok(client.copy("1", "Archive"))
    _ok(client.store("1", "+FLAGS", "(\\Deleted)"))
    _ok(client.expunge())
    assert _ok(client.search(None, "BODY", "bravo")) == [b""]
    assert _ok(client.search(None, "BODY", "delta")) == [b"1"]
    _ok(client.select("Archive"))
    assert _ok(client.search(None, "TEXT", "alpha")) == [b"1"]
    # Appended messages are indexed too.
    _ok(client.append("INBOX", None, None, env.message("three", "echo foxtrot\r\n")))
    _ok(client.select("INBOX"))
    assert _ok(client.search(None, "BODY", "foxtrot")) == [b"2"]


def test_header_keys_read_only_the_index_candidates(
    imap_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FROM/SUBJECT/HEADER: a field's decoded text is part of TEXT, so the index's TEXT hits
    bound the messages to test; only those are read (their header block), and the answers
    are those of a scan (RFC 9051 §6.4.4: substring, case-insensitive). Decoded fields are
    kept in the content cache: a message is not read again for the same field."""
    monkeypatch.setattr(search, "INDEX_HEADERS_ABOVE", 0)  # the index bounds even 4 messages
    env = imap_env()
    bob = env.deliver(env.message("one", "nothing\r\n", sender="bob.builder@example.net"))
    env.deliver(env.message("two", "a word from bob.builder in the body\r\n"))
    env.deliver(env.message("three", "plain\r\n"))
    encoded = env.deliver(env.message("=?UTF-8?B?w4ljb2xl?= notes", "x\r\n"))  # "École"
    reads = _Reads(env, monkeypatch)
    client = env.client()
    _ok(client.select("INBOX"))
    assert _ok(client.uid("SEARCH", "FROM", "BOB.BUILDER")) == [f"{bob}".encode()]
    assert reads.count == 2  # the two TEXT hits, not all four messages
    client.literal = "école".encode()
    assert _ok(client.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT")) == [f"{encoded}".encode()]
    assert reads.count == 3
    # Under NOT the index bounds nothing: every message is tested; the From fields decoded
    # above come from the content cache, the other two messages are read.
    assert _ok(client.search(None, "NOT", "FROM", "bob.builder")) == [b"2 3 4"]
    assert reads.count == 3 + 2
    assert _ok(client.search(None, "NOT", "FROM", "bob.builder")) == [b"2 3 4"]
    assert reads.count == 3 + 2  # all cached now
    # Shorter than a trigram: no index answer; only the Subject of message 4 is cached.
    assert _ok(client.search(None, "HEADER", "Subject", "on")) == [b"1"]
    assert reads.count == 3 + 2 + 3


def test_header_keys_in_a_small_mailbox_read_each_header_once(
    imap_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ``INDEX_HEADERS_ABOVE`` messages, header keys read every header block once; the
    decoded fields are then served from the content cache, to this and other sessions."""
    env = imap_env()
    for n in range(5):
        env.deliver(env.message(f"note {n}", "x\r\n", sender=f"user{n}@example.net"))
    reads = _Reads(env, monkeypatch)
    client = env.client()
    _ok(client.select("INBOX"))
    assert _ok(client.search(None, "FROM", "user3")) == [b"4"]
    assert reads.count == 5
    assert _ok(client.search(None, "OR", "FROM", "USER1", "FROM", "user4@")) == [b"2 5"]
    other = env.client()
    _ok(other.select("INBOX"))
    assert _ok(other.search(None, "NOT", "FROM", "example.net")) == [b""]
    assert reads.count == 5  # no more reads
    assert _ok(other.search(None, "SUBJECT", '"note 2"')) == [b"3"]
    assert reads.count == 10  # a new field: every header block once more


def test_index_answers_are_reused_and_newer_messages_tested(
    imap_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeated SEARCH TEXT takes the index's earlier answer (exact for the UIDs the mailbox
    had then: text never changes, UIDs only grow); messages that arrived since are tested
    directly, expunged ones are gone, and past ``TEXT_REFRESH`` newer messages the index is
    asked again."""
    monkeypatch.setattr(search, "TEXT_REFRESH", 1)
    env = imap_env()
    env.deliver(env.message("one", "the walrus sings\r\n"))
    env.deliver(env.message("two", "no such animal\r\n"))
    asked: list[str] = []
    original = env.store.search_text

    async def counting(mailbox_id: int, query: str, *, scope: Any) -> Any:
        asked.append(query)
        return await original(mailbox_id, query, scope=scope)

    monkeypatch.setattr(env.store, "search_text", counting)
    client = env.client()
    _ok(client.select("INBOX"))
    assert _ok(client.search(None, "TEXT", "walrus")) == [b"1"]
    other = env.client()
    _ok(other.select("INBOX"))
    assert _ok(other.search(None, "BODY", "walrus")) == [b"1"]  # another scope: asked
    assert _ok(other.search(None, "TEXT", "walrus")) == [b"1"]
    assert asked == ["walrus", "walrus"]
    env.deliver(env.message("three", "a walrus again\r\n"))
    _ok(client.noop())  # RFC 9051 §7.4.1: now the session knows message 3 (EXISTS)
    reads = _Reads(env, monkeypatch)
    assert _ok(client.search(None, "TEXT", "walrus")) == [b"1 3"]  # tested here
    assert asked == ["walrus", "walrus"]
    assert reads.count == 1  # message 3, read whole
    assert _ok(client.search(None, "TEXT", "walrus")) == [b"1 3"]
    assert reads.count == 1  # its answer is cached
    _ok(client.store("1", "+FLAGS", "(\\Deleted)"))
    _ok(client.expunge())
    assert _ok(client.search(None, "TEXT", "walrus")) == [b"2"]
    env.deliver(env.message("four", "walrus\r\n"))
    _ok(client.noop())
    assert _ok(client.search(None, "TEXT", "walrus")) == [b"2 3"]  # two newer: asked again
    assert asked == ["walrus", "walrus", "walrus"]
