"""The TLB-flush debt, owned here and paid here (KVM's KVM_REQ_TLB_FLUSH).

Each vCPU of a VM runs on its own physical CPU (`cpus[c]` runs vCPU c of whichever VM; switching
VMs there reloads it, which flushes), whose real TLB persists between the guest's accesses. Whoever
weakens or drops an spte makes every vCPU of its VM owe a flush (`owe`: any of them may cache the
old translation, so the others get a remote flush); a mode change owes only the vCPU that changed
(`owe_vcpu`); a CR3 load forgives that vCPU's debt, a teardown the VM's (`forgive`: the reload
flushes). The debt is paid in one place, `pay`, just before that vCPU runs again. An owed flush for
at most MAX_INVLPG leaves is paid page by page (invlpg each, reported as tlb_sync); anything more is
a full flush (tlb_flush). The debt is the spec's flush_pending(v, c).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .events import EventLog

FULL = None  # what paying a debt takes: the whole TLB
MAX_INVLPG = 8  # beyond this many pages a full flush is cheaper


class TlbCpu(Protocol):
    """What paying a debt needs of the real CPU."""

    def flush_tlb(self) -> None: ...

    def invlpg(self, gva: int) -> None: ...


class FlushDebt:
    def __init__(self, cpus: Sequence[TlbCpu], log: EventLog) -> None:
        self.cpus = cpus  # the physical CPUs, by vCPU index
        self.log = log
        self.vcpus: dict[int, int] = {}  # VM -> how many vCPUs it has (each owed a remote flush)
        self.pending: set[tuple[int, int]] = set()  # the (vm, vcpu)s that may not run before a flush
        # What paying a vCPU's debt takes: the gvas to invalidate one by one, or FULL.
        self.gvas: dict[tuple[int, int], set[int] | None] = {}

    def add_vm(self, vm_id: int, vcpus: int) -> None:
        self.vcpus[vm_id] = vcpus

    def owe(self, vm_id: int, gvas: set[int] | None = FULL) -> None:
        """No vCPU of the VM may run again before its TLB is flushed (an spte was weakened or
        dropped): for the leaves of gvas, an invlpg each will do; for anything else, a full flush."""
        for c in range(self.vcpus.get(vm_id, 1)):
            self.owe_vcpu(vm_id, c, gvas)
        self.log.emit("flush_request", v=vm_id)

    def owe_vcpu(self, vm_id: int, c: int, gvas: set[int] | None = FULL) -> None:
        """vCPU c alone owes a flush (it switched to another shadow: everything it cached is of the
        old one)."""
        key = (vm_id, c)
        owed = self.gvas.get(key, set())
        if gvas is FULL or owed is FULL or len(owed) + len(gvas) > MAX_INVLPG:
            self.gvas[key] = FULL
        else:
            self.gvas[key] = owed | gvas
        self.pending.add(key)

    def forgive(self, vm_id: int, c: int | None = None) -> None:
        """vCPU c's debt (every vCPU's: None) is void: its TLB is reloaded before it runs again (CR3
        load), or the VM is gone."""
        for k in [k for k in self.pending | set(self.gvas) if k[0] == vm_id and c in (None, k[1])]:
            self.pending.discard(k)
            self.gvas.pop(k, None)
        if c is None:
            self.vcpus.pop(vm_id, None)

    def shoot_down(self) -> None:
        """Flush every CPU's TLB now, debt or not (tlb_isolated: a page a gfn let go of may be
        reused at once, so no TLB entry may reach it, not even one of a vCPU that runs meanwhile)."""
        for cpu in self.cpus:
            cpu.flush_tlb()

    def pay(self, vm_id: int, c: int, reloaded: bool) -> None:
        """Before vCPU c runs: pay what it owes. `reloaded`: its CPU was just loaded with its root
        and mode, which flushed the whole TLB."""
        key = (vm_id, c)
        owed = self.gvas.pop(key, FULL)
        if reloaded:
            pass
        elif key in self.pending and owed is FULL:
            self.cpus[c].flush_tlb()
        elif key in self.pending:
            # Only these pages' sptes were weakened or dropped: invalidate them, keep the rest.
            for gva in sorted(owed):  # type: ignore[arg-type]
                self.log.emit("invlpg", v=vm_id, c=c, x=self.invalidate(c, gva))
            self.pending.discard(key)
            self.log.emit("tlb_sync", v=vm_id, c=c)
            return
        else:
            return
        self.pending.discard(key)
        self.log.emit("tlb_flush", v=vm_id, c=c)

    def invalidate(self, c: int, gva: int) -> int:
        """The VMM's invlpg of one page on vCPU c's CPU; the gva invalidated."""
        self.cpus[c].invlpg(gva)
        return gva
