"""Local delivery: recipients resolved to mailboxes, then one durable append per message."""
