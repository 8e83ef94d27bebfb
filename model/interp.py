"""The interpreter: the spec as an executable oracle over finite concrete states.

What the harness asks of it, each answered from the same checked AST the prover uses:
initial states; which actions are enabled with which arguments; the successor of a step; whether
each invariant holds (and if not, where: `Blame`); and whether a candidate next state read from an
implementation is a legal step of an action (and if not, which update or frame condition it breaks,
at which point).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import CheckedSpec, Invariant
from dmmcheck.spec.printer import show_expr, show_update

from .compile import CompiledAction, compile_action, compile_formula
from .evaluate import Blame, apply_updates, blame, evaluate
from .state import State, Universe


# Candidate initial states an init with requires may make the interpreter enumerate.
MAX_FREE_INIT = 1 << 16


class InterpError(ValueError):
    """A request the spec cannot answer as asked (unknown action, wrong arguments)."""


@dataclass
class Violation:
    invariant: str
    blame: Blame

    def __str__(self) -> str:
        return f"{self.invariant} fails: {self.blame}"


@dataclass
class StepVerdict:
    """Is (before, action(args), after) a legal step? If not, every reason, most telling first."""

    ok: bool
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok


class Interpreter:
    def __init__(self, spec: CheckedSpec, sizes: dict[str, int] | None = None, shared: bool = False,
                 fixed: dict[str, tuple[Any, ...]] | None = None) -> None:
        """`shared`: compile the spec once for every universe, binding the sizes by name (compile.py;
        for a caller that meets many universes). `fixed`: immutable symbols' values (Universe)."""
        self.spec = spec
        self.u = Universe(spec, sizes, fixed)
        self.shared = shared
        self.actions: dict[str, CompiledAction] = {n: compile_action(self.u, a, shared) for n, a in spec.actions.items()}
        assert spec.init is not None
        self._init = compile_action(self.u, spec.init, shared)
        self.invariants: list[Invariant] = list(spec.invariants)
        self._inv = {i.name: compile_formula(self.u, i.formula, name=f"invariant {i.name}", shared=shared)
                     for i in self.invariants}
        self._axioms = [compile_formula(self.u, a.formula, name=f"axiom {a.name}", shared=shared) for a in spec.axioms]

    # ---------------------------------------------------------------- states
    def initial_states(self) -> list[State]:
        """One initial state per assignment of the immutable symbols that satisfies the axioms."""
        immutables = [lay for lay in self.u.layout.values() if not lay.symbol.mutable]
        for lay in immutables:
            if lay.symbol.result.name == A.INT and lay.symbol.name not in self.u.params:
                raise InterpError(f"immutable int symbol {lay.symbol.name!r} has no finite domain to enumerate")
        blank = [tuple([None] * lay.size) for lay in self.u.layout.values()]
        choices = [[self.u.fixed[lay.symbol.name]] if lay.symbol.name in self.u.fixed else
                   itertools.product(self.u.params.get(lay.symbol.name) or self.u.domain(lay.symbol.result),
                                     repeat=lay.size) for lay in immutables]
        out = []
        free = self._free_init()
        for values in itertools.product(*choices):
            s = list(blank)
            for lay, v in zip(immutables, values):
                s[lay.index] = tuple(v)
            st = tuple(s)
            if not all(ax(st) for ax in self._axioms):
                continue
            if not free:
                out.append(self._init.apply(st))
                continue
            for start in self._fill(st, free):  # init with requires: every state its constraints allow
                s0 = self._init.apply(start)
                if self._init.guard(s0):
                    out.append(s0)
        return list(dict.fromkeys(out)) if free else out

    def _free_init(self) -> list[tuple[int, tuple[Any, ...], int]]:
        """(state index, values, points) of each symbol init leaves unassigned somewhere; refused
        when they would make too many initial states to enumerate (a clear error, not a hang)."""
        free, total = [], 1
        for name in self.spec.init_free_symbols():
            lay = self.u.layout[name]
            res = lay.symbol.result
            if res.name == A.INT:
                raise InterpError(f"init leaves the int symbol {name!r} to its requires: an int has no finite "
                                  "domain to enumerate initial states over (assign it in init)")
            dom = ((None,) if res.optional else ()) + self.u.domain(res)
            total *= len(dom) ** lay.size
            if total > MAX_FREE_INIT:
                raise InterpError(f"init leaves {', '.join(self.spec.init_free_symbols())} to its requires: more than "
                                  f"{MAX_FREE_INIT:,} candidate initial states at {self.u.describe()} (make the bound "
                                  "smaller, or assign more in init)")
            free.append((lay.index, dom, lay.size))
        return free

    @staticmethod
    def _fill(st: State, free: list[tuple[int, tuple[Any, ...], int]]) -> Iterator[State]:
        """st with every combination of values at the free symbols' points."""
        for combo in itertools.product(*(itertools.product(dom, repeat=n) for _, dom, n in free)):
            s = list(st)
            for (k, _, _), vals in zip(free, combo):
                s[k] = tuple(vals)
            yield tuple(s)

    def initial_state(self) -> State:
        """The one initial state; a parameter the bound leaves open (the budget, the quota) takes its
        largest value here (initial_states() has one state per value)."""
        states = self.initial_states()
        if len(states) > 1 and self.u.params:
            top = {n: self.u.param_value(n) for n in self.u.params}
            states = [s for s in states if all(s[self.u.layout[n].index][0] == v for n, v in top.items())]
        if len(states) != 1:
            raise InterpError(f"the spec has {len(states)} initial states; pick one with initial_states()")
        return states[0]

    # ---------------------------------------------------------------- actions
    def action(self, name: str) -> CompiledAction:
        try:
            return self.actions[name]
        except KeyError:
            raise InterpError(f"unknown action {name!r}") from None

    def parse_args(self, name: str, args: dict[str, Any] | tuple | list) -> tuple[Any, ...]:
        """Arguments by name ({"v": "vm0"}) or by position, shown form or internal form."""
        act = self.action(name).action
        if isinstance(args, dict):
            missing = [p.name for p in act.params if p.name not in args]
            extra = [k for k in args if k not in {p.name for p in act.params}]
            if missing or extra:
                raise InterpError(f"{name} takes ({', '.join(p.name for p in act.params)}); "
                                  f"missing {missing}, unknown {extra}")
            raw = [args[p.name] for p in act.params]
        else:
            raw = list(args)
            if len(raw) != len(act.params):
                raise InterpError(f"{name} takes {len(act.params)} argument(s), got {len(raw)}")
        out = []
        for p, v in zip(act.params, raw):
            if p.type.args:  # a choice parameter: the shown {...} form, or the flat list of values
                try:
                    out.append(self.u.parse_value(p.type, v))
                except ValueError as e:
                    raise InterpError(f"parameter {p.name} of {name}: {e}") from None
            elif isinstance(v, str) or v is None:
                out.append(self.u.parse_value(p.type, v))
            elif p.type.name == A.BOOL:
                out.append(bool(v))
            elif isinstance(v, int) and 0 <= v < self.u.domain_size(p.type):
                out.append(v)
            else:
                raise InterpError(f"{v!r} is not a value of {p.type} for parameter {p.name} of {name}")
        return tuple(out)

    def show_args(self, name: str, args: tuple[Any, ...]) -> str:
        act = self.action(name).action
        return ", ".join(f"{p.name}={self.u.show_value(p.type, a)}" for p, a in zip(act.params, args))

    def enabled(self, s: State, name: str | None = None) -> Iterator[tuple[str, tuple[Any, ...]]]:
        names = [name] if name else list(self.actions)
        for n in names:
            for args in self.action(n).enabled(s):
                yield n, args

    def is_enabled(self, s: State, name: str, args: tuple[Any, ...]) -> bool:
        return bool(self.action(name).guard(s, *args))

    def apply(self, s: State, name: str, args: tuple[Any, ...]) -> State:
        """The successor; the caller checks the guard (apply does not)."""
        return self.action(name).apply(s, *args)

    def successors(self, s: State) -> Iterator[tuple[str, tuple[Any, ...], State]]:
        for n, ca in self.actions.items():
            for args in ca.enabled(s):
                yield n, args, ca.apply(s, *args)

    # ---------------------------------------------------------------- invariants
    def holds(self, s: State, name: str) -> bool:
        return bool(self._inv[name](s))

    def check(self, s: State, names: list[str] | None = None) -> list[Violation]:
        """Every invariant (or the named ones) on s; each violation with its blame."""
        out = []
        for inv in self.invariants:
            if names is not None and inv.name not in names:
                continue
            if not self._inv[inv.name](s):
                out.append(Violation(inv.name, blame(self.u, s, inv.formula)))
        return out

    def all_hold(self, s: State) -> bool:
        return all(f(s) for f in self._inv.values())

    # ---------------------------------------------------------------- step checking
    def step_check(self, before: State, name: str, args: tuple[Any, ...], after: State) -> StepVerdict:
        """Is `after` what action name(args) makes of `before`, with its guards holding?"""
        ca = self.action(name)
        act = ca.action
        env = {p.name: a for p, a in zip(act.params, args)}
        problems = []
        if not ca.guard(before, *args):  # the compiled guard; the reference evaluator only explains
            for g in act.guards:
                if not evaluate(self.u, before, g, env):
                    problems.append(f"guard of {name}({self.show_args(name, args)}) is false: "
                                    f"{blame(self.u, before, g, env)}")
        expected = ca.apply(before, *args)
        if expected != after:
            writes: dict[tuple[str, int], A.Update] = {}
            apply_updates(self.u, before, act.updates, env, writes)
            for sym, point, want, got in self.u.diff(expected, after):
                lay = self.u.layout[sym]
                res = lay.symbol.result
                where = self.u.show_point(sym, point)
                vals = f"spec expects {self.u.show_value(res, want)}, got {self.u.show_value(res, got)}"
                writer = writes.get((sym, self.u.index(sym, point)))
                if sym not in act.modifies:
                    problems.append(f"frame: {name} does not modify {sym}, but {where} changed ({vals})")
                elif writer is not None:
                    problems.append(f"update `{show_update(writer)[:160]}` at {where}: {vals}")
                else:
                    problems.append(f"frame: no update of {name} writes {where} ({vals})")
        return StepVerdict(not problems, problems)


__all__ = ["Interpreter", "InterpError", "StepVerdict", "Violation", "show_expr"]
