"""Lexer, parser and validation of Sieve scripts: RFC 5228 §2, §8 grammar, errors with lines."""

from __future__ import annotations

import pytest

from hato.codec.sieve import SieveError, parse_script
from hato.codec.sieve.lexer import Kind, tokenize
from hato.codec.sieve.parser import Number, StringList, Tag, parse


def errors_of(text: str) -> list[tuple[int, str]]:
    with pytest.raises(SieveError) as info:
        parse_script(text)
    return list(info.value.errors)


def test_tokens_carry_lines_and_values() -> None:
    tokens, errors = tokenize('if header :is "Subject" ["a", "b"] # c\n{\n keep;\n}\n')
    assert not errors
    kinds = [(t.kind, t.value, t.line) for t in tokens]
    assert kinds[:3] == [
        (Kind.IDENTIFIER, "if", 1),
        (Kind.IDENTIFIER, "header", 1),
        (Kind.TAG, "is", 1),
    ]
    assert (Kind.IDENTIFIER, "keep", 3) in kinds
    assert kinds[-1][0] is Kind.EOF


def test_number_quantifiers() -> None:
    # RFC 5228 §2.4.1: K, M and G multiply by 2^10, 2^20, 2^30
    tokens, _ = tokenize("1K 2m 3G 17")
    assert [t.value for t in tokens[:4]] == [1024, 2 * 2**20, 3 * 2**30, 17]


def test_quoted_string_escapes() -> None:
    # RFC 5228 §2.4.2: \" and \\ escape; an undefined escape is the bare character
    tokens, _ = tokenize(r'"a\"b\\c\d"')
    assert tokens[0].value == 'a"b\\cd'


def test_multiline_string_dot_unstuffing_and_crlf() -> None:
    # RFC 5228 §2.4.2: a line ".." starts with "."; the string ends at a lone "."
    tokens, errors = tokenize("text: # comment\nline 1\n..dot\n.\n")
    assert not errors
    assert tokens[0].kind is Kind.STRING
    assert tokens[0].value == "line 1\r\n.dot\r\n"


def test_bracket_comment_and_lines() -> None:
    nodes, errors = parse("/* one\ntwo */\nkeep;\n")
    assert not errors
    assert nodes[0].name == "keep" and nodes[0].line == 3


def test_arguments_parse_into_kinds() -> None:
    nodes, _ = parse('fileinto :copy "box" 12 ["a"];')
    args = nodes[0].args
    assert isinstance(args[0], Tag) and args[0].name == "copy"
    assert isinstance(args[1], StringList) and not args[1].bracketed
    assert isinstance(args[2], Number) and args[2].value == 12
    assert isinstance(args[3], StringList) and args[3].bracketed


def test_unknown_command_reported_with_line() -> None:
    errors = errors_of("keep;\nfrobnicate;\n")
    assert errors[0] == (2, "unknown command 'frobnicate' (only reported once at first occurrence)")
    assert errors[-1] == (0, "validation failed")


def test_require_must_come_first() -> None:
    # RFC 5228 §3.2: require only at the start
    errors = errors_of('keep;\nrequire "fileinto";\n')
    assert errors[0][0] == 2 and "top level at the beginning" in errors[0][1]


def test_extension_must_be_required() -> None:
    errors = errors_of('fileinto "x";')
    assert "unknown command 'fileinto'" in errors[0][1]
    parse_script('require "fileinto"; fileinto "x";')


def test_unknown_capability() -> None:
    errors = errors_of('require "x-frob";')
    assert errors[0] == (1, "require command: unknown Sieve capability `x-frob'")


def test_argument_count_and_kind_errors() -> None:
    errors = errors_of('require "fileinto";\nfileinto;\nfileinto 3;\n')
    assert errors[0] == (
        2,
        "the fileinto command requires 1 positional argument(s), but 0 is/are specified",
    )
    assert errors[1] == (
        3,
        "the fileinto command expects a string as argument 1 (folder), but a number was found",
    )


def test_match_type_group_is_exclusive() -> None:
    errors = errors_of('if header :is :contains "a" "b" { keep; }')
    assert "duplicate MATCH-TYPE" in errors[0][1]


def test_comparator_must_be_required() -> None:
    # RFC 5228 §2.7.3
    errors = errors_of('if header :comparator "i;ascii-numeric" "a" "1" { keep; }')
    assert "unknown comparator" in errors[0][1]
    parse_script(
        'require "comparator-i;ascii-numeric";\n'
        'if header :comparator "i;ascii-numeric" "a" "1" { keep; }'
    )


def test_numeric_comparator_has_no_substring_match() -> None:
    errors = errors_of(
        'require "comparator-i;ascii-numeric";\n'
        'if header :contains :comparator "i;ascii-numeric" "a" "1" { keep; }'
    )
    assert "does not support sub-string matching" in errors[0][1]


def test_else_must_follow_if() -> None:
    # RFC 5228 §3.1
    errors = errors_of("else { keep; }")
    assert "must follow an if" in errors[0][1]


def test_lexer_error_stops_before_validation() -> None:
    errors = errors_of("keep $$$;\n")
    assert errors[-1] == (0, "parse failed")
    assert any("unexpected character" in m for _, m in errors)


def test_nesting_limit() -> None:
    text = "if true {" * 40 + "keep;" + "}" * 40
    errors = errors_of(text)
    assert any("cannot nest command blocks deeper than 32" in m for _, m in errors)


def test_variables_namespace_and_match_index() -> None:
    # RFC 5229 §3: unknown namespaces are errors; Pigeonhole allows ${0}..${32}
    errors = errors_of('require "variables";\nset "x" "${foo.bar}";\nset "y" "${40}";\n')
    assert errors[0] == (2, "referring to variable in unknown namespace 'foo'")
    assert errors[1] == (3, "match value index 40 out of range (max: 32)")


def test_set_cannot_assign_match_variable() -> None:
    errors = errors_of('require "variables"; set "1" "x";')
    assert errors[0][1] == "cannot assign to match variable"


def test_encoded_character_invalid_code_point() -> None:
    # RFC 5228 §2.4.2.4: only 0-D7FF and E000-10FFFF
    errors = errors_of('require ["encoded-character", "fileinto"]; fileinto "${unicode:D800}";')
    assert any("invalid unicode character" in m for _, m in errors)


def test_redirect_address_checked_at_compile_time() -> None:
    errors = errors_of('redirect "not an address";')
    assert errors[0][1].startswith("specified redirect address 'not an address' is invalid")


def test_include_loader_and_missing_script() -> None:
    texts = {("personal", "a"): 'require "include"; include "b";', ("personal", "b"): "keep;"}
    script = parse_script(
        'require "include"; include "a";', include_loader=lambda loc, n: texts.get((loc, n))
    )
    assert set(script.includes) == {("personal", "a"), ("personal", "b")}
    errors = errors_of('require "include"; include "nothere";')
    assert "does not exist" in errors[0][1]


def test_circular_include_is_an_error() -> None:
    # RFC 6609 §3.2: recursive inclusion (without :once)
    texts = {"a": 'require "include"; include "a";'}
    with pytest.raises(SieveError) as info:
        parse_script('require "include"; include "a";', include_loader=lambda loc, n: texts.get(n))
    assert any("circular include" in m for _, m in info.value.errors)


def test_script_size_limit() -> None:
    from hato.codec.sieve import SieveLimits

    with pytest.raises(SieveError) as info:
        parse_script("keep;" * 100, limits=SieveLimits(max_script_size=50))
    assert "too large" in info.value.errors[0][1]
