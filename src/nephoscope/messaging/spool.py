"""The agent's buffer for meter messages the bus did not take.

Batches wait in a small SQLite file, oldest first, so a restart of the agent
loses nothing; past ``max_samples`` the oldest batches are dropped, and the
number dropped is kept in the file too, where ``nephoscope status`` reads it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Spool"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, samples INTEGER NOT NULL,"
    " body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)


class Spool:
    """A bounded, persistent FIFO of batches of meter messages. Thread-safe."""

    def __init__(self, path: Path, max_samples: int) -> None:
        self.path = path
        self.max_samples = max_samples
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        # Opened on first use: an agent whose bus never fails never writes a file.
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA busy_timeout = 10000")
            for statement in _SCHEMA:
                db.execute(statement)
            self._db = db
        return self._db

    def push(self, batches: Sequence[Sequence[dict[str, Any]]]) -> int:
        """Keep ``batches`` after those already waiting; return how many samples were dropped."""
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO batches (samples, body) VALUES (?, ?)",
                    [(len(b), orjson.dumps(list(b))) for b in batches if b],
                )
                dropped = 0
                pending = self._pending(db)
                while pending > self.max_samples:
                    oldest = db.execute(
                        "SELECT id, samples FROM batches ORDER BY id LIMIT 1"
                    ).fetchone()
                    db.execute("DELETE FROM batches WHERE id = ?", (oldest[0],))
                    dropped += oldest[1]
                    pending -= oldest[1]
                if dropped:
                    db.execute(
                        "INSERT INTO counts (name, value) VALUES ('dropped', ?) ON CONFLICT(name)"
                        " DO UPDATE SET value = value + excluded.value",
                        (dropped,),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return dropped

    def oldest(self) -> tuple[int, list[dict[str, Any]]] | None:
        """The oldest waiting batch and its id, or None."""
        if self._db is None and not self.path.exists():
            return None
        with self._lock:
            row = (
                self._conn().execute("SELECT id, body FROM batches ORDER BY id LIMIT 1").fetchone()
            )
        if row is None:
            return None
        batch: list[dict[str, Any]] = orjson.loads(row[1])
        return row[0], batch

    def remove(self, batch_id: int) -> None:
        """Forget a batch that was sent."""
        with self._lock:
            self._conn().execute("DELETE FROM batches WHERE id = ?", (batch_id,))

    @staticmethod
    def _pending(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT coalesce(sum(samples), 0) FROM batches").fetchone()[0])

    def counts(self) -> tuple[int, int]:
        """Samples waiting, and samples dropped since the file was made."""
        if self._db is None and not self.path.exists():
            return 0, 0
        with self._lock:
            db = self._conn()
            dropped = db.execute("SELECT value FROM counts WHERE name = 'dropped'").fetchone()
            return self._pending(db), int(dropped[0]) if dropped else 0

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
