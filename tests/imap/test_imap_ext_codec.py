"""Sans-IO pieces of the second-wave IMAP extensions: base subject and collation (RFC 5256,
RFC 5051), the THREAD algorithms, IMAP URLs (RFC 5092), the new command syntax and the
response-grammar checker's new productions."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.codec.imap.basesubject import base_subject, casemap, collation_key
from hato.codec.imap.commands import (
    Append,
    CatText,
    CatUrl,
    Compress,
    QuotaRootArg,
    SetQuota,
    Sort,
    SortCriterion,
    Thread,
)
from hato.codec.imap.framing import Framer, Literal, RawCommand
from hato.codec.imap.grammar import ResponseSyntaxError, check_response
from hato.codec.imap.imapurl import BadUrl, parse_message_url
from hato.codec.imap.parser import CommandSyntaxError, parse_command
from hato.codec.imap.threads import (
    Node,
    ThreadMessage,
    msg_ids,
    normalize_msg_id,
    ordered_subject,
    references,
    references_of,
    render,
)

# -- base subject (RFC 5256 §2.1) ----------------------------------------------------------------


@pytest.mark.parametrize(("subject", "base", "reply"), [
    ("hello", "hello", False),
    ("Re: hello", "hello", True),
    ("RE:   Re: re:hello  ", "hello", True),
    ("Fwd: hello", "hello", True),
    ("fw: hello", "hello", True),
    ("Re[2]: hello", "hello", True),  # subj-refwd with a subj-blob before ":"
    ("[list] hello", "hello", False),  # step 4: a leading blob
    ("[list] Re: [other] hello (fwd)", "hello", True),
    ("[list]", "[list]", False),  # step 4: not when it would leave nothing
    ("[fwd: hello]", "hello", True),  # step 6
    ("Re: [fwd: Re: hello]", "hello", True),
    ("hello (fwd) (FWD)", "hello", True),  # step 2, repeated
    ("hello\t\r\n  world", "hello world", False),  # step 1: WSP runs to one space
    ("Re:", "", True),
    ("Reply: hello", "Reply: hello", False),  # "re" must be followed by ":" (after WSP/blob)
    ("", "", False),
    (None, "", False),
])
def test_base_subject(subject: str | None, base: str, reply: bool) -> None:
    result = base_subject(subject)
    assert (result.text, result.reply) == (base, reply)


def test_unicode_casemap_collation() -> None:
    # RFC 5051 §2: titlecase, then decomposition; ASCII as i;ascii-casemap.
    assert casemap("hello World") == "HELLO WORLD"
    assert casemap("é") == "E\u0301"
    assert casemap("ß") == "ß"  # no simple titlecase mapping
    assert collation_key("") < collation_key("a") < collation_key("B") < collation_key("c")
    assert collation_key("Émile") == collation_key("émile")


@given(st.text(alphabet=st.sampled_from(list("Re: []fwd()\tab x")), max_size=40))
@settings(max_examples=300, deadline=None)
def test_base_subject_never_fails_and_is_trimmed(subject: str) -> None:
    text = base_subject(subject).text
    assert text == text.strip(" ") and "\t" not in text and "  " not in text


# -- THREAD (RFC 5256 §3) ---------------------------------------------------------------------


def _m(n: int, subject: str = "", *, msg_id: str | None = None, refs: tuple[str, ...] = (),
       sent: float | None = None, reply: bool = False) -> ThreadMessage:
    return ThreadMessage(number=n, seq=n, sent=float(n if sent is None else sent),
                         subject=subject, reply=reply, message_id=msg_id, references=refs)


def test_message_ids_are_normalised() -> None:
    assert normalize_msg_id('"01KF8JCEOCBS0045PS"@xxx.yyy.com') == "01KF8JCEOCBS0045PS@xxx.yyy.com"
    assert normalize_msg_id("no-at-sign") is None
    assert msg_ids("<a@b> junk <c@d> <>") == ["a@b", "c@d"]
    # RFC 5256 §3: References first; else the first valid In-Reply-To id only.
    assert references_of("<a@b> <c@d>", "<x@y>") == ("a@b", "c@d")
    assert references_of(None, "<x@y> <z@w>") == ("x@y",)
    assert references_of("garbage", "also garbage") == ()


def test_render_rfc5256_examples() -> None:
    def node(n: int | None, *children: Node) -> Node:
        return Node(_m(n) if n is not None else None, list(children))

    tree = [node(2), node(3, node(6, node(4, node(23)), node(44, node(7, node(96)))))]
    assert render(tree) == b"(2)(3 6 (4 23)(44 7 96))"
    assert render([node(None, node(3), node(5))]) == b"((3)(5))"
    assert render([]) == b""


def test_references_rules() -> None:
    # Duplicate Message-IDs: only the first message keeps it (step 1.A).
    messages = [_m(1, msg_id="a@x"), _m(2, msg_id="a@x"), _m(3, msg_id="b@x", refs=("a@x",))]
    assert render(references(messages)) == b"(1 3)(2)"
    # A loop in the references is not created (steps 1.A and 1.B).
    messages = [_m(1, "p", msg_id="a@x", refs=("b@x",)), _m(2, "q", msg_id="b@x", refs=("a@x",))]
    assert render(references(messages)) == b"(2 1)"
    assert render(references([_m(1, msg_id="a@x", refs=("a@x",))])) == b"(1)"
    # A truncated References: the last reference wins as the parent (step 1.B).
    messages = [_m(1, msg_id="a@x"), _m(2, msg_id="b@x"),
                _m(3, msg_id="c@x", refs=("a@x", "c@x")), _m(4, msg_id="d@x", refs=("b@x",))]
    assert render(references(messages)) == b"(1)(2 4)(3)"
    # A dummy with one child at the top is replaced by that child (step 3).
    assert render(references([_m(1, msg_id="a@x", refs=("gone@x",))])) == b"(1)"
    # A dummy inside a thread disappears; its children move up (step 3).
    messages = [_m(1, msg_id="a@x"), _m(2, msg_id="b@x", refs=("a@x", "gone@x")),
                _m(3, msg_id="c@x", refs=("a@x", "gone@x"))]
    assert render(references(messages)) == b"(1 (2)(3))"
    # Subject merging (step 5): two non-replies under a new dummy; a reply under the original.
    messages = [_m(1, "topic"), _m(2, "topic"), _m(3, "topic", reply=True)]
    assert render(references(messages)) == b"((1)(2)(3))"
    # ...and left with one message (beside a childless dummy), it is replaced by it.
    messages = [_m(1, "s", msg_id="a@x", refs=("top@x", "e@x", "a@x")),
                _m(2, "t", msg_id="b@x", refs=("top@x",))]
    assert render(references(messages)) == b"(1)(2)"
    messages = [_m(1, "topic"), _m(2, "topic", reply=True), _m(3, "other")]
    assert render(references(messages)) == b"(1 2)(3)"
    # Empty subjects are never merged (step 5.B.ii); sibling order is by sent date (step 6).
    messages = [_m(1, "", sent=5), _m(2, "", sent=1), _m(3, "x", msg_id="c@x", sent=3),
                _m(4, "x", refs=("c@x",), sent=9), _m(5, "x", refs=("c@x",), sent=7)]
    assert render(references(messages)) == b"(2)(3 (5)(4))(1)"


def test_references_prunes_dummies_bottom_up() -> None:
    # Regression (found by test_threads_hold_every_message_once): three messages share the
    # Message-ID 1@x, so 2 and 3 get unique ids (step 1.A) and hang under 1. Their References
    # leave a top-level dummy 4@x whose only children are the childless dummies 0@x and 3@x.
    # Judged top-down it had "two children", stayed, and then was an empty thread whose
    # subject lookup (step 5.B.i) failed with IndexError; step 3 must judge it after its
    # children are pruned: it has none, so it goes.
    messages = [_m(1, "a", msg_id="1@x", refs=("2@x",)),
                _m(2, "a", msg_id="1@x", refs=("4@x", "0@x", "1@x")),
                _m(3, "a", msg_id="1@x", refs=("4@x", "3@x", "1@x"))]
    assert render(references(messages)) == b"(1 (2)(3))"
    # A top-level dummy is judged by its children after the splice: two, so it stays.
    messages = [_m(1, msg_id="a@x", refs=("top@x", "gone@x")),
                _m(2, msg_id="b@x", refs=("top@x",))]
    assert render(references(messages)) == b"((1)(2))"
    messages = [_m(1, msg_id="a@x", refs=("top@x", "mid@x")),
                _m(2, msg_id="b@x", refs=("top@x", "x@x"))]
    assert render(references(messages)) == b"((1)(2))"
    # Siblings under a non-top-level dummy are spliced into its parent: no dummy remains.
    messages = [_m(1, msg_id="a@x", refs=("top@x", "mid@x")), _m(2, msg_id="b@x", refs=("mid@x",))]
    assert render(references(messages)) == b"((1)(2))"
    messages = [_m(1, msg_id="a@x", refs=("top@x", "mid@x")),
                _m(2, msg_id="b@x", refs=("top@x",)),
                _m(3, msg_id="c@x", refs=("top@x", "empty@x"))]
    assert render(references(messages)) == b"((1)(2)(3))"
    # ...and left with one message (beside a childless dummy), it is replaced by it.
    messages = [_m(1, "s", msg_id="a@x", refs=("top@x", "e@x", "a@x")),
                _m(2, "t", msg_id="b@x", refs=("top@x",))]
    assert render(references(messages)) == b"(1)(2)"


def test_references_edge_cases() -> None:
    # A message referencing itself, alone or amid other references: no self-parenting.
    assert render(references([_m(1, msg_id="a@x", refs=("b@x", "a@x"))])) == b"(1)"
    # A reference cycle across three messages: one link is refused, all messages stay.
    messages = [_m(1, msg_id="a@x", refs=("c@x",)), _m(2, msg_id="b@x", refs=("a@x",)),
                _m(3, msg_id="c@x", refs=("b@x",))]
    assert render(references(messages)) == b"(3 1 2)"
    # A duplicate Message-ID referenced later: the reference means the first message.
    messages = [_m(1, msg_id="a@x"), _m(2, msg_id="a@x", refs=("a@x",)),
                _m(3, msg_id="c@x", refs=("a@x",))]
    assert render(references(messages)) == b"(1 (2)(3))"
    # No Message-ID at all: each message is its own thread unless subjects merge (step 5).
    assert render(references([_m(1, "s"), _m(2, "t"), _m(3, "s", reply=True)])) == b"(1 3)(2)"
    # Step 5.C: a dummy-headed thread absorbs a same-subject message; two dummies merge.
    messages = [_m(1, "s", msg_id="a@x", refs=("p@x",)), _m(2, "s", msg_id="b@x", refs=("p@x",)),
                _m(3, "s", msg_id="c@x", refs=("q@x",)), _m(4, "s", msg_id="d@x", refs=("q@x",)),
                _m(5, "s", reply=True)]
    assert render(references(messages)) == b"((1)(2)(3)(4)(5))"


def test_orderedsubject() -> None:
    messages = [_m(1, "b", sent=10), _m(2, "a", sent=20), _m(3, "b", sent=5), _m(4, "b", sent=30),
                _m(5, "a", sent=15)]
    # Threads ordered by their first message's date; children are siblings, no grandchildren.
    assert render(ordered_subject(messages)) == b"(3 (1)(4))(5 2)"


def test_deep_threads_do_not_recurse() -> None:
    depth = 5000
    messages = [_m(i, msg_id=f"{i}@x", refs=tuple(f"{j}@x" for j in range(max(1, i - 3), i)))
                for i in range(1, depth + 1)]
    data = render(references(messages))
    assert data == b"(" + b" ".join(b"%d" % i for i in range(1, depth + 1)) + b")"
    check_response(b"* THREAD " + data + b"\r\n")


@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 12)),
                          st.lists(st.integers(0, 12), max_size=5),
                          st.sampled_from(["a", "b", ""]), st.booleans()), max_size=16))
@settings(max_examples=400, deadline=None)
def test_threads_hold_every_message_once(
    spec: list[tuple[int | None, list[int], str, bool]]
) -> None:
    messages = [_m(i + 1, subject, msg_id=None if mid is None else f"{mid}@x",
                   refs=tuple(f"{r}@x" for r in refs), sent=float(i % 3), reply=reply)
                for i, (mid, refs, subject, reply) in enumerate(spec)]
    for tree in (references(messages), ordered_subject(messages)):
        # Every message exactly once; a dummy only at the top, over two or more messages.
        seen: list[int] = []
        pending = [(node, True) for node in tree]
        while pending:
            node, top = pending.pop()
            if node.message is None:
                assert top and len(node.children) >= 2
            else:
                seen.append(node.message.number)
            pending.extend((child, False) for child in node.children)
        assert sorted(seen) == list(range(1, len(messages) + 1))
        data = render(tree)
        numbers = sorted(int(n) for n in re.findall(rb"\d+", data))
        assert numbers == list(range(1, len(messages) + 1))
        check_response(b"* THREAD" + (b" " + data if data else b"") + b"\r\n")


# -- IMAP URLs (RFC 5092) ------------------------------------------------------------------------


def test_message_urls() -> None:
    url = parse_message_url("/INBOX/Sub;UIDVALIDITY=7/;UID=20/;SECTION=1.MIME/;PARTIAL=0.10")
    assert (url.mailbox, url.uidvalidity, url.uid, url.partial) == ("INBOX/Sub", 7, 20, (0, 10))
    assert url.section is not None and url.section.render() == "[1.MIME]"
    url = parse_message_url(";UID=5/;SECTION=HEADER.FIELDS%20(FROM%20TO)")
    assert url.mailbox is None and url.section is not None
    assert url.section.fields == ("FROM", "TO")
    url = parse_message_url("imap://alice@host.example:143/%E6%97%A5/;UID=3")
    assert (url.host, url.user, url.mailbox) == ("host.example", "alice", "日")
    for bad in ("/INBOX/;UID=0", "/;UID=1", "INBOX/;UID=1", "/INBOX/;UID=1/;SECTION=BOGUS",
                "/INBOX;UIDVALIDITY=1/;UID=1/;URLAUTH=anonymous:internal:x", "http://x/",
                "/INBOX/;UID=99999999999", "/%FF/;UID=1"):
        with pytest.raises(BadUrl):
            parse_message_url(bad)


# -- command syntax ------------------------------------------------------------------------------


def _parse(*segments: bytes | Literal) -> object:
    return parse_command(RawCommand(segments)).args


def test_new_commands_parse() -> None:
    assert _parse(b"a UID SORT (REVERSE ARRIVAL cc) \"utf-8\" UNSEEN") == Sort(
        (SortCriterion("ARRIVAL", True), SortCriterion("CC")), "UTF-8",
        _parse(b"a SEARCH UNSEEN").key)  # type: ignore[attr-defined]
    assert isinstance(_parse(b"a THREAD references US-ASCII ALL"), Thread)
    assert _parse(b"a GETQUOTA \"\"") == QuotaRootArg("")
    assert _parse(b"a SETQUOTA \"\" (STORAGE 512 MESSAGE 10)") == SetQuota(
        "", (("STORAGE", 512), ("MESSAGE", 10)))
    assert _parse(b"a SETQUOTA x ()") == SetQuota("x", ())
    assert _parse(b"a COMPRESS deflate") == Compress("DEFLATE")
    append = _parse(b"a APPEND INBOX CATENATE (URL \"/INBOX/;UID=1\" TEXT ", Literal(b"t"),
                    b" UTF8 (", Literal(b"u", binary=True), b"))")
    assert isinstance(append, Append)
    assert append.messages[0].catenate == (CatUrl("/INBOX/;UID=1"), CatText(b"t"),
                                           CatText(b"u", utf8=True))
    append = _parse(b"a APPEND INBOX (\\Seen) UTF8 (", Literal(b"x", binary=True), b")")
    assert isinstance(append, Append) and append.messages[0].utf8
    for bad in (b"a SORT () UTF-8 ALL", b"a SORT (REVERSE) UTF-8 ALL", b"a SORT (DATE) UTF-8",
                b"a THREAD REFS UTF-8 ALL", b"a SETQUOTA x (STORAGE)", b"a COMPRESS",
                b"a APPEND INBOX CATENATE ()", b"a UID GETQUOTA x"):
        with pytest.raises(CommandSyntaxError):
            parse_command(RawCommand((bad,)))
    with pytest.raises(CommandSyntaxError) as refused:
        parse_command(RawCommand((b"a THREAD REFERENCES KOI8-R ALL",)))
    assert (refused.value.status, refused.value.code) == ("NO", "BADCHARSET (UTF-8 US-ASCII)")


def test_search_new_means_recent_unseen() -> None:
    key = _parse(b"a SEARCH NEW").key  # type: ignore[attr-defined]
    assert repr(key) == "KeyAnd(keys=(KeyRecent(recent=True), KeyFlag(flag='\\\\Seen', " \
        "present=False)))"


def test_framer_hands_over_unframed_bytes() -> None:
    framer = Framer()
    framer.feed(b"a COMPRESS DEFLATE\r\n\x01\x02partial")
    assert isinstance(framer.next_event(), RawCommand)
    assert framer.take_buffered() == b"\x01\x02partial"
    assert framer.next_event() is None


# -- response grammar --------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b"* SORT\r\n",
    b"* SORT 2 3 6\r\n",
    b"* SORT 2 84 882 (MODSEQ 917162500)\r\n",
    b"* THREAD\r\n",
    b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n",
    b"* THREAD ((3)(5))\r\n",
    b'* QUOTA "" (STORAGE 10 512)\r\n',
    b'* QUOTA "" ()\r\n',
    b'* QUOTA "#user/alice" (MESSAGE 42 1000 STORAGE 1 2)\r\n',
    b'* QUOTAROOT INBOX ""\r\n',
    b"* QUOTAROOT comp.mail.mime\r\n",
    b"* VANISHED (EARLIER) 1:5,7\r\n",
    b"a NO [OVERQUOTA] APPEND failed\r\n",
    b"a NO [BADURL /INBOX;UIDVALIDITY=1/;UID=2] invalid URL\r\n",
    b"a NO [COMPRESSIONACTIVE] DEFLATE active via TLS\r\n",
    b"* ENABLED QRESYNC UTF8=ACCEPT\r\n",
])
def test_grammar_accepts(line: bytes) -> None:
    assert check_response(line) == len(line)


@pytest.mark.parametrize("line", [
    b"* THREAD (1 (2))\r\n",  # thread-nested needs two thread-lists
    b"* THREAD ()\r\n",
    b"* THREAD (0)\r\n",
    b"* SORT 0\r\n",
    b'* QUOTA "" (STORAGE 10)\r\n',
    b'* QUOTA "" (STORAGE 600 512)\r\n',  # usage above the limit
])
def test_grammar_refuses(line: bytes) -> None:
    with pytest.raises(ResponseSyntaxError):
        check_response(line)


def test_grammar_utf8_quoted_strings() -> None:
    line = '* LIST () "/" "Entwürfe/日本"\r\n'.encode()
    with pytest.raises(ResponseSyntaxError):
        check_response(line)  # RFC 6855 §3: not without ENABLE UTF8=ACCEPT
    assert check_response(line, utf8=True) == len(line)
    for broken in (b'* LIST () "/" "\xc3"\r\n', b'* LIST () "/" "\xed\xa0\x80"\r\n',
                   b'* LIST () "/" "\xc0\xaf"\r\n'):
        with pytest.raises(ResponseSyntaxError):
            check_response(broken, utf8=True)
