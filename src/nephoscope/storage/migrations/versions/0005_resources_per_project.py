"""Resources: one row per resource and project, so a project sees only its own view.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04

Before this revision ``resources`` held one row per resource id, with the owner
and metadata of its newest sample whatever the project: a resource with samples
from two projects (a shared network, image or host) showed each project the
other's owner and metadata. Now the key is (resource id, project id), and
``project_id`` is ``''`` for samples without a project: NULLs are distinct in a
unique key on both databases, so an upsert could never find such a row again.

Upgrading rebuilds the rows of the resources that have series in more than one
project from the samples still stored: per project, the first and last sample
and the owner and metadata of the newest (on equal times, the later stored). Every
other resource keeps its row, keyed by its project: it is that one project's view
already, and its first and last seen also count the samples expiry has deleted.
So does a shared resource none of whose samples are left, which no query lists.

A downgrade collapses the rows of each resource id back into one: owner and
metadata of its newest row, the earliest first seen and the latest last seen.

Collectors of earlier releases cannot write to the new table (their upsert names
the old key): stop them before upgrading.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: Where the rows wait while the table is made anew (SQLite cannot change a key in
#: place, and a renamed PostgreSQL table would keep its key's index name).
ASIDE = "resources_aside"

#: The resource ids whose series name more than one project (no project counting as one).
SHARED = """
SELECT resource_id FROM series
GROUP BY resource_id
HAVING count(DISTINCT coalesce(project_id, '')) > 1
"""

#: Per shared resource and project: the first and last sample, and the owner and
#: metadata of the newest one (the later stored on equal times, as writers count it).
REBUILD_SHARED = f"""
INSERT INTO resources (resource_id, project_id, user_id, source, metadata_id,
                       first_seen, last_seen)
SELECT resource_id, project, user_id, source, metadata_id, earliest, latest
FROM (
    SELECT series.resource_id AS resource_id,
           coalesce(series.project_id, '') AS project,
           series.user_id AS user_id,
           series.source AS source,
           samples.metadata_id AS metadata_id,
           min(samples.timestamp) OVER (
               PARTITION BY series.resource_id, coalesce(series.project_id, '')
           ) AS earliest,
           max(samples.timestamp) OVER (
               PARTITION BY series.resource_id, coalesce(series.project_id, '')
           ) AS latest,
           row_number() OVER (
               PARTITION BY series.resource_id, coalesce(series.project_id, '')
               ORDER BY samples.timestamp DESC, samples.id DESC
           ) AS newest
    FROM samples JOIN series ON series.id = samples.series_id
    WHERE series.resource_id IN ({SHARED})
) AS ranked
WHERE newest = 1
"""

#: Every other resource keeps its row, keyed by its project.
KEEP_THE_REST = f"""
INSERT INTO resources (resource_id, project_id, user_id, source, metadata_id,
                       first_seen, last_seen)
SELECT resource_id, coalesce(project_id, ''), user_id, source, metadata_id,
       first_seen, last_seen
FROM {ASIDE} AS old
WHERE NOT EXISTS (SELECT 1 FROM resources WHERE resources.resource_id = old.resource_id)
"""

#: One row per resource id: the newest row's owner and metadata (on equal times the
#: greater project, as ``SQLStore.resources`` chooses), the widest first/last seen.
COLLAPSE = f"""
INSERT INTO resources (resource_id, user_id, project_id, source, metadata_id,
                       first_seen, last_seen)
SELECT resource_id, user_id, nullif(project_id, ''), source, metadata_id, earliest, latest
FROM (
    SELECT resource_id, user_id, project_id, source, metadata_id,
           min(first_seen) OVER (PARTITION BY resource_id) AS earliest,
           max(last_seen) OVER (PARTITION BY resource_id) AS latest,
           row_number() OVER (
               PARTITION BY resource_id ORDER BY last_seen DESC, project_id DESC
           ) AS newest
    FROM {ASIDE}
) AS ranked
WHERE newest = 1
"""


def _create_resources(per_project: bool) -> None:
    """The table of this revision (``per_project``), or of the one before."""
    owner: list[sa.Column[Any]] = [
        sa.Column("project_id", sa.Text(), nullable=not per_project),
        sa.Column("user_id", sa.Text(), nullable=True),
    ]
    columns: list[sa.Column[Any]] = [
        sa.Column("resource_id", sa.Text(), nullable=False),
        *(owner if per_project else owner[::-1]),  # as each revision ordered them
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("metadata_id", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
    ]
    key = ("resource_id", "project_id") if per_project else ("resource_id",)
    op.create_table(
        "resources",
        *columns,
        sa.PrimaryKeyConstraint(*key, name="pk_resources"),
        sa.ForeignKeyConstraint(
            ["metadata_id"], ["metadata.id"], name="fk_resources_metadata_id_metadata"
        ),
        # On SQLite, clustered on the key: an upsert walks one B-tree, not an index
        # and then the table.
        sqlite_with_rowid=not per_project,
    )


def _set_aside() -> None:
    op.execute(f"CREATE TABLE {ASIDE} AS SELECT * FROM resources")
    op.drop_table("resources")


def upgrade() -> None:
    _set_aside()
    _create_resources(per_project=True)
    op.execute(REBUILD_SHARED)
    op.execute(KEEP_THE_REST)
    op.drop_table(ASIDE)


def downgrade() -> None:
    _set_aside()
    _create_resources(per_project=False)
    op.execute(COLLAPSE)
    op.drop_table(ASIDE)
