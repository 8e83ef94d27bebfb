"""Campaigns on many workers (conformance/campaign.py): seeds derived and disjoint, results merged,
a worker that dies loses only its own seed (local processes and a Dask LocalCluster), failing
examples shared through an example database (a directory, Redis) and replayed by another run,
progress drawn only on a terminal."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.campaign import (
    KILL_HOOK, Board, Job, LocalProcesses, SeedResult, SeedTask, campaign_json, dedupe, fuzz_campaign, merge,
    open_db, run_jobs, worker_seed,
)
from dmmcheck.conformance.fuzz import FuzzResult, fuzz
from dmmcheck.conformance.mutation import run_all
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.main import main
from dmmcheck.spec import load

SPEC = load(None)
ACTIONS = list(SPEC.actions)
MUTANT = "rmap_insert_forgotten"  # killed in well under a second, shrunk to a few steps


def task(**kw) -> SeedTask:
    base = dict(seed=0, spec_text=None, impl=None, impl_cmd=None, config=Config(), examples=8, shrink_seconds=20)
    return SeedTask(**{**base, **kw})


# ---------------------------------------------------------------- seeds, merging, deduplication


def test_worker_seeds_are_the_campaign_seed_first_then_distinct_and_deterministic():
    for seed in (0, 1, 12345):
        seeds = [worker_seed(seed, i) for i in range(64)]
        assert seeds[0] == seed
        assert len(set(seeds)) == 64
        assert seeds == [worker_seed(seed, i) for i in range(64)]
    assert not set(worker_seed(0, i) for i in range(1, 64)) & set(worker_seed(1, i) for i in range(1, 64))


def test_merge_sums_counts_coverage_and_guards_and_keeps_the_peak_memory():
    a, b = FuzzResult("vmm", 0, examples=3, steps=100), FuzzResult("vmm", 7, examples=2, steps=50)
    a.coverage, b.coverage = Counter(vm_create=4, guest_map=2), Counter(vm_create=1, swap_out=3)
    a.guards, b.guards = {"guest_map": Counter(true=5, false=1)}, {"guest_map": Counter(false=2), "swap_out": Counter(true=1)}
    a.memory_mib_peak, b.memory_mib_peak = 300.0, 200.0
    b.warnings = ["close failed"]
    m = merge([a, b], 0, 10.0, "vmm", None, 4096)
    assert (m.steps, m.examples, m.seconds, m.steps_per_second) == (150, 5, 10.0, 15.0)
    assert m.coverage == Counter(vm_create=5, guest_map=2, swap_out=3)
    assert m.guards == {"guest_map": Counter(true=5, false=3), "swap_out": Counter(true=1)}
    assert m.memory_mib_peak == 300.0 and m.warnings == ["seed 7: close failed"]


def _part(seed: int, rows: list[dict], kind: str = "invariant") -> tuple[int, SeedResult]:
    return seed, SeedResult(FuzzResult("vmm", seed), {"kind": kind, "message": "m", "detail": "", "facts": {}}, rows)


def test_failures_are_deduplicated_by_their_shrunk_trace():
    one = [{"action": "vm_create", "args": {"v": 0}}, {"action": "guest_walk", "args": {"v": 0, "x": 4096}}]
    other = [{"action": "vm_create", "args": {"v": 1}}]
    found = dedupe([_part(1, one), _part(2, list(one)), _part(3, other), _part(4, other, "observation"),
                    (5, SeedResult(FuzzResult("vmm", 5)))])
    assert [(f.failure.kind, f.seeds) for f in found] == [("invariant", [1, 2]), ("invariant", [3]),
                                                         ("observation", [4])]


# ---------------------------------------------------------------- local processes


def test_a_local_campaign_splits_examples_and_each_worker_is_its_seeds_campaign():
    c = fuzz_campaign(task(examples=8), 2, None, ACTIONS)
    assert c.seeds == [0, worker_seed(0, 1)] and not c.lost
    workers = [o.result.result for o in c.outcomes]
    assert [w.examples for w in workers] == [4, 4]
    assert all(0 < o.result.cpu_seconds for o in c.outcomes)
    assert c.merged.steps == sum(w.steps for w in workers) > 0
    assert c.merged.coverage == sum((w.coverage for w in workers), Counter())
    # worker 0 ran exactly what `dmm fuzz --seed 0 --examples 4` runs in process
    alone = fuzz(BundledVmm, SPEC, Config(), examples=4, seed_=0)
    assert (workers[0].steps, dict(workers[0].coverage)) == (alone.steps, dict(alone.coverage))
    j = campaign_json(c, ACTIONS, None)
    assert j["steps"] == c.merged.steps and j["jobs"] == 2 and j["lost"] == [] and j["config"] == Config().to_json()
    assert [w["seed"] for w in j["workers"]] == c.seeds


def test_a_killed_local_worker_loses_only_its_seed(monkeypatch):
    lost = worker_seed(0, 1)
    monkeypatch.setenv(KILL_HOOK, str(lost))
    c = fuzz_campaign(task(examples=None, seconds=3), 2, None, ACTIONS)
    assert c.lost == [(lost, "its process was killed by SIGKILL")]
    alive = c.outcomes[0].result.result
    assert alive.steps > 0 and c.merged.steps == alive.steps
    j = campaign_json(c, ACTIONS, None)
    assert j["lost"] == [{"seed": lost, "reason": "its process was killed by SIGKILL"}]
    assert j["workers"][1]["lost"] and j["workers"][1]["steps"] is None


def test_the_cli_reports_a_lost_seed_with_exit_status_3(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(KILL_HOOK, "0")
    rc = main(["fuzz", "-j", "2", "--seconds", "2", "--json", "--trace-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 3
    assert out["lost"] == [{"seed": 0, "reason": "its process was killed by SIGKILL"}]
    assert out["workers"][1]["steps"] > 0 and out["failures"] == []


def test_a_failure_found_by_workers_is_written_once_and_names_its_seeds(tmp_path, capsys):
    rc = main(["fuzz", "-j", "2", "--examples", "20", "--mutant", MUTANT, "--shrink-seconds", "20", "--json",
               "--trace-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["failures"]
    for f in out["failures"]:
        assert Path(f["trace"]).exists() and f["seeds"]
        assert main(["replay", f["trace"], "--json"]) == 1  # the trace replays to its failure
    assert len({json.dumps(f["seeds"]) for f in out["failures"]}) == len(out["failures"])


def test_a_lost_mutant_is_neither_killed_nor_survived(monkeypatch):
    monkeypatch.setenv(KILL_HOOK, "nx_ignored")
    results = run_all([MUTANT, "nx_ignored"], 20, jobs=2)
    by = {r.name: r for r in results}
    assert by[MUTANT].killed and by[MUTANT].lost is None
    assert not by["nx_ignored"].killed and by["nx_ignored"].lost == "its process was killed by SIGKILL"


# ---------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    import dask

    # a task whose worker dies is not retried on the others (the default retries it 3 times)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                      dashboard_address=None) as c:
            yield c.scheduler_address


def test_a_dask_campaign_runs_one_seed_per_worker_thread_and_merges(cluster):
    c = fuzz_campaign(task(examples=6), None, cluster, ACTIONS)
    assert c.jobs == 2 and not c.lost and "Dask cluster" in c.where
    workers = [o.result.result for o in c.outcomes]
    assert [w.seed for w in workers] == c.seeds and c.merged.steps == sum(w.steps for w in workers) > 0


def test_dmm_fuzz_and_mutants_run_on_the_cluster_and_its_workers_report_progress(cluster, capsys, tmp_path):
    assert main(["fuzz", "--cluster", cluster, "--examples", "4", "--json", "--trace-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cluster"] == cluster and out["jobs"] == 2 and out["steps"] == sum(w["steps"] for w in out["workers"])
    [r] = run_all([MUTANT], 20, cluster=cluster)
    assert r.killed and r.oracle == "invariant"
    from dmmcheck.conformance.campaign import DaskCluster, run_seed

    seen: list[tuple[str, dict]] = []
    ex = DaskCluster(cluster)
    try:
        [outcome] = list(ex.run([Job("0", run_seed, (task(examples=None, seconds=3),))],
                                lambda key, snap: seen.append((key, snap))))
    finally:
        ex.close()
    assert outcome.result is not None and seen and seen[-1][0] == "0" and seen[-1][1]["steps"] > 0


@pytest.mark.parametrize("where, reason", [("", "its process was killed by SIGKILL"), (":worker", "KilledWorker")])
def test_a_killed_dask_worker_loses_only_its_seed(cluster, monkeypatch, where, reason):
    lost = worker_seed(0, 1)
    monkeypatch.setenv(KILL_HOOK, f"{lost}{where}")
    c = fuzz_campaign(task(examples=None, seconds=3), 2, cluster, ACTIONS)
    assert [s for s, _ in c.lost] == [lost] and c.lost[0][1].startswith(reason)
    assert c.outcomes[0].result.result.steps > 0


# ---------------------------------------------------------------- the example database


def _replays(db: str, seed: int = 7) -> bool:
    """A fresh run of one test case finds the mutant's failure: only by replaying it from `db`."""
    r = fuzz(BundledVmm, SPEC, Config(mutant=MUTANT), examples=1, seed_=seed, shrink_seconds=20,
             database=open_db(db, *_identity()))
    return r.failure is not None and r.failure.kind == "invariant"


def _identity() -> tuple:
    from dmmcheck.conformance.campaign import identity
    from dmmcheck.conformance.fuzz import Tuning

    return identity(Path(SPEC.file).read_text(), "dmmcheck.conformance.vmm_adapter:BundledVmm", None,
                    Config(mutant=MUTANT), None, 40, Tuning())


@pytest.fixture
def ci_profile():
    """The test suite's ci profile (no database, derandomized): --db must work under it anyway."""
    from hypothesis import settings

    before = settings.get_current_profile_name()
    settings.load_profile("ci")
    yield
    settings.load_profile(before)


def test_a_failure_saved_by_a_campaign_in_a_directory_is_replayed_by_another_run(tmp_path, capsys, ci_profile):
    db = str(tmp_path / "examples")
    assert not _replays(None)  # type: ignore[arg-type]  # without the database this run finds nothing
    rc = main(["fuzz", "-j", "2", "--examples", "20", "--mutant", MUTANT, "--db", db, "--shrink-seconds", "20",
               "--json", "--trace-dir", str(tmp_path)])
    assert rc == 1 and json.loads(capsys.readouterr().out)["failures"]
    assert _replays(db) and _replays(db, seed=8)
    # and through the command line, in process (-j 1): the same keys as the workers'
    assert main(["fuzz", "--mutant", MUTANT, "--db", db, "--examples", "1", "--seed", "7", "--json",
                 "--trace-dir", str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["failures"][0]["kind"] == "invariant"


def test_examples_are_kept_apart_per_mutant_scope_and_implementation(tmp_path):
    a, b = open_db(str(tmp_path), "a", Config(mutant="x")), open_db(str(tmp_path), "a", Config(mutant="y"))
    a.save(b"k", b"v")
    assert list(a.fetch(b"k")) == [b"v"] and list(b.fetch(b"k")) == []


def test_a_bad_database_is_bad_input(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["fuzz", "--examples", "1", "--db", str(tmp_path / "file" / "db")]) == 2
    assert main(["fuzz", "-j", "2", "--examples", "2", "--db", "redis://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the example database" in err and "Traceback" not in err
    assert main(["fuzz", "-j", "2", "--examples", "2", "--db", ""]) == 2
    assert main(["mutants", "--only", MUTANT, "--db", " "]) == 2
    assert main(["fuzz", "--examples", "2", "--cluster", ""]) == 2
    err = capsys.readouterr().err
    assert "dmm fuzz: --db: expected a directory" in err and "dmm mutants: --db: expected a directory" in err
    assert "--cluster: expected a Dask scheduler" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url():
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    import redis

    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_failure_saved_in_redis_by_a_campaign_is_replayed_by_another_run(redis_url, tmp_path, capsys):
    assert not _replays(None)  # type: ignore[arg-type]
    rc = main(["fuzz", "-j", "2", "--examples", "20", "--mutant", MUTANT, "--db", redis_url, "--shrink-seconds", "20",
               "--json", "--trace-dir", str(tmp_path)])
    assert rc == 1 and json.loads(capsys.readouterr().out)["failures"]
    assert _replays(redis_url)


# ---------------------------------------------------------------- progress


def test_workers_report_progress_while_they_run():
    seen: list[tuple[str, dict]] = []
    job = Job("0", __import__("dmmcheck.conformance.campaign", fromlist=["run_seed"]).run_seed,
              (task(examples=None, seconds=3),))
    [outcome] = list(LocalProcesses(1).run([job], lambda key, snap: seen.append((key, snap))))
    assert outcome.result is not None and len(seen) >= 2
    assert all(key == "0" for key, _ in seen)
    steps = [s["steps"] for _, s in seen]
    assert steps == sorted(steps) and steps[-1] == outcome.result.result.steps  # the last report: the final counts
    assert seen[-1][1]["covered"] and seen[-1][1]["failures"] == 0


def test_the_progress_line_counts_steps_coverage_and_failures():
    board = Board("fuzzing", [Job("1", print, ()), Job("2", print, ())], 41)
    board.update("1", {"steps": 1200, "covered": ["vm_create", "guest_map"], "failures": 0})
    board.update("2", {"steps": 300, "covered": ["guest_map", "swap_out"], "failures": 1})
    line = board.line()
    assert "0/2 done" in line and "1,500 steps" in line and "3/41 actions" in line and "1 failure" in line


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_drawn_only_on_a_terminal(terminal):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=200)
    job = Job("0", __import__("dmmcheck.conformance.campaign", fromlist=["run_seed"]).run_seed,
              (task(examples=None, seconds=2),))
    board = Board("fuzzing", [job], len(ACTIONS))
    [outcome] = run_jobs(LocalProcesses(1), [job], board, console)
    assert outcome.result is not None
    assert ("steps/s" in buf.getvalue()) is terminal
