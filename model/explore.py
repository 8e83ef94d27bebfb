"""Exhaustive small-scope exploration, in the manner of TLC and Alloy.

Breadth first from every initial state, every enabled action with every argument, every invariant
checked in every new state; the first violation of each invariant comes with a shortest trace.
Symmetry reduction: elements of a sort are interchangeable, so each state is stored as a canonical
representative of its orbit under permutations of the sorts' elements (the permuted copy with the
smallest digest: a deterministic choice per orbit, up to digest ties, which only cost a duplicate
visit). The digest is a CRC of the state's marshalled bytes, not Python's hash: hash(None) is an
address, different in every process, so a hash-chosen representative (and with it the search order,
the trace and the elements a blame names) would change from one run to the next.
Actions that modify nothing are self-loops and are counted but not applied.
"""

from __future__ import annotations

import itertools
import marshal
import math
import operator
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .ground import Flat, Ground, TooLarge
from .interp import Interpreter, Violation
from .state import State

# The bound `dmm explore` uses for the bundled spec when none is given: one vCPU and one role (whose
# CR0.WP the initial states take both ways), as the spec had before it had either. 416,514 states,
# 26 million transitions, about 19 s of one core. Sharing needs two holders and two pages, so
# share_merge, share_rehome and cow_break are never enabled here, nor swap_full (every slot used
# while a gfn is resident); the report says so.
DEFAULT_BOUND = {"vm": 1, "root": 1, "gva": 1, "gfn": 1, "mfn": 2, "slot": 1, "vcpu": 1, "role": 1}
# The smallest scope in which every action of the bundled spec is enabled (docs/prover.md). Since
# the spec has unsync pages it is too large to explore to the end in CHECK_SECONDS (docs/prover.md
# gives the figures), so `dmm check` explores CHECK_BOUND instead.
ALL_ACTIONS_BOUND = {**DEFAULT_BOUND, "gfn": 2}
SHARING_BOUND = ALL_ACTIONS_BOUND  # the name the reachability search knows it by
# What `dmm check` explores: the largest scope that still finishes within CHECK_SECONDS on a loaded
# two-core machine. Its report warns of the four actions it leaves disabled.
CHECK_BOUND = DEFAULT_BOUND
# And then two vCPUs on one page, budget and quota 1: a remote flush forgotten needs a second vCPU
# holding the entry, which CHECK_BOUND does not have (docs/prover.md gives the figures of both).
CHECK_BOUND_VCPUS = {**DEFAULT_BOUND, "gfn": 1, "mfn": 1, "vcpu": 2, "budget": 1, "quota": 1}
# `dmm check` explores for at most this long: a loaded machine takes several times the figure above,
# and a search stopped by it is reported incomplete, never as a pass.
CHECK_SECONDS = 900


def bound_of(u: Any) -> dict[str, int]:
    """The bound a search ran at, as `--bound` would give it: every sort's size, and each parameter
    of the model the bound fixed (budget=1); a parameter left open takes every value and is not named."""
    return {**u.sizes, **{n: vs[0] for n, vs in u.params.items() if len(vs) == 1}}


def default_bound(spec: Any) -> dict[str, int]:
    """The default bound of the DMM spec, for it and any variant of it (a copy, a mutant: every
    sort of DEFAULT_BOUND declared); another spec explores at its own declared sizes."""
    return dict(DEFAULT_BOUND) if set(DEFAULT_BOUND) <= set(spec.sorts) else {}


def all_actions_bound(spec: Any) -> dict[str, int]:
    """ALL_ACTIONS_BOUND for the DMM spec and its variants; another spec's declared sizes."""
    return dict(ALL_ACTIONS_BOUND) if set(ALL_ACTIONS_BOUND) <= set(spec.sorts) else {}


def check_bounds(spec: Any) -> list[dict[str, int]]:
    """What `dmm check` explores: CHECK_BOUND and CHECK_BOUND_VCPUS for the DMM spec and its
    variants (the second where the spec has the budget and quota it fixes); another spec: its own
    declared sizes."""
    if not set(CHECK_BOUND) <= set(spec.sorts):
        return [{}]
    names = set(spec.sorts) | set(spec.symbols)
    return [dict(b) for b in (CHECK_BOUND, CHECK_BOUND_VCPUS) if set(b) <= names]


@dataclass
class TraceStep:
    action: str
    args: str
    state: State


@dataclass
class ExploreResult:
    bound: dict[str, int]
    states: int
    transitions: int
    seconds: float
    complete: bool  # False when a limit stopped the search: then nothing is proved for the bound
    violations: list[tuple[Violation, list[TraceStep]]] = field(default_factory=list)
    action_counts: dict[str, int] = field(default_factory=dict)
    stopped_by: str = ""
    symmetry: list[str] = field(default_factory=list)  # sorts reduced by symmetry
    not_symmetric: list[str] = field(default_factory=list)  # sorts too large for it (MAX_PERMUTATIONS)
    memory_states: int | None = None  # the states the memory budget holds
    reached: list[State] | None = None  # with keep_states: every state kept (one per orbit)
    processes: int = 1  # the search ran in this many processes (parallel_explore)

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds else 0.0

    @property
    def transitions_per_second(self) -> float:
        return self.transitions / self.seconds if self.seconds else 0.0

    @property
    def never_enabled(self) -> list[str]:
        """Actions no explored state enables: at this bound the search says nothing about them."""
        return [a for a, n in self.action_counts.items() if n == 0]

    def never_enabled_warning(self) -> str | None:
        if not self.never_enabled:
            return None
        where = "at this bound" if self.complete else "in the explored part"
        return f"never enabled {where}: {', '.join(self.never_enabled)}"


# Symmetry tables: one index map per permutation, as large as the state; each state visited is
# canonicalised against every one. Past this many permutations (7!) the tables' memory and the cost
# per state outgrow what the reduction saves: the largest sorts are left unreduced (and said so).
MAX_PERMUTATIONS = 5040
# Without --max-memory: the states kept may use at most this share of the memory available.
MEMORY_SHARE = 0.5


def symmetric_sorts(sizes: dict[str, int], wanted: list[str] | None = None) -> tuple[list[str], list[str]]:
    """(sorts reduced by symmetry, sorts left out): the smallest first, while the permutations of
    all of them together stay within MAX_PERMUTATIONS."""
    chosen, left, total = [], [], 1
    for s in sorted((s for s in (wanted if wanted is not None else sizes) if sizes[s] > 1), key=lambda s: sizes[s]):
        n = math.factorial(sizes[s])
        if total * n <= MAX_PERMUTATIONS:
            chosen.append(s)
            total *= n
        else:
            left.append(s)
    return chosen, left


def available_memory() -> int:
    """Bytes of memory available now (Linux: MemAvailable), or 4 GiB when it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


def state_bytes(s: State) -> int:
    """About what one stored state costs: its tuples, and its entries in the visited set, the parent
    map and the queue."""
    return sys.getsizeof(s) + sum(sys.getsizeof(t) for t in s) + 3 * 100


def _digest(s: State) -> int:
    """A digest of a state that is the same in every process (see the module docstring)."""
    return zlib.crc32(marshal.dumps(s, 2))  # version 2: no back-references, which depend on sharing


def _one(i: int) -> Callable[[tuple], tuple]:
    """A 1-tuple of position i (itemgetter with one index returns the bare item)."""
    def pick(t: tuple, i: int = i) -> tuple:  # i a local: the hot path's fastest read
        return (t[i],)
    return pick


class Symmetry:
    """Permutations of each sort's elements, precomputed as index and value maps per symbol."""

    def __init__(self, it: Interpreter, sorts: list[str] | None = None) -> None:
        u = it.u
        sorts, self.left_out = symmetric_sorts(u.sizes, sorts)
        self.sorts = sorts
        per_sort = [list(itertools.permutations(range(u.sizes[s]))) for s in sorts]
        self.maps: list[list[tuple[int, Callable[[tuple], tuple], dict | None]]] = []
        for combo in itertools.product(*per_sort):
            if all(p == tuple(range(len(p))) for p in combo):
                continue  # identity
            perm = dict(zip(sorts, combo))
            entry: list[tuple[int, Callable[[tuple], tuple], dict | None]] = []
            for name, lay in u.layout.items():
                sym = lay.symbol
                arg_perms = [perm.get(t.name) for t in sym.args]
                res_perm = perm.get(sym.result.name)
                if all(p is None for p in arg_perms) and res_perm is None:
                    continue
                # new[index(pi(args))] = pi(old[index(args)])  <=>  new[j] = pi(old[src[j]])
                src = [0] * lay.size
                for i, point in enumerate(u.points(name)):
                    moved = tuple(p[a] if p is not None else a for p, a in zip(arg_perms, point))
                    src[u.index(name, moved)] = i
                pick: Callable[[tuple], tuple] = operator.itemgetter(*src) if len(src) > 1 else _one(src[0])
                remap: dict | None = None if res_perm is None else {None: None, **{v: res_perm[v] for v in range(len(res_perm))}}
                entry.append((lay.index, pick, remap))
            self.maps.append(entry)

    def canonical(self, s: State) -> State:
        best, best_h = s, _digest(s)
        for entry in self.maps:
            t = list(s)
            for k, pick, remap in entry:
                t[k] = pick(s[k]) if remap is None else tuple(map(remap.__getitem__, pick(s[k])))
            c = tuple(t)
            h = _digest(c)
            if h < best_h:
                best, best_h = c, h
        return best


def explore(it: Interpreter, *, max_states: int | None = None, max_seconds: float | None = None,
            symmetry: bool = True, progress: Callable[[int, int], None] | None = None,
            keep_going: bool = False, max_memory: int | None = None, ground: bool = True,
            keep_states: bool = False, jobs: int = 1) -> ExploreResult:
    """BFS over the reachable states. Stops at the first violation unless keep_going, which goes on to
    find the first (shortest-trace) violation of every invariant; stops (incomplete) at max_states,
    max_seconds, or when the states kept would pass max_memory bytes (default: half of what is
    available). With ground (the default) a bound small enough is explored by the ground-compiled
    spec (ground.py: the same states, several times faster); ground=False, or a larger bound, takes
    the general path below. jobs > 1: in that many processes where the search splits (see
    parallel_explore), with the same result."""
    if ground:
        g = _ground(it, symmetry)
        if g is not None:
            lim = Limits(max_states, max_seconds, max_memory)
            if jobs > 1 and max_states is None and not keep_states:
                from .parallel_explore import explore_in_parts

                r = explore_in_parts(it, g, lim, symmetry, keep_going, jobs)
                if r is not None:
                    return r
            return _explore_ground(it, g, lim, symmetry, progress, keep_going, keep_states)
    sym = Symmetry(it) if symmetry else None
    canon = sym.canonical if sym and sym.maps else (lambda s: s)
    start = time.perf_counter()
    parent: dict[State, tuple[State | None, str, tuple[Any, ...]]] = {}
    queue: deque[State] = deque()
    result = ExploreResult(bound_of(it.u), 0, 0, 0.0, True)
    if sym is not None:
        result.symmetry, result.not_symmetric = list(sym.sorts), list(sym.left_out)
    budget = max_memory if max_memory is not None else int(available_memory() * MEMORY_SHARE)
    most_states: int | None = None  # from the first state's size: the memory budget in states
    counts = {n: 0 for n in it.actions}
    seen_broken: set[str] = set()
    noop = {n for n, ca in it.actions.items() if not ca.action.modifies}
    changing = [(n, ca.enabled, ca.apply) for n, ca in it.actions.items() if n not in noop]

    raw_seen: set[State] = set()  # successors already canonicalised: most transitions revisit one

    def visit(s: State, via: tuple[State | None, str, tuple[Any, ...]]) -> None:
        if s in raw_seen:
            return
        raw_seen.add(s)
        c = canon(s)
        if c in parent:
            return
        parent[c] = via
        queue.append(c)
        for v in it.check(c) if not it.all_hold(c) else ():
            if v.invariant not in seen_broken:
                seen_broken.add(v.invariant)
                trace = _trace(it, parent, c, canon)
                # The blame of the trace's last state, not of the stored representative (a
                # permutation of it): the elements it names are the ones the trace shows.
                v = next(iter(it.check(trace[-1].state, [v.invariant])), v)
                result.violations.append((v, trace))

    for s0 in it.initial_states():
        visit(s0, (None, "init", ()))
        if most_states is None:
            most_states = max(1, budget // state_bytes(s0))
    result.memory_states = most_states
    while queue:
        if result.violations and not keep_going:
            result.complete, result.stopped_by = False, "first violation"
            break
        if max_states is not None and len(parent) >= max_states:
            result.complete, result.stopped_by = False, f"state limit {max_states}"
            break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            result.complete, result.stopped_by = False, f"time limit {max_seconds:g} s"
            break
        if most_states is not None and len(parent) >= most_states:
            result.complete, result.stopped_by = False, (
                f"memory limit {budget / 2**20:,.0f} MiB (about {most_states:,} states of this bound)")
            break
        s = queue.popleft()
        if not _expand(s, it, noop, changing, counts, result, raw_seen, visit, start, max_seconds):
            result.complete, result.stopped_by = False, f"time limit {max_seconds:g} s (within one state's successors)"
            break
        if progress and len(parent) % 20000 < 50:
            progress(len(parent), len(queue))
    result.states = len(parent)
    result.seconds = time.perf_counter() - start
    result.action_counts = counts
    if keep_states:
        result.reached = list(parent)
    return result


def _expand(s: State, it: Interpreter, noop: set[str], changing: list, counts: dict[str, int], result: ExploreResult,
            raw_seen: set[State], visit: Callable, start: float, max_seconds: float | None) -> bool:
    """Every transition out of s; False when the time limit passed on the way (a large bound can
    have hundreds of thousands of transitions out of one state)."""
    for n in noop:
        k = sum(1 for _ in it.actions[n].enabled(s))
        counts[n] += k
        result.transitions += k
    for n, enabled, apply in changing:
        k = 0
        for args in enabled(s):
            k += 1
            s2 = apply(s, *args)
            if s2 not in raw_seen:  # most transitions revisit a known successor: skip the call
                visit(s2, (s, n, args))
            if k & 15 == 0 and max_seconds is not None and time.perf_counter() - start > max_seconds:
                counts[n] += k
                result.transitions += k
                return False
        counts[n] += k
        result.transitions += k
    return True


def _trace(it: Interpreter, parent: dict, s: State, canon: Callable[[State], State]) -> list[TraceStep]:
    """The shortest path to s that BFS found. Stored states are canonical representatives, so the
    path is replayed from a real initial state, re-finding at each step the arguments that reach the
    recorded successor's orbit: the trace shows concrete states, each the action's true result."""
    path = []
    cur: State | None = s
    while cur is not None:
        prev, name, args = parent[cur]
        path.append((cur, prev, name, args))
        cur = prev
    path.reverse()
    first = path[0][0]
    state = next(s0 for s0 in it.initial_states() if canon(s0) == first)
    steps = [TraceStep("init", "", state)]
    for cur, _prev, name, _args in path[1:]:
        for a2 in it.action(name).enabled(state):
            nxt = it.apply(state, name, a2)
            if canon(nxt) == cur:
                steps.append(TraceStep(name, it.show_args(name, a2), nxt))
                state = nxt
                break
        else:  # pragma: no cover - would mean canon is not a function of the orbit
            raise AssertionError(f"cannot replay {name} on the trace")
    return steps


# ---------------------------------------------------------------- the ground path


@dataclass
class Limits:
    max_states: int | None
    max_seconds: float | None
    max_memory: int | None
    halt: Any = None  # an Event another process sets when it found a violation (parallel_explore)


def _ground(it: Interpreter, symmetry: bool) -> Ground | None:
    """The spec compiled for flat states at it's bound, or None when the bound is too large for it."""
    perms: list[dict[str, tuple[int, ...]]] = []
    if symmetry:
        sorts, _ = symmetric_sorts(it.u.sizes)
        per_sort = [list(itertools.permutations(range(it.u.sizes[s]))) for s in sorts]
        for combo in itertools.product(*per_sort):
            if any(p != tuple(range(len(p))) for p in combo):  # the identity needs no function
                perms.append(dict(zip(sorts, combo)))
    try:
        return Ground(it.u, [(i.name, i.formula) for i in it.invariants], dict(it.spec.actions), perms)
    except TooLarge:
        return None


def _explore_ground(it: Interpreter, g: Ground, lim: Limits, symmetry: bool,
                    progress: Callable[[int, int], None] | None, keep_going: bool, keep_states: bool,
                    initial: list[Flat] | None = None) -> ExploreResult:
    """explore() over flat states with the ground-compiled spec: the same search, step for step;
    from the given initial states (flat) instead of all of them, for parallel_explore."""
    canon = g.canonical
    start = time.perf_counter()
    result = ExploreResult(bound_of(it.u), 0, 0, 0.0, True)
    if symmetry:
        result.symmetry, result.not_symmetric = symmetric_sorts(it.u.sizes)
    budget = lim.max_memory if lim.max_memory is not None else int(available_memory() * MEMORY_SHARE)
    parent: dict[Flat, tuple[Flat | None, int, int]] = {}  # state -> (predecessor, action, instance)
    raw_seen: set[Flat] = set()
    queue: deque[Flat] = deque()
    seen_broken: set[str] = set()
    counts = [0] * len(g.actions)

    broken: set[Flat] = set()  # states where some invariant fails: their successors are checked in full

    def visit(f: Flat, via: tuple[Flat | None, int, int]) -> None:
        raw_seen.add(f)
        c = canon(f)
        if c in parent:
            return
        parent[c] = via
        raw_seen.add(c)
        queue.append(c)
        prev, i, k = via
        # Invariants are symmetric (no constant names an element), so f answers for c; from a state
        # where all held, only those the step may have changed are checked.
        check = g.all_hold if prev is None or prev in broken else g.actions[i].checks[k]
        if check(f):  # type: ignore[misc]  # an instance that made a successor has its check
            return
        broken.add(c)
        if lim.halt is not None:
            lim.halt.set()
        for name in g.failing(c):
            if name not in seen_broken:
                seen_broken.add(name)
                trace = _ground_trace(it, g, parent, c, canon)
                v = it.check(trace[-1].state, [name])[0]  # blamed in the trace's state (see explore)
                result.violations.append((v, trace))

    if initial is None:
        initial = [g.flatten(s0) for s0 in it.initial_states()]
    most_states = max(1, budget // state_bytes(initial[0])) if initial else None
    result.memory_states = most_states
    for f0 in initial:
        if f0 not in raw_seen:
            visit(f0, (None, -1, -1))
    expand = g.expander()
    while queue:
        stop = _stop(result, keep_going, lim, len(parent), most_states, budget, start)
        if stop:
            result.complete, result.stopped_by = False, stop
            break
        expand(queue.popleft(), raw_seen, visit, counts)
        if progress and len(parent) % 20000 < 50:
            progress(len(parent), len(queue))
    result.states = len(parent)
    result.transitions = sum(counts)
    result.seconds = time.perf_counter() - start
    result.action_counts = {ga.name: n for ga, n in zip(g.actions, counts)}
    if keep_states:
        result.reached = [g.nest(c) for c in parent]
    return result


def _stop(result: ExploreResult, keep_going: bool, lim: Limits, states: int, most_states: int | None,
          budget: int, start: float) -> str:
    """Why the search stops before the next state, or "" to go on."""
    if result.violations and not keep_going:
        return "first violation"
    if lim.halt is not None and lim.halt.is_set() and not keep_going:
        return "first violation (in another process)"
    if lim.max_states is not None and states >= lim.max_states:
        return f"state limit {lim.max_states}"
    if lim.max_seconds is not None and time.perf_counter() - start > lim.max_seconds:
        return f"time limit {lim.max_seconds:g} s"
    if most_states is not None and states >= most_states:
        return f"memory limit {budget / 2**20:,.0f} MiB (about {most_states:,} states of this bound)"
    return ""


def _ground_trace(it: Interpreter, g: Ground, parent: dict, c: Flat, canon: Callable[[Flat], Flat]) -> list[TraceStep]:
    """As _trace, over flat states: replayed from a real initial state, each step re-finding the
    instance whose successor is in the recorded state's orbit; the steps show nested states."""
    path = []
    cur: Flat | None = c
    while cur is not None:
        prev, i, _k = parent[cur]
        path.append((cur, i))
        cur = prev
    path.reverse()
    first = path[0][0]
    state = next(f for f in map(g.flatten, it.initial_states()) if canon(f) == first)
    steps = [TraceStep("init", "", g.nest(state))]
    for cur, i in path[1:]:
        ga = g.actions[i]
        k, state = next((k, f) for k, f in ga.successors(state) if canon(f) == cur)
        steps.append(TraceStep(ga.name, it.show_args(ga.name, ga.instances[k]), g.nest(state)))
    return steps
