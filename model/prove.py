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
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import z3

from dmmcheck.spec.checker import CheckedSpec

from .cex import (failing_conjunct, invariant_named, minimise_facts, prefer_first, show_immutable, show_mutable,
                  shrink_sizes)
from .counting import Counts, Unsupported
from .evaluate import blame
from .limits import BACKSTOP, COUNTS_RLIMIT, INCREMENTAL_QUICK_RLIMIT, QUICK_RLIMIT, RLIMIT
from .state import Universe
from .z3enc import Encoding, Updated, Vocab

SEED = 0
MAX_CTI_SIZE = 4
# Bump when the encoding changes in a way that could change a result: it invalidates the cache.
ENCODING_VERSION = "dmm-encoding/1"


@dataclass(frozen=True)
class Obligation:
    kind: str
    action: str | None = None
    invariant: str | None = None
    depth: int = 0

    @property
    def name(self) -> str:
        parts = [self.kind] + ([str(self.depth)] if self.depth else []) + [x for x in (self.action, self.invariant) if x]
        return "/".join(parts)


@dataclass
class Result:
    name: str
    kind: str
    action: str | None
    invariant: str | None
    status: str  # proved | violated | unknown
    seconds: float
    core: list[str] = field(default_factory=list)
    counterexample: dict[str, Any] | None = None
    reason: str = ""
    bound: dict[str, int] | None = None  # finite universe the result is about; None = unbounded
    cached: bool = False
    # A counterexample to induction: is it reachable from init? (reachable.py; None: not searched)
    reachability: dict[str, Any] | None = None
    # A reachability witness (witness.py): required, shape, depth, universe, and the run when found
    witness: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d


class Prover:
    def __init__(self, spec: CheckedSpec, *, finite: int | None = None, timeout: float = BACKSTOP,
                 seed: int = SEED, rlimit: int = RLIMIT) -> None:
        self.spec = spec
        self.timeout_ms = int(timeout * 1000)  # the wall-clock backstop
        self.rlimit = rlimit
        self.seed = seed
        self.finite_n = finite
        # Finite universe for bmc and vacuity (and for everything with --finite N).
        self.bound = {s: (finite or b or 2) for s, b in spec.sorts.items()}
        self.counts = Counts()
        self.unbounded = Encoding(spec, None, count_hook=self.counts.hook) if finite is None else None
        if self.unbounded is not None:
            # Register every count term up front, so each obligation's count axioms (and its cache
            # key) do not depend on which obligations ran before it in this process.
            enc = self.unbounded
            probe = enc.vocab("probe")
            for inv in spec.invariants:
                enc.invariant(inv.name, probe)
            # What every inductive obligation shares, encoded once, in a fixed order.
            enc.reset_fresh(0)
            self.pre = enc.vocab("0")
            self.pre_invariants = {i.name: enc.invariant(i.name, self.pre) for i in spec.invariants}
            self.pre_count_axioms = self.counts.axioms(enc, self.pre)
            self.axiom_formula = enc.axioms()
            self.action_parts: dict[str, tuple[dict, z3.BoolRef]] = {}
            for n, act in spec.actions.items():
                env = enc.param_consts(act)
                self.action_parts[n] = (env, enc.guards(act, self.pre, env))

    # ---------------------------------------------------------------- obligations
    def obligations(self, bmc: int = 0, kinduction: int = 0) -> list[Obligation]:
        return self.list_obligations(self.spec, bmc, kinduction)

    @staticmethod
    def list_obligations(spec: CheckedSpec, bmc: int = 0, kinduction: int = 0) -> list[Obligation]:
        obs = [Obligation("vacuity", invariant="init"), Obligation("vacuity", invariant="invariants")]
        obs += [Obligation("vacuity", action=a) for a in spec.actions]
        obs += [Obligation("init", invariant=i.name) for i in spec.invariants]
        obs += [Obligation("inductive", action=a, invariant=i.name)
                for a in spec.actions for i in spec.invariants]
        if bmc:
            obs += [Obligation("bmc", invariant=i.name, depth=bmc) for i in spec.invariants]
        if kinduction:
            obs.append(Obligation("kinduction", invariant="base", depth=kinduction))
            obs += [Obligation("kinduction", invariant=i.name, depth=kinduction) for i in spec.invariants]
        return obs

    def solver(self) -> z3.Solver:
        sv = _Solver()
        sv.set(timeout=self.timeout_ms, rlimit=self.rlimit, random_seed=self.seed, unsat_core=True)
        return sv

    def check(self, ob: Obligation, cache: "Cache | None" = None) -> Result:
        """One obligation, never raising: an internal failure is reported as unknown, with why."""
        start = time.perf_counter()
        try:
            return self._check(ob, cache)
        except Exception as e:  # noqa: BLE001 - reported, not swallowed
            return Result(ob.name, ob.kind, ob.action, ob.invariant, "unknown", time.perf_counter() - start,
                          reason=f"internal error: {type(e).__name__}: {e}")

    def _check(self, ob: Obligation, cache: "Cache | None" = None) -> Result:
        start = time.perf_counter()
        key = None
        if cache:
            key = cache.key(self.fingerprint(ob))
            if (hit := cache.get(key, ob.name)) is not None:
                hit.cached = True
                hit.seconds = time.perf_counter() - start
                return hit
        try:
            built = getattr(self, f"_build_{ob.kind}")(ob)
        except Exception as e:  # an encoding limit is an unknown, never a crash of the whole run
            return Result(ob.name, ob.kind, ob.action, ob.invariant, "unknown", time.perf_counter() - start,
                          reason=f"could not encode: {e}")
        sv, tracked, interpret, bound = built
        quick = ob.kind == "inductive" and self.finite_n is None and bound is None
        if quick:  # first without count axioms, briefly: most goals need none (see below)
            sv.set(rlimit=min(self.rlimit, QUICK_RLIMIT))
        r = sv.check()
        if r != z3.unsat and quick:
            # Z3 rarely builds a model for these quantified formulas, but a finite universe is a real
            # model: a counterexample found there is a genuine counterexample to induction.
            cx = self._finite_cti(ob, max_size=2)
            if cx is not None:
                res = self._result(ob, "violated", counterexample=cx)
                res.seconds = time.perf_counter() - start
                if cache and key:
                    cache.put(key, res)
                return res
            # None in small universes: now with the count axioms (true facts, so leaving them out was
            # sound for a proof; they slow down goals that do not need them), then clause by clause.
            sv, tracked, interpret, bound = self._build_inductive(ob, with_counts=True)
            r = sv.check()
            if r == z3.unknown:
                r = self._check_by_clause(ob, sv)
        res = interpret(sv, r, tracked)
        res.seconds = time.perf_counter() - start
        res.bound = bound
        if cache and key and res.status != "unknown":
            cache.put(key, res)
        return res

    def fingerprint(self, ob: Obligation) -> str:
        return self.fingerprint_of(self.spec, ob, self.finite_n, self.rlimit, self.seed)

    @staticmethod
    def fingerprint_of(spec: CheckedSpec, ob: Obligation, finite: int | None, rlimit: int = RLIMIT,
                       seed: int = SEED) -> str:
        """Everything an obligation's result depends on, as text: the resolved declarations, init,
        axioms and invariants, its own action (not the others), the encoding and solver settings."""
        base, per_action, all_actions = _spec_digests(spec)
        bound = sorted((s, finite or b or 2) for s, b in spec.sorts.items())
        parts = [ENCODING_VERSION, z3.get_version_string(), ob.name, str(ob.depth),
                 f"rlimit={rlimit} seed={seed} finite={finite} bound={bound}", base]
        if ob.action:
            parts.append(per_action[ob.action])
        elif ob.kind in ("bmc", "kinduction", "vacuity"):
            parts.append(all_actions)
        return "\n".join(parts)

    # ---------------------------------------------------------------- builders
    def _result(self, ob: Obligation, status: str, **kw: Any) -> Result:
        return Result(ob.name, ob.kind, ob.action, ob.invariant, status, 0.0, **kw)

    def _track(self, sv: z3.Solver, enc: Encoding, st: Vocab) -> dict[str, str]:
        """Assert every invariant on st under a tracking literal; returns literal -> invariant."""
        return _assume(sv, {inv.name: enc.invariant(inv.name, st) for inv in self.spec.invariants})

    def _unsat_is_proof(self, ob: Obligation, finite_note: str = ""):
        def interpret(sv: z3.Solver, r: z3.CheckSatResult, tracked: dict[str, str]) -> Result:
            if r == z3.unsat:
                core = sorted({tracked[str(c)] for c in sv.unsat_core() if str(c) in tracked})
                return self._result(ob, "proved", core=core, reason=finite_note)
            if r == z3.sat:
                return self._result(ob, "violated", counterexample=self._cti(ob, sv.model()), reason=finite_note)
            return self._result(ob, "unknown", reason=self.why_unknown(sv))
        return interpret

    def _encoding(self, finite: dict[str, int] | None) -> Encoding:
        if finite is None:
            assert self.unbounded is not None
            return self.unbounded
        return Encoding(self.spec, finite)

    def _mode(self) -> dict[str, int] | None:
        return None if self.finite_n is None else self.bound

    def _build_init(self, ob: Obligation):
        enc = self._encoding(self._mode())
        st = enc.vocab("0")
        sv = self.solver()
        goal = z3.Not(enc.invariant(ob.invariant, st))  # type: ignore[arg-type]  # this obligation kind names its invariant
        sv.add(enc.axioms(), enc.init(st), goal)
        self._add_count_axioms(sv, enc, [st])
        return sv, {}, self._unsat_is_proof(ob), self._mode()

    def _build_inductive(self, ob: Obligation, with_counts: bool = False):
        mode = self._mode()
        if mode is not None:
            return self._build_inductive_finite(ob)
        enc = self._encoding(None)
        act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
        env, guards = self.action_parts[act.name]
        post = Updated(enc, self.pre, act, env)
        enc.reset_fresh(1_000_000)
        try:
            goal = z3.Not(enc.invariant(ob.invariant, post))  # type: ignore[arg-type]  # this obligation kind names its invariant
        except Unsupported as e:
            return self._finite_fallback(ob, [str(e)])
        sv = self.solver()
        sv.add(self.axiom_formula, guards, goal)
        if with_counts:
            sv.add(*self.pre_count_axioms)
        tracked = _assume(sv, self.pre_invariants)
        return sv, tracked, self._unsat_is_proof(ob), None

    def _build_inductive_finite(self, ob: Obligation):
        enc = self._encoding(self.bound)
        pre = enc.vocab("0")
        act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
        env = enc.param_consts(act)
        post = Updated(enc, pre, act, env)
        sv = self.solver()
        sv.add(enc.axioms(), enc.guards(act, pre, env), z3.Not(enc.invariant(ob.invariant, post)))  # type: ignore[arg-type]  # this obligation kind names its invariant
        tracked = self._track(sv, enc, pre)
        return sv, tracked, self._unsat_is_proof(ob), self.bound

    def _finite_fallback(self, ob: Obligation, why: list[str]):
        """Prove the obligation in every finite universe up to the bound instead."""
        n = max(self.bound.values())
        sizes = {s: n for s in self.bound}
        sub = Prover(self.spec, finite=n, timeout=self.timeout_ms / 1000, seed=self.seed, rlimit=self.rlimit)
        sv, tracked, interpret, _ = sub._build_inductive(ob)

        def interpret2(sv2: z3.Solver, r: z3.CheckSatResult, tr: dict[str, str]) -> Result:
            res = interpret(sv2, r, tr)
            finite = f"finite proof up to {n} per sort: no exact unbounded count delta for {', '.join(why)}"
            # an unknown keeps what stopped it (the resource limit, the backstop) first
            res.reason = f"{res.reason}; in the {finite}" if res.status == "unknown" and res.reason else finite
            return res
        # Universe sizes 1..n all at once: every sort's elements beyond its size are unused; a finite
        # enumeration of size n contains a copy of each smaller universe only for monotone formulas,
        # so the sizes are checked one by one.
        return _SizesSolver(self, ob, n), tracked, interpret2, sizes

    def _add_count_axioms(self, sv: z3.Solver, enc: Encoding, states: list[Vocab]) -> None:
        if enc.finite is None:
            for st in states:
                sv.add(*self.counts.axioms(enc, st))

    def _finite_shared(self) -> tuple[Encoding, Vocab, list[z3.BoolRef]]:
        """One finite encoding per process for the vacuity checks, with the invariants encoded once."""
        if not hasattr(self, "_finite_cache"):
            enc = Encoding(self.spec, self.bound)
            st = enc.vocab("0")
            self._finite_cache = (enc, st, [enc.invariant(i.name, st) for i in self.spec.invariants])
        return self._finite_cache

    def _build_vacuity(self, ob: Obligation):
        enc, st, invariants = self._finite_shared()
        sv = self.solver()
        sv.add(enc.axioms())
        if ob.invariant == "init":
            sv.add(enc.init(st))
            what = "init is unsatisfiable: the spec has no initial state"
        elif ob.invariant == "invariants":
            sv.add(*invariants)
            what = "the invariants together are unsatisfiable"
        else:
            act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
            sv.add(*invariants)
            sv.add(enc.guards(act, st, enc.param_consts(act)))
            what = f"dead action: {ob.action} is enabled in no state satisfying the invariants"

        def interpret(sv: z3.Solver, r: z3.CheckSatResult, tracked: dict[str, str]) -> Result:
            if r == z3.sat:
                return self._result(ob, "proved", reason="witness found")
            if r == z3.unsat:
                return self._result(ob, "violated", reason=what + f" (universe {_sizes(self.bound)})")
            return self._result(ob, "unknown", reason=self.why_unknown(sv))
        return sv, {}, interpret, self.bound

    def _build_bmc(self, ob: Obligation):
        enc = self._encoding(self.bound)
        k = ob.depth
        states = [enc.vocab(str(i)) for i in range(k + 1)]
        list(self.spec.actions)
        sels = [z3.Int(f"step{i}") for i in range(k)]
        base = self.solver()
        base.add(enc.axioms(), enc.init(states[0]))
        bmc = _DeepeningSolver(base, enc, self.spec, states, sels, ob.invariant)  # type: ignore[arg-type]  # this obligation kind names its invariant

        def interpret(sv, r: z3.CheckSatResult, tracked: dict[str, str]) -> Result:
            if r == z3.unsat:
                return self._result(ob, "proved", reason=f"no violation within {k} steps (universe {_sizes(self.bound)})")
            if r == z3.sat:
                return self._result(ob, "violated", counterexample=self._bmc_trace(ob, sv.model(), enc,
                                                                                  states[: sv.depth + 1], sels))
            return self._result(ob, "unknown", reason=self.why_unknown(sv))
        return bmc, {}, interpret, self.bound

    def _build_kinduction(self, ob: Obligation):
        if ob.invariant == "base":
            return self._build_kbase(ob)
        mode = self._mode()
        enc = self._encoding(mode)
        k = ob.depth
        states = [enc.vocab(str(i)) for i in range(k + 1)]
        sv = self.solver()
        sv.add(enc.axioms())
        tracked = {}
        tracked = self._track(sv, enc, states[0])
        for st in states[1:k]:
            sv.add(*[enc.invariant(inv.name, st) for inv in self.spec.invariants])
        missing = self._transitions(enc, states, sv)
        if missing is not None:
            return self._finite_fallback(Obligation("inductive", None, ob.invariant), [missing])
        self._add_count_axioms(sv, enc, states)
        sv.add(z3.Not(enc.invariant(ob.invariant, states[k])))  # type: ignore[arg-type]  # this obligation kind names its invariant
        return sv, tracked, self._unsat_is_proof(ob, f"step case at depth {k}"), mode

    def _transitions(self, enc: Encoding, states: list[Vocab], sv: z3.Solver) -> str | None:
        """Assert some action between each pair of consecutive states; a count term without an
        exact delta is returned (the caller falls back)."""
        for i in range(len(states) - 1):
            ors = []
            for act in self.spec.actions.values():
                env = enc.param_consts(act, tag=f"@{i}")
                parts = [enc.transition(act, states[i], states[i + 1], env)]
                if enc.finite is None:
                    steps, unsupported = self.counts.step(enc, act, states[i], states[i + 1], env)
                    if unsupported:
                        return unsupported[0]
                    parts += steps
                ors.append(z3.And(parts))
            sv.add(z3.Or(ors))
        return None

    def _build_kbase(self, ob: Obligation):
        """The base case of k-induction: every invariant holds in the first k states of every run."""
        mode = self._mode()
        enc = self._encoding(mode)
        k = ob.depth
        states = [enc.vocab(f"b{i}") for i in range(k)]
        sv = self.solver()
        sv.add(enc.axioms(), enc.init(states[0]))
        missing = self._transitions(enc, states, sv)
        if missing is not None:
            raise ValueError(f"no exact unbounded count delta for {missing}; use --finite N")
        self._add_count_axioms(sv, enc, states)
        sv.add(z3.Or([z3.Not(enc.invariant(i.name, st)) for st in states for i in self.spec.invariants]))
        return sv, {}, self._unsat_is_proof(ob, f"base case: every invariant in the first {k} states"), mode

    def check_inits(self, obs: list[Obligation], cache: "Cache | None" = None) -> list[Result]:
        """The init obligations on one incremental solver, as mypyvy checks them: the axioms, init and
        its count axioms asserted once, each goal pushed, checked and popped (a fresh solver per goal
        cost 7-19 ms on mypyvy's examples, most of it building the solver). A goal not proved there
        takes the full path of check(), on a solver of its own, so a violation or an unknown is
        reported as before."""
        return self._shared_then_alone(obs, cache, self._prove_inits)

    def check_vacuity(self, obs: list[Obligation], cache: "Cache | None" = None) -> list[Result]:
        """The vacuity checks on one incremental solver over the shared finite encoding: the axioms
        asserted once; init pushed and popped; then the invariants, whose model is the first witness
        tried for each action (its guard evaluated at every argument, no solver call), and only an
        action not enabled there gets a check of its own, its guard pushed and popped. (A fresh solver
        per check took 5.2 s on the bundled spec; this, 1.1 s.) A check not satisfied there takes the
        full path of check(), so a dead action or an unknown is reported as before."""
        return self._shared_then_alone(obs, cache, self._witness_vacuity)

    def _shared_then_alone(self, obs: list[Obligation], cache: "Cache | None", shared) -> list[Result]:
        """Cache hits, then what `shared` settles on one solver (into results), then each obligation
        left on the full path of check()."""
        results: dict[str, Result] = {}
        keys: dict[str, str] = {}
        pending = []
        for ob in obs:
            if cache:
                keys[ob.name] = cache.key(self.fingerprint(ob))
                if (hit := cache.get(keys[ob.name], ob.name)) is not None:
                    hit.cached = True
                    results[ob.name] = hit
                    continue
            pending.append(ob)
        if pending:
            try:
                settled = shared(pending)
            except Exception:  # noqa: BLE001 - an encoding limit: each obligation alone says what it is
                settled = []
            for res in settled:
                if cache:
                    cache.put(keys[res.name], res)
                results[res.name] = res
        for ob in pending:
            if ob.name not in results:
                results[ob.name] = self.check(ob, cache)
        return [results[ob.name] for ob in obs]

    def _witness_vacuity(self, obs: list[Obligation]) -> list[Result]:
        """The vacuity checks satisfied on one solver (the rest are left to check())."""
        enc, st, invariants = self._finite_shared()
        sv = self.solver()
        sv.add(enc.axioms())
        out = []

        def proved(ob: Obligation, start: float) -> None:
            res = self._result(ob, "proved", reason="witness found", bound=self.bound)
            res.seconds = time.perf_counter() - start
            out.append(res)
        for ob in [o for o in obs if o.invariant == "init"]:
            start = time.perf_counter()
            sv.push()
            sv.add(enc.init(st))
            r = sv.check()
            if r == z3.sat:
                proved(ob, start)
            sv.pop()
            if r == z3.unknown:
                return out  # a solver stopped by its limit is not reused (check_action says why)
        rest = [o for o in obs if o.invariant != "init"]
        if not rest:
            return out
        start = time.perf_counter()
        sv.add(*invariants)
        if sv.check() != z3.sat:
            return out  # no state satisfies the invariants: check() says so for each
        model = sv.model()
        for ob in rest:
            if ob.action is None:
                proved(ob, start)
                continue
            start = time.perf_counter()
            act = self.spec.actions[ob.action]
            env = enc.param_consts(act)
            guard = enc.guards(act, st, env)
            if _enabled_in(model, guard, [(env[p.name], _domain(enc, p.type)) for p in act.params]):
                proved(ob, start)
                continue
            sv.push()
            sv.add(guard)
            r = sv.check()
            if r == z3.sat:
                proved(ob, start)
            sv.pop()
            if r == z3.unknown:
                return out  # a solver stopped by its limit is not reused (check_action says why)
        return out

    def _prove_inits(self, obs: list[Obligation]) -> list[Result]:
        """The init obligations proved on one solver (the rest are left to check())."""
        mode = self._mode()
        enc = self._encoding(mode)
        st = enc.vocab("0")
        sv = self.solver()
        sv.add(enc.axioms(), enc.init(st))
        self._add_count_axioms(sv, enc, [st])
        out = []
        for ob in obs:
            start = time.perf_counter()
            sv.push()
            sv.add(z3.Not(enc.invariant(ob.invariant, st)))  # type: ignore[arg-type]  # this obligation kind names its invariant
            r = sv.check()
            if r == z3.unsat:
                res = self._result(ob, "proved", bound=mode)
                res.seconds = time.perf_counter() - start
                out.append(res)
            sv.pop()
            if r == z3.unknown:
                return out  # a solver stopped by its limit is not reused (check_action says why)
        return out

    def check_action(self, obs: list[Obligation], cache: "Cache | None" = None) -> list[Result]:
        """The inductive obligations of one action, on incremental solvers: the action's guards and
        the pre-state invariants are asserted once, each goal is pushed, checked and popped. A first
        pass leaves out the count axioms (true facts, so leaving them out is sound for a proof; they
        slow down goals that do not need them), a second pass has them; what neither proves takes
        the full path of check() (finite counterexample search, clause by clause)."""
        if self.finite_n is not None or not obs:
            return [self.check(ob, cache) for ob in obs]
        act = self.spec.actions[obs[0].action]  # type: ignore[index]  # inductive obligations name their action
        enc = self._encoding(None)
        env, guards = self.action_parts[act.name]
        results: dict[str, Result] = {}
        keys: dict[str, str] = {}
        pending = []
        for ob in obs:
            if cache:
                keys[ob.name] = cache.key(self.fingerprint(ob))
                if (hit := cache.get(keys[ob.name], ob.name)) is not None:
                    hit.cached = True
                    results[ob.name] = hit
                    continue
            pending.append(ob)
        for with_counts in (False, True):
            if not pending:
                break

            def shared() -> tuple[z3.Solver, dict[str, str]]:
                sv = self.solver()
                sv.set(rlimit=min(self.rlimit, COUNTS_RLIMIT if with_counts else INCREMENTAL_QUICK_RLIMIT))
                sv.add(self.axiom_formula, guards, *(self.pre_count_axioms if with_counts else ()))
                return sv, _assume(sv, self.pre_invariants)
            sv, tracked = shared()
            left = []
            for ob in pending:
                start = time.perf_counter()
                try:
                    enc.reset_fresh(1_000_000)
                    goal = z3.Not(enc.invariant(ob.invariant, Updated(enc, self.pre, act, env)))  # type: ignore[arg-type]  # this obligation kind names its invariant
                except Unsupported:
                    left.append(ob)
                    continue
                sv.push()
                sv.add(goal)
                r = sv.check()
                core = sorted({tracked[str(c)] for c in sv.unsat_core() if str(c) in tracked}) if r == z3.unsat else []
                sv.pop()
                if r == z3.unknown:
                    # A check stopped by the resource limit leaves Z3's incremental solver unfit for reuse:
                    # checks after it on the same solver crashed the process (SIGSEGV in
                    # Z3_solver_check_assumptions). The next goal gets a fresh solver.
                    sv, tracked = shared()
                if r != z3.unsat:
                    left.append(ob)
                    continue
                res = self._result(ob, "proved", core=core)
                res.seconds = time.perf_counter() - start
                if cache:
                    cache.put(keys[ob.name], res)
                results[ob.name] = res
            pending = left
        for ob in pending:
            results[ob.name] = self.check(ob, cache)
        return [results[ob.name] for ob in obs]

    def _check_by_clause(self, ob: Obligation, sv: z3.Solver) -> z3.CheckSatResult:
        """An unknown whole goal, retried one conjunct (under its quantifiers) at a time: smaller
        queries, and unsat for each clause is unsat for the whole. The solver keeps the union of the
        clauses' cores for the report."""
        from dmmcheck.spec import ast as A

        from .incremental import clauses

        enc = self._encoding(None)
        act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
        env, guards = self.action_parts[act.name]
        inv = next(i for i in self.spec.invariants if i.name == ob.invariant)
        cores: list[z3.ExprRef] = []
        for n, (vs, body) in enumerate(clauses(inv.formula)):
            enc.reset_fresh(2_000_000 + 1000 * n)
            post = Updated(enc, self.pre, act, env)
            clause = A.Quant("forall", vs, body) if vs else body
            goal = z3.Not(enc.expr(clause, post, {}))
            for with_counts in (False, True):
                sub = self.solver()
                sub.add(self.axiom_formula, guards, goal, *(self.pre_count_axioms if with_counts else ()))
                _assume(sub, self.pre_invariants)
                r = sub.check()
                if r == z3.unsat:
                    break
            if r != z3.unsat:
                return r
            cores += list(sub.unsat_core())
        sv.unsat_core = lambda: cores
        return z3.unsat

    def why_unknown(self, sv: Any) -> str:
        """Which limit stopped the solver, in the user's terms."""
        why = sv.reason_unknown() or "unknown"
        # Z3 says "canceled" for both limits: the backstop's only if the check ran that long.
        if getattr(sv, "seconds", 0.0) >= 0.9 * self.timeout_ms / 1000:
            return f"wall-clock backstop reached (--timeout {self.timeout_ms / 1000:g} s)"
        where, _, base = why.rpartition(": ")  # a finite proof's solver names the universe size first
        if "resource" in base or base in ("canceled", "timeout"):
            return f"resource limit reached (--rlimit {self.rlimit})" + (f" at {where}" if where else "")
        return why

    # ---------------------------------------------------------------- counterexamples
    def _cti(self, ob: Obligation, model: z3.ModelRef) -> dict[str, Any]:
        """The smallest finite counterexample to induction: re-solve in universes of size 1, 2, ..."""
        if ob.kind != "inductive":
            return {"model": str(model)[:2000]}
        return self._finite_cti(ob) or {"note": f"no counterexample in universes up to size {MAX_CTI_SIZE}",
                                        "model": str(model)[:2000]}

    def _finite_cti(self, ob: Obligation, max_size: int = MAX_CTI_SIZE) -> dict[str, Any] | None:
        """The smallest uniform size with a counterexample, then each sort shrunk in turn and the
        facts minimised (cex.py), so the counterexample shows only what the failure needs."""
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

    def _cti_solver(self, ob: Obligation, sizes: dict[str, int]):
        enc = Encoding(self.spec, sizes)
        pre, post = enc.vocab("0"), enc.vocab("1")
        act = self.spec.actions[ob.action]  # type: ignore[index]  # this obligation kind names its action
        env = enc.param_consts(act)
        sv = self.solver()
        sv.add(enc.axioms(), enc.transition(act, pre, post, env), z3.Not(enc.invariant(ob.invariant, post)))  # type: ignore[arg-type]  # this obligation kind names its invariant
        sv.add(*[enc.invariant(i.name, pre) for i in self.spec.invariants])
        return sv, enc, pre, post, env

    def _show_cti(self, ob, model, enc, sizes, pre, post, env) -> dict[str, Any]:
        u = Universe(self.spec, sizes)
        before, after = _read_state(u, enc, model, pre), _read_state(u, enc, model, post)
        act = self.spec.actions[ob.action]
        args = {p.name: u.show_value(p.type, _read_value(enc, p.type, model.eval(env[p.name], True)))
                for p in act.params}
        inv = invariant_named(self.spec, ob.invariant)
        b = blame(u, after, inv.formula)
        part = failing_conjunct(u, after, inv)
        return {"universe": sizes, "action": ob.action, "args": args,
                "blame": str(b), "conjunct": part.to_json() if part else None,
                "before": u.to_dict(before), "after": u.to_dict(after),
                "immutable_text": show_immutable(u, before),
                "before_text": show_mutable(u, before), "after_text": show_mutable(u, after)}

    def _bmc_trace(self, ob, model, enc, states, sels) -> dict[str, Any]:
        u = Universe(self.spec, self.bound)
        names = list(self.spec.actions)
        steps = []
        trace_states = [_read_state(u, enc, model, st) for st in states]
        first_bad = next((i for i, s in enumerate(trace_states)
                          if not _holds(u, s, self.spec, ob.invariant)), len(trace_states) - 1)
        for i in range(first_bad):
            n = names[model.eval(sels[i], True).as_long()]
            act = self.spec.actions[n]
            env = enc.param_consts(act, tag=f"@{i}")
            args = {p.name: u.show_value(p.type, _read_value(enc, p.type, model.eval(env[p.name], True)))
                    for p in act.params}
            steps.append({"action": n, "args": args})
        inv = invariant_named(self.spec, ob.invariant)
        bad = trace_states[first_bad]
        part = failing_conjunct(u, bad, inv)
        return {"universe": self.bound, "steps": steps,
                "blame": str(blame(u, bad, inv.formula)), "conjunct": part.to_json() if part else None,
                "immutable_text": show_immutable(u, bad), "state_text": show_mutable(u, bad)}


# Argument tuples of an action tried in the invariants' model before a solver call of its own.
_MODEL_TRIES = 512


def _domain(enc: Encoding, t) -> list[z3.ExprRef] | None:
    """Every value of a parameter type in a finite encoding (None: not enumerable here)."""
    from dmmcheck.spec import ast as A

    if t.optional or t.name == A.INT:
        return None
    if t.name == A.BOOL:
        return [z3.BoolVal(False), z3.BoolVal(True)]
    return enc.elements.get(t.name)


def _enabled_in(model: z3.ModelRef, guard: z3.BoolRef, params: list[tuple[z3.ExprRef, list | None]]) -> bool:
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


def _assume(sv: z3.Solver, invariants: dict[str, z3.BoolRef]) -> dict[str, str]:
    """Assert each invariant under its own tracking literal, so an unsat core names the ones a
    proof used; returns literal -> invariant name."""
    tracked = {}
    for name, f in invariants.items():
        lit = z3.Bool(f"assume:{name}")
        sv.assert_and_track(f, lit)
        tracked[str(lit)] = name
    return tracked


_DIGESTS: dict[int, tuple[CheckedSpec, str, dict[str, str], str]] = {}


def _spec_digests(spec: CheckedSpec) -> tuple[str, dict[str, str], str]:
    """Hashes of the spec's parts, computed once per checked spec."""
    hit = _DIGESTS.get(id(spec))
    if hit is None or hit[0] is not spec:
        def h(x: object) -> str:
            return hashlib.sha256(repr(x).encode()).hexdigest()

        base = h((sorted(spec.sorts.items()), sorted(spec.enums.items()),
                  [(s.name, s.kind, s.args, s.result, s.mutable) for s in spec.symbols.values()],
                  [(i.name, i.formula) for i in spec.invariants], [(a.name, a.formula) for a in spec.axioms],
                  (spec.init.updates, spec.init.guards) if spec.init else None))
        per_action = {n: h((a.params, a.guards, a.updates)) for n, a in spec.actions.items()}
        hit = (spec, base, per_action, h(sorted(per_action.items())))
        _DIGESTS[id(spec)] = hit
    return hit[1], hit[2], hit[3]


class _Solver(z3.Solver):
    """A solver that records how long its last check took."""

    seconds = 0.0

    def check(self, *assumptions: Any) -> z3.CheckSatResult:
        t = time.perf_counter()
        try:
            return super().check(*assumptions)
        finally:
            self.seconds = time.perf_counter() - t


def _holds(u: Universe, s, spec: CheckedSpec, name: str | None) -> bool:
    from .evaluate import evaluate

    inv = next(i for i in spec.invariants if i.name == name)
    return bool(evaluate(u, s, inv.formula, {}))


class _DeepeningSolver:
    """BMC by iterative deepening on one incremental solver: the violation is looked for after 0, 1,
    2, ... steps, so the first one found has a shortest trace."""

    def __init__(self, sv: z3.Solver, enc: Encoding, spec: CheckedSpec, states: list[Vocab],
                 sels: list[z3.ArithRef], invariant: str) -> None:
        self.sv, self.enc, self.spec, self.states, self.sels, self.invariant = sv, enc, spec, states, sels, invariant
        self.depth = 0

    def sexpr(self) -> str:
        return self.sv.sexpr()

    def set(self, **kw: Any) -> None:
        self.sv.set(**kw)

    def check(self) -> z3.CheckSatResult:
        names = list(self.spec.actions)
        for d in range(len(self.states)):
            if d > 0:
                i = d - 1
                self.sv.add(self.sels[i] >= 0, self.sels[i] < len(names))
                for j, n in enumerate(names):
                    act = self.spec.actions[n]
                    env = self.enc.param_consts(act, tag=f"@{i}")
                    self.sv.add(z3.Implies(self.sels[i] == j, self.enc.transition(act, self.states[i], self.states[d], env)))
            self.sv.push()
            self.sv.add(z3.Not(self.enc.invariant(self.invariant, self.states[d])))
            r = self.sv.check()
            if r == z3.sat:
                self.depth = d
                self._model = self.sv.model()
                return r
            self.sv.pop()
            if r != z3.unsat:
                return r
        return z3.unsat

    def model(self) -> z3.ModelRef:
        return self._model

    def reason_unknown(self) -> str:
        return self.sv.reason_unknown()


class _SizesSolver:
    """Checks a finite obligation in every universe size 1..n; sat at any size is a violation."""

    def __init__(self, prover: Prover, ob: Obligation, n: int) -> None:
        self.prover, self.ob, self.n = prover, ob, n
        self._core: list[z3.ExprRef] = []
        self._model: z3.ModelRef | None = None
        self._reason = ""

    def sexpr(self) -> str:
        return f"sizes-solver {self.ob.name} up to {self.n}"

    def check(self) -> z3.CheckSatResult:
        cores = []
        for k in range(1, self.n + 1):
            sub = Prover(self.prover.spec, finite=k, timeout=self.prover.timeout_ms / 1000, seed=self.prover.seed,
                         rlimit=self.prover.rlimit)
            sv, tracked, _, _ = sub._build_inductive(self.ob)
            r = sv.check()
            if r == z3.sat:
                self._model = sv.model()
                return r
            if r != z3.unsat:
                self._reason = f"size {k}: {sv.reason_unknown()}"
                return r
            cores += list(sv.unsat_core())
        self._core = cores
        return z3.unsat

    def unsat_core(self) -> list[z3.ExprRef]:
        return self._core

    def model(self) -> z3.ModelRef:
        assert self._model is not None
        return self._model

    def reason_unknown(self) -> str:
        return self._reason


def _read_value(enc: Encoding, t, v: z3.ExprRef) -> Any:
    from dmmcheck.spec import ast as A

    if t.optional:
        opt = enc.option(t.name)
        if v.decl().eq(opt.constructor(0)):
            return None
        return _read_value(enc, A.TypeRef(t.name), v.arg(0))
    if t.name == A.BOOL:
        return z3.is_true(v)
    if t.name == A.INT:
        return v.as_long()
    elems = enc.elements[t.name]
    return next(i for i, e in enumerate(elems) if z3.eq(e, v))


def _read_state(u: Universe, enc: Encoding, model: z3.ModelRef, st: Vocab) -> tuple:
    entries = []
    for name, lay in u.layout.items():
        sym = lay.symbol
        vals = []
        for point in u.points(name):
            args = [enc.value(t, a) for t, a in zip(sym.args, point)]
            vals.append(_read_value(enc, sym.result, model.eval(st.app(name, args), True)))
        entries.append(tuple(vals))
    return tuple(entries)


def _sizes(bound: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in bound.items())


class Cache:
    """Results by a hash of the obligation's solver input, the Z3 version and the solver settings."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root or os.environ.get("DMM_CACHE_DIR") or ".dmm-cache") / "prove"

    def key(self, fingerprint: str) -> str:
        return hashlib.sha256(fingerprint.encode()).hexdigest()

    def get(self, key: str, name: str | None = None) -> Result | None:
        """The cached answer, only if the entry says what it answers (this key, this obligation),
        its checksum holds, and it is proved or violated; anything else is a miss."""
        p = self.root / f"{key}.json"
        try:
            entry = json.loads(p.read_text())
            if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("result"), dict):
                return None
            if entry.get("checksum") != _checksum(key, entry["result"]):
                return None
            res = Result(**entry["result"])
        except (OSError, ValueError, TypeError, UnicodeDecodeError):
            return None
        if res.status not in ("proved", "violated") or (name is not None and res.name != name):
            return None
        return res

    def put(self, key: str, res: Result) -> None:
        if res.status not in ("proved", "violated"):
            return  # an unknown is never an answer to keep
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{key}.{os.getpid()}"
            body = res.to_json()
            tmp.write_text(json.dumps({"key": key, "checksum": _checksum(key, body), "result": body}))
            tmp.replace(self.root / f"{key}.json")
        except OSError:
            pass  # a read-only cache only costs speed


def _checksum(key: str, body: dict) -> str:
    return hashlib.sha256((key + json.dumps(body, sort_keys=True)).encode()).hexdigest()
