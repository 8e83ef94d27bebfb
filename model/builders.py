"""Each obligation kind as a `Query`: what to assert, in which order, and how to read the answer.

The order of the assertions and the names of the bound variables are part of the result: Z3's search
(and so an unsat core, or which check a resource limit stops) follows them. A builder that uses the
shared unbounded encoding resets its bound-variable counter first, so that its query is the same
whatever was built before it; a finite encoding is made anew for each query, in a context of its own
(prove.py). Keep both when editing a builder.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import z3

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import CheckedSpec

from .counterexample import Counterexamples
from .counting import Counts
from .obligation import Obligation
from .query import Answer, Assertion, Level, Part, Query, Reading, tracked
from .z3enc import Encoding, Env, Updated, Vocab


def sizes_text(bound: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in bound.items())


class Builders:
    """The encodings an obligation's query is built from, made once per prover."""

    def __init__(self, spec: CheckedSpec, finite: int | None, cex: Counterexamples) -> None:
        self.spec = spec
        self.cex = cex
        # Finite universe for bmc and vacuity (and for everything with --finite N).
        self.bound = {s: (finite or b or 2) for s, b in spec.sorts.items()}
        self.mode: dict[str, int] | None = None if finite is None else self.bound
        self.counts = Counts()
        self.unbounded = Encoding(spec, None, count_hook=self.counts.hook) if finite is None else None
        if self.unbounded is not None:
            self._encode_shared(self.unbounded)

    def _encode_shared(self, enc: Encoding) -> None:
        # Every datatype the unbounded encoding may use, declared now: translating a term into a
        # solver's context copies every datatype of the context it was built in (query.py), so a
        # datatype declared when some goal first needs it would change the queries after it.
        for base in (*self.spec.sorts, *self.spec.enums, A.BOOL, A.INT):
            enc.option(base)
        # Register every count term up front, so each obligation's count axioms (and its cache
        # key) do not depend on which obligations ran before it in this process. (A spec without
        # counts skips it: it is a third of the invariants' encoding, 4-10 ms on mypyvy's examples.)
        if any(_has_count(f) for f in (*(i.formula for i in self.spec.invariants),
                                       *(d.body for d in self.spec.defines.values()))):
            probe = enc.vocab("probe")
            for inv in self.spec.invariants:
                enc.invariant(inv.name, probe)
        # What every inductive obligation shares, encoded once, in a fixed order.
        enc.reset_fresh(0)
        self.pre = enc.vocab("0")
        self.pre_invariants = {i.name: enc.invariant(i.name, self.pre) for i in self.spec.invariants}
        self.pre_count_axioms = self.counts.axioms(enc, self.pre)
        self.axiom_formula = enc.axioms()
        self.action_parts: dict[str, tuple[Env, z3.BoolRef]] = {}
        for n, act in self.spec.actions.items():
            env = enc.param_consts(act)
            self.action_parts[n] = (env, enc.guards(act, self.pre, env))

    def encoding(self, finite: dict[str, int] | None) -> Encoding:
        if finite is None:
            assert self.unbounded is not None
            self.unbounded.reset_fresh(3_000_000)  # beyond the shared parts' names (see the module docstring)
            return self.unbounded
        return Encoding(self.spec, finite)

    def validity(self, ob: Obligation, bound: dict[str, int] | None, note: str = "") -> Reading:
        """A negated goal: unsat proves it; a model is a counterexample."""
        return Reading(proved=note, violated=note, bound=bound, counterexample=self._cti(ob))

    def _cti(self, ob: Obligation) -> Callable[[Answer], dict[str, Any]]:
        return lambda answer: self.cex.cti(ob, answer.model)

    def _count_axioms(self, enc: Encoding, states: list[Vocab]) -> list[z3.BoolRef]:
        return [ax for st in states for ax in self.counts.axioms(enc, st)] if enc.finite is None else []

    # ---------------------------------------------------------------- init
    def init(self, ob: Obligation) -> Query:
        enc = self.encoding(self.mode)
        st = enc.vocab("0")
        goal = z3.Not(enc.invariant(ob.invariant, st))  # type: ignore[arg-type]  # this obligation kind names its invariant
        return Query((lambda: (enc.axioms(), enc.init(st), goal), lambda: self._count_axioms(enc, [st])),
                     self.validity(ob, self.mode))

    def init_state(self) -> tuple[Encoding, Vocab, tuple[Part, ...]]:
        """What the init obligations share: axioms, init and its count axioms over state 0."""
        enc = self.encoding(self.mode)
        st = enc.vocab("0")
        return enc, st, (lambda: (enc.axioms(), enc.init(st)), lambda: self._count_axioms(enc, [st]))

    # ---------------------------------------------------------------- inductive
    def inductive_goal(self, ob: Obligation) -> z3.BoolRef:
        """The negated invariant after the action, over the shared pre-state (raises Unsupported
        when a count has no exact delta under this action)."""
        enc = self.encoding(None)
        env, _ = self.action_parts[ob.action]  # type: ignore[index]  # this obligation kind names its action
        post = Updated(enc, self.pre, self.spec.actions[ob.action], env)  # type: ignore[index]  # this obligation kind names its action
        enc.reset_fresh(1_000_000)
        return z3.Not(enc.invariant(ob.invariant, post))  # type: ignore[arg-type]  # this obligation kind names its invariant

    def clause_goals(self, ob: Obligation) -> Iterator[z3.BoolRef]:
        """The negated goal, one conjunct of the invariant (under its quantifiers) at a time, each
        encoded only when the one before it is proved."""
        enc = self.encoding(None)
        act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
        env, _ = self.action_parts[act.name]
        # Here, not at the top: incremental brings the interpreter's modules, which only this fallback
        # rung of the ladder needs.
        from .incremental import clauses

        inv = next(i for i in self.spec.invariants if i.name == ob.invariant)
        for n, (vs, body) in enumerate(clauses(inv.formula)):
            enc.reset_fresh(2_000_000 + 1000 * n)
            post = Updated(enc, self.pre, act, env)
            clause = A.Quant("forall", vs, body) if vs else body
            yield z3.Not(enc.expr(clause, post, {}))

    def inductive(self, ob: Obligation, goal: z3.BoolRef, counts: bool, only: frozenset[str] | None = None) -> Query:
        """Unbounded: the action's guards, the goal, the count axioms if asked, the invariants before
        (`only` these, if given: fewer hypotheses, so an unsat answer still proves the goal)."""
        _, guards = self.action_parts[ob.action]  # type: ignore[index]  # this obligation kind names its action
        pre = self.pre_invariants if only is None else {n: f for n, f in self.pre_invariants.items() if n in only}
        return Query((lambda: (self.axiom_formula, guards, goal, *(self.pre_count_axioms if counts else ()),
                               *tracked(pre)),),
                     self.validity(ob, None))

    def action_state(self, action: str, counts: bool) -> tuple[Assertion, ...]:
        """What an action's inductive goals share on one incremental solver."""
        _, guards = self.action_parts[action]
        return (self.axiom_formula, guards, *(self.pre_count_axioms if counts else ()), *tracked(self.pre_invariants))

    def inductive_finite(self, ob: Obligation, sizes: dict[str, int], reading: Reading | None = None) -> Query:
        enc = self.encoding(sizes)
        pre = enc.vocab("0")
        act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
        env = enc.param_consts(act)
        post = Updated(enc, pre, act, env)
        return Query((lambda: (enc.axioms(), enc.guards(act, pre, env), z3.Not(enc.invariant(ob.invariant, post))),  # type: ignore[arg-type]  # this obligation kind names its invariant
                      lambda: tracked({inv.name: enc.invariant(inv.name, pre) for inv in self.spec.invariants})),
                     reading or self.validity(ob, self.bound))

    # ---------------------------------------------------------------- vacuity
    def vacuity_state(self) -> tuple[Encoding, Vocab, list[z3.BoolRef]]:
        """The finite encoding of the vacuity checks, with the invariants encoded (made anew in each
        context: the caller's, of its own)."""
        enc = Encoding(self.spec, self.bound)
        st = enc.vocab("0")
        return enc, st, [enc.invariant(i.name, st) for i in self.spec.invariants]

    def vacuity(self, ob: Obligation) -> Query:
        enc, st, invariants = self.vacuity_state()
        parts: list[Part] = [lambda: (enc.axioms(),)]
        if ob.invariant == "init":
            parts.append(lambda: (enc.init(st),))
            what = "init is unsatisfiable: the spec has no initial state"
        elif ob.invariant == "invariants":
            parts.append(lambda: invariants)
            what = "the invariants together are unsatisfiable"
        else:
            act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
            parts += [lambda: invariants, lambda: (enc.guards(act, st, enc.param_consts(act)),)]
            what = f"dead action: {ob.action} is enabled in no state satisfying the invariants"
        reading = Reading(proved_by="sat", proved="witness found", bound=self.bound,
                          violated=what + f" (universe {sizes_text(self.bound)})")
        return Query(tuple(parts), reading)

    # ---------------------------------------------------------------- bmc
    def bmc(self, ob: Obligation) -> Query:
        """Iterative deepening from init: the violation looked for after 0, 1, 2, ... steps."""
        enc = self.encoding(self.bound)
        k = ob.depth
        states = [enc.vocab(str(i)) for i in range(k + 1)]
        sels = [z3.Int(f"step{i}") for i in range(k)]
        names = list(self.spec.actions)

        def step(i: int, j: int) -> Part:  # action j from state i to state i+1
            def part() -> tuple[z3.BoolRef]:
                act = self.spec.actions[names[j]]
                env = enc.param_consts(act, tag=f"@{i}")
                return (z3.Implies(sels[i] == j, enc.transition(act, states[i], states[i + 1], env)),)
            return part

        def level(d: int) -> Level:
            kept: list[Part] = []
            if d > 0:  # some action from state d-1 to state d
                i = d - 1
                kept.append(lambda: (sels[i] >= 0, sels[i] < len(names)))
                kept += [step(i, j) for j in range(len(names))]
            return Level(tuple(kept), lambda: z3.Not(enc.invariant(ob.invariant, states[d])))  # type: ignore[arg-type]  # this obligation kind names its invariant

        def trace(answer: Answer) -> dict[str, Any]:
            return self.cex.bmc_trace(ob, answer.model, enc, self.bound, states[: answer.depth + 1], sels)
        reading = Reading(proved=f"no violation within {k} steps (universe {sizes_text(self.bound)})",
                          bound=self.bound, counterexample=trace)
        return Query((lambda: (enc.axioms(), enc.init(states[0])),), reading, levels=level, depth=k)

    # ---------------------------------------------------------------- k-induction
    def kinduction(self, ob: Obligation) -> Query:
        return self._kbase(ob) if ob.invariant == "base" else self._kstep(ob)

    def _kstep(self, ob: Obligation) -> Query:
        """The step case: the invariant after k steps whenever all invariants held at the k before."""
        enc = self.encoding(self.mode)
        k = ob.depth
        states = [enc.vocab(str(i)) for i in range(k + 1)]
        parts: list[Part] = [
            lambda: (enc.axioms(),),
            lambda: tracked({inv.name: enc.invariant(inv.name, states[0]) for inv in self.spec.invariants}),
            *[self._invariants(enc, st) for st in states[1:k]],
            *self._transitions(enc, states),
            *[self._counts_at(enc, st) for st in states],
            lambda: (z3.Not(enc.invariant(ob.invariant, states[k])),),  # type: ignore[arg-type]  # this obligation kind names its invariant
        ]
        return Query(tuple(parts), self.validity(ob, self.mode, f"step case at depth {k}"))

    def _kbase(self, ob: Obligation) -> Query:
        """The base case: every invariant holds in the first k states of every run."""
        enc = self.encoding(self.mode)
        k = ob.depth
        states = [enc.vocab(f"b{i}") for i in range(k)]
        parts: list[Part] = [
            lambda: (enc.axioms(), enc.init(states[0])),
            *self._transitions(enc, states),
            *[self._counts_at(enc, st) for st in states],
            lambda: (z3.Or([z3.Not(enc.invariant(i.name, st)) for st in states for i in self.spec.invariants]),),
        ]
        return Query(tuple(parts), self.validity(ob, self.mode, f"base case: every invariant in the first {k} states"))

    def _invariants(self, enc: Encoding, st: Vocab) -> Part:
        return lambda: [enc.invariant(inv.name, st) for inv in self.spec.invariants]

    def _counts_at(self, enc: Encoding, st: Vocab) -> Part:
        return lambda: self._count_axioms(enc, [st])

    def _transitions(self, enc: Encoding, states: list[Vocab]) -> list[Part]:
        """Some action between each pair of consecutive states. A count term without an exact delta
        makes the query unencodable unbounded (k-induction has no finite fallback: --finite N)."""
        def step(i: int) -> Part:
            def part() -> tuple[z3.BoolRef]:
                ors = []
                for act in self.spec.actions.values():
                    env = enc.param_consts(act, tag=f"@{i}")
                    conj = [enc.transition(act, states[i], states[i + 1], env)]
                    if enc.finite is None:
                        steps, unsupported = self.counts.step(enc, act, states[i], states[i + 1], env)
                        if unsupported:
                            raise ValueError(f"no exact unbounded count delta for {unsupported[0]}; use --finite N")
                        conj += steps
                    ors.append(z3.And(conj))
                return (z3.Or(ors),)
            return part
        return [step(i) for i in range(len(states) - 1)]


def _has_count(e: A.Expr) -> bool:
    return isinstance(e, A.Count) or any(_has_count(c) for c in A.children(e))
