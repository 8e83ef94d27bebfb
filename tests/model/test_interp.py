"""The interpreter's fast path against its reference evaluator, and step checking."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmmcheck.model.evaluate import apply_updates, evaluate
from dmmcheck.model.interp import Interpreter, InterpError
from dmmcheck.spec import load

sys.path.insert(0, str(Path(__file__).parent))
from states import all_args, args_for, states  # noqa: E402

SPEC = load()
# two vCPUs and two roles, one with CR0.WP and one without
IT = Interpreter(SPEC, {"vm": 2, "root": 1, "gva": 2, "gfn": 2, "mfn": 3, "slot": 2}, fixed={"role_wp": (True, False)})
ACTIONS = sorted(SPEC.actions)


def test_initial_state_satisfies_every_invariant():
    s0 = IT.initial_state()
    assert IT.check(s0) == []


@settings(max_examples=60)
@given(states(IT), st.sampled_from(ACTIONS), st.data())
def test_compiled_action_matches_reference(s, action, data):
    args = data.draw(args_for(IT, action))
    act = SPEC.actions[action]
    env = {p.name: a for p, a in zip(act.params, args)}
    assert IT.is_enabled(s, action, args) == all(evaluate(IT.u, s, g, env) for g in act.guards)
    assert IT.apply(s, action, args) == apply_updates(IT.u, s, act.updates, env)


@settings(max_examples=40)
@given(states(IT), st.sampled_from(ACTIONS))
def test_enabled_generator_is_exactly_the_guard(s, action):
    # enabled() prunes loops and binds parameters from equalities; it must lose and add nothing.
    fast = set(IT.action(action).enabled(s))
    slow = {a for a in all_args(IT, action) if IT.is_enabled(s, action, a)}
    assert fast == slow


@settings(max_examples=60)
@given(states(IT))
def test_compiled_invariants_match_reference(s):
    for inv in SPEC.invariants:
        assert IT.holds(s, inv.name) == bool(evaluate(IT.u, s, inv.formula, {})), inv.name


def test_step_check_accepts_the_spec_successor():
    s = IT.initial_state()
    s1 = IT.apply(s, "vm_create", (0,))
    assert IT.step_check(s, "vm_create", (0,), s1)


def _walk(n: int = 30):
    import random

    rng = random.Random(3)
    s = IT.initial_state()
    for _ in range(n):
        a, args = rng.choice(list(IT.enabled(s)))
        s = IT.apply(s, a, args)
    return s


def test_step_check_names_the_guard():
    s = IT.initial_state()
    v = IT.step_check(s, "vm_destroy", (0,), s)
    assert not v and "guard" in v.problems[0] and "live(v)" in v.problems[0]


def test_step_check_names_update_and_frame():
    u = IT.u
    s = IT.apply(IT.initial_state(), "vm_create", (0,))
    s = IT.apply(s, "demand_page", (0, 1, 2))  # vm0 gfn1 -> mfn2
    good = IT.apply(s, "balloon_inflate", (0, 1, 2))
    # An implementation that forgot to drop the reference count, and touched swap state it must not.
    bad = u.from_dict({"refcount": {"refcount(mfn2)": 1}, "slot_used": {"slot_used(slot0)": True}}, default=good)
    v = IT.step_check(s, "balloon_inflate", (0, 1, 2), bad)
    text = "\n".join(v.problems)
    assert not v
    assert "update `refcount(m) := refcount(m) - 1` at refcount(mfn2): spec expects 0, got 1" in text
    assert "frame: balloon_inflate does not modify slot_used, but slot_used(slot0) changed" in text


def test_blame_names_conjunct_and_values():
    s = IT.apply(IT.initial_state(), "vm_create", (1,))
    s = IT.apply(s, "demand_page", (1, 0, 2))
    # A stale rmap entry: rmap(mfn2, vm1, root0, role0, gva1) without the spte.
    broken = IT.u.from_dict({"rmap": {"rmap(mfn2, vm1, root0, role0, gva1)": True}}, default=s)
    (v,) = IT.check(broken)
    assert v.invariant == "rmap_consistent"
    assert v.blame.bindings == [("m", "mfn2"), ("v", "vm1"), ("r", "root0"), ("o", "role0"), ("x", "gva1")]
    assert "left is true, right is false" in v.blame.note


def test_args_by_name_and_errors():
    assert IT.parse_args("demand_page", {"v": "vm1", "g": "gfn0", "m": "mfn2"}) == (1, 0, 2)
    with pytest.raises(InterpError, match="missing"):
        IT.parse_args("demand_page", {"v": "vm1"})
    with pytest.raises(ValueError, match="not a value of mfn"):
        IT.parse_args("demand_page", {"v": "vm1", "g": "gfn0", "m": "mfn9"})


def test_state_dict_round_trip():
    s = _walk()
    assert IT.u.from_dict(IT.u.to_dict(s)) == s


def test_point_inverts_index_in_layout_order():
    # every symbol's flat indices, in order, are exactly its points (what the read-back and the
    # oracle's guest-edit inference rely on when they turn an index back into arguments)
    u = IT.u
    for name, lay in u.layout.items():
        points = list(u.points(name))
        assert [u.index(name, p) for p in points] == list(range(lay.size)), name
        assert [u.point(name, k) for k in range(lay.size)] == points, name


def test_random_walks_keep_invariants():
    # Evidence at fuzzing-like sizes beyond the explorer's bound.
    import random

    it = Interpreter(SPEC, {"vm": 2, "root": 2, "gva": 4, "gfn": 4, "mfn": 6, "slot": 2}, fixed={"role_wp": (True, False)})
    for seed in range(5):
        rng = random.Random(seed)
        s = it.initial_state()
        for _ in range(300):
            a, args = rng.choice(list(it.enabled(s)))
            s = it.apply(s, a, args)
            assert it.check(s) == [], (a, it.show_args(a, args))


def test_show_state_shows_element_zero():
    # Element 0 and enum value 0 are falsy in Python; the listing must still show them.
    s = IT.apply(IT.initial_state(), "vm_create", (0,))
    s = IT.apply(s, "demand_page", (0, 0, 0))
    text = IT.u.show_state(s)
    assert "p2m: (vm0, gfn0) -> mfn0" in text


def test_fixed_immutable_relation_makes_one_initial_state_per_parameter():
    """The harness fixes which roles have CR0.WP; the interpreter then enumerates only the budget and
    the quota, and an unknown or ill-sized fixing is refused."""
    from dmmcheck.model.state import UniverseError
    sizes = {"vm": 1, "root": 1, "gva": 1, "gfn": 1, "mfn": 1, "slot": 1, "vcpu": 1, "role": 2,
             "budget": 1, "quota": 1}
    free = Interpreter(SPEC, sizes)
    assert len(free.initial_states()) == 4  # role_wp over two roles
    it = Interpreter(SPEC, sizes, fixed={"role_wp": (True, False)})
    (s0,) = it.initial_states()
    assert s0[it.u.layout["role_wp"].index] == (True, False)
    assert it.initial_state() == s0
    with pytest.raises(UniverseError, match="role_wp fixed"):
        Interpreter(SPEC, sizes, fixed={"role_wp": (True,)})
    with pytest.raises(UniverseError, match="only an immutable"):
        Interpreter(SPEC, sizes, fixed={"live": (True,)})
