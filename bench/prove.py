"""Prover speed on the bundled spec, unbounded. Prints one JSON object.

seconds_cold: every obligation from an empty cache (-j = cores); seconds_warm: the same run again,
answered from the cache; wall figures include starting the `dmm` process. core_uses: for each
invariant, how many proved inductive obligations used it (their unsat cores) — which invariants carry
the proof. Usage: bench/prove.py [SPEC] (default: the bundled spec).
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmmcheck.model.runner import ProveOptions, exit_status, run  # noqa: E402


def main() -> None:
    jobs = os.cpu_count() or 1
    spec = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as cache:
        opts = ProveOptions(spec, None, cache_dir=cache, use_cache=True, jobs=jobs)
        cold, seconds_cold = run(opts)
        warm, seconds_warm = run(opts)
        env = {**os.environ, "DMM_CACHE_DIR": cache}
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dmmcheck", "prove", "--json", *([spec] if spec else [])], env=env,
                       check=False, capture_output=True)
        wall_warm = time.perf_counter() - t
    print(json.dumps({
        "obligations": len(cold),
        "seconds_cold": round(seconds_cold, 3),
        "seconds_warm": round(seconds_warm, 3),
        "seconds_warm_wall_cli": round(wall_warm, 3),
        "seconds_per_obligation_median": round(statistics.median(r.seconds for r in cold), 4),
        "proved": sum(r.status == "proved" for r in cold),
        "violated": sum(r.status == "violated" for r in cold),
        "unknown": sum(r.status == "unknown" for r in cold),
        "cached_on_warm_run": sum(r.cached for r in warm),
        "exit_status": exit_status(cold),
        "jobs": jobs,
        "core_uses": dict(sorted(Counter(inv for r in cold if r.kind == "inductive" and r.status == "proved"
                                         for inv in (r.core or ())).items(), key=lambda kv: -kv[1])),
        "core_uses_of_rmap_consistent": sorted(r.name for r in cold if r.kind == "inductive"
                                               and "rmap_consistent" in (r.core or ())),
    }))


if __name__ == "__main__":
    main()
