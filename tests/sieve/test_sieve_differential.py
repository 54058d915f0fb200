"""Differential test: Hato's Sieve interpreter against Dovecot Pigeonhole's ``sieve-test``.

Every script of the corpus runs on every message in both interpreters; the actions each
decides (stores with their flags, redirects, rejects, discards, vacation replies,
notifications, the implicit keep) must be the same. ``sieve-test`` comes from Debian's
``dovecot-sieve`` (installed by scripts/test.sh). Vacation is compared as decided before the
RFC 3834 checks (and notify before RFC 5436 §2.7's auto-submitted check), because
``sieve-test`` prints those actions without executing them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hato.codec.sieve import (
    Discard,
    Envelope,
    Ereject,
    FileInto,
    Keep,
    Notify,
    Redirect,
    Reject,
    SieveLimits,
    Vacation,
    parse_script,
    run_script,
)
from hato.codec.sieve.actions import Action
from hato.codec.sieve.enotify import parse_mailto
from hato.core.clock import FixedClock

SENDER = "alice@example.org"
RECIPIENT = "bob+lists@example.net"

SCRIPTS = {
    "fileinto-subject": 'require "fileinto";\n'
    'if header :contains "subject" "invoice" { fileinto "Bills"; }',
    "address-domain": 'require "fileinto";\n'
    'if address :domain :is "from" "example.org" { fileinto "Org"; } else { keep; }',
    "envelope-detail": 'require ["envelope", "subaddress", "fileinto"];\n'
    'if envelope :detail "to" "lists" { fileinto "Lists"; }',
    "reject": 'require "reject";\nif header :contains "subject" "spam" { reject "No spam"; }',
    "redirect-copy": 'require "copy";\nredirect :copy "archive@example.com";',
    "discard-stop": 'if exists "list-id" { discard; stop; }\nkeep;',
    "flags": 'require ["imap4flags", "fileinto"];\n'
    'addflag "\\\\Flagged";\nif size :over 400 { addflag "$Big"; }\nfileinto "Flagged";',
    "flags-keep": 'require "imap4flags";\nkeep :flags ["\\\\Seen", "$Work"];',
    "body-text": 'require ["body", "fileinto"];\n'
    'if body :text :contains "会議" { fileinto "Meetings"; }\n'
    'if body :content "application" :contains "" { fileinto "Attachments"; }',
    "variables-matches": 'require ["variables", "fileinto"];\n'
    'if header :matches "subject" "[*] *" { fileinto "Tag.${1}"; }',
    "variables-modifiers": 'require ["variables", "fileinto"];\n'
    'if address :matches :localpart "from" "*" { set :lower :upperfirst "who" "${1}";\n'
    '  fileinto "People.${who}"; }',
    "relational-count": 'require ["relational", "comparator-i;ascii-numeric", "fileinto"];\n'
    'if address :count "ge" :comparator "i;ascii-numeric" ["to", "cc"] "3" '
    '{ fileinto "Crowd"; }',
    "relational-value": 'require ["relational", "fileinto"];\n'
    'if header :value "lt" "x-priority" "3" { fileinto "Urgent"; }',
    "vacation": 'require "vacation";\n'
    'vacation :days 7 :addresses ["bob@example.net"] "I am away until Monday.";',
    "vacation-seconds": 'require ["vacation-seconds"];\n'
    'vacation :seconds 3600 :subject "Away" "Back soon";',
    "date": 'require ["date", "relational", "fileinto"];\n'
    'if date :value "lt" "date" "year" "2010" { fileinto "Old"; }',
    "index": 'require ["index", "fileinto"];\n'
    'if header :index 1 :last :contains "received" "mx.example.net" { fileinto "Direct"; }',
    "regex": 'require ["regex", "variables", "fileinto"];\n'
    'if header :regex "subject" "^\\\\[([a-z]+)\\\\]" { fileinto "Re.${1}"; }',
    "encoded-character": 'require ["encoded-character", "fileinto"];\n'
    'if header :contains "subject" "${unicode:4F1A 8B70}" { fileinto "Kaigi"; }',
    "enotify": 'require "enotify";\n'
    'if header :contains "subject" "urgent" {\n'
    '  notify :importance "1" "mailto:pager@example.com?subject=Urgent"; }',
    "mime-foreverypart": 'require ["foreverypart", "mime", "fileinto"];\n'
    'foreverypart { if header :mime :subtype "content-type" "pdf" '
    '{ fileinto "PDF"; break; } }',
    "anyof-allof-not": 'require "fileinto";\n'
    'if anyof (not exists "subject", allof (header :is "precedence" "bulk", '
    'size :under 10K)) { fileinto "Low"; }',
    "mailbox-create": 'require ["mailbox", "fileinto"];\nfileinto :create "New/Box";',
    "ihave": 'require ["ihave", "fileinto"];\n'
    'if ihave "fileinto" { fileinto "Have"; } else { discard; }',
}

MESSAGES = {
    "plain": "From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: Hello\n"
    "Date: Mon, 20 Jul 2009 21:44:43 +0300\n\nHi Bob.\n",
    "invoice": "From: billing@shop.example\nTo: bob@example.net\nSubject: Your invoice\n"
    "Date: Tue, 02 Jan 2024 10:00:00 +0000\nX-Priority: 1\n\nPay up.\n",
    "japanese-utf8": "From: =?UTF-8?B?5bGx55Sw5aSq6YOO?= <taro@example.jp>\nTo: bob@example.net\n"
    "Subject: =?UTF-8?B?5LyB55S75Lya6K2w44Gu44GK55+l44KJ44Gb?=\n"
    "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\n"
    "明日の会議は十時からです。\n",
    "japanese-iso2022": "From: hanako@example.jp\nTo: bob@example.net\n"
    "Subject: =?ISO-2022-JP?B?GyRCMnFERBsoQg==?=\n"
    "Content-Type: text/plain; charset=ISO-2022-JP\n\n"
    "\x1b$B2qDD$N$*CN$i$;\x1b(B\n",
    "list": "From: dev@lists.example.com\nTo: dev@lists.example.com\n"
    "List-Id: <dev.lists.example.com>\nPrecedence: list\n"
    "Subject: [dev] build broken\n\nThe build is broken.\n",
    "bulk-crowd": "From: news@example.org\nTo: bob@example.net, carol@example.net\n"
    "Cc: dave@example.net, erin@example.net\nPrecedence: bulk\nSubject: Weekly news\n\nNews.\n",
    "auto-submitted": "From: robot@example.org\nTo: bob@example.net\n"
    "Auto-Submitted: auto-generated\nSubject: urgent: disk full\n\nDisk full.\n",
    "no-subject": "From: alice@example.org\nTo: bob@example.net\n\nNo subject here.\n",
    "multipart-pdf": "From: alice@example.org\nTo: bob@example.net\nSubject: [docs] report\n"
    "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=xx\n\n"
    "--xx\nContent-Type: text/plain\n\nSee attached.\n"
    "--xx\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n"
    "--xx--\n",
    "received": "Received: from mx.example.net by mail.example.net;\n"
    " Mon, 1 Jan 2024 00:00:00 +0000\n"
    "Received: from client.example.org by mx.example.net; Mon, 1 Jan 2024 00:00:00 +0000\n"
    "From: alice@example.org\nTo: bob@example.net\nSubject: spam offer\n\nBuy now.\n",
    "html-forward": "From: Carol <carol@example.com>\nTo: bob@example.net\nSubject: Fwd: hello\n"
    "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=zz\n\n"
    "--zz\nContent-Type: text/html; charset=utf-8\n\n<p>See <b>below</b></p>\n"
    "--zz\nContent-Type: message/rfc822\n\nFrom: x@example.org\nSubject: inner\n\nInner body.\n"
    "--zz--\n",
}

SIEVE_TEST = shutil.which("sieve-test")


def _config(folder: Path) -> Path:
    uid, gid = (65534, 65534) if os.getuid() == 0 else (os.getuid(), os.getgid())
    conf = folder / "dovecot.conf"
    conf.write_text(
        f"mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = {min(uid, 1)}\n"
        f"first_valid_gid = {min(gid, 1)}\nmail_location = maildir:{folder}/Maildir\n"
        "plugin {\n  sieve_extensions = +vacation-seconds\n}\n"
    )
    return conf


def _pigeonhole(conf: Path, script: Path, message: Path) -> list[tuple[str, ...]]:
    assert SIEVE_TEST is not None
    proc = subprocess.run(
        [SIEVE_TEST, "-c", str(conf), "-f", SENDER, "-r", RECIPIENT, str(script), str(message)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return _parse_output(proc.stdout)


def _parse_output(out: str) -> list[tuple[str, ...]]:
    actions: list[tuple[str, ...]] = []
    current: list[str] | None = None
    for line in out.splitlines():
        m = re.match(r"\s*\* (.*)$", line)
        if m:
            text = m.group(1)
            if current is not None:
                actions.append(tuple(current))
            current = None
            if text.startswith("store message in folder: "):
                current = ["store", text.split(": ", 1)[1], ""]
            elif text.startswith("redirect message to: "):
                actions.append(("redirect", text.split(": ", 1)[1].strip("<>")))
            elif text.startswith("reject message with reason: "):
                actions.append(("reject", text.split(": ", 1)[1]))
            elif text == "discard":
                actions.append(("discard",))
            elif text.startswith("send vacation message"):
                actions.append(("vacation",))
            elif text.startswith("send notification"):
                current = ["notify"]
            continue
        if current is None:
            continue
        flags = re.match(r"\s*\+ add IMAP flags: (.*)$", line)
        if flags and current[0] == "store":
            current[2] = " ".join(sorted(flags.group(1).lower().split()))
        rcpt = re.match(r"\s*\+ (?:To|Cc|Bcc): (.*)$", line)
        if rcpt and current[0] == "notify":
            current.append(rcpt.group(1).strip().lower())
    if current is not None:
        actions.append(tuple(current))
    return sorted(actions)


def _flags(flags: tuple[str, ...] | None) -> str:
    return " ".join(sorted(f.lower() for f in flags or ()))


def _normal(action: Action) -> tuple[str, ...] | None:
    if isinstance(action, Keep):
        return ("store", "INBOX", _flags(action.flags))
    if isinstance(action, FileInto):
        return ("store", action.mailbox, _flags(action.flags))
    if isinstance(action, Redirect):
        return ("redirect", action.address)
    if isinstance(action, Reject | Ereject):
        return ("reject", action.reason)
    if isinstance(action, Discard):
        return ("discard",)
    if isinstance(action, Vacation):
        return ("vacation",)
    if isinstance(action, Notify):
        uri, _ = parse_mailto(action.method)
        assert uri is not None
        return ("notify", *sorted(r.lower() for r in (*uri.to, *uri.cc, *uri.bcc)))
    return None


def _hato(script: str, message: bytes) -> list[tuple[str, ...]]:
    result = run_script(
        parse_script(script),
        message=message,
        envelope=Envelope(SENDER, RECIPIENT),
        environment={},
        mailbox_exists=lambda name: name == "INBOX",
        duplicate_tracker=None,
        clock=FixedClock(),
        limits=SieveLimits(),
    )
    assert not result.errors, result.errors
    decided = [*result.deliveries(), *result.withheld]
    if not result.implicit_keep and not decided:
        decided = [Discard()]
    out = [n for n in (_normal(a) for a in decided) if n is not None]
    if any(a[0] == "discard" for a in out) and len(out) > 1:
        out = [a for a in out if a[0] != "discard"]
    return sorted(out)


def test_corpus_size() -> None:
    assert len(SCRIPTS) >= 20 and len(MESSAGES) >= 10
    assert any("japanese" in name for name in MESSAGES)


@pytest.mark.timeout(120)
def test_same_actions_as_pigeonhole(tmp_path: Path) -> None:
    assert SIEVE_TEST is not None, "sieve-test (Debian dovecot-sieve) is not installed"
    if os.getuid() != 0:
        _compare(tmp_path)
        return
    # As root, sieve-test drops privileges to nobody, who cannot enter pytest's 0700 base
    # directory (and other sessions reset its mode), so the files go to a private /tmp dir.
    with tempfile.TemporaryDirectory(prefix="hato-sieve-") as folder:
        shared = Path(folder)
        shared.chmod(0o777)
        _compare(shared)


def _compare(tmp_path: Path) -> None:
    conf = _config(tmp_path)
    script_files: dict[str, Path] = {}
    for name, text in SCRIPTS.items():
        path = tmp_path / f"{name}.sieve"
        path.write_text(text, "utf-8")
        script_files[name] = path
    message_files: dict[str, Path] = {}
    for name, text in MESSAGES.items():
        path = tmp_path / f"{name}.eml"
        path.write_bytes(text.encode("utf-8"))
        message_files[name] = path
    for path in tmp_path.iterdir():
        path.chmod(0o666 if path.is_file() else 0o777)
    pairs = [(s, m) for s in SCRIPTS for m in MESSAGES]

    def reference(pair: tuple[str, str]) -> list[tuple[str, ...]]:
        return _pigeonhole(conf, script_files[pair[0]], message_files[pair[1]])

    with ThreadPoolExecutor(max_workers=2) as pool:
        expected = dict(zip(pairs, pool.map(reference, pairs), strict=True))
    mismatches = []
    for script_name, message_name in pairs:
        ours = _hato(SCRIPTS[script_name], MESSAGES[message_name].encode("utf-8"))
        theirs = expected[(script_name, message_name)]
        if ours != theirs:
            mismatches.append((script_name, message_name, ours, theirs))
    assert not mismatches, "\n".join(map(str, mismatches))
