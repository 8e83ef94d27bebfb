"""DMM policies: demand paging, swapping, content-based sharing, ballooning, pool sizing.

Every policy works on the one mapping, through the DMM mapping interface only (impl/mapping.py:
`map_gfn`, `unmap_gfn`, `zap_gfn`, `protect_mfn`, `young` and the frame copies), its whole view of
the VMM, never on an spte or the rmap (tests/impl/test_policies.py enforces it). That is the patent's point: the policies compose because
each is a change of p2m that the one propagation mechanism (write protection + rmap) carries to the
shadow. Each policy step is reported under the spec action's name, to the event sink (impl/events.py).

Invariants kept here, where they are enforced:
- a gfn is resident (p2m), swapped (one slot), ballooned, or none — never two at once
- a page's refcount is its number of (vm, gfn) holders; the last holder gone frees it   (_drop)
- pages merge only after a byte-for-byte compare, never on a hash alone                  (share_pair)
- a swap slot is written and flushed before the page is freed; a failed write leaves the
  page resident and intact                                                               (swap_out)
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .events import EventLog
from .machine import MAPPED, SHARED
from .swap import SwapDevice, SwapFull, SwapIoError
from .x86 import PAGE_SIZE

if TYPE_CHECKING:
    from .machine import Machine
    from .mapping import Mapping
    from .vmm import Vm

ZERO_PAGE = bytes(PAGE_SIZE)


class OutOfMemory(Exception):
    """No machine page for the gfn, after reclaim: the VM's access ends as out-of-memory."""


class Policies:
    def __init__(self, mapping: "Mapping", machine: "Machine", log: EventLog, swap: SwapDevice | None = None,
                 budget: int | None = None, reclaim: bool = True, quota: int | None = None) -> None:
        self.mapping = mapping
        self.machine = machine
        self.log = log
        self.swap = swap
        self.budget = budget  # pages all VM pools may hold together; None: every DMM page
        self.quota = quota  # pages one VM's pools (active and idle) may hold; None: every DMM page
        self.reclaim_enabled = reclaim and swap is not None
        self._hand = 0  # the clock hand, an index into the DMM frames
        self.fail_next_allocation = False  # injected: the next allocation finds no page at all
        self._injected = False  # the last allocation failed because it was told to (oom_injected)
        self.stats = {"swap_outs": 0, "swap_ins": 0, "merges": 0, "cow_breaks": 0, "reclaims": 0, "ooms": 0}

    # ---------------------------------------------------------------- demand paging
    def fault_in(self, vm: "Vm", gfn: int) -> int:
        """DMM's access violation on a gfn with no machine page: deflate, swap in, or allocate."""
        if gfn in vm.ballooned:  # the guest touched a page it gave back: it takes it back
            self.balloon_deflate(vm, gfn)
        if gfn in vm.swapped:
            return self._swap_in(vm, gfn)
        mfn = self._allocate(vm)
        if mfn is None:
            return self._oom(vm, gfn)
        self.mapping.write_frame(mfn, ZERO_PAGE)
        self.mapping.map_gfn(vm, gfn, mfn)
        self.log.emit("demand_page", v=vm.id, g=gfn, m=mfn)
        return mfn

    def _oom(self, vm: "Vm", gfn: int) -> int:
        self._report_oom(vm, gfn)
        raise OutOfMemory(f"no machine page for VM {vm.id} gfn {gfn:#x}")

    def _report_oom(self, vm: "Vm", gfn: int) -> None:
        # oom only when nothing is allocatable (the spec's guard); an injected failure says so
        self.stats["ooms"] += 1
        self.log.emit("oom_injected" if self._injected else "oom", v=vm.id, g=gfn)
        self._injected = False

    def _within_budget(self) -> bool:
        return self.budget is None or self.machine.held() < self.budget

    def _within_quota(self, vm: int) -> bool:
        return self.quota is None or self.machine.held(vm) < self.quota

    def _allocate(self, vm: "Vm") -> int | None:
        """A page for the VM: its idle pool first, then the VMM pool within the budget and the VM's
        quota; when neither has one, reclaim once and retry."""
        self._injected = False
        if self.fail_next_allocation:
            self.fail_next_allocation = False
            self._injected = True
            return None
        for tries in range(3):
            if len(self.machine.idle[vm.id]) or self._within_budget() and self._within_quota(vm.id):
                mfn = self.machine.allocate(vm.id)
                if mfn is not None:
                    return mfn
            # oom only when nothing is allocatable: after a reclaim, always look again
            if tries == 2 or not (self.reclaim_enabled and self.reclaim(vm)):
                return None
        return None

    # ---------------------------------------------------------------- swapping
    def reclaim(self, for_vm: "Vm") -> bool:
        """Swap out one clock victim; a page freed into another VM's idle pool goes back to the VMM
        pool so that for_vm can have it."""
        # A VM at its quota gains nothing from another VM's page: it must give up one of its own.
        victim = self.clock_victim(None if self._within_quota(for_vm.id) else for_vm.id)
        if victim is None:
            return False
        vm, gfn, mfn = victim
        if not self.swap_out(vm, gfn):
            return False
        self.stats["reclaims"] += 1
        if vm is not for_vm and self.machine.desc[mfn].refcount == 0:
            self._shrink(vm, mfn)
        return True

    def clock_victim(self, only: int | None = None) -> tuple["Vm", int, int] | None:
        """Second chance over the accessed bits of the sptes (found through the rmap): a page used
        since the hand last passed loses its A bits and is skipped once. `only`: a page of that VM."""
        first, n = self.machine.first_mfn, self.machine.fresh - self.machine.first_mfn
        for _ in range(2 * n):
            mfn = first + self._hand % max(n, 1)
            self._hand = (self._hand + 1) % max(n, 1)
            d = self.machine.desc[mfn]
            if d.status != MAPPED:
                continue
            (vid, gfn), = self.mapping.holders[mfn]
            if only is not None and vid != only:
                continue
            vm = self.mapping.vm(vid)
            if self.mapping.is_page_table(vm, gfn) or self.mapping.young(mfn):
                continue
            return vm, gfn, mfn
        return None

    def swap_out(self, vm: "Vm", gfn: int) -> bool:
        """Unmap (vm, gfn) through DMM, write its page to a slot, drop the reference."""
        mfn = vm.p2m.get(gfn)
        if mfn is None or self.swap is None or self.mapping.is_page_table(vm, gfn):
            return False
        if not self._leave(vm, gfn, mfn):
            return False  # a shared page no other holder has room for: the VM keeps it
        try:
            slot = self.swap.allocate()
        except SwapFull:
            self.log.emit("swap_full", v=vm.id, g=gfn)
            return False
        self.mapping.zap_gfn(vm, gfn)  # every spte gone through the rmap: the guest cannot write it now
        try:
            self.swap.write(slot, self.mapping.read_frame(mfn))
        except SwapIoError:
            self.swap.release(slot)
            self.log.emit("swap_io_error", v=vm.id, g=gfn)
            return False
        self.mapping.unmap_gfn(vm, gfn)
        vm.swapped[gfn] = slot
        self._drop(mfn)
        self.stats["swap_outs"] += 1
        self.log.emit("swap_out", v=vm.id, g=gfn, m=mfn, s=slot)
        return True

    def swap_out_page(self, mfn: int) -> int:
        """Swap out a machine page whoever holds it (a shared page: every holder, each its own slot)."""
        return sum(self.swap_out(self.mapping.vm(v), g) for v, g in sorted(self.mapping.holders.get(mfn, ())))

    def _swap_in(self, vm: "Vm", gfn: int) -> int:
        slot = vm.swapped[gfn]
        mfn = self._allocate(vm)
        if mfn is None:
            return self._oom(vm, gfn)
        self.mapping.write_frame(mfn, self.swap.read(slot))  # type: ignore[union-attr]
        del vm.swapped[gfn]
        self.swap.release(slot)  # type: ignore[union-attr]
        self.mapping.map_gfn(vm, gfn, mfn)
        self.stats["swap_ins"] += 1
        self.log.emit("swap_in", v=vm.id, g=gfn, s=slot, m=mfn)
        return mfn

    def _leave(self, vm: "Vm", gfn: int, mfn: int) -> bool:
        """(vm, gfn) is about to let go of mfn. owner_holds: a shared page is charged to one of its
        holders, so when the VM it is charged to lets go of it for the last time, the page first
        moves to another holder's active list (Xen charges a shared page to a holder the same way).
        The page joins that holder's pools, so the holder needs room under the quota
        (within_quota); a holder at its quota with an idle page gives that page back to the VMM
        pool first. When no holder has room, nothing changes and this says False: the VM stays
        charged with the page and may not let go of it (the caller declines; a write that needed a
        copy ends as out-of-memory, the spec's charge_stuck). Another holder making room later (its
        pools shrink, or it lets go of pages) lets the VM go."""
        d = self.machine.desc[mfn]
        if d.status != SHARED or d.owner != vm.id:
            return True
        holders = self.mapping.holders.get(mfn, ())
        if any(v == vm.id and g != gfn for v, g in holders):
            return True  # the VM still holds it through another gfn
        others = sorted((v, g) for v, g in holders if v != vm.id)
        if not others:
            return True
        roomy = [(w, g) for w, g in others if self._within_quota(w)]
        if not roomy:
            spare = [(w, g) for w, g in others if len(self.machine.idle[w])]
            if not spare:
                return False
            w = spare[0][0]
            self._shrink(self.mapping.vm(w), self.machine.idle[w].head)
            roomy = spare[:1]
        w, g = roomy[0]
        self.machine.rehome(mfn, w)
        self.log.emit("share_rehome", m=mfn, v=vm.id, w=w, g=g)
        return True

    def _drop(self, mfn: int, to_vmm: bool = False) -> None:
        # refcount: one holder fewer; the last one frees the page (to its owner's idle pool, or the VMM's)
        if self.machine.drop(mfn) == 0:
            self.machine.release(mfn, to_vmm=to_vmm)

    # ---------------------------------------------------------------- content-based sharing
    def share_pair(self, vm1: "Vm", g1: int, vm2: "Vm", g2: int) -> bool:
        """Merge (vm2, g2) onto the page of (vm1, g1) if their bytes are equal."""
        m1, m2 = vm1.p2m.get(g1), vm2.p2m.get(g2)
        if m1 is None or m2 is None or m1 == m2 or self.machine.desc[m2].status != MAPPED:
            return False
        if self.mapping.is_page_table(vm1, g1) or self.mapping.is_page_table(vm2, g2):
            return False
        if self.mapping.read_frame(m1) != self.mapping.read_frame(m2):  # the byte compare: never a hash alone
            return False
        self.mapping.protect_mfn(m1)  # read-only everywhere from now on
        self.mapping.unmap_gfn(vm2, g2)
        self.mapping.map_gfn(vm2, g2, m1)
        self.machine.hold(m1)
        self._drop(m2)
        self.stats["merges"] += 1
        self.log.emit("share_merge", v1=vm1.id, g1=g1, m1=m1, v2=vm2.id, g2=g2, m2=m2)
        return True

    def scan(self) -> int:
        """One pass of the scanner: hash every resident page, merge the ones whose bytes match a
        page seen before (zero pages included). Returns the number of merges."""
        seen: dict[bytes, list[tuple["Vm", int]]] = {}
        merges = 0
        for vm in self.mapping.vms():
            for gfn in sorted(vm.p2m):
                if self.mapping.is_page_table(vm, gfn):
                    continue
                key = hashlib.blake2b(self.mapping.read_frame(vm.p2m[gfn]), digest_size=16).digest()
                candidates = seen.setdefault(key, [])
                if any(self.share_pair(v1, g1, vm, gfn) for v1, g1 in candidates):
                    merges += 1
                else:
                    candidates.append((vm, gfn))
        return merges

    def cow_break(self, vm: "Vm", gfn: int) -> int | None:
        """A write to a shared page: the writer gets a copy, the others keep the page."""
        m = vm.p2m[gfn]
        if not self._leave(vm, gfn, m):  # charged with m and no holder has room: no copy (charge_stuck)
            self._injected = False
            self._report_oom(vm, gfn)
            return None
        n = self._allocate(vm)
        if n is None:
            self._report_oom(vm, gfn)
            return None
        self.mapping.write_frame(n, self.mapping.read_frame(m))
        self.mapping.unmap_gfn(vm, gfn)
        self.mapping.map_gfn(vm, gfn, n)
        self._drop(m)
        self.stats["cow_breaks"] += 1
        self.log.emit("cow_break", v=vm.id, g=gfn, m=m, n=n)
        return n

    # ---------------------------------------------------------------- ballooning
    def balloon_inflate(self, vm: "Vm", gfn: int) -> bool:
        """The guest's balloon driver gives the gfn back: its page (if the last holder) goes to the
        VMM pool, its slot (if swapped) is freed; its content is gone."""
        if self.mapping.is_page_table(vm, gfn):
            return False
        mfn = vm.p2m.get(gfn)
        if mfn is not None:
            if not self._leave(vm, gfn, mfn):
                return False  # a shared page no other holder has room for: the VM keeps it
            self.mapping.unmap_gfn(vm, gfn)
            self._drop(mfn, to_vmm=True)
            vm.ballooned.add(gfn)
            self.log.emit("balloon_inflate", v=vm.id, g=gfn, m=mfn)
        elif gfn in vm.swapped:
            slot = vm.swapped.pop(gfn)
            self.swap.release(slot)  # type: ignore[union-attr]
            vm.ballooned.add(gfn)
            self.log.emit("balloon_inflate_swapped", v=vm.id, g=gfn, s=slot)
        else:
            vm.ballooned.add(gfn)
            self.log.emit("balloon_inflate_unmapped", v=vm.id, g=gfn)
        return True

    def balloon_deflate(self, vm: "Vm", gfn: int) -> bool:
        if gfn not in vm.ballooned:
            return False
        vm.ballooned.discard(gfn)
        self.log.emit("balloon_deflate", v=vm.id, g=gfn)
        return True

    # ---------------------------------------------------------------- pool sizing
    def pool_grow(self, vm: "Vm") -> int | None:
        """One page from the VMM pool into the VM's idle pool, within the global budget and the VM's
        quota."""
        if not self._within_budget() or not self._within_quota(vm.id):
            return None
        mfn = self.machine.grow(vm.id)
        if mfn is not None:
            self.log.emit("pool_grow", v=vm.id, m=mfn)
        return mfn

    def pool_shrink(self, vm: "Vm") -> int | None:
        mfn = self.machine.idle[vm.id].head
        if mfn < 0:
            return None
        self._shrink(vm, mfn)
        return mfn

    def _shrink(self, vm: "Vm", mfn: int) -> None:
        self.machine.shrink(vm.id, mfn)
        self.log.emit("pool_shrink", v=vm.id, m=mfn)

    # ---------------------------------------------------------------- VM teardown
    def release_all(self, vm: "Vm") -> None:
        """Give back everything the VM holds (before vm_destroy): resident gfns are ballooned out
        (shared pages it is charged to move to another holder on the way), slots freed, idle pages
        returned. A shared page it is charged to that no other holder has room for under the quota
        stays (see _leave): the teardown stops there with OutOfMemory, the VM still exists with that
        page and nothing else, and a later teardown finishes once a holder has room."""
        stuck = [gfn for gfn in sorted(set(vm.p2m) | set(vm.swapped)) if not self.balloon_inflate(vm, gfn)]
        while self.pool_shrink(vm) is not None:
            pass
        if stuck:
            raise OutOfMemory(f"VM {vm.id} cannot be torn down: gfns {', '.join(map(hex, stuck))} hold shared "
                              f"pages charged to it that no other holder has room for under the quota")
