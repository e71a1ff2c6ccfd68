"""Models (checkpoints) join the graph for lineage: PRODUCED_BY, TRAINED_ON, DERIVED_FROM, USED_MODEL.

The new edge kinds live in the existing `edges` table, so only the `models` table is new.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("props", sa.Text()),
        sa.Column("path", sa.Text()),
        sa.Column("stage", sa.Text()),
        sa.Column("weights_sha256", sa.Text()),
    )
    op.create_index("ix_models_weights_sha256", "models", ["weights_sha256"])


def downgrade() -> None:
    op.drop_index("ix_models_weights_sha256", table_name="models")
    op.drop_table("models")
