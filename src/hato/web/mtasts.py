"""The MTA-STS policy this host publishes for its domains, and the id of its TXT record.

Implements RFC 8461 §3.2 (the policy file: ``version: STSv1``, ``mode``, one ``mx`` line per
MX host in A-label form, ``max_age`` of at most 31557600 seconds, CRLF-separated), §3.1 (the
``id`` of the ``_mta-sts`` TXT record: 1-32 alphanumerics, here a hash of the policy text so
it changes exactly when the policy does; ``hato dns records`` prints it through
``sts_record``) and §3.3 (served as ``text/plain`` with status 200, never a redirect; the
host must be ``mta-sts.<Policy Domain>``).

Left out: policy delegation to another host (§8.2); per-domain policies (every local domain
gets the same policy: they share this host's MX).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from hato.core.address import domain_to_ascii
from hato.core.errors import ConfigError
from hato.web.hosts import host_domain, strip_port

MODES = ("enforce", "testing", "none")  # RFC 8461 §3.2: sts-policy-mode-value
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: max_age maximum value of 31557600
POLICY_HOST_LABEL = "mta-sts"  # RFC 8461 §3.2: "mta-sts" prepended to the Policy Domain
WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.2 (RFC 8615 well-known URI)
MEDIA_TYPE = "text/plain; charset=utf-8"  # RFC 8461 §3.2: senders SHOULD check text/plain


@dataclass(frozen=True, slots=True)
class MtaStsPolicy:
    mode: str
    max_age: int
    mx: tuple[str, ...]  # MX host names (canonical or A-label), at least one

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"http.mta_sts_mode: expected one of {', '.join(MODES)}")
        if not 0 <= self.max_age <= MAX_AGE_LIMIT:
            raise ConfigError(
                f"http.mta_sts_max_age: at most {MAX_AGE_LIMIT} seconds (RFC 8461 §3.2)"
            )
        if not self.mx:
            raise ConfigError("http: an MTA-STS policy needs at least one MX host")


def render_policy(policy: MtaStsPolicy) -> str:
    """The policy file (RFC 8461 §3.2), every line ended by CRLF."""
    lines = ["version: STSv1", f"mode: {policy.mode}"]
    for host in policy.mx:
        # RFC 8461 §3.2: each MX on its own "mx:" line, IDNs as Punycode A-labels.
        lines.append(f"mx: {domain_to_ascii(host)}")
    lines.append(f"max_age: {policy.max_age}")
    return "".join(f"{line}\r\n" for line in lines)  # RFC 8461 §3.2: CRLF-separated pairs


def policy_id(policy: MtaStsPolicy) -> str:
    """The TXT record ``id``: 32 hex digits of SHA-256 over the policy text, so a changed
    policy gets a new id (RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT))."""
    return hashlib.sha256(render_policy(policy).encode("ascii")).hexdigest()[:32]


def sts_record(policy: MtaStsPolicy) -> str:
    """The value of the ``_mta-sts.<domain>`` TXT record (RFC 8461 §3.1)."""
    return f"v=STSv1; id={policy_id(policy)}"


def policy_domain(host: str) -> str | None:
    """The Policy Domain named by a Host header ``mta-sts.<domain>[:port]`` (canonical form),
    or None when the host is not a policy host."""
    prefix = POLICY_HOST_LABEL + "."
    if not strip_port(host.strip()).lower().startswith(prefix):
        return None
    return host_domain(host, prefix=prefix)
