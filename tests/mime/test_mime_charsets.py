"""Charsets, Japanese first: ISO-2022-JP (with CP50220 half-width kana and NEC specials),
Shift_JIS as cp932, EUC-JP, UTF-8; then the other mappings mail needs."""

from __future__ import annotations

import base64

import pytest

from hato.codec.mime import (
    envelope,
    header_value,
    iter_text,
    parse_message,
    text_and_problems,
    text_content,
)
from hato.codec.mime.charsets import canonical_charset, decode

JAPANESE = "こんにちは、世界。漢字とカナ"
EXTENDED = "半角ｶﾀｶﾅと丸数字①②とⅢ、㈱、髙"  # CP50220 / cp932-only characters


def _sjis_to_jis(s1: int, s2: int) -> tuple[int, int]:
    """Shift_JIS byte pair to JIS X 0208 row/cell (the inverse of the decoder's mapping)."""
    j1 = (s1 - (0x70 if s1 < 0xA0 else 0xB0)) * 2
    if s2 < 0x9F:
        j1 -= 1
        j2 = s2 - (0x1F if s2 < 0x80 else 0x20)
    else:
        j2 = s2 - 0x7E
    return j1, j2


def _cp50220(text: str) -> bytes:
    """Encode as Windows' CP50220 does: JIS X 0208 incl. NEC/IBM rows, kana via ESC ( I."""
    out = bytearray()
    mode = "ascii"
    for ch in text:
        if ch.isascii():
            want, data = "ascii", ch.encode("ascii")
        elif "\uff61" <= ch <= "\uff9f":
            want, data = "kana", bytes((ord(ch) - 0xFF61 + 0x21,))
        else:
            s1, s2 = ch.encode("cp932")
            want, data = "kanji", bytes(_sjis_to_jis(s1, s2))
        if want != mode:
            out += {"ascii": b"\x1b(B", "kana": b"\x1b(I", "kanji": b"\x1b$B"}[want]
            mode = want
        out += data
    if mode != "ascii":
        out += b"\x1b(B"
    return bytes(out)


def _message(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode("ascii") + b"\r\n" + body


def test_iso2022jp_subject_and_body() -> None:
    subject = base64.b64encode(JAPANESE.encode("iso2022_jp")).decode("ascii")
    data = _message(
        f"From: =?ISO-2022-JP?B?{base64.b64encode('山田'.encode('iso2022_jp')).decode()}?=\n"
        " <yamada@example.jp>\n"
        f"Subject: =?ISO-2022-JP?B?{subject}?=\n"
        "Content-Type: text/plain; charset=ISO-2022-JP\n"
        "Content-Transfer-Encoding: 7bit\n",
        (JAPANESE + "\r\n本文です。\r\n").encode("iso2022_jp"),
    )
    root = parse_message(data)
    assert header_value(root, "Subject") == JAPANESE
    env = envelope(root, data)
    assert env.subject == f"=?ISO-2022-JP?B?{subject}?="  # IMAP sends it still encoded
    assert env.subject_text == JAPANESE
    assert env.from_ is not None
    assert env.from_[0].name is not None and env.from_[0].name.startswith("=?ISO-2022-JP?B?")
    assert text_content(root, data) == JAPANESE + "\r\n本文です。\r\n"
    assert text_and_problems(root, data)[1] == ()


def test_iso2022jp_with_cp50220_extensions() -> None:
    body = _cp50220(EXTENDED)
    with pytest.raises(UnicodeDecodeError):
        body.decode("iso2022_jp")  # the strict codec cannot, so the fallback path is tested
    data = _message("Content-Type: text/plain; charset=iso-2022-jp\n", body)
    assert text_and_problems(parse_message(data), data) == (EXTENDED, ())


def test_iso2022jp_so_si_kana_and_missing_escape_back() -> None:
    kana = bytes(ord(c) - 0xFF61 + 0x21 for c in "ｱｲｳ")
    assert decode(b"A\x0e" + kana + b"\x0fB", "ISO-2022-JP") == ("AｱｲｳB", True)  # CP50221 SO/SI
    # a mailer that forgot ESC ( B before the line break: the break survives
    jis = "日本".encode("iso2022_jp")[:-3]  # drop the final ESC ( B
    text, _ = decode(jis + b"\r\nabc", "ISO-2022-JP")
    assert text.startswith("日本\r\n")


def test_iso2022jp_encoded_word_split_across_words() -> None:
    raw = JAPANESE.encode("iso2022_jp")
    half = len(raw) // 2
    words = " ".join(
        f"=?iso-2022-jp?B?{base64.b64encode(chunk).decode()}?="
        for chunk in (raw[:half], raw[half:])
    )
    data = _message(f"Subject: {words}\n", b"")
    assert header_value(parse_message(data), "subject") == JAPANESE


def test_shift_jis_body_is_cp932() -> None:
    body = (JAPANESE + EXTENDED).encode("cp932")
    with pytest.raises(UnicodeDecodeError):
        body.decode("shift_jis")  # ①, Ⅲ, ㈱, 髙 are Microsoft extensions
    data = _message(
        "Content-Type: text/plain; charset=Shift_JIS\nContent-Transfer-Encoding: 8bit\n", body
    )
    assert text_and_problems(parse_message(data), data) == (JAPANESE + EXTENDED, ())


def test_euc_jp_body_quoted_printable() -> None:
    raw = JAPANESE.encode("euc_jp")
    qp = "".join(f"={b:02X}" for b in raw).encode("ascii")
    data = _message(
        "Content-Type: text/plain; charset=EUC-JP\nContent-Transfer-Encoding: quoted-printable\n",
        qp,
    )
    assert text_content(parse_message(data), data) == JAPANESE


def test_utf8_body_base64_and_search_text() -> None:
    body = base64.encodebytes(("件名なし\n" + JAPANESE).encode("utf-8"))
    data = _message(
        "Subject: =?UTF-8?B?" + base64.b64encode("日本語".encode()).decode() + "?=\n"
        "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: base64\n",
        body,
    )
    root = parse_message(data)
    assert text_content(root, data) == "件名なし\n" + JAPANESE
    assert next(iter_text(root, data)) == "日本語"


def test_raw_8bit_shift_jis_header_uses_the_part_charset() -> None:
    data = (
        b"Subject: " + "会議".encode("cp932") + b"\r\n"
        b"Content-Type: text/plain; charset=shift_jis\r\n\r\n"
    )
    assert header_value(parse_message(data), "subject") == "会議"


def test_raw_iso2022jp_header_without_encoded_words() -> None:
    data = b"Subject: " + "会議".encode("iso2022_jp") + b"\r\n\r\n"
    assert header_value(parse_message(data), "subject") == "会議"


@pytest.mark.parametrize(
    ("label", "text", "codec"),
    [
        ("GB2312", "中文测试", "gbk"),
        ("gb2312", "镕", "gbk"),  # GBK-only character labelled GB2312
        ("KS_C_5601-1987", "한국어 똠방각하", "cp949"),
        ("euc-kr", "똠방각하", "cp949"),
        ("big5", "繁體中文", "cp950"),
        ("ISO-8859-1", "Grüße", "latin-1"),
        ("iso-8859-1", "€ quotes “x”", "cp1252"),  # C1 range read as Windows-1252
        ("ISO-8859-15", "€uro", "iso8859_15"),
        ("ISO-8859-7", "Ελληνικά", "iso8859_7"),
        ("windows-1251", "Привет", "cp1251"),
        ("cp1252", "naïve", "cp1252"),
        ("koi8-r", "Привет", "koi8_r"),
        ("utf-8", "ok ✓", "utf-8"),
        ('"UTF-8"', "quoted label", "utf-8"),
        ("utf-8*en", "RFC 2231 language suffix", "utf-8"),
    ],
)
def test_charset_mappings(label: str, text: str, codec: str) -> None:
    assert decode(text.encode(codec), label) == (text, True)


def test_unknown_and_non_text_charsets_give_replacement_and_a_problem() -> None:
    assert canonical_charset("x-no-such-charset") is None
    assert canonical_charset("base64") is None  # a Python codec, not a charset
    assert canonical_charset("rot13") is None
    data = _message("Content-Type: text/plain; charset=x-martian\n", b"ab\xe9cd")
    text, problems = text_and_problems(parse_message(data), data)
    assert text == "ab\ufffdcd"
    assert problems == ("unknown charset x-martian",)


def test_invalid_bytes_in_known_charset_are_a_problem() -> None:
    data = _message("Content-Type: text/plain; charset=utf-8\n", b"ok \xff\xfe")
    text, problems = text_and_problems(parse_message(data), data)
    assert text == "ok \ufffd\ufffd"
    assert problems == ("text invalid in charset utf-8",)


def test_unlabelled_8bit_text() -> None:
    assert decode("déjà vu".encode(), None) == ("déjà vu", True)  # RFC 6532 UTF-8
    assert decode("déjà vu".encode("cp1252"), "us-ascii") == ("déjà vu", True)
