"""Proof obligations, checked one by one with Z3, every one reported.

Kinds:
  init        init implies the invariant
  inductive   all invariants and one action imply the invariant afterwards (unbounded: sorts are
              uninterpreted, so a proof covers every universe size; counts use counting.py)
  bmc         no violation reachable from init within K steps (finite universe, sizes reported)
  kinduction  the invariant holds after K steps whenever all invariants held at the K before
  vacuity     init is satisfiable, the invariants together are, each action is enabled in some
              state satisfying them (finite universe: a witness is a concrete state)

Each ends proved, violated or unknown (with the reason). Proved obligations carry the invariants
their proof used (the unsat core). A violated inductive obligation is a counterexample to induction,
shown as the smallest finite pre- and post-state found, with blame.

The pipeline: an obligation's kind picks its builder (builders.py), which makes a `Query`; `solve`
(query.py) answers it on a solver made here, in a Z3 context of its own; `read` makes the answer a
`Result`. An unbounded inductive goal climbs a ladder of attempts (QUICK_PASS on its action's shared
solvers, then LADDER alone); the init obligations and the vacuity checks share one incremental
solver each. An obligation's answer (verdict, core, counterexample) depends on the obligation only
(with the spec it is in), never on what the process proved before it or beside it: each solver is
in a fresh context (query.py says why the context matters), and a shared solver always sees the same
goals in the same order. `dmm prove --json` and the result cache rely on it. The result cache is
the runner's (runner.py), not the prover's.
"""

from __future__ import annotations

import itertools
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Callable

import z3

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import CheckedSpec

from .builders import Builders
from .cache import ENCODING_VERSION, SEED, Cache, _checksum, fingerprint_of
from .counterexample import MAX_CTI_SIZE, Counterexamples
from .counterexample import read_state as _read_state
from .counterexample import read_value as _read_value
from .counting import Unsupported
from .limits import BACKSTOP, COUNTS_RLIMIT, INCREMENTAL_QUICK_RLIMIT, QUICK_RLIMIT, RLIMIT
from .obligation import Obligation, Result, list_obligations, result
from .query import (Answer, NotEncodable, Query, Reading, Verdict, assert_all, assert_parts, check, check_goal,
                    own_solver, read, solve, why_unknown)
from .z3enc import Encoding, own_context, use_context

__all__ = ["ENCODING_VERSION", "MAX_CTI_SIZE", "SEED", "Cache", "Obligation", "Prover", "Result", "_checksum",
           "_read_state", "_read_value"]


@dataclass(frozen=True)
class Rung:
    """An attempt at an unbounded inductive goal: with or without the count axioms (true facts, so
    leaving them out is sound for a proof; they slow down the goals that do not need them), within
    a budget (None: the prover's --rlimit). `settles`: the answers that end the climb."""

    counts: bool
    rlimit: int | None
    settles: tuple[Verdict, ...] = ("unsat",)
    # Assume only the invariants that read a symbol the goal's invariant reads: with all of them
    # as hypotheses (22 on the bundled spec) the solver can spend its whole budget instantiating
    # ones the goal does not need (walk_protected after zap_spte, which only removes sptes). Only
    # unsat settles it.
    related: bool = False


@dataclass(frozen=True)
class SmallCounterexample:
    """Z3 rarely builds a model for the quantified goal, but a finite universe is a real model: a
    counterexample found there (up to `size` per sort) is a genuine counterexample to induction."""

    size: int


@dataclass(frozen=True)
class ByClause:
    """The goal one conjunct of the invariant (under its quantifiers) at a time, each climbing
    PER_CLAUSE: smaller queries, and unsat for each clause is unsat for the whole."""


# What every inductive goal tries first, on its action's shared solvers (check_action): cheap, and
# enough for most. Passes that assume, per goal, only the invariants related to the goal's (check's
# `assume` over literals every invariant is asserted under) come first: fewer hypotheses, a smaller
# search. With all 22 as hypotheses and the count axioms, the bundled spec's six hardest
# walk_protected goals ran the counts pass out (19.5 s of its 27 s of CPU,
# `bench/results/prove-related-pass.json`); with the related ones alone each is proved in under
# 0.15 s. On mypyvy's paxos examples the related pass first proves goals that ran out the first
# pass's budget with every invariant (solver CPU, medians of three runs: paxos_forall_choosable
# 0.39 -> 0.19 s, paxos_forall 0.41 -> 0.39 s); the bundled spec's is the same either way. A pass answered `sat` is not tried again with the same hypotheses and more
# budget (check_action) ...
QUICK_PASS = (Rung(False, INCREMENTAL_QUICK_RLIMIT, related=True), Rung(False, INCREMENTAL_QUICK_RLIMIT),
              Rung(False, QUICK_RLIMIT, related=True), Rung(True, COUNTS_RLIMIT))
# ... and what a goal it leaves open climbs.
LADDER: tuple[Rung | SmallCounterexample | ByClause, ...] = (
    Rung(False, QUICK_RLIMIT),  # most goals need no count axioms
    Rung(False, QUICK_RLIMIT, related=True),
    SmallCounterexample(2),
    Rung(True, None, ("unsat", "sat")),
    ByClause(),
)
PER_CLAUSE = (Rung(False, None), Rung(True, None))


def _not_encodable(ob: Obligation, e: Exception) -> Result:
    return result(ob, "unknown", reason=f"could not encode: {e}")


def _timed(res: Result, start: float) -> Result:
    res.seconds = time.perf_counter() - start
    return res


class Prover:
    def __init__(self, spec: CheckedSpec, *, finite: int | None = None, timeout: float = BACKSTOP,
                 seed: int = SEED, rlimit: int = RLIMIT) -> None:
        self.spec = spec
        self.timeout_ms = int(timeout * 1000)  # the wall-clock backstop
        self.rlimit = rlimit
        self.seed = seed
        self.finite_n = finite
        self.cex = Counterexamples(spec, lambda: self.solver())
        # The prover's own context: the unbounded encoding lives there, and what is built there is
        # translated into each solver's context, which gets a copy of its datatypes too (query.py);
        # the only ones are those the encoding declares here. Finite queries have contexts of
        # their own (_in_own_context).
        self.ctx = z3.Context()
        with use_context(self.ctx):
            self.build = Builders(spec, finite, self.cex)
        self.bound = self.build.bound
        self._related_of: dict[str, frozenset[str]] = {}  # invariant -> the invariants reading what it reads
        # Each kind's query; an unbounded inductive goal climbs LADDER instead (check).
        self.queries: dict[str, Callable[[Obligation], Query]] = {
            "init": self.build.init,
            "inductive": lambda ob: self.build.inductive_finite(ob, self.bound),
            "vacuity": self.build.vacuity,
            "bmc": self.build.bmc,
            "kinduction": self.build.kinduction,
        }

    # ---------------------------------------------------------------- obligations
    def obligations(self, bmc: int = 0, kinduction: int = 0) -> list[Obligation]:
        return list_obligations(self.spec, bmc, kinduction)

    list_obligations = staticmethod(list_obligations)

    def fingerprint(self, ob: Obligation) -> str:
        return fingerprint_of(self.spec, ob, self.finite_n, self.rlimit, self.seed)

    fingerprint_of = staticmethod(fingerprint_of)

    # ---------------------------------------------------------------- solving
    def params(self, rlimit: int | None = None) -> dict[str, Any]:
        """A solver's settings, its budget capped at rlimit (None: --rlimit)."""
        return {"timeout": self.timeout_ms, "rlimit": min(self.rlimit, rlimit or self.rlimit),
                "random_seed": self.seed, "unsat_core": True}

    def solver(self) -> z3.Solver:
        """A solver in the main context, for a search that encodes its own formulas there (the
        counterexamples, under own_context)."""
        sv = z3.Solver()
        sv.set(**self.params())
        return sv

    def _solve(self, query: Query, rlimit: int | None = None, ctx: z3.Context | None = None) -> Answer:
        """The query on a solver of its own, in ctx (made for this query) or in a context of its own,
        its budget capped at rlimit."""
        return solve(query, own_solver(self.params(rlimit), ctx))

    def _read(self, ob: Obligation, reading: Reading, answer: Answer) -> Result:
        return read(ob, reading, answer, self.why_unknown)

    def why_unknown(self, answer: Answer) -> str:
        """Which limit stopped the solver, in the user's terms."""
        return why_unknown(answer, self.rlimit, self.timeout_ms)

    # ---------------------------------------------------------------- one obligation
    def check(self, ob: Obligation) -> Result:
        """One obligation, never raising: an internal failure is reported as unknown, with why."""
        # Its answer is the one it gets amid the other goals of its shared solver.
        if ob.kind == "inductive" and (framed := self._framed(ob)) is not None:
            return framed
        if ob.kind == "inductive" and self.finite_n is None:
            return self.check_action([ob])[0]
        if ob.kind == "init":
            return self.check_inits([ob])[0]
        if ob.kind == "vacuity":
            return self.check_vacuity([ob])[0]
        with use_context(self.ctx):
            return self._guarded(ob, self._check)

    def _framed(self, ob: Obligation) -> Result | None:
        """The frame rule: proved without a solver where the action modifies none of the symbols
        the invariant reads (on the bundled spec, most of the action-invariant pairs)."""
        assert ob.action is not None and ob.invariant is not None  # an inductive obligation names both
        if not self.spec.frames(ob.action, ob.invariant):
            return None
        return result(ob, "proved", bound=self.build.mode,
                      reason=f"frame: {ob.action} modifies nothing {ob.invariant} reads")

    def _in_own_context(self, ob: Obligation) -> bool:
        """Does ob's query use a finite encoding (built, solved and read in a context of its own)?"""
        return self.finite_n is not None or ob.kind in ("vacuity", "bmc")

    def _guarded(self, ob: Obligation, how: Callable[[Obligation], Result]) -> Result:
        """how(ob), timed; an internal failure reported as unknown, with why."""
        start = time.perf_counter()
        try:
            res = how(ob)
        except Exception as e:  # noqa: BLE001 - reported, not swallowed
            res = result(ob, "unknown", reason=f"internal error: {type(e).__name__}: {e}")
        return _timed(res, start)

    def _check(self, ob: Obligation) -> Result:
        if self._in_own_context(ob):
            with own_context() as ctx:
                return self._check_here(ob, ctx)
        return self._check_here(ob)

    def _check_here(self, ob: Obligation, ctx: z3.Context | None = None) -> Result:
        try:
            query = self.queries[ob.kind](ob)
        except Exception as e:  # an encoding limit is an unknown, never a crash of the whole run
            return _not_encodable(ob, e)
        try:
            answer = self._solve(query, ctx=ctx)
        except NotEncodable as e:  # the same, from a part built as it is asserted
            return _not_encodable(ob, e)
        return self._read(ob, query.reading, answer)

    def _climb(self, ob: Obligation) -> Result:
        """An unbounded inductive goal that QUICK_PASS left open up LADDER, until a rung settles it."""
        try:
            goal = self.build.inductive_goal(ob)
        except Unsupported as e:
            return self._each_size(ob, str(e))
        except Exception as e:  # as in _check
            return _not_encodable(ob, e)
        answer: Answer | None = None
        for rung in LADDER:
            if isinstance(rung, Rung) and rung.related:
                narrow = self._solve(self.build.inductive(ob, goal, rung.counts, self._related(ob)), rung.rlimit)
                if narrow.verdict == "unsat":
                    answer = narrow
                    break
            elif isinstance(rung, Rung):
                answer = self._solve(self.build.inductive(ob, goal, rung.counts), rung.rlimit)
                if answer.verdict in rung.settles:
                    break
            elif isinstance(rung, SmallCounterexample):
                if (cx := self.cex.finite_cti(ob, max_size=rung.size)) is not None:
                    return result(ob, "violated", counterexample=cx)
            else:
                assert answer is not None  # a rung with the whole goal comes first
                answer = self._by_clause(ob, answer)
        assert answer is not None
        return self._read(ob, self.build.validity(ob, None), answer)

    def _related(self, ob: Obligation) -> frozenset[str]:
        """The invariants that read a symbol ob's invariant reads (itself among them)."""
        assert ob.invariant is not None  # an inductive obligation names its invariant
        if (known := self._related_of.get(ob.invariant)) is not None:
            return known
        spec = self.spec
        goal = spec.reads(next(i.formula for i in spec.invariants if i.name == ob.invariant))
        out = self._related_of[ob.invariant] = frozenset(i.name for i in spec.invariants if spec.reads(i.formula) & goal)
        return out

    def _by_clause(self, ob: Obligation, whole: Answer) -> Answer:
        """Unsat for every clause is unsat for the whole, with the union of their cores; a clause
        satisfied is a counterexample; a clause left open leaves the whole goal's answer."""
        core: set[str] = set()
        for goal in self.build.clause_goals(ob):
            for rung in PER_CLAUSE:
                answer = self._solve(self.build.inductive(ob, goal, rung.counts), rung.rlimit)
                if answer.verdict == "unsat":
                    break
            if answer.verdict == "sat":
                return answer
            if answer.verdict != "unsat":
                return whole
            core |= answer.core
        return Answer("unsat", core=frozenset(core))

    def _each_size(self, ob: Obligation, why: str) -> Result:
        """A count without an exact unbounded delta: the obligation proved in every finite universe
        up to the bound instead. A finite enumeration of size n contains a copy of each smaller
        universe only for monotone formulas, so the sizes are checked one by one."""
        n = max(self.bound.values())
        finite = f"finite proof up to {n} per sort: no exact unbounded count delta for {why}"
        reading = replace(self.build.validity(ob, {s: n for s in self.bound}, finite),
                          unknown_context=f"; in the {finite}")  # what stopped it comes first
        core: set[str] = set()
        answer = Answer("unsat")
        for k in range(1, n + 1):
            try:  # as in _check
                with own_context() as ctx:  # a model found here is only printed (Counterexamples.cti)
                    answer = self._solve(self.build.inductive_finite(ob, {s: k for s in self.spec.sorts}, reading),
                                         ctx=ctx)
            except Exception as e:  # noqa: BLE001 - building this size's encoding, or NotEncodable
                return _not_encodable(ob, e)
            if answer.verdict == "unknown":
                answer = replace(answer, why=f"size {k}: {answer.why}")
            if answer.verdict != "unsat":
                break
            core |= answer.core
        else:
            answer = Answer("unsat", core=frozenset(core))
        return self._read(ob, reading, answer)

    # ---------------------------------------------------------------- the runner's groups
    def check_inits(self, obs: list[Obligation]) -> list[Result]:
        """The init obligations (never raising) on one incremental solver, as mypyvy checks them: the
        axioms, init and its count axioms asserted once, each goal pushed, checked and popped (a
        fresh solver per goal cost 7-19 ms on mypyvy's examples, most of it building the solver). As
        in check_action, the goals go through it in the spec's order up to the last one asked for. A
        goal not proved there takes the full path alone, so a violation or an unknown is reported as
        before."""
        if not obs:
            return []
        goals = _prefix([Obligation("init", invariant=i.name) for i in self.spec.invariants], obs)
        # Finite: encoded in the solver's context too (no datatypes into the prover's); unbounded:
        # encoded in the prover's context, solved in a new one.
        context = own_context if self.finite_n is not None else lambda: nullcontext(z3.Context())
        return self._shared_first(obs, goals, context, self._prove_inits)

    def _shared_first(self, obs: list[Obligation], goals: list[Obligation],
                      context: Callable[[], AbstractContextManager[z3.Context]],
                      shared: Callable[[list[Obligation], z3.Context], list[Result]]) -> list[Result]:
        """The goals on one shared solver (`shared`, in a context from `context`); each obligation
        of obs it did not settle checked alone, on the full path."""
        with use_context(self.ctx):
            try:
                with context() as ctx:
                    settled = {r.name: r for r in shared(goals, ctx)}
            except Exception:  # noqa: BLE001 - an encoding limit: each obligation alone says what it is
                settled = {}
            return [settled.get(ob.name) or self._guarded(ob, self._check) for ob in obs]

    def _prove_inits(self, obs: list[Obligation], ctx: z3.Context) -> list[Result]:
        """The init obligations proved on one solver in ctx (the rest are left to the full path)."""
        enc, st, shared = self.build.init_state()
        sv = own_solver(self.params(), ctx)
        assert_parts(sv, shared, {})
        out = []
        for ob in obs:
            start = time.perf_counter()
            answer = check_goal(sv, lambda: z3.Not(enc.invariant(ob.invariant, st)))  # type: ignore[arg-type]  # this obligation kind names its invariant
            if answer.verdict == "unsat":
                out.append(_timed(result(ob, "proved", bound=self.build.mode), start))
            if answer.verdict == "unknown":
                return out  # a solver stopped by its limit is not reused (_on_shared_solver says why)
        return out

    def check_action(self, obs: list[Obligation]) -> list[Result]:
        """The inductive obligations of one action (never raising). Unbounded, its goals first go
        through QUICK_PASS on incremental solvers, one per rung: the action's guards and the
        invariants before asserted once, each goal pushed, checked and popped (a fresh solver per
        goal took 2.3 times the CPU on the bundled spec). What they leave open climbs LADDER
        alone. A goal's answer on a shared solver depends on the goals checked before it there, so
        the action's goals go through QUICK_PASS in the spec's order from its first invariant to the
        last one asked for, whichever were asked for: an obligation gets the same answer alone, amid
        others, in any worker, and whatever the cache already held."""
        if self.finite_n is not None or not obs:
            return [self.check(ob) for ob in obs]
        action: str = obs[0].action  # type: ignore[assignment]  # inductive obligations name their action
        goals = [Obligation("inductive", action=action, invariant=i.name) for i in self.spec.invariants]
        proved: dict[str, Result] = {}
        for ob in goals:
            if (framed := self._framed(ob)) is not None:
                proved[ob.name] = framed
        goals = _prefix([ob for ob in goals if ob.name not in proved], obs)
        with use_context(self.ctx):
            try:
                # A context of its own for each rung that still has goals: a goal's answer on a
                # rung then depends only on the goals before it on that rung. With one context for
                # two rungs, the terms the goals after it left in the first rung changed what the
                # second found within its budget, so a goal asked alone (`--only`) and amid the
                # others got different answers (the bundled spec's sync_spte / guest_pt_protected).
                sat: set[tuple[str, bool]] = set()  # (goal, related) found satisfiable without the counts
                for rung in QUICK_PASS:
                    # sat is final for a set of hypotheses: more budget, or fewer hypotheses, gives sat again
                    tried = [ob for ob in goals if rung.counts or (ob.name, rung.related) not in sat]
                    if tried:
                        self._on_shared_solver(action, tried, rung, proved, z3.Context(), sat)
                    goals = [ob for ob in goals if ob.name not in proved]
                    if not goals:
                        break
            except Exception:  # noqa: BLE001 - each goal on its own (LADDER) says what it is
                pass
            return [proved.get(ob.name) or self._guarded(ob, self._climb) for ob in obs]

    def _on_shared_solver(self, action: str, obs: list[Obligation], rung: Rung, proved: dict[str, Result],
                          ctx: z3.Context, sat: set[tuple[str, bool]]) -> None:
        """Each goal on the action's solver for this rung (in ctx): the proved ones into `proved`,
        those satisfiable without the count axioms into `sat` (with whether only the related
        invariants were assumed; with all of them, with the related ones too)."""
        def fresh() -> tuple[z3.Solver, dict[str, str]]:
            sv = own_solver(self.params(rung.rlimit), ctx)
            return sv, assert_all(sv, self.build.action_state(action, rung.counts), assumed=rung.related)
        sv, names = fresh()
        for ob in obs:
            start = time.perf_counter()
            try:
                goal = self.build.inductive_goal(ob)
            except Unsupported:
                continue
            assume = [z3.Bool(f"assume:{n}", ctx) for n in sorted(self._related(ob))] if rung.related else []
            answer = check_goal(sv, lambda: goal, names, assume)
            if answer.verdict == "unknown":
                # A check stopped by the resource limit leaves Z3's incremental solver unfit for reuse:
                # checks after it on the same solver crashed the process (SIGSEGV in
                # Z3_solver_check_assumptions). The next goal gets a fresh solver.
                sv, names = fresh()
            if answer.verdict == "sat" and not rung.counts:
                sat |= {(ob.name, True)} | ({(ob.name, False)} if not rung.related else set())
            if answer.verdict == "unsat":
                proved[ob.name] = _timed(result(ob, "proved", core=sorted(answer.core)), start)

    def check_vacuity(self, obs: list[Obligation]) -> list[Result]:
        """The vacuity checks (never raising) on one incremental solver over the shared finite
        encoding: the axioms asserted once; init pushed and popped; then the invariants, whose model
        is the first witness tried for each action (its guard evaluated at every argument, no solver
        call), and only an action not enabled there gets a check of its own, its guard pushed and
        popped. (A fresh solver per check took 5.2 s on the bundled spec; this, 1.1 s.) As in
        check_action, the checks go through it in their listed order up to the last one asked for.
        A check not satisfied there takes the full path alone, so a dead action or an unknown is
        reported as before."""
        if not obs:
            return []
        goals = _prefix([ob for ob in list_obligations(self.spec) if ob.kind == "vacuity"], obs)
        return self._shared_first(obs, goals, own_context, self._witness_vacuity)

    def _witness_vacuity(self, obs: list[Obligation], ctx: z3.Context) -> list[Result]:
        """The vacuity checks satisfied on one solver in ctx (the rest are left to the full path)."""
        enc, st, invariants = self.build.vacuity_state()
        sv = own_solver(self.params(), ctx)
        assert_all(sv, [enc.axioms()])
        out = []

        def proved(ob: Obligation, start: float) -> None:
            out.append(_timed(result(ob, "proved", reason="witness found", bound=self.bound), start))
        for ob in [o for o in obs if o.invariant == "init"]:
            start = time.perf_counter()
            answer = check_goal(sv, lambda: enc.init(st))
            if answer.verdict == "sat":
                proved(ob, start)
            if answer.verdict == "unknown":
                return out  # a solver stopped by its limit is not reused (_on_shared_solver says why)
        rest = [o for o in obs if o.invariant != "init"]
        if not rest:
            return out
        start = time.perf_counter()
        assert_all(sv, invariants)
        state = check(sv)
        if state.verdict != "sat":
            return out  # no state satisfies the invariants: check() says so for each
        for ob in rest:
            if ob.action is None:
                proved(ob, start)
                continue
            start = time.perf_counter()
            act = self.spec.actions[ob.action]
            if any(p.type.args for p in act.params):
                # A choice parameter's check left its lemmas on the shared solver: every check after
                # it took longer (tlb_hit's 0.09 s became 5.6). It takes the full path alone.
                continue
            env = enc.param_consts(act)
            guard = enc.guards(act, st, env)
            if _enabled_in(state.model, guard, [(env[p.name], _domain(enc, p.type)) for p in act.params]):
                proved(ob, start)
                continue
            answer = check_goal(sv, lambda: guard)
            if answer.verdict == "sat":
                proved(ob, start)
            if answer.verdict == "unknown":
                return out  # a solver stopped by its limit is not reused (_on_shared_solver says why)
        return out


def _prefix(goals: list[Obligation], asked: list[Obligation]) -> list[Obligation]:
    """The goals of a shared solver, in order, up to the last one asked for."""
    names = {ob.name for ob in asked}
    return goals[: max((i for i, g in enumerate(goals) if g.name in names), default=-1) + 1]


# Argument tuples of an action tried in the invariants' model before a solver call of its own.
_MODEL_TRIES = 512


def _domain(enc: Encoding, t: A.TypeRef) -> list[z3.ExprRef] | None:
    """Every value of a parameter type in a finite encoding (None: not enumerable here)."""
    if t.optional or t.name == A.INT:
        return None
    if t.name == A.BOOL:
        return [z3.BoolVal(False), z3.BoolVal(True)]
    return enc.elements.get(t.name)


def _enabled_in(model: Any, guard: z3.BoolRef, params: list[tuple[z3.ExprRef, list[z3.ExprRef] | None]]) -> bool:
    """Some arguments (among the first _MODEL_TRIES) make the guard true in the model's state."""
    domains = [d for _, d in params if d is not None]
    if len(domains) < len(params):
        return False
    consts = [c for c, _ in params]
    for values in itertools.islice(itertools.product(*domains), _MODEL_TRIES):
        g = z3.substitute(guard, *zip(consts, values)) if consts else guard
        if z3.is_true(model.eval(g, model_completion=True)):
            return True
    return False
