"""FETCH data in the IMAP response checker: msg-att, ENVELOPE, BODY/BODYSTRUCTURE, sections.

Implements the RFC 9051 §9 productions msg-att (msg-att-dynamic, msg-att-static), envelope,
address, body (body-type-1part with basic/text/msg forms, body-type-mpart, extension data),
section and section-binary, plus RFC 7162 MODSEQ, RFC 8514 SAVEDATE, RFC 8474 EMAILID/THREADID.

Left out: FETCH items of extensions Hato does not implement (accepted generically in
non-strict mode only).
"""

from __future__ import annotations

from hato.codec.imap.grammar_lexer import ATOM, Lexer


class FetchGrammar(Lexer):
    def msg_att(self) -> None:
        self.lit(b"(")
        first = True
        while True:
            if not first:
                if self.peek() == 0x29:
                    break
                self.sp()
            first = False
            self.fetch_item()
        self.lit(b")")

    def fetch_item(self) -> None:
        name = self.run(ATOM - {0x5B}, "fetch item").upper()
        if name == b"FLAGS":
            self.sp()
            self.flag_list()
        elif name == b"UID":
            self.sp()
            self.number(nonzero=True)
        elif name == b"INTERNALDATE":
            self.sp()
            self.date_time()
        elif name == b"SAVEDATE":
            self.sp()
            if not self.try_lit(b"NIL"):
                self.date_time()
        elif name in (b"RFC822.SIZE",):
            self.sp()
            self.number(bits=63)
        elif name in (b"RFC822", b"RFC822.HEADER", b"RFC822.TEXT"):
            self.sp()
            self.nstring()
        elif name == b"ENVELOPE":
            self.sp()
            self.envelope()
        elif name == b"MODSEQ":
            self.sp()
            self.lit(b"(")
            self.number(bits=63)
            self.lit(b")")
        elif name in (b"EMAILID", b"THREADID"):
            self.sp()
            if name == b"THREADID" and self.try_lit(b"NIL"):
                return
            self.lit(b"(")
            self.atom()
            self.lit(b")")
        elif name in (b"BODY", b"BODYSTRUCTURE"):
            if name == b"BODY" and self.peek() == 0x5B:
                self.section()
                if self.try_lit(b"<"):
                    self.number()
                    self.lit(b">")
                self.sp()
                self.nstring()
            else:
                self.sp()
                self.body(0)
        elif name in (b"BINARY", b"BINARY.SIZE"):
            self.section()
            self.sp()
            if name == b"BINARY.SIZE":
                self.number()
            elif not self.try_lit(b"NIL"):
                if self.peek() == 0x22:
                    self.quoted()
                else:
                    self.literal(binary=True)
        elif self.strict:
            raise self.fail("unknown FETCH data item")
        else:
            self.sp()
            self.generic()

    def section(self) -> None:
        self.lit(b"[")
        while self.peek() not in (0x5D, 0x20):
            self.run(ATOM - {0x5B}, "section")
        if self.peek() == 0x20:
            self.sp()
            self.lit(b"(")
            self.astring()
            while self.peek() == 0x20:
                self.sp()
                self.astring()
            self.lit(b")")
        self.lit(b"]")

    def envelope(self) -> None:
        self.lit(b"(")
        self.nstring()  # date
        self.sp()
        self.nstring()  # subject
        for _ in range(6):  # from sender reply-to to cc bcc
            self.sp()
            self.address_list()
        self.sp()
        self.nstring()  # in-reply-to
        self.sp()
        self.nstring()  # message-id
        self.lit(b")")

    def address_list(self) -> None:
        if self.try_lit(b"NIL"):
            return
        self.lit(b"(")
        while True:
            self.lit(b"(")
            for i in range(4):
                if i:
                    self.sp()
                self.nstring()
            self.lit(b")")
            if self.peek() == 0x29:
                break
        self.lit(b")")

    def body(self, depth: int) -> None:
        if depth > 100:
            raise self.fail("body nested too deeply")
        self.lit(b"(")
        if self.peek() == 0x28:
            while self.peek() == 0x28:
                self.body(depth + 1)
            self.sp()
            self.string()  # media-subtype
            if self.peek() == 0x20:
                self.sp()
                self.body_params()
                self.body_ext_rest()
        else:
            kind = self.string().upper()
            self.sp()
            subtype = self.string().upper()
            self.sp()
            self.body_params()
            self.sp()
            self.nstring()  # id
            self.sp()
            self.nstring()  # description
            self.sp()
            self.string()  # encoding
            self.sp()
            self.number()  # octets
            if kind == b"MESSAGE" and subtype in (b"RFC822", b"GLOBAL"):
                self.sp()
                self.envelope()
                self.sp()
                self.body(depth + 1)
                self.sp()
                self.number(bits=63)
            elif kind == b"TEXT":
                self.sp()
                self.number(bits=63)
            if self.peek() == 0x20:
                self.sp()
                self.nstring()  # md5
                self.body_ext_rest()
        self.lit(b")")

    def body_params(self) -> None:
        if self.try_lit(b"NIL"):
            return
        self.lit(b"(")
        self.string()
        self.sp()
        self.string()
        while self.peek() == 0x20:
            self.sp()
            self.string()
            self.sp()
            self.string()
        self.lit(b")")

    def body_ext_rest(self) -> None:
        if self.peek() != 0x20:
            return
        self.sp()
        if not self.try_lit(b"NIL"):  # disposition
            self.lit(b"(")
            self.string()
            self.sp()
            self.body_params()
            self.lit(b")")
        if self.peek() != 0x20:
            return
        self.sp()
        if self.peek() == 0x28:  # language
            self.lit(b"(")
            self.string()
            while self.peek() == 0x20:
                self.sp()
                self.string()
            self.lit(b")")
        else:
            self.nstring()
        if self.peek() != 0x20:
            return
        self.sp()
        self.nstring()  # location
        while self.peek() == 0x20:
            self.sp()
            self.generic()


