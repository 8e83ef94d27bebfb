"""Reachability witnesses: the shortest run from init that follows a witness's shape and ends in a
state where its formula holds, found by bounded model checking (mypyvy's `sat trace`).

The shape is a regular expression over actions (an action name, `any`, each optionally starred),
encoded as a small automaton riding along the run: `pos[i]` is the shape step the run is at after
i actions. Iterative deepening on one incremental solver checks lengths 0, 1, 2, ... up to the
depth, so the first run found is a shortest one. Not finding one within the depth is **unknown
beyond the depth**, never "unreachable": a longer run, or a larger universe, may reach it.

The universe is the spec's sort bounds (as for `dmm prove --bmc`); a parameter (an immutable int)
is left to the solver within the axioms, so the witness names the values it needs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import z3

from dmmcheck.spec.checker import CheckedSpec, Witness

from .cex import show_immutable, show_mutable
from .limits import BACKSTOP, RLIMIT, WITNESS_DEPTH
from .counterexample import read_arg
from .prove import Result, _read_state
from .state import Universe
from .z3enc import Encoding, Vocab, own_context

DEFAULT_DEPTH = WITNESS_DEPTH  # `dmm prove --witness-depth`: runs of at most this many actions


@dataclass
class Found:
    """A run: its steps (action and arguments, spec values), the universe, the last state."""

    steps: list[dict[str, Any]]
    universe: dict[str, int]
    params: dict[str, int]
    state_text: str
    immutable_text: str


def universe_of(spec: CheckedSpec, sizes: dict[str, int] | None = None) -> dict[str, int]:
    """The sort sizes a witness is searched at: `sizes` where given, else the sort's bound (or 2)."""
    return {s: (sizes or {}).get(s) or b or 2 for s, b in spec.sorts.items()}


def answer(spec: CheckedSpec, w: Witness, depth: int = DEFAULT_DEPTH, *, sizes: dict[str, int] | None = None,
           rlimit: int = RLIMIT, timeout: float = BACKSTOP) -> Result:
    """The witness's verdict as a prover result: proved (a run found: the shortest), or unknown (none
    within the depth, or the solver stopped), never violated. `witness` carries the run."""
    start = time.perf_counter()
    bound = universe_of(spec, sizes)
    info: dict[str, Any] = {"required": w.required, "shape": w.shape_text(), "depth": depth, "universe": bound}
    try:
        with own_context():  # the run found depends on the witness only, not on what the process ran before
            found, why = search(spec, w, depth, bound, rlimit=rlimit, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - an encoding limit is an unknown, never a crash of the run
        found, why = None, f"could not encode: {type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    name = f"witness/{w.name}"
    if found is not None:
        info.update(steps=found.steps, params=found.params, state_text=found.state_text,
                    immutable_text=found.immutable_text)
        n = len(found.steps)
        return Result(name, "witness", None, w.name, "proved", seconds, bound=bound, witness=info,
                      reason=f"reachable: a shortest run of {n} step{'s' if n != 1 else ''} (universe {_sizes(bound)})")
    return Result(name, "witness", None, w.name, "unknown", seconds, bound=bound, witness=info, reason=why)


def search(spec: CheckedSpec, w: Witness, depth: int, bound: dict[str, int], *, rlimit: int = RLIMIT,
           timeout: float = BACKSTOP, allowed: frozenset[str] | None = None) -> tuple[Found | None, str]:
    """The shortest run of at most `depth` actions that follows w's shape and ends where its formula
    holds, or None and why not. `allowed`: the actions an `any` step may be (None: every action),
    e.g. only those an implementation can be driven through."""
    enc = Encoding(spec, bound)
    names = list(spec.actions)
    states = [enc.vocab(f"w{i}") for i in range(depth + 1)]
    sels = [z3.Int(f"wsel{i}") for i in range(depth)]
    pos = [z3.Int(f"wpos{i}") for i in range(depth + 1)]
    sv = z3.Solver()
    sv.set(rlimit=rlimit, timeout=int(timeout * 1000), random_seed=0)
    sv.add(enc.axioms(), enc.init(states[0]), pos[0] == 0)
    shortest = sum(1 for _, star in w.shape if not star)
    for d in range(depth + 1):
        if d > 0:
            _step(sv, enc, spec, names, states, sels, pos, w.shape, d - 1, allowed)
        if d < shortest:
            continue
        sv.push()
        sv.add(_accepts(pos[d], w.shape), enc.expr(w.formula, states[d], {}))
        r = sv.check()
        if r == z3.sat:
            return _read_run(spec, enc, sv.model(), states[: d + 1], sels[:d], bound), ""
        sv.pop()
        if r != z3.unsat:
            why = sv.reason_unknown() or "unknown"
            limit = "resource limit reached (--rlimit)" if "resource" in why or why in ("canceled", "timeout") else why
            return None, f"unknown: {limit} at length {d}"
    return None, (f"not reachable within {depth} steps (universe {_sizes(bound)}): unknown beyond that — a longer "
                  "run or a larger universe may reach it")


def _step(sv: z3.Solver, enc: Encoding, spec: CheckedSpec, names: list[str], states: list[Vocab],
          sels: list[z3.ArithRef], pos: list[z3.ArithRef], shape: tuple[tuple[str | None, bool], ...], i: int,
          allowed: frozenset[str] | None = None) -> None:
    """Step i of the run: one action from states[i] to states[i + 1], and the shape's automaton
    moving along with it."""
    sv.add(sels[i] >= 0, sels[i] < len(names))
    for j, n in enumerate(names):
        act = spec.actions[n]
        env = enc.param_consts(act, tag=f"@w{i}")
        sv.add(z3.Implies(sels[i] == j, enc.transition(act, states[i], states[i + 1], env)))
    anything = z3.BoolVal(True) if allowed is None else \
        z3.Or([sels[i] == j for j, n in enumerate(names) if n in allowed] or [z3.BoolVal(False)])
    moves = []
    for p in range(len(shape) + 1):
        # from step p, skip starred steps p..q-1, then match step q with this action
        for q in range(p, len(shape)):
            action, star = shape[q]
            match = anything if action is None else sels[i] == names.index(action)
            moves.append(z3.And(pos[i] == p, match, pos[i + 1] == (q if star else q + 1)))
            if not star:
                break
    sv.add(z3.Or(moves) if moves else z3.BoolVal(False))


def _accepts(p: z3.ArithRef, shape: tuple[tuple[str | None, bool], ...]) -> z3.BoolRef:
    """The run may end at shape step p: every step from p on is starred."""
    ends = [k for k in range(len(shape) + 1) if all(star for _, star in shape[k:])]
    return z3.Or([p == k for k in ends])


def _read_run(spec: CheckedSpec, enc: Encoding, model: z3.ModelRef, states: list[Vocab],
              sels: list[z3.ArithRef], bound: dict[str, int]) -> Found:
    names = list(spec.actions)
    u = Universe(spec, bound)
    steps = []
    for i, sel in enumerate(sels):
        act = spec.actions[names[model.eval(sel, True).as_long()]]
        env = enc.param_consts(act, tag=f"@w{i}")
        steps.append({"action": act.name, "args": {
            p.name: u.show_value(p.type, read_arg(u, enc, model, p.type, env[p.name])) for p in act.params}})
    last = _read_state(u, enc, model, states[-1])
    params = {n: last[u.layout[n].index][0] for n in u.params}
    return Found(steps, bound, params, show_mutable(u, last), show_immutable(u, last))


def _sizes(bound: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in bound.items())


def write_trace(path: Path, spec_path: str, spec_hash: str, r: Result) -> None:
    """A witness's run in the trace format of `dmm prove --bmc` (docs/trace-format.md): `dmm replay`
    drives an implementation through it, its internal steps and outputs left to the implementation."""
    w = r.witness or {}
    header = {"format": "dmm-trace/1", "source": "dmm prove (witness)", "spec": spec_path, "spec_hash": spec_hash,
              "universe": w.get("universe"), "witness": r.invariant, "shape": w.get("shape")}
    lines = [json.dumps(header)] + [json.dumps({"step": i, "action": st["action"], "args": st["args"]})
                                    for i, st in enumerate(w.get("steps", []))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
