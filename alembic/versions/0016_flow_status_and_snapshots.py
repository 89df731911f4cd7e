"""Flow statuses switched by managers, and the last valid text of each configuration file.

``flow_status_changes``: every switch of a flow's status on its page (draft, live,
paused; NULL: follow the file again), who made it and when; the newest row of a flow
is in force.  ``config_snapshots``: the last valid text of ``segments.yaml``,
``policies.yaml`` and each flow file, in force while the file is invalid.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lifecycle.models.base

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'flow_status_changes',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('flow', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=True),
        sa.Column('on_pause', sa.String(length=8), nullable=True),
        sa.Column('changed_by', sa.String(length=255), nullable=False),
        sa.Column('changed_at', lifecycle.models.base.UTCDateTime(timezone=True),
                  nullable=False),
        sa.CheckConstraint("status IS NULL OR status IN ('draft', 'live', 'paused')",
                           name=op.f('ck_flow_status_changes_status')),
        sa.CheckConstraint("on_pause IS NULL OR on_pause IN ('wait', 'exit')",
                           name=op.f('ck_flow_status_changes_on_pause')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_status_changes')),
    )
    op.create_index(op.f('ix_flow_status_changes_flow_id'), 'flow_status_changes',
                    ['flow', 'id'], unique=False)
    op.create_table(
        'config_snapshots',
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('saved_at', lifecycle.models.base.UTCDateTime(timezone=True),
                  nullable=False),
        sa.PrimaryKeyConstraint('kind', 'name', name=op.f('pk_config_snapshots')),
    )


def downgrade() -> None:
    op.drop_table('config_snapshots')
    op.drop_index(op.f('ix_flow_status_changes_flow_id'), table_name='flow_status_changes')
    op.drop_table('flow_status_changes')
