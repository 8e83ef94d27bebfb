"""The VMM: VMs, their guest-physical memory through p2m, guest operations on the real CPU, the
DMM mapping interface the policies use, and the abstraction of its state.

Machine layout (4 KiB frames): frame 0 unused; DMM-managed frames [1, 1 + machine_frames); VMM-
private frames for shadow tables after them; the CPU's own pages at the top.

Guest operations run as real instructions on Unicorn with CR3 at the VM's shadow root. A #PF from
the real MMU is the VMM's: it walks the guest's tables in software (walker.py, with the guest's A/D
updates) and either fills the shadow (a hidden fault — DMM's access violation, which allocates a
machine page through p2m when the gfn has none), emulates a write to a write-protected guest table,
or delivers the fault to the guest with the SDM error code. Guests use PML4 slots 0..510; slot 511
is the CPU's (an access there is a not-present #PF for the guest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from . import x86
from .cpu import HOLE_PAGES, Cpu
from .machine import FREE, MAPPED, SHARED, Machine, PrivateAllocator
from .mmu import Mmu, Role, entry_access
from .walker import access_error_code, walk
from .x86 import Access, Mode

MAX_RETRIES = 8
# A guest entry naming a gfn beyond the VM's memory: the access faults for the guest, with RSVD
# set (the entry names memory that does not exist; the ideal machine applies the same rule).
BAD_GFN_CODE = x86.PF_P | x86.PF_RSVD


@lru_cache(maxsize=None)
def _cpu_mode(nxe: bool, smep: bool, smap: bool) -> Mode:
    return Mode(wp=True, nxe=nxe, smep=smep, smap=smap)  # one object per control setting: no churn per access


@dataclass
class Vm:
    id: int
    nr_gfns: int
    p2m: dict[int, int] = field(default_factory=dict)
    cr3_gfn: int | None = None
    wp: bool = True
    nxe: bool = True
    smep: bool = False
    smap: bool = False

    def mode(self, user: bool = False, ac: bool = False) -> Mode:
        """The guest's paging mode: what the software walk applies."""
        return Mode(user=user, wp=self.wp, nxe=self.nxe, smep=self.smep, smap=self.smap, ac=ac)

    def cpu_mode(self) -> Mode:
        """The mode the real CPU runs the guest in. CR0.WP is always 1: write protection of guest
        tables lives in read-only sptes, which WP=0 would let supervisor writes ignore; the guest's
        WP=0 is implemented in the sptes instead (mmu.leaf_rights)."""
        return _cpu_mode(self.nxe, self.smep, self.smap)


@dataclass
class Result:
    """What the guest sees of one access."""

    fault: bool
    error_code: int = 0
    cr2: int | None = None
    value: int | None = None
    gp: bool = False
    oom: bool = False  # the access could not be served: no machine page for the gfn
    hidden_faults: int = 0
    emulated: bool = False


class OutOfMemory(Exception):
    pass


class Vmm:
    def __init__(self, machine_frames: int = 256, private_frames: int = 256) -> None:
        total = 1 + machine_frames + private_frames + HOLE_PAGES + 4
        self.cpu = Cpu(total * x86.PAGE_SIZE)
        self.machine = Machine(1, machine_frames)
        self.private = PrivateAllocator(1 + machine_frames, private_frames)
        self.mmu = Mmu(self)
        self.vms: dict[int, Vm] = {}
        self._loaded: tuple[int, int, Mode] | None = None  # (vm, root mfn, mode) in the CPU
        self.stats = {"hits": 0, "hidden_faults": 0, "emulated": 0, "guest_faults": 0}

    # ---------------------------------------------------------------- VMs
    def create_vm(self, nr_gfns: int, vm_id: int | None = None) -> Vm:
        vid = vm_id if vm_id is not None else (max(self.vms) + 1 if self.vms else 0)
        if vid in self.vms:
            raise ValueError(f"VM {vid} exists")
        vm = Vm(vid, nr_gfns)
        self.vms[vid] = vm
        self.machine.add_vm(vid)
        return vm

    # ---------------------------------------------------------------- guest-physical memory
    def gfn_mfn(self, vm: Vm, gfn: int, populate: bool = True) -> int:
        """The machine page behind a gfn; demand paging allocates one (zeroed) on first touch."""
        if not 0 <= gfn < vm.nr_gfns:
            raise IndexError(f"gfn {gfn:#x} is outside VM {vm.id}'s memory")
        mfn = vm.p2m.get(gfn)
        if mfn is None:
            if not populate:
                raise KeyError(gfn)
            mfn = self.machine.allocate(vm.id)
            if mfn is None:
                raise OutOfMemory(f"no machine page for VM {vm.id} gfn {gfn:#x}")
            self.cpu.write(mfn << x86.PAGE_SHIFT, bytes(x86.PAGE_SIZE))
            vm.p2m[gfn] = mfn
        return mfn

    def gpa_read(self, vm: Vm, gpa: int, n: int) -> bytes:
        out = b""
        while n:
            chunk = min(n, x86.PAGE_SIZE - (gpa & 0xFFF))
            mfn = self.gfn_mfn(vm, gpa >> x86.PAGE_SHIFT)
            out += self.cpu.read((mfn << x86.PAGE_SHIFT) | (gpa & 0xFFF), chunk)
            gpa, n = gpa + chunk, n - chunk
        return out

    def gpa_write(self, vm: Vm, gpa: int, data: bytes) -> None:
        """A write by the VMM on the guest's behalf (emulation, setup): guest tables it hits are
        propagated to the shadow."""
        while data:
            chunk = min(len(data), x86.PAGE_SIZE - (gpa & 0xFFF))
            mfn = self.gfn_mfn(vm, gpa >> x86.PAGE_SHIFT)
            self.cpu.write((mfn << x86.PAGE_SHIFT) | (gpa & 0xFFF), data[:chunk])
            self.mmu.guest_table_written(vm, gpa, chunk)
            gpa, data = gpa + chunk, data[chunk:]

    def read64(self, vm: Vm, gpa: int) -> int:
        return int.from_bytes(self.gpa_read(vm, gpa, 8), "little")

    # ---------------------------------------------------------------- guest CPU state
    def load_cr3(self, vm: Vm, root_gfn: int) -> None:
        vm.cr3_gfn = root_gfn
        self.mmu.root(vm)
        self.mmu.flush_pending.add(vm.id)  # a CR3 load flushes the TLB

    def set_controls(self, vm: Vm, *, wp: bool | None = None, nxe: bool | None = None, smep: bool | None = None,
                     smap: bool | None = None) -> None:
        """CR0.WP, EFER.NXE, CR4.SMEP/SMAP. Sptes are computed from all four (the WP=0 sptes are
        supervisor-only, which SMEP and SMAP would otherwise see differently than the guest's
        entries say), so a change drops the VM's shadow, as KVM resets its MMU context."""
        new = (vm.wp if wp is None else wp, vm.nxe if nxe is None else nxe,
               vm.smep if smep is None else smep, vm.smap if smap is None else smap)
        if new != (vm.wp, vm.nxe, vm.smep, vm.smap):
            self.mmu.zap_vm(vm.id)
        vm.wp, vm.nxe, vm.smep, vm.smap = new
        self.mmu.flush_pending.add(vm.id)

    def invlpg(self, vm: Vm, gva: int) -> None:
        # Unicorn flushes the whole TLB or nothing; flushing more than asked is always allowed.
        self.mmu.flush_pending.add(vm.id)

    # ---------------------------------------------------------------- guest accesses
    def access(self, vm: Vm, gva: int, acc: Access, *, user: bool = False, value: int = 0, ac: bool = False) -> Result:
        """One guest load, store or fetch, as a real instruction on the real MMU."""
        if vm.cr3_gfn is None:
            raise RuntimeError(f"VM {vm.id} has no CR3")
        if not x86.canonical(gva):
            return Result(True, gp=True)
        if x86.index(gva, 4) == 511:  # the CPU's slot: not present, as far as the guest can tell
            return Result(True, access_error_code(acc, vm.mode(user, ac)), gva)
        res = Result(False)
        for _ in range(MAX_RETRIES):
            self._enter(vm)
            out = self.cpu.access(gva, acc, value=value, user=user, ac=ac)
            if not out.fault:
                self.stats["hits"] += 1
                res.value = out.value
                return res
            if out.vector != 14:
                return Result(True, gp=out.vector == 13)
            res.hidden_faults += 1
            handled = self.page_fault(vm, gva, acc, user, ac, value)
            if handled is not None:
                handled.hidden_faults = res.hidden_faults
                return handled
        raise RuntimeError(f"VM {vm.id}: access to {gva:#x} still faulting after {MAX_RETRIES} fills")

    def _enter(self, vm: Vm) -> None:
        """Load the VM's shadow root and controls; pay any TLB flush owed before the guest runs."""
        root = self.mmu.root(vm)
        mode = vm.cpu_mode()
        key = (vm.id, root.mfn, mode)
        if self._loaded != key:
            self.cpu.set_mode(root.paddr, mode)  # also flushes
            self._loaded = key
            self.mmu.flush_pending.discard(vm.id)
        elif vm.id in self.mmu.flush_pending:
            self.cpu.flush_tlb()
            self.mmu.flush_pending.discard(vm.id)

    def page_fault(self, vm: Vm, gva: int, acc: Access, user: bool, ac: bool, value: int) -> Result | None:
        """The VMM's #PF handler. None: the shadow was filled, retry. A Result: the access is over."""
        mode = vm.mode(user, ac)
        cr3 = (vm.cr3_gfn or 0) << x86.PAGE_SHIFT
        try:
            w = walk(lambda a: self.read64(vm, a), lambda a, v: self._guest_ad_write(vm, a, v), cr3, gva, acc, mode)
        except (IndexError, OutOfMemory):
            return Result(True, BAD_GFN_CODE | access_error_code(acc, mode), gva)
        if w.fault:
            self.stats["guest_faults"] += 1
            return Result(True, w.error_code, gva, gp=w.gp)
        gfn = w.paddr >> x86.PAGE_SHIFT
        if gfn >= vm.nr_gfns:
            return Result(True, BAD_GFN_CODE | access_error_code(acc, mode), gva)
        try:
            mfn = self.gfn_mfn(vm, gfn)
        except OutOfMemory:
            return Result(True, 0, gva, oom=True)
        sp, access = self._shadow_path(vm, gva, w)
        rights = self.mmu.leaf_rights(vm, w, access, gfn, mfn, acc is Access.WRITE, user)
        self.mmu.install_leaf(sp, x86.index(gva, 1), mfn, rights)
        self.stats["hidden_faults"] += 1
        if acc is Access.WRITE and not rights & x86.RW:
            if self.machine.desc[mfn].status == SHARED and not self.mmu.write_protected(vm, gfn):
                raise NotImplementedError("copy-on-write break belongs to the sharing policy")
            # The guest may write but the shadow may not grant it (a guest table, or CR0.WP=0 with
            # SMAP): the VMM performs the store.
            return self._emulate_write(vm, w.paddr, value)
        return None

    def _guest_ad_write(self, vm: Vm, gpa: int, value: int) -> None:
        # The walker sets the guest's A/D bits: a write into a guest table, propagated like any.
        self.gpa_write(vm, gpa, value.to_bytes(8, "little"))

    def _shadow_path(self, vm: Vm, gva: int, w: Any) -> tuple[Any, int]:
        """Shadow pages along the guest walk, down to the level-1 sp whose entry maps gva."""
        mmu = self.mmu
        sp = mmu.root(vm)
        access = 7
        for level, _addr, entry in w.entries[:-1]:
            access &= entry_access(entry)
            child_gfn = (entry & x86.ADDR_MASK) >> x86.PAGE_SHIFT
            child = mmu.shadow_table(vm, child_gfn, Role(level - 1, access, vm.wp))
            mmu.link(sp, x86.index(gva, level), child)
            sp = child
        level, _addr, leaf = w.leaf
        access &= entry_access(leaf)
        gfn = w.paddr >> x86.PAGE_SHIFT
        while level > 1:  # a guest huge page: direct sps split it into 4 KiB sptes
            span = x86.ENTRIES ** (level - 1)  # gfns one entry at this level maps
            child = mmu.shadow_table(vm, gfn & ~(span - 1), Role(level - 1, access, vm.wp, direct=True))
            mmu.link(sp, x86.index(gva, level), child)
            sp, level = child, level - 1
        return sp, access

    def _emulate_write(self, vm: Vm, gpa: int, value: int) -> Result:
        """A store to a write-protected guest table: performed by the VMM, then propagated."""
        self.gpa_write(vm, gpa, value.to_bytes(8, "little"))
        self.stats["emulated"] += 1
        return Result(False, emulated=True)

    # ---------------------------------------------------------------- the DMM mapping interface
    def unmap_gfn(self, vm: Vm, gfn: int) -> int | None:
        """Drop p2m(vm, gfn): every spte mapping it zapped through the rmap. Returns the mfn."""
        mfn = vm.p2m.pop(gfn, None)
        if mfn is not None:
            self.mmu.zap_mfn(vm.id, mfn)
        return mfn

    def map_gfn(self, vm: Vm, gfn: int, mfn: int) -> None:
        """Set p2m(vm, gfn) := mfn (sptes are filled lazily on the next access)."""
        if vm.p2m.get(gfn) is not None:
            self.unmap_gfn(vm, gfn)
        vm.p2m[gfn] = mfn

    def remap_gfn(self, vm: Vm, gfn: int, mfn: int) -> int | None:
        old = self.unmap_gfn(vm, gfn)
        vm.p2m[gfn] = mfn
        return old

    def protect_gfn(self, vm: Vm, gfn: int) -> None:
        """Every spte mapping the gfn's page becomes read-only (any VM holding it)."""
        mfn = vm.p2m.get(gfn)
        if mfn is not None:
            self.mmu.protect_mfn(mfn)

    # ---------------------------------------------------------------- abstraction
    def abstract_state(self, gvas: list[int] | None = None, roots: list[int] | None = None) -> dict[str, Any]:
        """The DMM state read from the real structures: pools from the linked lists, p2m from the
        VMs, sptes and rmap by walking the shadow tables in machine memory, write protection from
        the shadow pages, pending flushes. Guest mappings are read by walking the guest's tables."""
        m = self.machine
        touched = range(m.first_mfn, m.fresh)
        out: dict[str, Any] = {
            "mfns": (m.first_mfn, m.count),
            "pool": {mfn: m.pool_of(mfn) for mfn in touched},
            "descriptor": {mfn: (m.desc[mfn].status, m.desc[mfn].refcount, m.desc[mfn].owner) for mfn in touched},
            "p2m": {(v.id, g): mfn for v in self.vms.values() for g, mfn in v.p2m.items()},
            "write_protected": sorted(self.mmu.shadowed),
            "flush_pending": sorted(self.mmu.flush_pending),
            "spte": {}, "rmap": {}, "spte_at": {},
        }
        for (vid, root_gfn, _wp), sp in self.mmu.roots.items():
            for gva, (addr, e) in self._shadow_leaves(sp.paddr, 4, 0).items():
                # Which leaf entry serves (vm, root, gva): the rmap is judged against these.
                at = (addr >> x86.PAGE_SHIFT, (addr & 0xFFF) >> 3)
                out["spte_at"].setdefault(at, []).append((vid, root_gfn, gva))
                mfn = (e & x86.ADDR_MASK) >> x86.PAGE_SHIFT
                out["spte"][(vid, root_gfn, gva)] = (mfn, bool(e & x86.RW), bool(e & x86.US), bool(e & x86.XD))
        for mfn, refs in self.mmu.rmap.items():
            out["rmap"][mfn] = sorted(refs)
        out["gmap"] = self._guest_mappings(gvas or [], roots)
        return out

    def _guest_mappings(self, gvas: list[int], extra_roots: list[int] | None = None) -> dict[tuple[int, int, int], tuple]:
        """(vm, guest root gfn, gva) -> (gfn, writable, user, nx, accessed, dirty), read by walking
        the guest's own tables (no A/D written) for every cached or current root."""
        out = {}
        probe = Mode(user=False, wp=False, nxe=True)  # a supervisor read: any present translation
        for vm in self.vms.values():
            roots = {g for (vid, g, _wp) in self.mmu.roots if vid == vm.id} | \
                ({vm.cr3_gfn} if vm.cr3_gfn is not None else set()) | set(extra_roots or ())
            for root in roots:
                for gva in gvas:
                    try:
                        w = walk(lambda a: self.read64(vm, a), None, root << x86.PAGE_SHIFT, gva, Access.READ,
                                 probe, set_ad=False)
                    except (IndexError, OutOfMemory):
                        continue
                    if w.fault:
                        continue
                    _, _, leaf = w.leaf
                    out[(vm.id, root, gva)] = (w.paddr >> x86.PAGE_SHIFT, w.writable, w.user,
                                               w.nx and vm.nxe, bool(leaf & x86.A), bool(leaf & x86.D))
        return out

    def _shadow_leaves(self, table: int, level: int, base: int) -> dict[int, tuple[int, int]]:
        leaves = {}
        for idx in range(x86.ENTRIES):
            if level == 4 and idx == 511:
                continue
            e = self.cpu.read64(table + 8 * idx)
            if not e & x86.P:
                continue
            va = base | (idx << x86.LEVEL_SHIFT[level])
            if level == 1:
                leaves[va] = (table + 8 * idx, e)
            else:
                leaves.update(self._shadow_leaves(e & x86.ADDR_MASK, level - 1, va))
        return leaves


__all__ = ["FREE", "MAPPED", "Result", "Vm", "Vmm"]
