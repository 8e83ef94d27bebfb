"""Is a counterexample to induction reachable?

A CTI (inductive/ACTION/INV violated) is a state satisfying every invariant from which ACTION breaks
INV. It is a real bug only if an execution gets there; otherwise the invariants are too weak to be
inductive (an auxiliary invariant is missing) and the spec may well be right. So for every CTI a
bounded breadth-first search from init (the explorer's interpreter and symmetry reduction, no Z3)
looks for a reachable state where every invariant holds and from which ACTION breaks INV: the same
invariant after the same action.

Verdicts (`verdict` in JSON):
  reachable     a trace of N steps from init, the last one ACTION, after which INV fails
  not reached   every trace of at most D steps (or every reachable state) at the sizes searched,
                and no such transition: likely a missing auxiliary invariant
  unknown       the search could not say (the time budget ran out before it got anywhere, or the
                spec cannot be searched at those sizes); never counted as either of the others

Cost: all the CTIs of one run share one search (one breadth-first pass answers every (action,
invariant) pair it meets), which stops when every CTI is answered, when the reachable states run
out, or after the time budget (`--reach-seconds`).
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from dmmcheck.spec.checker import CheckedSpec

from .explore import SHARING_BOUND, Symmetry, _trace, default_bound
from .interp import Interpreter, InterpError
from .limits import REACH_SECONDS
from .state import State, UniverseError, split_top

# A time-limited search that has not covered every trace of this many steps says unknown, not
# "not reached": a bound that small says nothing.
MIN_DEPTH = 3
MAX_INITIAL_STATES = 100_000  # past this many initial states the search says unknown before it starts
_NONE: frozenset[str] = frozenset()


def search_bounds(spec: CheckedSpec, ctis: list[Any]) -> list[dict[str, int]]:
    """The sizes to search, smallest first. The DMM spec and its variants: the explorer's default
    bound, then the smallest that enables every action (sharing needs two gfns). Another spec: the
    smallest universe each CTI was found in (at least one element per sort), every sort at its
    largest over the CTIs."""
    db = default_bound(spec)
    if db:
        return [db, {**db, **{k: v for k, v in SHARING_BOUND.items() if k in spec.sorts}}]
    sizes = {s: 1 for s in spec.sorts}
    for r in ctis:
        for s, n in ((r.counterexample or {}).get("universe") or {}).items():
            if s in sizes:
                sizes[s] = max(sizes[s], n)
    if not any((r.counterexample or {}).get("universe") for r in ctis):
        sizes = {s: min(b or 2, 2) for s, b in spec.sorts.items()}
    return [sizes]


def annotate(spec: CheckedSpec, ctis: list[Any], seconds: float = REACH_SECONDS) -> None:
    """Set `reachability` on each violated inductive result in ctis (one shared search)."""
    if not ctis:
        return
    start = time.perf_counter()
    deadline = start + seconds
    wanted: dict[str, set[str]] = {}
    for r in ctis:
        wanted.setdefault(r.action, set()).add(r.invariant)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    searched: list[dict[str, Any]] = []
    problems: list[str] = []
    bounds = search_bounds(spec, ctis)
    for i, bound in enumerate(bounds):
        left = {a: invs - {inv for (b, inv) in found if b == a} for a, invs in wanted.items()}
        left = {a: invs for a, invs in left.items() if invs}
        if not left:
            break
        now = time.perf_counter()
        if now >= deadline:
            break
        share = (deadline - now) / (len(bounds) - i)
        try:
            it = Interpreter(spec, bound)
            got, info = _search(it, left, now + share)
        except (InterpError, UniverseError, MemoryError) as e:
            problems.append(f"{_sizes(bound)}: {e}")
            continue
        searched.append(info)
        found.update(got)
    elapsed = round(time.perf_counter() - start, 3)
    for r in ctis:
        hit = found.get((r.action, r.invariant))
        if hit is not None:  # seconds: how long the search took to reach this one
            hit = {**{k: v for k, v in hit.items() if k != "at"}, "seconds": round(hit["at"] - start, 3)}
        r.reachability = _verdict(hit, searched, problems, seconds, elapsed)


def _verdict(hit: dict[str, Any] | None, searched: list[dict[str, Any]], problems: list[str], budget: float,
             elapsed: float) -> dict[str, Any]:
    base = {"searched": searched, "seconds": elapsed, "budget": budget}
    if hit is not None:
        n = len(hit["trace"])
        return {**base, "verdict": "reachable", **hit,
                "text": f"reachable: a trace of {n} step{'s' if n != 1 else ''} from init reaches it "
                        f"(explorer, sizes {_sizes(hit['bound'])})"}
    meaningful = [s for s in searched if s["complete"] or s["depth"] >= MIN_DEPTH]
    if not meaningful:
        why = "; ".join(problems) if problems and not searched else (
            f"the time budget ({budget:g} s, --reach-seconds) ran out "
            + (f"after every trace of at most {max(s['depth'] for s in searched)} steps" if searched else "before the search")
            + (f"; {'; '.join(problems)}" if problems else ""))
        return {**base, "verdict": "unknown", "text": f"unknown: {why}"}
    where = "; ".join(_covered(s) for s in searched)
    unless = ("more elements than searched" if all(s["complete"] for s in searched)
              else "a longer trace or more elements than searched (--reach-seconds)")
    return {**base, "verdict": "not reached",
            "text": f"not reached within the bound (explorer: {where}): likely a missing auxiliary invariant, "
                    f"unless reaching it takes {unless}"}


def _covered(s: dict[str, Any]) -> str:
    what = (f"all {s['states']:,} reachable states" if s["complete"]
            else f"every trace of at most {s['depth']} steps ({s['states']:,} states)")
    return f"{what} at {_sizes(s['bound'])}"


def _sizes(bound: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in bound.items())


def _initial_count(it: Interpreter) -> int:
    n = 1
    for lay in it.u.layout.values():
        if not lay.symbol.mutable:
            vals = len(it.u.params[lay.symbol.name]) if lay.symbol.name in it.u.params else \
                len(it.u.domain(lay.symbol.result))
            n *= vals ** lay.size
            if n > MAX_INITIAL_STATES:
                break
    return n


def _search(it: Interpreter, wanted: dict[str, set[str]], deadline: float
            ) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    """Breadth first from init at it's sizes: for each good state (every invariant holds) and each
    wanted action, does a successor break a wanted invariant? Returns what was found, by (action,
    invariant), and what was covered."""
    t0 = time.perf_counter()
    info: dict[str, Any] = {"bound": dict(it.u.sizes), "states": 0, "depth": 0, "complete": False}
    if _initial_count(it) > MAX_INITIAL_STATES:
        raise InterpError(f"more than {MAX_INITIAL_STATES:,} initial states")
    sym = Symmetry(it)
    canon = sym.canonical if sym.maps else (lambda s: s)
    names = [i.name for i in it.invariants]
    parent: dict[State, tuple[State | None, str, tuple[Any, ...]]] = {}
    bad: dict[State, frozenset[str]] = {}
    raw: dict[State, State] = {}  # a successor seen before -> its canonical state
    queue: deque[tuple[State, int]] = deque()
    found: dict[tuple[str, str], tuple[State, str, tuple[Any, ...], float]] = {}
    left = {(a, inv) for a, invs in wanted.items() for inv in invs}

    def violated(s: State) -> frozenset[str]:
        return _NONE if it.all_hold(s) else frozenset(n for n in names if not it.holds(s, n))

    def visit(s: State, via: tuple[State | None, str, tuple[Any, ...]], depth: int) -> State:
        c = raw.get(s)
        if c is None:
            c = raw[s] = canon(s)
            if c not in parent:
                parent[c] = via
                queue.append((c, depth))
                if v := violated(c):
                    bad[c] = v
        return c

    for s0 in it.initial_states():
        visit(s0, (None, "init", ()), 0)
    changing = [(n, ca.enabled, ca.apply) for n, ca in it.actions.items() if ca.action.modifies]
    k = 0
    timed_out = False
    while queue and left and not timed_out:
        s, d = queue.popleft()
        info["depth"] = d  # every transition out of a state fewer than d steps from init is done
        good = s not in bad
        for n, enabled, apply in changing:
            targets = wanted.get(n) if good else None
            for args in enabled(s):
                c = visit(apply(s, *args), (s, n, args), d + 1)
                if targets and c in bad:
                    for inv in targets & bad[c]:
                        if (n, inv) in left:
                            left.discard((n, inv))
                            found[(n, inv)] = (s, n, args, time.perf_counter())
                k += 1
                if k & 63 == 0 and time.perf_counter() > deadline:
                    timed_out = True
                    break
            if timed_out:
                break
    info["complete"] = not queue and not timed_out
    info["states"] = len(parent)
    info["seconds"] = round(time.perf_counter() - t0, 3)
    shown = {key: {**_show(it, parent, canon, *hit[:3], key[1]), "at": hit[3]} for key, hit in found.items()}
    return shown, info


def _show(it: Interpreter, parent: dict, canon, pre: State, action: str, args: tuple[Any, ...],
          invariant: str) -> dict[str, Any]:
    """The trace to pre (replayed from a real initial state), then the step of action that breaks
    the invariant, its arguments found again in the replayed state (a permutation of pre)."""
    steps = _trace(it, parent, pre, canon)
    state = steps[-1].state
    for a2 in it.action(action).enabled(state):
        nxt = it.apply(state, action, a2)
        if not it.holds(nxt, invariant):
            break
    else:  # pragma: no cover - would mean the invariant is not symmetric
        raise AssertionError(f"cannot replay {action} breaking {invariant}")
    act = it.action(action).action
    trace = [{"action": st.action, "args": _args(st.args)} for st in steps[1:]]
    trace.append({"action": action, "args": {p.name: it.u.show_value(p.type, a) for p, a in zip(act.params, a2)}})
    (v,) = it.check(nxt, [invariant])
    return {"bound": dict(it.u.sizes), "trace": trace, "blame": str(v.blame),
            "before_text": it.u.show_state(state), "after_text": it.u.show_state(nxt)}


def _args(shown: str) -> dict[str, str]:
    return dict(a.split("=", 1) for a in split_top(shown))  # (each item: name=value)


def write_trace(path: Path, spec_path: str, spec_hash: str, r: Any) -> None:
    """A reached CTI as a dmm-trace/1 file, as a BMC trace (docs/trace-format.md)."""
    import json

    reach = r.reachability or {}
    header = {"format": "dmm-trace/1", "source": "dmm prove (a reachable counterexample to induction)",
              "spec": spec_path, "spec_hash": spec_hash, "universe": reach.get("bound"),
              "violates": r.invariant, "blame": reach.get("blame")}
    lines = [json.dumps(header)]
    lines += [json.dumps({"step": i, "action": st["action"], "args": st["args"]})
              for i, st in enumerate(reach.get("trace", []))]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


__all__ = ["MIN_DEPTH", "REACH_SECONDS", "annotate", "search_bounds", "write_trace"]
