"""Initial schema: customers, orders, segments, enrollments, outbox, timeline, staff.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 21:17:51.644412
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import lifecycle.models.base
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('customers',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('first_name', sa.String(length=200), nullable=True),
    sa.Column('last_name', sa.String(length=200), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=True),
    sa.Column('locale', sa.String(length=35), nullable=True),
    sa.Column('attributes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('marketing_consent', sa.Boolean(), nullable=False),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_customers')),
    sa.UniqueConstraint('external_id', name=op.f('uq_customers_external_id'))
    )
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_customers_email'), ['email'], unique=False)

    op.create_table('process_heartbeats',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('info', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_process_heartbeats'))
    )
    op.create_table('staff_users',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('support', 'manager', 'admin')", name=op.f('ck_staff_users_role')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_users')),
    sa.UniqueConstraint('email', name=op.f('uq_staff_users_email'))
    )
    op.create_table('suppressions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('email_hash', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('scope', sa.String(length=100), nullable=False),
    sa.Column('reason', sa.String(length=20), nullable=False),
    sa.Column('source', sa.String(length=100), nullable=False),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("reason IN ('unsubscribe', 'hard_bounce', 'spam_report', 'invalid', 'manual', 'erased')", name=op.f('ck_suppressions_reason')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suppressions')),
    sa.UniqueConstraint('email_hash', 'scope', name=op.f('uq_suppressions_email_hash_scope'))
    )
    op.create_table('api_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=128), nullable=False),
    sa.Column('scopes', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('created_by_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['staff_users.id'], name=op.f('fk_api_keys_created_by_id_staff_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_table('flow_enrollments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('flow', sa.String(length=100), nullable=False),
    sa.Column('entry_key', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('current_step', sa.String(length=100), nullable=True),
    sa.Column('next_run_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('enrolled_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('exit_reason', sa.String(length=200), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('context', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'completed', 'exited', 'failed')", name=op.f('ck_flow_enrollments_status')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_flow_enrollments_customer_id_customers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_enrollments')),
    sa.UniqueConstraint('entry_key', name=op.f('uq_flow_enrollments_entry_key'))
    )
    with op.batch_alter_table('flow_enrollments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_flow_enrollments_customer_id_flow'), ['customer_id', 'flow'], unique=False)
        batch_op.create_index(batch_op.f('ix_flow_enrollments_status_next_run_at'), ['status', 'next_run_at'], unique=False)

    op.create_table('orders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('ordered_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('total', sa.Numeric(precision=14, scale=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('items', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'completed', 'cancelled', 'refunded')", name=op.f('ck_orders_status')),
    sa.CheckConstraint('total >= 0', name=op.f('ck_orders_total_not_negative')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_orders_customer_id_customers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders')),
    sa.UniqueConstraint('external_id', name=op.f('uq_orders_external_id'))
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orders_customer_id_ordered_at'), ['customer_id', 'ordered_at'], unique=False)

    op.create_table('segment_memberships',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('segment', sa.String(length=100), nullable=False),
    sa.Column('entered_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('exited_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_segment_memberships_customer_id_customers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segment_memberships'))
    )
    with op.batch_alter_table('segment_memberships', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_segment_memberships_segment_exited_at'), ['segment', 'exited_at'], unique=False)
        batch_op.create_index('uq_segment_memberships_open', ['customer_id', 'segment'], unique=True, sqlite_where=sa.text('exited_at IS NULL'), postgresql_where=sa.text('exited_at IS NULL'))

    op.create_table('messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('enrollment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('flow', sa.String(length=100), nullable=True),
    sa.Column('step', sa.String(length=100), nullable=True),
    sa.Column('template', sa.String(length=100), nullable=False),
    sa.Column('variant', sa.String(length=50), nullable=True),
    sa.Column('to_email', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('due_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_expires_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('provider_message_id', sa.String(length=100), nullable=True),
    sa.Column('sent_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('context', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('created_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('scheduled', 'queued', 'sending', 'sent', 'failed', 'suppressed', 'paused', 'cancelled')", name=op.f('ck_messages_status')),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_messages_attempts_not_negative')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_messages_customer_id_customers')),
    sa.ForeignKeyConstraint(['enrollment_id'], ['flow_enrollments.id'], name=op.f('fk_messages_enrollment_id_flow_enrollments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_messages_idempotency_key'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_messages_customer_id_created_at'), ['customer_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_enrollment_id'), ['enrollment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_provider_message_id'), ['provider_message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_status_due_at'), ['status', 'due_at'], unique=False)

    op.create_table('touchpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('occurred_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=False),
    sa.Column('source_key', sa.String(length=255), nullable=True),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_touchpoints_customer_id_customers')),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_touchpoints_message_id_messages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_touchpoints')),
    sa.UniqueConstraint('source_key', name=op.f('uq_touchpoints_source_key'))
    )
    with op.batch_alter_table('touchpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_touchpoints_customer_id_occurred_at'), ['customer_id', 'occurred_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_touchpoints_kind_occurred_at'), ['kind', 'occurred_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_touchpoints_message_id'), ['message_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('touchpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_touchpoints_message_id'))
        batch_op.drop_index(batch_op.f('ix_touchpoints_kind_occurred_at'))
        batch_op.drop_index(batch_op.f('ix_touchpoints_customer_id_occurred_at'))

    op.drop_table('touchpoints')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_status_due_at'))
        batch_op.drop_index(batch_op.f('ix_messages_provider_message_id'))
        batch_op.drop_index(batch_op.f('ix_messages_enrollment_id'))
        batch_op.drop_index(batch_op.f('ix_messages_customer_id_created_at'))

    op.drop_table('messages')
    with op.batch_alter_table('segment_memberships', schema=None) as batch_op:
        batch_op.drop_index('uq_segment_memberships_open', sqlite_where=sa.text('exited_at IS NULL'), postgresql_where=sa.text('exited_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_segment_memberships_segment_exited_at'))

    op.drop_table('segment_memberships')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_customer_id_ordered_at'))

    op.drop_table('orders')
    with op.batch_alter_table('flow_enrollments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flow_enrollments_status_next_run_at'))
        batch_op.drop_index(batch_op.f('ix_flow_enrollments_customer_id_flow'))

    op.drop_table('flow_enrollments')
    op.drop_table('api_keys')
    op.drop_table('suppressions')
    op.drop_table('staff_users')
    op.drop_table('process_heartbeats')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_customers_email'))

    op.drop_table('customers')
