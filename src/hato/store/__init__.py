"""Mail store: interfaces in domain types (``api``, ``model``) and backends (``sqlite``)."""
