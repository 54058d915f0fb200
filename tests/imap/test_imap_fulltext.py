"""SEARCH TEXT / BODY through imaplib, answered by the store's full-text index (RFC 9051 §6.4.4):
substrings, Japanese in ISO-2022-JP searched with CHARSET UTF-8, short queries, NOT/OR,
expunged messages, and the index really used (no message read)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from imap_harness import EnvFactory, ImapEnv


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
    """Counts message bodies the server reads from the blob store."""

    def __init__(self, env: ImapEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = env.store.blobs.read

        def read(blob_id: str) -> bytes:
            self.count += 1
            return original(blob_id)

        monkeypatch.setattr(env.store.blobs, "read", read)


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
