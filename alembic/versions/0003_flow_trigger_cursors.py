"""Flow trigger cursors: how far the flow engine has read the touchpoints.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 23:00:36.051664
"""

from collections.abc import Sequence

import sqlalchemy as sa

import lifecycle.models.base
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('flow_trigger_cursors',
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('last_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('updated_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_flow_trigger_cursors'))
    )


def downgrade() -> None:
    op.drop_table('flow_trigger_cursors')
