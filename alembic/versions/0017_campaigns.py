"""Campaigns: one-off mails to an audience (lifecycle.campaigns).

``campaigns`` (the campaign as written and its status), ``campaign_members`` (the audience
fixed at its start), ``campaign_changes`` (status history) and ``messages.campaign_id``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lifecycle.models.base

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_AT = lifecycle.models.base.UTCDateTime(timezone=True)
_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'campaigns',
        sa.Column('id', _ID, nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('spec', _JSON, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('paused_from', sa.String(length=16), nullable=True),
        sa.Column('starts_at', _AT, nullable=True),
        sa.Column('started_at', _AT, nullable=True),
        sa.Column('finished_at', _AT, nullable=True),
        sa.Column('winner_due_at', _AT, nullable=True),
        sa.Column('winner', sa.String(length=100), nullable=True),
        sa.Column('audience_size', sa.Integer(), nullable=True),
        sa.Column('mailed', sa.Integer(), nullable=True),
        sa.Column('source', sa.String(length=300), nullable=False),
        sa.Column('created_by', sa.String(length=255), nullable=False),
        sa.Column('created_at', _AT, nullable=False),
        sa.Column('updated_at', _AT, nullable=False),
        sa.CheckConstraint("status IN ('draft', 'scheduled', 'sending', 'paused', 'sent', "
                           "'cancelled')", name=op.f('ck_campaigns_status')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
        sa.UniqueConstraint('name', name=op.f('uq_campaigns_name')),
    )
    op.create_index(op.f('ix_campaigns_status_starts_at'), 'campaigns', ['status', 'starts_at'])
    op.create_table(
        'campaign_members',
        sa.Column('campaign_id', _ID, nullable=False),
        sa.Column('customer_id', _ID, nullable=False),
        sa.Column('grp', sa.String(length=8), nullable=False),
        sa.Column('variant', sa.String(length=100), nullable=True),
        sa.Column('left_out', sa.String(length=100), nullable=True),
        sa.CheckConstraint("grp IN ('all', 'test', 'rest')",
                           name=op.f('ck_campaign_members_grp')),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'],
                                name=op.f('fk_campaign_members_campaign_id_campaigns')),
        sa.ForeignKeyConstraint(['customer_id'], ['customers.id'],
                                name=op.f('fk_campaign_members_customer_id_customers')),
        sa.PrimaryKeyConstraint('campaign_id', 'customer_id', name=op.f('pk_campaign_members')),
    )
    op.create_index(op.f('ix_campaign_members_campaign_id_left_out'), 'campaign_members',
                    ['campaign_id', 'left_out'])
    op.create_table(
        'campaign_changes',
        sa.Column('id', _ID, nullable=False),
        sa.Column('campaign_id', _ID, nullable=False),
        sa.Column('action', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('changed_by', sa.String(length=255), nullable=False),
        sa.Column('changed_at', _AT, nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'],
                                name=op.f('fk_campaign_changes_campaign_id_campaigns')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_changes')),
    )
    op.create_index(op.f('ix_campaign_changes_campaign_id_id'), 'campaign_changes',
                    ['campaign_id', 'id'])
    # A nullable referencing column, added in place (no copy of the largest table): SQLite
    # takes the reference inline in ADD COLUMN (alembic would rebuild the table for it)
    if op.get_bind().dialect.name == 'sqlite':
        op.execute("ALTER TABLE messages ADD COLUMN campaign_id INTEGER "
                   "CONSTRAINT fk_messages_campaign_id_campaigns REFERENCES campaigns (id)")
    else:
        op.add_column('messages', sa.Column('campaign_id', _ID, nullable=True))
        op.create_foreign_key(op.f('fk_messages_campaign_id_campaigns'), 'messages',
                              'campaigns', ['campaign_id'], ['id'])
    op.create_index(op.f('ix_messages_campaign_id'), 'messages', ['campaign_id'])

def downgrade() -> None:
    op.drop_index(op.f('ix_messages_campaign_id'), table_name='messages')
    if op.get_bind().dialect.name == 'sqlite':
        with op.batch_alter_table('messages') as batch:
            batch.drop_column('campaign_id')
    else:
        op.drop_constraint(op.f('fk_messages_campaign_id_campaigns'), 'messages',
                           type_='foreignkey')
        op.drop_column('messages', 'campaign_id')
    op.drop_index(op.f('ix_campaign_changes_campaign_id_id'), table_name='campaign_changes')
    op.drop_table('campaign_changes')
    op.drop_index(op.f('ix_campaign_members_campaign_id_left_out'), table_name='campaign_members')
    op.drop_table('campaign_members')
    op.drop_index(op.f('ix_campaigns_status_starts_at'), table_name='campaigns')
    op.drop_table('campaigns')
