"""Initial graph schema: one table per node kind, relation types, relations, edges.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'datasets',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('props', sa.Text()),
        sa.Column('path', sa.Text()),
        sa.Column('kind', sa.Text()),
        sa.Column('manifest_sha256', sa.Text()),
        sa.Column('rows', sa.Integer()),
        sqlite_autoincrement=False,
    )
    op.create_table(
        'edges',
        sa.Column('kind', sa.Text(), primary_key=True),
        sa.Column('source', sa.Text(), primary_key=True),
        sa.Column('target', sa.Text(), primary_key=True),
        sa.Column('source_kind', sa.Text(), nullable=False),
        sa.Column('target_kind', sa.Text(), nullable=False),
        sa.Column('props', sa.Text()),
        sqlite_with_rowid=False,
    )
    op.create_table(
        'entities',
        sa.Column('key', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('id', sa.Text(), nullable=False, unique=True),
        sa.Column('props', sa.Text()),
        sa.Column('name', sa.Text()),
        sa.Column('type', sa.Text()),
        sa.Column('domain', sa.Text()),
        sa.Column('description', sa.Text()),
        sqlite_autoincrement=True,
    )
    op.create_table(
        'relation_types',
        sa.Column('key', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('name', sa.Text(), nullable=False, unique=True),
        sa.Column('phrase', sa.Text()),
        sqlite_autoincrement=True,
    )
    op.create_table(
        'relations',
        sa.Column('src', sa.Integer(), primary_key=True),
        sa.Column('rel', sa.Integer(), primary_key=True),
        sa.Column('dst', sa.Integer(), primary_key=True),
        sa.Column('props', sa.Text()),
        sqlite_with_rowid=False,
    )
    op.create_table(
        'runs',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('props', sa.Text()),
        sa.Column('kind', sa.Text()),
        sa.Column('config', sa.Text()),
        sa.Column('started_at', sa.Text()),
        sa.Column('finished_at', sa.Text()),
        sa.Column('status', sa.Text()),
        sa.Column('counters', sa.Text()),
        sqlite_autoincrement=False,
    )
    op.create_table(
        'steps',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('props', sa.Text()),
        sa.Column('trajectory_id', sa.Text()),
        sa.Column('idx', sa.Integer()),
        sa.Column('role', sa.Text()),
        sa.Column('content', sa.Text()),
        sa.Column('reasoning', sa.Text()),
        sa.Column('tool_calls', sa.Text()),
        sa.Column('tool_call_id', sa.Text()),
        sa.Column('name', sa.Text()),
        sa.Column('n_tokens', sa.Integer()),
        sqlite_autoincrement=False,
    )
    op.create_table(
        'tasks',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('props', sa.Text()),
        sa.Column('domain', sa.Text()),
        sa.Column('question', sa.Text()),
        sa.Column('answers', sa.Text()),
        sa.Column('answer_ids', sa.Text()),
        sa.Column('hops', sa.Integer()),
        sa.Column('walk_signature', sa.Text()),
        sa.Column('status', sa.Text()),
        sa.Column('path', sa.Text()),
        sqlite_autoincrement=False,
    )
    op.create_table(
        'tools',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('props', sa.Text()),
        sa.Column('name', sa.Text()),
        sa.Column('version', sa.Text()),
        sa.Column('description', sa.Text()),
        sa.Column('parameters', sa.Text()),
        sa.Column('kind', sa.Text()),
        sa.Column('domain', sa.Text()),
        sqlite_autoincrement=False,
    )
    op.create_table(
        'trajectories',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('props', sa.Text()),
        sa.Column('task_id', sa.Text()),
        sa.Column('run_id', sa.Text()),
        sa.Column('policy', sa.Text()),
        sa.Column('status', sa.Text()),
        sa.Column('verdict', sa.Text()),
        sa.Column('reward', sa.Float()),
        sa.Column('n_turns', sa.Integer()),
        sa.Column('n_tokens', sa.Integer()),
        sa.Column('answer', sa.Text()),
        sqlite_autoincrement=False,
    )
    op.create_table(
        'verifications',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('props', sa.Text()),
        sa.Column('verifier_id', sa.Text()),
        sa.Column('subject_id', sa.Text()),
        sa.Column('subject_kind', sa.Text()),
        sa.Column('passed', sa.Boolean()),
        sa.Column('score', sa.Float()),
        sa.Column('detail', sa.Text()),
        sqlite_autoincrement=False,
    )
    op.create_table(
        'verifiers',
        sa.Column('id', sa.Text(), primary_key=True),
        sa.Column('props', sa.Text()),
        sa.Column('name', sa.Text()),
        sa.Column('kind', sa.Text()),
        sa.Column('version', sa.Text()),
        sa.Column('config', sa.Text()),
        sqlite_autoincrement=False,
    )
    op.create_index('ix_entities_name', 'entities', ['name'])
    op.create_index('ix_entities_type', 'entities', ['type'])
    op.create_index('ix_entities_domain', 'entities', ['domain'])
    op.create_index('ix_relations_dst', 'relations', ['dst', 'rel'])
    op.create_index('ix_edges_target', 'edges', ['kind', 'target'])
    op.create_index('ix_tasks_signature', 'tasks', ['walk_signature'])
    op.create_index('ix_trajectories_task', 'trajectories', ['task_id'])
    op.create_index('ix_trajectories_run', 'trajectories', ['run_id'])
    op.create_index('ix_steps_trajectory', 'steps', ['trajectory_id', 'idx'])
    op.create_index('ix_verifications_subject', 'verifications', ['subject_id'])


def downgrade() -> None:
    op.drop_index('ix_entities_name', table_name='entities')
    op.drop_index('ix_entities_type', table_name='entities')
    op.drop_index('ix_entities_domain', table_name='entities')
    op.drop_index('ix_relations_dst', table_name='relations')
    op.drop_index('ix_edges_target', table_name='edges')
    op.drop_index('ix_tasks_signature', table_name='tasks')
    op.drop_index('ix_trajectories_task', table_name='trajectories')
    op.drop_index('ix_trajectories_run', table_name='trajectories')
    op.drop_index('ix_steps_trajectory', table_name='steps')
    op.drop_index('ix_verifications_subject', table_name='verifications')
    op.drop_table('verifiers')
    op.drop_table('verifications')
    op.drop_table('trajectories')
    op.drop_table('tools')
    op.drop_table('tasks')
    op.drop_table('steps')
    op.drop_table('runs')
    op.drop_table('relations')
    op.drop_table('relation_types')
    op.drop_table('entities')
    op.drop_table('edges')
    op.drop_table('datasets')
