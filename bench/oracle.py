"""Oracle speed at fuzzing size. Prints one JSON object.

applications_per_second: guard check + successor, on (state, action, args) triples from random walks.
invariant_checks_per_second: every invariant checked after a step, incrementally (the harness's path).
full_invariant_checks_per_second: every invariant evaluated from scratch, for comparison.
explore_states_per_second, explore_transitions_per_second: `dmm explore` at its default bound (the
ground-compiled path it takes there), and explore_general_*: the general path at the same bound, for
at most 20 s each.
explore_all_actions: the smallest scope in which every action is enabled (ALL_ACTIONS_BOUND), to the
end or the 900 s limit: its states, transitions, seconds (wall, and CPU: the machine is shared, so
the wall time depends on the load, given with it), and the actions never enabled; then again on
every core (explore_all_actions_every_core). --no-all-actions leaves that last part out (since the
spec has unsync pages it does not finish: bench/explore.py measures the scopes `dmm check` explores).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmmcheck.conformance.adapter import Config  # noqa: E402
from dmmcheck.model.explore import ALL_ACTIONS_BOUND, DEFAULT_BOUND, explore  # noqa: E402
from dmmcheck.model.incremental import IncrementalChecker  # noqa: E402
from dmmcheck.model.interp import Interpreter  # noqa: E402
from dmmcheck.spec import load  # noqa: E402

from explore import measure  # noqa: E402  (bench/explore.py, beside this script)


def fuzz_interpreter() -> Interpreter:
    """The interpreter of the harness's default scope, as its judge builds it (sizes, and the
    immutable symbols the scope fixes: which roles have CR0.WP)."""
    spec, config = load(), Config()
    return Interpreter(spec, {k: n for k, n in config.sizes().items() if k in spec.sorts or k in spec.symbols},
                       fixed={k: v for k, v in config.fixed().items() if k in spec.symbols})


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


def explore_all_actions(jobs: int = 1) -> dict:
    """The all-actions scope explored to the end or the 900 s limit (spec compiled included), in
    `jobs` processes; cpu_seconds counts the worker processes too."""
    return measure(None, ALL_ACTIONS_BOUND, 900, jobs)


def main() -> None:
    it = fuzz_interpreter()
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
    general = explore(small, max_seconds=20, ground=False)

    print(json.dumps({
        "applications_per_second": round(apps),
        "invariant_checks_per_second": round(inc_rate),
        "full_invariant_checks_per_second": round(full_rate),
        "explore_states_per_second": round(r.states_per_second),
        "explore_transitions_per_second": round(r.transitions_per_second),
        "explore_general_states_per_second": round(general.states_per_second),
        "explore_general_transitions_per_second": round(general.transitions_per_second),
        "explore_all_actions": None if "--no-all-actions" in sys.argv else explore_all_actions(),
        "explore_all_actions_every_core": None if "--no-all-actions" in sys.argv else explore_all_actions(
            os.cpu_count() or 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "fuzz_size": dict(it.u.sizes),
        "explore_bound": DEFAULT_BOUND,
        "walk_steps": len(triples),
        "invariants": len(it.invariants),
        "actions_in_walk": len({x[1] for x in triples}),
    }))


if __name__ == "__main__":
    main()
