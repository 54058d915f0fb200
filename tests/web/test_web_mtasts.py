"""MTA-STS: the policy file (RFC 8461 §3.2), its Policy Host, and the TXT id both the HTTP
service and ``hato dns records`` derive from it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from web_harness import DOMAIN, HOSTNAME, POLICY, make_config, settings, web_env

from hato.app.cli_dns import records
from hato.app.config import parse_config
from hato.app.wiring import mta_sts_policy
from hato.core.errors import ConfigError
from hato.outbound.mtasts import parse_policy, parse_record
from hato.web.mtasts import MtaStsPolicy, policy_domain, policy_id, render_policy, sts_record


def test_policy_text_is_crlf_separated_key_value_pairs() -> None:
    # RFC 8461 §3.2: CRLF-separated pairs; version, mode, one line per mx, max_age.
    assert render_policy(POLICY) == (
        f"version: STSv1\r\nmode: enforce\r\nmx: {HOSTNAME}\r\nmax_age: 604800\r\n"
    )
    # The sending side's parser (hato.outbound.mtasts) reads back what we serve.
    parsed = parse_policy(render_policy(POLICY))
    assert (parsed.mode, parsed.max_age, parsed.mx) == ("enforce", 604800, (HOSTNAME,))


def test_mx_is_written_as_an_a_label() -> None:
    # RFC 8461 §3.2: "mx" values MUST be Punycode A-labels, not U-labels.
    policy = MtaStsPolicy(mode="testing", max_age=86400, mx=("mx.bücher.example", "b.example"))
    text = render_policy(policy)
    assert "mx: mx.xn--bcher-kva.example\r\nmx: b.example\r\n" in text
    assert parse_policy(text).mx == ("mx.xn--bcher-kva.example", "b.example")


@pytest.mark.parametrize(
    ("mode", "max_age", "mx"),
    [("strict", 1, ("a.example",)), ("enforce", 31_557_601, ("a.example",)),
     ("enforce", -1, ("a.example",)), ("enforce", 60, ())],
)
def test_invalid_policies_are_configuration_errors(
    mode: str, max_age: int, mx: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError):
        MtaStsPolicy(mode=mode, max_age=max_age, mx=mx)


def test_policy_id_is_a_hash_of_the_policy() -> None:
    ident = policy_id(POLICY)
    assert re.fullmatch(r"[A-Za-z0-9]{1,32}", ident)  # RFC 8461 §3.1: 1*32(ALPHA / DIGIT)
    assert policy_id(MtaStsPolicy("enforce", 604800, (HOSTNAME,))) == ident
    assert policy_id(MtaStsPolicy("testing", 604800, (HOSTNAME,))) != ident
    assert policy_id(MtaStsPolicy("enforce", 604801, (HOSTNAME,))) != ident
    assert parse_record(sts_record(POLICY)).id == ident


def test_dns_records_print_the_id_of_the_served_policy(tmp_path: Path) -> None:
    config = make_config(tmp_path, http={"mta_sts_mode": "enforce", "mta_sts_max_age": "14d"})
    policy = mta_sts_policy(config)
    assert policy == MtaStsPolicy("enforce", 14 * 86400, (HOSTNAME,))
    txt = [line for line in records(config, DOMAIN) if line.startswith("_mta-sts.")]
    assert txt == [f'_mta-sts.{DOMAIN}. 3600 IN TXT "v=STSv1; id={policy_id(policy)}"']


def test_max_age_over_the_rfc_limit_is_rejected_in_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http\.mta_sts_max_age"):
        parse_config(
            {"server": {"hostname": HOSTNAME}, "http": {"mta_sts_max_age": "400d"}},
            base_dir=tmp_path,
        )


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        (f"mta-sts.{DOMAIN}", DOMAIN),
        (f"MTA-STS.{DOMAIN.upper()}:443", DOMAIN),
        (f"mta-sts.{DOMAIN}.", DOMAIN),
        ("mta-sts.xn--bcher-kva.example", "bücher.example"),
        (DOMAIN, None),
        (f"autoconfig.{DOMAIN}", None),
        ("mta-sts.", None),
        ("127.0.0.1", None),
    ],
)
def test_policy_host(host: str, domain: str | None) -> None:
    assert policy_domain(host) == domain


def test_policy_is_served_on_the_policy_host_of_local_domains_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with web_env(tmp_path, settings()) as env, env.client() as c:
            r = await c.get("/.well-known/mta-sts.txt", headers={"host": f"mta-sts.{DOMAIN}"})
            assert r.status_code == 200  # RFC 8461 §3.3: only a 200 is a policy
            # RFC 8461 §3.2: senders SHOULD check the media type is text/plain.
            assert r.headers["content-type"] == "text/plain; charset=utf-8"
            assert r.content == render_policy(POLICY).encode()
            # RFC 8461 §3.3: HTTP caching MUST NOT be used.
            assert r.headers["cache-control"] == "no-store"
            for host in (DOMAIN, HOSTNAME, "mta-sts.elsewhere.test", "127.0.0.1"):
                r = await c.get("/.well-known/mta-sts.txt", headers={"host": host})
                assert r.status_code == 404, host
                assert "location" not in r.headers  # never a redirect

    asyncio.run(scenario())
