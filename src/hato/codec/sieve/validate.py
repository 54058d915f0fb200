"""Sieve validation: syntax tree in, checked commands out, every error with its line.

Implements RFC 5228 §3.2 (require first, at top level; unknown capabilities are errors),
§2.6 and §8.2 argument rules (tagged arguments before positional ones, exclusive groups such
as match type and address part, argument counts and kinds), §2.10.5 (compile errors reported
before anything runs), §3.1 (else/elsif only after if/elsif), the extension dependencies of
RFC 5703 §7 (extracttext needs variables and foreverypart) and RFC 6609 §3.4 (global needs
variables), and variable reference checking (RFC 5229 §3, namespaces). Error wording follows
Pigeonhole's so one test suite checks both. Command-specific checks live in ``checks``.
Leaves out: warnings (nothing is reported unless it is an error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hato.codec.sieve import checks
from hato.codec.sieve.language import (
    ALWAYS_AVAILABLE,
    IMPLIES,
    SPECS,
    ArgKind,
    Cmd,
    Extension,
    Param,
    Spec,
    TagDef,
    Value,
)
from hato.codec.sieve.parser import Argument, Node, Number, StringList, Tag, parse
from hato.codec.sieve.strings import (
    MAX_MATCH_INDEX,
    Ref,
    Template,
    decode_encoded,
    parse_template,
)

MAX_VARIABLES = 255  # Pigeonhole's limit on variables per scope
_GROUP_NAMES = {
    "address-part": "ADDRESS-PART",
    "match-type": "MATCH-TYPE",
    "comparator": "COMPARATOR",
}


@dataclass
class Settings:
    """Compile-time settings (the include limits of RFC 6609 §3, Pigeonhole's defaults)."""

    max_include_depth: int = 10
    max_includes: int = 255
    max_foreverypart_depth: int = 4  # RFC 5703 §3 leaves the limit to the implementation
    notify_allowed: bool = True  # local policy may forbid notify (max_notifications 0)
    max_header_size: int = 2048  # editheader values (RFC 5293 §4 length limit)


@dataclass
class Library:
    """The scripts compiled for one top-level script: itself and what it includes."""

    loader: Callable[[str, str], str | None] | None
    settings: Settings
    scripts: dict[tuple[str, str], tuple[tuple[Cmd, ...], frozenset[str]]] = field(
        default_factory=dict
    )
    stack: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0


class Checker:
    """Validates one script (a top-level script or an included one)."""

    def __init__(
        self,
        *,
        allowed: frozenset[str],
        custom: tuple[Extension, ...],
        library: Library,
        errors: list[tuple[int, str]],
        script_name: str,
    ) -> None:
        self.allowed = allowed
        self.custom = custom
        self.library = library
        self.errors = errors
        self.script_name = script_name
        self.required: set[str] = set()
        self.specs: dict[str, Spec] = {s.name: s for s in SPECS}
        for ext in custom:
            self.specs.update({s.name: s for s in ext.specs})
        self.custom_names = {ext.name for ext in custom}
        self.reported: set[tuple[str, ...]] = set()
        self.globals: set[str] = set()
        self.locals: set[str] = set()
        self.loops: list[str | None] = []
        self.ok = True

    # -- errors -------------------------------------------------------------------------

    def error(self, line: int, message: str) -> None:
        self.errors.append((line, message))
        self.ok = False

    def known(self, capability: str) -> bool:
        return capability in self.allowed or capability in self.custom_names

    def enabled(self, extension: str | None) -> bool:
        return extension is None or extension in self.required

    # -- top level ----------------------------------------------------------------------

    def script(self, nodes: tuple[Node, ...]) -> tuple[Cmd, ...]:
        index = 0
        while index < len(nodes) and nodes[index].name == "require":
            self.require(nodes[index])
            index += 1
        for ext in ("extracttext",):
            if ext in self.required:
                line = next((n.line for n in nodes if n.name == "require"), 0)
                # RFC 5703 §7: extracttext depends on variables and foreverypart
                if "foreverypart" not in self.required:
                    self.error(
                        line, "extracttext extension cannot be used without foreverypart extension"
                    )
                if "variables" not in self.required:
                    self.error(
                        line, "extracttext extension cannot be used without variables extension"
                    )
        return self.block(nodes[index:], top=True)

    def require(self, node: Node) -> None:
        spec = self.specs["require"]
        if node.args and isinstance(node.args[0], Number) and len(node.args) == 1:
            self.error(
                node.line,
                "the require command accepts a single string or string list argument, "
                "but a number was found",
            )
            return
        bound = self.bind(node, spec, kind="command")
        ok = bound is not None
        ok = self.check_shape(node, spec, kind="command") and ok
        if not ok or bound is None:
            return
        items = bound[1][0]
        assert isinstance(items, tuple)
        for item in items:
            name = item.constant or ""
            if name in ALWAYS_AVAILABLE:
                self.error(
                    node.line,
                    f"require command: `{name}' is not known as a Sieve capability, "
                    "but it is known as a Sieve command that is always available",
                )
            elif not self.known(name):
                self.error(node.line, f"require command: unknown Sieve capability `{name}'")
            else:
                self.required.add(name)
                self.required.update(IMPLIES.get(name, ()))

    def block(self, nodes: tuple[Node, ...], *, top: bool = False) -> tuple[Cmd, ...]:
        out: list[Cmd] = []
        prev: str | None = None
        for node in nodes:
            if node.name == "require":
                self.error(
                    node.line,
                    "require commands can only be placed at top level at the beginning of the file",
                )
                prev = node.name
                continue
            if node.name in ("elsif", "else") and prev not in ("if", "elsif"):
                # RFC 5228 §3.1: elsif and else follow if or elsif
                self.error(
                    node.line, f"the {node.name} command must follow an if or elseif command"
                )
                prev = node.name
                continue
            cmd = self.node(node, test=False)
            if cmd is not None:
                out.append(cmd)
            prev = node.name
        return tuple(out)

    # -- one command or test ------------------------------------------------------------

    def node(self, node: Node, *, test: bool) -> Cmd | None:
        kind = "test" if test else "command"
        spec = self.specs.get(node.name)
        if spec is None or not self.enabled(spec.extension):
            if (kind, node.name) not in self.reported:
                self.reported.add((kind, node.name))
                self.error(
                    node.line,
                    f"unknown {kind} '{node.name}' (only reported once at first occurrence)",
                )
            return None
        if spec.test != test and not spec.both:
            other = "test" if spec.test else "command"
            self.error(node.line, f"attempted to use {other} '{node.name}' as {kind}")
            return None
        bound = self.bind(node, spec, kind=kind)
        shape_ok = self.check_shape(node, spec, kind=kind)
        tests: tuple[Cmd, ...] = ()
        cmd: Cmd | None = None
        if bound is not None:
            tags, args = bound
            cmd = Cmd(node.name, node.line, tags, args)
            cmd = checks.check(self, cmd)
        if spec.subtests != "none" and node.tests:
            sub = [self.node(t, test=True) for t in node.tests]
            tests = tuple(t for t in sub if t is not None)
            if len(tests) != len(node.tests):
                cmd = None
        block: tuple[Cmd, ...] | None = None
        if spec.block and node.block is not None:
            pushed = node.name == "foreverypart" and cmd is not None
            if pushed and cmd is not None:
                name = cmd.tag_string("name")
                self.loops.append(name.constant if name is not None else None)
            block = self.block(node.block)
            if pushed:
                self.loops.pop()
        if cmd is None or not shape_ok:
            return None
        return Cmd(
            cmd.name,
            cmd.line,
            cmd.tags,
            cmd.args,
            tests,
            block,
            cmd.comparator,
            cmd.match,
            cmd.extra,
        )

    def check_shape(self, node: Node, spec: Spec, *, kind: str) -> bool:
        """Block and sub-test rules (RFC 5228 §8.2)."""
        ok = True
        what = f"the {node.name} {kind}"
        if spec.subtests == "none" and node.tests:
            sub = node.tests[0]
            tag = self.find_tag(spec, sub.name)
            other = self.specs.get(sub.name)
            if not node.test_list and tag is not None:
                self.error(
                    node.line, f"missing colon ':' before ':{sub.name}' tag in {node.name} {kind}"
                )
            elif other is not None and other.test and self.enabled(other.extension):
                self.error(node.line, f"{what} accepts no sub-tests, but tests are specified")
            else:
                self.error(node.line, f"missing semicolon ';' after {node.name} {kind}")
            ok = False
        elif spec.subtests == "one":
            if not node.tests:
                self.error(node.line, f"{what} requires one sub-test, but none is specified")
                ok = False
            elif node.test_list:
                self.error(
                    node.line, f"{what} requires one sub-test, but a list of tests is specified"
                )
                ok = False
        elif spec.subtests == "list" and not node.test_list:
            self.error(
                node.line,
                f"{what} requires a list of sub-tests, but "
                + ("none is specified" if not node.tests else "a single test is specified"),
            )
            ok = False
        if kind == "command" and ok:  # Pigeonhole checks the block after the sub-tests
            if spec.block and node.block is None:
                self.error(node.line, f"{what} requires a command block, but it is missing")
                ok = False
            elif not spec.block and node.block is not None:
                self.error(
                    node.line,
                    f"{what} does not accept a command block, but one is specified anyway",
                )
                ok = False
        return ok

    def find_tag(self, spec: Spec, name: str) -> TagDef | None:
        for tag in spec.tags:
            if tag.name == name and self.enabled(tag.extension):
                return tag
        return None

    def bind(
        self, node: Node, spec: Spec, *, kind: str
    ) -> tuple[dict[str, Value], tuple[Value | None, ...]] | None:
        """Tagged and positional arguments checked against ``spec`` (RFC 5228 §2.6.2)."""
        what = f"the {node.name} {kind}"
        tags: dict[str, Value] = {}
        groups: dict[str, str] = {}
        positional: list[Argument] = []
        args = node.args
        i = 0
        while i < len(args):
            arg = args[i]
            if not isinstance(arg, Tag):
                positional.append(arg)
                i += 1
                continue
            tag = self.find_tag(spec, arg.name)
            if tag is None:
                if (node.name, arg.name) not in self.reported:
                    self.reported.add((node.name, arg.name))
                    self.error(
                        arg.line,
                        f"unknown tagged argument ':{arg.name}' for {what} "
                        "(reported only once at first occurrence)",
                    )
                else:
                    self.ok = False
                return None
            if positional:
                self.error(
                    arg.line,
                    f"encountered an unexpected tagged argument ':{arg.name}' while validating "
                    f"positional arguments for {what}",
                )
                return None
            value: Value = True
            if tag.param is not None:
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is None or not is_string_kind(_kind_of(nxt), tag.param):
                    found = (
                        "no parameters were found" if nxt is None else f"{_found(nxt)} was found"
                    )
                    if tag.name in ("value", "count"):
                        self.error(
                            arg.line,
                            f"the :{tag.name} match-type requires a constant string argument being "
                            'one of "gt", "ge", "lt", "le", "eq" or "ne", but none was found',
                        )
                    else:
                        self.error(
                            arg.line,
                            f"the :{tag.name} tag for {what} requires {tag.param.value} as "
                            f"parameter, but {found}",
                        )
                    return None
                value = self.value(nxt, tag.param)
                i += 2
            else:
                i += 1
            if tag.group is not None:
                if tag.group in groups:
                    self.duplicate(node, arg, group=tag.group, what=what)
                    return None
                groups[tag.group] = tag.name
            elif tag.name in tags:
                self.error(arg.line, f"encountered duplicate :{tag.name} argument for {what}")
                return None
            tags[tag.name] = value
        params: tuple[Param, ...] = spec.positional
        required = tuple(p for p in params if not p.optional)
        if len(positional) != len(params):
            if len(positional) == len(required):
                params = required
            else:
                if (
                    required != params
                    and not positional
                    and node.name
                    in (
                        "setflag",
                        "addflag",
                        "removeflag",
                    )
                ):
                    self.error(
                        node.line, f"{what} expects at least one argument, but none was found"
                    )
                else:
                    self.error(
                        node.line,
                        f"{what} requires {len(required)} positional argument(s), "
                        f"but {len(positional)} is/are specified",
                    )
                return None
        values: dict[str, Value | None] = {p.label: None for p in spec.positional}
        for number, (arg, param) in enumerate(zip(positional, params, strict=True), start=1):
            if not is_string_kind(_kind_of(arg), param.kind):
                self.error(
                    node.line,
                    f"{what} expects {param.kind.value} as argument {number} ({param.label}), "
                    f"but {_found(arg)} was found",
                )
                return None
            values[param.label] = self.value(arg, param.kind)
        return tags, tuple(values[p.label] for p in spec.positional)

    def duplicate(self, node: Node, arg: Tag, *, group: str, what: str) -> None:
        if group == "size":
            self.error(
                node.line,
                "exactly one of the ':under' or ':over' tags must be specified for the size "
                "test, but more were found",
            )
        elif group in _GROUP_NAMES:
            self.error(
                arg.line,
                f"encountered duplicate {_GROUP_NAMES[group]} argument (:{arg.name}) for {what}",
            )
        elif group == "id":
            self.error(
                node.line,
                f"conflicting :header and :uniqueid arguments specified for {what}",
            )
        elif group == "mime-option":
            self.error(
                arg.line,
                f"the :type, :subtype, :contenttype, and :param arguments for {what} are "
                "mutually exclusive, but more than one was specified",
            )
        else:
            self.error(arg.line, f"encountered duplicate :{arg.name} argument for {what}")

    # -- include (RFC 6609) ---------------------------------------------------------------

    def include(
        self, location: str, name: str, *, line: int, once: bool, optional: bool
    ) -> tuple[str, str] | None:
        """Compile an included script once per top-level script; its key, or None."""
        lib = self.library
        key = (location, name)
        if key in lib.stack:
            if once:  # RFC 6609 §3.2: :once stops the recursion at run time
                return key
            self.error(line, f"include: circular include of script '{name}' ({location})")
            return None
        if key in lib.scripts:
            return key
        if len(lib.stack) + 1 > lib.settings.max_include_depth:
            self.error(
                line,
                f"include: cannot nest includes deeper than {lib.settings.max_include_depth} "
                f"levels (script '{name}')",
            )
            return None
        lib.count += 1
        if lib.count > lib.settings.max_includes:
            self.error(
                line,
                f"include: failed to include script '{name}': no more than "
                f"{lib.settings.max_includes} scripts may be included",
            )
            return None
        text = lib.loader(location, name) if lib.loader is not None else None
        if text is None:
            if optional:  # RFC 6609 §3.2: a missing :optional script is skipped
                return None
            self.error(line, f"include: script '{name}' does not exist at {location} location")
            return None
        nodes, found = parse(text)
        inner: list[tuple[int, str]] = list(found)
        lib.stack.append(key)
        try:
            if not found:
                child = Checker(
                    allowed=self.allowed,
                    custom=self.custom,
                    library=lib,
                    errors=inner,
                    script_name=name,
                )
                commands = child.script(nodes)
                if not inner:
                    lib.scripts[key] = (commands, frozenset(child.required))
        finally:
            lib.stack.pop()
        if inner:
            self.errors.extend((ln, f"{name}: {msg}") for ln, msg in inner)
            self.error(line, f"include: failed to compile included script '{name}'")
            return None
        return key

    # -- strings and variables ----------------------------------------------------------

    def value(self, arg: Argument, kind: ArgKind) -> Value:
        if isinstance(arg, Number):
            return arg.value
        assert isinstance(arg, StringList)
        items = tuple(self.template(s, arg.line) for s in arg.items)
        return items[0] if kind is ArgKind.STRING else items

    def template(self, text: str, line: int) -> Template:
        if "encoded-character" in self.required:
            found: list[str] = []
            text = decode_encoded(text, found)
            for message in found:
                self.error(line, message)
        if "variables" not in self.required:
            return Template.literal(text)
        parsed = parse_template(text)
        parts: list[str | Ref] = []
        for part in parsed.parts:
            if isinstance(part, str):
                parts.append(part)
                continue
            ref = self.resolve(part, line)
            parts.append(ref if ref is not None else "")
        return Template(tuple(parts))

    def resolve(self, ref: Ref, line: int, *, assign: bool = False) -> Ref | None:
        """Check a reference (RFC 5229 §3) and fix its scope; None when in error."""
        if ref.index is not None:
            if ref.index > MAX_MATCH_INDEX:
                self.error(
                    line, f"match value index {ref.index} out of range (max: {MAX_MATCH_INDEX})"
                )
                return None
            return ref
        if ref.namespace:
            space = ref.namespace[0].lower()
            if space == "global" and "include" in self.required:
                # RFC 6609 §3.5: global.<name> is the global variable <name>
                if len(ref.namespace) > 1:
                    self.error(
                        line,
                        "invalid variable name within global namespace: encountered sub-namespace",
                    )
                    return None
                if ref.name.isdigit():
                    self.error(
                        line,
                        "invalid variable name within global namespace: "
                        "encountered numeric variable name",
                    )
                    return None
                self.globals.add(ref.name)
                return Ref((), ref.name, scope="global")
            for ext in self.custom:
                if space in ext.namespaces and ext.name in self.required:
                    return Ref(tuple(n.lower() for n in ref.namespace), ref.name, scope=space)
            self.error(line, f"referring to variable in unknown namespace '{space}'")
            return None
        if ref.name in self.globals:
            return Ref((), ref.name, scope="global")
        if ref.name not in self.locals:
            if len(self.locals) >= MAX_VARIABLES:
                if ("limit", "variables") not in self.reported:  # reported once
                    self.reported.add(("limit", "variables"))
                    self.error(
                        line,
                        f"(implicit) declaration of new variable '{ref.name}' exceeds the limit "
                        f"(max variables: {MAX_VARIABLES})",
                    )
                self.ok = False
                return None
            self.locals.add(ref.name)
        return ref


def _kind_of(arg: Argument) -> ArgKind | None:
    if isinstance(arg, Number):
        return ArgKind.NUMBER
    if isinstance(arg, StringList):
        return ArgKind.STRING_LIST if arg.bracketed else ArgKind.STRING
    return None


def _found(arg: Argument) -> str:
    if isinstance(arg, Number):
        return "a number"
    if isinstance(arg, StringList):
        return "a string list" if arg.bracketed else "a string"
    return "a tag"


def is_string_kind(found: ArgKind | None, wanted: ArgKind) -> bool:
    """A single string also fills a string-list position (RFC 5228 §2.4.2.1)."""
    return found == wanted or (wanted is ArgKind.STRING_LIST and found is ArgKind.STRING)
