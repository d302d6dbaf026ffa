"""The initial schema: series, metadata, ingest batches, samples, resources, dead letters.

Revision ID: 0001
Revises:
Create Date: 2025-11-26

Written out in full rather than built from ``schema.py``, so that later edits to
the schema module cannot change what this revision did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("id", sa.Integer()),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("project_id", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint("key", name="uq_series_key"),
    )
    op.create_index("ix_series_name_resource_id", "series", ["name", "resource_id"])
    op.create_index("ix_series_project_id", "series", ["project_id"])
    op.create_index("ix_series_resource_id", "series", ["resource_id"])

    op.create_table(
        "metadata",
        sa.Column("id", sa.Integer()),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metadata"),
        sa.UniqueConstraint("digest", name="uq_metadata_digest"),
    )

    op.create_table(
        "ingest_batches",
        sa.Column("id", BigId),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_batches"),
    )

    op.create_table(
        "samples",
        sa.Column("id", BigId),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("volume", sa.Double(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("metadata_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_samples"),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["ingest_batches.id"], name="fk_samples_batch_id_ingest_batches"
        ),
        sa.ForeignKeyConstraint(["series_id"], ["series.id"], name="fk_samples_series_id_series"),
        sa.ForeignKeyConstraint(
            ["metadata_id"], ["metadata.id"], name="fk_samples_metadata_id_metadata"
        ),
        sa.UniqueConstraint("message_id", name="uq_samples_message_id"),
    )
    op.create_index("ix_samples_series_id_timestamp", "samples", ["series_id", "timestamp"])

    op.create_table(
        "resources",
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=True),
        sa.Column("project_id", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("metadata_id", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", name="pk_resources"),
        sa.ForeignKeyConstraint(
            ["metadata_id"], ["metadata.id"], name="fk_resources_metadata_id_metadata"
        ),
    )

    op.create_table(
        "dead_letters",
        sa.Column("id", BigId),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("resources")
    op.drop_table("samples")
    op.drop_table("ingest_batches")
    op.drop_table("metadata")
    op.drop_table("series")
