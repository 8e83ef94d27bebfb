"""A violated obligation's counterexample, as small and as plain as the prover can make it: a
counterexample to induction re-solved in the smallest finite universe (cex.py shrinks and
minimises it), a BMC trace read from its model."""

from __future__ import annotations

import itertools
from typing import Any, Callable

import z3

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import CheckedSpec

from .cex import failing_conjunct, invariant_named, minimise_facts, prefer_first, show_immutable, show_mutable, shrink_sizes
from .evaluate import blame, evaluate
from .obligation import Obligation
from .state import State, Universe
from .z3enc import Encoding, Env, Vocab, own_context

MAX_CTI_SIZE = 4


class Counterexamples:
    def __init__(self, spec: CheckedSpec, solver: Callable[[], z3.Solver]) -> None:
        self.spec = spec
        self.solver = solver  # the prover's, with its limits

    def cti(self, ob: Obligation, model: z3.ModelRef) -> dict[str, Any]:
        """The smallest finite counterexample to induction: re-solve in universes of size 1, 2, ..."""
        if ob.kind != "inductive":
            return {"model": str(model)[:2000]}
        return self.finite_cti(ob) or {"note": f"no counterexample in universes up to size {MAX_CTI_SIZE}",
                                       "model": str(model)[:2000]}

    def finite_cti(self, ob: Obligation, max_size: int = MAX_CTI_SIZE) -> dict[str, Any] | None:
        """The smallest uniform size with a counterexample, then each sort shrunk in turn and the
        facts minimised (cex.py), so the counterexample shows only what the failure needs. Searched
        in a Z3 context of its own, so the counterexample depends on the obligation only."""
        with own_context():
            return self._finite_cti(ob, max_size)

    def _finite_cti(self, ob: Obligation, max_size: int) -> dict[str, Any] | None:
        for n in range(1, max_size + 1):
            sizes = {s: n for s in self.spec.sorts}
            if self._cti_solver(ob, sizes)[0].check() != z3.sat:
                continue
            sizes = shrink_sizes(sizes, lambda sz: self._cti_solver(ob, sz)[0].check() == z3.sat)
            sv, enc, pre, post, env = self._cti_solver(ob, sizes)
            prefer_first(sv, enc, [(p.type, env[p.name]) for p in self.spec.actions[ob.action].params])  # type: ignore[index]  # this obligation kind names its action
            model = minimise_facts(sv, enc, Universe(self.spec, sizes), pre)
            return self._show_cti(ob, model, enc, sizes, pre, post, env)
        return None

    def _cti_solver(self, ob: Obligation, sizes: dict[str, int]) -> tuple[z3.Solver, Encoding, Vocab, Vocab, Env]:
        enc = Encoding(self.spec, sizes)
        pre, post = enc.vocab("0"), enc.vocab("1")
        act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
        env = enc.param_consts(act)
        sv = self.solver()
        sv.add(enc.axioms(), enc.transition(act, pre, post, env), z3.Not(enc.invariant(ob.invariant, post)))  # type: ignore[arg-type]  # this obligation kind names its invariant
        sv.add(*[enc.invariant(i.name, pre) for i in self.spec.invariants])
        return sv, enc, pre, post, env

    def _show_cti(self, ob: Obligation, model: z3.ModelRef, enc: Encoding, sizes: dict[str, int], pre: Vocab,
                  post: Vocab, env: Env) -> dict[str, Any]:
        u = Universe(self.spec, sizes)
        before, after = read_state(u, enc, model, pre), read_state(u, enc, model, post)
        act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
        args = {p.name: u.show_value(p.type, read_arg(u, enc, model, p.type, env[p.name])) for p in act.params}
        inv = invariant_named(self.spec, ob.invariant)
        b = blame(u, after, inv.formula)
        part = failing_conjunct(u, after, inv)
        return {"universe": sizes, "action": ob.action, "args": args,
                "blame": str(b), "conjunct": part.to_json() if part else None,
                "before": u.to_dict(before), "after": u.to_dict(after),
                "immutable_text": show_immutable(u, before),
                "before_text": show_mutable(u, before), "after_text": show_mutable(u, after)}

    def bmc_trace(self, ob: Obligation, model: z3.ModelRef, enc: Encoding, bound: dict[str, int],
                  states: list[Vocab], sels: list[z3.ArithRef]) -> dict[str, Any]:
        """The run to the first state that violates ob's invariant, in spec values."""
        u = Universe(self.spec, bound)
        names = list(self.spec.actions)
        steps = []
        trace_states = [read_state(u, enc, model, st) for st in states]
        first_bad = next((i for i, s in enumerate(trace_states)
                          if not _holds(u, s, self.spec, ob.invariant)), len(trace_states) - 1)
        for i in range(first_bad):
            n = names[model.eval(sels[i], True).as_long()]
            act = self.spec.actions[n]
            env = enc.param_consts(act, tag=f"@{i}")
            args = {p.name: u.show_value(p.type, read_arg(u, enc, model, p.type, env[p.name])) for p in act.params}
            steps.append({"action": n, "args": args})
        inv = invariant_named(self.spec, ob.invariant)
        bad = trace_states[first_bad]
        part = failing_conjunct(u, bad, inv)
        return {"universe": bound, "steps": steps,
                "blame": str(blame(u, bad, inv.formula)), "conjunct": part.to_json() if part else None,
                "immutable_text": show_immutable(u, bad), "state_text": show_mutable(u, bad)}


def _holds(u: Universe, s: State, spec: CheckedSpec, name: str | None) -> bool:
    inv = next(i for i in spec.invariants if i.name == name)
    return bool(evaluate(u, s, inv.formula, {}))


def read_value(enc: Encoding, t: A.TypeRef, v: z3.ExprRef) -> Any:
    if t.optional:
        opt = enc.option(t.name)
        if v.decl().eq(opt.constructor(0)):
            return None
        return read_value(enc, A.TypeRef(t.name), v.arg(0))
    if t.name == A.BOOL:
        return z3.is_true(v)
    if t.name == A.INT:
        return v.as_long()
    elems = enc.elements[t.name]
    return next(i for i, e in enumerate(elems) if z3.eq(e, v))


def read_arg(u: Universe, enc: Encoding, model: z3.ModelRef, t: A.TypeRef, term: Any) -> Any:
    """An action's argument in the model: a value, or for a choice parameter (a function `term`) the
    flat tuple of its values at every point of its arguments, in row-major order (Universe.domain)."""
    if not t.args:
        return read_value(enc, t, model.eval(term, True))
    points = itertools.product(*(u.domain(a) for a in t.args))
    return tuple(read_value(enc, t.result, model.eval(term(*[enc.value(a, x) for a, x in zip(t.args, p)]), True))
                 for p in points)


def read_state(u: Universe, enc: Encoding, model: z3.ModelRef, st: Vocab) -> State:
    entries = []
    for name, lay in u.layout.items():
        sym = lay.symbol
        vals = []
        for point in u.points(name):
            args = [enc.value(t, a) for t, a in zip(sym.args, point)]
            vals.append(read_value(enc, sym.result, model.eval(st.app(name, args), True)))
        entries.append(tuple(vals))
    return tuple(entries)
