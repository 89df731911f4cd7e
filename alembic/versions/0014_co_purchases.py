"""Products seen in order items and co-purchase counts, for recommendations.

``products``: each SKU as its latest completed order line described it (name,
unit price and currency, url, image_url) with its number of distinct buyers.
``co_purchases``: how many distinct customers bought both of two SKUs, each
pair both ways round.  ``customer_suggestions``: for each customer, the products
bought most often with what they had bought, ranked.  All three are replaced by
every full segment refresh.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import lifecycle.models.base

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'products',
        sa.Column('sku', sa.Text(), nullable=False),
        sa.Column('name', sa.Text(), nullable=True),
        sa.Column('price', sa.String(length=32), nullable=True),
        sa.Column('currency', sa.String(length=3), nullable=True),
        sa.Column('url', sa.Text(), nullable=True),
        sa.Column('image_url', sa.Text(), nullable=True),
        sa.Column('buyers', sa.Integer(), nullable=False),
        sa.Column('best_seller', sa.Integer(), nullable=False),
        sa.Column('last_ordered_at', lifecycle.models.base.UTCDateTime(timezone=True),
                  nullable=False),
        sa.PrimaryKeyConstraint('sku', name=op.f('pk_products')),
    )
    op.create_index(op.f('ix_products_best_seller'), 'products', ['best_seller'], unique=False)
    op.create_table(
        'co_purchases',
        sa.Column('sku', sa.Text(), nullable=False),
        sa.Column('other_sku', sa.Text(), nullable=False),
        sa.Column('customers', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('sku', 'other_sku', name=op.f('pk_co_purchases')),
    )
    op.create_table(
        'customer_suggestions',
        sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('rank', sa.SmallInteger(), nullable=False),
        sa.Column('sku', sa.Text(), nullable=False),
        sa.Column('score', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('customer_id', 'rank', name=op.f('pk_customer_suggestions')),
    )


def downgrade() -> None:
    op.drop_table('customer_suggestions')
    op.drop_table('co_purchases')
    op.drop_index(op.f('ix_products_best_seller'), table_name='products')
    op.drop_table('products')
