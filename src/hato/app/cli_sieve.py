"""``hato sieve`` (an account's Sieve scripts) and ``hato account forward|vacation``.

Forwarding and vacation replies are not settings beside the scripts: they are written as one
generated Sieve script (``GENERATED``, marked as generated in its first lines, with the
settings it was made from in a ``# hato-settings:`` comment) that becomes the active script,
so users (over ManageSieve) and admins (here) see and edit one truth. When another script
was active, the generated one runs it too (RFC 6609 ``include :personal``); turning both
features off deletes the generated script and makes that script active again.

Implements the generated forms of RFC 5228 §4.2 redirect with RFC 3894 ``:copy`` (``--keep``),
RFC 5230 vacation (``:days``, ``:subject``, ``:addresses``) limited by RFC 5260
``currentdate`` with RFC 5231 ``:value "le"`` (``--until``), RFC 6609 include.

Left out: editing scripts in place (use ``get``, an editor and ``put``).

Security: scripts are validated by the Sieve parser before they are stored; file content is
never logged.
"""

from __future__ import annotations

import datetime
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from hato.app.cli_base import account_key, config_option, human_size, run_with_store, table
from hato.app.config import load_config
from hato.app.config_sieve import sieve_settings
from hato.core.address import Address
from hato.core.errors import NotFound, UsageError
from hato.delivery.sieve import DEFAULT_SETTINGS, MAX_REDIRECTS, SieveSettings, check_script
from hato.store.api import MailStore
from hato.store.model import Account

GENERATED = "hato-generated"
SETTINGS_PREFIX = "# hato-settings: "
DEFAULT_VACATION_DAYS = 7  # RFC 5230 §4.1: the default is 7 days
MAX_VACATION_DAYS = 365


@dataclass(frozen=True)
class Generated:
    """What the generated script is made from (and reads back from its settings comment)."""

    forward: tuple[str, ...] = ()
    keep: bool = False
    vacation: dict[str, Any] | None = None  # subject, body, days, until (YYYY-MM-DD), addresses
    include: str | None = None  # the user's script it runs too

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.forward:
            out["forward"] = {"to": list(self.forward), "keep": self.keep}
        if self.vacation is not None:
            out["vacation"] = self.vacation
        if self.include is not None:
            out["include"] = self.include
        return out

    @classmethod
    def read(cls, content: str) -> Generated:
        for line in content.splitlines():
            if line.startswith(SETTINGS_PREFIX):
                try:
                    data = json.loads(line.removeprefix(SETTINGS_PREFIX))
                except ValueError:
                    break
                forward = data.get("forward") or {}
                return cls(
                    forward=tuple(forward.get("to", ())),
                    keep=bool(forward.get("keep", False)),
                    vacation=data.get("vacation"),
                    include=data.get("include"),
                )
        raise UsageError(f"script {GENERATED} has no readable {SETTINGS_PREFIX.strip()} line")


def sieve_string(text: str) -> str:
    """A Sieve quoted string (RFC 5228 §2.4.2: backslash escapes quote and backslash)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sieve_text_block(text: str) -> str:
    """A ``text:`` multi-line string (RFC 5228 §2.4.2: lines starting with "." are doubled)."""
    lines = text.replace("\r\n", "\n").removesuffix("\n").split("\n")
    stuffed = ["." + line if line.startswith(".") else line for line in lines]
    return "text:\n" + "\n".join(stuffed) + "\n.\n"


def render(generated: Generated) -> str:
    """The generated script's text."""
    requires: list[str] = []
    body: list[str] = []
    vacation = generated.vacation
    if vacation is not None:
        requires.append("vacation")
        action = (
            f"vacation :days {int(vacation['days'])} :subject {sieve_string(vacation['subject'])}"
        )
        if vacation.get("addresses"):
            listed = ", ".join(sieve_string(a) for a in vacation["addresses"])
            action += f" :addresses [{listed}]"
        action += " " + sieve_text_block(vacation["body"]) + ";"
        body.append("# Vacation auto-reply (RFC 5230)")
        if vacation.get("until"):
            requires += ["date", "relational"]
            # RFC 5260 §5 currentdate, RFC 5231 :value "le": until the end of that day
            body.append(f'if currentdate :value "le" "date" {sieve_string(vacation["until"])} {{')
            body.append(action)
            body.append("}")
        else:
            body.append(action)
    if generated.forward:
        what = "keeping a copy" if generated.keep else "without keeping a copy"
        body.append(f"# Forward ({what})")
        if generated.keep:
            requires.append("copy")  # RFC 3894: redirect :copy keeps the implicit keep
        for target in generated.forward:
            body.append(f"redirect{' :copy' if generated.keep else ''} {sieve_string(target)};")
    if generated.include is not None:
        requires.append("include")
        body.append("# The script that was active before")
        body.append(f"include :personal {sieve_string(generated.include)};")
    head = [
        '# Generated by Hato ("hato account forward" / "hato account vacation").',
        "# Those commands rewrite this script: to edit it by hand, save it under another name.",
        SETTINGS_PREFIX + json.dumps(generated.settings(), ensure_ascii=False, sort_keys=True),
    ]
    if requires:
        head.append("require [" + ", ".join(sieve_string(r) for r in requires) + "];")
    return "\n".join([*head, "", *body]) + "\n"


def _settings(config_path: Path) -> SieveSettings:
    """The Sieve settings delivery uses (``[sieve]``: extensions such as the configured
    vnd.dovecot programs, limits), so a check here agrees with delivery and ManageSieve."""
    config = load_config(config_path)
    return sieve_settings(config.sieve, hostname=config.server.hostname)


def _validate(
    text: str, scripts: dict[str, str], *, what: str, settings: SieveSettings = DEFAULT_SETTINGS
) -> None:
    errors = check_script(text, scripts=scripts, settings=settings)
    if errors:
        line, message = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UsageError(f"{what}: line {line}: {message}{more}")


async def _account(store: MailStore, address: str) -> Account:
    key = account_key(address)
    found = await store.get_account(key)
    if found is None:
        raise NotFound(f"no account {key}")
    return found


def _read_file(path: str) -> str:
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return raw.decode("utf-8")  # RFC 5228 §2.1: scripts are UTF-8
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


# -- hato sieve ------------------------------------------------------------------------------


@click.group()
def sieve() -> None:
    """Manage an account's Sieve filter scripts (as ManageSieve clients do)."""


@sieve.command("list")
@click.argument("address")
@config_option
def sieve_list(address: str, config_path: Path) -> None:
    """List the Sieve scripts of ADDRESS; the active one is marked."""

    async def work(store: MailStore) -> list[tuple[str, ...]]:
        acc = await _account(store, address)
        rows: list[tuple[str, ...]] = [("NAME", "SIZE", "ACTIVE")]
        for script in await store.list_scripts(acc.id):
            rows.append((script.name, human_size(script.size), "yes" if script.active else ""))
        return rows

    rows = run_with_store(config_path, work)
    if len(rows) > 1:
        click.echo(table(rows))


@sieve.command("get")
@click.argument("address")
@click.argument("name")
@config_option
def sieve_get(address: str, name: str, config_path: Path) -> None:
    """Print the script NAME of ADDRESS."""

    async def work(store: MailStore) -> str:
        acc = await _account(store, address)
        script = await store.get_script(acc.id, name)
        if script is None:
            raise NotFound(f"{acc.address} has no script {name!r}")
        return script.content

    click.echo(run_with_store(config_path, work), nl=False)


@sieve.command("put")
@click.argument("address")
@click.argument("name")
@click.argument("file", metavar="FILE")
@click.option("--activate", is_flag=True, help="Also make it the active script.")
@config_option
def sieve_put(address: str, name: str, file: str, activate: bool, config_path: Path) -> None:
    """Store FILE ("-": standard input) as the script NAME of ADDRESS, after checking it."""
    content = _read_file(file)
    if not content:
        raise UsageError("the script is empty")  # RFC 5804 §2.6: SHOULD be disallowed
    settings = _settings(config_path)

    async def work(store: MailStore) -> str:
        acc = await _account(store, address)
        scripts = {s.name: s.content for s in await store.list_scripts(acc.id)}
        _validate(content, scripts, what=file, settings=settings)
        stored = await store.put_script(acc.id, name, content, activate=activate)
        return stored.name

    stored_name = run_with_store(config_path, work)
    click.echo(f"stored script {stored_name}{' (active)' if activate else ''}")


@sieve.command("activate")
@click.argument("address")
@click.argument("name", required=False)
@click.option("--none", "deactivate", is_flag=True, help="Make no script active.")
@config_option
def sieve_activate(address: str, name: str | None, deactivate: bool, config_path: Path) -> None:
    """Make the script NAME the active one of ADDRESS (or none with --none)."""
    if (name is None) == (not deactivate):
        raise UsageError("give a script NAME or --none")

    async def work(store: MailStore) -> None:
        acc = await _account(store, address)
        try:
            await store.set_active_script(acc.id, name)
        except NotFound:
            raise NotFound(f"{acc.address} has no script {name!r}") from None

    run_with_store(config_path, work)
    click.echo(f"active script: {name}" if name else "no active script")


@sieve.command("delete")
@click.argument("address")
@click.argument("name")
@config_option
def sieve_delete(address: str, name: str, config_path: Path) -> None:
    """Delete the script NAME of ADDRESS (not the active one)."""

    async def work(store: MailStore) -> None:
        acc = await _account(store, address)
        await store.delete_script(acc.id, name)

    run_with_store(config_path, work)
    click.echo(f"deleted script {name}")


@sieve.command("check")
@click.argument("address")
@click.argument("file", metavar="FILE")
@config_option
def sieve_check(address: str, file: str, config_path: Path) -> None:
    """Check FILE ("-": standard input) as a script of ADDRESS without storing it."""
    content = _read_file(file)
    settings = _settings(config_path)

    async def work(store: MailStore) -> list[tuple[int, str]]:
        acc = await _account(store, address)
        scripts = {s.name: s.content for s in await store.list_scripts(acc.id)}
        return check_script(content, scripts=scripts, settings=settings)

    errors = run_with_store(config_path, work)
    for line, message in errors:
        click.echo(f"{file}:{line}: {message}")
    if errors:
        raise UsageError(f"{file}: {len(errors)} error{'s' if len(errors) != 1 else ''}")
    click.echo("ok")


# -- hato account forward|vacation -------------------------------------------------------------


async def _update_generated(store: MailStore, acc: Account, change: dict[str, Any]) -> list[str]:
    """Rewrite (or delete) the generated script with ``change`` applied; returns what was
    done, one line each."""
    current = await store.get_script(acc.id, GENERATED)
    old = Generated.read(current.content) if current is not None else Generated()
    active = await store.get_active_script(acc.id)
    include = old.include
    if active is not None and active.name != GENERATED:
        include = active.name  # the user's own script keeps running, from ours
    merged: dict[str, Any] = {"forward": old.forward, "keep": old.keep, "vacation": old.vacation}
    merged.update(change)
    generated = Generated(include=include, **merged)
    if not generated.forward and generated.vacation is None:
        if current is None:
            return ["nothing to turn off"]
        done = [f"removed script {GENERATED}"]
        if current.active:
            await store.set_active_script(acc.id, include)
            done.append(f"active script: {include}" if include else "no active script")
        await store.delete_script(acc.id, GENERATED)
        return done
    text = render(generated)
    scripts = {s.name: s.content for s in await store.list_scripts(acc.id)}
    _validate(text, scripts, what=GENERATED)
    await store.put_script(acc.id, GENERATED, text, activate=True)
    done = [f"active script: {GENERATED}"]
    if include is not None:
        done.append(f"(it also runs your script {include})")
    return done


def _report(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def add_sieve_commands(cli: click.Group, account: click.Group) -> None:
    """Register ``hato sieve`` and ``hato account forward|vacation``."""
    cli.add_command(sieve)
    account.add_command(account_forward)
    account.add_command(account_vacation)


@click.command("forward")
@click.argument("address")
@click.argument("targets", nargs=-1, metavar="TO...")
@click.option("--keep", is_flag=True, help="Also keep a copy in the account.")
@click.option("--off", is_flag=True, help="Stop forwarding.")
@config_option
def account_forward(
    address: str, targets: tuple[str, ...], keep: bool, off: bool, config_path: Path
) -> None:
    """Forward mail of ADDRESS to TO... (a generated Sieve script; --off stops it)."""
    if off == bool(targets):
        raise UsageError("give TO addresses, or --off")
    if len(targets) > MAX_REDIRECTS:
        raise UsageError(f"at most {MAX_REDIRECTS} forwarding addresses")
    canonical = tuple(dict.fromkeys(str(Address.parse(t.strip())) for t in targets))

    async def work(store: MailStore) -> list[str]:
        acc = await _account(store, address)
        if acc.address in (a.lower() for a in canonical):
            raise UsageError("an account cannot forward to itself")
        return await _update_generated(store, acc, {"forward": canonical, "keep": keep})

    _report(run_with_store(config_path, work))


async def _own_aliases(store: MailStore, acc: Account) -> list[str]:
    """Alias addresses that deliver to ``acc`` (RFC 5230 §4.5 :addresses)."""
    return sorted(
        a.source
        for a in await store.list_aliases()
        if not a.source.startswith("@") and acc.address in (t.lower() for t in a.targets)
    )


@click.command("vacation")
@click.argument("address")
@click.option("--subject", help="Subject of the auto-reply.")
@click.option(
    "--body-file",
    metavar="FILE",
    help='UTF-8 text file with the reply ("-": standard input).',
)
@click.option(
    "--until",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Last day (YYYY-MM-DD, server time) on which replies are sent.",
)
@click.option(
    "--days",
    type=click.IntRange(1, MAX_VACATION_DAYS),
    default=DEFAULT_VACATION_DAYS,
    show_default=True,
    help="Reply to each sender at most once in this many days (RFC 5230 §4.1).",
)
@click.option("--off", is_flag=True, help="Stop the auto-reply.")
@config_option
def account_vacation(
    address: str,
    subject: str | None,
    body_file: str | None,
    until: datetime.datetime | None,
    days: int,
    off: bool,
    config_path: Path,
) -> None:
    """Send vacation auto-replies for ADDRESS (a generated Sieve script; --off stops them)."""
    if off:
        if subject or body_file or until:
            raise UsageError("--off takes no other option")
    elif not subject or not body_file:
        raise UsageError("give --subject and --body-file, or --off")
    if subject is not None and any(ch in subject for ch in "\r\n"):
        raise UsageError("the subject must be one line")
    body = _read_file(body_file) if body_file else ""
    if not off and not body.strip():
        raise UsageError("the reply text is empty")

    async def work(store: MailStore) -> list[str]:
        acc = await _account(store, address)
        if off:
            return await _update_generated(store, acc, {"vacation": None})
        vacation: dict[str, Any] = {"subject": subject, "body": body, "days": days}
        if until is not None:
            vacation["until"] = until.date().isoformat()
        aliases = await _own_aliases(store, acc)
        if aliases:
            vacation["addresses"] = aliases
        return await _update_generated(store, acc, {"vacation": vacation})

    _report(run_with_store(config_path, work))
