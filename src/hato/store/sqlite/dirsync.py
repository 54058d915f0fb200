"""Directory and file durability helpers of the embedded store: fsync of a directory, a
*group* fsync that concurrent threads share, and the data-only file sync.

POSIX makes a new directory entry (create, rename, link, unlink) durable only after an fsync
of the directory itself; an fsync of the file does not promise it. ``DirSync`` lets many
writers that each renamed a file into the same directory wait for ONE fsync of it: a writer
takes a *ticket* after its rename, and ``wait(ticket)`` returns once an fsync that started
after that rename has completed (the first waiter runs it, the others wait for it or for the
next one). So N concurrent commits cost one directory fsync instead of N.

Left out: ``syncfs``-style whole-filesystem flushes (they would wait for unrelated I/O).

Security: opens directories read-only and only paths the store itself built.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Make the directory entries of ``path`` durable (POSIX: fsync on the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_data(fd: int) -> None:
    """Flush a file's data and the metadata needed to read it back (its size): fdatasync
    where the system has it (POSIX.1b), else fsync."""
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


class DirSync:
    """Group fsync of one directory, shared by the threads that changed it (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._changes = 0  # generation: bumped by every change made to the directory
        self._synced = 0  # every change up to this generation is durable
        self._running = False
        self.fsyncs = 0  # how many fsyncs ran (tests and benchmarks)

    def changed(self) -> int:
        """Call right after changing the directory; returns the ticket to ``wait`` for."""
        with self._cond:
            self._changes += 1
            return self._changes

    def current(self) -> int:
        """A ticket covering every change made so far (by any thread)."""
        with self._cond:
            return self._changes

    def wait(self, ticket: int) -> None:
        """Return once the changes up to ``ticket`` are durable (blocking)."""
        with self._cond:
            while self._synced < ticket and self._running:
                self._cond.wait()  # an fsync is running: it may or may not cover us
            if self._synced >= ticket:
                return
            self._running = True
            target = self._changes  # this fsync covers every change made before it starts
        try:
            fsync_dir(self.path)
        except BaseException:
            with self._cond:
                self._running = False
                self._cond.notify_all()  # a waiter retries (and reports its own error)
            raise
        with self._cond:
            self.fsyncs += 1
            self._synced = max(self._synced, target)
            self._running = False
            self._cond.notify_all()
