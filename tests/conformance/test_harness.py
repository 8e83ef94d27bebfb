"""The conformance harness: each oracle catches what it is for, the harness survives a bad
implementation, traces replay to the same verdict, runs are reproducible."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dmmcheck.conformance.adapter import Config, Observation, Operation
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.trace import operations_of, read, replay, write
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.main import main
from dmmcheck.spec import load
from tests.conformance.modes import moded
from tests.scenarios import SETUP as SCENARIO
from tests.scenarios import X, op

SPEC = load(None)
SETUP = moded(SCENARIO)
WALK = next(i for i, o in enumerate(SETUP) if o.action == "guest_walk")  # the write through a hidden fault


def run(ops: list[Operation], mutant: str | None = None, adapter=None, timeout: float = 10.0) -> Runner:
    r = Runner(adapter or BundledVmm(), SPEC, Config(mutant=mutant), timeout)
    r.reset()
    for o in ops:
        r.step(o)
    return r


def verdict(ops: list[Operation], **kw) -> Failure:
    with pytest.raises(Failure) as e:
        run(ops, **kw)
    return e.value


def test_the_bundled_vmm_conforms_on_a_hidden_fault():
    r = run(SETUP)
    walk = [s.action for s in r.records[WALK].spec_steps]
    # the spec steps a write through a hidden fault is made of, in order
    assert walk[:2] == ["tlb_flush", "guest_walk"] and "demand_page" in walk and walk[-2:] == ["shadow_fill", "shadow_hit"]
    assert r.records[WALK + 1].observation.access.value == 5


def test_refinement_judges_the_implementations_choice_against_the_guard():
    ops = SETUP[:1] + [op("pool_grow", v=0)] + SETUP[1:]
    run(ops)
    f = verdict(ops, mutant="alloc_vmm_pool_first")  # from the VMM pool while the VM has an idle page
    assert f.kind == "refinement" and "demand_page" in f.message and "is not enabled" in f.message
    assert "idle(v, m) or vmm_pool(m)" in f.detail  # the guard that failed (allocatable, inlined)


def test_refinement_shows_the_state_diff():
    f = verdict(SETUP + [op("swap_out", v=0, g=12)], mutant="no_zap_on_remap")
    assert f.kind in ("invariant", "refinement")
    assert "no_stale_spte" in f.message or "spte(vm0, root0, role0, gva0)" in f.detail


def test_invariant_oracle_names_the_invariant():
    f = verdict(SETUP, mutant="rmap_insert_forgotten")
    assert f.kind == "invariant" and "rmap_consistent" in f.message


def test_observation_oracle_compares_with_the_ideal_machine():
    ops = SETUP[:3] + [op("gpte_write", v=0, r=0, x=X[0], level=1, bits=0x27 | (1 << 51), g=12),
                       op("guest_walk", v=0, c=0, x=X[0], a="read", u=False)]
    run(ops)  # a reserved bit: the bundled VMM faults with RSVD, as the ideal machine does
    f = verdict(ops, mutant="reserved_bits_ignored")
    assert f.kind == "observation" and "ideal machine" in f.message


def test_data_is_checked_after_swapping():
    ops = SETUP + [op("swap_out", v=0, g=12), op("shadow_hit", v=0, c=0, x=X[0], a="read", u=False)]
    assert run(ops).records[-1].observation.access.value == 5  # swapped in intact
    f = verdict(ops, mutant="swap_in_not_read")
    assert f.kind == "observation" and "0x5" in f.message


def test_the_ideal_machine_allows_a_stale_translation_until_invlpg():
    from dmmcheck.conformance.ideal import IdealVm

    vm = IdealVm(16).cpus[0]
    vm.load_cr3(0)
    for addr, e in ((0x0, 0x1027), (0x1000, 0x2027), (0x2000 + 8 * 2, 0x3027), (0x3000, 0x9027)):
        vm.mem.write64(addr, e)
    o, t, used = vm.walk(X[0], "read", False)
    vm.commit(X[0], "read", o, t, used, 0)
    vm.mem.write64(0x3000, 0xA027)  # the guest remaps without invlpg
    cands = vm.candidates(X[0], "read", False)
    assert [c[0].paddr for c in cands] == [0xA000, 0x9000]  # fresh first, then the stale one
    vm.invlpg(X[0])
    assert [c[0].paddr for c in vm.candidates(X[0], "read", False)] == [0xA000]


class Broken(BundledVmm):
    """An adapter whose implementation misbehaves on demand."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def step(self, o: Operation):
        if o.action == "cr3_load":
            if self.how == "raise":
                raise ZeroDivisionError("boom")
            if self.how == "hang":
                time.sleep(30)
            if self.how == "shape":
                return {"events": []}
            if self.how == "unknown-event":
                return Observation(events=[("teleport", {"v": 0})])
        return super().step(o)


@pytest.mark.parametrize("how, kind, words", [("raise", "crash", "ZeroDivisionError"), ("hang", "timeout", "within"),
                                              ("shape", "crash", "not an Observation"),
                                              ("unknown-event", "refinement", "not an action")])
def test_a_misbehaving_implementation_is_reported_with_its_step(how, kind, words):
    f = verdict(SETUP[:2], adapter=Broken(how), timeout=0.5)
    assert f.kind == kind and words in f.message
    if kind in ("crash", "timeout") and how != "shape":
        assert "step 1 (cr3_load)" in f.message


def test_fuzzing_the_bundled_vmm_finds_nothing_and_covers_the_spec():
    r = fuzz(BundledVmm, SPEC, Config(), examples=100, seed_=0)  # (mode loads and huge-leaf aiming take a share)
    assert r.failure is None, r.failure and f"{r.failure}\n{r.failure.detail}"
    assert r.steps > 500
    for action in ("guest_walk", "shadow_fill", "demand_page", "swap_out", "share_merge", "balloon_inflate",
                   "protect_gpt", "zap_spte", "tlb_flush", "vm_destroy"):
        assert r.coverage[action] > 0, action


def test_a_campaign_is_reproducible():
    a = fuzz(BundledVmm, SPEC, Config(), examples=8, seed_=3)
    b = fuzz(BundledVmm, SPEC, Config(), examples=8, seed_=3)
    assert (a.steps, dict(a.coverage)) == (b.steps, dict(b.coverage))


def test_a_failure_is_shrunk_saved_and_replays_to_the_same_verdict(tmp_path):
    r = fuzz(BundledVmm, SPEC, Config(mutant="rmap_insert_forgotten"), examples=50, seed_=0)
    assert r.failure is not None and r.failure.kind == "invariant"
    assert len(r.shrunk) <= 8
    assert r.config is not None and r.config.mutant == "rmap_insert_forgotten"  # the failing case's own scope
    path = write(tmp_path / "t.jsonl", spec=SPEC, seed=0, adapter=BundledVmm.name, config=r.config,
                 records=r.shrunk, failure=r.failure, it=r.it)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["format"] == "dmm-trace/1" and header["failure"]["kind"] == "invariant"
    _, _, again = replay(path, SPEC)
    assert again is not None and (again.kind, again.message) == (r.failure.kind, r.failure.message)
    assert main(["replay", str(path), "--json"]) == 1


def test_a_bmc_trace_maps_onto_the_implementation(tmp_path):
    path = tmp_path / "bmc.jsonl"
    lines = [{"format": "dmm-trace/1", "source": "dmm prove --bmc", "spec": "dmm.dmm"},
             {"step": 0, "action": "vm_create", "args": {"v": "vm1"}},
             {"step": 1, "action": "demand_page", "args": {"v": "vm1", "g": "gfn5", "m": "mfn0"}},
             {"step": 2, "action": "zap_spte", "args": {"v": "vm1", "r": "root0", "x": "gva0"}},
             {"step": 3, "action": "swap_out", "args": {"v": "vm1", "g": "gfn5", "m": "mfn0", "s": "slot0"}}]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    ops = operations_of(read(path), Config())
    assert [(o.action, o.args) for o in ops] == [("vm_create", {"v": 1}), ("demand_page", {"v": 1, "g": 5}),
                                                 ("swap_out", {"v": 1, "g": 5})]
    _, runner, failure = replay(path, SPEC)
    assert failure is None and [s.action for s in runner.records[-1].spec_steps] == ["swap_out"]


def test_dmm_fuzz_json_and_exit_statuses(capsys, tmp_path):
    assert main(["fuzz", "--examples", "3", "--json", "--trace-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"impl", "seed", "examples", "steps", "seconds", "steps_per_second", "coverage", "failures"} <= set(out)
    assert out["failures"] == [] and out["examples"] == 3
    assert main(["fuzz", "--examples", "30", "--json", "--mutant", "nx_ignored", "--trace-dir", str(tmp_path)]) == 1
    out = json.loads(capsys.readouterr().out)
    (f,) = out["failures"]
    assert f["kind"] in ("invariant", "refinement") and Path(f["trace"]).exists() and f["steps"] <= 8
    assert main(["fuzz", "--impl", "no.such.module:Adapter"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 2


def test_bad_input_is_a_message_and_exit_two(capsys, tmp_path):
    assert main(["fuzz", "--mutant", "no_such_bug", "--examples", "1"]) == 2
    assert "not a seeded bug of this adapter" in capsys.readouterr().err
    path = tmp_path / "bmc.jsonl"
    path.write_text('{"format": "dmm-trace/1", "source": "dmm prove --bmc"}\n{"step": 0, "action": "vm_create", "args": {"v": "vm7"}}\n')
    assert main(["replay", str(path)]) == 2
    assert "names vm7" in capsys.readouterr().err
    path.write_text("not json\n")
    assert main(["replay", str(path)]) == 2
    assert ":1:" in capsys.readouterr().err


class Liar(BundledVmm):
    """Reports an spte that maps a VMM-private frame: the abstraction must not drop it silently."""

    def abstract_state(self):
        st = super().abstract_state()
        if st["spte"]:
            key = next(iter(st["spte"]))
            st["spte"][key] = (10_000,) + st["spte"][key][1:]
        return st


def test_an_spte_outside_the_dmm_pages_is_a_refinement_failure():
    f = verdict(SETUP, adapter=Liar())
    assert f.kind == "refinement" and "not one of the 24 DMM machine pages" in f.message


@pytest.mark.parametrize("trace", sorted(Path(__file__).with_name("traces").glob("*.jsonl")), ids=lambda p: p.stem)
def test_saved_traces_of_fixed_findings_replay_clean(trace):
    # Each trace once failed (a VMM bug or a harness false positive, since fixed); each must pass.
    header = json.loads(trace.read_text().splitlines()[0])
    assert header.get("failure"), "a regression trace records the failure it once had"
    _, runner, failure = replay(trace, SPEC)
    assert failure is None, f"{failure}\n{failure.detail}"
    assert len(runner.records) == len(read(trace).ops)


def test_replay_warns_when_the_spec_changed_since_the_trace(tmp_path, capsys):
    src = sorted(Path(__file__).with_name("traces").glob("*.jsonl"))[0]
    lines = src.read_text().splitlines()
    header = json.loads(lines[0])
    header["spec_hash"] = "0" * 64
    path = tmp_path / "old.jsonl"
    path.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    assert main(["replay", str(path), "--step-timeout", "5"]) == 0
    assert "another version of the spec" in capsys.readouterr().err


class CrashOnSwap(BundledVmm):
    """Crashes on the first swap_out of a test case, as a VMM bug found by fuzzing would."""

    def step(self, o: Operation):
        if o.action == "swap_out":
            raise RuntimeError("VMM bug: swap_out of a resident page")
        return super().step(o)


def test_a_crash_trace_holds_the_crashing_operation_and_replays_to_the_same_crash(tmp_path):
    r = fuzz(CrashOnSwap, SPEC, Config(), examples=100, seed_=0)
    assert r.failure is not None and r.failure.kind == "crash", r.failure
    assert r.shrunk and r.shrunk[-1].op.action == "swap_out"  # the operation that crashed is in the trace
    path = write(tmp_path / "crash.jsonl", spec=SPEC, seed=0, adapter="crash", config=r.config, records=r.shrunk,
                 failure=r.failure, it=r.it)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert json.loads(lines[1 + header["failure"]["step"]])["action"] == "swap_out"  # the header points at it
    _, runner, again = replay(path, SPEC, CrashOnSwap)
    assert again is not None and (again.kind, again.message) == (r.failure.kind, r.failure.message)
    assert len(runner.records) == len(r.shrunk)


def test_a_failure_is_kept_when_the_trace_folder_cannot_be_written(tmp_path, capsys):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the trace folder should be")
    code = main(["fuzz", "--mutant", "swap_in_not_read", "--examples", "100", "--seed", "1",
                 "--trace-dir", str(blocked), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    failure = json.loads(out)["failures"][0]
    assert failure["kind"] == "observation" and failure["trace"] and Path(failure["trace"]).exists()
    assert "could not write the trace to" in err and failure["trace"] in err
    Path(failure["trace"]).unlink()


class ExitsOnCr3(BundledVmm):
    def step(self, o: Operation):
        if o.action == "cr3_load":
            raise SystemExit(0)
        return super().step(o)


def test_an_implementation_that_exits_is_a_crash_not_a_pass():
    f = verdict(SETUP[:2], adapter=ExitsOnCr3())
    assert f.kind == "crash" and "sys.exit(0)" in f.message


class InterruptedWhileShrinking(BundledVmm):
    """Ctrl-C arrives at the first reset after the harness has judged a step a failure."""

    seen = False

    def reset(self, config):
        if InterruptedWhileShrinking.seen:
            raise KeyboardInterrupt
        super().reset(config)


def test_ctrl_c_while_shrinking_keeps_the_failure_found(tmp_path, monkeypatch):
    InterruptedWhileShrinking.seen = False
    judged = Runner.step

    def step(self, op):
        try:
            return judged(self, op)
        except Failure:
            InterruptedWhileShrinking.seen = True
            raise

    monkeypatch.setattr(Runner, "step", step)
    r = fuzz(InterruptedWhileShrinking, SPEC, Config(mutant="swap_in_not_read"), examples=200, seed_=1)
    assert r.interrupted
    assert r.failure is not None and r.failure.kind == "observation"
    assert r.shrunk  # the failing test case as found: it replays to the same verdict
    path = write(tmp_path / "t.jsonl", spec=SPEC, seed=1, adapter="x", config=r.config, records=r.shrunk,
                 failure=r.failure, it=r.it)
    _, _, again = replay(path, SPEC, BundledVmm)
    assert again is not None and (again.kind, again.message) == (r.failure.kind, r.failure.message)


def test_a_tiny_step_timeout_gives_verdicts_never_a_stray_alarm():
    for _ in range(20):
        r = Runner(BundledVmm(), SPEC, Config(), 1e-5)
        try:
            r.reset()
            for o in SETUP:
                r.step(o)
        except Failure as f:
            assert f.kind in ("timeout", "crash"), f


def _hangs():
    time.sleep(30)


def _exits():
    raise SystemExit(0)


def _junk_caps():
    class A(BundledVmm):
        def capabilities(self):
            return None
    return A()


@pytest.mark.parametrize("factory, words", [(_hangs, "did not return"), (_exits, "sys.exit"),
                                            (_junk_caps, "not Capabilities")])
def test_a_bad_adapter_factory_is_bad_input_not_a_hang(factory, words, monkeypatch, capsys):
    import dmmcheck.conformance.cli as cli

    monkeypatch.setattr(cli, "load_adapter", lambda target: factory)
    assert main(["fuzz", "--examples", "1", "--step-timeout", "0.5"]) == 2
    assert words in capsys.readouterr().err


class HangsOnSecondCr3(BundledVmm):
    """The second cr3_load of a test case sleeps past the step timeout."""

    def reset(self, config):
        self.cr3s = 0
        super().reset(config)

    def step(self, op):
        if op.action == "cr3_load":
            self.cr3s += 1
            if self.cr3s == 2:
                time.sleep(30)
        return super().step(op)


def test_a_campaign_installs_its_alarm_once_still_times_out_and_restores_the_handler(monkeypatch):
    import signal

    import dmmcheck.conformance.runner as runner_mod

    mine = lambda *_: None  # noqa: E731 - the handler a program had before the campaign
    previous = signal.signal(signal.SIGALRM, mine)
    installs = []
    real = runner_mod._signal.signal

    def counting(sig, handler):
        installs.append(handler)
        return real(sig, handler)

    def installs_for(examples):
        installs.clear()
        r = fuzz(BundledVmm, SPEC, Config(), examples=examples, seed_=0)
        assert r.failure is None and r.steps > 10 * examples
        assert installs[-1] is mine and signal.getsignal(signal.SIGALRM) is mine  # put back at the end
        return installs.count(runner_mod._on_alarm)

    monkeypatch.setattr(runner_mod._signal, "signal", counting)
    try:
        # the same few installs (the set-up's guarded calls, then one for the campaign) however
        # many steps are guarded: not two signal() calls a step
        assert installs_for(2) == installs_for(6)
        r = fuzz(HangsOnSecondCr3, SPEC, Config(), examples=30, seed_=0, step_timeout=0.5, shrink_seconds=5)
        assert r.failure is not None and r.failure.kind == "timeout", r.failure
        assert "did not return within 0.5 s" in r.failure.message
        assert signal.getsignal(signal.SIGALRM) is mine
    finally:
        signal.signal(signal.SIGALRM, previous)
