"""The pytest plugin, run as a VMM team runs it: `pytest --dmm-impl ...` in a project of theirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dmmcheck.main import main

BUNDLED = "dmmcheck.conformance.vmm_adapter:BundledVmm"


def pytest_in(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (where / "test_nothing.py").write_text("def test_theirs():\n    pass\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--rootdir", str(where), *args], cwd=where, capture_output=True, text=True, timeout=600)


def test_without_dmm_impl_the_plugin_adds_nothing(tmp_path):
    r = pytest_in(tmp_path)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr


def test_a_clean_adapter_passes_and_a_saved_trace_is_replayed_from_the_default_folder(tmp_path, capsys):
    # A failing trace in dmm-traces/, where a failing fuzz item writes it: replayed with no option.
    traces = tmp_path / "dmm-traces"
    assert main(["fuzz", "--mutant", "accessed_not_set", "--seconds", "60", "--trace-dir", str(traces), "--json"]) == 1
    capsys.readouterr()
    [trace] = traces.glob("*.jsonl")
    r = pytest_in(tmp_path, "--dmm-impl", BUNDLED, "--dmm-examples", "3")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "passed" in r.stdout and "1 failed" in r.stdout, r.stdout
    # the trace's own configuration switches the mutant on: the replay fails, the clean fuzz item passes
    assert f"FAILED dmm-conformance::replay[{trace.name}]" in r.stdout or f"replay[{trace.name}]" in r.stdout
    assert "dmm-conformance::fuzz" not in "".join(line for line in r.stdout.splitlines() if line.startswith("FAILED"))


def test_dmm_config_sets_the_scope_and_a_bad_file_is_a_message(tmp_path):
    good = tmp_path / "scope.toml"
    good.write_text('vms = 1\ngfns = 12\nmfns = 6\nroots = [0]\ngvas = ["0xffff800000000000"]\n')
    r = pytest_in(tmp_path, "--dmm-impl", BUNDLED, "--dmm-examples", "3", "--dmm-config", str(good))
    assert r.returncode == 0 and "3 passed" in r.stdout, r.stdout + r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("vms = 0\n")
    r = pytest_in(tmp_path, "--dmm-impl", BUNDLED, "--dmm-examples", "3", "--dmm-config", str(bad))
    assert r.returncode == 1 and f"dmm: {bad}:1: vms: expected" in r.stdout, r.stdout
    assert "Traceback" not in r.stdout
