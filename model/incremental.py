"""Incremental invariant checking: after a step, re-check only the instances an update could affect.

Each invariant is split into clauses `forall xs. body` (a top-level conjunction, and a conjunction
under a forall, split into one clause per conjunct). When a step changes a point f(a1..ak) from old
to new, an occurrence `f(t1..tk)` in a clause's body can change the body's truth only for instances
where every ti that is a clause variable equals ai, and, when the occurrence sits in an equality
`f(...) = y` with y a clause variable, only where y is old or new. Those instances are searched for
a violation by code compiled per clause and occurrence, one call for all of a step's changed points
of the symbol: the pinned variables loop over their few values first, then the others, each
conjunct of the clause's negation tested at the outermost loop where its variables are bound (as
an action's `enabled` does). An occurrence that pins no clause variable makes its clause be
checked in full. A relation that occurs in a clause with one polarity only (all positive, or all
under an odd number of negations) cannot falsify it by changing in the direction that makes its
atoms truer: such changes are not re-checked for that clause (the body is monotone in them).

Sound when the state before the step satisfied every invariant (the harness stops at the first
violation, so it always does). Verdicts equal a full check: tests/model/test_incremental.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from dmmcheck.spec import ast as A

from .compile import compile_formula, compile_search
from .interp import Interpreter, Violation
from .evaluate import blame
from .state import State, differing

# Re-check a clause in full once the affected instances reach this share of all instances.
_FULL_SHARE = 0.5


@dataclass
class _Occurrence:
    symbol: str
    arg_pins: tuple[tuple[int, int], ...]  # (argument position, clause-variable position)
    value_pin: int | None  # clause-variable position equated with the occurrence's value

    def pins(self) -> tuple[tuple[int, str], ...]:
        """The clause variables a change of this occurrence fixes, with the source of their values
        in the compiled search (over the changed point's arguments _a, and _vals: its old and new
        values that are not none)."""
        out = {}
        for pos, var in self.arg_pins:
            out[var] = f"(_a[{pos}],)"
        if self.value_pin is not None:
            vp = self.value_pin
            out[vp] = f"((_a[{vp_pos}],) if _a[{vp_pos}] in _vals else ())" if (
                vp_pos := next((pos for pos, var in self.arg_pins if var == vp), None)) is not None else "_vals"
        return tuple(sorted(out.items()))


@dataclass(slots=True)
class _Plan:
    """How a change of one occurrence is checked in one universe."""

    occ: _Occurrence
    per_point: int | None  # the instances one changed point pins (at most); None: it pins no variable
    search: Callable[..., bool] | None = None  # compiled when first searched


@dataclass
class _Shape:
    """A clause as the spec gives it, the same in every universe (built once per spec)."""

    invariant: str
    number: int
    vars: tuple[A.Var, ...]
    body: A.Expr
    whole: A.Expr  # forall vars. body
    occurrences: dict[str, list[_Occurrence]]
    harmless: dict[str, bool]  # relation -> the new value whose change cannot falsify the clause
    violation: list[A.Expr]  # conjuncts of the body's negation


@dataclass
class _Clause:
    """A clause in one universe."""

    shape: _Shape
    full_fn: Callable[[State], Any]
    sizes: list[int]  # each variable's domain size
    total: int
    plans: dict[str, list[_Plan]]  # per symbol, made when a change of it first meets the clause

    @property
    def invariant(self) -> str:
        return self.shape.invariant

    def plans_of(self, name: str) -> list[_Plan] | None:
        plans = self.plans.get(name)
        if plans is None and name in self.shape.occurrences:
            plans = self.plans[name] = [_Plan(o, _per_point(o, self.sizes)) for o in self.shape.occurrences[name]]
        return plans


def clauses(e: A.Expr, vs: tuple[A.Var, ...] = ()) -> list[tuple[tuple[A.Var, ...], A.Expr]]:
    """A formula as `forall vs. body` clauses: top-level conjunctions split, also under foralls."""
    if isinstance(e, A.BinOp) and e.op == "and":
        return clauses(e.left, vs) + clauses(e.right, vs)
    if isinstance(e, A.Quant) and e.kind == "forall":
        return clauses(e.body, vs + e.binders)
    return [(vs, e)]


def _occurrences(e: A.Expr, vars_: dict[str, int], out: dict[str, list[_Occurrence]]) -> None:
    def visit(x: A.Expr, value_pin: int | None = None) -> None:
        match x:
            case A.Sym(name, args):
                pins = tuple((i, vars_[a.name]) for i, a in enumerate(args)
                             if isinstance(a, A.Var) and a.name in vars_)
                out.setdefault(name, []).append(_Occurrence(name, pins, value_pin))
                for a in args:
                    visit(a)
            case A.BinOp("=" | "!=", l, r):
                for this, other in ((l, r), (r, l)):
                    inner = other.arg if isinstance(other, A.Some) else other
                    if isinstance(this, A.Sym) and isinstance(inner, A.Var) and inner.name in vars_:
                        visit(this, vars_[inner.name])
                    else:
                        visit(this)
            case _:
                for c in A.children(x):
                    visit(c)

    visit(e)


def negation(e: A.Expr, positive: bool = False) -> list[A.Expr]:
    """`not e` (or e itself, `positive`) as a list of conjuncts, negations pushed through
    implies/or/and/not where that makes more, smaller conjuncts (each tested as early as it can be)."""
    match e, positive:
        case A.BinOp("implies", l, r), False:
            return negation(l, True) + negation(r)
        case A.BinOp("or", l, r), False:
            return negation(l) + negation(r)
        case A.BinOp("and", l, r), True:
            return negation(l, True) + negation(r, True)
        case A.Not(a), _:
            return negation(a, not positive)
    return [e] if positive else [A.Not(e)]


def polarity(e: A.Expr, out: dict[str, int], sign: int = 1) -> dict[str, int]:
    """The polarity of every symbol's occurrences in formula e: 1 (only where truer atoms make e
    truer), -1 (only where they make it falser), 0 (mixed, or as a term: under =, iff, a
    condition, a count or another symbol's argument)."""
    def mark(name: str, s: int) -> None:
        out[name] = s if out.get(name, s) == s else 0

    def term(x: A.Expr) -> None:  # a value, not a truth: every symbol in it is mixed
        if isinstance(x, A.Sym):
            mark(x.name, 0)
        for c in A.children(x):
            term(c)

    match e:
        case A.Sym(name, args):
            mark(name, sign)
            for a in args:
                term(a)
        case A.Not(a):
            polarity(a, out, -sign)
        case A.BinOp("and" | "or", l, r):
            polarity(l, out, sign)
            polarity(r, out, sign)
        case A.BinOp("implies", l, r):
            polarity(l, out, -sign)
            polarity(r, out, sign)
        case A.Quant(_, _, body):
            polarity(body, out, sign)
        case A.Ite(c, a, b):
            term(c)
            polarity(a, out, sign)
            polarity(b, out, sign)
        case _:
            term(e)
    return out


# The clauses of a spec's invariants, which do not depend on the universe: per spec (the most recent
# few), built once for an interpreter in shared mode (one per scope of a campaign). The spec is held
# so that its id is not reused while cached.
_SPLIT: dict[int, tuple[Any, list[_Shape]]] = {}
_SPECS_KEPT = 8


def _split(it: Interpreter) -> list[_Shape]:
    """Every clause of every invariant."""
    cached = _SPLIT.get(id(it.spec)) if it.shared else None
    if cached is not None and cached[0] is it.spec:
        return cached[1]
    out = []
    for inv in it.invariants:
        for n, (vs, body) in enumerate(clauses(inv.formula)):
            occ: dict[str, list[_Occurrence]] = {}
            _occurrences(body, {v.name: i for i, v in enumerate(vs)}, occ)
            harmless = {name: s > 0 for name, s in polarity(body, {}).items()
                        if s and it.u.layout.get(name) is not None and it.u.layout[name].symbol.result == A.TypeRef(A.BOOL)}
            out.append(_Shape(inv.name, n, vs, body, A.Quant("forall", vs, body) if vs else body, occ, harmless,
                              negation(body)))
    if it.shared:
        if len(_SPLIT) >= _SPECS_KEPT:
            _SPLIT.clear()
        _SPLIT[id(it.spec)] = (it.spec, out)
    return out


class IncrementalChecker:
    def __init__(self, it: Interpreter) -> None:
        self.it = it
        u = it.u
        self.clauses: list[_Clause] = []
        for shape in _split(it):
            sizes = [u.domain_size(v.type) for v in shape.vars]
            self.clauses.append(_Clause(
                shape, compile_formula(u, shape.whole, name=f"{shape.invariant} clause {shape.number} (full)", shared=it.shared),
                sizes, math.prod(sizes), {}))
        # the clauses that read each symbol: a step re-checks only those of the symbols it changed
        self.reading: dict[str, list[int]] = {}
        for k, cl in enumerate(self.clauses):
            for name in cl.shape.occurrences:
                self.reading.setdefault(name, []).append(k)

    def changed_points(self, before: State, after: State) -> list[tuple[str, int, Any, Any]]:
        """(symbol, flat index, old, new) for every point that differs; compares in C-speed chunks."""
        out = []
        for name, lay in self.it.u.layout.items():
            x, y = before[lay.index], after[lay.index]
            if x is y or x == y:
                continue
            out += [(name, i, x[i], y[i]) for i in differing(x, y)]
        return out

    def failing(self, before: State, after: State) -> list[str]:
        """Invariants false in `after`, given that every invariant held in `before`."""
        changes = self.changed_points(before, after)
        if not changes:
            return []
        by_symbol: dict[str, list[tuple[tuple[Any, ...], Any, Any]]] = {}
        u = self.it.u
        for name, i, old, new in changes:
            by_symbol.setdefault(name, []).append((u.point(name, i), old, new))
        bad: list[str] = []
        for k in sorted({k for name in by_symbol for k in self.reading.get(name, ())}):
            cl = self.clauses[k]
            if cl.invariant in bad:
                continue
            if not self._clause_holds(cl, after, by_symbol):
                bad.append(cl.invariant)
        return bad

    def check(self, before: State, after: State) -> list[Violation]:
        """Like Interpreter.check(after), but incremental; violations carry blame."""
        names = self.failing(before, after)
        return [Violation(n, blame(self.it.u, after, next(i.formula for i in self.it.invariants if i.name == n)))
                for n in names]

    def _clause_holds(self, cl: _Clause, s: State, by_symbol: dict[str, list[tuple[tuple[Any, ...], Any, Any]]]) -> bool:
        """`by_symbol`: each changed point's arguments, old and new value, per symbol."""
        # The hot path of the invariants: a few clauses a step, a few points each, each
        # occurrence's points searched by one call of compiled loops (a point searched twice, under
        # two occurrences, costs less than collecting the instances first).
        limit, size, shape = cl.total * _FULL_SHARE, 0, cl.shape
        work = []
        for name, points in by_symbol.items():
            plans = cl.plans_of(name)
            if not plans:
                continue
            harmless = shape.harmless.get(name)
            if harmless is not None:  # (a relation's points: old and new are the two truths)
                points = [p for p in points if p[2] != harmless]
                if not points:
                    continue
            for plan in plans:
                if plan.per_point is None:
                    return bool(cl.full_fn(s))
                size += plan.per_point * len(points)
                if size >= limit:
                    return bool(cl.full_fn(s))
                work.append((plan, points))
        for plan, points in work:
            search = plan.search
            if search is None:
                search = plan.search = compile_search(self.it.u, shape.vars, shape.violation, plan.occ.pins(),
                                                      shape.body, f"{shape.invariant} violation", shared=self.it.shared)
            if search(s, points):
                return False
        return True


def _per_point(occ: _Occurrence, sizes: list[int]) -> int | None:
    """How many instances of its clause one changed point of `occ` pins (at most); None when it
    pins no variable (a change of it may change any instance)."""
    pinned = {var for _, var in occ.arg_pins}
    if not pinned and occ.value_pin is None:
        return None
    n = 1 if occ.value_pin is None or occ.value_pin in pinned else 2
    return n * math.prod(d for k, d in enumerate(sizes) if k not in pinned and k != occ.value_pin)
