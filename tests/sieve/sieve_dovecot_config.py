"""Dovecot settings (``test_config_set`` names) mapped to Hato's Sieve options, for the
Pigeonhole testsuite adapter: limits and policy (``SieveLimits``), RFC 6134 external lists
read from Dovecot "file" dicts, RFC 5235 scores read from a scanner's header the way
Dovecot's ``sieve_spamtest_*``/``sieve_virustest_*`` settings describe, and the extprograms
directories (``sieve_<kind>_bin_dir``: Pigeonhole's own ``tests/plugins/extprograms/bin`` is
not in the vectors, so it stands for ``extprograms_bin/`` beside this file, programs written
for these tests).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from hato.codec.mime import parse_message
from hato.codec.mime.headers import header_bytes_to_str, unfold
from hato.codec.sieve import SieveLimits
from hato.codec.sieve.ext_extlists import StaticLists
from hato.delivery.sieve_programs import ProgramDirectory, ProgramSettings

STAND_IN_BIN = Path(__file__).resolve().parent / "extprograms_bin"
NO_TIMEOUT = 60.0  # Dovecot's "0" (no limit) as a bound: Hato never runs a program forever


def limits_from_config(cfg: Mapping[str, str]) -> SieveLimits:
    """The interpreter limits and policy options Dovecot's settings describe."""
    base = SieveLimits()
    changes: dict[str, object] = {}
    mapping = {
        "sieve_max_redirects": "max_redirects",
        "sieve_max_actions": "max_actions",
        "sieve_include_max_nesting_depth": "max_include_depth",
        "sieve_include_max_includes": "max_includes",
        "sieve_variables_max_variable_size": "max_variable_size",
        "sieve_variables_max_value_size": "max_variable_size",  # its newer name
        "sieve_editheader_max_header_size": "max_header_size",
        "sieve_notify_max_notifications": "max_notifications",
    }
    for key, attr in mapping.items():
        if key in cfg and cfg[key].isdigit():
            changes[attr] = int(cfg[key])
    if "recipient_delimiter" in cfg:
        changes["subaddress_delimiter"] = cfg["recipient_delimiter"]
    for key, attr in (
        ("sieve_vacation_min_period", "vacation_min_period"),
        ("sieve_vacation_max_period", "vacation_max_period"),
        ("sieve_vacation_default_period", "vacation_default_period"),
    ):
        if key in cfg:
            changes[attr] = _interval(cfg[key])
    if cfg.get("sieve_user_email"):
        changes["user_email"] = cfg["sieve_user_email"]
    for key, attr in (
        ("sieve_vacation_use_original_recipient", "vacation_use_original_recipient"),
        ("sieve_vacation_to_header_ignore_envelope", "vacation_to_header_ignore_envelope"),
        ("sieve_vacation_send_from_recipient", "vacation_send_from_recipient"),
    ):
        if key in cfg:
            changes[attr] = _yes(cfg[key])
    if cfg.get("sieve_vacation_default_subject"):
        changes["vacation_default_subject"] = cfg["sieve_vacation_default_subject"]
    if "sieve_vacation_default_subject_template" in cfg:
        changes["vacation_subject_template"] = cfg["sieve_vacation_default_subject_template"]
    if "sieve_vacation_check_recipient" in cfg:
        # "no" departs from RFC 5230 §4.5 on the administrator's word (SieveLimits)
        changes["vacation_check_recipient"] = _yes(cfg["sieve_vacation_check_recipient"])
    if "sieve_max_cpu_time" in cfg:
        changes["max_cpu_time"] = float(_interval(cfg["sieve_max_cpu_time"]))
    if "sieve_redirect_envelope_from" in cfg:
        changes["redirect_envelope_from"] = cfg["sieve_redirect_envelope_from"]
    if "sieve_notify_mailto_envelope_from" in cfg:
        changes["notify_envelope_from"] = cfg["sieve_notify_mailto_envelope_from"]
    if "sieve_report_from" in cfg:
        changes["report_from"] = cfg["sieve_report_from"]
    # Dovecot protects nothing from addition by default (RFC 5293 §6 leaves it to local
    # policy); deletion of Received/Auto-Submitted is refused by the interpreter itself
    add: set[str] = set()
    delete = set(base.editheader_forbid_delete)
    if "sieve_editheader_header" in cfg:
        for name in cfg["sieve_editheader_header"].split():
            prefix = f"sieve_editheader_header/{name}/"
            if cfg.get(prefix + "forbid_add") == "yes":
                add.add(name.lower())
            if cfg.get(prefix + "forbid_delete") == "yes":
                delete.add(name.lower())
    changes["editheader_forbid_add"] = frozenset(add)
    changes["editheader_forbid_delete"] = frozenset(delete)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def programs_from_config(cfg: Mapping[str, str]) -> ProgramSettings:
    """The extprograms directories, timeouts and input line ends of Dovecot's
    ``sieve_<kind>_bin_dir`` / ``_exec_timeout`` / ``_input_eol`` settings."""
    kinds: dict[str, ProgramDirectory] = {}
    for kind in ("pipe", "filter", "execute"):
        directory = None
        text = cfg.get(f"sieve_{kind}_bin_dir")
        if text:
            directory = Path(text).resolve()
            if directory.parts[-2:] == ("extprograms", "bin") and not directory.is_dir():
                directory = STAND_IN_BIN
        timeout = float(_interval(cfg.get(f"sieve_{kind}_exec_timeout", "10s"))) or NO_TIMEOUT
        eol = cfg.get(f"sieve_{kind}_input_eol", "crlf")
        kinds[kind] = ProgramDirectory(directory, timeout, eol if eol in ("crlf", "lf") else "crlf")
    return ProgramSettings(pipe=kinds["pipe"], filter=kinds["filter"], execute=kinds["execute"])


def ext_lists_from_config(cfg: Mapping[str, str]) -> StaticLists:
    """RFC 6134 lists from Dovecot's ``sieve_extlists_list`` settings: each named list
    reads its members from a Dovecot "file" dict (keys ``priv/sieve/extlists/<value>``);
    :addrbook:default always exists (Pigeonhole adds it, RFC 6134 §2.5 requires it)."""
    lists: dict[str, list[str]] = {":addrbook:default": []}
    for name in cfg.get("sieve_extlists_list", "").split():
        label = cfg.get(f"sieve_extlists_list/{name}/name", name)
        members: list[str] = []
        path = cfg.get(f"sieve_extlists_list/{name}/dict/file/path")
        if path and Path(path).is_file():  # a dict file is opened at the first lookup
            lines = Path(path).read_text("utf-8").splitlines()
            for key in lines[0::2]:
                if key.startswith("priv/sieve/extlists/"):
                    members.append(key[len("priv/sieve/extlists/") :])
        lists[label] = members
    return StaticLists(lists)


def _yes(text: str) -> bool:
    return text.strip().lower() in ("yes", "true", "1")


def _interval(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text) if text.isdigit() else 0


def scanner_score(
    cfg: Mapping[str, str], message: bytes, kind: str, *, levels: int
) -> tuple[int, int] | None:
    """RFC 5235 values (1..levels, and a percentage) from a scanner's header, read the way
    Dovecot's ``sieve_<kind>_*`` settings describe: ``status_header`` "Name[:regex]" (group 1,
    else the whole value), ``status_type`` score / strlen / text, the maximum from
    ``score_max_header`` or ``score_max_value``, ``text_value/N`` for text. None: no header."""
    spec = cfg.get(f"sieve_{kind}_status_header")
    if not spec:
        return None
    value = _scanner_header(message, spec)
    if value is None:
        return None
    status = cfg.get(f"sieve_{kind}_status_type", "score")
    if status == "text":
        for key, text in cfg.items():
            prefix = f"sieve_{kind}_text_value/"
            if key.startswith(prefix) and text == value and key[len(prefix) :].isdigit():
                level = int(key[len(prefix) :])
                return level, (level - 1) * 100 // (levels - 1)
        return 0, 0  # RFC 5235 §3.1: 0 = not tested / unknown
    maximum: float | None = None
    if cfg.get(f"sieve_{kind}_score_max_header"):
        found = _scanner_header(message, cfg[f"sieve_{kind}_score_max_header"])
        maximum = _number(found) if found is not None else None
    elif cfg.get(f"sieve_{kind}_score_max_value"):
        maximum = _number(cfg[f"sieve_{kind}_score_max_value"])
    if not maximum:
        return None
    score = float(len(value)) if status == "strlen" else _number(value)
    if score is None:
        return None
    ratio = min(max(score / maximum, 0.0), 1.0)
    return 1 + int(ratio * (levels - 1)), round(ratio * 100)


def _scanner_header(message: bytes, spec: str) -> str | None:
    name, _, pattern = spec.partition(":")
    pattern = _posix_classes(pattern)
    root = parse_message(message)
    field_ = root.header(name.strip())
    if field_ is None:
        return None
    value = header_bytes_to_str(unfold(field_.raw)).strip()
    if not pattern:
        return value
    found = re.search(pattern.lstrip(" \t"), value)
    if found is None:
        return None
    return found.group(1) if found.groups() else found.group(0)


_POSIX = {"digit": "0-9", "alpha": "A-Za-z", "alnum": "A-Za-z0-9", "space": r"\s",
          "upper": "A-Z", "lower": "a-z", "xdigit": "0-9A-Fa-f"}


def _posix_classes(pattern: str) -> str:
    """Dovecot reads these settings as POSIX extended expressions: bracket classes such as
    ``[[:digit:]]`` become Python's ranges."""
    return re.sub(r"\[:([a-z]+):\]", lambda m: _POSIX.get(m.group(1), m.group(0)), pattern)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
