"""State-level refinement: is the implementation's state after a step reachable from the spec state
before it by some sequence of spec actions? (docs/conformance.md, "Conformance levels")

An adapter at level `state` shows its abstract state but no event log, so the harness searches for
the spec steps itself, with the interpreter: every step it tries is a spec action whose guard holds
where it is taken, and the last state must equal the implementation's, point for point (the TLB is
ghost state: never compared). The search is bounded three ways, and a verdict says so:

- **elements**: each parameter ranges only over the elements the step changed (the arguments and
  the sort-valued values of every point where the two states differ), the operation's own
  arguments, a spare slot and one page each VM holds (`Reach.elements`); a parameter a guard pins
  to a symbol (`p2m(v, g) = m`) is read off the state instead;
- **length**: at most `Bound.actions` actions;
- **work**: at most `Bound.states` states expanded, best first by how many points still differ
  (`_Search`).

The guest's own page-table edits are not searched over: as at level full, each (vm, root, gva)
whose guest mapping differs from the implementation's is a guest_map (or guest_unmap) to exactly
the implementation's values, which the search may place anywhere in the sequence.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from dmmcheck.model.compile import compile_enabled_within, compile_formula, conjuncts
from dmmcheck.model.interp import Interpreter
from dmmcheck.model.state import State
from dmmcheck.spec import ast as A

from .binding import (G_TABLE, G_UPPER, GMAP, GUEST_EDITS, GUEST_MAP, GUEST_MAP_UNSYNC, GUEST_PATH, GUEST_UNMAP,
                      GUEST_UNMAP_UNSYNC, GUEST_UPPER, MFN, OUTPUTS, SLOT, VM)
from .operations import _pins

# How far uphill the lookahead's first action may go (points): freeing a page for the next
# allocation changes its descriptor, its pool lists and a slot.
UPHILL = 12
# The sorts of which one unused element joins the search, and of which each VM lends one it holds
# (Reach.elements).
SPARE = (SLOT,)
BORROW = (MFN,)
# A point about the guest's own elements weighs this many points about resources (Reach.weights).
HEAVY = 8
# Regression: the most promising disabled actions tried at a ridge, and the states each may take.
REGRESS_WANTED = 6
REGRESS_STATES = 40
# Searches worth remembering (states expanded), and how many are kept.
CACHE_FROM, CACHE_SIZE = 20, 32


@dataclass(frozen=True)
class Bound:
    """How far the search looks. `actions`: the longest sequence (a VM torn down gives back every
    page it holds, one action each); `states`: the states expanded before it gives up."""

    actions: int = 200
    states: int = 5000


@dataclass
class Outcome:
    steps: list[tuple[str, tuple[Any, ...]]] | None  # None: no sequence found
    state: State | None  # the state the steps reach (with the spec's ghost TLB)
    expanded: int = 0
    exhausted: bool = False  # no sequence: every candidate within the bound was tried
    seconds: float = 0.0


@dataclass
class _Plan:
    """How one action's arguments are chosen: `free` parameters from the step's elements, `pinned`
    ones read off the state (symbol index, [(argument position, stride)]), in dependency order."""

    name: str
    types: tuple[A.TypeRef, ...]
    free: list[int]
    pinned: list[tuple[int, int, list[tuple[int, int]]]]
    guard: Any
    apply: Any
    within: Any  # the enabled argument tuples over given candidates (compile_enabled_within)


@dataclass
class Reach:
    it: Interpreter
    ghost: tuple[str, ...]
    bound: Bound = field(default_factory=Bound)
    # Each action taken costs this many points (weighted best first: a long detour through states
    # near the target loses to a shorter path from farther).
    weight: int = 2

    def __post_init__(self) -> None:
        u = self.it.u
        ghost_ix = {u.layout[n].index for n in self.ghost}
        self.keys = [lay.index for lay in u.layout.values() if lay.index not in ghost_ix]
        self.types = {lay.index: lay.symbol for lay in u.layout.values()}
        self.plans: list[_Plan] = []
        for name, ca in self.it.actions.items():
            act = ca.action
            if name in GUEST_EDITS or not {u.layout[n].index for n in act.modifies} - ghost_ix:
                continue  # the guest's edits come from the diff; a ghost-only action changes nothing compared
            self.plans.append(self._plan(name, ca))
        pos = {k: p for p, k in enumerate(self.keys)}
        self.modified = {name: tuple(sorted(pos[u.layout[n].index] for n in ca.action.modifies
                                            if u.layout[n].index in pos)) for name, ca in self.it.actions.items()}
        self.gmap_ix = [u.layout[n].index for n in GMAP]
        self.init = self.it.initial_state()
        self._cache: OrderedDict[tuple, Outcome] = OrderedDict()
        self.conjuncts = {name: [compile_formula(u, c, tuple(p.name for p in ca.action.params), f"{name} guard")
                                 for g in ca.action.guards for c in conjuncts(g)]
                          for name, ca in self.it.actions.items()}
        # A point about a resource the implementation chooses (a machine page's descriptor and
        # pool lists, a slot) counts for less than a point about the guest's own elements: a
        # page moved to another machine page through a slot shuffles resources on the way,
        # and the search should see the move as progress.
        outputs = {p.type.name for name, outs in OUTPUTS.items() if name in self.it.actions
                   for p in self.it.actions[name].action.params if p.name in outs}
        self.weights = [1 if any(t.name in outputs for t in self.types[k].args) else HEAVY for k in self.keys]
        # the guest's walks, each symbol with the edit that changes it: the tables read, those above the leaf
        self.gtabs = [(sym, edit) for sym, edit in ((G_TABLE, GUEST_PATH), (G_UPPER, GUEST_UPPER))
                      if sym in u.layout and edit in self.it.actions]

    def _plan(self, name: str, ca: Any) -> _Plan:
        act, u = ca.action, self.it.u
        pos = {p.name: i for i, p in enumerate(act.params)}
        pins = {p: s for p, s in _pins(act.guards).items() if p in pos}
        resolved: set[str] = {p.name for p in act.params if p.name not in pins}
        pinned = []
        progress = True
        while progress:  # a pin can use another pin's value (share_rehome: m from p2m(w, g))
            progress = False
            for p, sym in pins.items():
                if p in resolved or not all(isinstance(a, A.Var) and a.name in resolved for a in sym.args):
                    continue
                lay = u.layout[sym.name]
                pinned.append((pos[p], lay.index, [(pos[a.name], st) for a, st in zip(sym.args, lay.strides)]))  # type: ignore[union-attr]
                resolved.add(p)
                progress = True
        free = [i for i, p in enumerate(act.params) if p.name in resolved and i not in {q for q, _, _ in pinned}]
        free += [pos[p] for p in pins if p not in resolved]  # a pin in a cycle: enumerated instead
        return _Plan(name, tuple(p.type for p in act.params), sorted(free), pinned, ca.guard, ca.apply,
                     compile_enabled_within(u, act))

    # ---------------------------------------------------------------- elements
    def elements(self, before: State, target: State, given: dict[str, set[Any]]) -> dict[str, set[Any]]:
        """The elements the search draws arguments from, by sort: those the step changed (the
        arguments, and sort-valued values, of every point where the two states differ), those the
        operation names (`given`), and two kinds the step may use and give back, leaving no trace
        in either state:
        - a spare of each SPARE sort: the lowest one `before` does not use (a slot a page passes
          through on its way from one machine page to another; unused elements are
          interchangeable, so one stands for all);
        - for each VM, one BORROW element it holds that nothing else refers to, with the point
          that holds it (a machine page a VM out of memory evicts, pages other gfns in and out
          through, and gets back)."""
        out: dict[str, set[Any]] = {s: set(v) for s, v in given.items()}
        sorts = self.it.u.sizes
        for _k, sym, point, res, a, b in self._differences(before, target):
            for t, v in zip(sym.args, point):
                out.setdefault(t.name, set()).add(v)
            if res is not None:
                out.setdefault(res, set()).update(v for v in (a, b) if v is not None)
        used, held = self._mentions(before)
        for sort in SPARE:
            spare = next((e for e in range(sorts[sort]) if e not in used.get(sort, ())), None)
            if spare is not None:
                out.setdefault(sort, set()).add(spare)
        for sort in BORROW:
            for v in sorted(out.get(VM, ())):
                # the lowest element of the sort that a point of v names in both states, and
                # nothing else names
                for e, (k, point) in sorted(held.get(sort, {}).items()):
                    sym = self.types[k]
                    if e not in out.get(sort, ()) and (VM, v) in zip((t.name for t in sym.args), point) \
                            and target[k][self.it.u.index(sym.name, point)] == e:
                        for t, x in zip(sym.args, point):
                            out.setdefault(t.name, set()).add(x)
                        out.setdefault(sort, set()).add(e)
                        break
        return out

    def _mentions(self, s: State) -> tuple[dict[str, set[Any]], dict[str, dict[Any, tuple[int, tuple]]]]:
        """The elements, by sort, that appear in a point or value where s differs from the initial
        state; and the elements named as the value of exactly one point (with that point)."""
        used: dict[str, set[Any]] = {}
        once: dict[str, dict[Any, tuple[int, tuple] | None]] = {}
        for k, sym, point, res, a, _b in self._differences(s, self.init):
            for t, v in zip(sym.args, point):
                used.setdefault(t.name, set()).add(v)
            if res is not None and a is not None:
                used.setdefault(res, set()).add(a)
                seen = once.setdefault(res, {})
                seen[a] = (k, point) if a not in seen else None
        held = {sort: {e: at for e, at in m.items() if at is not None} for sort, m in once.items()}
        return used, held  # type: ignore[return-value]

    def _differences(self, x: State, y: State) -> Iterator[tuple[int, Any, tuple, str | None, Any, Any]]:
        """Every point where x and y differ: (symbol's index, symbol, point, the sort of its value
        or None, x's value, y's value)."""
        sorts = self.it.u.sizes
        for k in self.keys:
            if x[k] == y[k]:
                continue
            sym = self.types[k]
            res = sym.result.name if sym.result.name in sorts else None
            for i, (a, b) in enumerate(zip(x[k], y[k])):
                if a != b:
                    yield k, sym, self.it.u.point(sym.name, i), res, a, b

    # ---------------------------------------------------------------- the search
    def search(self, before: State, target: State, given: dict[str, set[Any]]) -> Outcome:
        """A sequence of spec actions from `before` to `target` (compared without the ghost).
        Outcomes are remembered: shrinking a failure replays its failing step many times."""
        key = (before, tuple(target[k] for k in self.keys), tuple(sorted((s, tuple(sorted(v))) for s, v in given.items())))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        out = _Search(self, before, target, given).run()
        if out.expanded > CACHE_FROM:
            self._cache[key] = out
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return out

    def _candidates(self, plan: _Plan, elems: dict[str, set[Any]], before: State,
                    target: State) -> tuple[tuple[Any, ...], ...]:
        """Each parameter's candidates (a parameter a guard binds ignores its own)."""
        # The points where a pin's symbol takes a changed element are candidates for the pin's
        # own arguments (the merge of (v1, g1) onto m1: m1 changed, p2m(v1, g1) = m1 did not).
        extra: dict[int, set[Any]] = {}
        for i, sym_ix, where in plan.pinned:
            want = elems.get(plan.types[i].name, set())
            for s in (before, target):
                for k, v in enumerate(s[sym_ix]):
                    if v in want:
                        for j, st in where:
                            extra.setdefault(j, set()).add(k // st % self.it.u.domain_size(plan.types[j]))
        out = []
        for i, t in enumerate(plan.types):
            if t.name == A.BOOL:
                out.append((False, True))
            elif t.name in elems or t.name in self.it.u.sizes:
                out.append(tuple(sorted(elems.get(t.name, set()) | extra.get(i, set()))))
            else:  # an enum the operation does not name: every value
                out.append(tuple(range(self.it.u.domain_size(t))))
        return tuple(out)

    def _complete(self, plan: _Plan, cands: tuple[tuple[Any, ...], ...], s: State,
                  elems: dict[str, set[Any]]) -> Iterator[tuple[Any, ...]]:
        """Every argument tuple over the candidates, enabled or not: a pinned parameter read off
        `s` or, where the state has none there, every element of its sort."""
        for combo in itertools.product(*(cands[i] for i in plan.free)):
            args: list[Any] = [None] * len(plan.types)
            for i, v in zip(plan.free, combo):
                args[i] = v
            options = []
            for i, sym_ix, where in plan.pinned:
                v = s[sym_ix][sum(args[j] * st for j, st in where)] \
                    if all(args[j] is not None for j, _ in where) else None
                if v is None:
                    options.append((i, tuple(sorted(elems.get(plan.types[i].name, ())))))
                else:
                    args[i] = v
            for more in itertools.product(*(vals for _, vals in options)):
                for (i, _), v in zip(options, more):
                    args[i] = v
                yield tuple(args)

    def _successors(self, s: State, target: State, templates: list[tuple[_Plan, tuple]],
                    edits: list[int], paths: Sequence[tuple[str, str, int]] = ()
                    ) -> Iterator[tuple[str, tuple[Any, ...], State]]:
        for plan, cands in templates:
            for args in plan.within(s, cands):
                yield plan.name, args, plan.apply(s, *args)
        lay = self.it.u.layout
        for sym, edit, k in paths:  # the tables the guest's walks read, to the implementation's
            now = target[lay[sym].index][k]
            if now != s[lay[sym].index][k]:
                args = self.it.u.point(sym, k) + (now,)
                if self.it.is_enabled(s, edit, args):
                    yield edit, args, self.it.apply(s, edit, args)
        for k in edits:  # the guest's edits, to exactly the implementation's values (trapping or not)
            now = tuple(target[i][k] for i in self.gmap_ix)
            if now == tuple(s[i][k] for i in self.gmap_ix):
                continue
            point = self.it.u.point(GMAP[0], k)
            names = (GUEST_UNMAP, GUEST_UNMAP_UNSYNC) if now[0] is None else (GUEST_MAP, GUEST_MAP_UNSYNC)
            args = point if now[0] is None else point + now
            for name in names:
                if name in self.it.actions and self.it.is_enabled(s, name, args):
                    yield name, args, self.it.apply(s, name, args)

    def _path_points(self, before: State, target: State) -> list[tuple[str, str, int]]:
        """The (vm, root, gva, table gfn) points whose walk reads differently, with the edit that
        changes each (found once a search: no spec step but the guest's edits changes them)."""
        out = []
        for sym, edit in self.gtabs:
            i = self.it.u.layout[sym].index
            b, t = before[i], target[i]
            out += [] if b == t else [(sym, edit, k) for k in range(len(t)) if b[k] != t[k]]
        return out

    def _edit_points(self, before: State, target: State) -> list[int]:
        """The (vm, root, gva) points whose guest mapping differs."""
        first = self.gmap_ix[0]
        return [k for k in range(len(before[first]))
                if any(before[i][k] != target[i][k] for i in self.gmap_ix)]


class _Budget(Exception):
    pass


class _Search:
    """One search. Best first by distance (weighted points still differing), then by length, with
    two ways over a ridge, tried in turn at a state none of whose successors is nearer:

    - lookahead: the two-action successors that end nearer than the state (freeing a resource
      for the next allocation goes uphill before it goes down: a swap-out makes room for a
      swap-in);
    - regression: an action that would bring the state nearer but is not enabled, enabled by a
      short search that makes its failing guard conjuncts true (a page evicted so that another
      can be paged in and out of the swap device, then brought back).
    """

    def __init__(self, reach: Reach, before: State, target: State, given: dict[str, set[Any]]) -> None:
        self.r, self.before, self.target = reach, before, target
        self.t0 = time.perf_counter()
        self.run_ = _Run(reach, target)
        self.expanded = 0
        self.tick = itertools.count()
        self.heap: list[tuple[int, int, int, int, tuple, Any]] = []
        self.seen: set[tuple[int, ...]] = set()
        self.given = given
        self.best = 1 << 62  # the nearest distance expanded so far: ridges are crossed from there

    def run(self) -> Outcome:
        root = self.run_.node(self.before)
        if root[1] == self.run_.goal:
            return Outcome([], self.before, 0, True, self._took())
        r = self.r
        self.elems = r.elements(self.before, self.target, self.given)
        self.templates = [(plan, r._candidates(plan, self.elems, self.before, self.target)) for plan in r.plans]
        self.edits = r._edit_points(self.before, self.target)
        self.paths = r._path_points(self.before, self.target)
        self.seen.add(root[1])
        self._push(root, 0, None)
        try:
            while self.heap:
                _, stage, depth, _, node, path = heapq.heappop(self.heap)
                if depth + 1 > r.bound.actions:
                    continue
                if stage == 0:
                    self._expand(node, depth, path)
                elif stage == 1:
                    if not self._lookahead(node, depth, path) and depth + 2 <= r.bound.actions:
                        self._regress(node, depth, path)
        except _Found as f:
            return Outcome(_unwind(f.path), f.node[0], self.expanded, True, self._took())
        except _Budget:
            return Outcome(None, None, self.expanded, False, self._took())
        return Outcome(None, None, self.expanded, True, self._took())

    def _took(self) -> float:
        return time.perf_counter() - self.t0

    def _count(self) -> None:
        if self.expanded >= self.r.bound.states:
            raise _Budget()
        self.expanded += 1

    def _push(self, node: tuple, depth: int, path: Any, stage: int = 0) -> None:
        """Queue a state (stage 0), or a state's ridge crossing (stage 1: before every state as far
        as it, after every nearer one)."""
        prio = 2 * (node[3] + self.r.weight * depth) - stage
        heapq.heappush(self.heap, (prio, stage, depth, next(self.tick), node, path))

    def _offer(self, node: tuple, depth: int, path: Any) -> bool:
        if node[1] in self.seen:
            return False
        self.seen.add(node[1])
        if node[1] == self.run_.goal:
            raise _Found(path, node)
        self._push(node, depth, path)
        return True

    def successors(self, node: tuple) -> Iterator[tuple[str, tuple[Any, ...], tuple]]:
        run, mod = self.run_, self.r.modified
        for name, args, s2 in self.r._successors(node[0], self.target, self.templates, self.edits, self.paths):
            yield name, args, run.child(node, mod[name], s2)

    def _expand(self, node: tuple, depth: int, path: Any) -> None:
        self._count()
        for name, args, child in self.successors(node):
            self._offer(child, depth + 1, (path, name, args))
        if node[3] <= self.best:  # a ridge is crossed from the nearest states only (else every side
            self.best = node[3]  # step of a plateau would pay for a lookahead)
            self._push(node, depth, path, stage=1)

    def _lookahead(self, node: tuple, depth: int, path: Any) -> bool:
        """The two-action successors nearer than `node`; whether there was one."""
        h, better = node[3], False
        if depth + 2 > self.r.bound.actions:
            return True
        for name, args, first in list(self.successors(node)):
            if not h <= first[3] <= h + UPHILL:
                continue
            self._count()
            for name2, args2, child in self.successors(first):
                if child[3] < h and self._offer(child, depth + 2, ((path, name, args), name2, args2)):
                    better = True
        return better

    def _regress(self, node: tuple, depth: int, path: Any) -> None:
        """Actions that would bring `node` nearer if they were enabled, each enabled by a short
        best-first search on how many of its guard conjuncts fail."""
        r, s, h = self.r, node[0], node[3]
        wanted = []
        for plan, tpls in self.templates:
            for args in r._complete(plan, tpls, s, self.elems):
                if plan.guard(s, *args):
                    continue  # enabled: a plain successor already
                after = self.run_.child(node, r.modified[plan.name], plan.apply(s, *args))
                if after[3] < h:
                    wanted.append((after[3], plan.name, args))
        wanted.sort()
        for _, name, args in wanted[:REGRESS_WANTED]:
            self._enable(node, depth, path, name, args)

    def _enable(self, node: tuple, depth: int, path: Any, name: str, args: tuple[Any, ...]) -> None:
        r = self.r
        conj = r.conjuncts[name]
        apply = r.it.actions[name].apply

        def failing(s: State) -> int:
            return sum(1 for c in conj if not c(s, *args))

        tick = itertools.count()
        queue = [(failing(node[0]), node[3], 0, next(tick), node, path)]
        seen: set[tuple[int, ...]] = {node[1]}
        for _ in range(REGRESS_STATES):
            if not queue:
                return
            f, _, d, _, x, p = heapq.heappop(queue)
            if f == 0:
                after = self.run_.child(x, r.modified[name], apply(x[0], *args))
                self._offer(after, depth + d + 1, (p, name, args))
                return
            if depth + d + 2 > r.bound.actions:
                continue
            self._count()
            for n2, a2, y in self.successors(x):
                if y[1] not in seen:
                    seen.add(y[1])
                    heapq.heappush(queue, (failing(y[0]), y[3], d + 1, next(tick), y, (p, n2, a2)))


class _Found(Exception):
    def __init__(self, path: Any, node: tuple) -> None:
        self.path, self.node = path, node


class _Run:
    """One search's bookkeeping. A node is (state, key, per-entry distances, distance): the key
    names each compared entry's value by a small int, so states hash and compare in time of the
    entries an action rewrote, and the distance is updated over those entries alone."""

    def __init__(self, reach: Reach, target: State) -> None:
        self.keys, self.target, self.weights = reach.keys, target, reach.weights
        self.codes: list[dict[tuple, int]] = [{} for _ in self.keys]
        self.diffs: list[dict[int, int]] = [{} for _ in self.keys]
        self.goal = tuple(self.code(p, target[k]) for p, k in enumerate(self.keys))

    def code(self, p: int, entry: tuple) -> int:
        return self.codes[p].setdefault(entry, len(self.codes[p]))

    def diff(self, p: int, c: int, entry: tuple) -> int:
        d = self.diffs[p].get(c)
        if d is None:
            t = self.target[self.keys[p]]
            d = self.diffs[p][c] = self.weights[p] * sum(1 for a, b in zip(entry, t) if a != b)
        return d

    def node(self, s: State) -> tuple:
        key = tuple(self.code(p, s[k]) for p, k in enumerate(self.keys))
        dist = tuple(self.diff(p, c, s[k]) for p, (k, c) in enumerate(zip(self.keys, key)))
        return s, key, dist, sum(dist)

    def child(self, node: tuple, modified: tuple[int, ...], s: State) -> tuple:
        key, dist, total = list(node[1]), list(node[2]), node[3]
        for p in modified:
            e = s[self.keys[p]]
            c = key[p] = self.code(p, e)
            d = self.diff(p, c, e)
            total += d - dist[p]
            dist[p] = d
        return s, tuple(key), tuple(dist), total


def _unwind(step: Any) -> list[tuple[str, tuple[Any, ...]]]:
    out = []
    while step is not None:
        step, name, args = step
        out.append((name, args))
    return out[::-1]

