"""Maildir++ names, info suffixes and Dovecot control files (hato.ops.maildir)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.ops import maildir
from hato.store.model import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN


@pytest.mark.parametrize(
    ("name", "dirname"),
    [
        ("Sent", ".Sent"),
        ("a/b", ".a.b"),  # Maildir++: "." is the hierarchy separator on disk
        ("日本語/子", ".&ZeVnLIqe-.&W1A-"),  # RFC 3501 §5.1.3 modified UTF-7
        ("x.y", ".x\\2ey"),  # Dovecot listescape: "." inside a level
        ("p\\q", ".p\\5cq"),
        ("~t", ".\\7et"),  # a leading "~" is escaped, an inner one is not
        ("x~y", ".x~y"),
        ("..", ".\\2e\\2e"),  # never a path that leaves the Maildir
    ],
)
def test_folder_dirnames(name: str, dirname: str) -> None:
    assert maildir.folder_dirname(name) == dirname
    assert maildir.folder_name(dirname) == name


def test_utf8_folder_names_are_read_too() -> None:
    # Dovecot's ":UTF-8" mail_location option stores names as plain UTF-8.
    assert maildir.folder_name(".日本語.子") == "日本語/子"


@pytest.mark.parametrize("bad", [".a..b", ".&Jjo", ".a\\2fb", "Sent", "."])
def test_bad_folder_dirnames(bad: str) -> None:
    with pytest.raises(maildir.MaildirFormatError):
        maildir.folder_name(bad)


@given(
    st.lists(
        st.text(
            alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="/\x00"),
            min_size=1,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_folder_names_round_trip(levels: list[str]) -> None:
    name = "/".join(levels)
    if name.upper() == "INBOX":
        return
    dirname = maildir.folder_dirname(name)
    assert "/" not in dirname and dirname.isascii()
    assert dirname.count(".") == len(levels)
    assert maildir.folder_name(dirname) == name


def test_info_suffix_is_in_ascii_order() -> None:
    letters = {"$Forwarded": "a", "Junk": "b"}
    flags = frozenset({SEEN, DELETED, "Junk", DRAFT, ANSWERED, FLAGGED, "$Forwarded"})
    assert maildir.info_suffix(flags, letters) == ":2,DFRSTab"
    assert maildir.info_suffix(frozenset(), letters) == ":2,"


def test_parse_file_name() -> None:
    parsed = maildir.parse_file_name("1700000000.P1Q2R3.host,S=120:2,FSb")
    expected = maildir.ParsedName("1700000000.P1Q2R3.host", frozenset({FLAGGED, SEEN}), "b", 120)
    assert parsed == expected
    # A message still in new/ has no flags yet, whatever its name says.
    in_new = maildir.parse_file_name("1700000000.P1Q2R3.host:2,S", in_new=True)
    assert in_new.flags == frozenset() and in_new.size is None
    # Passed ("P") has no Hato equivalent and is ignored.
    assert maildir.parse_file_name("1.a.h:2,PS").flags == frozenset({SEEN})


def test_host_part_escapes_slash_and_colon() -> None:
    assert maildir.base_name(5, "Q1", hostname="a/b:c") == "5.Q1.a\\057b\\072c"


def test_keyword_assignment_and_file() -> None:
    letters, dropped = maildir.assign_keywords(
        [frozenset({SEEN, "Junk"}), frozenset({"$Forwarded", "Junk"})]
    )
    assert letters == {"Junk": "a", "$Forwarded": "b"}
    assert dropped == []
    data = maildir.render_keywords(letters)
    assert data == b"0 Junk\n1 $Forwarded\n"
    assert maildir.parse_keywords(data) == {"a": "Junk", "b": "$Forwarded"}


def test_more_than_26_keywords_are_reported() -> None:
    many = frozenset(f"k{i:02d}" for i in range(30))
    letters, dropped = maildir.assign_keywords([many])
    assert sorted(letters.values()) == list(maildir.KEYWORD_LETTERS)
    assert dropped == ["k26", "k27", "k28", "k29"]


def test_uidlist_round_trip_and_dovecot_extension_fields() -> None:
    data = maildir.render_uidlist(
        [(3, "1.Q1.h,S=5"), (11, "1.Q2.h,S=7")], uidvalidity=7, uidnext=12, guid="00" * 16
    )
    assert data.splitlines()[0] == b"3 V7 N12 G" + b"00" * 16
    assert data.splitlines()[1:] == [b"3 :1.Q1.h,S=5", b"11 :1.Q2.h,S=7"]
    assert maildir.parse_uidlist(data) == {"1.Q1.h": 3, "1.Q2.h": 11}
    written_by_dovecot = b"3 V1 N3 Gab\n1 :100.M1P1.h,S=5\n2 W9 S8 :200.M2P2.h\n"
    assert maildir.parse_uidlist(written_by_dovecot) == {"100.M1P1.h": 1, "200.M2P2.h": 2}


def test_subscriptions_versions() -> None:
    data = maildir.render_subscriptions(["INBOX", "a/b", "日本語"])
    assert data == b"V\t2\n\nINBOX\na\tb\n&ZeVnLIqe-\n"
    assert maildir.parse_subscriptions(data) == ["INBOX", "a/b", "日本語"]
    # Version 1 (Dovecot < 2.2): one name a line, hierarchy with the namespace separator.
    assert maildir.parse_subscriptions(b"INBOX\nx.y\nz/w\n") == ["INBOX", "x/y", "z/w"]


def test_natural_order_of_delivery_names() -> None:
    names = ["1.P1Q10R0.h", "1.P1Q9R0.h", "2.P1Q1R0.h"]
    assert sorted(names, key=maildir.natural_key) == ["1.P1Q9R0.h", "1.P1Q10R0.h", "2.P1Q1R0.h"]
