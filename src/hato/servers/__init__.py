"""asyncio adapters: socket <-> codec <-> policy/store, one module per protocol."""
