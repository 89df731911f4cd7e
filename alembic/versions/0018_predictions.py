"""Predictions (lifecycle.predictions): ``prediction_fits`` (each fit of BG/NBD and
Gamma-Gamma, or why none was made) and ``customer_predictions`` (every buyer's latest).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 07:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lifecycle.models.base

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_AT = lifecycle.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'prediction_fits',
        sa.Column('id', _ID, nullable=False),
        sa.Column('as_of', _AT, nullable=False),
        sa.Column('fitted_at', _AT, nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('time_unit', sa.String(length=8), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('horizon_days', sa.Integer(), nullable=False),
        sa.Column('customers', sa.Integer(), nullable=False),
        sa.Column('value_customers', sa.Integer(), nullable=True),
        *(sa.Column(name, sa.Float(), nullable=True)
          for name in ('r', 'alpha', 'a', 'b', 'log_likelihood', 'p', 'q', 'gamma',
                       'value_log_likelihood', 'correlation', 'seconds')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_prediction_fits')),
    )
    op.create_table(
        'customer_predictions',
        sa.Column('customer_id', _ID, nullable=False),
        sa.Column('fit_id', _ID, nullable=False),
        sa.Column('p_alive', sa.Float(), nullable=False),
        sa.Column('expected_orders', sa.Float(), nullable=False),
        sa.Column('expected_order_value', sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column('predicted_clv', sa.Numeric(precision=14, scale=2), nullable=False),
        sa.Column('expected_next_order_at', _AT, nullable=True),
        sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_customer_predictions')),
    )


def downgrade() -> None:
    op.drop_table('customer_predictions')
    op.drop_table('prediction_fits')
