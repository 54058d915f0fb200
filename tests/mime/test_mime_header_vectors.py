"""Header-level vectors of Stalwart mail-parser (../shared/vectors/mime, README §7).

Each corpus must reach its pass count; the cases where Hato deliberately reads the header
differently from Stalwart are listed by input with the reason, and checked to stay different
in exactly that way (so a regression on either side shows up).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hato.codec.mime.addresses import Group, Mailbox, parse_address_list, parse_msg_ids
from hato.codec.mime.dates import parse_date
from hato.codec.mime.headers import decode_unstructured, field_body, header_bytes_to_str, unfold
from hato.codec.mime.params import parse_mime_value

VECTORS = Path(__file__).parents[2] / ".." / "shared" / "vectors" / "mime"
RESOURCES = VECTORS / "stalwart-mail-parser" / "resources"


def _load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((RESOURCES / name).read_text(encoding="utf-8"))
    return cases


def _field(header: str) -> str:
    """The vector's field body as the parsers get it: cut at the field end, unfolded."""
    return header_bytes_to_str(unfold(field_body(header.encode("utf-8"))))


def _mailbox(m: Mailbox) -> dict[str, str | None]:
    address = m.address
    if m.route is not None:
        address = f"{m.route}:{address}"
    return {"name": m.name, "address": address}


def _address_shape(items: tuple[Mailbox | Group, ...]) -> dict[str, Any]:
    """Stalwart's shape: {"List": [...]}, or {"Group": [...]} with ungrouped runs as name-less
    groups when any group is present."""
    if not any(isinstance(i, Group) for i in items):
        return {"List": [_mailbox(i) for i in items if isinstance(i, Mailbox)]}
    groups: list[dict[str, Any]] = []
    run: list[dict[str, str | None]] = []
    for item in items:
        if isinstance(item, Group):
            if run:
                groups.append({"name": None, "addresses": run})
                run = []
            groups.append({"name": item.name, "addresses": [_mailbox(m) for m in item.members]})
        else:
            run.append(_mailbox(item))
    if run:
        groups.append({"name": None, "addresses": run})
    return {"Group": groups}


# Input prefix -> why Hato's reading differs from Stalwart's.
ADDRESS_DIFFERENCES = {
    "Pete(A nice \\) chap)": "comments are not folded into the display name",
    "Pete(A nice \n": "unfolded first (RFC 5322 §2.2.3): '\\ ' then ends the comment early",
    "A Group(Some people)": "comments not folded into names; a lone comment is no mailbox",
    "(Empty list)(start)Hidden": "comments are not folded into names or mailboxes",
    "Mary Smith <@node.test:mary@example.net>, ,": "CFWS around the obs-domain dot dropped",
    "John Doe <jdoe@machine(comment).": "CFWS in obs-domain dropped, comment not in name",
    "Nathaniel Borenstein <nsb@thumper.bellcore.com>\n": "trailing comment not in the name",
    "Name (comment) =?utf-8?q?Doe?=": "the comment is not appended to the phrase",
}


def test_address_vectors() -> None:
    passed = 0
    different: set[str] = set()
    for case in _load("address.json"):
        got = _address_shape(parse_address_list(_field(case["header"])))
        if got == case["expected"]:
            passed += 1
        else:
            key = next((k for k in ADDRESS_DIFFERENCES if case["header"].startswith(k)), None)
            assert key is not None, (case["header"], got, case["expected"])
            different.add(key)
    assert different == set(ADDRESS_DIFFERENCES)
    assert passed == 52  # of 60


CONTENT_TYPE_DIFFERENCES = {
    "application/pdf\n   filename*0*=": "RFC 2231 §4.1 (1): only the first section has a charset",
    'image/jpeg;\n   name="=?iso': "RFC 2047 §6.2: space between encoded words is dropped",
    "malicious/attempt": "malformed RFC 2231 section names are kept as written",
}


def _content_type_shape(text: str) -> dict[str, Any] | None:
    value = parse_mime_value(text)
    if value is None:
        return None
    return {
        "c_type": value.type,
        "c_subtype": value.subtype,
        "attributes": sorted([k, v] for k, v in value.params) or None,
    }


def test_content_type_vectors() -> None:
    passed = 0
    different: set[str] = set()
    for case in _load("content_type.json"):
        expected = case["expected"]
        if expected is not None:
            attributes = [
                a for a in expected.get("attributes") or [] if not a[0].endswith("-language")
            ]  # Stalwart reports RFC 2231 languages as "<name>-language" parameters
            expected = {**expected, "attributes": sorted(attributes) or None}
        got = _content_type_shape(_field(case["header"]))
        if got == expected:
            passed += 1
        else:
            key = next((k for k in CONTENT_TYPE_DIFFERENCES if case["header"].startswith(k)), None)
            assert key is not None, (case["header"], got, expected)
            different.add(key)
    assert different == set(CONTENT_TYPE_DIFFERENCES)
    assert passed == 100  # of 103


def test_rfc2231_languages_are_reported() -> None:
    value = parse_mime_value(
        "application/x-stuff; title*0*=us-ascii'en'This%20is%20even%20more%20;"
        ' title*1*=%2A%2A%2Afun%2A%2A%2A%20; title*2="isn\'t it!"'
    )
    assert value is not None
    assert value.param("title") == "This is even more ***fun*** isn't it!"
    assert value.languages == (("title", "en"),)
    assert ("title*0*", "us-ascii'en'This%20is%20even%20more%20") in value.raw_params


def test_date_vectors() -> None:
    passed = 0
    failed: list[str] = []
    for case in _load("date.json"):
        value = parse_date(_field(case["header"]))
        got = None
        if value is not None:
            offset = value.utcoffset()
            assert offset is not None
            minutes = int(offset.total_seconds()) // 60
            got = {
                "year": value.year,
                "month": value.month,
                "day": value.day,
                "hour": value.hour,
                "minute": value.minute,
                "second": value.second,
                "tz_before_gmt": minutes < 0,
                "tz_hour": abs(minutes) // 60,
                "tz_minute": abs(minutes) % 60,
            }
        if got == case["expected"]:
            passed += 1
        else:
            failed.append(case["header"])
    # No date there: only numbers, no hour ":" minute (RFC 5322 §3.3 time-of-day)
    assert failed == [" 4 8 15 16 23 42, 4 8 15 16 23 42, 4 8 15 16 23 42, "]
    assert passed == 39


def test_unstructured_vectors() -> None:
    passed = 0
    failed: list[str] = []
    for case in _load("unstructured.json"):
        if decode_unstructured(case["header"].encode("utf-8")) == case["expected"]:
            passed += 1
        else:
            failed.append(case["header"])
    # Stalwart inserts a space between an encoded word and the text it touches; Hato decodes
    # the word (RFC 2047 §5 would not even allow it there) but invents no characters.
    assert all("SUSPECTED SPAM]=?" in h or "=?utf-8?Q??=here" in h for h in failed), failed
    assert passed == 26  # of 30


def test_message_id_vectors() -> None:
    for case in _load("id.json"):
        got = list(parse_msg_ids(_field(case["header"]))) or None
        assert got == case["expected"], case["header"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=", "テスト"),
        # a character split across two adjacent words of one charset (RFC 2047 §5: not
        # allowed to be produced, but real mailers do; decoding the joined bytes repairs it)
        ("=?UTF-8?B?44OG44K544M=?= =?UTF-8?B?iA==?=", "テスト"),
        ("=?utf-8?q?caf=C3?=\r\n =?utf-8?q?=A9?=", "café"),
        ("=?iso-8859-1?q?a?= b =?iso-8859-1?q?c?=", "a b c"),
        ("=?unknown-8bit?q?x=FFy?=", "x\ufffdy"),
        ("Re: =?utf-8*en?Q?Hello?=", "Re: Hello"),
    ],
)
def test_encoded_words(header: str, expected: str) -> None:
    assert decode_unstructured(header.encode("ascii")) == expected
