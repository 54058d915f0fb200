"""Configuration schema: parsing, defaults, and the shape of every error (key path + problem)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.app.config import Config, load_config
from hato.app.confkinds import (
    format_duration,
    format_listener,
    format_size,
    parse_duration,
    parse_listener,
    parse_size,
)
from hato.core.errors import ConfigError
from hato.servers.base import Listener, TlsMode

BASE = """\
[server]
hostname = "mail.example.com"

[tls]
cert = "cert.pem"
key = "key.pem"
"""


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "hato.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_minimal_file_takes_production_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)
    assert config.server.hostname == "mail.example.com"
    assert config.server.data_dir == Path("/var/lib/hato")
    assert config.server.demo is False
    assert config.server.shutdown_timeout == 30.0
    assert config.tls.cert == tmp_path.resolve() / "cert.pem"
    assert config.smtp.max_message_size == 50 * 1024 * 1024
    assert config.smtp.max_recipients == 100
    assert config.smtp.idle_timeout == 300.0
    assert config.smtp.quota_error == "temporary"
    assert config.smtp.mx_listeners == (
        Listener("0.0.0.0", 25, TlsMode.STARTTLS),
        Listener("::", 25, TlsMode.STARTTLS),
    )
    ports = {path: lst.port for path, lst in config.listeners() if lst.host == "0.0.0.0"}
    assert all(path.endswith("[0]") for path in ports)
    ports = {path.removesuffix("[0]"): port for path, port in ports.items()}
    assert ports == {
        "smtp.mx_listeners": 25,
        "smtp.submission_listeners": 587,
        "smtp.submissions_listeners": 465,
        "imap.listeners": 143,
        "imap.tls_listeners": 993,
        "pop3.listeners": 110,
        "pop3.tls_listeners": 995,
        "managesieve.listeners": 4190,
        "http.listeners": 80,
        "http.tls_listeners": 443,
    }
    assert config.imap.tls_listeners[0].tls is TlsMode.IMPLICIT
    assert config.http.listeners[0].tls is TlsMode.NONE
    assert config.source == tmp_path / "hato.toml"


def test_demo_mode_defaults_to_loopback_demo_ports(tmp_path: Path) -> None:
    config = load(tmp_path, BASE.replace('"mail.example.com"', '"mail.example.com"\ndemo = true'))
    found = {path.removesuffix("[0]"): format_listener(lst) for path, lst in config.listeners()}
    assert found == {
        "smtp.mx_listeners": "127.0.0.1:2525",
        "smtp.submission_listeners": "127.0.0.1:2587",
        "smtp.submissions_listeners": "127.0.0.1:2465",
        "imap.listeners": "127.0.0.1:2143",
        "imap.tls_listeners": "127.0.0.1:2993",
        "pop3.listeners": "127.0.0.1:2110",
        "pop3.tls_listeners": "127.0.0.1:2995",
        "managesieve.listeners": "127.0.0.1:24190",
        "http.listeners": "127.0.0.1:8080",
    }


def test_explicit_values_override_demo_defaults(tmp_path: Path) -> None:
    text = BASE.replace('"mail.example.com"', '"mail.example.com"\ndemo = true')
    config = load(tmp_path, text + '[smtp]\nmx_listeners = ["[::1]:2526"]\n')
    assert config.smtp.mx_listeners == (Listener("::1", 2526, TlsMode.STARTTLS),)


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    text = BASE.replace("[tls]", 'data_dir = "data"\n\n[tls]')
    (sub / "hato.toml").write_text(text)
    config = load_config(Path("etc/hato.toml"))
    assert config.server.data_dir == sub.resolve() / "data"
    assert config.tls.key == sub.resolve() / "key.pem"
    assert os.path.isabs(config.server.data_dir)


def test_values_in_every_accepted_form(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        BASE
        + """
[smtp]
max_message_size = "100K"
idle_timeout = "1h30m"
max_session_time = 90
quota_error = "permanent"
max_recipients = 1000

[imap]
append_limit = 1048576
max_line_length = "64K"
idle_timeout = "30m"
listeners = ["127.0.0.1:1143", "[::1]:1143"]
tls_listeners = []

[pop3]
idle_timeout = 600.5
""",
    )
    assert config.smtp.max_message_size == 100 * 1024
    assert config.smtp.idle_timeout == 5400.0
    assert config.smtp.max_session_time == 90.0
    assert config.smtp.quota_error == "permanent"
    assert config.imap.append_limit == 1024 * 1024
    assert config.imap.max_line_length == 65536
    assert config.imap.tls_listeners == ()
    assert [format_listener(lst) for lst in config.imap.listeners] == [
        "127.0.0.1:1143",
        "[::1]:1143",
    ]
    assert config.pop3.idle_timeout == 600.5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[smtp]\nmax_message_size = "big"\n',
            'smtp.max_message_size: expected a size like "50M", got "big"',
        ),
        (
            "[smtp]\nmax_message_size = true\n",
            'smtp.max_message_size: expected a size like "50M", got true',
        ),
        ("[smtp]\nfrobnicate = 1\n", "smtp.frobnicate: unknown key"),
        ("[smtp]\nmaxsize = 1\n", 'smtp.maxsize: unknown key (did you mean "max_message_size"?)'),
        (
            "[smtp]\nmax_recipent = 1\n",
            'smtp.max_recipent: unknown key (did you mean "max_recipients"?)',
        ),
        ("[smtpd]\nx = 1\n", 'smtpd: unknown key (did you mean "smtp"?)'),
        ("smtp = 3\n", "smtp: expected a table, got 3"),
        ('[smtp]\nidle_timeout = "5 minutes"\n',
         'smtp.idle_timeout: expected a duration like "5m", "30s" or "4h", got "5 minutes"'),
        ("[smtp]\nidle_timeout = -1\n",
         'smtp.idle_timeout: expected a duration of at least 1s, got -1'),
        ("[smtp]\nidle_timeout = nan\n",
         'smtp.idle_timeout: expected a duration like "5m", "30s" or "4h", got nan'),
        # RFC 5321 §4.5.3.1.8: at least 100 recipients MUST be buffered.
        ("[smtp]\nmax_recipients = 99\n",
         "smtp.max_recipients: expected an integer >= 100 (RFC 5321 §4.5.3.1.8), got 99"),
        ('[smtp]\nmax_recipients = "100"\n', 'smtp.max_recipients: expected an integer, got "100"'),
        ('[smtp]\nquota_error = "soft"\n',
         'smtp.quota_error: expected one of "temporary", "permanent", got "soft"'),
        ('[smtp]\nmx_listeners = "127.0.0.1:25"\n',
         'smtp.mx_listeners: expected a list of "host:port" strings like ["127.0.0.1:25"], '
         'got "127.0.0.1:25"'),
        ('[smtp]\nmx_listeners = ["127.0.0.1:25", "localhost:25"]\n',
         'smtp.mx_listeners[1]: expected "host:port" with an IP address '
         '(IPv6 as "[::1]:2525"), got "localhost:25"'),
        ('[smtp]\nmx_listeners = ["::1:25"]\n',
         'smtp.mx_listeners[0]: expected "host:port" with an IP address '
         '(IPv6 as "[::1]:2525"), got "::1:25"'),
        ('[smtp]\nmx_listeners = ["127.0.0.1:65536"]\n',
         'smtp.mx_listeners[0]: expected "host:port" with an IP address '
         '(IPv6 as "[::1]:2525"), got "127.0.0.1:65536"'),
        ('[smtp]\nmx_listeners = [25]\n',
         'smtp.mx_listeners[0]: expected "host:port" with an IP address '
         '(IPv6 as "[::1]:2525"), got 25'),
        # RFC 9051 §5.4: an autologout timer MUST be at least 30 minutes.
        ('[imap]\nidle_timeout = "29m"\n',
         'imap.idle_timeout: expected a duration of at least 30m (RFC 9051 §5.4), got "29m"'),
        # RFC 1939 §3: a POP3 autologout timer MUST be at least 10 minutes.
        ("[pop3]\nidle_timeout = 599\n",
         "pop3.idle_timeout: expected a duration of at least 10m (RFC 1939 §3), got 599"),
        ("[imap]\nmax_line_length = 1000\n",
         "imap.max_line_length: expected a size of at least 8K (RFC 7162 §4), got 1000"),
        ('[imap]\nlisteners = ["127.0.0.1:2525"]\n[smtp]\nmx_listeners = ["127.0.0.1:2525"]\n',
         "imap.listeners[0]: 127.0.0.1:2525 is already used by smtp.mx_listeners[0]"),
        ('[server.extra]\n', "server.extra: unknown key"),
    ],
)
def test_error_names_key_path_and_problem(tmp_path: Path, extra: str, message: str) -> None:
    text = BASE + extra
    if not extra.startswith("["):  # top-level keys come before the first table
        text = extra + BASE
    elif extra.startswith("[server."):
        text = BASE.replace("[tls]", extra + "[tls]")
    assert error_of(tmp_path, text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tls]\n", "server: required section is missing"),
        ("[server]\ndata_dir = \"x\"\n", "server.hostname: required key is missing"),
        ('[server]\nhostname = "localhost"\n',
         'server.hostname: expected a fully-qualified host name like "mail.example.com", '
         'got "localhost"'),
        ('[server]\nhostname = "bad_name.example"\n',
         'server.hostname: expected a fully-qualified host name like "mail.example.com", '
         'got "bad_name.example"'),
        ('[server]\nhostname = "mail.example.com"\ndemo = "yes"\n',
         'server.demo: expected true or false, got "yes"'),
        ('[server]\nhostname = "mail.example.com"\nlog_level = "trace"\n',
         'server.log_level: expected one of "debug", "info", "warning", "error", got "trace"'),
        ('[server]\nhostname = "mail.example.com"\ndata_dir = ""\n',
         'server.data_dir: expected a file or directory path, got ""'),
        ('[server]\nhostname = "mail.example.com"\n',
         "tls.cert: required because smtp.submission_listeners is configured "
         "(set tls.cert and tls.key, or remove those listeners)"),
        ('[server]\nhostname = "mail.example.com"\n[tls]\ncert = "c.pem"\n',
         "tls.key: required when tls.cert is set"),
        ('[server]\nhostname = "mail.example.com"\n[tls]\nkey = "k.pem"\n',
         "tls.cert: required when tls.key is set"),
        ('[server]\nhostname = "mail.example.com"\ndemo = true\n',
         "tls.cert: required because smtp.submissions_listeners is configured "
         "(set tls.cert and tls.key, or remove those listeners)"),
    ],
)
def test_whole_file_errors(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


def test_demo_without_implicit_tls_needs_no_certificate(tmp_path: Path) -> None:
    text = """\
[server]
hostname = "mail.example.test"
demo = true
[smtp]
submissions_listeners = []
[imap]
tls_listeners = []
[pop3]
tls_listeners = []
"""
    config = load(tmp_path, text)
    assert config.tls.cert is None
    assert config.smtp.submission_listeners[0].port == 2587


def test_port_zero_may_repeat(tmp_path: Path) -> None:
    text = BASE + '[smtp]\nmx_listeners = ["127.0.0.1:0"]\nsubmission_listeners = ["127.0.0.1:0"]\n'
    config = load(tmp_path, text)
    assert config.smtp.mx_listeners[0].port == 0


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert str(info.value) == (
        f"cannot read configuration file {tmp_path / 'missing.toml'}: No such file or directory"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nhostname = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(info.value).startswith(f"{bad}: invalid TOML: ")
    assert "line 1" in str(info.value)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[server]\nhostname = "caf\xe9.example"\n')
    with pytest.raises(ConfigError) as info:
        load_config(latin)
    assert str(info.value) == f"{latin}: not UTF-8 text"


def test_idn_hostname_is_canonical(tmp_path: Path) -> None:
    config = load(tmp_path, BASE.replace("mail.example.com", "MAIL.xn--bcher-kva.example"))
    assert config.server.hostname == "mail.bücher.example"


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("512", 512), ("10K", 10240), ("50M", 52428800), ("1G", 1 << 30), ("2t", 2 << 40),
     ("50MB", 52428800), ("7 K", 7168)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "1.5M", "-1K", "10X", "50 MiB", "ten", "\u0665M"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("30s", 30.0), ("5m", 300.0), ("4h", 14400.0), ("1d", 86400.0), ("1h30m", 5400.0),
     ("0s", 0.0)],
)
def test_parse_duration(text: str, value: float) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "1.5h", "5y", "-5m", "\u0665m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=1 << 50))
def test_size_round_trip(value: int) -> None:
    assert parse_size(format_size(value)) == value


@given(st.integers(min_value=0, max_value=10**8))
def test_duration_round_trip(value: int) -> None:
    assert parse_duration(format_duration(float(value))) == value


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:25", "127.0.0.1", 25), ("[::1]:2525", "::1", 2525),
     ("[2001:DB8:0::1]:587", "2001:db8::1", 587), ("0.0.0.0:0", "0.0.0.0", 0)],
)
def test_parse_listener(text: str, host: str, port: int) -> None:
    listener = parse_listener(text, tls=TlsMode.IMPLICIT)
    assert listener == Listener(host, port, TlsMode.IMPLICIT)
    assert parse_listener(format_listener(listener), tls=TlsMode.IMPLICIT) == listener


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "[127.0.0.1]:25", "::1:25", "[::1]", "host:25", "1.2.3.4:-1", ":25"]
)
def test_parse_listener_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listener(text, tls=TlsMode.NONE)
