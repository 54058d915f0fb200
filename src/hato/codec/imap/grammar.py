"""A strict recursive-descent checker of IMAP server responses (what a client must parse).

Implements the server-to-client productions of RFC 9051 §9 (greeting, response-data,
response-tagged, continue-req, resp-text-code, mailbox-data, message-data with msg-att,
envelope and body structure), RFC 3501 §9 forms (RECENT, SEARCH, LSUB), RFC 7162 (MODSEQ,
HIGHESTMODSEQ, VANISHED), RFC 4731 ESEARCH, RFC 2971 ID, RFC 5161 ENABLED, RFC 2342 NAMESPACE,
RFC 5256 SORT and THREAD, RFC 9208 QUOTA and QUOTAROOT, RFC 6855 §3 UTF-8 quoted strings
(``utf8=True``: after ENABLE UTF8=ACCEPT).
Responses of other extensions are accepted with the generic ``tagged-ext`` shape (atoms,
numbers, strings and parenthesised lists). Hato's tests run every line its server sends through
``check_stream`` in strict mode.

``prefix_ok`` accepts a response cut short (the corpus of RFC examples wraps lines); non-strict
mode also accepts a response code without text after it (``* OK [UIDNEXT 4]``), as RFC examples
show, and 8-bit text.

Left out: semantic checks (e.g. that UIDs ascend); those belong to the tests.
"""

from __future__ import annotations

from hato.codec.imap.grammar_fetch import FetchGrammar
from hato.codec.imap.grammar_lexer import (
    ASTRING,
    ATOM,
    DIGITS,
    Incomplete,
    ResponseSyntaxError,
)

__all__ = ["ResponseSyntaxError", "check_response", "check_stream"]


class _Checker(FetchGrammar):
    """The response-level productions of RFC 9051 §9."""

    def response(self) -> None:
        b = self.peek()
        if b == 0x2B:  # "+"
            self.p += 1
            self.sp()
            if self.peek() != 0x0D:  # continue-req: "+" SP (resp-text / base64), maybe empty
                self.resp_text()
        elif b == 0x2A:  # "*"
            self.p += 1
            self.sp()
            self.untagged()
        else:
            self.run(ASTRING - {0x2B}, "tag")
            self.sp()
            word = self.atom().upper()
            if word not in (b"OK", b"NO", b"BAD"):
                raise self.fail("expected OK, NO or BAD")
            self.sp()
            self.resp_text()
        self.crlf()

    def resp_text(self) -> None:
        if self.peek() == 0x5B:
            self.p += 1
            self.resp_code()
            self.lit(b"]")
            if not self.strict and self.peek() in (0x0D,):
                return
            self.sp()
            if not self.strict and self.peek() == 0x0D:
                return
        self.text()

    def resp_code(self) -> None:
        name = self.run(ATOM, "response code").upper()
        if name in (b"ALERT", b"PARSE", b"READ-ONLY", b"READ-WRITE", b"TRYCREATE",
                    b"NOMODSEQ", b"CLOSED", b"UIDNOTSTICKY"):
            return
        if name in (b"UIDNEXT", b"UIDVALIDITY", b"UNSEEN"):
            self.sp()
            self.number(nonzero=True)
        elif name == b"HIGHESTMODSEQ":
            self.sp()
            self.number(bits=63)
        elif name == b"PERMANENTFLAGS":
            self.sp()
            self.flag_list(perm=True)
        elif name == b"CAPABILITY":
            self.capabilities()
        elif name == b"BADCHARSET":
            if self.peek() == 0x20:
                self.sp()
                self.lit(b"(")
                self.astring()
                while self.peek() == 0x20:
                    self.sp()
                    self.astring()
                self.lit(b")")
        elif name == b"APPENDUID":
            self.sp()
            self.number(nonzero=True)
            self.sp()
            self.seqset()
        elif name == b"COPYUID":
            self.sp()
            self.number(nonzero=True)
            self.sp()
            self.seqset()
            self.sp()
            self.seqset()
        elif name == b"MODIFIED":
            self.sp()
            self.seqset()
        elif self.peek() == 0x20:
            # atom [SP 1*<any TEXT-CHAR except "]">]
            self.sp()
            start = self.p
            while self.peek() not in (0x5D, 0x0D, 0x0A):
                self.p += 1
            if self.p == start:
                raise self.fail("empty response code data")

    def capabilities(self) -> None:
        while self.peek() == 0x20:
            self.sp()
            self.atom()

    def untagged(self) -> None:
        if self.peek() in DIGITS:
            number = self.number()
            self.sp()
            word = self.atom().upper()
            if word in (b"EXISTS", b"RECENT"):
                return
            if number == 0:
                raise self.fail("message number 0")
            if word == b"EXPUNGE":
                return
            if word == b"FETCH":
                self.sp()
                self.msg_att()
                return
            raise self.fail("unknown message data")
        word = self.atom().upper()
        if word in (b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"):
            self.sp()
            self.resp_text()
        elif word in (b"CAPABILITY", b"ENABLED"):
            self.capabilities()
        elif word == b"FLAGS":
            self.sp()
            self.flag_list()
        elif word in (b"LIST", b"LSUB"):
            self.sp()
            self.mailbox_list()
        elif word == b"STATUS":
            self.sp()
            self.astring()
            self.sp()
            self.status_atts()
        elif word == b"SEARCH":
            self.search()
        elif word == b"ESEARCH":
            self.esearch()
        elif word == b"NAMESPACE":
            for _ in range(3):
                self.sp()
                self.namespace()
        elif word == b"VANISHED":
            self.sp()
            if self.try_lit(b"(EARLIER)"):
                self.sp()
            self.seqset()
        elif word == b"SORT":
            self.search()  # RFC 5256 §5 sort-data; RFC 7162 §3.1.9 adds (MODSEQ n)
        elif word == b"THREAD":
            self.thread_data()
        elif word == b"QUOTA":
            self.sp()
            self.quota_response()
        elif word == b"QUOTAROOT":
            self.sp()
            self.astring()  # RFC 9208 §7: "QUOTAROOT" SP mailbox *(SP quota-root-name)
            while self.peek() == 0x20:
                self.sp()
                self.astring()
        elif word == b"ID":
            self.sp()
            if not self.try_lit(b"NIL"):
                self.lit(b"(")
                first = True
                while self.peek() != 0x29:
                    if not first:
                        self.sp()
                    first = False
                    self.string()
                    self.sp()
                    self.nstring()
                self.lit(b")")
        else:
            self.generic_rest()

    def mailbox_list(self) -> None:
        self.lit(b"(")
        if self.peek() != 0x29:
            self.flag()
            while self.peek() == 0x20:
                self.sp()
                self.flag()
        self.lit(b")")
        self.sp()
        if not self.try_lit(b"NIL"):
            delimiter = self.quoted()
            if len(delimiter) != 1:
                raise self.fail("hierarchy delimiter must be one character")
        self.sp()
        self.astring()
        if self.peek() == 0x20:
            self.sp()
            self.lit(b"(")
            first = True
            while self.peek() != 0x29:
                if not first:
                    self.sp()
                first = False
                self.astring()  # mbox-list-extended-item-tag
                self.sp()
                self.generic()
            self.lit(b")")

    def status_atts(self) -> None:
        self.lit(b"(")
        first = True
        while self.peek() != 0x29:
            if not first:
                self.sp()
            first = False
            name = self.atom().upper()
            self.sp()
            if name in (b"MESSAGES", b"UNSEEN", b"DELETED", b"RECENT"):
                self.number()
            elif name in (b"UIDNEXT", b"UIDVALIDITY"):
                self.number(nonzero=True)
            elif name in (b"SIZE", b"HIGHESTMODSEQ"):
                self.number(bits=63)
            elif name == b"APPENDLIMIT":
                if not self.try_lit(b"NIL"):
                    self.number(bits=63)
            elif name == b"MAILBOXID":  # RFC 8474 §7: "MAILBOXID" SP "(" objectid ")"
                self.lit(b"(")
                self.atom()
                self.lit(b")")
            else:
                self.generic()
        self.lit(b")")

    def search(self) -> None:
        while self.peek() == 0x20:
            self.sp()
            if self.peek() == 0x28:  # RFC 7162 §3.1.5: (MODSEQ n)
                self.lit(b"(MODSEQ ")
                self.number(bits=63)
                self.lit(b")")
                return
            self.number(nonzero=True)

    def esearch(self) -> None:
        if self.peek() == 0x20 and self.d[self.p + 1 : self.p + 2] == b"(":
            self.sp()
            self.generic()  # search-correlator: (TAG tag-string ...)
        if self.d[self.p : self.p + 4].upper() == b" UID" and (
            self.d[self.p + 4 : self.p + 5] in (b" ", b"\r")
        ):
            self.p += 4
        while self.peek() == 0x20:
            self.sp()
            name = self.atom().upper()
            self.sp()
            if name in (b"MIN", b"MAX"):
                self.number(nonzero=True)
            elif name == b"COUNT":
                self.number()
            elif name == b"ALL":
                self.seqset()
            elif name == b"MODSEQ":
                self.number(bits=63)
            else:
                self.generic()

    def thread_data(self) -> None:
        """RFC 5256 §5: thread-data = "THREAD" [SP 1*thread-list]."""
        if self.peek() != 0x20:
            return
        self.sp()
        self.thread_list(0)
        while self.peek() == 0x28:
            self.thread_list(0)

    def thread_list(self, depth: int) -> None:
        """thread-list = "(" (thread-members / thread-nested) ")"; thread-members =
        nz-number *(SP nz-number) [SP thread-nested]; thread-nested = 2*thread-list."""
        if depth > 1000:
            raise self.fail("thread nested too deeply")
        self.lit(b"(")
        if self.peek() == 0x28:
            self.thread_nested(depth)
        else:
            self.number(nonzero=True)
            while self.peek() == 0x20:
                self.sp()
                if self.peek() == 0x28:
                    self.thread_nested(depth)
                    break
                self.number(nonzero=True)
        self.lit(b")")

    def thread_nested(self, depth: int) -> None:
        self.thread_list(depth + 1)
        if self.peek() != 0x28:
            raise self.fail("thread-nested needs at least two thread-lists")
        while self.peek() == 0x28:
            self.thread_list(depth + 1)

    def quota_response(self) -> None:
        """RFC 9208 §7: quota-root-name SP quota-list (possibly empty, §4.2.1)."""
        self.astring()
        self.sp()
        self.lit(b"(")
        first = True
        while self.peek() != 0x29:
            if not first:
                self.sp()
            first = False
            self.atom()  # resource-name
            self.sp()
            usage = self.number(bits=63)  # resource-usage
            self.sp()
            limit = self.number(bits=63)  # resource-limit
            if usage > limit and self.strict:
                raise self.fail("quota usage above its limit")
        self.lit(b")")

    def namespace(self) -> None:
        if self.try_lit(b"NIL"):
            return
        self.lit(b"(")
        while True:
            self.lit(b"(")
            self.string()
            self.sp()
            if not self.try_lit(b"NIL"):
                self.quoted()
            while self.peek() == 0x20:
                self.sp()
                self.string()
                self.sp()
                self.generic()
            self.lit(b")")
            if self.peek() == 0x29:
                break
        self.lit(b")")

    # -- FETCH ---------------------------------------------------------------------------

def check_response(
    data: bytes, *, strict: bool = True, prefix_ok: bool = False, utf8: bool = False
) -> int:
    """Check the one response at the start of ``data`` (CRLF and literals included); return
    its length. Raises ResponseSyntaxError; an incomplete response raises it too unless
    ``prefix_ok``, in which case the whole of ``data`` is taken as a valid beginning.
    ``utf8``: the client enabled UTF8=ACCEPT (RFC 6855 §3), so quoted strings may hold UTF-8."""
    checker = _Checker(data, strict=strict, utf8=utf8)
    try:
        checker.response()
    except Incomplete:
        if prefix_ok:
            return len(data)
        raise ResponseSyntaxError(f"incomplete response: {data[:80]!r}") from None
    return checker.p


def check_stream(data: bytes, *, strict: bool = True, utf8: bool = False) -> list[bytes]:
    """Split a complete server byte stream into responses, checking each."""
    responses: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = check_response(data[pos:], strict=strict, utf8=utf8)
        responses.append(data[pos : pos + size])
        pos += size
    return responses

