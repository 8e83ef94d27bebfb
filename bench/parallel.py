"""Campaign throughput on many workers: `dmm fuzz` of the bundled VMM at -j 1 and -j 2 (local
processes) and on a Dask LocalCluster of 2 single-threaded worker processes. Prints one JSON object.

usage: bench/parallel.py [SECONDS]   (default 40 per campaign; about 3 x (SECONDS + 5) s in all)

steps_per_second: the merged campaign's judged steps per wall-clock second, from the first worker
started to the last result in (process start-up included). worker_steps_per_second: the sum of the
workers' own rates (start-up excluded). ratio_*: against -j 1 (ratio_j2_over_j1_workers: on the
workers' own rates). steps_per_cpu_second and cpu_efficiency_j2_over_j1: the steps per CPU second of
the workers, which a busy machine changes far less than the wall-clock rate. Every worker fuzzes a seed of its
own derived from seed 0 (the same seeds in every configuration), so the work is alike. The load
average before and after says how quiet the machine was: on a busy one the ratio says little.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.campaign import Campaign, SeedTask, fuzz_campaign
from dmmcheck.spec import load


def figures(c: Campaign) -> dict[str, Any]:
    parts = [o.result for o in c.outcomes if o.result is not None]
    workers = [p.result for p in parts]
    cpu = sum(p.cpu_seconds for p in parts)
    return {"steps": c.merged.steps, "seconds": round(c.merged.seconds, 2),
            "steps_per_second": round(c.merged.steps_per_second, 1),
            "worker_steps_per_second": round(sum(w.steps_per_second for w in workers), 1),
            "steps_per_cpu_second": round(sum(w.steps for w in workers) / cpu, 1) if cpu else None,
            "workers": len(workers), "lost": len(c.lost), "failures": len(c.found)}


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 40.0
    actions = list(load(None).actions)
    task = SeedTask(seed=0, spec_text=None, impl=None, impl_cmd=None, config=Config(), seconds=seconds)
    load_start = os.getloadavg()
    runs = {"j1": figures(fuzz_campaign(task, 1, None, actions)),
            "j2": figures(fuzz_campaign(task, 2, None, actions))}
    from distributed import LocalCluster

    with LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        runs["dask2"] = figures(fuzz_campaign(task, 2, cluster.scheduler_address, actions))
    base = runs["j1"]["steps_per_second"] or 1.0
    print(json.dumps({
        "seconds_per_campaign": seconds, "cores": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in load_start], "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "steps_per_second": {k: r["steps_per_second"] for k, r in runs.items()},
        "ratio_j2_over_j1": round(runs["j2"]["steps_per_second"] / base, 2),
        "ratio_dask2_over_j1": round(runs["dask2"]["steps_per_second"] / base, 2),
        # the same without process start-up: the workers' own rates summed
        "ratio_j2_over_j1_workers": round(runs["j2"]["worker_steps_per_second"]
                                          / (runs["j1"]["worker_steps_per_second"] or 1.0), 2),
        # per CPU second of the workers: 1.0 when two workers do not slow each other down (then the
        # wall-clock ratio is two on two idle cores, whatever the load when measured)
        "cpu_efficiency_j2_over_j1": round((runs["j2"]["steps_per_cpu_second"] or 0)
                                           / (runs["j1"]["steps_per_cpu_second"] or 1.0), 2),
        "runs": runs}))


if __name__ == "__main__":
    main()
