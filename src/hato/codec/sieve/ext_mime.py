"""Sieve MIME part tests and iteration: "mime", "foreverypart" and "extracttext" (RFC 5703),
plus the header-field selection of "index" (RFC 5260 §6) shared by header/address/date.

Implements RFC 5703 §3 (foreverypart over every body part below the top level, depth first,
encapsulated messages included; break [:name]), §4 (:mime on header/address/exists; :anychild
for the current part and every part below; :type, :subtype, :contenttype and :param on
Content-Type and Content-Disposition), §7 (extracttext [:first n] with the set modifiers of
RFC 5229 §4). RFC 5260 §6: :index n picks the n-th field of a name, :last counts from the end.
Loops walk parts by their path (child indexes), re-resolved on every step, so edits of the
message (editheader, replace, enclose) never leave a loop on stale offsets; replace and enclose
live in ``ext_replace``. Leaves out: nothing.
"""

from __future__ import annotations

from hato.codec.mime import Part, html_to_text, parse_mime_value, text_content
from hato.codec.sieve.ext_variables import apply_modifiers
from hato.codec.sieve.language import Cmd
from hato.codec.sieve.runtime import Break, CommandFn, Runtime, TestFn, runtime_error
from hato.codec.sieve.strings import Ref


def select_fields(cmd: Cmd, values: list[str]) -> list[str]:
    """RFC 5260 §6: with :index n only the n-th field (from the end with :last)."""
    index = cmd.tag_number("index")
    if index is None:
        return values
    pos = len(values) - index if "last" in cmd.tags else index - 1
    return [values[pos]] if 0 <= pos < len(values) else []


def parts_for(rt: Runtime, cmd: Cmd) -> list[Part]:
    """The parts a header/address/exists test looks at (RFC 5703 §4.1)."""
    if "mime" not in cmd.tags:
        return [rt.part]
    current = rt.current_part()
    if "anychild" in cmd.tags:
        return _walk(rt, current)
    return [current]


def header_values(rt: Runtime, cmd: Cmd, *, name: str, part: Part) -> list[str]:
    """The values a header test compares for ``name`` in ``part``."""
    option = next((t for t in ("type", "subtype", "contenttype", "param") if t in cmd.tags), None)
    if option is None:
        return select_fields(cmd, rt.header_values(name, part))
    key = name.lower()
    if key not in ("content-type", "content-disposition"):
        return []
    values = select_fields(cmd, rt.raw_header_values(name, part))
    out: list[str] = []
    for value in values:
        parsed = parse_mime_value(value, with_subtype=key == "content-type")
        if parsed is None:
            continue
        if option == "type":
            out.append(parsed.type)
        elif option == "subtype":
            out.append(parsed.subtype or "")
        elif option == "contenttype":
            out.append(parsed.type + (f"/{parsed.subtype}" if parsed.subtype else ""))
        else:
            wanted = [p.lower() for p in rt.expand_all(cmd.tag_strings("param") or ())]
            params = dict(parsed.params)
            out.extend(params[w] for w in wanted if w in params)
    return out


def _walk(rt: Runtime, part: Part) -> list[Part]:
    out = [part]
    for child in rt.children(part):
        out.extend(_walk(rt, child))
    return out


def _paths(rt: Runtime, part: Part, path: tuple[int, ...]) -> list[tuple[int, ...]]:
    """``path`` and the paths of every part below ``part``, depth first."""
    out = [path]
    for index, child in enumerate(rt.children(part)):
        out.extend(_paths(rt, child, (*path, index)))
    return out


def _foreverypart(rt: Runtime, cmd: Cmd) -> None:
    depth = len(rt.parts)
    if depth >= rt.limits.max_foreverypart_depth:  # RFC 5703 §3: bounded nesting
        raise runtime_error(
            cmd,
            "the nested foreverypart loop exceeds the nesting limit "
            f"(<= {rt.limits.max_foreverypart_depth} levels)",
        )
    base = rt.parts[-1] if rt.parts else ()
    start = rt.current_part()
    targets: list[tuple[int, ...]] = []
    if not rt.parts:  # the outermost loop starts at the message itself
        targets = _paths(rt, start, base)
    else:  # a nested loop visits the parts below the current one
        for index, child in enumerate(rt.children(start)):
            targets.extend(_paths(rt, child, (*base, index)))
    mark = len(rt.replaced)
    for path in targets:
        # RFC 5703 §5: the loop "does not go into the no-longer existing body parts"
        if any(len(r) < len(path) and path[: len(r)] == r for r in rt.replaced[mark:]):
            continue
        if rt.part_at(path) is None:
            continue
        rt.parts.append(path)
        try:
            rt.run_block(cmd.block or ())
        except Break as brk:
            if brk.depth < depth:
                raise
            return
        finally:
            del rt.parts[depth:]


def _break(rt: Runtime, cmd: Cmd) -> None:
    depth = cmd.extra.get("depth")
    raise Break(depth if isinstance(depth, int) else len(rt.parts) - 1)


def _extracttext(rt: Runtime, cmd: Cmd) -> None:
    part = rt.current_part()
    text = ""
    if part.content_type == "text" and not part.children:
        text = text_content(part, rt.message)
        if part.subtype == "html":
            text = html_to_text(text)
    first = cmd.tag_number("first")
    if first is not None:
        text = text[:first]  # RFC 5703 §7: the first n characters
    target = cmd.extra.get("target")
    if target is None:
        raise runtime_error(cmd, "extracttext: no variable")
    assert isinstance(target, Ref)
    rt.assign(target, apply_modifiers(cmd, text))


COMMANDS: dict[str, CommandFn] = {
    "foreverypart": _foreverypart,
    "break": _break,
    "extracttext": _extracttext,
}
TESTS: dict[str, TestFn] = {}
