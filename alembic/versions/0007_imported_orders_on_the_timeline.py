"""Imported orders on the timeline: an order_placed touchpoint for each completed order without one.

Before this revision only orders posted to the API got their ``order_placed``
touchpoint; orders loaded by ``lifecycle import orders``, ``sample-data`` and
the demo had none.  This fills them in as an import does now: channel
``import`` (history: flow triggers pass over them), at the order's time,
recorded at the time the order was stored, once per order (source key
``order_placed:<order id>``), numbered among the customer's completed orders.
The SQL is a frozen copy of :func:`lifecycle.imports.loader.announce_orders`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 15:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _data(postgresql: bool) -> str:
    if postgresql:
        def values(key: str) -> str:
            return (f"COALESCE((SELECT jsonb_agg(v ORDER BY v COLLATE \"C\") FROM ("
                    f"SELECT DISTINCT e ->> '{key}' AS v FROM jsonb_array_elements(n.items) AS e"
                    f" WHERE COALESCE(e ->> '{key}', '') <> '') AS x), '[]'::jsonb)")
        return (f"jsonb_build_object('categories', {values('category')}, 'currency', n.currency, 'nth', n.nth, "
                f"'order_id', n.external_id, 'skus', {values('sku')}, "
                f"'total', CAST(n.total AS TEXT))")

    def items(key: str) -> str:
        return (f"json((SELECT json_group_array(v) FROM ("
                f"SELECT DISTINCT json_extract(e.value, '$.{key}') AS v "
                f"FROM json_each(n.items) AS e WHERE COALESCE(v, '') <> '' ORDER BY v)))")
    return (f"json_object('categories', {items('category')}, 'currency', n.currency, 'nth', n.nth, "
            f"'order_id', n.external_id, 'skus', {items('sku')}, "
            f"'total', printf('%.2f', n.total))")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    key = "SUBSTR('order_placed:' || {}, 1, 255)"
    op.execute(f"""
        INSERT INTO touchpoints (customer_id, kind, channel, occurred_at, recorded_at,
                                 source_key, data)
        SELECT n.customer_id, 'order_placed', 'import', n.ordered_at, n.created_at,
               {key.format('n.external_id')}, {_data(postgresql)}
        FROM (SELECT o.customer_id, o.external_id, o.ordered_at, o.created_at, o.total, o.currency, o.items,
                     ROW_NUMBER() OVER (PARTITION BY o.customer_id
                                        ORDER BY o.ordered_at, o.id) AS nth
              FROM orders AS o WHERE o.status = 'completed') AS n
        WHERE NOT EXISTS (SELECT 1 FROM touchpoints AS t
                          WHERE t.source_key = {key.format('n.external_id')})
        ORDER BY n.ordered_at
        ON CONFLICT (source_key) DO NOTHING""")  # ids longer than 242 characters may share a key


def downgrade() -> None:
    op.execute("DELETE FROM touchpoints WHERE kind = 'order_placed' AND channel = 'import'")
