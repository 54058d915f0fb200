"""Several IMAP connections, POP3 and local delivery on one mailbox at once; SCRAM over IMAP."""

from __future__ import annotations

import poplib
import re
import threading

from imap_harness import ALICE, PASSWORD, EnvFactory

from hato.codec.sasl import ScramSha256Client
from hato.policy.authn import Authenticator
from hato.servers.base import Listener, TlsMode
from hato.servers.pop3 import Pop3Server, Pop3Settings


def test_authenticate_scram_sha_256(imap_env: EnvFactory) -> None:
    env = imap_env(demo=False)
    client = env.client(login=False, tls=True)
    scram = ScramSha256Client(ALICE, PASSWORD)
    answers: list[bytes] = []

    def respond(challenge: bytes) -> bytes:
        # RFC 5802: client-first, client-final, then an empty answer to the server-final
        # message (RFC 9051 §6.2.2: additional data with success as a last challenge).
        answer = scram.respond(challenge) if answers else (scram.initial() or b"")
        answers.append(answer)
        return answer

    typ, _ = client.authenticate("SCRAM-SHA-256", respond)
    assert typ == "OK" and len(answers) == 3 and answers[-1] == b""
    assert client.logout()[0] == "BYE"


def _uid_map(client: object) -> list[int]:
    # imaplib keeps unsolicited FETCH responses (other sessions' flag changes seen at NOOP)
    # and returns them with the next FETCH's data: drop them so only 1:* (UID) is read.
    client.response("FETCH")  # type: ignore[attr-defined]
    typ, data = client.fetch("1:*", "(UID)")  # type: ignore[attr-defined]
    assert typ == "OK"
    return [int(re.search(rb"UID (\d+)", d).group(1)) for d in data if d]  # type: ignore


def test_imap_pop3_and_delivery_on_one_mailbox(imap_env: EnvFactory) -> None:
    env = imap_env()
    listener = Listener("127.0.0.1", 0, TlsMode.NONE)
    pop3 = Pop3Server(
        Pop3Settings(hostname="pop.example.org", listeners=(listener,)),
        store=env.store,
        authenticator=Authenticator(env.store, plaintext_on_loopback=True),
        tls_context=None,
    )
    env.call(pop3.start())
    try:
        for i in range(20):
            env.deliver(env.message(f"start {i}"))
        validity = env.uidvalidity()
        a, b = env.client(), env.client()
        for c in (a, b):
            assert c.select("INBOX")[0] == "OK"
        errors: list[BaseException] = []

        def deliver_many() -> None:
            try:
                for i in range(30):
                    env.deliver(env.message(f"during {i}"))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def flag_and_fetch(client: object, flag: str) -> None:
            try:
                for _ in range(10):
                    assert client.store("1:5", "+FLAGS", flag)[0] == "OK"  # type: ignore
                    assert client.fetch("1:*", "(FLAGS UID)")[0] == "OK"  # type: ignore
                    assert client.noop()[0] == "OK"  # type: ignore
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [
            threading.Thread(target=deliver_many),
            threading.Thread(target=flag_and_fetch, args=(a, "\\Flagged")),
            threading.Thread(target=flag_and_fetch, args=(b, "$Label")),
        ]
        for t in threads:
            t.start()
        # POP3 deletes the first three messages while IMAP sessions are busy.
        port = pop3.addresses[0][1][1]
        pop = poplib.POP3("127.0.0.1", port, timeout=20)
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        for n in (1, 2, 3):
            pop.dele(n)
        pop.quit()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors
        # After a NOOP both sessions agree with the store: sequence numbers map to the same
        # UIDs, POP3's deletions were announced as EXPUNGEs, and UIDVALIDITY never changed.
        for c in (a, b):
            assert c.noop()[0] == "OK"
        truth = sorted(_inbox_uids(env))
        assert len(truth) == 20 - 3 + 30
        assert _uid_map(a) == truth == _uid_map(b)
        assert env.uidvalidity() == validity
        flags = a.fetch("1:2", "(FLAGS)")[1]
        assert all(b"\\Flagged" in f and b"$Label" in f for f in flags)  # type: ignore
        for c in (a, b):
            assert c.logout()[0] == "BYE"
    finally:
        env.call(pop3.stop(timeout=2))


def _inbox_uids(env: object) -> list[int]:
    async def work() -> list[int]:
        mailbox = await env.store.get_mailbox(env.alice.id, "INBOX")  # type: ignore
        return [m.uid for m in await env.store.list_messages(mailbox.id)]  # type: ignore

    return env.call(work())  # type: ignore[attr-defined, no-any-return]
