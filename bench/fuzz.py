"""End-to-end fuzzing speed on one core: `dmm fuzz` on the bundled VMM for a fixed time, in process
and out of process (over dmm-adapter/1, the reference server in a child). Prints one JSON object.

usage: bench/fuzz.py [SECONDS] [bytes]

steps_per_second: judged steps (both oracles at every step) per wall-clock second, in process.
seconds_in_impl: in the adapter (the VMM on Unicorn, and reading its state back).
seconds_in_oracle: spec interpreter (refinement, invariants) and the ideal machine.
seconds_in_harness: the rest — Hypothesis generation and shrinking, resets, legality checks.
out_of_process_*: the same campaign (same seed: the same steps) with the VMM in a child process
(`python -m dmmcheck.conformance.serve`), guest memory compared by page digests; its impl and
oracle seconds include the round trips. out_of_process_ratio: its steps/s over the in-process ones.
restart_seconds: median time to start the child and finish the handshake (what a restart after a
crash or timeout costs). With `bytes`, also the campaign comparing guest memory by fetching every
page's bytes instead of digests (out_of_process_bytes_steps_per_second).
"""

from __future__ import annotations

import json
import statistics
import sys

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.child import ChildAdapter
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
SERVE = f"{sys.executable} -m dmmcheck.conformance.serve"


def restart_seconds(n: int = 5) -> float:
    starts = []
    for _ in range(n):
        a = ChildAdapter(SERVE)
        starts += a.starts
        a.close()
    return statistics.median(starts)


def main() -> None:
    spec = load(None)
    r = fuzz(BundledVmm, spec, Config(), seconds=SECONDS, seed_=0)
    o = fuzz(lambda: ChildAdapter(SERVE), spec, Config(), seconds=SECONDS, seed_=0)
    out = {
        "steps_per_second": round(r.steps_per_second, 1),
        "seconds_in_impl": round(r.seconds_in_impl, 2),
        "seconds_in_oracle": round(r.seconds_in_oracle, 2),
        "seconds_in_harness": round(r.seconds - r.seconds_in_impl - r.seconds_in_oracle, 2),
        "seconds": round(r.seconds, 2), "steps": r.steps, "test_cases": r.examples,
        "steps_per_case": 40, "failure": r.failure.kind if r.failure else None,
        "universe": Config().sizes(),
        "out_of_process_steps_per_second": round(o.steps_per_second, 1),
        "out_of_process_seconds_in_impl": round(o.seconds_in_impl, 2),
        "out_of_process_seconds_in_oracle": round(o.seconds_in_oracle, 2),
        "out_of_process_steps": o.steps,
        "out_of_process_failure": o.failure.kind if o.failure else None,
        "out_of_process_ratio": round(o.steps_per_second / r.steps_per_second, 2) if r.steps_per_second else None,
        "restart_seconds": round(restart_seconds(), 3)}
    if "bytes" in sys.argv[2:]:
        b = fuzz(lambda: ChildAdapter(SERVE, memory="bytes"), spec, Config(), seconds=SECONDS, seed_=0)
        out["out_of_process_bytes_steps_per_second"] = round(b.steps_per_second, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
