"""The agent's buffer for meter messages the bus did not take.

Batches wait in a small SQLite file, oldest first, so a restart of the agent
loses nothing. Past ``max_samples`` the oldest batches of pollsters are
dropped, and the number dropped is kept in the file too, where ``nephoscope
status`` reads it, beside the last error of the bus. Batches made from
notifications are kept, never dropped: when there is no room for them the
buffer refuses them (:class:`SpoolFull`), and the notifications stay on their
queue, where the broker keeps them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Spool", "SpoolFull"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, samples INTEGER NOT NULL,"
    " body BLOB NOT NULL, keep INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS counts (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notes (name TEXT PRIMARY KEY, value TEXT NOT NULL,"
    " noted_at TEXT NOT NULL)",
)


class SpoolFull(Exception):
    """No room in the buffer for batches that must not be dropped; none was kept."""


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
            columns = {row[1] for row in db.execute("PRAGMA table_info(batches)")}
            if "keep" not in columns:  # a file an earlier version made
                db.execute("ALTER TABLE batches ADD COLUMN keep INTEGER NOT NULL DEFAULT 0")
            self._db = db
        return self._db

    def push(self, batches: Sequence[Sequence[dict[str, Any]]], *, keep: bool = False) -> int:
        """Keep ``batches`` after those already waiting; return how many samples were dropped.

        With ``keep`` the batches are never dropped, nor do they make room by
        dropping others: :class:`SpoolFull` is raised, and nothing kept, when
        they do not fit beside what waits. Otherwise the oldest batches not kept
        so are dropped until everything fits.
        """
        count = sum(len(b) for b in batches)
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                pending = self._pending(db)
                if keep and pending + count > self.max_samples:
                    raise SpoolFull(
                        f"{count} sample(s) do not fit beside the {pending} waiting"
                        f" (publisher.buffer.max_samples = {self.max_samples})"
                    )
                db.executemany(
                    "INSERT INTO batches (samples, body, keep) VALUES (?, ?, ?)",
                    [(len(b), orjson.dumps(list(b)), int(keep)) for b in batches if b],
                )
                dropped = 0
                pending += count
                while pending > self.max_samples:
                    oldest = db.execute(
                        "SELECT id, samples FROM batches WHERE keep = 0 ORDER BY id LIMIT 1"
                    ).fetchone()
                    if oldest is None:  # what is left is kept: it fitted when it came
                        break
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

    def note_error(self, text: str | None) -> None:
        """Keep the bus's last error (None: it works again) for ``nephoscope status``."""
        if text is None and self._db is None and not self.path.exists():
            return
        with self._lock:
            db = self._conn()
            if text is None:
                db.execute("DELETE FROM notes WHERE name = 'bus_error'")
            else:
                db.execute(
                    "INSERT INTO notes (name, value, noted_at) VALUES ('bus_error', ?, ?)"
                    " ON CONFLICT(name) DO UPDATE SET value = excluded.value,"
                    " noted_at = excluded.noted_at",
                    (text, datetime.now(UTC).isoformat()),
                )

    def last_error(self) -> tuple[str, datetime] | None:
        """The bus's last error and when it was noted, unless it worked since."""
        if self._db is None and not self.path.exists():
            return None
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT value, noted_at FROM notes WHERE name = 'bus_error'")
                .fetchone()
            )
        return (row[0], datetime.fromisoformat(row[1])) if row else None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
