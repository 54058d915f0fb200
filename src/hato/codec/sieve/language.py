"""The Sieve language table: every command and test, its arguments, tags and extension.

One data table drives validation (``validate``) and documents what Hato's Sieve accepts:
RFC 5228 (core), 5229 (variables), 5230/6131 (vacation, vacation-seconds), 5231
(relational), 5232 (imap4flags), 5173 (body), 5183 (environment), 5233 (subaddress), 5235
(spamtest, spamtestplus, virustest), 5260 (date, index), 5293 (editheader), 5429 (reject,
ereject), 5435/5436 (enotify, mailto), 5463 (ihave), 5490 (mailbox, mboxmetadata,
servermetadata), 5703 (mime, foreverypart, extracttext, replace, enclose), 6134 (extlists),
6609 (include), 7352 (duplicate), 8579 (special-use), 3894 (copy), draft-ietf-sieve-regex
(regex), RFC 5228 §2.4.2.4 (encoded-character), and Pigeonhole's vendor extensions
vnd.dovecot.report, vnd.dovecot.pipe/filter/execute and vnd.dovecot.debug (not in
``ALL_EXTENSIONS``: the host offers them, see ``DOVECOT_EXTENSIONS``).
Leaves out: notify methods other than mailto.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from hato.codec.sieve.comparators import Comparator
from hato.codec.sieve.matchtypes import MatchType
from hato.codec.sieve.strings import Template


class ArgKind(enum.Enum):
    """What an argument position or a tag parameter takes (with the words errors use)."""

    STRING = "a string"
    STRING_LIST = "a string list"
    NUMBER = "a number"


@dataclass(frozen=True, slots=True)
class Param:
    """A positional argument: its kind, its name in errors, and whether it may be left out."""

    kind: ArgKind
    label: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class TagDef:
    """A tagged argument: its parameter (if any), its exclusive group and its extension."""

    name: str
    param: ArgKind | None = None
    group: str | None = None
    extension: str | None = None


@dataclass(frozen=True, slots=True)
class Spec:
    """A command (``test`` False) or test: positional parameters, tags, block and sub-tests
    (``subtests``: "none", "one" or "list")."""

    name: str
    test: bool
    extension: str | None = None
    positional: tuple[Param, ...] = ()
    tags: tuple[TagDef, ...] = ()
    block: bool = False
    subtests: str = "none"
    both: bool = False  # usable as a command and as a test (host extensions)


# The value of a validated argument: a number, a flag tag (True), a string or a string list.
Value = int | bool | Template | tuple[Template, ...]


@dataclass(frozen=True, slots=True)
class Cmd:
    """A validated command or test, ready to run."""

    name: str
    line: int
    tags: dict[str, Value]
    args: tuple[Value | None, ...]
    tests: tuple[Cmd, ...] = ()
    block: tuple[Cmd, ...] | None = None
    comparator: Comparator | None = None
    match: MatchType | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def string(self, index: int) -> Template:
        value = self.args[index]
        assert isinstance(value, Template)
        return value

    def strings(self, index: int) -> tuple[Template, ...]:
        value = self.args[index]
        assert isinstance(value, tuple)
        return value

    def number(self, index: int) -> int:
        value = self.args[index]
        assert isinstance(value, int)
        return value

    def has(self, tag: str) -> bool:
        return tag in self.tags

    def tag_string(self, tag: str) -> Template | None:
        value = self.tags.get(tag)
        return value if isinstance(value, Template) else None

    def tag_strings(self, tag: str) -> tuple[Template, ...] | None:
        value = self.tags.get(tag)
        return value if isinstance(value, tuple) else None

    def tag_number(self, tag: str) -> int | None:
        value = self.tags.get(tag)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


S = ArgKind.STRING
SL = ArgKind.STRING_LIST
N = ArgKind.NUMBER

MATCH_TAGS = (
    TagDef("is", group="match-type"),
    TagDef("contains", group="match-type"),
    TagDef("matches", group="match-type"),
    TagDef("regex", group="match-type", extension="regex"),
    TagDef("value", S, group="match-type", extension="relational"),
    TagDef("count", S, group="match-type", extension="relational"),
    TagDef("comparator", S, group="comparator"),
)
ADDRESS_PART_TAGS = (
    TagDef("all", group="address-part"),
    TagDef("localpart", group="address-part"),
    TagDef("domain", group="address-part"),
    TagDef("user", group="address-part", extension="subaddress"),
    TagDef("detail", group="address-part", extension="subaddress"),
)
INDEX_TAGS = (TagDef("index", N, extension="index"), TagDef("last", extension="index"))
MIME_ANY_TAGS = (TagDef("mime", extension="mime"), TagDef("anychild", extension="mime"))
MIME_OPTION_TAGS = (
    TagDef("type", group="mime-option", extension="mime"),
    TagDef("subtype", group="mime-option", extension="mime"),
    TagDef("contenttype", group="mime-option", extension="mime"),
    TagDef("param", SL, group="mime-option", extension="mime"),
)
# RFC 6134 §2.2: the :list match type, for the tests that support it
LIST_TAG = (TagDef("list", group="match-type", extension="extlists"),)
MODIFIER_TAGS = (
    TagDef("lower", group="modifier-40"),
    TagDef("upper", group="modifier-40"),
    TagDef("lowerfirst", group="modifier-30"),
    TagDef("upperfirst", group="modifier-30"),
    TagDef("quotewildcard", group="modifier-20"),
    TagDef("quoteregex", group="modifier-20", extension="regex"),
    TagDef("encodeurl", group="modifier-15", extension="enotify"),
    TagDef("length", group="modifier-10"),
)
# RFC 5229 §4.1: modifier precedence, higher applied first
MODIFIER_PRECEDENCE = {
    "lower": 40,
    "upper": 40,
    "lowerfirst": 30,
    "upperfirst": 30,
    "quotewildcard": 20,
    "quoteregex": 20,
    "encodeurl": 15,
    "length": 10,
}

SPECS: tuple[Spec, ...] = (
    # RFC 5228 core
    Spec("require", False, positional=(Param(SL, "capabilities"),)),
    Spec("if", False, block=True, subtests="one"),
    Spec("elsif", False, block=True, subtests="one"),
    Spec("else", False, block=True),
    Spec("stop", False),
    Spec("keep", False, tags=(TagDef("flags", SL, extension="imap4flags"),)),
    Spec("discard", False),
    Spec(
        "redirect",
        False,
        positional=(Param(S, "address"),),
        tags=(TagDef("copy", extension="copy"), TagDef("list", extension="extlists")),
    ),
    Spec(
        "fileinto",
        False,
        "fileinto",
        positional=(Param(S, "folder"),),
        tags=(
            TagDef("copy", extension="copy"),
            TagDef("flags", SL, extension="imap4flags"),
            TagDef("create", extension="mailbox"),
            TagDef("specialuse", S, extension="special-use"),
        ),
    ),
    Spec(
        "address",
        True,
        positional=(Param(SL, "header list"), Param(SL, "key list")),
        tags=MATCH_TAGS + LIST_TAG + ADDRESS_PART_TAGS + INDEX_TAGS + MIME_ANY_TAGS,
    ),
    Spec(
        "envelope",
        True,
        "envelope",
        positional=(Param(SL, "envelope part"), Param(SL, "key list")),
        tags=MATCH_TAGS + LIST_TAG + ADDRESS_PART_TAGS,
    ),
    Spec(
        "header",
        True,
        positional=(Param(SL, "header names"), Param(SL, "key list")),
        tags=MATCH_TAGS + LIST_TAG + INDEX_TAGS + MIME_ANY_TAGS + MIME_OPTION_TAGS,
    ),
    Spec("exists", True, positional=(Param(SL, "header names"),), tags=MIME_ANY_TAGS),
    Spec(
        "size",
        True,
        positional=(Param(N, "limit"),),
        tags=(TagDef("over", group="size"), TagDef("under", group="size")),
    ),
    Spec("true", True),
    Spec("false", True),
    Spec("not", True, subtests="one"),
    Spec("anyof", True, subtests="list"),
    Spec("allof", True, subtests="list"),
    # RFC 5429
    Spec("reject", False, "reject", positional=(Param(S, "reason"),)),
    Spec("ereject", False, "ereject", positional=(Param(S, "reason"),)),
    # RFC 5229
    Spec(
        "set",
        False,
        "variables",
        positional=(Param(S, "name"), Param(S, "value")),
        tags=MODIFIER_TAGS,
    ),
    Spec(
        "string",
        True,
        "variables",
        positional=(Param(SL, "source"), Param(SL, "key list")),
        tags=MATCH_TAGS + LIST_TAG,
    ),
    # RFC 5230, RFC 6131
    Spec(
        "vacation",
        False,
        "vacation",
        positional=(Param(S, "reason"),),
        tags=(
            TagDef("days", N, group="period"),
            TagDef("seconds", N, group="period", extension="vacation-seconds"),
            TagDef("subject", S),
            TagDef("from", S),
            TagDef("addresses", SL),
            TagDef("mime"),
            TagDef("handle", S),
        ),
    ),
    # RFC 5232
    *(
        Spec(
            name,
            False,
            "imap4flags",
            positional=(Param(S, "variable name", optional=True), Param(SL, "list of flags")),
        )
        for name in ("setflag", "addflag", "removeflag")
    ),
    Spec(
        "hasflag",
        True,
        "imap4flags",
        positional=(Param(SL, "variable list", optional=True), Param(SL, "list of flags")),
        tags=MATCH_TAGS,
    ),
    # RFC 5173
    Spec(
        "body",
        True,
        "body",
        positional=(Param(SL, "key list"),),
        tags=(
            *MATCH_TAGS,
            TagDef("raw", group="body-transform"),
            TagDef("content", SL, group="body-transform"),
            TagDef("text", group="body-transform"),
        ),
    ),
    # RFC 5260
    Spec(
        "date",
        True,
        "date",
        positional=(Param(S, "header name"), Param(S, "date part"), Param(SL, "key list")),
        tags=MATCH_TAGS
        + INDEX_TAGS
        + (TagDef("zone", S, group="zone"), TagDef("originalzone", group="zone")),
    ),
    Spec(
        "currentdate",
        True,
        "date",
        positional=(Param(S, "date part"), Param(SL, "key list")),
        tags=(*MATCH_TAGS, TagDef("zone", S, group="zone")),
    ),
    # RFC 5490
    Spec("mailboxexists", True, "mailbox", positional=(Param(SL, "mailbox-names"),)),
    Spec(
        "metadata",
        True,
        "mboxmetadata",
        positional=(Param(S, "mailbox"), Param(S, "annotation-name"), Param(SL, "key-list")),
        tags=MATCH_TAGS,
    ),
    Spec(
        "metadataexists",
        True,
        "mboxmetadata",
        positional=(Param(S, "mailbox"), Param(SL, "annotation-names")),
    ),
    Spec(
        "servermetadata",
        True,
        "servermetadata",
        positional=(Param(S, "annotation-name"), Param(SL, "key-list")),
        tags=MATCH_TAGS,
    ),
    Spec(
        "servermetadataexists",
        True,
        "servermetadata",
        positional=(Param(SL, "annotation-names"),),
    ),
    # RFC 6134
    Spec("valid_ext_list", True, "extlists", positional=(Param(SL, "ext-list-names"),)),
    # RFC 6609
    Spec(
        "include",
        False,
        "include",
        positional=(Param(S, "value"),),
        tags=(
            TagDef("personal", group="location"),
            TagDef("global", group="location"),
            TagDef("once"),
            TagDef("optional"),
        ),
    ),
    Spec("return", False, "include"),
    Spec("global", False, "include", positional=(Param(SL, "value"),)),
    # RFC 5293
    Spec(
        "addheader",
        False,
        "editheader",
        positional=(Param(S, "field name"), Param(S, "value")),
        tags=(TagDef("last"),),
    ),
    Spec(
        "deleteheader",
        False,
        "editheader",
        positional=(Param(S, "field name"), Param(SL, "value patterns", optional=True)),
        tags=(*MATCH_TAGS, TagDef("index", N), TagDef("last")),
    ),
    # RFC 7352
    Spec(
        "duplicate",
        True,
        "duplicate",
        tags=(
            TagDef("handle", S),
            TagDef("header", S, group="id"),
            TagDef("uniqueid", S, group="id"),
            TagDef("seconds", N),
            TagDef("last"),
        ),
    ),
    # RFC 5435
    Spec(
        "notify",
        False,
        "enotify",
        positional=(Param(S, "method"),),
        tags=(
            TagDef("from", S),
            TagDef("importance", S),
            TagDef("options", SL),
            TagDef("message", S),
        ),
    ),
    Spec("valid_notify_method", True, "enotify", positional=(Param(SL, "notification-uris"),)),
    Spec(
        "notify_method_capability",
        True,
        "enotify",
        positional=(
            Param(S, "notification-uri"),
            Param(S, "notification-capability"),
            Param(SL, "key-list"),
        ),
        tags=MATCH_TAGS,
    ),
    # RFC 5183
    Spec(
        "environment",
        True,
        "environment",
        positional=(Param(S, "name"), Param(SL, "key-list")),
        tags=MATCH_TAGS,
    ),
    # RFC 5235
    Spec(
        "spamtest",
        True,
        "spamtest",
        positional=(Param(S, "value"),),
        tags=(*MATCH_TAGS, TagDef("percent", extension="spamtestplus")),
    ),
    Spec("virustest", True, "virustest", positional=(Param(S, "value"),), tags=MATCH_TAGS),
    # RFC 8579
    Spec(
        "specialuse_exists",
        True,
        "special-use",
        positional=(Param(S, "mailbox", optional=True), Param(SL, "special-use-flags")),
    ),
    # RFC 5703
    Spec("foreverypart", False, "foreverypart", tags=(TagDef("name", S),), block=True),
    Spec("break", False, "foreverypart", tags=(TagDef("name", S),)),
    Spec(
        "replace",
        False,
        "replace",
        positional=(Param(S, "replacement"),),
        tags=(TagDef("mime"), TagDef("subject", S), TagDef("from", S)),
    ),
    Spec(
        "enclose",
        False,
        "enclose",
        positional=(Param(S, "reason"),),
        tags=(TagDef("subject", S), TagDef("headers", SL)),
    ),
    Spec(
        "extracttext",
        False,
        "extracttext",
        positional=(Param(S, "varname"),),
        tags=(*MODIFIER_TAGS, TagDef("first", N)),
    ),
    # RFC 5463
    Spec("ihave", True, "ihave", positional=(Param(SL, "capabilities"),)),
    Spec("error", False, "ihave", positional=(Param(S, "message"),)),
    # vnd.dovecot.report (Pigeonhole spec-bosch-sieve-report §3)
    Spec(
        "report",
        False,
        "vnd.dovecot.report",
        positional=(Param(S, "feedback-type"), Param(S, "message"), Param(S, "address")),
        tags=(TagDef("headers_only"),),
    ),
    # vnd.dovecot.pipe/filter/execute (Pigeonhole spec-bosch-sieve-extprograms §5-§8)
    Spec(
        "pipe",
        False,
        "vnd.dovecot.pipe",
        positional=(Param(S, "program-name"), Param(SL, "arguments", optional=True)),
        tags=(TagDef("try"), TagDef("copy", extension="copy")),
    ),
    Spec(
        "filter",
        False,
        "vnd.dovecot.filter",
        positional=(Param(S, "program-name"), Param(SL, "arguments", optional=True)),
        both=True,
    ),
    Spec(
        "execute",
        False,
        "vnd.dovecot.execute",
        positional=(Param(S, "program-name"), Param(SL, "arguments", optional=True)),
        tags=(
            TagDef("input", S, group="input"),
            TagDef("pipe", group="input"),
            TagDef("output", S),
        ),
        both=True,
    ),
    # vnd.dovecot.debug
    Spec("debug_log", False, "vnd.dovecot.debug", positional=(Param(S, "message"),)),
)

# every capability Hato's interpreter implements (RFC 5228 §3.2 "require")
ALL_EXTENSIONS: frozenset[str] = frozenset(
    {
        "fileinto",
        "reject",
        "ereject",
        "envelope",
        "encoded-character",
        "imap4flags",
        "body",
        "variables",
        "vacation",
        "vacation-seconds",
        "relational",
        "comparator-i;octet",
        "comparator-i;ascii-casemap",
        "comparator-i;ascii-numeric",
        "comparator-i;unicode-casemap",
        "subaddress",
        "copy",
        "date",
        "index",
        "mailbox",
        "mboxmetadata",
        "servermetadata",
        "extlists",
        "include",
        "editheader",
        "regex",
        "duplicate",
        "enotify",
        "environment",
        "spamtest",
        "spamtestplus",
        "virustest",
        "special-use",
        "mime",
        "foreverypart",
        "extracttext",
        "replace",
        "enclose",
        "ihave",
    }
)

# Pigeonhole's vendor extensions: implemented, offered only when the host says so (the
# programs need an administrator's directory; report sends mail; debug writes to the log)
PROGRAM_EXTENSIONS: frozenset[str] = frozenset(
    {"vnd.dovecot.pipe", "vnd.dovecot.filter", "vnd.dovecot.execute"}
)
DOVECOT_EXTENSIONS: frozenset[str] = PROGRAM_EXTENSIONS | {
    "vnd.dovecot.report",
    "vnd.dovecot.debug",
}

# extensions that bring another with them (RFC 6131 §2, RFC 5235 §3.2)
IMPLIES: dict[str, tuple[str, ...]] = {
    "vacation-seconds": ("vacation",),
    "spamtestplus": ("spamtest",),
}

# core commands that are always available: requiring them is an error (Pigeonhole's reading)
ALWAYS_AVAILABLE = frozenset({"keep", "discard", "redirect", "stop"})


@dataclass(frozen=True)
class Extension:
    """A host-defined extension (e.g. a test harness): its specs, the code that runs its
    commands and tests, and the variable namespaces it answers (``${name.x}``)."""

    name: str
    specs: tuple[Spec, ...]
    commands: dict[str, Callable[..., None]] = field(default_factory=dict)
    tests: dict[str, Callable[..., bool]] = field(default_factory=dict)
    namespaces: dict[str, Callable[..., str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Script:
    """A compiled script: its commands, the capabilities it required, the scripts it includes
    (compiled with it, keyed by (location, name)) and any host extensions it was compiled with.
    """

    commands: tuple[Cmd, ...]
    required: frozenset[str]
    includes: dict[tuple[str, str], Script] = field(default_factory=dict)
    custom: tuple[Extension, ...] = ()
    name: str = ""
