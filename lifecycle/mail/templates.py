"""Rendering the email templates that CRM managers edit: untrusted input.

Each email is a folder ``templates/email/<name>/`` with one folder per locale
(``en/``, ``de/``, ``de_AT/`` …) holding ``subject.txt``, ``body.txt`` and
``body.html`` (which may extend ``_base/body.html``); each part is taken from the
first folder of the customer's fallback chain that has it, else from the email's
root (see :class:`Renderer`).  They render in a sandboxed, immutable Jinja2
environment: no attribute access to internals, no mutation of the context, HTML
autoescaped, and any undefined variable is an error.  Every failure becomes a
:class:`TemplateError` naming the file and line.  An HTML part's ``<style>``
rules are inlined onto its elements (skipped when it has none but ``@media``
rules, as the shipped layout).

Rendering is bounded, so that a template cannot freeze the process that
renders it (a worker, or the web app's preview): one Python operation on a
big integer or string holds the interpreter for as long as it takes, so each
is refused *before* it runs when its result would be too big, and the whole
mail has a time limit, checked at every call, loop iteration, operator and
piece of output.  The bounds (see :class:`BoundedSandbox`):

* :data:`RENDER_SECONDS` of processor time per mail (subject, text and HTML
  together; see :func:`_past_deadline`);
* :data:`MAX_OUTPUT` characters per rendered part;
* :data:`MAX_BUILT` characters (or items) built in all by the template's own
  operations while one mail renders: ``*``, ``+``, ``~``, ``%``, string
  methods, filters and macros;
* :data:`MAX_RANGE` items per ``range``;
* :data:`MAX_INT_BITS` bits per integer: in a literal, in what an operator is
  given or makes (every operator Jinja has is checked), in the string the
  ``int`` and ``float`` filters are given (refused before converting) and in
  what a filter or call makes;
* :data:`MAX_LENGTH` for any width, padding, count or repetition given to a
  method, filter or format (``'x'.center(n)``, ``'%0*d'``, ``'{:>n}'``,
  ``indent(n)``, ``batch(n)``, ``to_bytes(n)``), and for the widths of one
  format added up;
* numbers and bytes have a short list of methods (:data:`_NUMBER_METHODS`,
  :data:`_BYTES_METHODS`), and ``encode``/``decode`` only the linear codecs
  in :data:`_CODECS`; ``sum`` adds through the bounded ``+``; ``round`` takes
  at most as many digits as an integer of MAX_INT_BITS bits has.
"""

from __future__ import annotations

import codecs
import functools
import math
import re
import stat
import string
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import css_inline
import jinja2
import yaml
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import make_attrgetter
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from lifecycle.locales import DEFAULT_LOCALE, fallback_chain, html_lang

_SPACE = re.compile(r"\s+")
#: Two or more blank lines in a text part (they become one: templates may leave blank lines
#: around their ``{% if %}`` blocks without the mail showing gaps).
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n){2,}")
MAX_SUBJECT = 255
#: Seconds of processor time one mail (subject, text and HTML) may take to render (the
#: rendering thread's own time: waiting for a busy machine does not count).
RENDER_SECONDS = 5.0
#: After a mail ran out of time, every mail a renderer renders in the next STRAINED_SECONDS
#: gets QUICK_SECONDS (an ordinary mail takes about a millisecond): a batch of 100 mails whose
#: template runs away for all of them fails in about a minute, inside its send lease.
QUICK_SECONDS = 0.5
STRAINED_SECONDS = 60.0
#: Characters one rendered part (subject, text or HTML) may have.
MAX_OUTPUT = 1_000_000
#: Characters or items a template's own operations may build in all while one mail renders.
MAX_BUILT = 10_000_000
#: Longest value one operation may make, and the largest width, count or repetition.
MAX_LENGTH = 1_000_000
#: Items in one ``range()`` (Jinja's own sandbox allows 100,000).
MAX_RANGE = 10_000
#: Bits of any integer a template makes or computes with (about 3,000 decimal digits).
MAX_INT_BITS = 10_000


class LimitExceeded(SecurityError):
    """A template went past one of the rendering bounds (the message says which)."""


class _Limits(threading.local):
    """The running render's limits, per thread (one environment serves every worker thread):
    its processor time (``seconds`` from ``cpu_start``, :func:`time.thread_time`), a wall-clock
    ``deadline`` (``time.monotonic()``) before which that cannot be used up, and what it may
    still build."""

    deadline = math.inf
    cpu_start = 0.0
    seconds = 0.0
    note = ""
    left = math.inf


_limits = _Limits()


class _TimeUp(LimitExceeded):
    """The mail's rendering ran out of time."""


def _check_time() -> None:
    if time.monotonic() > _limits.deadline:
        _past_deadline()


def _past_deadline() -> None:
    """The wall-clock deadline passed: stop if the render has used its processor time, else move
    the deadline by what is left (a thread that waited — for the interpreter, for a busy machine
    — has not used its time: an ordinary mail is never failed for a stall)."""
    used = time.thread_time() - _limits.cpu_start
    if used > _limits.seconds:
        raise _TimeUp(f"rendering used more than {_limits.seconds:g} seconds of processor time, "
                      f"the limit for one mail{_limits.note}")
    _limits.deadline = time.monotonic() + (_limits.seconds - used)


def _spend(amount: int, what: str) -> None:
    """Count ``amount`` characters or items built; refused (before building) beyond the budget."""
    if amount > MAX_LENGTH:
        raise LimitExceeded(f"{what} would make {amount:,} characters or items; at most "
                            f"{MAX_LENGTH:,}")
    if amount > _limits.left:
        raise LimitExceeded(f"{what} would take this mail past {MAX_BUILT:,} characters or "
                            "items built in all")
    _limits.left -= amount


def _size(value: Any, limit: int = MAX_BUILT) -> int:
    """About how many characters ``value`` is when written out (containers counted through,
    stopping once past ``limit``): what its string costs before it is made."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    if isinstance(value, range):
        return len(value) * 2
    if isinstance(value, dict):
        items: Iterable[Any] = (x for pair in value.items() for x in pair)
        total = len(value) * 2
    elif isinstance(value, list | tuple | set | frozenset):
        items, total = value, len(value) * 2
    else:
        return 1
    if total > limit:
        return total
    for item in items:
        total += _size(item, limit - total)
        if total > limit:
            break
    return total


def _width(value: Any, what: str) -> None:
    """A width, count or repetition given to a method or filter: an int of at most MAX_LENGTH."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_LENGTH:
        raise LimitExceeded(f"{what} {value:,} is over the limit of {MAX_LENGTH:,}")


#: Numbers in a %-format: width and precision (``*`` takes them from the arguments).
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _check_printf(fmt: str, args: Any) -> int:
    """Refuse a ``%`` format whose widths or precisions (given, or ``*`` from ``args``) are
    over the limit, before formatting; the characters they add up to in all."""
    star = False
    total = 0
    for width, precision in _PRINTF.findall(fmt):
        for number in (width, precision):
            if number == "*":
                star = True
            elif number:
                value = int(number) if len(number) < 20 else MAX_LENGTH + 1
                _width(value, "a format width of")
                total += value
    if star:
        for arg in args if isinstance(args, tuple) else (args,):
            _width(arg, "a format width of")
            if isinstance(arg, int):
                total += abs(arg)
    return total


def _check_format(fmt: str) -> int:
    """Refuse a ``str.format`` string whose field specs ask for widths or precisions over the
    limit, or take them from the arguments (``{:{}}``), before formatting; the characters they
    add up to in all."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return 0  # str.format raises its own error
    total = 0
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            raise LimitExceeded("a format spec taken from the arguments ({:{}}) is not allowed")
        for number in _DIGITS.findall(spec):
            value = int(number) if len(number) < 20 else MAX_LENGTH + 1
            _width(value, "a format width of")
            total += value
    return total


def _bounded_range(*args: int) -> range:
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise LimitExceeded(f"range() of {len(found):,} items; at most {MAX_RANGE:,}")
    _check_time()
    return found


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(value: Any, what: str) -> None:
    """Refuse an integer of more than MAX_INT_BITS bits (one operation on it can hold the
    interpreter for seconds)."""
    if _is_int(value) and value.bit_length() > MAX_INT_BITS:
        raise LimitExceeded(f"{what} of {value.bit_length():,} bits; at most {MAX_INT_BITS:,}")


#: Bits one digit carries in each base ``int()`` takes.
_DIGIT_BITS = {base: math.log2(base) for base in range(2, 37)}
_PREFIX_BASES = {"0x": 16, "0o": 8, "0b": 2}
#: Decimal digits of an integer of MAX_INT_BITS bits.
_INT_DIGITS = math.ceil(MAX_INT_BITS * math.log10(2))


def _check_number_text(value: Any, base: Any, what: str) -> None:
    """Refuse turning a string of more digits than an integer of MAX_INT_BITS bits has into
    a number, before converting it (``int('f' * 10**6, 16)`` is fast and huge)."""
    if not isinstance(value, str | bytes):
        return
    if not isinstance(base, int) or base not in _DIGIT_BITS:
        head = value[:4].decode("latin-1") if isinstance(value, bytes) else value[:4]
        base = _PREFIX_BASES.get(head.strip().lstrip("+-")[:2].lower(), 10) if base == 0 else 10
    digits = math.ceil(MAX_INT_BITS / _DIGIT_BITS[base]) + 2  # and a sign or a prefix
    if len(value) > digits:
        raise LimitExceeded(f"{what} of {len(value):,} characters; at most {digits:,} in base "
                            f"{base} (an integer of at most {MAX_INT_BITS:,} bits)")


#: Codecs written in C, linear in their input (others, punycode, take quadratic time).
_CODECS = frozenset(codecs.lookup(name).name for name in (
    "utf-8", "ascii", "latin-1", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
    "utf-32-be", "cp1252"))
#: Methods of numbers and bytes a template may call (any other is refused: to_bytes(10**9)
#: allocates gigabytes, from_bytes makes integers of any size).
_NUMBER_METHODS = frozenset(["bit_length", "bit_count", "conjugate", "as_integer_ratio",
                             "is_integer", "hex", "to_bytes"])
_BYTES_METHODS = frozenset(["decode", "hex", "count", "find", "rfind", "index", "rindex",
                            "startswith", "endswith", "strip", "lstrip", "rstrip", "split",
                            "rsplit", "lower", "upper", "isascii", "isalnum", "isalpha",
                            "isdigit", "isspace", "center", "ljust", "rjust", "zfill",
                            "replace", "join"])


def _check_codec(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    encoding = args[0] if args else kwargs.get("encoding", "utf-8")
    try:
        found = codecs.lookup(encoding).name if isinstance(encoding, str) else None
    except LookupError:
        return  # the method raises its own error
    if found not in _CODECS:
        raise LimitExceeded(f"{name}() with the codec {encoding!r} is not allowed; only "
                            f"{', '.join(sorted(_CODECS))}")


def _check_method(name: str, owner: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> None:
    """Refuse, before it runs, a method of a number or of bytes outside the short list above,
    a ``to_bytes`` longer than MAX_LENGTH or past the budget, and ``encode``/``decode`` with a
    codec other than :data:`_CODECS`."""
    if isinstance(owner, type) and issubclass(owner, int | float | complex | bytes | bytearray):
        raise LimitExceeded(f"the method {name}() of a number or bytes is not allowed")
    elif isinstance(owner, int | float | complex):
        if name not in _NUMBER_METHODS:
            raise LimitExceeded(f"the method {name}() of a number is not allowed")
        if name == "to_bytes":
            length = args[0] if args else kwargs.get("length", 1)
            _width(length, "to_bytes() of length")
            _spend(length if isinstance(length, int) else 0, "the method to_bytes()")
    elif isinstance(owner, bytes | bytearray):
        if name not in _BYTES_METHODS:
            raise LimitExceeded(f"the method {name}() of bytes is not allowed")
        if name == "hex":
            _spend(len(owner) * 3, "the method hex()")
    if name in ("encode", "decode") and isinstance(owner, str | bytes | bytearray):
        _check_codec(name, args, kwargs)


@jinja2.pass_environment
def _sum(environment: Any, iterable: Iterable[Any], attribute: Any = None,
         start: Any = 0) -> Any:
    """Jinja's ``sum`` filter adding one item at a time through the bounded ``+`` (a sum of
    lists is quadratic: each step is counted and the time checked)."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        total = environment.call_binop(None, "+", total, item)
    return total


def _power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right > 1 and abs(left) > 1:
        bits = (abs(left).bit_length() - 1) * right
        if bits > MAX_INT_BITS:
            raise LimitExceeded(f"{left} ** {right} would have about {bits:,} bits; at most "
                                f"{MAX_INT_BITS:,}")
    return left**right


def _times(left: Any, right: Any) -> Any:
    if isinstance(left, int) and not isinstance(right, int | float):
        left, right = right, left
    if isinstance(left, str | bytes | list | tuple) and isinstance(right, int):
        _spend(len(left) * max(right, 0), "repeating a value")
    elif isinstance(left, int) and isinstance(right, int) and \
            left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise LimitExceeded(f"a product of about {left.bit_length() + right.bit_length():,} "
                            f"bits; at most {MAX_INT_BITS:,}")
    return left * right


def _plus(left: Any, right: Any) -> Any:
    if isinstance(left, str | bytes | list | tuple) and isinstance(right, str | bytes | list |
                                                                   tuple):
        _spend(len(left) + len(right), "joining two values with +")
    return left + right


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str | bytes):
        fmt = left if isinstance(left, str) else left.decode("latin-1")
        widths = _check_printf(fmt, right)
        _spend(len(left) + widths + _size(right), "formatting with %")
    return left % right


def _method_size(name: str, text: str | bytes, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> int | None:
    """The size of ``text.name(*args)`` for the string methods whose result can be far bigger
    than their string (a width given to one of them is checked here); None for the others."""
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        _width(width, f"{name}() of width")
        return max(len(text), width if isinstance(width, int) else 0)
    if name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        _width(size, "expandtabs() of")
        return len(text) * max(size if isinstance(size, int) else 8, 1)
    if name == "join":  # (args[0] is a list: see BoundedSandbox.call)
        items = args[0] if args and isinstance(args[0], list) else []
        return sum(_size(x) for x in items) + len(text) * len(items)
    if name == "replace":
        old, new = (list(args) + [None, None])[:2]
        if isinstance(old, str | bytes) and isinstance(new, str | bytes):
            times = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
            return len(text) + times * len(new)
    if name == "translate":
        table = args[0] if args else None
        longest = max((_size(v) for v in table.values()), default=1) \
            if isinstance(table, dict) else 1
        return len(text) * max(longest, 1)
    return None


class _Generator(CodeGenerator):
    """Jinja's code generator with two checks added: every ``{% for %}`` iterates through
    :meth:`BoundedSandbox.guard_iter`, and every ``~`` goes through
    :meth:`BoundedSandbox.guard_concat`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop_iterables: dict[int, nodes.Node] = {}

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        self._loop_iterables[id(node.iter)] = node.iter
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) in self._loop_iterables and self._loop_iterables[id(node)] is node:
            self.write("environment.guard_iter(")
            super().visit(node, *args, **kwargs)
            self.write(")")
            return None
        return super().visit(node, *args, **kwargs)

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.guard_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


#: Filters whose output can be many times their input: every other argument multiplies it
#: (a string by its length; a number too for those in _COUNTS), an over-estimate on purpose.
_EXPANDING = frozenset(["center", "indent", "batch", "slice", "tojson", "join", "replace",
                        "wordwrap", "urlize"])
_COUNTS = frozenset(["center", "indent", "batch", "slice", "tojson"])


#: The attributes of every dict (``items``, ``get`` …): ``d.items`` is the method, not the key.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with bounds on size and time (see the module doc)."""

    code_generator_class = _Generator
    #: Every operator Jinja has (it has no bit operators): intercepted operators are never
    #: folded at compile time either.
    intercepted_binops = frozenset(["**", "*", "+", "%", "-", "/", "//"])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, finalize=self._finalize, **kwargs)
        self.globals["range"] = _bounded_range
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs
        self.filters["sum"] = _sum
        self.binop_table.update({"**": _power, "*": _times, "+": _plus, "%": _modulo})
        self.filters = {name: self._guard_filter(name, f) for name, f in self.filters.items()}
        self.concat = self._concat  # every buffer a block, macro or set joins

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """The template's tree, refusing an integer literal over :data:`MAX_INT_BITS` bits
        (``0xfff…`` of any length parses fast) before anything is folded at compile time."""
        tree = super()._parse(source, name, filename)
        for node in tree.find_all(nodes.Const):
            if _is_int(node.value) and node.value.bit_length() > MAX_INT_BITS:
                raise jinja2.TemplateSyntaxError(
                    f"stopped at a rendering limit: an integer of {node.value.bit_length():,} "
                    f"bits; at most {MAX_INT_BITS:,}", node.lineno, name, filename)
        return tree

    @staticmethod
    def _finalize(value: Any) -> Any:
        """Every ``{{ … }}``: refused before it is written out when it would be too long."""
        if not isinstance(value, str) and _size(value, MAX_OUTPUT) > MAX_OUTPUT:
            raise LimitExceeded(f"a value of more than {MAX_OUTPUT:,} characters is written out")
        return value

    @staticmethod
    def _concat(parts: Iterable[str]) -> str:
        parts = list(parts)
        _spend(sum(map(len, parts)), "a block's output")
        return "".join(parts)

    def _guard_filter(self, name: str, func: Any) -> Any:
        """``func`` (the filter ``name``) checking the time, and refusing values too big to
        write out and (for :data:`_EXPANDING` filters) outputs too big, before it runs."""
        skip = 0 if getattr(func, "jinja_pass_arg", None) is None else 1

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            _check_time()
            values = list(args[skip:])
            if name in _EXPANDING or name in ("sum", "list", "string", "pprint"):
                values = [list(v) if isinstance(v, Iterator) else v for v in values]
                args = (*args[:skip], *values)
            for value in (*values, *kwargs.values()):
                if not isinstance(value, str) and _size(value) > min(MAX_BUILT, _limits.left):
                    raise LimitExceeded(f"the filter {name} was given a value too big to write")
            if name in _EXPANDING and values:
                factor = 1
                for other in (*values[1:], *kwargs.values()):
                    if isinstance(other, str):
                        factor += len(other)
                    elif name in _COUNTS and isinstance(other, int):
                        _width(other, f"the filter {name}'s argument")
                        factor += abs(other)
                _spend(_size(values[0]) * factor, f"the filter {name}")
            if name == "format" and values:
                widths = _check_printf(str(values[0]), tuple(values[1:]) or kwargs)
                _spend(widths, f"the filter {name}")
            if name in ("int", "float") and values:
                base = values[2] if len(values) > 2 else kwargs.get("base", 10)
                _check_number_text(values[0], base if name == "int" else 10,
                                   f"the filter {name} was given a string")
            if name == "round" and values:  # it computes 10 ** precision
                precision = values[1] if len(values) > 1 else kwargs.get("precision", 0)
                if _is_int(precision) and abs(precision) > _INT_DIGITS:
                    raise LimitExceeded(f"the filter round to {precision:,} digits; at most "
                                        f"{_INT_DIGITS:,} either way")
            result = func(*args, **kwargs)
            if isinstance(result, str | list | tuple):
                _spend(len(result), f"the filter {name}")
            _check_int(result, f"the filter {name} made an integer")
            return result

        return guarded

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``obj.attribute``, as Jinja's sandbox has it; for a plain dict and a name that is
        not one of dict's own attributes (``customer.first_name``) straight from the dict,
        where Jinja would first look for the attribute and fail (the same value, without an
        exception per lookup: a mail makes a hundred of them)."""
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def guard_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """``iterable``, checking the time at every item (a loop that writes nothing too)."""
        for item in iterable:
            if time.monotonic() > _limits.deadline:
                _past_deadline()
            yield item

    @staticmethod
    def guard_concat(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        """The operands of ``~``, refused before they are joined when the result is too long."""
        _spend(sum(_size(p) for p in parts), "joining values with ~")
        return parts

    def call(__self, __context: Any, __obj: Any, *args: Any,  # noqa: N805 - as Jinja's
             **kwargs: Any) -> Any:
        _check_time()
        if type(__obj) is Macro:  # a template's own macro: no method to check, safe to call
            result = __context.call(__obj, *args, **kwargs)
            _spend(len(result), "a call's result")
            return result
        owner = getattr(__obj, "__self__", None)
        _check_method(getattr(__obj, "__name__", ""), owner, args, kwargs)
        if isinstance(owner, str | bytes):
            if getattr(__obj, "__name__", "") == "join" and args:
                args = (list(args[0]), *args[1:])  # its size is counted before it is joined
            size = _method_size(getattr(__obj, "__name__", ""), owner, args, kwargs)
            if size is not None:
                _spend(size, f"the method {__obj.__name__}()")
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str):  # a macro's output, a method's result
            _spend(len(result), "a call's result")
        _check_int(result, "a call made an integer")
        return result

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Every operator: the time checked, and no integer operand or result over
        :data:`MAX_INT_BITS` bits (``//`` on two huge ones runs for seconds)."""
        _check_time()
        _check_int(left, f"{operator} was given an integer")
        _check_int(right, f"{operator} was given an integer")
        result = super().call_binop(context, operator, left, right)
        _check_int(result, f"{operator} made an integer")
        return result

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        text = value.__self__

        @functools.wraps(wrapper)
        def checked(*args: Any, **kwargs: Any) -> Any:
            widths = _check_format(text)
            _spend(len(text) + widths + sum(_size(a) for a in (*args, *kwargs.values())),
                   "formatting a string")
            return wrapper(*args, **kwargs)

        return checked


def _count(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


def _count_in(text: Any, old: Any) -> int:
    text, old = str(text), str(old)
    return text.count(old) if old else len(text) + 1


class TemplateError(ValueError):
    """A template that cannot render; ``str()`` is ``FILE:LINE: message``."""

    #: The template ran out of time (see :data:`QUICK_SECONDS`).
    timed_out = False

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


@dataclass(frozen=True)
class Rendered:
    template: str
    subject: str
    text: str | None
    html: str | None


#: The parts of an email, in the order they render.
PARTS = ("subject.txt", "body.txt", "body.html")
#: The layout's own words for one locale: ``_base/<locale>/words.yaml`` (see :meth:`Renderer.words`).
WORDS_FILE = "words.yaml"
#: The language whose layout words are the last resort (the shipped layout has all of them).
WORDS_LAST_RESORT = "en"
#: Bytes a words file may have.
MAX_WORDS_FILE = 64_000


@dataclass(frozen=True)
class _Choice:
    """Where the parts of one email come from for one fallback chain: each part's template
    name (None: no such part) and the locale folder it was found in ("" for the root)."""

    paths: tuple[str | None, str | None, str | None]
    folders: tuple[str, str, str]


class Renderer:
    """Renders the emails of one templates folder (``LIFECYCLE_TEMPLATES_DIR``).

    An email ``NAME`` keeps its parts in locale folders, ``NAME/<locale>/subject.txt``,
    ``body.txt``, ``body.html`` (``NAME/de/``, ``NAME/de_AT/``, ``NAME/nb/`` …), and may keep
    parts at its root (``NAME/subject.txt``).  Each part is taken from the first locale folder
    of the customer's :func:`lifecycle.locales.fallback_chain` (``de-AT`` → ``de_AT``, ``de``,
    the shop's default ``default_locale``) that has it, else from the email's root.  Every
    part sees ``lang`` (the language of the folder it came from, for ``<html lang>``; the shop
    default's for a root part) and ``words``, the layout's words in that language
    (:meth:`words`).
    """

    def __init__(self, folder: Path, default_locale: str = DEFAULT_LOCALE) -> None:
        self.folder = folder
        self.default_locale = default_locale
        self.env = BoundedSandbox(
            loader=jinja2.FileSystemLoader(str(folder)),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                default_for_string=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=False,
            auto_reload=False,  # see _fresh: one look at the folder every CHECK_SECONDS
            cache_size=2000,  # every part of every email in every language
        )
        #: (email, fallback chain) -> where its parts come from.
        self._chosen: dict[tuple[str, tuple[str, ...]], _Choice] = {}
        #: words chain -> the merged words.
        self._words: dict[tuple[str, ...], dict[str, str]] = {}
        #: When (time.monotonic()) a mail last ran out of time.
        self._timed_out_at = -math.inf
        self._checked = time.monotonic()
        self._files = _scan(folder)
        self._default_chain = tuple(fallback_chain(None, default_locale))

    def look_again(self) -> None:
        """Look at the folder now (not only after :data:`CHECK_SECONDS`): a check that must
        see a file changed a moment ago."""
        self._checked = -math.inf
        self._fresh()

    def _fresh(self) -> None:
        """Forget compiled templates and folder contents when a file changed (checked at most
        every :data:`CHECK_SECONDS`: a batch of mails must not stat every file per mail)."""
        now = time.monotonic()
        if now - self._checked < CHECK_SECONDS:
            return
        self._checked = now
        files = _scan(self.folder)
        if files != self._files:
            self._files = files
            self.env.cache.clear()  # type: ignore[union-attr]
            self._chosen.clear()
            self._words.clear()

    def chain(self, locale: str | None) -> tuple[str, ...]:
        """The locale folders tried, best first, for a customer's (raw) ``locale``."""
        return tuple(fallback_chain(locale, self.default_locale))

    def choose(self, name: str, chain: tuple[str, ...]) -> _Choice:
        """Where each part of email ``name`` comes from for the fallback ``chain``."""
        self._fresh()
        key = (name, chain)
        found = self._chosen.get(key)
        if found is None:
            paths: list[str | None] = []
            folders: list[str] = []
            for part in PARTS:
                for folder in (*chain, ""):
                    path = f"{name}/{folder}/{part}" if folder else f"{name}/{part}"
                    if path in self._files:
                        paths.append(path)
                        folders.append(folder)
                        break
                else:
                    paths.append(None)
                    folders.append("")
            found = _Choice((paths[0], paths[1], paths[2]), (folders[0], folders[1], folders[2]))
            if len(self._chosen) > 10_000:  # locales are Babel's, emails the folder's: rare
                self._chosen.clear()
            self._chosen[key] = found
        return found

    def exists(self, name: str) -> bool:
        """Whether ``name`` is an email: a subject.txt and a body.txt or body.html, at its
        root or in any of its locale folders."""
        self._fresh()
        return name in _email_names(self._files)

    def words(self, folder: str, chain: tuple[str, ...]) -> dict[str, str]:
        """The layout's words for a part taken from locale ``folder`` ("" for the root) of a
        customer whose fallback chain is ``chain``.

        Each word (``unsubscribe: Abmelden``) comes from the first of these files that has it:
        ``_base/<locale>/words.yaml`` for the locales of ``chain`` in the part's language
        (``de_AT`` then ``de`` for a ``de`` part of a ``de-AT`` customer), then for the shop
        default's chain, then ``_base/words.yaml``, then ``_base/en/words.yaml``; a file may
        hold only the words it changes.
        """
        language = folder.split("_")[0] if folder else ""
        ordered = [f for f in chain if language and f.split("_")[0] == language]
        if folder and folder not in ordered:
            ordered.insert(0, folder)
        key = (*ordered, *self._default_chain, "", WORDS_LAST_RESORT)
        found = self._words.get(key)
        if found is None:
            found = {}
            for locale in dict.fromkeys(key):
                path = f"_base/{locale}/{WORDS_FILE}" if locale else f"_base/{WORDS_FILE}"
                if path in self._files:
                    for word, text in self._read_words(path).items():
                        found.setdefault(word, text)
            if len(self._words) > 10_000:
                self._words.clear()
            self._words[key] = found
        return found

    def _read_words(self, path: str) -> dict[str, str]:
        """One words file: a YAML mapping of names to text (every value read as text)."""
        file = self.folder / path
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise TemplateError(path, None, f"cannot be read: {exc.strerror}") from None
        if len(raw) > MAX_WORDS_FILE:
            raise TemplateError(path, None, f"{len(raw):,} bytes; a words file has at most "
                                            f"{MAX_WORDS_FILE:,}")
        try:
            data = yaml.load(raw.decode("utf-8"), Loader=yaml.BaseLoader)  # noqa: S506 - all text
        except UnicodeDecodeError:
            raise TemplateError(path, None, "is not UTF-8") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise TemplateError(path, mark.line + 1 if mark else None,
                                f"not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise TemplateError(path, 1, "must be a mapping of words, `name: text` per line")
        for word, text in data.items():
            if not isinstance(text, str) or not word.isidentifier():
                raise TemplateError(path, None, f"{word!r} must be a name (letters, digits, _) "
                                                "with text after the colon")
        return data

    def _render(self, path: str, context: dict[str, Any]) -> str:
        """One part, streamed and stopped past :data:`MAX_OUTPUT` characters or the mail's
        deadline.  The output is taken :data:`_CHUNKS` pieces at a time (each piece is a
        literal of the template or one written value, itself bounded: :meth:`BoundedSandbox._finalize`)."""
        try:
            template = self.env.get_template(path)
            stream = template.root_render_func(template.new_context(context))
            parts: list[str] = []
            size = 0
            try:
                while chunk := list(islice(stream, _CHUNKS)):
                    size += sum(map(len, chunk))
                    if size > MAX_OUTPUT:
                        raise LimitExceeded(
                            f"the output is longer than {MAX_OUTPUT:,} characters")
                    parts += chunk
                    if time.monotonic() > _limits.deadline:  # loops and calls check it too
                        _past_deadline()
            except Exception:  # noqa: BLE001 - as Template.generate: the template's lines
                self.env.handle_exception()
            return "".join(parts)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(exc.name or path, exc.lineno, exc.message or "syntax error") \
                from None
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(path, None, f"template {exc.name!r} not found") from None
        except (jinja2.UndefinedError, SecurityError, TypeError, ValueError, ArithmeticError,
                LookupError, RecursionError, MemoryError) as exc:
            file, line = _template_position(path, self.folder)
            error = TemplateError(file, line, _describe(exc))
            error.timed_out = isinstance(exc, _TimeUp)
            raise error from None

    def render(self, name: str, context: dict[str, Any], locale: str | None = None) -> Rendered:
        """Render subject, text and HTML of email ``name`` (TemplateError on failure), within
        :data:`RENDER_SECONDS` and the size bounds, in the language of ``locale`` (default:
        ``context["customer"]["locale"]``) as far as the email has it."""
        before = (_limits.deadline, _limits.cpu_start, _limits.seconds, _limits.note,
                  _limits.left)
        started = time.monotonic()
        strained = started < self._timed_out_at + STRAINED_SECONDS
        _limits.seconds = min(QUICK_SECONDS, RENDER_SECONDS) if strained else RENDER_SECONDS
        _limits.note = (f" for {STRAINED_SECONDS:g} seconds after one ran out of time"
                        if strained else "")
        _limits.deadline = started + _limits.seconds
        _limits.cpu_start = time.thread_time()
        _limits.left = MAX_BUILT
        if locale is None:
            customer = context.get("customer")
            locale = customer.get("locale") if isinstance(customer, dict) else None
        try:
            return self._render_all(name, context, self.chain(locale))
        except TemplateError as exc:
            if exc.timed_out:
                self._timed_out_at = time.monotonic()
            raise
        finally:
            (_limits.deadline, _limits.cpu_start, _limits.seconds, _limits.note,
             _limits.left) = before

    def part_context(self, folder: str, chain: tuple[str, ...],
                     context: dict[str, Any]) -> dict[str, Any]:
        """``context`` with ``lang`` and ``words`` for a part from locale ``folder``."""
        return {**context, "lang": html_lang(folder or self._default_chain[0]),
                "words": self.words(folder, chain)}

    def _render_all(self, name: str, context: dict[str, Any],
                    chain: tuple[str, ...]) -> Rendered:
        choice = self.choose(name, chain)
        (subject_path, text_path, html_path), folders = choice.paths, choice.folders
        if subject_path is None or (text_path is None and html_path is None):
            if not self.exists(name):
                raise TemplateError(f"{name}/", None, "no such email: it needs subject.txt and "
                                                      "body.txt or body.html")
            raise TemplateError(f"{name}/", None, "no subject.txt and body.txt or body.html in "
                                f"{', '.join(f'{name}/{f}/' for f in chain)} or {name}/")
        subject = _SPACE.sub(" ", self._render(
            subject_path, self.part_context(folders[0], chain, context))).strip()
        if not subject:
            raise TemplateError(subject_path, 1, "the subject is empty")
        if len(subject) > MAX_SUBJECT:
            raise TemplateError(subject_path, 1,
                                f"the subject is {len(subject)} characters; at most {MAX_SUBJECT}")
        text = (self._render(text_path, self.part_context(folders[1], chain, context))
                if text_path else None)
        if text is not None:
            text = _BLANK_LINES.sub("\n\n", text).lstrip("\n")
        html = (self._render(html_path, self.part_context(folders[2], chain, context))
                if html_path else None)
        if html is not None and _needs_inlining(html):
            try:  # mail clients drop <style>: every rule goes onto its elements
                html = _INLINER.inline(html)
            except ValueError as exc:
                raise TemplateError(html_path or name, None, f"CSS could not be inlined: {exc}") \
                    from None
        return Rendered(name, subject, text, html)


def emails_in(folder: Path) -> set[str]:
    """The emails of a templates folder (as :meth:`Renderer.exists` sees them)."""
    return set(_email_names(_scan(folder)))


def _email_names(files: dict[str, int]) -> frozenset[str]:
    """The emails among ``files`` (paths relative to the templates folder): a folder not
    starting with ``_`` with a subject.txt and a body part, at its root or in a locale
    folder."""
    subjects: set[str] = set()
    bodies: set[str] = set()
    for path in files:
        parts = path.split("/")
        if len(parts) not in (2, 3) or parts[0].startswith("_"):
            continue
        if parts[-1] == "subject.txt":
            subjects.add(parts[0])
        elif parts[-1] in ("body.txt", "body.html"):
            bodies.add(parts[0])
    return frozenset(subjects & bodies)


#: Pieces of output taken from a template at a time between two looks at the size and the time.
_CHUNKS = 32
#: Seconds the templates folder is trusted unchanged before it is looked at again.
CHECK_SECONDS = 2.0
#: Inlines <style> rules; never fetches a stylesheet a (manager-edited) template links to.
_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.S | re.I)
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_BRACES = re.compile(r"[{}]")
#: style sheet -> whether it has a rule to inline (the shipped layout's is the same for every
#: mail of a shop).
_SHEETS: dict[str, bool] = {}


def _needs_inlining(html: str) -> bool:
    """Whether a ``<style>`` block of ``html`` has a rule the inliner would copy onto elements:
    one outside any at-rule (``@media`` rules stay in ``<style>`` for the clients that read
    them).  The shipped layout writes its styles inline and keeps only ``@media`` rules, so
    its mails skip the inliner, which costs about as much as rendering them."""
    for sheet in _STYLE.findall(html):
        found = _SHEETS.get(sheet)
        if found is None:
            found = _has_rule(sheet)
            if len(_SHEETS) > 1000:
                _SHEETS.clear()
            _SHEETS[sheet] = found
        if found:
            return True
    return False


def _has_rule(sheet: str) -> bool:
    """Whether the CSS ``sheet`` has a rule at its top level (not inside ``@media`` …)."""
    css = _CSS_COMMENT.sub("", sheet)
    depth, start = 0, 0
    for brace in _BRACES.finditer(css):
        if brace.group() == "{":
            if depth == 0:
                prelude = css[start:brace.start()].rsplit(";", 1)[-1].strip()
                if not prelude.startswith("@"):
                    return True
            depth += 1
        else:
            depth = max(depth - 1, 0)
            if depth == 0:
                start = brace.end()
    return False


def _scan(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (its path relative to ``folder``, with ``/``) with its
    modification time (ns)."""
    found: dict[str, int] = {}
    for path in folder.rglob("*") if folder.is_dir() else ():
        try:
            info = path.stat()
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            found[path.relative_to(folder).as_posix()] = info.st_mtime_ns
    return found


def _template_position(default: str, folder: Path | None = None) -> tuple[str, int | None]:
    """The template file (relative to ``folder``) and line where the current exception was
    raised."""
    tb = sys.exc_info()[2]
    found: tuple[str, int | None] = (default, None)
    root = f"{folder}/" if folder is not None else None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".txt", ".html")) and not filename.endswith(".py"):
            if root and filename.startswith(root):
                found = (filename[len(root):], tb.tb_lineno)
            else:
                found = (Path(filename).name if "/" not in default
                         else _relative(filename, default), tb.tb_lineno)
        tb = tb.tb_next
    return found


def _relative(filename: str, default: str) -> str:
    parts = Path(filename).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else default


def _describe(exc: Exception) -> str:
    if isinstance(exc, LimitExceeded):
        return f"stopped at a rendering limit: {exc}"
    if isinstance(exc, RecursionError | MemoryError):
        return f"stopped at a rendering limit: {type(exc).__name__}"
    if isinstance(exc, jinja2.UndefinedError):
        return f"{exc.message} (every variable a template uses must be given)"
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    return f"{type(exc).__name__}: {exc}"
