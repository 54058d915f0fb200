"""The THREAD algorithms of RFC 5256 on plain values, and the THREAD response they render to.

Implements RFC 5256 §3 ORDEREDSUBJECT and REFERENCES (steps 1.A, 1.B, 2, 3, 4, 5.A-5.C and 6,
with the Message-ID normalisation the section requires: quoting in the local part does not
matter, comparisons are otherwise case-sensitive), the reference rules (References, else the
first valid Message-ID of In-Reply-To, else none) and §4 thread-data rendering
(``(2)(3 6 (4 23)(44 7 96))``). Ties of the sent date are broken by sequence number (§2.2).

Left out: nothing of the two algorithms. Sans-IO: the caller extracts the header values (see
``hato.servers.imap.thread``). No recursion, so deep reply chains cannot exhaust the stack.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_MSG_ID = re.compile(r"<([^<>]*)>")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadMessage:
    """What the algorithms need of one searched message."""

    number: int  # what the response names: sequence number (THREAD) or UID (UID THREAD)
    seq: int  # sequence number: tie-break (RFC 5256 §2.2) and duplicate Message-ID precedence
    sent: float  # the sent date (RFC 5256 §2.2), POSIX seconds
    subject: str  # collation key of the base subject (RFC 5256 §2.1, §7)
    reply: bool = False  # the subject marks a reply or forward (RFC 5256 §3)
    message_id: str | None = None  # normalised (``normalize_msg_id``)
    references: tuple[str, ...] = ()  # normalised, oldest first


@dataclass(eq=False, slots=True)
class Node:
    """A thread tree node; ``message`` None is a dummy (RFC 5256 §3 REFERENCES)."""

    message: ThreadMessage | None = None
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None


def normalize_msg_id(text: str) -> str | None:
    """The normalised form of one msg-id (without angle brackets): surrounding and folding
    whitespace removed, a quoted local part unquoted (RFC 5256 §3: ``<"01KF8"@x.y>`` and
    ``<01KF8@x.y>`` are the same Message ID). None when it is not ``id-left "@" id-right``."""
    text = re.sub(r"[ \t\r\n]+", "", text)
    left, at, right = text.rpartition("@")
    if not at or not left or not right:
        return None
    if len(left) >= 2 and left.startswith('"') and left.endswith('"'):
        left = _QUOTED_PAIR.sub(r"\1", left[1:-1])
    return f"{left}@{right}"


def msg_ids(field_body: str | None) -> list[str]:
    """The valid Message IDs of a Message-ID, In-Reply-To or References field, normalised."""
    if not field_body:
        return []
    found = (normalize_msg_id(m) for m in _MSG_ID.findall(field_body))
    return [m for m in found if m is not None]


def references_of(references: str | None, in_reply_to: str | None) -> tuple[str, ...]:
    """RFC 5256 §3: the References ids; without any, the first valid In-Reply-To id."""
    refs = msg_ids(references)
    if refs:
        return tuple(refs)
    parents = msg_ids(in_reply_to)
    return (parents[0],) if parents else ()


def _order(node: Node) -> tuple[float, int]:
    """Sort key of a sibling: its sent date and sequence number; a dummy uses its first
    child (RFC 5256 §3 steps 4 and 6)."""
    while node.message is None and node.children:
        node = node.children[0]
    message = node.message
    return (message.sent, message.seq) if message is not None else (0.0, 0)


# -- ORDEREDSUBJECT -----------------------------------------------------------------------------


def ordered_subject(messages: Iterable[ThreadMessage]) -> list[Node]:
    """RFC 5256 §3 ORDEREDSUBJECT: group by base subject (sorted by subject, then sent date);
    the first message of a group is the root, all the others its children; threads are
    ordered by the sent date of their first message."""
    ordered = sorted(messages, key=lambda m: (m.subject.encode("utf-8", "surrogatepass"),
                                             m.sent, m.seq))
    threads: list[Node] = []
    current: Node | None = None
    for message in ordered:
        if current is not None and current.message is not None \
                and current.message.subject == message.subject:
            child = Node(message, parent=current)
            current.children.append(child)
            continue
        current = Node(message)
        threads.append(current)
    threads.sort(key=_order)
    return threads


# -- REFERENCES ----------------------------------------------------------------------------------


def _is_ancestor(candidate: Node, node: Node) -> bool:
    """Whether ``candidate`` is ``node`` or one of its ancestors."""
    walk: Node | None = node
    while walk is not None:
        if walk is candidate:
            return True
        walk = walk.parent
    return False


def _link(parent: Node, child: Node) -> bool:
    """Make ``parent`` the parent of ``child`` unless that introduces a loop (RFC 5256 §3
    step 1.A: "make sure that A is not a descendent of B")."""
    if _is_ancestor(child, parent):
        return False
    child.parent = parent
    parent.children.append(child)
    return True


def _unlink(child: Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
        child.parent = None


def _build(messages: Sequence[ThreadMessage]) -> list[Node]:
    """Step 1 (A and B) and step 2: the containers without a parent, in creation order."""
    table: dict[str, Node] = {}
    order: list[Node] = []

    def container(msg_id: str) -> Node:
        node = table.get(msg_id)
        if node is None:
            node = table[msg_id] = Node()  # a dummy until a message claims the id
            order.append(node)
        return node

    for message in sorted(messages, key=lambda m: m.seq):
        msg_id = message.message_id
        node = table.get(msg_id) if msg_id is not None else None
        if node is None or node.message is not None:
            # No (valid) Message-ID, or a duplicate of an earlier message's: a unique one.
            node = Node(message)
            order.append(node)
            if msg_id is not None and msg_id not in table:
                table[msg_id] = node
        else:
            node.message = message
        # (A) link the references: the first the parent of the second, and so on; an
        # existing parent link is kept (the References field may have been truncated).
        refs = [container(r) for r in message.references]
        for parent, child in itertools.pairwise(refs):
            if child.parent is None and parent is not child:
                _link(parent, child)
        # (B) the last reference is the parent of this message (replacing a parent link
        # from an earlier truncated References field); no parent without references.
        _unlink(node)
        if refs and refs[-1] is not node:
            _link(refs[-1], node)
    return [node for node in order if node.parent is None]  # (2) the root's children


def _prune(root: list[Node]) -> list[Node]:
    """Step 3: remove dummies; a dummy's children take its place, but at the root level only
    when it has exactly one child.

    Bottom-up (children before their parents), so that whether a dummy has children, and how
    many, is judged after its own dummy descendants are gone: judged before, a top-level dummy
    whose only children are childless dummies stayed as an empty thread (regression test
    ``test_references_prunes_dummies_bottom_up``)."""
    levels: list[Node] = []
    pending = deque(root)
    while pending:
        node = pending.popleft()
        levels.append(node)
        pending.extend(node.children)
    for node in reversed(levels):  # the youngest first: a child is pruned before its parent
        kept: list[Node] = []
        for child in node.children:
            if child.message is None:
                kept.extend(child.children)  # already pruned: messages only, spliced in
            else:
                kept.append(child)
        for child in kept:
            child.parent = node
        node.children = kept
    top: list[Node] = []
    for node in root:
        if node.message is None:
            if not node.children:  # a dummy with NO children: delete it
                continue
            if len(node.children) == 1:  # promoted to the root only when it is the only one
                child = node.children[0]
                child.parent = None
                top.append(child)
                continue
        top.append(node)
    return top


def _merge_subjects(root: list[Node]) -> list[Node]:
    """Step 5: gather threads whose (top) messages share a base subject."""
    def thread_subject(node: Node) -> str:
        message = node.message if node.message is not None else node.children[0].message
        return message.subject if message is not None else ""

    def is_reply(node: Node) -> bool:
        return node.message is not None and node.message.reply

    table: dict[str, Node] = {}
    for node in root:  # (B) one message per base subject
        subject = thread_subject(node)
        if not subject:
            continue
        known = table.get(subject)
        if known is None or (known.message is not None and (
            node.message is None or (is_reply(known) and not is_reply(node))
        )):
            table[subject] = node
    result = list(root)
    for node in list(root):  # (C) merge threads with the same subject
        subject = thread_subject(node)
        if not subject:
            continue
        known = table[subject]
        if known is node:
            continue
        if known.message is None and node.message is None:
            for child in node.children:
                child.parent = known
            known.children.extend(node.children)
            node.children = []
            result.remove(node)
        elif known.message is None or (is_reply(node) and not is_reply(known)):
            result.remove(node)
            node.parent = known
            known.children.append(node)
        else:
            dummy = Node(children=[known, node])
            result[result.index(known)] = dummy
            result.remove(node)
            known.parent = dummy
            node.parent = dummy
            table[subject] = dummy
    return result


def _sort_all(root: list[Node]) -> None:
    """Step 6: sort every set of siblings by sent date, the youngest sets first."""
    levels: list[Node] = []
    pending = deque(root)
    while pending:
        node = pending.popleft()
        levels.append(node)
        pending.extend(node.children)
    for node in reversed(levels):
        node.children.sort(key=_order)
    root.sort(key=_order)


def references(messages: Sequence[ThreadMessage]) -> list[Node]:
    """RFC 5256 §3 REFERENCES, steps (1) to (6)."""
    root = _prune(_build(messages))  # (1)-(3)
    for node in root:  # (4) sort the top level (a dummy by its sorted first child)
        if node.message is None:
            node.children.sort(key=_order)
    root.sort(key=_order)
    root = _merge_subjects(root)  # (5)
    _sort_all(root)  # (6)
    return root


# -- rendering -----------------------------------------------------------------------------------


def render(threads: Sequence[Node]) -> bytes:
    """RFC 5256 §5 thread-data (without the leading "THREAD"): ``(2)(3 6 (4 23)(44 7 96))``.

    A node with one child continues its list ("parent child"); with several, each child
    opens a nested thread-list; dummies contribute no number."""
    out: list[bytes] = []
    # Work items: a node that opens a thread-list, or the ")" that closes one.
    stack: list[Node | bytes] = []
    for top in reversed(threads):
        stack.append(b")")
        stack.append(top)
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            out.append(item)
            continue
        out.append(b"(")
        node = item
        numbers: list[bytes] = []
        while True:
            if node.message is not None:
                numbers.append(b"%d" % node.message.number)
            if len(node.children) == 1:
                node = node.children[0]
                continue
            break
        out.append(b" ".join(numbers))
        if node.children:
            if numbers:
                out.append(b" ")
            for child in reversed(node.children):
                stack.append(b")")
                stack.append(child)
    return b"".join(out)
