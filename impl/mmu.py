"""The shadow MMU, in the manner of KVM's mmu.c: shadow pages (sp) that shadow guest page tables.

An sp is one page of a real x86-64 table in machine memory (a VMM-private frame). It is keyed by
(vm, gfn, role): the guest table it shadows and the role it plays — its level, the guest rights
accumulated on the path above it (`access`: an sp's leaf sptes carry the path's rights, so one guest
table reached with different rights gets different sps), the paging mode (`Paging`: CR0.WP,
CR4.SMEP, CR4.SMAP, EFER.NXE — the spec's role), and `direct` for the sps that
split a guest huge page into 4 KiB sptes (keyed by the huge page's first gfn). Upper shadow entries
are fully permissive; each leaf spte carries the effective rights.

Unsync sps (KVM's, with `unsync` on): a guest store to a write-protected table that only leaf (level
1) sps shadow stops write-protecting it (`try_unsync`); the guest's later stores to it do not trap,
and the sptes built from the gptes it rewrites go stale until a resync (`sync_sp`: each spte kept if
it agrees with the gpte now, else zapped) — which the VMM does before the guest's invlpg of a gva,
a CR3 load or a mode load completes, and before an unsync sp is linked under a new parent. A table
shadowed as an upper level too is resynced and write-protected again (`shadow_table`).

Invariants, stated where they are enforced:
- rmap: a leaf spte is present and maps mfn m iff it is in rmap[m]      (install_leaf, zap)
- a guest table gfn that some sp shadows is writable in no spte, unless
  it is unsync, and only leaf sps shadow an unsync one                  (shadow_table -> write_protect)
- an spte is writable only if the guest's entry is dirty                (leaf_rights)
- a shared page is writable in no spte                                  (leaf_rights)
- after an spte is weakened or dropped, the VM owes a TLB flush         (owe_flush)
- an spte is never weakened in place: it is zapped, then refilled       (install_leaf)
- a present leaf spte's gfn (the one it was filled for) is in sp.gfns   (install_leaf, zap)
- a root some CPU is loaded with is never reclaimed                     (make_room)

The MMU holds nothing of the VMM that owns it: it is given the CPU, the private frame allocator, the
machine's descriptors, the event sink, and two callbacks: `owe_flush` (the flush debt's) and
`page_in` (the gfn's machine page, paged in if need be: a shadowed guest table must be resident).

With the event log on (`EventLog.events`), every change of a leaf spte is reported as the spec
action it is — shadow_fill, zap_spte, protect_gpt, unshadow_gpt, unprotect_gpt, flush_request — per
(vm, guest root, gva) that reaches it; with the log off, reporting costs one attribute test.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Callable, Iterator

from . import x86
from .events import EventLog
from .tlb import FULL
from .walker import Walk

if TYPE_CHECKING:
    from .cpu import Cpu
    from .machine import Machine, PrivateAllocator
    from .vmm import Vm

ACC_W, ACC_U, ACC_X = 1, 2, 4  # role.access bits: write, user, execute (x86 NX inverted)
ACC_ALL = ACC_W | ACC_U | ACC_X
UPPER = x86.P | x86.RW | x86.US | x86.A  # upper shadow entries grant everything; leaves decide
LEAF_KEY = x86.ADDR_MASK | x86.P | x86.RW | x86.US | x86.XD  # what a leaf spte says (A, D are the MMU's)


ROLE_BITS = ("wp", "smep", "smap", "nxe")  # in the order a role's name lists them


@dataclass(frozen=True)
class Paging:
    """The paging-mode bits that change what a shadow entry means: CR0.WP (the WP=0 sptes), CR4.SMEP
    and CR4.SMAP (what those sptes withhold), EFER.NXE (whether XD counts). A vCPU runs in one; an
    sp serves only vCPUs in its own, so a mode change switches shadows instead of zapping them."""

    wp: bool = True
    smep: bool = False
    smap: bool = False
    nxe: bool = True

    @property
    def name(self) -> str:
        """The role's name: its set bits joined by '+', '-' for none (as the conformance harness
        names roles)."""
        return _role_name(self)


@cache
def _role_name(p: Paging) -> str:
    return "+".join(b for b in ROLE_BITS if getattr(p, b)) or "-"


@dataclass(frozen=True)
class Role:
    level: int
    access: int
    paging: Paging
    direct: bool = False
    # For a direct sp: the guest huge entry's D bit. Its sptes are writable only if D is set, so two
    # guest huge entries of the same frames, one clean and one dirty, must not share one (found by
    # dmm fuzz: the clean one's gva reached a writable spte).
    dirty: bool = False


@dataclass(eq=False)
class Sp:
    mfn: int
    vm: int
    gfn: int
    role: Role
    parents: set[tuple[int, int]] = field(default_factory=set)  # (parent sp mfn, index)
    root_of: int | None = None  # the guest root gfn, for root sps
    # index -> the gfn each present leaf spte was filled for (KVM's sp->gfns): what a new path to
    # the leaf reports, without reading the guest's entry again
    gfns: dict[int, int] = field(default_factory=dict)

    @property
    def paddr(self) -> int:
        return self.mfn << x86.PAGE_SHIFT


def entry_access(entry: int) -> int:
    return ((ACC_W if entry & x86.RW else 0) | (ACC_U if entry & x86.US else 0)
            | (0 if entry & x86.XD else ACC_X))


class Mmu:
    def __init__(self, cpu: "Cpu", private: "PrivateAllocator", machine: "Machine", log: EventLog,
                 owe_flush: Callable[[int, set[int] | None], None], page_in: Callable[["Vm", int], int]) -> None:
        self.cpu = cpu
        self.private = private
        self.machine = machine
        self.log = log
        # Callbacks, attributes so that a seeded bug may replace them on one instance.
        self.owe_flush = owe_flush
        self.page_in = page_in
        # What an sp is looked up by, of its role: all of it (a seeded bug may drop a bit)
        self.role_key: Callable[[Role], Role] = _whole
        self.sps: dict[tuple[int, int, Role], Sp] = {}
        self.by_mfn: dict[int, Sp] = {}
        # (vm, guest table gfn) -> its sps, by sp mfn (a dict, not a set of Sp: iteration order must
        # not depend on object addresses, or runs stop being reproducible)
        self.shadowed: dict[tuple[int, int], dict[int, Sp]] = {}
        self.rmap: dict[int, set[tuple[int, int]]] = {}  # DMM mfn -> leaf sptes (sp mfn, index)
        self.roots: dict[tuple[int, int, Paging], Sp] = {}  # (vm, guest root gfn, paging) -> cached root
        self.unsync_on = False  # may a shadowed leaf table be unsynced (the VMM's option)
        self.unsync: set[tuple[int, int]] = set()  # (vm, gfn): shadowed, no longer write-protected

    # ---------------------------------------------------------------- shadow pages
    def root(self, vm: "Vm") -> Sp:
        """The cached shadow root of the running vCPU's guest root and paging mode (created on first
        use): each (root, role) has its own, kept across CR3 loads and mode changes."""
        assert vm.cr3_gfn is not None
        key = (vm.id, vm.cr3_gfn, self.role_key(Role(4, ACC_ALL, vm.paging)).paging)
        sp = self.roots.get(key)
        if sp is None:
            sp = self.shadow_table(vm, vm.cr3_gfn, Role(4, ACC_ALL, vm.paging))
            sp.root_of = vm.cr3_gfn
            self.cpu.install_hole(sp.paddr)
            self.roots[key] = sp
        return sp

    def cached_root(self, vm: "Vm") -> Sp | None:
        """The running vCPU's shadow root, if it has one already."""
        if vm.cr3_gfn is None:
            return None
        return self.roots.get((vm.id, vm.cr3_gfn, self.role_key(Role(4, ACC_ALL, vm.paging)).paging))

    def shadow_table(self, vm: "Vm", gfn: int, role: Role) -> Sp:
        key = (vm.id, gfn, self.role_key(role))
        sp = self.sps.get(key)
        if sp is not None:
            return sp
        if not role.direct and (vm.id, gfn) not in self.shadowed:
            # gpt_resident: a shadowed table is resident (paged in first, if reclaim took it since the
            # walk read it; from then on reclaim, sharing and the balloon leave it alone).
            self.page_in(vm, gfn)
        mfn = self.private.alloc()
        self.cpu.write(mfn << x86.PAGE_SHIFT, bytes(x86.PAGE_SIZE))
        sp = Sp(mfn, vm.id, gfn, role)
        self.sps[key] = sp
        self.by_mfn[mfn] = sp
        if not role.direct and role.level > 1 and (vm.id, gfn) in self.unsync:
            self.resync_gfn(vm, gfn)  # an upper table's stores must trap (the walks through it)
        if not role.direct:
            # The guest table is now shadowed: it must be writable in no spte of this VM.
            first = (vm.id, gfn) not in self.shadowed
            self.shadowed.setdefault((vm.id, gfn), {})[sp.mfn] = sp
            if first:
                self.write_protect(vm, gfn)
                self.log.emit("protect_gpt", v=vm.id, g=gfn)
        return sp

    def write_protected(self, vm: "Vm", gfn: int) -> bool:
        key = (vm.id, gfn)
        return key in self.shadowed and key not in self.unsync

    def is_gpt(self, vm: "Vm", gfn: int) -> bool:
        """Some sp shadows the guest table in gfn (write-protected or unsync)."""
        return (vm.id, gfn) in self.shadowed

    # ---------------------------------------------------------------- unsync and resync
    def try_unsync(self, vm: "Vm", gfn: int) -> bool:
        """The guest stores to the shadowed table in gfn: stop write-protecting it if only leaf sps
        shadow it (KVM's mmu_try_to_unsync_pages). Whether the gfn is unsync now."""
        key = (vm.id, gfn)
        if key in self.unsync:
            return True
        sps = self.shadowed.get(key)
        if not self.unsync_on or not sps or any(sp.role.level != 1 for sp in sps.values()):
            return False
        self.unsync.add(key)
        self.log.emit("unsync_gpt", v=vm.id, g=gfn)
        return True

    def resync_gfn(self, vm: "Vm", gfn: int) -> None:
        """Every sp of an unsync table resynced, and the table write-protected again."""
        for sp in list(self.shadowed.get((vm.id, gfn), {}).values()):
            self.sync_sp(vm, sp)
        self.unsync.discard((vm.id, gfn))
        self.write_protect(vm, gfn)
        self.log.emit("protect_gpt", v=vm.id, g=gfn)

    def sync_root(self, vm: "Vm", root: Sp) -> None:
        """Resync every unsync sp the shadow root reaches (a CR3 or mode load onto it)."""
        for vid, gfn in sorted(self.unsync):
            if vid != vm.id:
                continue
            for sp in list(self.shadowed.get((vid, gfn), {}).values()):
                if sp.role.paging == root.role.paging and any(r == root.root_of for r, _ in self.paths(sp)):
                    self.sync_sp(vm, sp)

    def _unsync_under(self, vm: "Vm", top: Sp) -> list[Sp]:
        """The unsync leaf sps at or under top (the new paths a link to top opens reach them)."""
        out = []
        for vid, gfn in sorted(self.unsync):
            if vid != vm.id:
                continue
            for sp in self.shadowed.get((vid, gfn), {}).values():
                seen, todo = set(), [sp]
                while todo:
                    s = todo.pop()
                    if s is top:
                        out.append(sp)
                        break
                    for parent_mfn, _idx in s.parents:
                        parent = self.by_mfn.get(parent_mfn)
                        if parent is not None and parent_mfn not in seen:
                            seen.add(parent_mfn)
                            todo.append(parent)
        return out

    def sync_gva(self, vm: "Vm", root: Sp, gva: int) -> None:
        """Resync the spte the shadow root maps gva by, if its sp is unsync (the guest's invlpg)."""
        sp = root
        while sp.role.level > 1:
            e = self.cpu.read64(sp.paddr + 8 * x86.index(gva, sp.role.level))
            if not e & x86.P:
                return
            sp = self.by_mfn[(e & x86.ADDR_MASK) >> x86.PAGE_SHIFT]
        if (vm.id, sp.gfn) in self.unsync and not sp.role.direct:
            self.sync_sp(vm, sp, x86.index(gva, 1))

    def sync_sp(self, vm: "Vm", sp: Sp, only: int | None = None) -> None:
        """Resync a leaf sp with the guest's table (its entry `only`, or all): each present spte
        that agrees with the gpte as it is now is kept (sync_spte), any other zapped."""
        gpt = self.page_in(vm, sp.gfn) << x86.PAGE_SHIFT  # resident: gpt_resident
        for idx in sorted(sp.gfns) if only is None else [only]:
            e = self.cpu.read64(sp.paddr + 8 * idx)
            if not e & x86.P:
                continue
            gfn = self._agrees(vm, sp, e, self.cpu.read64(gpt + 8 * idx))
            if gfn is None:
                self.zap(sp, idx)
                continue
            sp.gfns[idx] = gfn
            if self.log.events is not None:
                for root, base in self.paths(sp):
                    self.log.emit("sync_spte", v=sp.vm, r=root, o=sp.role.paging.name, x=x86.at(base, 1, idx))

    def _agrees(self, vm: "Vm", sp: Sp, spte: int, gpte: int) -> int | None:
        """The gfn of gpte if the leaf spte grants nothing the gpte (under the sp's path rights and
        role) does not, and maps p2m of that gfn; None if it must go."""
        paging = sp.role.paging
        if not gpte & x86.P or not gpte & x86.A or gpte & x86.reserved_mask(1, gpte, paging.nxe):
            return None
        gfn = (gpte & x86.ADDR_MASK) >> x86.PAGE_SHIFT
        if not 0 <= gfn < vm.nr_gfns or vm.p2m.get(gfn) != (spte & x86.ADDR_MASK) >> x86.PAGE_SHIFT:
            return None
        access = sp.role.access & entry_access(gpte)
        if spte & x86.RW and (not gpte & x86.D or self.write_protected(vm, gfn)
                              or self.machine.desc[vm.p2m[gfn]].status == "shared"
                              or not (access & ACC_W or not paging.wp and not spte & x86.US)):
            return None
        if spte & x86.US and not access & ACC_U or not access & ACC_X and not spte & x86.XD:
            return None
        return gfn

    def write_protect(self, vm: "Vm", gfn: int) -> None:
        mfn = vm.p2m.get(gfn)
        if mfn is None:
            return
        for sp_mfn, idx in list(self.rmap.get(mfn, ())):
            sp = self.by_mfn[sp_mfn]
            if sp.vm != vm.id:
                continue
            addr = sp.paddr + 8 * idx
            e = self.cpu.read64(addr)
            if e & x86.RW:
                self.cpu.write64(addr, e & ~x86.RW)
                self.owe_flush(vm.id, self.gvas_of(sp, idx))

    def link(self, parent: Sp, idx: int, child: Sp, vm: "Vm | None" = None) -> None:
        """Link child under parent's entry idx. `vm`: the VM, to resync an unsync child first (its
        stale sptes would otherwise be reached by new paths as if filled from the gptes now)."""
        addr = parent.paddr + 8 * idx
        old = self.cpu.read64(addr)
        new = child.paddr | UPPER
        if old & x86.ADDR_MASK == child.paddr and old & x86.P:
            return
        if vm is not None and self.unsync:
            for leaf in self._unsync_under(vm, child):
                self.sync_sp(vm, leaf)
        if old & x86.P:
            self.zap(parent, idx)
        self.cpu.write64(addr, new)
        child.parents.add((parent.mfn, idx))
        if self.log.events is not None:
            self._report_link(parent, idx, child)

    # ---------------------------------------------------------------- leaves
    def leaf_rights(self, vm: "Vm", w: Walk, access: int, gfn: int, mfn: int, write: bool, user: bool) -> int:
        """The rights of a leaf spte: the guest's effective rights, minus what DMM must withhold."""
        _, _, leaf = w.leaf
        writable = bool(access & ACC_W) and (bool(leaf & x86.D) or write)  # the walk just set D
        us = bool(access & ACC_U)
        nx = not access & ACC_X and vm.nxe
        protected = self.write_protected(vm, gfn) or self.machine.desc[mfn].status == "shared"
        if not access & ACC_W and write and not user and not vm.wp and not protected:
            # CR0.WP=0 (the CPU itself runs with WP=1): a writable, supervisor-only spte. A user page
            # made supervisor-only would escape SMAP and SMEP: with SMAP the store is emulated
            # instead; with SMEP the spte is not executable (KVM's smep_andnot_wp). A page that may
            # not be written at all keeps the guest's U/S: the store is emulated (found by dmm fuzz).
            if not vm.smap:
                writable = True
                nx = nx or (vm.smep and us)
                us = False
        if protected:
            writable = False
        return (x86.RW if writable else 0) | (x86.US if us else 0) | (x86.XD if nx else 0)

    def install_leaf(self, sp: Sp, idx: int, gfn: int, mfn: int, rights: int, guest_write: bool) -> None:
        """Fill (or upgrade) one leaf spte. Only a read-only -> writable upgrade of the same page for
        a guest-writable entry is done in place; any other change zaps first, so no TLB entry can
        keep a right the spte lost without a flush owed."""
        addr = sp.paddr + 8 * idx
        old = self.cpu.read64(addr)
        new = (mfn << x86.PAGE_SHIFT) | x86.P | x86.A | rights
        if old & x86.P:
            if old & LEAF_KEY == new & LEAF_KEY:
                return  # nothing changes: no event, no write
            upgrade = (old ^ new) & LEAF_KEY == x86.RW and new & x86.RW and guest_write
            if not upgrade:
                self.zap(sp, idx)
        self.cpu.write64(addr, new)
        self.rmap.setdefault(mfn, set()).add((sp.mfn, idx))  # rmap: present leaf <-> in rmap
        sp.gfns[idx] = gfn
        if self.log.events is not None:
            for root, base in self.paths(sp):
                self.log.emit("shadow_fill", v=sp.vm, r=root, o=sp.role.paging.name, x=x86.at(base, 1, idx), g=gfn, m=mfn,
                              w=bool(rights & x86.RW), nx=bool(rights & x86.XD))

    def test_and_clear_young(self, mfn: int) -> bool:
        """Was the page used through any spte since the last call? (The MMU sets A in the leaf.)
        Clearing A changes no right, so no flush is owed — as KVM's clear_young."""
        young = False
        for sp_mfn, idx in self.rmap.get(mfn, ()):
            addr = (sp_mfn << x86.PAGE_SHIFT) + 8 * idx
            e = self.cpu.read64(addr)
            if e & x86.A:
                young = True
                self.cpu.write64(addr, e & ~x86.A)
        return young

    # ---------------------------------------------------------------- where an sp is reached
    def paths(self, sp: Sp) -> list[tuple[int, int]]:
        """(guest root gfn, gva prefix) for every way a cached shadow root reaches sp."""
        if sp.root_of is not None:
            return [(sp.root_of, 0)]
        out = []
        for parent_mfn, idx in sp.parents:
            parent = self.by_mfn.get(parent_mfn)
            if parent is not None:
                out += [(root, x86.at(base, parent.role.level, idx)) for root, base in self.paths(parent)]
        return out

    def leaves(self, sp: Sp, base: int = 0) -> Iterator[int]:
        """The gva of every present leaf spte under sp (sp reached at gva prefix base)."""
        return (va for va, _sp, _idx, _e in self.leaf_entries(sp, base))

    def leaf_entries(self, sp: Sp, base: int = 0) -> Iterator[tuple[int, Sp, int, int]]:
        """(gva, leaf sp, index, spte) of every present leaf spte under sp."""
        for va, addr, e in self.leaf_sptes(sp.paddr, sp.role.level, base):
            yield va, self.by_mfn[addr >> x86.PAGE_SHIFT], (addr & 0xFFF) >> 3, e

    def leaf_sptes(self, table: int, level: int, base: int) -> Iterator[tuple[int, int, int]]:
        """(gva, machine address, spte) of every present leaf spte under the shadow table at
        machine address `table` (of `level`, reached at gva prefix base), following the tables in
        machine memory as the CPU does."""
        data = self.cpu.read(table, x86.PAGE_SIZE)
        entries = array("Q", data)
        for idx in _present(data):  # (tables are sparse: only the present entries are visited)
            if level == 4 and idx == 511:
                continue  # the CPU's hole
            va = x86.at(base, level, idx)
            if level == 1:
                yield va, table + 8 * idx, entries[idx]
            else:
                yield from self.leaf_sptes(entries[idx] & x86.ADDR_MASK, level - 1, va)

    def _report_link(self, parent: Sp, idx: int, child: Sp) -> None:
        """A new link makes the leaves already under child reachable by new (root, gva) paths:
        for each, the spec sees an spte filled."""
        for root, base in self.paths(parent):
            for x, leaf_sp, i, e in self.leaf_entries(child, x86.at(base, parent.role.level, idx)):
                self.log.emit("shadow_fill", v=parent.vm, r=root, o=parent.role.paging.name, x=x, g=leaf_sp.gfns[i],
                              m=(e & x86.ADDR_MASK) >> x86.PAGE_SHIFT, w=bool(e & x86.RW), nx=bool(e & x86.XD))

    def _report_zap(self, sp: Sp, idx: int, entry: int) -> None:
        for root, base in self.paths(sp):
            va = x86.at(base, sp.role.level, idx)
            gvas = [va] if sp.role.level == 1 else \
                self.leaves(self.by_mfn[(entry & x86.ADDR_MASK) >> x86.PAGE_SHIFT], va)
            for x in gvas:
                self.log.emit("zap_spte", v=sp.vm, r=root, o=sp.role.paging.name, x=x)

    def gvas_of(self, sp: Sp, idx: int) -> set[int]:
        """The gvas that reach leaf idx of sp, through any cached root."""
        return {x86.at(base, 1, idx) for _root, base in self.paths(sp)}

    # ---------------------------------------------------------------- reclaim
    def make_room(self, need: int, busy: set[int]) -> None:
        """At least `need` private frames free, if shadow pages can be reclaimed to free them (KVM's
        make_mmu_pages_available under its nr_mmu_pages limit; Xen's sh_prealloc): the oldest sps
        first, never a root some CPU is loaded with (`busy`, by mfn: its CR3 points there). Called
        before an operation allocates, never during one: a fault's path is built on sps that stay.
        Each reclaimed sp is zapped as any other (its leaves reported, a flush owed), so the spec sees
        zap_spte steps; if nothing is left to reclaim, the allocation that follows fails."""
        while len(self.private.free) < need:
            victim = next((sp for sp in self.sps.values() if sp.mfn not in busy), None)
            if victim is None:
                return
            self.reclaim(victim)

    def reclaim(self, sp: Sp) -> None:
        """Free one sp and what only it reaches: a root directly, any other by zapping every entry
        that links it (the last one frees it)."""
        if sp.root_of is not None or not sp.parents:
            self.free(sp)
            return
        for parent_mfn, idx in sorted(sp.parents):  # sorted: runs stay reproducible
            parent = self.by_mfn.get(parent_mfn)  # freed by an earlier zap of this loop: link gone too
            if parent is not None:
                self.zap(parent, idx)

    # ---------------------------------------------------------------- zapping
    def zap(self, sp: Sp, idx: int) -> None:
        """Drop one shadow entry; a child sp left without parents is freed. Owes a TLB flush."""
        addr = sp.paddr + 8 * idx
        e = self.cpu.read64(addr)
        if not e & x86.P:
            return
        if self.log.events is not None:
            self._report_zap(sp, idx, e)
        self.cpu.write64(addr, 0)
        self.owe_flush(sp.vm, self.gvas_of(sp, idx) if sp.role.level == 1 else FULL)
        target = (e & x86.ADDR_MASK) >> x86.PAGE_SHIFT
        if sp.role.level > 1:
            child = self.by_mfn[target]
            child.parents.discard((sp.mfn, idx))
            if not child.parents and child.root_of is None:
                self.free(child)
        else:
            sp.gfns.pop(idx, None)
            refs = self.rmap.get(target)
            if refs is not None:
                refs.discard((sp.mfn, idx))  # rmap: a dropped spte leaves its rmap
                if not refs:
                    del self.rmap[target]

    def free(self, sp: Sp) -> None:
        # the page read once (512 reads of 8 bytes through Unicorn cost ~7 ms a page); each present
        # entry read again before its zap, since zapping one may change the others
        for idx, e in enumerate(array("Q", self.cpu.read(sp.paddr, x86.PAGE_SIZE))):
            if not e & x86.P or (sp.role.level == 4 and idx == 511):
                continue  # absent, or the CPU's hole
            if self.cpu.read64(sp.paddr + 8 * idx) & x86.P:
                self.zap(sp, idx)
        for parent_mfn, idx in list(sp.parents):
            parent = self.by_mfn.get(parent_mfn)
            if parent is not None:
                self.cpu.write64(parent.paddr + 8 * idx, 0)
        del self.sps[(sp.vm, sp.gfn, self.role_key(sp.role))]
        del self.by_mfn[sp.mfn]
        if not sp.role.direct:
            group = self.shadowed[(sp.vm, sp.gfn)]
            group.pop(sp.mfn, None)
            if not group:
                del self.shadowed[(sp.vm, sp.gfn)]
                self.log.emit("unshadow_gpt", v=sp.vm, g=sp.gfn)
                if (sp.vm, sp.gfn) in self.unsync:
                    self.unsync.discard((sp.vm, sp.gfn))  # it was not write-protected
                else:
                    self.log.emit("unprotect_gpt", v=sp.vm, g=sp.gfn)
        if sp.root_of is not None:
            self.roots.pop((sp.vm, sp.root_of, self.role_key(sp.role).paging), None)
        self.private.release(sp.mfn)
        self.owe_flush(sp.vm, FULL)

    def zap_vm(self, vm_id: int) -> None:
        """Every shadow page of a VM (VM teardown)."""
        mine = [sp for sp in self.sps.values() if sp.vm == vm_id]
        if self.log.events is not None:
            for sp in mine:
                if sp.root_of is not None:
                    for x in self.leaves(sp):
                        self.log.emit("zap_spte", v=vm_id, r=sp.root_of, o=sp.role.paging.name, x=x)
        for sp in mine:
            sp.root_of = None  # roots too: nothing of this VM survives (and no path is reported twice)
        for sp in mine:
            if self.by_mfn.get(sp.mfn) is sp:  # not already freed as an orphaned child
                self.free(sp)
        self.roots = {k: v for k, v in self.roots.items() if k[0] != vm_id}

    def zap_mfn(self, vm_id: int, mfn: int) -> None:
        """Every leaf spte of a VM that maps mfn, through the rmap (DMM's propagation)."""
        for sp_mfn, idx in list(self.rmap.get(mfn, ())):
            sp = self.by_mfn[sp_mfn]
            if sp.vm == vm_id:
                self.zap(sp, idx)

    def protect_mfn(self, mfn: int) -> None:
        """Every spte of any VM that maps mfn loses its write right (sharing's protect)."""
        for sp_mfn, idx in list(self.rmap.get(mfn, ())):
            sp = self.by_mfn[sp_mfn]
            addr = sp.paddr + 8 * idx
            e = self.cpu.read64(addr)
            if e & x86.RW:
                self.cpu.write64(addr, e & ~x86.RW)
                self.owe_flush(sp.vm, self.gvas_of(sp, idx))

    # ---------------------------------------------------------------- emulated guest table writes
    def guest_table_written(self, vm: "Vm", gpa: int, size: int) -> None:
        """The guest wrote its own page table (emulated): zap what shadows the entries written. An
        unsync table's stores do not trap: its sptes stay, stale until resynced."""
        gfn = gpa >> x86.PAGE_SHIFT
        if (vm.id, gfn) in self.unsync:
            return
        first, last = (gpa & 0xFFF) >> 3, ((gpa & 0xFFF) + size - 1) >> 3
        for sp in list(self.shadowed.get((vm.id, gfn), {}).values()):
            for idx in range(first, min(last, x86.ENTRIES - 1) + 1):
                if sp.role.level == 4 and idx == 511:
                    continue
                if sp.mfn in self.by_mfn:
                    self.zap(sp, idx)


def _whole(role: Role) -> Role:
    return role


# Each entry's low byte, mapped to 1 when its P bit is set, else 0.
_P_BYTE = bytes(b & x86.P for b in range(256))


def _present(page: bytes) -> list[int]:
    """The indexes of a table page's present entries, found at C speed: P is bit 0 of each
    entry's first byte (little-endian)."""
    flags = page[::8].translate(_P_BYTE)
    out, i = [], flags.find(1)
    while i >= 0:
        out.append(i)
        i = flags.find(1, i + 1)
    return out
