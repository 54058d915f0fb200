"""``hato domain|account|alias|export|import`` through click's CliRunner on a real store."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_cli_harness import Hato

from hato.core.errors import AuthError
from hato.policy.authn import Authenticator
from hato.store.api import MailStore

PASSWORD = "correct horse battery"


def login_works(hato: Hato, address: str, password: str) -> bool:
    async def work(store: MailStore) -> bool:
        auth = Authenticator(store)
        try:
            await auth.check_password(address, password, remote_ip="127.0.0.1", secure=True)
        except AuthError:
            return False
        return True

    return hato.with_store(work)


def test_domain_add_list_remove(hato: Hato) -> None:
    added = hato.ok("domain", "add", "Example.TEST").splitlines()
    assert added[0] == "added domain example.test"
    # Both DKIM keys are generated with the domain (RSA for reach, Ed25519 per RFC 8463).
    assert [line.split()[3] for line in added[1:]] == ["(rsa):", "(ed25519):"]
    assert all(line.endswith("._domainkey.example.test") for line in added[1:])
    added = hato.ok("domain", "add", "xn--bcher-kva.example").splitlines()
    assert added[0] == "added domain bücher.example"
    listing = hato.ok("domain", "list").splitlines()
    assert listing[0].split() == ["DOMAIN", "ACCOUNTS", "ALIASES"]
    assert sorted(line.split() for line in listing[1:]) == [
        ["bücher.example", "0", "0"],
        ["example.test", "0", "0"],
    ]
    assert hato.ok("domain", "remove", "bücher.example") == "removed domain bücher.example\n"
    assert hato.fails("domain", "remove", "bücher.example") == "no domain bücher.example"
    assert "already" in hato.fails("domain", "add", "example.test")
    assert hato.fails("domain", "add", "bad_domain..test") == "invalid domain 'bad_domain..test'"


def test_domain_remove_needs_force_when_accounts_exist(hato: Hato) -> None:
    hato.ok("domain", "add", "example.test")
    hato.ok("account", "add", "a@example.test", "--password-stdin", stdin=PASSWORD + "\n")
    hato.ok("account", "add", "b@example.test", "--password-stdin", stdin=PASSWORD + "\n")
    assert (
        hato.fails("domain", "remove", "example.test")
        == "domain example.test has 2 accounts; use --force"
    )
    hato.ok("alias", "add", "info@example.test", "a@example.test")
    assert (
        hato.fails("domain", "remove", "example.test")
        == "domain example.test has 2 accounts and 1 alias; use --force"
    )
    assert hato.ok("account", "list").count("@example.test") == 2  # nothing was removed
    assert hato.ok("domain", "remove", "example.test", "--force") == "removed domain example.test\n"
    assert hato.ok("domain", "list") == ""
    assert hato.with_store(lambda store: store.get_account("a@example.test")) is None


def test_account_lifecycle(hato: Hato) -> None:
    hato.ok("domain", "add", "example.test")
    out = hato.ok(
        "account", "add", "Alice@Example.test", "--quota", "2G", "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert out == "added account alice@example.test\n"
    assert login_works(hato, "alice@example.test", PASSWORD)
    assert not login_works(hato, "alice@example.test", PASSWORD + "x")

    rows = [line.split() for line in hato.ok("account", "list").splitlines()]
    assert rows == [
        ["ADDRESS", "QUOTA", "USED", "MESSAGES", "ENABLED"],
        ["alice@example.test", "2G", "0", "0", "yes"],
    ]
    assert hato.ok("account", "quota", "alice@example.test", "500M") == (
        "quota of alice@example.test: 500M\n"
    )
    assert hato.ok("account", "quota", "alice@example.test", "none") == (
        "quota of alice@example.test: none\n"
    )
    assert hato.ok("account", "disable", "alice@example.test") == (
        "disabled account alice@example.test\n"
    )
    rows = [line.split() for line in hato.ok("account", "list", "example.test").splitlines()]
    assert rows[1] == ["alice@example.test", "none", "0", "0", "no"]
    assert not login_works(hato, "alice@example.test", PASSWORD)
    hato.ok("account", "enable", "alice@example.test")

    new = "another long password"
    assert hato.ok("account", "passwd", "alice@example.test", "--password-stdin", stdin=new) == (
        "password changed for alice@example.test\n"
    )
    assert login_works(hato, "alice@example.test", new)
    assert not login_works(hato, "alice@example.test", PASSWORD)

    assert hato.ok("account", "remove", "alice@example.test") == (
        "removed account alice@example.test\n"
    )
    assert hato.ok("account", "list") == ""
    assert hato.fails("account", "remove", "alice@example.test") == "no account alice@example.test"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("account", "add", "a@nowhere.test", "--password-stdin"), PASSWORD,
         "no domain nowhere.test; add it first with 'hato domain add nowhere.test'"),
        (("account", "add", "not-an-address", "--password-stdin"), PASSWORD,
         "invalid address 'not-an-address': expected local@domain"),
        (("account", "add", "a@example.test", "--password-stdin"), "short\n",
         "the password is too short (at least 8 characters)"),
        (("account", "add", "a@example.test", "--password-stdin"), "",
         "the password is empty"),
        (("account", "add", "a@example.test", "--password-stdin"), "two\nlines of password\n",
         "the password must be one line without NUL characters"),
        # Not a terminal and no --password-stdin: never read a password from elsewhere.
        (("account", "add", "a@example.test"), PASSWORD,
         "no password given: use --password-stdin, or run in a terminal"),
        (("account", "add", "a@example.test", "--password-stdin", "--quota", "lots"), PASSWORD,
         'expected a size like "1G" or none, got "lots"'),
        (("account", "quota", "a@example.test", "1G"), None, "no account a@example.test"),
        (("account", "quota", "a@example.test"), None,
         "Missing argument 'SIZE|none'. (see 'hato account quota --help')"),
        (("account", "passwd", "a@example.test", "--password-stdin"), PASSWORD,
         "no account a@example.test"),
        (("account", "list", "nowhere.test"), None,
         "no domain nowhere.test; add it first with 'hato domain add nowhere.test'"),
        (("account", "frobnicate"), None,
         "No such command 'frobnicate'. (see 'hato account --help')"),
    ],
)
def test_account_errors_are_one_line(
    hato: Hato, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    hato.ok("domain", "add", "example.test")
    assert hato.fails(*args, stdin=stdin) == message


def test_password_is_never_an_argument(hato: Hato) -> None:
    hato.ok("domain", "add", "example.test")
    message = hato.fails("account", "add", "a@example.test", "--password", PASSWORD)
    assert message.startswith("No such option")  # wording varies between click versions
    assert message.endswith("(see 'hato account add --help')")
    assert PASSWORD not in message


def test_account_add_twice_fails(hato: Hato) -> None:
    hato.ok("domain", "add", "example.test")
    hato.ok("account", "add", "a@example.test", "--password-stdin", stdin=PASSWORD)
    assert "a@example.test" in hato.fails(
        "account", "add", "A@example.test", "--password-stdin", stdin=PASSWORD
    )


def test_aliases(hato: Hato) -> None:
    hato.ok("domain", "add", "example.test")
    hato.ok("account", "add", "alice@example.test", "--password-stdin", stdin=PASSWORD)
    out = hato.ok("alias", "add", "Info@Example.test", "ALICE@example.test", "Bob@Remote.Example")
    assert out == "added alias info@example.test -> alice@example.test, Bob@remote.example\n"
    hato.ok("alias", "add", "@example.test", "alice@example.test")
    assert sorted(hato.ok("alias", "list").splitlines()) == [
        "@example.test -> alice@example.test",
        "info@example.test -> alice@example.test, Bob@remote.example",
    ]
    assert hato.ok("alias", "list", "example.test").count("->") == 2
    assert hato.fails("alias", "add", "x@example.test", "nobody@example.test") == (
        "alias target nobody@example.test is neither an account nor an alias"
    )
    assert hato.fails("alias", "add", "x@other.test", "alice@example.test") == (
        "no domain other.test; add it first with 'hato domain add other.test'"
    )
    assert hato.fails("alias", "add", "x@example.test") == (
        "Missing argument 'TARGETS...'. (see 'hato alias add --help')"
    )
    assert hato.ok("alias", "remove", "info@EXAMPLE.test") == "removed alias info@example.test\n"
    assert hato.fails("alias", "remove", "info@example.test") == "no alias info@example.test"
    assert hato.ok("alias", "list") == "@example.test -> alice@example.test\n"


MBOX = b"""\
From alice@example.test Mon Jan  1 00:00:00 2024
From: alice@example.test
To: bob@example.test
Subject: one

first body
>From here, quoted
From bob@example.test Tue Jan  2 00:00:00 2024
From: bob@example.test
Subject: two

second body
"""


def test_import_mbox_then_export(hato: Hato, tmp_path: Path) -> None:
    hato.ok("domain", "add", "example.test")
    hato.ok("account", "add", "bob@example.test", "--password-stdin", stdin=PASSWORD)
    src = tmp_path / "in.mbox"
    src.write_bytes(MBOX)
    assert hato.ok("import", "bob@example.test", "--mbox", str(src), "--mailbox", "Old") == (
        f"imported 2 messages into bob@example.test from {src}\n"
    )
    rows = [line.split() for line in hato.ok("account", "list").splitlines()]
    assert rows[1][3] == "2"

    dest = tmp_path / "out.mbox"
    assert hato.ok("export", "bob@example.test", "--mbox", str(dest), "--mailbox", "Old") == (
        f"exported 2 messages of bob@example.test to {dest}\n"
    )
    assert b"Subject: one" in dest.read_bytes() and b"Subject: two" in dest.read_bytes()

    maildir = tmp_path / "maildir"
    assert hato.ok("export", "bob@example.test", "--maildir", str(maildir)) == (
        f"exported 2 messages of bob@example.test to {maildir}\n"
    )
    hato.ok("account", "add", "carol@example.test", "--password-stdin", stdin=PASSWORD)
    assert hato.ok("import", "carol@example.test", "--maildir", str(maildir)) == (
        f"imported 2 messages into carol@example.test from {maildir}\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("export", "bob@example.test"), "give exactly one of --maildir DIR or --mbox FILE"),
        (("export", "bob@example.test", "--maildir", "d", "--mbox", "f"),
         "give exactly one of --maildir DIR or --mbox FILE"),
        (("import", "bob@example.test", "--maildir", "d", "--mailbox", "X"),
         "--mailbox applies to --mbox only (Maildir holds every mailbox)"),
        (("export", "nobody@example.test", "--mbox", "f"), "no account nobody@example.test"),
    ],
)
def test_transfer_errors(hato: Hato, args: tuple[str, ...], message: str) -> None:
    hato.ok("domain", "add", "example.test")
    hato.ok("account", "add", "bob@example.test", "--password-stdin", stdin=PASSWORD)
    assert hato.fails(*args) == message


def test_import_of_a_missing_mbox_is_one_line(hato: Hato, tmp_path: Path) -> None:
    hato.ok("domain", "add", "example.test")
    hato.ok("account", "add", "bob@example.test", "--password-stdin", stdin=PASSWORD)
    message = hato.fails("import", "bob@example.test", "--mbox", str(tmp_path / "none.mbox"))
    assert str(tmp_path / "none.mbox") in message


def test_progress_reporter_follows_the_callback(capsys: pytest.CaptureFixture[str]) -> None:
    from hato.app.cli_transfer import ProgressReporter

    quiet = ProgressReporter("exporting", enabled=False)
    quiet(1, 3)
    quiet.close()
    assert (quiet.done, quiet.total) == (1, 3)
    assert capsys.readouterr().out == ""

    bar = ProgressReporter("exporting x", enabled=True)
    for done in range(4):
        bar(done, 3)
    bar.close()
    bar.close()  # closing twice is harmless
    assert (bar.done, bar.total) == (3, 3)
    assert "exporting x" in capsys.readouterr().out  # not a terminal: the label only
