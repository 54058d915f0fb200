"""X.509 name constraints (RFC 5280 §4.2.1.10) for the DANE-TA(2) chain check (sans-IO).

Implements the constraint check of RFC 5280 §6.1.3 (b)/(c) as §6.1.4 (g) accumulates it: the
names of every certificate below a CA carrying a nameConstraints extension (and below the
trust anchor, when its certificate's constraints apply, RFC 7672 §3.1.2) must lie within its
permitted subtrees of their name form, when there are any, and within none of its excluded
subtrees; self-issued intermediates are exempt (§6.1.3 (b)). Name forms: dNSName (a
constraint covers the name and every name made by adding labels on the left; a leading dot,
common practice, covers only the names below), iPAddress (address within the network),
rfc822Name (a mailbox, a host, or ".domain" for the hosts below), directoryName (the
subject, and directory names in subjectAltName, start with the constraint's RDNs). A
wildcard DNS-ID ``*.example.com`` is permitted only when every name it can match is, and
excluded when any name it can match is. The CN-ID of a leaf without DNS-IDs is checked as a
DNS name (RFC 7672 §3.2.3 uses it as the server's name, so a constraint must bind it too).
The legacy emailAddress attribute of the subject is checked as an rfc822Name.

Leaves out: name forms other than these four (URI, otherName, registeredID): a path where a
CA constrains such a form and a certificate below carries a name of that form fails, as
§4.2.1.10 allows ("process the constraint or reject the certificate"); RFC 4518 string
preparation of directory names beyond case folding and white-space squeezing.

Security: the certificates come from the peer; the work is bounded by the path length
(``dane.MAX_DEPTH``) times the names and constraints the certificates carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID

_FORMS = (x509.DNSName, x509.IPAddress, x509.RFC822Name, x509.DirectoryName)


def _dns_within(name: str, constraint: str) -> bool:
    """RFC 5280 §4.2.1.10: "any DNS name that can be constructed by simply adding zero or
    more labels to the left-hand side of the name satisfies the name constraint"."""
    base = constraint.strip().lower().rstrip(".")
    name = name.strip().lower().rstrip(".")
    if not base:
        return True  # an empty constraint covers every name
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _wildcard_may_match(name: str, constraint: str) -> bool:
    """Could the wildcard DNS-ID ``name`` ("*.rest") match a name within ``constraint``?"""
    if _dns_within(name, constraint):
        return True
    base = constraint.strip().lower().rstrip(".")
    rest = name.strip().lower().rstrip(".")[2:]
    label, dot, parent = base.partition(".")
    return bool(label) and bool(dot) and label != "*" and parent == rest


def _email_within(address: str, constraint: str) -> bool:
    """RFC 5280 §4.2.1.10 rfc822Name: a mailbox, all mailboxes of a host, or ".domain"."""
    local, at, host = address.rpartition("@")
    if not at or not local:
        return False
    host = host.lower()
    base = constraint.strip()
    if "@" in base:
        base_local, _, base_host = base.rpartition("@")
        return local == base_local and host == base_host.lower()
    base = base.lower()
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def _rdn_key(rdn: x509.RelativeDistinguishedName) -> frozenset[tuple[str, object]]:
    out: set[tuple[str, object]] = set()
    for attr in rdn:
        value = attr.value
        if isinstance(value, str):
            value = " ".join(value.split()).casefold()
        out.add((attr.oid.dotted_string, value))
    return frozenset(out)


def _dn_within(name: x509.Name, constraint: x509.Name) -> bool:
    """RFC 5280 §4.2.1.10 directoryName: the name starts with the constraint's RDNs."""
    prefix = list(constraint.rdns)
    rdns = list(name.rdns)
    if len(prefix) > len(rdns):
        return False
    return all(_rdn_key(a) == _rdn_key(b) for a, b in zip(rdns, prefix, strict=False))


def _ip_within(address: ipaddress.IPv4Address | ipaddress.IPv6Address, network: object) -> bool:
    if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return False
    return address.version == network.version and address in network


def _within(name: x509.GeneralName, constraint: x509.GeneralName, *, excluded: bool) -> bool:
    """Is ``name`` inside the subtree ``constraint`` (for an excluded subtree: may it be)?"""
    if isinstance(name, x509.DNSName) and isinstance(constraint, x509.DNSName):
        if name.value.startswith("*.") and excluded:
            return _wildcard_may_match(name.value, constraint.value)
        return _dns_within(name.value, constraint.value)
    if isinstance(name, x509.IPAddress) and isinstance(constraint, x509.IPAddress):
        address = name.value
        if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return _ip_within(address, constraint.value)
        return False  # a network in a SAN is no address: inside nothing
    if isinstance(name, x509.RFC822Name) and isinstance(constraint, x509.RFC822Name):
        return _email_within(name.value, constraint.value)
    if isinstance(name, x509.DirectoryName) and isinstance(constraint, x509.DirectoryName):
        return _dn_within(name.value, constraint.value)
    return False


def _names(cert: x509.Certificate, *, leaf: bool) -> list[x509.GeneralName]:
    """The names of ``cert`` that constraints bind (RFC 5280 §6.1.3 (b)/(c))."""
    names: list[x509.GeneralName] = []
    if list(cert.subject.rdns):
        names.append(x509.DirectoryName(cert.subject))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.extend(san)
    except x509.ExtensionNotFound:
        pass
    for attr in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attr.value, str):
            names.append(x509.RFC822Name(attr.value))
    if leaf and not any(isinstance(n, x509.DNSName) for n in names):
        # RFC 7672 §3.2.3: the CN-ID stands for the server's name when there is no DNS-ID
        for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            if isinstance(attr.value, str):
                names.append(x509.DNSName(attr.value))
    return names


def _problem(
    cert: x509.Certificate, constraints: x509.NameConstraints, *, leaf: bool
) -> str | None:
    permitted = list(constraints.permitted_subtrees or ())
    excluded = list(constraints.excluded_subtrees or ())
    for name in _names(cert, leaf=leaf):
        form = type(name)
        allowed = [c for c in permitted if type(c) is form]
        barred = [c for c in excluded if type(c) is form]
        if not allowed and not barred:
            continue
        if form not in _FORMS:
            return f"a {form.__name__} under a constraint of that form (not processed)"
        if any(_within(name, c, excluded=True) for c in barred):
            return f"name {_text(name)} is in an excluded subtree"
        if allowed and not any(_within(name, c, excluded=False) for c in allowed):
            return f"name {_text(name)} is outside the permitted subtrees"
    return None


def _text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DirectoryName):
        return name.value.rfc4514_string()[:80]
    return str(getattr(name, "value", name))[:80]


def _constraints(cert: x509.Certificate) -> x509.NameConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def violation(
    path: Sequence[x509.Certificate], anchor: x509.Certificate | None = None
) -> str | None:
    """Why ``path`` (leaf first, the trust anchor not included) breaks a name constraint of
    one of its CAs or of ``anchor`` (pass it only when its constraints apply), or None."""
    issuers = [(i, c) for i, c in enumerate(path) if i > 0]
    if anchor is not None:
        issuers.append((len(path), anchor))
    for position, issuer in issuers:
        constraints = _constraints(issuer)
        if constraints is None:
            continue
        for index in range(position):  # every certificate below the constraining CA
            cert = path[index]
            leaf = index == 0
            if not leaf and cert.subject == cert.issuer:
                continue  # RFC 5280 §6.1.3 (b): self-issued intermediates are exempt
            problem = _problem(cert, constraints, leaf=leaf)
            if problem is not None:
                who = issuer.subject.rfc4514_string()[:80]
                return f"RFC 5280 name constraints of {who}: {problem}"
    return None
