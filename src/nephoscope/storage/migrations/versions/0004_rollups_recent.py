"""Rollups: a time-keyed table for the latest batches' rollup rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

SQLite writers stage each batch's rollup rows here and move them into
``rollups`` every few batches (``SQLStore``): ``rollups`` is keyed by series,
so one batch touching every series would dirty a page per series there.
PostgreSQL writers leave the table empty. It starts empty either way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollups_recent",
        sa.Column("series_id", sa.Integer(), nullable=False),
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
        sa.PrimaryKeyConstraint("granularity", "bucket", "series_id", name="pk_rollups_recent"),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name="fk_rollups_recent_series_id_series"
        ),
        sqlite_with_rowid=False,
    )


#: Staged rows merge into ``rollups`` as a writer would: sums add, extremes and the
#: first and last samples are kept, the staged (later) write winning on equal times.
MERGE_STAGED = """
INSERT INTO rollups (series_id, granularity, bucket, n, total, low, high, squares,
                     first_at, first_value, last_at, last_value)
SELECT series_id, granularity, bucket, n, total, low, high, squares,
       first_at, first_value, last_at, last_value
FROM rollups_recent WHERE true
ON CONFLICT (series_id, granularity, bucket) DO UPDATE SET
    n = rollups.n + excluded.n,
    total = rollups.total + excluded.total,
    low = CASE WHEN excluded.low < rollups.low THEN excluded.low ELSE rollups.low END,
    high = CASE WHEN excluded.high > rollups.high THEN excluded.high ELSE rollups.high END,
    squares = rollups.squares + excluded.squares,
    first_value = CASE WHEN excluded.first_at < rollups.first_at
                  THEN excluded.first_value ELSE rollups.first_value END,
    first_at = CASE WHEN excluded.first_at < rollups.first_at
               THEN excluded.first_at ELSE rollups.first_at END,
    last_value = CASE WHEN excluded.last_at >= rollups.last_at
                 THEN excluded.last_value ELSE rollups.last_value END,
    last_at = CASE WHEN excluded.last_at >= rollups.last_at
              THEN excluded.last_at ELSE rollups.last_at END
"""


def downgrade() -> None:
    # Staged rows are rollups not yet moved: move them, or they are lost.
    op.execute(MERGE_STAGED)
    op.drop_table("rollups_recent")
