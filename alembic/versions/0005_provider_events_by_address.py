"""Provider events by address and event: a group unsubscribe looks for a newer resubscribe.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('provider_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_events_email_event'), ['email', 'event'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('provider_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_events_email_event'))
