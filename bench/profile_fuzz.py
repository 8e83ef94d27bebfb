"""Where a fuzzing campaign's time goes: cProfile over an in-process `dmm fuzz` of the bundled VMM
(default scope, both oracles). Prints one JSON object.

usage: bench/profile_fuzz.py [SECONDS] [SEED]   (default 15 s, seed 0)

areas: cumulative seconds under each part of a step (the entry points in AREAS; nested entries
are not counted twice: an area's time excludes the areas entered from inside it).
"hypothesis_and_rest" is the campaign's time under none of them (Hypothesis's engine around the
rules, the step loop); "hypothesis_self" the own time of Hypothesis's functions alone.
top_self / top_cumulative: the functions with the most own / cumulative time. Times are this
process's CPU seconds (so other jobs on the machine do not count); profiling slows everything by a
similar factor: compare shares, not absolute seconds, with bench/fuzz.py.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

# (area, file suffix, function name): the entry points of each part of a step.
AREAS = (
    ("generation", "conformance/fuzz.py", "draw"),
    ("generation", "conformance/scope.py", "draw"),
    ("vmm", "conformance/vmm_adapter.py", "step"),
    ("vmm", "conformance/vmm_adapter.py", "reset"),
    ("readback", "conformance/vmm_adapter.py", "abstract_state"),
    ("readback", "conformance/vmm_adapter.py", "read_state"),
    ("abstraction", "conformance/oracle.py", "abstract"),
    ("ideal_machine", "conformance/oracle.py", "observe"),
    ("refinement", "conformance/oracle.py", "refine"),
    ("invariants", "conformance/oracle.py", "invariants"),
    ("compile_scope", "conformance/oracle.py", "__init__"),  # Judge (compiles the spec per scope), Oracle
    ("compile_scope", "conformance/operations.py", "__init__"),  # the legality plans per scope
)


def _key_name(key: tuple[str, int, str]) -> str:
    path, line, fn = key
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{short}:{line}:{fn}"


def _areas(stats: pstats.Stats, total: float) -> dict[str, float]:
    """Cumulative time per area, minus the time of other areas' entry points called from inside it."""
    raw = stats.stats  # type: ignore[attr-defined]
    entries = {key: area for key in raw for area, suffix, fn in AREAS
               if key[0].endswith(suffix) and key[2] == fn}
    out: dict[str, float] = {}
    for key, area in entries.items():
        ct = raw[key][3]
        # time of other entry points called from this one (its direct callees' cumulative time)
        inner = sum(raw[k][4].get(key, (0, 0, 0, 0))[3] for k, a in entries.items() if k != key and a != area)
        out[area] = out.get(area, 0.0) + ct - inner
    # the rest: Hypothesis's engine and state machine around the rules, the runner's own loop
    out["hypothesis_and_rest"] = max(0.0, total - sum(out.values()))
    out["hypothesis_self"] = sum(v[2] for k, v in raw.items() if "/hypothesis/" in k[0])
    return {a: round(v, 2) for a, v in sorted(out.items(), key=lambda kv: -kv[1])}


def _top(stats: pstats.Stats, col: int, n: int = 25) -> list[dict[str, object]]:
    raw = stats.stats  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda kv: -kv[1][col])[:n]
    return [{"function": _key_name(k), "calls": v[1], "self": round(v[2], 3), "cumulative": round(v[3], 3)}
            for k, v in rows]


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    spec = load(None)
    prof = cProfile.Profile(time.process_time)  # CPU time: the machine's other jobs do not count
    t0, c0 = time.perf_counter(), time.process_time()
    prof.enable()
    r = fuzz(BundledVmm, spec, Config(), seconds=seconds, seed_=seed)
    prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = pstats.Stats(prof)
    print(json.dumps({
        "load_average": [round(x, 2) for x in os.getloadavg()], "seconds": round(wall, 2), "steps": r.steps, "test_cases": r.examples,
        "cpu_seconds": round(cpu, 2), "steps_per_cpu_second_profiled": round(r.steps / cpu, 1),
        "failure": r.failure.kind if r.failure else None,
        "seconds_in_impl": round(r.seconds_in_impl, 2), "seconds_in_oracle": round(r.seconds_in_oracle, 2),
        "areas": _areas(stats, cpu),
        "top_self": _top(stats, 2), "top_cumulative": _top(stats, 3)}, indent=1))


if __name__ == "__main__":
    main()
