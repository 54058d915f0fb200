"""Units: Reply rendering, ESMTP parameters and paths, policy verdicts, recipient resolution,
trace header fields."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtpkit import credentials

from hato.codec.smtp_params import (
    Body,
    Notify,
    ParameterError,
    ParamOffer,
    Ret,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    split_path,
    xtext_decode,
    xtext_encode,
)
from hato.core.address import Address
from hato.core.errors import UsageError
from hato.core.reply import Reply
from hato.delivery.local import HeaderScan, TraceInfo, received_header, tls_cipher_token
from hato.delivery.recipients import RecipientResolver, merge_targets
from hato.policy.smtp import Action, Reason, RecipientFacts, Role, check_recipient, check_sender
from hato.store.model import Account
from hato.store.sqlite import open_store

# -- Reply ---------------------------------------------------------------------------------


def test_reply_rendering() -> None:
    assert Reply(250, "2.0.0", "OK").to_bytes() == b"250 2.0.0 OK\r\n"
    multi = Reply.lines(250, None, ["mx greets c", "PIPELINING", "HELP"]).to_bytes()
    assert multi == b"250-mx greets c\r\n250-PIPELINING\r\n250 HELP\r\n"  # RFC 5321 §4.2.1
    both = Reply.lines(550, "5.7.1", ["one", "two"]).to_bytes()
    assert both == b"550-5.7.1 one\r\n550 5.7.1 two\r\n"  # RFC 2034 §4: code on every line
    assert Reply(334, None, "").to_bytes() == b"334 \r\n"  # RFC 4954 §4
    # a CR/LF in text can only ever start another line of the same reply
    injected = Reply(221, "2.0.0", "bye\r\n250 injected\x00").to_bytes()
    assert injected == b"221-2.0.0 bye\r\n221 2.0.0 250 injected\r\n"


@pytest.mark.parametrize(
    ("code", "enhanced"), [(250, "5.0.0"), (199, None), (450, "4.1"), (600, None)]
)
def test_reply_validation(code: int, enhanced: str | None) -> None:
    with pytest.raises(UsageError):
        Reply(code, enhanced, "x")


# -- parameters and paths ---------------------------------------------------------------------

OFFER = ParamOffer()


@given(st.text(max_size=60))
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert encoded.isascii() and "=" not in encoded
    if text.isascii():
        assert xtext_decode(encoded) == text


def test_mail_params() -> None:
    params = parse_mail_params(
        " SIZE=1000 body=8bitmime SMTPUTF8 RET=full ENVID=a+2Bb AUTH=<>", OFFER
    )
    assert (params.size, params.body, params.smtputf8) == (1000, Body.EIGHT_BIT, True)
    assert (params.ret, params.envid, params.auth) == (Ret.FULL, "a+b", "<>")
    for bad, code in [
        ("SIZE=x", 501), ("SIZE=" + "9" * 21, 501), ("BODY=9BIT", 501), ("RET=SOME", 501),
        ("ENVID=" + "a" * 101, 501), ("ENVID=a+zz", 501), ("SMTPUTF8=yes", 501),
        ("REQUIRETLS", 555), ("XFOO", 555), ("SIZE=1 size=2", 501),
    ]:  # fmt: skip
        with pytest.raises(ParameterError) as info:
            parse_mail_params(bad, OFFER)
        assert info.value.smtp_reply.code == code, bad
    assert parse_mail_params("REQUIRETLS", ParamOffer(requiretls=True)).requiretls


def test_rcpt_params() -> None:
    params = parse_rcpt_params(
        "NOTIFY=success,delay ORCPT=rfc822;a+40b@c.test", OFFER, smtputf8=False
    )
    assert params.notify == {Notify.SUCCESS, Notify.DELAY}
    assert params.orcpt is not None and params.orcpt.address == "a@b@c.test"
    assert parse_rcpt_params("NOTIFY=NEVER", OFFER, smtputf8=False).notify == frozenset()
    utf8 = parse_rcpt_params("ORCPT=utf-8;j\\x{00F6}rg@x.test", OFFER, smtputf8=False)
    assert utf8.orcpt is not None and utf8.orcpt.address == "jörg@x.test"  # RFC 6533 §3
    for bad in ["NOTIFY=NEVER,SUCCESS", "NOTIFY=FAILURE,FAILURE", "ORCPT=rfc822", "NOTIFY"]:
        with pytest.raises(ParameterError):
            parse_rcpt_params(bad, OFFER, smtputf8=False)
    with pytest.raises(ParameterError):
        parse_rcpt_params("NOTIFY=SUCCESS", ParamOffer(dsn=False), smtputf8=False)


def test_paths() -> None:
    assert split_path(' <"a>b"@c.test> SIZE=1') == ('<"a>b"@c.test>', " SIZE=1")
    assert parse_path("<>", sender=True).address is None
    route = parse_path("<@hop1.test,@[192.0.2.1]:user@final.test>", sender=False)
    assert str(route.address) == "user@final.test"  # RFC 5321 §4.1.1.3: route stripped
    assert parse_path("<postMaster>", sender=False).postmaster
    for bad in ["<>", "<@>", "<a>", "<a@>", "<@a>", "<x:a@b.test>", "<@bad..:a@b.test>"]:
        with pytest.raises(ParameterError):
            parse_path(bad, sender=False)
    with pytest.raises(ParameterError):
        parse_path("<" + "a" * 60 + "@" + "b" * 200 + ".test>", sender=True)  # > 256 octets


# -- policy ------------------------------------------------------------------------------------


def account(address: str = "alice@example.test") -> Account:
    return Account(1, address, "example.test", credentials(), None, True)


def test_sender_verdicts() -> None:
    sender = Address.parse("alice@example.test")
    mx = check_sender(role=Role.MX, sender=None, account=None, owned=False)
    assert mx.accepted and mx.reasons == (Reason.SENDER_ACCEPTED,)
    anonymous = check_sender(role=Role.SUBMISSION, sender=sender, account=None, owned=False)
    assert (anonymous.action, anonymous.reply.code) == (Action.REJECT, 530)
    stranger = check_sender(role=Role.SUBMISSION, sender=sender, account=account(), owned=False)
    assert (stranger.reply.code, stranger.reply.enhanced) == (553, "5.7.1")
    assert check_sender(role=Role.SUBMISSION, sender=sender, account=account(), owned=True).accepted


@pytest.mark.parametrize(
    ("role", "facts", "code", "reason"),
    [
        (Role.MX, RecipientFacts(local_domain=False), 550, Reason.RELAY_DENIED),
        (Role.SUBMISSION, RecipientFacts(local_domain=False), 451, Reason.OUTBOUND_UNAVAILABLE),
        (Role.MX, RecipientFacts(local_domain=True, local_targets=1), 250, Reason.LOCAL_RECIPIENT),
        (Role.MX, RecipientFacts(local_domain=True), 550, Reason.UNKNOWN_RECIPIENT),
        (Role.MX, RecipientFacts(local_domain=True, disabled=1), 550, Reason.DISABLED_RECIPIENT),
        (Role.MX, RecipientFacts(local_domain=True, loop=True), 554, Reason.ALIAS_LOOP),
        (
            Role.MX,
            RecipientFacts(local_domain=True, local_targets=1, remote_targets=1),
            451,
            Reason.OUTBOUND_UNAVAILABLE,
        ),
    ],
)
def test_recipient_verdicts(role: Role, facts: RecipientFacts, code: int, reason: Reason) -> None:
    verdict = check_recipient(role=role, authenticated=True, facts=facts)
    assert verdict.reply.code == code and verdict.reasons == (reason,)


# -- recipient resolution ------------------------------------------------------------------------


def resolve_all(tmp_path: Path, body: Any) -> Any:
    async def main() -> Any:
        store = await open_store(tmp_path / "data")
        try:
            await store.add_domain("example.test")
            for user in ("alice", "bob", "carol"):
                await store.add_account(f"{user}@example.test", credentials())
            return await body(store, RecipientResolver(store, max_depth=3))
        finally:
            await store.close()

    return asyncio.run(main())


def test_aliases_recursive_with_cycles_and_depth(tmp_path: Path) -> None:
    async def body(store: Any, resolver: RecipientResolver) -> None:
        await store.add_alias("team@example.test", ["dev@example.test", "bob@example.test"])
        await store.add_alias("dev@example.test", ["alice@example.test", "team@example.test"])
        await store.add_alias("ext@example.test", ["friend@remote.test", "carol@example.test"])
        await store.add_alias("a1@example.test", ["a2@example.test"])
        await store.add_alias("a2@example.test", ["a3@example.test"])
        await store.add_alias("a3@example.test", ["a4@example.test"])
        await store.add_alias("a4@example.test", ["alice@example.test"])
        team = await resolver.resolve(Address.parse("Team@example.test"))
        assert sorted(t.account_id for t in team.targets) == [1, 2] and not team.loop
        ext = await resolver.resolve(Address.parse("ext@example.test"))
        assert ext.remote == ("friend@remote.test",) and len(ext.targets) == 1
        deep = await resolver.resolve(Address.parse("a1@example.test"))
        assert deep.loop  # depth 4 > max_depth 3
        await store.set_enabled("carol@example.test", False)
        carol = await resolver.resolve(Address.parse("carol@example.test"))
        assert carol.targets == () and carol.disabled == ("carol@example.test",)

    resolve_all(tmp_path, body)


def test_catch_all_plus_addressing_and_merge(tmp_path: Path) -> None:
    async def body(store: Any, resolver: RecipientResolver) -> None:
        nobody = await resolver.resolve(Address.parse("nobody@example.test"))
        assert nobody.facts() == RecipientFacts(local_domain=True)
        await store.add_alias("@example.test", ["carol@example.test"])
        caught = await resolver.resolve(Address.parse("nobody@example.test"))
        assert [t.account_id for t in caught.targets] == [3]
        bob = await store.get_account("bob@example.test")
        await store.create_mailbox(bob.id, "news")
        plus = await resolver.resolve(Address.parse("bob+news@example.test"))
        assert [(t.account_id, t.mailbox) for t in plus.targets] == [(2, "news")]
        other = await resolver.resolve(Address.parse("bob+other@example.test"))
        assert [(t.account_id, t.mailbox) for t in other.targets] == [(2, "INBOX")]
        merged = merge_targets([plus, other, caught])
        assert [(t.account_id, t.mailbox) for t in merged] == [(2, "news"), (3, "INBOX")]
        literal = await resolver.resolve(Address.parse("alice@[127.0.0.1]"))
        assert not literal.local_domain

    resolve_all(tmp_path, body)


# -- trace fields ------------------------------------------------------------------------------


def test_received_header() -> None:
    info = TraceInfo(
        hostname="mx.example.test",
        helo="bad helo(",
        remote_ip="2001:db8::1",
        extended=True,
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_128_GCM_SHA256",
        authenticated=True,
        transaction_id="abc.1",
    )
    text = received_header(info, recipient=Address.parse("a@b.test"), now=0).decode()
    assert text.startswith("Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])\r\n")
    assert "with ESMTPSA id abc.1" in text and "(TLSv1.3) tls TLS_AES_128_GCM_SHA256" in text
    assert "for <a@b.test>; " in text and text.endswith("\r\n")
    assert (
        tls_cipher_token("ECDHE-RSA-AES128-GCM-SHA256", {"ECDHE-RSA-AES128-GCM-SHA256": 0x0300C02F})
        == "0xC02F"
    )


def test_header_scan_counts_only_header_received_fields() -> None:
    scan = HeaderScan()
    message = b"Received: a\r\nReceived: b\r\n c\r\nTLS-Required: No\r\n\r\nReceived: body\r\n"
    for i in range(len(message)):
        scan.feed(message[i : i + 1])
    assert (scan.received, scan.tls_required_no, scan.done) == (2, True, True)
