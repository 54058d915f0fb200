"""The embedded store backend: SQLite (WAL) metadata and content-addressed message files.

Entry point: ``await open_store(data_dir, clock=...)`` returns a ``SqliteStore`` implementing
``hato.store.api.MailStore`` (its ``blobs`` a ``FileBlobStore``). Layout of the data
directory: docs/data-directory.md.
"""

from hato.store.sqlite.blobs import FileBlobStore, FileBlobWriter
from hato.store.sqlite.db import CommitStats
from hato.store.sqlite.store import SqliteStore, open_store

__all__ = ["CommitStats", "FileBlobStore", "FileBlobWriter", "SqliteStore", "open_store"]
