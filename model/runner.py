"""Running a set of obligations: in parallel worker processes, through the result cache.

Workers are forked before any Z3 state exists in the parent; each builds its own Prover once.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from dmmcheck.spec import CheckedSpec, load

from .limits import BACKSTOP, RLIMIT, WITNESS_DEPTH
from .prove import Cache, Obligation, Prover, Result

if TYPE_CHECKING:
    import multiprocessing as mp
    from multiprocessing.connection import Connection

_WORKER: dict[str, Any] = {}  # this worker process's "prover" (a Prover) and "cache" (a Cache or None)


@dataclass
class ProveOptions:
    spec_path: str | None = None
    finite: int | None = None
    timeout: float = BACKSTOP  # wall-clock backstop per check; the limit that decides is rlimit
    bmc: int = 0
    kinduction: int = 0
    only: str | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    jobs: int = 1  # worker processes; 0: automatic (auto_jobs)
    rlimit: int = RLIMIT  # Z3 resource units per check: verdicts independent of the machine's load
    # Seconds the search for a reachable instance of the counterexamples to induction may take (all
    # of them share one search; reachable.py); 0: no search. `dmm prove` searches by default.
    reach_seconds: float = 0.0
    # Runs of at most this many actions are searched for each witness the spec declares (witness.py).
    witness_depth: int = WITNESS_DEPTH
    # The checked spec, when the caller has already loaded spec_path: it is not parsed again.
    spec: CheckedSpec | None = None


def loaded(opts: ProveOptions) -> CheckedSpec:
    """The checked spec of a run: the caller's, or parsed from spec_path (once: kept in opts)."""
    if opts.spec is None:
        opts.spec = load(opts.spec_path)
    return opts.spec


# Obligations to prove per worker process below which `-j` left to its default runs them in the dmm
# process itself: a worker costs its fork and its own encoding of the spec (40-60 ms of CPU measured
# on mypyvy's examples), more than the whole proof of a small spec (60-80 obligations: 0.05-0.4 s).
MIN_OBLIGATIONS_PER_WORKER = 150


def auto_jobs(todo: int) -> int:
    """Worker processes for `todo` obligations when -j is not given: one per core, at most one per
    MIN_OBLIGATIONS_PER_WORKER (1: no worker process at all)."""
    return max(1, min(os.cpu_count() or 1, todo // MIN_OBLIGATIONS_PER_WORKER))


def select(obs: list[Obligation], pattern: str | None) -> list[Obligation]:
    """`--only`: a glob over obligation names (inductive/swap_out/rmap_consistent), or a substring."""
    if not pattern:
        return obs
    globby = any(c in pattern for c in "*?[")
    return [o for o in obs if (fnmatch.fnmatch(o.name, pattern) if globby else pattern in o.name)]


def die_with_parent() -> None:
    """In a pool worker: end when the parent process does (Linux; elsewhere nothing). A parent
    killed outright (SIGKILL, a CI timeout) cannot stop its workers itself, and they would run on."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call: nothing will send the signal
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _init_worker(opts: ProveOptions, in_pool: bool = False) -> None:
    if in_pool:  # the parent answers Ctrl-C and stops the workers; they must not each print a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        die_with_parent()
    spec = loaded(opts)
    _WORKER["prover"] = Prover(spec, finite=opts.finite, timeout=opts.timeout, rlimit=opts.rlimit)
    _WORKER["cache"] = Cache(opts.cache_dir) if opts.use_cache else None


def _run(group: list[Obligation]) -> list[Result]:
    """A group's results, each kept in the cache as it is made (before a retry's note is added).
    The cache is read in one place only: run(), before any group starts."""
    prover: Prover = _WORKER["prover"]
    if group[0].kind == "inductive":
        results = prover.check_action(group)
    elif group[0].kind == "init":
        results = prover.check_inits(group)
    elif group[0].kind == "vacuity":
        results = prover.check_vacuity(group)
    else:
        results = [prover.check(ob) for ob in group]
    cache: Cache | None = _WORKER["cache"]
    if cache is not None:
        for ob, res in zip(group, results):
            cache.put(cache.key(prover.fingerprint(ob)), res)
    return results


def _groups(obs: list[Obligation]) -> list[list[Obligation]]:
    """Inductive obligations by action (one incremental solver each); init obligations together and
    vacuity checks together (one incremental solver each); the rest one by one."""
    by_action: dict[str, list[Obligation]] = {}
    singles = []
    vacuity = [ob for ob in obs if ob.kind == "vacuity"]
    inits = [ob for ob in obs if ob.kind == "init"]
    for ob in obs:
        if ob.kind == "inductive":
            by_action.setdefault(ob.action, []).append(ob)  # type: ignore[arg-type]  # an inductive obligation names its action
        elif ob.kind not in ("vacuity", "init"):
            singles.append([ob])
    if inits:
        singles.append(inits)
    if vacuity:  # one group: the invariants' model is the witness most actions need
        singles.append(vacuity)
    # Large groups first, so that the last task to finish is a small one.
    return sorted(by_action.values(), key=len, reverse=True) + singles


def run(opts: ProveOptions, on_result: Callable[[Result], None] | None = None) -> tuple[list[Result], float]:
    start = time.perf_counter()
    spec = loaded(opts)
    obligations = select(Prover.list_obligations(spec, opts.bmc, opts.kinduction), opts.only)
    results: list[Result] = []

    def done(r: Result) -> None:
        results.append(r)
        if on_result:
            on_result(r)

    # Cache hits are answered here, before any solver process starts.
    todo = obligations
    if opts.use_cache:
        cache = Cache(opts.cache_dir)
        todo = []
        for ob in obligations:
            hit = cache.get(cache.key(fingerprint(spec, ob, opts)), ob.name)
            if hit is None:
                todo.append(ob)
            else:
                hit.cached = True
                hit.seconds = 0.0
                done(hit)
    groups = _groups(todo)
    jobs = opts.jobs or auto_jobs(len(todo))
    if jobs <= 1 or len(groups) < 2:
        if groups:
            _init_worker(opts)
        for g in groups:
            for r in _run(g):
                done(r)
    else:
        _run_pool(groups, opts, jobs, done)
    # Never missing: an obligation without a result (which would be a bug here) is reported unknown.
    answered = {r.name for r in results}
    for ob in obligations:
        if ob.name not in answered:
            done(Result(ob.name, ob.kind, ob.action, ob.invariant, "unknown", 0.0,
                        reason="internal error: no result came back for it"))
    order = {ob.name: i for i, ob in enumerate(obligations)}
    results.sort(key=lambda r: order[r.name])
    ctis = [r for r in effective(results) if r.kind == "inductive" and r.status == "violated"]
    if opts.reach_seconds > 0 and ctis:
        from .reachable import annotate  # only with something to search for (the explorer's imports)

        annotate(spec, ctis, opts.reach_seconds)
    for r in witnesses(spec, opts):
        done(r)
    return results, time.perf_counter() - start


def witnesses(spec, opts: ProveOptions) -> list[Result]:
    """Each witness the spec declares (those --only selects), answered by BMC (witness.py)."""
    if not spec.witnesses:
        return []
    from .witness import answer

    chosen = {ob.name for ob in select([Obligation("witness", invariant=w.name) for w in spec.witnesses], opts.only)}
    sizes = {s: opts.finite for s in spec.sorts} if opts.finite else None  # --finite N: that universe
    return [answer(spec, w, opts.witness_depth, sizes=sizes, rlimit=opts.rlimit, timeout=opts.timeout)
            for w in spec.witnesses if f"witness/{w.name}" in chosen]


# A test hook, read only in pool workers: DMM_TEST_CRASH="HOW:GLOB[:FILE]" makes a worker die as it
# starts a group with an obligation whose name matches GLOB, as a solver crash would: HOW is `kill`
# (SIGKILL), `abort` (SIGABRT) or `exit` (os._exit(3), no signal). With FILE, only while FILE does not
# exist (the worker creates it first): the crash happens once, and the retry runs normally.
CRASH_ENV = "DMM_TEST_CRASH"


def _maybe_crash(group: list[Obligation]) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    how, _, rest = spec.partition(":")
    pattern, _, once = rest.partition(":")
    if not any(fnmatch.fnmatch(ob.name, pattern) for ob in group):
        return
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGABRT if how == "abort" else signal.SIGKILL)


def _worker_main(conn: Connection, opts: ProveOptions) -> None:
    """A pool worker: one group at a time from the parent, its results sent back."""
    _init_worker(opts, in_pool=True)
    while True:
        try:
            group = conn.recv()
        except EOFError:
            return
        if group is None:
            return
        _maybe_crash(group)
        try:
            rs = _run(group)
        except Exception as e:  # noqa: BLE001 - every obligation answered, never a lost group
            rs = [Result(ob.name, ob.kind, ob.action, ob.invariant, "unknown", 0.0,
                         reason=f"internal error: {type(e).__name__}: {e}") for ob in group]
        conn.send(rs)


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {-code}"
    return f"exit status {code}"


def _run_pool(groups: list[list[Obligation]], opts: ProveOptions, jobs: int, done: Callable[[Result], None]) -> None:
    """Run groups in worker processes, each worker one group at a time, so that a worker that dies
    (Z3 can segfault) is known with the group it was running. That group is retried once, each
    obligation on its own (so that a second death pins down one obligation); an obligation whose
    worker dies again is reported unknown, `worker died (signal N)`: never missing, never proved."""
    import multiprocessing as mp  # here, not at the top: a run in process forks nothing (16 ms of imports)
    from multiprocessing.connection import wait

    ctx = mp.get_context("fork")
    # (group, tries so far, how its worker died on the first try)
    todo: deque[tuple[list[Obligation], int, str]] = deque((g, 0, "") for g in groups)
    n = min(jobs, len(groups))
    busy: dict[Connection, tuple[mp.process.BaseProcess, list[Obligation], int, str]] = {}
    idle: list[tuple[Connection, mp.process.BaseProcess]] = []

    def start() -> tuple[Connection, mp.process.BaseProcess]:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(child, opts), daemon=True)
        proc.start()
        child.close()
        return parent, proc

    try:
        while todo or busy:
            while todo and (idle or len(busy) < n):
                conn, proc = idle.pop() if idle else start()
                group, tries, why = todo.popleft()
                try:
                    conn.send(group)
                except OSError:  # died while idle: its group is not lost, a new worker takes it
                    proc.join()
                    conn.close()
                    todo.appendleft((group, tries, why))
                    continue
                busy[conn] = (proc, group, tries, why)
            ready = wait(list(busy) + [p.sentinel for p, _, _, _ in busy.values()])
            for conn in [c for c in busy if c in ready or busy[c][0].sentinel in ready]:
                proc, group, tries, why = busy.pop(conn)
                try:
                    rs = conn.recv() if conn.poll() else None
                except (EOFError, OSError):
                    rs = None
                if rs is not None:
                    for r in rs:
                        if why:  # a retry: the result stands, and says what happened on the first try
                            r.reason = "; ".join(filter(None, [r.reason, f"retried: its {why}"]))
                        done(r)
                    idle.append((conn, proc))
                    continue
                proc.join()
                conn.close()
                died = f"worker died ({_death(proc.exitcode)})"
                if tries == 0:
                    todo.extend(([ob], 1, died) for ob in group)
                else:
                    for ob in group:
                        done(Result(ob.name, ob.kind, ob.action, ob.invariant, "unknown", 0.0,
                                    reason=f"{died}, on its first try and again on the retry"))
    except KeyboardInterrupt:
        # Ctrl-C now, not after every queued obligation: the workers (which ignore SIGINT) are
        # stopped and nothing queued starts.
        for proc in [p for p, _, _, _ in busy.values()] + [p for _, p in idle]:
            proc.terminate()
        raise
    finally:
        for conn, _proc in idle:
            try:
                conn.send(None)
            except OSError:
                pass
        for conn, proc in idle:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
            conn.close()
        for _conn, (proc, _, _, _) in busy.items():
            proc.kill()
            proc.join()


def fingerprint(spec, ob: Obligation, opts: ProveOptions) -> str:
    return Prover.fingerprint_of(spec, ob, opts.finite, opts.rlimit)


def kinduction_holds(results: list[Result]) -> bool:
    """k-induction succeeded as a whole: its base case and the step case of every invariant (each
    step assumed all invariants, so one failing step leaves the others unproved too)."""
    kind = [r for r in results if r.kind == "kinduction"]
    return bool(kind) and all(r.status == "proved" for r in kind) and any(r.invariant == "base" for r in kind)


def effective(results: list[Result]) -> list[Result]:
    """The results that decide the verdict: a 1-induction failure is superseded when k-induction
    proved every invariant."""
    if not kinduction_holds(results):
        return results
    return [r for r in results if not (r.kind == "inductive" and r.status != "proved")]


def exit_status(results: list[Result]) -> int:
    """0 all proved; 1 a reachable violation (bmc, or a counterexample to induction found
    reachable); 5 another violation (a counterexample to induction, a failed init or vacuity
    obligation); 3 some unknown, a required witness not found among them (docs/exit-codes.md)."""
    # A witness not found within the depth is reported, and fails the run only if it is required.
    results = [r for r in effective(results) if r.kind != "witness" or (r.witness or {}).get("required")]
    if any(r.status == "violated" and (r.kind == "bmc" or (r.reachability or {}).get("verdict") == "reachable")
           for r in results):
        return 1
    if any(r.status == "violated" for r in results):
        return 5
    if any(r.status == "unknown" for r in results):
        return 3
    return 0


def unused_invariants(results: list[Result], invariants: list[str]) -> list[str]:
    used = {c for r in results if r.status == "proved" for c in r.core}
    return [i for i in invariants if i not in used]


def write_trace(path: Path, spec_path: str, spec_hash: str, r: Result) -> None:
    """A BMC counterexample in the conformance harness's trace format (docs/trace-format.md)."""
    import json

    cx = r.counterexample or {}
    header = {"format": "dmm-trace/1", "source": "dmm prove --bmc", "spec": spec_path, "spec_hash": spec_hash,
              "universe": cx.get("universe"), "violates": r.invariant, "blame": cx.get("blame")}
    lines = [json.dumps(header)]
    for i, st in enumerate(cx.get("steps", [])):
        lines.append(json.dumps({"step": i, "action": st["action"], "args": st["args"]}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
