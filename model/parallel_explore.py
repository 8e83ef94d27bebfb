"""Exploring in several processes, split by the model's parameters.

An action never modifies an immutable symbol, so the reachable states split exactly by the values
the initial states give the immutable constants of a type that is not a sort (the DMM spec: its
budget and quota, 9 pairs at the all-actions bound), and a permutation of a sort's elements keeps
those values, so no orbit spans two parts. Each part is explored on its own, in a worker process
forked from this one (it inherits the compiled spec), and the counts are added up.

The split is uneven (budget=2, quota=2 holds 55% of the all-actions scope's states), so the parts
are handed out largest parameter values first: with two processes one takes that part and the
other the eight others. What a part may contain past its first violation depends on which process
gets there first, so when any part finds a violation the whole search is run again in this process:
the report (which violations, which traces, how many states) is the one-process search's, whatever
the number of processes.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Any

from .explore import MEMORY_SHARE, ExploreResult, Limits, _explore_ground, available_memory, bound_of, symmetric_sorts
from .ground import Flat, Ground
from .interp import Interpreter


@dataclass
class _Part:
    """What a worker sends back: counts only (the states stay in the worker)."""

    states: int
    transitions: int
    action_counts: dict[str, int]
    complete: bool
    stopped_by: str
    violated: bool
    memory_states: int | None


# The work of the forked workers, set just before they are forked (fork: inherited, not pickled).
_WORK: dict[str, Any] = {}


def parts(it: Interpreter, g: Ground) -> list[list[Flat]]:
    """The initial states (flat) grouped by the values of their parameters, largest values first.
    A parameter is an immutable constant of a type no permutation touches (an int, a bool, an
    enum): an immutable relation over a sort (a quorum's members) is permuted with its sort, so
    grouping by it would put one orbit in several parts, each counting it."""
    immutable = [g.offsets[name] for name, lay in it.u.layout.items()
                 if not lay.symbol.mutable and not lay.symbol.args and lay.symbol.result.name not in it.u.sizes]
    groups: dict[tuple, list[Flat]] = {}
    for s0 in it.initial_states():
        f = g.flatten(s0)
        groups.setdefault(tuple(f[i] for i in immutable), []).append(f)
    return [groups[k] for k in sorted(groups, key=_order, reverse=True)]


def _order(values: tuple) -> tuple:
    # a deterministic order over values of mixed types (ints, bools, enum indices, none)
    return tuple((isinstance(v, (int, float)), v if isinstance(v, (int, float)) else repr(v)) for v in values)


def _explore_part(initial: list[Flat]) -> _Part:
    if os.environ.get("DMM_TEST_EXPLORE_CRASH"):  # tests: a worker that dies
        os._exit(70)
    w = _WORK
    lim = w["lim"]
    if lim.max_seconds is not None:  # one deadline for the whole search, whenever the part starts
        lim = replace(lim, max_seconds=max(0.0, lim.max_seconds - (time.perf_counter() - w["start"])))
    r = _explore_ground(w["it"], w["g"], lim, w["symmetry"], None, w["keep_going"], False, initial)
    return _Part(r.states, r.transitions, r.action_counts, r.complete, r.stopped_by, bool(r.violations),
                 r.memory_states)


def explore_in_parts(it: Interpreter, g: Ground, lim: Limits, symmetry: bool, keep_going: bool,
                     jobs: int) -> ExploreResult | None:
    """The search in up to `jobs` processes; None when it does not split (one part, no fork on this
    platform), found a violation, or a worker died: then the caller searches in this process."""
    groups = parts(it, g)
    if len(groups) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    ctx = multiprocessing.get_context("fork")
    start = time.perf_counter()
    procs = min(jobs, len(groups))
    # the memory budget is shared: each process may keep its share of it
    budget = lim.max_memory if lim.max_memory is not None else int(available_memory() * MEMORY_SHARE)
    _WORK.update(it=it, g=g, symmetry=symmetry, keep_going=keep_going, start=start,
                 lim=replace(lim, max_memory=budget // procs, halt=ctx.Event()))
    try:
        # an executor, not a Pool: a worker that dies (killed, out of memory) breaks it with an
        # error instead of leaving its part unanswered forever
        with ProcessPoolExecutor(procs, mp_context=ctx) as pool:
            done = list(pool.map(_explore_part, groups))
    except BrokenProcessPool:
        return None  # the search runs again in this process, where a failure is seen as it is
    finally:
        _WORK.clear()
    if any(p.violated for p in done):
        return None
    result = ExploreResult(bound_of(it.u), sum(p.states for p in done), sum(p.transitions for p in done),
                           time.perf_counter() - start, all(p.complete for p in done))
    result.stopped_by = next((p.stopped_by for p in done if p.stopped_by), "")
    result.action_counts = {a: sum(p.action_counts[a] for p in done) for a in done[0].action_counts}
    if symmetry:
        result.symmetry, result.not_symmetric = symmetric_sorts(it.u.sizes)
    result.memory_states = sum(p.memory_states or 0 for p in done) or None
    result.processes = procs
    return result
