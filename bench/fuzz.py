"""End-to-end fuzzing speed on one core: `dmm fuzz` on the bundled VMM for a fixed time, in process
and out of process (over dmm-adapter/1, the reference server in a child). Prints one JSON object.

usage: bench/fuzz.py [SECONDS] [bytes] [full] [in-process]

steps_per_second: judged steps (both oracles at every step) per wall-clock second, in process.
seconds_in_impl: in the adapter (the VMM on Unicorn, and reading its state back).
seconds_in_oracle: spec interpreter (refinement, invariants) and the ideal machine.
seconds_in_harness: the rest — Hypothesis generation and shrinking, resets, legality checks.
harness_overhead: wall time / time inside the adapter (1: the harness costs nothing).
actions: how many times the campaign's steps refined to the TLB's and the unsync sps' spec actions.
readback: the abstract-state reads, whole ("full") or of only the parts a step's events say may
have changed ("partial"; the default: runner.py); with `full`, every read is whole.
cpu_seconds, steps_per_cpu_second: the in-process campaign's own CPU time (the machine's other jobs
do not count); load_average: the machine's, before and after (the figures above are wall-clock).
out_of_process_*: the same campaign (same seed: the same steps) with the VMM in a child process
(`python -m dmmcheck.conformance.serve`), guest memory compared by page digests; its impl and
oracle seconds include the round trips. out_of_process_ratio: its steps/s over the in-process ones.
reference_cpu_seconds: the least CPU time of three runs of one fixed pure-Python workload (tuples,
dicts, calls: what the harness spends its time on), taken just before the campaign. This machine's
speed drifts by a factor of two between days (and by a third between minutes); figures from
different runs compare as steps_per_reference = steps_per_second * reference_cpu_seconds (the steps
judged in the time the reference takes), not as raw steps per second.
restart_seconds: median time to start the child and finish the handshake (what a restart after a
crash or timeout costs). With `bytes`, also the campaign comparing guest memory by fetching every
page's bytes instead of digests (out_of_process_bytes_steps_per_second).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.child import ChildAdapter
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
SERVE = f"{sys.executable} -m dmmcheck.conformance.serve"


def reference_cpu_seconds() -> float:
    """The machine's speed at Python's kind of work: the least of three runs of a fixed workload."""
    def once() -> float:
        c0 = time.process_time()
        table: dict[tuple[int, int], int] = {}
        for i in range(200_000):
            key = (i & 1023, i >> 10)
            table[key] = table.get(key, 0) + len(str(i))
        sum(map(abs, table.values()))
        return time.process_time() - c0
    return min(once() for _ in range(3))


def restart_seconds(n: int = 5) -> float:
    starts = []
    for _ in range(n):
        a = ChildAdapter(SERVE)
        starts += a.starts
        a.close()
    return statistics.median(starts)


def main() -> None:
    spec = load(None)
    load_start = os.getloadavg()
    full = "full" in sys.argv[2:]
    reference = reference_cpu_seconds()
    c0 = time.process_time()
    r = fuzz(BundledVmm, spec, Config(), seconds=SECONDS, seed_=0, full_readback=full)
    cpu = time.process_time() - c0
    out = {
        "steps_per_second": round(r.steps_per_second, 1),
        "harness_overhead": round(r.seconds / r.seconds_in_impl, 2) if r.seconds_in_impl else None,
        "seconds_in_impl": round(r.seconds_in_impl, 2),
        "seconds_in_oracle": round(r.seconds_in_oracle, 2),
        "seconds_in_harness": round(r.seconds - r.seconds_in_impl - r.seconds_in_oracle, 2),
        "seconds": round(r.seconds, 2), "steps": r.steps, "test_cases": r.examples,
        "cpu_seconds": round(cpu, 2), "steps_per_cpu_second": round(r.steps / cpu, 1) if cpu else None,
        "reference_cpu_seconds": round(reference, 4),
        "steps_per_reference": round(r.steps_per_second * reference, 1),
        "readback": dict(r.reads),
        # how often the TLB and the unsync mechanism were exercised (spec actions the steps refined to)
        "actions": {a: r.coverage.get(a, 0) for a in ("tlb_hit", "shadow_hit", "unsync_gpt", "guest_map_unsync",
                                                      "guest_unmap_unsync", "sync_spte", "tlb_flush", "tlb_sync")},
        "steps_per_case": 40, "failure": r.failure.kind if r.failure else None,
        "universe": Config().sizes(), "load_average_start": [round(x, 2) for x in load_start]}
    if "in-process" in sys.argv[2:]:
        out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(out))
        return
    o = fuzz(lambda: ChildAdapter(SERVE), spec, Config(), seconds=SECONDS, seed_=0, full_readback=full)
    out |= {
        "out_of_process_steps_per_second": round(o.steps_per_second, 1),
        "out_of_process_seconds_in_impl": round(o.seconds_in_impl, 2),
        "out_of_process_seconds_in_oracle": round(o.seconds_in_oracle, 2),
        "out_of_process_steps": o.steps,
        "out_of_process_failure": o.failure.kind if o.failure else None,
        "out_of_process_ratio": round(o.steps_per_second / r.steps_per_second, 2) if r.steps_per_second else None,
        "restart_seconds": round(restart_seconds(), 3)}
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if "bytes" in sys.argv[2:]:
        b = fuzz(lambda: ChildAdapter(SERVE, memory="bytes"), spec, Config(), seconds=SECONDS, seed_=0)
        out["out_of_process_bytes_steps_per_second"] = round(b.steps_per_second, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
