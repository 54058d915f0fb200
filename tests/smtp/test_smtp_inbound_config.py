"""The [inbound] section and the [smtp] submission limits, wired into the SMTP service's
session hooks (hato.app.config_inbound, hato.app.wiring)."""

from __future__ import annotations

import asyncio
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hato.app.config import parse_config
from hato.app.quickstart import DEMO_CONFIG
from hato.app.wiring import build_services
from hato.core.errors import ConfigError
from hato.servers.smtp_inbound import InboundSmtpService
from hato.store.sqlite import open_store


def _config(tmp_path: Path, **sections: dict[str, Any]) -> Any:
    data: dict[str, Any] = {
        "server": {"hostname": "mx.example.test", "data_dir": str(tmp_path / "data")},
        "smtp": {
            "mx_listeners": ["127.0.0.1:0"],
            "submission_listeners": [],
            "submissions_listeners": [],
        },
        "imap": {"listeners": [], "tls_listeners": []},
        "pop3": {"listeners": [], "tls_listeners": []},
        "managesieve": {"listeners": []},
        "http": {"listeners": [], "tls_listeners": []},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data, base_dir=tmp_path)


def _service(tmp_path: Path, config: Any) -> InboundSmtpService:
    async def main() -> InboundSmtpService:
        store = await open_store(config.server.data_dir)
        try:
            services = build_services(config, store)
        finally:
            await store.close()
        (smtp,) = [s for s in services if isinstance(s, InboundSmtpService)]
        return smtp

    return asyncio.run(main())


def test_defaults_verify_with_the_hostname_and_limit_submission(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.inbound.verify is True and config.inbound.srs is True
    hooks = _service(tmp_path, config).hooks
    assert hooks.verifier is not None
    assert hooks.verifier.settings.authserv_id == "mx.example.test"  # RFC 8601 §2.5
    assert hooks.spool_dir == tmp_path / "data" / "spool"
    assert hooks.limiter is not None and hooks.limiter.limits.messages_per_hour == 100
    assert hooks.srs is not None
    key = tmp_path / "data" / "srs.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_settings_are_honoured(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        inbound={
            "verify": True,
            "authserv_id": "Auth.Example.Test",
            "trusted_arc_sealers": ["lists.example.org"],
            "local_overrides": ["192.0.2.0/24", "forwarder.example"],
            "srs": False,
        },
        smtp={
            "max_messages_per_hour": 0,
            "max_messages_per_day": 0,
            "max_recipients_per_hour": 0,
            "max_recipients_per_day": 0,
        },
    )
    hooks = _service(tmp_path, config).hooks
    assert hooks.verifier is not None
    settings = hooks.verifier.settings
    assert settings.authserv_id == "auth.example.test"
    assert settings.trusted_arc_sealers == ("lists.example.org",)
    assert settings.local_overrides == ("192.0.2.0/24", "forwarder.example")
    assert hooks.limiter is None and hooks.srs is None


def test_demo_does_not_verify(tmp_path: Path) -> None:
    demo = tomllib.loads(DEMO_CONFIG)
    assert demo["inbound"]["verify"] is False  # quickstart writes it, with a comment
    assert "verify = false" in DEMO_CONFIG
    config = _config(tmp_path, server={"demo": True})
    assert config.inbound.verify is False  # the demo default too
    assert _service(tmp_path, config).hooks.verifier is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("verify", "yes", "inbound.verify: expected true or false"),
        ("local_overrides", ["300.1.2.0/24"], "inbound.local_overrides[0]"),
        ("trusted_arc_sealers", [""], "inbound.trusted_arc_sealers[0]"),
        ("authserv_id", "not a name!", "inbound.authserv_id"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as failure:
        _config(tmp_path, inbound={key: value})
    assert str(failure.value).startswith(message)
