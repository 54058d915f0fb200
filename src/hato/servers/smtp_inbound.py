"""The SMTP service with session hooks: inbound verification, submission limits and SRS.

``SmtpService`` (hato.servers.smtp) with a ``hooks`` attribute (``SessionHooks`` of
hato.servers.smtp_hooks), which every session of the service applies: on the MX role the
checks of ``hato.policy.inbound`` at the end of DATA/BDAT (RFC 7208, RFC 6376, RFC 8617,
RFC 7489, RFC 8601), per-account submission limits (``hato.policy.ratelimit``) and SRS for
forwarded mail (``hato.outbound.srs``). The app layer builds this service; tests and callers
that need none of it use ``SmtpService`` directly.

Leaves out: anything of its own: this is composition only (the connection handling stays in
hato.servers.smtp).

Security: see the modules of the hooks; nothing here touches the network itself.
"""

from __future__ import annotations

import ssl

from hato.core.clock import Clock
from hato.policy.authn import Authenticator
from hato.servers.smtp import OutboundQueue, SmtpService, SmtpSettings
from hato.servers.smtp_hooks import SessionHooks
from hato.store.api import MailStore


class InboundSmtpService(SmtpService):
    """An ``SmtpService`` whose sessions apply ``hooks``."""

    def __init__(
        self,
        settings: SmtpSettings,
        store: MailStore,
        authenticator: Authenticator,
        *,
        hooks: SessionHooks,
        tls: ssl.SSLContext | None = None,
        starttls: ssl.SSLContext | None = None,
        clock: Clock | None = None,
        outbound: OutboundQueue | None = None,
    ) -> None:
        super().__init__(
            settings,
            store,
            authenticator,
            tls=tls,
            starttls=starttls,
            clock=clock,
            outbound=outbound,
        )
        self.hooks = hooks
