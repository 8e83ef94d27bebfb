"""The VMM: VMs and their vCPUs, guest-physical memory through p2m, guest operations on the real
CPU and the #PF path. It owns the parts, each with one job and none holding the VMM:

- `Mmu` (mmu.py): shadow pages, sptes, the rmap, write protection of guest tables;
- `FlushDebt` (tlb.py): which vCPU owes a TLB flush, paid in one place before it runs;
- `Mapping` (mapping.py): p2m changes carried to the shadow, the policies' whole view of the VMM;
- `Policies` (policies.py): demand paging, swapping, sharing, ballooning, pool sizing;
- `EventLog` (events.py): the spec actions performed, in order, which every part reports to.

The abstraction of its state (abstract.py) reads these parts; nothing here holds it.

Machine layout (4 KiB frames): frame 0 unused; DMM-managed frames [1, 1 + machine_frames); VMM-
private frames for shadow tables after them; the CPU's own pages at the top.

A VM has several vCPUs (`Vcpu`: its CR3 and paging mode), vCPU c running on physical CPU c — a
Unicorn instance of its own over the one machine memory, so each has a real TLB that persists
between accesses. An operation on vCPU c makes it the VM's running vCPU (`Vm.running`): the #PF path
reads that vCPU's CR3 and mode, as KVM's runs in a vCPU's context.

Guest operations run as real instructions on Unicorn with CR3 at the shadow root of the vCPU's guest
root and paging mode (its role: one shadow per (root, role), kept across mode changes). A #PF from
the real MMU is the VMM's: it walks the guest's tables in software (walker.py, with the guest's A/D
updates) and either fills the shadow (a hidden fault — DMM's access violation, which allocates a
machine page through p2m when the gfn has none), emulates a write to a write-protected guest table,
or delivers the fault to the guest with the SDM error code. Guests use PML4 slots 0..510; slot 511
is the CPU's (an access there is a not-present #PF for the guest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from . import x86
from .cpu import HOLE_PAGES, SIZES, Cpu
from .errors import BeyondMemory
from .events import EventLog
from .machine import FREE, MAPPED, SHARED, Machine, PrivateAllocator
from .mapping import Mapping
from .mmu import Mmu, Paging, Role, entry_access
from .policies import OutOfMemory, Policies
from .swap import SwapDevice
from .tlb import FlushDebt
from .walker import access_error_code, walk
from .x86 import Access, Mode

MAX_RETRIES = 8
# A fault's shadow path: a root (if reclaim took it) and the three sps below it (a 4 KiB walk's
# tables, or the direct sps that split a guest huge page).
PATH_PAGES = 4


def min_shadow_pages(vcpus: int) -> int:
    """The fewest shadow pages the VMM runs on: a root loaded on each vCPU's CPU (never
    reclaimed) and one fault's path."""
    return vcpus + PATH_PAGES

# What a guest entry naming a gfn beyond the VM's memory does (a guest table there, or a leaf's
# frame), as the conformance harness names the conventions:
# - "fault": the access faults for the guest with P|RSVD (BAD_GFN_CODE) and W/U/I as for any fault;
# - "ones": memory that does not exist, as on bare metal: it reads all-ones and ignores writes. A
#   guest table there is all-ones entries, so the walk faults RSVD on it; a leaf's frame there is
#   a translation like any (A/D written), whose loads return all-ones and whose stores are dropped;
# - "zeros": memory that does not exist reads zeros and ignores writes. A guest table there is
#   not-present entries, so the walk faults not present on it; a leaf's frame there is a
#   translation like any, whose loads return zeros and whose stores are dropped.
# Each way a missing right is reported first: the translation is checked before memory is touched.
# (The harness has the same list, conformance/adapter.py; this package imports nothing of it.)
BEYOND_MEMORY = ("fault", "ones", "zeros")
BAD_GFN_CODE = x86.PF_P | x86.PF_RSVD
ONES = (1 << 64) - 1
ABSENT = {"ones": ONES, "zeros": 0}  # an 8-byte read of memory that does not exist, by convention


@lru_cache(maxsize=None)
def _cpu_mode(nxe: bool, smep: bool, smap: bool) -> Mode:
    return Mode(wp=True, nxe=nxe, smep=smep, smap=smap)  # one object per control setting: no churn per access


@cache
def _paging(wp: bool, smep: bool, smap: bool, nxe: bool) -> Paging:
    return Paging(wp, smep, smap, nxe)


@dataclass
class Vcpu:
    """One virtual CPU's paging state: its guest root and the control bits the walk applies.
    `moded`: the guest loaded its control registers at least once (before that it has no role)."""

    cr3_gfn: int | None = None
    wp: bool = True
    nxe: bool = True
    smep: bool = False
    smap: bool = False
    moded: bool = False

    @property
    def paging(self) -> Paging:
        return _paging(self.wp, self.smep, self.smap, self.nxe)


def _running(name: str) -> property:
    """A VM's view of its running vCPU's field `name`."""
    return property(lambda vm: getattr(vm.vcpus[vm.running], name),
                    lambda vm, v: setattr(vm.vcpus[vm.running], name, v))


@dataclass
class Vm:
    id: int
    nr_gfns: int
    p2m: dict[int, int] = field(default_factory=dict)  # resident gfns
    swapped: dict[int, int] = field(default_factory=dict)  # gfn -> swap slot
    ballooned: set[int] = field(default_factory=set)  # gfns the balloon driver gave back
    vcpus: list[Vcpu] = field(default_factory=lambda: [Vcpu()])  # they share the VM's memory
    running: int = 0  # the vCPU whose operation the VMM is performing

    cr3_gfn = _running("cr3_gfn")
    wp = _running("wp")
    nxe = _running("nxe")
    smep = _running("smep")
    smap = _running("smap")

    @property
    def paging(self) -> Paging:
        """The running vCPU's paging mode: the role of the shadow it runs on."""
        return self.vcpus[self.running].paging

    def mode(self, user: bool = False, ac: bool = False) -> Mode:
        """The guest's paging mode: what the software walk applies."""
        c = self.vcpus[self.running]
        return Mode(user=user, wp=c.wp, nxe=c.nxe, smep=c.smep, smap=c.smap, ac=ac)

    def cpu_mode(self) -> Mode:
        """The mode the real CPU runs the guest in. CR0.WP is always 1: write protection of guest
        tables lives in read-only sptes, which WP=0 would let supervisor writes ignore; the guest's
        WP=0 is implemented in the sptes instead (mmu.leaf_rights). EFER.NXE is always 1, as KVM
        keeps the host's: the VMM's own NX in sptes (the WP=0 trick under SMEP) must work when the
        guest's NXE is off (found by dmm fuzz); the guest's XD bits are checked by the software walk."""
        c = self.vcpus[self.running]  # (on every guest access: one lookup, not a property per bit)
        return _cpu_mode(True, c.smep, c.smap)


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


class Vmm:
    def __init__(self, machine_frames: int = 256, private_frames: int = 256, *, swap_slots: int = 0,
                 swap_path: str | None = None, swap_sync: bool = True, budget: int | None = None,
                 quota: int | None = None, reclaim: bool = True, cpu: Cpu | list[Cpu] | None = None,
                 beyond_memory: str = "fault", vcpus: int = 1, unsync: bool = False,
                 shadow_pages: int | None = None) -> None:
        """`vcpus`: vCPUs per VM, each on a CPU of its own over the one memory. `cpu`: the CPUs of an
        earlier Vmm to reuse (the first owns the memory), if large enough. `unsync`: a guest store to
        a shadowed leaf table unsyncs it instead of being emulated (mmu.py, "Unsync sps").
        `shadow_pages`: the most shadow pages held at once (at most private_frames; None: that
        many); at the limit the oldest are reclaimed (`Mmu.make_room`). The fewest it runs on is
        min_shadow_pages(vcpus): a loaded root per vCPU, plus one fault's path."""
        if shadow_pages is not None and shadow_pages < min_shadow_pages(vcpus):
            raise ValueError(f"{vcpus} vCPUs need at least {min_shadow_pages(vcpus)} shadow pages, not {shadow_pages}")
        if beyond_memory not in BEYOND_MEMORY:
            raise ValueError(f"beyond_memory is one of {BEYOND_MEMORY}, not {beyond_memory!r}")
        self.beyond_memory = beyond_memory
        if vcpus < 1:
            raise ValueError(f"a VM has at least one vCPU, not {vcpus}")
        total = 1 + machine_frames + private_frames + HOLE_PAGES + 4
        old = cpu if isinstance(cpu, list) else [cpu] if cpu is not None else []
        if old and old[0].phys_bytes >= total * x86.PAGE_SIZE:
            # CPUs at least as large, reused (a conformance harness resets thousands of times)
            old[0].wipe()
            for sibling in old[1:vcpus]:
                sibling.wipe(memory=False)
            self.cpu = old[0]
            self.cpus = old[:vcpus]
        else:
            self.cpu = Cpu(total * x86.PAGE_SIZE)
            self.cpus = [self.cpu]
        while len(self.cpus) < vcpus:
            self.cpus.append(Cpu(0, share=self.cpu))
        self.nr_vcpus = vcpus
        self.machine = Machine(1, machine_frames)
        self.private = PrivateAllocator(1 + machine_frames, private_frames, shadow_pages)
        self.vms: dict[int, Vm] = {}
        self.log = EventLog()
        self.tlb = FlushDebt(self.cpus, self.log)
        self.mmu = Mmu(self.cpu, self.private, self.machine, self.log, self.tlb.owe, self.gfn_mfn)
        self.mmu.unsync_on = unsync
        self.mapping = Mapping(self.vms, self.mmu, self.cpu, self.machine, self.tlb)
        swap = SwapDevice(swap_slots, swap_path, sync=swap_sync) if swap_slots else None
        self.policy = Policies(self.mapping, self.machine, self.log, swap, budget=budget, reclaim=reclaim,
                               quota=quota)
        # per CPU, what it is loaded with: (vm, root mfn, mode)
        self._loaded: list[tuple[int, int, Mode] | None] = [None] * vcpus
        self.walk = walk  # the software walker of guest tables (an attribute: a mutant may replace it)
        self.stats = {"hits": 0, "hidden_faults": 0, "emulated": 0, "guest_faults": 0}

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]] | None:
        """The event log (events.py): None (off) or the spec actions performed since it was set."""
        return self.log.events

    @events.setter
    def events(self, events: list[tuple[str, dict[str, Any]]] | None) -> None:
        self.log.events = events

    def _emit_access(self, name: str, vm: Vm, gva: int, acc: Access, user: bool) -> None:
        # On the access path: with the log off, not even the arguments are built.
        events = self.log.events
        if events is not None:
            events.append((name, {"v": vm.id, "c": vm.running, "r": vm.cr3_gfn, "o": vm.paging.name,
                                  "x": gva & ~0xFFF, "a": acc.value, "u": user}))

    # ---------------------------------------------------------------- VMs
    def create_vm(self, nr_gfns: int, vm_id: int | None = None) -> Vm:
        vid = vm_id if vm_id is not None else (max(self.vms) + 1 if self.vms else 0)
        if vid in self.vms:
            raise ValueError(f"VM {vid} exists")
        vm = Vm(vid, nr_gfns, vcpus=[Vcpu() for _ in range(self.nr_vcpus)])
        self.vms[vid] = vm
        self.machine.add_vm(vid)
        self.tlb.add_vm(vid, self.nr_vcpus)
        self.log.emit("vm_create", v=vid)
        return vm

    def destroy_vm(self, vm: Vm) -> None:
        """Tear a VM down: its shadow, then its memory (through the policies), then the VM."""
        self.mmu.zap_vm(vm.id)
        self.policy.release_all(vm)
        self.tlb.forgive(vm.id)
        self.machine.remove_vm(vm.id)
        del self.vms[vm.id]
        self._unload(vm.id)
        self.log.emit("vm_destroy", v=vm.id)

    # ---------------------------------------------------------------- guest-physical memory
    def gfn_mfn(self, vm: Vm, gfn: int) -> int:
        """The machine page behind a gfn; without one, DMM's access violation: the policies demand-
        page it, swap it in or take it back from the balloon (OutOfMemory when they cannot)."""
        mfn = vm.p2m.get(gfn)
        if mfn is None:
            if not 0 <= gfn < vm.nr_gfns:
                raise BeyondMemory(f"gfn {gfn:#x} is outside VM {vm.id}'s memory")
            mfn = self.policy.fault_in(vm, gfn)
        return mfn

    def peek(self, vm: Vm, gpa: int, n: int) -> bytes:
        """Guest-physical bytes as the guest would read them, changing nothing (no demand paging,
        no swap-in): what the abstraction and the harness read."""
        gfn, off = gpa >> x86.PAGE_SHIFT, gpa & 0xFFF
        if not 0 <= gfn < vm.nr_gfns or off + n > x86.PAGE_SIZE:
            raise IndexError(f"gpa {gpa:#x}+{n} is outside one page of VM {vm.id}'s memory")
        mfn = vm.p2m.get(gfn)
        if mfn is not None:
            return self.cpu.read((mfn << x86.PAGE_SHIFT) | off, n)
        if gfn in vm.swapped:
            return self.policy.swap.read(vm.swapped[gfn])[off:off + n]  # type: ignore[union-attr]
        return bytes(n)

    def gpa_read(self, vm: Vm, gpa: int, n: int) -> bytes:
        out = b""
        while n:
            chunk = min(n, x86.PAGE_SIZE - (gpa & 0xFFF))
            mfn = self.gfn_mfn(vm, gpa >> x86.PAGE_SHIFT)
            out += self.cpu.read((mfn << x86.PAGE_SHIFT) | (gpa & 0xFFF), chunk)
            gpa, n = gpa + chunk, n - chunk
        return out

    def gpa_write(self, vm: Vm, gpa: int, data: bytes, *, walker: bool = False) -> None:
        """A write by the VMM on the guest's behalf (an emulated store, the walker's A/D bits): guest
        tables it hits are propagated to the shadow. Reported as guest_write (the guest's memory
        changed), except for the walker's A/D bits, which guest_walk reports."""
        start = gpa
        while data:
            chunk = min(len(data), x86.PAGE_SIZE - (gpa & 0xFFF))
            mfn = self.gfn_mfn(vm, gpa >> x86.PAGE_SHIFT)
            if mfn in self.mapping.holders and self.machine.desc[mfn].status == SHARED:
                copy = self.policy.cow_break(vm, gpa >> x86.PAGE_SHIFT)  # the VMM writes a shared page too
                if copy is None:
                    raise OutOfMemory(f"no page to break copy-on-write of VM {vm.id} gpa {gpa:#x}")
                mfn = copy
            self.cpu.write((mfn << x86.PAGE_SHIFT) | (gpa & 0xFFF), data[:chunk])
            self.mmu.guest_table_written(vm, gpa, chunk)
            gpa, data = gpa + chunk, data[chunk:]
        if not walker:
            self.log.emit("guest_write", v=vm.id, gpa=start)

    def guest_store(self, vm: Vm, gpa: int, data: bytes) -> None:
        """A store of the guest's own to its memory (a page-table edit) that the VMM sees: one to a
        shadowed leaf table traps once and unsyncs it (with unsync on, as a store through the MMU
        does), any other store to a shadowed table is emulated and propagated."""
        gfn = gpa >> x86.PAGE_SHIFT
        if self.mmu.is_gpt(vm, gfn):
            self.mmu.try_unsync(vm, gfn)
        self.gpa_write(vm, gpa, data)

    def read64(self, vm: Vm, gpa: int) -> int:
        return int.from_bytes(self.gpa_read(vm, gpa, 8), "little")

    # ---------------------------------------------------------------- guest CPU state
    def _unload(self, vm_id: int, c: int | None = None) -> None:
        """The CPUs running the VM's vCPU c (any: None) are reloaded, and so flushed, before it runs."""
        for i, loaded in enumerate(self._loaded):
            if loaded is not None and loaded[0] == vm_id and c in (None, i):
                self._loaded[i] = None

    def _room(self, need: int) -> None:
        """Private frames for what comes next (an operation never reclaims midway). Only at the
        limit, and the roots the CPUs are loaded with stay (their CR3 points there)."""
        if len(self.private.free) < need:
            self.mmu.make_room(need, {loaded[1] for loaded in self._loaded if loaded is not None})

    def load_cr3(self, vm: Vm, root_gfn: int, vcpu: int = 0) -> None:
        vm.running = vcpu
        vm.cr3_gfn = root_gfn
        if self.mmu.cached_root(vm) is None:
            self._room(1)
        try:
            root = self.mmu.root(vm)
            if self.mmu.unsync:
                self.mmu.sync_root(vm, root)  # before the load completes: no stale spte reachable
        except OutOfMemory:
            pass  # no page for the root table yet: it is shadowed at the first access instead
        # A CR3 load flushes the TLB: the CPU is reloaded (and flushed) before the guest runs again,
        # which pays whatever flush the vCPU owed.
        self._unload(vm.id, vcpu)
        self.tlb.forgive(vm.id, vcpu)
        self.log.emit("cr3_load", v=vm.id, c=vcpu, r=root_gfn)

    def set_controls(self, vm: Vm, *, vcpu: int | None = None, wp: bool | None = None, nxe: bool | None = None,
                     smep: bool | None = None, smap: bool | None = None) -> None:
        """The guest on `vcpu` (the running one: None) loads CR0.WP, EFER.NXE, CR4.SMEP/SMAP (those
        not given keep their value). Sptes are computed from all four (the WP=0 sptes are
        supervisor-only, which SMEP and SMAP would otherwise see differently than the guest's
        entries say), so the vCPU switches to the shadow of its new role, the old one kept cached
        for its return (no zap); everything its TLB holds came from the old one, so it owes a flush."""
        if vcpu is not None:
            vm.running = vcpu
        c = vm.vcpus[vm.running]
        c.wp, c.nxe = c.wp if wp is None else wp, c.nxe if nxe is None else nxe
        c.smep, c.smap = c.smep if smep is None else smep, c.smap if smap is None else smap
        c.moded = True
        if self.mmu.unsync and c.cr3_gfn is not None:
            if self.mmu.cached_root(vm) is None:
                self._room(1)
            try:  # the new role's shadow root is loaded: resynced first, as on a CR3 load
                self.mmu.sync_root(vm, self.mmu.root(vm))
            except OutOfMemory:
                pass  # no root table yet: it is shadowed (in sync) at the first access
        self.log.emit("set_mode", v=vm.id, c=vm.running, o=c.paging.name)
        self.tlb.owe_vcpu(vm.id, vm.running)

    def invlpg(self, vm: Vm, gva: int, vcpu: int = 0) -> None:
        """The guest's invlpg on `vcpu`: that page leaves its CPU's TLB (if the CPU runs another
        VM's vCPU, its TLB holds nothing of this one: it reloads before this vCPU runs)."""
        vm.running = vcpu
        self._resync_gva(vm, gva)  # the guest sees its new gpte once invlpg completes
        loaded = self._loaded[vcpu]
        if loaded is not None and loaded[0] == vm.id:
            self.tlb.invalidate(vcpu, gva & ~0xFFF)
        self.log.emit("invlpg", v=vm.id, c=vcpu, x=gva & ~0xFFF)

    # ---------------------------------------------------------------- guest accesses
    def access(self, vm: Vm, gva: int, acc: Access, *, user: bool = False, value: int = 0, ac: bool = False,
               size: int = 8, vcpu: int = 0) -> Result:
        """One guest load, store or fetch of `size` bytes (1, 2, 4, 8, 16) at any alignment within
        a page, as a real instruction on the real MMU of `vcpu`'s CPU."""
        vm.running = vcpu
        if acc is not Access.FETCH and (size not in SIZES or (gva & 0xFFF) + size > x86.PAGE_SIZE):
            raise ValueError(f"an access of {size} bytes at {gva:#x}: sizes are {SIZES}, within one page")
        if vm.cr3_gfn is None:
            raise RuntimeError(f"VM {vm.id} has no CR3")
        if not x86.canonical(gva):
            return Result(True, gp=True)
        if x86.index(gva, 4) == 511:  # the CPU's slot: not present, as far as the guest can tell
            return Result(True, access_error_code(acc, vm.mode(user, ac)), gva)
        res = Result(False)
        for _ in range(MAX_RETRIES):
            try:
                self._enter(vm)
            except OutOfMemory:
                return Result(True, 0, gva, oom=True)
            out = self.cpus[vcpu].access(gva, acc, value=value, user=user, ac=ac, size=size)
            if not out.fault:
                self.stats["hits"] += 1
                res.value = out.value
                self._emit_access("hit", vm, gva, acc, user)
                return res
            if out.vector != 14:
                return Result(True, gp=out.vector == 13)
            res.hidden_faults += 1
            handled = self.page_fault(vm, gva, acc, user, ac, value, size)
            if handled is not None:
                handled.hidden_faults = res.hidden_faults
                return handled
        raise RuntimeError(f"VM {vm.id}: access to {gva:#x} still faulting after {MAX_RETRIES} fills")

    def _enter(self, vm: Vm) -> None:
        """Load the running vCPU's shadow root and controls into its CPU; pay any TLB flush it owes
        before the guest runs."""
        c = vm.running
        if not self.private.free and self.mmu.cached_root(vm) is None:
            self._room(1)
        root = self.mmu.root(vm)
        mode = vm.cpu_mode()
        key = (vm.id, root.mfn, mode)
        reloaded = self._loaded[c] != key
        if reloaded:
            self.cpus[c].set_mode(root.paddr, mode)  # also flushes
            self._loaded[c] = key
        self.tlb.pay(vm.id, c, reloaded)

    def page_fault(self, vm: Vm, gva: int, acc: Access, user: bool, ac: bool, value: int,
                   size: int = 8) -> Result | None:
        """The VMM's #PF handler. None: the shadow was filled, retry. A Result: the access is over."""
        self._room(PATH_PAGES)  # before the walk: reclaim zaps, and may unshadow a table it reads
        mode = vm.mode(user, ac)
        cr3 = (vm.cr3_gfn or 0) << x86.PAGE_SHIFT
        ad: list[tuple[int, int]] = []  # the walk's A/D writes, made once the walk is decided
        read = self._table_reader(vm)
        try:
            w = self.walk(read, lambda a, v: ad.append((a, v)), cr3, gva, acc, mode)
            bad_gfn = not w.fault and w.paddr >> x86.PAGE_SHIFT >= vm.nr_gfns
        except BeyondMemory:  # a guest table beyond memory ("fault": no read of it succeeds)
            bad_gfn = True  # any other exception of the walk is a bug: it propagates, a crash
        except OutOfMemory:  # a guest table could not be paged in
            return Result(True, 0, gva, oom=True)
        # Unsync: gva's spte agrees with the gpte before the outcome is reported. A #PF invalidates
        # what the guest's TLB held for gva (SDM 4.10.4.1), and a stale spte left in place would
        # serve the retry the translation the fault dropped; on success the real MMU may have
        # refused a stale spte the gpte now allows (SMEP on a page that was the user's).
        self._resync_gva(vm, gva)
        if bad_gfn and self.beyond_memory != "fault":
            return self._unbacked(vm, gva, acc, ad, size)
        if bad_gfn:
            self._emit_access("guest_fault", vm, gva, acc, user)
            return Result(True, BAD_GFN_CODE | access_error_code(acc, mode), gva)
        if w.fault:
            self.stats["guest_faults"] += 1
            self._emit_access("guest_fault", vm, gva, acc, user)
            return Result(True, w.error_code, gva, gp=w.gp)
        self._emit_access("guest_walk", vm, gva, acc, user)
        gfn = w.paddr >> x86.PAGE_SHIFT
        try:
            for addr, entry in ad:  # a write into a guest table, propagated like any
                self.gpa_write(vm, addr, entry.to_bytes(8, "little"), walker=True)
            # The tables first: shadowing one may page it in (gpt_resident), and that may reclaim
            # any page not yet shadowed — so the data page's mfn is only read afterwards.
            sp, access = self._shadow_path(vm, gva, w, bool(w.leaf[2] & x86.D) or acc is Access.WRITE)
            mfn = self.gfn_mfn(vm, gfn)
        except OutOfMemory:
            return Result(True, 0, gva, oom=True)
        if acc is Access.WRITE and self.mmu.is_gpt(vm, gfn):
            self.mmu.try_unsync(vm, gfn)  # with unsync on, a leaf table's stores stop trapping
        if (acc is Access.WRITE and self.machine.desc[mfn].status == SHARED and w.writable
                and not self.mmu.write_protected(vm, gfn)):
            copy = self.policy.cow_break(vm, gfn)  # the writer gets its own copy
            if copy is None:
                return Result(True, 0, gva, oom=True)
            mfn = copy
        rights = self.mmu.leaf_rights(vm, w, access, gfn, mfn, acc is Access.WRITE, user)
        self.mmu.install_leaf(sp, x86.index(gva, 1), gfn, mfn, rights, bool(access & 1))
        self.stats["hidden_faults"] += 1
        if acc is Access.WRITE and not rights & x86.RW:
            # The guest may write but the shadow may not grant it (a guest table, a shared page
            # under CR0.WP=0, or CR0.WP=0 with SMAP): the VMM performs the store. A shared page
            # (a merged guest table, or a read-only gpte under CR0.WP=0) is copied first, which
            # may find no page: the access ends as out-of-memory, like any other.
            try:
                return self._emulate_write(vm, w.paddr, value, size)
            except OutOfMemory:
                return Result(True, 0, gva, oom=True)
        return None

    def _resync_gva(self, vm: Vm, gva: int) -> None:
        """Unsync mode: the spte the running vCPU's shadow root maps gva by agrees with the gpte."""
        root = self.mmu.cached_root(vm)
        if root is not None and self.mmu.unsync:
            self.mmu.sync_gva(vm, root, gva)

    def _table_reader(self, vm: Vm) -> Any:
        """How the software walk reads the guest's tables: through p2m (paging a table in if need
        be); under "ones" an entry beyond memory reads all-ones (present, reserved bits set), under
        "zeros" it reads 0 (not present)."""
        if self.beyond_memory in ABSENT:
            absent = ABSENT[self.beyond_memory]
            return lambda a: self.read64(vm, a) if 0 <= a >> x86.PAGE_SHIFT < vm.nr_gfns else absent
        return lambda a: self.read64(vm, a)

    def _unbacked(self, vm: Vm, gva: int, acc: Access, ad: list[tuple[int, int]], size: int) -> Result:
        """"ones", "zeros": the guest's translation names a frame beyond its memory. The walk
        succeeded, so its A/D bits are written as for any access; there is no machine page to map,
        so no spte is made and every access there comes back here, emulated: a load returns all-ones
        ("ones") or zeros ("zeros"), a store is dropped, a fetch succeeds (only the translation is
        judged).
        No spec action: for the DMM the gva maps nothing (the gfn is outside the universe)."""
        try:
            for addr, entry in ad:
                self.gpa_write(vm, addr, entry.to_bytes(8, "little"), walker=True)
        except OutOfMemory:
            return Result(True, 0, gva, oom=True)
        self.stats["emulated"] += 1
        fill = (1 << 8 * size) - 1 if self.beyond_memory == "ones" else 0
        return Result(False, value=fill if acc is Access.READ else None, emulated=True)

    def _shadow_path(self, vm: Vm, gva: int, w: Any, dirty: bool) -> tuple[Any, int]:
        """Shadow pages along the guest walk, down to the level-1 sp whose entry maps gva. `dirty`:
        the guest leaf's D bit once this walk's own A/D writes are made."""
        mmu = self.mmu
        sp = mmu.root(vm)
        access = 7
        for level, _addr, entry in w.entries[:-1]:
            access &= entry_access(entry)
            child_gfn = (entry & x86.ADDR_MASK) >> x86.PAGE_SHIFT
            child = mmu.shadow_table(vm, child_gfn, Role(level - 1, access, vm.paging))
            mmu.link(sp, x86.index(gva, level), child, vm)
            sp = child
        level, _addr, leaf = w.leaf
        access &= entry_access(leaf)
        gfn = w.paddr >> x86.PAGE_SHIFT
        while level > 1:  # a guest huge page: direct sps split it into 4 KiB sptes
            span = x86.ENTRIES ** (level - 1)  # gfns one entry at this level maps
            child = mmu.shadow_table(vm, gfn & ~(span - 1),
                                     Role(level - 1, access, vm.paging, direct=True, dirty=dirty))
            mmu.link(sp, x86.index(gva, level), child)
            sp, level = child, level - 1
        return sp, access

    def _emulate_write(self, vm: Vm, gpa: int, value: int, size: int = 8) -> Result:
        """A store to a write-protected guest table: performed by the VMM (only the bytes the
        instruction writes: a store may be narrower than an entry or straddle two), then propagated."""
        self.gpa_write(vm, gpa, (value & (1 << 8 * size) - 1).to_bytes(size, "little"))
        self.stats["emulated"] += 1
        return Result(False, emulated=True)

__all__ = ["FREE", "MAPPED", "PATH_PAGES", "OutOfMemory", "Result", "Vcpu", "Vm", "Vmm", "min_shadow_pages"]
