"""A failing trace replayed for people: each step's state, what it changed, and the walks.

`dmm replay` keeps only the verdict. The HTML report (html.py) needs more of every step: the spec
state after it (on the failing step, the implementation's, abstracted), the points that changed, and
for an access — or for the gva the verdict names — the guest's 4-level walk beside the shadow
tables' walk, with the level where the two part. The guest's walk comes from the ideal machine
(ideal.py, the guest's own memory); the shadow's from the adapter's optional `shadow_walk(v, root,
gva)` (the bundled VMM's has it; an adapter without it gets the guest's walk alone).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmmcheck.model.state import State

from .adapter import Adapter, Config
from .binding import GVA, ROOT, VM
from .oracle import Failure
from .runner import Runner, StepRecord
from .trace import Trace, prepare


P, RW, US, PS = 1, 2, 4, 1 << 7
XD = 1 << 63
FRAME = ((1 << 52) - 1) & ~0xFFF
ENTRY_NAME = {4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}
Entry = tuple[int, int, int]  # (level, address, entry)


@dataclass
class Walks:
    """One gva's translation by the guest's tables and by the shadow's, after a step."""

    vm: int
    root: int  # the guest root gfn
    gva: int
    access: str  # "read" | "write" | "fetch"
    user: bool
    guest: list[Entry]  # addresses are guest-physical
    guest_outcome: str  # "gfn 0xd", "#PF not present at PDE", ...
    gfn: int | None  # the frame the guest's walk reaches
    mfn: int | None  # p2m of that gfn in the implementation (None: no machine page)
    shadow: list[Entry] | None  # addresses are machine frames; None: the adapter shows none
    parting: int | None = None  # the level where the two walks part (None: they agree)
    why: str = ""  # what the parting (or the agreement) is


@dataclass
class Snapshot:
    record: StepRecord
    state: State | None  # after the step: the spec's (the implementation's on the failing step)
    changes: list[tuple[str, tuple[Any, ...], Any, Any]]  # (symbol, args, before, after)
    walks: Walks | None = None


@dataclass
class Story:
    path: str
    header: dict[str, Any]
    config: Config
    first_mfn: int
    level: str
    it: Any  # the interpreter: names points and values
    initial: State
    snapshots: list[Snapshot] = field(default_factory=list)
    failure: Failure | None = None
    spec_file: str = ""  # the spec judged against (the report quotes the failing invariant from it)


def tell(path: Path, spec: Any, factory: Callable[[], Adapter] | None = None, step_timeout: float = 10.0,
         config: Config | None = None, level: str | None = None) -> Story:
    """Replay the trace as `dmm replay` does (trace.replay), keeping each step's snapshot. Bad input
    is a TraceError or ValueError, as for replay."""
    trace, adapter, runner, ops = prepare(path, spec, factory, step_timeout, config, level)
    try:
        story = _run(path, trace, runner, adapter, ops)
        story.spec_file = str(spec.file)
        return story
    finally:
        close = getattr(adapter, "close", None)
        if close is not None:
            close()


def _run(path: Path, trace: Trace, runner: Runner, adapter: Adapter, ops: list[Any]) -> Story:
    story = Story(str(path), trace.header, runner.config, 1, runner.level, runner.judge.it,  # type: ignore[union-attr]
                  runner.judge.it.initial_state())  # type: ignore[union-attr]
    try:
        runner.reset()
    except Failure as f:
        story.failure = f
        return story
    story.first_mfn = runner.oracle.au.first_mfn  # type: ignore[union-attr]
    before = runner.oracle.state  # type: ignore[union-attr]
    for op in ops:
        try:
            rec = runner.step(op)
        except Failure as f:
            story.failure = f
            snap = _failing(runner, adapter, runner.records[-1], before, f)
            story.snapshots.append(snap)
            return story
        after = runner.oracle.state  # type: ignore[union-attr]
        snap = Snapshot(rec, after, story.it.u.diff(before, after))
        snap.walks = _walks_of_access(runner, adapter, rec)
        story.snapshots.append(snap)
        before = after
    return story


def _failing(runner: Runner, adapter: Adapter, rec: StepRecord, before: State, f: Failure) -> Snapshot:
    """The failing step: the implementation's state (abstracted) when it can be read, the points it
    changed against the spec's state before the step, and the walks of the gva the verdict is about."""
    oracle, state = runner.oracle, None
    if runner.level != "black-box" and f.kind not in ("crash", "timeout"):
        try:
            state = oracle.with_ghost(oracle.abstract(adapter.abstract_state()), before)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - the state that broke the oracle is shown as unreadable
            state = None
    changes = runner.judge.it.u.diff(before, state) if state is not None else []  # type: ignore[union-attr]
    snap = Snapshot(rec, state, changes)
    snap.walks = _walks_of_access(runner, adapter, rec) or _walks_of_verdict(runner, adapter, f)
    return snap


def _walks_of_access(runner: Runner, adapter: Adapter, rec: StepRecord) -> Walks | None:
    a = rec.op.args
    if rec.observation.access is None or not isinstance(a.get("v"), int) or not isinstance(a.get("x"), int):
        return None
    cpu = runner.oracle.ideal_cpu(a)  # type: ignore[union-attr]
    if cpu is None or cpu.cr3 is None:
        return None
    return walks(runner, adapter, a["v"], cpu.cr3, a["x"] + a.get("offset", 0), a.get("a", "read"), bool(a.get("u")),
                 a.get("c", 0))


BOUND = re.compile(rf"\b({VM}|{ROOT}|{GVA})(\d+)\b")


def _walks_of_verdict(runner: Runner, adapter: Adapter, f: Failure) -> Walks | None:
    """The walks of the (vm, root, gva) a verdict names: its facts, else the first line of its
    detail (an invariant's blame: `at v=vm1, r=root2, x=gva1`)."""
    cfg, found = runner.config, {}
    for m in BOUND.finditer((f.detail or f.message).splitlines()[0] if (f.detail or f.message) else ""):
        found.setdefault(m.group(1), int(m.group(2)))
    v = f.facts.get("vm", found.get(VM))  # (the facts' keys are a verdict's, not the spec's)
    gva = f.facts.get("gva")
    if gva is None and found.get(GVA, len(cfg.gvas)) < len(cfg.gvas):
        gva = cfg.gvas[found[GVA]]
    cpu = runner.oracle.ideal_cpu({"v": v}) if isinstance(v, int) else None  # type: ignore[union-attr]
    if cpu is None or gva is None:
        return None
    root = cfg.roots[found[ROOT]] if found.get(ROOT, len(cfg.roots)) < len(cfg.roots) else cpu.cr3
    return None if root is None else walks(runner, adapter, v, root, gva, "read", False)  # type: ignore[arg-type]


def walks(runner: Runner, adapter: Adapter, v: int, root: int, gva: int, acc: str, user: bool, c: int = 0) -> Walks:
    """Both walks of gva in VM v under guest root `root`, now, in vCPU c's paging mode."""
    vm = runner.oracle.ideal.vms[v].cpus[c]  # type: ignore[union-attr]
    saved, vm.cr3 = vm.cr3, root
    try:
        o, _, used = vm.walk(gva, acc, user)
    finally:
        vm.cr3 = saved
    guest = [(4 - i, addr, e) for i, (addr, e) in enumerate(used)]
    gfn = None if o.fault else o.paddr >> 12  # type: ignore[operator]
    complete = bool(guest) and _translates(guest)
    if complete and o.fault:  # a rights fault: the translation is complete, the access not allowed
        gfn = (_leaf_frame(guest[-1]) | (gva & _offset_mask(guest[-1][0]))) >> 12
    mfn = _p2m(adapter, v, gfn)
    shadow_walk = getattr(adapter, "shadow_walk", None)
    shadow = shadow_walk(v, root, gva) if callable(shadow_walk) else None
    w = Walks(v, root, gva, acc, user, guest, _outcome(o, guest), gfn, mfn,
              [tuple(e) for e in shadow] if shadow is not None else None)  # type: ignore[misc]
    w.parting, w.why = parting(w, vm.ctl.nxe)
    return w


def _p2m(adapter: Adapter, v: int, gfn: int | None) -> int | None:
    if gfn is None:
        return None
    try:
        return adapter.abstract_state()["p2m"].get((v, gfn))
    except Exception:  # noqa: BLE001 - an adapter that shows no state: no machine page to draw
        return None


def _outcome(o: Any, guest: list[Entry]) -> str:
    if o.gp:
        return "#GP (non-canonical)"
    if not o.fault:
        return f"gfn {o.paddr >> 12:#x}"
    last = guest[-1] if guest else None
    if last is not None and not last[2] & P:
        return f"#PF {o.error_code:#x}: not present at the {ENTRY_NAME[last[0]]}"
    return f"#PF {o.error_code:#x}" + (": access rights" if o.error_code & 1 and not o.error_code & 8 else
                                       ": reserved bit" if o.error_code & 8 else "")


def _translates(entries: list[Entry]) -> bool:
    """The walk reached a present leaf (a 4 KiB PTE, or a PS entry above)."""
    level, _, e = entries[-1]
    return bool(e & P) and (level == 1 or (level in (2, 3) and bool(e & PS)))


def _offset_mask(level: int) -> int:
    return (1 << (12 + 9 * (level - 1))) - 1


def _leaf_frame(entry: Entry) -> int:
    return entry[2] & FRAME & ~_offset_mask(entry[0])


def _rights(entries: list[Entry], nxe: bool) -> tuple[bool, bool, bool]:
    rw = all(e & RW for _, _, e in entries)
    us = all(e & US for _, _, e in entries)
    nx = nxe and any(e & XD for _, _, e in entries)
    return rw, us, nx


def parting(w: Walks, nxe: bool) -> tuple[int | None, str]:
    """Where the shadow's translation stops being the guest's: a translation the guest has not
    got, a frame other than p2m's, or a right the guest's entries take away. A shadow that is
    stricter (not filled yet, read-only for write protection) is no parting."""
    if w.shadow is None:
        return None, "the adapter shows no shadow walk (shadow_walk)"
    shadow_maps = bool(w.shadow) and _translates(w.shadow)
    guest_maps = bool(w.guest) and _translates(w.guest)
    if not shadow_maps:
        return None, ("the shadow has no translation yet: the next access takes a hidden fault and fills it"
                      if guest_maps else "neither translates the gva")
    mfn = _leaf_frame(w.shadow[-1]) >> 12
    if not guest_maps:
        level = w.guest[-1][0] if w.guest else 4
        return level, (f"the guest's {ENTRY_NAME[level]} is not present, but the shadow still maps the gva to "
                       f"mfn {mfn:#x}")
    if w.mfn is None:
        return 1, (f"the guest's gfn {w.gfn:#x} has no machine page (p2m is none), but the shadow's PTE "
                   f"still maps mfn {mfn:#x}: a stale spte")
    if mfn != w.mfn:
        return 1, f"the shadow's PTE maps mfn {mfn:#x}, but p2m maps the guest's gfn {w.gfn:#x} to mfn {w.mfn:#x}"
    g, s = _rights(w.guest, nxe), _rights(w.shadow, True)
    for i, (bit, name, grants) in enumerate(((RW, "R/W", "write"), (US, "U/S", "user access"))):
        if s[i] and not g[i]:
            level = next(lv for lv, _, e in w.guest if not e & bit)
            return level, f"the guest's {ENTRY_NAME[level]} clears {name}; the shadow still grants {grants}"
    if g[2] and not s[2]:
        level = next(lv for lv, _, e in w.guest if e & XD)
        return level, f"the guest's {ENTRY_NAME[level]} sets XD; the shadow still lets the page be executed"
    return None, f"they agree: both reach mfn {mfn:#x}" + ("" if s[0] or not g[0] else
                                                         " (the shadow read-only: write protection or dirty tracking)")
