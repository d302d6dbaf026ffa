"""Rollups: per-series aggregates in time buckets, kept up to date at ingest.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

The tables start empty. Rollups for samples stored before this revision are
built by ``SQLStore.upgrade`` from the archive policy, which a migration does
not know.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollups",
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
        sa.PrimaryKeyConstraint("series_id", "granularity", "bucket", name="pk_rollups"),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name="fk_rollups_series_id_series"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "rollup_meters",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("granularities", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_rollup_meters"),
    )


def downgrade() -> None:
    op.drop_table("rollup_meters")
    op.drop_table("rollups")
