"""End-to-end fuzzing speed on one core: `dmm fuzz` on the bundled VMM for a fixed time. Prints one
JSON object.

steps_per_second: judged steps (both oracles at every step) per wall-clock second.
seconds_in_impl: in the adapter (the VMM on Unicorn, and reading its state back).
seconds_in_oracle: spec interpreter (refinement, invariants) and the ideal machine.
seconds_in_harness: the rest — Hypothesis generation and shrinking, resets, legality checks.
"""

from __future__ import annotations

import json
import sys

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0


def main() -> None:
    r = fuzz(BundledVmm, load(None), Config(), seconds=SECONDS, seed_=0)
    print(json.dumps({
        "steps_per_second": round(r.steps_per_second, 1),
        "seconds_in_impl": round(r.seconds_in_impl, 2),
        "seconds_in_oracle": round(r.seconds_in_oracle, 2),
        "seconds_in_harness": round(r.seconds - r.seconds_in_impl - r.seconds_in_oracle, 2),
        "seconds": round(r.seconds, 2), "steps": r.steps, "test_cases": r.examples,
        "steps_per_case": 40, "failure": r.failure.kind if r.failure else None,
        "universe": Config().sizes()}))


if __name__ == "__main__":
    main()
