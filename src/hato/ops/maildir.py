"""The Maildir++ layout Dovecot reads: folder names, file names, flags, keywords, control files.

Implements the Maildir format (cr.yp.to/proto/maildir.html: ``tmp``/``new``/``cur``, unique
names ``<time>.<unique>.<host>``, the ``:2,`` info suffix with flags D F P R S T in ASCII
order), the Maildir++ folder layout (INBOX at the top, ``.a.b`` for ``a/b``), and Dovecot's
control files: ``dovecot-keywords`` (keyword letters ``a``-``z``), ``dovecot-uidlist``
(version 3) and ``subscriptions`` (version 2, and version 1 when reading). Folder names are in
modified UTF-7 (RFC 3501 §5.1.3) as Dovecot stores them by default; characters Maildir++ cannot
hold (``.``, ``\\``, a leading ``~``) are escaped ``\\<hex>`` as Dovecot's listescape plugin
does. This module only formats and parses; ``hato.ops.transfer`` moves the mail.

Leaves out: Courier's ``courierimapkeywords``, the ``P`` (passed) flag (ignored on import),
``,W=`` virtual sizes (Dovecot computes them), and more than 26 keywords per folder (Dovecot's
own limit for Maildir: extra keywords are reported to the caller, which drops them).

Security: reads and writes files under a directory the operator names; names coming from
files are validated so a folder name never escapes that directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hato.codec.imap import mutf7
from hato.store.model import ANSWERED, DELETED, DRAFT, FLAGGED, INBOX, SEEN, SYSTEM_FLAGS

# Maildir info suffix letters (cr.yp.to/proto/maildir.html "info" semantics).
FLAG_LETTERS: Mapping[str, str] = {
    DRAFT: "D",
    FLAGGED: "F",
    ANSWERED: "R",  # "replied"
    SEEN: "S",
    DELETED: "T",  # "trashed"
}
LETTER_FLAGS: Mapping[str, str] = {letter: flag for flag, letter in FLAG_LETTERS.items()}
KEYWORD_LETTERS = "abcdefghijklmnopqrstuvwxyz"  # Dovecot: at most 26 keywords per folder
INFO_SEPARATOR = ":2,"
KEYWORDS_FILE = "dovecot-keywords"
UIDLIST_FILE = "dovecot-uidlist"
SUBSCRIPTIONS_FILE = "subscriptions"
FOLDER_MARKER = "maildirfolder"  # Maildir++: marks a folder directory
SUBDIRS = ("cur", "new", "tmp")
_ESCAPE = "\\"
_ESCAPED = re.compile(r"\\([0-9a-fA-F]{2})")
_SIZE_FIELD = re.compile(r",S=(\d+)")


class MaildirFormatError(ValueError):
    """A name or control file that does not follow the Maildir++ / Dovecot format."""


# -- folder names -----------------------------------------------------------------------------


def _escape_component(component: str) -> str:
    text = mutf7.encode(component)
    out = []
    for i, ch in enumerate(text):
        # Dovecot listescape: the escape character, the Maildir++ separator and a leading "~".
        if ch in (_ESCAPE, ".") or (i == 0 and ch == "~"):
            out.append(f"{_ESCAPE}{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def folder_dirname(name: str) -> str:
    """The directory of a non-INBOX mailbox: ``a/b`` -> ``.a.b`` (Maildir++)."""
    if name.upper() == INBOX:
        raise ValueError("INBOX lives at the top of the Maildir")
    components = name.split("/")
    if any(not c for c in components):
        raise MaildirFormatError(f"empty hierarchy level in mailbox name {name!r}")
    return "." + ".".join(_escape_component(c) for c in components)


def _unescape_component(text: str) -> str:
    if not text:
        raise MaildirFormatError("empty hierarchy level in folder directory name")
    unescaped = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)
    if not unescaped.isascii():
        return unescaped  # written with Dovecot's UTF-8 option: names are plain UTF-8
    try:
        return mutf7.decode(unescaped)
    except ValueError as exc:
        raise MaildirFormatError(f"folder name {text!r} is not modified UTF-7: {exc}") from None


def folder_name(dirname: str) -> str:
    """The Hato mailbox name of a Maildir++ folder directory: ``.a.b`` -> ``a/b``."""
    if not dirname.startswith(".") or dirname in (".", ".."):
        raise MaildirFormatError(f"{dirname!r} is not a Maildir++ folder directory")
    components = [_unescape_component(c) for c in dirname[1:].split(".")]
    for component in components:
        if "/" in component or "\x00" in component:
            raise MaildirFormatError(f"folder directory {dirname!r} holds a '/' or NUL")
    name = "/".join(components)
    return INBOX if name.upper() == INBOX else name


# -- file names and flags ---------------------------------------------------------------------


def _host_part(hostname: str) -> str:
    # Maildir spec: "/" is written as \057 and ":" as \072 in the host part.
    return hostname.replace("/", "\\057").replace(":", "\\072") or "localhost"


def base_name(timestamp: int, unique: str, *, hostname: str) -> str:
    """``<time>.<unique>.<host>``: the unique part of a message file name."""
    return f"{timestamp}.{unique}.{_host_part(hostname)}"


def info_suffix(flags: Iterable[str], keyword_letters: Mapping[str, str]) -> str:
    """``:2,`` plus the flag letters in ASCII order (system letters, then keyword letters)."""
    letters = {FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS}
    letters.update(keyword_letters[f] for f in flags if f in keyword_letters)
    return INFO_SEPARATOR + "".join(sorted(letters))


def file_name(base: str, size: int) -> str:
    """``<base>,S=<size>`` (the info suffix follows): Dovecot reads the file size from ``S=``."""
    return f"{base},S={size}"


@dataclass(frozen=True, slots=True)
class ParsedName:
    base: str  # without ",S=..." fields and without the info suffix
    flags: frozenset[str]  # system flags from the upper-case letters
    keyword_letters: str  # lower-case letters, resolved through dovecot-keywords
    size: int | None


def parse_file_name(name: str, *, in_new: bool = False) -> ParsedName:
    """Split a message file name; files in ``new/`` carry no flags (they are unseen)."""
    stem, sep, info = name.partition(INFO_SEPARATOR)
    flags: set[str] = set()
    keyword_letters = ""
    if sep and not in_new:
        for letter in info:
            if letter in LETTER_FLAGS:
                flags.add(LETTER_FLAGS[letter])
            elif letter in KEYWORD_LETTERS:
                keyword_letters += letter
    size_match = _SIZE_FIELD.search(stem)
    size = int(size_match.group(1)) if size_match else None
    base = stem.split(",", 1)[0]
    return ParsedName(base, frozenset(flags), keyword_letters, size)


_NUMBER = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``...Q9...`` before ``...Q10...`` (delivery order)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _NUMBER.split(name) if p)


# -- dovecot-keywords -------------------------------------------------------------------------


def assign_keywords(flag_sets: Iterable[frozenset[str]]) -> tuple[dict[str, str], list[str]]:
    """Give each keyword of a folder a letter, in order of first use; returns
    (keyword -> letter, keywords beyond the 26 letters)."""
    letters: dict[str, str] = {}
    dropped: list[str] = []
    for flags in flag_sets:
        for flag in sorted(flags):
            if flag in SYSTEM_FLAGS or flag in letters or flag in dropped:
                continue
            if len(letters) < len(KEYWORD_LETTERS):
                letters[flag] = KEYWORD_LETTERS[len(letters)]
            else:
                dropped.append(flag)
    return letters, dropped


def render_keywords(letters: Mapping[str, str]) -> bytes:
    """``dovecot-keywords``: one ``<index> <keyword>`` line per keyword (a=0 ... z=25)."""
    by_index = sorted((KEYWORD_LETTERS.index(letter), kw) for kw, letter in letters.items())
    return "".join(f"{index} {kw}\n" for index, kw in by_index).encode("utf-8")


def parse_keywords(data: bytes) -> dict[str, str]:
    """Letter -> keyword from a ``dovecot-keywords`` file."""
    result: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        index, _, keyword = line.strip().partition(" ")
        if not index.isdigit() or not keyword:
            continue
        number = int(index)
        if number < len(KEYWORD_LETTERS):
            result[KEYWORD_LETTERS[number]] = keyword.strip()
    return result


# -- dovecot-uidlist --------------------------------------------------------------------------


def render_uidlist(
    entries: Sequence[tuple[int, str]], *, uidvalidity: int, uidnext: int, guid: str
) -> bytes:
    """Version 3 ``dovecot-uidlist``: header, then ``<uid> :<file name>`` in UID order; the
    file name is taken up to the ``:2,`` info suffix (``,S=`` included), as Dovecot keys it."""
    lines = [f"3 V{uidvalidity} N{uidnext} G{guid}\n"]
    lines.extend(f"{uid} :{base}\n" for uid, base in entries)
    return "".join(lines).encode("utf-8")


def parse_uidlist(data: bytes) -> dict[str, int]:
    """Base name -> UID from a ``dovecot-uidlist`` (versions 1 and 3)."""
    result: dict[str, int] = {}
    lines = data.decode("utf-8", "replace").splitlines()
    for line in lines[1:]:
        uid_text, _, rest = line.partition(" ")
        if not uid_text.isdigit():
            continue
        colon = rest.find(":")
        # Version 3 puts extension fields (W123 S123 ...) before ":<name>"; version 1 has none.
        name = rest[colon + 1 :] if colon >= 0 else rest.split(" ")[-1]
        result[name.split(INFO_SEPARATOR, 1)[0].split(",", 1)[0]] = int(uid_text)
    return result


# -- subscriptions ----------------------------------------------------------------------------


def render_subscriptions(names: Iterable[str]) -> bytes:
    """Dovecot ``subscriptions`` version 2: header ``V\\t2``, an empty line, then one name a
    line with hierarchy levels separated by TAB, each level in modified UTF-7."""
    lines = ["V\t2\n", "\n"]
    for name in names:
        levels = [INBOX] if name.upper() == INBOX else [mutf7.encode(c) for c in name.split("/")]
        lines.append("\t".join(levels) + "\n")
    return "".join(lines).encode("utf-8")


def parse_subscriptions(data: bytes) -> list[str]:
    """Mailbox names from a ``subscriptions`` file (version 2, or version 1 with ``.``/``/``)."""
    lines = data.decode("utf-8", "replace").splitlines()
    version2 = bool(lines) and lines[0] == "V\t2"
    names: list[str] = []
    for line in lines[2:] if version2 else lines:
        if not line:
            continue
        levels = line.split("\t") if version2 else re.split(r"[./]", line)
        try:
            decoded = [mutf7.decode(level) if level.isascii() else level for level in levels]
        except ValueError:
            continue
        if any(not level for level in decoded):
            continue
        name = "/".join(decoded)
        names.append(INBOX if name.upper() == INBOX else name)
    return names


# -- files ------------------------------------------------------------------------------------


def make_maildir(path: Path, *, folder: bool) -> None:
    """Create ``cur``/``new``/``tmp`` (and the Maildir++ ``maildirfolder`` marker)."""
    for sub in SUBDIRS:
        (path / sub).mkdir(parents=True, exist_ok=True)
    if folder:
        (path / FOLDER_MARKER).touch()


def write_control_file(path: Path, data: bytes) -> None:
    """Write a small control file atomically (temporary name, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fp:
        fp.write(data)
        fp.flush()
        os.fsync(fp.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
