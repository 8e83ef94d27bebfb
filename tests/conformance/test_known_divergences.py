"""--known-divergences FILE: a VMM with a documented quirk is fuzzed past it, and only past it.

The quirky VMM is the bundled one with the history mutant `fetch_error_code_ignores_smep` switched
on: a faulting instruction fetch reports the I/D error-code bit only with EFER.NXE, not with
CR4.SMEP alone. Every other behaviour is the bundled VMM's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmmcheck.conformance import divergences
from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.main import main
from dmmcheck.spec import load

SPEC = load(None)
QUIRK = "fetch_error_code_ignores_smep"
EXAMPLES = 60  # at seed 0 the quirk shows in a few of them, at gvas below and above 4 MiB and in the upper half

ENTRY = """\
[[divergence]]
name = "fetch-id-bit-needs-nxe"
reason = "the host reports I/D in a fetch fault's error code only with EFER.NXE set"
kind = "observation"
what = "access"
action = "access"
access = "fetch"
gva = { from = "0x0", to = "0xffffffffffffffff" }
controls = { nxe = false, smep = true }
expected = { outcome = "#PF", error_code = { mask = "0x10", value = "0x10" } }
observed = { outcome = "#PF", error_code = { mask = "0x10", value = "0" } }
differ = "0x10"
"""

NEVER = """
[[divergence]]
name = "swap-out-rmap"
reason = "an entry no failure of this VMM matches"
kind = "invariant"
action = "swap_out"
invariants = ["rmap_consistent"]
"""


def write(tmp_path: Path, text: str, name: str = "known.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def campaign(known_text: str | None, tmp_path: Path, mutant: str = QUIRK, examples: int = EXAMPLES,
             level: str | None = None):
    known = divergences.load(write(tmp_path, known_text), SPEC) if known_text is not None else None
    return fuzz(BundledVmm, SPEC, Config(mutant=mutant), examples=examples, seed_=0, known=known, shrink_seconds=10,
                level=level)


def test_a_matching_entry_lets_the_quirky_vmm_pass_and_counts_each_test_case_it_cut_short(tmp_path):
    r = campaign(ENTRY + NEVER, tmp_path)
    assert r.failure is None
    hits = r.known.hits["fetch-id-bit-needs-nxe"]
    assert hits > 0 and r.known.cut_short == hits
    assert r.known.never_hit() == ["swap-out-rmap"]
    first = r.known.first["fetch-id-bit-needs-nxe"]
    assert "fetch of gva" in first and "the ideal machine allows #PF" in first


def test_without_the_file_the_quirk_fails_the_campaign(tmp_path):
    r = campaign(None, tmp_path)
    assert r.failure is not None and r.failure.kind == "observation"
    assert r.failure.facts["what"] == "access" and r.failure.facts["operation"]["args"]["a"] == "fetch"
    assert r.failure.facts["expected"]["error_code"] ^ r.failure.facts["observed"]["error_code"] == 0x10
    assert r.failure.facts["controls"]["nxe"] is False and r.failure.facts["controls"]["smep"] is True


@pytest.mark.parametrize("field, old, new", [
    ("error code", 'differ = "0x10"', 'differ = "0x8"'),
    ("expected error code", 'value = "0x10" } }\nobserved', 'value = "0" } }\nobserved'),
    ("access kind", 'access = "fetch"', 'access = "read"'),
    ("address range", 'to = "0xffffffffffffffff"', 'to = "0x3fffff"'),
    ("controls", "nxe = false, smep = true", "nxe = true, smep = true"),
    ("observed outcome", 'observed = { outcome = "#PF", error_code = { mask = "0x10", value = "0" } }\ndiffer = "0x10"\n',
     'observed = { outcome = "success" }\n'),
])
def test_an_entry_that_differs_in_one_field_does_not_accept_the_quirk(tmp_path, field, old, new):
    text = ENTRY.replace(old, new)
    assert text != ENTRY, field
    r = campaign(text, tmp_path)
    assert r.failure is not None and r.failure.kind == "observation", field
    assert "fetch of gva" in r.failure.message and r.failure.facts["controls"]["smep"]


def test_the_entry_does_not_swallow_another_bug(tmp_path):
    # nx_ignored: a fetch from an NX page succeeds: at level black-box the same kind of failure (a
    # fetch's outcome), another difference
    r = campaign(ENTRY, tmp_path, mutant="nx_ignored", level="black-box", examples=300)  # (60 no longer reach it)
    assert r.failure is not None and r.failure.facts["what"] == "access"
    assert r.known.cut_short == 0


def test_dmm_fuzz_reports_hits_and_entries_never_hit_in_json_and_on_the_terminal(tmp_path, capsys):
    f = write(tmp_path, ENTRY + NEVER)
    base = ["fuzz", "--mutant", QUIRK, "--examples", str(EXAMPLES), "--known-divergences", str(f),
            "--trace-dir", str(tmp_path / "traces")]
    assert main(base + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    kd = out["known_divergences"]
    assert out["failures"] == [] and kd["file"] == str(f)
    assert [e["name"] for e in kd["entries"]] == ["fetch-id-bit-needs-nxe", "swap-out-rmap"]
    assert kd["entries"][0]["hits"] > 0 and kd["cut_short"] == kd["entries"][0]["hits"]
    assert kd["entries"][1]["hits"] == 0 and kd["never_hit"] == ["swap-out-rmap"]
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "known divergences" in text and "0 (never hit)" in text and "never hit: swap-out-rmap" in text
    assert "cut short at an accepted divergence" in text and not (tmp_path / "traces").exists()


def test_dmm_replay_accepts_a_trace_of_the_quirk_and_fails_it_without_the_file(tmp_path, capsys):
    traces = tmp_path / "traces"
    assert main(["fuzz", "--mutant", QUIRK, "--examples", str(EXAMPLES), "--trace-dir", str(traces),
                 "--shrink-seconds", "10", "--json"]) == 1
    capsys.readouterr()
    [trace] = traces.glob("*.jsonl")
    assert main(["replay", str(trace), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "observation"
    f = write(tmp_path, ENTRY)
    assert main(["replay", str(trace), "--json", "--known-divergences", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "accepted" and out["accepted_by"] == "fetch-id-bit-needs-nxe"
    assert main(["replay", str(trace), "--known-divergences", str(write(tmp_path, ENTRY.replace("0x10\"\n", "0x8\"\n"),
                                                                        "other.toml"))]) == 1


BAD = [
    ("unknown key", ENTRY.replace('what = "access"', 'what = "access"\ncolour = "red"'), 6, "colour: not a key"),
    ("no reason", ENTRY.replace('reason = "the host reports I/D in a fetch fault\'s error code only with EFER.NXE set"\n',
                                ""), 1, "reason: missing"),
    ("a crash", ENTRY.replace('kind = "observation"', 'kind = "crash"'), 4, "a crash cannot be accepted"),
    ("an unknown operation", ENTRY.replace('action = "access"', 'action = "guest_wolk"'), 6,
     "'guest_wolk' is not an operation"),
    ("an access argument on another operation", ENTRY.replace('action = "access"', 'action = "swap_out"'), 7,
     "access: names an access's argument"),
    ("only one side", ENTRY.replace('observed = { outcome = "#PF", error_code = { mask = "0x10", value = "0" } }\n', "")
     .replace('differ = "0x10"\n', ""), 1, "observed: missing"),
    ("a reversed range", ENTRY.replace('to = "0xffffffffffffffff"', 'to = "0x0"').replace('from = "0x0"', 'from = "0x10"'),
     8, "gva: a range is"),
    ("an unknown control", ENTRY.replace("smep = true", "smpe = true"), 9, "controls: smpe = True"),
    ("a mask value outside its mask", ENTRY.replace('value = "0x10" } }\nobserved', 'value = "0x30" } }\nobserved'),
     10, "expected: error_code: a mask is"),
    ("an unknown invariant", NEVER.replace("rmap_consistent", "rmap_consistant"), 7,
     "'rmap_consistant' is not an invariant"),
    ("a name used twice", ENTRY + "\n" + ENTRY, 15, "named twice"),
    ("a refinement entry without its message", NEVER.replace('"invariant"', '"refinement"')
     .replace('invariants = ["rmap_consistent"]\n', ""), 2, "message: missing"),
    ("not TOML", ENTRY.replace('kind = "observation"', "kind = observation"), 4, "not TOML"),
    ("no entries", "# nothing here\n", None, "no [[divergence]] entries"),
    ("a table, not an array of tables", ENTRY.replace("[[divergence]]", "[divergence]"), 1,
     "write each entry as [[divergence]]"),
    ("a kind that is not a name", ENTRY.replace('kind = "observation"', 'kind = ["observation"]'), 4,
     "kind: expected one of"),
]


@pytest.mark.parametrize("case, text, line, what", BAD, ids=[b[0] for b in BAD])
def test_a_malformed_file_exits_2_naming_the_file_and_line(tmp_path, capsys, case, text, line, what):
    f = write(tmp_path, text)
    assert main(["fuzz", "--examples", "1", "--known-divergences", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dmm fuzz: {f}{':' + str(line) if line else ''}"), err
    assert what in err and "Traceback" not in err


def test_replay_and_mutants_check_the_file_before_anything_runs(tmp_path, capsys):
    bad = write(tmp_path, ENTRY.replace('kind = "observation"', 'kind = "timeout"'))
    assert main(["mutants", "--only", QUIRK, "--known-divergences", str(bad)]) == 2
    assert f"dmm mutants: {bad}:4: divergence 'fetch-id-bit-needs-nxe': kind:" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "no-such.jsonl"), "--known-divergences", str(bad)]) == 2
    assert f"{bad}:4" in capsys.readouterr().err
    assert main(["fuzz", "--examples", "1", "--known-divergences", str(tmp_path)]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_dmm_mutants_counts_the_accepted_divergences_of_each_mutant(tmp_path, capsys):
    f = write(tmp_path, ENTRY)
    assert main(["mutants", "--only", QUIRK, "--seconds-per-mutant", "5", "-j", "1", "--json",
                 "--known-divergences", str(f)]) == 1  # the quirk accepted: this mutant survives
    [m] = json.loads(capsys.readouterr().out)["mutants"]
    assert not m["killed"] and m["accepted"]["fetch-id-bit-needs-nxe"] > 0


def test_the_documented_example_loads(tmp_path):
    doc = (Path(__file__).parents[2] / "docs" / "conformance.md").read_text()
    section = doc[doc.index("## Known divergences"):]
    text = section[section.index("```toml\n") + 8:section.index("```\n", section.index("```toml\n") + 8)]
    known = divergences.load(write(tmp_path, text), SPEC)
    assert [e.name for e in known.entries] == ["fetch-id-bit-needs-nxe", "wp0-write-no-dirty"]
    assert known.match(failure()) is known.entries[0]
    assert known.match(failure(what="ad-bits", operation={"action": "guest_walk", "args": {
        "v": 0, "x": 0x400000, "a": "write", "u": False}}, controls={"wp": False, "nxe": True, "smep": False,
                                                                      "smap": False},
        expected={"value": 0x1067}, observed={"value": 0x1027})) is known.entries[1]


def failure(**facts) -> Failure:
    f = Failure("observation", "fetch of gva 0x400000 ...", facts={
        "what": "access", "step": 3, "operation": {"action": "guest_walk", "args": {"v": 0, "x": 0x400000, "a": "fetch",
                                                                                     "u": False}},
        "controls": {"wp": True, "nxe": False, "smep": True, "smap": False},
        "expected": {"outcome": "#PF", "error_code": 0x11, "cr2": 0x400000},
        "observed": {"outcome": "#PF", "error_code": 0x01, "cr2": 0x400000}})
    f.facts.update(facts)
    return f


def test_matching_needs_every_field_the_entry_names(tmp_path):
    lower_half = ENTRY.replace('to = "0xffffffffffffffff"', 'to = "0x7fffffffffff"')
    known = divergences.load(write(tmp_path, lower_half), SPEC)
    assert known.match(failure()) is not None
    assert known.match(failure(controls=None)) is None  # an operation with no VM: no controls to match
    assert known.match(failure(what="ad-bits")) is None
    assert known.match(failure(observed={"outcome": "#PF", "error_code": 0x03, "cr2": 0x400000})) is None
    assert known.match(failure(operation={"action": "guest_walk", "args": {"v": 0, "x": 0xffff800000000000,
                                                                            "a": "fetch", "u": False}})) is None
    other_kind = failure()
    other_kind.kind = "refinement"
    assert known.match(other_kind) is None
    no_facts = Failure("observation", "a failure before any step")
    assert known.match(no_facts) is None


def test_the_plugin_option_accepts_the_quirk_and_reports_the_hits(tmp_path):
    f = write(tmp_path, ENTRY + NEVER)
    (tmp_path / "test_nothing.py").write_text("def test_theirs():\n    pass\n")
    env = dict(os.environ, DMM_MUTANT=QUIRK)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rP", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                        "--dmm-impl", "dmmcheck.conformance.vmm_adapter:BundledVmm", "--dmm-examples", str(EXAMPLES),
                        "--dmm-known-divergences", str(f)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dmm known divergences" in r.stdout and "never hit: swap-out-rmap" in r.stdout, r.stdout
