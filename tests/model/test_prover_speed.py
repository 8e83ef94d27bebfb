"""What keeps `dmm prove` cheap (bench/prove_vs_mypyvy.py measures it): the prover's commands import
nothing of the conformance harness (Hypothesis, Unicorn); a command parses its spec once; the init
obligations share one incremental solver, and so do the vacuity checks; a goal that needs fewer
hypotheses is proved on its action's shared solvers; a small run proves in the dmm process, with no
worker process to fork. Each shortcut gives the verdicts of the long way."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmmcheck.main import main
from dmmcheck.model import prove as prove_mod
from dmmcheck.model import runner
from dmmcheck.model.prove import Obligation, Prover
from dmmcheck.model.runner import ProveOptions, auto_jobs, run
from dmmcheck.spec import load

HERE = Path(__file__).parent
LOCKSERV = str(HERE / "examples" / "lockserv.dmm")
HEAVY = ("hypothesis", "unicorn", "capstone", "dmmcheck.conformance", "dmmcheck.impl")

_PROBE = """
import contextlib, io, json, sys
from dmmcheck.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(json.loads(sys.argv[1]))
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("argv", [["--help"], ["prove", "--help"], ["parse"], ["parse", LOCKSERV],
                                  ["prove", LOCKSERV, "--no-cache", "--json"], ["explore", "--help"]])
def test_prover_commands_import_nothing_of_the_harness(argv):
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True,
                         check=True).stdout
    heavy = [m for m in json.loads(out) if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert heavy == [], argv


def _imported(argv: list[str], env: dict[str, str] | None = None) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True,
                         check=True, env=env).stdout
    return json.loads(out)


# What a proof that passes, printed to a pipe, never uses: lark (the standalone parser in the parser
# cache parses), rich (off a terminal the report is plain lines: report.Out), the HTML and ITF writers, the interpreter's incremental checks,
# difflib (the checker's "did you mean" for a spec with errors).
NOT_FOR_A_PASSING_PROOF = ("lark", "rich", "dmmcheck.model.prove_html", "dmmcheck.model.html",
                           "dmmcheck.model.itf", "dmmcheck.model.incremental", "difflib")


def test_a_passing_proof_imports_only_what_it_uses(tmp_path):
    env = {**os.environ, "DMM_PARSER_CACHE": str(tmp_path)}
    _imported(["parse", LOCKSERV], env)  # fills the parser cache
    mods = _imported(["prove", LOCKSERV, "--no-cache"], env)
    assert [m for m in mods if m in NOT_FOR_A_PASSING_PROOF or m.startswith(("lark.", "rich."))] == []
    assert "dmmcheck.model.prove" in mods  # the probe did prove


def test_help_imports_nothing_of_the_spec_language():
    mods = _imported(["--help"])
    assert [m for m in mods if m == "lark" or m.startswith(("lark.", "dmmcheck.spec", "z3"))] == []


def test_harness_commands_still_get_their_options(capsys):
    for cmd in (["fuzz", "--help"], ["replay", "--help"], ["mutants", "--help"], ["adapter-check", "--help"]):
        with pytest.raises(SystemExit):
            main(cmd)
        assert "--impl" in capsys.readouterr().out, cmd


def test_prove_parses_its_spec_once_and_the_next_command_not_at_all(monkeypatch, tmp_path):
    from dmmcheck.spec import cache

    calls = []
    real = cache.parse_file
    monkeypatch.setattr(cache, "parse_file", lambda path: calls.append(path) or real(path))
    monkeypatch.setenv("DMM_CACHE_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("DMM_PARSER_CACHE", str(tmp_path / "parsers"))  # empty: this spec never checked
    for _ in range(2):
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["prove", LOCKSERV, "--no-cache", "--json", "-j", "1"]) == 0
    assert len(calls) == 1  # the second command's spec came checked from the cache


def _count_solvers(monkeypatch) -> list[int]:
    made = [0]
    real = prove_mod.own_solver

    def counting(*args):
        made[0] += 1
        return real(*args)
    monkeypatch.setattr(prove_mod, "own_solver", counting)
    return made


def test_init_obligations_share_one_solver_and_agree_with_one_each(monkeypatch):
    spec = load(LOCKSERV)
    obs = [ob for ob in Prover.list_obligations(spec) if ob.kind == "init"]
    alone = [Prover(spec).check(ob) for ob in obs]
    made = _count_solvers(monkeypatch)
    shared = Prover(spec).check_inits(obs)
    assert made[0] == 1 and len(obs) == 9
    assert [(r.name, r.status) for r in shared] == [(r.name, r.status) for r in alone]
    assert all(r.status == "proved" for r in shared)


def test_an_init_violation_on_the_shared_solver_is_reported_as_alone(tmp_path):
    text = Path(LOCKSERV).read_text().replace("server_holds_lock() := true", "server_holds_lock() := false")
    bad = tmp_path / "bad.dmm"
    bad.write_text(text.replace("forall n: node. holds_lock(n) := false", "forall n: node. holds_lock(n) := true"))
    spec = load(bad)
    obs = [ob for ob in Prover.list_obligations(spec) if ob.kind == "init"]
    shared = {r.name: r for r in Prover(spec).check_inits(obs)}
    alone = {ob.name: Prover(spec).check(ob) for ob in obs}
    assert {n: r.status for n, r in shared.items()} == {n: r.status for n, r in alone.items()}
    assert shared["init/mutex"].status == "violated"


def test_vacuity_checks_share_one_solver_and_still_find_a_dead_action(monkeypatch, tmp_path):
    dead = tmp_path / "dead.dmm"
    dead.write_text(Path(LOCKSERV).read_text() + "\naction never(n: node) {\n  requires holds_lock(n) and "
                    "server_holds_lock()\n  insert lock_msg(n)\n}\n")
    spec = load(dead)
    obs = [ob for ob in Prover.list_obligations(spec) if ob.kind == "vacuity"]
    alone = {ob.name: Prover(spec).check(ob).status for ob in obs}
    made = _count_solvers(monkeypatch)
    shared = {r.name: r for r in Prover(spec).check_vacuity(obs)}
    assert {n: r.status for n, r in shared.items()} == alone
    assert shared["vacuity/never"].status == "violated" and "dead action" in shared["vacuity/never"].reason
    assert made[0] == 2  # the shared solver, and the dead action's own check (its report)
    assert all(r.status == "proved" for n, r in shared.items() if n != "vacuity/never")


def test_a_small_run_forks_no_worker_and_a_large_one_uses_the_cores(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "_run_pool", lambda *a, **k: pytest.fail("forked workers for a small run"))
    results, _ = run(ProveOptions(LOCKSERV, use_cache=False, cache_dir=str(tmp_path), jobs=0))
    assert len(results) == 61 and all(r.status == "proved" for r in results)
    assert auto_jobs(61) == 1
    assert auto_jobs(10 * runner.MIN_OBLIGATIONS_PER_WORKER) == min(10, __import__("os").cpu_count() or 1)


def test_an_explicit_job_count_still_forks(monkeypatch, tmp_path):
    used = []
    real = runner._run_pool
    monkeypatch.setattr(runner, "_run_pool", lambda groups, opts, jobs, done: used.append(jobs)
                        or real(groups, opts, jobs, done))
    results, _ = run(ProveOptions(LOCKSERV, use_cache=False, cache_dir=str(tmp_path), jobs=2))
    assert used == [2] and all(r.status == "proved" for r in results)
    assert Obligation("init", invariant="mutex").name == "init/mutex"


def test_a_solver_stopped_by_its_limit_is_never_checked_again(monkeypatch):
    """Z3 crashed (SIGSEGV in Z3_solver_check_assumptions) checking again on an incremental solver
    whose previous check the resource limit had stopped: a shared solver is replaced after an unknown."""
    import z3

    reused = []
    real = prove_mod.own_solver

    def tracking(*args):
        sv = real(*args)
        check = sv.check

        def checked(*a):
            if getattr(sv, "stopped", False):
                reused.append(sv)
            r = check(*a)
            sv.stopped = r == z3.unknown
            return r
        sv.check = checked
        return sv
    monkeypatch.setattr(prove_mod, "own_solver", tracking)
    spec = load(None)
    p = Prover(spec, rlimit=5_000)  # between the easy goals and the hard ones: some stop, some prove
    obs = [ob for ob in p.obligations() if ob.kind == "inductive" and ob.action == "cow_break"]
    statuses = {r.status for r in p.check_action(obs)}
    p.check_inits([ob for ob in p.obligations() if ob.kind == "init"])
    assert "unknown" in statuses and "proved" in statuses
    assert reused == []


def test_a_shared_solver_assumes_per_check_only_the_invariants_named():
    # Every invariant under a literal of its own (`lit implies invariant`): a check that assumes a
    # subset has only those as hypotheses, and its core names only invariants it assumed.
    import z3

    from dmmcheck.model.query import Tracked, assert_all, check

    ctx = z3.Context()
    sv = z3.Solver(ctx=ctx)
    x = z3.Int("x", ctx)
    names = assert_all(sv, [Tracked("pos", x > 0), Tracked("big", x > 10)], assumed=True)
    lit = {n: z3.Bool(f"assume:{n}", ctx) for n in ("pos", "big")}
    sv.push()
    sv.add(x < 5)
    assert check(sv, names, [lit["pos"]]).verdict == "sat"  # "big" not assumed: x = 1 will do
    both = check(sv, names, [lit["pos"], lit["big"]])
    assert both.verdict == "unsat" and both.core == frozenset({"big"})
    sv.pop()
    assert check(sv, names).verdict == "sat"  # no literal assumed: no invariant holds


def test_goals_that_need_fewer_hypotheses_are_proved_on_the_shared_solvers(monkeypatch):
    # The bundled spec's walk_protected after guest_map ran the counts pass out (2.5-4 s) and the
    # first rung alone out before the related rung proved it in 0.1 s: the shared pass with the
    # related invariants settles it before any of that, and nothing of the action climbs the ladder.
    spec = load(None)
    climbed: list[str] = []
    real = Prover._climb
    monkeypatch.setattr(Prover, "_climb", lambda self, ob: climbed.append(ob.name) or real(self, ob))
    prover = Prover(spec)
    obs = [Obligation("inductive", action="guest_map", invariant=i.name) for i in spec.invariants]
    results = prover.check_action(obs)
    assert {r.name: r.status for r in results}["inductive/guest_map/walk_protected"] == "proved"
    assert all(r.status == "proved" for r in results) and climbed == []


UNRELATED = """
sort node
relation p(node)
relation q(node)
init {
  forall x: node. p(x) := false
  forall x: node. q(x) := false
}
action mark(x: node) {
  requires p(x)
  insert q(x)
}
invariant no_p: forall x: node. not p(x)
invariant no_q: forall x: node. not q(x)
"""


def test_a_goal_satisfiable_under_some_hypotheses_is_not_retried_with_them(monkeypatch, tmp_path):
    # no_q after mark needs no_p, which reads nothing no_q reads: the related pass answers sat, and
    # a second related pass with more budget would answer sat again; the pass with every invariant
    # proves it.
    spec_file = tmp_path / "unrelated.dmm"
    spec_file.write_text(UNRELATED)
    spec = load(spec_file)
    Rung = prove_mod.Rung
    monkeypatch.setattr(prove_mod, "QUICK_PASS", (Rung(False, 100_000, related=True), Rung(False, 1_000_000, related=True),
                                                  Rung(False, 100_000)))
    tried: list[tuple[bool, int | None, list[str]]] = []
    real = Prover._on_shared_solver

    def spy(self, action, obs, rung, *rest):
        tried.append((rung.related, rung.rlimit, [ob.invariant for ob in obs]))
        return real(self, action, obs, rung, *rest)
    monkeypatch.setattr(Prover, "_on_shared_solver", spy)
    results = Prover(spec).check_action([Obligation("inductive", action="mark", invariant="no_q")])
    assert [r.status for r in results] == ["proved"]
    assert tried == [(True, 100_000, ["no_q"]), (False, 100_000, ["no_q"])]  # no_p: mark leaves p alone


def test_the_encoder_makes_the_terms_z3s_python_api_makes():
    # apply and conj skip the API's coercion: the same terms (so the same verdicts), and the API's
    # own path for what needs coercing.
    import z3

    from dmmcheck.model.z3enc import apply, conj, implies, ite, neg, quantifier

    ctx = z3.Context()
    s = z3.DeclareSort("s", ctx)
    f = z3.Function("f", s, z3.IntSort(ctx), z3.BoolSort(ctx))
    x, n = z3.Const("x", s), z3.Int("n", ctx)
    p, q = z3.Bool("p", ctx), z3.Bool("q", ctx)
    assert apply(f, [x, n]).eq(f(x, n)) and isinstance(apply(f, [x, n]), z3.BoolRef)
    assert apply(f, [x, 3]).eq(f(x, 3))  # 3 coerced by the API
    for args in ([p, q], [p], [p, q, f(x, n)], [p, True]):
        assert conj(args).eq(z3.And(args))
    assert neg(p).eq(z3.Not(p)) and neg(True).eq(z3.Not(True))
    assert implies(p, q).eq(z3.Implies(p, q)) and implies(p, True).eq(z3.Implies(p, True))
    assert ite(p, n, z3.IntVal(2, ctx)).eq(z3.If(p, n, z3.IntVal(2, ctx)))
    assert ite(p, n, z3.RealVal(1, ctx)).eq(z3.If(p, n, z3.RealVal(1, ctx)))  # coerced to Real by the API
    y = z3.Const("y", s)
    assert quantifier(True, [x, y], f(x, n)).eq(z3.ForAll([x, y], f(x, n)))
    assert quantifier(False, [x], p).eq(z3.Exists([x], p))
    with pytest.raises(z3.Z3Exception):
        apply(f, [n, n])  # a wrong sort is still refused
