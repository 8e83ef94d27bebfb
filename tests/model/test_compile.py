"""The compiler's shortcuts (compile.py), each checked against the reference evaluator on every
state of a small universe: the one-point rule (a quantified variable a conjunct fixes reads one
value, not its domain), copy-on-write updates (an entry is copied only when a point of it
changes) and sliced updates (a forall update whose value is free of a variable writes that
variable's points as one slice), and conditions hoisted (`forall vs. if c {..}` tested where c's
variables are bound)."""

from __future__ import annotations

import itertools

from dmmcheck.model.evaluate import apply_updates
from dmmcheck.model.interp import Interpreter
from dmmcheck.spec import check, parse

SPEC = check(parse("""
sort k [2]
function f(k): k?
relation p(k)
relation q(k, k)
init {
  forall x: k. f(x) := none
  forall x: k. p(x) := false
  forall x: k, y: k. q(x, y) := false
}
action touch(x: k) {
  if exists m: k. f(x) = m and p(m) and q(x, m) {
    insert p(x)
  }
  if forall m: k. f(x) = m implies q(m, x) {
    remove q(x, x)
  }
}
action same(x: k) {
  f(x) := f(x)
  p(x) := p(x)
}
action there_and_back(x: k) {
  insert p(x)
  p(x) := p(x)
}
action column(x: k) {
  forall y: k. q(y, x) := p(x)
  forall y: k. f(y) := none
}
action everything(x: k) {
  forall y: k, z: k. q(y, z) := f(x) = x
}
action per_point(x: k) {
  forall y: k. q(y, y) := p(y)
}
action hoisted(x: k) {
  forall y: k, z: k. if p(y) {
    q(z, y) := f(z) = x
  }
  forall z: k, y: k. if p(y) and x != y {
    remove q(y, z)
  }
}
action not_hoisted(x: k) {
  forall y: k, z: k. if q(y, z) and p(z) {
    q(z, y) := f(x) = y
  }
}
""", "t.dmm"))
IT = Interpreter(SPEC, {"k": 2})


def every_state():
    """Every state of the universe (2 values of k): f, p and q take every value."""
    u = IT.u
    for fs in itertools.product((None, 0, 1), repeat=2):
        for ps in itertools.product((False, True), repeat=2):
            for qs in itertools.product((False, True), repeat=4):
                yield tuple({"f": fs, "p": ps, "q": qs}[name] for name in u.layout)


def test_one_point_loops_read_the_fixed_value_only():
    src = IT.actions["touch"].source
    assert "for v_m in (s[" in src  # exists: m is f(x)'s one value
    assert src.count("for v_m in (") == 2  # and the forall's premise fixes it the same way
    assert "for v_m in range(" not in src


def test_one_point_and_copy_on_write_agree_with_the_reference_on_every_state():
    u, act = IT.u, SPEC.actions["touch"]
    n = 0
    for s in every_state():
        for x in range(2):
            env = {"x": x}
            assert IT.apply(s, "touch", (x,)) == apply_updates(u, s, act.updates, env), (s, x)
            n += 1
    assert n == 3 ** 2 * 2 ** 6 * 2


def test_an_update_that_changes_nothing_copies_nothing():
    s = next(every_state())
    after = IT.apply(s, "same", (1,))
    assert after == s and all(a is b for a, b in zip(after, s))


def test_a_point_written_twice_keeps_the_last_write():
    # `p(x) := p(x)` reads the state before the action: the insert before it is undone
    for s in every_state():
        after = IT.apply(s, "there_and_back", (1,))
        assert after == s
        assert after == apply_updates(IT.u, s, SPEC.actions["there_and_back"].updates, {"x": 1})


def test_a_forall_update_with_a_value_free_of_its_variable_is_one_slice_and_agrees_with_the_reference():
    assert IT.actions["column"].source.count("].count(_x)") == 2
    assert IT.actions["everything"].source.count("].count(_x)") == 1  # one variable sliced, one looped
    assert "].count(_x)" not in IT.actions["per_point"].source  # the value reads y: point by point
    for name in ("column", "everything", "per_point"):
        act = SPEC.actions[name]
        for s in every_state():
            for x in range(2):
                after = IT.apply(s, name, (x,))
                assert after == apply_updates(IT.u, s, act.updates, {"x": x}), (name, s, x)
                if after == s:
                    assert all(a is b for a, b in zip(after, s))  # and copies nothing when nothing changes


def test_a_forall_update_under_a_condition_tests_it_where_its_variables_are_bound():
    src = IT.actions["hoisted"].source
    # each forall loops over y first, tests p(y) once per y, then loops (or slices) over z inside
    assert src.count("for v_y in range(") == 2 and src.count("for v_z in range(") == 1
    assert src.index("if s[") < src.index("for v_z in range(")
    assert "].count(_x)" in src  # `remove q(y, z)` with y fixed: one slice over z
    # a condition over every variable: tested in the innermost loop, as before
    nh = IT.actions["not_hoisted"].source
    assert nh.index("for v_z in range(") < nh.index("if (s[")
    for name in ("hoisted", "not_hoisted"):
        act = SPEC.actions[name]
        for s in every_state():
            for x in range(2):
                after = IT.apply(s, name, (x,))
                assert after == apply_updates(IT.u, s, act.updates, {"x": x}), (name, s, x)
