"""IMAP ENVELOPE values (RFC 9051 §7.5.2) from messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hato.codec.mime import Envelope, EnvelopeAddress, envelope, parse_message


def _envelope(headers: str) -> Envelope:
    data = (headers.replace("\n", "\r\n") + "\r\nbody\r\n").encode("utf-8")
    return envelope(parse_message(data), data)


def test_rfc9051_example_envelope() -> None:
    env = _envelope(
        "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\n"
        "From: Terry Gray <gray@cac.washington.edu>\n"
        "Subject: IMAP4rev2 WG mtg summary and minutes\n"
        "To: imap@cac.washington.edu\n"
        "cc: minutes@CNRI.Reston.VA.US,\n"
        "        John Klensin <KLENSIN@MIT.EDU>\n"
        "Message-Id: <B27397-0100000@cac.washington.edu>\n"
    )
    gray = (EnvelopeAddress("Terry Gray", None, "gray", "cac.washington.edu"),)
    assert env.date == "Wed, 17 Jul 1996 02:23:25 -0700 (PDT)"
    assert env.subject == "IMAP4rev2 WG mtg summary and minutes"
    assert env.from_ == gray
    assert env.sender == gray  # RFC 9051 §7.5.2: absent Sender is the from member
    assert env.reply_to == gray
    assert env.to == (EnvelopeAddress(None, None, "imap", "cac.washington.edu"),)
    assert env.cc == (
        EnvelopeAddress(None, None, "minutes", "CNRI.Reston.VA.US"),
        EnvelopeAddress("John Klensin", None, "KLENSIN", "MIT.EDU"),
    )
    assert env.bcc is None
    assert env.in_reply_to is None
    assert env.message_id == "<B27397-0100000@cac.washington.edu>"
    assert env.date_value == datetime(1996, 7, 17, 2, 23, 25, tzinfo=timezone(timedelta(hours=-7)))


def test_empty_fields() -> None:
    env = _envelope("Subject:\nSender:\nReply-To: \nTo:\nIn-Reply-To:\nFrom: a@b.example\n")
    assert env.subject == ""  # present but empty: the empty string
    assert env.in_reply_to == ""
    assert env.date is None and env.message_id is None  # absent: NIL
    assert env.to is None  # RFC 9051 §7.5.2: empty address fields are NIL
    assert env.sender == env.from_ == env.reply_to  # empty Sender / Reply-To take From


def test_no_from_at_all() -> None:
    env = _envelope("Subject: draft\n")
    assert env.from_ is None and env.sender is None and env.reply_to is None


def test_groups_have_start_and_end_markers() -> None:
    env = _envelope(
        "From: x@example.com\n"
        'To: A Group: ed@a.test, "Joe Q." <joe@b.test>;, solo@c.test\n'
        "Cc: Undisclosed recipients:;\n"
    )
    assert env.to == (
        EnvelopeAddress(None, None, "A Group", None),
        EnvelopeAddress(None, None, "ed", "a.test"),
        EnvelopeAddress("Joe Q.", None, "joe", "b.test"),
        EnvelopeAddress(None, None, None, None),
        EnvelopeAddress(None, None, "solo", "c.test"),
    )
    assert env.cc == (
        EnvelopeAddress(None, None, "Undisclosed recipients", None),
        EnvelopeAddress(None, None, None, None),
    )


def test_raw_names_keep_encoded_words_and_routes() -> None:
    env = _envelope(
        "From: =?ISO-8859-1?Q?Keld_J=F8rn?= <keld@dkuug.dk>\n"
        'Sender: "Doe, John \\"JD\\"" <@relay.example:john@example.com>\n'
        "Reply-To: jdoe@example.com (John Doe), Whomever\n"
    )
    assert env.from_ == (EnvelopeAddress("=?ISO-8859-1?Q?Keld_J=F8rn?=", None, "keld", "dkuug.dk"),)
    assert env.sender == (
        EnvelopeAddress('Doe, John "JD"', "@relay.example", "john", "example.com"),
    )
    assert env.reply_to == (
        EnvelopeAddress("John Doe", None, "jdoe", "example.com"),
        EnvelopeAddress(None, None, "Whomever", "MISSING_DOMAIN"),  # host is never NIL
    )


def test_quoted_local_part_and_utf8_address() -> None:
    env = _envelope('From: "john doe"@example.com, 山田 <yamada@例え.jp>\n')
    assert env.from_ == (
        EnvelopeAddress(None, None, '"john doe"', "example.com"),
        EnvelopeAddress("山田", None, "yamada", "例え.jp"),
    )


def test_folded_subject_is_unfolded_raw() -> None:
    env = _envelope("Subject: a long\n  folded =?utf-8?q?s=C3=BCbject?=\n")
    assert env.subject == "a long  folded =?utf-8?q?s=C3=BCbject?="  # RFC 5322 §2.2.3
    assert env.subject_text == "a long folded sübject"


def test_envelope_of_an_encapsulated_message() -> None:
    data = (
        b"Subject: outer\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\nFrom: in@example.com\r\nDate: 1 Jan 2021 00:00 +0000\r\n\r\nx"
    )
    inner = parse_message(data).message
    assert inner is not None
    env = envelope(inner, data)
    assert env.subject == "inner"
    assert env.from_ == (EnvelopeAddress(None, None, "in", "example.com"),)
    assert env.date_value == datetime(2021, 1, 1, tzinfo=UTC)
