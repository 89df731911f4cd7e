"""Lighter writes per mail sent.

Every mail changes status three times (queued, sending, sent), and each change
adds an entry to every index of ``messages``.  ``resent_at`` and ``duplicate_at``
are set on few mails: their indexes become partial (only where set).  Nothing
looks mails up by ``provider_message_id`` (SendGrid's events carry our own id),
so its index goes.  On PostgreSQL the rendered parts kept in ``message_contents``
are compressed with LZ4 where the server has it (several times faster than the
default pglz for about the same size); rows written before stay as they are.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTIAL = ("resent_at", "duplicate_at")


def _lz4_available() -> bool:
    return bool(op.get_bind().exec_driver_sql(
        "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
        "AND 'lz4' = ANY(enumvals)").first())


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_provider_message_id')
        for column in _PARTIAL:
            batch_op.drop_index(f'ix_messages_{column}')
            batch_op.create_index(f'ix_messages_{column}', [column], unique=False,
                                  sqlite_where=sa.text(f'{column} IS NOT NULL'),
                                  postgresql_where=sa.text(f'{column} IS NOT NULL'))
    if op.get_bind().dialect.name == 'postgresql' and _lz4_available():
        for column in ("subject", "text", "html"):
            op.execute(f"ALTER TABLE message_contents ALTER COLUMN {column} "
                       "SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql' and _lz4_available():
        for column in ("subject", "text", "html"):
            op.execute(f"ALTER TABLE message_contents ALTER COLUMN {column} "
                       "SET COMPRESSION default")
    with op.batch_alter_table('messages', schema=None) as batch_op:
        for column in _PARTIAL:
            batch_op.drop_index(f'ix_messages_{column}')
            batch_op.create_index(f'ix_messages_{column}', [column], unique=False)
        batch_op.create_index('ix_messages_provider_message_id', ['provider_message_id'],
                              unique=False)
