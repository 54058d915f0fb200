"""Composition root: configuration schema, wiring of backends and servers, the CLI."""
