"""The heart of the interpreter's trustworthiness: the interpreter and the Z3 encoding agree on every formula.

Hypothesis draws arbitrary small states (reachable or not) and action arguments; each disagreement
names the guard, update or invariant concerned.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dmmcheck.model.crosscheck import CrossCheck
from dmmcheck.spec import load, parse, check

sys.path.insert(0, str(Path(__file__).parent))
from states import args_for, states  # noqa: E402

SPEC = load()
CC = CrossCheck(SPEC, {"vm": 2, "root": 1, "gva": 2, "gfn": 2, "mfn": 2, "slot": 1})
ACTIONS = sorted(SPEC.actions)


@settings(max_examples=50, deadline=None)
@given(states(CC.it), st.sampled_from(ACTIONS), st.data())
def test_actions_agree_on_arbitrary_states(s, action, data):
    args = data.draw(args_for(CC.it, action))
    assert CC.disagreements(s, action, args) == []


@settings(max_examples=15, deadline=None)
@given(states(CC.it))
def test_invariants_agree_on_arbitrary_states(s):
    assert CC.invariant_disagreements(s) == []


def test_every_action_agrees_on_a_reachable_state():
    import random

    it = CC.it
    rng = random.Random(5)
    # the largest budget and quota; the roles' CR0.WP left open has several initial states: the first
    top = {n: it.u.param_value(n) for n in it.u.params}
    s = next(x for x in it.initial_states() if all(x[it.u.layout[n].index][0] == v for n, v in top.items()))
    for _ in range(25):
        a, args = rng.choice(list(it.enabled(s)))
        s = it.apply(s, a, args)
    for name in ACTIONS:
        for args in list(it.action(name).enabled(s))[:2]:
            assert CC.disagreements(s, name, args) == [], name
    assert CC.invariant_disagreements(s) == []


def test_a_disagreement_is_found_and_named():
    # Sabotage the interpreter's compiled update of one action: the cross-check must say which.
    cc = CrossCheck(SPEC, {"vm": 1, "root": 1, "gva": 1, "gfn": 1, "mfn": 1, "slot": 1})
    ca = cc.it.actions["vm_create"]
    real = ca.apply
    ca.apply = lambda s, *a: s  # forgets `insert live(v)`
    try:
        s0 = cc.it.initial_states()[0]
        problems = cc.disagreements(s0, "vm_create", (0,))
    finally:
        ca.apply = real
    assert any("updates of vm_create" in p for p in problems)


def test_a_guard_disagreement_is_named(monkeypatch):
    cc = CrossCheck(check(parse(SMALL, "small.dmm")), {"vm": 2})
    import dmmcheck.model.crosscheck as mod

    monkeypatch.setattr(mod, "evaluate", lambda *a: False)
    problems = cc.disagreements(cc.it.initial_state(), "start", (0,))
    assert problems == ["guard `not live(v)` of start: interpreter False, Z3 True"]


SMALL = """
sort vm
relation live(vm)
init { forall v: vm. live(v) := false }
action start(v: vm) {
  requires not live(v)
  insert live(v)
}
invariant trivial: forall v: vm. live(v) or not live(v)
"""
