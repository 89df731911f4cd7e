"""The catalog of the data: categories and SKUs of order lines, customer attribute names and
custom event names, each with its counts, in one set-based query per list (SQLite and
PostgreSQL alike).

* categories and SKUs: the orders (of any status) with a line naming it, and their customers;
* attribute names: the customers who have it (with a value other than null);
* event names: the custom events (``POST /api/v1/events``, touchpoints of kind ``event``) of
  that name, and the customers who sent them.

Each list is ordered by count (largest first), then by name; ``limit`` keeps its first entries,
and :attr:`Catalog.distinct` says how many there are in all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, text

#: The lists of a catalog, in the order they are shown.
LISTS = ("categories", "skus", "attributes", "events")
#: What each list's ``count`` counts.
COUNTS = {"categories": "orders", "skus": "orders", "attributes": "customers",
          "events": "events"}


@dataclass(frozen=True)
class Entry:
    """One value: its name, how often it occurs (:data:`COUNTS`) and among how many customers."""

    name: str
    count: int
    customers: int
    #: The other names of its list that differ from it only by spaces or letter case
    #: (``coffee`` and ``coffee `` look the same on a page but a condition matches one).
    alike: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        """The name as a page or a terminal shows it: quoted, with escapes (Python's repr),
        when it has spaces at an end, doubled or unusual spaces, or control characters, so
        that names that differ only there can be told apart; else as it is."""
        plain = self.name == self.name.strip() and "  " not in self.name and all(
            c == " " or c.isprintable() and not c.isspace() for c in self.name)
        return self.name if plain and self.name else repr(self.name)


def _key(name: str) -> str:
    """What two names that look alike share: letters case-folded, spaces collapsed."""
    return " ".join(name.split()).casefold()


def _mark_alike(entries: list[Entry]) -> list[Entry]:
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(_key(e.name), []).append(e.name)
    return [Entry(e.name, e.count, e.customers,
                  tuple(n for n in groups[_key(e.name)] if n != e.name)) for e in entries]


@dataclass
class Catalog:
    categories: list[Entry] = field(default_factory=list)
    skus: list[Entry] = field(default_factory=list)
    attributes: list[Entry] = field(default_factory=list)
    events: list[Entry] = field(default_factory=list)
    #: How many different values each list has (more than it shows when it was limited).
    distinct: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The catalog as JSON: each list's entries as ``{"name", <count's name>, "customers"}``
        (attributes: ``{"name", "customers"}``), and ``distinct``."""
        data: dict[str, Any] = {}
        for name in LISTS:
            unit = COUNTS[name]
            data[name] = [{"name": e.name, unit: e.count} | (
                {"customers": e.customers} if unit != "customers" else {})
                for e in getattr(self, name)]
        data["distinct"] = dict(self.distinct)
        return data


def _line_values(pg: bool, key: str) -> tuple[str, str, str]:
    """(FROM, the value, its filter) of the order lines' ``key``."""
    if pg:
        source = ("orders AS o CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN "
                  "jsonb_typeof(o.items) = 'array' THEN o.items ELSE '[]'::jsonb END) AS e(item)")
        value = f"(e.item ->> '{key}')"
        return source, value, f"jsonb_typeof(e.item) = 'object' AND COALESCE({value}, '') <> ''"
    value = f"CAST(json_extract(e.value, '$.{key}') AS TEXT)"
    return ("orders AS o, json_each(o.items) AS e", value,
            f"e.type = 'object' AND COALESCE({value}, '') <> ''")


def _queries(pg: bool) -> dict[str, str]:
    by_name = 'name COLLATE "C"' if pg else "name"
    queries: dict[str, str] = {}
    for name, key in (("categories", "category"), ("skus", "sku")):
        source, value, where = _line_values(pg, key)
        queries[name] = f"""
            SELECT {value} AS name, COUNT(DISTINCT o.id) AS count,
                   COUNT(DISTINCT o.customer_id) AS customers
            FROM {source} WHERE {where} GROUP BY {value}"""
    if pg:
        queries["attributes"] = """
            SELECT a.key AS name, COUNT(*) AS count, COUNT(*) AS customers
            FROM customers AS c CROSS JOIN LATERAL jsonb_each(CASE WHEN
                 jsonb_typeof(c.attributes) = 'object' THEN c.attributes ELSE '{}'::jsonb END)
                 AS a(key, value)
            WHERE jsonb_typeof(a.value) <> 'null' GROUP BY a.key"""
        event = "(t.data ->> 'name')"
    else:
        queries["attributes"] = """
            SELECT a.key AS name, COUNT(*) AS count, COUNT(*) AS customers
            FROM customers AS c, json_each(c.attributes) AS a
            WHERE json_type(c.attributes) = 'object' AND a.type <> 'null' GROUP BY a.key"""
        event = "CAST(json_extract(t.data, '$.name') AS TEXT)"
    queries["events"] = f"""
        SELECT {event} AS name, COUNT(*) AS count, COUNT(DISTINCT t.customer_id) AS customers
        FROM touchpoints AS t WHERE t.kind = 'event' AND COALESCE({event}, '') <> ''
        GROUP BY {event}"""
    return {name: f"""
        SELECT name, count, customers, COUNT(*) OVER () AS distinct_values FROM ({query}) AS g
        ORDER BY count DESC, {by_name}""" for name, query in queries.items()}


def read_catalog(conn: Connection, limit: int | None = None) -> Catalog:
    """The catalog of the data in ``conn``: each list's first ``limit`` entries (all: None)."""
    catalog = Catalog()
    for name, query in _queries(conn.dialect.name == "postgresql").items():
        rows = conn.execute(text(query + (" LIMIT :limit" if limit is not None else "")),
                            {"limit": limit} if limit is not None else {}).all()
        setattr(catalog, name, _mark_alike([Entry(str(r.name), int(r.count), int(r.customers))
                                            for r in rows]))
        catalog.distinct[name] = int(rows[0].distinct_values) if rows else 0
    return catalog
