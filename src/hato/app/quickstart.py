"""``hato quickstart --demo DIR``: a ready-to-run demo installation in one directory.

Writes ``DIR/hato.toml`` (demo mode, hostname ``mail.example.test``, every listener on
127.0.0.1 with the demo ports), a self-signed certificate under ``DIR/tls/``, and a store under
``DIR/data`` holding the domain ``example.test`` and the account ``demo@example.test``.
``example.test`` is reserved for testing (RFC 2606 §2), so the demo never claims a real domain.

Left out: production set-up (DNS records, ACME certificates): see ``hato doctor``.

Security: the generated password comes from ``secrets``; the private key is written by
``hato.ops.tls.make_self_signed``; ``hato.toml`` is written last and never overwritten, so a
second run cannot clobber an existing installation.
"""

from __future__ import annotations

import secrets
import shlex
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from hato.app.cli_base import open_mail_store
from hato.app.config import Config, load_config, parse_config
from hato.core.errors import UsageError
from hato.ops.tls import make_self_signed
from hato.policy.authn import make_credentials

DEMO_HOSTNAME = "mail.example.test"
DEMO_DOMAIN = "example.test"
DEMO_ACCOUNT = "demo@example.test"
CONFIG_NAME = "hato.toml"

DEMO_CONFIG = f"""\
# Hato demo configuration written by `hato quickstart --demo`.
# Reference of every key: docs/configuration.md (or `hato config doc`).

[server]
hostname = "{DEMO_HOSTNAME}"
data_dir = "data"          # relative to this file
demo = true                # plaintext login allowed from loopback addresses only
log_level = "info"
shutdown_timeout = "10s"

[tls]
cert = "tls/cert.pem"
key = "tls/key.pem"

[smtp]
mx_listeners = ["127.0.0.1:2525"]
submission_listeners = ["127.0.0.1:2587"]    # STARTTLS
submissions_listeners = ["127.0.0.1:2465"]   # implicit TLS

[imap]
listeners = ["127.0.0.1:2143"]       # STARTTLS
tls_listeners = ["127.0.0.1:2993"]   # implicit TLS

[pop3]
listeners = ["127.0.0.1:2110"]       # STLS
tls_listeners = ["127.0.0.1:2995"]   # implicit TLS

[managesieve]
listeners = ["127.0.0.1:24190"]

[http]
listeners = ["127.0.0.1:8080"]
tls_listeners = []

[inbound]
# SPF/DKIM/DMARC checks need real DNS, which the demo (example.test) does not have;
# set this to true on a server that receives mail from the internet.
verify = false
"""


@dataclass(frozen=True, slots=True)
class Quickstart:
    """What quickstart made: where, and the demo login."""

    config_file: Path
    config: Config
    account: str
    password: str
    password_generated: bool


_ALPHANUMERIC = string.ascii_letters + string.digits


def generate_password() -> str:
    """A random password of 16 letters and digits (95 bits): safe unquoted in a shell word,
    an IMAP atom and a POP3 argument, and never starting with "-"."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(16))


async def create_demo(directory: Path, *, password: str | None) -> Quickstart:
    """Create the demo installation in ``directory``; refuses when hato.toml exists there."""
    config_file = directory / CONFIG_NAME
    if config_file.exists():
        raise UsageError(
            f"{config_file} already exists; start it with 'hato serve --config {config_file}' "
            "or choose another directory"
        )
    generated = password is None
    login = generate_password() if password is None else password
    tls_dir = directory / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    make_self_signed(
        tls_dir / "cert.pem",
        tls_dir / "key.pem",
        hostnames=[DEMO_HOSTNAME, "localhost"],
        loopback=True,
    )
    # Validate what we are about to write with the real parser, before touching the store.
    config = parse_config(tomllib.loads(DEMO_CONFIG), base_dir=directory.resolve())
    store = await open_mail_store(config)
    try:
        if not await store.has_domain(DEMO_DOMAIN):
            await store.add_domain(DEMO_DOMAIN)
        credentials = make_credentials(login)
        if await store.get_account(DEMO_ACCOUNT) is None:
            await store.add_account(DEMO_ACCOUNT, credentials)
        else:  # a store left by an interrupted earlier run: take the new password
            await store.set_credentials(DEMO_ACCOUNT, credentials)
    finally:
        await store.close()
    with config_file.open("x", encoding="utf-8") as f:  # "x": never overwrite
        f.write(DEMO_CONFIG)
    return Quickstart(
        config_file=config_file,
        config=load_config(config_file),
        account=DEMO_ACCOUNT,
        password=login,
        password_generated=generated,
    )


def instructions(result: Quickstart) -> str:
    """What to print: the login, how to start the server, send a message and read it."""
    generated = result.password_generated
    shown = result.password if generated else "(the password you gave)"
    pw = shlex.quote(result.password) if generated else "'PASSWORD'"
    raw = result.password if generated else "PASSWORD"
    conf = shlex.quote(str(result.config_file))
    user = result.account
    return f"""\
Demo installation written to {result.config_file.parent}

  account:  {user}
  password: {shown}

Start the server:
  hato serve --config {conf}

Send a message (submission port 2587, STARTTLS + AUTH):
  swaks --server 127.0.0.1:2587 --tls --auth PLAIN \\
        --auth-user {user} --auth-password {pw} \\
        --from {user} --to {user} --header 'Subject: hello from Hato'

Read it over IMAP (port 2143, STARTTLS):
  openssl s_client -quiet -crlf -starttls imap -connect 127.0.0.1:2143
    a LOGIN {user} {raw}
    b SELECT INBOX
    c FETCH 1 BODY[]
    d LOGOUT

or over POP3 (port 2110, STLS):
  openssl s_client -quiet -crlf -starttls pop3 -connect 127.0.0.1:2110
    USER {user}
    PASS {raw}
    RETR 1
    QUIT

Mail clients: IMAP 127.0.0.1:2143 (STARTTLS) or 2993 (TLS), SMTP 127.0.0.1:2587 (STARTTLS)
or 2465 (TLS); the certificate is self-signed for {DEMO_HOSTNAME}.
"""
