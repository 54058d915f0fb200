"""Golden SMTP transcripts against the running server's MX listener.

``C:`` lines are sent (CRLF appended; several in a row are pipelined, RFC 2920), ``S:`` lines
must match the next reply line (``*`` matches anything, fnmatch style). ``C=`` sends the rest
of the line with Python escapes and no CRLF appended. ``*CLOSED`` expects end of stream.
"""

from __future__ import annotations

import codecs
import fnmatch

import pytest
from smtpkit import Harness, RawClient

GREETING = ["S: 220 mx.example.test ESMTP Hato"]
EHLO = [
    "C: EHLO client.test",
    "S: 250-mx.example.test greets client.test",
    "S: 250-PIPELINING",
    "S: 250-SIZE 67108864",
    "S: 250-8BITMIME",
    "S: 250-ENHANCEDSTATUSCODES",
    "S: 250-CHUNKING",
    "S: 250-BINARYMIME",
    "S: 250-DSN",
    "S: 250-SMTPUTF8",
    "S: 250 HELP",
]
OPEN = GREETING + EHLO
MAIL = ["C: MAIL FROM:<sender@remote.test>", "S: 250 2.1.0 Sender OK"]
RCPT_ALICE = ["C: RCPT TO:<alice@example.test>", "S: 250 2.1.5 Recipient OK"]
ACCEPTED = "S: 250 2.0.0 Message accepted, id *"


def t(*parts: str | list[str]) -> list[str]:
    """Concatenate transcript steps and step lists."""
    out: list[str] = []
    for part in parts:
        out.extend([part] if isinstance(part, str) else part)
    return out


TRANSCRIPTS: dict[str, list[str]] = {
    "helo-is-one-line-without-enhanced-code": t(
        GREETING, "C: HELO client.test", "S: 250 mx.example.test greets client.test"
    ),
    "ehlo-lists-extensions": OPEN,
    "ehlo-needs-argument": t(GREETING, "C: EHLO", "S: 501 5.5.4 Syntax: EHLO domain"),
    "mail-before-ehlo": t(
        GREETING, "C: MAIL FROM:<a@remote.test>", "S: 503 5.5.1 Send HELO/EHLO first"
    ),
    "rcpt-before-mail": t(OPEN, "C: RCPT TO:<alice@example.test>", "S: 503 5.5.1 *"),
    "data-without-recipient": t(OPEN, MAIL, "C: DATA", "S: 554 5.5.1 No valid recipients"),
    "nested-mail": t(OPEN, MAIL, "C: MAIL FROM:<b@remote.test>", "S: 503 5.5.1 Nested MAIL*"),
    "unknown-command": t(OPEN, "C: FOO bar", "S: 500 5.5.1 Command not recognised"),
    "noop-rset-help-vrfy-expn": t(
        OPEN,
        "C: NOOP whatever",
        "S: 250 2.0.0 OK",
        "C: RSET",
        "S: 250 2.0.0 OK",
        "C: HELP",
        "S: 214-2.0.0 Commands: *",
        "S: 214 2.0.0 See RFC 5321",
        "C: VRFY alice",
        "S: 252 2.5.0 Cannot VRFY user*",
        "C: EXPN staff",
        "S: 502 5.5.1 EXPN is disabled",
    ),
    "quit": t(OPEN, "C: QUIT", "S: 221 2.0.0 Bye", "*CLOSED"),
    "simple-delivery": t(
        OPEN,
        MAIL,
        RCPT_ALICE,
        "C: DATA",
        "S: 354 End data with <CR><LF>.<CR><LF>",
        "C: Subject: t",
        "C: ",
        "C: hi",
        "C: .",
        ACCEPTED,
    ),
    "pipelined-delivery": t(
        OPEN,
        "C: MAIL FROM:<sender@remote.test>",
        "C: RCPT TO:<alice@example.test>",
        "C: RCPT TO:<nobody@example.test>",
        "C: RCPT TO:<bob@example.test>",
        "C: DATA",
        "S: 250 2.1.0 Sender OK",
        "S: 250 2.1.5 Recipient OK",
        "S: 550 5.1.1 No such user here",
        "S: 250 2.1.5 Recipient OK",
        "S: 354 *",
        "C=Subject: t\\r\\n\\r\\nbody\\r\\n.\\r\\nNOOP\\r\\n",
        ACCEPTED,
        "S: 250 2.0.0 OK",
    ),
    "rset-aborts-transaction": t(
        OPEN,
        MAIL,
        RCPT_ALICE,
        "C: RSET",
        "S: 250 2.0.0 OK",
        "C: DATA",
        "S: 503 5.5.1 Bad sequence of commands",
    ),
    "ehlo-again-resets": t(OPEN, MAIL, EHLO[:1], EHLO[1:], MAIL),
    "null-sender": t(OPEN, "C: MAIL FROM:<>", "S: 250 2.1.0 Sender OK"),
    "postmaster-without-domain": t(
        OPEN,
        MAIL,
        "C: RCPT TO:<Postmaster>",
        "S: 250 2.1.5 Recipient OK",
        "C: RCPT TO:<POSTMASTER>",
        "S: 250 2.1.5 Recipient OK",
    ),
    "unknown-local-user": t(
        OPEN, MAIL, "C: RCPT TO:<nobody@example.test>", "S: 550 5.1.1 No such user here"
    ),
    # -- no open relay (RFC 5321 §3.6.2) ----------------------------------------------
    "relay-remote-domain": t(
        OPEN, MAIL, "C: RCPT TO:<victim@remote.test>", "S: 550 5.7.1 Relaying denied"
    ),
    "relay-percent-hack": t(
        OPEN, MAIL, "C: RCPT TO:<victim%remote.test@example.test>", "S: 550 5.1.1 No such user here"
    ),
    "relay-bang-path": t(
        OPEN, MAIL, "C: RCPT TO:<remote.test!victim@example.test>", "S: 550 5.1.1 No such user here"
    ),
    "relay-quoted-at": t(
        OPEN,
        MAIL,
        'C: RCPT TO:<"victim@remote.test"@example.test>',
        "S: 550 5.1.1 No such user here",
    ),
    "relay-quoted-percent": t(
        OPEN,
        MAIL,
        'C: RCPT TO:<"victim%remote.test"@example.test>',
        "S: 550 5.1.1 No such user here",
    ),
    "relay-source-route-remote": t(
        OPEN,
        MAIL,
        "C: RCPT TO:<@example.test,@hop.test:victim@remote.test>",
        "S: 550 5.7.1 Relaying denied",
    ),
    "relay-source-route-stripped-local": t(
        OPEN, MAIL, "C: RCPT TO:<@hop.test:alice@example.test>", "S: 250 2.1.5 Recipient OK"
    ),
    "relay-ip-literal": t(
        OPEN, MAIL, "C: RCPT TO:<victim@[127.0.0.1]>", "S: 550 5.7.1 Relaying denied"
    ),
    "relay-ipv6-literal": t(
        OPEN, MAIL, "C: RCPT TO:<victim@[IPv6:::1]>", "S: 550 5.7.1 Relaying denied"
    ),
    "relay-trailing-dot": t(OPEN, MAIL, "C: RCPT TO:<victim@remote.test.>", "S: 501 5.1.3 *"),
    "relay-local-subdomain": t(
        OPEN, MAIL, "C: RCPT TO:<victim@sub.example.test>", "S: 550 5.7.1 Relaying denied"
    ),
    # -- syntax -------------------------------------------------------------------------
    "mail-no-brackets": t(OPEN, "C: MAIL FROM:a@remote.test", "S: 501 5.5.4 *"),
    "mail-bad-address": t(OPEN, "C: MAIL FROM:<a@>", "S: 501 5.1.7 *"),
    "rcpt-empty-path": t(OPEN, MAIL, "C: RCPT TO:<>", "S: 501 5.1.3 *"),
    "unknown-mail-parameter": t(
        OPEN, "C: MAIL FROM:<a@remote.test> FOO=BAR", "S: 555 5.5.4 FOO parameter not recognised"
    ),
    "duplicate-parameter": t(
        OPEN, "C: MAIL FROM:<a@remote.test> SIZE=1 SIZE=2", "S: 501 5.5.4 duplicate SIZE parameter"
    ),
    "requiretls-not-offered-without-tls": t(
        OPEN, "C: MAIL FROM:<a@remote.test> REQUIRETLS", "S: 555 5.5.4 *"
    ),
    "declared-size-too-big": t(
        OPEN, "C: MAIL FROM:<a@remote.test> SIZE=67108865", "S: 552 5.3.4 *"
    ),
    "dsn-parameters": t(
        OPEN,
        "C: MAIL FROM:<a@remote.test> RET=HDRS ENVID=QQ314159+2B1",
        "S: 250 2.1.0 Sender OK",
        "C: RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.test",
        "S: 250 2.1.5 Recipient OK",
        "C: RCPT TO:<bob@example.test> NOTIFY=NEVER,DELAY",
        "S: 501 5.5.4 *",
        "C: RCPT TO:<bob@example.test> ORCPT=x400;whatever",
        "S: 501 5.5.4 *",
    ),
    "non-ascii-without-smtputf8": t(
        OPEN, "C: MAIL FROM:<jörg@remote.test>", "S: 550 5.6.7 Non-ASCII address needs SMTPUTF8"
    ),
    "non-ascii-rcpt-without-smtputf8": t(
        OPEN,
        MAIL,
        "C: RCPT TO:<jörg@example.test>",
        "S: 553 5.6.7 Non-ASCII address needs SMTPUTF8",
    ),
    "binarymime-refuses-data": t(
        OPEN,
        "C: MAIL FROM:<a@remote.test> BODY=BINARYMIME",
        "S: 250 2.1.0 Sender OK",
        *RCPT_ALICE,
        "C: DATA",
        "S: 503 5.5.1 BINARYMIME requires BDAT",
    ),
    "bdat-in-chunks": t(
        OPEN,
        MAIL,
        RCPT_ALICE,
        "C=BDAT 12\\r\\nSubject: t\\r\\n",
        "S: 250 2.0.0 12 octets received",
        "C=BDAT 6 LAST\\r\\n\\r\\nhi\\r\\n",
        ACCEPTED,
    ),
    "bdat-without-mail-is-read-and-refused": t(
        OPEN,
        "C=BDAT 6\\r\\nRSET\\r\\n",
        "S: 503 5.5.1 Bad sequence of commands",
        "C: NOOP",
        "S: 250 2.0.0 OK",
    ),
    "bdat-then-data": t(
        OPEN,
        MAIL,
        RCPT_ALICE,
        "C=BDAT 3\\r\\nabc",
        "S: 250 2.0.0 3 octets received",
        "C: DATA",
        "S: 503 5.5.1 *",
    ),
    "bare-lf-in-command": t(OPEN, "C=NOOP\\nRSET\\r\\n", "S: 500 5.5.2 Bare CR or LF in command"),
    "command-line-too-long": t(OPEN, "C: NOOP " + "x" * 600, "S: 500 5.5.2 Line too long"),
    "auth-not-offered-on-mx": t(OPEN, "C: AUTH PLAIN AGFAYg==", "S: 502 5.5.1 AUTH not offered"),
    "starttls-not-offered-on-plain-mx": t(OPEN, "C: STARTTLS", "S: 502 5.5.1 *"),
    "too-many-errors-closes": t(
        OPEN,
        "C: FOO",
        "S: 500 *",
        "C: FOO",
        "S: 500 *",
        "C: FOO",
        "S: 500 *",
        "C: FOO",
        "S: 500 *",
        "C: FOO",
        "S: 421 4.7.0 Too many errors, closing connection",
        "*CLOSED",
    ),
    "line-too-long-in-data": t(
        OPEN,
        MAIL,
        RCPT_ALICE,
        "C: DATA",
        "S: 354 *",
        "C: " + "y" * 999,
        "C: .",
        "S: 500 5.5.2 Line too long",
        "C: NOOP",
        "S: 250 2.0.0 OK",
    ),
    "line-of-998-octets-is-fine": t(
        OPEN, MAIL, RCPT_ALICE, "C: DATA", "S: 354 *", "C: " + "y" * 998, "C: .", ACCEPTED
    ),
    "bare-cr-in-data": t(
        OPEN,
        MAIL,
        RCPT_ALICE,
        "C: DATA",
        "S: 354 *",
        "C=a\\rb\\r\\n.\\r\\n",
        "S: 500 5.5.2 Bare CR or LF in message",
    ),
}


def _expand(line: str) -> bytes:
    return codecs.decode(line, "unicode_escape").encode("latin-1")


@pytest.mark.parametrize("name", sorted(TRANSCRIPTS))
def test_transcript(harness: Harness, name: str) -> None:
    with RawClient(harness.mx) as client:
        for step in TRANSCRIPTS[name]:
            if step.startswith("C: "):
                client.send(step[3:].encode("utf-8") + b"\r\n")
            elif step.startswith("C="):
                client.send(_expand(step[2:]))
            elif step == "*CLOSED":
                assert client.line() == "", f"{name}: expected the server to close"
            else:
                assert step.startswith("S: ")
                got = client.line()
                assert fnmatch.fnmatchcase(got, step[3:]), f"{name}: got {got!r}, want {step!r}"
