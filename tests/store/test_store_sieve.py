"""Contract: Sieve scripts (RFC 5804 §1.4-§1.6, §2.5-§2.11) and Sieve tracking lists."""

from __future__ import annotations

import asyncio

import pytest
from storekit import account

from hato.core.clock import FixedClock
from hato.core.errors import (
    AlreadyExists,
    Conflict,
    NotFound,
    QuotaExceeded,
    ScriptQuotaExceeded,
    UsageError,
)
from hato.store.api import MailStore
from hato.store.model import ScriptQuota, script_name

KEEP = "keep;\r\n"


async def listing(store: MailStore, account_id: int) -> list[tuple[str, bool]]:
    return [(s.name, s.active) for s in await store.list_scripts(account_id)]


def test_put_get_list_replace(run, clock: FixedClock) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        assert await store.list_scripts(acc.id) == []
        assert await store.get_active_script(acc.id) is None
        first = await store.put_script(acc.id, "main", KEEP)
        assert (first.name, first.content, first.active, first.size) == ("main", KEEP, False, 7)
        assert first.updated == clock.now()
        await store.put_script(acc.id, "b\u00e4r", 'fileinto "x";')  # UTF-8 names and text
        assert await listing(store, acc.id) == [("b\u00e4r", False), ("main", False)]
        got = await store.get_script(acc.id, "main")
        assert got == first
        assert await store.get_script(acc.id, "missing") is None
        clock.advance(10)
        replaced = await store.put_script(acc.id, "main", "discard;")
        assert replaced.content == "discard;" and replaced.updated == clock.now()
        assert len(await store.list_scripts(acc.id)) == 2
        with pytest.raises(NotFound):
            await store.put_script(999_999, "x", KEEP)

    run(body)


def test_names_are_net_unicode(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        # RFC 5804 §1.6: names are Net-Unicode; stored in NFC so both spellings are one name.
        await store.put_script(acc.id, "Entw\u0075\u0308rfe", KEEP)
        found = await store.get_script(acc.id, "Entw\u00fcrfe")
        assert found is not None and found.name == "Entw\u00fcrfe"
        # RFC 5804 §1.6: controls, DEL, C1 controls, U+2028/2029 and "" are refused.
        for bad in ("", "a\x00b", "tab\tname", "del\x7f", "c1\x85", "ls\u2028", "ps\u2029"):
            with pytest.raises(UsageError):
                await store.put_script(acc.id, bad, KEEP)
        # RFC 5804 §1.6: 128 characters MUST be allowed; too long is refused, not truncated.
        long_name = "\u732b" * 128
        assert (await store.put_script(acc.id, long_name, KEEP)).name == long_name
        with pytest.raises(UsageError):
            await store.put_script(acc.id, "x" * 10_000, KEEP)
        assert len(await store.list_scripts(acc.id)) == 2

    run(body)


def test_script_name_function() -> None:
    assert script_name("e\u0301") == "\u00e9"
    with pytest.raises(UsageError):
        script_name("\ud800")


def test_at_most_one_active(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        for name in ("a", "b", "c"):
            await store.put_script(acc.id, name, KEEP)
        await store.set_active_script(acc.id, "b")
        assert await listing(store, acc.id) == [("a", False), ("b", True), ("c", False)]
        await store.set_active_script(acc.id, "c")  # RFC 5804 §1.4: only one active
        assert await listing(store, acc.id) == [("a", False), ("b", False), ("c", True)]
        active = await store.get_active_script(acc.id)
        assert active is not None and active.name == "c"
        # RFC 5804 §2.6: replacing the active script keeps it active.
        await store.put_script(acc.id, "c", "discard;")
        active = await store.get_active_script(acc.id)
        assert active is not None and active.content == "discard;"
        with pytest.raises(NotFound):  # RFC 5804 §2.8: NONEXISTENT
            await store.set_active_script(acc.id, "zzz")
        assert (await store.get_active_script(acc.id)) == active  # unchanged
        await store.set_active_script(acc.id, "")  # RFC 5804 §2.8: "" disables
        assert await store.get_active_script(acc.id) is None
        await store.set_active_script(acc.id, None)  # disabling when none is active: fine
        await store.put_script(acc.id, "new", KEEP, activate=True)
        await store.put_script(acc.id, "a", KEEP, activate=True)
        assert [n for n, active in await listing(store, acc.id) if active] == ["a"]
        # A second account's scripts are separate.
        other = await account(store, "other")
        await store.put_script(other.id, "a", KEEP, activate=True)
        assert [n for n, active in await listing(store, acc.id) if active] == ["a"]

    run(body)


def test_delete_and_rename(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        await store.put_script(acc.id, "one", KEEP, activate=True)
        await store.put_script(acc.id, "two", "discard;")
        with pytest.raises(Conflict):  # RFC 5804 §2.10: NO (ACTIVE)
            await store.delete_script(acc.id, "one")
        with pytest.raises(NotFound):
            await store.delete_script(acc.id, "three")
        await store.delete_script(acc.id, "two")
        assert await listing(store, acc.id) == [("one", True)]
        # RFC 5804 §2.11: the renamed active script stays active.
        renamed = await store.rename_script(acc.id, "one", "uno")
        assert (renamed.name, renamed.active, renamed.content) == ("uno", True, KEEP)
        assert await listing(store, acc.id) == [("uno", True)]
        await store.put_script(acc.id, "dos", KEEP)
        with pytest.raises(AlreadyExists):
            await store.rename_script(acc.id, "dos", "uno")
        with pytest.raises(NotFound):
            await store.rename_script(acc.id, "nope", "other")
        with pytest.raises(UsageError):
            await store.rename_script(acc.id, "dos", "bad\nname")
        assert await listing(store, acc.id) == [("dos", False), ("uno", True)]

    run(body)


def test_quota(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        quota = ScriptQuota(max_scripts=2, max_script_size=100, max_total_size=150)
        await store.put_script(acc.id, "a", "x" * 80, quota=quota)
        await store.check_script_space(acc.id, "b", 70, quota=quota)
        with pytest.raises(ScriptQuotaExceeded) as info:  # RFC 5804 §1.3 QUOTA/MAXSIZE
            await store.check_script_space(acc.id, "b", 101, quota=quota)
        assert info.value.limit == "size" and not info.value.temporary
        with pytest.raises(ScriptQuotaExceeded) as info:  # total over 150
            await store.put_script(acc.id, "b", "y" * 71, quota=quota)
        assert info.value.limit == "total"
        assert isinstance(info.value, QuotaExceeded)
        await store.put_script(acc.id, "b", "y" * 70, quota=quota)
        with pytest.raises(ScriptQuotaExceeded) as info:  # RFC 5804 §1.3 QUOTA/MAXSCRIPTS
            await store.put_script(acc.id, "c", "z", quota=quota)
        assert info.value.limit == "count"
        # Replacing a script counts its new size in place of the old one.
        await store.put_script(acc.id, "a", "x" * 10, quota=quota)
        await store.check_script_space(acc.id, "a", 80, quota=quota)
        # RFC 5804 §2.6: a failed PUTSCRIPT leaves the old script as it was.
        with pytest.raises(ScriptQuotaExceeded):
            await store.put_script(acc.id, "a", "x" * 200, quota=quota)
        kept = await store.get_script(acc.id, "a")
        assert kept is not None and kept.content == "x" * 10
        # Octets, not characters: 40 three-octet characters are 120 octets.
        with pytest.raises(ScriptQuotaExceeded):
            await store.put_script(acc.id, "a", "\u732b" * 40, quota=quota)
        with pytest.raises(NotFound):
            await store.check_script_space(999_999, "a", 1, quota=quota)

    run(body)


def test_scripts_go_with_their_account(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        await store.put_script(acc.id, "a", KEEP, activate=True)
        await store.sieve_track(acc.id, "vacation:x", expires=2e9)
        await store.remove_account(acc.address)
        assert await store.list_scripts(acc.id) == []
        again = await account(store)
        assert await store.list_scripts(again.id) == []
        assert not await store.sieve_tracked(again.id, "vacation:x")

    run(body)


def test_tracking_expiry_and_refresh(run, clock: FixedClock) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        now = clock.now()
        assert not await store.sieve_tracked(acc.id, "k")
        assert await store.sieve_track(acc.id, "k", expires=now + 100) is False
        assert await store.sieve_tracked(acc.id, "k")
        # Without refresh the expiry stays (RFC 7352 §3.3 without :last; RFC 5230 §4.2).
        assert await store.sieve_track(acc.id, "k", expires=now + 1000) is True
        clock.advance(100)
        assert not await store.sieve_tracked(acc.id, "k")
        assert await store.sieve_track(acc.id, "k", expires=clock.now() + 50) is False
        # With refresh (":last") a repeat extends it.
        assert await store.sieve_track(acc.id, "k", expires=clock.now() + 500, refresh=True)
        clock.advance(100)
        assert await store.sieve_tracked(acc.id, "k")
        assert not await store.sieve_tracked(acc.id, "K")  # RFC 7352 §3.1: case-sensitive
        other = await account(store, "other")
        assert not await store.sieve_tracked(other.id, "k")
        with pytest.raises(NotFound):
            await store.sieve_track(999_999, "k", expires=now)

    run(body)


def test_concurrent_track_claims_once(run, clock: FixedClock) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        results = await asyncio.gather(
            *(store.sieve_track(acc.id, "vacation:a@b", expires=clock.now() + 60) for _ in range(8))
        )
        assert sorted(results) == [False] + [True] * 7  # exactly one sender wins

    run(body)
