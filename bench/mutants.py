"""The harness's bug-finding power: every mutant of the catalogue (or those matching a pattern)
fuzzed at one seed with a time budget each. Prints one JSON object.

usage: bench/mutants.py [SECONDS_PER_MUTANT] [SEED] [PATTERN] [JOBS] [TUNING...]

TUNING switches one part of the generator off or on, to measure what it buys: no-scope (every test
case on the default scope), narrow (the narrow input generator), no-focus, steps=N (steps per test
case, default 40), level=LEVEL (judge at a conformance level below full: state, black-box),
impl-cmd=CMD (the bundled VMM in another process, spoken to over the wire protocol dmm-adapter/1:
e.g. "impl-cmd=dmm serve"; its mutants are those the served adapter lists, switched on through the
reset's configuration).

killed / total, median and max seconds to the first failure (killed ones), median and max shrunk
trace length, and per mutant: killed, seconds, steps (to the first failure), shrunk steps, oracle,
steps_run (every step judged, shrinking included; for a survivor, what the budget bought); the
machine's load average before and after (the budgets are wall-clock time).
"""

from __future__ import annotations

import json
import os
import statistics
import sys

from dmmcheck.conformance.fuzz import Tuning
from dmmcheck.conformance.mutation import adapter_mutants, run_all, select

SWITCHES = {"no-scope": {"vary_scope": False}, "narrow": {"wide_inputs": False}, "no-focus": {"focus": False}}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    pattern = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else None
    jobs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    switches = [sw for sw in sys.argv[5:] if not sw.startswith(("steps=", "level=", "impl-cmd="))]
    steps = int(next((sw[6:] for sw in sys.argv[5:] if sw.startswith("steps=")), 40))
    level = next((sw[6:] for sw in sys.argv[5:] if sw.startswith("level=")), None)
    impl_cmd = next((sw[9:] for sw in sys.argv[5:] if sw.startswith("impl-cmd=")), None)
    tuning = Tuning(**{k: v for sw in switches for k, v in SWITCHES[sw].items()})
    load_start = os.getloadavg()  # the runs are timed: another job on the machine slows every campaign
    names = select(pattern, adapter_mutants(impl_cmd=impl_cmd) if impl_cmd is not None else None)
    results = run_all(names, seconds, jobs, tuning=tuning, seed=seed, steps=steps, level=level, impl_cmd=impl_cmd)
    killed = [r for r in results if r.killed]
    shrunk = [r.shrunk_steps for r in killed if r.shrunk_steps is not None]
    print(json.dumps({
        "seed": seed, "seconds_per_mutant": seconds, "pattern": pattern, "tuning": switches, "steps_per_case": steps,
        "level": level or "full", "impl_cmd": impl_cmd,
        "cores": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "killed": len(killed), "total": len(results),
        "survivors": [r.name for r in results if not r.killed],
        "median_seconds": statistics.median(r.seconds for r in killed) if killed else None,
        "max_seconds": max((r.seconds for r in killed), default=None),
        "median_shrunk_steps": statistics.median(shrunk) if shrunk else None,
        "max_shrunk_steps": max(shrunk, default=None),
        "mutants": {r.name: {"killed": r.killed, "seconds": r.seconds, "steps": r.steps,
                             "shrunk": r.shrunk_steps, "oracle": r.oracle, "message": r.message,
                             "steps_run": r.steps_run} for r in results},
    }))


if __name__ == "__main__":
    main()
