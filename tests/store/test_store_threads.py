"""Contract: RFC 8474 §5.2 THREADID - assigned when a message is stored, linked by Message-ID,
In-Reply-To and References within one account, never changed, shared by every copy."""

from __future__ import annotations

from storekit import account, inbox_id, put_blob

from hato.store.api import MailStore
from hato.store.model import DeliveryTarget, Message


def mail(subject: str, *, msg_id: str | None = None, in_reply_to: str | None = None,
         references: str | None = None, pad: int = 0) -> bytes:
    lines = [f"Subject: {subject}"]
    if msg_id is not None:
        lines.append(f"Message-ID: {msg_id}")
    if in_reply_to is not None:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references is not None:
        lines.append(f"References: {references}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"body " + b"x" * pad + b"\r\n"


async def _append(store: MailStore, mailbox_id: int, data: bytes) -> Message:
    appended = await store.append(mailbox_id, await put_blob(store, data))
    (message,) = await store.get_messages(mailbox_id, [appended.uid])
    return message


def test_replies_share_the_thread_of_their_parent(run) -> None:
    async def body(store: MailStore) -> None:
        inbox = await inbox_id(store, (await account(store)).id)
        root = await _append(store, inbox, mail("plan", msg_id="<root@x>"))
        reply = await _append(store, inbox, mail("Re: plan", msg_id="<r1@x>",
                                                  in_reply_to="<root@x>"))
        # References (RFC 5322 §3.6.4), folded over two lines, with a different subject.
        deeper = await _append(store, inbox, mail("changed", msg_id="<r2@x>",
                                                   references="<root@x>\r\n <r1@x>"))
        other = await _append(store, inbox, mail("plan", msg_id="<other@x>"))
        bare = await _append(store, inbox, mail("no ids at all"))
        bare2 = await _append(store, inbox, mail("no ids at all"))
        assert root.thread_id != 0
        assert root.thread_id == reply.thread_id == deeper.thread_id
        # Not linked by subject (RFC 8474 leaves the algorithm to the server; this one links
        # by reference only), and a message without ids starts its own thread.
        assert len({root.thread_id, other.thread_id, bare.thread_id, bare2.thread_id}) == 4
        # What is read back later is what was assigned.
        listed = {m.uid: m.thread_id for m in await store.list_messages(inbox)}
        assert listed == {m.uid: m.thread_id for m in (root, reply, deeper, other, bare, bare2)}

    run(body)


def test_a_reply_that_arrives_first_is_joined_by_its_parent(run) -> None:
    async def body(store: MailStore) -> None:
        inbox = await inbox_id(store, (await account(store)).id)
        reply = await _append(store, inbox, mail("Re: x", msg_id="<b@x>", in_reply_to="<a@x>"))
        parent = await _append(store, inbox, mail("x", msg_id="<a@x>"))
        sibling = await _append(store, inbox, mail("Re: x", references="<a@x>"))
        assert reply.thread_id == parent.thread_id == sibling.thread_id

    run(body)


def test_thread_ids_never_change(run) -> None:
    async def body(store: MailStore) -> None:
        inbox = await inbox_id(store, (await account(store)).id)
        one = await _append(store, inbox, mail("one", msg_id="<one@x>"))
        two = await _append(store, inbox, mail("two", msg_id="<two@x>"))
        assert one.thread_id != two.thread_id
        # A message referring to both joins the first it names (the older reference); the
        # two threads are not merged: RFC 8474 §5.2 MUST NOT change a reported THREADID.
        both = await _append(store, inbox, mail("Re", references="<one@x> <two@x>"))
        assert both.thread_id == one.thread_id
        again = {m.uid: m.thread_id for m in await store.list_messages(inbox)}
        assert again[one.uid] == one.thread_id and again[two.uid] == two.thread_id
        # Its own Message-ID, when already known (a reply named it first), comes first.
        early = await _append(store, inbox, mail("Re", msg_id="<c@x>", in_reply_to="<three@x>"))
        late = await _append(store, inbox, mail("three", msg_id="<three@x>",
                                                references="<one@x>"))
        assert late.thread_id == early.thread_id != one.thread_id

    run(body)


def test_message_ids_compare_as_rfc5256_says(run) -> None:
    async def body(store: MailStore) -> None:
        inbox = await inbox_id(store, (await account(store)).id)
        quoted = await _append(store, inbox, mail("q", msg_id='<"abc"@x>'))
        plain = await _append(store, inbox, mail("q", in_reply_to="<abc@x>"))
        upper = await _append(store, inbox, mail("q", in_reply_to="<ABC@x>"))
        # RFC 5256 §3: quoting of the local part does not matter; otherwise case-sensitive.
        assert quoted.thread_id == plain.thread_id != upper.thread_id

    run(body)


def test_copies_keep_the_thread_id(run) -> None:
    async def body(store: MailStore) -> None:
        acc = await account(store)
        inbox = await inbox_id(store, acc.id)
        archive = (await store.create_mailbox(acc.id, "Kept")).id
        moved_to = (await store.create_mailbox(acc.id, "Moved")).id
        first = await _append(store, inbox, mail("a", msg_id="<a@x>"))
        second = await _append(store, inbox, mail("b", msg_id="<b@x>"))
        await store.copy(inbox, [first.uid], archive)
        await store.move(inbox, [second.uid], moved_to)
        (copied,) = await store.list_messages(archive)
        (moved,) = await store.list_messages(moved_to)
        assert (copied.email_id, copied.thread_id) == (first.email_id, first.thread_id)
        assert (moved.email_id, moved.thread_id) == (second.email_id, second.thread_id)
        # A later reply filed elsewhere joins the thread (RFC 8474 §5.2: related messages in
        # different mailboxes SHOULD share it).
        reply = await _append(store, archive, mail("Re: a", in_reply_to="<a@x>"))
        assert reply.thread_id == first.thread_id

    run(body)


def test_delivery_threads_per_account(run) -> None:
    async def body(store: MailStore) -> None:
        alice = await account(store, "alice")
        bob = await account(store, "bob")
        await store.create_mailbox(alice.id, "Lists")
        a_inbox, b_inbox = await inbox_id(store, alice.id), await inbox_id(store, bob.id)
        original = await _append(store, a_inbox, mail("hi", msg_id="<orig@x>"))
        blob = await put_blob(store, mail("Re: hi", msg_id="<re@x>", in_reply_to="<orig@x>"))
        appended = await store.deliver(blob, [DeliveryTarget(alice.id),
                                              DeliveryTarget(alice.id, "Lists"),
                                              DeliveryTarget(bob.id)])
        stored = [(await store.get_messages(a.mailbox_id, [a.uid]))[0] for a in appended]
        in_alice, in_lists, in_bob = stored
        # Every copy in one account: the same EMAILID, so the same THREADID (RFC 8474 §5.2).
        assert in_alice.thread_id == in_lists.thread_id == original.thread_id
        # Bob never saw <orig@x>: Alice's thread is not his (links are per account).
        assert in_bob.thread_id != original.thread_id
        bob_later = await _append(store, b_inbox, mail("hi", msg_id="<orig@x>"))
        assert bob_later.thread_id == in_bob.thread_id

    run(body)


def test_header_of_a_large_message_is_read_from_its_file(run) -> None:
    async def body(store: MailStore) -> None:
        inbox = await inbox_id(store, (await account(store)).id)
        root = await _append(store, inbox, mail("big", msg_id="<big@x>", pad=3 << 20))
        reply = await _append(store, inbox, mail("Re", in_reply_to="<big@x>", pad=3 << 20))
        assert root.thread_id == reply.thread_id != 0

    run(body)
