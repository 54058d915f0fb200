"""The IMAP server (RFC 9051 IMAP4rev2 and RFC 3501 IMAP4rev1): ``ImapService`` and its settings.

One module per command family (auth, mailboxes, fetch, search, store_cmds, idle) around the
connection state in ``session.py``; the wire format is the sans-IO ``hato.codec.imap``.
"""

from hato.servers.imap.service import ImapService
from hato.servers.imap.settings import ImapSettings

__all__ = ["ImapService", "ImapSettings"]
