"""The shadow-paging VMM on the real MMU is transparent: every guest access gives what the ideal
machine gives (fault or not, error code, value read), guest A/D bits included; and no guest value
in a page table lets a shadow entry reach a page outside the VM's pool."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from dmmcheck.impl import x86
from dmmcheck.impl.abstract import abstract_state
from dmmcheck.impl.vmm import Vmm, min_shadow_pages
from dmmcheck.impl.x86 import Access

sys.path.insert(0, str(Path(__file__).parent))
from ideal import Ideal  # noqa: E402
from speccheck import universe, violations  # noqa: E402

NR_GFNS = 24
UP = x86.P | x86.RW | x86.US
PML4, PDPT, PD, PT0, PT1, ROOT2 = 1, 2, 3, 4, 5, 6
GVAS = [0x400000 + i * 0x1000 for i in range(8)] + [0x600000 + i * 0x1000 for i in range(4)]
PT_WINDOW = 0x500000  # gva of a mapping of PT0 itself: guest stores there are page-table writes


def setup(vmm: Vmm, ideal: Ideal):
    vm = vmm.create_vm(NR_GFNS)

    def store(gpa: int, v: int) -> None:  # the guest's own writes, before it runs
        vmm.gpa_write(vm, gpa, v.to_bytes(8, "little"))
        ideal.write64(gpa, v)

    for root in (PML4, ROOT2):  # two roots sharing the lower tables
        store(root << 12, (PDPT << 12) | UP)
    store(PDPT << 12, (PD << 12) | UP)
    store((PD << 12) + 8 * 2, (PT0 << 12) | UP)  # 0x400000
    store((PD << 12) + 8 * 3, (PT1 << 12) | UP)  # 0x600000
    store((PD << 12) + 8 * 4, (10 << 12) | UP | x86.PS if False else (PT0 << 12) | UP)
    for i in range(8):
        store((PT0 << 12) + 8 * i, ((10 + i) << 12) | UP)
    store((PT1 << 12) + 8 * 0, (PT0 << 12) | UP)  # 0x600000 maps PT0: the guest's window on it
    for i in range(1, 4):
        store((PT1 << 12) + 8 * i, ((18 + i) << 12) | UP)
    vmm.load_cr3(vm, PML4)
    ideal.cr3_gfn = PML4
    return vm, store


def random_pte(rng: random.Random) -> int:
    if rng.random() < 0.1:
        return rng.getrandbits(64)  # garbage: reserved bits, huge frame numbers, anything
    flags = sum(f for f in (x86.P, x86.RW, x86.US, x86.A, x86.D, x86.XD) if rng.random() < 0.6)
    return (rng.randrange(NR_GFNS + 4) << 12) | flags  # a few gfns beyond the VM's memory


@pytest.mark.parametrize("unsync", [False, True])
@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("DMM_VMM_SEEDS", "8"))))
def test_vmm_is_transparent(seed, unsync):
    """With unsync sps the guest invlpgs the gvas of each gpte it edits, as the architecture asks of
    it (until then the old translation may still be used)."""
    run_against_ideal(Vmm(64, 128, unsync=unsync), seed, unsync)


@pytest.mark.parametrize("unsync", [False, True])
def test_a_vmm_at_its_shadow_page_limit_reclaims_and_stays_transparent(unsync):
    """Five shadow pages (one vCPU's loaded root and one fault's path): nearly every fault reclaims
    the oldest sps, and the guest still sees what the ideal machine does, the invariants hold."""
    for seed in range(3):
        vmm = Vmm(64, 128, unsync=unsync, shadow_pages=min_shadow_pages(1))
        freed = []
        real = vmm.mmu.reclaim
        vmm.mmu.reclaim = lambda sp: (freed.append(sp.mfn), real(sp))  # type: ignore[method-assign]
        run_against_ideal(vmm, seed, unsync)
        assert len(freed) > 20, f"seed {seed}: the limit was never reached ({len(freed)} reclaims)"


def test_a_shadow_page_limit_below_a_loaded_root_and_a_path_is_refused():
    with pytest.raises(ValueError, match="2 vCPUs need at least 6 shadow pages"):
        Vmm(64, 128, vcpus=2, shadow_pages=5)


def test_a_vmm_that_leaks_reclaimed_frames_runs_dry():
    """What the limit is for in a campaign: a VMM that never gives a freed sp's frame back (the
    catalogue's shadow_frame_leaked) is out of private frames within a few dozen steps, instead
    of outlasting the test case."""
    vmm = Vmm(64, 128, shadow_pages=min_shadow_pages(1))
    vmm.private.release = lambda mfn: None  # type: ignore[method-assign]
    with pytest.raises(MemoryError, match="out of private frames"):
        run_against_ideal(vmm, 0, False)


def run_against_ideal(vmm: Vmm, seed: int, unsync: bool) -> None:
    """250 random guest steps on vmm and on the ideal machine: accesses, PTE edits through the
    guest's window on PT0, CR3 loads, control-register changes, invlpg."""
    rng = random.Random(seed)
    ideal = Ideal(NR_GFNS)
    vm, store = setup(vmm, ideal)
    for step in range(250):
        op = rng.random()
        if op < 0.6:
            gva = rng.choice(GVAS) + 8 * rng.randrange(4)
            acc = rng.choice([Access.READ, Access.WRITE])
            user = rng.random() < 0.5
            value = rng.getrandbits(64)
            got = vmm.access(vm, gva, acc, user=user, value=value)
            want = ideal.access(gva, acc, user, value)
            assert (got.fault, got.error_code if got.fault else 0, got.value) == want, \
                f"seed {seed} step {step}: {acc.value} {gva:#x} user={user}"
            if unsync and acc is Access.WRITE and gva >> 12 == 0x600:  # a store into PT0 through its window
                for window in (0x400000, 0x800000):
                    vmm.invlpg(vm, window + (gva & 0xFFF) // 8 * 0x1000)
        elif op < 0.8:
            # The guest edits a PTE with an ordinary store through its window on PT0.
            idx = rng.randrange(8)
            value = random_pte(rng)
            got = vmm.access(vm, 0x600000 + 8 * idx, Access.WRITE, value=value)
            want = ideal.access(0x600000 + 8 * idx, Access.WRITE, False, value)
            assert (got.fault, got.error_code if got.fault else 0) == want[:2]
            if unsync:
                for window in (0x400000, 0x800000):  # PT0 serves both 2 MiB regions
                    vmm.invlpg(vm, window + idx * 0x1000)
        elif op < 0.87:
            root = rng.choice([PML4, ROOT2])
            vmm.load_cr3(vm, root)
            ideal.cr3_gfn = root
        elif op < 0.95:
            which = rng.choice(["wp", "smep", "smap", "nxe"])
            val = rng.random() < 0.5
            vmm.set_controls(vm, **{which: val})
            setattr(ideal, which, val)
        else:
            vmm.invlpg(vm, rng.choice(GVAS))
        # Guest-visible memory, A/D bits of its tables included, is the ideal machine's.
        for gfn in (PT0, PT1):
            assert vmm.gpa_read(vm, gfn << 12, 64) == bytes(ideal.mem[gfn << 12:(gfn << 12) + 64]), step
        assert_isolated(vmm)


def assert_isolated(vmm: Vmm) -> None:
    """The spec's invariants — isolation among them — hold on the VMM's abstracted state."""
    u = universe(vmm, NR_GFNS, (PML4, ROOT2), tuple(GVAS))
    assert [str(v) for v in violations(vmm, u)] == []


def test_two_vms_are_isolated():
    vmm = Vmm(64, 128)
    a_ideal, b_ideal = Ideal(NR_GFNS), Ideal(NR_GFNS)
    a, _ = setup(vmm, a_ideal)
    b, _ = setup(vmm, b_ideal)
    vmm.access(a, 0x400000, Access.WRITE, value=0xAAAA)
    vmm.access(b, 0x400000, Access.WRITE, value=0xBBBB)
    assert vmm.access(a, 0x400000, Access.READ).value == 0xAAAA
    assert vmm.access(b, 0x400000, Access.READ).value == 0xBBBB
    assert_isolated(vmm)


def test_dmm_unmap_propagates_through_rmap():
    vmm, ideal = Vmm(64, 128), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.access(vm, 0x400000, Access.WRITE, value=7)
    mfn = vm.p2m[10]
    assert vmm.mmu.rmap.get(mfn)
    vmm.mapping.unmap_gfn(vm, 10)
    assert not vmm.mmu.rmap.get(mfn) and (vm.id, 0) in vmm.tlb.pending
    assert not any(m == mfn for m, *_ in abstract_state(vmm)["spte"].values())


def test_huge_guest_pages_are_split_and_transparent():
    """2 MiB and 1 GiB guest pages, shadowed as 4 KiB sptes through direct sps."""
    nr = 1024
    vmm, ideal = Vmm(160, 128), Ideal(nr)
    vm = vmm.create_vm(nr)

    def store(gpa: int, v: int) -> None:
        vmm.gpa_write(vm, gpa, v.to_bytes(8, "little"))
        ideal.write64(gpa, v)

    store(PML4 << 12, (PDPT << 12) | UP)
    store(PDPT << 12, (PD << 12) | UP)
    store((PD << 12) + 8 * 4, (512 << 12) | UP | x86.PS)  # gva 0x800000: 2 MiB at gfn 512
    store((PDPT << 12) + 8 * 1, (0 << 12) | x86.P | x86.US | x86.PS)  # gva 0x40000000: 1 GiB, read-only, at gfn 0
    vmm.load_cr3(vm, PML4)
    ideal.cr3_gfn = PML4
    rng = random.Random(7)
    gvas = [0x800000 + rng.randrange(512) * 0x1000 for _ in range(12)] + \
           [0x40000000 + rng.randrange(1100) * 0x1000 for _ in range(12)]  # some beyond the VM's memory
    for step in range(300):
        gva = rng.choice(gvas)
        acc = rng.choice([Access.READ, Access.WRITE])
        user = rng.random() < 0.5
        value = rng.getrandbits(64)
        got = vmm.access(vm, gva, acc, user=user, value=value)
        want = ideal.access(gva, acc, user, value)
        assert (got.fault, got.error_code if got.fault else 0, got.value) == want, (step, hex(gva), acc.value)
    assert any(sp.role.direct and sp.role.level == 2 for sp in vmm.mmu.sps.values())  # the 1 GiB split
    assert any(sp.role.direct and sp.role.level == 1 for sp in vmm.mmu.sps.values())
    # The guest's A/D bits on the huge leaves are the ideal machine's.
    assert vmm.read64(vm, (PD << 12) + 8 * 4) == ideal.read64((PD << 12) + 8 * 4)
    assert vmm.read64(vm, (PDPT << 12) + 8) == ideal.read64((PDPT << 12) + 8)


def test_fetch_runs_guest_code_and_honours_nx_and_smep():
    vmm, ideal = Vmm(64, 128), Ideal(NR_GFNS)
    vm, store = setup(vmm, ideal)
    vmm.gpa_write(vm, 12 << 12, b"\x90" * 16)  # gva 0x402000 -> gfn 12: a nop to execute
    assert not vmm.access(vm, 0x402000, Access.FETCH).fault
    store((PT0 << 12) + 8 * 2, (12 << 12) | UP | x86.XD)
    got = vmm.access(vm, 0x402000, Access.FETCH)
    assert got.fault and got.error_code == x86.PF_P | x86.PF_I
    store((PT0 << 12) + 8 * 2, (12 << 12) | UP)
    vmm.set_controls(vm, smep=True)
    got = vmm.access(vm, 0x402000, Access.FETCH)  # a user page, fetched by the supervisor
    assert got.fault and got.error_code == x86.PF_P | x86.PF_I
    assert not vmm.access(vm, 0x402000, Access.FETCH, user=True).fault


def test_abstract_state_reads_the_real_structures():
    vmm, ideal = Vmm(64, 128), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.access(vm, 0x400000, Access.WRITE, value=1)
    st = abstract_state(vmm, gvas=[0x400000, 0x401000, 0x600000])
    mfn = vm.p2m[10]
    # The spte for 0x400000 maps the page p2m gives gfn 10, writable (the guest entry is dirty now).
    # (keyed by the role the vCPU runs in: CR0.WP and EFER.NXE set, as at reset)
    assert st["spte"][(vm.id, PML4, "wp+nxe", 0x400000)] == (mfn, True, True, False)
    assert st["rmap"][mfn] and st["pool"][mfn] == f"active:{vm.id}"
    assert st["descriptor"][mfn] == ("mapped", 1, vm.id)
    assert st["gmap"][(vm.id, PML4, 0x400000)] == (10, True, True, False, True, True)
    assert st["gmap"][(vm.id, PML4, 0x401000)][4:] == (False, False)  # never accessed
    assert (vm.id, PT0) in st["write_protected"]
    # Corrupt the real shadow table behind the VMM's back: the abstraction must show it.
    sp_mfn, idx = next(iter(st["rmap"][mfn]))
    vmm.cpu.write64((sp_mfn << 12) + 8 * idx, 0)
    assert (vm.id, PML4, "wp+nxe", 0x400000) not in abstract_state(vmm)["spte"]


def test_dmm_remap_and_protect_propagate():
    vmm, ideal = Vmm(64, 128), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.access(vm, 0x400000, Access.WRITE, value=0x1111)  # gfn 10, now writable in the shadow
    old = vm.p2m[10]
    # remap: gfn 10 onto another page holding other bytes; the old mapping must not survive anywhere.
    new = vmm.machine.allocate(vm.id)
    vmm.cpu.write(new << 12, (0x2222).to_bytes(8, "little"))
    assert vmm.mapping.remap_gfn(vm, 10, new) == old
    assert not vmm.mmu.rmap.get(old)
    assert vmm.access(vm, 0x400000, Access.READ).value == 0x2222
    # protect: every spte mapping the page loses its write right; the next write exits to the VMM
    # (here: an emulated store, the shadow granting no write), and the guest still sees its write.
    vmm.access(vm, 0x400000, Access.WRITE, value=0x3333)
    (sp_mfn, idx), = vmm.mmu.rmap[new]
    assert vmm.cpu.read64((sp_mfn << 12) + 8 * idx) & x86.RW
    vmm.mapping.protect_gfn(vm, 10)
    assert not vmm.cpu.read64((sp_mfn << 12) + 8 * idx) & x86.RW and (vm.id, 0) in vmm.tlb.pending
    assert not vmm.access(vm, 0x400000, Access.READ).fault
    assert vmm.access(vm, 0x400000, Access.READ).value == 0x3333


def test_each_vcpu_runs_its_own_root_and_keeps_its_own_tlb():
    vmm, ideal = Vmm(64, 128, vcpus=2), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)  # vCPU 0 on PML4
    vmm.load_cr3(vm, ROOT2, vcpu=1)
    vmm.access(vm, 0x400000, Access.WRITE, value=5)
    assert vmm.access(vm, 0x400000, Access.READ, vcpu=1).value == 5  # through ROOT2's shadow
    assert {r for (_v, r, _p) in vmm.mmu.roots} == {PML4, ROOT2}
    # vCPU 1's translation stays in its CPU's TLB: cleared behind the VMM's back, it still hits
    for sp_mfn, idx in list(vmm.mmu.rmap[vm.p2m[10]]):
        vmm.cpu.write64((sp_mfn << 12) + 8 * idx, 0)
    assert vmm.access(vm, 0x400000, Access.READ, vcpu=1).hidden_faults == 0
    # an owed flush is every vCPU's (a remote flush): paid, the next access faults to the VMM
    vmm.tlb.owe(vm.id)
    assert vmm.tlb.pending == {(vm.id, 0), (vm.id, 1)}
    assert vmm.access(vm, 0x400000, Access.READ, vcpu=1).hidden_faults == 1
    assert vmm.tlb.pending == {(vm.id, 0)}


def test_a_mode_change_switches_the_vcpus_shadow_without_a_zap():
    vmm, ideal = Vmm(64, 128, vcpus=2), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.load_cr3(vm, PML4, vcpu=1)
    vmm.access(vm, 0x400000, Access.READ, vcpu=1)
    vmm.events = []
    vmm.set_controls(vm, vcpu=1, wp=False)
    assert vmm.events == [("set_mode", {"v": vm.id, "c": 1, "o": "nxe"})]
    assert vmm.tlb.pending == {(vm.id, 1)}  # only the vCPU that switched owes a flush
    vmm.access(vm, 0x400000, Access.READ, vcpu=1)
    names = {(p.name, r) for (_v, r, p) in vmm.mmu.roots}
    assert names == {("wp+nxe", PML4), ("nxe", PML4)}  # the old role's shadow stays cached
    spte = abstract_state(vmm, gvas=[0x400000])["spte"]
    assert {o for (_v, _r, o, _x) in spte} == {"wp+nxe", "nxe"}
    assert ("tlb_flush", {"v": vm.id, "c": 1}) in vmm.events


def test_an_unsync_leaf_table_is_written_without_a_trap_and_resynced_at_invlpg():
    vmm, ideal = Vmm(64, 128, unsync=True), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    assert vmm.access(vm, 0x400000, Access.READ).hidden_faults == 1  # gfn 10
    vmm.events = []
    r = vmm.access(vm, 0x600000, Access.WRITE, value=(12 << 12) | UP | x86.A)  # PT0[0] := gfn 12
    assert not r.emulated and ("unsync_gpt", {"v": vm.id, "g": PT0}) in vmm.events
    assert (vm.id, PT0) in vmm.mmu.unsync and not vmm.mmu.write_protected(vm, PT0)
    r = vmm.access(vm, 0x600000 + 8, Access.WRITE, value=(13 << 12) | UP | x86.A)  # no trap now
    assert not r.emulated and r.hidden_faults == 0
    # the spte of 0x400000 is stale: it still maps gfn 10's page until the guest's invlpg
    spte = abstract_state(vmm, gvas=[0x400000])["spte"][(vm.id, PML4, "wp+nxe", 0x400000)]
    assert spte[0] == vm.p2m[10]
    vmm.events = []
    vmm.invlpg(vm, 0x400000)
    assert [n for n, _ in vmm.events][:1] == ["zap_spte"]
    assert vmm.access(vm, 0x400000, Access.READ).value == int.from_bytes(vmm.gpa_read(vm, 12 << 12, 8), "little")


def test_a_resync_keeps_the_sptes_that_agree_and_a_cr3_load_resyncs_its_root():
    vmm, ideal = Vmm(64, 128, unsync=True), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.access(vm, 0x401000, Access.READ)  # PT0[1] -> gfn 11, A set by the walk
    gpte = int.from_bytes(vmm.gpa_read(vm, (PT0 << 12) + 8, 8), "little")
    vmm.access(vm, 0x600000 + 8, Access.WRITE, value=gpte)  # unsyncs PT0, rewrites the same gpte
    vmm.access(vm, 0x600000 + 16, Access.WRITE, value=0)  # PT0[2] cleared (no spte there)
    vmm.events = []
    vmm.load_cr3(vm, PML4)
    assert ("sync_spte", {"v": vm.id, "r": PML4, "o": "wp+nxe", "x": 0x401000}) in vmm.events
    assert not [e for e in vmm.events if e[0] == "zap_spte" and e[1]["x"] == 0x401000]


def test_a_table_shadowed_as_an_upper_level_is_write_protected_again():
    vmm, ideal = Vmm(64, 128, unsync=True), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.access(vm, 0x400000, Access.READ)
    vmm.access(vm, 0x600000, Access.WRITE, value=(10 << 12) | UP | x86.A)  # unsyncs PT0
    assert (vm.id, PT0) in vmm.mmu.unsync
    vmm.gpa_write(vm, 10 << 12, ((11 << 12) | UP).to_bytes(8, "little"))  # gfn 10 read as a PT below
    vmm.gpa_write(vm, (PDPT << 12) + 8 * 1, ((PT0 << 12) | UP).to_bytes(8, "little"))  # 0x40000000: PT0 as a PD
    vmm.events = []
    assert not vmm.access(vm, 0x40000000, Access.READ).fault  # PT0 shadowed at level 2 too
    assert (vm.id, PT0) not in vmm.mmu.unsync and vmm.mmu.write_protected(vm, PT0)
    assert ("protect_gpt", {"v": vm.id, "g": PT0}) in vmm.events


def test_a_guest_store_unsyncs_a_leaf_table_and_traps_on_an_upper_one():
    for unsync in (False, True):
        vmm, ideal = Vmm(64, 128, unsync=unsync), Ideal(NR_GFNS)
        vm, _ = setup(vmm, ideal)
        vmm.access(vm, 0x400000, Access.READ)
        vmm.events = []
        vmm.guest_store(vm, PT0 << 12, ((12 << 12) | UP | x86.A).to_bytes(8, "little"))
        names = [n for n, _ in vmm.events]
        # unsync: the spte of 0x400000 stays (stale); sync: the store traps and zaps it
        assert names == (["unsync_gpt", "guest_write"] if unsync else ["zap_spte", "flush_request", "guest_write"])
        vmm.events = []
        vmm.guest_store(vm, (PD << 12) + 8 * 2, ((PT1 << 12) | UP).to_bytes(8, "little"))  # an upper table
        assert "unsync_gpt" not in [n for n, _ in vmm.events] and vmm.mmu.write_protected(vm, PD)


def test_a_stale_spte_the_mmu_refused_is_resynced_before_the_walk_is_reported():
    vmm, ideal = Vmm(64, 128, unsync=True), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.set_controls(vm, smep=True)
    vmm.access(vm, 0x400000, Access.READ, user=True)  # a user spte for PT0[0]
    vmm.guest_store(vm, PT0 << 12, ((10 << 12) | x86.P | x86.RW | x86.A).to_bytes(8, "little"))  # now supervisor
    vmm.events = []
    assert not vmm.access(vm, 0x400000, Access.FETCH).fault  # SMEP refused the stale user spte
    names = [n for n, _ in vmm.events]
    # the guest's walk allows what the stale spte did not: the spte goes before the walk is reported
    assert names.index("zap_spte") < names.index("guest_walk") < names.index("shadow_fill")


def test_a_new_path_to_a_stale_spte_is_resynced_before_the_link():
    vmm, ideal = Vmm(64, 128, unsync=True), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.access(vm, 0x400000, Access.READ)  # PT0[0] -> gfn 10 under PML4
    vmm.guest_store(vm, PT0 << 12, ((12 << 12) | UP | x86.A).to_bytes(8, "little"))  # stale now
    vmm.load_cr3(vm, ROOT2)  # ROOT2's shadow reaches nothing yet
    vmm.events = []
    vmm.access(vm, 0x401000, Access.READ)  # links ROOT2's root to the PDPT sp above PT0's
    fills = [a for n, a in vmm.events if n == "shadow_fill" and a["r"] == ROOT2 and a["x"] == 0x400000]
    assert all(a["g"] == 12 for a in fills)  # never the stale gfn 10 under the new path
    names = [n for n, _ in vmm.events]
    assert "zap_spte" in names and names.index("zap_spte") < names.index("shadow_fill")


def test_a_mode_load_resyncs_the_shadow_of_the_new_role():
    vmm, ideal = Vmm(64, 128, unsync=True), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.set_controls(vm, wp=False)
    vmm.access(vm, 0x400000, Access.READ)  # filled in role "nxe"
    vmm.set_controls(vm, wp=True)
    vmm.guest_store(vm, PT0 << 12, ((12 << 12) | UP | x86.A).to_bytes(8, "little"))  # unsync: "nxe"'s spte stale
    vmm.events = []
    vmm.set_controls(vm, wp=False)
    assert vmm.events[0] == ("zap_spte", {"v": vm.id, "r": PML4, "o": "nxe", "x": 0x400000})
    assert vmm.events[-1] == ("set_mode", {"v": vm.id, "c": 0, "o": "nxe"})


def test_a_pf_the_guest_sees_resyncs_the_stale_spte_of_its_gva():
    """SDM 4.10.4.1: a #PF drops what the TLB held for the gva. Unsync, the VMM's stale spte is that
    TLB entry: left in place, the guest's retry would use the translation its fault dropped."""
    vmm, ideal = Vmm(64, 128, unsync=True), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    vmm.set_controls(vm, smap=True)
    vmm.access(vm, 0x400000, Access.READ, user=True)  # a user spte for PT0[0]
    vmm.access(vm, 0x600000, Access.WRITE, value=(10 << 12) | UP | x86.A)  # unsyncs PT0
    vmm.guest_store(vm, PT0 << 12, (0).to_bytes(8, "little"))  # PT0[0] not present: no trap
    r = vmm.access(vm, 0x400000, Access.WRITE, value=1)  # SMAP refuses the stale user spte
    assert r.fault and r.error_code == x86.PF_W  # the guest's walk: not present
    assert vmm.access(vm, 0x400000, Access.READ, user=True).fault
