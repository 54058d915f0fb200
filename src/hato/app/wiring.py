"""The composition root: configuration → store → authenticator → TLS → protocol services.

This is the only module that knows every service's settings type; each server stays
independent of the TOML schema (CONVENTIONS.md §10). ``hato serve`` calls ``build_services``
and hands the list to ``hato.app.runtime.run_services``.

Security: the TLS context is built once from the configured certificate and key and shared by
every listener; a listener that needs TLS without a certificate is a configuration error
caught by ``hato.app.config`` before we get here.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable
from typing import Any, cast

from hato.app.config import Config
from hato.app.config_dns import make_resolver
from hato.app.config_inbound import session_hooks
from hato.app.config_outbound import outbound_settings, read_smarthost_password
from hato.app.config_reports import report_intake, report_service
from hato.app.config_sieve import sieve_settings
from hato.codec.smtp import Limits
from hato.core.clock import Clock, SystemClock
from hato.core.dns import Resolver
from hato.core.errors import ConfigError
from hato.core.metrics import Counters
from hato.outbound.dkim_sign import DkimKeys
from hato.outbound.queue import QueueRunner
from hato.outbound.srs import Srs
from hato.policy.authn import Authenticator
from hato.policy.ratelimit import SubmissionLimits
from hato.policy.smtp import Role
from hato.servers.base import Listener, Service
from hato.servers.imap import ImapService, ImapSettings
from hato.servers.managesieve import ManageSieveServer, ManageSieveSettings
from hato.servers.pop3 import Pop3Server, Pop3Settings
from hato.servers.smtp import SmtpListener, SmtpService, SmtpSettings
from hato.servers.smtp_hooks import SessionHooks
from hato.servers.smtp_inbound import InboundSmtpService
from hato.servers.smtp_worker import RemoteQueue
from hato.servers.smtp_workers import SmtpWorkerPool, WorkerRecipe
from hato.servers.tls import server_context, starttls_context
from hato.store.api import MailStore, ReportStore
from hato.store.remote import RemoteStore
from hato.store.sqlite.lookups import NAMES as LOOKUPS
from hato.store.sqlite.lookups import Lookups
from hato.store.sqlite.refs import StoredReader
from hato.store.sqlite.store import DB_NAME
from hato.web.autoconfig import MailPorts
from hato.web.mtasts import MtaStsPolicy
from hato.web.service import WebService
from hato.web.settings import WebSettings


def tls_context(config: Config, *, starttls: bool = False) -> ssl.SSLContext | None:
    """The server TLS context, or None when no certificate is configured; ``starttls``: the
    one for STARTTLS upgrades, without TLS 1.3 session tickets (hato.servers.tls)."""
    if config.tls.cert is None or config.tls.key is None:
        return None
    make = starttls_context if starttls else server_context
    return make(config.tls.cert, config.tls.key)


def smtp_settings(config: Config) -> SmtpSettings:
    smtp = config.smtp
    listeners = (
        tuple(SmtpListener(lst, Role.MX) for lst in smtp.mx_listeners)
        + tuple(SmtpListener(lst, Role.SUBMISSION) for lst in smtp.submission_listeners)
        + tuple(SmtpListener(lst, Role.SUBMISSION) for lst in smtp.submissions_listeners)
    )
    return SmtpSettings(
        hostname=config.server.hostname,
        listeners=listeners,
        limits=Limits(
            max_message_size=smtp.max_message_size,
            max_recipients=smtp.max_recipients,
            max_errors=smtp.max_errors,
            max_transactions=smtp.max_messages_per_connection,
        ),
        idle_timeout=smtp.idle_timeout,
        session_timeout=smtp.max_session_time,
        max_connections=smtp.max_connections,
        max_connections_per_ip=smtp.max_connections_per_ip,
        max_received=smtp.max_received_headers,
        quota_permanent=smtp.quota_error == "permanent",
    )


def imap_settings(config: Config) -> ImapSettings:
    imap = config.imap
    return ImapSettings(
        hostname=config.server.hostname,
        listeners=imap.listeners + imap.tls_listeners,
        cert_file=config.tls.cert,
        key_file=config.tls.key,
        idle_timeout=imap.idle_timeout,
        max_line=imap.max_line_length,
        append_limit=imap.append_limit,
        max_connections=imap.max_connections,
    )


def pop3_settings(config: Config) -> Pop3Settings:
    pop3 = config.pop3
    return Pop3Settings(
        hostname=config.server.hostname,
        listeners=pop3.listeners + pop3.tls_listeners,
        idle_timeout=pop3.idle_timeout,
        max_connections=pop3.max_connections,
    )


def managesieve_settings(config: Config) -> ManageSieveSettings:
    return ManageSieveSettings(
        hostname=config.server.hostname,
        listeners=config.managesieve.listeners,
        max_script_size=config.managesieve.max_script_size,
        sieve=sieve_settings(config.sieve, hostname=config.server.hostname),
    )


def mta_sts_policy(config: Config) -> MtaStsPolicy:
    """The MTA-STS policy of every local domain: this host is their MX (``hato dns records``
    prints the TXT record whose id hashes this policy)."""
    http = config.http
    return MtaStsPolicy(
        mode=http.mta_sts_mode, max_age=int(http.mta_sts_max_age), mx=(config.server.hostname,)
    )


def _ports(*groups: tuple[Listener, ...]) -> tuple[int, ...]:
    """Distinct ports in order; port 0 (chosen by the system at start) cannot be advertised."""
    return tuple(dict.fromkeys(lst.port for group in groups for lst in group if lst.port))


def client_ports(config: Config) -> MailPorts:
    """The ports mail clients are told about; none without a certificate (no listener could
    protect their passwords then)."""
    if config.tls.cert is None:
        return MailPorts()
    return MailPorts(
        imap_tls=_ports(config.imap.tls_listeners),
        imap_starttls=_ports(config.imap.listeners),
        pop3_tls=_ports(config.pop3.tls_listeners),
        pop3_starttls=_ports(config.pop3.listeners),
        submissions=_ports(config.smtp.submissions_listeners),
        submission=_ports(config.smtp.submission_listeners),
    )


def read_metrics_token(config: Config) -> str | None:
    """The first line of ``http.metrics_token_file`` (None when not configured)."""
    path = config.http.metrics_token_file
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"http.metrics_token_file: cannot read {path}: {exc}") from None
    lines = text.splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"http.metrics_token_file: {path} holds no token")
    return token


def web_settings(config: Config) -> WebSettings:
    http = config.http
    return WebSettings(
        hostname=config.server.hostname,
        listeners=http.listeners + http.tls_listeners,
        mta_sts=mta_sts_policy(config),
        ports=client_ports(config),
        metrics_token=read_metrics_token(config),
    )


def submission_limits(config: Config) -> SubmissionLimits:
    """Per-account submission limits from the [smtp] section (hato.policy.ratelimit)."""
    smtp = config.smtp
    return SubmissionLimits(
        messages_per_hour=smtp.max_messages_per_hour,
        messages_per_day=smtp.max_messages_per_day,
        recipients_per_hour=smtp.max_recipients_per_hour,
        recipients_per_day=smtp.max_recipients_per_day,
    )


def queue_runner(
    config: Config, store: MailStore, *, resolver: Resolver, clock: Clock
) -> QueueRunner:
    """The outbound queue runner: MX routing, TLS policy, DKIM signing, retries, DSNs."""
    outbound = config.outbound
    settings = outbound_settings(
        config.server.hostname, outbound, password=read_smarthost_password(outbound)
    )
    signer = DkimKeys(config.server.data_dir / "dkim").signer() if outbound.dkim else None
    # notices about mail forwarded under SRS go back to the original sender
    srs = Srs.from_data_dir(config.server.data_dir) if config.inbound.srs else None
    return QueueRunner(
        settings, store=store, resolver=resolver, clock=clock, signer=signer, srs=srs
    )


def split_mx(smtp: SmtpSettings) -> tuple[SmtpSettings, SmtpSettings]:
    """The MX listeners' settings and the others' (one order for the worker pool and its
    workers: a connection names its listener by index)."""
    mx = tuple(spec for spec in smtp.listeners if spec.role is Role.MX)
    rest = tuple(spec for spec in smtp.listeners if spec.role is not Role.MX)
    return dataclasses.replace(smtp, listeners=mx), dataclasses.replace(smtp, listeners=rest)


def smtp_hooks(
    config: Config,
    store: MailStore,
    *,
    resolver: Resolver,
    clock: Clock,
    signer: Callable[[bytes, str], bytes] | None,
) -> SessionHooks:
    """The SMTP sessions' hooks: inbound verification, submission limits, SRS, and the
    parsing of DMARC/TLS reports sent to our report addresses (after delivery)."""
    intake = report_intake(config.reports, resolver=resolver, store=store)
    return session_hooks(
        config.inbound,
        hostname=config.server.hostname,
        data_dir=config.server.data_dir,
        resolver=resolver,
        limits=submission_limits(config),
        clock=clock,
        reports=cast(ReportStore, store) if hasattr(store, "record_dmarc_evaluation") else None,
        signer=signer,
        after_delivery=intake.after_delivery if intake is not None else None,
        sieve=sieve_settings(config.sieve, hostname=config.server.hostname),
    )


def mx_worker_service(config: Config, store: Any, channel: Any) -> SmtpService:
    """What an SMTP worker process runs (hato.servers.smtp_worker): the MX listeners'
    service, built as ``build_services`` builds it, on the worker's ``RemoteStore``; its
    outbound queue is the main process's runner, behind ``channel`` (None: no runner)."""
    clock = SystemClock()
    if isinstance(store, RemoteStore):  # lookups from the database file, not round trips
        store.read_locally(Lookups(config.server.data_dir, clock=clock), LOOKUPS)
        store.blobs.stored = StoredReader(config.server.data_dir / DB_NAME)
    resolver = make_resolver(config.dns)
    outbound = config.outbound
    signer = DkimKeys(config.server.data_dir / "dkim").signer() if outbound.dkim else None
    queue = None
    if channel is not None:
        settings = outbound_settings(
            config.server.hostname, outbound, password=read_smarthost_password(outbound)
        )
        queue = RemoteQueue(channel, settings)
    mx, _rest = split_mx(smtp_settings(config))
    return InboundSmtpService(
        mx,
        store,
        Authenticator(store, clock=clock, plaintext_on_loopback=config.server.demo),
        hooks=smtp_hooks(config, store, resolver=resolver, clock=clock, signer=signer),
        tls=tls_context(config),
        starttls=tls_context(config, starttls=True),
        clock=clock,
        outbound=queue,
    )


def build_services(
    config: Config, store: MailStore, *, clock: Clock | None = None
) -> list[Service]:
    """Every service the configuration asks for, ready to start."""
    clock = clock or SystemClock()
    counters = Counters()  # event counters; /metrics exports them (hato.core.metrics)
    tls = tls_context(config)
    authenticator = Authenticator(store, clock=clock, plaintext_on_loopback=config.server.demo)
    # The queue runner starts first and stops last: SMTP sessions hand it messages.
    resolver = make_resolver(config.dns)  # one resolver (and cache) for every DNS question
    runner = queue_runner(config, store, resolver=resolver, clock=clock)
    services: list[Service] = [runner]
    reports = report_service(
        config.server.hostname,
        config.reports,
        resolver=resolver,
        store=store,
        runner=runner,
        clock=clock,
    )
    if reports is not None:
        services.append(reports)  # daily DMARC and TLS reports (hato.outbound.reports)
    smtp = smtp_settings(config)
    if smtp.listeners:
        hooks = smtp_hooks(config, store, resolver=resolver, clock=clock, signer=runner.signer)
        mx, rest = split_mx(smtp)
        if config.smtp.workers and mx.listeners:
            # MX sessions in worker processes (hato.servers.smtp_workers); the main process
            # keeps the store, the queue and the submission listeners
            services.append(
                SmtpWorkerPool(
                    mx,
                    store,
                    WorkerRecipe(f"{__name__}:mx_worker_service", config),
                    workers=config.smtp.workers,
                    outbound=runner,
                    tls=tls is not None,
                )
            )
            smtp = rest
        if smtp.listeners:
            services.append(
                InboundSmtpService(
                    smtp,
                    store,
                    authenticator,
                    hooks=hooks,
                    tls=tls,
                    starttls=tls_context(config, starttls=True),
                    clock=clock,
                    outbound=runner,
                )
            )
    imap = imap_settings(config)
    if imap.listeners:
        services.append(ImapService(imap, store, authenticator, clock=clock))
    pop3 = pop3_settings(config)
    if pop3.listeners:
        services.append(
            Pop3Server(
                pop3,
                store=store,
                authenticator=authenticator,
                tls_context=tls,
                starttls_context=tls_context(config, starttls=True),
            )
        )
    sieve = managesieve_settings(config)
    if sieve.listeners:
        services.append(
            ManageSieveServer(
                sieve,
                store=store,
                authenticator=authenticator,
                tls_context=tls,
                starttls_context=tls_context(config, starttls=True),
            )
        )
    web = web_settings(config)
    if web.listeners:
        services.append(WebService(web, store=store, tls_context=tls, counters=counters))
    return services
