"""`dmm parse` and `dmm check` as a CI script sees them."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from dmmcheck.main import main
from dmmcheck.spec import load


def test_parse_json_lists_names(capsys):
    assert main(["parse", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("sorts", "relations", "functions", "actions", "invariants"):
        assert isinstance(out[key], list) and out[key], key
    spec = load()
    assert out["actions"] == list(spec.actions)
    assert "rmap" in out["relations"] and "p2m" in out["functions"]


def test_parse_summary_line(capsys):
    assert main(["parse"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith("invariants") and "dmm.dmm: ok:" in line and "\n" not in line


def test_check_says_what_it_did(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("DMM_CACHE_DIR", str(tmp_path))
    assert main(["check", "--fuzz-seconds", "3"]) == 0
    out = " ".join(capsys.readouterr().out.translate({ord(c): " " for c in "│┃┏┓┗┛┡┩└┘━─┳┻╇┴┬"}).split())
    assert "parsed and type-checked" in out
    assert re.search(r"\b[\d,]{3,} proved, 0 violated, 0 unknown", out) and "states, bound" in out
    assert "fuzz passed" in out and "steps/s on the bundled VMM" in out
    # what the fuzzer did not reach is said, not hidden (the bundled VMM never reports a TLB eviction)
    assert re.search(r"never exercised: [a-z_, ]*tlb_evict", out)


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "dmmcheck", "parse", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["invariants"]


def test_usage_error_is_not_a_traceback():
    r = subprocess.run([sys.executable, "-m", "dmmcheck", "frobnicate"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "invalid choice" in r.stderr


@pytest.mark.parametrize("argv", [
    ["fuzz", "--seconds", "-5"], ["fuzz", "--seconds", "nan"], ["fuzz", "--seconds", "inf"], ["fuzz", "--steps", "0"],
    ["fuzz", "--step-timeout", "nan"], ["fuzz", "--step-timeout", "-1"], ["fuzz", "--examples", "0"],
    ["fuzz", "--seed", "-1"], ["prove", "--timeout", "0"], ["prove", "--timeout", "nan"], ["prove", "--rlimit", "0"], ["prove", "--rlimit", "x"], ["prove", "-j", "0"],
    ["explore", "--max-seconds", "nan"], ["explore", "--max-states", "0"], ["mutants", "--seconds-per-mutant", "0"],
    ["replay", "t.jsonl", "--step-timeout", "-3"], ["check", "--fuzz-seconds", "-1"]])
def test_a_bad_number_is_a_usage_error_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument" in err and argv[-2].lstrip("-") in err


def test_prove_only_matching_nothing_is_not_a_pass(capsys):
    assert main(["prove", "--only", "no-such-obligation", "--json"]) != 0
    assert "no obligation matches" in capsys.readouterr().err


def test_an_empty_spec_path_is_an_error_not_the_bundled_spec(capsys):
    assert main(["parse", ""]) == 2
    assert "the path is empty" in capsys.readouterr().err


def test_a_fifo_as_spec_or_trace_is_refused_at_once(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main(["parse", str(fifo)]) == 2
    assert main(["replay", str(fifo)]) == 2
    assert capsys.readouterr().err.count("not a regular file") == 2


def test_one_exit_status_table_for_every_command(tmp_path, capsys):
    """docs/exit-codes.md: a spec error is 4 in every command, an unreadable file or a bad pattern
    is 2, never a verdict's code."""
    bad = tmp_path / "bad.dmm"
    bad.write_text("sort vm\nrelation r(vmm)\n")
    for cmd in (["parse"], ["explore"], ["prove", "--no-cache"], ["fuzz", "--examples", "1"], ["replay", "t.jsonl", "--spec"],
                ["check", "--fuzz-seconds", "0"]):
        argv = cmd + [str(bad)]
        assert main(argv) == 4, argv
    for argv in (["parse", str(tmp_path / "missing.dmm")], ["explore", str(tmp_path)],
                 ["prove", "--only", "no/such/obligation", "--no-cache"]):
        assert main(argv) == 2, argv
    assert "Traceback" not in capsys.readouterr().err


def test_an_adapter_raising_a_baseexception_subclass_is_a_crash_verdict(tmp_path, capsys, monkeypatch):
    mod = tmp_path / "odd_adapter.py"
    mod.write_text(
        "from dmmcheck.conformance.vmm_adapter import BundledVmm\n"
        "class Odd(BaseException):\n    pass\n"
        "class Vmm(BundledVmm):\n"
        "    def step(self, op):\n"
        "        if op.action == 'cr3_load':\n            raise Odd('not an Exception')\n"
        "        return super().step(op)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # enough test cases that some swarm includes cr3_load (accesses need a loaded root anyway)
    assert main(["fuzz", "--impl", "odd_adapter:Vmm", "--examples", "40", "--json", "--trace-dir", str(tmp_path / "t")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["failures"][0]["kind"] == "crash" and "raised Odd: not an Exception" in out["failures"][0]["message"]
    assert out["impl"] == "odd_adapter:Vmm"  # the subclass names itself, not the bundled adapter


@pytest.mark.parametrize("argv, what", [
    (["prove", "--finite", "99999999999999999999999"], "expected a whole number from 1 to 64"),
    (["prove", "--bmc", "100000"], "expected a whole number from 0 to 64"),
    (["explore", "--bound", "vm=100,mfn=100,gva=100,root=10"], "rmap alone has 10,000,000"),
])
def test_a_bound_that_could_never_finish_is_refused_up_front(argv, what, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    assert rc == 2 and what in capsys.readouterr().err
