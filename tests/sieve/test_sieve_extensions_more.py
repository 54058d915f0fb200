"""extlists (RFC 6134), mboxmetadata/servermetadata (RFC 5490 §3.3-§4.2), replace and
enclose (RFC 5703 §5-§6), and the vacation/editheader policy options, run through
``parse_script``/``run_script``."""

from __future__ import annotations

import pytest

from hato.codec.mime import parse_message, text_content
from hato.codec.sieve import (
    Envelope,
    FileInto,
    Keep,
    Redirect,
    SieveError,
    SieveLimits,
    SieveResult,
    Vacation,
    parse_script,
    run_script,
)
from hato.codec.sieve.addresses import parse_path
from hato.codec.sieve.compose import vacation_reply
from hato.codec.sieve.ext_extlists import ADDRBOOK_DEFAULT, StaticLists, normalize_list_name
from hato.core.clock import FixedClock

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Cc: carol@example.com, dave@example.com\r\n"
    b"Subject: Lunch plans\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)
MULTIPART = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: Files\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"Hello there\r\n"
    b"--b1\r\n"
    b"Content-Type: application/x-msdownload\r\n"
    b'Content-Disposition: attachment; filename="setup.exe"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"TVqQAAMAAAAEAAAA\r\n"
    b"--b1--\r\n"
)
ENVELOPE = Envelope("alice@example.org", "bob@example.net")
LISTS = StaticLists(
    {
        ":addrbook:default": ["Carol@Example.com", "erin@example.com"],
        "tag:example.com,2011-04-10:team": ["frank@example.net", "grace@example.net"],
    }
)


def run(
    text: str,
    message: bytes = MESSAGE,
    *,
    envelope: Envelope = ENVELOPE,
    limits: SieveLimits | None = None,
    lists: StaticLists | None = LISTS,
    metadata: dict[tuple[str | None, str], str] | None = None,
) -> SieveResult:
    store = metadata or {}
    return run_script(
        parse_script(text),
        message=message,
        envelope=envelope,
        environment={},
        mailbox_exists=lambda name: name in ("INBOX", "Work"),
        duplicate_tracker=None,
        clock=FixedClock(1_700_000_000.0),
        limits=limits or SieveLimits(),
        ext_lists=lists,
        metadata=lambda box, entry: store.get((box, entry)),
    )


def errors_of(text: str) -> list[str]:
    with pytest.raises(SieveError) as info:
        parse_script(text)
    return [message for _, message in info.value.errors]


# -- extlists (RFC 6134) ------------------------------------------------------------------


def test_list_names_are_normalized() -> None:
    # RFC 6134 §2.5: ":" is short for urn:ietf:params:sieve:, "default" ignores case and
    # percent-encoding
    for name in (":addrbook:default", ":ADDRBOOK:DEFAULT", ":AddrBook:%44%65%66ault"):
        assert normalize_list_name(name) == ADDRBOOK_DEFAULT
    assert normalize_list_name("tag:example.com,2010-05-28:mylist") is not None
    assert normalize_list_name(":addrbook:Family") != normalize_list_name(":addrbook:family")
    # §2.5 absolute URIs only; §2.6 no addrbook extensions are defined; only addrbook exists
    for bad in ("no-scheme", "http://x/#frag", ":addrbook:personal?label=Family", ":frop:x"):
        assert normalize_list_name(bad) is None


def test_list_match_sets_the_matching_member() -> None:
    script = """require ["extlists", "variables", "fileinto", "envelope"];
        if envelope :list "from" ":addrbook:default" { discard; }
        if address :list "cc" ":addrbook:default" { fileinto "${0}"; }"""
    result = run(script)
    # carol matched without regard to case; RFC 6134 §2.2: ${0} is the list's value
    assert result.actions == (FileInto("Carol@Example.com"),)
    envelope = Envelope("erin@example.com", "bob@example.net")
    assert len(run(script, envelope=envelope).actions) == 2


def test_list_match_on_header_and_string_and_other_lists() -> None:
    assert run(
        'require ["extlists", "fileinto"];'
        'if header :list "to" "tag:example.com,2011-04-10:team" { fileinto "Work"; }'
    ).implicit_keep
    result = run(
        'require ["extlists", "variables", "fileinto"]; set "x" " grace@example.net ";'
        'if string :list "${x}" "tag:example.com,2011-04-10:team" { fileinto "Work"; }'
    )
    assert result.actions == (FileInto("Work"),)  # §2.2: surrounding white space ignored


def test_list_errors_at_compile_time() -> None:
    found = errors_of(
        'require "extlists";'
        'if address :list :comparator "i;octet" "from" ":addrbook:personal?x=y" { stop; }'
    )
    # RFC 6134 §2.2 no comparator with :list; §2.6 invalid name; plus the summary
    assert len(found) == 3 and "comparator" in found[0] and "list name" in found[1]
    # §2.2: :list on a test that does not support it is an error
    assert any(
        ":list" in m
        for m in errors_of('require ["extlists", "body"]; if body :list ":addrbook:default" {}')
    )
    # the tag needs the capability
    assert any(":list" in m for m in errors_of('if header :list "to" ":addrbook:default" {}'))


def test_unknown_list_is_a_runtime_error_and_valid_ext_list() -> None:
    result = run('require "extlists"; if header :list "to" "tag:x,2000:none" { discard; }')
    assert result.errors and result.implicit_keep and not result.actions  # RFC 6134 §2.2
    script = 'require ["extlists", "fileinto"]; if valid_ext_list {0} {{ fileinto "Work"; }}'
    assert run(script.format('[":addrbook:default", "tag:example.com,2011-04-10:team"]')).actions
    assert not run(script.format('["frop:666"]')).actions  # §2.7: unknown
    assert not run(script.format('[":addrbook:default?x"]')).actions  # §2.7: invalid
    # without a provider only an empty default address book exists (§2.5 last resort)
    assert run(script.format('":addrbook:default"'), lists=None).actions
    assert not run(
        'require ["extlists", "fileinto"]; if header :list "cc" ":addrbook:default" '
        '{ fileinto "Work"; }',
        lists=None,
    ).actions


def test_redirect_list_sends_to_every_member() -> None:
    result = run('require "extlists"; redirect :list "tag:example.com,2011-04-10:team";')
    assert [a.address for a in result.actions if isinstance(a, Redirect)] == [
        "frank@example.net",
        "grace@example.net",
    ]
    assert not result.implicit_keep
    result = run('require "extlists"; redirect :list "tag:x,2000:unknown";')
    assert result.errors and result.implicit_keep  # RFC 6134 §2.3: runtime error
    assert errors_of('require "extlists"; redirect :list "not a uri";')


# -- metadata (RFC 5490 §3.3-§4.2) --------------------------------------------------------

META = {
    ("INBOX", "/private/vendor/vendor.isode/auto-replies"): "on",
    (None, "/shared/admin"): "mailto:admin@example.net",
}


def test_metadata_tests() -> None:
    script = """require ["mboxmetadata", "servermetadata", "variables", "fileinto"];
        if metadata :is "INBOX" "/private/vendor/vendor.isode/auto-replies" "ON" {
            fileinto "Work";
        }
        if servermetadata :matches "/shared/admin" "mailto:*" { set "admin" "${1}"; }
        if metadataexists "INBOX" ["/private/vendor/vendor.isode/auto-replies"] { keep; }
        if servermetadataexists ["/shared/admin", "/shared/missing"] { discard; }
        if metadata "INBOX" "/private/missing" "" { discard; }
        if metadata "INBOX" "not-an-entry" "on" { discard; }"""
    result = run(script, metadata=META)
    # RFC 5490 §3.3: :is with i;ascii-casemap by default; §4.2: all must exist
    assert result.actions == (FileInto("Work"), Keep())
    assert not result.errors


def test_metadata_syntax_errors() -> None:
    assert errors_of('require "mboxmetadata"; if metadata "INBOX" "/private/x" {}')
    assert errors_of('if metadata "INBOX" "/private/x" "y" {}')  # needs the capability
    assert errors_of('require "mboxmetadata"; if servermetadata "/private/x" "y" {}')


# -- replace and enclose (RFC 5703 §5-§6) -------------------------------------------------


def stored(result: SieveResult) -> bytes:
    keep = result.deliveries()[-1]
    assert isinstance(keep, Keep | FileInto) and keep.message is not None
    return keep.message


def test_replace_whole_message_keeps_other_fields() -> None:
    result = run(
        'require "replace"; replace :subject "Geändert" :from "filter@example.net" "New body";',
        MULTIPART,
    )
    data = stored(result)
    root = parse_message(data)
    assert root.mime_type == "text/plain" and text_content(root, data) == "New body"
    assert root.header("to") is not None  # RFC 5703 §5: other fields preserved
    assert root.header("original-subject").text().strip() == "Files"
    assert root.header("original-from").text().strip() == "alice@example.org"
    assert root.header("subject").text() == "Geändert"
    assert b"=?UTF-8?" in data  # MUST RFC 2047-encode non-ASCII
    assert len(root.header_all("content-type")) == 1


def test_replace_inside_foreverypart_replaces_the_part() -> None:
    script = """require ["replace", "foreverypart", "mime"];
        foreverypart {
            if header :mime :param "filename" "Content-Disposition" "*.exe" {
                replace "The attachment was removed.";
            }
        }"""
    # the :matches default is :is; use :matches explicitly for the wildcard
    result = run(script.replace(':param "filename"', ':param "filename" :matches'), MULTIPART)
    data = stored(result)
    root = parse_message(data)
    assert [p.mime_type for p in root.children] == ["text/plain", "text/plain"]
    assert text_content(root.children[1], data) == "The attachment was removed."
    assert b"setup.exe" not in data and root.header("subject") is not None


def test_replace_of_a_multipart_is_not_descended_into() -> None:
    script = """require ["replace", "foreverypart", "variables"];
        set "n" "";
        foreverypart { set "n" "${n}x"; replace :mime text:
Content-Type: text/plain

gone
.
; }"""
    result = run(script, MULTIPART)
    data = stored(result)
    # the first part visited is the message itself: its children are never visited
    assert parse_message(data).mime_type == "text/plain"
    assert text_content(parse_message(data), data).strip() == "gone"


def test_replace_syntax_rules() -> None:
    assert errors_of('require "replace"; replace :mime :subject "x" "y";')  # RFC 5703 §5
    assert errors_of('require "replace"; replace :from "not an address" "y";')
    result = run('require ["replace", "variables"]; set "f" "bad"; replace :from "${f}" "y";')
    assert result.errors and result.implicit_keep and result.keep_message is None


def test_enclose_wraps_the_message_but_not_redirects() -> None:
    script = """require ["enclose", "variables"];
        redirect :copy "archive@example.com";
        enclose :subject "Suspicious" :headers ["to", "message-id"] "Check this.";"""
    result = run(script.replace(":copy ", ""))
    redirect = result.actions[0]
    assert isinstance(redirect, Redirect) and redirect.message is None  # RFC 5703 §6
    result = run('require "enclose"; enclose :headers ["to"] "Check this."; keep;')
    data = stored(result)
    root = parse_message(data)
    assert root.mime_type == "multipart/mixed"
    assert [p.mime_type for p in root.children] == ["text/plain", "message/rfc822"]
    assert text_content(root.children[0], data) == "Check this."
    assert root.header("subject").text() == "Lunch plans"  # from the enclosed message
    assert root.header("to").text().strip() == "bob@example.net"
    assert root.header("date") is not None and root.header("from") is not None
    assert data.count(MESSAGE[:-2]) == 1  # the original is inside, unchanged
    # a redirect after the enclose still sends the original (§6)
    result = run('require "enclose"; enclose "x"; redirect "archive@example.com";')
    assert isinstance(result.actions[0], Redirect) and result.actions[0].message is None


# -- policy options -------------------------------------------------------------------------


def test_vacation_options() -> None:
    message = MESSAGE.replace(b"Subject: Lunch plans\r\n", b"")
    limits = SieveLimits(vacation_default_subject="Away")
    vac = run('require "vacation"; vacation "gone";', message, limits=limits).actions[0]
    assert isinstance(vac, Vacation) and vac.subject == "Away"  # RFC 5230 §5.3
    limits = SieveLimits(vacation_subject_template="Re (auto): %{subject}")
    vac = run('require "vacation"; vacation "gone";', limits=limits).actions[0]
    assert isinstance(vac, Vacation) and vac.subject == "Re (auto): Lunch plans"
    reply = vacation_reply(vac, now=1_700_000_000.0)
    assert reply is not None and reply.sender == ""  # RFC 5230 §5.1: <>
    limits = SieveLimits(vacation_send_from_recipient=True)
    vac = run('require "vacation"; vacation "gone";', limits=limits).actions[0]
    assert isinstance(vac, Vacation) and vac.return_path == "bob@example.net"
    # RFC 5230 §4.5: the original recipient counts only when configured
    envelope = Envelope("alice@example.org", "bob-alias@example.net", "bob@example.net")
    assert not run('require "vacation"; vacation "x";', envelope=envelope).actions
    limits = SieveLimits(vacation_use_original_recipient=True)
    assert run('require "vacation"; vacation "x";', envelope=envelope, limits=limits).actions
    limits = SieveLimits(user_email="bob@example.net")
    assert run('require "vacation"; vacation "x";', envelope=envelope, limits=limits).actions


def test_subject_can_always_be_edited() -> None:
    # RFC 5293 §6: Subject may always be added and deleted; Received never deleted
    limits = SieveLimits(
        editheader_forbid_add=frozenset({"subject"}),
        editheader_forbid_delete=frozenset({"subject"}),
    )
    script = 'require "editheader"; deleteheader "subject"; deleteheader "received";'
    message = b"Received: by x\r\n" + MESSAGE
    data = stored(run(script, message, limits=limits))
    assert b"Subject:" not in data and b"Received:" in data


def test_envelope_paths_follow_rfc5321() -> None:
    assert parse_path("<@a.example,@b.example:user@example.org>") == "user@example.org"
    assert parse_path("<>") == "" and parse_path("<MAILER-DAEMON>") == "MAILER-DAEMON"
    for bad in ("user@", "<<a@b>", "a@b>", "<a@@b>", "<@a.example:x@y", "<a.example:x@y>"):
        assert parse_path(bad) is None
    result = run(
        'require ["envelope", "fileinto"]; if envelope :domain "from" "" { fileinto "Work"; }',
        envelope=Envelope("user@", "bob@example.net"),
    )
    assert result.implicit_keep  # a malformed path has no address parts
