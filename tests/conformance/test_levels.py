"""Conformance levels: what the harness judges at full, state and black-box, each from only what the
level provides (docs/conformance.md, "Conformance levels")."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dmmcheck.conformance.adapter import AdapterError, Config, Operation
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.levels import Hiding, at_level, declared
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.reach import Bound, Reach
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm, BundledVmmSync
from dmmcheck.main import main
from dmmcheck.spec import load
from tests.conformance.modes import moded
from tests.scenarios import SETUP as SCENARIO
from tests.scenarios import X, op

SPEC = load(None)
SETUP = moded(SCENARIO)


def run(ops: list[Operation], level: str | None, adapter=None, mutant: str | None = None) -> Runner:
    r = Runner(at_level(adapter or BundledVmm(), level), SPEC, Config(mutant=mutant))
    r.reset()
    for o in ops:
        r.step(o)
    return r


def verdict(ops: list[Operation], level: str | None, **kw) -> Failure:
    with pytest.raises(Failure) as e:
        run(ops, level, **kw)
    return e.value


class OwesADeadVm(BundledVmm):
    """After a VM's teardown its record still owes the VM's vCPU a flush: every invariant holds on
    the state after it, but no spec step reaches that state (vm_destroy forgives the debt, and
    nothing owes a dead VM one)."""

    def reset(self, config: Config) -> None:
        super().reset(config)
        self.dead: set[int] = set()

    def step(self, o: Operation):
        obs = super().step(o)
        if o.action == "vm_destroy" and any(n == "vm_destroy" for n, _ in obs.events):
            self.dead.add(o.args["v"])
        return obs

    def abstract_state_parts(self, parts: frozenset[str]):
        st = super().abstract_state_parts(parts)
        st["flush_pending"] = list(st["flush_pending"]) + [(v, 0) for v in sorted(self.dead)]
        return st


class DropsProtectEvents(BundledVmm):
    """Does everything right and misreports it: the protect_gpt events are left out."""

    def step(self, o: Operation):
        obs = super().step(o)
        obs.events = [e for e in obs.events if e[0] != "protect_gpt"]
        return obs


@pytest.mark.parametrize("level", ["full", "state", "black-box"])
def test_the_bundled_vmm_passes_a_short_campaign_at_each_level(level):
    # At the state level, the VMM with unsync sps off: one guest store into its own unsync leaf
    # table (a self-map) changes thirteen elements at once, and the spec sequence that explains it
    # is past the search's bound (5,000 states; docs/conformance.md, "Conformance levels").
    vmm = BundledVmmSync if level == "state" else BundledVmm
    r = fuzz(vmm, SPEC, Config(), examples=15, seed_=3, level=level)
    assert r.failure is None, r.failure
    assert r.level == level and r.steps > 100
    performed = sum(r.coverage.values())
    # state: the actions of the sequences found are the coverage; black-box has no spec actions to count
    assert (performed > 0) == (level != "black-box")


def test_a_state_no_spec_sequence_reaches_is_killed_at_state_level_and_the_verdict_names_the_bound():
    ops = SETUP + [op("vm_destroy", v=0)]
    run(ops, "state")  # the real VMM: the teardown's steps, then vm_destroy
    f = verdict(ops, "state", adapter=OwesADeadVm())
    assert f.kind == "refinement"
    assert f"no sequence of at most {Bound().actions} spec actions over the elements the step changed or named " \
           "reaches the implementation's state" in f.message
    searched, diff = f.detail.split("\n", 1)
    assert searched.startswith("elements searched:") and "vm0" in searched and "vcpu0" in searched
    assert diff.splitlines()[-2:] == ["-flush_pending(vm0, vcpu0) = false", "+flush_pending(vm0, vcpu0) = true"]
    assert verdict(ops, "full", adapter=OwesADeadVm()).kind == "refinement"  # its events reach it neither


def test_a_search_cut_short_by_its_budget_says_so():
    r = Runner(at_level(BundledVmm(), "state"), SPEC, Config())
    r.judge.reach = Reach(r.judge.it, r.judge.ghost, Bound(actions=200, states=1))
    r.reset()
    with pytest.raises(Failure) as e:  # one state expanded: no two-action step is found
        for o in SETUP:
            r.step(o)
    assert e.value.kind == "refinement" and "(searched 1 states, the search's bound;" in e.value.message


def test_a_guest_memory_bug_is_killed_at_black_box():
    ops = SETUP + [op("swap_out", v=0, g=12), op("shadow_hit", v=0, c=0, x=X[0], a="read", u=False)]
    assert run(ops, "black-box").records[-1].observation.access.value == 5
    f = verdict(ops, "black-box", mutant="swap_in_not_read")
    assert f.kind == "observation" and "0x5" in f.message


def test_an_implementation_that_only_misreports_events_is_killed_at_full_but_not_below():
    f = verdict(SETUP, "full", adapter=DropsProtectEvents())
    assert f.kind == "refinement"
    # by construction: below full the harness never sees the events, so nothing can be wrong with them
    for level in ("state", "black-box"):
        r = fuzz(DropsProtectEvents, SPEC, Config(), examples=10, seed_=1, level=level)
        assert r.failure is None, (level, r.failure)


def test_black_box_hides_events_and_abstract_state_and_derives_the_ideal_machine_from_operations():
    r = run(SETUP + [op("balloon_inflate", v=0, g=12)], "black-box")
    assert all(not rec.observation.events and not rec.spec_steps for rec in r.records)
    with pytest.raises(AdapterError):
        r.adapter.abstract_state()
    # the page was given up: its content is gone in the VMM, and the ideal machine adopted that
    assert bytes(r.oracle.ideal.vms[0].mem.mem[12 * 4096:12 * 4096 + 8]) == bytes(8)
    # the spec state the fuzzer draws from shows the guest's side: VM 0 lives, maps X[0] to gfn 12
    u = r.oracle.u
    assert u.get(r.oracle.state, "live", 0) and u.get(r.oracle.state, "gmap", 0, 0, 0) == 12


def test_levels_are_declared_and_checked():
    caps = BundledVmm().capabilities()
    assert declared(caps) == "full"
    assert declared(replace(caps, events=False)) == "state"  # reports no events: judged on its state
    with pytest.raises(AdapterError, match="declares level 'partial'"):
        declared(replace(caps, level="partial"))
    with pytest.raises(AdapterError, match="guest memory"):
        declared(replace(caps, guest_memory=False, level="black-box"))
    assert isinstance(at_level(BundledVmm(), "state"), Hiding) and not isinstance(at_level(BundledVmm(), "full"), Hiding)
    with pytest.raises(AdapterError, match="provides level state"):
        at_level(StateOnly(), "full")


class StateOnly(BundledVmm):
    def capabilities(self):
        return replace(super().capabilities(), level="state", events=False)

    def step(self, o: Operation):
        return replace(super().step(o), events=[])


def test_the_level_shows_in_every_json_result(capsys, tmp_path):
    assert main(["fuzz", "--examples", "3", "--json", "--level", "state", "--trace-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["level"] == "state" and out["coverage"]
    assert main(["fuzz", "--examples", "3", "--json", "--level", "black-box", "--trace-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["level"] == "black-box" and out["coverage"] is None and out["never_exercised"] is None
    assert main(["fuzz", "--examples", "30", "--json", "--mutant", "swap_in_not_read", "--level", "black-box",
                 "--trace-dir", str(tmp_path)]) == 1
    out = json.loads(capsys.readouterr().out)
    trace = out["failures"][0]["trace"]
    assert json.loads(open(trace).readline())["level"] == "black-box"  # the trace header
    assert main(["replay", trace, "--json"]) == 1  # replayed at the level it was recorded at
    out = json.loads(capsys.readouterr().out)
    assert out["level"] == "black-box" and out["same_as_recorded"]
    assert main(["mutants", "--only", "rmap_insert_forgotten", "--seconds-per-mutant", "20", "-j", "1",
                 "--level", "state", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["level"] == "state" and out["killed"] == 1


def test_a_bad_level_is_bad_input(capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        main(["fuzz", "--level", "partial", "--examples", "1"])
    assert e.value.code == 2 and "invalid choice: 'partial'" in capsys.readouterr().err
    import dmmcheck.conformance.cli as cli

    monkeypatch.setattr(cli, "load_adapter", lambda target: StateOnly)
    assert main(["fuzz", "--examples", "1", "--level", "full"]) == 2
    assert "--level full: the adapter provides level state" in capsys.readouterr().err
    assert main(["fuzz", "--examples", "2", "--json"]) == 0  # at its own level, it passes
    assert json.loads(capsys.readouterr().out)["level"] == "state"


def test_the_pytest_plugin_judges_at_dmm_level_and_its_failure_names_the_level(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "test_nothing.py").write_text("def test_theirs():\n    pass\n")

    def pytest_in(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                               "--rootdir", str(tmp_path), "--dmm-impl", "dmmcheck.conformance.vmm_adapter:BundledVmm",
                               "--dmm-traces", str(tmp_path / "traces"), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600, env={**os.environ, **env})

    r = pytest_in("--dmm-examples", "3", "--dmm-level", "state")
    assert r.returncode == 0 and "3 passed" in r.stdout and "dmm conformance: level state" in r.stdout, r.stdout
    r = pytest_in("--dmm-examples", "40", "--dmm-level", "black-box", DMM_MUTANT="swap_in_not_read")
    assert r.returncode == 1 and "observation failure at level black-box" in r.stdout, r.stdout
