"""Incremental invariant checking gives the verdicts of a full check."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dmmcheck.model.incremental import IncrementalChecker
from dmmcheck.model.interp import Interpreter
from dmmcheck.spec import load

SPEC = load()
IT = Interpreter(SPEC, {"vm": 2, "root": 2, "gva": 3, "gfn": 3, "mfn": 4, "slot": 2}, fixed={"role_wp": (True, False)})
INC = IncrementalChecker(IT)


def reachable(seed: int, steps: int):
    rng = random.Random(seed)
    s = IT.initial_state()
    for _ in range(steps):
        a, args = rng.choice(list(IT.enabled(s)))
        s = IT.apply(s, a, args)
    return s


def corrupt(s, rng: random.Random, writes: int):
    """Overwrite random points with random values: the kind of state a buggy implementation reports."""
    s = list(s)
    for _ in range(writes):
        lay = rng.choice(list(IT.u.layout.values()))
        res = lay.symbol.result
        dom = list(IT.u.domain(res)) if res.name != "int" else [0, 1, 2, 3]
        if res.optional:
            dom.append(None)
        entry = list(s[lay.index])
        entry[rng.randrange(lay.size)] = rng.choice(dom)
        s[lay.index] = tuple(entry)
    return tuple(s)


@settings(max_examples=150)
@given(st.integers(0, 10**6), st.integers(0, 60), st.integers(1, 4))
def test_incremental_equals_full_after_corruption(seed, steps, writes):
    before = reachable(seed, steps)
    assert IT.check(before) == []
    after = corrupt(before, random.Random(seed + 1), writes)
    full = sorted(v.invariant for v in IT.check(after))
    assert sorted(INC.failing(before, after)) == full


def test_incremental_equals_full_on_legal_steps():
    rng = random.Random(11)
    s = IT.initial_state()
    for _ in range(400):
        a, args = rng.choice(list(IT.enabled(s)))
        s2 = IT.apply(s, a, args)
        assert INC.failing(s, s2) == [] == IT.check(s2)
        s = s2


def test_incremental_catches_each_invariant():
    # Every invariant can be broken by some single-point corruption and the incremental check sees it.
    seen: set[str] = set()
    rng = random.Random(2)
    # walks long enough to reach a write-protected table under a present spte (guest_pt_protected's
    # corruption needs one): with vCPUs, roles and unsync pages more actions share the steps
    starts = [reachable(i, 120) for i in range(40)]
    for i in range(3000):
        before = starts[i % 40]
        after = corrupt(before, rng, 1)
        got = set(INC.failing(before, after))
        assert got == {v.invariant for v in IT.check(after)}
        seen |= got
    assert seen == {inv.name for inv in SPEC.invariants}
