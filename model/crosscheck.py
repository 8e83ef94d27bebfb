"""The two semantics judged against each other on concrete states.

For a finite state s (any state, reachable or not), an action and its arguments:
- the interpreter's guard verdict equals Z3's evaluation of the guard on s;
- the interpreter's successor satisfies Z3's update formula, and Z3 finds no other successor
  (given the arguments, the spec's only nondeterminism, an action is deterministic);
- for each invariant, the interpreter's verdict equals Z3's.
Any disagreement is a bug in one of them; each is reported with the formula it concerns.
"""

from __future__ import annotations

from typing import Any

import z3

from dmmcheck.spec.checker import CheckedSpec
from dmmcheck.spec.printer import show_expr

from .evaluate import evaluate
from .interp import Interpreter
from .state import State
from .z3enc import Encoding, Vocab


class CrossCheck:
    def __init__(self, spec: CheckedSpec, sizes: dict[str, int] | None = None, timeout_ms: int = 20000) -> None:
        self.it = Interpreter(spec, sizes)
        self.enc = Encoding(spec, finite=self.it.u.sizes)
        self.pre, self.post = self.enc.vocab("0"), self.enc.vocab("1")
        self.timeout_ms = timeout_ms

    def state_eq(self, st: Vocab, s: State, only: set[str] | None = None) -> list[z3.BoolRef]:
        u, enc = self.it.u, self.enc
        out = []
        for name, lay in u.layout.items():
            if only is not None and name not in only:
                continue
            sym = lay.symbol
            for point, v in zip(u.points(name), s[lay.index]):
                args = [enc.value(t, a) for t, a in zip(sym.args, point)]
                out.append(st.app(name, args) == enc.value(sym.result, v))
        return out

    def _solver(self) -> z3.Solver:
        sv = z3.Solver()
        sv.set(timeout=self.timeout_ms, random_seed=0)
        return sv

    def z3_holds(self, s: State, formula: z3.BoolRef, st: Vocab | None = None) -> bool:
        """Z3's verdict on a closed formula in a fully specified state."""
        sv = self._solver()
        sv.add(self.state_eq(st or self.pre, s))
        neg, pos = sv.check(z3.Not(formula)), sv.check(formula)
        if not ((neg == z3.sat and pos == z3.unsat) or (neg == z3.unsat and pos == z3.sat)):
            raise RuntimeError(f"Z3 gave {neg}/{pos} on a fully specified state: {show_expr_safe(formula)}")
        return neg == z3.unsat

    def params(self, action: str, args: tuple[Any, ...]) -> dict[str, z3.ExprRef]:
        act = self.it.spec.actions[action]
        return {p.name: self.enc.choice_value(p.type, a) if p.type.args else self.enc.value(p.type, a)
                for p, a in zip(act.params, args)}

    def disagreements(self, s: State, action: str, args: tuple[Any, ...]) -> list[str]:
        it, enc = self.it, self.enc
        act = it.spec.actions[action]
        env = self.params(action, args)
        out = []
        for g in act.guards:
            mine = bool(evaluate(it.u, s, g, dict(zip((p.name for p in act.params), args))))
            theirs = self.z3_holds(s, enc.expr(g, self.pre, env))
            if mine != theirs:
                out.append(f"guard `{show_expr(g)}` of {action}: interpreter {mine}, Z3 {theirs}")
        succ = it.apply(s, action, args)
        sv = self._solver()
        sv.add(self.state_eq(self.pre, s))
        sv.add(enc.updates_formula(act, self.pre, self.post, env))
        if sv.check(*self.state_eq(self.post, succ)) != z3.sat:
            out.append(f"updates of {action}: the interpreter's successor does not satisfy Z3's update formula")
        differs = z3.Or([z3.Not(c) for c in self.state_eq(self.post, succ, set(act.modifies))] or [z3.BoolVal(False)])
        r = sv.check(differs)
        if r != z3.unsat:
            detail = ""
            if r == z3.sat:
                m = sv.model()
                bad = [c for c in self.state_eq(self.post, succ, set(act.modifies)) if z3.is_false(m.eval(c, True))]
                detail = f": e.g. {bad[0]}" if bad else ""
            out.append(f"updates of {action}: Z3 admits a successor the interpreter does not produce ({r}){detail}")
        return out

    def invariant_disagreements(self, s: State) -> list[str]:
        out = []
        for inv in self.it.invariants:
            mine = self.it.holds(s, inv.name)
            theirs = self.z3_holds(s, self.enc.invariant(inv.name, self.pre))
            if mine != theirs:
                out.append(f"invariant {inv.name}: interpreter {mine}, Z3 {theirs}")
        return out


def show_expr_safe(f: z3.ExprRef) -> str:
    return str(f)[:200]


__all__ = ["CrossCheck", "show_expr"]
