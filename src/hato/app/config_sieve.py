"""The ``[sieve]`` configuration section: how users' Sieve scripts run at delivery.

Limits every run obeys (RFC 5228 §2.10.4 lets an implementation limit actions and redirects;
instruction and CPU bounds are Hato's own), the envelope and From addresses of what scripts
send (RFC 5228 §4.2 redirect, RFC 5435/5436 notify, Pigeonhole's vnd.dovecot.report), the
RFC 5230 §4.5 recipient check of vacation, and the administrator's program directories for
Pigeonhole's vnd.dovecot.pipe/filter/execute (spec-bosch-sieve-extprograms §3: programs are
"restricted through administrator configuration"; a kind without a directory is not offered).
``sieve_settings`` turns the section into ``hato.delivery.sieve.SieveSettings``, which
``hato.app.wiring`` hands to local delivery and ManageSieve.

Security: the program directories hold what user scripts may execute: point them at
directories only the administrator can write. Programs run without a shell, with a fixed
environment, and are killed at ``program_timeout``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hato.app.confkinds import Choice, Count, Duration, FilePath, Flag, Kind, fail, setting
from hato.codec.sieve import SieveLimits
from hato.codec.sieve.addresses import parse_mailbox
from hato.core.errors import ConfigError
from hato.delivery.sieve import SieveSettings
from hato.delivery.sieve_programs import ProgramDirectory, ProgramSettings

_NAMES = ("sender", "recipient", "orig_recipient", "user_email")


@dataclass(frozen=True)
class SenderChoice(Kind):
    """Which address Sieve's outgoing mail uses: a name or "<address>"."""

    names: tuple[str, ...] = _NAMES
    label = "address choice"

    def type_label(self) -> str:
        return " | ".join(f'"{n}"' for n in self.names) + ' | "<address>"'

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        expected = "one of " + ", ".join(f'"{n}"' for n in self.names) + ' or "<user@domain>"'
        if not isinstance(value, str):
            raise fail(path, expected, got=value)
        text = value.strip()
        if text in self.names:
            return text
        if text == "<>":
            return text
        if text.startswith("<") and text.endswith(">"):
            address, _ = parse_mailbox(text[1:-1])
            if address is not None:
                return text
        raise fail(path, expected, got=value)


_ENVELOPE = SenderChoice(("default", *_NAMES))
_REPORT = SenderChoice(("postmaster", *_NAMES))


@dataclass(frozen=True, slots=True)
class SieveConfig:
    """Sieve filtering at delivery: limits, sending policy, external programs."""

    max_instructions: int = setting(
        1_000_000, Count(minimum=1), doc="Commands and tests one script run may execute."
    )
    max_cpu_time: float = setting(
        30.0,
        Duration(minimum=0.01),
        doc="CPU time one script run may use (programs it calls are bounded by "
        "program_timeout instead).",
    )
    max_actions: int = setting(
        32, Count(minimum=1), doc="Actions one run may add (RFC 5228 §2.10.4)."
    )
    max_redirects: int = setting(
        4,
        Count(minimum=0),
        doc="Redirects one run may make (RFC 5228 §2.10.4); advertised as ManageSieve "
        "MAXREDIRECTS (RFC 5804 §1.7).",
    )
    max_notifications: int = setting(
        12, Count(minimum=0), doc="Notifications one run may send (RFC 5435 §3); 0 forbids notify."
    )
    redirect_envelope_from: str = setting(
        "default",
        _ENVELOPE,
        doc='MAIL FROM of redirected messages: "default" keeps the original sender (RFC 5228 '
        '§4.2), or the message\'s "sender", the "recipient", the "orig_recipient", the '
        'account ("user_email"), or a fixed "<address>". An empty sender always stays empty.',
    )
    notify_envelope_from: str = setting(
        "default",
        _ENVELOPE,
        doc='MAIL FROM of mailto notifications (RFC 5436 §2.7): "default" is :from, else the '
        "postmaster of the account's domain; the other values as for redirect_envelope_from.",
    )
    report_from: str = setting(
        "postmaster",
        _REPORT,
        doc="From address of vnd.dovecot.report abuse reports (RFC 5965): the postmaster of "
        "the account's domain, or an address chosen as for redirect_envelope_from.",
    )
    report: bool = setting(
        True,
        Flag(),
        doc="Offer Pigeonhole's vnd.dovecot.report extension: scripts may send RFC 5965 "
        "abuse feedback reports about a message.",
    )
    debug_log: bool = setting(
        False,
        Flag(),
        doc="Offer Pigeonhole's vnd.dovecot.debug extension: debug_log writes the script's "
        "text to the log (at debug level).",
    )
    vacation_check_recipient: bool = setting(
        True,
        Flag(),
        doc="Vacation answers only mail that names the account in To/Cc/Bcc (RFC 5230 §4.5 "
        "MUST); false answers mail that reached it hidden (departs from the RFC).",
    )
    pipe_dir: Path | None = setting(  # noqa: RUF009
        None,
        FilePath(),
        doc="Directory of the programs scripts may pipe messages to (vnd.dovecot.pipe); "
        "unset: the extension is not offered.",
    )
    filter_dir: Path | None = setting(  # noqa: RUF009
        None,
        FilePath(),
        doc="Directory of the programs scripts may filter messages through "
        "(vnd.dovecot.filter); unset: not offered.",
    )
    execute_dir: Path | None = setting(  # noqa: RUF009
        None,
        FilePath(),
        doc="Directory of the programs scripts may execute (vnd.dovecot.execute); "
        "unset: not offered.",
    )
    program_timeout: float = setting(
        10.0,
        Duration(minimum=0.1),
        doc="Wall-clock time a program may run before its whole process group is killed.",
    )
    program_input_eol: str = setting(
        "crlf",
        Choice(("crlf", "lf")),
        doc="Line ends of the message or string given to programs on standard input.",
    )


def _choice(value: str, default: str) -> str:
    return "" if value == default else value


def sieve_settings(config: SieveConfig, *, hostname: str) -> SieveSettings:
    """The settings local delivery and ManageSieve use; a program directory that is not a
    directory is a configuration error (checked once, at start)."""
    for name in ("pipe_dir", "filter_dir", "execute_dir"):
        directory = getattr(config, name)
        if directory is not None and not directory.is_dir():
            raise ConfigError(f"sieve.{name}: {directory} is not a directory")
    limits = dataclasses.replace(
        SieveLimits(),
        max_instructions=config.max_instructions,
        max_cpu_time=config.max_cpu_time,
        max_actions=config.max_actions,
        max_redirects=config.max_redirects,
        max_notifications=config.max_notifications,
        redirect_envelope_from=_choice(config.redirect_envelope_from, "default"),
        notify_envelope_from=_choice(config.notify_envelope_from, "default"),
        report_from=_choice(config.report_from, "postmaster"),
        vacation_check_recipient=config.vacation_check_recipient,
    )

    def kind(directory: Path | None) -> ProgramDirectory:
        return ProgramDirectory(
            directory.absolute() if directory is not None else None,
            timeout=config.program_timeout,
            input_eol=config.program_input_eol,
        )

    programs = ProgramSettings(
        pipe=kind(config.pipe_dir),
        filter=kind(config.filter_dir),
        execute=kind(config.execute_dir),
    )
    return SieveSettings(
        limits=limits,
        programs=programs,
        report=config.report,
        debug_log=config.debug_log,
        hostname=hostname,
    )
