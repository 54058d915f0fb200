"""The IMAP connection states and which commands each state allows, as a data table.

Implements RFC 9051 §3 (Not Authenticated, Authenticated, Selected, Logout) and the command
groups of RFC 9051 §6.1-§6.4 (command-any, command-nonauth, command-auth, command-select), with
the extension commands placed where their RFCs put them (ENABLE RFC 5161 §3.1: authenticated
only; ID RFC 2971 §3.1: any state; IDLE RFC 2177: authenticated and selected; UNSELECT, MOVE,
UID EXPUNGE: selected).

Left out: nothing.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
_NONAUTH = frozenset({State.NOT_AUTHENTICATED})
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})

ALLOWED: dict[str, frozenset[State]] = {
    # RFC 9051 §6.1 command-any (+ ID, RFC 2971 §3.1)
    "CAPABILITY": _ANY, "NOOP": _ANY, "LOGOUT": _ANY, "ID": _ANY,
    # RFC 9051 §6.2 command-nonauth
    "STARTTLS": _NONAUTH, "AUTHENTICATE": _NONAUTH, "LOGIN": _NONAUTH,
    # RFC 9051 §6.3 command-auth (+ LSUB RFC 3501 §6.3.9, ENABLE RFC 5161, IDLE RFC 2177)
    "ENABLE": _AUTH, "SELECT": _AUTH, "EXAMINE": _AUTH, "NAMESPACE": _AUTH, "CREATE": _AUTH,
    "DELETE": _AUTH, "RENAME": _AUTH, "SUBSCRIBE": _AUTH, "UNSUBSCRIBE": _AUTH, "LIST": _AUTH,
    "LSUB": _AUTH, "STATUS": _AUTH, "APPEND": _AUTH, "IDLE": _AUTH,
    # RFC 9051 §6.4 command-select (+ CHECK RFC 3501 §6.4.1, MOVE RFC 6851)
    "CHECK": _SELECTED, "CLOSE": _SELECTED, "UNSELECT": _SELECTED, "EXPUNGE": _SELECTED,
    "SEARCH": _SELECTED, "FETCH": _SELECTED, "STORE": _SELECTED, "COPY": _SELECTED,
    "MOVE": _SELECTED,
    # RFC 5256 §3 SORT/THREAD (selected), RFC 9208 §4.1 quota commands and RFC 4978 §5 COMPRESS
    # (command-auth)
    "SORT": _SELECTED, "THREAD": _SELECTED, "GETQUOTA": _AUTH, "GETQUOTAROOT": _AUTH,
    "SETQUOTA": _AUTH, "COMPRESS": _AUTH,
}

# RFC 9051 §5.5 / §7.5.1: commands during which an untagged EXPUNGE must not be sent
# (sequence numbers must stay stable for pipelined FETCH, STORE and SEARCH).
# RFC 5256 §3: not during SORT or THREAD either (UID SORT/THREAD would allow them).
NO_EXPUNGE_DURING = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD"})
