"""Partial read-back (runner.py, full_readback off): after a step only the costly parts of the
abstract state its events say may have changed are read; a full read every READBACK_GUARD steps
and at the end of a test case still catches an implementation that changes state it does not
report."""

from __future__ import annotations

import pytest

from dmmcheck.conformance.adapter import Config, Operation
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.runner import READBACK_GUARD, Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.impl import x86
from dmmcheck.spec import load
from tests.conformance.modes import moded
from tests.scenarios import SETUP as SCENARIO
from tests.scenarios import X, op

SPEC = load(None)
SETUP = moded(SCENARIO)
HIT = op("shadow_hit", v=0, c=0, x=X[0], a="read", u=False)


class SilentZap(BundledVmm):
    """Clears a leaf spte in machine memory on a read the hardware served, and reports nothing:
    the events ("hit") say no shadow state changed."""

    armed = True

    def reset(self, config: Config) -> None:
        super().reset(config)
        self.armed = True  # once per test case: the same steps do the same

    def step(self, o: Operation):
        obs = super().step(o)
        if self.armed and o.args.get("a") == "read" and [n for n, _ in obs.events] == ["hit"]:
            at = self.abstract_state()["spte_at"]
            if at:
                (table, index), _ = sorted(at.items())[0]
                self.vmm.cpu.write((table << x86.PAGE_SHIFT) + 8 * index, bytes(8))  # type: ignore[union-attr]
                self.armed = False
        return obs


class SilentStore(BundledVmm):
    """Writes a data page's first bytes on a read the hardware served, and reports nothing."""

    def step(self, o: Operation):
        obs = super().step(o)
        if o.args.get("a") == "read" and [n for n, _ in obs.events] == ["hit"]:
            mfn = self.vmm.vms[0].p2m[12]  # type: ignore[union-attr]  (SETUP's data page)
            self.vmm.cpu.write(mfn << x86.PAGE_SHIFT, b"\xff" * 8)  # type: ignore[union-attr]
        return obs


def runner(adapter, full_readback: bool) -> Runner:
    r = Runner(adapter, SPEC, Config(), full_readback=full_readback)
    r.reset()
    return r


def test_a_read_hit_reads_neither_the_shadow_nor_the_guest():
    r = runner(BundledVmm(), full_readback=False)
    for o in SETUP:
        r.step(o)
    assert r.oracle.parts_for(HIT, r.records[-1].observation) == frozenset()
    before = dict(r.reads)
    r.step(HIT)
    assert r.reads["partial"] == before.get("partial", 0) + 1


def test_the_events_name_the_parts_to_read():
    r = runner(BundledVmm(), full_readback=False)
    for o in SETUP[:4]:
        r.step(o)
    walk = r.step(SETUP[4])  # a write through a hidden fault: a guest walk (A/D bits) and a fill
    assert walk.op.action == "guest_walk"
    assert r.oracle.parts_for(walk.op, walk.observation) == {"shadow", "guest"}
    assert r.oracle.parts_for(op("set_mode", v=0, c=0, o="nxe"),
                              type(walk.observation)()) == {"guest"}  # NXE changes what walks give


def test_full_readback_catches_the_silent_change_at_its_step():
    r = runner(SilentZap(), full_readback=True)
    for o in SETUP[:-1]:
        r.step(o)
    with pytest.raises(Failure) as e:
        r.step(HIT)
    # (the state its events do not explain; its TLB still holding the dropped translation with no
    # flush owed breaks tlb_coherent, judged on the ghost the events made)
    assert e.value.kind in ("refinement", "invariant") and e.value.facts["step"] == len(SETUP) - 1


def test_the_guard_catches_the_silent_change_within_its_steps():
    r = runner(SilentZap(), full_readback=False)
    for o in SETUP[:-1]:
        r.step(o)
    with pytest.raises(Failure) as e:
        for _ in range(READBACK_GUARD):
            r.step(HIT)
    assert e.value.kind in ("refinement", "invariant")
    assert len(SETUP) - 1 <= e.value.facts["step"] < len(SETUP) - 1 + READBACK_GUARD


def test_the_end_of_a_test_case_catches_the_silent_change():
    r = runner(SilentZap(), full_readback=False)
    for o in SETUP:  # the last step is the hit: the change happens there, seen by no partial read
        r.step(o)
    with pytest.raises(Failure) as e:
        r.verify()
    assert e.value.kind == "refinement" and "did not report" in e.value.message
    assert e.value.facts["step"] == len(SETUP) - 1


def test_a_silent_store_is_caught_at_the_next_compare_of_memory():
    # (a load never changes memory: memory is compared after the operation that follows the hit;
    # with whole reads every page then, with partial reads only the pages the ideal machine wrote
    # until the next whole read, at most READBACK_GUARD steps on)
    after = op("invlpg", v=0, c=0, x=X[1])
    r = runner(SilentStore(), full_readback=True)
    with pytest.raises(Failure) as e:
        for o in SETUP + [after]:
            r.step(o)
    assert e.value.kind == "observation" and e.value.facts["step"] == len(SETUP)
    r = runner(SilentStore(), full_readback=False)
    with pytest.raises(Failure) as e:
        for o in SETUP + [after] * READBACK_GUARD:
            r.step(o)
    assert e.value.kind == "observation" and len(SETUP) <= e.value.facts["step"] < len(SETUP) + READBACK_GUARD


def test_the_end_of_a_test_case_catches_a_silent_store():
    r = runner(SilentStore(), full_readback=False)
    for o in SETUP:  # the hit is the last step: no compare of memory after it
        r.step(o)
    with pytest.raises(Failure) as e:
        r.verify()
    assert e.value.kind == "observation" and e.value.facts["step"] == len(SETUP) - 1


class Counting(BundledVmm):
    """Counts the guest pages read back."""

    pages = 0

    def read_guest(self, v: int, gpa: int, n: int) -> bytes:
        self.pages += 1
        return super().read_guest(v, gpa, n)


def test_partial_reads_compare_only_the_pages_the_ideal_machine_wrote():
    counts = {}
    for full in (True, False):
        a = Counting()
        r = runner(a, full_readback=full)
        for o in SETUP:
            r.step(o)
        a.pages = 0
        r._since_full = 0  # (the guard's whole read is not due)
        r.step(op("invlpg", v=0, c=0, x=X[1]))  # writes no guest memory
        counts[full] = a.pages
    assert counts[True] == Config().gfns and counts[False] == 0
    # a store marks its page: the next partial compare reads that page
    a = Counting()
    r = runner(a, full_readback=False)
    for o in SETUP:
        r.step(o)
    r._since_full = 0
    vm = r.oracle.ideal.vms[0]
    vm.store(12 << x86.PAGE_SHIFT, vm.mem.read(12 << x86.PAGE_SHIFT, 8))  # (the same bytes again)
    a.pages = 0
    r.step(op("invlpg", v=0, c=0, x=X[1]))
    assert a.pages == 1


def test_a_campaign_with_partial_reads_catches_the_silent_change():
    r = fuzz(SilentZap, SPEC, Config(), examples=100, seed_=0, shrink_seconds=20)
    # (the zap leaves the VMM's rmap naming a leaf that is gone: a teardown after it, before the next
    # full read, may crash the VMM instead; either way the silent change does not pass)
    assert r.failure is not None and r.failure.kind in ("refinement", "invariant", "crash")
    assert r.shrunk


def test_verify_after_full_reads_reads_nothing_more():
    r = runner(BundledVmm(), full_readback=True)
    for o in SETUP:
        r.step(o)
    reads = dict(r.reads)
    r.verify()
    assert dict(r.reads) == reads


def test_dmm_fuzz_full_readback_reads_everything_after_every_step(capsys):
    import json

    from dmmcheck.main import main

    reads = {}
    for flag in ([], ["--full-readback"]):
        assert main(["fuzz", "--examples", "4", "--json", "--fixed-scope", *flag]) == 0
        reads[bool(flag)] = json.loads(capsys.readouterr().out)["readback"]
    assert reads[False].get("partial", 0) > 0 and reads[False]["full"] > 0
    assert "partial" not in reads[True] and reads[True]["full"] > reads[False]["full"]


def test_the_ad_bits_the_vmms_walk_sets_for_another_gva_before_zapping_it_are_explained():
    # A store through a 2 MiB guest page framed at the root's own gfn: the VMM's walk sets D in the
    # huge entry (gva9 maps through it too), then zaps gva9's spte, then runs out of memory. The
    # guest's edit of gva9 (its D bit) goes after the zap, not right after the walk.
    gvas = (6516736, 6860800, 7757824, 7774208, 8331264, 419532800, 420696064, 421085184, 421416960,
            0xFFFF800000000000, 0xFFFF800000001000, 0xFFFF800000002000, 0xFFFF800000003000)
    config = Config(vms=1, gfns=12, mfns=6, slots=1, roots=(0,), gvas=gvas, quota=5, vcpus=1)
    ops = moded([op("vm_create", v=0), op("guest_unmap", v=0, r=0, x=8331264), op("cr3_load", v=0, c=0, r=0),
                 op("gpte_write", v=0, r=0, x=gvas[10], level=2, g=0, bits=0xA7),
                 op("guest_walk", v=0, c=0, x=gvas[9], a="fetch", u=True),
                 op("guest_fault", v=0, c=0, x=6860800, a="write", u=True, value=0x8027, size=16, offset=3976),
                 op("guest_walk", v=0, c=0, x=gvas[10], a="write", u=True, value=0x80000000800000C5, size=2,
                    offset=0)])
    r = Runner(BundledVmm(), SPEC, config)
    r.reset()
    for o in ops:
        r.step(o)
    assert [n for n, _ in r.records[-1].observation.events][:2] == ["guest_walk", "zap_spte"]
    assert [s.action for s in r.records[-1].spec_steps][-1] == "guest_map"  # the edit, last


class InPlace(BundledVmm):
    """Returns the same p2m dict at every read, changed in place: equal to the last read whatever
    the VMM did, so it proves nothing."""

    kept: dict | None = None

    def abstract_state_parts(self, parts):
        st = super().abstract_state_parts(parts)
        if self.kept is None:
            self.kept = {}
        self.kept.clear()
        self.kept.update(st["p2m"])
        st["p2m"] = self.kept
        return st


def test_a_key_changed_in_place_is_read_again():
    r = runner(InPlace(), full_readback=True)
    for o in SETUP[:4]:
        r.step(o)
    r.step(SETUP[4])  # demand paging: the p2m gains gfn 12, in the same dict object: read again
    assert r.oracle.u.get(r.oracle.state, "p2m", 0, 12) is not None
    r.step(SETUP[5])


def test_a_read_of_unchanged_keys_builds_the_state_a_full_read_builds():
    from dmmcheck.conformance.abstraction import GROUPS, to_spec_state

    r = runner(BundledVmm(), full_readback=True)
    for o in SETUP:
        r.step(o)
    o = r.oracle
    st = r.adapter.abstract_state()
    full = to_spec_state(o.it, o.au, st, st["vms"])
    every = frozenset(k for keys, _ in GROUPS.values() for k in keys)
    kept = to_spec_state(o.it, o.au, st, st["vms"], previous=full, same=every)
    assert kept == full
    for _, names in GROUPS.values():
        for name in names:
            k = o.u.layout[name].index
            assert kept[k] is full[k]


def test_a_vm_destroyed_after_its_balloon_took_its_pages_needs_no_edit_of_its_walks():
    # The VMM gives the VM's pages back (balloon events), then destroys it: the guest's tables are
    # gone with the pages, and vm_destroy erases every walk, so no guest edit is inferred in
    # between (it used to explain each walk's loss, gva by gva, then erase it).
    r = runner(BundledVmm(), full_readback=True)
    for o in SETUP:
        r.step(o)
    rec = r.step(op("vm_destroy", v=0))
    names = [n for n, _ in rec.observation.events]
    assert names[-1] == "vm_destroy" and "balloon_inflate" in names
    assert [s.action for s in rec.spec_steps if s.inferred] == []
    assert not r.oracle.u.get(r.oracle.state, "live", 0)
