"""The VMM's parts, each with one owner: the flush debt (paid once, per VM, in one place), the gfn each
shadow leaf was filled for (sp.gfns, kept with the spte through fills and zaps), and no part holding
the VMM that owns it."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from dmmcheck.impl import x86
from dmmcheck.impl.abstract import abstract_state
from dmmcheck.impl.events import EventLog
from dmmcheck.impl.tlb import MAX_INVLPG, FlushDebt
from dmmcheck.impl.vmm import Vmm
from dmmcheck.impl.x86 import Access

sys.path.insert(0, str(Path(__file__).parent))
from ideal import Ideal  # noqa: E402
from test_vmm import GVAS, NR_GFNS, PML4, PT0, PT_WINDOW, ROOT2, setup  # noqa: E402


class RecordingCpu:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def flush_tlb(self) -> None:
        self.calls.append(("flush", None))

    def invlpg(self, gva: int) -> None:
        self.calls.append(("invlpg", gva))


def debt() -> tuple[FlushDebt, list[RecordingCpu], EventLog]:
    cpus, log = [RecordingCpu(), RecordingCpu()], EventLog()
    log.events = []
    tlb = FlushDebt(cpus, log)
    for vm in (0, 1, 2):
        tlb.add_vm(vm, 2)
    return tlb, cpus, log


def test_a_debt_is_paid_once_by_its_owner_page_by_page():
    tlb, cpus, log = debt()
    tlb.owe(1, {0x2000})
    tlb.owe(1, {0x1000})
    tlb.owe(2)
    tlb.pay(1, 0, reloaded=False)
    assert cpus[0].calls == [("invlpg", 0x1000), ("invlpg", 0x2000)] and not cpus[1].calls
    # VM 2's debt is its own, and so is vCPU 1's: paying vCPU 0 of VM 1 leaves them
    assert tlb.pending == {(1, 1), (2, 0), (2, 1)}
    tlb.pay(1, 0, reloaded=False)
    assert len(cpus[0].calls) == 2  # paid: nothing more to do
    assert [n for n, _ in log.events] == ["flush_request"] * 3 + ["invlpg", "invlpg", "tlb_sync"]
    assert log.events[-1] == ("tlb_sync", {"v": 1, "c": 0})
    tlb.pay(2, 1, reloaded=False)
    assert cpus[1].calls == [("flush", None)] and tlb.pending == {(1, 1), (2, 0)}
    assert log.events[-1] == ("tlb_flush", {"v": 2, "c": 1})


def test_a_weakening_owes_every_vcpu_a_mode_switch_only_its_own():
    tlb, _, log = debt()
    tlb.owe(0, {0x1000})
    assert tlb.pending == {(0, 0), (0, 1)} and log.events == [("flush_request", {"v": 0})]
    tlb.pay(0, 0, reloaded=False)
    tlb.pay(0, 1, reloaded=False)
    tlb.owe_vcpu(0, 1)
    assert tlb.pending == {(0, 1)} and log.events[-1] == ("tlb_sync", {"v": 0, "c": 1})


def test_too_many_pages_make_a_full_flush():
    tlb, cpus, _ = debt()
    tlb.owe(0, set(range(0, (MAX_INVLPG + 1) * x86.PAGE_SIZE, x86.PAGE_SIZE)))
    tlb.pay(0, 0, reloaded=False)
    assert cpus[0].calls == [("flush", None)]


def test_a_reload_or_a_cr3_load_pays_without_touching_the_cpu():
    tlb, cpus, log = debt()
    tlb.owe(0, {0x1000})
    tlb.pay(0, 0, reloaded=True)  # the CPU was just loaded with the vCPU's root: flushed already
    assert not cpus[0].calls and tlb.pending == {(0, 1)} and log.events[-1] == ("tlb_flush", {"v": 0, "c": 0})
    tlb.owe(0)
    tlb.forgive(0, 1)  # vCPU 1's CR3 load
    tlb.pay(0, 1, reloaded=False)
    assert not cpus[1].calls and tlb.pending == {(0, 0)}
    tlb.forgive(0)  # the VM is gone
    assert not tlb.pending and not tlb.gvas


def check_gfns(vmm: Vmm, vm) -> int:
    """Every present leaf spte's recorded gfn is the gfn the guest's walk of its gva gives, and an sp
    records gfns for its present leaves only. Returns the number of leaves checked."""
    mmu, checked = vmm.mmu, 0
    for sp in mmu.sps.values():
        if sp.role.level == 1:
            present = {(addr & 0xFFF) >> 3 for _, addr, _ in mmu.leaf_sptes(sp.paddr, 1, 0)}
            assert set(sp.gfns) == present
    for (vid, root, _wp), sp in mmu.roots.items():
        leaves = list(mmu.leaf_entries(sp))
        gmap = abstract_state(vmm, gvas=[x for x, *_ in leaves], roots=[root])["gmap"]
        for gva, leaf_sp, idx, _e in leaves:
            assert leaf_sp.gfns[idx] == gmap[(vid, root, gva)][0], (root, hex(gva))
            checked += 1
    return checked


def test_sp_gfns_match_the_guest_walk_after_fills_and_zaps():
    rng = random.Random(3)
    vmm = Vmm(64, 128)
    vm, _ = setup(vmm, Ideal(NR_GFNS))
    checked = 0
    for _ in range(300):
        op = rng.random()
        if op < 0.6:
            vmm.access(vm, rng.choice(GVAS), rng.choice([Access.READ, Access.WRITE]), value=rng.getrandbits(64))
        elif op < 0.75:  # the guest rewrites a leaf through its window on PT0: an emulated table write
            gfn = rng.randrange(10, NR_GFNS)
            vmm.access(vm, PT_WINDOW + 8 * rng.randrange(8), Access.WRITE, value=(gfn << 12) | x86.P | x86.RW)
        elif op < 0.85:
            vmm.load_cr3(vm, rng.choice([PML4, ROOT2]))
        elif op < 0.95:
            vmm.mapping.unmap_gfn(vm, rng.randrange(10, NR_GFNS))
        else:
            vmm.set_controls(vm, wp=rng.random() < 0.5)
        checked += check_gfns(vmm, vm)
    assert checked > 300  # the property was checked on many leaves, not vacuously


def test_a_new_path_reports_the_gfn_the_leaf_was_filled_for():
    vmm = Vmm(64, 128)
    vm, _ = setup(vmm, Ideal(NR_GFNS))
    vmm.access(vm, GVAS[1], Access.READ)  # fills the leaf of gfn 11 under PML4
    vmm.gpa_write(vm, (PT0 << 12) + 8 * 1, ((12 << 12) | x86.P).to_bytes(8, "little"))  # zapped: gone
    vmm.access(vm, GVAS[1], Access.READ)  # filled again, for gfn 12
    vmm.events = []
    vmm.load_cr3(vm, ROOT2)
    vmm.access(vm, GVAS[0], Access.READ)  # ROOT2's root links the shared tables: the leaf is reached anew
    fills = {a["x"]: a["g"] for n, a in vmm.events if n == "shadow_fill" and a["r"] == ROOT2}
    assert fills[GVAS[1]] == 12 and fills[GVAS[0]] == 10


def test_no_part_holds_the_vmm():
    vmm = Vmm(16, 32, swap_slots=2)
    for part in (vmm.mmu, vmm.mapping, vmm.policy, vmm.tlb, vmm.log):
        held = vars(part).values() if hasattr(part, "__dict__") else [getattr(part, s) for s in part.__slots__]
        assert not any(v is vmm for v in held), type(part).__name__
        # The one callback into the VMM: the MMU's page_in (a shadowed guest table must be resident,
        # which the policies decide). Anything else of the VMM a part holds is a back-reference.
        into_vmm = [v.__name__ for v in held if getattr(v, "__self__", None) is vmm]
        assert into_vmm == (["gfn_mfn"] if part is vmm.mmu else []), type(part).__name__
