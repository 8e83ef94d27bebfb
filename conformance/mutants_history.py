"""The catalogue's second part: seeded VMM bugs that imitate bugs KVM and Xen really had and fixed.

Selection rule. Each mutant here was chosen from a reading of the fix history of KVM's shadow MMU
(mmu.c, paging_tmpl.h, the x86 control-register paths) and of Xen's shadow code, guest page-table
walker, p2m, memory sharing and paging (commit messages, "Fixes:" tags, XSAs, comments that say
"we must ... otherwise ..."), before and independently of any tuning of the fuzzer for them: a
fix qualified when the bundled VMM has the mechanism it repairs, and the mutant reintroduces that
bug in the bundled VMM as the small, plausible developer mistake it was there. The description
names the fix it imitates. Resource bugs (leaks, off-by-one limits) and bugs that need particular
inputs (huge pages with unusual rights, unaligned stores to guest tables, gfns at the end of
memory, control-register changes after shadows were built, more pages to flush than the page-by-
page limit) were preferred: they measure what the generator does not yet produce. Some cannot be
caught by the current oracles at all (a leaked swap slot only makes the device fill up early, which
the spec allows); they are kept, and docs/conformance.md says so.

Like the first part, every mutant replaces one method (or one attribute) of one Vmm instance.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dmmcheck.impl import x86
from dmmcheck.impl.errors import BeyondMemory
from dmmcheck.impl.mmu import LEAF_KEY, Role, entry_access
from dmmcheck.impl.policies import OutOfMemory
from dmmcheck.impl.tlb import FULL, MAX_INVLPG
from dmmcheck.impl.walker import walk as _plain_walk
from dmmcheck.impl.x86 import Access

from .mutants import _during, _with, mutant

# ---------------------------------------------------------------- TLB flushes


@mutant("wp_gpt_flush_skipped",
        "shadowing a guest table clears RW in the sptes that map it but owes no TLB flush; imitates KVM's "
        "'Flush remote tlbs when reducing shadow pte permissions' fix",
        "refinement (protect_gpt sets flush_pending) / tlb_coherent")
def _(vmm: Any) -> None:
    _during(vmm.mmu, "write_protect", vmm.mmu, "owe_flush", lambda vm_id, gvas=FULL: None)


@mutant("spte_weakened_in_place",
        "a fill that makes a writable spte read-only rewrites it in place (no zap, so no flush owed); imitates "
        "KVM's mmu_spte_update rule 'whenever we overwrite a writable spte with a read-only one we must flush "
        "remote TLBs'",
        "refinement (shadow_fill guard: only fills and upgrades)")
def _(vmm: Any) -> None:
    mmu, real = vmm.mmu, vmm.mmu.install_leaf

    def install_leaf(sp: Any, idx: int, gfn: int, mfn: int, rights: int, guest_write: bool) -> None:
        addr = sp.paddr + 8 * idx
        old = mmu.cpu.read64(addr)
        new = (mfn << x86.PAGE_SHIFT) | x86.P | x86.A | rights
        if old & x86.P and old & x86.ADDR_MASK == new & x86.ADDR_MASK and old & x86.RW and not new & x86.RW \
                and (old ^ new) & LEAF_KEY:
            mmu.cpu.write64(addr, new)  # same page, fewer rights: "just update it"
            if vmm.events is not None:
                for root, base in mmu.paths(sp):
                    vmm.log.emit("shadow_fill", v=sp.vm, r=root, x=base | idx << x86.PAGE_SHIFT, g=gfn, m=mfn,
                             w=bool(rights & x86.RW), nx=bool(rights & x86.XD))
            return
        real(sp, idx, gfn, mfn, rights, guest_write)
    mmu.install_leaf = install_leaf


@mutant("flush_list_overflow_truncated",
        "when more than MAX_INVLPG pages are owed, the VMM keeps the first MAX_INVLPG of them instead of owing "
        "a full flush; imitates Xen's 'Fix TLB flushing in the second pass of sh_prealloc()' (an accumulated "
        "partial flush set missed entries; the fix flushes everything)",
        "refinement (tlb_sync guard) / observation (needs more than 8 gvas)")
def _(vmm: Any) -> None:
    mmu, tlb, real = vmm.mmu, vmm.tlb, vmm.mmu.owe_flush

    def owe_flush(vm_id: int, gvas: Any = FULL) -> None:
        keys = [(vm_id, c) for c in range(tlb.vcpus.get(vm_id, 1))]
        if gvas is not FULL and any(tlb.gvas.get(k, set()) is not FULL
                                    and len(tlb.gvas.get(k, set())) + len(gvas) > MAX_INVLPG for k in keys):
            for k in keys:
                owed = tlb.gvas.get(k, set())
                tlb.pending.add(k)
                tlb.gvas[k] = FULL if owed is FULL else set(sorted(owed | gvas)[:MAX_INVLPG])
            vmm.log.emit("flush_request", v=vm_id)
            return
        real(vm_id, gvas)
    mmu.owe_flush = owe_flush


@mutant("zap_all_keeps_cached_roots",
        "dropping all of a VM's shadow pages (teardown) frees the roots but leaves them "
        "in the CR3 root cache, so the next entry runs on a freed table; imitates Xen's XSA-250 fix "
        "('a failing sh_get_ref() must not be accompanied by installing the entry': no root without a reference)",
        "refinement / dead_vm_empty / crash")
def _(vmm: Any) -> None:
    mmu, real = vmm.mmu, vmm.mmu.zap_vm

    def zap_vm(vm_id: int) -> None:
        kept = {k: sp for k, sp in mmu.roots.items() if k[0] == vm_id}
        real(vm_id)
        mmu.roots.update(kept)
    mmu.zap_vm = zap_vm


# ---------------------------------------------------------------- write protection and huge pages


@mutant("wp_skips_split_huge_sptes",
        "write-protecting a newly shadowed guest table skips the sptes of direct sps (guest huge pages split "
        "into 4 KiB sptes); imitates Xen's 'Allow removing writable mappings from splintered page tables' "
        "(fl1 shadows were skipped)",
        "guest_pt_protected")
def _(vmm: Any) -> None:
    mmu = vmm.mmu

    def write_protect(vm: Any, gfn: int) -> None:
        mfn = vm.p2m.get(gfn)
        if mfn is None:
            return
        for sp_mfn, idx in list(mmu.rmap.get(mfn, ())):
            sp = mmu.by_mfn[sp_mfn]
            if sp.vm != vm.id or sp.role.direct:  # only "real" l1 shadows are searched
                continue
            addr = sp.paddr + 8 * idx
            e = mmu.cpu.read64(addr)
            if e & x86.RW:
                mmu.cpu.write64(addr, e & ~x86.RW)
                mmu.owe_flush(vm.id, mmu.gvas_of(sp, idx))
    mmu.write_protect = write_protect


@mutant("huge_dirty_role_before_walk",
        "the direct sp of a guest huge page is keyed by the D bit the entry had before the walk set it, so a "
        "write fault puts a writable spte into the clean (read-only) sp another clean huge entry shares; "
        "imitates KVM's 'fix direct sp's access corrupted'",
        "ad_emulated / refinement (shadow_fill needs g_dirty)")
def _(vmm: Any) -> None:
    real = vmm._shadow_path
    vmm._shadow_path = lambda vm, gva, w, dirty: real(vm, gva, w, bool(w.leaf[2] & x86.D))


@mutant("huge_leaf_access_not_in_role",
        "the direct sps of a guest huge page carry the rights of the path above the huge entry, not the huge "
        "entry's own, so huge entries with different rights over the same frames share sptes; imitates KVM's "
        "'fix conflict access permissions in direct sp'",
        "spte_rights / observation (needs huge entries that are read-only, supervisor or NX)")
def _(vmm: Any) -> None:
    mmu = vmm.mmu

    def _shadow_path(vm: Any, gva: int, w: Any, dirty: bool) -> tuple[Any, int]:
        sp = mmu.root(vm)
        access = 7
        for level, _addr, entry in w.entries[:-1]:
            access &= entry_access(entry)
            child_gfn = (entry & x86.ADDR_MASK) >> x86.PAGE_SHIFT
            child = mmu.shadow_table(vm, child_gfn, Role(level - 1, access, vm.paging))
            mmu.link(sp, x86.index(gva, level), child)
            sp = child
        level, _addr, leaf = w.leaf
        direct_access = access  # the huge entry's own rights are folded in below, too late for the role
        access &= entry_access(leaf)
        gfn = w.paddr >> x86.PAGE_SHIFT
        while level > 1:
            span = x86.ENTRIES ** (level - 1)
            child = mmu.shadow_table(vm, gfn & ~(span - 1),
                                     Role(level - 1, direct_access, vm.paging, direct=True, dirty=dirty))
            mmu.link(sp, x86.index(gva, level), child)
            sp, level = child, level - 1
        return sp, access
    vmm._shadow_path = _shadow_path


# ---------------------------------------------------------------- the guest page-table walker


@mutant("accessed_set_on_faulting_walk",
        "a walk that faults on the access rights still writes A into every entry it read, the leaf included; "
        "imitates Xen's 'Fix error paths in guest-pagetable walker' (A written back only after a successful "
        "walk) and KVM's 'Update accessed and dirty bits after guest pagetable walk' (whose message calls "
        "the order unspecified)",
        # SDM 4.8 sets A on every entry a translation uses, and a rights fault has a complete one:
        # what the fix changed is allowed either way, so the fair oracle accepts it.
        "none: the architecture allows it (docs/conformance.md, Fair oracles)")
def _(vmm: Any) -> None:
    real = vmm.page_fault

    def page_fault(vm: Any, gva: int, acc: Access, user: bool, ac: bool, value: int, *rest: Any) -> Any:
        res = real(vm, gva, acc, user, ac, value, *rest)
        if res is None or not res.fault or res.gp or res.oom or not res.error_code & x86.PF_P \
                or res.error_code & x86.PF_RSVD:
            return res
        try:
            w = _plain_walk(lambda a: vmm.read64(vm, a), None, (vm.cr3_gfn or 0) << x86.PAGE_SHIFT, gva, acc,
                            vm.mode(user, ac), set_ad=False)
            if w.fault and w.entries and w.leaf[2] & x86.P:
                for _level, addr, e in w.entries:
                    if not e & x86.A:
                        vmm.gpa_write(vm, addr, (e | x86.A).to_bytes(8, "little"), walker=True)
        except (BeyondMemory, OutOfMemory):  # a table beyond memory or out of memory: nothing written
            pass
        return res
    vmm.page_fault = page_fault


@mutant("wp0_write_leaves_dirty_clear",
        "a supervisor write allowed only by CR0.WP=0 (the leaf is read-only) does not set the leaf's D bit; "
        "imitates Xen's 'Re-implement the pagetable walker' fix 'supervisor writes without CR0.WP now set the "
        "leaf dirty bit'",
        "observation (A/D) / ad_emulated")
def _(vmm: Any) -> None:
    real = vmm.walk

    def walk(read: Any, write: Any, cr3: int, gva: int, acc: Access, mode: Any) -> Any:
        if write is None or acc is not Access.WRITE or mode.wp or mode.user:
            return real(read, write, cr3, gva, acc, mode)
        held: list[tuple[int, int]] = []
        w = real(read, lambda a, v: held.append((a, v)), cr3, gva, acc, mode)
        leaf_addr = w.leaf[1] if w.entries else None
        for a, v in held:
            if a == leaf_addr and not w.writable:
                v = v & ~x86.D | (w.leaf[2] & x86.D)  # D only for a write the entry itself allows
            write(a, v)
        return w
    vmm.walk = walk


@mutant("pml4e_ps_not_reserved",
        "the walker ignores PS (bit 7) in a PML4 entry instead of faulting with RSVD; imitates Xen's XSA-176 "
        "fix 'fully honor PS bits in guest page table walks'",
        "observation / refinement (gmap)")
def _(vmm: Any) -> None:
    real = vmm.walk

    def walk(read: Any, write: Any, cr3: int, gva: int, acc: Access, mode: Any) -> Any:
        pml4e = (cr3 & x86.ADDR_MASK) + 8 * x86.index(gva, 4)

        def rd(a: int) -> int:
            v = read(a)
            return v & ~x86.PS if a == pml4e else v

        def wr(a: int, v: int) -> None:
            write(a, v | (read(a) & x86.PS if a == pml4e else 0))
        return real(rd, wr if write is not None else None, cr3, gva, acc, mode)
    vmm.walk = walk


@mutant("fetch_error_code_ignores_smep",
        "a faulting instruction fetch reports the I/D error-code bit only when EFER.NXE is on, not when only "
        "CR4.SMEP is; imitates Xen's 'Fix pagewalk's handling of instruction fetches' (KVM: I/D if NX or SMEP)",
        "observation (error code)")
def _(vmm: Any) -> None:
    real = vmm.walk

    def walk(read: Any, write: Any, cr3: int, gva: int, acc: Access, mode: Any) -> Any:
        w = real(read, write, cr3, gva, acc, mode)
        if w.fault and acc is Access.FETCH and not mode.nxe:
            w.error_code &= ~x86.PF_I
        return w
    vmm.walk = walk


@mutant("smep_skipped_without_nxe",
        "with EFER.NXE off the walker checks a fetch like a read, so SMEP does not stop a supervisor fetch from "
        "a user page; imitates Xen's 'Re-implement the pagetable walker' fix 'SMEP now inhibits ... instruction "
        "fetch even if NX isn't active'",
        "crash (the real MMU keeps faulting) / observation")
def _(vmm: Any) -> None:
    real = vmm.walk

    def walk(read: Any, write: Any, cr3: int, gva: int, acc: Access, mode: Any) -> Any:
        if acc is not Access.FETCH or mode.nxe or not mode.smep:
            return real(read, write, cr3, gva, acc, mode)
        w = real(read, write, cr3, gva, acc, _with(mode, smep=False))
        if w.fault:
            w.error_code |= x86.PF_I  # the error code still says "fetch": SMEP is on
        return w
    vmm.walk = walk


# ---------------------------------------------------------------- CR0.WP, CR4, EFER and the shadow


@mutant("smep_wp0_spte_executable",
        "the CR0.WP=0 supervisor-write spte of a user page (U cleared, W set) is not made NX under CR4.SMEP, so "
        "the guest kernel may execute the user page; imitates KVM's CR0.WP=0 + SMEP handling (spte.nx set with "
        "spte.u=0, smep_andnot_wp in the page role)",
        "observation")
def _(vmm: Any) -> None:
    real = vmm.mmu.leaf_rights

    def leaf_rights(vm: Any, *a: Any) -> int:
        saved, vm.smep = vm.smep, False
        try:
            return real(vm, *a)
        finally:
            vm.smep = saved
    vmm.mmu.leaf_rights = leaf_rights


def _role_ignores(vmm: Any, **dropped: bool) -> None:
    """Shadow pages are looked up by a role without the bits `dropped` (each read as the value given):
    a vCPU whose mode differs only in those runs on sptes built for the other mode."""
    vmm.mmu.role_key = lambda role: replace(role, paging=replace(role.paging, **dropped))


@mutant("smep_smap_toggle_keeps_shadow",
        "toggling CR4.SMEP or CR4.SMAP keeps the sptes built before (among them CR0.WP=0 supervisor-only sptes "
        "of user pages); imitates KVM's 'fix SMAP virtualization' (reset the MMU when CR4.SMAP changes, "
        "smap_andnot_wp and smep_andnot_wp in the page role)",
        "observation")
def _(vmm: Any) -> None:
    _role_ignores(vmm, smep=False, smap=False)


@mutant("nxe_toggle_keeps_shadow",
        "changing EFER.NXE keeps the sptes built under the old value, so a page whose XD bit became reserved is "
        "still served; imitates KVM's 'Use different shadows when EFER.NXE changes' (and set_efer's MMU reset "
        "on an NX change)",
        "observation")
def _(vmm: Any) -> None:
    _role_ignores(vmm, nxe=True)


# ---------------------------------------------------------------- emulated writes to guest tables


@mutant("misaligned_gpt_write_zaps_first_entry",
        "an emulated store to a guest table that straddles two entries zaps only the sptes of the entry its "
        "first byte is in; imitates KVM's 'Handle misaligned accesses to write protected guest page tables'",
        "no_stale_spte / refinement (needs an unaligned store to a guest table)")
def _(vmm: Any) -> None:
    real = vmm.mmu.guest_table_written
    vmm.mmu.guest_table_written = lambda vm, gpa, size: real(vm, gpa, min(size, 8 - (gpa & 7)))


# ---------------------------------------------------------------- limits at the edge of memory


@mutant("gfn_limit_inclusive",
        "the bound check before demand paging treats the VM's gfn count as inclusive: gfn nr_gfns, one past the "
        "end of guest memory, is paged in (so a guest table there reads as zeros instead of faulting); imitates "
        "Xen's 'Fix off-by-one error in do_memory_op()'s start_extent range check' and 'fix checks against "
        "max_mapped_pfn'",
        "observation (RSVD fault) / refinement (needs an entry naming gfn nr_gfns)")
def _(vmm: Any) -> None:
    def gfn_mfn(vm: Any, gfn: int) -> int:
        mfn = vm.p2m.get(gfn)
        if mfn is None:
            if not 0 <= gfn <= vm.nr_gfns:
                raise BeyondMemory(f"gfn {gfn:#x} is outside VM {vm.id}'s memory")
            mfn = vmm.policy.fault_in(vm, gfn)
        return mfn
    vmm.gfn_mfn = vmm.mmu.page_in = gfn_mfn


@mutant("teardown_skips_last_gfn",
        "VM teardown gives back the gfns below the highest one the VM holds, not that one (the highest gfn "
        "treated as an exclusive bound); imitates Xen's 'fix checks against max_mapped_pfn' (an off-by-one in "
        "relinquish_shared_pages)",
        "crash (pool not empty) / refinement (vm_destroy guard)")
def _(vmm: Any) -> None:
    policy = vmm.policy
    machine = policy.machine

    def release_all(vm: Any) -> None:
        for mfn in list(machine.active[vm.id]):
            others = sorted((v, g) for v, g in vmm.mapping.holders.get(mfn, ()) if v != vm.id)
            if machine.desc[mfn].status == "shared" and others:
                w, g = others[0]
                machine.rehome(mfn, w)
                vmm.log.emit("share_rehome", m=mfn, v=vm.id, w=w, g=g)
        held = set(vm.p2m) | set(vm.swapped)
        for gfn in range(max(held, default=0)):
            if gfn in held:
                policy.balloon_inflate(vm, gfn)
        while policy.pool_shrink(vm) is not None:
            pass
    policy.release_all = release_all


# ---------------------------------------------------------------- resources: slots, pages, pools


@mutant("swap_io_error_leaks_slot",
        "a swap-out whose slot write fails leaves the slot allocated (a leaked swap slot: the device fills up "
        "early); imitates Xen's xenpaging 'handle evict failures' (a failed eviction must be undone completely)",
        "none today: the spec allows swap_full at any time and slot_used is read from the VMs, not the device")
def _(vmm: Any) -> None:
    swap = vmm.policy.swap
    if swap is not None:
        _during(vmm.policy, "swap_out", swap, "release", lambda slot: None)


@mutant("balloon_drop_without_free",
        "ballooning out the last holder's page drops the reference but never frees the page, which stays on the "
        "active list with refcount 0; imitates Xen's 'Fix more ballooning+paging and ballooning+sharing bugs' "
        "('do not leak the underlying page')",
        "descriptor_status / refinement")
def _(vmm: Any) -> None:
    machine = vmm.machine
    _during(vmm.policy, "balloon_inflate", vmm.policy, "_drop", lambda mfn, to_vmm=False: machine.drop(mfn))


@mutant("shadow_frame_leaked",
        "a freed shadow page's frame is never returned to the VMM's private allocator, which runs dry after "
        "enough zaps; imitates Xen's XSA-410 fixes ('truly free paging pool memory') and KVM's 'reclaim the "
        "zapped-obsolete page first'",
        "crash (out of private frames: needs a shadow_pages limit, or long runs with many shadow rebuilds)")
def _(vmm: Any) -> None:
    _during(vmm.mmu, "free", vmm.private, "release", lambda mfn: None)


@mutant("reclaim_skips_flush", "shadow pages reclaimed at the limit are zapped without the TLB flush their "
        "sptes owe: a vCPU keeps translating through a freed, reused table; imitates Xen's 'Fix TLB flushing in "
        "the second pass of sh_prealloc()'", "refinement (flush_pending) / observation; needs a shadow_pages limit")
def _(vmm: Any) -> None:
    _during(vmm.mmu, "make_room", vmm.mmu, "owe_flush", lambda vm_id, gvas=None: None)


@mutant("budget_check_off_by_one",
        "the global budget check lets the VM pools hold one page more than the budget (<= for <); imitates "
        "Xen's XSA-355 'memory: fix off-by-one in XSA-346 change' (a capacity check needed >=)",
        "none today: needs a configuration with a budget and a spec that models it")
def _(vmm: Any) -> None:
    policy = vmm.policy
    policy._within_budget = lambda: policy.budget is None or policy.machine.held() <= policy.budget


# ---------------------------------------------------------------- sharing


@mutant("share_pt_check_one_side",
        "a merge checks only the page being discarded for use as a shadowed guest table, not the page kept "
        "(which becomes shared and read-only); imitates Xen's 'mem_sharing: fix sharability check during fork "
        "reset' (a partial sharability check)",
        "refinement (share_merge guard; needs a merge the spec forbids, offered anyway)")
def _(vmm: Any) -> None:
    policy, mapping = vmm.policy, vmm.mapping
    machine = policy.machine

    def share_pair(vm1: Any, g1: int, vm2: Any, g2: int) -> bool:
        m1, m2 = vm1.p2m.get(g1), vm2.p2m.get(g2)
        if m1 is None or m2 is None or m1 == m2 or machine.desc[m2].status != "mapped":
            return False
        if mapping.is_page_table(vm2, g2):
            return False
        if mapping.read_frame(m1) != mapping.read_frame(m2):
            return False
        mapping.protect_mfn(m1)
        mapping.unmap_gfn(vm2, g2)
        mapping.map_gfn(vm2, g2, m1)
        machine.hold(m1)
        policy._drop(m2)
        policy.stats["merges"] += 1
        vmm.log.emit("share_merge", v1=vm1.id, g1=g1, m1=m1, v2=vm2.id, g2=g2, m2=m2)
        return True
    policy.share_pair = share_pair


@mutant("unshare_writes_stale_mfn",
        "a write by the VMM on the guest's behalf to a shared page breaks the sharing but then writes the old "
        "(still shared) page, not the new copy; imitates Xen's 'Fix more ballooning+paging and ballooning+sharing "
        "bugs' ('not properly refreshing the mfn ... after the unshare')",
        "observation (guest memory of both holders)")
def _(vmm: Any) -> None:
    policy = vmm.policy
    real = policy.cow_break

    def cow_break(vm: Any, gfn: int) -> int | None:
        old = vm.p2m[gfn]
        return None if real(vm, gfn) is None else old  # the mfn looked up before the unshare is kept
    _during(vmm, "gpa_write", policy, "cow_break", cow_break)
