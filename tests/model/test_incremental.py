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
    # corruption needs one): with vCPUs, roles and unsync pages more actions share the steps; the
    # corruptions go on until every invariant was seen broken (about 900 at these seeds)
    starts = [reachable(i, 160) for i in range(40)]
    every = {inv.name for inv in SPEC.invariants}
    for i in range(20000):
        before = starts[i % 40]
        after = corrupt(before, rng, 1)
        got = set(INC.failing(before, after))
        assert got == {v.invariant for v in IT.check(after)}
        seen |= got
        if seen == every and i >= 3000:
            break
    assert seen == every


def test_polarity_of_each_occurrence():
    from dmmcheck.model.incremental import polarity
    from dmmcheck.spec import ast as A

    def inv(name: str) -> A.Expr:
        return next(i.formula for i in SPEC.invariants if i.name == name)

    # walk_protected: spte != none and g_table(...) implies write_protected(...) or gpt_page(...) and
    # not g_upper(...): g_table and g_upper falser, write_protected and gpt_page truer can never falsify
    pol = polarity(inv("walk_protected"), {})
    assert (pol["g_table"], pol["g_upper"], pol["write_protected"], pol["gpt_page"]) == (-1, -1, 1, 1)
    assert pol["spte"] == 0  # under != : a term
    # under iff both ways
    assert polarity(inv("rmap_consistent"), {})["rmap"] == 0


def test_harmless_changes_are_skipped_and_harmful_ones_caught():
    # A relation that only occurs negated in a clause (gpt_page in gpt_resident: gpt_page(v, g)
    # implies p2m(v, g) != none) can be cleared without a re-check; setting it can break the clause.
    cl = next(c for c in INC.clauses if c.invariant == "gpt_resident")
    assert cl.shape.harmless == {"gpt_page": False}
    lay = IT.u.layout["gpt_page"]
    s = list(IT.initial_state())  # no p2m entry anywhere; VM 0 live
    live = IT.u.layout["live"]
    s[live.index] = (True,) + tuple(s[live.index][1:])
    s = tuple(s)
    assert IT.check(s) == []
    on = list(s)
    on[lay.index] = (True,) + tuple(s[lay.index][1:])
    on = tuple(on)
    assert INC.failing(s, on) == ["gpt_resident"] == [v.invariant for v in IT.check(on)]
    # the harmless direction: no instance of the clause is searched, no full check made
    from dmmcheck.model.compile import compile_search
    calls = []
    full = cl.full_fn
    cl.full_fn = lambda *a: calls.append(a) or full(*a)
    for name in cl.shape.occurrences:
        cl.plans_of(name)
    saved = {name: [plan.search for plan in plans] for name, plans in cl.plans.items()}
    for plans in cl.plans.values():
        for plan in plans:
            search = compile_search(IT.u, cl.shape.vars, cl.shape.violation, plan.occ.pins(), cl.shape.body)
            plan.search = (lambda f: lambda *x: calls.append(x) or f(*x))(search)
    try:
        p2m = IT.u.layout["p2m"]
        both = list(on)
        both[p2m.index] = (0,) + tuple(on[p2m.index][1:])  # now resident: the clause holds again
        both = tuple(both)
        off = list(both)
        off[lay.index] = s[lay.index]
        assert INC.failing(both, tuple(off)) == [] and calls == []
        # the harmful direction is searched (the same recorders see it)
        assert INC.failing(tuple(off), both) == [] and calls
    finally:
        cl.full_fn = full
        for name, plans in cl.plans.items():
            for plan, f in zip(plans, saved[name]):
                plan.search = f
