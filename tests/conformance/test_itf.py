"""Traces in the Informal Trace Format (Apalache, Quint): written by `dmm replay --export-itf` and
`dmm prove --bmc --itf`, read by `dmm replay` (detected by content)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.trace import TraceError, operations_of, read

HERE = Path(__file__).parent
STALE = HERE / "reports" / "stale-spte-after-swap-out.jsonl"
BROKEN_LOCK = HERE.parent / "model" / "prove" / "broken_lock.dmm"


def dmm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dmmcheck", *args], check=False, capture_output=True, text=True, timeout=600)


def test_round_trip_same_verdict_and_steps(tmp_path):
    """dmm trace -> ITF -> dmm replay: the same verdict, message and steps as the trace itself."""
    itf = tmp_path / "t.itf.json"
    first = dmm("replay", str(STALE), "--json", "--export-itf", str(itf))
    assert first.returncode == 1 and itf.is_file(), first.stderr
    again = dmm("replay", str(itf), "--json")
    assert again.returncode == 1, again.stderr
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert (b["verdict"], b["message"], b["steps"], b["same_as_recorded"]) == \
        (a["verdict"], a["message"], a["steps"], True) == ("invariant", "no_stale_spte fails", 6, True)
    assert [(o.action, o.args) for o in read(itf).ops] == [(o.action, o.args) for o in read(STALE).ops]
    assert read(itf).header == read(STALE).header


def test_itf_shape(tmp_path):
    """What Apalache and Quint read: #meta, vars, states; numbers as #bigint, each pick a Some variant."""
    itf = tmp_path / "t.itf.json"
    assert dmm("replay", str(STALE), "--json", "--export-itf", str(itf)).returncode == 1
    data = json.loads(itf.read_text())
    assert data["#meta"]["format"] == "ITF" and data["vars"] == ["mbt::actionTaken", "mbt::nondetPicks", "dmm::step"]
    states = data["states"]
    assert len(states) == 7 and states[0]["mbt::actionTaken"] == "init"
    last = states[-1]
    assert last["mbt::actionTaken"] == "swap_out"
    assert last["mbt::nondetPicks"]["g"] == {"tag": "Some", "value": {"#bigint": "13"}}
    assert last["dmm::step"] == {"#bigint": "5"}


def test_prove_bmc_itf_matches_its_trace(tmp_path):
    itf = tmp_path / "bmc.itf.json"
    r = dmm("prove", str(BROKEN_LOCK), "--bmc", "4", "-j", "1", "--no-cache", "--itf", str(itf),
            "--trace-dir", str(tmp_path), "--only", "bmc/*")
    assert r.returncode == 1 and itf.is_file(), r.stderr
    jsonl, back = read(tmp_path / "bmc-mutex.jsonl"), read(itf)
    assert [(o.action, o.args) for o in back.ops] == [(o.action, o.args) for o in jsonl.ops]
    assert back.header["violates"] == "mutex" and back.header.get("values") is None  # spec names, mapped on replay


def test_foreign_itf_in_spec_names(tmp_path):
    """An ITF trace another tool wrote (no dmm header): picks in spec element names, a None pick
    dropped, mapped onto the configuration as a bmc trace's are."""
    quint = {"#meta": {"format": "ITF", "source": "dmm.qnt"}, "vars": ["mbt::actionTaken", "mbt::nondetPicks"],
             "states": [
                 {"#meta": {"index": 0}, "mbt::actionTaken": "init", "mbt::nondetPicks": {}},
                 {"#meta": {"index": 1}, "mbt::actionTaken": "vm_create",
                  "mbt::nondetPicks": {"v": {"tag": "Some", "value": "vm1"}}},
                 {"#meta": {"index": 2}, "mbt::actionTaken": "demand_page",
                  "mbt::nondetPicks": {"v": {"tag": "Some", "value": "vm1"}, "g": {"tag": "Some", "value": "gfn3"},
                                       "m": {"tag": "None", "value": {}}}},
             ]}
    path = tmp_path / "quint.itf.json"
    path.write_text(json.dumps(quint))
    trace = read(path)
    assert trace.header["format"] == "dmm-trace/1" and "dmm.qnt" in trace.header["source"]
    ops = operations_of(trace, Config())
    assert [(o.action, o.args) for o in ops] == [("vm_create", {"v": 1}), ("demand_page", {"v": 1, "g": 3})]
    r = dmm("replay", str(path), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"] == "pass", r.stderr


@pytest.mark.parametrize("states, message", [
    ([{"mbt::actionTaken": "init"}, {"x": 1}], "state 1 has no mbt::actionTaken"),
    ([{"mbt::actionTaken": "init"}, {"mbt::actionTaken": "vm_create", "mbt::nondetPicks": 3}],
     "not a record of the action's arguments"),
])
def test_bad_itf_is_named(tmp_path, states, message):
    path = tmp_path / "bad.itf.json"
    path.write_text(json.dumps({"vars": [], "states": states}))
    with pytest.raises(TraceError, match=message):
        read(path)
    r = dmm("replay", str(path))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
