"""`dmm prove` against mypyvy on nine of mypyvy's own examples (translated: tests/model/examples/), and
the bundled spec's proof. Prints one JSON object.

Per problem: the obligations dmm checks and their result, the whole-process CPU seconds (user + sys of
the process and its children, from getrusage(RUSAGE_CHILDREN) around the subprocess) of
`dmm prove --no-cache SPEC` and of `python mypyvy.py verify EXAMPLE.pyv`, and dmm/mypyvy. Each figure
is the least of --repeat runs (default 5; CPU time grows with the load, it never shrinks), after one
unmeasured run that fills the bytecode cache (and dmm's parser cache, where the checked spec is kept
too: spec/cache.py): both tools run with PYTHONPYCACHEPREFIX set to a
temporary folder, as an installed program would; with --no-pycache both run with
PYTHONDONTWRITEBYTECODE=1 instead, compiling their Python on every run (as in a checkout where bytecode
is never written).

mypyvy is not a dependency: set MYPYVY to a checkout of github.com/wilcoxjay/mypyvy (with `src/` and
`examples/`), and MYPYVY_PYTHON to a Python that has z3-solver, typing-extensions and networkx
(default: this one). Without MYPYVY its figures are null, with the reason.

Usage: bench/prove_vs_mypyvy.py [--repeat N] [--no-pycache] [NAME ...]   (default: all nine)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "tests" / "model" / "examples"
NAMES = ["lockserv", "sharded_kv", "ring_leader_election", "toy_consensus_forall", "ticket", "client_server_ae",
         "toy_leader_consensus_forall", "paxos_forall", "paxos_forall_choosable"]
DMM = [sys.executable, "-m", "dmmcheck"]


def cpu_of(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Whole-process CPU seconds of one run of cmd (it and its children), its exit status and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, p.returncode, p.stdout


def measure(cmd: list[str], env: dict[str, str], repeat: int) -> dict:
    cpu_of(cmd, env)  # fills the bytecode cache
    runs = [cpu_of(cmd, env) for _ in range(repeat)]
    cpus = [c for c, _, _ in runs]
    return {"cpu_s": round(min(cpus), 3), "cpu_s_median": round(statistics.median(cpus), 3),
            "exit": runs[-1][1], "out": runs[-1][2]}


def dmm_checks(spec: Path | None, env: dict[str, str]) -> dict:
    """What dmm proves for a spec: obligations and their summary (one --json run)."""
    p = subprocess.run(DMM + ["prove", "--no-cache", "--json"] + ([str(spec)] if spec else []), env=env,
                       capture_output=True, text=True, check=False)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        return {"checks": None, "summary": None, "error": p.stderr.strip()[-300:]}
    return {"checks": len(out["obligations"]), "summary": out["summary"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-pycache", action="store_true", help="compile both tools' Python on every run")
    ap.add_argument("names", nargs="*", default=NAMES)
    args = ap.parse_args()
    mypyvy = os.environ.get("MYPYVY")
    mypyvy_python = os.environ.get("MYPYVY_PYTHON", sys.executable)
    with tempfile.TemporaryDirectory() as pycache, tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "DMM_CACHE_DIR": cache}
        if args.no_pycache:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env["PYTHONPYCACHEPREFIX"] = pycache
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        rows = []
        for name in args.names:
            spec = EXAMPLES / f"{name}.dmm"
            row = {"problem": name, **dmm_checks(spec, env)}
            d = measure(DMM + ["prove", "--no-cache", str(spec)], env, args.repeat)
            row.update(dmm_cpu_s=d["cpu_s"], dmm_cpu_s_median=d["cpu_s_median"], dmm_exit=d["exit"])
            if mypyvy:
                m = measure([mypyvy_python, str(Path(mypyvy) / "src" / "mypyvy.py"), "verify",
                             str(Path(mypyvy) / "examples" / f"{name}.pyv")], env, args.repeat)
                row.update(mypyvy_cpu_s=m["cpu_s"], mypyvy_cpu_s_median=m["cpu_s_median"], mypyvy_exit=m["exit"],
                           mypyvy_all_ok="all ok!" in m["out"], ratio=round(d["cpu_s"] / m["cpu_s"], 2))
            else:
                row.update(mypyvy_cpu_s=None, ratio=None, mypyvy_reason="MYPYVY not set (a mypyvy checkout)")
            rows.append(row)
        bundled = {**dmm_checks(None, env), **{k: v for k, v in measure(DMM + ["prove", "--no-cache"], env,
                                                                          max(1, args.repeat // 2)).items()
                                             if k != "out"}}
        startup = {cmd: measure(DMM + cmd.split(), env, args.repeat)["cpu_s"]
                   for cmd in ("--help", "parse", "prove --help")}
    ratios = [r["ratio"] for r in rows if r.get("ratio") is not None]
    print(json.dumps({
        "problems": rows,
        "max_ratio": max(ratios) if ratios else None,
        "geomean_ratio": round(statistics.geometric_mean(ratios), 2) if ratios else None,
        "bundled_spec": bundled,
        "startup_cpu_s": startup,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cores": os.cpu_count(),
        "bytecode_cache": not args.no_pycache,
    }))


if __name__ == "__main__":
    main()
