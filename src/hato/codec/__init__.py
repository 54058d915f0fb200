"""Sans-IO protocol codecs: bytes in, events out; replies to bytes. No asyncio, no store."""
