"""Offers that redeem: every code a mail hands out (``offers``) and the webhooks that tell the
shop about them (``offer_webhooks``, an outbox posted by the workers).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import lifecycle.models.base

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('offers',
    sa.Column('id', BigIntPK, nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('customer_id', BigIntPK, nullable=False),
    sa.Column('flow', sa.String(length=100), nullable=True),
    sa.Column('step', sa.String(length=100), nullable=True),
    sa.Column('message_id', BigIntPK, nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('expires_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('redeemed_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('redeemed_order_id', sa.String(length=255), nullable=True),
    sa.CheckConstraint("kind IN ('percent', 'fixed', 'free_shipping')", name=op.f('ck_offers_kind')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_offers_customer_id_customers')),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_offers_message_id_messages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offers')),
    sa.UniqueConstraint('code', name=op.f('uq_offers_code')),
    sa.UniqueConstraint('message_id', name=op.f('uq_offers_message_id'))
    )
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_offers_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_offers_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_offers_flow_step'), ['flow', 'step'], unique=False)
        batch_op.create_index(batch_op.f('ix_offers_redeemed_at'), ['redeemed_at'], unique=False)

    op.create_table('offer_webhooks',
    sa.Column('id', BigIntPK, nullable=False),
    sa.Column('offer_id', BigIntPK, nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('webhook_id', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failed_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name=op.f('ck_offer_webhooks_status')),
    sa.ForeignKeyConstraint(['offer_id'], ['offers.id'], name=op.f('fk_offer_webhooks_offer_id_offers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offer_webhooks')),
    sa.UniqueConstraint('webhook_id', name=op.f('uq_offer_webhooks_webhook_id'))
    )
    with op.batch_alter_table('offer_webhooks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_offer_webhooks_offer_id'), ['offer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_offer_webhooks_status_next_attempt_at'),
                              ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('offer_webhooks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offer_webhooks_status_next_attempt_at'))
        batch_op.drop_index(batch_op.f('ix_offer_webhooks_offer_id'))
    op.drop_table('offer_webhooks')
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offers_redeemed_at'))
        batch_op.drop_index(batch_op.f('ix_offers_flow_step'))
        batch_op.drop_index(batch_op.f('ix_offers_customer_id'))
        batch_op.drop_index(batch_op.f('ix_offers_created_at'))
    op.drop_table('offers')
