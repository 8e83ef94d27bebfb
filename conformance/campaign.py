"""Campaigns on many cores and many machines (`dmm fuzz -j N`, `dmm mutants -j N`, `--cluster`).

A campaign is a list of jobs (one per worker seed for `dmm fuzz`, one per mutant for `dmm
mutants`). Every job runs in a process of its own (`python -m dmmcheck.conformance.campaign`),
started either here (LocalProcesses: N at a time) or by a Dask worker (DaskCluster): so the step
timeout (SIGALRM, main thread only) works on a cluster too, and a job whose process dies loses
only itself — the report names it and why. The job travels to its process pickled on stdin; its
progress and its result come back as pickled frames on a private copy of its stdout.

Failing examples can go to a shared Hypothesis example database (`--db DIR` or `--db
redis://HOST:PORT`), keyed by what the campaign judges (spec, implementation, mutant, scope,
level), so another run — any seed, any machine — replays them first.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Iterator, Protocol

from hypothesis.database import ExampleDatabase

from .adapter import Config
from .fuzz import FuzzResult, Tuning
from .oracle import Failure

if TYPE_CHECKING:
    from rich.console import Console

PERIOD = 1.0  # seconds between a job's progress reports (at most; sent between batches of test cases)
KILL_HOOK = "DMM_CAMPAIGN_TEST_KILL"  # tests: KEY (the job's process dies) or KEY:worker (its Dask worker)


class CampaignError(ValueError):
    """Bad input for a campaign (a database or a cluster that cannot be reached): exit 2."""


# ---------------------------------------------------------------- jobs and their processes


@dataclass(frozen=True)
class Job:
    """One unit of a campaign. `fn` is a module-level function (it pickles by reference) called as
    fn(*args, progress=CALLBACK) in the job's process; `key` names the job in reports."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    die: str | None = None  # the test hook (KILL_HOOK): "job" or "worker"


@dataclass
class Outcome:
    key: str
    result: Any = None
    lost: str | None = None  # why the job gave no result (its process died, it raised)


def jobs_with_hook(jobs: list[Job]) -> list[Job]:
    """The test hook: the job named by DMM_CAMPAIGN_TEST_KILL dies (read here, in the process that
    makes the jobs, so it reaches every executor)."""
    hook = os.environ.get(KILL_HOOK)
    if not hook:
        return jobs
    key, _, where = hook.partition(":")
    return [replace(j, die=where or "job") if j.key == key else j for j in jobs]


def _send(f: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj)
    f.write(struct.pack("<Q", len(data)) + data)
    f.flush()


def _recv(f: BinaryIO) -> Any:
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    data = f.read(struct.unpack("<Q", head)[0])
    return pickle.loads(data)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"its process was killed by {name}"
    return f"its process exited with status {code} without a result"


def isolated(job: Job, on_progress: Callable[[str, dict[str, Any]], None]) -> Outcome:
    """Run one job in a process of its own; never raises: a process that dies, or a job that raises,
    is an Outcome with `lost` saying why."""
    env = dict(os.environ)
    # the job's process finds what this one does (an adapter module on a path added at run time)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
    env.pop(KILL_HOOK, None)  # the hook travels in the job, to the one job it names
    proc = subprocess.Popen([sys.executable, "-m", "dmmcheck.conformance.campaign"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    tail: deque[str] = deque(maxlen=8)  # the end of its stderr: why it died, when it says
    drain = threading.Thread(target=lambda: tail.extend(line.decode(errors="replace").rstrip()
                                                        for line in proc.stderr), daemon=True)  # type: ignore[union-attr]
    drain.start()
    error = None
    try:
        _send(proc.stdin, job)
        while True:
            try:
                kind, body = _recv(proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError, struct.error, ValueError, AttributeError):
                break  # died (maybe mid-frame): the process's exit status says how
            if kind == "progress":
                on_progress(job.key, body)
            elif kind == "result":
                return Outcome(job.key, result=body)
            else:
                error = body
                break
    except (BrokenPipeError, OSError):
        pass  # it died before it read the job: its exit status says how
    finally:
        try:
            proc.stdin.close()  # its end of the watch (_exit_when_orphaned)
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        drain.join(timeout=5)
    reason = error or _exit_reason(proc.returncode)
    last = [line for line in tail if line.strip()]
    return Outcome(job.key, lost=reason + (f" (its last words: {last[-1]})" if last and not error else ""))


def _exit_when_orphaned(stdin: BinaryIO) -> None:
    """The process that started this one holds its stdin open until it has the result: end of file
    before that means it is gone, and so is the reason to go on."""
    while stdin.read(1 << 16):
        pass
    os._exit(1)


def child_main() -> int:
    """The job's process: read the job, run it, send progress and the result."""
    chan = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what the job prints goes to stderr: the frames have stdout to themselves
    try:
        job: Job = _recv(sys.stdin.buffer)
    except (EOFError, pickle.UnpicklingError, AttributeError, ImportError) as e:
        print(f"dmm campaign: cannot read the job: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    threading.Thread(target=_exit_when_orphaned, args=(sys.stdin.buffer,), daemon=True).start()
    last, seen = [0.0], []

    def progress(r: FuzzResult) -> None:
        seen[:] = [r]
        now = time.monotonic()
        if now - last[0] < PERIOD:
            return
        last[0] = now
        _send(chan, ("progress", snapshot(r)))
        if job.die == "job":
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        result = job.fn(*job.args, progress=progress)
    except KeyboardInterrupt:
        _send(chan, ("error", "interrupted"))
        return 130
    except BaseException as e:  # noqa: BLE001 - reported as this job's loss, with the reason
        traceback.print_exc()
        _send(chan, ("error", f"it raised {type(e).__name__}: {e}"))
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the result is in: a late Ctrl-C must not lose it
    if seen:  # the last report may have been held back (at most one a PERIOD): the final counts
        _send(chan, ("progress", snapshot(seen[0])))
    _send(chan, ("result", result))
    return 0


def snapshot(r: FuzzResult) -> dict[str, Any]:
    """What a job's progress report says (plain data: it crosses Dask's msgpack)."""
    return {"steps": r.steps, "examples": r.examples, "covered": sorted(a for a, n in r.coverage.items() if n),
            "failures": int(r.failure is not None or r.first is not None)}


# ---------------------------------------------------------------- executors


class Executor(Protocol):
    where: str
    slots: int  # jobs it runs at once

    def run(self, jobs: list[Job], on_progress: Callable[[str, dict[str, Any]], None]) -> Iterator[Outcome]:
        """Every job's Outcome, in the order they finish."""
        ...


class LocalProcesses:
    """N jobs at a time on this machine, each in its own process (a thread here waits on each)."""

    def __init__(self, jobs: int) -> None:
        self.slots = jobs
        self.where = f"{jobs} local process{'es' if jobs != 1 else ''}"
        self.interrupted = False

    def run(self, jobs: list[Job], on_progress: Callable[[str, dict[str, Any]], None]) -> Iterator[Outcome]:
        with ThreadPoolExecutor(self.slots) as ex:
            futures = {ex.submit(isolated, j, on_progress): j for j in jobs}
            pending = set(futures)
            while pending:
                try:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    if self.interrupted:
                        raise
                    # Ctrl-C reaches the jobs' processes too (one process group): each ends its
                    # campaign and sends what it found, so the wait goes on (a second Ctrl-C stops it)
                    self.interrupted = True
                    continue
                for f in done:
                    try:
                        yield f.result()
                    except Exception as e:  # noqa: BLE001 - isolated() does not raise; if it does, one job is lost
                        yield Outcome(futures[f].key, lost=f"{type(e).__name__}: {e}")


def _on_dask_worker(job: Job, topic: str) -> Outcome:
    """A Dask task: the job in a process of its own on the worker's machine, its progress sent to
    the client as Dask events under `topic`."""
    from distributed import get_worker

    worker = get_worker()
    if job.die == "worker":
        os._exit(1)  # the test hook: the Dask worker itself dies

    def forward(key: str, snap: dict[str, Any]) -> None:
        worker.log_event(topic, {"key": key, "snapshot": snap})

    return isolated(job, forward)


class DaskCluster:
    """Jobs as tasks of an existing Dask distributed cluster (Client(ADDRESS)); a worker that dies
    while running one makes Dask retry it elsewhere, then give up (KilledWorker): that job is lost."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        try:
            from distributed import Client
        except ImportError as e:  # pragma: no cover - a dependency of dmmcheck
            raise CampaignError(f"--cluster needs dask.distributed: {e}") from None
        if not address.strip():  # Client("") would start a cluster of its own, not reach one
            raise CampaignError("--cluster: expected a Dask scheduler's address, e.g. tcp://HOST:8786")
        try:
            self.client = Client(address, timeout=timeout)
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            raise CampaignError(f"--cluster {address}: cannot reach a Dask scheduler there: {e}") from None
        self.slots = sum(self.client.nthreads().values())
        self.where = f"Dask cluster {address} ({len(self.client.nthreads())} workers, {self.slots} threads)"

    def run(self, jobs: list[Job], on_progress: Callable[[str, dict[str, Any]], None]) -> Iterator[Outcome]:
        from distributed import as_completed

        topic = f"dmm-progress-{uuid.uuid4().hex}"
        self.client.subscribe_topic(topic, lambda event: on_progress(event[1]["key"], event[1]["snapshot"]))
        futures = {self.client.submit(_on_dask_worker, j, topic, pure=False, key=f"dmm-{j.key}-{uuid.uuid4().hex[:8]}"): j
                   for j in jobs}
        try:
            for f in as_completed(futures):
                try:
                    yield f.result()
                except BaseException as e:  # noqa: BLE001 - KilledWorker, a cancelled task: that job is lost
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    yield Outcome(futures[f].key, lost=f"{type(e).__name__}: {e}")
        finally:
            self.client.cancel(list(futures))
            self.client.unsubscribe_topic(topic)

    def close(self) -> None:
        self.client.close()


def executor(jobs: int | None, cluster: str | None) -> LocalProcesses | DaskCluster:
    return DaskCluster(cluster) if cluster is not None else LocalProcesses(jobs or 1)


# ---------------------------------------------------------------- progress


class Board:
    """The campaign's progress, fed by the jobs' reports (from any thread), drawn by rich."""

    def __init__(self, what: str, jobs: list[Job], actions: int) -> None:
        self.what, self.total, self.actions = what, len(jobs), actions
        self.lock = threading.Lock()
        self.latest: dict[str, dict[str, Any]] = {}
        self.done: dict[str, Outcome] = {}
        self.start = time.monotonic()
        self.interrupted = False  # Ctrl-C stopped the wait for the jobs' outcomes

    def update(self, key: str, snap: dict[str, Any]) -> None:
        with self.lock:
            self.latest[key] = snap

    def finish(self, outcome: Outcome, snap: dict[str, Any] | None) -> None:
        with self.lock:
            self.done[outcome.key] = outcome
            if snap is not None:
                self.latest[outcome.key] = snap

    def line(self) -> str:
        with self.lock:
            snaps = list(self.latest.values())
            lost = sum(o.lost is not None for o in self.done.values())
            done = len(self.done)
        steps = sum(s.get("steps", 0) for s in snaps)
        covered = set().union(*(s.get("covered", ()) for s in snaps)) if snaps else set()
        failures = sum(s.get("failures", 0) for s in snaps)
        rate = steps / max(time.monotonic() - self.start, 1e-9)
        return (f"{self.what}: {done}/{self.total} done" + (f", {lost} lost" if lost else "")
                + f" · {steps:,} steps · {rate:,.0f} steps/s · {len(covered)}/{self.actions} actions"
                + f" · {failures} failure{'s' if failures != 1 else ''}")


def run_jobs(ex: LocalProcesses | DaskCluster, jobs: list[Job], board: Board, console: Console | None,
             final: Callable[[Outcome], dict[str, Any] | None] = lambda o: None) -> list[Outcome]:
    """Every job's outcome, in the jobs' order; progress drawn on `console` when it is a terminal."""
    from rich.live import Live
    from rich.text import Text

    outcomes: dict[str, Outcome] = {}
    live = Live(get_renderable=lambda: Text(board.line()), console=console, refresh_per_second=2, transient=True) \
        if console is not None and console.is_terminal else None
    if live:
        live.start()
    try:
        for o in ex.run(jobs_with_hook(jobs), board.update):
            outcomes[o.key] = o
            board.finish(o, final(o))
    except KeyboardInterrupt:
        board.interrupted = True  # the outcomes in so far are reported; the rest are lost
    finally:
        if live:
            live.stop()
    return [outcomes.get(j.key) or Outcome(j.key, lost="interrupted before it finished") for j in jobs]


# ---------------------------------------------------------------- the shared example database


def check_db(url: str) -> None:
    """Up front, in the process that starts the campaign: the database can be opened (exit 2 if not)."""
    if not url.strip():
        raise CampaignError("--db: expected a directory or redis://HOST:PORT")
    try:
        if url.startswith("redis://"):
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=5).ping()
        else:
            Path(url).mkdir(parents=True, exist_ok=True)
            if not os.access(url, os.W_OK):
                raise OSError("not writable")
    except ImportError as e:  # pragma: no cover - a dependency of dmmcheck
        raise CampaignError(f"--db {url}: needs the redis package: {e}") from None
    except Exception as e:  # noqa: BLE001 - redis's errors, OSError, a bad URL: bad input either way
        raise CampaignError(f"--db {url}: cannot open the example database: {type(e).__name__}: {e}") from None


def open_db(url: str | None, *identity: Any) -> ExampleDatabase | None:
    """The example database `url` names (a directory, or redis://HOST:PORT[/DB]), its keys prefixed
    by what the campaign judges: a failure of one mutant, scope or implementation is never replayed
    (and then deleted as no longer failing) by a campaign about another."""
    if url is None:
        return None
    from hypothesis.database import DirectoryBasedExampleDatabase

    prefix = hashlib.sha256(json.dumps([repr(x) for x in identity]).encode()).hexdigest()[:16].encode()
    if url.startswith("redis://"):
        import redis
        from hypothesis.extra.redis import RedisExampleDatabase

        return RedisExampleDatabase(redis.Redis.from_url(url), key_prefix=b"dmm:" + prefix + b":")
    return Prefixed(DirectoryBasedExampleDatabase(url), prefix + b".")


class Prefixed(ExampleDatabase):
    """Another database's keys, each under a prefix (Hypothesis's directory database has none)."""

    def __init__(self, db: ExampleDatabase, prefix: bytes) -> None:
        super().__init__()
        self.db, self.prefix = db, prefix

    def save(self, key: bytes, value: bytes) -> None:
        self.db.save(self.prefix + key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return self.db.fetch(self.prefix + key)

    def delete(self, key: bytes, value: bytes) -> None:
        self.db.delete(self.prefix + key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self.db.move(self.prefix + src, self.prefix + dest, value)


def identity(spec_text: str, impl: str | None, impl_cmd: str | None, config: Config, level: str | None,
             steps: int, tuning: Tuning) -> tuple[Any, ...]:
    """What a saved failing example is about (the database key's prefix): not the seed, so that
    every seed's campaign replays it."""
    return (hashlib.sha256(spec_text.encode()).hexdigest(), impl, impl_cmd, config, level, steps, tuning)


# ---------------------------------------------------------------- dmm fuzz on many workers


def worker_seed(seed: int, i: int) -> int:
    """Worker i's seed, derived from the campaign's: worker 0 runs the campaign's own seed (so `-j
    1` is `dmm fuzz --seed S`), the others seeds far apart (48-bit hashes), each itself a campaign
    seed that `dmm fuzz --seed` reproduces."""
    if i == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"dmm campaign {seed} worker {i}".encode()).digest()[:6], "big")


@dataclass(frozen=True)
class SeedTask:
    """One worker's campaign, as plain data (it crosses processes and machines)."""

    seed: int
    spec_text: str | None  # None: the bundled spec
    impl: str | None
    impl_cmd: str | None
    config: Config
    tuning: Tuning = Tuning()
    seconds: float | None = None
    examples: int | None = None
    steps: int = 40
    step_timeout: float = 10.0
    memory_limit_mib: int | None = 4096
    shrink_seconds: float = 60.0
    level: str | None = None
    known: tuple[str, str] | None = None  # (file name, text) of --known-divergences
    db: str | None = None
    full_readback: bool = False  # --full-readback: the whole abstract state after every step


@dataclass
class SeedResult:
    """A worker's FuzzResult as plain data: the interpreter and the failure exception stay behind;
    the shrunk trace's rows come rendered."""

    result: FuzzResult
    failure: dict[str, Any] | None = None  # kind, message, detail, facts
    rows: list[dict[str, Any]] = field(default_factory=list)  # the shrunk steps, as trace rows
    known_hits: dict[str, int] = field(default_factory=dict)
    known_first: dict[str, str] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # the worker's CPU time in its campaign: its rate whatever else the machine runs


def _spec_of(text: str | None, where: str) -> Any:
    from dmmcheck.spec import load

    if text is None:
        return load(None)
    path = Path(where) / "campaign.dmm"
    path.write_text(text)
    return load(str(path))


def run_seed(task: SeedTask, progress: Callable[[FuzzResult], None] | None = None) -> SeedResult:
    """One worker's campaign (in the job's process)."""
    import tempfile

    from .child import child_factory
    from .divergences import load as load_known
    from .fuzz import fuzz
    from .trace import load_adapter

    with tempfile.TemporaryDirectory() as d:
        spec = _spec_of(task.spec_text, d)
        known = None
        if task.known is not None:
            path = Path(d) / Path(task.known[0]).name
            path.write_text(task.known[1])
            known = load_known(path, spec)
        spec_text = task.spec_text if task.spec_text is not None else Path(spec.file).read_text()
    factory: Any = child_factory(task.impl_cmd, task.step_timeout) if task.impl_cmd is not None \
        else load_adapter(task.impl or "dmmcheck.conformance.vmm_adapter:BundledVmm")
    db = open_db(task.db, *identity(spec_text, task.impl, task.impl_cmd, task.config, task.level, task.steps,
                                    task.tuning))
    cpu = time.process_time()
    r = fuzz(factory, spec, task.config, seconds=task.seconds, examples=task.examples, seed_=task.seed,
             steps_per_case=task.steps, step_timeout=task.step_timeout, progress=progress, tuning=task.tuning,
             memory_limit_mib=task.memory_limit_mib, shrink_seconds=task.shrink_seconds, level=task.level,
             known=known, database=db, full_readback=task.full_readback)
    out = strip(r)
    out.cpu_seconds = time.process_time() - cpu
    return out


def strip(r: FuzzResult) -> SeedResult:
    """What crosses back: everything but the interpreter, the exception and the accepted-divergence
    file (rebuilt where the report is made)."""
    f = r.failure
    out = SeedResult(r, {"kind": f.kind, "message": f.message, "detail": f.detail, "facts": f.facts} if f else None,
                     [rec.to_json(r.it) for rec in r.shrunk] if f else [],
                     dict(r.known.hits) if r.known is not None else {}, dict(r.known.first) if r.known else {})
    r.failure, r.it, r.first, r.smallest, r.known = None, None, None, None, None
    return out


@dataclass
class Found:
    """One failure of the campaign, deduplicated by its shrunk trace: the seeds that found it."""

    failure: Failure
    records: list[Any]  # StepRecords (shown)
    rows: list[dict[str, Any]]  # trace rows (written)
    config: Config | None
    seeds: list[int]
    trace: str | None = None


@dataclass
class Campaign:
    merged: FuzzResult
    found: list[Found]
    seeds: list[int]
    outcomes: list[Outcome]
    where: str
    jobs: int

    @property
    def lost(self) -> list[tuple[int, str]]:
        return [(s, o.lost) for s, o in zip(self.seeds, self.outcomes) if o.lost is not None]


def fuzz_campaign(task: SeedTask, jobs: int | None, cluster: str | None, actions: list[str], known: Any = None,
                  console: Console | None = None, impl_name: str = "") -> Campaign:
    """`task` with the campaign's seed, on `jobs` workers (local processes, or the Dask cluster at
    `cluster`: by default one per worker thread), merged into one report. `--seconds` is every
    worker's; `--examples` is split among them. `known`: the parsed --known-divergences (for the
    merged tally)."""
    if task.db is not None:
        check_db(task.db)
    ex = executor(jobs, cluster)
    try:
        n = jobs or ex.slots
        if task.examples is not None:
            n = min(n, task.examples)
        seeds = [worker_seed(task.seed, i) for i in range(n)]
        tasks = [replace(task, seed=s, examples=None if task.examples is None else
                         task.examples // n + (i < task.examples % n)) for i, s in enumerate(seeds)]
        jobs_ = [Job(str(t.seed), run_seed, (t,)) for t in tasks]
        board = Board("fuzzing", jobs_, len(actions))
        start = time.perf_counter()
        outcomes = run_jobs(ex, jobs_, board, console,
                            lambda o: snapshot(o.result.result) if o.result is not None else None)
        wall = time.perf_counter() - start
    finally:
        if isinstance(ex, DaskCluster):
            ex.close()
    parts = [(s, o.result) for s, o in zip(seeds, outcomes) if o.result is not None]
    merged = merge([p.result for _, p in parts], task.seed, wall, impl_name, task.level, task.memory_limit_mib)
    merged.interrupted |= board.interrupted or getattr(ex, "interrupted", False)
    merged.config = task.config  # the campaign's scope (a failure's own below), as a single campaign reports it
    if known is not None:
        from .divergences import Tally

        merged.known = Tally(known)
        for _, p in parts:
            merged.known.hits.update(p.known_hits)
            for k, v in p.known_first.items():
                merged.known.first.setdefault(k, v)
    found = dedupe(parts)
    if found:
        merged.failure, merged.shrunk, merged.config = found[0].failure, found[0].records, found[0].config
    return Campaign(merged, found, seeds, outcomes, ex.where, n)


def merge(parts: list[FuzzResult], seed: int, wall: float, impl: str, level: str | None,
          memory_limit_mib: int | None) -> FuzzResult:
    """One report: counts summed, coverage and guard outcomes summed per action, memory at most."""
    m = FuzzResult(parts[0].impl if parts else impl, seed, seconds=wall, memory_limit_mib=memory_limit_mib,
                   level=parts[0].level if parts else level or "full")
    for r in parts:
        m.examples += r.examples
        m.steps += r.steps
        for total, part in ((m.coverage, r.coverage), (m.generated, r.generated), (m.inputs, r.inputs),
                            (m.scopes, r.scopes), (m.skipped, r.skipped)):
            total.update(part)
        for a, c in r.guards.items():
            m.guards.setdefault(a, Counter()).update(c)
        m.seconds_in_impl += r.seconds_in_impl
        m.seconds_in_oracle += r.seconds_in_oracle
        m.memory_mib_start = max(m.memory_mib_start, r.memory_mib_start)
        m.memory_mib_peak = max(m.memory_mib_peak, r.memory_mib_peak)
        m.warnings += [f"seed {r.seed}: {w}" for w in r.warnings]
        m.shrink_cut |= r.shrink_cut
        m.interrupted |= r.interrupted
    m.rate_samples = sum_samples([r.rate_samples for r in parts])
    return m


def sum_samples(series: list[list[list[float]]]) -> list[list[float]]:
    """The workers' [seconds, steps] samples summed per whole second: at each second, every
    worker's steps at its last sample by then (a worker's clock starts with its own campaign; they
    start within a moment of each other), so the sum's slope is the campaign's steps/s."""
    series = [s for s in series if s]
    if not series:
        return []
    end = max(s[-1][0] for s in series)
    times = [[x[0] for x in s] for s in series]
    out = []
    for t in [*range(int(end) + 1)] + ([end] if end > int(end) else []):
        total: float = 0
        for s, ts in zip(series, times):
            i = bisect.bisect_right(ts, t) - 1
            total += s[i][1] if i >= 0 else 0
        out.append([round(float(t), 3), total])
    return out


def dedupe(parts: list[tuple[int, SeedResult]]) -> list[Found]:
    """The failures, one per shrunk trace (its kind and its steps' operations), in worker order."""
    by: dict[str, Found] = {}
    for seed, p in parts:
        if p.failure is None:
            continue
        key = json.dumps([p.failure["kind"], [[r["action"], r["args"]] for r in p.rows]], sort_keys=True, default=str)
        if key in by:
            by[key].seeds.append(seed)
            continue
        f = Failure(p.failure["kind"], p.failure["message"], p.failure["detail"], p.failure["facts"])
        by[key] = Found(f, p.result.shrunk, p.rows, p.result.config, [seed])
    return list(by.values())


class TraceRow:
    """A step already rendered as a trace row (in the worker, where the interpreter was)."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    def to_json(self, _it: Any) -> dict[str, Any]:
        return self.row


def campaign_json(c: Campaign, actions: list[str], cluster: str | None) -> dict[str, Any]:
    """`dmm fuzz --json`'s object for a campaign on many workers: the single campaign's fields over
    the merged result, plus the workers, the lost seeds and every distinct failure."""
    from .report import as_json

    out = as_json(c.merged, actions, c.found[0].trace if c.found else None)
    out["failures"] = [{"trace": f.trace, "steps": len(f.rows), "kind": f.failure.kind, "message": f.failure.message,
                        "facts": f.failure.facts or None, "seeds": f.seeds} for f in c.found]
    out["jobs"], out["where"], out["cluster"] = c.jobs, c.where, cluster
    out["workers"] = [
        {"seed": s, "steps": o.result.result.steps if o.result else None,
         "examples": o.result.result.examples if o.result else None,
         "seconds": round(o.result.result.seconds, 3) if o.result else None,
         "steps_per_second": round(o.result.result.steps_per_second, 1) if o.result else None,
         "cpu_seconds": round(o.result.cpu_seconds, 3) if o.result else None,
         "rate_samples": o.result.result.rate_samples if o.result else None,
         "failure": o.result.failure["kind"] if o.result and o.result.failure else None, "lost": o.lost}
        for s, o in zip(c.seeds, c.outcomes)]
    out["lost"] = [{"seed": s, "reason": why} for s, why in c.lost]
    return out


if __name__ == "__main__":
    from dmmcheck.conformance.campaign import child_main as _main  # the module by its name: results unpickle there

    sys.exit(_main())
