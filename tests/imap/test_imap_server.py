"""The IMAP server driven by Python's imaplib (every response grammar-checked at teardown)."""

from __future__ import annotations

import imaplib
import re
import ssl
import threading
import time

import pytest
from imap_harness import ALICE, PASSWORD, EnvFactory, ImapEnv

from hato.servers.base import TlsMode

MULTIPART = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.net>\r\nTo: alice@example.org, "
    b"Team: a@x.example, b@x.example;\r\nSubject: parts\r\nDate: Wed, 15 Nov 2023 08:00:00 +0100"
    b"\r\nMessage-ID: <parts@example.net>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n--b1\r\n'
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
    b"\r\n\r\nGr=C3=BC=C3=9Fe\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="z.bin"\r\nContent-Transfer-Encoding: base64'
    b"\r\n\r\nAAECAw==\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
    b"From: in@example.net\r\n\r\ninner body\r\n--b1--\r\n"
)


def _ok(result: tuple[str, list[object]]) -> list[object]:
    typ, data = result
    assert typ == "OK", data
    return data


def _no(result: tuple[str, list[object]], code: str) -> bool:
    typ, data = result
    return typ == "NO" and f"[{code}]".encode() in data[-1]  # type: ignore[operator]


def test_greeting_capabilities_and_logindisabled_without_tls(imap_env: EnvFactory) -> None:
    env = imap_env(demo=False)
    client = env.client(login=False)
    assert "LOGINDISABLED" in client.capabilities
    assert "STARTTLS" in client.capabilities
    assert "IMAP4REV2" in client.capabilities and "IMAP4REV1" in client.capabilities
    # RFC 9051 §6.2.3: LOGIN refused while LOGINDISABLED is advertised.
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login(ALICE, PASSWORD)
    client.starttls(ssl.create_default_context(cafile=str(env.cert_file)))
    assert "AUTH=PLAIN" in client.capabilities and "LOGINDISABLED" not in client.capabilities
    _ok(client.login(ALICE, PASSWORD))
    assert client.logout()[0] == "BYE"


def test_implicit_tls_and_authenticate_plain(imap_env: EnvFactory) -> None:
    env = imap_env(demo=False)
    client = env.client(login=False, tls=True)
    assert "STARTTLS" not in client.capabilities
    _ok(client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORD}".encode()))
    assert client.state == "AUTH"
    assert client.logout()[0] == "BYE"


def test_wrong_password_is_authenticationfailed(imap_env: EnvFactory) -> None:
    env = imap_env()
    client = env.client(login=False)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(ALICE, "wrong")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("nobody@example.org", "wrong")


def test_mailbox_lifecycle_list_status(imap_env: EnvFactory) -> None:
    env = imap_env()
    client = env.client()
    _ok(client.create("Projects/Hato"))
    _ok(client.create("Entwürfe".encode("utf-7").decode().replace("+", "&")))
    listing = _ok(client.list())
    lines = [x.decode() for x in listing if isinstance(x, bytes)]
    assert '(\\HasNoChildren \\Sent) "/" Sent' in lines
    assert '(\\HasChildren) "/" Projects' in lines
    assert '(\\HasNoChildren) "/" Projects/Hato' in lines
    assert '(\\HasNoChildren) "/" Entw&APw-rfe' in lines  # RFC 3501 §5.1.3 modified UTF-7
    _ok(client.rename("Projects/Hato", "Projects/Dove"))
    _ok(client.subscribe("Projects/Dove"))
    lsub = [x.decode() for x in _ok(client.lsub()) if isinstance(x, bytes)]
    assert '() "/" Projects/Dove' in lsub
    env.deliver(env.message("one"))
    status = _ok(client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT SIZE DELETED)"))
    assert re.fullmatch(rb'INBOX \(MESSAGES 1 UNSEEN 1 UIDNEXT 2 SIZE \d+ DELETED 0\)', status[0])
    _ok(client.delete("Projects/Dove"))
    assert _no(client.select("Projects/Dove"), "NONEXISTENT")
    assert _no(client.delete("INBOX"), "CANNOT")  # RFC 9051 §6.3.5
    assert client.logout()[0] == "BYE"


def test_select_fetch_store_search_expunge(imap_env: EnvFactory) -> None:
    env = imap_env()
    uids = [env.deliver(env.message(f"m{i}", f"body {i}\r\n")) for i in range(3)]
    env.deliver(MULTIPART)
    client = env.client()
    count = _ok(client.select("INBOX"))
    assert count == [b"4"]
    assert client.untagged_responses.get("UIDVALIDITY") == [str(env.uidvalidity()).encode()]
    data = _ok(client.fetch("1", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)"))
    head = data[0]
    assert isinstance(head, bytes)
    # RFC 3501 §2.3.2: this (IMAP4rev1) session is the first to see them: \Recent.
    assert head.startswith(b"1 (UID %d FLAGS (\\Recent) RFC822.SIZE " % uids[0])
    assert b'"m1@example.net"' not in head and b"<m0@example.net>" in head
    # BODY.PEEK keeps \Seen clear; BODY[] sets it and reports FLAGS (RFC 9051 §6.4.5).
    peek = _ok(client.fetch("2", "(BODY.PEEK[TEXT])"))
    assert peek[0][1] == b"body 1\r\n"  # type: ignore[index]
    seen = _ok(client.fetch("2", "(BODY[HEADER.FIELDS (Subject)])"))
    assert seen[0][1] == b"Subject: m1\r\n\r\n"  # type: ignore[index]
    assert b"FLAGS (\\Seen \\Recent)" in seen[1]  # type: ignore[operator]
    structure = _ok(client.fetch("4", "(BODYSTRUCTURE BODY[1] BINARY[1] BINARY.SIZE[2] "
                                      "BODY[3.HEADER] BODY[]<0.4>)"))
    flat = b"".join(x if isinstance(x, bytes) else b"".join(x) for x in structure)
    assert b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE"' in flat
    assert b'"MIXED" ("BOUNDARY" "b1") NIL NIL NIL' in flat
    assert b"Gr=C3=BC=C3=9Fe" in flat and "Grüße".encode() in flat
    assert b"BINARY.SIZE[2] 4" in flat
    assert b"Subject: inner\r\nFrom: in@example.net\r\n\r\n" in flat
    assert b"BODY[]<0> {4}" in flat
    # STORE and SEARCH
    _ok(client.store("1", "+FLAGS", "(\\Deleted $Important)"))
    assert _ok(client.search(None, "DELETED")) == [b"1"]
    assert _ok(client.search(None, "UNSEEN NOT DELETED")) == [b"3"]  # 2 and 4 were fetched
    assert _ok(client.search(None, 'OR SUBJECT m2 FROM "jorg"')) == [b"3 4"]
    client.literal = "Grüße".encode()  # 8-bit text goes as a literal
    assert _ok(client.search("UTF-8", "BODY")) == [b"4"]
    assert _ok(client.search(None, "KEYWORD $Important")) == [b"1"]
    assert _ok(client.uid("SEARCH", "UID", f"{uids[1]}:*")) == [
        f"{uids[1]} {uids[2]} {uids[2] + 1}".encode()]
    assert _ok(client.search(None, "SENTON 15-Nov-2023")) == [b"4"]
    assert _ok(client.search(None, "LARGER 300")) == [b"4"]
    # EXPUNGE
    _ok(client.expunge())
    assert client.untagged_responses.get("EXPUNGE") in (None, [b"1"])
    assert _ok(client.search(None, "ALL")) == [b"1 2 3"]
    _ok(client.close())
    assert client.logout()[0] == "BYE"


def test_uidplus_copy_move_append(imap_env: EnvFactory) -> None:
    env = imap_env()
    for i in range(3):
        env.deliver(env.message(f"m{i}"))
    client = env.client()
    _ok(client.select("INBOX"))
    _ok(client.uid("COPY", "1:2", "Archive"))
    archive_validity = env.uidvalidity("Archive")
    # RFC 4315 §3: COPYUID uidvalidity source-uids destination-uids (imaplib files codes
    # of the tagged response under their name).
    assert client.untagged_responses.pop("COPYUID") == [b"%d 1:2 1:2" % archive_validity]
    assert _no(client.copy("1", "Nope"), "TRYCREATE")  # RFC 9051 §6.4.7
    _ok(client._simple_command("MOVE", "1", "Trash"))
    assert client.untagged_responses.pop("COPYUID") == [b"%d 1 1" % env.uidvalidity("Trash")]
    assert client.untagged_responses.pop("EXPUNGE") == [b"1"]
    _ok(client.noop())
    typ, data = client.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(1700000000),
                              env.message("appended"))
    assert typ == "OK" and re.search(rb"APPENDUID \d+ 4", data[0])  # type: ignore[arg-type]
    _ok(client.noop())
    assert _ok(client.search(None, "SEEN")) == [b"3"]
    date = _ok(client.fetch("3", "INTERNALDATE"))
    assert b'INTERNALDATE "14-Nov-2023 22:13:20 +0000"' in date[0]  # type: ignore[operator]
    assert client.logout()[0] == "BYE"


def test_other_session_changes_are_announced(imap_env: EnvFactory) -> None:
    env = imap_env()
    env.deliver(env.message("first"))
    watcher = env.client()
    _ok(watcher.select("INBOX"))
    actor = env.client()
    _ok(actor.select("INBOX"))
    _ok(actor.store("1", "+FLAGS", "\\Flagged"))
    watcher.untagged_responses.clear()
    env.deliver(env.message("second"))
    _ok(watcher.noop())
    assert watcher.untagged_responses.pop("EXISTS") == [b"2"]
    fetches = watcher.untagged_responses.pop("FETCH")
    assert any(b"\\Flagged" in f for f in fetches if isinstance(f, bytes))
    _ok(actor.store("1", "+FLAGS", "\\Deleted"))
    _ok(actor.expunge())
    # RFC 9051 §7.5.1: no EXPUNGE during FETCH: the watcher still sees message 1 (or an
    # EXPUNGEISSUED notice), and gets the EXPUNGE at its next NOOP.
    watcher.fetch("2", "(UID)")
    assert "EXPUNGE" not in watcher.untagged_responses
    _ok(watcher.noop())
    assert watcher.untagged_responses.pop("EXPUNGE") == [b"1"]
    assert _ok(watcher.search(None, "ALL")) == [b"1"]
    for c in (watcher, actor):
        assert c.logout()[0] == "BYE"


def test_idle_sees_delivery_within_a_second(imap_env: EnvFactory) -> None:
    env = imap_env()
    client = env.client()
    _ok(client.select("INBOX"))
    tag = client._new_tag().decode()
    client.send(f"{tag} IDLE\r\n".encode())
    assert client.readline().startswith(b"+ ")
    started = time.monotonic()
    threading.Timer(0.2, lambda: env.deliver(env.message("pushed"))).start()
    line = client.readline()
    assert line == b"* 1 EXISTS\r\n"
    assert time.monotonic() - started < 1.5
    assert client.readline() == b"* 1 RECENT\r\n"  # RFC 3501 §7.3.2 (IMAP4rev1)
    client.send(b"DONE\r\n")
    assert client.readline() == f"{tag} OK IDLE terminated\r\n".encode()
    assert client.logout()[0] == "BYE"


def test_condstore_and_esearch(imap_env: EnvFactory) -> None:
    env = imap_env()
    for i in range(3):
        env.deliver(env.message(f"m{i}"))
    client = env.client()
    _ok(client._simple_command("ENABLE", "CONDSTORE"))
    _ok(client.select("INBOX"))
    highest = int(client.untagged_responses["HIGHESTMODSEQ"][0])
    fetched = _ok(client.fetch("1:*", "(MODSEQ)"))
    modseqs = [int(re.search(rb"MODSEQ \((\d+)\)", f).group(1)) for f in fetched]  # type: ignore
    assert max(modseqs) <= highest
    assert modseqs == sorted(modseqs) and len(set(modseqs)) == 3
    typ, data = client._simple_command("STORE", "1:3", f"(UNCHANGEDSINCE {modseqs[0]})",
                                       "+FLAGS.SILENT", "(\\Seen)")
    assert typ == "OK"
    # RFC 7162 §3.1.3: messages changed after the given MODSEQ are refused and named, and
    # the stored one is reported with its MODSEQ despite .SILENT.
    assert re.search(rb"\[MODIFIED 2:3\]", data[-1])  # type: ignore[arg-type]
    stored = client.untagged_responses.pop("FETCH")
    assert stored == [b"1 (UID 1 MODSEQ (%d))" % (modseqs[2] + 1)]
    changed = _ok(client.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {modseqs[2]})"))
    assert changed == [b"1 (FLAGS (\\Seen \\Recent) MODSEQ (%d))" % (modseqs[2] + 1)]
    typ, data = client._simple_command("SEARCH", "RETURN", "(MIN MAX COUNT)", "ALL")
    assert typ == "OK"
    esearch = client.untagged_responses.pop("ESEARCH")
    assert esearch[0].endswith(b"MIN 1 MAX 3 COUNT 3")  # type: ignore[union-attr]
    _ok(client._simple_command("SEARCH", "RETURN", "(SAVE)", "SEEN"))
    assert _ok(client.fetch("$", "(UID)"))[0].startswith(b"1 (UID 1")  # type: ignore[union-attr]
    assert client.logout()[0] == "BYE"


def test_imap4rev2_session(imap_env: EnvFactory) -> None:
    env = imap_env()
    env.deliver(env.message("x"))
    client = env.client()
    _ok(client._simple_command("ENABLE", "IMAP4rev2"))
    assert client.untagged_responses.pop("ENABLED") == [b"IMAP4rev2"]
    client.literal = "日本語".encode()  # RFC 9051 §5.1: UTF-8 names after ENABLE IMAP4rev2
    _ok(client._simple_command("CREATE"))
    listing = _ok(client.list())
    # The 8-bit name comes back as a literal (never as a rev1 modified UTF-7 atom).
    assert (b'(\\HasNoChildren) "/" {9}', "日本語".encode()) in listing
    _ok(client.select("INBOX"))
    assert "RECENT" not in client.untagged_responses  # RFC 9051: no RECENT
    typ, _ = client._simple_command("SEARCH", "ALL")
    assert typ == "OK"
    assert client.untagged_responses.pop("ESEARCH")[0].endswith(b"ALL 1")  # type: ignore
    assert client.logout()[0] == "BYE"


def test_append_limit_refused_before_literal(imap_env: EnvFactory) -> None:
    env = imap_env(append_limit=1000)
    client = env.client()
    assert "APPENDLIMIT=1000" in client.capabilities or client.capability()
    assert _no(client.append("INBOX", None, None, b"x" * 1001), "TOOBIG")
    _ok(client.noop())
    assert client.logout()[0] == "BYE"


def test_implicit_tls_port_is_tls(imap_env: EnvFactory) -> None:
    env: ImapEnv = imap_env()
    assert TlsMode.IMPLICIT in env.ports
    client = env.client(tls=True)
    _ok(client.select("INBOX"))
    assert client.logout()[0] == "BYE"


@pytest.mark.parametrize("seed", range(3))
def test_garbage_never_breaks_the_server(imap_env: EnvFactory, seed: int) -> None:
    """Random bytes (with IMAP-looking pieces) get BADs, never a crash; the answers follow
    the response grammar and the server still serves the next connection."""
    import random
    import socket

    from hato.codec.imap.grammar import check_response

    env = imap_env()
    rng = random.Random(seed)
    pieces = [b"a1 ", b"LOGIN ", b"FETCH 1:* ", b"{3}\r\n", b"{2+}\r\nab", b"(", b")", b'"',
              b"\r\n", b"\x00", b"\xff\xfe", b"UID ", b"SEARCH ", b"NOT ", b"~{1+}\r\nx",
              b"APPEND INBOX ", b"* ", b"+ ", b"IDLE\r\n", b"DONE\r\n"]
    payload = b"".join(rng.choice(pieces) for _ in range(400)) + b"\r\nz LOGOUT\r\n"
    with socket.create_connection(("127.0.0.1", env.ports[TlsMode.NONE]), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    position = 0
    while position < len(received):
        position += check_response(received[position:])
    client = env.client()
    assert client.select("INBOX")[0] == "OK"
    assert client.logout()[0] == "BYE"


def test_settings_enforce_the_autologout_minimum() -> None:
    from hato.core.errors import ConfigError
    from hato.servers.imap import ImapSettings

    # RFC 9051 §5.4: an autologout timer, if any, lasts at least 30 minutes.
    with pytest.raises(ConfigError, match="30 minutes"):
        ImapSettings(hostname="h", idle_timeout=29 * 60)
    assert ImapSettings(hostname="h").idle_timeout == 1800
