"""Segment calibrations: RFM quintile cut points and the VIP threshold of each full refresh.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 22:00:55.350494
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import lifecycle.models.base
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('segment_calibrations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('as_of', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('computed_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('customers', sa.Integer(), nullable=False),
    sa.Column('cutoffs', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segment_calibrations'))
    )


def downgrade() -> None:
    op.drop_table('segment_calibrations')
