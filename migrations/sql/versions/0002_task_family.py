"""Tasks get a family (search, compute, tool_use, instruction); existing tasks are search tasks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("family", sa.Text(), server_default="search"))
    op.create_index("ix_tasks_family", "tasks", ["family"])


def downgrade() -> None:
    op.drop_index("ix_tasks_family", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("family")
