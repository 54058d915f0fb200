"""Command-specific compile-time checks of Sieve scripts, run by ``validate`` once a command's
arguments are bound.

Implements: comparator and match-type resolution (RFC 5228 §2.7.1-§2.7.3, RFC 5231 §4-§5,
regex draft §3), address test header restriction (RFC 5228 §5.1), envelope parts (§5.4),
size tags (§5.9), redirect address syntax (§4.2), fileinto mailbox names, vacation :from
(RFC 5230 §4.5), variable names (RFC 5229 §3-§4), global (RFC 6609 §3.4), include script
names (RFC 6609 §3.2, RFC 5804 §1.6), index (RFC 5260 §6), mime options (RFC 5703 §4),
foreverypart/break/extracttext placement (RFC 5703 §3, §7), enotify URIs and options (RFC 5435
§3, RFC 5436), duplicate (RFC 7352 §3), editheader field names (RFC 5293 §4-§5); the
vnd.dovecot.report and extprograms checks live in their ``ext_*`` modules.
Leaves out: warnings.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from hato.codec.mime import Group, parse_address_list
from hato.codec.sieve import enotify, ext_extprograms, ext_report
from hato.codec.sieve.addresses import parse_mailbox
from hato.codec.sieve.comparators import CAPABILITY, COMPARATORS, DEFAULT, Comparator
from hato.codec.sieve.ext_extlists import normalize_list_name
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.matchtypes import RELATIONS, MatchType, RegexError, compile_regex
from hato.codec.sieve.strings import Ref, Template, has_bad_utf8, parse_name, shown

if TYPE_CHECKING:
    from hato.codec.sieve.validate import Checker

# RFC 5228 §5.1: the address test works on headers that hold addresses
ADDRESS_HEADERS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "return-path",
        "return-receipt-to",
        "disposition-notification-to",
        "errors-to",
        "delivered-to",
        "envelope-to",
        "x-envelope-to",
        "x-original-to",
        "original-recipient",
        "original-from",
        "mail-followup-to",
        "mail-reply-to",
        "apparently-to",
        "approved",
        "x-beenthere",  # Mailman: the list address
        "x-complaints-to",
    }
)
ENVELOPE_PARTS = frozenset({"from", "to", "auth", "orig_to"})
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")  # RFC 5322 §3.6.8 ftext
_SCRIPT_NAME_BAD = re.compile("[\x00-\x1f\x7f\x80-\x9f\u2028\u2029/]")
MAX_SCRIPT_NAME = 256


def sanitize(text: str, limit: int = 80) -> str:
    """Text for an error message: at most ``limit`` characters (Pigeonhole's str_sanitize)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check(ch: Checker, cmd: Cmd) -> Cmd | None:
    """Run the checks that apply to ``cmd``; the command with its resolved comparator and
    match type, or None when in error."""
    spec = ch.specs[cmd.name]
    if any(t.group == "match-type" for t in spec.tags):
        resolved = _match(ch, cmd)
        if resolved is None:
            return None
        cmd = dataclasses.replace(cmd, comparator=resolved[0], match=resolved[1])
    fn = _CHECKS.get(cmd.name)
    if fn is None:
        return cmd
    before = len(ch.errors)
    fn(ch, cmd)
    return cmd if len(ch.errors) == before else None


def _list_match(ch: Checker, cmd: Cmd) -> tuple[Comparator, MatchType] | None:
    ok = True
    if "comparator" in cmd.tags:
        # RFC 6134 §2.2: "Comparators are not allowed together with the :list match type"
        ch.error(cmd.line, f"the :list match type of the {cmd.name} test allows no comparator")
        ok = False
    keys = cmd.args[-1]
    assert isinstance(keys, tuple)
    for key in keys:
        text = key.constant
        if text is not None and normalize_list_name(text) is None:
            # RFC 6134 §2.5-§2.6: an absolute URI; addrbook URNs without extensions
            ch.error(cmd.line, f"invalid external list name '{sanitize(text)}' for :list match")
            ok = False
    return (DEFAULT, MatchType("list")) if ok else None


def _match(ch: Checker, cmd: Cmd) -> tuple[Comparator, MatchType] | None:
    if "list" in cmd.tags:
        return _list_match(ch, cmd)
    comparator = DEFAULT
    template = cmd.tag_string("comparator")
    if template is not None:
        name = template.constant
        if name is None:
            ch.error(
                cmd.line,
                "this Sieve implementation currently only supports a literal string argument "
                "for the :comparator tag",
            )
            return None
        found = COMPARATORS.get(name.lower())
        capability = CAPABILITY.get(name.lower())
        # RFC 5228 §2.7.3: comparators other than the two defaults must be required
        if found is None or (capability is not None and capability not in ch.required):
            ch.error(cmd.line, f"unknown comparator '{name}'")
            return None
        comparator = found
    match = MatchType("is")
    for kind_name in ("is", "contains", "matches", "regex", "value", "count"):
        if kind_name in cmd.tags:
            relation = ""
            if kind_name in ("value", "count"):
                rel = cmd.tag_string(kind_name)
                text = rel.constant if rel is not None else None
                if text is None or text.lower() not in RELATIONS:
                    ch.error(
                        cmd.line,
                        f"the :{kind_name} match-type requires a constant string argument "
                        'being one of "gt", "ge", "lt", "le", "eq" or "ne", but '
                        + (f'"{text}"' if text is not None else "none")
                        + " was found",
                    )
                    return None
                relation = text.lower()
            match = MatchType(kind_name, relation)
    if match.kind in ("contains", "matches", "regex") and not comparator.substring:
        ch.error(
            cmd.line,
            f"the specified {comparator.name} comparator does not support sub-string matching "
            f"as required by the :{match.kind} match type",
        )
        return None
    if match.kind == "regex":
        if comparator.name not in ("i;octet", "i;ascii-casemap"):
            ch.error(
                cmd.line, "regex match type only supports i;octet and i;ascii-casemap comparators"
            )
            return None
        keys = cmd.args[-1]
        ok = True
        if isinstance(keys, tuple):
            for key in keys:
                if key.constant is None:
                    continue
                try:
                    compile_regex(key.constant, comparator)
                except RegexError as exc:
                    ch.error(
                        cmd.line,
                        f"invalid regular expression '{key.constant}' for regex match: {exc}",
                    )
                    ok = False
        if not ok:
            return None
    return comparator, match


def _address(ch: Checker, cmd: Cmd) -> None:
    for name in cmd.strings(0):
        text = name.constant
        if text is not None and text.lower() not in ADDRESS_HEADERS:
            ch.error(cmd.line, f"specified header '{text}' is not allowed for the address test")
    _index(ch, cmd, kind="test")
    _mime(ch, cmd)


def _envelope(ch: Checker, cmd: Cmd) -> None:
    for part in cmd.strings(0):
        text = part.constant
        if text is not None and text.lower() not in ENVELOPE_PARTS:
            ch.error(
                cmd.line, f"specified envelope part '{text}' is not supported by the envelope test"
            )


def _header(ch: Checker, cmd: Cmd) -> None:
    _index(ch, cmd, kind="test")
    _mime(ch, cmd)


def _exists(ch: Checker, cmd: Cmd) -> None:
    _mime(ch, cmd)


def _index(ch: Checker, cmd: Cmd, *, kind: str) -> None:
    index = cmd.tag_number("index")
    if "last" in cmd.tags and index is None:
        ch.error(
            cmd.line,
            f"the :last tag for the {cmd.name} {kind} cannot be specified without the :index tag",
        )
    if index == 0:
        ch.error(cmd.line, f"the :index tag for the {cmd.name} {kind} cannot be zero")


def _mime(ch: Checker, cmd: Cmd) -> None:
    if "mime" in cmd.tags:
        return
    for tag in ("anychild", "type", "subtype", "contenttype", "param"):
        if tag in cmd.tags:
            ch.error(
                cmd.line,
                f"the :{tag} tag for the {cmd.name} test cannot be specified without the :mime tag",
            )


def _size(ch: Checker, cmd: Cmd) -> None:
    if "over" not in cmd.tags and "under" not in cmd.tags:
        ch.error(
            cmd.line, "the size test requires either the :under or the :over tag to be specified"
        )


def _mailbox_name(ch: Checker, cmd: Cmd, *, template: Template, what: str) -> None:
    text = template.constant
    if text is not None and has_bad_utf8(text):
        ch.error(cmd.line, f"{what}: invalid folder name `{shown(text)}' specified: invalid utf-8")


def _fileinto(ch: Checker, cmd: Cmd) -> None:
    _mailbox_name(ch, cmd, template=cmd.string(0), what="fileinto command")
    use = cmd.tag_string("specialuse")
    if use is not None and use.constant is not None and not _special_use_ok(use.constant):
        ch.error(
            cmd.line,
            f"fileinto command: invalid special-use flag `{shown(use.constant)}' specified",
        )


def _special_use_ok(flag: str) -> bool:
    # RFC 8579 §3 / RFC 6154 §2: a special-use attribute is "\" atom
    return bool(re.fullmatch(r"\\[A-Za-z0-9!#$&'+\-.^_`|~]+", flag))


def _redirect(ch: Checker, cmd: Cmd) -> None:
    text = cmd.string(0).constant
    if text is None:
        return
    if "list" in cmd.tags:
        if normalize_list_name(text) is None:  # RFC 6134 §2.3, §2.5
            ch.error(cmd.line, f"redirect :list: invalid external list name '{sanitize(text)}'")
        return
    address, reason = parse_mailbox(text)
    if address is None:
        ch.error(cmd.line, f"specified redirect address '{text}' is invalid: {reason}")


def _vacation(ch: Checker, cmd: Cmd) -> None:
    sender = cmd.tag_string("from")
    if sender is not None and sender.constant is not None:
        address, reason = parse_mailbox(sender.constant)
        if address is None:
            ch.error(
                cmd.line,
                f"specified :from address '{sender.constant}' is invalid for vacation action: "
                f"{reason}",
            )


def variable_target(ch: Checker, cmd: Cmd, template: Template) -> Ref | None:
    """A variable name argument (set, extracttext, setflag ...) resolved to its reference."""
    text = template.constant
    if text is None:
        ch.error(cmd.line, f"invalid variable name '{_shown_template(template)}'")
        return None
    split = parse_name(text)
    if split is None or (len(text) > 64 and not split[0]):
        ch.error(cmd.line, f"invalid variable name '{sanitize(text)}'")
        return None
    namespace, name = split
    if not namespace and name.isdigit():
        ch.error(cmd.line, "cannot assign to match variable")
        return None
    return ch.resolve(Ref(namespace, name.lower()), cmd.line, assign=True)


def _shown_template(template: Template) -> str:
    out = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
        elif part.index is not None:
            out.append("${" + str(part.index) + "}")
        else:
            out.append("${" + ".".join((*part.namespace, part.name)) + "}")
    return "".join(out)


def _set(ch: Checker, cmd: Cmd) -> None:
    target = variable_target(ch, cmd, cmd.string(0))
    if target is not None:
        cmd.extra["target"] = target


def _extracttext(ch: Checker, cmd: Cmd) -> None:
    if not ch.loops:
        ch.error(cmd.line, "the extracttext command is not placed inside a foreverypart loop")
        return
    target = variable_target(ch, cmd, cmd.string(0))
    if target is not None:
        cmd.extra["target"] = target


def _flags(ch: Checker, cmd: Cmd) -> None:
    var = cmd.args[0]
    if isinstance(var, Template):
        target = variable_target(ch, cmd, var)
        if target is not None:
            cmd.extra["target"] = target


def _hasflag(ch: Checker, cmd: Cmd) -> None:
    names = cmd.args[0]
    if isinstance(names, tuple):
        targets = []
        for name in names:
            target = variable_target(ch, cmd, name)
            if target is not None:
                targets.append(target)
        cmd.extra["targets"] = tuple(targets)


def _global(ch: Checker, cmd: Cmd) -> None:
    if "variables" not in ch.required:
        ch.error(cmd.line, "global command requires that variables extension is active")
        return
    for item in cmd.strings(0):
        text = item.constant or ""
        split = parse_name(text)
        if split is None or split[0] or text.isdigit():
            ch.error(cmd.line, f"invalid variable name '{sanitize(text)}'")
            continue
        name = split[1].lower()
        if name in ch.locals and name not in ch.globals:
            ch.error(
                cmd.line,
                f"declaration of new global variable '{name}' conflicts with earlier local use",
            )
            continue
        ch.globals.add(name)


def script_name_ok(name: str) -> bool:
    """RFC 5804 §1.6 script names: no control characters, no line separators; no "/" here
    (RFC 6609 §3.2: the name is not a path)."""
    return 0 < len(name) <= MAX_SCRIPT_NAME and not _SCRIPT_NAME_BAD.search(name)


def _include(ch: Checker, cmd: Cmd) -> None:
    value = cmd.string(0)
    name = value.constant
    if name is None:
        ch.error(cmd.line, "the include command requires a constant string for its value argument")
        return
    if not script_name_ok(name):
        ch.error(cmd.line, f"include: invalid script name '{shown(name)}'")
        return
    location = "global" if "global" in cmd.tags else "personal"
    key = ch.include(
        location, name, line=cmd.line, once="once" in cmd.tags, optional="optional" in cmd.tags
    )
    if key is not None:
        cmd.extra["script"] = key


def _foreverypart(ch: Checker, cmd: Cmd) -> None:
    if len(ch.loops) >= ch.library.settings.max_foreverypart_depth:
        ch.error(
            cmd.line,
            "the nested foreverypart loop exceeds the nesting limit "
            f"(<= {ch.library.settings.max_foreverypart_depth} levels)",
        )


def _break(ch: Checker, cmd: Cmd) -> None:
    name = cmd.tag_string("name")
    if name is None:
        if not ch.loops:
            ch.error(cmd.line, "the break command is not placed inside a foreverypart loop")
        return
    text = name.constant or ""
    if text not in ch.loops:
        ch.error(
            cmd.line, f"the break command is not placed inside a foreverypart loop named `{text}'"
        )
        return
    # RFC 5703 §3.2: break :name leaves the innermost loop of that name
    cmd.extra["depth"] = len(ch.loops) - 1 - ch.loops[::-1].index(text)


def _duplicate(ch: Checker, cmd: Cmd) -> None:
    header = cmd.tag_string("header")
    text = header.constant if header is not None else None
    if text is not None and not _FIELD_NAME.match(text):
        ch.error(cmd.line, f"duplicate test: invalid header name `{text}'")


def _notify(ch: Checker, cmd: Cmd) -> None:
    if not ch.library.settings.notify_allowed:
        ch.error(cmd.line, "notify action: local policy prohibits the use of a notify action")
    for message in enotify.check_notify(cmd):
        ch.error(cmd.line, message)


def _addheader(ch: Checker, cmd: Cmd) -> None:
    name = cmd.string(0).constant
    if name is not None and not _FIELD_NAME.match(name):
        ch.error(cmd.line, f"addheader command: specified field name `{sanitize(name)}' is invalid")
    value = cmd.string(1).constant
    if value is not None and not _field_value_ok(value):
        ch.error(cmd.line, f"addheader command: specified value `{sanitize(value)}' is invalid")
    elif value is not None and len(value.encode("utf-8")) > ch.library.settings.max_header_size:
        # RFC 5293 §4: "a length limit set by the implementation"
        ch.error(
            cmd.line,
            "addheader command: specified header value exceeds the size limit of "
            f"{ch.library.settings.max_header_size} bytes",
        )


def _field_value_ok(value: str) -> bool:
    # RFC 5293 §4: a value that is not RFC 5322 unstructured text is flagged or encoded:
    # line breaks (CRLF) are encoded as folding white space; other controls are flagged
    return re.search(r"\r(?!\n)|(?<!\r)\n|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", value) is None


def _deleteheader(ch: Checker, cmd: Cmd) -> None:
    if "last" in cmd.tags and "index" not in cmd.tags:
        _index(ch, cmd, kind="command")  # RFC 5293 §5: checked before the field name
        return
    name = cmd.string(0).constant
    if name is not None and not _FIELD_NAME.match(name):
        ch.error(
            cmd.line, f"deleteheader command: specified field name `{sanitize(name)}' is invalid"
        )
    _index(ch, cmd, kind="command")


def _specialuse_exists(ch: Checker, cmd: Cmd) -> None:
    flags = cmd.args[1]
    assert isinstance(flags, tuple)
    for flag in flags:
        if flag.constant is not None and not _special_use_ok(flag.constant):
            ch.error(
                cmd.line,
                f"specialuse_exists test: invalid special-use flag `{shown(flag.constant)}' "
                "specified",
            )


def _mailboxexists(ch: Checker, cmd: Cmd) -> None:
    del ch, cmd  # invalid UTF-8 names only make the test false (Pigeonhole warns)


def _date(ch: Checker, cmd: Cmd) -> None:
    _index(ch, cmd, kind="test")


def _replace(ch: Checker, cmd: Cmd) -> None:
    if "mime" in cmd.tags and ("subject" in cmd.tags or "from" in cmd.tags):
        # RFC 5703 §5: ":subject"/":from" with ":mime" "SHOULD be flagged as a compilation error"
        ch.error(cmd.line, "the replace command allows no :subject or :from with :mime")
        return
    sender = cmd.tag_string("from")
    text = sender.constant if sender is not None else None
    if text is not None and not mailbox_list_ok(text):
        # RFC 5703 §5: "SHOULD check the syntax and generate an error"
        ch.error(cmd.line, f"replace command: invalid :from mailbox-list '{sanitize(text)}'")


def mailbox_list_ok(text: str) -> bool:
    """RFC 5322 §3.4 mailbox-list: at least one mailbox, each with a usable address."""
    items = parse_address_list(text)
    if not items or any(isinstance(item, Group) for item in items):
        return False
    return all(
        item.address and "@" in item.address for item in items if not isinstance(item, Group)
    )


_CHECKS: dict[str, Callable[[Checker, Cmd], None]] = {
    "address": _address,
    "envelope": _envelope,
    "header": _header,
    "exists": _exists,
    "size": _size,
    "fileinto": _fileinto,
    "redirect": _redirect,
    "vacation": _vacation,
    "set": _set,
    "extracttext": _extracttext,
    "setflag": _flags,
    "addflag": _flags,
    "removeflag": _flags,
    "hasflag": _hasflag,
    "global": _global,
    "include": _include,
    "foreverypart": _foreverypart,
    "break": _break,
    "duplicate": _duplicate,
    "notify": _notify,
    "addheader": _addheader,
    "deleteheader": _deleteheader,
    "mailboxexists": _mailboxexists,
    "specialuse_exists": _specialuse_exists,
    "date": _date,
    "replace": _replace,
}
_CHECKS.update(ext_report.CHECKS)  # vnd.dovecot.report
_CHECKS.update(ext_extprograms.CHECKS)  # vnd.dovecot.pipe/filter/execute
