"""Measuring bug-finding power: the harness against each seeded VMM bug, and the prover and the
harness against seeded spec bugs (`dmm mutants`).

Runs are derandomized: fixed seeds, no example database; a mutant's verdict, steps and shrunk
trace are the same on every run that is not cut short by its time limit.
"""

from __future__ import annotations

import fnmatch
import multiprocessing as mp
import statistics
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dmmcheck.model.runner import die_with_parent
from dmmcheck.spec import bundled_path, load

from .adapter import Config
from .fuzz import Tuning, fuzz
from .mutants import MUTANTS


@dataclass
class MutantResult:
    name: str
    killed: bool
    seconds: float  # to the first failure (or the whole budget when it survived)
    steps: int | None  # steps run before the first failure
    shrunk_steps: int | None
    oracle: str | None  # refinement | invariant | observation | crash | timeout
    message: str = ""
    description: str = ""
    catches: str = ""
    accepted: dict[str, int] = field(default_factory=dict)  # --known-divergences: hits per entry
    steps_run: int = 0  # every step the campaign judged (to the first failure, or in the whole budget)


def run_one(name: str, seconds: float, seed: int = 0, tuning: Tuning = Tuning(), steps: int = 40,
            impl: str | None = None, impl_cmd: str | None = None, level: str | None = None,
            config: Config | None = None, known: str | None = None) -> MutantResult:
    """One mutant, switched on through the reset's Config.mutant: of the bundled VMM in process, or
    of the adapter `impl` (MODULE:ATTR) or the child `impl_cmd` (dmm-adapter/1), which list their
    mutants in Capabilities.mutants. `known`: a known-divergences file (divergences.py)."""
    from .child import child_factory
    from .divergences import load as load_known
    from .trace import load_adapter
    from .vmm_adapter import BundledVmm

    factory: Any = child_factory(impl_cmd) if impl_cmd is not None else load_adapter(impl) if impl else BundledVmm
    m = MUTANTS.get(name)
    spec = load(None)
    r = fuzz(factory, spec, replace(config or Config(), mutant=name), seconds=seconds, seed_=seed, tuning=tuning,
             steps_per_case=steps, level=level, known=load_known(known, spec) if known else None)
    f = r.failure
    return MutantResult(name, f is not None, round(r.first_failure_seconds or r.seconds, 2), r.first_failure_steps,
                        len(r.shrunk) if f else None, f.kind if f else None, f.message[:300] if f else "",
                        m.description if m else "", m.catches if m else "",
                        dict(r.known.hits) if r.known is not None else {}, r.steps)


def adapter_mutants(impl: str | None = None, impl_cmd: str | None = None, timeout: float = 60.0) -> list[str]:
    """The mutants an adapter declares (Capabilities.mutants); bad input is a ValueError saying why."""
    from .child import child_factory
    from .trace import load_adapter, make_adapter

    adapter = make_adapter(child_factory(impl_cmd, timeout) if impl_cmd is not None else load_adapter(impl or ""),
                           timeout)
    try:
        return list(adapter.capabilities().mutants)
    finally:
        close = getattr(adapter, "close", None)
        if close is not None:
            close()


def select(pattern: str | None, catalogue: list[str] | None = None) -> list[str]:
    """Mutants by name (glob or substring), or a part of the bundled catalogue: `part:seeded`
    (mutants.py) or `part:history` (mutants_history.py, the bugs KVM and Xen fixed). `catalogue`:
    the names to choose from (default: the bundled VMM's)."""
    names = list(MUTANTS) if catalogue is None else catalogue
    if not pattern:
        return names
    if pattern.startswith("part:"):
        part = {"seeded": ".mutants", "history": ".mutants_history"}.get(pattern[5:])
        return [n for n in names if part and n in MUTANTS and MUTANTS[n].apply.__module__.endswith(part)]
    return [n for n in names if (fnmatch.fnmatch(n, pattern) if any(c in pattern for c in "*?[") else pattern in n)]


def run_all(names: list[str], seconds: float, jobs: int = 1, tuning: Tuning = Tuning(), seed: int = 0,
            steps: int = 40, impl: str | None = None, impl_cmd: str | None = None,
            level: str | None = None, config: Config | None = None, known: str | None = None) -> list[MutantResult]:
    """`level`: the conformance level the harness judges at (levels.py; None: the adapter's own);
    `config`: the campaigns' scope (--config; None: the default); `known`: a known-divergences file."""
    if jobs <= 1:
        return [run_one(n, seconds, seed, tuning, steps, impl, impl_cmd, level, config, known) for n in names]
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork"), initializer=die_with_parent) as ex:
        k = len(names)
        return list(ex.map(run_one, names, [seconds] * k, [seed] * k, [tuning] * k, [steps] * k, [impl] * k,
                           [impl_cmd] * k, [level] * k, [config] * k, [known] * k))


def summary(results: list[MutantResult]) -> dict[str, Any]:
    killed = [r for r in results if r.killed]
    return {"mutants": [asdict(r) for r in results], "killed": len(killed), "total": len(results),
            "median_seconds": statistics.median(r.seconds for r in killed) if killed else None,
            "max_seconds": max((r.seconds for r in killed), default=None),
            "median_shrunk_steps": statistics.median(r.shrunk_steps for r in killed) if killed else None}  # type: ignore[type-var]


# ---------------------------------------------------------------- spec mutants
@dataclass(frozen=True)
class SpecMutant:
    name: str
    description: str
    old: str  # text of the bundled spec to replace (must occur exactly once)
    new: str


SPEC_MUTANTS = [
    SpecMutant("swap_out_keeps_rmap", "swap_out forgets to remove the rmap entries of the sptes it zaps",
               "  insert slot_used(s)\n  forall r: root, x: gva. if gmap(v, r, x) = g {\n    spte(v, r, x) := none\n"
               "    remove s_write(v, r, x)\n    remove s_user(v, r, x)\n    remove s_nx(v, r, x)\n    remove rmap(m, v, r, x)\n",
               "  insert slot_used(s)\n  forall r: root, x: gva. if gmap(v, r, x) = g {\n    spte(v, r, x) := none\n"
               "    remove s_write(v, r, x)\n    remove s_user(v, r, x)\n    remove s_nx(v, r, x)\n"),
    SpecMutant("balloon_page_not_freed", "balloon_inflate forgets to put the last holder's page in the VMM pool",
               "    status(m) := free\n    insert vmm_pool(m)\n    owner(m) := none",
               "    status(m) := free\n    owner(m) := none"),
    SpecMutant("guest_walk_no_dirty", "guest_walk forgets the guest's D bit on a write",
               "  if a = write {\n    insert g_dirty(v, r, x)\n  }\n", ""),
    SpecMutant("fill_ignores_dirty", "shadow_fill may grant write without the guest's D bit",
               "  requires w implies g_dirty(v, r, x) and not write_protected(v, g) and status(m) != shared",
               "  requires w implies not write_protected(v, g) and status(m) != shared"),
    SpecMutant("merge_keeps_write", "share_merge leaves the merged page writable in existing sptes",
               "  forall w: vm, r: root, x: gva. if spte(w, r, x) = m1 {\n    remove s_write(w, r, x)\n  }\n", ""),
    SpecMutant("demand_page_any_pool", "demand paging may take any page, not only an allocatable one",
               "  requires p2m(v, g) = none and swap_slot(v, g) = none and not ballooned(v, g)\n  requires allocatable(v, m)",
               "  requires p2m(v, g) = none and swap_slot(v, g) = none and not ballooned(v, g)"),
    SpecMutant("cr3_load_keeps_flush", "cr3_load does not pay the owed TLB flush",
               "  forall x: gva. remove tlb_write(v, x)\n  remove flush_pending(v)\n}\n\n# A CR0.WP change",
               "  forall x: gva. remove tlb_write(v, x)\n}\n\n# A CR0.WP change"),
    SpecMutant("drop_rmap_consistent", "the invariant rmap_consistent is dropped",
               "invariant rmap_consistent:\n  forall m: mfn, v: vm, r: root, x: gva. rmap(m, v, r, x) iff spte(v, r, x) = m\n", ""),
    SpecMutant("weaken_cow_readonly", "cow_readonly no longer says shared pages are read-only",
               " and (forall v: vm, r: root, x: gva. spte(v, r, x) = m and status(m) = shared implies not s_write(v, r, x))",
               ""),
]


@dataclass
class SpecMutantResult:
    name: str
    description: str
    prover: str  # "caught (...)" or "not caught"
    harness: str


def run_spec_mutant(sm: SpecMutant, seconds: float) -> SpecMutantResult:
    from dmmcheck.model.runner import ProveOptions, effective, run

    from .vmm_adapter import BundledVmm

    text = Path(bundled_path()).read_text()
    if text.count(sm.old) != 1:
        return SpecMutantResult(sm.name, sm.description, "stale mutant: its text is not in the spec", "-")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{sm.name}.dmm"
        path.write_text(text.replace(sm.old, sm.new))
        results, _ = run(ProveOptions(str(path), timeout=10.0, jobs=1))
        bad = [r.name for r in effective(results) if r.status != "proved"]
        prover = f"caught ({len(bad)} obligations: {', '.join(bad[:3])}{'...' if len(bad) > 3 else ''})" if bad \
            else "not caught (every obligation proved)"
        spec = load(str(path))
        fr = fuzz(BundledVmm, spec, Config(), seconds=seconds, seed_=0)
        harness = (f"caught ({fr.failure.kind}, {fr.first_failure_seconds:.1f} s): {fr.failure.message[:120]}"
                   if fr.failure else f"not caught in {fr.seconds:.0f} s")
    return SpecMutantResult(sm.name, sm.description, prover, harness)


def run_spec_mutants(seconds: float, jobs: int = 1, pattern: str | None = None) -> list[SpecMutantResult]:
    todo = [m for m in SPEC_MUTANTS if not pattern or pattern in m.name or fnmatch.fnmatch(m.name, pattern)]
    if jobs <= 1:
        return [run_spec_mutant(m, seconds) for m in todo]
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as ex:
        return list(ex.map(run_spec_mutant, todo, [seconds] * len(todo)))
