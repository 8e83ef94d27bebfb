"""Operations derived from the spec: which parameters of each action the harness chooses (inputs)
and which the implementation chooses (outputs: the mfn it allocates, the slot it uses), and when an
operation is legal — some choice of outputs makes the spec action's guard true.

Outputs are read off the guard where it pins them (`p2m(v, g) = m` makes m = p2m(v, g) for the
chosen v, g); an output no guard pins is searched over its whole sort. Accesses leave the root and
the role to the guest (its vCPU's current CR3 and paging mode). A few operations are not spec
actions: raw page-table edits (`gpte_write`) and one pass of the sharing scanner (`share_scan`);
each is legal whenever its VM lives, and the harness judges what the implementation did in response.
Which action is which (an access, an output, an alternative answer) is the DMM binding's (binding.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from dmmcheck.model.interp import Interpreter
from dmmcheck.model.state import State
from dmmcheck.spec import ast as A

from .binding import ACCESS_ACTIONS, ALTERNATIVES, CUR_ROOT, INTERNAL, LIVE, MODE, OUTPUTS, VCPU, WHEN_LIVE
from .binding import REFUSABLE as REFUSABLE  # the input space (inputs.py) reads it from here


@dataclass
class OpSpec:
    name: str
    inputs: tuple[A.Var, ...]  # the parameters the harness draws
    # per alternative action: for each parameter, either ("in", i) an input, ("sym", name, [input
    # positions]) the value of a state symbol, or ("any", domain size) a search
    plans: list[tuple[str, list[tuple]]] = field(default_factory=list)


class Catalogue:
    def __init__(self, it: Interpreter, operations: frozenset[str]) -> None:
        self.it = it
        self.ops: dict[str, OpSpec] = {}
        for name, act in it.spec.actions.items():
            if name in INTERNAL or name not in operations:
                continue
            outs = set(OUTPUTS.get(name, ())) | ({"r", "o"} if name in ACCESS_ACTIONS else set())
            inputs = tuple(p for p in act.params if p.name not in outs)
            spec = OpSpec(name, inputs)
            for alt in ALTERNATIVES.get(name, (name,)):
                if alt in it.spec.actions:
                    spec.plans.append((alt, self._plan(alt, [p.name for p in inputs])))
            self.ops[name] = spec
        self._live = it.u.layout[LIVE].index
        self._cur_root = it.u.layout[CUR_ROOT].index
        self._mode = it.u.layout[MODE].index
        self.vcpus = it.u.sizes.get(VCPU, 1)

    def running(self, s: State, v: int) -> list[int]:
        """VM v's vCPUs that run: a CR3 and a paging mode loaded (what an access needs)."""
        k = v * self.vcpus  # (vm, vcpu) symbols: vm-major
        return [c for c in range(self.vcpus)
                if s[self._cur_root][k + c] is not None and s[self._mode][k + c] is not None]

    def _plan(self, action: str, inputs: list[str]) -> list[tuple]:
        act = self.it.spec.actions[action]
        pinned = _pins(act.guards)
        plan: list[tuple] = []
        for p in act.params:
            if p.name in inputs:
                plan.append(("in", inputs.index(p.name)))
            elif p.name in pinned and all(isinstance(a, A.Var) and a.name in inputs for a in pinned[p.name].args):
                sym = pinned[p.name]
                plan.append(("sym", sym.name, [inputs.index(a.name) for a in sym.args]))  # type: ignore[union-attr]
            else:
                plan.append(("any", self.it.u.domain_size(p.type)))
        return plan

    def legal(self, s: State, name: str, xs: tuple[Any, ...]) -> bool:
        """Is the operation with these (spec-valued) inputs legal in s?"""
        if name in WHEN_LIVE:
            live = bool(xs) and s[self._live][xs[0]]
            if name in ACCESS_ACTIONS:  # (v, c, x, a, u)
                k = xs[0] * self.vcpus + xs[1]
                return live and s[self._cur_root][k] is not None and s[self._mode][k] is not None
            return live if xs else any(s[self._live])
        return any(self._witness(s, alt, plan, xs) is not None for alt, plan in self.ops[name].plans)

    def _witness(self, s: State, action: str, plan: list[tuple], xs: tuple[Any, ...]) -> tuple | None:
        fixed, search = [], []
        for i, step in enumerate(plan):
            if step[0] == "in":
                fixed.append(xs[step[1]])
            elif step[0] == "sym":
                v = self.it.u.get(s, step[1], *(xs[j] for j in step[2]))
                if v is None:
                    return None
                fixed.append(v)
            else:
                fixed.append(None)
                search.append((i, range(step[1])))
        for combo in itertools.product(*(r for _, r in search)):
            args = list(fixed)
            for (i, _), v in zip(search, combo):
                args[i] = v
            if self.it.is_enabled(s, action, tuple(args)):
                return tuple(args)
        return None


def _pins(guards: tuple[A.Expr, ...]) -> dict[str, A.Sym]:
    """Parameters a guard conjunct equates with a symbol application: {"m": p2m(v, g)}."""
    out: dict[str, A.Sym] = {}

    def visit(e: A.Expr) -> None:
        if isinstance(e, A.BinOp) and e.op == "and":
            visit(e.left)
            visit(e.right)
        elif isinstance(e, A.BinOp) and e.op == "=":
            for a, b in ((e.left, e.right), (e.right, e.left)):
                b = b.arg if isinstance(b, A.Some) else b
                if isinstance(a, A.Sym) and isinstance(b, A.Var):
                    out.setdefault(b.name, a)
    for g in guards:
        visit(g)
    return out
