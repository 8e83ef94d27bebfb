"""`dmm explore` at named bounds, to the end or to a limit. Prints one JSON object.

    python bench/explore.py [--spec FILE] [--max-seconds S] [-j N] [BOUND ...]

BOUND is a name below or `sort=n,...` over the default bound (as `dmm explore --bound`); with none,
every name below in turn. Per bound: states, transitions, wall and CPU seconds (CPU counts the
worker processes too: the machine is shared, so CPU is the figure to compare, and the load average
comes with each wall time), whether the search finished and, if not, what stopped it, the actions
never enabled and the invariants violated. `--spec` explores another spec file (an older version of
the bundled one, to measure a change of the spec before and after).

    check        CHECK_BOUND, what `dmm check` explores (one vCPU, one role)
    one_page     gfn=1, mfn=1
    two_vcpus    two vCPUs, one page, budget and quota 1: a remote flush forgotten is found here
    two_roles    two vCPUs and two roles, one page, budget and quota 1
    all_actions  ALL_ACTIONS_BOUND, the smallest in which every action is enabled
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmmcheck.model.explore import ALL_ACTIONS_BOUND, CHECK_BOUND, DEFAULT_BOUND, explore  # noqa: E402
from dmmcheck.model.interp import Interpreter  # noqa: E402
from dmmcheck.spec import load  # noqa: E402

_ONE_PAGE = {"gfn": 1, "mfn": 1}
NAMED: dict[str, dict[str, int]] = {
    "check": dict(CHECK_BOUND),
    "one_page": {**DEFAULT_BOUND, **_ONE_PAGE},
    "two_vcpus": {**DEFAULT_BOUND, **_ONE_PAGE, "vcpu": 2, "budget": 1, "quota": 1},
    "two_roles": {**DEFAULT_BOUND, **_ONE_PAGE, "vcpu": 2, "role": 2, "budget": 1, "quota": 1},
    "all_actions": dict(ALL_ACTIONS_BOUND),
}


def bound_of(text: str) -> dict[str, int]:
    if text in NAMED:
        return NAMED[text]
    return {**DEFAULT_BOUND, **{k: int(v) for k, v in (kv.split("=") for kv in text.split(","))}}


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(spec_path: str | None, bound: dict[str, int], max_seconds: float, jobs: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), _cpu()
    r = explore(Interpreter(load(spec_path), bound), max_seconds=max_seconds, jobs=jobs)
    return {"bound": bound, "processes": r.processes, "states": r.states, "transitions": r.transitions,
            "seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(_cpu() - cpu, 2),
            "search_seconds": round(r.seconds, 2), "states_per_second": round(r.states_per_second),
            "transitions_per_second": round(r.transitions_per_second), "complete": r.complete,
            "stopped_by": r.stopped_by or None, "never_enabled": r.never_enabled,
            "violations": [v.invariant for v, _ in r.violations],
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bounds", nargs="*", default=list(NAMED))
    ap.add_argument("--spec", default=None)
    ap.add_argument("--max-seconds", type=float, default=900.0)
    ap.add_argument("-j", "--jobs", type=int, default=1)
    a = ap.parse_args()
    print(json.dumps({"spec": a.spec or "bundled", "jobs": a.jobs, "max_seconds": a.max_seconds,
                      "results": {b: measure(a.spec, bound_of(b), a.max_seconds, a.jobs) for b in a.bounds}},
                     indent=1))


if __name__ == "__main__":
    main()
