"""Hostile input to the harness: a broken trace is bad input named by its line (never a crash of the
implementation), an adapter whose close() fails keeps the campaign's verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmmcheck.main import main

HEADER = {"format": "dmm-trace/1", "values": "impl",
          "config": {"vms": 2, "gfns": 16, "mfns": 24, "slots": 4, "roots": [0, 5], "gvas": [0x400000],
                     "budget": None, "mutant": None}}


def adapter_module(where: Path, monkeypatch, name: str, methods: str) -> None:
    """An importable module `name` whose Vmm is the bundled adapter with these methods replaced."""
    (where / f"{name}.py").write_text("from dmmcheck.conformance.vmm_adapter import BundledVmm\n"
                                      "class Vmm(BundledVmm):\n" + methods)
    monkeypatch.syspath_prepend(str(where))


def trace(tmp_path: Path, *steps: dict) -> Path:
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in (HEADER, *steps)) + "\n")
    return p


@pytest.mark.parametrize("steps, what", [
    ([{"action": "frobnicate", "args": {}}], ":2: 'frobnicate' is not an operation of this adapter"),
    ([{"action": "vm_create", "args": {"v": 0}}, {"action": "cr3_load", "args": {"v": 0}}],
     ":3: cr3_load lacks argument(s) c, r"),
    ([{"action": "vm_create", "args": {"v": [0]}}], ":2: vm_create: argument v is [0]"),
    ([{"action": "vm_create", "args": {"v": 0}}, {"action": "gpte_write", "args": {"v": 0, "r": 0, "x": 0x400000}}],
     ":3: gpte_write lacks argument(s) level, g, bits"),
])
def test_a_broken_trace_is_bad_input_named_by_its_line(tmp_path, capsys, steps, what):
    p = trace(tmp_path, *steps)
    assert main(["replay", str(p), "--json"]) == 2
    err = capsys.readouterr().err
    assert f"{p}{what}" in err and "Traceback" not in err, err


def test_a_close_that_fails_keeps_the_campaigns_verdict(tmp_path, capsys, monkeypatch):
    adapter_module(tmp_path, monkeypatch, "closing", "    def close(self):\n        raise OSError('device gone')\n")
    rc = main(["fuzz", "--impl", "closing:Vmm", "--mutant", "accessed_not_set", "--seconds", "60", "--json",
               "--trace-dir", str(tmp_path / "t")])
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert rc == 1 and result["failures"] and Path(result["failures"][0]["trace"]).exists()
    assert "close() raised OSError: device gone" in err and result["warnings"]


def test_json_output_stays_json_when_the_adapter_prints(tmp_path, capsys, monkeypatch):
    adapter_module(tmp_path, monkeypatch, "chatty",
                   "    def step(self, op):\n        print('debug:', op.action)\n        return super().step(op)\n")
    assert main(["fuzz", "--impl", "chatty:Vmm", "--examples", "3", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["examples"] == 3 and "debug: vm_create" in err


def test_an_adapter_that_leaks_memory_is_a_verdict_not_a_pass():
    from dmmcheck.conformance.fuzz import fuzz, memory_mib
    from dmmcheck.conformance.vmm_adapter import BundledVmm
    from dmmcheck.conformance.adapter import Config
    from dmmcheck.spec import load

    class Leaky(BundledVmm):
        hoard: list[bytearray] = []

        def reset(self, config):
            self.hoard.append(bytearray(b"\x01" * (8 << 20)))  # 8 MiB kept per test case
            super().reset(config)

    limit = int(memory_mib(BundledVmm())) + 120
    r = fuzz(Leaky, load(None), Config(), examples=200, seed_=0, memory_limit_mib=limit)
    Leaky.hoard.clear()
    assert r.failure is not None and r.failure.kind == "memory", r.failure
    assert f"past the limit of {limit:,} MiB" in r.failure.message and r.examples < 200
    assert r.memory_mib_peak > limit


def test_shrinking_an_implementation_that_hangs_stops_at_its_budget(tmp_path):
    """Every replay of a hang waits out the step timeout: shrinking it fully would take hours. The
    budget stops it and keeps the smallest failing case found by then."""
    import time

    from dmmcheck.conformance.adapter import Config
    from dmmcheck.conformance.fuzz import fuzz
    from dmmcheck.conformance.vmm_adapter import BundledVmm
    from dmmcheck.spec import load

    class Hangs(BundledVmm):
        """Hangs on a user's store from a test case's 10th step on: the simplest case (every draw
        zero) does not hang, so shrinking has many replays to make, each failing one waiting out the
        step timeout."""
        def reset(self, config):
            self.steps = 0
            return super().reset(config)

        def step(self, op):
            self.steps += 1
            if self.steps >= 10 and op.args.get("a") == "write" and op.args.get("u"):
                time.sleep(3600)
            return super().step(op)

    t = time.perf_counter()
    r = fuzz(Hangs, load(None), Config(), examples=5, step_timeout=0.5, shrink_seconds=3)
    assert r.failure is not None and r.failure.kind == "timeout" and r.shrunk
    assert r.shrink_cut and time.perf_counter() - t < 40


def test_killing_dmm_mutants_outright_leaves_no_worker_running(tmp_path):
    """A CI timeout kills the parent with SIGKILL: its pool workers must not run on for an hour."""
    import os
    import signal
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-m", "dmmcheck", "mutants", "-j", "2", "--only", "part:seeded",
                          "--seconds-per-mutant", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    time.sleep(8)  # the workers are up and fuzzing
    workers = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert workers, "no worker started"
    p.kill()
    p.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True).returncode == 0:
        time.sleep(0.5)
    left = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
    for pid in left:
        os.kill(int(pid), signal.SIGKILL)
    assert left == []
