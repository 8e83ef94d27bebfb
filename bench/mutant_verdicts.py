"""The bundled VMM's mutant catalogue as deterministic verdicts: each mutant fuzzed for a fixed number
of test cases at a fixed seed (not a time budget, so two runs of the same VMM agree exactly). Prints
one JSON object; the before/after proof of a refactoring of impl/ (the two objects must be equal).

usage: bench/mutant_verdicts.py [--examples N] [--seed S] [--jobs J] [--pattern GLOB]

Per mutant: killed, and for a killed one the oracle (failure kind), the message, the invariants the
failure names, the failing trace's step count; for every one the test cases and steps run (shrinking
included). Each mutant runs as its own `dmm fuzz` in a fresh working directory, so no example
database or trace of an earlier run creeps in. The load average is printed, not compared.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DMM = str(ROOT / ".venv" / "bin" / "dmm")


def catalogue() -> list[str]:
    from dmmcheck.conformance.mutants import MUTANTS

    return sorted(MUTANTS)


def verdict(name: str, examples: int, seed: int) -> dict[str, Any]:
    """One mutant's verdict, from `dmm fuzz --json` in a scratch directory."""
    with tempfile.TemporaryDirectory(prefix="dmm-mutant-") as cwd:
        out = subprocess.run([DMM, "fuzz", "--mutant", name, "--examples", str(examples), "--seed", str(seed),
                              "--json", "--trace-dir", cwd], check=False,  # a killed mutant exits 1
                             cwd=cwd, capture_output=True, text=True)
    if not out.stdout.strip():
        return {"error": out.stderr.strip()[-400:]}
    result = json.loads(out.stdout)
    row: dict[str, Any] = {"killed": bool(result["failures"]), "examples": result["examples"],
                           "steps_run": result["steps"]}
    if result["failures"]:
        first = result["failures"][0]
        row.update(oracle=first["kind"], message=first["message"], steps=first["steps"],
                   invariants=first.get("facts", {}).get("invariants"),
                   # shrinking stopped by its time limit: its result (steps, examples) depends on
                   # the machine's speed, so compare those only where neither run was cut
                   shrink_cut=result["shrink_cut"])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--pattern", default="*")
    args = ap.parse_args()
    names = [n for n in catalogue() if fnmatch.fnmatch(n, args.pattern)]
    load_start = os.getloadavg()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = dict(zip(names, pool.map(lambda n: verdict(n, args.examples, args.seed), names)))
    print(json.dumps({"examples": args.examples, "seed": args.seed,
                      "killed": sum(r.get("killed", False) for r in rows.values()), "total": len(rows),
                      "load_average": {"start": load_start, "end": os.getloadavg()},
                      "mutants": rows}, indent=1))


if __name__ == "__main__":
    main()
