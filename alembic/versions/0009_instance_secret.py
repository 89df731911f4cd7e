"""Instance secrets: the secret key made once and kept with the data when LIFECYCLE_SECRET_KEY
is unset, so that every process on the database signs and verifies links with the same key.

The row itself is not made here: the first process that needs the key inserts it (a
conflict-free insert, so two processes starting at once end up with the same key).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lifecycle.models.base

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('instance_secrets',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('value', sa.String(length=200), nullable=False),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_instance_secrets'))
    )


def downgrade() -> None:
    op.drop_table('instance_secrets')
