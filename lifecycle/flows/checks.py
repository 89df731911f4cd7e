"""Checks of flows against their templates and the shop's data (``lifecycle flows validate``,
the flow page).

:func:`content_problems` renders every template a flow sends (every A/B variant) in every
locale folder it has, with the real renderer and the real template variables of up to
:data:`CUSTOMERS` customers of the database (of the completed orders recorded last), or of a
built-in example customer with an example order when the database has none.  It lists every
variable a template uses that is not there — not only the first of a mail, as sending
would — each as ``FILE:LINE: message`` with a "did you mean `first_name`?" from the names
that exist at that place, and every other error rendering meets.

:func:`data_warnings` compares what flows and segments name with what the data holds:
categories and SKUs of order triggers and ``bought`` / ``due_again`` conditions, attribute
names (date triggers, ``attribute`` conditions) and event names (``event`` triggers).  A value no data
has is a warning that lists the known values, most common first
(``no order has category 'Coffee'; known: coffee (812), tea (640) …``): the flow would
wait for something that never comes.  A kind of data the database has none of at all (no
orders yet, say) is not compared.
"""

from __future__ import annotations

import difflib
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import FrameType, SimpleNamespace
from typing import Any

import jinja2
from sqlalchemy import Connection, Engine, select

from lifecycle import locales
from lifecycle.catalog.service import read_catalog
from lifecycle.config import Settings
from lifecycle.db import READ_ONLY
from lifecycle.flows.definitions import Flow, Send, SetValue
from lifecycle.flows.template_locales import locale_folders
from lifecycle.mail.context import Facts, build_context, load_facts
from lifecycle.mail.templates import Renderer, TemplateError
from lifecycle.models import Customer, Order
from lifecycle.recommendations.load import Suggestion
from lifecycle.yamlfile import InvalidFile, Located, Problem, load

#: Customers of the database whose data the templates are rendered with.
CUSTOMERS = 3
#: Known values a warning lists at most.
KNOWN_SHOWN = 10
#: The id of the built-in example customer and its order (no row has it).
EXAMPLE_ID = 0


# ---------------------------------------------------------------- every undefined variable

class _Sink(threading.local):
    """Where the undefined variables met while one mail renders are written (per thread)."""

    found: list[tuple[str, int | None, str]] | None = None


_sink = _Sink()


def _template_frames() -> Iterator[tuple[FrameType, Any]]:
    """The frames of compiled templates on the stack, innermost first, each with its
    template."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None:
        template = frame.f_globals.get("__jinja_template__")
        if template is not None:
            yield frame, template
        frame = frame.f_back


_LOCAL = re.compile(r"^l_\d+_(.+)$")


def _names_at(frame: FrameType) -> dict[str, Any]:
    """The template's own variables in ``frame`` (loop variables, ``set``), by name."""
    found: dict[str, Any] = {}
    for key, value in frame.f_locals.items():
        match = _LOCAL.match(key)
        if match and value is not jinja2.utils.missing \
                and not isinstance(value, jinja2.Undefined):
            found.setdefault(match.group(1), value)
    return found


def _where(roots: Mapping[str, Any], target: Any, depth: int = 3) -> str | None:
    """The name a template reaches ``target`` by from ``roots`` (``customer``,
    ``order.lines[0]``), looking ``depth`` levels down; None when it is not found."""
    level: list[tuple[str, Any]] = list(roots.items())
    for _ in range(depth):
        following: list[tuple[str, Any]] = []
        for name, value in level:
            if value is target:
                return name
            if isinstance(value, Mapping):
                following += [(f"{name}.{k}", v) for k, v in value.items() if isinstance(k, str)]
            elif isinstance(value, list | tuple):
                following += [(f"{name}[{i}]", v) for i, v in enumerate(value[:3])]
        level = following
    return None


def _hint(name: str, known: Iterable[str], lead: str = "it has") -> str:
    """"; did you mean `first_name`?" for the closest of ``known``, else what there is."""
    names = sorted({k for k in known if isinstance(k, str) and not k.startswith("_")})
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean `{close[0]}`?"
    if names and len(names) <= 20:
        return f"; {lead} {', '.join(names)}"
    return ""


class _Collecting(jinja2.ChainableUndefined):
    """An undefined value that, when a template uses it (writes it, tests it, loops over it,
    computes with it), notes where and what and goes on as an empty value: every undefined
    variable of a mail is found in one rendering.  (``is defined`` and ``default`` are no use
    and note nothing, as with the strict undefined that sending uses.)"""

    __slots__ = ()

    def _note(self) -> None:
        if _sink.found is None:
            return
        frames = list(_template_frames())
        file, line = None, None
        known: dict[str, Any] = {}
        if frames:
            frame, template = frames[0]
            file = template.name
            line = template.get_corresponding_lineno(frame.f_lineno)
            for frame_, _template in frames:
                known = {**_names_at(frame_), **known}
                context = frame_.f_locals.get("context")
                if isinstance(context, jinja2.runtime.Context):
                    known = {**context.get_all(), **known}
                    break
        name = self._undefined_name
        obj = self._undefined_obj
        if self._undefined_hint:
            message = self._undefined_hint
        elif obj is jinja2.utils.missing:
            message = f"`{name}` is undefined" + _hint(str(name), set(known) - {name},
                                                          "the variables here are")
        else:
            owner = _where(known, obj)
            keys = obj.keys() if isinstance(obj, Mapping) else ()
            what = f"`{owner}`" if owner else f"this {jinja2.utils.object_type_repr(obj)}"
            if obj is None:
                message = (f"`{name}` is read from a value that is empty (None) here, such as "
                           "`order` for a customer without orders: test it first with "
                           "{% if … %}")
            else:
                message = f"{what} has no `{name}`" + _hint(str(name), keys)
        _sink.found.append((file or "", line, message))

    def _use(self, *args: Any, **kwargs: Any) -> Any:
        self._note()
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _use
    __div__ = __rdiv__ = __truediv__ = __rtruediv__ = _use
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pos__ = __neg__ = _use
    __call__ = __pow__ = __rpow__ = _use
    __lt__ = __le__ = __gt__ = __ge__ = _use

    def __str__(self) -> str:
        self._note()
        return ""

    def __html__(self) -> str:
        return str(self)

    def __iter__(self) -> Iterator[Any]:
        self._note()
        return iter(())

    def __len__(self) -> int:
        self._note()
        return 0

    def __bool__(self) -> bool:
        self._note()
        return False

    def __int__(self) -> int:
        self._note()
        return 0

    def __float__(self) -> float:
        self._note()
        return 0.0

    def __eq__(self, other: object) -> bool:
        self._note()
        return type(self) is type(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return id(type(self))


class CheckingRenderer(Renderer):
    """The renderer of sending (same sandbox, bounds and locale folders) whose undefined
    variables are noted, not raised: :meth:`problems` renders a mail and lists them all."""

    def __init__(self, folder: Path, default_locale: str) -> None:
        super().__init__(folder, default_locale)
        self.env.undefined = _Collecting
        #: Whether the last :meth:`problems` ran out of time.
        self.timed_out = False

    def problems(self, name: str, context: dict[str, Any], locale: str) -> list[Problem]:
        """Every problem of email ``name`` rendered with ``context`` in ``locale``: each
        undefined variable (``FILE:LINE``, relative to the templates folder, with a hint),
        and the error that stopped it, if one did."""
        _sink.found = []
        found: list[tuple[str, int | None, str]] = []
        self.timed_out = False
        try:
            self.render(name, context, locale)
        except TemplateError as exc:
            self.timed_out = exc.timed_out
            noted = {file for file, _line, _message in _sink.found or []}
            if exc.file not in noted:  # else most likely the undefined's doing (an empty subject)
                found.append((exc.file, exc.line, exc.message))
        finally:
            found = (_sink.found or []) + found
            _sink.found = None
        return [Problem(str(self.folder / file), line or 1, 0, message)
                for file, line, message in found]


_renderers: dict[tuple[Path, str], CheckingRenderer] = {}
_renderers_lock = threading.Lock()


def checking_renderer(folder: Path, default_locale: str) -> CheckingRenderer:
    """One :class:`CheckingRenderer` per templates folder and default locale, kept (its
    compiled templates are forgotten when a file changes, as the sending renderer's)."""
    with _renderers_lock:
        found = _renderers.get((folder, default_locale))
        if found is None:
            found = _renderers[(folder, default_locale)] = CheckingRenderer(folder,
                                                                            default_locale)
        return found


# ------------------------------------------------------------------------ who mails are for

@dataclass
class Audience:
    """Whom the templates are rendered for: customers (rows or the example) and their facts."""

    customers: list[Any]
    facts: Facts
    example: bool
    #: "3 customers (c-17, c-4, c-99)" or "the built-in example customer"
    label: str = ""


def example_audience(settings: Settings, as_of: datetime) -> Audience:
    """A built-in customer with two orders, the latest of three lines, and suggestions: what
    the templates are rendered with when the database has no customer with an order."""
    currency = settings.currency
    customer = SimpleNamespace(
        id=EXAMPLE_ID, external_id="example", email="ada.example@example.com",
        first_name="Ada", last_name="Example", locale=settings.locale,
        timezone=settings.timezone, attributes={"birthday": "1990-05-17"})
    items = [
        {"sku": "COF-ETH", "name": "Ethiopia Yirgacheffe beans 250 g", "category": "coffee",
         "quantity": 2, "price": "12.90", "url": f"{settings.shop_url}/p/cof-eth"},
        {"sku": "TEA-SEN", "name": "Sencha green tea 100 g", "category": "tea", "quantity": 1,
         "price": "8.90", "url": f"{settings.shop_url}/p/tea-sen"},
        {"sku": "ACC-FIL", "name": "Paper filters, 100", "category": "accessories",
         "quantity": 1, "price": "4.50"},
    ]
    order = SimpleNamespace(
        id=EXAMPLE_ID, external_id="EXAMPLE-1001", customer_id=EXAMPLE_ID,
        total=Decimal("39.20"), currency=currency, status="completed",
        ordered_at=as_of - timedelta(days=2), items=items)
    suggestions = [Suggestion("COF-COL", "Colombia Huila beans 250 g", Decimal("11.50"),
                              currency, f"{settings.shop_url}/p/cof-col", None),
                   Suggestion("ACC-GRN", "Hand grinder", Decimal("59.00"), currency, None, None)]
    facts = Facts(latest={EXAMPLE_ID: order}, totals={EXAMPLE_ID: (2, Decimal("71.10"))},
                  orders={order.external_id: order}, suggestions={EXAMPLE_ID: suggestions})
    return Audience([customer], facts, True, "the built-in example customer")


def audience(conn: Connection | None, settings: Settings, as_of: datetime) -> Audience:
    """Up to :data:`CUSTOMERS` customers of the database: those of the completed orders
    recorded last (up to ``as_of``; read backwards along the orders' key, so a page can ask
    on every view), with their facts; the example customer when there is no database
    (``conn`` None) or no completed order."""
    if conn is None:
        return example_audience(settings, as_of)
    orders, customers = Order.__table__, Customer.__table__
    recent = conn.execute(select(orders.c.customer_id)
                          .where(orders.c.status == "completed", orders.c.ordered_at <= as_of)
                          .order_by(orders.c.id.desc()).limit(CUSTOMERS * 30)).scalars()
    ids = list(dict.fromkeys(recent))[:CUSTOMERS]
    if not ids:
        return example_audience(settings, as_of)
    found = {r.id: r for r in conn.execute(select(customers).where(customers.c.id.in_(ids)))}
    rows = [found[i] for i in ids if i in found]
    facts = load_facts(conn, ids, [], as_of, settings.currency)
    names = ", ".join(str(r.external_id) for r in rows)
    return Audience(rows, facts, False,
                    f"{len(rows)} customer{'s' if len(rows) != 1 else ''} ({names})")


# ---------------------------------------------------------------------------- content

def template_locales(templates_dir: Path, name: str, default: str) -> list[str]:
    """The locales template ``name`` is rendered in: each of its locale folders (as Babel
    names them; the others are problems of their own) and the shop's default."""
    found = [f.name for f in locale_folders(templates_dir / name)
             if locales.parse_locale(f.name) == f.name]
    return sorted(set(found) | {default})


def _as(customer: Any, locale: str) -> Any:
    """``customer`` reading ``locale``."""
    fields = customer._asdict() if hasattr(customer, "_asdict") else dict(vars(customer))
    return SimpleNamespace(**{**fields, "locale": locale})


def content_problems(settings: Settings, flows: Iterable[Flow], who: Audience,
                     as_of: datetime) -> list[Problem]:
    """Every problem of every template the ``flows`` send, rendered for each customer of
    ``who`` in every locale the template has (see the module doc), each once, in file and
    line order.  Nothing is sent or stored; links are signed with a throwaway key."""
    if settings.secret_key is None:  # links are made but never followed
        settings = replace(settings, secret_key=secrets.token_hex(32))
    renderer = checking_renderer(settings.templates_dir, settings.locale)
    seen: dict[tuple[str, int, str], Problem] = {}
    slow: set[str] = set()  # emails that ran out of time: not rendered again
    for flow in flows:
        for step in flow.steps:
            if not isinstance(step.action, Send):
                continue
            for variant in step.action.variants:
                if variant.template in slow:
                    continue
                for locale in template_locales(settings.templates_dir, variant.template,
                                               settings.locale):
                    for customer in who.customers:
                        context = build_context(
                            None, settings, _as(customer, locale), as_of=as_of,
                            flow=flow.name, step=step.id, offer=step.action.offer,
                            facts=who.facts, test=True, utm=flow.utm)
                        found = renderer.problems(variant.template, context, locale)
                        for problem in found:
                            seen.setdefault((problem.file, problem.line, problem.message),
                                            problem)
                        if renderer.timed_out:  # the others would each run out of time too
                            slow.add(variant.template)
                            at = found[-1] if found else Problem(
                                str(settings.templates_dir / variant.template), 1, 0, "")
                            note = Problem(at.file, at.line, at.column, (
                                f"the email {variant.template} was not rendered for the other "
                                "customers and locales: it ran out of time once, fix that first"))
                            seen.setdefault((note.file, note.line, note.message), note)
                            break
                    if variant.template in slow:
                        break
    return sorted(seen.values(), key=lambda p: (p.file, p.line, p.message))


# ------------------------------------------------------------------------------- data

@dataclass
class Known:
    """What the data holds: each value with how many orders, customers or events have it."""

    categories: dict[str, int] = field(default_factory=dict)
    skus: dict[str, int] = field(default_factory=dict)
    attributes: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)


def known_values(conn: Connection) -> Known:
    """Every category and SKU of the order lines (orders counted), attribute name (customers
    counted) and event name (events counted): :func:`lifecycle.catalog.service.read_catalog`,
    the same on SQLite and PostgreSQL."""
    catalog = read_catalog(conn)
    return Known(*({e.name: e.count for e in getattr(catalog, name)}
                   for name in ("categories", "skus", "attributes", "events")))


@dataclass(frozen=True)
class Reference:
    """A value a flow or segment names: ``kind`` category, sku, attribute or event, with
    where it is written."""

    kind: str
    value: str
    file: str
    line: int
    column: int


def _walk(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, path + (i,))


def _ref(located: Located, kind: str, value: Any, path: tuple[str | int, ...]) -> list[Reference]:
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        return []
    line, column = located.where(path)
    return [Reference(kind, str(value), located.file, line, column)]


def flow_references(located: Located) -> list[Reference]:
    """The categories, SKUs, attributes and events a flow file names (as written, with their
    place): trigger options and ``attribute`` conditions of branches and goals."""
    data = located.data if isinstance(located.data, dict) else {}
    found: list[Reference] = []
    trigger = data.get("trigger")
    if isinstance(trigger, dict):
        for kind, options in trigger.items():
            here: tuple[str | int, ...] = ("trigger", kind)
            if kind == "event":
                found += _ref(located, "event", options, here)
            elif isinstance(options, dict):
                if kind in ("order_placed", "first_order"):
                    for key in ("category", "sku"):
                        if key in options:
                            found += _ref(located, key, options[key], here + (key,))
                if kind == "date" and "attribute" in options:
                    found += _ref(located, "attribute", options["attribute"],
                                  here + ("attribute",))
    for section in ("goals", "steps"):
        for path, node in _walk(data.get(section), (section,)):
            if isinstance(node, dict) and isinstance(node.get("attribute"), dict) \
                    and (section == "goals" or "branch" in path):
                found += _ref(located, "attribute", node["attribute"].get("name"),
                              path + ("attribute", "name"))
    return found


def segment_references(located: Located) -> list[Reference]:
    """The categories, SKUs and attributes the custom segments of ``segments.yaml`` name:
    ``bought``, ``due_again`` and ``attribute`` conditions."""
    data = located.data if isinstance(located.data, dict) else {}
    found: list[Reference] = []
    for path, node in _walk(data.get("custom"), ("custom",)):
        if not isinstance(node, dict):
            continue
        for kind in ("bought", "due_again"):
            product = node.get(kind)
            if isinstance(product, dict):
                for key in ("category", "sku"):
                    if key in product:
                        found += _ref(located, key, product[key], path + (kind, key))
        attribute = node.get("attribute")
        if isinstance(attribute, dict):
            found += _ref(located, "attribute", attribute.get("name"),
                          path + ("attribute", "name"))
    return found


#: What holds each kind of value, for the warning.
_HOLDER = {"category": "no order has category", "sku": "no order has SKU",
           "attribute": "no customer has the attribute", "event": "no event is named"}
_NOTE = {"attribute": " (nor does any flow's set step write it)",
         "event": " (an event trigger waits for events sent with this name)"}


def _listing(counts: Mapping[str, int]) -> str:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{value} ({count})" for value, count in ranked[:KNOWN_SHOWN])
    more = len(ranked) - KNOWN_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def data_warnings(known: Known, references: Iterable[Reference],
                  written: Iterable[str] = ()) -> list[Problem]:
    """A warning for each value in ``references`` that no data has, listing the known ones
    (most common first, at most :data:`KNOWN_SHOWN`) with a "did you mean" when one is
    close; ``written`` are attribute names flows' ``set`` steps write (known too).  A kind
    the data has nothing of is not checked."""
    by_kind = {"category": known.categories, "sku": known.skus,
               "attribute": known.attributes, "event": known.events}
    written = set(written)
    warnings: dict[tuple[str, int, int, str], Problem] = {}
    for ref in references:
        counts = by_kind[ref.kind]
        if not counts or ref.value in counts or (ref.kind == "attribute"
                                                 and ref.value in written):
            continue
        close = difflib.get_close_matches(ref.value, list(counts), n=1, cutoff=0.6) or [
            k for k in counts if k.casefold() == ref.value.casefold()]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        message = (f"{_HOLDER[ref.kind]} {ref.value!r}{_NOTE.get(ref.kind, '')}; known: "
                   f"{_listing(counts)}{hint}")
        warnings.setdefault((ref.file, ref.line, ref.column, message),
                            Problem(ref.file, ref.line, ref.column, message))
    return sorted(warnings.values(), key=lambda p: (p.file, p.line, p.column))


def date_warnings(conn: Connection, flows: Iterable[Flow]) -> list[Problem]:
    """A warning at each date trigger's ``attribute`` when stored customers have a value of
    it that is not a date (imports refuse such values; older rows, the API's or another
    tool's may have them): they are never wished, and nothing else would say so."""
    from lifecycle.flows.dates import bad_dates

    found = []
    for flow in flows:
        attribute = flow.trigger.options.get("attribute") if flow.trigger.kind == "date" \
            else None
        if not attribute:
            continue
        count, shown = bad_dates(conn, attribute)
        if not count:
            continue
        try:
            line, column = load(Path(flow.file)).where(("trigger", "date", "attribute"))
        except (InvalidFile, OSError):
            line, column = 1, 1
        examples = ", ".join(f"{who} has {value!r}" for who, value in shown)
        more = f" and {count - len(shown)} more" if count > len(shown) else ""
        found.append(Problem(flow.file, line, column, (
            f"{count} customer{'s' if count != 1 else ''} ha{'ve' if count != 1 else 's'} "
            f"{attribute} values that are not dates (YYYY-MM-DD or MM-DD), so this flow never "
            f"reaches them: {examples}{more}")))
    return found


def set_attributes(flows: Iterable[Flow]) -> set[str]:
    """The attribute names the flows' ``set`` steps write."""
    return {s.action.attribute for f in flows for s in f.steps if isinstance(s.action, SetValue)}


# ---------------------------------------------------------------------------- together

@dataclass
class Report:
    """What :func:`check` found: errors (a mail would fail), warnings (a flow may wait for
    nothing), and whom the templates were rendered for."""

    errors: list[Problem]
    warnings: list[Problem]
    rendered_for: str
    #: Why the data was not compared (no database to read), or "".
    note: str = ""


def check(settings: Settings, flows: Sequence[Flow], conn: Connection | None, as_of: datetime,
          segments_file: Path | None = None) -> Report:
    """:func:`content_problems` and :func:`data_warnings` of ``flows`` (and of the custom
    segments of ``segments_file``), reading the database through ``conn`` (None: no
    database; the example customer, no data warnings)."""
    who = audience(conn, settings, as_of)
    errors = content_problems(settings, flows, who, as_of)
    warnings: list[Problem] = []
    if conn is not None:
        references: list[Reference] = []
        for flow in flows:
            try:
                references += flow_references(load(Path(flow.file)))
            except InvalidFile:
                continue  # reported by the flow's own checks
        if segments_file is not None and segments_file.is_file():
            try:
                references += segment_references(load(segments_file))
            except InvalidFile:
                pass
        if references:  # the catalog reads whole tables: only when something is named
            warnings = data_warnings(known_values(conn), references, set_attributes(flows))
        warnings += date_warnings(conn, flows)
    return Report(errors, warnings, who.label,
                  "" if conn is not None else "no database to read")


#: Seconds a flow page's checks are kept for its file as it is: the page does not render every
#: template in every locale again at each view (a data or template change shows within this).
CHECKS_KEPT_SECONDS = 60.0
_kept: dict[tuple[str, str, str, int, int], tuple[float, Report]] = {}


def check_flow(settings: Settings, engine: Engine, flow: Flow, as_of: datetime,
               fresh: bool = False) -> Report:
    """:func:`check` of one flow for its page: its templates, and what it names that no data
    has (segments are checked by ``flows validate``), reading the database ``engine`` on a
    connection that only reads (on SQLite it holds no lock while templates render).  Kept
    :data:`CHECKS_KEPT_SECONDS` per flow file as it is; ``fresh`` checks again all the same
    (a manager making the flow live: a template broken a moment ago must not slip through)."""
    try:
        info = Path(flow.file).stat()
        key = (str(engine.url), str(settings.templates_dir), flow.file, info.st_mtime_ns,
               info.st_size)
    except OSError:
        key = None
    now = time.monotonic()
    if not fresh and key is not None and key in _kept and \
            now - _kept[key][0] < CHECKS_KEPT_SECONDS:
        return _kept[key][1]
    if fresh:
        checking_renderer(settings.templates_dir, settings.locale).look_again()
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        report = check(settings, [flow], conn, as_of)
    if key is not None:
        if len(_kept) > 200:
            _kept.clear()
        _kept[key] = (now, report)
    return report
