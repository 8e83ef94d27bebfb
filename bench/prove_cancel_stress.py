"""Stress for the prover's use of Z3 after a check stopped by the resource limit. Prints one JSON object.

A child process runs, N times over, what the prover tests run in one pytest worker: the bundled spec's
inductive obligations of share_merge at --rlimit 1 and of cow_break at 10,000 (most checks stopped by
the limit), then every inductive obligation with the cache, again from the cache, and after an edit to
one action. Before shared solvers were replaced after an unknown, the child died of SIGSEGV inside Z3
(smt::context::cache_generation, in conflict resolution) in its 8th round, every time.

Usage: bench/prove_cancel_stress.py [ROUNDS]   (default 12)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

CHILD = r"""
import faulthandler, sys, tempfile
from pathlib import Path
faulthandler.enable()
from dmmcheck.model.runner import ProveOptions, run
from dmmcheck.spec import bundled_path

BUNDLED = bundled_path().read_text()
EDIT = ("action tlb_evict(v: vm, x: gva) {\n  requires tlb(v, x) != none",
        "action tlb_evict(v: vm, x: gva) {\n  requires tlb(v, x) != none and live(v)")


def prove(tmp, text=None, only=None, cache=False, rlimit=30_000_000):
    path = None
    if text is not None:
        path = Path(tmp) / "spec.dmm"
        path.write_text(text)
    opts = ProveOptions(str(path) if path else None, only=only, cache_dir=str(Path(tmp) / "cache"),
                        use_cache=cache, jobs=1, rlimit=rlimit)
    return run(opts)[0]


for i in range(int(sys.argv[1])):
    with tempfile.TemporaryDirectory() as tmp:
        prove(tmp, only="inductive/share_merge/", rlimit=1)
        prove(tmp, only="inductive/cow_break/", rlimit=10_000)
        prove(tmp, cache=True, only="inductive/")
        prove(tmp, cache=True, only="inductive/")
        prove(tmp, BUNDLED.replace(*EDIT), cache=True, only="inductive/")
    print(i + 1, flush=True)
"""


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-c", CHILD, str(rounds)], capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = [line for line in p.stdout.split() if line.isdigit()]
    print(json.dumps({
        "rounds_asked": rounds,
        "rounds_done": int(done[-1]) if done else 0,
        "exit": p.returncode,
        "signal": -p.returncode if p.returncode < 0 else None,
        "crashed": p.returncode != 0,
        "fatal": next((line for line in p.stderr.splitlines() if line.startswith("Fatal Python error")), None),
        "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
