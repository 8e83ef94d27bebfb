"""The harness's bug-finding power: every mutant of the catalogue (or those matching a pattern)
fuzzed at one seed with a time budget each. Prints one JSON object.

usage: bench/mutants.py [SECONDS_PER_MUTANT] [SEED] [PATTERN] [JOBS] [TUNING...]
       bench/mutants.py --spec-mutants [HARNESS_SECONDS] [JOBS] [PATTERN] [reach=S] [ablations]

TUNING switches one part of the generator off or on, to measure what it buys: no-scope (every test
case on the default scope), narrow (the narrow input generator), no-focus, steps=N (steps per test
case, default 40), level=LEVEL (judge at a conformance level below full: state, black-box),
impl-cmd=CMD (the bundled VMM in another process, spoken to over the wire protocol dmm-adapter/1:
e.g. "impl-cmd=dmm serve"; its mutants are those the served adapter lists, switched on through the
reset's configuration).

killed / total, median and max seconds to the first failure (killed ones), the median seconds
spent shrinking it, median and max shrunk trace length, and per mutant: killed, seconds (=
seconds_to_failure), seconds_shrinking, steps (to the first failure), shrunk steps, oracle,
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


def spec_main(argv: list[str]) -> None:
    """--spec-mutants: every spec mutant (conformance/spec_mutants.py) proved, its counterexamples to
    induction searched for a reachable instance (reach=S seconds, default 5), and the bundled VMM
    fuzzed against it for HARNESS_SECONDS (default 10; 0: prover only). `ablations`: the invariant
    ablations instead, which the score does not count. One JSON object: the score (mutants the prover
    catches / all: with a violated obligation, or only with obligations it could not decide), per
    action and per bug class, the survivors (every obligation proved), and per mutant the
    obligations violated or unknown, their reachability and the harness's verdict."""
    from dataclasses import asdict

    from dmmcheck.conformance.mutation import INVARIANT_ABLATIONS, run_spec_mutants

    rest = [a for a in argv if "=" not in a and a != "ablations"]
    harness_seconds = float(rest[0]) if rest else 10.0
    jobs = int(rest[1]) if len(rest) > 1 else 1
    pattern = rest[2] if len(rest) > 2 and rest[2] else None
    reach = float(next((a[6:] for a in argv if a.startswith("reach=")), 5.0))
    ablations = "ablations" in argv
    load_start = os.getloadavg()
    results = run_spec_mutants(harness_seconds, jobs, pattern, reach, INVARIANT_ABLATIONS if ablations else None)
    by: dict[str, dict[str, dict[str, int]]] = {"action": {}, "kind": {}}
    for r in results:
        for key, rows in by.items():
            row = rows.setdefault(getattr(r, key) or "-", {"total": 0, "caught": 0})
            row["total"] += 1
            row["caught"] += r.prover_caught
    print(json.dumps({
        "catalogue": "invariant ablations" if ablations else "spec mutants", "harness_seconds": harness_seconds,
        "reach_seconds": reach, "pattern": pattern, "jobs": jobs,
        "cores": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "total": len(results), "prover_caught": sum(r.prover_caught for r in results),
        "prover_violated": sum(bool(r.violated) for r in results),  # caught with a violated obligation
        "prover_undecided": sum(bool(r.unknown) and not r.violated for r in results),  # caught only by unknowns
        "harness_caught": sum(bool(r.harness_caught) for r in results),
        "caught_by_either": sum(r.prover_caught or bool(r.harness_caught) for r in results),
        "survivors": [r.name for r in results if not r.prover_caught],
        "per_action": by["action"], "per_kind": by["kind"],
        "mutants": {r.name: {k: v for k, v in asdict(r).items() if k != "name"} for r in results},
    }))


def main() -> None:
    if "--spec-mutants" in sys.argv:
        return spec_main([a for a in sys.argv[1:] if a != "--spec-mutants"])
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
    shrinking = [r.seconds_shrinking for r in killed if r.seconds_shrinking is not None]
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
        "median_seconds_shrinking": statistics.median(shrinking) if shrinking else None,
        "mutants": {r.name: {"killed": r.killed, "seconds": r.seconds, "seconds_to_failure": r.seconds if r.killed else None,
                             "seconds_shrinking": r.seconds_shrinking, "steps": r.steps,
                             "shrunk": r.shrunk_steps, "oracle": r.oracle, "message": r.message,
                             "steps_run": r.steps_run} for r in results},
    }))


if __name__ == "__main__":
    main()
