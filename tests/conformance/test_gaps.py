"""Gap filling (conformance/gaps.py): gaps found in a campaign's coverage, each driven with the
prover's shortest witness run and judged — filled on the bundled VMM, failed on a seeded bug,
impossible for an implementation with the reason (capabilities; the bundled VMM's TLB never serving
a stale entry), and the command line's --fill-gaps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmmcheck.conformance import gaps
from dmmcheck.conformance.adapter import Capabilities, Config
from dmmcheck.conformance.gaps import Filler, Gap, find
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.main import main
from dmmcheck.spec import load

SPEC = load()
LOCK = Path(__file__).parents[1] / "model" / "witness" / "lock.dmm"


def test_gaps_are_actions_never_performed_and_guard_outcomes_never_drawn():
    coverage = {a: 1 for a in SPEC.actions if a not in ("tlb_hit", "share_rehome")}
    guards = {"swap_out": {"true": 3, "false": 0}, "tlb_hit": {"true": 0, "false": 2}, "cr3_load": {"true": 1, "false": 4}}
    found = [(g.action, g.outcome) for g in find(SPEC, coverage, guards)]
    # tlb_hit's guard outcome is part of its action gap; swap_out never drawn illegal is a gap of its own
    assert found == [("tlb_hit", None), ("share_rehome", None), ("swap_out", "false")]


def test_gap_filled_on_the_bundled_vmm():
    (g,) = Filler(SPEC, BundledVmm).fill([Gap("swap_out")])
    assert g.verdict == "filled", g.reason
    assert [s["action"] for s in g.witness] == ["vm_create", "demand_page", "swap_out"]  # the shortest run
    assert [o.action for o in g.ops] == ["vm_create", "demand_page", "swap_out"]
    # the spec's gfn is mapped to a gfn that is no guest table (roots and gfns are apart in the spec)
    assert g.ops[1].args["g"] not in Config().roots


def test_gap_failed_on_a_seeded_bug():
    (g,) = Filler(SPEC, BundledVmm, Config(mutant="balloon_drop_without_free")).fill([Gap("balloon_inflate")])
    assert g.verdict == "failed" and g.failure is not None
    assert g.reason.startswith("invariant: descriptor_status fails")


class _NoSwap(BundledVmm):
    """The bundled VMM with swap-out left out of its capabilities."""

    def capabilities(self) -> Capabilities:
        caps = super().capabilities()
        return Capabilities(caps.operations - {"swap_out"}, caps.events, caps.guest_memory, caps.mutants, caps.scope)


def test_gap_impossible_when_the_capabilities_exclude_it():
    (g,) = Filler(SPEC, _NoSwap).fill([Gap("swap_out")])
    assert g.verdict == "impossible"
    assert g.reason.startswith("the adapter's capabilities exclude it")
    assert not g.witness and not g.ops  # nothing was searched or replayed


def test_a_campaign_exercises_tlb_hit_on_the_bundled_vmm():
    """A hit where the vCPU's TLB holds the translation is a tlb_hit (a shadow_hit filled it): no
    longer a gap. (The filler's shortest witness may name a gpte the VMM faults on, XD with NXE off:
    a campaign is the measure.)"""
    from dmmcheck.conformance.fuzz import fuzz

    r = fuzz(BundledVmm, SPEC, Config(), examples=30, seed_=1)
    assert r.failure is None and r.coverage["tlb_hit"] > 0 and r.coverage["shadow_hit"] > 0


def test_guard_outcome_the_harness_never_asks_is_impossible():
    (g,) = Filler(SPEC, BundledVmm).fill([Gap("demand_page", "false")])
    assert g.verdict == "impossible" and "only when its guard holds" in g.reason
    (g,) = Filler(SPEC, BundledVmm).fill([Gap("cr3_load", "false")])
    assert g.verdict == "impossible" and "whenever the VM lives" in g.reason and "by a resync" in g.reason


def test_fill_gaps_on_the_command_line(monkeypatch, capsys):
    # the campaign's own gaps are many; two stand for them here
    monkeypatch.setattr(gaps, "find", lambda spec, coverage, guards: [Gap("swap_out"), Gap("guest_path")])
    assert main(["fuzz", "--examples", "1", "--steps", "2", "--fill-gaps", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(g["gap"], g["verdict"]) for g in out["gaps"]] == [("swap_out", "filled"), ("guest_path", "impossible")]
    assert out["gaps"][0]["replayed"][0] == {"action": "vm_create", "args": {"v": 0}}


def test_fuzz_refuses_a_non_deterministic_init(capsys):
    assert main(["fuzz", str(LOCK), "--examples", "1"]) == 2
    err = capsys.readouterr().err
    assert "lock.dmm:8:1: the spec's init leaves holds to its requires" in err


@pytest.mark.parametrize("level", ["black-box"])
def test_fill_gaps_needs_coverage(level, capsys):
    from dmmcheck.conformance.fuzz import FuzzResult

    with pytest.raises(ValueError, match="not observable at level black-box"):
        gaps.run(SPEC, None, FuzzResult("x", 0, level=level))


def test_replay_refuses_a_non_deterministic_init(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "any.jsonl"), "--spec", str(LOCK)]) == 2
    assert "the spec's init leaves holds to its requires" in capsys.readouterr().err


def test_show_groups_guard_outcomes_impossible_by_construction():
    import io

    from rich.console import Console

    buf = io.StringIO()
    gaps.show(Console(file=buf, width=200, color_system=None),
              [Gap("swap_out", None, "filled", "performed"), Gap("cr3_load", "false", "impossible", "x"),
               Gap("vm_create", "false", "impossible", "x")])
    out = buf.getvalue()
    assert "guard false: cr3_load, vm_create" in out and out.count("impossible") == 2  # the row and the tally
    assert "gaps: 1 filled, 0 failed, 2 impossible, 0 not found" in out


def test_fill_gaps_after_a_campaign_on_many_workers(monkeypatch, capsys):
    monkeypatch.setattr(gaps, "find", lambda spec, coverage, guards: [Gap("swap_out")])
    assert main(["fuzz", "--examples", "2", "--steps", "2", "-j", "2", "--fill-gaps", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(g["gap"], g["verdict"]) for g in out["gaps"]] == [("swap_out", "filled")]


class _NeverSwaps(BundledVmm):
    """The bundled VMM declining every swap-out (a legal answer: the request may be refused)."""

    def step(self, op):
        from dmmcheck.conformance.adapter import Observation

        if op.action == "swap_out":
            return Observation(note="declined")
        return super().step(op)


def test_gap_impossible_when_the_implementation_does_not_take_the_runs_steps():
    (g,) = Filler(SPEC, _NeverSwaps).fill([Gap("swap_in")])
    assert [s["action"] for s in g.witness][-2:] == ["swap_out", "swap_in"]
    # the swap-out was declined, so the swap-in the run needs next is no legal request: not sent
    assert g.verdict == "impossible", g.reason
    assert g.reason.startswith("the run needs swap_in(v=0, g=10") and "does not allow" in g.reason
    assert [r.op.action for r in g.records] == ["vm_create", "demand_page", "swap_out"]


def test_a_gap_that_cannot_be_searched_is_reported_not_raised(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("solver crashed")

    monkeypatch.setattr(gaps, "search", broken)
    (g,) = Filler(SPEC, BundledVmm).fill([Gap("swap_out")])
    assert g.verdict == "not found" and g.reason == "could not be searched or replayed: RuntimeError: solver crashed"
