"""The prover's pipeline: a query is solved in one place (deepening stops at the first violated
level and builds no deeper one; what is pushed is popped), the inductive fallback ladder is one
list, the result cache is read once per obligation, and an obligation that cannot be encoded says
why."""

from __future__ import annotations

from pathlib import Path

import pytest
import z3

from dmmcheck.model import prove as prove_mod
from dmmcheck.model.cache import Cache
from dmmcheck.model.limits import QUICK_RLIMIT
from dmmcheck.model.prove import LADDER, ByClause, Obligation, Prover, Rung, SmallCounterexample
from dmmcheck.model.query import Level, Query, Reading, Tracked, check_goal, pushed, solve
from dmmcheck.model.runner import ProveOptions, run
from dmmcheck.spec import load

HERE = Path(__file__).parent
LOCKSERV = str(HERE / "examples" / "lockserv.dmm")


def test_deepening_stops_at_the_first_violated_level_and_builds_no_deeper_one():
    x = z3.Int("x")
    built = []

    def level(d: int) -> Level:
        built.append(d)
        return Level((lambda: (x >= d,),), lambda: x == 2)  # x = 2 is reachable once x >= d allows it
    answer = solve(Query((lambda: (x <= 2,),), Reading(), levels=level, depth=5), z3.Solver())
    assert (answer.verdict, answer.depth, built) == ("sat", 0, [0])

    def blocked(d: int) -> Level:
        built.append(d)
        return Level((), lambda: x == 2)
    built.clear()
    answer = solve(Query((lambda: (x < 2,),), Reading(), levels=blocked, depth=3), z3.Solver())
    assert (answer.verdict, built) == ("unsat", [0, 1, 2, 3])


def test_an_unsat_core_names_the_tracked_invariants_it_used():
    a, b = z3.Bools("a b")
    q = Query((lambda: (z3.Not(a),), lambda: (Tracked("uses_a", a), Tracked("unused", b))), Reading())
    answer = solve(q, _core_solver())
    assert answer.verdict == "unsat" and answer.core == frozenset({"uses_a"})


def test_what_is_pushed_is_popped_even_when_the_block_raises():
    sv = z3.Solver()
    a = z3.Bool("a")
    sv.add(a)
    assert check_goal(sv, lambda: z3.Not(a)).verdict == "unsat"
    with pytest.raises(RuntimeError), pushed(sv):
        sv.add(z3.Not(a))
        raise RuntimeError
    assert sv.check() == z3.sat and sv.num_scopes() == 0


def test_the_ladder_is_one_list_proof_first_then_counterexamples():
    assert isinstance(LADDER[0], Rung) and not LADDER[0].counts and LADDER[0].settles == ("unsat",)
    assert isinstance(LADDER[1], Rung) and LADDER[1].related and LADDER[1].settles == ("unsat",)
    assert isinstance(LADDER[2], SmallCounterexample)
    counts = LADDER[3]
    assert isinstance(counts, Rung) and counts.counts and set(counts.settles) == {"sat", "unsat"}
    assert isinstance(LADDER[-1], ByClause)
    assert not hasattr(prove_mod, "_SizesSolver") and not hasattr(prove_mod, "_DeepeningSolver")


def test_the_frame_rule_proves_without_a_solver_what_the_action_cannot_touch(monkeypatch):
    spec = load(None)
    prover = Prover(spec)
    monkeypatch.setattr(prove_mod.Prover, "_solve", lambda *a, **k: pytest.fail("a solver was asked"))
    # tlb_evict changes only the ghost TLB; rmap_consistent reads none of it
    assert spec.frames("tlb_evict", "rmap_consistent") and not spec.frames("tlb_evict", "tlb_coherent")
    r = prover.check(Obligation("inductive", action="tlb_evict", invariant="rmap_consistent"))
    assert r.status == "proved" and r.reason == "frame: tlb_evict modifies nothing rmap_consistent reads"


def test_a_goal_the_whole_invariant_set_drowns_is_proved_on_the_related_ones():
    """walk_protected after zap_spte (which only removes sptes) ran out of resources with every
    invariant assumed; with the ten that share a symbol with it, it is proved."""
    spec = load(None)
    prover = Prover(spec)
    ob = Obligation("inductive", action="zap_spte", invariant="walk_protected")
    related = prover._related(ob)
    assert "walk_protected" in related and "within_quota" not in related and len(related) < len(spec.invariants)
    goal = prover.build.inductive_goal(ob)
    assert prover._solve(prover.build.inductive(ob, goal, False), QUICK_RLIMIT).verdict == "unknown"
    assert prover._solve(prover.build.inductive(ob, goal, False, related), QUICK_RLIMIT).verdict == "unsat"
    assert prover.check(ob).status == "proved"


def test_the_cache_is_read_once_per_obligation(monkeypatch, tmp_path):
    reads = []
    real = Cache.get
    monkeypatch.setattr(Cache, "get", lambda self, key, name=None: reads.append(name) or real(self, key, name))
    first, _ = run(ProveOptions(LOCKSERV, cache_dir=str(tmp_path), jobs=1))
    assert sorted(reads) == sorted(r.name for r in first) and not any(r.cached for r in first)
    reads.clear()
    again, _ = run(ProveOptions(LOCKSERV, cache_dir=str(tmp_path), jobs=1))
    assert len(reads) == len(again) and all(r.cached for r in again)
    assert [(r.name, r.status, r.core) for r in again] == [(r.name, r.status, r.core) for r in first]


def test_a_k_induction_step_without_an_exact_count_delta_says_why(tmp_path):
    text = (HERE / "prove" / "refcount.dmm").read_text() + """
action reset_all(p: page) {
  requires refs(p) = 0
  forall h: holder. if maps(h) = p { maps(h) := none }
}
"""
    spec_path = tmp_path / "reset.dmm"
    spec_path.write_text(text)
    p = Prover(load(spec_path))
    for inv in ("base", "exact"):
        r = p.check(Obligation("kinduction", invariant=inv, depth=2))
        assert r.status == "unknown"
        assert r.reason.startswith("could not encode: no exact unbounded count delta for count {"), r.reason
        assert r.reason.endswith("; use --finite N")


def _core_solver() -> z3.Solver:
    sv = z3.Solver()
    sv.set(unsat_core=True)
    return sv
