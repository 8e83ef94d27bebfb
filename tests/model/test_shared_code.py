"""Shared code (compile.py, `shared=True`): compiled once per spec, bound to each universe by name,
it gives every answer the code compiled for that universe gives."""

from __future__ import annotations

import random

import pytest

from dmmcheck.model.incremental import IncrementalChecker
from dmmcheck.model.interp import Interpreter
from dmmcheck.spec import load

SPEC = load()
# Different sizes in every sort, so that a size or a stride bound from the wrong universe shows.
SIZES = ({"vm": 2, "root": 2, "gva": 3, "gfn": 3, "mfn": 4, "slot": 2, "vcpu": 2, "role": 2},
         {"vm": 3, "root": 1, "gva": 2, "gfn": 4, "mfn": 3, "slot": 1, "vcpu": 3, "role": 3, "budget": 2, "quota": 2})
# Which roles have CR0.WP (one initial state per budget and quota, as the harness fixes them).
ROLE_WP = {2: (True, False), 3: (False, True, True)}


def interp(sizes: dict, shared: bool = False) -> Interpreter:
    return Interpreter(SPEC, sizes, shared=shared, fixed={"role_wp": ROLE_WP[sizes["role"]]})


def walk(it: Interpreter, seed: int, steps: int) -> list:
    rng = random.Random(seed)
    s, out = it.initial_state(), []
    for _ in range(steps):
        a, args = rng.choice(list(it.enabled(s)))
        s = it.apply(s, a, args)
        out.append(s)
    return out


def corrupt(it: Interpreter, s, rng: random.Random):
    s = list(s)
    lay = rng.choice(list(it.u.layout.values()))
    res = lay.symbol.result
    dom = list(it.u.domain(res)) if res.name != "int" else [0, 1, 2, 3]
    entry = list(s[lay.index])
    entry[rng.randrange(lay.size)] = rng.choice(dom + ([None] if res.optional else []))
    s[lay.index] = tuple(entry)
    return tuple(s)


@pytest.mark.parametrize("sizes", SIZES)
def test_shared_code_answers_as_the_universes_own(sizes):
    interp(SIZES[0], shared=True)  # the code is compiled here, for another universe
    own, shared = interp(sizes), interp(sizes, shared=True)
    assert shared.initial_state() == own.initial_state()
    for s in walk(own, 5, 60):
        assert sorted(shared.enabled(s)) == sorted(own.enabled(s))
        for name, args in list(own.enabled(s))[:20]:
            assert shared.apply(s, name, args) == own.apply(s, name, args)
    inc_own, inc_shared = IncrementalChecker(own), IncrementalChecker(interp(sizes, shared=True))
    rng = random.Random(3)
    states = walk(own, 7, 40)
    for i in range(600):
        before = states[i % len(states)]
        after = corrupt(own, before, rng)
        assert sorted(inc_shared.failing(before, after)) == sorted(inc_own.failing(before, after))
        assert [v.invariant for v in shared.check(after)] == [v.invariant for v in own.check(after)]


def test_shared_code_is_compiled_once_per_spec():
    a, b = (interp(sizes, shared=True) for sizes in SIZES)
    for name in SPEC.actions:
        assert a.actions[name].guard.__code__ is b.actions[name].guard.__code__
        assert a.actions[name].guard.__globals__ is not b.actions[name].guard.__globals__
    ia, ib = IncrementalChecker(a), IncrementalChecker(b)
    assert all(x.full_fn.__code__ is y.full_fn.__code__ for x, y in zip(ia.clauses, ib.clauses))
    # the violation searches too, compiled when first needed
    for inc, it in ((ia, a), (ib, b)):
        rng = random.Random(5)
        for before in walk(it, 7, 60):
            inc.failing(before, corrupt(it, before, rng))
    common = [(px.search, py.search) for x, y in zip(ia.clauses, ib.clauses) for sym in x.plans.keys() & y.plans.keys()
              for px, py in zip(x.plans[sym], y.plans[sym]) if px.search is not None and py.search is not None]
    assert common and all(f.__code__ is g.__code__ and f.__globals__ is not g.__globals__ for f, g in common)
