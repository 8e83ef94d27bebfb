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
from dmmcheck.conformance.adapter import Config, Observation, Operation
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.operations import ACCESS_ACTIONS
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

RIGHTS = inputs.RW | inputs.US | inputs.XD


class HugeWalks(BundledVmm):
    """The bundled VMM, noting every spte fill through a guest huge leaf: (level, leaf, kind, user)."""

    fills: ClassVar[list[list[tuple[int, int, str, bool]]]] = []  # per test case

    def reset(self, config: Config) -> None:
        super().reset(config)
        HugeWalks.fills.append([])

    def step(self, op: Operation) -> Observation:
        obs = super().step(op)
        a = op.args
        if op.action in ACCESS_ACTIONS and obs.access is not None and not obs.access.fault \
                and any(name == "shadow_fill" for name, _ in obs.events):
            table = self.abstract_state()["vms"][a["v"]]["cr3_gfn"] << 12
            for level in (4, 3, 2):
                if table >> 12 >= self.config.gfns:  # an entry naming a frame beyond memory
                    break
                e = int.from_bytes(self.read_guest(a["v"], table + 8 * (a["x"] >> inputs.SHIFT[level] & 511), 8),
                                   "little")
                if level < 4 and e & inputs.PS:
                    HugeWalks.fills[-1].append((level, e, a["a"], a["u"]))
                    break
                table = e & inputs.FRAME
        return obs


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
