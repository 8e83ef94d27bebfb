"""The KVM adapter's campaign speed: `dmm fuzz --impl-cmd 'python -m dmmcheck.conformance.kvm_adapter' --json` for a
given time, seed and scope. Prints one JSON object.

usage: bench/kvm.py [SECONDS] [SEED] [CONFIG.toml] [KNOWN.toml]

CONFIG defaults to bench/kvm/default.toml (the default scope with beyond_memory = "zeros", varied per
test case); KNOWN, a --known-divergences file, lets the campaign go on past the divergences
docs/kvm.md lists (bench/kvm/known.toml).

steps, steps_per_second: judged steps and their rate (wall clock, harness included);
seconds_in_impl: in the child (KVM runs, reads of guest memory, the round trips);
coverage: input classes tried, scope classes reached, accesses not performed (skipped);
verdict: "pass" or the failure's kind and message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SECONDS = sys.argv[1] if len(sys.argv) > 1 else "30"
SEED = sys.argv[2] if len(sys.argv) > 2 else "0"
CONFIG = sys.argv[3] if len(sys.argv) > 3 else str(HERE / "kvm" / "default.toml")
KNOWN = sys.argv[4] if len(sys.argv) > 4 else None


def main() -> int:
    cmd = [sys.executable, "-m", "dmmcheck", "fuzz", "--impl-cmd", f"{sys.executable} -m dmmcheck.conformance.kvm_adapter",
           "--seconds", SECONDS, "--seed", SEED, "--config", CONFIG, "--json", "--shrink-seconds", "30",
           "--trace-dir", str(HERE / "kvm" / "traces")]
    if KNOWN:
        cmd += ["--known-divergences", KNOWN]
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        r = json.loads(p.stdout)
    except ValueError:
        print(json.dumps({"error": (p.stdout + p.stderr)[-2000:], "status": p.returncode}))
        return 2
    f = r["failures"][0] if r["failures"] else None
    out = {"seconds": r["seconds"], "seed": r["seed"], "config": CONFIG, "examples": r["examples"], "steps": r["steps"],
           "steps_per_second": r["steps_per_second"], "seconds_in_impl": r["seconds_in_impl"],
           "seconds_in_oracle": r["seconds_in_oracle"],
           "coverage": {"inputs_tried": len(r["inputs"]), "inputs_not_tried": r["inputs_not_tried"],
                        "scopes": r["scopes"], "skipped": r.get("skipped", {})},
           "known_divergences": r.get("known_divergences"),
           "verdict": "pass" if f is None else f"{f['kind']}: {f['message']}", "trace": f and f["trace"]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
