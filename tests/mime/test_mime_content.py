"""Transfer decoding (RFC 2045 §6), text extraction and the search text of a message."""

from __future__ import annotations

import base64

from hato.codec.mime import (
    decode_body,
    decode_encapsulated,
    html_to_text,
    iter_text,
    parse_message,
    text_content,
)
from hato.codec.mime.content import decode_quoted_printable


def test_quoted_printable_rfc2045_rules() -> None:
    assert decode_quoted_printable(b"caf=C3=A9 =\r\nsoft break") == "café soft break".encode()
    assert decode_quoted_printable(b"trailing   \r\nspace\t\r\n") == b"trailing\r\nspace\r\n"
    assert decode_quoted_printable(b"lower =c3=a9 ok") == "lower é ok".encode()
    assert decode_quoted_printable(b"bad =ZZ and =") == b"bad =ZZ and "
    assert decode_quoted_printable(b"soft =  \nbreak") == b"soft break"


def test_base64_ignores_junk_and_stops_at_padding() -> None:
    data = b"Content-Transfer-Encoding: BASE64\r\n\r\naGVs\r\nbG8=\r\n ignored\r\n"
    root = parse_message(data)
    assert decode_body(root, data) == b"hello"
    data = b"Content-Transfer-Encoding: base64\r\n\r\naGV*sbG8\r\n"  # RFC 2045 §6.8
    assert decode_body(parse_message(data), data) == b"hello"


def test_identity_encodings_return_the_bytes() -> None:
    for cte in (b"7bit", b"8bit", b"binary", b"x-unknown"):
        data = b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n\x00\xffraw=41"
        assert decode_body(parse_message(data), data) == b"\x00\xffraw=41"


def test_uuencode() -> None:
    import binascii

    line = binascii.b2a_uu(b"uuencoded data")
    data = b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 f.txt\n" + line + b"`\nend\n"
    assert decode_body(parse_message(data), data) == b"uuencoded data"


def test_html_to_text() -> None:
    markup = (
        "<html><head><title>t</title><style>p {color: red}</style></head>"
        "<body><p>Hello&nbsp;<b>world</b> &amp; friends</p><script>alert(1)</script>"
        "<!-- hidden --><br>next line</body></html>"
    )
    assert html_to_text(markup) == "Hello\xa0world & friends\nnext line"


def test_iter_text_covers_headers_text_parts_and_encapsulated_messages() -> None:
    inner = base64.encodebytes(
        b"Subject: forwarded inside base64\r\n\r\nencapsulated words\r\n"
    ).decode("ascii")
    data = (
        "From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>\r\n"
        "Subject: outer subject\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        "<p>html &lt;body&gt;</p>\r\n"
        "--b\r\nContent-Type: image/png; name=picture.png\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
        "--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{inner}"
        "--b--\r\n"
    ).encode()
    root = parse_message(data)
    texts = list(iter_text(root, data))
    assert "Jürgen <j@example.de>" in texts
    assert "outer subject" in texts
    assert "html <body>" in texts
    assert "picture.png" in texts
    assert "forwarded inside base64" in texts  # encapsulated message headers, decoded first
    assert "encapsulated words\r\n" in texts
    assert not any("iVBOR" in t for t in texts)  # binary bodies are not text
    encoded = root.children[2]
    assert encoded.message is None
    decoded = decode_encapsulated(encoded, data)
    assert decoded is not None
    tree, raw = decoded
    assert text_content(tree, raw) == "encapsulated words\r\n"
    assert decode_encapsulated(root.children[0], data) is None


def test_text_content_of_an_undeclared_8bit_body() -> None:
    data = b"Subject: x\n\nna\xefve"  # RFC 2046 §4.1.2 says US-ASCII; the bytes say otherwise
    assert text_content(parse_message(data), data) == "naïve"
