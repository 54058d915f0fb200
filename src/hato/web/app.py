"""The HTTP application: routes for autoconfig, autodiscover, MTA-STS, metrics and health.

Builds a Starlette app from injected dependencies (settings, store, counters, metrics
exporter) and wraps it in ``hato.web.security``'s middleware. Endpoints:

- ``GET /mail/config-v1.1.xml?emailaddress=...`` and
  ``GET /.well-known/autoconfig/mail/config-v1.1.xml``: Thunderbird autoconfiguration for a
  local domain, on any Host (the domain comes from ``emailaddress``, else from the Host
  ``autoconfig.<domain>`` or ``<domain>``), see ``hato.web.autoconfig``;
- ``POST /autodiscover/autodiscover.xml``: Outlook autodiscover, ``hato.web.autodiscover``;
- ``GET /.well-known/mta-sts.txt`` on Host ``mta-sts.<local domain>``: the RFC 8461 §3.2
  policy, 404 on any other host (§3.3: only a 200 is a policy, so never a redirect);
- ``GET /metrics``: Prometheus text format, for loopback clients or with
  ``Authorization: Bearer <token>`` (RFC 6750 §2.1; 401 with ``WWW-Authenticate: Bearer``,
  §3, otherwise);
- ``GET /healthz``: ``ok`` when the store answers, else 503.

Unknown paths are 404 (no directory listing, no trailing-slash redirects); wrong methods 405.

Left out: webmail, admin and JSON API, Apple ``.mobileconfig`` profiles, ACME challenges.

Security: no endpoint says whether an account exists (only whether a domain is served here);
``/metrics`` is loopback-or-token; store failures answer 503 with no detail (the detail goes to
the log, CONVENTIONS.md §7). The token is compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from hato.core import log
from hato.core.address import Address
from hato.core.errors import AddressError, StoreError
from hato.core.metrics import Counters
from hato.store.api import MailStore
from hato.web import autoconfig, autodiscover, mtasts
from hato.web.hosts import host_domain, is_local_client
from hato.web.metrics import MEDIA_TYPE as METRICS_MEDIA_TYPE
from hato.web.metrics import MetricsExporter
from hato.web.security import Accounting, BodyLimit, SecurityHeaders
from hato.web.settings import WebSettings

METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"


def _text(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return PlainTextResponse(text + "\n", status_code=status, headers=headers)


class _Endpoints:
    """The request handlers, bound to their dependencies."""

    def __init__(
        self, settings: WebSettings, *, store: MailStore, exporter: MetricsExporter
    ) -> None:
        self.settings = settings
        self.store = store
        self.exporter = exporter
        self.policy_text = mtasts.render_policy(settings.mta_sts)

    async def _local(self, domain: str | None) -> bool:
        return domain is not None and await self.store.has_domain(domain)

    async def autoconfig(self, request: Request) -> Response:
        given = request.query_params.get("emailaddress")
        if given is not None:
            try:
                address = Address.parse(given.strip())
            except AddressError:
                return _text("invalid emailaddress", 400)
            domain: str | None = None if address.is_literal else address.domain
        else:
            domain = host_domain(request.headers.get("host", ""), prefix=autoconfig.HOST_PREFIX)
        if not await self._local(domain):
            return _text("no configuration for this domain", 404)
        assert domain is not None
        body = autoconfig.client_config(
            domain, hostname=self.settings.hostname, ports=self.settings.ports
        )
        if body is None:
            return _text("no client listeners configured", 404)
        return Response(body, media_type=autoconfig.MEDIA_TYPE)

    async def autodiscover(self, request: Request) -> Response:
        try:
            parsed = autodiscover.parse_request(await request.body())
        except autodiscover.AutodiscoverRequestError as exc:
            log.event("http.autodiscover.bad_request", error=str(exc))
            body = autodiscover.error_response("600", "Invalid Request")
            return Response(body, status_code=400, media_type=autodiscover.MEDIA_TYPE)
        if parsed.schema != autodiscover.OUTLOOK_NS:
            body = autodiscover.error_response("601", "Provider is not available")
            return Response(body, media_type=autodiscover.MEDIA_TYPE)
        if not await self._local(parsed.address.domain):
            return _text("no configuration for this domain", 404)
        body_or_none = autodiscover.settings_response(
            parsed.address, hostname=self.settings.hostname, ports=self.settings.ports
        )
        if body_or_none is None:
            return _text("no client listeners configured", 404)
        return Response(body_or_none, media_type=autodiscover.MEDIA_TYPE)

    async def mta_sts(self, request: Request) -> Response:
        # RFC 8461 §3.2: the policy is served by the Policy Host "mta-sts.<Policy Domain>".
        domain = mtasts.policy_domain(request.headers.get("host", ""))
        if not await self._local(domain):
            return _text("not found", 404)
        return Response(self.policy_text, media_type=mtasts.MEDIA_TYPE)

    def _metrics_denied(self, request: Request) -> Response | None:
        token = self.settings.metrics_token
        if token is not None:
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            # RFC 6750 §2.1: "Bearer" b64token; RFC 9110 §11.1: the scheme is case-insensitive.
            if scheme.lower() == "bearer" and hmac.compare_digest(
                presented.strip().encode(), token.encode()
            ):
                return None
        client = request.client.host if request.client else None
        if is_local_client(client, request.headers):
            return None
        if token is None:
            return _text("forbidden", 403)
        challenge = 'Bearer realm="hato"'
        if "authorization" in request.headers:
            challenge += ', error="invalid_token"'  # RFC 6750 §3.1
        # RFC 6750 §3: a 401 carries the WWW-Authenticate challenge.
        return _text("unauthorized", 401, {"www-authenticate": challenge})

    async def metrics(self, request: Request) -> Response:
        denied = self._metrics_denied(request)
        if denied is not None:
            return denied
        body = await self.exporter.render(self.store)
        return Response(body, media_type=METRICS_MEDIA_TYPE)

    async def health(self, request: Request) -> Response:
        try:
            await self.store.list_domains()
        except StoreError as exc:
            log.event("http.health.store_failed", error=exc.detail)
            return _text("store unavailable", 503)
        return _text("ok")


async def _store_error(request: Request, exc: Exception) -> Response:
    """The one place a store failure becomes an HTTP reply (CONVENTIONS.md §7)."""
    detail = exc.detail if isinstance(exc, StoreError) else repr(exc)
    log.event("http.store_error", path=request.url.path, error=detail)
    return _text("temporarily unavailable", 503, {"retry-after": "60"})


def build_app(
    settings: WebSettings,
    *,
    store: MailStore,
    counters: Counters,
    exporter: MetricsExporter,
) -> ASGIApp:
    """The complete ASGI application, middleware included."""
    handlers = _Endpoints(settings, store=store, exporter=exporter)
    routes = [Route(path, handlers.autoconfig, methods=["GET"]) for path in autoconfig.PATHS]
    routes += [Route(path, handlers.autodiscover, methods=["POST"]) for path in autodiscover.PATHS]
    routes += [
        Route(mtasts.WELL_KNOWN_PATH, handlers.mta_sts, methods=["GET"]),
        Route(METRICS_PATH, handlers.metrics, methods=["GET"]),
        Route(HEALTH_PATH, handlers.health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={StoreError: _store_error})
    app.router.redirect_slashes = False  # an unknown path is a 404, never a redirect
    endpoints = frozenset(route.path for route in routes)
    counted = Accounting(BodyLimit(app, limit=settings.max_body), counters=counters,
                         endpoints=endpoints)
    return SecurityHeaders(counted, hsts_max_age=settings.hsts_max_age)
