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
    lost: str | None = None  # why there is no verdict: its worker died (campaign.py); neither killed nor survived
    seconds_shrinking: float | None = None  # from the first failure to the shrunk trace (`seconds` is to the failure)


def run_one(name: str, seconds: float, seed: int = 0, tuning: Tuning = Tuning(), steps: int = 40,
            impl: str | None = None, impl_cmd: str | None = None, level: str | None = None,
            config: Config | None = None, known: str | None = None, db: str | None = None, *,
            progress: Any = None) -> MutantResult:
    """One mutant, switched on through the reset's Config.mutant: of the bundled VMM in process, or
    of the adapter `impl` (MODULE:ATTR) or the child `impl_cmd` (dmm-adapter/1), which list their
    mutants in Capabilities.mutants. `known`: a known-divergences file (divergences.py). `db`: a
    shared example database (campaign.open_db); `progress`: fuzz()'s progress callback."""
    from pathlib import Path

    from .campaign import identity, open_db
    from .child import child_factory
    from .divergences import load as load_known
    from .trace import load_adapter
    from .vmm_adapter import BundledVmm

    factory: Any = child_factory(impl_cmd) if impl_cmd is not None else load_adapter(impl) if impl else BundledVmm
    m = MUTANTS.get(name)
    spec = load(None)
    config = replace(config or Config(), mutant=name)
    database = open_db(db, *identity(Path(spec.file).read_text(), None if impl_cmd else impl or None, impl_cmd,
                                     config, level, steps, tuning)) if db else None
    r = fuzz(factory, spec, config, seconds=seconds, seed_=seed, tuning=tuning, steps_per_case=steps, level=level,
             known=load_known(known, spec) if known else None, database=database, progress=progress)
    f = r.failure
    return MutantResult(name, f is not None, round(r.first_failure_seconds or r.seconds, 2), r.first_failure_steps,
                        len(r.shrunk) if f else None, f.kind if f else None, f.message[:300] if f else "",
                        m.description if m else "", m.catches if m else "",
                        dict(r.known.hits) if r.known is not None else {}, r.steps,
                        seconds_shrinking=round(r.seconds_shrinking, 2) if r.seconds_shrinking is not None else None)


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
    """Mutants by name (glob or substring; several, comma-separated), or a part of the bundled catalogue: `part:seeded`
    (mutants.py) or `part:history` (mutants_history.py, the bugs KVM and Xen fixed). `catalogue`:
    the names to choose from (default: the bundled VMM's)."""
    names = list(MUTANTS) if catalogue is None else catalogue
    if not pattern:
        return names
    if pattern.startswith("part:"):
        part = {"seeded": ".mutants", "history": ".mutants_history"}.get(pattern[5:])
        return [n for n in names if part and n in MUTANTS and MUTANTS[n].apply.__module__.endswith(part)]
    if "," in pattern:  # several patterns: the mutants any of them selects, in catalogue order
        chosen = {n for p in pattern.split(",") if p for n in select(p, names)}
        return [n for n in names if n in chosen]
    return [n for n in names if (fnmatch.fnmatch(n, pattern) if any(c in pattern for c in "*?[") else pattern in n)]


def run_all(names: list[str], seconds: float, jobs: int = 1, tuning: Tuning = Tuning(), seed: int = 0,
            steps: int = 40, impl: str | None = None, impl_cmd: str | None = None,
            level: str | None = None, config: Config | None = None, known: str | None = None,
            cluster: str | None = None, db: str | None = None, console: Any = None) -> list[MutantResult]:
    """`level`: the conformance level the harness judges at (levels.py; None: the adapter's own);
    `config`: the campaigns' scope (--config; None: the default); `known`: a known-divergences file.
    With `jobs` > 1 or a Dask `cluster` address, each mutant runs in a process of its own
    (campaign.py): one that dies is reported lost, the others go on; progress on `console`."""
    from .campaign import Board, DaskCluster, Job, check_db, executor, run_jobs

    if db is not None:
        check_db(db)
    if jobs <= 1 and cluster is None:
        return [run_one(n, seconds, seed, tuning, steps, impl, impl_cmd, level, config, known, db) for n in names]
    ex = executor(jobs, cluster)
    todo = [Job(n, run_one, (n, seconds, seed, tuning, steps, impl, impl_cmd, level, config, known, db)) for n in names]
    try:
        outcomes = run_jobs(ex, todo, Board("mutants", todo, len(load(None).actions)), console)
    finally:
        if isinstance(ex, DaskCluster):
            ex.close()
    return [o.result if o.result is not None else
            MutantResult(o.key, False, 0.0, None, None, None, f"lost: {o.lost}", lost=o.lost) for o in outcomes]


def summary(results: list[MutantResult]) -> dict[str, Any]:
    killed = [r for r in results if r.killed]
    return {"mutants": [asdict(r) for r in results], "killed": len(killed), "total": len(results),
            "lost": sum(r.lost is not None for r in results),
            "median_seconds": statistics.median(r.seconds for r in killed) if killed else None,
            "max_seconds": max((r.seconds for r in killed), default=None),
            "median_shrunk_steps": statistics.median(r.shrunk_steps for r in killed) if killed else None}  # type: ignore[type-var]


# ---------------------------------------------------------------- spec mutants
# The catalogue (SpecMutant, SPEC_MUTANTS, INVARIANT_ABLATIONS) and SpecMutantResult live in spec_mutants.py.
from .spec_mutants import INVARIANT_ABLATIONS, SPEC_MUTANTS, SpecMutant, SpecMutantResult  # noqa: F401


def run_spec_mutant(sm: SpecMutant, seconds: float, reach_seconds: float = 0.0) -> SpecMutantResult:
    """Prove the mutated spec (10 s per obligation, one process; `reach_seconds`: the search for a
    reachable instance of its counterexamples to induction) and fuzz the bundled VMM against it for
    `seconds` (seed 0; 0: no harness run)."""
    from dmmcheck.model.runner import ProveOptions, effective, run

    from .vmm_adapter import BundledVmm

    text = Path(bundled_path()).read_text()
    if text.count(sm.old) != 1:
        return SpecMutantResult(sm.name, sm.description, "stale mutant: its text is not in the spec", "-",
                                sm.action, sm.kind)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{sm.name}.dmm"
        path.write_text(text.replace(sm.old, sm.new))
        results, _ = run(ProveOptions(str(path), timeout=10.0, jobs=1, reach_seconds=reach_seconds))
        eff = effective(results)
        bad = [r.name for r in eff if r.status != "proved"]
        prover = f"caught ({len(bad)} obligations: {', '.join(bad[:3])}{'...' if len(bad) > 3 else ''})" if bad \
            else "not caught (every obligation proved)"
        reach = {r.name: r.reachability["verdict"] for r in eff if r.status == "violated" and r.reachability}
        harness, harness_caught = "not run", None
        if seconds > 0:
            spec = load(str(path))
            fr = fuzz(BundledVmm, spec, Config(), seconds=seconds, seed_=0)
            harness_caught = fr.failure is not None
            harness = (f"caught ({fr.failure.kind}, {fr.first_failure_seconds:.1f} s): {fr.failure.message[:120]}"
                       if fr.failure else f"not caught in {fr.seconds:.0f} s")
    return SpecMutantResult(sm.name, sm.description, prover, harness, sm.action, sm.kind, bool(bad),
                            [r.name for r in eff if r.status == "violated"],
                            [r.name for r in eff if r.status not in ("proved", "violated")], reach, harness_caught)


def run_spec_mutants(seconds: float, jobs: int = 1, pattern: str | None = None, reach_seconds: float = 0.0,
                     catalogue: list[SpecMutant] | None = None) -> list[SpecMutantResult]:
    """The spec mutants whose name matches `pattern` (default: every one of SPEC_MUTANTS; `catalogue`:
    another list, e.g. INVARIANT_ABLATIONS), `jobs` at a time."""
    todo = [m for m in (SPEC_MUTANTS if catalogue is None else catalogue)
            if not pattern or pattern in m.name or fnmatch.fnmatch(m.name, pattern)]
    if jobs <= 1:
        return [run_spec_mutant(m, seconds, reach_seconds) for m in todo]
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork"), initializer=die_with_parent) as ex:
        return list(ex.map(run_spec_mutant, todo, [seconds] * len(todo), [reach_seconds] * len(todo)))
