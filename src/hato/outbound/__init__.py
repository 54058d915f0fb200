"""Outbound delivery: durable queue, MX routing, TLS policy, DKIM signing, DSN."""
