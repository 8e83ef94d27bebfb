"""The two oracles, judged at every step (docs/conformance.md).

Refinement. The implementation reports the spec actions it performed (its events). Starting from
the spec state before the step, each event must be enabled (its guard holds) and is applied; the
result must equal the implementation's abstracted state after the step, point for point. The
implementation's own choices — the mfn it allocated, whether it zapped or upgraded an spte — are
accepted exactly when the spec allows them. Two things are not the implementation's events:
- the guest's own page-table edits (a guest store that changed its tables) are read from the
  abstraction: each (vm, root, gva) whose guest mapping changed is a guest_map / guest_unmap step,
  placed right after the last event that wrote guest memory (so fills that follow see the new
  mapping, fills that precede the old) — or, when an event then is not enabled (a zap of an spte
  whose guest entry only gained the A/D bits the VMM's own walk set), after the last event;
- the TLB is ghost state: the hardware's cannot be read, so the spec's own TLB stands in for it,
  and a "hit" the hardware served is a shadow_hit if the spte allows it, else a tlb_hit.
Then every invariant of the spec is evaluated on the abstracted state (incrementally), with blame.

Observation. The ideal machine (ideal.py) makes every guest-visible change the operation makes, and
every access must give one of the outcomes it allows: the value, fault or not (#PF or #GP), error
code, CR2, the guest's A/D bits on the walk; guest memory is compared in full after every operation
that could change it other than by a load. Where the architecture allows several outcomes (a stale
TLB entry, A bits on a faulting walk) any of them is accepted, and the ideal machine then follows
the one the implementation took (docs/conformance.md, "Fair oracles").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from dmmcheck.model.incremental import IncrementalChecker
from dmmcheck.model.interp import Interpreter
from dmmcheck.model.state import State, differing

from .abstraction import ALL_PARTS, PARTS, AbstractionError, Universe, to_spec_state
from .adapter import AccessResult, Config, Observation, Operation
from .binding import (ACCESS, BALLOON_INFLATE, CR3_LOAD, G_TABLE, G_UPPER, GFN, GMAP, GUEST_MAP, GUEST_MAP_UNSYNC,
                      GUEST_PATH, GUEST_STORE_UPPER, GUEST_UNMAP, GUEST_UNMAP_UNSYNC, GUEST_UPPER, GUEST_VIEW_OPS,
                      GUEST_WALK, GVA, HITS,
                      INVLPG, MEMORY_WRITERS, MFN, P2M, ROLE, ROOT, SET_MODE, SHADOW_FILL, SHADOW_HIT, SLOT, SPTE,
                      TLB_HIT, VCPU, VCPU_ARG, VM, VM_CREATE, VM_DESTROY)
from .ideal import PAGE, Ideal, Outcome

# What abstract_state() gives besides its costly parts (abstraction.PARTS): everything
# to_spec_state reads of it.
RAW_KEYS = ("mfns", "vms", "pool", "descriptor", "p2m", "swap", "slots_used", "ballooned", "write_protected",
            "gpt_pages", "flush_pending")
COSTLY_KEYS = tuple(k for keys, _ in PARTS.values() for k in keys)


class Failure(Exception):
    """A verdict against the implementation: kind is refinement | invariant | observation | crash
    | timeout.

    `facts`: what the verdict is about, as data (what a known-divergence entry is matched on,
    divergences.py): `what` (observation: access | walk-ad | ad-bits | store | memory; invariant:
    invariant), `expected` and `observed` (an access: {outcome, error_code, cr2, value}; otherwise
    {value}), `vm`, `gva`, `gpa`, `invariants`. The runner adds the step's `step`, `operation`
    {action, args} and the vCPU's `controls` {wp, nxe, smep, smap} when the operation was issued."""

    def __init__(self, kind: str, message: str, detail: str = "", facts: dict[str, Any] | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.detail = kind, message, detail
        self.facts: dict[str, Any] = dict(facts or {})


@dataclass
class SpecStep:
    action: str
    args: tuple[Any, ...]
    inferred: bool = False  # a guest edit read from the abstraction, not an event


class Judge:
    """What the oracles compile from the spec for one universe: built once, shared by every test case."""

    def __init__(self, spec: Any, config: Config, coverage: Counter[str] | None = None) -> None:
        self.spec, self.config = spec, config
        # the scope's sort sizes, and the model's parameters (the budget) that this spec has
        # (its code shared by every scope: a campaign meets hundreds of scopes, one per test case)
        self.it = Interpreter(spec, {k: n for k, n in config.sizes().items() if k in spec.sorts or k in spec.symbols},
                              shared=True, fixed={k: v for k, v in config.fixed().items() if k in spec.symbols})
        self.inc = IncrementalChecker(self.it)
        # state no implementation shows (the spec's `ghost` symbols): tracked from the spec's own actions
        self.ghost: tuple[str, ...] = spec.ghost_symbols
        # the invariants that read ghost state: they cannot be judged on a state no spec step explains
        self.ghostly: frozenset[str] = _ghostly(spec)
        self.coverage: Counter[str] = Counter() if coverage is None else coverage  # shared across scopes
        # the costly parts of the abstract state each action's updates may change (abstraction.PARTS)
        self.touches: dict[str, frozenset[str]] = {
            name: frozenset(part for part, (_, names) in PARTS.items() if set(names) & act.modifies)
            for name, act in spec.actions.items()}
        self.touches["hit"] = self.touches.get(SHADOW_HIT, ALL_PARTS) | self.touches.get(TLB_HIT, ALL_PARTS)
        # the events after which any guest page may read otherwise than the ideal machine's copy
        # shows (a gfn remapped, or a page's content written by the VMM, not by a walk or a store)
        self.rewrites: frozenset[str] = frozenset(
            {name for name, act in spec.actions.items() if P2M in act.modifies}
            | (MEMORY_WRITERS - {GUEST_WALK, "guest_write"}))
        self.catalogue: Any = None  # the fuzzer's legality plans for this scope (operations.Catalogue), built once
        self.initial: State | None = None  # the spec's initial state in this scope, computed once
        self.reach: Any = None  # the state-level search for this scope (reach.Reach), built when first needed


_GHOSTLY: dict[int, tuple[Any, frozenset[str]]] = {}  # per spec (held, so that its id is not reused)


def _ghostly(spec: Any) -> frozenset[str]:
    """The spec's invariants that read ghost state: the same for every scope, found once per spec."""
    hit = _GHOSTLY.get(id(spec))
    if hit is None or hit[0] is not spec:
        if len(_GHOSTLY) >= 8:
            _GHOSTLY.clear()
        hit = _GHOSTLY[id(spec)] = (spec, spec.ghostly_invariants())
    return hit[1]


class Oracle:
    def __init__(self, judge: Judge, first_mfn: int = 1) -> None:
        config, spec = judge.config, judge.spec
        self.config = config
        self.it, self.inc = judge.it, judge.inc
        self.ghost, self.ghostly = judge.ghost, judge.ghostly
        self.u = self.it.u
        self.au = Universe.of(config, first_mfn)
        self.judge = judge
        if judge.initial is None:  # the same for every test case on this scope
            judge.initial = self.it.initial_state()
        self._init: State = judge.initial
        self.state = self._init
        self.ideal = Ideal(config.gfns, config.beyond_memory, config.vcpus)
        self.coverage = judge.coverage
        self.skipped: Counter[str] = Counter()  # accesses the adapter did not perform, by kind (runner.py shares one)
        self._root_ix = {r: i for i, r in enumerate(config.roots)}
        self._gva_ix = {x: i for i, x in enumerate(config.gvas)}
        self._access = {n: i for i, n in enumerate(spec.enums[ACCESS])}
        self._lay = {n: self.u.layout[n] for n in self.u.layout}
        self._flags: dict[int, dict[str, Any]] = {}
        self._reached: State | None = None  # where the last refinement that failed got to
        self.modes: dict[tuple[int, int], str] = {}  # (vm, vcpu) -> the role the guest last loaded
        # what the last step judged read (None for a part it did not read), and the state it moved to
        self._raw: tuple[State, dict[str, Any]] | None = None

    # ---------------------------------------------------------------- the abstraction
    def parts_for(self, op: Operation, obs: Observation) -> frozenset[str]:
        """The costly parts of the abstract state this step may have changed, by what it reports:
        each event's action's updates (the spec's), and the guest's view wherever guest memory may
        have been written (a store, a memory-writing event) or the operation changes what walks give.
        An implementation that changes a part it does not report is caught by the next full read
        (Runner: every READBACK_GUARD steps and at the end of a test case)."""
        touches, out = self.judge.touches, frozenset()
        for name, args in obs.events:
            out |= touches.get(name, frozenset() if name == "guest_write" else ALL_PARTS)
            if name in MEMORY_WRITERS or name == "hit" and args.get("a") == "write":
                out |= {"guest"}
        if obs.guest_writes or op.args.get("a") == "write" or op.action in GUEST_VIEW_OPS:
            out |= {"guest"}
        acc = obs.access
        if acc is not None and (acc.fault or acc.oom or acc.skipped or not obs.events
                                or any(n != "hit" for n, _ in obs.events)):
            out |= {"guest"}  # only a hit leaves guest memory alone: a walk may set A bits without an event
        return out

    def abstract(self, st: dict[str, Any], parts: frozenset[str] = ALL_PARTS,
                 same: frozenset[str] = frozenset()) -> State:
        """The implementation's state; the keys in `same` hold what they held in the spec state."""
        first, count = st.get("mfns", (self.au.first_mfn, self.au.nr_mfns))
        if count != self.config.mfns:
            raise Failure("refinement", f"the implementation manages {count} machine pages; the configuration "
                          f"asked for {self.config.mfns}")
        if first != self.au.first_mfn:
            self.au = replace(self.au, first_mfn=first, nr_mfns=count)
        try:
            return to_spec_state(self.it, self.au, st, st["vms"], parts, self.state, same, self.ghost)
        except AbstractionError as e:
            raise Failure("refinement", str(e)) from None

    def start(self, st: dict[str, Any]) -> None:
        self.state, self._raw = self._init, None
        impl = self.with_ghost(self.abstract(st), self.state)
        if impl != self.state:  # (the spec's initial state satisfies every invariant: dmm prove's init obligations)
            raise Failure("refinement", "the implementation's initial state is not the spec's initial state",
                          self.u.show_diff(self.state, impl))

    def with_ghost(self, impl: State, spec: State) -> State:
        s = list(impl)
        for name in self.ghost:
            s[self._lay[name].index] = spec[self._lay[name].index]
        return tuple(s)

    # ---------------------------------------------------------------- refinement
    def spec_args(self, name: str, args: dict[str, Any]) -> tuple[Any, ...] | None:
        """An event's arguments as spec elements; None when it lies outside the universe (a gva
        beyond the window, a root not in the configuration): not this harness's to judge."""
        act = self.it.action(name).action
        out = []
        for p in act.params:
            if p.name not in args:
                raise Failure("refinement", f"event {name} lacks argument {p.name!r}: {args}")
            v, t = args[p.name], p.type.name
            if t == VM:
                x = v if 0 <= v < self.config.vms else None
            elif t == ROOT:
                x = self._root_ix.get(v)
            elif t == GVA:
                x = self._gva_ix.get(v)
            elif t == GFN:
                x = v if 0 <= v < self.config.gfns else None
            elif t == MFN:
                x = v - self.au.first_mfn
                if not 0 <= x < self.au.nr_mfns:
                    raise Failure("refinement", f"event {name}: {p.name}={v:#x} is not a DMM machine page")
            elif t == SLOT:
                x = v if 0 <= v < self.config.slots else None
            elif t == ACCESS:
                x = self._access[v]
            elif t == VCPU:
                x = v if isinstance(v, int) and 0 <= v < self.config.vcpus else None
            elif t == ROLE:
                try:
                    x = self.au.role_ix(v)
                except AbstractionError as e:
                    raise Failure("refinement", f"event {name}: {e}") from None
            else:
                x = bool(v)
            if x is None:
                return None
            out.append(x)
        return tuple(out)

    def refine(self, obs: Observation, impl: State) -> tuple[list[SpecStep], State]:
        """The spec steps that explain the operation, and the state they reach (which carries the
        ghost TLB and otherwise equals the implementation's); Failure if there are none."""
        events = obs.events
        end = len(events) - 1
        last_write = max((i for i, (n, a) in enumerate(events)
                          if n in MEMORY_WRITERS or (n == "hit" and a.get("a") == "write")), default=end)
        # A VM destroyed last leaves no edit of its own after it: the edits are tried there first
        # (the pages a balloon took before it would otherwise be explained gva by gva, then erased).
        if events and events[-1][0] == VM_DESTROY and last_write < end:
            try:
                steps, s = self._refine(obs, impl, end)
            except Failure:
                steps, s = self._placed(obs, impl, last_write)
        else:
            steps, s = self._placed(obs, impl, last_write)
        for st in steps:
            self.coverage[st.action] += 1
        return steps, s

    def _placed(self, obs: Observation, impl: State, last_write: int) -> tuple[list[SpecStep], State]:
        """_refine with the guest's edits where its memory was last written. An edit that is only
        the A/D bits the VMM's own walk set (another gva under the same entry) may precede events
        that expect the old mapping (a zap of that gva's spte): then they are tried at the end."""
        end = len(obs.events) - 1
        try:
            return self._refine(obs, impl, last_write)
        except Failure as failed:
            if last_write >= end or not failed.message.startswith("event "):
                raise
            try:
                return self._refine(obs, impl, end)
            except Failure:
                raise failed from None

    def _refine(self, obs: Observation, impl: State, last_write: int) -> tuple[list[SpecStep], State]:
        """refine, with the guest's edits placed after event `last_write` (-1: before every event)."""
        s, steps = self.state, []
        events = obs.events
        if last_write < 0:
            s = self._guest_edits(s, impl, steps)
        for i, (name, args) in enumerate(events):
            if name == "hit":
                s = self._hit(s, args, steps, i)
            elif name != "guest_write":
                if name not in self.it.actions:
                    raise Failure("refinement", f"event {i}: {name!r} is not an action of the spec")
                xs = self.spec_args(name, args)
                if xs is not None and name == SHADOW_FILL and not self.it.is_enabled(s, name, xs):
                    s = self._edit_before_fill(s, impl, xs, steps)
                if xs is not None:
                    s = self._apply(s, name, xs, steps, f"event {i}")
            if i == last_write:
                s = self._guest_edits(s, impl, steps)
        impl = self.with_ghost(impl, s)
        if s != impl:
            self._reached = s  # (the ghost the events made: unexplained judges the invariants on it)
            shown = ", ".join(f"{st.action}({self.it.show_args(st.action, st.args)})" for st in steps) or "nothing"
            raise Failure("refinement", f"the implementation's state is not what the spec's steps [{shown}] make",
                          self.u.show_diff(s, impl, "spec", "impl"))
        return steps, s

    def _apply(self, s: State, name: str, xs: tuple[Any, ...], steps: list[SpecStep], where: str,
               inferred: bool = False) -> State:
        if not self.it.is_enabled(s, name, xs):
            after = self.it.apply(s, name, xs)
            why = "; ".join(self.it.step_check(s, name, xs, after).problems)
            raise Failure("refinement", f"{where}: {name}({self.it.show_args(name, xs)}) is not enabled", why)
        steps.append(SpecStep(name, xs, inferred))  # (counted in coverage once the step is explained)
        return self.it.apply(s, name, xs)

    def _hit(self, s: State, args: dict[str, Any], steps: list[SpecStep], i: int) -> State:
        xs = self.spec_args(SHADOW_HIT, args)
        if xs is None:
            return s
        for name in HITS:
            if self.it.is_enabled(s, name, xs):
                return self._apply(s, name, xs, steps, f"event {i}")
        return self._apply(s, SHADOW_HIT, xs, steps, f"event {i} (a hit the hardware served)")

    def _edit_before_fill(self, s: State, impl: State, xs: tuple[Any, ...], steps: list[SpecStep]) -> State:
        """A guest edit of the fill's own entry may precede the fill within one operation. Same
        mapping: a walk through another root sharing the table set its A bit (and D, for a write).
        Another mapping: the guest rewrote the entry; the final one is the edit. (Whatever this
        assumes that the implementation's final state does not bear out fails the final compare.)"""
        v, r, _, x, g, _, w, _ = xs
        k = self.u.index(GMAP[0], (v, r, x))
        cur = tuple(s[self._lay[n].index][k] for n in GMAP)
        if cur[0] != g:
            return self._guest_edits(s, impl, steps, only=k)
        new = cur[:4] + (True, cur[5] or w)
        return s if new == cur else self._leaf_edit(s, impl, (v, r, x), new, steps)

    def _guest_edits(self, s: State, impl: State, steps: list[SpecStep], only: int | None = None) -> State:
        """The guest's own page-table edits: every (vm, root, gva) whose walk reads other tables
        (guest_path, guest_upper) or whose mapping differs (guest_map / guest_unmap, or their
        unsync variants) — or only the one at flat index `only`. Walks that now read other tables
        go first, one guest_store_upper per (vm, root) where a table on every one of them can hold
        the entry stored."""
        if only is None:
            s = self._upper_stores(s, impl, steps)
        s = self._path_edits(s, impl, steps, only, G_TABLE, GUEST_PATH)
        s = self._path_edits(s, impl, steps, only, G_UPPER, GUEST_UPPER)
        lays = [self._lay[n] for n in GMAP]
        if only is None:  # the points where some gpte field differs, found before any step
            edited = sorted({k for lay in lays for k in differing(impl[lay.index], s[lay.index])})
        else:
            edited = [only]
        for k in edited:
            now = tuple(impl[lay.index][k] for lay in lays)
            if now == tuple(s[lay.index][k] for lay in lays):
                continue
            s = self._leaf_edit(s, impl, self.u.point(GMAP[0], k), now, steps)
        return s

    def _leaf_edit(self, s: State, impl: State, point: tuple[Any, ...], now: tuple[Any, ...],
                   steps: list[SpecStep]) -> State:
        """The guest rewrote the leaf gpte of (vm, root, gva) `point` to `now` (gmap's values; none:
        cleared). A store to a write-protected table traps and zaps x's sptes (guest_map /
        guest_unmap); one to an unsync table does not (the _unsync variants): the sptes stay and go
        stale. The unsync variant is taken when the spec enables it and the read-back shows an spte
        of x, in some role, still as it was."""
        trap, unsync = (GUEST_UNMAP, GUEST_UNMAP_UNSYNC) if now[0] is None else (GUEST_MAP, GUEST_MAP_UNSYNC)
        xs = point if now[0] is None else point + now
        if unsync in self.it.actions and self.it.is_enabled(s, unsync, xs) and self._sptes_stayed(s, impl, point):
            return self._apply(s, unsync, xs, steps, "guest edit", True)
        return self._apply(s, trap, xs, steps, "guest edit", True)

    def _sptes_stayed(self, s: State, impl: State, point: tuple[Any, ...]) -> bool:
        """Some role's spte of (vm, root, gva) is present in s and, with its rights, the same in impl."""
        v, r, x = point
        lays = [self._lay[n] for n in SPTE]
        for o in range(lays[0].domains[2]):  # spte's points: (vm, root, role, gva)
            k = self.u.index(SPTE[0], (v, r, o, x))
            if s[lays[0].index][k] is not None and all(s[lay.index][k] == impl[lay.index][k] for lay in lays):
                return True
        return False

    def _upper_stores(self, s: State, impl: State, steps: list[SpecStep]) -> State:
        """guest_store_upper for the walks of each (vm, root) whose tables changed (g_table, g_upper)
        when all of them now read the same tables (as under one PDE): through the table t that each
        read before and reads after, the one fewest walks read (the lowest level such a store can
        be at). Otherwise (a VM's walks appearing, walks that part below the entry): walk by walk,
        with guest_path and guest_upper."""
        tab, up = self._lay.get(G_TABLE), self._lay.get(G_UPPER)
        if GUEST_STORE_UPPER not in self.it.actions or tab is None or up is None \
                or (impl[tab.index] == s[tab.index] and impl[up.index] == s[up.index]):
            return s
        n_gva, n_gfn = self.u.sizes[GVA], self.u.sizes[GFN]
        walks: dict[tuple[int, int], list[int]] = {}
        for k in sorted({i // n_gfn for lay in (tab, up) for i in differing(impl[lay.index], s[lay.index])}):
            v, r, x = self.u.point(GMAP[0], k)
            walks.setdefault((v, r), []).append(x)
        for (v, r), xs in walks.items():
            first = self.u.index(GMAP[0], (v, r, 0)) * n_gfn  # (v, r)'s rows of g_table and g_upper

            def row(st: State, lay: Any, x: int) -> tuple[bool, ...]:
                return tuple(st[lay.index][first + x * n_gfn:first + (x + 1) * n_gfn])
            new_tab, new_up = row(impl, tab, xs[0]), row(impl, up, xs[0])
            if any(row(impl, tab, x) != new_tab or row(impl, up, x) != new_up for x in xs):
                continue
            tables = [t for t in range(n_gfn) if new_tab[t] and all(row(s, tab, x)[t] for x in xs)]
            if not tables:
                continue
            t = min(tables, key=lambda t: (sum(row(s, tab, y)[t] for y in range(n_gva)), t))
            h = tuple(x in xs for x in range(n_gva))
            s = self._apply(s, GUEST_STORE_UPPER, (v, r, t, h, new_tab, new_up), steps, "guest edit", True)
        return s

    def _path_edits(self, s: State, impl: State, steps: list[SpecStep], only: int | None, symbol: str,
                    action: str) -> State:
        """`action` (guest_path, guest_upper) for each (vm, root, gva, table gfn) whose `symbol`
        (g_table, g_upper) point changed: the walk now reads, or no longer reads, that table."""
        tab = self._lay.get(symbol)
        if tab is None or action not in self.it.actions or impl[tab.index] == s[tab.index]:
            return s
        tables = tab.domains[-1]  # the symbol's points are gmap's, times the table gfn
        lo, hi = (0, tab.size) if only is None else (only * tables, (only + 1) * tables)
        # the points that differ, found before any step: each step changes its own point only
        now, was = impl[tab.index], s[tab.index]
        for k in differing(now, was, lo, hi):
            s = self._apply(s, action, self.u.point(symbol, k) + (now[k],), steps, "guest edit", True)
        return s

    def unexplained(self, impl: State, reached: State | None = None) -> None:
        """Judge the invariants on a state no spec step explains (the step failed refinement, or
        the search found none): they name the property lost, the better verdict when there is one.
        The ghost state is then unknown: with `reached` (the spec state the step's events reached
        before the failure) the invariants that read it are judged on that state's ghost, which the
        events that were explained made; without it they are left out."""
        if reached is None:
            self.invariants(self.state, self.with_ghost(impl, self.state), skip=self.ghostly)
        else:
            self.invariants(self.state, self.with_ghost(impl, reached))

    def invariants(self, before: State, after: State, skip: frozenset[str] = frozenset()) -> None:
        bad = [v for v in self.inc.check(before, after) if v.invariant not in skip]
        if bad:
            # What the step changed, as (point, before, after) text: the report shows it beside the blame
            changed = [(self.u.show_point(n, p), self.u.show_value(self._lay[n].symbol.result, a),
                        self.u.show_value(self._lay[n].symbol.result, b)) for n, p, a, b in self.u.diff(before, after)]
            raise Failure("invariant", "; ".join(f"{v.invariant} fails" for v in bad),
                          "\n".join(str(v) for v in bad),
                          {"what": "invariant", "invariants": sorted({v.invariant for v in bad}), "changed": changed})

    def check(self, op: Operation, obs: Observation, st: dict[str, Any], read_guest: Any,
              parts: frozenset[str] = ALL_PARTS) -> list[SpecStep]:
        """Judge one step (`st` read with only `parts` of the costly parts: the rest is as the spec
        state has it); on success the spec state moves to the implementation's."""
        partial = parts != ALL_PARTS
        self.observe(op, obs, read_guest, partial=partial)
        # What a key held at the last step judged is the spec state's now (refinement made them
        # equal): its symbols need no building. Nothing read changed (no costly part read, the rest
        # equal): the implementation is in the spec state, but for ghost state.
        raw = {k: st.get(k) for k in RAW_KEYS + COSTLY_KEYS}
        same = self._unchanged(raw)
        impl = self.state if not parts and same.issuperset(RAW_KEYS) else self.abstract(st, parts, same)
        self._reached = None
        try:
            try:
                steps, after = self.refine(obs, impl)
            except Failure:
                self.unexplained(impl, self._reached)
                raise
            self.invariants(self.state, after)
        except Failure:
            if partial:  # guest memory that differs unreported is the plainer verdict: it goes first
                self.compare_memory(read_guest)
            raise
        self.state, self._raw = after, (after, raw)
        return steps

    def _unchanged(self, raw: dict[str, Any]) -> frozenset[str]:
        """The keys of abstract_state() that hold what they held at the last step judged, if the
        spec state is still the one that step moved to (and the machine pages are the same)."""
        if self._raw is None or self._raw[0] is not self.state or raw["mfns"] != self._raw[1]["mfns"]:
            return frozenset()
        last = self._raw[1]
        # the same dict or list again may have been changed in place since: it proves nothing
        return frozenset(k for k, v in raw.items() if v == last[k]
                         and not (v is last[k] and isinstance(v, (dict, list, set))))

    def verify(self, st: dict[str, Any], after: str, read_guest: Any) -> None:
        """A full read where the last steps read only part of the state: the implementation must be
        in the state their events explain, its guest memory the ideal machine's (else it changed
        something it did not report)."""
        self.compare_memory(read_guest)
        impl = self.abstract(st)
        if self.with_ghost(impl, self.state) != self.state:
            self.unexplained(impl)
            raise Failure("refinement", f"{after}, the implementation's state is not the one its events explain "
                          "(it changed state it did not report)",
                          self.u.show_diff(self.state, self.with_ghost(impl, self.state), "spec", "impl"))

    # ---------------------------------------------------------------- observation
    def observe(self, op: Operation, obs: Observation, read_guest: Any, events: list[Any] | None = None,
                partial: bool = False) -> None:
        """`events`: what the implementation did, where it does not report it (conformance levels
        below full: levels.py derives them); by default its own events. `partial`: the step's
        state is read in part (Runner._parts): so is guest memory, the pages the ideal machine
        wrote since the last compare, unless an event may have changed any page (the next whole
        read compares every page: a VMM that writes memory it does not report is caught there)."""
        a, ideal = op.args, self.ideal
        events = obs.events if events is None else events
        for name, args in events:
            if name == VM_CREATE:
                ideal.create(args["v"])
            elif name.startswith(BALLOON_INFLATE) and args["v"] in ideal.vms:
                ideal.vms[args["v"]].mem.zero(args["g"])  # the guest gave the page up: its content is gone
        for v, gpa, data in obs.guest_writes:
            ideal.vms[v].store(gpa, data)
        cpu = self.ideal_cpu(a)
        if op.action == CR3_LOAD and cpu is not None:
            cpu.load_cr3(a["r"])
        elif op.action == SET_MODE and cpu is not None:
            cpu.set_mode(a["o"])
            self.modes[a["v"], a[VCPU_ARG]] = a["o"]
        elif op.action == INVLPG and cpu is not None:
            cpu.invlpg(a["x"])
        elif obs.access is not None and obs.access.skipped:
            self.skipped[a.get("a", op.action)] += 1  # not performed: nothing happened, nothing to judge
        elif obs.access is not None and cpu is not None:
            self._judge_access(op, obs.access, read_guest, walked=any(n == GUEST_WALK for n, _ in events))
        if any(n == VM_DESTROY for n, _ in events):
            ideal.destroy(a["v"])
            self.modes = {k: o for k, o in self.modes.items() if k[0] != a["v"]}
        if obs.access is None or a.get("a") != "read":
            rewrites = self.judge.rewrites
            self.compare_memory(read_guest, dirty_only=partial and not any(n in rewrites for n, _ in events))

    def ideal_cpu(self, args: dict[str, Any]) -> Any:
        """The ideal machine's vCPU an operation runs on (its v and c; c absent: vCPU 0), or None
        when there is no such VM or vCPU."""
        vm = self.ideal.vms.get(args.get("v"))  # type: ignore[arg-type]
        c = args.get(VCPU_ARG, 0)
        if vm is None or not isinstance(c, int) or not 0 <= c < len(vm.cpus):
            return None
        return vm.cpus[c]

    def _judge_access(self, op: Operation, got: AccessResult, read_guest: Any, walked: bool = False) -> None:
        a = op.args
        v, acc, user, value = a["v"], a["a"], a["u"], a.get("value", 0)
        x, size = a["x"] + a.get("offset", 0), a.get("size", 8)  # the access's first byte, its width
        vm = self.ideal_cpu(a)  # the vCPU's walk, TLB and mode over the VM's memory
        if got.oom:
            # The VMM had no page to serve it: an out-of-memory result, not a translation. If its
            # walk completed first, the guest's A/D bits are set, as a CPU's walk sets them.
            o, _, used = vm.walk(x, acc, user)
            if walked and not o.fault:
                for addr, new in vm.ad_writes(acc, used).items():
                    vm.mem.write64(addr, new)
            return
        cands = vm.candidates(x, acc, user)
        why: Failure | None = None  # the first outcome that matched but left guest memory otherwise
        for o, t, used in cands:
            if not _same(o, got):
                continue
            if not o.fault and acc == "read" and vm.load(o, acc, used, size) != got.value:
                continue
            if o.fault:
                # What the walk left in the guest's tables, adopted when the architecture allows it.
                entries = self._entries(v, o.touched, read_guest)
                adopted, bad = vm.fault_ad(o, entries.__getitem__)
                if bad is not None:
                    why = why or Failure("observation", f"VM {v}: {bad}", facts=_walk_ad_facts(v, o, vm, entries))
                    continue
                vm.commit(x, acc, o, t, used, value, size, adopted)
                return
            # Each candidate is tried in full (its A/D bits, and where a store went): the ideal
            # machine is put back when it does not explain the guest's memory.
            saved = (bytes(vm.mem.mem), {k: dict(ts) for k, ts in vm.tlb.items()}) if len(cands) > 1 else None
            vm.commit(x, acc, o, t, used, value, size)
            try:
                self._check_ad(v, o, read_guest)
                if acc == "write" and saved is not None:
                    self._check_stores(v, cands, size, read_guest)
            except Failure as f:
                if saved is None:
                    raise
                vm.mem.mem[:], vm.tlb = saved
                why = why or f
                continue
            return
        if why is not None:
            raise why
        fresh, _, used = cands[0]
        loaded = vm.load(fresh, acc, used, size) if not fresh.fault else None
        want = _show_outcome(fresh, acc, loaded)
        width = "" if size == 8 or acc == "fetch" else f" ({size} bytes)"
        raise Failure("observation", f"{acc}{width} of gva {x:#x} by VM {v} ({'user' if user else 'supervisor'}): "
                      f"the guest saw {_show_result(got)}, the ideal machine allows {want}"
                      + (f" (or {len(cands) - 1} stale TLB outcome(s))" if len(cands) > 1 else ""),
                      facts={"what": "access", "vm": v, "gva": x, "gpa": None if fresh.fault else fresh.paddr,
                             "expected": _outcome_facts(fresh, loaded), "observed": _result_facts(got),
                             "also_allowed": [_outcome_facts(o) for o, _, _ in cands[1:]]})

    def _check_stores(self, v: int, cands: list, size: int, read_guest: Any) -> None:
        """After a store: every place a candidate would have stored to holds what the ideal machine
        now holds there (so the outcome chosen explains where the store went, and where it did not)."""
        mem = self.ideal.vms[v].mem
        for o, _, _ in cands:
            if not o.fault and mem.has(o.paddr, size):
                want, got = mem.read(o.paddr, size), read_guest(v, o.paddr, size)
                if want != got:
                    raise Failure("observation", f"VM {v}: after the store, gpa {o.paddr:#x} holds {got.hex()}, "
                                  f"the ideal machine's {want.hex()}",
                                  facts={"what": "store", "vm": v, "gpa": o.paddr,
                                         "expected": {"value": int.from_bytes(want, "little")},
                                         "observed": {"value": int.from_bytes(got, "little")}})

    def _entries(self, v: int, addrs: list[int], read_guest: Any) -> dict[int, int]:
        """Guest page-table entries as the implementation has them: {gpa: entry}, in one request
        when the adapter can (read_guest_many, as _check_ad reads them)."""
        many = getattr(getattr(read_guest, "__self__", None), "read_guest_many", None)
        got = many([(v, a, 8) for a in addrs]) if many else [read_guest(v, a, 8) for a in addrs]
        return {a: int.from_bytes(e, "little") for a, e in zip(addrs, got)}

    def _check_ad(self, v: int, o: Outcome, read_guest: Any) -> None:
        mem = self.ideal.vms[v].mem
        many = getattr(getattr(read_guest, "__self__", None), "read_guest_many", None)
        entries = many([(v, addr, 8) for addr in o.touched]) if many else [read_guest(v, addr, 8) for addr in o.touched]
        for addr, entry in zip(o.touched, entries):
            want, got = mem.read64(addr), int.from_bytes(entry, "little")
            if want != got:
                raise Failure("observation", f"VM {v}: the guest's page-table entry at gpa {addr:#x} is "
                              f"{got:#x}, the ideal machine's is {want:#x} (A/D bits)",
                              facts={"what": "ad-bits", "vm": v, "gpa": addr, "expected": {"value": want},
                                     "observed": {"value": got}})

    def compare_memory(self, read_guest: Any, dirty_only: bool = False) -> None:
        """Every guest page of every VM against the ideal machine's (`dirty_only`: those the ideal
        machine wrote since the last compare)."""
        # An adapter across a process boundary (child.py) answers for every page in one request;
        # only the pages it reports as differing are read and compared here.
        pages_differing = getattr(getattr(read_guest, "__self__", None), "pages_differing", None)
        if dirty_only:
            pages = [(v, g) for v, vm in self.ideal.vms.items() for g in sorted(vm.mem.dirty) if g < self.config.gfns]
        else:
            pages = [(v, g) for v in self.ideal.vms for g in range(self.config.gfns)]
        for vm in self.ideal.vms.values():
            vm.mem.dirty.clear()  # (a difference found raises: nothing is judged after it)
        if not pages:
            return
        mems = {v: vm.mem.mem for v, vm in self.ideal.vms.items()}
        if pages_differing is not None:
            pages = [(v, gpa // PAGE) for v, gpa in
                     pages_differing([(v, g * PAGE, bytes(mems[v][g * PAGE:(g + 1) * PAGE])) for v, g in pages])]
        for v, g in pages:
            got = read_guest(v, g * PAGE, PAGE)
            if mems[v][g * PAGE:(g + 1) * PAGE] != got:  # (a bytearray slice: no bytes() copy)
                want = bytes(mems[v][g * PAGE:(g + 1) * PAGE])
                off = next(i for i in range(PAGE) if want[i] != got[i]) & ~7
                seen, ideal = int.from_bytes(got[off:off + 8], "little"), int.from_bytes(want[off:off + 8], "little")
                raise Failure("observation", f"VM {v} gfn {g}: guest memory differs from the ideal machine's "
                              f"at gpa {g * PAGE + off:#x}: {seen:#x} instead of {ideal:#x}",
                              facts={"what": "memory", "vm": v, "gpa": g * PAGE + off,
                                     "expected": {"value": ideal}, "observed": {"value": seen}})


def _same(o: Outcome, r: AccessResult) -> bool:
    """The same exception (none, #PF with this error code and CR2, or #GP: no error code or CR2 to
    compare — #GP(0) writes no CR2)."""
    if o.gp or r.gp:
        return o.gp and r.gp
    return o.fault == r.fault and (not o.fault or (o.error_code, o.cr2) == (r.error_code, r.cr2))


def _outcome_facts(o: Outcome, value: int | None = None) -> dict[str, Any]:
    """An outcome the ideal machine allows, as data (Failure.facts)."""
    if o.gp:
        return {"outcome": "#GP"}
    if o.fault:
        return {"outcome": "#PF", "error_code": o.error_code, "cr2": o.cr2}
    return {"outcome": "success"} if value is None else {"outcome": "success", "value": value}


def _result_facts(r: AccessResult) -> dict[str, Any]:
    """What the guest saw, as data (Failure.facts)."""
    if r.gp:
        return {"outcome": "#GP"}
    if r.oom:
        return {"outcome": "out of memory"}
    if r.fault:
        return {"outcome": "#PF", "error_code": r.error_code, "cr2": r.cr2}
    return {"outcome": "success"} if r.value is None else {"outcome": "success", "value": r.value}


def _walk_ad_facts(v: int, o: Outcome, vm: Any, entries: dict[int, int]) -> dict[str, Any]:
    """A faulting walk left an entry the architecture does not allow: the first entry that differs
    from the ideal machine's, as data."""
    for addr in dict.fromkeys(o.touched):
        want = vm.mem.read64(addr)
        if entries.get(addr, want) != want:
            return {"what": "walk-ad", "vm": v, "gpa": addr, "expected": {"value": want},
                    "observed": {"value": entries[addr]}}
    return {"what": "walk-ad", "vm": v}


def _show_outcome(o: Outcome, acc: str, value: int | None) -> str:
    if o.gp:
        return "#GP(0) (a non-canonical address)"
    if o.fault:
        return f"#PF error code {o.error_code:#x} CR2 {o.cr2:#x}"
    return f"success, value {value:#x}" if acc == "read" else "success"


def _show_result(r: AccessResult) -> str:
    if r.gp:
        return "#GP"
    if r.fault:
        return f"#PF error code {r.error_code:#x} CR2 {r.cr2:#x}" if r.cr2 is not None else f"a fault ({r.error_code:#x})"
    return f"success, value {r.value:#x}" if r.value is not None else "success"
