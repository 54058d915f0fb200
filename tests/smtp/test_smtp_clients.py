"""Interop with real clients: Python's smtplib (STARTTLS, implicit TLS, AUTH PLAIN/LOGIN/
SCRAM-SHA-256, SMTPUTF8, BDAT by hand) and Debian's swaks; submission policy end to end."""

from __future__ import annotations

import base64
import shutil
import smtplib
import subprocess
from typing import Any

import pytest
from smtpkit import HOST, PASSWORD, Harness, RawClient, client_tls, credentials

from hato.codec.sasl import ScramSha256Client

MESSAGE = b"From: alice@example.test\r\nSubject: interop\r\n\r\nHello.\r\n"


def submit(harness: Harness) -> smtplib.SMTP:
    client = smtplib.SMTP(HOST, harness.submission, timeout=10)
    client.ehlo("client.test")
    client.starttls(context=client_tls())
    client.ehlo("client.test")
    return client


def test_starttls_auth_plain_delivers_locally(harness: Harness) -> None:
    with submit(harness) as client:
        assert "auth" in client.esmtp_features and "requiretls" in client.esmtp_features
        assert "starttls" not in client.esmtp_features  # RFC 3207 §4.2: not offered again
        client.login("alice@example.test", PASSWORD)  # smtplib uses SASL-IR for PLAIN
        refused = client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
        assert refused == {}
    [body] = harness.messages("bob@example.test")
    head = body.split(b"\r\n\r\n", 1)[0].decode()
    assert "with ESMTPSA id" in head and " tls TLS_" in head  # RFC 3848, RFC 8314 §4.3
    assert "for <bob@example.test>;" in head
    assert body.endswith(MESSAGE)


def test_implicit_tls_with_login(harness: Harness) -> None:
    with smtplib.SMTP_SSL(HOST, harness.submissions, timeout=10, context=client_tls()) as client:
        client.ehlo("client.test")
        assert "starttls" not in client.esmtp_features
        client.user, client.password = "alice@example.test", PASSWORD
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        client.sendmail("alice@example.test", ["carol@example.test", "bob@example.test"], MESSAGE)
    [body] = harness.messages("carol@example.test")
    assert b"for <" not in body.split(b"\r\n\r\n", 1)[0]  # RFC 5321 §4.4: one shared body
    assert len(harness.messages("bob@example.test")) == 1


def test_scram_sha_256(harness: Harness) -> None:
    scram = ScramSha256Client("alice@example.test", PASSWORD)

    def step(challenge: bytes | None = None) -> str:
        data = scram.initial() if challenge is None else scram.respond(challenge)
        return (data or b"").decode("ascii")

    with submit(harness) as client:
        code, _ = client.auth("SCRAM-SHA-256", step, initial_response_ok=True)
        assert code == 235
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert len(harness.messages("bob@example.test")) == 1


def test_wrong_password_is_535(harness: Harness) -> None:
    with submit(harness) as client, pytest.raises(smtplib.SMTPAuthenticationError) as info:
        client.login("alice@example.test", "wrong")
    assert info.value.smtp_code == 535 and info.value.smtp_error.startswith(b"5.7.8")


def test_no_plaintext_auth_before_tls(harness: Harness) -> None:
    with RawClient(harness.submission) as client:
        client.reply()
        ehlo = client.cmd("EHLO client.test")
        assert not any("AUTH" in line for line in ehlo)
        assert client.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==")[0].startswith(
            "538 5.7.11"  # RFC 4954 §6
        )
        assert client.cmd("MAIL FROM:<alice@example.test>")[0].startswith("530 5.7.0")


def test_demo_mode_allows_plaintext_auth_on_loopback(make_harness: Any) -> None:
    harness = make_harness(demo=True)
    with smtplib.SMTP(HOST, harness.submission, timeout=10) as client:
        client.ehlo("client.test")
        assert "auth" in client.esmtp_features
        client.login("alice@example.test", PASSWORD)
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert b"with ESMTPA id" in harness.messages("bob@example.test")[0]


def test_submission_requires_auth_and_an_owned_sender(harness: Harness) -> None:
    harness.call(lambda s: s.add_alias("sales@example.test", ["alice@example.test"]))
    with submit(harness) as client:
        assert client.mail("alice@example.test")[0] == 530  # RFC 4954 §6
        client.rset()
        client.login("alice@example.test", PASSWORD)
        code, text = client.mail("bob@example.test")
        assert (code, text[:5]) == (553, b"5.7.1")  # RFC 6409 §6.1
        client.rset()
        assert client.mail("<>")[0] == 553
        client.rset()
        for owned in ("alice@example.test", "Alice+news@example.test", "sales@example.test"):
            assert client.mail(owned)[0] == 250
            client.rset()


def test_remote_recipient_is_refused_temporarily(harness: Harness) -> None:
    with submit(harness) as client:
        client.login("alice@example.test", PASSWORD)
        client.mail("alice@example.test")
        code, text = client.rcpt("friend@remote.test")
        assert (code, text) == (451, b"4.3.0 Outbound delivery not available, try again later")
        assert client.rcpt("dave@other.test")[0] == 250  # another local domain


def test_smtputf8_addresses_are_stored_and_delivered(harness: Harness) -> None:
    harness.call(lambda s: s.add_account("jörg@example.test", credentials()))
    with smtplib.SMTP(HOST, harness.mx, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("smtputf8")
        body = "From: ñandú@bücher.test\r\nSubject: ¡hola!\r\n\r\nÜber.\r\n".encode()
        client.sendmail("ñandú@bücher.test", ["jörg@example.test"], body, mail_options=["SMTPUTF8"])
    [stored] = harness.messages("jörg@example.test")
    assert stored.startswith("Return-Path: <ñandú@bücher.test>\r\n".encode())
    assert b"with UTF8SMTP id" in stored  # RFC 6531 §3.7.3
    assert "for <jörg@example.test>".encode() in stored and stored.endswith(body)


def test_bdat_by_hand_with_binarymime(harness: Harness) -> None:
    payload = b"Subject: bin\r\n\r\n" + bytes(range(256)) + b"\r\n.\r\n.."
    with smtplib.SMTP(HOST, harness.mx, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("chunking") and client.has_extn("binarymime")
        assert client.mail("x@remote.test", ["BODY=BINARYMIME"])[0] == 250
        assert client.rcpt("alice@example.test")[0] == 250
        half = len(payload) // 2
        client.send(b"BDAT %d\r\n" % half + payload[:half])
        assert client.getreply()[0] == 250
        client.send(b"BDAT %d LAST\r\n" % (len(payload) - half) + payload[half:])
        code, text = client.getreply()
        assert code == 250, text
    [stored] = harness.messages("alice@example.test")
    assert stored.endswith(payload)  # binary octets, dots and bare CR/LF kept as sent


def test_eight_bit_data_is_kept(harness: Harness) -> None:
    body = "Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÄÖÜ\r\n".encode()
    with smtplib.SMTP(HOST, harness.mx, timeout=10) as client:
        client.sendmail("x@remote.test", ["bob@example.test"], body, mail_options=["BODY=8BITMIME"])
    assert harness.messages("bob@example.test")[0].endswith(body)


def test_requiretls_is_accepted_after_starttls(harness: Harness) -> None:
    with submit(harness) as client:
        client.login("alice@example.test", PASSWORD)
        assert client.mail("alice@example.test", ["REQUIRETLS"])[0] == 250
        assert client.rcpt("bob@example.test")[0] == 250
        assert client.data(MESSAGE)[0] == 250


def test_plus_address_goes_to_existing_folder(harness: Harness) -> None:
    async def make_folder(store: Any) -> None:
        account = await store.get_account("bob@example.test")
        await store.create_mailbox(account.id, "lists")

    harness.call(make_folder)
    with smtplib.SMTP(HOST, harness.mx, timeout=10) as client:
        client.sendmail("x@remote.test", ["bob+lists@example.test"], MESSAGE)
        client.sendmail("x@remote.test", ["bob+nosuch@example.test"], MESSAGE)
    assert len(harness.messages("bob@example.test", "lists")) == 1
    assert len(harness.messages("bob@example.test")) == 1  # no such folder: INBOX


# -- swaks -----------------------------------------------------------------------------------

SWAKS = shutil.which("swaks")


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    assert SWAKS is not None, "swaks is installed by scripts/test.sh"
    return subprocess.run(
        [SWAKS, "--server", HOST, "--timeout", "10", "--helo", "swaks.test", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_swaks_starttls_and_auth(harness: Harness) -> None:
    result = swaks(
        "--port", str(harness.submission), "--tls", "--auth", "PLAIN",
        "--auth-user", "alice@example.test", "--auth-password", PASSWORD,
        "--from", "alice@example.test", "--to", "bob@example.test",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    assert len(harness.messages("bob@example.test")) == 1


def test_swaks_tls_on_connect_with_login(harness: Harness) -> None:
    result = swaks(
        "--port", str(harness.submissions), "--tls-on-connect", "--auth", "LOGIN",
        "--auth-user", "alice@example.test", "--auth-password", PASSWORD,
        "--from", "alice@example.test", "--to", "carol@example.test",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(harness.messages("carol@example.test")) == 1


def test_swaks_pipelining_on_the_mx(harness: Harness) -> None:
    result = swaks(
        "--port", str(harness.mx), "--pipeline",
        "--from", "x@remote.test",
        "--to", "alice@example.test,nobody@example.test,bob@example.test",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "550 5.1.1 No such user here" in result.stdout
    assert len(harness.messages("alice@example.test")) == 1
    assert len(harness.messages("bob@example.test")) == 1


def test_swaks_is_refused_relaying(harness: Harness) -> None:
    result = swaks("--port", str(harness.mx), "--from", "x@remote.test", "--to", "v@remote.test")
    assert result.returncode != 0
    assert "550 5.7.1 Relaying denied" in result.stdout


def test_auth_plain_initial_response_by_hand(harness: Harness) -> None:
    """SASL-IR (RFC 4954 §4): the credentials travel on the AUTH line itself."""
    token = base64.b64encode(b"\0alice@example.test\0" + PASSWORD.encode()).decode()
    with RawClient(harness.submissions) as raw:
        raw.sock = client_tls().wrap_socket(raw.sock)
        raw.file = raw.sock.makefile("rb")
        raw.reply()
        raw.cmd("EHLO client.test")
        assert raw.cmd(f"AUTH PLAIN {token}") == ["235 2.7.0 Authentication successful"]
        assert raw.cmd("AUTH PLAIN =")[0].startswith("503 5.5.1")  # RFC 4954 §4: only once


def test_dsn_and_requiretls_parameters_reach_delivery(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hato.servers.smtp_session as session_module
    from hato.codec.smtp_params import Notify, Ret
    from hato.delivery.local import ReceivedMessage

    seen: list[ReceivedMessage] = []
    original = session_module.deliver_local

    async def recording(store: Any, message: ReceivedMessage) -> Any:
        seen.append(message)
        return await original(store, message)

    monkeypatch.setattr(session_module, "deliver_local", recording)
    with submit(harness) as client:
        client.login("alice@example.test", PASSWORD)
        assert (
            client.mail("alice@example.test", ["RET=HDRS", "ENVID=x+2By", "REQUIRETLS"])[0] == 250
        )
        assert (
            client.rcpt("bob@example.test", ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;b+40c"])[0]
            == 250
        )
        assert client.data(MESSAGE)[0] == 250
    [message] = seen
    params = message.envelope.params
    assert (params.ret, params.envid, params.requiretls) == (Ret.HDRS, "x+y", True)
    [rcpt] = message.envelope.recipients
    assert rcpt.params.notify == {Notify.FAILURE, Notify.DELAY}
    assert rcpt.params.orcpt is not None and rcpt.params.orcpt.address == "b@c"
    assert message.requiretls and len(message.targets) == 1
