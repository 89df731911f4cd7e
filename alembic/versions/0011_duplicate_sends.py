"""Duplicate sends: which attempt SendGrid took, when a mail was sent again after an outcome
nobody knew, and when a late event showed it had gone out twice.

``messages.sent_attempt`` is the attempt (``messages.attempts`` when it was
claimed) that SendGrid accepted as far as we recorded: from its 202, or from
the event that settled it.  ``messages.resent_at`` is set when the scheduler
queued a SendGrid mail again because no event came for an attempt whose
outcome was unknown; ``messages.duplicate_at`` when an event for another
attempt than ``sent_attempt`` showed that SendGrid took the mail twice.
``provider_events.attempt`` is our ``lifecycle_attempt`` custom argument of
the event (None for mail sent before this revision).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lifecycle.models.base

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sent_attempt', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column(
            'resent_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column(
            'duplicate_at', lifecycle.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f('ix_messages_resent_at'), ['resent_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_messages_duplicate_at'), ['duplicate_at'],
                              unique=False)
    with op.batch_alter_table('provider_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempt', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('provider_events', schema=None) as batch_op:
        batch_op.drop_column('attempt')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_messages_duplicate_at'))
        batch_op.drop_index(batch_op.f('ix_messages_resent_at'))
        batch_op.drop_column('duplicate_at')
        batch_op.drop_column('resent_at')
        batch_op.drop_column('sent_attempt')
