"""Rollups: on PostgreSQL, the key carries the aggregates statistics read.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

PostgreSQL keeps rows in a heap in the order they were written, so one series'
buckets lie on as many pages as it has buckets; a statistics query then reads a
page per bucket. With the aggregates as INCLUDE columns of the key's index, the
query reads them from the index, where a series' buckets are adjacent (an
index-only scan). SQLite's rollups table is clustered on its key already
(``WITHOUT ROWID``): nothing changes there.

Rebuilding the index locks the table for the time it takes (seconds per GB).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

KEY = "series_id, granularity, bucket"
INCLUDED = "n, total, low, high, squares, first_at, last_at"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE rollups DROP CONSTRAINT pk_rollups, "
        f"ADD CONSTRAINT pk_rollups PRIMARY KEY ({KEY}) INCLUDE ({INCLUDED})"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE rollups DROP CONSTRAINT pk_rollups, "
        f"ADD CONSTRAINT pk_rollups PRIMARY KEY ({KEY})"
    )
