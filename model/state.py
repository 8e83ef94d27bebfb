"""Finite universes and concrete states.

A state is a tuple with one entry per symbol of the spec (immutable ones too, in declaration order);
each entry is a flat tuple over the symbol's argument space, row-major. Values: a sort element or an
enum value is an int index, a bool is a bool, an int is an int, `none` is None. States are therefore
immutable, hashable, and cheap to copy (an action rebuilds only the entries it modifies).

Elements print as `vm0`, `mfn1`, ...; enum values by their names.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from operator import mul
from typing import Any, Iterator

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import CheckedSpec, Symbol

State = tuple  # tuple[tuple[Any, ...], ...]

DEFAULT_SIZE = 2


MAX_POINTS = 1 << 22  # values in one state: past this, compiling and storing states cannot finish
MAX_CHOICES = 1 << 16  # values of one choice parameter listed at once (the compiled loops never list them)


class UniverseError(ValueError):
    """A bound that makes no sense (unknown sort, size < 1)."""


@dataclass(frozen=True)
class SymbolLayout:
    index: int
    symbol: Symbol
    domains: tuple[int, ...]  # size of each argument's domain
    strides: tuple[int, ...]
    size: int


class Universe:
    """Sizes for every sort, and where each symbol lives in a state tuple."""

    def __init__(self, spec: CheckedSpec, sizes: dict[str, int] | None = None,
                 fixed: dict[str, tuple[Any, ...]] | None = None) -> None:
        """`fixed`: the values of immutable symbols that the caller decides rather than enumerates
        (the harness's roles: which of them have CR0.WP), each a tuple in layout order."""
        sizes = dict(sizes or {})
        params = {n for n, sym in spec.symbols.items() if _is_param(sym)}
        for name in sizes:
            if name in params:
                if sizes[name] < 0:
                    raise UniverseError(f"parameter {name} must be at least 0, got {sizes[name]}")
                continue
            if name not in spec.sorts:
                raise UniverseError(f"unknown sort {name!r} in bound (sorts: {', '.join(spec.sorts)}"
                                    + (f"; parameters: {', '.join(sorted(params))}" if params else "") + ")")
            if sizes[name] < 1:
                raise UniverseError(f"sort {name} needs at least one element, got {sizes[name]}")
        self.spec = spec
        self.sizes: dict[str, int] = {s: sizes.get(s) or b or DEFAULT_SIZE for s, b in spec.sorts.items()}
        # An immutable int constant is a parameter of the model (the DMM spec's budget and quota): the
        # bound may fix it; otherwise every value from 0 to the largest sort size is an initial state.
        top = max(self.sizes.values(), default=DEFAULT_SIZE)
        self.params: dict[str, tuple[int, ...]] = {
            n: (sizes[n],) if n in sizes else tuple(range(top + 1)) for n in sorted(params)}
        self.layout: dict[str, SymbolLayout] = {}
        for i, sym in enumerate(spec.symbols.values()):
            domains = tuple(self.domain_size(t) for t in sym.args)
            strides = tuple(_strides(domains))
            size = 1
            for d in domains:
                size *= d
            self.layout[sym.name] = SymbolLayout(i, sym, domains, strides, size)
        self.fixed: dict[str, tuple[Any, ...]] = {}
        for name, values in (fixed or {}).items():
            lay = self.layout.get(name)
            if lay is None or lay.symbol.mutable:
                raise UniverseError(f"only an immutable symbol can be fixed, not {name!r}")
            dom = (None,) * lay.symbol.result.optional + self.domain(lay.symbol.result)
            if len(values) != lay.size or any(v not in dom for v in values):
                raise UniverseError(f"{name} fixed to {list(values)}: it needs {lay.size} values from {list(dom)}")
            self.fixed[name] = tuple(values)
        points = sum(lay.size for lay in self.layout.values())
        if points > MAX_POINTS:
            big = max(self.layout.values(), key=lambda lay: lay.size)
            raise UniverseError(f"this bound makes a state of {points:,} values (at most {MAX_POINTS:,}; "
                                f"{big.symbol.name} alone has {big.size:,}): make it smaller")

    def param_value(self, name: str) -> int:
        """A parameter's value where one state needs it: the bound's, or the largest it may take."""
        return max(self.params[name])

    # ---- domains
    def domain_size(self, t: A.TypeRef) -> int:
        if t.name == A.BOOL:
            return 2
        if t.name in self.sizes:
            return self.sizes[t.name]
        if t.name in self.spec.enums:
            return len(self.spec.enums[t.name])
        raise UniverseError(f"type {t} has no finite domain")

    def domain_count(self, t: A.TypeRef) -> int:
        """How many values a type has (a choice parameter: every function over the bound)."""
        if t.args:
            return len(self.values(t.result)) ** math.prod(self.domain_size(a) for a in t.args)
        return self.domain_size(t)

    def domain(self, t: A.TypeRef) -> tuple[Any, ...]:
        if t.args:  # a choice parameter: every function, as the flat tuple of its values
            if (n := self.domain_count(t)) > MAX_CHOICES:
                raise UniverseError(f"a parameter of type {t} has {n:,} values at this bound (more than "
                                    f"{MAX_CHOICES:,} are not listed): a smaller bound")
            return tuple(itertools.product(self.values(t.result), repeat=len(self.arg_points(t))))
        if t.name == A.BOOL:
            return (False, True)
        return tuple(range(self.domain_size(t)))

    def values(self, t: A.TypeRef) -> tuple[Any, ...]:
        """The values of a (result) type, none first when it is optional."""
        return ((None,) if t.optional else ()) + self.domain(A.TypeRef(t.name))

    def param_index(self, t: A.TypeRef, point: tuple[Any, ...]) -> int:
        """The position of a point in a choice parameter's flat tuple (row-major)."""
        k = 0
        for a, x in zip(t.args, point):
            k = k * self.domain_size(a) + int(x)
        return k

    def arg_points(self, t: A.TypeRef) -> list[tuple[Any, ...]]:
        """The points of a function type's arguments, in row-major order (its values' order)."""
        return list(itertools.product(*(self.domain(a) for a in t.args)))

    def points(self, name: str) -> Iterator[tuple[Any, ...]]:
        """Every argument tuple of a symbol, in layout order."""
        sym = self.layout[name].symbol
        return itertools.product(*(self.domain(t) for t in sym.args))

    # ---- naming
    def show_value(self, t: A.TypeRef, v: Any) -> str:
        if t.args:  # a relation as the set of points where it holds; a function point by point
            shown = [(self._show_args(t, p), x) for p, x in zip(self.arg_points(t), v)]
            if t.result.name == A.BOOL and not t.optional:
                return "{" + ", ".join(p for p, x in shown if x) + "}"
            return "{" + ", ".join(f"{p}: {self.show_value(t.result, x)}" for p, x in shown) + "}"
        if v is None:
            return "none"
        if t.name == A.BOOL:
            return "true" if v else "false"
        if t.name == A.INT:
            return str(v)
        if t.name in self.spec.enums:
            return self.spec.enums[t.name][v]
        return f"{t.name}{v}"

    def _show_args(self, t: A.TypeRef, point: tuple[Any, ...]) -> str:
        inner = ", ".join(self.show_value(a, x) for a, x in zip(t.args, point))
        return inner if len(point) == 1 else f"({inner})"

    def _parse_function(self, t: A.TypeRef, text: Any) -> tuple[Any, ...]:
        """A choice parameter's value: the flat tuple itself (a list), or as show_value writes it."""
        points = self.arg_points(t)
        if isinstance(text, (list, tuple)):
            if len(text) != len(points):
                raise ValueError(f"{t} takes {len(points)} values (universe: {self.describe()}), got {len(text)}")
            return tuple(self._internal(t.result, x) for x in text)
        if not (isinstance(text, str) and text.startswith("{") and text.endswith("}")):
            raise ValueError(f"{text!r} is not a value of {t}: write it as {{...}} (universe: {self.describe()})")
        shown = {self._show_args(t, p): k for k, p in enumerate(points)}
        relation = t.result.name == A.BOOL and not t.optional
        out: list[Any] = [False if relation else None] * len(points)
        for item in split_top(text[1:-1]):
            key, _, val = item.partition(": ") if not relation else (item, "", "true")
            if key not in shown:
                raise ValueError(f"{key!r} is not a point of {t} (universe: {self.describe()})")
            out[shown[key]] = self.parse_value(t.result, val)
        if not relation and None in out and not t.optional:
            raise ValueError(f"{text!r} leaves a point of {t} without a value")
        return tuple(out)

    def _internal(self, t: A.TypeRef, x: Any) -> Any:
        """A value in internal form (an index, a bool, None) as it is, checked; else parse_value's."""
        if isinstance(x, int) and not isinstance(x, bool) and t.name not in (A.BOOL, A.INT):
            if 0 <= x < self.domain_size(t):
                return x
            raise ValueError(f"{x!r} is not a value of {t} (universe: {self.describe()})")
        return self.parse_value(t, x)

    def parse_value(self, t: A.TypeRef, text: Any) -> Any:
        """The inverse of show_value; also accepts JSON-ish values (true, 3, null)."""
        if t.args:
            return self._parse_function(t, text)
        if text is None or text == "none":
            if not t.optional:
                raise ValueError(f"none is not a value of {t}")
            return None
        if t.name == A.BOOL:
            if isinstance(text, bool):
                return text
            if text in ("true", "false"):
                return text == "true"
        elif t.name == A.INT:
            return int(text)
        elif t.name in self.spec.enums and isinstance(text, str) and text in self.spec.enums[t.name]:
            return self.spec.enums[t.name].index(text)
        elif isinstance(text, str) and text.startswith(t.name) and text[len(t.name):].isdigit():
            n = int(text[len(t.name):])
            if n < self.sizes[t.name]:
                return n
        raise ValueError(f"{text!r} is not a value of {t} (universe: {self.describe()})")

    def show_point(self, name: str, args: tuple[Any, ...]) -> str:
        sym = self.layout[name].symbol
        if sym.kind == "const":
            return name
        return f"{name}({', '.join(self.show_value(t, a) for t, a in zip(sym.args, args))})"

    def describe(self) -> str:
        return ", ".join(f"{s}={n}" for s, n in self.sizes.items())

    # ---- states
    def index(self, name: str, args: tuple[Any, ...]) -> int:
        """Where the point `args` of a symbol lies in its entry of a state (row-major)."""
        # map, not a generator: the harness's read-back calls this some 30 times a step
        return sum(map(mul, args, self.layout[name].strides))

    def point(self, name: str, k: int) -> tuple[int, ...]:
        """The argument tuple at flat index k of a symbol's entry: the inverse of `index`."""
        out = []
        for st in self.layout[name].strides:
            q, k = divmod(k, st)
            out.append(q)
        return tuple(out)

    def get(self, s: State, name: str, *args: Any) -> Any:
        lay = self.layout[name]
        return s[lay.index][self.index(name, args)]

    def to_dict(self, s: State) -> dict[str, dict[str, Any]]:
        """The state as plain named values: {symbol: {"f(vm0, gfn1)": "mfn2", ...}} (JSON-ready)."""
        out: dict[str, dict[str, Any]] = {}
        for name, lay in self.layout.items():
            res = lay.symbol.result
            out[name] = {self.show_point(name, p): _jsonable(res, v, self)
                         for p, v in zip(self.points(name), s[lay.index])}
        return out

    def from_dict(self, d: dict[str, dict[str, Any]], default: State | None = None) -> State:
        """Build a state from to_dict's form; points not given keep `default`'s values (or must all be given)."""
        entries = []
        for name, lay in self.layout.items():
            if default is not None:
                vals = list(default[lay.index])
            else:
                vals = [None] * lay.size
            given = d.get(name, {})
            keys = {self.show_point(name, p): i for i, p in enumerate(self.points(name))}
            for k, v in given.items():
                if k not in keys:
                    raise ValueError(f"{k!r} is not a point of {name}")
                vals[keys[k]] = self.parse_value(lay.symbol.result, v)
            if default is None and len(given) != lay.size:
                missing = [k for k in keys if k not in given][:3]
                raise ValueError(f"{name} is missing points, e.g. {', '.join(missing)}")
            entries.append(tuple(vals))
        return tuple(entries)

    def diff(self, a: State, b: State) -> list[tuple[str, tuple[Any, ...], Any, Any]]:
        """Every point where two states differ: (symbol, args, value in a, value in b)."""
        out = []
        for name, lay in self.layout.items():
            x, y = a[lay.index], b[lay.index]
            if x == y:
                continue
            for p, u, w in zip(self.points(name), x, y):
                if u != w:
                    out.append((name, p, u, w))
        return out

    def show_diff(self, a: State, b: State, left: str = "spec", right: str = "impl") -> str:
        """A unified-diff-like listing of the points where a and b differ."""
        lines = [f"--- {left}", f"+++ {right}"]
        for name, p, u, w in self.diff(a, b):
            res = self.layout[name].symbol.result
            pt = self.show_point(name, p)
            lines.append(f"-{pt} = {self.show_value(res, u)}")
            lines.append(f"+{pt} = {self.show_value(res, w)}")
        return "\n".join(lines)

    def show_state(self, s: State, *, only_set: bool = True) -> str:
        """Readable listing, one symbol a line; false and none points are left out by default."""
        lines = []
        for name, lay in self.layout.items():
            res = lay.symbol.result
            items = [(p, v) for p, v in zip(self.points(name), s[lay.index])]
            if only_set:
                items = [(p, v) for p, v in items if v is not None and v is not False]
            if lay.symbol.kind == "const":
                lines.append(f"{name} = {self.show_value(res, s[lay.index][0])}")
                continue
            if res.name == A.BOOL:
                body = ", ".join("(" + ", ".join(self.show_value(t, a) for t, a in zip(lay.symbol.args, p)) + ")"
                                 for p, _ in items)
                lines.append(f"{name} = {{{body}}}")
            else:
                body = ", ".join(f"{self.show_point(name, p)[len(name):]} -> {self.show_value(res, v)}" for p, v in items)
                lines.append(f"{name}: {body}" if body else f"{name}: -")
        return "\n".join(lines)


# How many points differing() compares at once (in C) before looking at them one by one.
_CHUNK = 64


def differing(x: tuple[Any, ...], y: tuple[Any, ...], lo: int = 0, hi: int | None = None) -> list[int]:
    """The flat indices in [lo, hi) where two entries of a symbol differ; entries of a state that
    mostly agree are compared a chunk at a time."""
    hi = len(x) if hi is None else hi
    if x is y or (lo == 0 and hi == len(x) and x == y):
        return []
    out = []
    for a in range(lo, hi, _CHUNK):
        b = min(a + _CHUNK, hi)
        if x[a:b] != y[a:b]:
            out += [i for i in range(a, b) if x[i] != y[i]]
    return out


def split_top(text: str) -> list[str]:
    """The comma-separated items of text, commas inside parentheses and braces kept."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1, "{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [i for i in items + [cur.strip()] if i]


def _is_param(sym: Symbol) -> bool:
    return not sym.mutable and not sym.args and sym.result.name == A.INT


def _strides(domains: tuple[int, ...]) -> list[int]:
    out, acc = [], 1
    for d in reversed(domains):
        out.append(acc)
        acc *= d
    return list(reversed(out))


def _jsonable(t: A.TypeRef, v: Any, u: Universe) -> Any:
    if v is None:
        return None
    if t.name in (A.BOOL, A.INT) and not t.args:
        return v
    return u.show_value(t, v)
