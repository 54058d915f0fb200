"""Sieve parser: tokens in, a syntax tree with line numbers out (RFC 5228 §8.2 grammar).

Implements the grammar of RFC 5228 §8.2 (commands, blocks, arguments, string lists, tests and
test lists) with error recovery: after an error the rest of the command (up to its ";" or past
its block) is skipped and parsing goes on, so one pass reports every error. Nesting is capped at
32 blocks and 32 tests, and a command at 32 arguments, as in Pigeonhole. Leaves out: meaning
(which command takes which arguments): that is ``validate``.
Security: scripts come from users; recursion depth is bounded by the nesting limits above.
"""

from __future__ import annotations

from dataclasses import dataclass

from hato.codec.sieve.lexer import Kind, Token, tokenize

MAX_BLOCK_NESTING = 32
MAX_TEST_NESTING = 32
MAX_ARGUMENTS = 32


@dataclass(frozen=True, slots=True)
class StringList:
    """A string or a string list (``bracketed`` when written as ``[...]``)."""

    items: tuple[str, ...]
    line: int
    bracketed: bool


@dataclass(frozen=True, slots=True)
class Number:
    """A number, quantifier applied."""

    value: int
    line: int


@dataclass(frozen=True, slots=True)
class Tag:
    """A tagged argument, without its colon."""

    name: str
    line: int


Argument = StringList | Number | Tag


@dataclass(frozen=True, slots=True)
class Node:
    """A command or a test: name, arguments, sub-tests and (commands only) a block.

    ``test_list`` is True when the sub-tests were written as a parenthesized test list;
    ``block`` is None when the command ended with ";".
    """

    name: str
    line: int
    args: tuple[Argument, ...]
    tests: tuple[Node, ...]
    test_list: bool
    block: tuple[Node, ...] | None


class _Skip(Exception):
    """Raised inside the parser to abandon the current command after an error."""


class _Parser:
    def __init__(self, tokens: list[Token], errors: list[tuple[int, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.errors = errors

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def advance(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind is not Kind.EOF:
            self.pos += 1
        return tok

    def error(self, line: int, message: str) -> _Skip:
        self.errors.append((line, message))
        return _Skip()

    def commands(self, depth: int) -> list[Node]:
        out: list[Node] = []
        while self.tok.kind not in (Kind.EOF, Kind.RBRACE):
            start = self.pos
            try:
                out.append(self.command(depth))
            except _Skip:
                self.recover()
            if self.pos == start:  # recovery made no progress: drop one token
                self.advance()
        return out

    def recover(self) -> None:
        """Skip to the end of the current command: past ";" or past a balanced block."""
        while True:
            kind = self.tok.kind
            if kind in (Kind.EOF, Kind.RBRACE):
                return
            self.advance()
            if kind is Kind.SEMICOLON:
                return
            if kind is Kind.LBRACE:
                self.skip_block()
                return

    def skip_block(self) -> None:
        """Skip tokens up to and including the "}" closing an already consumed "{"."""
        level = 1
        while self.tok.kind is not Kind.EOF:
            kind = self.advance().kind
            if kind is Kind.LBRACE:
                level += 1
            elif kind is Kind.RBRACE:
                level -= 1
                if level == 0:
                    return

    def command(self, depth: int) -> Node:
        tok = self.tok
        if tok.kind is not Kind.IDENTIFIER:
            if tok.kind is Kind.GARBAGE:
                raise _Skip()
            raise self.error(tok.line, f"expected identifier, but found {_describe(tok)}")
        self.advance()
        name = str(tok.value)
        args, tests, test_list = self.arguments(name, "command", depth=0)
        end = self.tok
        if end.kind is Kind.SEMICOLON:
            self.advance()
            return Node(name, tok.line, args, tests, test_list=test_list, block=None)
        if end.kind is Kind.LBRACE:
            self.advance()
            if depth + 1 > MAX_BLOCK_NESTING:
                self.errors.append(
                    (end.line, f"cannot nest command blocks deeper than {MAX_BLOCK_NESTING} levels")
                )
                self.skip_block()
                raise _Skip()
            block = self.commands(depth + 1)
            if self.tok.kind is not Kind.RBRACE:
                raise self.error(self.tok.line, "end of file before end of block: missing '}'")
            self.advance()
            return Node(name, tok.line, args, tests, test_list=test_list, block=tuple(block))
        what = "unknown characters" if end.kind is Kind.GARBAGE else _describe(end)
        raise self.error(
            end.line,
            "expected end of command ';' or the beginning of a compound block '{', "
            f"but found {what}",
        )

    def arguments(
        self, name: str, kind: str, *, depth: int
    ) -> tuple[tuple[Argument, ...], tuple[Node, ...], bool]:
        args: list[Argument] = []
        while True:
            tok = self.tok
            if tok.kind is Kind.STRING:
                self.advance()
                args.append(StringList((str(tok.value),), tok.line, bracketed=False))
            elif tok.kind is Kind.LBRACKET:
                args.append(self.string_list())
            elif tok.kind is Kind.NUMBER:
                self.advance()
                args.append(Number(int(tok.value), tok.line))
            elif tok.kind is Kind.TAG:
                self.advance()
                args.append(Tag(str(tok.value), tok.line))
            else:
                break
            if len(args) > MAX_ARGUMENTS:
                raise self.error(tok.line, f"too many arguments for {kind} '{name}'")
        tok = self.tok
        if tok.kind is Kind.IDENTIFIER:
            return tuple(args), (self.test(depth + 1),), False
        if tok.kind is Kind.LPAREN:
            return tuple(args), self.test_list(depth + 1), True
        return tuple(args), (), False

    def string_list(self) -> StringList:
        open_tok = self.advance()
        items: list[str] = []
        while True:
            tok = self.tok
            if tok.kind is not Kind.STRING:
                raise self.error(
                    tok.line, f"expected string in string list, but found {_describe(tok)}"
                )
            self.advance()
            items.append(str(tok.value))
            sep = self.tok
            if sep.kind is Kind.COMMA:
                self.advance()
                continue
            if sep.kind is Kind.RBRACKET:
                self.advance()
                return StringList(tuple(items), open_tok.line, bracketed=True)
            raise self.error(
                sep.line, f"expected ',' or end of string list ']', but found {_describe(sep)}"
            )

    def test(self, depth: int) -> Node:
        tok = self.tok
        if tok.kind is not Kind.IDENTIFIER:
            raise self.error(tok.line, f"expected test identifier, but found {_describe(tok)}")
        if depth > MAX_TEST_NESTING:
            raise self.error(tok.line, f"cannot nest tests deeper than {MAX_TEST_NESTING} levels")
        self.advance()
        name = str(tok.value)
        args, tests, test_list = self.arguments(name, "test", depth=depth)
        return Node(name, tok.line, args, tests, test_list=test_list, block=None)

    def test_list(self, depth: int) -> tuple[Node, ...]:
        self.advance()  # "("
        tests: list[Node] = []
        while True:
            tests.append(self.test(depth))
            sep = self.tok
            if sep.kind is Kind.COMMA:
                self.advance()
                continue
            if sep.kind is Kind.RPAREN:
                self.advance()
                return tuple(tests)
            raise self.error(
                sep.line, f"expected ',' or end of test list ')', but found {_describe(sep)}"
            )


def _describe(tok: Token) -> str:
    if tok.kind is Kind.EOF:
        return "end of script"
    if tok.kind in (Kind.IDENTIFIER, Kind.TAG, Kind.NUMBER, Kind.STRING, Kind.GARBAGE):
        return f"{tok.kind.value}"
    return f"'{tok.value}'"


def parse(text: str) -> tuple[tuple[Node, ...], list[tuple[int, str]]]:
    """The command list of ``text`` and every lexical and syntax error found (empty if none)."""
    tokens, errors = tokenize(text)
    parser = _Parser(tokens, errors)
    nodes = parser.commands(0)
    while parser.tok.kind is not Kind.EOF:  # a stray "}" at top level
        errors.append((parser.tok.line, "unexpected '}' at top level"))
        parser.advance()
        nodes.extend(parser.commands(0))
    errors.sort(key=lambda e: e[0])
    return tuple(nodes), errors
