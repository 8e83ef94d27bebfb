"""The DMM mapping interface: the policies' whole view of the VMM (as KVM's mmu_notifier_ops are the
core mm's view of KVM's MMU).

A policy changes p2m (map, unmap, remap) and the MMU carries the change to the shadow through the
rmap (every spte of the page zapped, or made read-only); it reads and writes whole DMM frames, asks
whether a page was used lately, and whether a gfn holds a guest table (which it may not move). It
also keeps `holders`, p2m reversed. Nothing here names an spte: the policies compose because each is
a change of p2m that the one propagation mechanism carries to the shadow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol

from . import x86

if TYPE_CHECKING:
    from .machine import Machine
    from .mmu import Mmu
    from .tlb import FlushDebt
    from .vmm import Vm


class Frames(Protocol):
    """Machine memory as the mapping interface reads and writes it."""

    def read(self, paddr: int, n: int) -> bytes: ...

    def write(self, paddr: int, data: bytes) -> None: ...


class Mapping:
    def __init__(self, vms: dict[int, "Vm"], mmu: "Mmu", frames: Frames, machine: "Machine",
                 tlb: "FlushDebt") -> None:
        self._vms = vms  # the VMM's table of VMs, read only here
        self.mmu = mmu
        self.frames = frames
        self.machine = machine
        self.tlb = tlb
        self.holders: dict[int, set[tuple[int, int]]] = {}  # mfn -> its (vm, gfn) holders: p2m reversed

    # ---------------------------------------------------------------- the VMs
    def vm(self, vm_id: int) -> "Vm":
        return self._vms[vm_id]

    def vms(self) -> Iterable["Vm"]:
        """The live VMs, in creation order (a copy: a policy may tear one down while iterating)."""
        return list(self._vms.values())

    # ---------------------------------------------------------------- p2m
    def unmap_gfn(self, vm: "Vm", gfn: int) -> int | None:
        """Drop p2m(vm, gfn): every spte mapping it zapped through the rmap. Returns the mfn."""
        mfn = vm.p2m.pop(gfn, None)
        if mfn is not None:
            self.mmu.zap_mfn(vm.id, mfn)
            self.tlb.shoot_down()
            refs = self.holders[mfn]
            refs.discard((vm.id, gfn))
            if not refs:
                del self.holders[mfn]
        return mfn

    def map_gfn(self, vm: "Vm", gfn: int, mfn: int) -> None:
        """Set p2m(vm, gfn) := mfn (sptes are filled lazily on the next access)."""
        if vm.p2m.get(gfn) is not None:
            self.unmap_gfn(vm, gfn)
        vm.p2m[gfn] = mfn
        self.holders.setdefault(mfn, set()).add((vm.id, gfn))

    def remap_gfn(self, vm: "Vm", gfn: int, mfn: int) -> int | None:
        old = self.unmap_gfn(vm, gfn)
        self.map_gfn(vm, gfn, mfn)
        return old

    def zap_gfn(self, vm: "Vm", gfn: int) -> None:
        """Every spte of the VM mapping the gfn's page zapped through the rmap; p2m stays."""
        mfn = vm.p2m.get(gfn)
        if mfn is not None:
            self.mmu.zap_mfn(vm.id, mfn)

    def protect_gfn(self, vm: "Vm", gfn: int) -> None:
        """Every spte mapping the gfn's page becomes read-only (any VM holding it)."""
        mfn = vm.p2m.get(gfn)
        if mfn is not None:
            self.mmu.protect_mfn(mfn)

    def protect_mfn(self, mfn: int) -> None:
        self.mmu.protect_mfn(mfn)

    def young(self, mfn: int) -> bool:
        """Was the page accessed through the shadow since the last ask? (clears the A bits)"""
        return self.mmu.test_and_clear_young(mfn)

    def is_page_table(self, vm: "Vm", gfn: int) -> bool:
        """The gfn holds a guest table some shadow page shadows (it may not be swapped or shared)."""
        return self.mmu.is_gpt(vm, gfn)

    # ---------------------------------------------------------------- frames
    def read_frame(self, mfn: int) -> bytes:
        return self.frames.read(mfn << x86.PAGE_SHIFT, x86.PAGE_SIZE)

    def write_frame(self, mfn: int, data: bytes) -> None:
        if not self.machine.managed(mfn):
            raise ValueError(f"mfn {mfn:#x} is not a DMM page")  # shadow tables are the MMU's alone
        self.frames.write(mfn << x86.PAGE_SHIFT, data)
