"""The SQL schema of the sample store, shared by SQLite and PostgreSQL.

Migrations create it (``migrations/versions``); this module is what the code
queries against and what a test compares the migrated database with.

Compactness drives the shape: a sample row holds only numbers and its message
id; the strings that repeat on every sample (meter, unit, owner, resource) live
once in ``series``, repeated resource metadata once in ``metadata``, and the
write time once per batch in ``ingest_batches``. Times are integer microseconds
since the epoch, UTC.
"""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "batches",
    "dead_letters",
    "metadata",
    "metadata_bodies",
    "resources",
    "rollup_meters",
    "rollups",
    "rollups_recent",
    "samples",
    "series",
]

#: 64-bit ids on PostgreSQL; plain INTEGER on SQLite, so the column is the rowid
#: (SQLite only aliases the rowid for exactly ``INTEGER PRIMARY KEY``).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: One row per distinct meter on a resource with one owner: the strings a sample shares.
series = sa.Table(
    "series",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    # blake2b-128 of the other columns. A UNIQUE over the columns themselves would not
    # stop duplicates where user_id or project_id is NULL (NULLs are distinct in a
    # unique index on both databases), so concurrent writers could race in a twin.
    sa.Column("key", sa.LargeBinary(), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("type", sa.Text(), nullable=False),
    sa.Column("unit", sa.Text(), nullable=False),
    sa.Column("resource_id", sa.Text(), nullable=False),
    sa.Column("user_id", sa.Text(), nullable=True),
    sa.Column("project_id", sa.Text(), nullable=True),
    sa.Column("source", sa.Text(), nullable=False),
    sa.UniqueConstraint("key"),
    sa.Index(None, "name", "resource_id"),
    sa.Index(None, "project_id"),
    sa.Index(None, "resource_id"),
)

#: Distinct resource metadata documents, found by the digest of their canonical JSON.
metadata_bodies = sa.Table(
    "metadata",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("digest", sa.LargeBinary(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.UniqueConstraint("digest"),
)

#: One row per ``write_batch`` that stored samples: when they were recorded.
batches = sa.Table(
    "ingest_batches",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("recorded_at", sa.BigInteger(), nullable=False),
)

# Column order puts 8-byte columns first so PostgreSQL rows need no alignment padding.
samples = sa.Table(
    "samples",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("timestamp", sa.BigInteger(), nullable=False),
    sa.Column("volume", sa.Double(), nullable=False),
    sa.Column("batch_id", sa.BigInteger(), sa.ForeignKey(batches.c.id), nullable=False),
    sa.Column("series_id", sa.Integer(), sa.ForeignKey(series.c.id), nullable=False),
    sa.Column("metadata_id", sa.Integer(), sa.ForeignKey(metadata_bodies.c.id), nullable=False),
    # 16 bytes for a canonical UUID, else a marker byte and the UTF-8 text (see sql.py).
    sa.Column("message_id", sa.LargeBinary(), nullable=False),
    sa.UniqueConstraint("message_id"),
    sa.Index(None, "series_id", "timestamp"),
)

#: Each resource once per project that has samples of it (a shared network, image
#: or host has several), with the owner and metadata of that project's newest
#: sample and the first and last of that project's samples: a project's view of a
#: resource is made of its own samples only.
resources = sa.Table(
    "resources",
    metadata,
    sa.Column("resource_id", sa.Text(), primary_key=True),
    # '' for samples without a project (host meters): a key column needs a value,
    # as NULLs are distinct in a unique key on both databases and an upsert could
    # never find the row again.
    sa.Column("project_id", sa.Text(), primary_key=True),
    sa.Column("user_id", sa.Text(), nullable=True),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("metadata_id", sa.Integer(), sa.ForeignKey(metadata_bodies.c.id), nullable=False),
    sa.Column("first_seen", sa.BigInteger(), nullable=False),
    sa.Column("last_seen", sa.BigInteger(), nullable=False),
    # Clustered on the key: an upsert is one B-tree walk, not an index walk and a row's.
    sqlite_with_rowid=False,
)

#: Messages the collector could not store, kept whole for a later look.
dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", BigId, primary_key=True),
    sa.Column("received_at", sa.BigInteger(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("message_id", sa.Text(), nullable=True),
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Index(None, "received_at"),
)

#: Aggregates of one series' samples in one time bucket of one granularity (seconds).
#: ``bucket`` is the bucket's start, a multiple of the granularity since the epoch.
#: The key leads with the series so that one series' buckets are read as a range.
rollups = sa.Table(
    "rollups",
    metadata,
    sa.Column("series_id", sa.Integer(), sa.ForeignKey(series.c.id), nullable=False),
    sa.Column("granularity", sa.Integer(), nullable=False),
    sa.Column("bucket", sa.BigInteger(), nullable=False),
    sa.Column("n", sa.BigInteger(), nullable=False),
    sa.Column("total", sa.Double(), nullable=False),
    sa.Column("low", sa.Double(), nullable=False),
    sa.Column("high", sa.Double(), nullable=False),
    sa.Column("squares", sa.Double(), nullable=False),
    sa.Column("first_at", sa.BigInteger(), nullable=False),
    sa.Column("first_value", sa.Double(), nullable=False),
    sa.Column("last_at", sa.BigInteger(), nullable=False),
    sa.Column("last_value", sa.Double(), nullable=False),
    # On PostgreSQL the key's index also holds what statistics read, so they read
    # a series' buckets from adjacent index entries (an index-only scan) instead
    # of a heap page per bucket: the heap is in write order, not series order.
    sa.PrimaryKeyConstraint(
        "series_id",
        "granularity",
        "bucket",
        postgresql_include=["n", "total", "low", "high", "squares", "first_at", "last_at"],
    ),
    # Clustered on the key: an upsert is one B-tree walk, a range read is sequential.
    sqlite_with_rowid=False,
)

#: Rollup rows of the latest batches on SQLite, merged as in ``rollups`` and moved
#: there every few batches (see ``SQLStore``); PostgreSQL writes ``rollups`` directly
#: and leaves this empty. The key leads with granularity and time: one batch's rows
#: for a bucket lie together, so a batch dirties a few pages here, where in
#: ``rollups`` it would dirty a page per series.
rollups_recent = sa.Table(
    "rollups_recent",
    metadata,
    sa.Column("series_id", sa.Integer(), sa.ForeignKey(series.c.id), nullable=False),
    *(
        sa.Column(column.name, column.type, nullable=False)
        for column in rollups.c
        if column.name != "series_id"
    ),
    sa.PrimaryKeyConstraint("granularity", "bucket", "series_id"),
    sqlite_with_rowid=False,
)

#: The granularities (comma-separated seconds, finest first) the rollups hold for
#: each meter: what ingest maintains and what the planner may read.
rollup_meters = sa.Table(
    "rollup_meters",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("granularities", sa.Text(), nullable=False),
)
