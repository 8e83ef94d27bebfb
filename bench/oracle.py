"""Oracle speed at fuzzing size. Prints one JSON object.

applications_per_second: guard check + successor, on (state, action, args) triples from random walks.
invariant_checks_per_second: every invariant checked after a step, incrementally (the harness's path).
full_invariant_checks_per_second: every invariant evaluated from scratch, for comparison.
explore_states_per_second: `dmm explore` at its default bound, for a fixed time.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmmcheck.model.explore import DEFAULT_BOUND, explore  # noqa: E402
from dmmcheck.model.incremental import IncrementalChecker  # noqa: E402
from dmmcheck.model.interp import Interpreter  # noqa: E402
from dmmcheck.spec import load  # noqa: E402

FUZZ_SIZE = {"vm": 2, "root": 2, "gva": 16, "gfn": 16, "mfn": 32, "slot": 8}


def random_step(it: Interpreter, s, rng: random.Random, tries: int = 200):
    names = list(it.actions)
    for _ in range(tries):
        name = rng.choice(names)
        params = it.spec.actions[name].params
        args = tuple(rng.choice(it.u.domain(p.type)) for p in params)
        if it.is_enabled(s, name, args):
            return name, args
    return None


def walk(it: Interpreter, steps: int, seed: int):
    rng = random.Random(seed)
    s = it.initial_state()
    # Start from a populated state: VMs, roots, guest mappings, pages.
    out = []
    for _ in range(steps):
        step = random_step(it, s, rng)
        if step is None:
            continue
        s2 = it.apply(s, *step)
        out.append((s, step[0], step[1], s2))
        s = s2
    return out


def main() -> None:
    it = Interpreter(load(), FUZZ_SIZE)
    inc = IncrementalChecker(it)
    triples = walk(it, 3000, seed=1)

    t = time.perf_counter()
    n = 0
    for _ in range(3):
        for s, name, args, _ in triples:
            if it.is_enabled(s, name, args):
                it.apply(s, name, args)
            n += 1
    apps = n / (time.perf_counter() - t)

    t = time.perf_counter()
    for s, _, _, s2 in triples:
        assert not inc.failing(s, s2)
    inc_rate = len(triples) / (time.perf_counter() - t)

    sample = triples[::30]
    t = time.perf_counter()
    for _, _, _, s2 in sample:
        assert it.all_hold(s2)
    full_rate = len(sample) / (time.perf_counter() - t)

    small = Interpreter(load(), DEFAULT_BOUND)
    r = explore(small, max_seconds=20)

    print(json.dumps({
        "applications_per_second": round(apps),
        "invariant_checks_per_second": round(inc_rate),
        "full_invariant_checks_per_second": round(full_rate),
        "explore_states_per_second": round(r.states_per_second),
        "fuzz_size": FUZZ_SIZE,
        "explore_bound": DEFAULT_BOUND,
        "walk_steps": len(triples),
        "invariants": len(it.invariants),
        "actions_in_walk": len({x[1] for x in triples}),
    }))


if __name__ == "__main__":
    main()
