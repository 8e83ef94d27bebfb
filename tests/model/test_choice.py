"""Choice parameters: an action parameter of function type (`h: a -> bool`, `g: (a, a) -> b?`) is
picked whole by the action, which is how a spec writes a nondeterministic assignment of many points
at once. Each layer must agree on what such an action does: the compiled interpreter and the ground
explorer against the reference evaluator, the prover's encoding against the explorer, and a value
shown in a trace must read back as the same function."""

from __future__ import annotations

import itertools
import json

import pytest

from dmmcheck.model.crosscheck import CrossCheck
from dmmcheck.model.evaluate import apply_updates, evaluate
from dmmcheck.model.explore import explore
from dmmcheck.model.interp import Interpreter, InterpError
from dmmcheck.model.obligation import Obligation
from dmmcheck.model.state import UniverseError, split_top
from dmmcheck.model.prove import Prover
from dmmcheck.model.witness import answer
from dmmcheck.spec import check, parse
from dmmcheck.spec.printer import show_spec

TEXT = """
sort a [2]
sort b [2]
relation r(a)
function f(a): b?
init {
  forall x: a. remove r(x)
  forall x: a. f(x) := none
}
# Every point h picks is set to g's value on the diagonal; r follows f.
action pick(h: a -> bool, g: (a, a) -> b?) {
  requires exists x: a. h(x)
  forall x: a. if h(x) { f(x) := g(x, x) }
  forall x: a. if h(x) { r(x) := g(x, x) != none }
}
# Drops r at the points h picks, but keeps f: breaks `follows` where f was set.
action drop(h: a -> bool) {
  forall x: a. if h(x) { remove r(x) }
}
invariant follows: forall x: a. f(x) != none implies r(x)
"""
SPEC = check(parse(TEXT, "choice.dmm"))


def test_a_function_type_prints_and_parses_back():
    again = check(parse(show_spec(parse(TEXT, "choice.dmm")), "again.dmm"))
    assert [str(p.type) for p in again.actions["pick"].params] == ["a -> bool", "(a, a) -> b?"]


def test_the_domain_of_a_choice_parameter_is_every_function():
    it = Interpreter(SPEC)
    h, g = SPEC.actions["pick"].params
    assert len(it.u.domain(h.type)) == 2 ** 2  # a relation over 2 points
    assert len(it.u.domain(g.type)) == 3 ** 4  # none, b0 or b1 at each of 4 points
    assert it.u.domain(h.type)[1] == (False, True)  # row-major, as a state symbol's points


def test_compiled_actions_agree_with_the_reference_evaluator_on_every_argument():
    it = Interpreter(SPEC)
    act = SPEC.actions["pick"]
    s0 = it.initial_state()
    states = [s0] + [it.apply(s0, "pick", xs) for _, xs in it.enabled(s0, "pick")][::9]
    n = 0
    for s in states:
        for h, g in itertools.product(*(it.u.domain(p.type) for p in act.params)):
            env = {"h": h, "g": g}
            assert it.is_enabled(s, "pick", (h, g)) == all(evaluate(it.u, s, c, env) for c in act.guards)
            assert it.apply(s, "pick", (h, g)) == apply_updates(it.u, s, act.updates, env), (s, h, g)
            n += 1
    assert len(states) > 10 and n == len(states) * 4 * 81


def test_a_choice_writes_only_the_points_it_picks():
    it = Interpreter(SPEC)
    s = it.apply(it.initial_state(), "pick", it.parse_args("pick", {"h": "{a0, a1}", "g": [0, None, None, 1]}))
    assert it.u.to_dict(s)["f"] == {"f(a0)": "b0", "f(a1)": "b1"}
    args = it.parse_args("pick", {"h": "{a1}", "g": "{(a0, a0): b1, (a0, a1): none, (a1, a0): none, (a1, a1): none}"})
    s2 = it.apply(s, "pick", args)
    assert it.u.to_dict(s2)["f"] == {"f(a0)": "b0", "f(a1)": None}  # a0 kept: h did not pick it
    assert not it.u.get(s2, "r", 1) and it.u.get(s2, "r", 0)


def test_a_shown_choice_reads_back_as_the_same_function():
    it = Interpreter(SPEC)
    for name, xs in itertools.islice(it.enabled(it.initial_state()), 0, None, 7):
        shown = dict(part.split("=", 1) for part in split_top(it.show_args(name, xs)))
        assert it.parse_args(name, shown) == xs


@pytest.mark.parametrize("bad, why", [
    ({"h": "{a2}", "g": "{}"}, "is not a point"),
    ({"h": [True], "g": "{}"}, "takes 2 values"),
    ({"h": "a0", "g": "{}"}, "write it as {...}"),
])
def test_a_bad_choice_value_is_refused_with_what_and_where(bad, why):
    it = Interpreter(SPEC)
    with pytest.raises(InterpError, match="parameter [hg] of pick") as e:
        it.parse_args("pick", bad)
    assert why in str(e.value)


def test_the_ground_explorer_and_the_general_one_reach_the_same_states():
    it = Interpreter(SPEC)
    ground, general = explore(it, keep_going=True), explore(it, ground=False, keep_going=True)
    assert (ground.states, ground.transitions) == (general.states, general.transitions)
    assert ground.complete and ground.action_counts["pick"] > 0
    assert {v.invariant for v, _ in ground.violations} == {"follows"}
    # the shortest trace: pick one point to a value, then drop it
    trace = ground.violations[0][1]
    assert [st.action for st in trace] == ["init", "pick", "drop"]


def test_the_prover_proves_what_a_choice_keeps_and_finds_what_it_breaks():
    p = Prover(SPEC)
    assert p.check(Obligation("inductive", "pick", "follows")).status == "proved"
    bad = p.check(Obligation("inductive", "drop", "follows"))
    assert bad.status == "violated"
    cti = bad.counterexample
    assert cti["action"] == "drop" and cti["args"]["h"] == "{a0}"  # (one point is the smallest)
    json.dumps(cti)  # a choice shown is plain text, as every argument


def test_a_witness_names_the_choice_that_reaches_it():
    spec = check(parse(TEXT + "witness both: reach pick such that forall x: a. f(x) != none\n", "w.dmm"))
    w = answer(spec, spec.witnesses[0], 3)
    assert w.status == "proved"
    (step,) = w.witness["steps"]
    assert step["args"]["h"] == "{a0, a1}"  # both points in one step: the choice sets them at once
    it = Interpreter(spec, w.witness["universe"])
    after = it.apply(it.initial_state(), "pick", it.parse_args("pick", step["args"]))
    assert all(v is not None for v in it.u.to_dict(after)["f"].values())


def test_z3_and_the_interpreter_agree_on_a_choice():
    cc = CrossCheck(SPEC)
    it = cc.it
    s0 = it.initial_state()
    picks = list(it.enabled(s0, "pick"))[::11]
    assert len(picks) > 10
    for _, xs in picks:
        assert cc.disagreements(s0, "pick", xs) == []
        s1 = it.apply(s0, "pick", xs)
        for h in it.u.domain(SPEC.actions["drop"].params[0].type):
            assert cc.disagreements(s1, "drop", (h,)) == []


def test_a_choice_too_large_to_list_is_refused_with_its_count():
    it = Interpreter(SPEC, {"a": 4, "b": 4})
    g = SPEC.actions["pick"].params[1].type  # (a, a) -> b?: 5 values at each of 16 points
    assert it.u.domain_count(g) == 5 ** 16
    with pytest.raises(UniverseError, match=r"has 152,587,890,625 values at this bound"):
        it.u.domain(g)
    # the compiled loops never list it: the first enabled choices come at once
    assert next(it.enabled(it.initial_state(), "pick"))[0] == "pick"
