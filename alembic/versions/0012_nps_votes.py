"""NPS votes held before they count: a link scanner's burst is voided, a person's answer counts.

A score posted from the feedback page is a row of ``nps_votes`` until its
group of votes (one mail's votes, each within ``LIFECYCLE_NPS_HOLD_SECONDS``
of the one before) has been quiet that long; then it becomes the answer or is
voided, and the row is deleted (see :mod:`lifecycle.feedback`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 20:56:02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lifecycle.models.base

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('nps_votes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('answer_key', sa.String(length=255), nullable=False),
    sa.Column('score', sa.SmallInteger(), nullable=False),
    sa.Column('via', sa.String(length=10), nullable=False),
    sa.Column('received_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('agent', sa.String(length=200), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.CheckConstraint("via IN ('mail', 'page')", name=op.f('ck_nps_votes_via')),
    sa.CheckConstraint('score BETWEEN 0 AND 10', name=op.f('ck_nps_votes_score')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_nps_votes_customer_id_customers')),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_nps_votes_message_id_messages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nps_votes'))
    )
    with op.batch_alter_table('nps_votes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nps_votes_answer_key_received_at'), ['answer_key', 'received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_nps_votes_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_nps_votes_received_at'), ['received_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('nps_votes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nps_votes_received_at'))
        batch_op.drop_index(batch_op.f('ix_nps_votes_customer_id'))
        batch_op.drop_index(batch_op.f('ix_nps_votes_answer_key_received_at'))

    op.drop_table('nps_votes')
