"""Inbound checks that turn a session's facts into Verdict values; checks never touch sockets."""
