"""Machine memory as the DMM patent lays it out: page descriptors and page pools.

Every DMM-managed machine page has a descriptor (mfn, reference count, status flags, owner). Pools
are doubly linked lists threaded through the descriptors: the VMM pool, and per VM an active list
(pages in use) and an idle list (reserved for the VM, not mapped). A descriptor is on exactly one
list at a time — the list's identity is recorded in the descriptor, so membership is O(1) and
checked on every move.

The VMM's private pages (shadow page tables, the CPU's own pages) are outside the DMM: a separate
allocator, never on a pool list, never mapped by a guest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

# Descriptor status flags (the spec's pstatus).
FREE, RESERVED, MAPPED, SHARED = "free", "reserved", "mapped", "shared"

NIL = -1


@dataclass(slots=True)
class Descriptor:
    mfn: int
    refcount: int = 0
    status: str = FREE
    owner: int | None = None  # VM id whose pool holds the page; None: the VMM pool
    list_id: str = ""  # which list the page is on: "vmm", "active:<vm>", "idle:<vm>"
    prev: int = NIL
    next: int = NIL


class PageList:
    """A doubly linked list of descriptors, by mfn; O(1) push, remove and pop."""

    def __init__(self, machine: "Machine", list_id: str) -> None:
        self.m = machine
        self.id = list_id
        self.head = NIL
        self.tail = NIL
        self.count = 0

    def push(self, mfn: int) -> None:
        d = self.m.desc[mfn]
        if d.list_id:
            raise PoolError(f"mfn {mfn:#x} is already on list {d.list_id} (pushing onto {self.id})")
        d.list_id, d.prev, d.next = self.id, self.tail, NIL
        if self.tail != NIL:
            self.m.desc[self.tail].next = mfn
        else:
            self.head = mfn
        self.tail = mfn
        self.count += 1

    def remove(self, mfn: int) -> None:
        d = self.m.desc[mfn]
        if d.list_id != self.id:
            raise PoolError(f"mfn {mfn:#x} is on list {d.list_id or 'none'}, not {self.id}")
        if d.prev != NIL:
            self.m.desc[d.prev].next = d.next
        else:
            self.head = d.next
        if d.next != NIL:
            self.m.desc[d.next].prev = d.prev
        else:
            self.tail = d.prev
        d.list_id, d.prev, d.next = "", NIL, NIL
        self.count -= 1

    def pop(self) -> int | None:
        if self.head == NIL:
            return None
        mfn = self.head
        self.remove(mfn)
        return mfn

    def __iter__(self) -> Iterator[int]:
        mfn = self.head
        while mfn != NIL:
            nxt = self.m.desc[mfn].next
            yield mfn
            mfn = nxt

    def __len__(self) -> int:
        return self.count


class PoolError(RuntimeError):
    """A pool operation that would break the pool structure (a VMM bug, raised, never tolerated)."""


class _Descriptors(dict):
    """Descriptors come into being when a page is first touched; until then a page is free and in
    the VMM pool (counted by the `fresh` range), so the VMM's memory grows with pages touched."""

    def __missing__(self, mfn: int) -> Descriptor:
        d = Descriptor(mfn)
        self[mfn] = d
        return d


class Machine:
    """The DMM-managed machine pages [first_mfn, first_mfn + count) and their pools."""

    def __init__(self, first_mfn: int, count: int) -> None:
        self.first_mfn = first_mfn
        self.count = count
        self.desc: dict[int, Descriptor] = _Descriptors()
        self.vmm_pool = PageList(self, "vmm")
        self.fresh = first_mfn  # pages at or above this were never touched: free, in the VMM pool
        self.active: dict[int, PageList] = {}
        self.idle: dict[int, PageList] = {}

    def vmm_pop(self) -> int | None:
        """A page from the VMM pool: a returned one first, else a never-touched one."""
        mfn = self.vmm_pool.pop()
        if mfn is None and self.fresh < self.first_mfn + self.count:
            mfn, self.fresh = self.fresh, self.fresh + 1
        return mfn

    def vmm_free(self) -> int:
        return len(self.vmm_pool) + (self.first_mfn + self.count - self.fresh)

    def in_vmm_pool(self, mfn: int) -> bool:
        return mfn >= self.fresh or self.desc[mfn].list_id == "vmm" if self.managed(mfn) else False

    def pool_of(self, mfn: int) -> str:
        """Which list holds the page ("vmm", "active:<vm>", "idle:<vm>"), read from the lists."""
        if mfn >= self.fresh:
            return "vmm"
        return self.desc[mfn].list_id

    def add_vm(self, vm: int) -> None:
        self.active[vm] = PageList(self, f"active:{vm}")
        self.idle[vm] = PageList(self, f"idle:{vm}")

    def remove_vm(self, vm: int) -> None:
        if len(self.active[vm]) or len(self.idle[vm]):
            raise PoolError(f"VM {vm} still holds pages")
        del self.active[vm], self.idle[vm]

    def managed(self, mfn: int) -> bool:
        return self.first_mfn <= mfn < self.first_mfn + self.count

    # ---- moves between pools; each keeps descriptor status and owner in step with the list
    def grow(self, vm: int, mfn: int | None = None) -> int | None:
        """VMM pool -> the VM's idle list."""
        if mfn is None:
            mfn = self.vmm_pop()
            if mfn is None:
                return None
        else:
            self._take_from_vmm(mfn)
        self.idle[vm].push(mfn)
        d = self.desc[mfn]
        d.status, d.owner = RESERVED, vm
        return mfn

    def _take_from_vmm(self, mfn: int) -> None:
        if not self.managed(mfn):
            raise PoolError(f"mfn {mfn:#x} is not a DMM page")
        if mfn >= self.fresh:  # bring the fresh pages below it onto the VMM list first
            for m in range(self.fresh, mfn):
                self.vmm_pool.push(m)
            self.fresh = mfn + 1
        else:
            self.vmm_pool.remove(mfn)

    def shrink(self, vm: int, mfn: int) -> None:
        """The VM's idle list -> VMM pool."""
        self.idle[vm].remove(mfn)
        self.vmm_pool.push(mfn)
        d = self.desc[mfn]
        d.status, d.owner = FREE, None

    def allocate(self, vm: int) -> int | None:
        """A page for the VM to map: its idle list first, then the VMM pool; None when neither has one."""
        mfn = self.idle[vm].pop()
        if mfn is None:
            mfn = self.vmm_pop()
        if mfn is None:
            return None
        self.active[vm].push(mfn)
        d = self.desc[mfn]
        d.status, d.owner, d.refcount = MAPPED, vm, 1
        return mfn

    def release(self, mfn: int, to_vmm: bool = False) -> None:
        """The last reference is gone: back to the owner's idle list (or the VMM pool)."""
        d = self.desc[mfn]
        if d.refcount != 0:
            raise PoolError(f"mfn {mfn:#x} released with refcount {d.refcount}")
        vm = d.owner
        assert vm is not None
        self.active[vm].remove(mfn)
        if to_vmm:
            self.vmm_pool.push(mfn)
            d.status, d.owner = FREE, None
        else:
            self.idle[vm].push(mfn)
            d.status = RESERVED

    def hold(self, mfn: int) -> None:
        """One more (vm, gfn) holder: the page is shared from now on (merged by content)."""
        d = self.desc[mfn]
        d.refcount += 1
        d.status = SHARED

    def drop(self, mfn: int) -> int:
        """One holder fewer; the holders left."""
        d = self.desc[mfn]
        if d.refcount <= 0:
            raise PoolError(f"mfn {mfn:#x} dropped with refcount {d.refcount}")
        d.refcount -= 1
        return d.refcount

    def held(self, vm: int | None = None) -> int:
        """Pages in VM pools (one VM's, or all): what the global budget limits."""
        vms = [vm] if vm is not None else list(self.active)
        return sum(len(self.active[v]) + len(self.idle[v]) for v in vms)

    def rehome(self, mfn: int, vm: int) -> None:
        """A shared page moves to another holder's active list."""
        d = self.desc[mfn]
        self.active[d.owner].remove(mfn)  # type: ignore[index]
        self.active[vm].push(mfn)
        d.owner = vm


class PrivateAllocator:
    """The VMM's own frames (shadow page tables): a simple free list, zeroed on allocation. `limit`:
    how many of the count it hands out at most (the VMM's shadow-page limit; None: all)."""

    def __init__(self, first_mfn: int, count: int, limit: int | None = None) -> None:
        usable = count if limit is None else min(count, limit)
        self.free = list(range(first_mfn + usable - 1, first_mfn - 1, -1))
        self.first_mfn, self.count = first_mfn, count

    def alloc(self) -> int:
        if not self.free:
            raise MemoryError("the VMM is out of private frames for shadow page tables")
        return self.free.pop()

    def release(self, mfn: int) -> None:
        self.free.append(mfn)
