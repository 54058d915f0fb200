"""Hato's configuration: one TOML file parsed into a typed, validated, documented schema.

The schema is a set of frozen dataclasses; each field carries a ``Kind`` (how to parse and
render it, see ``hato.app.confkinds``) and a description in its metadata, so parsing,
defaults, validation and the generated reference (``docs/configuration.md``, see
``hato.app.confdoc``) come from one place (CONVENTIONS.md §10). Every error names the key
path: ``smtp.max_message_size: expected a size like "50M", got "big"``; unknown keys are
errors.

Limits enforced here where an RFC sets a floor: RFC 5321 §4.5.3.1.8 (100 recipients),
RFC 9051 §5.4 / RFC 3501 §5.4 (IMAP autologout >= 30 minutes), RFC 1939 §3 (POP3
autologout >= 10 minutes), RFC 7162 §4 (IMAP command lines of about 8192 octets).

Left out: includes, environment-variable substitution, live reload.

Security: reads one user-supplied file; paths inside it are resolved against the file's own
directory, never the process's working directory. No secrets live in the file (TLS keys are
referenced by path only).
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hato.app.config_dns import DnsConfig
from hato.app.config_inbound import InboundConfig
from hato.app.config_outbound import OutboundConfig
from hato.app.config_reports import ReportsConfig
from hato.app.config_sieve import SieveConfig
from hato.app.confkinds import (
    NO_DEMO,
    Choice,
    Count,
    Duration,
    FilePath,
    Flag,
    HostName,
    Listeners,
    Size,
    fail,
    format_listener,
    required,
    setting,
)
from hato.core.errors import ConfigError
from hato.servers.base import Listener, TlsMode


def _prod(port: int, tls: TlsMode) -> tuple[Listener, ...]:
    return (Listener("0.0.0.0", port, tls), Listener("::", port, tls))


def _demo(port: int, tls: TlsMode) -> tuple[Listener, ...]:
    return (Listener("127.0.0.1", port, tls),)


_START = TlsMode.STARTTLS
_IMPL = TlsMode.IMPLICIT
_PLAIN = TlsMode.NONE

# -- the schema ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Identity of this server, where it keeps its data, and process-wide settings."""

    hostname: str = required(
        HostName(),
        "Fully-qualified name of this host: the SMTP greeting and EHLO name, the name in "
        "Received header fields, and the name clients connect to (RFC 5321 §2.3.5).",
    )
    # ``setting`` returns a dataclasses.field; its default is immutable (RUF009 cannot see it).
    data_dir: Path = setting(  # noqa: RUF009
        Path("/var/lib/hato"),
        FilePath(),
        doc="Directory for the database and message files. A relative path is resolved against "
        "the directory of the configuration file.",
    )
    demo: bool = setting(
        False,
        Flag(),
        doc="Demo mode: listeners default to 127.0.0.1 on unprivileged ports, and plaintext "
        "login without TLS is allowed for connections from loopback addresses only.",
    )
    log_level: str = setting(
        "info", Choice(("debug", "info", "warning", "error")), doc="Lowest level of events logged."
    )
    shutdown_timeout: float = setting(
        30.0,
        Duration(),
        doc="On SIGTERM/SIGINT, how long in-flight sessions may run to completion before they "
        "are closed.",
    )


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The certificate all TLS listeners present (PEM files)."""

    cert: Path | None = setting(  # noqa: RUF009
        None,
        FilePath(),
        doc="PEM certificate chain (leaf first). Required when any TLS listener is configured.",
    )
    key: Path | None = setting(  # noqa: RUF009
        None, FilePath(), doc="PEM private key of the certificate.")


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """SMTP: inbound mail from the internet (MX) and mail submission by your users."""

    mx_listeners: tuple[Listener, ...] = setting(
        _prod(25, _START),
        Listeners(_START),
        doc="MX listeners receiving mail from other servers; STARTTLS is offered when a "
        "certificate is configured, never required (RFC 3207 §4).",
        demo=_demo(2525, _START),
    )
    submission_listeners: tuple[Listener, ...] = setting(
        _prod(587, _START),
        Listeners(_START),
        doc="Submission listeners for your users' mail clients, plaintext upgraded by STARTTLS "
        "(RFC 6409, RFC 3207). AUTH is required.",
        demo=_demo(2587, _START),
    )
    submissions_listeners: tuple[Listener, ...] = setting(
        _prod(465, _IMPL),
        Listeners(_IMPL),
        doc="Submission listeners with TLS from the first byte (RFC 8314 §3.3).",
        demo=_demo(2465, _IMPL),
    )
    max_message_size: int = setting(
        50 * 1024**2,
        Size(minimum=64 * 1024),
        doc="Largest message accepted, announced in the EHLO SIZE keyword (RFC 1870).",
    )
    max_recipients: int = setting(
        100,
        # RFC 5321 §4.5.3.1.8: at least 100 recipients MUST be accepted per transaction.
        Count(minimum=100, why=" (RFC 5321 §4.5.3.1.8)"),
        doc="Most RCPT TO commands accepted in one transaction; further ones get 452 "
        "(RFC 5321 §4.5.3.1.10). At least 100.",
    )
    max_messages_per_connection: int = setting(
        100,
        Count(minimum=1),
        doc="Mail transactions (MAIL FROM) accepted on one connection; further ones get "
        "421 and the connection is closed, so one client cannot hold a session forever.",
    )
    max_errors: int = setting(
        10, Count(minimum=1), doc="Errors (bad commands, rejected recipients) before disconnecting."
    )
    idle_timeout: float = setting(
        300.0,
        Duration(minimum=1.0),
        doc="How long the server waits for the next command (RFC 5321 §4.5.3.2.7 recommends "
        "at least 5 minutes).",
    )
    max_session_time: float = setting(
        3600.0, Duration(minimum=1.0), doc="Longest a single connection may last."
    )
    workers: int = setting(
        0,
        Count(minimum=0),
        doc="Worker processes that run the sessions of the MX listeners, so that receiving "
        "uses several CPU cores; each connection goes to the least busy one, and the main "
        "process still stores every message (0: sessions run in the main process). On a "
        "busy MX, one per CPU core but one (which the main process uses) is a good value.",
    )
    max_connections: int = setting(
        500, Count(minimum=1), doc="Simultaneous SMTP connections over all listeners."
    )
    max_connections_per_ip: int = setting(
        20, Count(minimum=1), doc="Simultaneous SMTP connections from one IP address."
    )
    max_received_headers: int = setting(
        100,
        Count(minimum=1),
        doc="Messages with more Received header fields are rejected as a mail loop "
        "(RFC 5321 §6.3: normally at least 100).",
    )
    quota_error: str = setting(
        "temporary",
        Choice(("temporary", "permanent")),
        doc='Reply when a recipient is over quota: "temporary" (452, 4.2.2) lets the sender '
        'retry, "permanent" (552, 5.2.2) bounces at once (RFC 3463 §3.3).',
    )
    max_messages_per_hour: int = setting(
        100,
        Count(minimum=0),
        doc="Messages one account may submit per hour (0: no limit); more are refused with "
        "451 4.7.1 until the hour has passed. Counted in memory: a restart resets the counts.",
    )
    max_messages_per_day: int = setting(
        1000, Count(minimum=0), doc="Messages one account may submit per 24 hours (0: no limit)."
    )
    max_recipients_per_hour: int = setting(
        500,
        Count(minimum=0),
        doc="Recipients (RCPT TO) one account may submit to per hour, over all its messages "
        "(0: no limit).",
    )
    max_recipients_per_day: int = setting(
        2000,
        Count(minimum=0),
        doc="Recipients one account may submit to per 24 hours (0: no limit).",
    )


@dataclass(frozen=True, slots=True)
class ImapConfig:
    """IMAP4rev2 / IMAP4rev1 access to mailboxes."""

    listeners: tuple[Listener, ...] = setting(
        _prod(143, _START),
        Listeners(_START),
        doc="IMAP listeners, plaintext upgraded by STARTTLS (RFC 9051 §6.2.1).",
        demo=_demo(2143, _START),
    )
    tls_listeners: tuple[Listener, ...] = setting(
        _prod(993, _IMPL),
        Listeners(_IMPL),
        doc="IMAP listeners with TLS from the first byte (RFC 8314 §3.2).",
        demo=_demo(2993, _IMPL),
    )
    login_timeout: float = setting(
        60.0,
        Duration(minimum=1.0),
        doc="Autologout before authentication (RFC 9051 §5.4 sets no floor for it).",
    )
    idle_timeout: float = setting(
        1800.0,
        # RFC 9051 §5.4, RFC 3501 §5.4: an autologout timer MUST be at least 30 minutes.
        Duration(minimum=1800.0, why=" (RFC 9051 §5.4)"),
        doc="Autologout of an authenticated, inactive session; at least 30 minutes.",
    )
    max_connections: int = setting(
        1000, Count(minimum=1), doc="Simultaneous IMAP connections over all listeners."
    )
    max_connections_per_ip: int = setting(
        50, Count(minimum=1), doc="Simultaneous IMAP connections from one IP address."
    )
    max_line_length: int = setting(
        65536,
        # RFC 7162 §4: clients may send command lines of about 8192 octets.
        Size(minimum=8192, why=" (RFC 7162 §4)"),
        doc="Longest command line accepted, literals excluded; at least 8192 octets.",
    )
    append_limit: int = setting(
        50 * 1024**2,
        Size(minimum=64 * 1024),
        doc="Largest message APPEND accepts, announced as APPENDLIMIT (RFC 7889).",
    )


@dataclass(frozen=True, slots=True)
class Pop3Config:
    """POP3 download of the inbox."""

    listeners: tuple[Listener, ...] = setting(
        _prod(110, _START),
        Listeners(_START),
        doc="POP3 listeners, plaintext upgraded by STLS (RFC 2595 §4).",
        demo=_demo(2110, _START),
    )
    tls_listeners: tuple[Listener, ...] = setting(
        _prod(995, _IMPL),
        Listeners(_IMPL),
        doc="POP3 listeners with TLS from the first byte (RFC 8314 §3.1).",
        demo=_demo(2995, _IMPL),
    )
    idle_timeout: float = setting(
        600.0,
        # RFC 1939 §3: an autologout timer MUST be of at least 10 minutes' duration.
        Duration(minimum=600.0, why=" (RFC 1939 §3)"),
        doc="Autologout of an inactive session; at least 10 minutes.",
    )
    max_connections: int = setting(
        500, Count(minimum=1), doc="Simultaneous POP3 connections over all listeners."
    )


@dataclass(frozen=True, slots=True)
class ManageSieveConfig:
    """ManageSieve: users upload their Sieve filter scripts."""

    listeners: tuple[Listener, ...] = setting(
        _prod(4190, _START),
        Listeners(_START),
        doc="ManageSieve listeners, plaintext upgraded by STARTTLS (RFC 5804 §2.2).",
        demo=_demo(24190, _START),
    )
    max_script_size: int = setting(
        1024**2,
        Size(minimum=1024),
        doc="Largest Sieve script accepted; larger uploads get NO (QUOTA/MAXSIZE) (RFC 5804 §1.3).",
    )


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """HTTP: webmail, admin, JSON API, autoconfig, MTA-STS policy, ACME."""

    listeners: tuple[Listener, ...] = setting(
        _prod(80, _PLAIN),
        Listeners(_PLAIN),
        doc="Plaintext HTTP listeners (ACME challenges and redirects in production).",
        demo=_demo(8080, _PLAIN),
    )
    tls_listeners: tuple[Listener, ...] = setting(
        _prod(443, _IMPL), Listeners(_IMPL), doc="HTTPS listeners.", demo=()
    )
    mta_sts_mode: str = setting(
        "testing",
        Choice(("enforce", "testing", "none")),
        doc='Mode of the MTA-STS policy served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt '
        '(RFC 8461 §5): "testing" reports failures but delivers anyway; switch to "enforce" '
        "once the certificate is valid for this host name; \"none\" withdraws the policy.",
    )
    mta_sts_max_age: float = setting(
        604800.0,
        Duration(),
        doc="How long senders may cache the MTA-STS policy (RFC 8461 §3.2: at most 31557600 "
        "seconds, typically weeks).",
    )
    metrics_token_file: Path | None = setting(  # noqa: RUF009
        None,
        FilePath(),
        doc="File holding the bearer token (one line) that grants access to /metrics from "
        "other hosts (Authorization: Bearer TOKEN, RFC 6750); loopback clients need none.",
    )

    def __post_init__(self) -> None:
        if self.mta_sts_max_age > 31_557_600:  # RFC 8461 §3.2: max_age maximum of 31557600
            raise ConfigError(
                "http.mta_sts_max_age: expected a duration of at most 31557600 seconds "
                "(RFC 8461 §3.2)"
            )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; ``source`` is the file it came from (None when built in code)."""

    server: ServerConfig
    tls: TlsConfig = field(default_factory=TlsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    pop3: Pop3Config = field(default_factory=Pop3Config)
    managesieve: ManageSieveConfig = field(default_factory=ManageSieveConfig)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    source: Path | None = None

    def listeners(self) -> list[tuple[str, Listener]]:
        """Every configured listener with its key path (``smtp.mx_listeners[0]``), in schema
        order."""
        found: list[tuple[str, Listener]] = []
        for section, _cls in SECTIONS:
            table = getattr(self, section)
            for f in dataclasses.fields(table):
                if isinstance(f.metadata.get("kind"), Listeners):
                    found.extend(
                        (f"{section}.{f.name}[{i}]", lst)
                        for i, lst in enumerate(getattr(table, f.name))
                    )
        return found


# Section name -> dataclass, in the order of the file and the doc.
SECTIONS: tuple[tuple[str, type], ...] = (
    ("server", ServerConfig),
    ("tls", TlsConfig),
    ("smtp", SmtpConfig),
    ("imap", ImapConfig),
    ("pop3", Pop3Config),
    ("managesieve", ManageSieveConfig),
    ("sieve", SieveConfig),
    ("http", HttpConfig),
    ("outbound", OutboundConfig),
    ("dns", DnsConfig),
    ("reports", ReportsConfig),
    ("inbound", InboundConfig),
)

# Listeners that carry logins: without a certificate only demo mode (loopback plaintext) works.
_LOGIN_STARTTLS = (
    "smtp.submission_listeners",
    "imap.listeners",
    "pop3.listeners",
    "managesieve.listeners",
)


def _field_path(path: str) -> str:
    """``smtp.mx_listeners[1]`` -> ``smtp.mx_listeners``."""
    return path.split("[", 1)[0]


def _unknown(path: str, key: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return ConfigError(f"{path}: unknown key{hint}")


def _parse_section(
    name: str, cls: type, *, table: Any, base_dir: Path, demo: bool
) -> Any:
    if not isinstance(table, dict):
        raise fail(name, "a table", got=table)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise _unknown(f"{name}.{key}", key, list(fields))
    values: dict[str, Any] = {}
    for key, f in fields.items():
        path = f"{name}.{key}"
        if key in table:
            values[key] = f.metadata["kind"].parse(table[key], path, base_dir=base_dir)
        elif demo and f.metadata["demo"] is not NO_DEMO:
            values[key] = f.metadata["demo"]
        elif f.default is dataclasses.MISSING:
            raise ConfigError(f"{path}: required key is missing")
    return cls(**values)


def _check_tls(config: Config) -> None:
    tls = config.tls
    if tls.cert is not None and tls.key is None:
        raise ConfigError("tls.key: required when tls.cert is set")
    if tls.key is not None and tls.cert is None:
        raise ConfigError("tls.cert: required when tls.key is set")
    if tls.cert is not None:
        return
    for path, listener in config.listeners():
        needs = listener.tls is TlsMode.IMPLICIT or (
            _field_path(path) in _LOGIN_STARTTLS and not config.server.demo
        )
        if needs:
            raise ConfigError(
                f"tls.cert: required because {_field_path(path)} is configured "
                "(set tls.cert and tls.key, or remove those listeners)"
            )


def _check_listeners(config: Config) -> None:
    seen: dict[tuple[str, int], str] = {}
    for path, listener in config.listeners():
        if listener.port == 0:
            continue  # port 0: the system picks a free port for each listener
        where = seen.get((listener.host, listener.port))
        if where is not None:
            raise ConfigError(
                f"{path}: {format_listener(listener)} is already used by {where}"
            )
        seen[(listener.host, listener.port)] = path


def parse_config(data: Mapping[str, Any], *, base_dir: Path, source: Path | None = None) -> Config:
    """Validate a decoded TOML document; raises ConfigError naming the key path."""
    sections = dict(SECTIONS)
    for key in data:
        if key not in sections:
            raise _unknown(key, key, list(sections))
    if "server" not in data:
        raise ConfigError("server: required section is missing")
    server = _parse_section(
        "server", ServerConfig, table=data["server"], base_dir=base_dir, demo=False
    )
    parsed = {
        name: _parse_section(
            name, cls, table=data.get(name, {}), base_dir=base_dir, demo=server.demo
        )
        for name, cls in SECTIONS
        if name != "server"
    }
    config = Config(server=server, source=source, **parsed)
    _check_tls(config)
    _check_listeners(config)
    return config


def load_config(path: Path) -> Config:
    """Read and validate a TOML configuration file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    base = path.resolve().parent
    return parse_config(data, base_dir=base, source=path)
