"""Gap filling: what a campaign never exercised, driven on purpose with a witness from the prover.

A campaign's result says which spec actions the implementation performed (coverage) and, for each
operation drawn, whether its guard held (guard outcomes). For each gap:

1. the prover finds a shortest run of the spec that ends with the missing action (a witness,
   model/witness.py: `reach any*; ACTION`), through only the actions this adapter can be driven
   through (its operations, the spec actions those may be answered with, and the internal ones the
   implementation performs on its own); universes grow until one has such a run;
2. the run is replayed on the implementation as a `dmm prove --bmc` trace is (the internal steps
   left to the implementation, the outputs too), judged by both oracles;
3. the verdict: **filled** (the implementation performed the action, and conformed), **failed** (a
   conformance failure, shown as any failure), or **impossible for this implementation**, with the
   reason the replay gave: the adapter's capabilities exclude the operation; the implementation
   answered the operation with another action; or, for an action the implementation performs on
   its own, no operation tried after the run made it do so. **Not found**: the prover found no run
   within the depth (unknown beyond it: the gap stays open, it is not proved impossible).

An operation whose guard never failed when drawn is a guard-outcome gap: the harness asks an
operation its guard forbids only when the implementation may refuse it (REFUSABLE), so for the
others that outcome is impossible by construction, and said so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from dmmcheck.model.interp import Interpreter
from dmmcheck.model.witness import search
from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import CheckedSpec, Witness

from . import levels
from .adapter import Adapter, Config, Operation
from .binding import (ACCESS_ACTIONS, ALTERNATIVES, CR3_LOAD, GFN, GVA, INTERNAL, INVLPG, MFN, OUTPUTS, REFUSABLE,
                      ROLE, ROOT, SET_MODE, SHADOW_HIT, SLOT, TLB_HIT, VCPU, VM)
from .operations import Catalogue
from .oracle import Failure
from .runner import Runner, StepRecord
from .scope import clamp, table_gfns

DEPTH = 8  # actions in a witness run, at most
# Universes tried in turn (sizes over the smallest, one of each sort): one VM; two VMs (sharing
# needs two holders); two VMs and two gfns.
GROWTH = ({}, {VM: 2}, {VM: 2, GFN: 2})
MAX_PROBES = 400  # next operations tried after a run, for an action the implementation performs itself


# Why an implementation answers an operation with another action, where the harness's own rules say.
_INSTEAD = {
    (TLB_HIT, SHADOW_HIT): "the harness names a hit tlb_hit only where the vCPU's TLB holds the translation; "
                               "this implementation's hit came with none cached there (it flushed or never "
                               "filled it)",
}


@dataclass
class Gap:
    action: str  # the spec action (or operation, for a guard outcome)
    outcome: str | None = None  # None: the action was never performed; "true"/"false": a guard outcome
    verdict: str = ""  # filled | failed | impossible | not found
    reason: str = ""
    witness: list[dict[str, Any]] = field(default_factory=list)  # the spec run (spec values)
    ops: list[Operation] = field(default_factory=list)  # what was replayed on the implementation
    failure: Failure | None = None
    records: list[StepRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.action if self.outcome is None else f"{self.action} (guard {self.outcome})"

    def to_json(self) -> dict[str, Any]:
        return {"gap": self.name, "action": self.action, "outcome": self.outcome, "verdict": self.verdict,
                "reason": self.reason, "witness": self.witness,
                "replayed": [{"action": o.action, "args": o.args} for o in self.ops],
                "failure": {"kind": self.failure.kind, "message": self.failure.message} if self.failure else None,
                "seconds": round(self.seconds, 3)}


def find(spec: CheckedSpec, coverage: dict[str, int], guards: dict[str, dict[str, int]]) -> list[Gap]:
    """Every spec action never performed, and every guard outcome never drawn for an operation
    whose action was performed (one never performed is already an action gap)."""
    gaps = [Gap(a) for a in spec.actions if not coverage.get(a)]
    missing = {g.action for g in gaps}
    for op, seen in sorted(guards.items()):
        if op in missing:
            continue
        gaps += [Gap(op, outcome) for outcome in ("true", "false") if not seen.get(outcome)]
    return gaps


@dataclass
class Filler:
    """Fills gaps on one implementation (a factory of adapters), each replay judged by the oracles."""

    spec: CheckedSpec
    factory: Callable[[], Adapter]
    config: Config = field(default_factory=Config)
    depth: int = DEPTH
    step_timeout: float = 10.0
    level: str | None = None
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        from .trace import make_adapter  # built and asked under the step timeout: bad input, never a hang

        self.adapter = levels.at_level(make_adapter(self.factory, self.step_timeout), self.level)
        self.operations = self.adapter.capabilities().operations
        self.config = clamp(self.config, self.adapter.capabilities())  # no more vCPUs than it runs
        # A spec action the implementation can be driven through: asked as an operation, an answer
        # to one, or done on its own (internal).
        answers = {alt for op, alts in ALTERNATIVES.items() if op in self.operations for alt in alts}
        self.drivable = frozenset(a for a in self.spec.actions
                                  if a in self.operations or a in answers or a in INTERNAL)
        tables = {g for gs in table_gfns(self.config).values() for g in gs} | set(self.config.roots)
        # spec gfn i -> the i-th gfn that is no guest table: the spec's gfns and roots are apart
        self.data_gfns = [g for g in range(self.config.gfns) if g not in tables]

    def fill(self, gaps: list[Gap]) -> list[Gap]:
        for gap in gaps:
            start = time.perf_counter()
            if self.progress:
                self.progress(gap.name)
            try:
                if gap.outcome is None:
                    self._action(gap)
                else:
                    self._guard(gap)
            except Exception as e:  # noqa: BLE001 - one gap's trouble is reported, the others still filled
                gap.verdict, gap.reason = "not found", f"could not be searched or replayed: {type(e).__name__}: {e}"
            gap.seconds = time.perf_counter() - start
        return gaps

    # ---------------------------------------------------------------- one gap
    def _action(self, gap: Gap) -> None:
        a = gap.action
        if a not in self.drivable:
            gap.verdict, gap.reason = "impossible", (
                f"the adapter's capabilities exclude it: they name no operation that asks for {a} or that {a} "
                "answers, and it is not an action the implementation performs on its own, so no spec run drives it")
            return
        found, sizes = self._witness(a)
        if found is None:
            gap.verdict, gap.reason = "not found", sizes
            return
        gap.witness = found.steps
        it = Interpreter(self.spec, found.universe)
        self._replay(gap, self._ops(found.steps))
        if gap.verdict or a not in INTERNAL:
            if not gap.verdict:
                gap.verdict, gap.reason = "impossible", self._instead(gap, found.steps)
            return
        self._probe(gap, found.steps, it)

    def _guard(self, gap: Gap) -> None:
        if gap.outcome == "false" and gap.action in (CR3_LOAD, SET_MODE, INVLPG):
            gap.verdict, gap.reason = "impossible", (
                f"the harness asks {gap.action} whenever the VM lives; the rest of its guard (no stale spte "
                f"where the load lands) is the implementation's to make true before it reports {gap.action}, "
                "by a resync: a conforming run never shows it false")
            return
        if gap.outcome == "false" and gap.action not in REFUSABLE:
            gap.verdict, gap.reason = "impossible", (
                f"the harness asks {gap.action} only when its guard holds (an implementation may refuse only "
                f"{', '.join(REFUSABLE)}): a forbidden {gap.action} is never a legal request")
            return
        if gap.outcome == "true":  # drawn, never legal: the action it asks for is the gap
            sub = Gap(gap.action)
            self._action(sub)
            gap.verdict, gap.reason, gap.witness, gap.ops = sub.verdict, sub.reason, sub.witness, sub.ops
            gap.failure, gap.records = sub.failure, sub.records
            return
        gap.verdict, gap.reason = "not found", (
            f"not attempted: a refusal of {gap.action} needs a state where its guard fails for the inputs drawn, "
            "which the campaign's generator decides")

    def _witness(self, action: str):
        """A shortest drivable run ending with `action`, in the smallest universe of GROWTH that has
        one; or None and what was searched."""
        w = Witness(f"gap_{action}", ((None, True), (action, False)), A.BoolLit(True))
        tried = []
        for grow in GROWTH:
            sizes = {s: grow.get(s, 1) for s in self.spec.sorts}
            if MFN in sizes:
                sizes[MFN] = max(sizes[MFN], 2)  # a page for the guest and one to spare
            found, why = search(self.spec, w, self.depth, sizes, allowed=self.drivable)
            if found is not None:
                return found, ""
            tried.append(", ".join(f"{k}={v}" for k, v in sizes.items()))
            if not why.startswith("not reachable"):
                return None, why
        return None, (f"no run of at most {self.depth} actions this adapter can be driven through reaches {action} "
                      f"(universes {'; '.join(tried)}): unknown beyond that")

    # ---------------------------------------------------------------- replay
    def _ops(self, steps: list[dict[str, Any]]) -> list[Operation]:
        """The operations that drive a spec run: internal steps left to the implementation, outputs
        too; an answer (oom, swap_full) asked as the operation it answers."""
        ops = []
        for st in steps:
            a = st["action"]
            if a in INTERNAL:
                continue
            op = a if a in self.operations else next(o for o, alts in ALTERNATIVES.items()
                                                     if a in alts and o in self.operations)
            outs = set(OUTPUTS.get(a, ())) | set(OUTPUTS.get(op, ())) | ({"r", "o"} if a in ACCESS_ACTIONS else set())
            ops.append(Operation(op, {k: self._value(v) for k, v in st["args"].items() if k not in outs}))
        return ops

    def _value(self, v: Any) -> Any:
        if v in ("true", "false"):
            return v == "true"
        cfg = self.config
        for sort, values in ((VM, list(range(cfg.vms))), (ROOT, list(cfg.roots)), (GVA, list(cfg.gvas)),
                             (GFN, self.data_gfns), (SLOT, list(range(cfg.slots))), (VCPU, list(range(cfg.vcpus))),
                             (ROLE, list(cfg.roles))):
            if isinstance(v, str) and v.startswith(sort) and v[len(sort):].isdigit():
                return values[int(v[len(sort):])]
        return v  # an enum value (read, write, fetch)

    def _replay(self, gap: Gap, ops: list[Operation]) -> Runner:
        """Replay ops; a conformance failure is the gap's verdict (failed); the action performed
        (in the runner's coverage) makes it filled."""
        runner = Runner(self.adapter, self.spec, self.config, self.step_timeout)
        gap.ops = ops
        try:
            runner.reset()
            cat = Catalogue(runner.judge.it, self.operations)  # type: ignore[union-attr]
            for i, op in enumerate(ops):
                if not self._legal(cat, runner, op):
                    # the implementation did not take the internal steps the spec run assumed: the
                    # rest of the run would be a request the spec forbids, never a fair verdict
                    gap.records = list(runner.records)
                    gap.verdict, gap.reason = "impossible", (
                        f"the run needs {op.action}({_args(op)}) at operation {i}, which the spec does not allow in "
                        "the implementation's state then: it did not take the steps of its own the run assumed")
                    return runner
                runner.step(op)
        except Failure as f:
            gap.verdict, gap.failure, gap.records = "failed", f, list(runner.records)
            gap.reason = f"{f.kind}: {f.message}"
            return runner
        gap.records = list(runner.records)
        if runner.coverage.get(gap.action):
            gap.verdict = "filled"
            gap.reason = f"performed after {len(ops)} operation{'s' if len(ops) != 1 else ''}, and conformed"
        return runner

    def _legal(self, cat: Catalogue, runner: Runner, op: Operation) -> bool:
        """Is the operation legal in the spec state the oracle holds (the implementation's, judged)?"""
        if op.action not in cat.ops:
            return True  # not a spec action's operation: legal whenever its VM lives
        cfg, it = self.config, cat.it
        xs = []
        for p in cat.ops[op.action].inputs:
            v = op.args[p.name]
            values: dict[str, list[Any]] = {ROOT: list(cfg.roots), GVA: list(cfg.gvas), ROLE: list(cfg.roles)}
            index = values.get(p.type.name)
            if index is not None:
                v = index.index(v)
            elif p.type.name in self.spec.enums:
                v = it.u.parse_value(p.type, v)
            xs.append(v)
        return cat.legal(runner.oracle.state, op.action, tuple(xs))  # type: ignore[union-attr]

    def _instead(self, gap: Gap, steps: list[dict[str, Any]]) -> str:
        """Why a replay that conformed did not perform the action: what the implementation did at
        the operation that asked for it."""
        if not gap.records:
            return f"the run's operations do not ask for {gap.action}"
        last = gap.records[-1]
        did = [s.action for s in last.spec_steps]
        why = next((w for (asked, got), w in _INSTEAD.items() if asked == gap.action and got in did), "")
        return (f"the implementation answered {last.op.action} (step {last.index}) with {', '.join(did) or 'nothing the spec names'}, "
                f"not {gap.action}, after the shortest run that enables {gap.action} ({len(steps)} spec steps)"
                + (f": {why}" if why else ""))

    def _probe(self, gap: Gap, steps: list[dict[str, Any]], it: Interpreter) -> None:
        """An action the implementation performs on its own: after the run that enables it, try each
        legal next operation (in the witness's universe) until the implementation performs it."""
        prefix = self._ops(steps[:-1])
        state = _run_spec(it, steps[:-1])
        cat = Catalogue(it, self.operations)
        tried = 0
        for op in sorted(cat.ops):
            for xs in _inputs(it, cat, op):
                if not cat.legal(state, op, xs):
                    continue
                tried += 1
                args = {p.name: self._value(it.u.show_value(p.type, x)) for p, x in zip(cat.ops[op].inputs, xs)}
                trial = Gap(gap.action)
                self._replay(trial, prefix + [Operation(op, args)])
                if trial.verdict in ("filled", "failed"):
                    gap.verdict, gap.reason, gap.ops = trial.verdict, trial.reason, trial.ops
                    gap.failure, gap.records = trial.failure, trial.records
                    if trial.verdict == "filled":
                        gap.reason = (f"performed by the implementation during {op} after the shortest run that "
                                      f"enables it ({len(steps) - 1} spec steps), and conformed")
                    return
                if tried >= MAX_PROBES:
                    break
        gap.verdict, gap.reason = "impossible", (
            f"the implementation never performed {gap.action} on its own: after the shortest run that enables it "
            f"({len(steps) - 1} spec steps), none of the {tried} legal operations tried next made it")


def _args(op: Operation) -> str:
    return ", ".join(f"{k}={hex(v) if isinstance(v, int) and not isinstance(v, bool) and v > 4096 else v}"
                     for k, v in op.args.items())


def _run_spec(it: Interpreter, steps: list[dict[str, Any]]) -> Any:
    """The spec state after a run, from the initial state whose parameters allow it."""
    for s in it.initial_states():
        try:
            for st in steps:
                xs = it.parse_args(st["action"], st["args"])
                if not it.is_enabled(s, st["action"], xs):
                    raise ValueError(st["action"])
                s = it.apply(s, st["action"], xs)
            return s
        except ValueError:
            continue
    raise ValueError("the witness run does not replay on the interpreter")


def _inputs(it: Interpreter, cat: Catalogue, op: str):
    """Every input tuple of an operation in the interpreter's universe."""
    import itertools

    return itertools.product(*(it.u.domain(p.type) for p in cat.ops[op].inputs))


# ---------------------------------------------------------------- the command line


@dataclass(frozen=True)
class FillOptions:
    """What filling the gaps takes from the command line (the CLI builds it)."""

    adapter: Callable[[], Adapter]  # makes the implementation's adapter
    scope: Config
    step_timeout: float = 10.0
    level: str | None = None


def run(spec: CheckedSpec, opts: FillOptions, result: Any, console: Any = None) -> list[Gap]:
    """`dmm fuzz --fill-gaps`: the campaign's gaps, each filled or explained (ValueError: bad input)."""
    from .cli import close_adapter

    if result.level == "black-box":
        raise ValueError("--fill-gaps needs the spec actions an implementation performs: not observable at level "
                         "black-box")
    gaps = find(spec, result.coverage, result.guards)
    status = console.status("filling gaps") if console is not None and gaps else None
    if status:
        status.start()
    try:
        filler = Filler(spec, opts.adapter, opts.scope, step_timeout=opts.step_timeout, level=opts.level,
                        progress=(lambda name: status.update(f"filling gaps: {name}")) if status else None)
        try:
            return filler.fill(gaps)
        finally:
            close_adapter(filler.adapter)  # an out-of-process one: its child
    finally:
        if status:
            status.stop()


def show(console: Any, gaps: list[Gap], seed: int = 0) -> None:
    """A row per gap, then each failure as any failure is shown."""
    from rich.table import Table

    from .report import show_failure

    if not gaps:
        console.print("gaps: none (every action performed, every guard outcome drawn)")
        return
    color = {"filled": "green", "failed": "red", "impossible": "yellow", "not found": "yellow"}
    t = Table(title="gaps the campaign left, filled with the prover's witnesses")
    for col in ("gap", "verdict", "operations", "reason"):
        t.add_column(col, overflow="fold")
    # Guard outcomes impossible by construction (the harness asks these operations only when legal):
    # one row for all, not one each.
    by_rule = [g for g in gaps if g.outcome == "false" and g.verdict == "impossible"]
    for g in gaps:
        if g not in by_rule:
            t.add_row(g.name, f"[{color[g.verdict]}]{g.verdict}[/]", str(len(g.ops)) if g.ops else "-", g.reason)
    if by_rule:
        t.add_row(f"guard false: {', '.join(g.action for g in by_rule)}", f"[{color['impossible']}]impossible[/]", "-",
                  "the harness asks these operations only when their guard holds (an implementation may refuse only "
                  f"{', '.join(REFUSABLE)}): a forbidden one is never a legal request")
    console.print(t)
    for g in gaps:
        if g.verdict == "failed" and g.failure is not None:
            console.print(f"[red]gap {g.name}: the witness run fails[/]")
            show_failure(console, g.records, g.failure, seed=seed, trace=None)
    counts = {v: sum(g.verdict == v for g in gaps) for v in color}
    console.print("gaps: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
