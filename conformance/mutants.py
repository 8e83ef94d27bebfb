"""Seeded VMM bugs: the catalogue that measures the harness's power to find bugs (`dmm mutants`).

Each mutant is a mistake a VMM developer could make, applied to one Vmm instance at run time by
replacing one of its methods (the adapter configuration's `mutant`, or DMM_MUTANT): nothing in
impl/ knows of them, and with none switched on they cost nothing. Each names what it breaks and
which oracle should catch it; `dmm mutants` reports which one did.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from dmmcheck.impl import x86


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str  # the bug
    catches: str  # the invariant or observation that should catch it
    apply: Callable[[Any], None]


MUTANTS: dict[str, Mutant] = {}


def mutant(name: str, description: str, catches: str) -> Callable[[Callable[[Any], None]], Callable[[Any], None]]:
    def register(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        MUTANTS[name] = Mutant(name, description, catches, fn)
        return fn
    return register


def apply_mutant(vmm: Any, name: str | None) -> None:
    if not name:
        return
    try:
        MUTANTS[name].apply(vmm)
    except KeyError:
        raise ValueError(f"unknown mutant {name!r} (dmm mutants lists them)") from None


def _during(obj: Any, method: str, target: Any, attr: str, replacement: Any) -> None:
    """While obj.method runs, target.attr is replacement (a bug local to one code path)."""
    real = getattr(obj, method)

    def wrapped(*a: Any, **k: Any) -> Any:
        saved = getattr(target, attr)
        setattr(target, attr, replacement)
        try:
            return real(*a, **k)
        finally:
            setattr(target, attr, saved)
    setattr(obj, method, wrapped)


# ---------------------------------------------------------------- rmap
@mutant("rmap_insert_forgotten", "a new leaf spte is not added to the rmap of its mfn", "rmap_consistent")
def _(vmm: Any) -> None:
    mmu, real = vmm.mmu, vmm.mmu.install_leaf

    def install_leaf(sp: Any, idx: int, gfn: int, mfn: int, rights: int, guest_write: bool) -> None:
        before = set(mmu.rmap.get(mfn, ()))
        real(sp, idx, gfn, mfn, rights, guest_write)
        if (sp.mfn, idx) not in before:
            mmu.rmap[mfn].discard((sp.mfn, idx))
    mmu.install_leaf = install_leaf


@mutant("rmap_remove_forgotten", "a zapped leaf spte stays in the rmap", "rmap_consistent")
def _(vmm: Any) -> None:
    mmu, real = vmm.mmu, vmm.mmu.zap

    def zap(sp: Any, idx: int) -> None:
        e = mmu.cpu.read64(sp.paddr + 8 * idx)
        real(sp, idx)
        if sp.role.level == 1 and e & x86.P:
            mmu.rmap.setdefault((e & x86.ADDR_MASK) >> 12, set()).add((sp.mfn, idx))
    mmu.zap = zap


# ---------------------------------------------------------------- propagation of p2m changes
@mutant("no_zap_on_remap", "unmapping a gfn drops p2m but leaves its sptes in place", "no_stale_spte")
def _(vmm: Any) -> None:
    vmm.mmu.zap_mfn = lambda vm_id, mfn: None
    vmm.mapping.zap_gfn = lambda vm, gfn: None


@mutant("gpt_not_write_protected", "shadowing a guest table leaves existing writable sptes of it writable",
        "guest_pt_protected")
def _(vmm: Any) -> None:
    vmm.mmu.write_protect = lambda vm, gfn: None


@mutant("gpt_write_not_propagated", "an emulated write to a guest table does not zap the sptes it shadows",
        "no_stale_spte / observation")
def _(vmm: Any) -> None:
    vmm.mmu.guest_table_written = lambda vm, gpa, size: None


# ---------------------------------------------------------------- rights and A/D
@mutant("dirty_not_emulated", "a read fault installs a writable spte although the guest's D bit is clear",
        "ad_emulated")
def _(vmm: Any) -> None:
    real = vmm.mmu.leaf_rights
    vmm.mmu.leaf_rights = lambda vm, w, access, gfn, mfn, write, user: real(vm, w, access, gfn, mfn, True, user) \
        if not write and access & 1 else real(vm, w, access, gfn, mfn, write, user)


@mutant("accessed_not_set", "the software walk does not write the guest's A/D bits", "ad_emulated / observation")
def _(vmm: Any) -> None:
    real = vmm.walk
    vmm.walk = lambda read, write, cr3, gva, acc, mode: real(read, None, cr3, gva, acc, mode)


@mutant("user_bit_ignored", "leaf sptes are user-accessible whatever the guest's U/S", "spte_rights / observation")
def _(vmm: Any) -> None:
    real = vmm.mmu.leaf_rights
    vmm.mmu.leaf_rights = lambda *a: real(*a) | x86.US


@mutant("wp0_writes_everything", "the software walk ignores CR0.WP: supervisor writes to read-only pages go through",
        "observation")
def _(vmm: Any) -> None:
    real = vmm.walk
    vmm.walk = lambda read, write, cr3, gva, acc, mode: real(read, write, cr3, gva, acc, _with(mode, wp=False))


@mutant("nx_ignored", "leaf sptes never carry NX", "spte_rights / observation")
def _(vmm: Any) -> None:
    real = vmm.mmu.leaf_rights
    vmm.mmu.leaf_rights = lambda *a: real(*a) & ~x86.XD


@mutant("smep_not_enforced", "CR4.SMEP is not passed on to the CPU or the software walk", "observation")
def _(vmm: Any) -> None:
    _drop_control(vmm, "smep")


@mutant("smap_not_enforced", "CR4.SMAP is not passed on to the CPU or the software walk", "observation")
def _(vmm: Any) -> None:
    _drop_control(vmm, "smap")


@mutant("reserved_bits_ignored", "the software walk does not check reserved bits", "observation")
def _(vmm: Any) -> None:
    real = vmm.walk
    keep = ~(x86.RSVD_HIGH | (0xFF << 13))  # bits 51:MAXPHYADDR and a huge leaf's 20:13
    vmm.walk = lambda read, write, cr3, gva, acc, mode: real(lambda a: read(a) & keep, write, cr3, gva, acc, mode)


@mutant("huge_page_offset_dropped", "a guest 2 MiB / 1 GiB page maps every 4 KiB piece to its first frame",
        "observation")
def _(vmm: Any) -> None:
    real = vmm.walk

    def walk(read: Any, write: Any, cr3: int, gva: int, acc: Any, mode: Any) -> Any:
        w = real(read, write, cr3, gva, acc, mode)
        if not w.fault and w.level > 1:
            w.paddr = x86.leaf_frame(w.level, w.leaf[2]) | (gva & 0xFFF)
        return w
    vmm.walk = walk


# ---------------------------------------------------------------- TLB and roots
@mutant("flush_forgotten", "weakening or dropping an spte does not make the VM owe a TLB flush",
        "refinement (flush_pending) / observation")
def _(vmm: Any) -> None:
    vmm.mmu.owe_flush = lambda vm_id, gvas=None: None


@mutant("flush_invlpg_wrong_address", "paying an owed flush page by page, the VMM invalidates the page after "
        "the one whose spte it weakened", "refinement (tlb_sync) / observation")
def _(vmm: Any) -> None:
    def invalidate(c: int, gva: int) -> int:
        vmm.cpus[c].invlpg(gva + x86.PAGE_SIZE)
        return gva + x86.PAGE_SIZE
    vmm.tlb.invalidate = invalidate


@mutant("root_cache_by_vm", "the CR3 root cache is keyed by VM only: a CR3 load reuses another root's shadow",
        "observation / no_stale_spte")
def _(vmm: Any) -> None:
    mmu, real = vmm.mmu, vmm.mmu.root

    def root(vm: Any) -> Any:
        for (vid, _gfn, paging), sp in mmu.roots.items():
            if vid == vm.id and paging == vm.paging:
                return sp
        return real(vm)
    mmu.root = root


# ---------------------------------------------------------------- pools and descriptors
@mutant("alloc_vmm_pool_first", "demand paging takes from the VMM pool before the VM's idle pool",
        "refinement (demand_page guard)")
def _(vmm: Any) -> None:
    m = vmm.machine

    def allocate(vm: int) -> int | None:
        mfn = m.vmm_pop()
        if mfn is None:
            mfn = m.idle[vm].pop()
        if mfn is None:
            return None
        m.active[vm].push(mfn)
        d = m.desc[mfn]
        d.status, d.owner, d.refcount = "mapped", vm, 1
        return mfn
    m.allocate = allocate


@mutant("quota_ignored", "the per-VM quota is never checked: demand paging and pool growth take VMM pages "
        "past it, and a shared page is rehomed to a holder whose pools are full",
        "within_quota / refinement (allocatable, pool_grow and share_rehome guards; needs a quota)")
def _(vmm: Any) -> None:
    vmm.policy._within_quota = lambda vm: True


@mutant("release_keeps_status", "a page freed to an idle pool keeps status mapped", "descriptor_status")
def _(vmm: Any) -> None:
    m, real = vmm.machine, vmm.machine.release

    def release(mfn: int, to_vmm: bool = False) -> None:
        real(mfn, to_vmm)
        if not to_vmm:
            m.desc[mfn].status = "mapped"
    m.release = release


@mutant("cross_vm_p2m", "a gfn's machine page is looked up in VM 0's p2m when the VM has none yet",
        "isolation")
def _(vmm: Any) -> None:
    real = vmm.gfn_mfn

    def gfn_mfn(vm: Any, gfn: int) -> int:
        other = vmm.vms.get(0)
        if vm.id != 0 and other is not None and gfn not in vm.p2m and gfn in other.p2m:
            return other.p2m[gfn]
        return real(vm, gfn)
    vmm.gfn_mfn = vmm.mmu.page_in = gfn_mfn


# ---------------------------------------------------------------- swapping
@mutant("swap_slot_reused", "the swap device hands out a slot that is still in use", "swap_exclusive / observation")
def _(vmm: Any) -> None:
    swap = vmm.policy.swap
    if swap is None:
        return
    real = swap.allocate

    def allocate() -> int:
        if swap.used:
            return min(swap.used)
        return real()
    swap.allocate = allocate


@mutant("swap_in_not_read", "swap-in maps a fresh page without reading the slot back", "observation")
def _(vmm: Any) -> None:
    if vmm.policy.swap is not None:
        vmm.policy.swap.read = lambda slot: bytes(x86.PAGE_SIZE)


# ---------------------------------------------------------------- sharing and ballooning
@mutant("cow_refcount_kept", "a copy-on-write break does not drop the shared page's reference", "refcount_exact")
def _(vmm: Any) -> None:
    _during(vmm.policy, "cow_break", vmm.policy, "_drop", lambda mfn, to_vmm=False: None)


@mutant("merge_without_compare", "pages are merged without comparing their bytes", "observation")
def _(vmm: Any) -> None:
    _during(vmm.policy, "share_pair", vmm.mapping, "read_frame", lambda mfn: b"")


@mutant("balloon_frees_mapped", "balloon inflate frees the page without zapping its sptes", "no_stale_spte / isolation")
def _(vmm: Any) -> None:
    _during(vmm.policy, "balloon_inflate", vmm.mmu, "zap_mfn", lambda vm_id, mfn: None)


# ---------------------------------------------------------------- vCPUs, roles and unsync sps
@mutant("remote_flush_forgotten", "a weakened or dropped spte owes a TLB flush to the vCPU the VMM runs, not to "
        "the VM's other vCPUs, whose TLBs keep the old translation", "refinement (flush_pending) / observation")
def _(vmm: Any) -> None:
    tlb = vmm.tlb

    def owe(vm_id: int, gvas: Any = None) -> None:
        vm = vmm.vms.get(vm_id)
        tlb.owe_vcpu(vm_id, vm.running if vm is not None else 0, gvas)
        vmm.log.emit("flush_request", v=vm_id)
    vmm.mmu.owe_flush = owe


@mutant("mode_switch_flush_forgotten", "a vCPU switching to another role's shadow keeps the TLB entries filled "
        "from the old one (no flush owed)", "refinement (flush_pending)")
def _(vmm: Any) -> None:
    _during(vmm, "set_controls", vmm.tlb, "owe_vcpu", lambda *a, **k: None)


@mutant("role_smep_ignored", "shadow pages are looked up without CR4.SMEP in their role: a vCPU with SMEP and "
        "one without share sptes built for either", "refinement / observation")
def _(vmm: Any) -> None:
    vmm.mmu.role_key = lambda role: replace(role, paging=replace(role.paging, smep=False))


@mutant("resync_skipped_before_link", "an unsync leaf sp is linked under a new parent without a resync: its stale "
        "sptes appear under the new path as if filled from the gptes now", "refinement (shadow_fill guard)")
def _(vmm: Any) -> None:
    real = vmm.mmu.link
    vmm.mmu.link = lambda parent, idx, child, vm=None: real(parent, idx, child)


@mutant("resync_skipped_on_invlpg", "the guest's invlpg of a gva does not resync its spte in an unsync sp: the "
        "old translation outlives the invlpg", "refinement (invlpg guard) / observation")
def _(vmm: Any) -> None:
    _during(vmm, "invlpg", vmm.mmu, "sync_gva", lambda vm, root, gva: None)


@mutant("cr3_load_skips_resync", "a CR3 load does not resync the unsync sps the new root reaches",
        "refinement (cr3_load guard) / observation")
def _(vmm: Any) -> None:
    _during(vmm, "load_cr3", vmm.mmu, "sync_root", lambda vm, root: None)


@mutant("mode_load_skips_resync", "a mode load onto another role's cached shadow does not resync its unsync sps",
        "refinement (set_mode guard) / observation")
def _(vmm: Any) -> None:
    _during(vmm, "set_controls", vmm.mmu, "sync_root", lambda vm, root: None)


@mutant("upper_store_not_propagated", "an emulated store to an upper-level guest entry zaps nothing: the shadow "
        "entry linking the subtree below it stays, and every gva under the entry keeps its old translation",
        "refinement (guest_store_upper) / no_stale_spte / observation")
def _(vmm: Any) -> None:
    mmu = vmm.mmu
    real = mmu.zap
    _during(mmu, "guest_table_written", mmu, "zap", lambda sp, idx: real(sp, idx) if sp.role.level == 1 else None)


@mutant("upper_table_left_unsync", "an unsync leaf table shadowed as an upper-level table too stays unsync: the "
        "guest's stores to its upper entries no longer trap", "walk_protected / refinement / observation")
def _(vmm: Any) -> None:
    vmm.mmu.resync_gfn = lambda vm, gfn: None


def _with(mode: Any, **changes: Any) -> Any:
    return x86.Mode(**{**{f: getattr(mode, f) for f in ("user", "wp", "nxe", "smep", "smap", "ac")}, **changes})


def _drop_control(vmm: Any, bit: str) -> None:
    """The VMM keeps the vCPU's bit (its role, its shadow) but neither the real CPU nor the
    software walk is given it."""
    real_walk = vmm.walk
    vmm.walk = lambda read, write, cr3, gva, acc, mode: real_walk(read, write, cr3, gva, acc,
                                                                 _with(mode, **{bit: False}))
    for cpu in vmm.cpus:
        real_load = cpu.set_mode
        cpu.set_mode = lambda cr3, mode, real_load=real_load: real_load(cr3, _with(mode, **{bit: False}))
from . import mutants_history  # noqa: E402,F401  (the catalogue's second part: bugs KVM and Xen fixed)
