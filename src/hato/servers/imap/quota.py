"""QUOTA: GETQUOTA, GETQUOTAROOT and (refused) SETQUOTA over the account's quota.

Implements RFC 9208 §4.1.1 GETQUOTA, §4.1.2 GETQUOTAROOT (for any mailbox name, existing or
not), §4.1.3 SETQUOTA (refused with NO: quotas are set by the administrator with the CLI, and
QUOTASET is not advertised), §4.2 the QUOTA and QUOTAROOT responses, §5.1 STORAGE (units of
1024 octets, rounded up) from ``MailStore.quota_usage``; QUOTA=RES-STORAGE is
advertised. Every mailbox of an account shares one quota root, named "" (RFC 9208 §3.2:
roots are opaque names). The
OVERQUOTA response code of §4.3.1 is sent on APPEND/COPY/MOVE failures by the session's error
mapping (``QuotaExceeded`` from the store).

Left out: the MESSAGE resource (§5.2: the store limits bytes only, so QUOTA=RES-MESSAGE is not
advertised; the DELETED status item is supported anyway), MAILBOX and ANNOTATION-STORAGE.
"""

from __future__ import annotations

from hato.codec.imap import response
from hato.codec.imap.commands import Command, MailboxArg, QuotaRootArg, SetQuota
from hato.servers.imap.outcome import CommandFailed, Outcome
from hato.servers.imap.session import Session

ROOT = ""  # the one quota root of an account


def _kib(octets: int) -> int:
    return -(-octets // 1024)  # RFC 9208 §5.1: units of 1024 octets (rounded up)


async def _quota_line(session: Session) -> bytes:
    assert session.account is not None
    usage = await session.store.quota_usage(session.account.id)
    resources = b""
    if usage.quota_bytes is not None:
        # RFC 9208 §4.2.1: "resource usage and limits"; §7: usage "must be less than" the
        # limit: usage beyond it (a lowered quota) is reported at the limit.
        limit = _kib(usage.quota_bytes)
        resources = b"STORAGE %d %d" % (min(_kib(usage.used_bytes), limit), limit)
    return b"QUOTA " + response.astring(ROOT) + b" (" + resources + b")"


async def cmd_getquota(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, QuotaRootArg)
    if command.args.root != ROOT:
        # RFC 9208 §4.1.1: "NO - getquota error: no such quota root".
        raise CommandFailed("no such quota root", code="NONEXISTENT")
    session.untagged(await _quota_line(session))
    return Outcome("GETQUOTA completed")


async def cmd_getquotaroot(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, MailboxArg)
    name = session.decode_mailbox(command.args.mailbox)
    # RFC 9208 §4.1.2: the mailbox need not exist; QUOTAROOT, then QUOTA for each root.
    session.untagged(b"QUOTAROOT " + session.encode_mailbox(name) + b" "
                     + response.astring(ROOT))
    session.untagged(await _quota_line(session))
    return Outcome("GETQUOTAROOT completed")


async def cmd_setquota(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, SetQuota)
    # RFC 9208 §4.1.3: "NO - setquota error: can't set that data" (no QUOTASET capability).
    raise CommandFailed("quotas are set by the administrator", code="NOPERM")
