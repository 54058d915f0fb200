"""Sieve "mboxmetadata" and "servermetadata" (RFC 5490 §3.3-§4.2): testing IMAP METADATA.

Implements RFC 5490 §3.3 (metadata: the mailbox annotation's value against the key list,
default :is with i;ascii-casemap; false when the annotation does not exist), §3.4
(metadataexists: every listed annotation of the mailbox is non-NIL), §4.1-§4.2 (the same for
server annotations). Annotation values come from the host's lookup (``run_script(metadata=)``:
per RFC 5490 §3.3 the host answers with the permissions of the script's user). An entry name
that is not an RFC 5464 §3.2 entry (starting "/private/" or "/shared/", no "*", "%",
empty component or trailing "/") or a mailbox name that is not UTF-8 makes the test false.
Leaves out: nothing.
"""

from __future__ import annotations

import re

from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import CommandFn, Runtime, TestFn
from hato.codec.sieve.strings import has_bad_utf8

# RFC 5464 §3.2: entries are slash-separated, in the /private or /shared hierarchy
_ENTRY = re.compile(r"/(private|shared)(/[\x21-\x24\x26-\x29\x2b-\x2e\x30-\x7e]+)+\Z", re.I)


def entry_ok(name: str) -> bool:
    """Whether ``name`` is a valid RFC 5464 entry name."""
    return _ENTRY.match(name) is not None


def _lookup(rt: Runtime, mailbox: str | None, entry: str) -> str | None:
    if mailbox is not None and has_bad_utf8(mailbox):
        return None
    if not entry_ok(entry):
        return None
    return rt.metadata(mailbox, entry)


def _metadata(rt: Runtime, cmd: Cmd) -> bool:
    if cmd.name == "metadata":
        mailbox: str | None = rt.expand(cmd.string(0))
        entry, keys = cmd.string(1), cmd.strings(2)
    else:
        mailbox = None
        entry, keys = cmd.string(0), cmd.strings(1)
    value = _lookup(rt, mailbox, rt.expand(entry))
    if value is None:
        return False  # RFC 5490 §3.3: true only "if the annotation exists" and matches
    return rt.matches(cmd, [value], keys=rt.expand_all(keys))


def _metadataexists(rt: Runtime, cmd: Cmd) -> bool:
    if cmd.name == "metadataexists":
        mailbox: str | None = rt.expand(cmd.string(0))
        names = cmd.strings(1)
    else:
        mailbox = None
        names = cmd.strings(0)
    # RFC 5490 §3.4 / §4.2: all of the annotations exist
    return all(_lookup(rt, mailbox, entry) is not None for entry in rt.expand_all(names))


COMMANDS: dict[str, CommandFn] = {}
TESTS: dict[str, TestFn] = {
    "metadata": _metadata,
    "servermetadata": _metadata,
    "metadataexists": _metadataexists,
    "servermetadataexists": _metadataexists,
}
