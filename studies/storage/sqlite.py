"""SQLite writers that queue for the write lock instead of polling for it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator

from django.db import connections, transaction


class _SQLiteWriterQueue:
    """Hands SQLite's write lock from writer to writer without polling.

    A writer that finds SQLite's lock taken sleeps in SQLite's busy handler for
    1, 2, 5, ... up to 100 ms between tries, so under contention a trial's write
    can wait far longer than the lock is held. Writers of this storage queue
    instead: on a thread lock within a process, and on an flock of a file beside
    the database across processes; both wake the next writer as soon as the lock
    is released. Other writers (the ORM elsewhere) still use the busy handler.
    """

    def __init__(self, database: str) -> None:
        self.thread_lock = threading.Lock()
        self.fd = os.open(f"{database}.writers", os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self.thread_lock:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


_writer_queues: dict[str, _SQLiteWriterQueue] = {}
_writer_queues_lock = threading.Lock()


def _writer_queue(database: str) -> _SQLiteWriterQueue:
    queue = _writer_queues.get(database)
    if queue is None:
        with _writer_queues_lock:
            queue = _writer_queues.get(database)
            if queue is None:
                queue = _writer_queues[database] = _SQLiteWriterQueue(database)
    return queue


def _forget_writer_queues() -> None:
    # flock locks belong to the open file: a forked worker that kept its parent's
    # file would hold the parent's lock instead of queueing for it.
    global _writer_queues_lock
    _writer_queues.clear()
    _writer_queues_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_writer_queues)


@contextlib.contextmanager
def write_transaction(using: str) -> Iterator[None]:
    """A transaction for a storage write; on SQLite, writers queue for the lock in order."""
    connection = connections[using]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        # Inside an outer transaction SQLite's lock is already held (IMMEDIATE):
        # waiting on the queue here could deadlock against a queued writer.
        with transaction.atomic(using=using):
            yield
        return
    queue = _writer_queue(str(connection.settings_dict["NAME"]))
    with queue.hold(), transaction.atomic(using=using):
        yield
