"""Rollups: a time-keyed table for the latest batches' rollup rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

SQLite writers stage each batch's rollup rows here and move them into
``rollups`` every few batches (``SQLStore``): ``rollups`` is keyed by series,
so one batch touching every series would dirty a page per series there. Some
coarse levels are not staged but summed up from a finer staged level when the
rows move (``rollups.derivations``). PostgreSQL writers leave the table empty.
It starts empty either way; a downgrade moves what is staged.
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
ON_CONFLICT = """
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
COLUMNS = (
    "series_id, granularity, bucket, n, total, low, high, squares,"
    " first_at, first_value, last_at, last_value"
)
MOVE_STAGED = f"INSERT INTO rollups ({COLUMNS}) SELECT {COLUMNS} FROM rollups_recent WHERE true"
#: A level derived from a staged one (see derivations): its rows summed up from the
#: staged rows of its source level, for one meter.
FLOOR = "{0} - (({0} % {1}) + {1}) % {1}"
SUM_STAGED = f"""
INSERT INTO rollups ({COLUMNS})
SELECT sums.series_id, :derived, sums.bucket, sums.n, sums.total, sums.low, sums.high,
       sums.squares, sums.first_at, first_row.first_value, sums.last_at, last_row.last_value
FROM (
    SELECT series_id, {FLOOR.format("bucket", ":width")} AS bucket, sum(n) AS n,
           sum(total) AS total, min(low) AS low, max(high) AS high,
           sum(squares) AS squares, min(first_at) AS first_at, max(last_at) AS last_at
    FROM rollups_recent
    WHERE granularity = :source AND series_id IN (SELECT id FROM series WHERE name = :name)
    GROUP BY series_id, {FLOOR.format("bucket", ":width")}
) AS sums
JOIN rollups_recent AS first_row ON first_row.granularity = :source
    AND first_row.series_id = sums.series_id
    AND first_row.bucket = {FLOOR.format("sums.first_at", ":source_width")}
JOIN rollups_recent AS last_row ON last_row.granularity = :source
    AND last_row.series_id = sums.series_id
    AND last_row.bucket = {FLOOR.format("sums.last_at", ":source_width")}
WHERE true
"""


def derivations(granularities: list[int]) -> dict[int, int]:
    """Level -> the staged level it is summed from, as writers of this revision
    chose: the coarsest finer level dividing it, unless that is the finest."""
    levels = sorted(set(granularities))
    derived: dict[int, int] = {}
    for index, seconds in enumerate(levels[2:], start=2):
        divisors = [finer for finer in levels[1:index] if seconds % finer == 0]
        if divisors:
            derived[seconds] = derived.get(divisors[-1], divisors[-1])
    return derived


def downgrade() -> None:
    # Staged rows are rollups not yet moved, and some levels are only summed up from
    # them when moved: do both, or they are lost.
    bind = op.get_bind()
    meters = bind.execute(sa.text("SELECT name, granularities FROM rollup_meters")).all()
    for name, text in meters:
        levels = [int(part) for part in text.split(",") if part]
        for derived, source in derivations(levels).items():
            bind.execute(
                sa.text(SUM_STAGED + ON_CONFLICT),
                {
                    "derived": derived,
                    "source": source,
                    "name": name,
                    "width": derived * 1_000_000,
                    "source_width": source * 1_000_000,
                },
            )
    op.execute(MOVE_STAGED + ON_CONFLICT)
    op.drop_table("rollups_recent")
