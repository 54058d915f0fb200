"""Charset labels in mail mapped to Python codecs, and forgiving decoding of text to ``str``.

Implements the charset handling that RFC 2045 §5.1 (``charset`` parameter), RFC 2046 §4.1.2
(default US-ASCII), RFC 2047 §2 and RFC 2231 §4 (charset names in encoded words and
parameters, with an optional ``*language`` suffix) and RFC 6532 §3 (UTF-8 header fields)
require, with the mappings real mail needs: Shift_JIS is read as ``cp932`` (Windows-31J, what
mail clients emit), GB2312 as GBK, KS_C_5601-1987 as ``cp949``, Big5 as ``cp950``,
ISO-8859-1 and US-ASCII labels as Windows-1252 when their bytes say so (as browsers do), and
ISO-2022-JP through a decoder of its own that also takes the half-width katakana (``ESC ( I``,
SO/SI) and NEC/IBM extension characters (CP50220/CP50221) that Japanese mailers send.

Leaves out: charset *detection* for unlabelled text beyond "valid UTF-8, else Windows-1252",
and encoding (Hato never re-encodes stored mail).
"""

from __future__ import annotations

import codecs
import re

# RFC 2047 §2 / RFC 2231 §5: "charset*language"; labels compared case-insensitively.
_ALIASES: dict[str, str] = {
    "us-ascii": "ascii",
    "ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "iso646-us": "ascii",
    "us": "ascii",
    "utf8": "utf-8",
    "utf-8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "ms_kanji": "cp932",
    "csshiftjis": "cp932",
    "windows-31j": "cp932",
    "cp932": "cp932",
    "x-ms-cp932": "cp932",
    "iso-2022-jp": "iso-2022-jp",
    "csiso2022jp": "iso-2022-jp",
    "iso-2022-jp-1": "iso-2022-jp",
    "iso-2022-jp-2": "iso-2022-jp",
    "iso-2022-jp-3": "iso-2022-jp",
    "iso-2022-jp-ms": "iso-2022-jp",
    "cp50220": "iso-2022-jp",
    "cp50221": "iso-2022-jp",
    "cp50222": "iso-2022-jp",
    "euc-jp": "euc-jp",
    "x-euc-jp": "euc-jp",
    "eucjp": "euc-jp",
    "eucjp-ms": "euc-jp",
    "cseucpkdfmtjapanese": "euc-jp",
    "cp51932": "euc-jp",
    "gb2312": "gbk",
    "gb_2312-80": "gbk",
    "csgb2312": "gbk",
    "euc-cn": "gbk",
    "x-euc-cn": "gbk",
    "chinese": "gbk",
    "gbk": "gbk",
    "x-gbk": "gbk",
    "cp936": "gbk",
    "ms936": "gbk",
    "windows-936": "gbk",
    "gb18030": "gb18030",
    "big5": "cp950",
    "x-big5": "cp950",
    "csbig5": "cp950",
    "cn-big5": "cp950",
    "big5-hkscs": "big5hkscs",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ks_c_5601-1989": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "korean": "cp949",
    "euc-kr": "cp949",
    "x-euc-kr": "cp949",
    "cseuckr": "cp949",
    "windows-949": "cp949",
    "cp949": "cp949",
    "iso-8859-1": "latin-1",
    "iso8859-1": "latin-1",
    "iso_8859-1": "latin-1",
    "latin1": "latin-1",
    "latin-1": "latin-1",
    "l1": "latin-1",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "tis-620": "cp874",
    "windows-874": "cp874",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
}

_ISO_8859 = re.compile(r"^iso[-_ ]?8859[-_ ]?(\d{1,2})(?::\d+)?$")
_WINDOWS = re.compile(r"^(?:windows|win|x-cp|cp|ms)[-_]?(125[0-8])$")

# Codec names that Python accepts but that are not character sets a message may declare.
_NOT_CHARSETS = frozenset(
    {"idna", "punycode", "raw_unicode_escape", "unicode_escape", "undefined", "charmap"}
)


def canonical_charset(label: str | None) -> str | None:
    """The codec name Hato decodes a charset label with, or None when it is unknown."""
    if label is None:
        return "ascii"
    name = label.strip().strip("\"'").strip().lower()
    star = name.find("*")  # RFC 2231 §5: charset "*" language in encoded words
    if star >= 0:
        name = name[:star]
    if not name:
        return "ascii"
    alias = _ALIASES.get(name)
    if alias is not None:
        return alias
    m = _ISO_8859.match(name)
    if m:
        number = int(m.group(1))
        if number == 1:
            return "latin-1"
        return f"iso8859-{number}" if _known(f"iso8859-{number}") else None
    m = _WINDOWS.match(name)
    if m:
        return f"cp{m.group(1)}"
    return name if _known(name) else None


def _known(name: str) -> bool:
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return False
    if not getattr(info, "_is_text_encoding", True):
        return False  # base64_codec, zlib_codec, rot13 ...: not charsets
    return info.name not in _NOT_CHARSETS


def decode(data: bytes, label: str | None) -> tuple[str, bool]:
    """Decode ``data`` declared as charset ``label``; returns (text, ok).

    ``ok`` is False when the label is unknown (non-ASCII bytes become U+FFFD) or when the bytes
    are not valid in that charset (the invalid bytes become U+FFFD).
    """
    codec = canonical_charset(label)
    if codec is None:
        return data.decode("ascii", "replace"), data.isascii()
    if codec == "ascii":
        return _decode_unlabelled(data)
    if codec == "latin-1":
        return _decode_latin1(data), True
    if codec == "iso-2022-jp":
        return decode_iso2022jp(data)
    if codec == "euc-jp":
        return _first_of(data, ("euc_jp", "euc_jis_2004", "cp932"))
    if codec == "gbk":
        return _first_of(data, ("gbk", "gb18030"))
    if codec == "cp932":
        return _first_of(data, ("cp932", "shift_jis_2004"))
    try:
        return data.decode(codec), True
    except UnicodeDecodeError:
        return data.decode(codec, "replace"), False


def _decode_unlabelled(data: bytes) -> tuple[str, bool]:
    """US-ASCII or no label (RFC 2046 §4.1.2 default): 8-bit bytes are read as UTF-8 (RFC 6532)
    when valid, else as Windows-1252; ISO-2022-JP escapes are honoured, as mailers omit labels."""
    if data.isascii():
        if b"\x1b$" in data or b"\x1b(" in data:
            return decode_iso2022jp(data)
        return data.decode("ascii"), True
    try:
        return data.decode("utf-8"), True
    except UnicodeDecodeError:
        return _decode_latin1(data), True


def _decode_latin1(data: bytes) -> str:
    """ISO-8859-1 where C1 controls (0x80-0x9F) never occur in text: read them as Windows-1252."""
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _first_of(data: bytes, codecs_: tuple[str, ...]) -> tuple[str, bool]:
    for name in codecs_:
        try:
            return data.decode(name), True
        except UnicodeDecodeError:
            continue
    return data.decode(codecs_[0], "replace"), False


# --- ISO-2022-JP (RFC 1468) with the CP5022x extensions ---------------------------------------

_ESC_RUN = re.compile(
    rb"\x1b(\(B|\(J|\(H|\(I|\$@|\$B|\$\(D|\$\(Q|\$\(O|\$\(P|&@\x1b\$B)|[\x0e\x0f]"
)
_ASCII, _KANJI, _KANA, _JISX0212 = 0, 1, 2, 3


def decode_iso2022jp(data: bytes) -> tuple[str, bool]:
    """Decode ISO-2022-JP as Japanese mail uses it; returns (text, ok).

    Tries Python's strict ``iso2022_jp`` first; otherwise decodes the escape sequences itself,
    mapping JIS X 0208 (with the NEC row 13 and IBM extension rows of CP50220) through
    ``cp932``, half-width katakana from ``ESC ( I`` or SO/SI, and JIS X 0212 through EUC-JP.
    Other ISO-2022 designations (ISO-2022-JP-2's Chinese, Korean, Latin) go to ``iso2022_jp_2``.
    """
    if b"\x0e" not in data:  # Python's codec would pass SO/SI kana shifts through as controls
        try:
            return data.decode("iso2022_jp"), True
        except UnicodeDecodeError:
            pass
    ok = True
    out: list[str] = []
    mode = _ASCII
    before_so = _ASCII
    pos = 0
    n = len(data)
    while pos < n:
        m = _ESC_RUN.search(data, pos)
        stop = m.start() if m else n
        if stop > pos:
            text, good = _decode_run(data[pos:stop], mode)
            out.append(text)
            ok = ok and good
        if m is None:
            break
        seq = m.group(0)
        if seq == b"\x0e":
            before_so, mode = mode, _KANA
        elif seq == b"\x0f":
            mode = before_so
        elif seq in (b"\x1b(B", b"\x1b(J", b"\x1b(H"):
            mode = _ASCII
        elif seq == b"\x1b(I":
            mode = _KANA
        elif seq in (b"\x1b$(D",):
            mode = _JISX0212
        else:
            mode = _KANJI  # ESC $ @, ESC $ B, ESC & @ ESC $ B, JIS X 0213 planes
        pos = m.end()
    text = "".join(out)
    if not ok:
        try:  # designations this decoder does not know (ISO-2022-JP-2 G2 sets, KS C 5601...)
            return data.decode("iso2022_jp_2"), True
        except UnicodeDecodeError:
            try:
                return data.decode("iso2022_jp_ext"), True
            except UnicodeDecodeError:
                pass
    return text, ok


def _decode_run(run: bytes, mode: int) -> tuple[str, bool]:
    if mode == _ASCII:
        if run.isascii() and b"\x1b" not in run:
            return run.decode("ascii"), True
        return run.decode("ascii", "replace"), False
    if mode == _KANA:
        chars: list[str] = []
        good = True
        for b in run:
            if 0x21 <= b <= 0x5F:
                chars.append(chr(0xFF61 + b - 0x21))  # JIS X 0201 katakana → U+FF61..U+FF9F
            elif 0xA1 <= b <= 0xDF:
                chars.append(chr(0xFF61 + b - 0xA1))  # 8-bit form some mailers send
            elif b in (0x0A, 0x0D, 0x20, 0x09):
                chars.append(chr(b))
            else:
                chars.append("\ufffd")
                good = False
        return "".join(chars), good
    if mode == _JISX0212:
        return _decode_double(run, prefix=b"\x8f")
    return _decode_double(run, prefix=None)


def _decode_double(run: bytes, *, prefix: bytes | None) -> tuple[str, bool]:
    """JIS X 0208 (prefix None) via Shift_JIS/cp932, or JIS X 0212 via EUC-JP (prefix 0x8F)."""
    parts: list[str] = []
    good = True
    i = 0
    n = len(run)
    while i < n:
        b1 = run[i]
        if b1 in (0x0A, 0x0D):  # a line break inside a double-byte run: mailer forgot ESC ( B
            parts.append(chr(b1))
            i += 1
            continue
        if i + 1 >= n:
            parts.append("\ufffd")
            good = False
            break
        b2 = run[i + 1]
        i += 2
        if not (0x21 <= b1 <= 0x7E and 0x21 <= b2 <= 0x7E):
            parts.append("\ufffd")
            good = False
            continue
        if prefix is not None:
            pair = prefix + bytes((b1 | 0x80, b2 | 0x80))
            codec = "euc_jp"
        else:
            pair = _jis_to_sjis(b1, b2)
            codec = "cp932"
        try:
            parts.append(pair.decode(codec))
        except UnicodeDecodeError:
            parts.append("\ufffd")
            good = False
    return "".join(parts), good


def _jis_to_sjis(b1: int, b2: int) -> bytes:
    """JIS X 0208 row/cell bytes to the Shift_JIS byte pair (JIS X 0208:1997 Annex 1)."""
    s1 = ((b1 + 1) >> 1) + (0x70 if b1 <= 0x5E else 0xB0)
    if b1 & 1:
        s2 = b2 + (0x1F if b2 <= 0x5F else 0x20)
    else:
        s2 = b2 + 0x7E
    return bytes((s1, s2))
