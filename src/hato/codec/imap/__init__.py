"""Sans-IO IMAP codec: client command framing and parsing, response rendering, sequence sets.

Implements the wire formats of RFC 9051 (IMAP4rev2) and RFC 3501 (IMAP4rev1) and the syntax of
the extensions the server offers (see ``commands.py``). No I/O and no store access here: the
asyncio server in ``hato.servers.imap`` drives these functions.
"""
