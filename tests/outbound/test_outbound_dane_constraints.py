"""RFC 5280 name constraints (§4.2.1.10) in the DANE-TA(2) chain check: permitted and excluded
DNS, IP, email and directory-name subtrees on intermediates and on a Cert(0) trust anchor,
wildcards, CN-only leaves, unprocessed name forms, and the matching rules fuzzed."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from dane_certs import NOW, Issued, issue
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.core.dns import TlsaRecord
from hato.outbound import dane, nameconstraints
from hato.outbound.nameconstraints import _dns_within, _email_within, _wildcard_may_match

NOW_TS = NOW.timestamp()


def constrained(
    permitted: list[x509.GeneralName] | None = None,
    excluded: list[x509.GeneralName] | None = None,
) -> tuple[Issued, Issued]:
    """A root and an intermediate carrying the name constraints."""
    root = issue("NC Root CA", None, ca=True)
    nc = x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)
    return root, issue("NC Intermediate CA", root, ca=True, name_constraints=nc)


def verify(leaf: Issued, mid: Issued, root: Issued, *names: str) -> dane.DaneVerdict:
    record = TlsaRecord(*root.tlsa(2, 0, 1))
    refs = names or ("mx.example.test",)
    return dane.verify([leaf.der, mid.der, root.der], [record], names=refs, now=NOW_TS)


def leaf_of(mid: Issued, *names: str, **kw: Any) -> Issued:
    return issue(names[0] if names else "leaf", mid, ca=False, names=names, **kw)


def test_permitted_dns_subtree() -> None:
    root, mid = constrained(permitted=[x509.DNSName("example.test")])
    assert verify(leaf_of(mid, "mx.example.test"), mid, root).ok
    # RFC 5280 §4.2.1.10: the name itself is within its own subtree
    assert verify(leaf_of(mid, "example.test"), mid, root, "example.test").ok
    # one DNS-ID outside: the whole certificate fails, even if another name matches
    bad = leaf_of(mid, "mx.example.test", "mx.other.test")
    verdict = verify(bad, mid, root)
    assert not verdict.ok and verdict.failure == "validation-failure"
    assert "permitted" in verdict.reason
    # label boundaries: "badexample.test" is not below "example.test"
    assert not verify(leaf_of(mid, "badexample.test"), mid, root, "badexample.test").ok


def test_leading_dot_covers_only_names_below() -> None:
    root, mid = constrained(permitted=[x509.DNSName(".example.test")])
    assert verify(leaf_of(mid, "mx.example.test"), mid, root).ok
    assert not verify(leaf_of(mid, "example.test"), mid, root, "example.test").ok


def test_excluded_dns_subtree() -> None:
    root, mid = constrained(excluded=[x509.DNSName("bad.example.test")])
    assert verify(leaf_of(mid, "mx.example.test"), mid, root).ok
    verdict = verify(leaf_of(mid, "mx.bad.example.test"), mid, root, "mx.bad.example.test")
    assert not verdict.ok and "excluded" in verdict.reason


def test_wildcards_against_constraints() -> None:
    root, mid = constrained(permitted=[x509.DNSName("example.test")])
    assert verify(leaf_of(mid, "*.example.test"), mid, root).ok
    # a wildcard matching names outside the one permitted host is not permitted
    root, mid = constrained(permitted=[x509.DNSName("mx.example.test")])
    assert not verify(leaf_of(mid, "*.example.test"), mid, root).ok
    # a wildcard that can match an excluded host is excluded
    root, mid = constrained(excluded=[x509.DNSName("mx.example.test")])
    assert not verify(leaf_of(mid, "*.example.test"), mid, root, "mx2.example.test").ok
    root, mid = constrained(excluded=[x509.DNSName("a.mx.example.test")])
    assert verify(leaf_of(mid, "*.example.test"), mid, root, "mx2.example.test").ok


def test_cn_only_leaf_is_bound_by_dns_constraints() -> None:
    root, mid = constrained(permitted=[x509.DNSName("example.test")])
    # RFC 7672 §3.2.3: without DNS-IDs the CN-ID is the server's name: it must obey too
    outside = issue("mx.other.test", mid, ca=False)
    assert not verify(outside, mid, root, "mx.other.test").ok
    inside = issue("mx.example.test", mid, ca=False)
    assert verify(inside, mid, root).ok


def test_ip_email_and_directory_name_constraints() -> None:
    root, mid = constrained(permitted=[x509.IPAddress(ipaddress.ip_network("192.0.2.0/24"))])
    ok = leaf_of(mid, "mx.example.test", san=[x509.IPAddress(ipaddress.ip_address("192.0.2.7"))])
    assert verify(ok, mid, root).ok
    bad = leaf_of(
        mid, "mx.example.test", san=[x509.IPAddress(ipaddress.ip_address("198.51.100.7"))]
    )
    assert not verify(bad, mid, root).ok
    # an IPv6 address lies in no IPv4 subtree: outside the permitted ones
    v6 = leaf_of(mid, "mx.example.test", san=[x509.IPAddress(ipaddress.ip_address("2001:db8::7"))])
    assert not verify(v6, mid, root).ok

    root, mid = constrained(excluded=[x509.RFC822Name(".example.test")])
    mail = leaf_of(mid, "mx.example.test", san=[x509.RFC822Name("postmaster@x.example.test")])
    assert not verify(mail, mid, root).ok
    # the legacy emailAddress attribute of the subject is an rfc822Name too
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.test"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "admin@y.example.test"),
        ]
    )
    assert not verify(leaf_of(mid, "mx.example.test", subject=subject), mid, root).ok

    org = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org")])
    root, mid = constrained(permitted=[x509.DirectoryName(org)])
    inside = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "example  ORG"),  # case, spaces
            x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.test"),
        ]
    )
    assert verify(leaf_of(mid, "mx.example.test", subject=inside), mid, root).ok
    assert not verify(leaf_of(mid, "mx.example.test"), mid, root).ok  # CN=... only


def test_unprocessed_name_form_under_its_constraint_fails() -> None:
    root, mid = constrained(permitted=[x509.UniformResourceIdentifier("example.test")])
    uri = leaf_of(
        mid, "mx.example.test", san=[x509.UniformResourceIdentifier("https://example.test/")]
    )
    verdict = verify(uri, mid, root)
    assert not verdict.ok and "not processed" in verdict.reason
    # no name of that form below: the constraint binds nothing
    assert verify(leaf_of(mid, "mx.example.test"), mid, root).ok


def test_trust_anchor_constraints_apply_for_cert_records_only() -> None:
    nc = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("example.test")], excluded_subtrees=None
    )
    root = issue("Anchor NC Root", None, ca=True, name_constraints=nc)
    mid = issue("Plain Intermediate", root, ca=True)
    leaf = leaf_of(mid, "mx.other.test")
    chain = [leaf.der, mid.der, root.der]
    # RFC 7672 §3.1.2: the constraints of a Cert(0) anchor SHOULD be applied
    cert0 = TlsaRecord(*root.tlsa(2, 0, 1))
    verdict = dane.verify(chain, [cert0], names=("mx.other.test",), now=NOW_TS)
    assert not verdict.ok and "Anchor NC Root" in verdict.reason
    # an SPKI(1) anchor is a bare key: no constraints come with it
    spki = TlsaRecord(*root.tlsa(2, 1, 1))
    assert dane.verify(chain, [spki], names=("mx.other.test",), now=NOW_TS).ok
    # DANE-EE(3) has no chain to constrain (RFC 7672 §3.1.1)
    ee = TlsaRecord(*leaf.tlsa(3, 1, 1))
    assert dane.verify(chain, [ee], names=("x.test",), now=NOW_TS).ok


def test_constraints_bind_certificates_below_not_above() -> None:
    root = issue("Order Root", None, ca=True)
    nc = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("example.test")], excluded_subtrees=None
    )
    upper = issue("Upper CA", root, ca=True)
    lower = issue("Lower CA", upper, ca=True, name_constraints=nc)
    leaf = leaf_of(lower, "mx.example.test")
    assert nameconstraints.violation([leaf.cert, lower.cert, upper.cert]) is None
    outside = leaf_of(lower, "mx.other.test")
    assert nameconstraints.violation([outside.cert, lower.cert, upper.cert]) is not None


@pytest.mark.parametrize(
    ("name", "constraint", "within"),
    [
        ("mx.example.test", "example.test", True),
        ("MX.Example.Test.", "example.test", True),
        ("example.test", "example.test", True),
        ("badexample.test", "example.test", False),
        ("example.test", ".example.test", False),
        ("a.b.example.test", ".example.test", True),
        ("anything.test", "", True),
    ],
)
def test_dns_subtree_vectors(name: str, constraint: str, within: bool) -> None:
    assert _dns_within(name, constraint) is within


@pytest.mark.parametrize(
    ("address", "constraint", "within"),
    [
        ("user@example.test", "user@example.test", True),
        ("User@example.test", "user@example.test", False),  # local parts are case-exact
        ("user@EXAMPLE.test", "example.test", True),
        ("user@mx.example.test", "example.test", False),
        ("user@mx.example.test", ".example.test", True),
        ("no-at-sign", "example.test", False),
    ],
)
def test_email_subtree_vectors(address: str, constraint: str, within: bool) -> None:
    assert _email_within(address, constraint) is within


LABEL = st.text("abcxyz-0", min_size=1, max_size=6)
DNS = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


@settings(max_examples=300, deadline=None)
@given(name=DNS, constraint=st.one_of(DNS, DNS.map(lambda d: "." + d), st.just("")), label=LABEL)
def test_fuzz_dns_subtrees_are_closed_under_adding_labels(
    name: str, constraint: str, label: str
) -> None:
    # RFC 5280 §4.2.1.10: adding labels on the left never leaves a subtree
    if _dns_within(name, constraint):
        assert _dns_within(f"{label}.{name}", constraint)
    # a wildcard is permitted only if every name it matches is; excluded if any may be
    wildcard = f"*.{name}"
    if _dns_within(wildcard, constraint):
        assert _dns_within(f"{label}.{name}", constraint)
    if _dns_within(f"{label}.{name}", constraint):
        assert _wildcard_may_match(wildcard, constraint)


@settings(max_examples=40, deadline=None)
@given(
    permitted=st.lists(DNS, max_size=3),
    excluded=st.lists(DNS, max_size=3),
    names=st.lists(st.one_of(DNS, DNS.map(lambda d: "*." + d)), min_size=1, max_size=3),
)
def test_fuzz_constraint_sets_decide_consistently(
    permitted: list[str], excluded: list[str], names: list[str]
) -> None:
    nc = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(p) for p in permitted] or None,
        excluded_subtrees=[x509.DNSName(e) for e in excluded] or None,
    ) if permitted or excluded else None  # fmt: skip
    root = issue("Fuzz Root", None, ca=True)
    mid = issue("Fuzz CA", root, ca=True, name_constraints=nc)
    leaf = issue("fuzz leaf", mid, ca=False, names=tuple(names))
    problem = nameconstraints.violation([leaf.cert, mid.cert])
    plain = [n for n in names if not n.startswith("*.")]
    if any(_dns_within(n, e) for n in plain for e in excluded):
        assert problem is not None
    if permitted and any(not any(_dns_within(n, p) for p in permitted) for n in names):
        assert problem is not None
    if not permitted and not excluded:
        assert problem is None
