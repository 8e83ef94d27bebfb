"""Conformance levels: how much of itself a VMM shows, and what the harness judges it by
(docs/conformance.md, "Conformance levels").

- full: events, abstract state, guest memory. Refinement from the events, invariants, observation
  (oracle.py).
- state: abstract state and guest memory, no events. Invariants, observation, and refinement as
  reachability: the state after each step must be reachable from the one before by some sequence
  of spec actions, found by a bounded search (reach.py); a verdict that none was found names the
  bound.
- black-box: accesses and guest memory only. Observation against the ideal machine, guest memory
  compared after every operation; what the events told the ideal machine (a VM created, a page
  ballooned, an out-of-memory access's walk) is read off the operation and guest memory instead.
  The fuzzer draws from a spec state rebuilt from the ideal machine and asks the VMM's own
  operations (swap-out, merge, balloon...) whatever the VMM's state: it must decline what it
  cannot do.

`at_level` judges an adapter below its own level through `Hiding`, which hides what the lower level
does not provide, so that the judging code is the same as for an adapter of that level.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

from dmmcheck.model.state import State

from .adapter import LEVELS, Adapter, AdapterError, Capabilities, Config, Event, Observation, Operation
from .ideal import PAGE, A, Controls, D
from .binding import (ACCESS, BALLOON_INFLATE, CUR_ROOT, GFN, GMAP, GUEST_EDITS, GUEST_OPS, GUEST_WALK, GVA, LIVE,
                      MODE, ROLE, ROOT, VCPU, VCPU_ARG, VM, VM_CREATE, VM_DESTROY)
from .oracle import Failure, Oracle, SpecStep
from .reach import Outcome, Reach

WHAT = {"full": "refinement from events, invariants, observation",
        "state": "reachability of each state, invariants, observation",
        "black-box": "observation, guest memory across every operation"}


def rank(level: str) -> int:
    """0 for full; higher shows less."""
    return LEVELS.index(level)


def declared(caps: Capabilities) -> str:
    """The level an adapter provides. An adapter that reports no events (`events=False`) with the
    default level is judged at level state."""
    level = caps.level
    if level not in LEVELS:
        raise AdapterError(f"the adapter declares level {level!r}; the levels are {', '.join(LEVELS)}")
    if not caps.guest_memory:
        raise AdapterError("the harness needs an adapter that reads guest memory (Capabilities.guest_memory), "
                           "at every level (docs/writing-an-adapter.md)")
    if level == "full" and not caps.events:
        return "state"
    return level


def at_level(adapter: Adapter, level: str | None) -> Adapter:
    """The adapter as the harness sees it at `level` (None: its own level). A level above what the
    adapter provides, or not a level, is an AdapterError (bad input)."""
    own = declared(adapter.capabilities())
    if level is None or level == own:
        return adapter
    if level not in LEVELS:
        raise AdapterError(f"--level {level!r}: the levels are {', '.join(LEVELS)}")
    if rank(level) < rank(own):
        raise AdapterError(f"--level {level}: the adapter provides level {own} ({WHAT[own]}), not {level}")
    return Hiding(adapter, level)


class Hiding:
    """An adapter that shows only what `level` provides: no events below full, no abstract state
    at black-box."""

    def __init__(self, inner: Adapter, level: str) -> None:
        self.inner, self.level = inner, level
        self.name = getattr(inner, "name", type(inner).__name__)

    def capabilities(self) -> Capabilities:
        caps = self.inner.capabilities()
        return replace(caps, level=self.level, events=caps.events and self.level == "full")

    def reset(self, config: Config) -> None:
        self.inner.reset(config)

    def step(self, op: Operation) -> Observation:
        obs = self.inner.step(op)
        return replace(obs, events=[]) if isinstance(obs, Observation) else obs

    def abstract_state(self) -> dict[str, Any]:
        if self.level == "black-box":
            raise AdapterError("no abstract state at level black-box")
        return self.inner.abstract_state()

    def read_guest(self, vm: int, gpa: int, n: int) -> bytes:
        return self.inner.read_guest(vm, gpa, n)

    def close(self) -> None:
        if hasattr(self.inner, "close"):
            self.inner.close()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:  # anything else the adapter offers
        return getattr(self.inner, name)


# ---------------------------------------------------------------- level state
@dataclass
class Explained:
    """What the harness made of a step's state, before judging it (the search runs outside the
    step's time limit: it is the harness's work, not the implementation's)."""

    impl: State
    broken: bool  # the state breaks an invariant: no spec step reaches it, the invariant is the verdict
    outcome: Outcome | None = None
    elements: dict[str, set[Any]] | None = None


def reach_of(oracle: Oracle, judge: Any) -> Reach:
    if judge.reach is None:
        judge.reach = Reach(oracle.it, judge.ghost)
    return judge.reach


def explain(oracle: Oracle, reach: Reach, op: Operation, st: dict[str, Any]) -> Explained:
    impl = oracle.abstract(st)
    if any(v.invariant not in oracle.ghostly
           for v in oracle.inc.check(oracle.state, oracle.with_ghost(impl, oracle.state))):
        return Explained(impl, True)  # broken whatever steps led there (ghost-free invariants only)
    given = named(oracle, op)
    target = oracle.with_ghost(impl, oracle.state)
    return Explained(impl, False, reach.search(oracle.state, target, given),
                     reach.elements(oracle.state, target, given))


def judge_state(oracle: Oracle, reach: Reach, op: Operation, obs: Observation, ex: Explained,
                read_guest: Any) -> list[SpecStep]:
    """Judge one step at level state; on success the spec state moves to the implementation's."""
    found = ex.outcome.steps if ex.outcome is not None else None
    oracle.observe(op, obs, read_guest, observed(oracle, op, obs, read_guest))
    if ex.broken:
        oracle.unexplained(ex.impl)
    assert ex.outcome is not None
    if found is None:
        raise Failure("refinement", unreachable(reach, ex.outcome),
                      elements(oracle, ex.elements or {}) + "\n"
                      + oracle.u.show_diff(oracle.state, oracle.with_ghost(ex.impl, oracle.state),
                                           "spec before the step", "impl after it"))
    after = ex.outcome.state
    assert after is not None
    oracle.invariants(oracle.state, after)
    for name, _ in found:
        oracle.coverage[name] += 1
    oracle.state = after
    return [SpecStep(name, args, name in GUEST_EDITS) for name, args in found]


def unreachable(reach: Reach, out: Outcome) -> str:
    b = reach.bound
    how = "every such sequence tried" if out.exhausted else f"searched {out.expanded} states, the search's bound"
    how += "; the elements searched are listed below"
    return (f"no sequence of at most {b.actions} spec actions over the elements the step changed or named "
            f"reaches the implementation's state ({how})")


def elements(oracle: Oracle, elems: dict[str, set[Any]]) -> str:
    t = {p.type.name: p.type for a in oracle.it.actions.values() for p in a.action.params if not p.type.args}
    return "elements searched: " + ", ".join(oracle.u.show_value(t[s], e) for s in sorted(elems) if s in t
                                             for e in sorted(elems[s]))


def named(oracle: Oracle, op: Operation) -> dict[str, set[Any]]:
    """The spec elements an operation names (an access's root and role: its vCPU's current ones)."""
    a, cfg, out = op.args, oracle.config, {}

    def put(sort: str, x: Any) -> None:
        if x is not None:
            out.setdefault(sort, set()).add(x)
    for k in ("v", "v1", "v2"):
        if isinstance(a.get(k), int) and 0 <= a[k] < cfg.vms:
            put(VM, a[k])
    for k in ("g", "g1", "g2"):
        if isinstance(a.get(k), int) and 0 <= a[k] < cfg.gfns:
            put(GFN, a[k])
    if "r" in a:
        put(ROOT, oracle._root_ix.get(a["r"]))
    if "x" in a:
        put(GVA, oracle._gva_ix.get(a["x"]))
    c = a.get(VCPU_ARG)
    cpu = c if isinstance(c, int) and 0 <= c < cfg.vcpus else None
    put(VCPU, cpu)
    if a.get("o") in cfg.roles:
        put(ROLE, cfg.roles.index(a["o"]))
    if isinstance(a.get("a"), str) and a["a"] in oracle._access:  # (guest_map's `a` is its A bit)
        put(ACCESS, oracle._access[a["a"]])
        if a.get("v") in out.get(VM, ()) and cpu is not None:
            put(ROOT, oracle.u.get(oracle.state, CUR_ROOT, a["v"], cpu))
            put(ROLE, oracle.u.get(oracle.state, MODE, a["v"], cpu))
    return out


# ---------------------------------------------------------------- what the ideal machine is told
def observed(oracle: Oracle, op: Operation, obs: Observation, read_guest: Any) -> list[Event]:
    """The events the observation oracle needs, where the implementation reports none: read off
    the operation and guest memory. (Not off the spec steps a search found at level state: they
    are one explanation of the state, not necessarily what the implementation did.)"""
    a, out = op.args, []
    if op.action in (VM_CREATE, VM_DESTROY) and isinstance(a.get("v"), int):
        out.append((op.action, {"v": a["v"]}))
    elif op.action.startswith(BALLOON_INFLATE) and _zeroed(oracle, a, read_guest):
        # The page may have been given up (its content gone: zero) or the request declined
        # (unchanged): the guest's memory says which.
        out.append((BALLOON_INFLATE, {"v": a["v"], "g": a["g"]}))
    if obs.access is not None and obs.access.oom and _walked(oracle, op, read_guest):
        out.append((GUEST_WALK, {}))
    return out


def _zeroed(oracle: Oracle, a: dict[str, Any], read_guest: Any) -> bool:
    vm = oracle.ideal.vms.get(a.get("v"))  # type: ignore[arg-type]
    g = a.get("g")
    if vm is None or not isinstance(g, int) or not 0 <= g < oracle.config.gfns:
        return False
    page = bytes(vm.mem.mem[g * PAGE:(g + 1) * PAGE])
    return page != bytes(PAGE) and read_guest(a["v"], g * PAGE, PAGE) == bytes(PAGE)


def _walked(oracle: Oracle, op: Operation, read_guest: Any) -> bool:
    """An out-of-memory access whose walk completed first left the walk's A/D bits in the
    guest's tables; one that stopped before it left none. Whichever guest memory shows."""
    a = op.args
    vm = oracle.ideal_cpu(a)
    if vm is None:
        return False
    o, _, used = vm.walk(a["x"] + a.get("offset", 0), a["a"], a["u"])
    if o.fault:
        return False
    ad = vm.ad_writes(a["a"], used)
    return bool(ad) and all(int.from_bytes(read_guest(a["v"], addr, 8), "little") == new for addr, new in ad.items())


# ---------------------------------------------------------------- level black-box
def judge_black_box(oracle: Oracle, op: Operation, obs: Observation, read_guest: Any) -> list[SpecStep]:
    """Judge one step at level black-box: observation only; then the spec state the fuzzer draws
    from is rebuilt from the ideal machine."""
    oracle.observe(op, obs, read_guest, observed(oracle, op, obs, read_guest))
    oracle.state = guest_view(oracle)
    return []


def guest_view(oracle: Oracle) -> State:
    """A spec state with what the guest's side shows: the VMs that live, their vCPUs' CR3 and role
    (once the guest loaded one), and each (vm, root, gva)'s mapping from a walk of the ideal machine's tables (as the abstraction's
    `gmap`: a supervisor read with NXE on, the leaf's A and D). The VMM's own symbols keep their
    initial values: the fuzzer does not filter the VMM's operations on them at this level."""
    u, cfg, s = oracle.u, oracle.config, [list(e) for e in oracle._init]
    lay = u.layout
    for v, vm in oracle.ideal.vms.items():
        s[lay[LIVE].index][v] = True
        for c, cpu in enumerate(vm.cpus):
            k = u.index(CUR_ROOT, (v, c))
            s[lay[CUR_ROOT].index][k] = oracle._root_ix.get(cpu.cr3)  # type: ignore[arg-type]
            role = oracle.modes.get((v, c))
            s[lay[MODE].index][k] = cfg.roles.index(role) if role in cfg.roles else None
        probe = copy.copy(vm.cpus[0])
        probe.ctl = Controls()
        for ri, root in enumerate(cfg.roots):
            probe.cr3 = root
            for xi, x in enumerate(cfg.gvas):
                o, t, used = probe.walk(x, "read", False)
                if o.fault or t is None or o.paddr is None or not used or o.paddr >> 12 >= cfg.gfns:
                    continue
                k = u.index(GMAP[0], (v, ri, xi))
                leaf = used[-1][1]
                for name, val in zip(GMAP, (o.paddr >> 12, t.rw, t.us, t.nx, bool(leaf & A), bool(leaf & D))):
                    s[lay[name].index][k] = val
    return tuple(tuple(e) for e in s)


class Blind:
    """The fuzzer's legality catalogue at level black-box: the VMM's operations are legal whenever
    the VMs they name live (the spec state has no VMM side to filter them on)."""

    def __init__(self, cat: Any) -> None:
        self.cat = cat
        self._live = cat.it.u.layout[LIVE].index
        self._vms = {name: [i for i, p in enumerate(o.inputs) if p.type.name == VM] for name, o in cat.ops.items()}

    def legal(self, s: State, name: str, xs: tuple[Any, ...]) -> bool:
        if name in GUEST_OPS:
            return self.cat.legal(s, name, xs)
        return all(s[self._live][xs[i]] for i in self._vms.get(name, ()))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cat, name)

