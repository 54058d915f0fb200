"""THREAD and UID THREAD: search, then group the result into threads (RFC 5256).

Implements RFC 5256 §3 THREAD with the ORDEREDSUBJECT and REFERENCES algorithms (run by
``hato.codec.imap.threads`` on the header facts ``sort.py`` reads: base subject, sent date,
Message-ID, References / In-Reply-To) and §4 the THREAD response. RFC 7162 §3.1.9: a MODSEQ
search key does not change the THREAD response.

Left out: other threading algorithms (THREAD=REFS is not advertised: BAD).
"""

from __future__ import annotations

from hato.codec.imap import threads
from hato.codec.imap.basesubject import casemap
from hato.codec.imap.commands import Command, Thread
from hato.servers.imap.outcome import Outcome
from hato.servers.imap.search import matching
from hato.servers.imap.session import Session
from hato.servers.imap.sort import message_facts


async def cmd_thread(session: Session, command: Command) -> Outcome:
    assert isinstance(command.args, Thread)
    args = command.args
    selected = session.selected
    assert selected is not None
    matched = await matching(session, selected, args.key)
    inputs = [
        threads.ThreadMessage(
            number=f.message.uid if command.uid else f.seq,  # RFC 5256 §4
            seq=f.seq,
            sent=f.sent,
            subject=casemap(f.subject.text),  # RFC 5256 §5 "Subject comparisons are
            reply=f.subject.reply,            # case-insensitive" (§7: i;unicode-casemap)
            message_id=f.message_id,
            references=f.references,
        )
        for f in await message_facts(session, matched)
    ]
    if args.algorithm == "ORDEREDSUBJECT":
        tree = threads.ordered_subject(inputs)
    else:
        tree = threads.references(inputs)
    data = threads.render(tree)
    session.untagged(b"THREAD" + (b" " + data if data else b""))
    return Outcome("THREAD completed")
