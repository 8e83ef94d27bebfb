"""The interpreter's compiled actions (model/compile.py) on the harness's own scope: the time of one
`apply`, per action, on states a random run of the bundled spec reaches. Prints one JSON object.

usage: bench/interp.py [REPEATS] [SEED]   (default 5 repeats, seed 1)

The states: a random walk of 400 enabled steps from the initial state, in the campaign's default
scope (Config()), compiled in shared mode as the harness compiles it; every 10th state, the first
two enabled argument tuples of every action. total_ms: all those applies, REPEATS times over;
per_action_us: the mean time of one apply of each action, the costliest first.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time

from dmmcheck.conformance.adapter import Config
from dmmcheck.model.interp import Interpreter
from dmmcheck.spec import load


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    spec, config = load(None), Config()
    it = Interpreter(spec, {k: n for k, n in config.sizes().items() if k in spec.sorts or k in spec.symbols},
                     shared=True, fixed={k: v for k, v in config.fixed().items() if k in spec.symbols})
    rng, s, states = random.Random(seed), it.initial_state(), []
    for _ in range(400):
        succ = [(n, xs) for n in it.actions for _, xs in itertools.islice(it.enabled(s, n), 2)]
        name, xs = rng.choice(succ)
        s = it.apply(s, name, xs)
        states.append(s)
    work = [(s, n, xs) for s in states[::10] for n in it.actions for _, xs in itertools.islice(it.enabled(s, n), 2)]
    spent: dict[str, float] = {}
    count: dict[str, int] = {}
    for _ in range(repeats):
        for s, name, xs in work:
            t0 = time.perf_counter()
            it.apply(s, name, xs)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
            count[name] = count.get(name, 0) + 1
    per = sorted(((n, spent[n] / count[n] * 1e6) for n in spent), key=lambda kv: -kv[1])
    print(json.dumps({"load_average": [round(x, 2) for x in os.getloadavg()], "repeats": repeats, "seed": seed,
                      "applies": len(work) * repeats, "total_ms": round(sum(spent.values()) * 1e3, 1),
                      "per_action_us": {n: round(us, 2) for n, us in per}}, indent=1))


if __name__ == "__main__":
    main()
