"""Is a counterexample to induction reachable? A real bug (the bundled spec with an update left
out) is reached, with a trace; a true invariant that is not inductive alone (it needs an auxiliary
invariant) is not reached within the bound; a search that gets nowhere says unknown, never either."""

from __future__ import annotations

import json
from pathlib import Path

from dmmcheck.main import main
from dmmcheck.model.runner import ProveOptions, exit_status, run
from dmmcheck.spec import bundled_path

# zap_spte forgets to drop the rmap entry of the spte it zaps: rmap_consistent breaks, reachably.
ZAP = ("  remove s_stale(v, r, o, x)\n  forall c: vcpu. insert flush_pending(v, c)\n}\n\n"
       "# ---------------------------------------------------------------- TLB")
FORGOTTEN_RMAP = ("  forall m: mfn. remove rmap(m, v, r, o, x)\n" + ZAP, ZAP)

# `safe` is true in every reachable state (oops needs first without second, but first is only ever
# set after second), yet not inductive on its own: the auxiliary invariant `first implies second`
# is missing, so the prover's counterexample to induction is a state no execution reaches.
NEEDS_AUX = """
sort node [1]
relation first()
relation second()
relation bad()
init {
  first() := false
  second() := false
  bad() := false
}
action set_second() {
  insert second()
}
action set_first() {
  requires second()
  insert first()
}
action oops() {
  requires first() and not second()
  insert bad()
}
invariant safe: not bad()
"""


def _prove(tmp_path: Path, text: str, only: str | None = None, reach: float = 30.0):
    path = tmp_path / "spec.dmm"
    path.write_text(text)
    results, _ = run(ProveOptions(str(path), only=only, use_cache=False, jobs=1, reach_seconds=reach))
    return results


def _mutant() -> str:
    text = bundled_path().read_text()
    old, new = FORGOTTEN_RMAP
    assert old in text, "the mutation no longer applies to the bundled spec"
    return text.replace(old, new, 1)


def test_a_reachable_counterexample_to_induction_comes_with_a_trace(tmp_path):
    # the search stops when it reaches the CTI; the generous budget keeps a loaded machine from making it
    # "not reached" (five steps at the default bound: about 100,000 states)
    (r,) = _prove(tmp_path, _mutant(), only="inductive/zap_spte/rmap_consistent", reach=180.0)
    assert r.status == "violated"
    reach = r.reachability
    assert reach["verdict"] == "reachable", reach["text"]
    actions = [st["action"] for st in reach["trace"]]
    # create, map, allocate, fill, zap: the shortest execution to the CTI, ending with its action
    assert actions == ["vm_create", "guest_map", "demand_page", "shadow_fill", "zap_spte"]
    assert reach["text"].startswith("reachable: a trace of 5 steps from init reaches it")
    assert "rmap(m, v, r, o, x) iff spte(v, r, o, x) = m" in reach["blame"]
    # the page the blame names is the one the trace filled the spte with
    assert f"m={reach['trace'][3]['args']['m']}," in reach["blame"]
    assert exit_status([r]) == 1  # a reachable violation, no longer only "not inductive"


def test_a_true_invariant_that_needs_an_auxiliary_one_is_not_reached(tmp_path):
    results = _prove(tmp_path, NEEDS_AUX)
    (r,) = [r for r in results if r.status != "proved"]
    assert r.name == "inductive/oops/safe"
    reach = r.reachability
    assert reach["verdict"] == "not reached", reach["text"]
    assert reach["text"].startswith("not reached within the bound (explorer: all 3 reachable states at node=1)")
    assert "likely a missing auxiliary invariant" in reach["text"]
    (s,) = reach["searched"]
    assert s["complete"] and s["bound"] == {"node": 1}
    assert exit_status(results) == 5
    # with the auxiliary invariant, safe is inductive (and oops is dead); nothing is searched
    fixed = {r.name: r for r in _prove(tmp_path, NEEDS_AUX + "invariant aux: first() implies second()\n")}
    assert fixed["inductive/oops/safe"].status == "proved"
    assert all(r.status == "proved" for n, r in fixed.items() if n.startswith("inductive/"))
    assert all(r.reachability is None for r in fixed.values())


def test_a_search_that_gets_nowhere_is_unknown_never_reached_or_not(tmp_path):
    (r,) = _prove(tmp_path, _mutant(), only="inductive/zap_spte/rmap_consistent", reach=1e-6)
    assert r.reachability["verdict"] == "unknown"
    assert r.reachability["text"].startswith("unknown: the time budget (1e-06 s, --reach-seconds) ran out")
    assert exit_status([r]) == 5


def test_the_cli_reports_it_in_text_and_json_and_writes_the_trace(tmp_path, capsys):
    spec = tmp_path / "mutant.dmm"
    spec.write_text(_mutant())
    traces = tmp_path / "traces"
    args = ["prove", str(spec), "--only", "inductive/zap_spte/rmap_consistent", "--no-cache", "-j", "1",
            "--trace-dir", str(traces)]
    # the search stops when it reaches the CTI; the generous budget keeps a loaded machine from making it unknown
    args += ["--reach-seconds", "120"]
    assert main(args + ["--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    (ob,) = out["obligations"]
    assert ob["reachability"]["verdict"] == "reachable"
    (trace,) = out["traces"]
    assert trace == ob["reachability"]["trace_file"] == str(traces / "cti-zap_spte-rmap_consistent.jsonl")
    lines = [json.loads(x) for x in Path(trace).read_text().splitlines()]
    assert lines[0]["format"] == "dmm-trace/1" and lines[0]["violates"] == "rmap_consistent"
    assert [x["action"] for x in lines[1:]] == [st["action"] for st in ob["reachability"]["trace"]]
    assert main(args) == 1
    text = capsys.readouterr().out
    assert "reachable: a trace of 5 steps from init reaches it" in text
    assert "5. zap_spte(v=vm0, r=root0, o=role0, x=gva0)" in text
    assert "counterexamples to induction: 1 reachable, 0 not reached, 0 unknown" in text
    # switched off: no search, and the verdict is the prover's alone
    assert main(args + ["--json", "--reach-seconds", "0"]) == 5
    assert json.loads(capsys.readouterr().out)["obligations"][0]["reachability"] is None
