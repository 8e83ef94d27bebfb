"""An obligation's answer (verdict, core, counterexample) depends on the obligation only: not on what
the process proved before it, nor on which worker ran it, nor on which other obligations were asked
for. `dmm prove --json` and the result cache rely on it. Z3 numbers the terms of a context as they
are made and its search follows the numbers, so a shared context, or a solver shared in another
order, changed cores (11 to 14 of the bundled spec's obligations between two identical runs with -j 2)
and turned a 0.02 s proof into an unknown."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import z3

from dmmcheck.main import main
from dmmcheck.model.prove import Obligation, Prover
from dmmcheck.model.query import Query, Reading, Tracked, own_solver, solve
from dmmcheck.spec import load

BROKEN_LOCK = str(Path(__file__).parent / "prove" / "broken_lock.dmm")
# Obligations of the bundled spec whose cores differed between two identical runs before each solver
# had a context of its own, and one of each other kind that shares a solver.
TARGETS = ["inductive/swap_in/within_quota", "inductive/demand_page/descriptor_status",
           "inductive/cow_break/isolation", "init/within_quota", "vacuity/swap_in"]


def _answer(r: Any) -> dict[str, Any]:
    """What a result says, without how long it took."""
    d = r if isinstance(r, dict) else r.to_json()
    return {k: v for k, v in d.items() if k != "seconds"}


def _prove_json(args: list[str], cache: Path) -> dict[str, Any]:
    """`dmm prove --no-cache --json ARGS` in a process of its own: its JSON without timings."""
    out = subprocess.run([sys.executable, "-m", "dmmcheck", "prove", "--no-cache", "--json", *args],
                         capture_output=True, text=True, check=False, env={**os.environ, "DMM_CACHE_DIR": str(cache)})
    return _timeless(json.loads(out.stdout))


def _timeless(doc: dict[str, Any]) -> dict[str, Any]:
    """A --json document without its timings (the witnesses' results are among the obligations)."""
    doc.pop("seconds", None)
    doc["obligations"] = [_answer(r) for r in doc["obligations"]]
    return doc


def test_each_solver_has_a_context_of_its_own_and_a_core_is_read_there():
    a, b, c = z3.Bools("a b c")
    query = Query((lambda: (z3.Or(z3.Not(a), z3.Not(b)),),
                   lambda: (Tracked("a", a), Tracked("b", b), Tracked("c", c))), Reading())
    solvers = [own_solver({"unsat_core": True}) for _ in range(2)]
    assert len({id(sv.ctx) for sv in solvers} | {id(z3.main_ctx())}) == 3
    first, again = (solve(query, sv) for sv in solvers)
    assert first.verdict == again.verdict == "unsat" and first.core == again.core == frozenset({"a", "b"})


def test_a_model_stays_in_its_solvers_context():
    x = z3.Int("x")
    sv = own_solver({})
    answer = solve(Query((lambda: (x > 3, x < 5),), Reading()), sv)
    assert answer.verdict == "sat" and answer.model.ctx is sv.ctx
    assert answer.model.eval(x.translate(sv.ctx)).as_long() == 4


def test_an_obligation_gets_the_same_answer_alone_and_amid_others(tmp_path):
    spec = load(None)
    p = Prover(spec)
    obs = p.obligations()
    p.check_vacuity([ob for ob in obs if ob.kind == "vacuity"][::2])  # every other one: a subset
    p.check_inits([ob for ob in obs if ob.kind == "init"][::-1])  # in another order
    for action in list(spec.actions)[:8]:
        p.check_action([ob for ob in obs if ob.kind == "inductive" and ob.action == action])
    amid = {name: _answer(p.check(_named(obs, name))) for name in TARGETS}
    for name in TARGETS:  # each in a process of its own, the only obligation asked for
        alone = _prove_json(["--only", name, "-j", "1"], tmp_path)["obligations"]
        assert [o["name"] for o in alone] == [name]
        assert alone[0] == amid[name], name


def test_a_goal_gets_the_same_answer_with_the_goals_after_it_and_without():
    """The goals after one on its action's quick pass are checked after it on each rung; with one
    context for two rungs, the terms they left in the first changed the second's answer: this goal
    was proved amid all of its action's goals and unknown alone (`--only`)."""
    spec = load(None)
    target = "inductive/sync_spte/guest_pt_protected"
    obs = [ob for ob in Prover(spec).obligations() if ob.kind == "inductive" and ob.action == "sync_spte"]
    whole = {r.name: _answer(r) for r in Prover(spec).check_action(obs)}
    (alone,) = Prover(spec).check_action([ob for ob in obs if ob.name == target])
    assert _answer(alone) == whole[target]
    assert whole[target]["status"] == "proved"


def test_a_counterexample_is_the_same_alone_and_after_a_violated_goal():
    """A violated goal's model, translated back into the prover's context, changed how the queries
    built there later were solved: the k-induction step's counterexample came out different."""
    spec = load(BROKEN_LOCK)
    step = Obligation("kinduction", invariant="mutex", depth=2)
    alone = Prover(spec).check(step)
    p = Prover(spec)
    assert [r.status for r in p.check_action([Obligation("inductive", "acquire", "mutex")])] == ["violated"]
    after = p.check(step)
    assert alone.status == "violated" and alone.counterexample
    assert _answer(after) == _answer(alone)


def test_two_runs_on_the_bundled_spec_give_the_same_json_in_process_and_with_two_workers(tmp_path, monkeypatch):
    workers = [_prove_json(["-j", "2"], tmp_path) for _ in range(2)]
    monkeypatch.setenv("DMM_CACHE_DIR", str(tmp_path))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["prove", "--no-cache", "--json", "-j", "1"])
    in_process = _timeless(json.loads(out.getvalue()))
    assert in_process["summary"]["proved"] == len(in_process["obligations"]) > 800
    assert any(o["core"] for o in in_process["obligations"])  # cores are compared, not only verdicts
    assert workers[0] == workers[1] == in_process


def _named(obs: list[Obligation], name: str) -> Obligation:
    return next(ob for ob in obs if ob.name == name)
