"""The IMAP command table: command name to handler (states are in hato.codec.imap.states)."""

from __future__ import annotations

from collections.abc import Mapping

from hato.servers.imap import (
    auth,
    compress,
    fetch,
    idle,
    mailboxes,
    quota,
    search,
    session,
    sort,
    store_cmds,
    thread,
)
from hato.servers.imap.session import Handler

HANDLERS: Mapping[str, Handler] = {
    "CAPABILITY": session.cmd_capability,
    "NOOP": session.cmd_noop,
    "LOGOUT": session.cmd_logout,
    "ID": session.cmd_id,
    "ENABLE": session.cmd_enable,
    "NAMESPACE": session.cmd_namespace,
    "CHECK": session.cmd_check,
    "STARTTLS": auth.cmd_starttls,
    "LOGIN": auth.cmd_login,
    "AUTHENTICATE": auth.cmd_authenticate,
    "SELECT": mailboxes.cmd_select,
    "EXAMINE": mailboxes.cmd_select,
    "CLOSE": mailboxes.cmd_close,
    "UNSELECT": mailboxes.cmd_unselect,
    "CREATE": mailboxes.cmd_create,
    "DELETE": mailboxes.cmd_delete,
    "RENAME": mailboxes.cmd_rename,
    "SUBSCRIBE": mailboxes.cmd_subscribe,
    "UNSUBSCRIBE": mailboxes.cmd_subscribe,
    "LIST": mailboxes.cmd_list,
    "LSUB": mailboxes.cmd_list,
    "STATUS": mailboxes.cmd_status,
    "APPEND": store_cmds.cmd_append,
    "STORE": store_cmds.cmd_store,
    "EXPUNGE": store_cmds.cmd_expunge,
    "COPY": store_cmds.cmd_copy,
    "MOVE": store_cmds.cmd_copy,
    "FETCH": fetch.cmd_fetch,
    "SEARCH": search.cmd_search,
    "IDLE": idle.cmd_idle,
    "SORT": sort.cmd_sort,
    "THREAD": thread.cmd_thread,
    "GETQUOTA": quota.cmd_getquota,
    "GETQUOTAROOT": quota.cmd_getquotaroot,
    "SETQUOTA": quota.cmd_setquota,
    "COMPRESS": compress.cmd_compress,
}
