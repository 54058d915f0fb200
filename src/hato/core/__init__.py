"""Pure types every layer shares: addresses, replies, the error tree, ids, clock, logging."""
