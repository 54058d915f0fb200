"""Value kinds of the configuration schema: how sizes, durations, listeners, paths and
choices are parsed from TOML, named in the reference doc, and rendered back.

Sizes are ``"50M"`` (K, M, G, T are powers of 1024) or integers; durations are ``"5m"``,
``"1h30m"`` or numbers of seconds; listeners are ``"host:port"`` with an IP literal, IPv6 in
brackets (the RFC 3986 §3.2.2 notation). Every failure is a ConfigError naming the key path.

Left out: host names in listeners (binding must not depend on DNS at start-up).
"""

from __future__ import annotations

import abc
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hato.core.address import normalize_domain
from hato.core.errors import AddressError, ConfigError
from hato.servers.base import Listener, TlsMode

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"([0-9]+)\s*([KMGT]?)B?", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(?:[0-9]+[smhd])+")
_DURATION_PART = re.compile(r"([0-9]+)([smhd])")
_LISTENER_RE = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:\[\]]+)):(?P<port>[0-9]{1,5})")


def show(value: Any) -> str:
    """A value as it would be written in TOML (for error messages and the doc)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def fail(path: str, expected: str, *, got: Any) -> ConfigError:
    return ConfigError(f"{path}: expected {expected}, got {show(got)}")


def parse_size(text: str) -> int:
    """``"50M"`` -> 52428800 (K, M, G, T are powers of 1024); raises ValueError."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def format_size(value: int) -> str:
    """The shortest exact form: 52428800 -> ``"50M"``."""
    for unit in ("T", "G", "M", "K"):
        if value and value % _UNITS[unit] == 0:
            return f"{value // _UNITS[unit]}{unit}"
    return str(value)


def parse_duration(text: str) -> float:
    """``"1h30m"`` -> 5400.0 seconds (units s, m, h, d); raises ValueError."""
    compact = text.strip().lower()
    if not _DURATION_RE.fullmatch(compact):
        raise ValueError(text)
    return float(sum(int(n) * _SECONDS[u] for n, u in _DURATION_PART.findall(compact)))


def format_duration(seconds: float) -> str:
    """The largest exact unit: 300 -> ``"5m"``; fractions stay plain seconds."""
    if seconds != int(seconds):
        return str(seconds)
    whole = int(seconds)
    for unit in ("d", "h", "m"):
        if whole and whole % _SECONDS[unit] == 0:
            return f"{whole // _SECONDS[unit]}{unit}"
    return f"{whole}s"


def parse_listener(text: str, *, tls: TlsMode) -> Listener:
    """``"127.0.0.1:25"`` or ``"[::1]:25"`` -> Listener; raises ValueError."""
    match = _LISTENER_RE.fullmatch(text)
    if match is None:
        raise ValueError(text)
    host = match.group("v6") or match.group("v4")
    ip = ipaddress.ip_address(host)  # ValueError when not an IP literal
    if (match.group("v6") is not None) != (ip.version == 6):
        raise ValueError(text)  # IPv6 must be bracketed, IPv4 must not be
    port = int(match.group("port"))
    if port > 65535:
        raise ValueError(text)
    return Listener(ip.compressed, port, tls)


def format_listener(listener: Listener) -> str:
    if ":" in listener.host:
        return f"[{listener.host}]:{listener.port}"
    return f"{listener.host}:{listener.port}"


# -- kinds: how one value is parsed, described and rendered ------------------------------


class Kind(abc.ABC):
    """How one configuration value is parsed from TOML, named in the doc and rendered."""

    label = "value"

    def type_label(self) -> str:
        """The type as the reference doc names it."""
        return self.label

    @abc.abstractmethod
    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        """The typed value, or ConfigError naming ``path``."""

    def render(self, value: Any) -> str:
        return show(value)


_FQDN = 'a fully-qualified host name like "mail.example.com"'


class HostName(Kind):
    label = "domain name"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, str):
            raise fail(path, _FQDN, got=value)
        try:
            name = normalize_domain(value)
        except AddressError:
            raise fail(path, _FQDN, got=value) from None
        if "." not in name:  # RFC 5321 §2.3.5: EHLO/HELO carry a fully-qualified domain name
            raise fail(path, _FQDN, got=value)
        return name


class Flag(Kind):
    label = "boolean"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, bool):
            raise fail(path, "true or false", got=value)
        return value


@dataclass(frozen=True)
class Count(Kind):
    minimum: int = 0
    why: str = ""
    label = "integer"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(path, "an integer", got=value)
        if value < self.minimum:
            raise fail(path, f"an integer >= {self.minimum}{self.why}", got=value)
        return value


@dataclass(frozen=True)
class Size(Kind):
    minimum: int = 1
    why: str = ""
    label = "size"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str):
            try:
                size = parse_size(value)
            except ValueError:
                raise fail(path, 'a size like "50M"', got=value) from None
        else:
            raise fail(path, 'a size like "50M"', got=value)
        if size < self.minimum:
            raise fail(path, f"a size of at least {format_size(self.minimum)}{self.why}", got=value)
        return size

    def render(self, value: Any) -> str:
        return show(format_size(value))


@dataclass(frozen=True)
class Duration(Kind):
    minimum: float = 0.0
    why: str = ""
    label = "duration"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError:
                raise fail(path, 'a duration like "5m", "30s" or "4h"', got=value) from None
        else:
            raise fail(path, 'a duration like "5m", "30s" or "4h"', got=value)
        if not math.isfinite(seconds):
            raise fail(path, 'a duration like "5m", "30s" or "4h"', got=value)
        if seconds < self.minimum:
            least = format_duration(self.minimum)
            raise fail(path, f"a duration of at least {least}{self.why}", got=value)
        return seconds

    def render(self, value: Any) -> str:
        return show(format_duration(value))


@dataclass(frozen=True)
class Choice(Kind):
    options: tuple[str, ...] = ()

    def type_label(self) -> str:
        return " | ".join(show(o) for o in self.options)

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if value not in self.options:
            raise fail(path, "one of " + ", ".join(show(o) for o in self.options), got=value)
        return value


class FilePath(Kind):
    label = "path"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise fail(path, "a file or directory path", got=value)
        # Relative paths are relative to the configuration file, not the working directory.
        return base_dir / Path(value).expanduser()

    def render(self, value: Any) -> str:
        return "(none)" if value is None else show(str(value))


@dataclass(frozen=True)
class Listeners(Kind):
    tls: TlsMode = TlsMode.NONE
    label = "list of listeners"

    def parse(self, value: Any, path: str, *, base_dir: Path) -> Any:
        if not isinstance(value, list):
            raise fail(path, 'a list of "host:port" strings like ["127.0.0.1:25"]', got=value)
        result = []
        for i, item in enumerate(value):
            try:
                if not isinstance(item, str):
                    raise ValueError(item)
                result.append(parse_listener(item, tls=self.tls))
            except ValueError:
                raise fail(
                    f"{path}[{i}]",
                    '"host:port" with an IP address (IPv6 as "[::1]:2525")',
                    got=item,
                ) from None
        return tuple(result)

    def render(self, value: Any) -> str:
        return show([format_listener(item) for item in value])


NO_DEMO = object()


def setting(default: Any, kind: Kind, *, doc: str, demo: Any = NO_DEMO) -> Any:
    """A schema field: default, kind, one-paragraph description, and a demo-mode default."""
    return field(default=default, metadata={"kind": kind, "doc": doc, "demo": demo})


def required(kind: Kind, doc: str) -> Any:
    """A schema field without a default."""
    return field(metadata={"kind": kind, "doc": doc, "demo": NO_DEMO})
