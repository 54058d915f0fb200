"""SASL mechanisms (hato.codec.sasl): RFC vectors, interop of our clients and servers, fuzzing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.codec import sasl
from hato.core.errors import AuthError

# RFC 7677 §3 example exchange (user "user", password "pencil").
RFC7677_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC7677_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC7677_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC7677 = [
    b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
]


def pencil_secrets() -> sasl.ScramSecrets:
    return sasl.ScramSecrets.from_password("pencil", salt=RFC7677_SALT, iterations=4096)


def test_rfc7677_known_answer_server() -> None:
    server = sasl.ScramSha256Server(nonce=RFC7677_SERVER_NONCE)
    assert server.receive(RFC7677[0]) == sasl.NeedScramSecrets("user")
    assert server.provide(pencil_secrets()) == sasl.Challenge(RFC7677[1])
    assert server.receive(RFC7677[2]) == sasl.Challenge(RFC7677[3])
    assert server.receive(b"") == sasl.ScramVerified("user")


def test_rfc7677_known_answer_client() -> None:
    client = sasl.ScramSha256Client("user", "pencil", nonce=RFC7677_CLIENT_NONCE)
    assert client.initial() == RFC7677[0]
    assert client.respond(RFC7677[1]) == RFC7677[2]
    assert not client.verified
    assert client.respond(RFC7677[3]) == b""
    assert client.verified


def test_scram_client_rejects_forged_server_signature() -> None:
    client = sasl.ScramSha256Client("user", "pencil", nonce=RFC7677_CLIENT_NONCE)
    client.initial()
    client.respond(RFC7677[1])
    with pytest.raises(AuthError):
        client.respond(b"v=" + base64.b64encode(bytes(32)))
    client = sasl.ScramSha256Client("user", "wrong", nonce=RFC7677_CLIENT_NONCE)
    client.initial()
    client.respond(RFC7677[1])
    with pytest.raises(sasl.SaslError) as info:
        client.respond(b"e=invalid-proof")
    assert info.value.server_error == "invalid-proof"


def test_scram_client_rejects_nonce_not_extending_its_own() -> None:
    # RFC 5802 §5.1 r: the client MUST verify the initial part of the nonce.
    client = sasl.ScramSha256Client("user", "pencil", nonce=RFC7677_CLIENT_NONCE)
    client.initial()
    with pytest.raises(AuthError):
        client.respond(b"r=otherNonce123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_scram_secrets_round_trip_and_stored_form() -> None:
    keys = pencil_secrets()
    text = keys.format()
    assert text.startswith("4096$W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert sasl.ScramSecrets.parse(text) == keys
    for bad in ["", "4096$a$b", "x$W22Z$AAAA$AAAA", "0$AA==$AA==$AA==", "4096$@@$AA==$AA=="]:
        with pytest.raises(sasl.SaslError):
            sasl.ScramSecrets.parse(bad)


def scram_exchange(first: bytes, *, final: bytes | None = None) -> sasl.ScramSha256Server:
    server = sasl.ScramSha256Server(nonce=RFC7677_SERVER_NONCE)
    server.receive(first)
    server.provide(pencil_secrets())
    if final is not None:
        server.receive(final)
    return server


@pytest.mark.parametrize(
    ("first", "error"),
    [
        # RFC 5802 §6: channel binding required by the client, not offered by us.
        (b"p=tls-unique,,n=user,r=abc", "channel-binding-not-supported"),
        # RFC 5802 §5.1 m: a mandatory extension MUST cause failure.
        (b"n,,m=ext,n=user,r=abc", "extensions-not-supported"),
        # RFC 5802 §5.1 n: '=' not followed by 2C or 3D MUST fail.
        (b"n,,n=us=41er,r=abc", "invalid-username-encoding"),
        (b"n,,n=,r=abc", "invalid-username-encoding"),
        (b"n,,n=u\x07ser,r=abc", "invalid-username-encoding"),
        (b"n,,r=abc,n=user", "other-error"),
        (b"n,,n=user,r=a,bc", "invalid-encoding"),
        (b"x,,n=user,r=abc", "other-error"),
        (b"n,,n=user,r=\x7fabc", "other-error"),
        (b"n,\xff,n=user,r=abc", "invalid-encoding"),
    ],
)
def test_scram_client_first_errors(first: bytes, error: str) -> None:
    server = sasl.ScramSha256Server()
    with pytest.raises(sasl.SaslError) as info:
        server.receive(first)
    assert info.value.server_error == error
    assert info.value.server_final == b"e=" + error.encode()


def test_scram_username_escapes_and_authzid() -> None:
    server = sasl.ScramSha256Server()
    event = server.receive(b"y,a=b=2Cc=3Dd,n=a=2Cb=3Dc,r=abc")
    assert event == sasl.NeedScramSecrets("a,b=c", authzid="b,c=d")


def test_scram_wrong_proof_and_channel_data() -> None:
    good = RFC7677[2]
    bad_proof = good[: good.index(b"p=") + 2] + base64.b64encode(bytes(32))
    with pytest.raises(sasl.SaslError) as info:
        scram_exchange(RFC7677[0], final=bad_proof)
    assert info.value.server_error == "invalid-proof"
    # RFC 5802 §5.1 c: c= must repeat the gs2 header ("n,," is "biws").
    with pytest.raises(sasl.SaslError) as info:
        scram_exchange(RFC7677[0], final=good.replace(b"c=biws", b"c=eSws"))
    assert info.value.server_error == "channel-bindings-dont-match"
    # RFC 5802 §5.1 r: the server MUST verify the nonce it sent.
    with pytest.raises(sasl.SaslError) as info:
        scram_exchange(RFC7677[0], final=good.replace(b"k0,p=", b"k1,p="))
    assert info.value.server_error == "other-error"


def test_scram_out_of_sequence_and_nonempty_ack() -> None:
    server = scram_exchange(RFC7677[0], final=RFC7677[2])
    with pytest.raises(sasl.SaslError):
        server.receive(b"more")
    with pytest.raises(sasl.SaslError):
        server.receive(b"")  # a failed exchange stays failed
    fresh = sasl.ScramSha256Server()
    assert fresh.receive(None) == sasl.Challenge(b"")
    with pytest.raises(sasl.SaslError):
        fresh.provide(pencil_secrets())


def test_decoy_secrets_are_stable_in_salt_but_never_match() -> None:
    a = sasl.ScramSecrets.decoy("nobody@example.org", b"k" * 32)
    b = sasl.ScramSecrets.decoy("nobody@example.org", b"k" * 32)
    assert a.salt == b.salt and a.iterations == 4096
    assert a.stored_key != b.stored_key


# -- PLAIN (RFC 4616) and LOGIN -------------------------------------------------------------


def test_plain() -> None:
    server = sasl.PlainServer()
    assert server.receive(None) == sasl.Challenge(b"")
    event = server.receive(b"\x00tim\x00tanstaaftanstaaf")  # RFC 4616 §4 example
    assert event == sasl.PasswordReceived("tim", "tanstaaftanstaaf", authzid="")
    with pytest.raises(sasl.SaslError):
        server.receive(b"\x00tim\x00x")


def test_plain_accepts_255_octet_fields() -> None:
    # RFC 4616 §2: servers MUST accept authzid, authcid and passwd up to 255 octets.
    big = "é" * 127 + "x"
    event = sasl.PlainServer().receive(f"{big}\x00{big}\x00{big}".encode())
    assert isinstance(event, sasl.PasswordReceived)
    assert len(event.password.encode()) == 255


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"tim",
        b"\x00tim",
        b"\x00\x00pw",
        b"\x00tim\x00",
        b"a\x00b\x00c\x00d",
        b"\x00t\xffm\x00pw",
    ],
)
def test_plain_malformed(message: bytes) -> None:
    with pytest.raises(sasl.SaslError):
        sasl.PlainServer().receive(message)


def test_login_with_and_without_initial_response() -> None:
    server = sasl.LoginServer()
    assert server.receive(None) == sasl.Challenge(b"Username:")
    assert server.receive(b"tim") == sasl.Challenge(b"Password:")
    assert server.receive(b"secret") == sasl.PasswordReceived("tim", "secret")
    server = sasl.LoginServer()
    assert server.receive(b"tim") == sasl.Challenge(b"Password:")
    with pytest.raises(sasl.SaslError):
        server.receive(b"")


def test_unknown_mechanism() -> None:
    with pytest.raises(AuthError):
        sasl.server_mechanism("CRAM-MD5")
    with pytest.raises(AuthError):
        sasl.client_mechanism("GSSAPI", "u", "p")
    assert sasl.server_mechanism("scram-sha-256").name == sasl.SCRAM_SHA_256


# -- SASLprep (RFC 4013 §3 examples) --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prepared"),
    [("I\u00adX", "IX"), ("user", "user"), ("USER", "USER"), ("\u00aa", "a"), ("\u2168", "IX")],
)
def test_saslprep_examples(text: str, prepared: str) -> None:
    assert sasl.saslprep(text) == prepared


@pytest.mark.parametrize("text", ["\u0007", "\u0627\u0031", "a\ue000b", "a\u200eb"])
def test_saslprep_prohibited(text: str) -> None:
    with pytest.raises(sasl.SaslError):
        sasl.saslprep(text)


def test_saslprep_unassigned_only_in_queries() -> None:
    unassigned = "a\u0221"  # not assigned in Unicode 3.2 (RFC 3454 table A.1)
    with pytest.raises(sasl.SaslError):
        sasl.saslprep(unassigned)
    assert sasl.saslprep(unassigned, allow_unassigned=True) == unassigned
    assert sasl.saslprep("a\u00a0b") == "a b"  # RFC 4013 §2.1: non-ASCII space maps to SPACE


def test_prepare_password_falls_back_to_raw() -> None:
    assert sasl.prepare_password("pa\u00adss") == "pass"
    assert sasl.prepare_password("pa\u0007ss") == "pa\u0007ss"


# -- our clients against our servers ---------------------------------------------------------


def run(
    server: sasl.ServerMechanism, client: sasl.ClientMechanism, keys: sasl.ScramSecrets
) -> sasl.ServerEvent:
    event = server.receive(client.initial())
    for _ in range(5):
        if isinstance(event, sasl.NeedScramSecrets):
            assert isinstance(server, sasl.ScramServer)
            event = server.provide(keys)
        if not isinstance(event, sasl.Challenge):
            return event
        event = server.receive(client.respond(event.data))
    raise AssertionError("exchange did not finish")


def _prepared(text: str) -> bool:
    """True when SASLprep leaves ``text`` as it is (so the server reports the same name)."""
    try:
        return sasl.saslprep(text, allow_unassigned=True) == text
    except sasl.SaslError:
        return False


names = st.text(min_size=1, max_size=20).filter(_prepared)


@settings(max_examples=40, deadline=None)
@given(username=names, password=st.text(min_size=1, max_size=30).filter(lambda p: "\x00" not in p))
def test_interop_all_mechanisms(username: str, password: str) -> None:
    for name in sasl.MECHANISMS:
        digest = sasl.SCRAM_DIGESTS.get(name, "sha256")
        keys = sasl.ScramSecrets.from_password(password, digest=digest)
        client = sasl.client_mechanism(name, username, password)
        event = run(sasl.server_mechanism(name), client, keys)
        if name in sasl.SCRAM_DIGESTS:
            assert event == sasl.ScramVerified(username)
            assert isinstance(client, sasl.ScramClient) and client.verified
        else:
            assert event == sasl.PasswordReceived(username, password)


def test_interop_scram_wrong_password_fails_with_invalid_proof() -> None:
    keys = sasl.ScramSecrets.from_password("right")
    with pytest.raises(sasl.SaslError) as info:
        run(sasl.ScramSha256Server(), sasl.ScramSha256Client("u", "wrong"), keys)
    assert info.value.server_error == "invalid-proof"


# -- fuzzing: arbitrary client bytes raise nothing but AuthError -----------------------------


@settings(max_examples=300, deadline=None)
@given(
    mechanism=st.sampled_from(sasl.MECHANISMS),
    messages=st.lists(st.one_of(st.none(), st.binary(max_size=300)), min_size=1, max_size=4),
)
def test_fuzz_servers_raise_only_auth_errors(mechanism: str, messages: list[bytes | None]) -> None:
    server = sasl.server_mechanism(mechanism)
    for message in messages:
        try:
            event = server.receive(message)
            if isinstance(event, sasl.NeedScramSecrets):
                assert isinstance(server, sasl.ScramServer)
                server.provide(pencil_secrets())
        except AuthError:
            return


scram_like = st.builds(
    lambda parts: ",".join(parts).encode(),
    st.lists(
        st.sampled_from(
            [
                "n",
                "y",
                "p=x",
                "",
                "a=u",
                "n=user",
                "r=abc",
                "m=1",
                "c=biws",
                "p=AA==",
                "=",
                "r=ab=3D",
            ]
        ),
        max_size=6,
    ),
)


@settings(max_examples=300, deadline=None)
@given(first=scram_like, final=scram_like)
def test_fuzz_scram_structured(first: bytes, final: bytes) -> None:
    server = sasl.ScramSha256Server()
    try:
        if isinstance(server.receive(first), sasl.NeedScramSecrets):
            server.provide(pencil_secrets())
            server.receive(final)
    except AuthError:
        pass


# RFC 5802 §5: the SCRAM-SHA-1 example exchange (user "user", password "pencil").
RFC5802 = [
    b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
]


def rfc5802_secrets() -> sasl.ScramSecrets:
    salt = base64.b64decode("QSXCR+Q6sek8bf92")
    return sasl.ScramSecrets.from_password("pencil", salt=salt, iterations=4096, digest="sha1")


def test_rfc5802_scram_sha1_known_answer_server() -> None:
    server = sasl.server_mechanism("SCRAM-SHA-1", scram_nonce="3rfcNHYJY1ZVvWVs7j")
    assert isinstance(server, sasl.ScramSha1Server)
    assert server.receive(RFC5802[0]) == sasl.NeedScramSecrets("user")
    assert server.provide(rfc5802_secrets()) == sasl.Challenge(RFC5802[1])
    assert server.receive(RFC5802[2]) == sasl.Challenge(RFC5802[3])
    assert server.receive(b"") == sasl.ScramVerified("user")


def test_rfc5802_scram_sha1_known_answer_client() -> None:
    client = sasl.ScramSha1Client("user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert client.initial() == RFC5802[0]
    assert client.respond(RFC5802[1]) == RFC5802[2]
    assert client.respond(RFC5802[3]) == b""
    assert client.verified


def test_scram_sha1_secrets_round_trip_and_refuse_the_other_hash() -> None:
    keys = rfc5802_secrets()
    assert sasl.ScramSecrets.parse(keys.format(), digest="sha1") == keys
    with pytest.raises(sasl.SaslError):  # 20-byte keys are not SHA-256 keys
        sasl.ScramSecrets.parse(keys.format())
    server = sasl.ScramSha256Server()
    server.receive(b"n,,n=user,r=abc")
    with pytest.raises(sasl.SaslError):
        server.provide(keys)
