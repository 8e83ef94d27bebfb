"""The abstraction: the VMM's state in the spec's vocabulary, read from the real structures.

Pools from the linked lists, p2m from the VMs, sptes by the MMU's leaf iteration over the shadow
tables in machine memory, the rmap and write protection from the MMU, pending flushes from the flush
debt, the swap device's own record of its slots. Guest mappings are read by walking the guest's own
tables (no A/D written). It only reads: nothing of the VMM holds it, and it changes nothing there.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Any, Callable

from . import x86
from .walker import walk
from .x86 import Access, Mode

if TYPE_CHECKING:
    from .vmm import Vm, Vmm

PARTS = frozenset({"shadow", "guest"})
# (pages the walks read: {gfn: bytes}, mappings, tables, upper tables) of one root's walks
Walks = dict[tuple[int, int, int], tuple]
RootWalks = tuple[dict[int, bytes | None], Walks, Walks, Walks]


class Abstraction:
    def __init__(self, vmm: "Vmm") -> None:
        self.vmm = vmm
        # the walks of each (vm, root, gvas), with the bytes of the pages they read
        self._guest_walks: dict[tuple[int, int, tuple[int, ...]], RootWalks] = {}

    def state(self, gvas: list[int] | None = None, roots: list[int] | None = None,
              parts: frozenset[str] = PARTS) -> dict[str, Any]:
        """The DMM state. `parts`: besides the pools, frames and VMs, which costly parts to read:
        "shadow" (spte, rmap, spte_at: every shadow table) and "guest" (gmap, g_tables: a walk per
        gva and root)."""
        vmm = self.vmm
        m = vmm.machine
        touched = range(m.first_mfn, m.fresh)
        vms = vmm.vms.values()
        out: dict[str, Any] = {
            "mfns": (m.first_mfn, m.count),
            "pool": {mfn: m.pool_of(mfn) for mfn in touched},
            "descriptor": {mfn: (m.desc[mfn].status, m.desc[mfn].refcount, m.desc[mfn].owner) for mfn in touched},
            "p2m": {(v.id, g): mfn for v in vms for g, mfn in v.p2m.items()},
            "swap": {(v.id, g): s for v in vms for g, s in v.swapped.items()},
            # the swap device's own record of its slots, not derived from the VMs' swap maps
            "slots_used": sorted(vmm.policy.swap.used) if vmm.policy.swap is not None else [],
            "ballooned": sorted((v.id, g) for v in vms for g in v.ballooned),
            "write_protected": sorted(set(vmm.mmu.shadowed) - vmm.mmu.unsync),
            "gpt_pages": sorted(vmm.mmu.shadowed),  # the unsync ones are not write-protected
            "flush_pending": sorted(vmm.tlb.pending),
            # per VM, each vCPU's CR3 and role (its role's name; None before its first mode load)
            "vms": {v.id: {"live": True, "vcpus": [{"cr3_gfn": c.cr3_gfn, "role": c.paging.name if c.moded else None}
                                                   for c in v.vcpus]} for v in vms},
        }
        if "guest" in parts:
            out["gmap"], out["g_tables"], out["g_uppers"] = self._guest_mappings(gvas or [], roots)
        if "shadow" in parts:
            out.update(self._shadow())
        return out

    def _shadow(self) -> dict[str, Any]:
        """spte, spte_at (which leaf entry serves (vm, root, gva): the rmap is judged against these)
        and the rmap."""
        mmu = self.vmm.mmu
        spte: dict[tuple[int, int, str, int], tuple[int, bool, bool, bool]] = {}
        spte_at: dict[tuple[int, int], list[tuple[int, int, str, int]]] = {}
        for (vid, root_gfn, _paging), sp in mmu.roots.items():
            o = sp.role.paging.name
            for gva, addr, e in mmu.leaf_sptes(sp.paddr, 4, 0):
                spte_at.setdefault((addr >> x86.PAGE_SHIFT, (addr & 0xFFF) >> 3), []).append((vid, root_gfn, o, gva))
                spte[(vid, root_gfn, o, gva)] = ((e & x86.ADDR_MASK) >> x86.PAGE_SHIFT, bool(e & x86.RW),
                                              bool(e & x86.US), bool(e & x86.XD))
        return {"spte": spte, "rmap": {mfn: sorted(refs) for mfn, refs in mmu.rmap.items()}, "spte_at": spte_at}

    def _guest_mappings(self, gvas: list[int], extra_roots: list[int] | None = None) -> tuple[dict, dict, dict]:
        """(vm, guest root gfn, gva) -> (gfn, writable, user, nx, accessed, dirty), read by walking
        the guest's own tables for every cached or current root; and the gfns of the tables each of
        those walks read, and of those the tables above the leaf's."""
        out: dict = {}
        tables: dict = {}
        uppers: dict = {}
        for vm in self.vmm.vms.values():
            page = self._page_reader(vm)
            roots = {g for (vid, g, _paging) in self.vmm.mmu.roots if vid == vm.id} | \
                {c.cr3_gfn for c in vm.vcpus if c.cr3_gfn is not None} | set(extra_roots or ())
            for root in roots:
                # A root's walks read only its tables' pages: while those hold the same bytes, the
                # walks give what they gave (the walks cost more than reading the pages again).
                key = (vm.id, root, tuple(gvas))
                last = self._guest_walks.get(key)
                if last is None or any(page(g) != b for g, b in last[0].items()):
                    last = self._guest_walks[key] = _walk_root(vm, root, gvas, page)
                out.update(last[1])
                tables.update(last[2])
                uppers.update(last[3])
        return out, tables, uppers

    def _page_reader(self, vm: "Vm") -> Callable[[int], bytes | None]:
        """Each guest page read once per read-back (None: outside the VM's memory)."""
        raw: dict[int, bytes | None] = {}

        def page(g: int) -> bytes | None:
            if g not in raw:
                try:
                    raw[g] = self.vmm.peek(vm, g << x86.PAGE_SHIFT, x86.PAGE_SIZE)
                except IndexError:
                    raw[g] = None
            return raw[g]
        return page


def _walk_root(vm: "Vm", root: int, gvas: list[int], page: Callable[[int], bytes | None]) -> RootWalks:
    """({gfn: bytes} of the pages the walks read, mappings, tables) of every gva under one root."""
    # A supervisor read with NXE: any present translation, its XD bit read as the guest wrote it (a
    # role without NXE faults on it, reserved: it gets no spte there).
    probe = Mode(user=False, wp=False, nxe=True)
    arrays: dict[int, array] = {}

    def read64(a: int) -> int:
        g = a >> x86.PAGE_SHIFT
        got = arrays.get(g)
        if got is None:
            data = page(g)
            if data is None:
                raise IndexError(f"gpa {a:#x} is outside VM {vm.id}'s memory")
            got = arrays[g] = array("Q", data)
        return got[(a & 0xFFF) >> 3]

    out, tables, uppers = {}, {}, {}
    for gva in gvas:
        try:
            w = walk(read64, None, root << x86.PAGE_SHIFT, gva, Access.READ, probe, set_ad=False)
        except IndexError:
            continue
        if not w.entries:
            continue
        # The tables the walk read, even one that ends at a gpte not present: clearing a leaf gpte
        # leaves the walk reading the same tables (an unsync table's edit is told apart by them).
        # The last table read holds the leaf gpte; a table read above it too is an upper one.
        tables[(vm.id, root, gva)] = tuple(sorted({addr >> x86.PAGE_SHIFT for _, addr, _ in w.entries}))
        uppers[(vm.id, root, gva)] = tuple(sorted({addr >> x86.PAGE_SHIFT for _, addr, _ in w.entries[:-1]}))
        if w.fault:
            continue
        _, _, leaf = w.leaf
        out[(vm.id, root, gva)] = (w.paddr >> x86.PAGE_SHIFT, w.writable, w.user,
                                   w.nx, bool(leaf & x86.A), bool(leaf & x86.D))
    return {g: page(g) for g in arrays}, out, tables, uppers


def abstract_state(vmm: "Vmm", gvas: list[int] | None = None, roots: list[int] | None = None,
                   parts: frozenset[str] = PARTS) -> dict[str, Any]:
    """One read-back without a cache of earlier walks (tests, tools)."""
    return Abstraction(vmm).state(gvas, roots, parts)
