"""The robustness campaign: hostile input to every `dmm` command, each case a `dmm` process of its
own (tests/hostile.py generates them). Prints one JSON object: how many cases of each kind ran, and
the counts that must all be zero — internal errors (exit 70), tracebacks, hangs, exits outside the
case's allowed set (docs/exit-codes.md), lost findings (a misbehaving implementation that passed).

    python bench/robustness.py [N] [SEED] [JOBS]      (default 200 cases, seed 0, 2 at a time)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hostile import Case, cases  # noqa: E402


def run(case: Case) -> dict:
    with tempfile.TemporaryDirectory(prefix="dmm-hostile-") as d:
        argv = case.materialize(Path(d))
        env = {**os.environ, "PYTHONPATH": d, "DMM_CACHE_DIR": str(Path(d) / "cache")}
        t = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "dmmcheck", *argv], cwd=d, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
        try:
            _, err = p.communicate(timeout=case.timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc, err = None, ""
        finally:
            try:  # the whole session: a command's workers too
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.communicate()
        seconds = time.perf_counter() - t
    problems = []
    if rc is None:
        problems.append("hang")
    elif rc == 70:
        problems.append("internal error")
    elif rc not in case.allowed:
        problems.append(f"wrong exit {rc}")
    if "Traceback (most recent call last)" in err:
        problems.append("traceback")
    if case.finding and rc == 0:
        problems.append("lost finding")
    return {"kind": case.kind, "argv": case.argv, "rc": rc, "seconds": round(seconds, 2), "problems": problems,
            "stderr_tail": err[-400:] if problems else ""}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    todo = cases(n, seed)
    t = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(run, todo))
    bad = [r for r in results if r["problems"]]
    count = Counter(p.split(" ")[0] if p.startswith("wrong") else p for r in bad for p in r["problems"])
    print(json.dumps({
        "cases": len(results), "seed": seed, "seconds": round(time.perf_counter() - t, 1),
        "by_kind": dict(Counter(r["kind"] for r in results)),
        "exits": dict(sorted(Counter(str(r["rc"]) for r in results).items())),
        "internal_errors": count["internal error"], "tracebacks": count["traceback"], "hangs": count["hang"],
        "wrong_exits": count["wrong"], "lost_findings": count["lost finding"],
        "bad_cases": bad[:20],
    }))


if __name__ == "__main__":
    main()
