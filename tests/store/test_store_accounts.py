"""Contract: domains, accounts and aliases (every backend in storekit.BACKENDS)."""

from __future__ import annotations

import pytest
from storekit import CREDS, DOMAIN, account, inbox_id, message, put_blob

from hato.core.errors import AddressError, AlreadyExists, Conflict, NotFound, UsageError
from hato.store.api import MailStore
from hato.store.model import DEFAULT_MAILBOXES, Credentials, DeliveryTarget, Domain


def test_domains_crud(run) -> None:
    async def body(store: MailStore) -> None:
        assert await store.list_domains() == []
        assert await store.add_domain("Example.TEST") == Domain("example.test")
        await store.add_domain("b.test")
        assert await store.has_domain("example.test")
        assert await store.has_domain("EXAMPLE.test")
        assert not await store.has_domain("other.test")
        assert not await store.has_domain("bad..name")
        assert await store.list_domains() == [Domain("b.test"), Domain("example.test")]
        with pytest.raises(AlreadyExists):
            await store.add_domain("example.test")
        with pytest.raises(AddressError):
            await store.add_domain("not a domain")
        await store.remove_domain("b.test")
        assert await store.list_domains() == [Domain("example.test")]
        with pytest.raises(NotFound):
            await store.remove_domain("b.test")

    run(body)


def test_remove_domain_refuses_then_forces(run) -> None:
    async def body(store: MailStore) -> None:
        user = await account(store)
        ref = await put_blob(store, message(1))
        await store.deliver(ref, [DeliveryTarget(user.id)])
        with pytest.raises(Conflict):
            await store.remove_domain(DOMAIN)
        await store.remove_domain(DOMAIN, force=True)
        assert not await store.has_domain(DOMAIN)
        assert await store.get_account(user.address) is None
        assert await store.list_accounts() == []
        assert not store.blobs.exists(ref.id)  # its mail went with it

    run(body)


def test_remove_domain_with_only_aliases_needs_force(run) -> None:
    async def body(store: MailStore) -> None:
        await store.add_domain("alias.test")
        await store.add_alias("info@alias.test", ["someone@remote.test"])
        with pytest.raises(Conflict):
            await store.remove_domain("alias.test")
        await store.remove_domain("alias.test", force=True)
        assert await store.get_alias("info@alias.test") is None

    run(body)


def test_account_crud(run) -> None:
    async def body(store: MailStore) -> None:
        with pytest.raises(NotFound):  # domain must exist
            await store.add_account("a@nowhere.test", CREDS)
        await store.add_domain(DOMAIN)
        await store.add_domain("other.test")
        acc = await store.add_account("Alice@Example.Test", CREDS, quota_bytes=5000)
        assert acc.address == "alice@example.test"
        assert acc.domain == DOMAIN
        assert acc.quota_bytes == 5000 and acc.enabled
        assert acc.used_bytes == 0 and acc.message_count == 0
        assert acc.credentials == CREDS
        with pytest.raises(AlreadyExists):
            await store.add_account("ALICE@example.test", CREDS)
        with pytest.raises(AddressError):
            await store.add_account("no-at-sign", CREDS)
        with pytest.raises(UsageError):
            await store.add_account("neg@example.test", CREDS, quota_bytes=-1)
        bob = await store.add_account("bob@other.test", CREDS)
        assert await store.get_account("alice@example.test") == acc
        assert await store.get_account("ALICE@EXAMPLE.TEST") == acc
        assert await store.get_account("nobody@example.test") is None
        assert await store.get_account("garbage") is None
        assert await store.get_account_by_id(bob.id) == bob
        assert await store.get_account_by_id(999_999) is None
        assert [a.address for a in await store.list_accounts()] == [
            "alice@example.test",
            "bob@other.test",
        ]
        assert await store.list_accounts("other.test") == [bob]

        new_creds = Credentials(password_hash="$argon2id$new", scram_sha256="4096$s$k$v")
        await store.set_credentials("alice@example.test", new_creds)
        await store.set_quota("alice@example.test", None)
        await store.set_enabled("alice@example.test", False)
        changed = await store.get_account("alice@example.test")
        assert changed is not None
        assert changed.credentials == new_creds
        assert changed.quota_bytes is None and not changed.enabled
        for call in (
            store.set_credentials("x@example.test", new_creds),
            store.set_quota("x@example.test", 1),
            store.set_enabled("x@example.test", True),
            store.remove_account("x@example.test"),
        ):
            with pytest.raises(NotFound):
                await call

        await store.remove_account("alice@example.test")
        assert await store.get_account("alice@example.test") is None
        assert await store.list_accounts() == [bob]

    run(body)


def test_new_account_has_default_mailboxes(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        boxes = {m.name: m for m in await store.list_mailboxes(acc.id)}
        assert set(boxes) == {name for name, _ in DEFAULT_MAILBOXES}
        for name, special_use in DEFAULT_MAILBOXES:  # RFC 6154 §2
            assert boxes[name].special_use == special_use
            assert boxes[name].subscribed
            assert boxes[name].uidnext == 1 and boxes[name].message_count == 0
        uidvalidities = [m.uidvalidity for m in boxes.values()]
        assert len(set(uidvalidities)) == len(uidvalidities)
        assert (await store.list_mailboxes(acc.id))[0].name == "INBOX"

    run(body)


def test_remove_account_releases_blobs_it_alone_used(run) -> None:
    async def body(store: MailStore) -> None:
        alice = await account(store, "alice")
        bob = await account(store, "bob")
        shared = await put_blob(store, message(1))
        alone = await put_blob(store, message(2))
        await store.deliver(shared, [DeliveryTarget(alice.id), DeliveryTarget(bob.id)])
        await store.deliver(alone, [DeliveryTarget(alice.id)])
        await store.remove_account(alice.address)
        assert not store.blobs.exists(alone.id)
        assert store.blobs.read(shared.id) == message(1)  # bob's copy still refers to it
        assert len(await store.list_messages(await inbox_id(store, bob.id))) == 1

    run(body)


def test_aliases(run) -> None:
    async def body(store: MailStore) -> None:
        await store.add_domain(DOMAIN)
        alias = await store.add_alias(
            "Team@Example.test", ["a@example.test", "b@Remote.TEST", "a@example.test"]
        )
        assert alias.source == "team@example.test"
        assert alias.targets == ("a@example.test", "b@remote.test")  # deduplicated, in order
        catch_all = await store.add_alias("@EXAMPLE.test", ["postmaster@example.test"])
        assert catch_all.source == "@example.test"
        assert await store.get_alias("team@example.test") == alias
        assert await store.get_alias("@example.test") == catch_all
        assert await store.get_alias("none@example.test") is None
        with pytest.raises(AlreadyExists):
            await store.add_alias("team@example.test", ["c@example.test"])
        with pytest.raises(NotFound):
            await store.add_alias("x@unknown.test", ["c@example.test"])
        with pytest.raises(UsageError):
            await store.add_alias("empty@example.test", [])
        with pytest.raises(AddressError):
            await store.add_alias("bad@example.test", ["not an address"])
        await store.add_domain("other.test")
        other = await store.add_alias("x@other.test", ["y@example.test"])
        assert await store.list_aliases() == [catch_all, alias, other]
        assert await store.list_aliases("other.test") == [other]
        await store.remove_alias("team@example.test")
        assert await store.get_alias("team@example.test") is None
        with pytest.raises(NotFound):
            await store.remove_alias("team@example.test")

    run(body)
