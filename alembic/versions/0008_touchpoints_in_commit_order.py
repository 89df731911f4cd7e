"""Touchpoints carry the id of the transaction that wrote them, so flow triggers read them in an
order in which none can still appear behind the cursor (PostgreSQL).

On PostgreSQL a touchpoint's id is taken when it is inserted, but it becomes
visible when its transaction commits: a long transaction (an order's segment
refresh, the nightly full refresh) can commit ids below ones that another
transaction committed earlier, and an id cursor that moved past them never
reads them.  ``touchpoints.txid`` (default ``pg_current_xact_id()`` on
PostgreSQL; empty on SQLite, where one writer at a time commits ids in order)
lets :func:`lifecycle.flows.triggers.dispatch` read only rows of transactions
older than every transaction still running, in ``(txid, id)`` order, with the
cursor ``flow_trigger_cursors.last_txid``.  Rows written before this revision
have no txid and are read first, by id, as before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 16:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable and without a default first: adding a column with a volatile default would
    # rewrite the whole table; the default then applies to new rows only.
    with op.batch_alter_table('touchpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('txid', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_touchpoints_txid_id'), ['txid', 'id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE touchpoints ALTER COLUMN txid "
                   "SET DEFAULT (pg_current_xact_id()::text)::bigint")
    with op.batch_alter_table('flow_trigger_cursors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_txid', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('flow_trigger_cursors', schema=None) as batch_op:
        batch_op.drop_column('last_txid')
    with op.batch_alter_table('touchpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_touchpoints_txid_id'))
        batch_op.drop_column('txid')
