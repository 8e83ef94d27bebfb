"""Readable counterexamples: the smallest universe per sort, the fewest facts, and a rendering that
a person reads at a glance.

A counterexample found by Z3 is one model among many; the first one is rarely the clearest. So:

1. **Universe, per sort.** The caller finds the smallest uniform size first; then each sort in turn
   is shrunk to the smallest size at which a counterexample still exists (the others kept).
2. **Facts.** In the state before (and the immutable symbols), each relation's true tuples and each
   partial function's defined points are minimised by cardinality constraints, relation by relation,
   keeping each bound found (as mypyvy minimises a model): what is left is what the failure needs.
3. **Rendering.** Immutable symbols are printed once, not in both states; constants and nullary
   relations read `c = gfn0`, `flag` / `!flag`; the failing invariant's conjunct is named with its
   file:line:col (the invariant's top-level conjunction split, also under its outer foralls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import z3

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import CheckedSpec, Invariant
from dmmcheck.spec.printer import show_expr

from .evaluate import evaluate
from .state import State, Universe
from .z3enc import Encoding, Vocab

# Cardinality checks one fact minimisation may make; past it the model found so far is kept.
MAX_FACT_CHECKS = 200


# ---------------------------------------------------------------- universe


def shrink_sizes(sizes: dict[str, int], sat_at: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """Each sort in turn at the smallest size where `sat_at` still holds, the others as found so far
    (sat_at(sizes) is known true). Tries sizes upwards, so the first success is the smallest."""
    best = dict(sizes)
    for sort in list(best):
        for n in range(1, best[sort]):
            trial = {**best, sort: n}
            if sat_at(trial):
                best = trial
                break
    return best


# ---------------------------------------------------------------- facts


def minimise_facts(sv: z3.Solver, enc: Encoding, u: Universe, st: Vocab, budget: int = MAX_FACT_CHECKS) -> z3.ModelRef:
    """Fewer true relation tuples and fewer defined partial-function points in st (and in the
    immutable symbols), one symbol at a time; each bound found stays asserted. sv must be sat."""
    assert sv.check() == z3.sat
    model = sv.model()
    checks = 0
    for name, lay in u.layout.items():
        sym = lay.symbol
        vocab = st if sym.mutable else enc.immutable
        lits = _fact_literals(enc, u, vocab, name)
        if not lits:
            continue
        true = sum(z3.is_true(model.eval(x, True)) for x in lits)
        while true > 0 and checks < budget:
            checks += 1
            sv.push()
            sv.add(z3.AtMost(*lits, true - 1))
            if sv.check() != z3.sat:
                sv.pop()
                break
            model = sv.model()
            true = sum(z3.is_true(model.eval(x, True)) for x in lits)
    return model


def _fact_literals(enc: Encoding, u: Universe, st: Vocab, name: str) -> list[z3.BoolRef]:
    """The facts of one symbol worth minimising: a relation's tuples, a partial function's
    `!= none` points; none for total functions and ints (no value is simpler than another)."""
    sym = u.layout[name].symbol
    if sym.result.name != A.BOOL and not sym.result.optional:
        return []
    out = []
    for point in u.points(name):
        app = st.app(name, [enc.value(t, a) for t, a in zip(sym.args, point)])
        if sym.result.optional:
            out.append(app != enc.value(sym.result, None))
        else:
            out.append(app)
    return out


def prefer_first(sv: z3.Solver, enc: Encoding, terms: list[tuple[A.TypeRef, z3.ExprRef]]) -> None:
    """Each term (an action's argument) pinned to the first element of its sort that keeps sv sat:
    the counterexample then reads the same in every run (`acquire(c=client0)`), not as Z3 chose."""
    for t, term in terms:
        if t.optional or t.args or t.name not in enc.elements:  # (a choice parameter is left as it is)
            continue
        for e in enc.elements[t.name]:
            sv.push()
            sv.add(term == e)
            if sv.check() == z3.sat:
                break
            sv.pop()


# ---------------------------------------------------------------- rendering


def show_symbol(u: Universe, s: State, name: str) -> str:
    """One symbol's value on one line: `c = gfn0`, `flag` / `!flag`, `holds = {client0}`,
    `p2m: (vm0, gfn0) -> mfn1`."""
    lay = u.layout[name]
    sym, vals = lay.symbol, s[lay.index]
    res = sym.result
    if not sym.args:
        if res.name == A.BOOL:
            return name if vals[0] else f"!{name}"
        return f"{name} = {u.show_value(res, vals[0])}"
    points = list(u.points(name))
    if res.name == A.BOOL:
        body = ", ".join(_tuple(u, sym.args, p) for p, v in zip(points, vals) if v)
        return f"{name} = {{{body}}}"
    body = ", ".join(f"{_tuple(u, sym.args, p)} -> {u.show_value(res, v)}"
                     for p, v in zip(points, vals) if v is not None and v is not False)
    return f"{name}: {body or '-'}"


def _tuple(u: Universe, types: tuple[A.TypeRef, ...], point: tuple[Any, ...]) -> str:
    shown = [u.show_value(t, a) for t, a in zip(types, point)]
    return shown[0] if len(shown) == 1 else "(" + ", ".join(shown) + ")"


def show_immutable(u: Universe, s: State) -> str:
    return "\n".join(show_symbol(u, s, n) for n, lay in u.layout.items() if not lay.symbol.mutable)


def show_mutable(u: Universe, s: State) -> str:
    return "\n".join(show_symbol(u, s, n) for n, lay in u.layout.items() if lay.symbol.mutable)


# ---------------------------------------------------------------- the failing conjunct


@dataclass(frozen=True)
class Conjunct:
    index: int  # 1-based, among the invariant's conjuncts
    of: int
    text: str
    loc: A.Loc | None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "of": self.of, "text": self.text, "loc": str(self.loc) if self.loc else None}

    def __str__(self) -> str:
        where = f"{self.loc}: " if self.loc else ""
        return f"{where}conjunct {self.index} of {self.of}: {self.text}"


def conjuncts(e: A.Expr, vs: tuple[A.Var, ...] = ()) -> list[tuple[tuple[A.Var, ...], A.Expr]]:
    """The invariant's top-level conjunction, split also under its outer foralls (their variables
    kept with each conjunct)."""
    if isinstance(e, A.BinOp) and e.op == "and":
        return conjuncts(e.left, vs) + conjuncts(e.right, vs)
    if isinstance(e, A.Quant) and e.kind == "forall":
        return conjuncts(e.body, vs + e.binders)
    return [(vs, e)]


def failing_conjunct(u: Universe, s: State, inv: Invariant) -> Conjunct | None:
    """The first conjunct of inv that is false in s, with where it is written."""
    parts = conjuncts(inv.formula)
    for i, (vs, body) in enumerate(parts):
        clause = A.Quant("forall", vs, body) if vs else body
        if not evaluate(u, s, clause, {}):
            return Conjunct(i + 1, len(parts), show_expr(body), _start(body, inv.loc))
    return None


def _start(e: A.Expr, floor: A.Loc | None) -> A.Loc | None:
    """Where e starts in the invariant's text: its leftmost location at or after the invariant's own
    (a definition inlined into it carries the definition's locations, which come earlier)."""
    best = None
    todo = [e]
    while todo:
        x = todo.pop()
        loc = getattr(x, "loc", None)
        if loc is not None and loc.line > 0 and (floor is None or (loc.line, loc.col) >= (floor.line, floor.col)):
            if best is None or (loc.line, loc.col) < (best.line, best.col):
                best = loc
        todo.extend(A.children(x))
    return best or floor


def invariant_named(spec: CheckedSpec, name: str | None) -> Invariant:
    return next(i for i in spec.invariants if i.name == name)
