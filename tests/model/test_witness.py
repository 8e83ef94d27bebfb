"""Reachability witnesses (model/witness.py) and init constraints: the shortest run found, "not
reachable within K" (unknown beyond K, never unreachable), the shape obeyed, exit statuses, the
table and JSON of `dmm prove`; initial states from init's requires in the prover, the interpreter
and the explorer. Golden results in tests/model/witness/*.expect."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dmmcheck.main import main
from dmmcheck.model.explore import explore
from dmmcheck.model.interp import InterpError, Interpreter
from dmmcheck.model.runner import ProveOptions, exit_status, run
from dmmcheck.model.witness import answer
from dmmcheck.spec import check, load, parse

HERE = Path(__file__).parent / "witness"
LOCK = HERE / "lock.dmm"


def _witness(name: str, depth: int = 6):
    spec = load(LOCK)
    return answer(spec, next(w for w in spec.witnesses if w.name == name), depth)


def test_found_with_its_known_shortest_length():
    r = _witness("hand_over")
    assert r.status == "proved" and r.kind == "witness"
    steps = r.witness["steps"]
    assert [s["action"] for s in steps] == ["acquire", "release", "acquire"]
    # the run is real: the release is by the client that acquired
    assert steps[0]["args"]["c"] == steps[1]["args"]["c"]


def test_not_reachable_within_k_is_unknown_not_unreachable():
    r = _witness("two_holders", depth=4)
    assert r.status == "unknown"
    assert r.reason.startswith("not reachable within 4 steps (universe client=3): unknown beyond that")
    assert "unreachable" not in r.reason


def test_shape_fixes_the_run():
    r = _witness("released_twice")
    assert [s["action"] for s in r.witness["steps"]] == ["acquire", "release", "acquire", "release"]
    # a depth below the shape's length finds nothing
    assert _witness("released_twice", depth=3).status == "unknown"


def _golden_view(results) -> list[dict]:
    out = []
    for r in results:
        if r.kind != "witness":
            continue
        w = r.witness
        out.append({"name": r.name, "status": r.status, "required": w["required"], "shape": w["shape"],
                    "actions": [s["action"] for s in w.get("steps", [])], "reason": r.reason})
    return out


def test_golden_prove_witnesses(tmp_path):
    results, _ = run(ProveOptions(str(LOCK), use_cache=False, witness_depth=6))
    got = json.dumps({"exit": exit_status(results), "witnesses": _golden_view(results)}, indent=1) + "\n"
    expect = HERE / "lock.expect"
    if os.environ.get("DMM_REGEN_GOLDEN"):
        expect.write_text(got)
    assert got == expect.read_text()


def test_required_witness_not_found_fails_the_run(tmp_path, capsys):
    text = LOCK.read_text().replace("witness two_holders:", "required witness two_holders:")
    path = tmp_path / "lock.dmm"
    path.write_text(text)
    # not found within the depth: unknown, and required, so the run cannot pass (exit 3)
    assert main(["prove", str(path), "--no-cache", "-j", "1", "--witness-depth", "3", "--only", "witness/",
                 "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out["witnesses"] == {"found": 1, "not_found": 2, "required_not_found": 1}  # hand_over takes 3
    # the same witness not required is reported and does not count
    assert main(["prove", str(LOCK), "--no-cache", "-j", "1", "--witness-depth", "3", "--only",
                 "witness/two_holders", "--json"]) == 0


def test_prove_prints_the_witness_table(capsys):
    assert main(["prove", str(LOCK), "--no-cache", "-j", "1", "--witness-depth", "6"]) == 0
    out = capsys.readouterr().out
    assert "witnesses (reachability, shortest run)" in out
    assert "witness/hand_over: reachable: a shortest run of 3 steps" in out
    assert "witness/two_holders: not reachable within 6 steps" in out


def test_init_requires_are_initial_states_for_the_prover_and_the_explorer(tmp_path):
    spec = load(LOCK)
    results, _ = run(ProveOptions(str(LOCK), use_cache=False, only="init/", witness_depth=0))
    assert {r.name: r.status for r in results} == {"init/mutex": "proved", "init/free_consistent": "proved"}
    it = Interpreter(spec, {"client": 2})
    assert len(it.initial_states()) == 1  # the requires pin holds to empty
    loose = check(parse(LOCK.read_text().replace("requires forall c: client. not holds(c)",
                                                 "requires free() implies (forall c: client. not holds(c))"), "l.dmm"))
    it = Interpreter(loose, {"client": 2})
    assert len(it.initial_states()) == 1
    looser = check(parse(LOCK.read_text().replace("requires forall c: client. not holds(c)",
                                                  "requires exists c: client. not holds(c)"), "l.dmm"))
    it = Interpreter(looser, {"client": 2})
    assert len(it.initial_states()) == 3  # holds = {}, {client0}, {client1}; free is assigned
    r = explore(it)
    # an initial state where a client holds the free lock: the explorer starts from each of them
    assert [v.invariant for v, _ in r.violations] == ["free_consistent"]
    # the prover agrees: init no longer implies free_consistent (a holder while the lock is free), nor
    # mutex (with three clients, two may hold it and one not)
    path = tmp_path / "looser.dmm"
    path.write_text(looser.source)
    results, _ = run(ProveOptions(str(path), use_cache=False, only="init/", witness_depth=0))
    assert {r.name: r.status for r in results} == {"init/mutex": "violated", "init/free_consistent": "violated"}


def test_too_many_initial_states_is_a_clear_error():
    text = LOCK.read_text().replace("sort client [3]", "sort client [20]")
    it = Interpreter(check(parse(text, "l.dmm")), {"client": 20})
    try:
        it.initial_states()
    except InterpError as e:
        assert "more than 65,536 candidate initial states" in str(e)
    else:
        raise AssertionError("no error")


def test_explore_says_so_when_init_leaves_too_many_states(tmp_path, capsys):
    path = tmp_path / "big.dmm"
    path.write_text(LOCK.read_text().replace("sort client [3]", "sort client [20]"))
    assert main(["explore", str(path)]) == 2
    assert "more than 65,536 candidate initial states at client=20" in capsys.readouterr().err


def test_contradictory_init_requires_make_init_vacuous(tmp_path):
    path = tmp_path / "none.dmm"
    path.write_text(LOCK.read_text().replace("requires forall c: client. not holds(c)",
                                             "requires forall c: client. not holds(c)\n  requires not free()"))
    results, _ = run(ProveOptions(str(path), use_cache=False, only="vacuity/init", witness_depth=0))
    (r,) = results
    assert r.status == "violated" and "init is unsatisfiable" in r.reason


def test_finite_sizes_the_witness_universe():
    results, _ = run(ProveOptions(str(LOCK), finite=2, use_cache=False, only="witness/hand_over"))
    (r,) = results
    assert r.status == "proved" and r.witness["universe"] == {"client": 2}


def test_a_witness_run_is_written_and_replays_on_the_bundled_vmm(tmp_path, capsys):
    from dmmcheck.spec import bundled_path

    spec = tmp_path / "dmm.dmm"
    spec.write_text(bundled_path().read_text() + "\n# A page can be swapped out.\nwitness swapped:\n  reach any*; swap_out\n")
    traces = tmp_path / "traces"
    assert main(["prove", str(spec), "--only", "witness/", "--finite", "1", "--witness-depth", "4", "--no-cache",
                 "-j", "1", "--trace-dir", str(traces), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (entry,) = out["obligations"]
    assert [s["action"] for s in entry["witness"]["steps"]] == ["vm_create", "demand_page", "swap_out"]
    assert out["traces"] == [entry["witness"]["trace_file"]] == [str(traces / "witness-swapped.jsonl")]
    # the harness drives the bundled VMM through it, as it replays a BMC trace
    assert main(["replay", str(traces / "witness-swapped.jsonl"), "--spec", str(spec), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "pass"
