"""SQLStore: samples on SQLite (embedded) or PostgreSQL (shared), through SQLAlchemy Core.

The write path is built for collectors: one transaction per batch, duplicates
dropped by message id (in the batch, against the store, and by the database's
unique index when two collectors race), and the strings and metadata that repeat
on every sample resolved from in-process caches instead of queries.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import logging
import math
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect

from nephoscope.config import StoreSettings
from nephoscope.counter import Counter
from nephoscope.storage import StoreError, rollups
from nephoscope.storage import schema as tables
from nephoscope.storage.base import (
    CONDITION_FIELDS,
    CONDITION_OPERATORS,
    GROUPBY_FIELDS,
    Aggregate,
    Condition,
    DeadLetter,
    Expression,
    MeterInfo,
    ResourceInfo,
    SampleFilter,
    Statistic,
    StoredDeadLetter,
    StoredSample,
    StoreStatus,
    WriteResult,
    check_statistics_args,
)

LOG = logging.getLogger(__name__)

#: In the table's order, as _InsertMany needs to send many rows in one statement.
_RESOURCE_COLUMNS: Final = tuple(column.name for column in tables.resources.c)
#: Rows per multi-row INSERT on SQLite (at 6 columns, well under its 32,766 parameters).
_ROWS_PER_INSERT: Final = 500

if TYPE_CHECKING:
    from nephoscope.storage.base import Store

__all__ = [
    "SQLStore",
    "canonical_json",
    "decode_message_id",
    "encode_message_id",
    "encode_message_ids",
    "from_micros",
    "to_micros",
]

MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Milliseconds a SQLite writer waits for another one (a second collector) to commit.
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
#: Set on every SQLite connection, in this order (page_size only takes on a new file).
SQLITE_PRAGMAS: Final = (
    f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
    "page_size = 4096",
    "journal_mode = WAL",
    # Billing data: a committed batch must survive a power cut, so fsync each
    # commit (NORMAL in WAL mode may lose the last commits).
    "synchronous = FULL",
    "foreign_keys = ON",
    # The message-id index takes random inserts all over; keep its pages in memory.
    "cache_size = -65536",
    # Each batch dirties a page per series and per message id (~2,000 pages), so the
    # default checkpoint at 1,000 pages would copy the WAL back after every commit;
    # at 10,000 a page rewritten by several batches is copied back once.
    "wal_autocheckpoint = 10000",
    # ...and the WAL file is cut back after a checkpoint instead of staying at its peak.
    "journal_size_limit = 67108864",
)
#: SQLite moves staged rollup rows into ``rollups`` in each batch whose id is a
#: multiple of this. More batches between moves spread the cost of the pages a
#: move dirties (about one per series and level) thinner, and make each move a
#: longer pause of one batch; 16 measured within 1% of ingest throughput of 64.
ROLLUP_MOVE_EVERY: Final = 16
#: Series and metadata ids remembered per store; past this the oldest are forgotten.
CACHE_LIMIT: Final = 100_000
#: An arbitrary constant: the PostgreSQL advisory lock held while migrating.
_MIGRATION_LOCK: Final = 0x6E6570686F
#: Another: held shared by each PostgreSQL batch, and alone by an upgrade from
#: before it migrates until it has applied the archive policy.
_POLICY_LOCK: Final = 0x6E657068726F
#: Execution option that makes a SQLite transaction take the write lock at BEGIN
#: (and, on both databases, frees its statements from ``store.read_timeout``).
_WRITE_OPTION: Final = "nephoscope_write"
#: Key of a SQLite connection's read deadline in its pool record.
_DEADLINE: Final = "nephoscope_deadline"

K = TypeVar("K", bound=Hashable)
SeriesKey = tuple[str, str, str, str, str | None, str | None, str]


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken to be UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _ONE_US


def from_micros(micros: int) -> datetime:
    """The timezone-aware UTC datetime ``micros`` microseconds after the epoch."""
    # Positional: timedelta's keyword parsing is a third of the cost.
    return EPOCH + timedelta(0, 0, micros)


def encode_message_id(message_id: str) -> bytes:
    """The compact, reversible storage form of a message id.

    A canonical UUID string (what ``str(uuid.UUID(...))`` gives) becomes its 16
    bytes. Anything else becomes a marker byte and its UTF-8 text: ``b"\\x00"``,
    or ``b"\\x01\\x01"`` when that would make exactly 16 bytes, so no other id
    can ever look like a UUID.
    """
    if len(message_id) == 36 and _UUID_RE.fullmatch(message_id):
        return bytes.fromhex(message_id.replace("-", ""))
    text = message_id.encode("utf-8")
    return (b"\x01\x01" if len(text) == 15 else b"\x00") + text


def encode_message_ids(message_ids: Iterable[str]) -> list[bytes]:
    """:func:`encode_message_id` over many ids, quicker than one call per id."""
    fullmatch = _UUID_RE.fullmatch
    fromhex = bytes.fromhex
    return [
        fromhex(mid.replace("-", "")) if fullmatch(mid) else encode_message_id(mid)
        for mid in message_ids
    ]


def decode_message_id(raw: bytes) -> str:
    """The message id that :func:`encode_message_id` turned into ``raw``."""
    if len(raw) == 16:
        return str(uuid.UUID(bytes=bytes(raw)))
    return bytes(raw[1 if raw[0] == 0 else 2 :]).decode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


_JSON_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """``document`` as JSON with sorted keys, so equal metadata gives equal bytes.

    Values JSON lacks (sets, datetimes, objects) are written as lists or strings.
    """
    try:
        return orjson.dumps(document, default=_json_default, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError:
        # orjson refuses integers wider than 64 bits; the standard library does not.
        text = json.dumps(document, default=_json_default, sort_keys=True, separators=(",", ":"))
        return text.encode("utf-8")


def _canonical_bodies(counters: Iterable[Counter]) -> list[bytes]:
    dumps = orjson.dumps
    try:
        return [
            dumps(c.resource_metadata, default=_json_default, option=_JSON_OPTIONS)
            for c in counters
        ]
    except orjson.JSONEncodeError:
        return [canonical_json(c.resource_metadata) for c in counters]


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _chunks(items: list[K], size: int) -> Iterator[list[K]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Cache(dict[K, int]):
    """Key -> row id, forgetting the oldest entries past ``limit``.

    Readers use plain ``dict.get`` without locking; ``publish`` is locked so that
    two threads sharing a store never evict while the other updates.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self._lock = threading.Lock()

    def publish(self, entries: Mapping[K, int]) -> None:
        if not entries:
            return
        with self._lock:
            self.update(entries)
            if len(self) > self.limit:
                # Forget a tenth at once, so that a full cache is not trimmed every batch.
                excess = len(self) - self.limit + self.limit // 10
                for key in list(itertools.islice(self, excess)):
                    del self[key]


class SQLStore:
    """A :class:`~nephoscope.storage.base.Store` on SQLite or PostgreSQL.

    Safe to share between threads; two stores (two collectors) may write to one
    database at once.
    """

    def __init__(self, settings: StoreSettings) -> None:
        try:
            self.url = sa.make_url(settings.url)
            self.engine = _create_engine(self.url, settings.read_timeout)
        except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
            # A malformed URL or a database driver that is not installed: say so plainly.
            raise StoreError(f"cannot open the store: {exc}") from exc
        self.dialect_name: str = self.engine.dialect.name
        self._retention = settings.retention
        self._archive = settings.archive_policy
        # SQLite transactions that write take the lock at BEGIN (see _create_engine).
        self._writer = self.engine.execution_options(**{_WRITE_OPTION: True})
        if self.dialect_name == "sqlite":
            self._insert: Callable[[sa.Table], Any] = sqlite_dialect.insert
            # SQLite before 3.32 allowed only 999 bound parameters per statement.
            self._in_chunk = 999 if sqlite3.sqlite_version_info < (3, 32) else 5000
        else:
            self._insert = postgresql.insert
            self._in_chunk = 5000
        self._series_ids: _Cache[SeriesKey] = _Cache(CACHE_LIMIT)
        self._metadata_ids: _Cache[bytes] = _Cache(CACHE_LIMIT)
        self._positional: bool = self.engine.dialect.positional
        self._upsert_resources_many = _InsertMany(
            self.engine.dialect,
            self._build_resources_upsert(),
            tables.resources,
            _RESOURCE_COLUMNS,
        )
        self._insert_samples = _InsertMany(
            self.engine.dialect,
            self._insert(tables.samples).on_conflict_do_nothing(),
            tables.samples,
            ("timestamp", "volume", "batch_id", "series_id", "metadata_id", "message_id"),
        )
        #: SQLite stages rollup rows before they go into ``rollups`` (see _write_rollups).
        self._stages_rollups = self.dialect_name != "postgresql"
        #: Where rollup rows are read from: staged rows too, where there are any.
        self._rollup_tables: tuple[sa.Table, ...] = (tables.rollups,)
        #: Batches between moves of staged rollup rows.
        self.rollup_move_every = ROLLUP_MOVE_EVERY
        if not self._stages_rollups:
            self._move_rollups = str(
                self._merge_rollups(tables.rollups, _in_key_order(_INCOMING_ROLLUPS)).compile(
                    dialect=self.engine.dialect
                )
            )
        else:
            self._rollup_tables += (tables.rollups_recent,)
            self._stage_rollups = _InsertMany(
                self.engine.dialect,
                self._merge_rollups(tables.rollups_recent),
                tables.rollups_recent,
                _ROLLUP_COLUMNS,
            )
            self._move_staged_rollups = self._merge_rollups(
                tables.rollups, _in_key_order(tables.rollups_recent)
            )

    # -- schema -------------------------------------------------------------------------

    def _alembic_config(self) -> Config:
        config = Config()
        # The config is an INI parser: a literal % in the path would be read as interpolation.
        config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        return config

    def schema_revisions(self) -> tuple[str | None, str | None]:
        """The schema revision of the database, and the newest this code knows."""
        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision(), head

    def upgrade(self) -> None:
        """Bring the schema to the newest migration and the rollups to the archive
        policy, in one transaction."""
        current, head = self.schema_revisions()
        if current == head:
            with self.engine.connect() as conn:
                if not self._policy_changes(conn):
                    return
        config = self._alembic_config()
        with self._writer.begin() as conn:
            if self.dialect_name == "postgresql":
                # Two services starting together must not both create the tables.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
                # Then the batches in flight end (the rollups built below must hold
                # their samples), and later ones wait to read the levels recorded
                # here: as on SQLite, where the upgrade holds the only write lock.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_POLICY_LOCK)))
            if current != head:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                LOG.info("store schema upgraded from %s to %s", current or "nothing", head)
            self._apply_archive_policy(conn)

    def _wanted_granularities(self, name: str) -> str:
        return rollups.format_granularities(
            level.seconds for level in self._archive.levels_for(name)
        )

    def _apply_archive_policy(self, conn: sa.Connection) -> None:
        """Drop the rollups the policy no longer keeps; build the new ones from raw samples."""
        changes = self._policy_changes(conn)
        if not changes:
            return
        # Rows of every meter in one table, so that deleting from it is enough.
        self._move_staged(conn)
        for name, held in sorted(changes.items()):
            wanted = rollups.parse_granularities(self._wanted_granularities(name))
            # A meter with no record may still have rollups from a writer whose record
            # was rolled back: rebuild everything for it rather than trust them.
            series = sa.select(tables.series.c.id).where(tables.series.c.name == name)
            delete = tables.rollups.delete().where(tables.rollups.c.series_id.in_(series))
            if held is None:
                conn.execute(delete)
                added = wanted
            else:
                have = rollups.parse_granularities(held)
                dropped = sorted(set(have) - set(wanted))
                if dropped:
                    conn.execute(delete.where(tables.rollups.c.granularity.in_(dropped)))
                added = tuple(sorted(set(wanted) - set(have)))
            if added:
                self._build_rollups(conn, name, added)
            record = self._insert(tables.rollup_meters).values(
                name=name, granularities=rollups.format_granularities(wanted)
            )
            conn.execute(
                record.on_conflict_do_update(
                    index_elements=[tables.rollup_meters.c.name],
                    set_={"granularities": record.excluded.granularities},
                )
            )
            LOG.info(
                "rollups of %s now kept at %s s (were %s)",
                name,
                rollups.format_granularities(wanted) or "none",
                held or "none",
            )

    def _policy_changes(self, conn: sa.Connection) -> dict[str, str | None]:
        """Meters whose rollups differ from the archive policy: name -> what they hold."""
        names = conn.execute(sa.select(tables.series.c.name).distinct()).scalars().all()
        held: dict[str, str | None] = dict(
            conn.execute(
                sa.select(tables.rollup_meters.c.name, tables.rollup_meters.c.granularities)
            ).all()
        )
        return {
            name: held.get(name)
            for name in {*names, *held}
            if held.get(name) != self._wanted_granularities(name)
        }

    def _build_rollups(
        self, conn: sa.Connection, name: str, granularities: tuple[int, ...]
    ) -> None:
        """Aggregate the stored samples of meter ``name`` into rollups of ``granularities``."""
        series_ids = (
            conn.execute(sa.select(tables.series.c.id).where(tables.series.c.name == name))
            .scalars()
            .all()
        )
        for series_id in sorted(series_ids):
            points = conn.execute(
                sa.select(tables.samples.c.timestamp, tables.samples.c.volume)
                .where(tables.samples.c.series_id == series_id)
                .order_by(tables.samples.c.timestamp, tables.samples.c.id)
            ).all()
            levels = self._levels_from(name, granularities, time.time_ns() // 1000)
            acc = rollups.accumulate(
                [series_id] * len(points),
                [stamp for stamp, _ in points],
                [volume for _, volume in points],
                [levels] * len(points),
            )
            self._write_rollups(conn, acc)
        # Every level was written here, derived ones too: moved as they are. (Nothing
        # else was staged: _apply_archive_policy moved that first.)
        self._move_staged(conn, derive=False)

    # -- writing ------------------------------------------------------------------------

    def write_batch(
        self, samples: Sequence[Counter], dead_letters: Sequence[DeadLetter] = ()
    ) -> WriteResult:
        """Store new samples and the dead letters in one transaction.

        Raises ValueError, before touching the database, if a sample has no ``id``.
        """
        message_ids = [counter.id for counter in samples]
        if None in message_ids:
            counter = samples[message_ids.index(None)]
            raise ValueError(f"sample {counter.name} of {counter.resource_id} has no message id")
        keys = encode_message_ids(cast("list[str]", message_ids))  # no None: checked above
        unique = dict(zip(keys, samples, strict=True))
        if len(unique) != len(samples):
            # Repeats inside the batch: keep each id's first sample, in batch order.
            unique = {}
            for key, counter in zip(keys, samples, strict=True):
                unique.setdefault(key, counter)

        new_series: dict[SeriesKey, int] = {}
        new_metadata: dict[bytes, int] = {}
        stored = 0
        with self._writer.begin() as conn:
            # Samples stored before (a redelivered batch) are skipped by the insert's
            # ON CONFLICT DO NOTHING, which also counts exactly the rows it stored.
            if unique:
                stored = self._write_samples(conn, unique, new_series, new_metadata)
            if dead_letters:
                self._write_dead_letters(conn, dead_letters)
        # Ids become visible to other batches only once their rows are committed.
        self._series_ids.publish(new_series)
        self._metadata_ids.publish(new_metadata)
        return WriteResult(
            stored=stored,
            duplicates=len(samples) - stored,
            dead_letters=len(dead_letters),
        )

    def _write_samples(
        self,
        conn: sa.Connection,
        unique: dict[bytes, Counter],
        new_series: dict[SeriesKey, int],
        new_metadata: dict[bytes, int],
    ) -> int:
        if self.dialect_name == "postgresql":
            # Not while an upgrade applies the archive policy (see upgrade).
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(_POLICY_LOCK)))
            # Unique keys in one order in every writer: concurrent PostgreSQL
            # transactions then take row locks in one order and cannot deadlock.
            # (SQLite writers take the whole database in turn; no need there.)
            unique = dict(sorted(unique.items()))
        counters = list(unique.values())
        series_keys: list[SeriesKey] = [
            (c.name, c.type, c.unit, c.resource_id, c.user_id, c.project_id, c.source)
            for c in counters
        ]
        bodies = _canonical_bodies(counters)
        series_ids = self._resolve(
            conn, series_keys, self._series_ids, self._add_series, new_series
        )
        metadata_ids = self._resolve(
            conn, bodies, self._metadata_ids, self._add_metadata, new_metadata
        )
        stamps = [(c.timestamp - EPOCH) // _ONE_US for c in counters]
        batch_id = conn.execute(
            tables.batches.insert()
            .values(recorded_at=time.time_ns() // 1000)
            .returning(tables.batches.c.id)
        ).scalar_one()
        rows = list(
            zip(
                stamps,
                [float(c.volume) for c in counters],
                itertools.repeat(batch_id),
                series_ids,
                metadata_ids,
                unique,
            )
        )
        if self.dialect_name == "postgresql":
            stored = _copy_samples(conn, rows)
        else:
            stored = self._insert_samples.execute(conn, rows)
        self._upsert_resources(conn, counters, stamps, metadata_ids)
        if stored:
            self._roll_up(conn, counters, rows, stored, batch_id)
        if batch_id % self.rollup_move_every == 0:
            # Whatever this batch stored: a redelivered batch moves what others staged.
            self._move_staged(conn)
        return stored

    def _roll_up(
        self,
        conn: sa.Connection,
        counters: list[Counter],
        rows: list[tuple[Any, ...]],
        stored: int,
        batch_id: int,
    ) -> None:
        """Add the samples this batch stored to their rollups, in the batch's transaction."""
        kept = self._meter_granularities(conn, {c.name for c in counters})
        if stored < len(rows):
            # Some were stored before (a redelivery): they count in the batch that
            # stored them, never again here.
            mine = self._stored_by_batch(conn, batch_id, [row[5] for row in rows])
            pairs = [(c, row) for c, row in zip(counters, rows, strict=True) if row[5] in mine]
            counters, rows = [c for c, _ in pairs], [row for _, row in pairs]
        # A bucket that expiry may delete already is not worth writing (a backfill
        # of last month need not fill the 1-minute level kept a day).
        now = time.time_ns() // 1000
        levels = {name: self._ingest_levels(name, seconds, now) for name, seconds in kept.items()}
        acc = rollups.accumulate(
            [row[3] for row in rows],
            [row[0] for row in rows],
            [row[1] for row in rows],
            [levels[c.name] for c in counters],
        )
        self._write_rollups(conn, acc)

    def _write_rollups(self, conn: sa.Connection, rows: list[rollups.Row]) -> None:
        """Merge rollup rows into the stored ones.

        SQLite stages them in ``rollups_recent``, keyed by time, where a batch's rows
        lie on a few pages; keyed by series, a batch touching every series would
        dirty a page per series and level in ``rollups``, and each dirty page costs
        a WAL write at commit. :meth:`_move_staged` moves them on every
        ``rollup_move_every`` batches, when a page it dirties holds the rows of
        that many batches. PostgreSQL writers run side by side, and moving rows
        between tables under them would need locking; they write ``rollups``.
        """
        if self._stages_rollups:
            self._stage_rollups.execute(conn, rows)
            return
        # As for samples: COPY into a temporary table, then one INSERT ... SELECT.
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_rollups (LIKE rollups)"
                " ON COMMIT DELETE ROWS"
            )
            with cursor.copy(
                f"COPY incoming_rollups ({', '.join(_ROLLUP_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(_ROLLUP_TYPES)
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self._move_rollups)
            cursor.execute("TRUNCATE incoming_rollups")

    def _ingest_levels(
        self, name: str, granularities: tuple[int, ...], now: int
    ) -> tuple[rollups.Level, ...]:
        """The levels a batch writes for meter ``name``: every level, but where rows
        are staged, only the levels no other derives from (rollups.derivations);
        moving staged rows sums them up into the derived levels. A derived level's
        rows would be rewritten by every batch that touches its series, and a day's
        row holds a day of batches. A written level then keeps the buckets its
        derived levels need too."""
        levels = self._levels_from(name, granularities, now)
        if not self._stages_rollups:
            return levels
        derived = rollups.derivations(granularities)
        if not derived:
            return levels
        earliest = dict(levels)
        for seconds, source in derived.items():
            mine, theirs = earliest[source], earliest[seconds]
            earliest[source] = None if mine is None or theirs is None else min(mine, theirs)
        return tuple(
            (seconds, earliest[seconds]) for seconds, _ in levels if seconds not in derived
        )

    def _levels_from(
        self, name: str, granularities: tuple[int, ...], now: int
    ) -> tuple[rollups.Level, ...]:
        """Each granularity kept for ``name`` with the earliest bucket expiry would keep."""
        timespans = {level.seconds: level.timespan for level in self._archive.levels_for(name)}
        levels = []
        for seconds in granularities:
            timespan = timespans.get(seconds)
            width = seconds * 1_000_000
            # expire() deletes a bucket once bucket + width <= now - timespan.
            earliest = None if timespan is None else now - timespan // _ONE_US - width + 1
            levels.append((seconds, earliest))
        return tuple(levels)

    def _stored_by_batch(self, conn: sa.Connection, batch_id: int, keys: list[bytes]) -> set[bytes]:
        mine: set[bytes] = set()
        column = tables.samples.c.message_id
        for chunk in _chunks(keys, self._in_chunk):
            query = sa.select(column).where(
                column.in_(chunk), tables.samples.c.batch_id == batch_id
            )
            mine.update(bytes(key) for key in conn.execute(query).scalars())
        return mine

    def _meter_granularities(
        self, conn: sa.Connection, names: set[str]
    ) -> dict[str, tuple[int, ...]]:
        """The granularities kept for each meter: as recorded, or recorded now from the policy.

        Read in every batch's transaction, never cached: an upgrade by another
        process may have changed them, and what a SQLite batch stages must be what
        the move that follows it sums up (rollups.derivations of the record).
        """
        known: dict[str, tuple[int, ...]] = {}

        def read(wanted: list[str]) -> None:
            record = tables.rollup_meters.c
            for chunk in _chunks(wanted, self._in_chunk):
                stmt = sa.select(record.name, record.granularities).where(record.name.in_(chunk))
                for name, text in conn.execute(stmt):
                    known[name] = rollups.parse_granularities(text)

        read(sorted(names))
        missing = sorted(names - known.keys())
        if missing:
            record = self._insert(tables.rollup_meters).on_conflict_do_nothing()
            conn.execute(
                record,
                [{"name": n, "granularities": self._wanted_granularities(n)} for n in missing],
            )
            # Read back: a record made meanwhile by another writer (or an upgrade) wins.
            read(missing)
        return known

    def _move_staged(self, conn: sa.Connection, derive: bool = True) -> None:
        """Move the rollup rows staged on SQLite into ``rollups``, and unless told
        not to, add them to the levels that derive from them (see _ingest_levels)."""
        if not self._stages_rollups:
            return
        if derive:
            self._derive_staged(conn)
        conn.execute(self._move_staged_rollups)
        # No WHERE: SQLite drops the table's pages at once instead of row by row.
        conn.execute(tables.rollups_recent.delete())

    def _derive_staged(self, conn: sa.Connection) -> None:
        """Sum the staged rows up into the levels derived from them, into ``rollups``."""
        meters = conn.execute(
            sa.select(tables.rollup_meters.c.name, tables.rollup_meters.c.granularities)
        ).all()
        by_derivation: dict[tuple[tuple[int, int], ...], set[str]] = {}
        for text in {text for _, text in meters}:
            derived = rollups.derivations(rollups.parse_granularities(text))
            if derived:
                by_derivation.setdefault(tuple(sorted(derived.items())), set()).add(text)
        counts = collections.Counter(text for _, text in meters)
        for pairs, texts in by_derivation.items():
            series = None
            if sum(counts[text] for text in texts) < len(meters):
                record = tables.rollup_meters.c
                series = sa.select(tables.series.c.id).where(
                    tables.series.c.name.in_(
                        sa.select(record.name).where(record.granularities.in_(sorted(texts)))
                    )
                )
            for seconds, source in pairs:
                conn.execute(
                    self._merge_rollups(tables.rollups, _summed_up(source, seconds, series))
                )

    def _merge_rollups(self, table: sa.Table, rows: sa.Select[Any] | None = None) -> Any:
        """INSERT into ``table`` ... ON CONFLICT merging new partial aggregates into
        stored ones: of bound rows, or of ``rows`` (in ``_ROLLUP_COLUMNS`` order)."""
        insert = self._insert(table)
        if rows is not None:
            # SQLite needs a WHERE to tell ON CONFLICT from a join's ON.
            insert = insert.from_select(_ROLLUP_COLUMNS, rows.where(sa.true()))
        new, old = insert.excluded, table.c
        earlier = new.first_at < old.first_at
        # On equal times the later write is the newer, as _upsert_resources counts it.
        later = new.last_at >= old.last_at
        return insert.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={
                "n": old.n + new.n,
                "total": old.total + new.total,
                "low": sa.case((new.low < old.low, new.low), else_=old.low),
                "high": sa.case((new.high > old.high, new.high), else_=old.high),
                "squares": old.squares + new.squares,
                "first_at": sa.case((earlier, new.first_at), else_=old.first_at),
                "first_value": sa.case((earlier, new.first_value), else_=old.first_value),
                "last_at": sa.case((later, new.last_at), else_=old.last_at),
                "last_value": sa.case((later, new.last_value), else_=old.last_value),
            },
        )

    @staticmethod
    def _resolve(
        conn: sa.Connection,
        keys: list[K],
        cache: _Cache[K],
        add: Callable[[sa.Connection, set[K]], dict[K, int]],
        new: dict[K, int],
    ) -> list[int]:
        """The row id of each of ``keys``: from ``cache``, else inserted or found by ``add``."""
        ids = [cache.get(key) for key in keys]
        if None not in ids:
            return ids  # type: ignore[return-value]
        added = add(conn, {key for key, row_id in zip(keys, ids, strict=True) if row_id is None})
        new.update(added)
        return [
            added[key] if row_id is None else row_id for key, row_id in zip(keys, ids, strict=True)
        ]

    def _add_series(self, conn: sa.Connection, keys: set[SeriesKey]) -> dict[SeriesKey, int]:
        by_digest = {_digest(orjson.dumps(key)): key for key in keys}
        digests = sorted(by_digest)
        rows = [
            dict(zip(_SERIES_COLUMNS, (digest, *by_digest[digest]), strict=True))
            for digest in digests
        ]
        # DO NOTHING, then read back: another collector may have added the same series.
        conn.execute(self._insert(tables.series).on_conflict_do_nothing(), rows)
        ids: dict[SeriesKey, int] = {}
        for chunk in _chunks(digests, self._in_chunk):
            query = sa.select(tables.series.c.key, tables.series.c.id).where(
                tables.series.c.key.in_(chunk)
            )
            for digest, row_id in conn.execute(query):
                ids[by_digest[bytes(digest)]] = row_id
        return ids

    def _add_metadata(self, conn: sa.Connection, bodies: set[bytes]) -> dict[bytes, int]:
        by_digest = {_digest(body): body for body in bodies}
        digests = sorted(by_digest)
        rows = [{"digest": d, "body": by_digest[d].decode("utf-8")} for d in digests]
        conn.execute(self._insert(tables.metadata_bodies).on_conflict_do_nothing(), rows)
        ids: dict[bytes, int] = {}
        for chunk in _chunks(digests, self._in_chunk):
            query = sa.select(tables.metadata_bodies.c.digest, tables.metadata_bodies.c.id).where(
                tables.metadata_bodies.c.digest.in_(chunk)
            )
            for digest, row_id in conn.execute(query):
                ids[by_digest[bytes(digest)]] = row_id
        return ids

    def _upsert_resources(
        self,
        conn: sa.Connection,
        counters: list[Counter],
        stamps: list[int],
        metadata_ids: list[int],
    ) -> None:
        """Widen the first/last seen of each resource in each project; take owner and
        metadata from that project's newest sample of it."""
        resource_ids = [c.resource_id for c in counters]
        projects = [c.project_id for c in counters]
        # Walking samples oldest first, a dict keeps each key's newest index;
        # walking them newest first, its oldest. (sorted() is stable: on equal
        # timestamps the later sample in the batch counts as the newer.)
        order = sorted(range(len(counters)), key=stamps.__getitem__)
        newest: dict[Any, int] = {resource_ids[i]: i for i in order}
        keys: list[Any] = resource_ids
        # A batch mostly holds each resource in one project: then the resource id
        # alone is the key, which is quicker than pairs. Otherwise the key is the
        # pair (resource id, project), no project being '' as in the table.
        if list(map({r: projects[i] for r, i in newest.items()}.__getitem__, keys)) != projects:
            keys = list(zip(resource_ids, [project or "" for project in projects], strict=True))
            newest = {keys[i]: i for i in order}
        first = {keys[i]: stamps[i] for i in reversed(order)}
        rows = []
        for key, i in sorted(newest.items()):
            counter = counters[i]
            rows.append(
                (
                    counter.resource_id,
                    counter.project_id or "",
                    counter.user_id,
                    counter.source,
                    metadata_ids[i],
                    first[key],
                    stamps[i],
                )
            )
        self._upsert_resources_many.execute(conn, rows)

    def _build_resources_upsert(self) -> Any:
        insert = self._insert(tables.resources)
        new = insert.excluded
        newer = new.last_seen >= tables.resources.c.last_seen

        def newest(name: str) -> sa.ColumnElement[Any]:
            return sa.case((newer, new[name]), else_=tables.resources.c[name])

        return insert.on_conflict_do_update(
            index_elements=[tables.resources.c.resource_id, tables.resources.c.project_id],
            set_={
                "first_seen": sa.case(
                    (new.first_seen < tables.resources.c.first_seen, new.first_seen),
                    else_=tables.resources.c.first_seen,
                ),
                "last_seen": sa.case((newer, new.last_seen), else_=tables.resources.c.last_seen),
                "user_id": newest("user_id"),
                "source": newest("source"),
                "metadata_id": newest("metadata_id"),
            },
        )

    def _write_dead_letters(self, conn: sa.Connection, letters: Sequence[DeadLetter]) -> None:
        rows = [
            {
                "received_at": to_micros(letter.received_at),
                "reason": letter.reason,
                "message_id": letter.message_id,
                "body": bytes(letter.body),
            }
            for letter in letters
        ]
        conn.execute(tables.dead_letters.insert(), rows)

    # -- retention ----------------------------------------------------------------------

    def expire(self, now: datetime | None = None) -> int:
        """Delete samples older than ``store.retention`` allows; return how many.

        Each meter's series are found by name, then their samples older than the
        cut-off are deleted through the (series, timestamp) index, at most
        ``retention.batch_size`` per transaction. Series, metadata and resources
        stay: they are small, and the ids the writers cache remain valid.
        Rollups expire by the archive policy, on their own: a bucket goes once
        its end is older than its level's timespan, whatever became of the raw
        samples it sums up.
        """
        policy = self._retention
        now = now or datetime.now(UTC)
        if self._stages_rollups:
            # Staged rows expire too: move them where expiry looks.
            with self._writer.begin() as conn:
                self._move_staged(conn)
        with self.engine.connect() as conn:
            names = conn.execute(sa.select(tables.series.c.name).distinct()).scalars().all()
        deleted = 0
        buckets = 0
        for name in names:
            series = sa.select(tables.series.c.id).where(tables.series.c.name == name)
            period = policy.period_for(name)
            if period is not None:
                doomed = (
                    sa.select(tables.samples.c.id)
                    .where(
                        tables.samples.c.series_id.in_(series),
                        tables.samples.c.timestamp < to_micros(now - period),
                    )
                    .limit(policy.batch_size)
                )
                deleted += self._delete_in_batches(
                    tables.samples.delete().where(tables.samples.c.id.in_(doomed))
                )
            for level in self._archive.levels_for(name):
                if level.timespan is None:
                    continue
                width = level.seconds * 1_000_000
                table = tables.rollups.c
                key = sa.tuple_(table.series_id, table.granularity, table.bucket)
                old = (
                    sa.select(table.series_id, table.granularity, table.bucket)
                    .where(
                        table.series_id.in_(series),
                        table.granularity == level.seconds,
                        table.bucket <= to_micros(now - level.timespan) - width,
                    )
                    .limit(policy.batch_size)
                )
                buckets += self._delete_in_batches(tables.rollups.delete().where(key.in_(old)))
        if deleted:
            LOG.info("expired %d sample(s) past their retention", deleted)
        if buckets:
            LOG.info("expired %d rollup bucket(s) past their archive policy", buckets)
        return deleted

    def _delete_in_batches(self, delete: sa.Delete) -> int:
        """Run ``delete`` (limited to a batch) in transactions until it deletes less."""
        total = 0
        while True:
            with self._writer.begin() as conn:
                count = conn.execute(delete).rowcount
            total += count
            if count < self._retention.batch_size:
                return total

    # -- reading ------------------------------------------------------------------------

    def samples(
        self,
        query: SampleFilter,
        limit: int | None = 100,
        *,
        where: Expression | None = None,
        orderby: Sequence[tuple[str, bool]] = (),
    ) -> list[StoredSample]:
        """Samples matching ``query`` and ``where``, newest first; ``limit=None`` returns all.

        Raises ValueError for a field or operator ``where`` or ``orderby`` cannot use.
        """
        extra = [] if where is None else [self._expression(where)]
        order: list[sa.ColumnElement[Any]] = []
        for name, descending in orderby:
            if name not in CONDITION_FIELDS or name == "message_id":
                raise ValueError(f"cannot order by {name!r}")
            column = _condition_column(name)
            order.append(column.desc() if descending else column.asc())
        stmt = (
            sa.select(
                tables.samples.c.message_id,
                tables.series.c.name,
                tables.series.c.type,
                tables.series.c.unit,
                tables.samples.c.volume,
                tables.series.c.user_id,
                tables.series.c.project_id,
                tables.series.c.resource_id,
                tables.samples.c.timestamp,
                tables.batches.c.recorded_at,
                tables.metadata_bodies.c.body,
                tables.series.c.source,
            )
            .select_from(
                tables.samples.join(tables.series, tables.series.c.id == tables.samples.c.series_id)
                .join(tables.batches, tables.batches.c.id == tables.samples.c.batch_id)
                .join(
                    tables.metadata_bodies,
                    tables.metadata_bodies.c.id == tables.samples.c.metadata_id,
                )
            )
            .where(
                *_series_conditions(query),
                *_time_conditions(query),
                *self._metadata_conditions(query, tables.metadata_bodies.c.body),
                *extra,
            )
            .order_by(*order, tables.samples.c.timestamp.desc(), tables.samples.c.id.desc())
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        # Samples of one resource mostly share a metadata document: parse each once.
        parsed: dict[str, Mapping[str, Any]] = {}

        def metadata_of(body: str) -> Mapping[str, Any]:
            found = parsed.get(body)
            if found is None:
                found = parsed[body] = orjson.loads(body)
            return found

        return [
            StoredSample(
                message_id=decode_message_id(message_id),
                name=name,
                type=type_,
                unit=unit,
                volume=volume,
                user_id=user_id,
                project_id=project_id,
                resource_id=resource_id,
                timestamp=from_micros(stamp),
                recorded_at=from_micros(recorded_at),
                resource_metadata=metadata_of(body),
                source=source,
            )
            for (
                message_id,
                name,
                type_,
                unit,
                volume,
                user_id,
                project_id,
                resource_id,
                stamp,
                recorded_at,
                body,
                source,
            ) in rows
        ]

    def meters(self, query: SampleFilter) -> list[MeterInfo]:
        """Each meter on each resource (one per owner) with samples matching ``query``."""
        stmt = sa.select(
            tables.series.c.name,
            tables.series.c.type,
            tables.series.c.unit,
            tables.series.c.resource_id,
            tables.series.c.user_id,
            tables.series.c.project_id,
            tables.series.c.source,
        ).where(*_series_conditions(query), self._has_samples(query))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        found = {MeterInfo(*row) for row in rows}
        # Sorted here, not in SQL, so both databases give one order whatever their collation.
        return sorted(
            found,
            key=lambda m: (
                m.name,
                m.resource_id,
                _none_first(m.user_id),
                _none_first(m.project_id),
                m.source,
                m.type,
                m.unit,
            ),
        )

    def resources(self, query: SampleFilter) -> list[ResourceInfo]:
        """Resources having a meter with samples matching ``query``.

        With ``query.project_id``, a resource is as that project's samples describe
        it: owner and metadata of the project's newest sample of it, first and last
        seen among its samples; nothing of another project's samples of the same
        resource id. Without, each resource id is listed once: owner and metadata
        of its newest sample in any project (on equal times, of the greater project
        id), first and last seen among all its samples. ``meters`` lists the
        resource's meters that match ``query``. Samples without a project (or
        with an empty one) describe the resource as one project, ``None``.
        """
        resources = tables.resources.c
        on = resources.resource_id == tables.series.c.resource_id
        if query.project_id is not None:
            # Each series meets the row of its own project (no project: '').
            on = sa.and_(
                on, resources.project_id == sa.func.coalesce(tables.series.c.project_id, "")
            )
        stmt = (
            sa.select(
                resources.resource_id,
                resources.project_id,
                resources.user_id,
                resources.source,
                resources.first_seen,
                resources.last_seen,
                tables.metadata_bodies.c.body,
                tables.series.c.name,
            )
            .select_from(
                tables.series.join(tables.resources, on).join(
                    tables.metadata_bodies,
                    tables.metadata_bodies.c.id == resources.metadata_id,
                )
            )
            .where(*_series_conditions(query), self._has_samples(query))
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        # Per resource id: its newest row, and the earliest and latest sample of all
        # its rows (with a project in the query, they are all that project's row).
        newest: dict[str, Any] = {}
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        names: dict[str, set[str]] = {}
        for row in rows:
            resource_id = row.resource_id
            names.setdefault(resource_id, set()).add(row.name)
            found = newest.get(resource_id)
            if found is None:
                newest[resource_id] = row
                first[resource_id], last[resource_id] = row.first_seen, row.last_seen
                continue
            if (row.last_seen, row.project_id) > (found.last_seen, found.project_id):
                newest[resource_id] = row
            first[resource_id] = min(first[resource_id], row.first_seen)
            last[resource_id] = max(last[resource_id], row.last_seen)
        return [
            ResourceInfo(
                resource_id=resource_id,
                user_id=row.user_id,
                project_id=row.project_id or None,
                source=row.source,
                first_sample_timestamp=from_micros(first[resource_id]),
                last_sample_timestamp=from_micros(last[resource_id]),
                metadata=orjson.loads(row.body),
                meters=tuple(sorted(names[resource_id])),
            )
            for resource_id, row in sorted(newest.items())
        ]

    def statistics(
        self,
        query: SampleFilter,
        period: int | None = None,
        groupby: Sequence[str] = (),
        aggregates: Sequence[Aggregate] = (),
        *,
        rollups: bool = True,
    ) -> list[Statistic]:
        """count/min/max/sum/avg of ``query.meter``, per unit, over ``period``-second buckets.

        Buckets start at ``query.since`` or else at the first matching sample; only
        buckets holding samples are returned, oldest first. Without a period there
        is one bucket spanning the first to the last sample, as in Ceilometer.
        ``groupby`` splits each bucket by the named fields (``metadata.<key>`` for
        resource metadata); ``aggregates`` adds the asked functions (``stddev`` is
        the population standard deviation, ``cardinality`` counts the distinct
        values of its parameter) to each statistic's ``aggregate``.

        The answer comes from rollups where they cover the range (see
        :func:`nephoscope.storage.rollups.plan`) and from raw samples elsewhere;
        ``rollups=False`` scans raw samples only. Queries on resource metadata
        always scan raw samples: rollups are per series, not per metadata.
        """
        if query.meter is None:
            raise ValueError("statistics needs a meter")
        wanted = list(dict.fromkeys(aggregates))
        check_statistics_args(period, groupby, wanted)
        group_columns = [self._group_column(name) for name in groupby]
        distinct_of = [param for func, param in wanted if func == "cardinality" and param]
        by_metadata = bool(query.metadata) or any(name.startswith("metadata.") for name in groupby)
        since = None if query.since is None else to_micros(query.since)
        until = None if query.until is None else to_micros(query.until)
        with self.engine.connect() as conn:
            if self.dialect_name == "postgresql":
                # One snapshot for every read below: a batch committed between two
                # of them would otherwise be seen by one part of the plan only.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            levels: list[tuple[int, int | None]] = []
            if rollups and not by_metadata and query.message_id is None:
                levels = self._rollup_levels(conn, query.meter)
            start = 0
            if period:
                first = since if since is not None else self._first_timestamp(conn, query, levels)
                if first is None:
                    return []
                start = first
            plan = _plan(levels, since, until, start, period)
            reader = _StatisticsReader(
                self, conn, query, start, period, group_columns, self._staged_as(levels)
            )
            for piece in plan.pieces:
                reader.read_rollups(piece, distinct_of)
            for window in plan.raw:
                reader.read_samples(window, distinct_of)
        return _statistics(reader, groupby, wanted, start, period)

    def _staged_as(self, levels: list[tuple[int, int | None]]) -> dict[int, int]:
        """Granularity -> the granularity its staged rows have (see _ingest_levels)."""
        if not self._stages_rollups:
            return {}
        return rollups.derivations(seconds for seconds, _ in levels)

    def _rollup_levels(self, conn: sa.Connection, meter: str) -> list[tuple[int, int | None]]:
        """(granularity s, timespan µs) of the rollups held for ``meter`` and trusted now."""
        held = conn.execute(
            sa.select(tables.rollup_meters.c.granularities).where(
                tables.rollup_meters.c.name == meter
            )
        ).scalar()
        if held is None or held != self._wanted_granularities(meter):
            # Not built yet, or built for another policy than this one (until an
            # upgrade applies it): raw samples are the truth.
            return []
        return [
            (level.seconds, None if level.timespan is None else level.timespan // _ONE_US)
            for level in self._archive.levels_for(meter)
        ]

    def _first_timestamp(
        self, conn: sa.Connection, query: SampleFilter, levels: list[tuple[int, int | None]]
    ) -> int | None:
        """The time of the first sample matching ``query`` (which has no ``since``)."""
        conditions = [*_series_conditions(query), *_time_conditions(query)]
        raw = tables.samples.join(tables.series, tables.series.c.id == tables.samples.c.series_id)
        if query.metadata:
            raw = raw.join(
                tables.metadata_bodies,
                tables.metadata_bodies.c.id == tables.samples.c.metadata_id,
            )
            conditions.extend(self._metadata_conditions(query, tables.metadata_bodies.c.body))
        forever = [seconds for seconds, timespan in levels if timespan is None]
        if not forever:
            return cast(
                "int | None",
                conn.execute(
                    sa.select(sa.func.min(tables.samples.c.timestamp))
                    .select_from(raw)
                    .where(*conditions)
                ).scalar(),
            )
        # A level kept for ever has a bucket for every sample ever stored: its
        # earliest first_at is the first sample, found without reading samples.
        coarsest = max(forever)
        firsts = []
        for rollup_table in self._rollup_tables:
            table = rollup_table.c
            granularity = coarsest
            if rollup_table is tables.rollups_recent:
                granularity = self._staged_as(levels).get(coarsest, coarsest)
            stmt = (
                sa.select(sa.func.min(table.first_at))
                .select_from(
                    rollup_table.join(tables.series, tables.series.c.id == table.series_id)
                )
                .where(*_series_conditions(query), table.granularity == granularity)
            )
            if query.until is not None:
                # The earliest first_at is the first sample ever: if it lies before the
                # end, it is the first in range; if not, nothing is.
                stmt = stmt.where(table.first_at < to_micros(query.until))
            first = conn.execute(stmt).scalar()
            if first is not None:
                firsts.append(first)
        return min(firsts, default=None)

    # -- metadata queries -----------------------------------------------------------------

    def _metadata_path(self, body: sa.ColumnElement[Any], key: str) -> sa.ColumnElement[Any]:
        """The value at dotted ``key`` of a JSON metadata ``body``, as text on PostgreSQL."""
        parts = _metadata_key(key)
        if self.dialect_name == "postgresql":
            return sa.cast(body, postgresql.JSONB).op("#>>")(
                sa.cast(sa.literal(parts, postgresql.ARRAY(sa.Text())), postgresql.ARRAY(sa.Text()))
            )
        path = "$" + "".join(f'."{part}"' for part in parts)
        return sa.func.json_extract(body, path)

    def _metadata_conditions(
        self, query: SampleFilter, body: sa.ColumnElement[Any]
    ) -> list[sa.ColumnElement[bool]]:
        conditions: list[sa.ColumnElement[bool]] = []
        for key, value in query.metadata:
            parts = _metadata_key(key)
            if self.dialect_name == "postgresql":
                # jsonb equality: numbers by value (1 = 1.0), strings never equal numbers.
                found = sa.cast(body, postgresql.JSONB).op("#>")(
                    sa.cast(
                        sa.literal(parts, postgresql.ARRAY(sa.Text())),
                        postgresql.ARRAY(sa.Text()),
                    )
                )
                conditions.append(
                    found == sa.cast(sa.literal(orjson.dumps(value).decode()), postgresql.JSONB)
                )
            else:
                path = "$" + "".join(f'."{part}"' for part in parts)
                extracted = sa.func.json_extract(body, path)
                if isinstance(value, bool):
                    kind = "true" if value else "false"
                    conditions.append(sa.func.json_type(body, path) == kind)
                elif isinstance(value, str):
                    conditions.append(
                        sa.and_(sa.func.json_type(body, path) == "text", extracted == value)
                    )
                else:
                    conditions.append(
                        sa.and_(
                            sa.func.json_type(body, path).in_(("integer", "real")),
                            extracted == value,
                        )
                    )
        return conditions

    def _expression(self, expression: Expression) -> sa.ColumnElement[bool]:
        """A complex query's filter in SQL (samples joined to series and metadata)."""
        if not isinstance(expression, Condition):
            parts = [self._expression(operand) for operand in expression.operands]
            if expression.op == "not" and len(parts) == 1:
                return sa.not_(parts[0])
            if expression.op in ("and", "or") and parts:
                return sa.and_(*parts) if expression.op == "and" else sa.or_(*parts)
            raise ValueError(f"bad {expression.op!r} with {len(parts)} operand(s)")
        field, op, value = expression.field, expression.op, expression.value
        if op not in CONDITION_OPERATORS:
            raise ValueError(f"unknown operator {op!r}")
        values = list(value) if op == "in" else [value]
        if op == "in" and not values:
            return sa.false()
        if field.startswith("metadata."):
            return self._metadata_condition(field[len("metadata.") :], op, values)
        if field not in CONDITION_FIELDS:
            raise ValueError(f"unknown field {field!r}")
        column = _condition_column(field)
        if field == "timestamp":
            if not all(isinstance(v, datetime) for v in values):
                raise ValueError("timestamp compares with times")
            values = [to_micros(v) for v in values]
        elif field == "volume":
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ValueError("volume compares with numbers")
            values = [float(v) for v in values]
        elif not all(isinstance(v, str) for v in values):
            raise ValueError(f"{field} compares with text")
        elif field == "message_id":
            if op not in ("=", "!=", "in"):
                raise ValueError(f"message_id takes =, != and in, not {op}")
            values = [encode_message_id(v) for v in values]
        if op == "like":
            if field in ("timestamp", "volume"):
                raise ValueError(f"like compares text, not {field}")
            return column.like(values[0])
        if op == "in":
            return column.in_(values)
        return _compare(column, op, values[0])

    def _metadata_condition(self, key: str, op: str, values: list[Any]) -> sa.ColumnElement[bool]:
        body = tables.metadata_bodies.c.body
        if op == "like":
            if not isinstance(values[0], str):
                raise ValueError("like compares text")
            return self._metadata_path(body, key).like(values[0])
        for value in values:
            if value is None or not isinstance(value, (str, int, float, bool)):
                raise ValueError(f"metadata.{key} compares with text, numbers or booleans")
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
                raise ValueError(f"{value} is too large")
        if op in ("=", "in"):
            return sa.or_(
                *(
                    sa.and_(*self._metadata_conditions(SampleFilter(metadata=((key, v),)), body))
                    for v in values
                )
            )
        if op == "!=":
            return sa.not_(
                sa.and_(
                    *self._metadata_conditions(SampleFilter(metadata=((key, values[0]),)), body)
                )
            )
        value = values[0]
        parts = _metadata_key(key)
        if self.dialect_name == "postgresql":
            found = sa.cast(body, postgresql.JSONB).op("#>")(
                sa.cast(sa.literal(parts, postgresql.ARRAY(sa.Text())), postgresql.ARRAY(sa.Text()))
            )
            return _compare(
                found, op, sa.cast(sa.literal(orjson.dumps(value).decode()), postgresql.JSONB)
            )
        path = "$" + "".join(f'."{part}"' for part in parts)
        kinds = ("text",) if isinstance(value, str) else ("integer", "real")
        if isinstance(value, bool):
            raise ValueError("booleans take = and !=")
        return sa.and_(
            sa.func.json_type(body, path).in_(kinds),
            _compare(sa.func.json_extract(body, path), op, value),
        )

    def _group_column(self, name: str) -> sa.ColumnElement[Any]:
        """The column of a groupby name that check_statistics_args let through."""
        if name in GROUPBY_FIELDS:
            return tables.series.c[name]
        return self._metadata_path(tables.metadata_bodies.c.body, name[len("metadata.") :])

    def _has_samples(self, query: SampleFilter) -> sa.Exists:
        # Time filters apply to a series' samples; a series with none left is not listed.
        conditions = [tables.samples.c.series_id == tables.series.c.id, *_time_conditions(query)]
        stmt = sa.select(sa.literal(1))
        if query.metadata:
            bodies = tables.metadata_bodies.alias("sample_metadata")
            stmt = stmt.select_from(
                tables.samples.join(bodies, bodies.c.id == tables.samples.c.metadata_id)
            )
            conditions.extend(self._metadata_conditions(query, bodies.c.body))
        return stmt.where(*conditions).exists()

    def dead_letters(self, limit: int = 100) -> list[StoredDeadLetter]:
        """The most recently received dead letters, newest first."""
        stmt = (
            sa.select(
                tables.dead_letters.c.id,
                tables.dead_letters.c.received_at,
                tables.dead_letters.c.reason,
                tables.dead_letters.c.body,
                tables.dead_letters.c.message_id,
            )
            .order_by(tables.dead_letters.c.received_at.desc(), tables.dead_letters.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            StoredDeadLetter(
                id=row_id,
                received_at=from_micros(received_at),
                reason=reason,
                body=bytes(body),
                message_id=message_id,
            )
            for row_id, received_at, reason, body, message_id in rows
        ]

    def status(self) -> StoreStatus:
        """Row counts, the newest sample and batch times, and the schema revision."""
        with self.engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
            if revision is None and not sa.inspect(conn).has_table(tables.samples.name):
                return StoreStatus(self._public_url(), 0, 0, 0, None, None, None)

            def scalar(stmt: sa.Select[Any]) -> Any:
                return conn.execute(stmt).scalar()

            count = sa.func.count()
            n_samples = scalar(sa.select(count).select_from(tables.samples))
            # One row per resource and project: count each resource once.
            n_resources = scalar(
                sa.select(sa.func.count(tables.resources.c.resource_id.distinct()))
            )
            n_dead = scalar(sa.select(count).select_from(tables.dead_letters))
            # resources.last_seen is the newest sample per resource and project: no
            # scan of samples.
            last_sample = scalar(sa.select(sa.func.max(tables.resources.c.last_seen)))
            last_recorded = scalar(sa.select(sa.func.max(tables.batches.c.recorded_at)))
        return StoreStatus(
            url=self._public_url(),
            samples=int(n_samples),
            resources=int(n_resources),
            dead_letters=int(n_dead),
            last_sample_timestamp=None if last_sample is None else from_micros(last_sample),
            last_recorded_at=None if last_recorded is None else from_micros(last_recorded),
            schema_revision=revision,
        )

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def _public_url(self) -> str:
        return self.url.render_as_string(hide_password=True)


def _fetch_numbers(
    conn: sa.Connection, stmt: _Rows, values: Mapping[str, Any] | None = None
) -> list[Any]:
    """The rows of ``stmt`` (with ``values`` for its bound parameters), whose columns
    are plain integers and floats.

    On PostgreSQL they come in binary: thousands of rows of floats parse in half
    the time, and the columns need none of SQLAlchemy's result processing.
    """
    if conn.dialect.name != "postgresql":
        return list(conn.execute(stmt, values).all())
    compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    sql, params = str(compiled), compiled.construct_params(values)
    driver = conn.connection.driver_connection
    assert driver is not None
    error = conn.dialect.loaded_dbapi.Error
    try:
        with driver.cursor(binary=True) as cursor:
            cursor.execute(sql, params)
            return cast("list[Any]", cursor.fetchall())
    except error as exc:
        # As SQLAlchemy would have raised it, for callers that catch its errors.
        raise sa.exc.DBAPIError.instance(sql, params, exc, error, dialect=conn.dialect) from exc


def _in_key_order(source: sa.Table) -> sa.Select[Any]:
    """All of ``source``'s rollup rows, in ``rollups``' key order: sequential writes,
    and on PostgreSQL, concurrent writers lock rollup rows in one order."""
    return sa.select(*(source.c[name] for name in _ROLLUP_COLUMNS)).order_by(
        *(source.c[column.name] for column in tables.rollups.primary_key.columns)
    )


def _floor(value: sa.ColumnElement[int], width: int) -> sa.ColumnElement[int]:
    """``value`` rounded down to a multiple of ``width``, negative values too (SQL's %
    takes the sign of the dividend)."""
    return value - (value % width + width) % width


def _summed_up(source: int, seconds: int, series: sa.Select[Any] | None) -> sa.Select[Any]:
    """Rollup rows of granularity ``seconds`` summed from the staged rows of the finer
    granularity ``source`` (of ``series`` only, if given), in ``rollups``' key order."""
    staged = tables.rollups_recent.c
    bucket = _floor(staged.bucket, seconds * 1_000_000).label("bucket")
    conditions = [staged.granularity == source]
    if series is not None:
        conditions.append(staged.series_id.in_(series))
    sums = (
        sa.select(
            staged.series_id,
            bucket,
            sa.func.sum(staged.n).label("n"),
            sa.func.sum(staged.total).label("total"),
            sa.func.min(staged.low).label("low"),
            sa.func.max(staged.high).label("high"),
            sa.func.sum(staged.squares).label("squares"),
            sa.func.min(staged.first_at).label("first_at"),
            sa.func.max(staged.last_at).label("last_at"),
        )
        .where(*conditions)
        .group_by(staged.series_id, bucket)
        .subquery()
    )
    # The first and last values are those of the staged rows holding the first and
    # last times: each lies in its own bucket, so a key lookup finds it.
    first, last = tables.rollups_recent.alias("first"), tables.rollups_recent.alias("last")
    width = source * 1_000_000

    def holding(row: Any, stamp: sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
        return sa.and_(
            row.c.granularity == source,
            row.c.bucket == _floor(stamp, width),
            row.c.series_id == sums.c.series_id,
        )

    return (
        sa.select(
            sums.c.series_id,
            sa.literal(seconds),
            sums.c.bucket,
            sums.c.n,
            sums.c.total,
            sums.c.low,
            sums.c.high,
            sums.c.squares,
            sums.c.first_at,
            first.c.first_value,
            sums.c.last_at,
            last.c.last_value,
        )
        .select_from(
            sums.join(first, holding(first, sums.c.first_at)).join(
                last, holding(last, sums.c.last_at)
            )
        )
        .order_by(sums.c.series_id, sums.c.bucket)
    )


#: Rows a statement reads: a SELECT, or on SQLite a UNION ALL of two.
_Rows = sa.Select[Any] | sa.CompoundSelect[Any]
#: Parameters of the staged part of a rollup read: granularity and bucket range.
_STAGED_GRANULARITY: Final = sa.bindparam("staged_granularity", type_=sa.Integer())
_STAGED_LOW: Final = sa.bindparam("staged_low", type_=sa.BigInteger())
_STAGED_HIGH: Final = sa.bindparam("staged_high", type_=sa.BigInteger())


@functools.cache
def _staged_buckets(bounded_below: bool, bounded_above: bool) -> sa.CTE:
    """The distinct buckets of ``rollups_recent`` rows of granularity
    ``staged_granularity`` in [``staged_low``, ``staged_high``), found by one key
    seek each (a loose index scan), and a NULL. Built once per kind of range: its
    values are bound at execution."""
    table = tables.rollups_recent.c

    def least(*above: sa.ColumnElement[bool]) -> sa.ScalarSelect[Any]:
        # One lower bound only: SQLite seeks to it, and min() stops at the first row.
        in_range = [table.granularity == _STAGED_GRANULARITY, *above]
        if bounded_above:
            in_range.append(table.bucket < _STAGED_HIGH)
        return sa.select(sa.func.min(table.bucket)).where(*in_range).scalar_subquery()

    first = least(table.bucket >= _STAGED_LOW) if bounded_below else least()
    buckets = sa.select(first.label("bucket")).cte("staged_buckets", recursive=True)
    following = least(table.bucket > buckets.c.bucket)
    return buckets.union_all(sa.select(following).where(buckets.c.bucket.is_not(None)))


def _square(value: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``value²`` as IEEE arithmetic has it: PostgreSQL raises on float underflow and
    overflow instead of giving 0 and infinity, and one such sample would fail a query."""
    size = sa.func.abs(value)
    return sa.case(
        (size < 1e-150, sa.literal(0.0)),
        (size > 1e150, sa.literal(math.inf, sa.Double())),
        else_=value * value,
    )


def _plan(
    levels: list[tuple[int, int | None]],
    since: int | None,
    until: int | None,
    start: int,
    period: int | None,
) -> rollups.Plan:
    if not levels:
        return rollups.Plan((), ((since, until),))
    return rollups.plan(levels, since, until, start, period, time.time_ns() // 1000)


#: (period index, label id): what one statistic is of; a label is (unit, *group values).
_StatKey = tuple[int, int]


class _StatisticsReader:
    """Partial aggregates per period and label, read from rollups and raw samples."""

    def __init__(
        self,
        store: SQLStore,
        conn: sa.Connection,
        query: SampleFilter,
        start: int,
        period: int | None,
        group_columns: list[sa.ColumnElement[Any]],
        staged_as: dict[int, int],
    ) -> None:
        self.store = store
        self.conn = conn
        self.query = query
        self.start = start
        self.period = period
        self.group_columns = group_columns
        #: Granularity -> the granularity of the staged rows that hold its data.
        self.staged_as = staged_as
        #: (unit, *group values) -> label id, in order of first sight.
        self.labels: dict[tuple[Any, ...], int] = {}
        self.partials: dict[_StatKey, rollups.Partial] = {}
        #: cardinality parameter -> statistic -> the distinct values seen.
        self.distinct: dict[str, dict[_StatKey, set[Any]]] = {}
        self._series_labels: dict[int, int] | None = None

    def _label(self, label: tuple[Any, ...]) -> int:
        found = self.labels.get(label)
        if found is None:
            found = self.labels[label] = len(self.labels)
        return found

    def _index(self, stamp: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        if not self.period:
            return sa.literal(0)
        return (stamp - self.start) // (self.period * 1_000_000)

    def _series(self) -> sa.Select[Any]:
        return sa.select(tables.series.c.id).where(*_series_conditions(self.query))

    def _label_of_series(self) -> dict[int, int]:
        """Label id by series id, for the series the query matches."""
        if self._series_labels is None:
            stmt = sa.select(tables.series.c.id, tables.series.c.unit, *self.group_columns).where(
                *_series_conditions(self.query)
            )
            rows = sorted(self.conn.execute(stmt), key=lambda row: _label_order(row[1:]))
            # Ids given in statistic order spare the final sort a key function.
            self._series_labels = {row[0]: self._label(tuple(row[1:])) for row in rows}
        return self._series_labels

    def _rollup_rows(self, piece: rollups.Piece) -> tuple[_Rows, dict[str, int | None]]:
        """The asked series' rollup rows in ``piece`` (stored, and on SQLite staged
        too), in ``_READ_ROLLUP_COLUMNS``, and the values of the staged part's
        parameters."""
        seconds, low, high = piece
        selects = []
        params: dict[str, int | None] = {}
        for rollup_table in self.store._rollup_tables:
            table = rollup_table.c
            source: sa.FromClause = rollup_table
            conditions: list[sa.ColumnElement[bool]] = [table.series_id.in_(self._series())]
            if rollup_table is tables.rollups_recent:
                # Keyed by time, the staged rows of a piece are every series' rows:
                # look up the asked series' rows in each staged bucket instead. A
                # derived level's are its source level's rows, which nest in its
                # buckets, and so in the piece.
                params = {
                    _STAGED_GRANULARITY.key: self.staged_as.get(seconds, seconds),
                    _STAGED_LOW.key: low,
                    _STAGED_HIGH.key: high,
                }
                buckets = _staged_buckets(low is not None, high is not None)
                source = sa.join(
                    buckets,
                    rollup_table,
                    sa.and_(
                        table.granularity == _STAGED_GRANULARITY,
                        table.bucket == buckets.c.bucket,
                    ),
                )
            else:
                conditions.append(table.granularity == seconds)
                if low is not None:
                    conditions.append(table.bucket >= low)
                if high is not None:
                    conditions.append(table.bucket < high)
            selects.append(
                sa.select(*(table[name] for name in _READ_ROLLUP_COLUMNS))
                .select_from(source)
                .where(*conditions)
            )
        # One statement either way: a query's pieces are few, its round trips count.
        return (selects[0] if len(selects) == 1 else sa.union_all(*selects)), params

    def read_rollups(self, piece: rollups.Piece, distinct_of: list[str]) -> None:
        stmt, params = self._rollup_rows(piece)
        if piece[0] == self.period and not distinct_of:
            series_labels = self._label_of_series()
            if len(series_labels) == len(self.labels):
                # Each bucket is a whole period and each series its own statistic:
                # grouping in SQL would merge nothing, so the rows are read as they lie
                # (a stored and a staged row of one bucket, or a derived level's
                # staged finer rows, merge in _read_buckets).
                self._read_buckets(stmt, params, series_labels)
                return
        rows = stmt.subquery()
        self._collect(
            rows.join(tables.series, tables.series.c.id == rows.c.series_id),
            [],
            self._index(rows.c.bucket),
            (
                sa.func.sum(rows.c.n),
                sa.func.sum(rows.c.total),
                sa.func.min(rows.c.low),
                sa.func.max(rows.c.high),
                sa.func.sum(rows.c.squares),
                sa.func.min(rows.c.first_at),
                sa.func.max(rows.c.last_at),
            ),
            distinct_of,
            params,
        )

    def _read_buckets(
        self, stmt: _Rows, params: dict[str, int | None], series_labels: dict[int, int]
    ) -> None:
        start, width = self.start, cast("int", self.period) * 1_000_000
        partials = self.partials
        for series_id, bucket, n, total, low, high, squares, first, last in _fetch_numbers(
            self.conn, stmt, params
        ):
            key = ((bucket - start) // width, series_labels[series_id])
            found = partials.get(key)
            if found is None:
                partials[key] = [n, total, low, high, squares, first, 0.0, last, 0.0]
            else:
                rollups.merge(found, [n, total, low, high, squares, first, 0.0, last, 0.0])

    def read_samples(self, window: rollups.Window, distinct_of: list[str]) -> None:
        since, until = window
        table = tables.samples.c
        source: sa.FromClause = tables.samples.join(
            tables.series, tables.series.c.id == table.series_id
        )
        if self.query.metadata or any(
            not isinstance(column, sa.Column) for column in self.group_columns
        ):
            source = source.join(
                tables.metadata_bodies, tables.metadata_bodies.c.id == table.metadata_id
            )
        conditions = [
            *_series_conditions(self.query),
            *self.store._metadata_conditions(self.query, tables.metadata_bodies.c.body),
        ]
        if self.query.message_id is not None:
            conditions.append(table.message_id == encode_message_id(self.query.message_id))
        if since is not None:
            conditions.append(table.timestamp >= since)
        if until is not None:
            conditions.append(table.timestamp < until)
        self._collect(
            source,
            conditions,
            self._index(table.timestamp),
            (
                sa.func.count(table.id),
                sa.func.sum(table.volume),
                sa.func.min(table.volume),
                sa.func.max(table.volume),
                sa.func.sum(_square(table.volume)),
                sa.func.min(table.timestamp),
                sa.func.max(table.timestamp),
            ),
            distinct_of,
        )

    def _collect(
        self,
        source: sa.FromClause,
        conditions: list[sa.ColumnElement[bool]],
        index: sa.ColumnElement[Any],
        aggregates: tuple[sa.ColumnElement[Any], ...],
        distinct_of: list[str],
        params: Mapping[str, Any] | None = None,
    ) -> None:
        keys = [tables.series.c.unit, index, *self.group_columns]
        width = len(keys)
        stmt = sa.select(*keys, *aggregates).select_from(source).where(*conditions)
        for row in self.conn.execute(stmt.group_by(*keys), params).all():
            n, total, low, high, squares, first, last = row[width:]
            if not n:
                continue
            key = (int(row[1]), self._label((row[0], *row[2:width])))
            partial = [int(n), float(total), low, high, float(squares), first, 0.0, last, 0.0]
            found = self.partials.get(key)
            if found is None:
                self.partials[key] = partial
            else:
                rollups.merge(found, partial)
        for param in distinct_of:
            column = tables.series.c[param]
            values = self.distinct.setdefault(param, {})
            stmt = sa.select(*keys, column).select_from(source).where(*conditions)
            for row in self.conn.execute(stmt.group_by(*keys, column), params).all():
                key = (int(row[1]), self._label((row[0], *row[2:width])))
                seen = values.setdefault(key, set())
                if row[width] is not None:
                    seen.add(row[width])


def _statistics(
    reader: _StatisticsReader,
    groupby: Sequence[str],
    wanted: list[Aggregate],
    start: int,
    period: int | None,
) -> list[Statistic]:
    """The statistics of the partial aggregates ``reader`` gathered, oldest period first,
    then by unit and group values."""
    labels = list(reader.labels)  # by label id
    order = sorted(range(len(labels)), key=lambda i: _label_order(labels[i]))
    partials = reader.partials
    if order == list(range(len(labels))):
        keys = sorted(partials)
    else:
        rank = [0] * len(labels)
        for position, label_id in enumerate(order):
            rank[label_id] = position
        keys = sorted(partials, key=lambda k: (k[0], rank[k[1]]))
    # Each label's groupby values are rendered once and shared by its statistics, as
    # is one empty aggregate mapping (Statistic's mappings are read-only): thousands of
    # copies would cost time, and garbage collections for as long as the answer lives.
    groups = [
        {name: _group_value(value) for name, value in zip(groupby, label[1:], strict=True)}
        for label in labels
    ]
    no_aggregates: dict[str, float] = {}
    # Periods repeat across groups: their bounds are made once each.
    bounds: dict[int, tuple[datetime, datetime]] = {}
    length = timedelta(seconds=period or 0)
    period = period or 0
    # from_micros inlined: this loop runs once per statistic, thousands per query.
    epoch, delta = EPOCH, timedelta
    stats: list[Statistic] = []
    append = stats.append
    for key in keys:
        index, label_id = key
        n, total, low, high, squares, first_us, _, last_us, _ = partials[key]
        count = int(n)
        mean = total / count
        first_at, last_at = epoch + delta(0, 0, first_us), epoch + delta(0, 0, last_us)
        if period:
            found = bounds.get(index)
            if found is None:
                period_start = from_micros(start + index * period * 1_000_000)
                found = bounds[index] = (period_start, period_start + length)
            period_start, period_end = found
        else:
            period_start, period_end = first_at, last_at
        aggregate = no_aggregates
        if wanted:
            aggregate = {}
            values = {"avg": mean, "sum": total, "min": low, "max": high}
            for func, param in wanted:
                if func == "cardinality":
                    seen = reader.distinct.get(str(param), {}).get(key, set())
                    aggregate[f"cardinality/{param}"] = float(len(seen))
                elif func == "stddev":
                    aggregate["stddev"] = math.sqrt(max(0.0, squares / count - mean * mean))
                else:
                    aggregate[func] = float(count if func == "count" else values[func])
        append(
            Statistic(
                labels[label_id][0],
                count,
                float(low),
                float(high),
                float(total),
                float(mean),
                first_at,
                last_at,
                period,
                period_start,
                period_end,
                groups[label_id],
                aggregate,
            )
        )
    return stats


_ROLLUP_COLUMNS: Final = (
    "series_id",
    "granularity",
    "bucket",
    "n",
    "total",
    "low",
    "high",
    "squares",
    "first_at",
    "first_value",
    "last_at",
    "last_value",
)
#: What statistics read of a rollup row: series id, bucket, then the aggregates.
_READ_ROLLUP_COLUMNS: Final = tuple(
    name for name in _ROLLUP_COLUMNS if name not in ("granularity", "first_value", "last_value")
)
#: PostgreSQL binary COPY types of the rollup columns, in _ROLLUP_COLUMNS order.
_ROLLUP_TYPES: Final = [
    *("int4", "int4", "int8", "int8"),
    *("float8", "float8", "float8", "float8"),
    *("int8", "float8", "int8", "float8"),
]
#: The temporary table rollup rows are copied into on PostgreSQL (made per session).
_INCOMING_ROLLUPS: Final = sa.Table(
    "incoming_rollups", sa.MetaData(), *(sa.Column(c.name, c.type) for c in tables.rollups.c)
)
_SERIES_COLUMNS: Final = (
    "key",
    "name",
    "type",
    "unit",
    "resource_id",
    "user_id",
    "project_id",
    "source",
)


class _InsertMany:
    """An INSERT ... ON CONFLICT for many rows, counting the rows it stored or changed.

    With positional parameters (sqlite3) the rows go out as multi-row INSERTs of
    up to ``_ROWS_PER_INSERT`` rows, compiled once per size: sqlite3's
    executemany would release and retake the GIL around every row, and each
    retake can wait a whole switch interval behind the collector's other
    threads. SQLite counts the rows each statement changed. Elsewhere (psycopg)
    SQLAlchemy batches the rows into multi-row INSERTs and the stored ones are
    counted by RETURNING, as the driver's rowcount for many rows is not reliable.
    """

    def __init__(
        self, dialect: sa.Dialect, stmt: Any, table: sa.Table, columns: Sequence[str]
    ) -> None:
        self.columns = tuple(columns)
        self.sql: str | None = None
        # inline(): no implicit RETURNING of the new id, which executemany cannot take.
        compiled = stmt.inline().compile(dialect=dialect, column_keys=list(columns))
        text = str(compiled)
        one_row = "(" + ", ".join("?" * len(self.columns)) + ")"
        if (
            dialect.positional
            and tuple(compiled.positiontup or ()) == self.columns
            and "RETURNING" not in text
            and text.count(one_row) == 1
        ):
            self.sql = text
        self._one_row = one_row
        self._sized: dict[int, str] = {}
        self.stmt = stmt.returning(*table.primary_key.columns)

    def _sql_for(self, rows: int) -> str:
        sql = self._sized.get(rows)
        if sql is None:
            assert self.sql is not None
            sql = self.sql.replace(self._one_row, ", ".join([self._one_row] * rows))
            self._sized[rows] = sql
        return sql

    def execute(self, conn: sa.Connection, rows: list[tuple[Any, ...]]) -> int:
        """Insert ``rows`` (tuples in ``columns`` order); return how many were stored."""
        if not rows:
            return 0
        if self.sql is not None:
            stored = 0
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                for start in range(0, len(rows), _ROWS_PER_INSERT):
                    chunk = rows[start : start + _ROWS_PER_INSERT]
                    cursor.execute(self._sql_for(len(chunk)), list(itertools.chain(*chunk)))
                    stored += cursor.rowcount
            finally:
                cursor.close()
            return stored
        columns = self.columns
        params = [dict(zip(columns, row, strict=True)) for row in rows]
        return len(conn.execute(self.stmt, params).all())


_SAMPLE_COLUMNS: Final = "timestamp, volume, batch_id, series_id, metadata_id, message_id"


def _copy_samples(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert sample rows on PostgreSQL with COPY; return how many were new.

    COPY cannot skip a duplicate key, so rows are copied into a temporary table
    and moved with INSERT ... ON CONFLICT DO NOTHING, in message-id order so
    that concurrent collectors lock index entries in the same order.
    """
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_samples ("
            "timestamp bigint, volume double precision, batch_id bigint, series_id integer,"
            " metadata_id integer, message_id bytea) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(
            f"COPY incoming_samples ({_SAMPLE_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "float8", "int8", "int4", "int4", "bytea"])
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO samples ({_SAMPLE_COLUMNS}) SELECT {_SAMPLE_COLUMNS}"
            " FROM incoming_samples ORDER BY message_id ON CONFLICT (message_id) DO NOTHING"
        )
        stored = cursor.rowcount
        cursor.execute("TRUNCATE incoming_samples")
    return int(stored)


def _none_first(value: str | None) -> tuple[bool, str]:
    return (value is not None, value or "")


def _series_conditions(query: SampleFilter) -> list[sa.ColumnElement[bool]]:
    conditions = []
    for column, value in (
        (tables.series.c.name, query.meter),
        (tables.series.c.resource_id, query.resource_id),
        (tables.series.c.project_id, query.project_id),
        (tables.series.c.user_id, query.user_id),
        (tables.series.c.source, query.source),
    ):
        if value is not None:
            conditions.append(column == value)
    return conditions


def _time_conditions(query: SampleFilter) -> list[sa.ColumnElement[bool]]:
    conditions = []
    if query.since is not None:
        conditions.append(tables.samples.c.timestamp >= to_micros(query.since))
    if query.until is not None:
        conditions.append(tables.samples.c.timestamp < to_micros(query.until))
    if query.message_id is not None:
        conditions.append(tables.samples.c.message_id == encode_message_id(query.message_id))
    return conditions


def _metadata_key(key: str) -> list[str]:
    parts = key.split(".")
    if not key or any(not part or '"' in part or "\\" in part for part in parts):
        raise ValueError(f"bad metadata key {key!r}")
    return parts


def _condition_column(name: str) -> sa.ColumnElement[Any]:
    if name == "meter":
        return tables.series.c.name
    if name in ("timestamp", "volume", "message_id"):
        return tables.samples.c[name]
    return tables.series.c[name]


def _compare(column: Any, op: str, value: Any) -> sa.ColumnElement[bool]:
    if op == "=":
        return cast("sa.ColumnElement[bool]", column == value)
    if op == "!=":
        return cast("sa.ColumnElement[bool]", column != value)
    if op == "<":
        return cast("sa.ColumnElement[bool]", column < value)
    if op == "<=":
        return cast("sa.ColumnElement[bool]", column <= value)
    if op == ">":
        return cast("sa.ColumnElement[bool]", column > value)
    if op == ">=":
        return cast("sa.ColumnElement[bool]", column >= value)
    raise ValueError(f"unknown operator {op!r}")


def _group_value(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 2**53 else str(value)
    return str(value)


def _sort_key(value: Any) -> tuple[bool, str]:
    return (value is not None, "" if value is None else str(value))


def _label_order(label: Sequence[Any]) -> tuple[Any, ...]:
    """Where statistics of a (unit, *group values) label go among a period's."""
    return (label[0], *map(_sort_key, label[1:]))


def _create_engine(url: sa.URL, read_timeout: float) -> sa.Engine:
    """An engine whose reads stop after ``read_timeout`` seconds a statement.

    A read that runs longer (a ``like`` over megabytes of metadata) would hold a
    server thread for minutes; writes are never cut short.
    """
    if url.get_backend_name() != "sqlite":
        milliseconds = max(1, round(read_timeout * 1000))
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"options": f"-c statement_timeout={milliseconds}"},
        )

        @sa.event.listens_for(engine, "begin")
        def _unbounded_writes(conn: sa.Connection) -> None:
            if conn.get_execution_options().get(_WRITE_OPTION):
                conn.exec_driver_sql("SET LOCAL statement_timeout = 0")

        return engine

    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, record: Any) -> None:
        # The sqlite3 module would BEGIN on its own (deferred, and only before DML);
        # switching that off lets the "begin" hook below choose the kind of BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(f"PRAGMA {pragma}")
        finally:
            cursor.close()
        # SQLite has no statement timeout: a progress handler, called every thousand
        # instructions, stops the statement past its deadline (0: none).
        # Rows are fetched after execute returns, so the deadline holds until the
        # next statement or until the connection goes back to the pool.
        deadline = record.info[_DEADLINE] = [0.0]
        dbapi_connection.set_progress_handler(
            lambda: deadline[0] != 0.0 and time.monotonic() > deadline[0], 1_000
        )

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _start_clock(conn: sa.Connection, *_args: Any) -> None:
        deadline = conn.connection.info.get(_DEADLINE)
        if deadline is not None:
            writing = conn.get_execution_options().get(_WRITE_OPTION)
            deadline[0] = 0.0 if writing else time.monotonic() + read_timeout

    @sa.event.listens_for(engine, "checkin")
    def _stop_clock(_dbapi_connection: Any, record: Any) -> None:
        deadline = record.info.get(_DEADLINE)
        if deadline is not None:
            deadline[0] = 0.0

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # A writer that began as a reader (deferred) fails with SQLITE_BUSY, without
        # waiting, if another writer committed meanwhile; IMMEDIATE waits its turn.
        immediate = conn.get_execution_options().get(_WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


if TYPE_CHECKING:
    # mypy proves here that SQLStore fulfils the Store protocol.
    _conforms: type[Store] = SQLStore
