"""dmm prove's worker processes: a worker that dies (a solver crash) costs one retry of the group
it was running; a second death reports those obligations unknown with how the worker died. No
obligation goes missing, none is proved without a proof. Crashes are injected with the runner's
test hook (DMM_TEST_CRASH), read only in pool workers."""

from __future__ import annotations

import json
from pathlib import Path

from dmmcheck.main import main
from dmmcheck.model.prove import Prover
from dmmcheck.model.runner import CRASH_ENV, ProveOptions, exit_status, run
from dmmcheck.spec import load

LOCKSERV = str(Path(__file__).parent / "prove" / "lockserv.dmm")


def _prove(tmp_path: Path):
    results, _ = run(ProveOptions(LOCKSERV, jobs=2, use_cache=False, cache_dir=str(tmp_path / "cache")))
    names = [ob.name for ob in Prover.list_obligations(load(LOCKSERV))]
    assert [r.name for r in results] == names  # every obligation answered once, in order
    return {r.name: r for r in results}


def test_a_worker_that_dies_once_is_retried_and_its_obligations_proved(tmp_path, monkeypatch):
    once = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ENV, f"kill:inductive/acquire/*:{once}")
    results = _prove(tmp_path)
    assert once.exists()  # the worker did die
    assert all(r.status == "proved" for r in results.values()), {n: r.reason for n, r in results.items()}
    retried = {n for n, r in results.items() if "retried: its worker died (signal 9)" in r.reason}
    assert retried == {"inductive/acquire/mutex", "inductive/acquire/free_consistent"}
    assert exit_status(list(results.values())) == 0


def test_a_worker_that_dies_again_leaves_its_obligations_unknown_with_the_signal(tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_ENV, "kill:inductive/acquire/mutex")
    results = _prove(tmp_path)
    bad = {n: r for n, r in results.items() if r.status != "proved"}
    # The group of acquire's obligations died; on the retry each ran alone, and only the one that
    # kills its worker every time is unknown. Never proved, never missing.
    assert list(bad) == ["inductive/acquire/mutex"]
    (r,) = bad.values()
    assert r.status == "unknown" and r.reason.startswith("worker died (signal 9)"), r.reason
    assert "retried" in results["inductive/acquire/free_consistent"].reason
    assert exit_status(list(results.values())) == 3


def test_a_worker_that_exits_abruptly_is_reported_with_its_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CRASH_ENV, "exit:vacuity/release")
    monkeypatch.setenv("DMM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["prove", LOCKSERV, "--no-cache", "-j", "2", "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    unknown = [(o["name"], o["reason"]) for o in out["obligations"] if o["status"] == "unknown"]
    assert unknown == [("vacuity/release", "worker died (exit status 3), on its first try and again on the retry")]
    assert out["summary"] == {"proved": 9, "violated": 0, "unknown": 1}
