"""Sender authentication: SPF, DKIM, DMARC, ARC, iprev and friends (RFC 8601 result tokens)."""
