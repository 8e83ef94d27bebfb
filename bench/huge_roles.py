"""How often the generator draws the shape that kills huge_leaf_access_not_in_role: an access that
succeeds through a guest huge leaf and fills an spte (by access role), and two huge leaves over the
same frames with different rights both walked in one test case. Prints one JSON object.

usage: bench/huge_roles.py [TEST_CASES] [SEED] [mutant]

Seen through the adapter API only (the access's outcome and events, the guest's tables read back),
on the correct bundled VMM. With `mutant`: the mutant instead, every failure counted and its test
case ended there (the campaign goes on), so the figure is failing test cases per test case run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from typing import Any, ClassVar

from dmmcheck.conformance import divergences, inputs
from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

# The recorder of spte fills through huge leaves is the test's (one copy): this script counts with it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "conformance"))
from test_huge_roles import RIGHTS, HugeWalks


class CountAll:
    """A stand-in for the known-divergences tally that accepts every failure, by kind and message."""

    seen: ClassVar[Counter[str]] = Counter()

    def __init__(self, known: Any) -> None:
        self.hits: Counter[str] = Counter()

    def accept(self, f: Any) -> bool:
        CountAll.seen[f"{f.kind}: {f.message[:60]}"] += 1
        return True


def two_rights(case: list[tuple[int, int, str, bool]]) -> bool:
    by_frame: dict[tuple[int, int], set[int]] = {}
    for level, e, _kind, _user in case:
        by_frame.setdefault((level, e & inputs.FRAME), set()).add(e & RIGHTS)
    return any(len(rights) > 1 for rights in by_frame.values())


def main() -> None:
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    mutant = "mutant" in sys.argv[3:]
    load_start = os.getloadavg()
    t = time.perf_counter()
    if mutant:
        divergences.Tally = CountAll  # type: ignore[misc, assignment]
        r = fuzz(BundledVmm, load(None), Config(mutant="huge_leaf_access_not_in_role"), examples=cases,
                 seed_=seed, known=object())  # type: ignore[arg-type]
        out: dict[str, Any] = {"failing_test_cases": sum(CountAll.seen.values()), "failures": dict(CountAll.seen)}
    else:
        r = fuzz(HugeWalks, load(None), Config(), examples=cases, seed_=seed)
        fills = HugeWalks.fills
        out = {"test_cases_with_huge_fill": sum(1 for c in fills if c),
               "huge_fills_by_role": {f"{k} {'user' if u else 'supervisor'}": n for (k, u), n in
                                      sorted(Counter((k, u) for c in fills for _l, _e, k, u in c).items())},
               "huge_fills_by_level": dict(Counter(f"level {lv}" for c in fills for lv, *_ in c)),
               "test_cases_two_rights_one_frame": sum(map(two_rights, fills))}
    failure = f"{r.failure.kind}: {r.failure.message[:200]}" if r.failure else None  # a stop before TEST_CASES
    print(json.dumps({"test_cases": r.examples, "steps": r.steps, "seed": seed, "mutant": mutant, "failure": failure, **out,
                      "seconds": round(time.perf_counter() - t, 1), "loadavg_start": load_start,
                      "loadavg_end": os.getloadavg()}))


if __name__ == "__main__":
    main()
