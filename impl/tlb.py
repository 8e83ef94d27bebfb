"""The TLB-flush debt, owned here and paid here (KVM's KVM_REQ_TLB_FLUSH).

Whoever weakens or drops an spte makes its VM owe a flush (`owe`); a guest's invlpg makes the CPU's
TLB stale (`invlpg`); a CR3 load or a teardown forgives the debt (`forgive`: the reload flushes);
the debt is paid in one place, `pay`, just before the guest runs again. An owed flush for at most
MAX_INVLPG leaves is paid page by page (invlpg each, reported as tlb_sync); anything more, or a
stale TLB, is a full flush (tlb_flush). The debt is per VM, as the spec's flush_pending(v): with
one vCPU per VM that is the vCPU's debt too.
"""

from __future__ import annotations

from typing import Protocol

from .events import EventLog

FULL = None  # what paying a debt takes: the whole TLB
MAX_INVLPG = 8  # beyond this many pages a full flush is cheaper


class TlbCpu(Protocol):
    """What paying a debt needs of the real CPU."""

    def flush_tlb(self) -> None: ...

    def invlpg(self, gva: int) -> None: ...


class FlushDebt:
    def __init__(self, cpu: TlbCpu, log: EventLog) -> None:
        self.cpu = cpu
        self.log = log
        self.pending: set[int] = set()  # the VMs that may not run before a flush (flush_pending)
        # What paying a VM's debt takes: the gvas to invalidate one by one, or FULL.
        self.gvas: dict[int, set[int] | None] = {}
        self.stale = False  # an invlpg asked for a flush the CPU has not done yet

    def owe(self, vm_id: int, gvas: set[int] | None = FULL) -> None:
        """The VM may not run again before its TLB is flushed (an spte was weakened or dropped):
        for the leaves of gvas, an invlpg each will do; for anything else, a full flush."""
        self.pending.add(vm_id)
        owed = self.gvas.get(vm_id, set())
        if gvas is FULL or owed is FULL or len(owed) + len(gvas) > MAX_INVLPG:
            self.gvas[vm_id] = FULL
        else:
            self.gvas[vm_id] = owed | gvas
        self.log.emit("flush_request", v=vm_id)

    def forgive(self, vm_id: int) -> None:
        """The VM's debt is void: its TLB is reloaded before it runs again (CR3 load), or it is gone."""
        self.pending.discard(vm_id)
        self.gvas.pop(vm_id, None)

    def invlpg(self) -> None:
        # Unicorn flushes the whole TLB or nothing; flushing more than asked is always allowed.
        self.stale = True

    def shoot_down(self) -> None:
        """Flush the CPU's TLB now, debt or not (tlb_isolated: a page a gfn let go of may be reused
        at once, so no TLB entry may reach it, not even before the next entry)."""
        self.cpu.flush_tlb()

    def pay(self, vm_id: int, reloaded: bool) -> None:
        """Before the VM runs: pay what it owes. `reloaded`: the CPU was just loaded with its root
        and mode, which flushed the whole TLB."""
        owed = self.gvas.pop(vm_id, FULL)
        if reloaded:
            pass
        elif self.stale or (vm_id in self.pending and owed is FULL):
            self.cpu.flush_tlb()
        elif vm_id in self.pending:
            # Only these pages' sptes were weakened or dropped: invalidate them, keep the rest.
            for gva in sorted(owed):  # type: ignore[arg-type]
                self.log.emit("invlpg", v=vm_id, x=self.invalidate(gva))
            self.pending.discard(vm_id)
            self.log.emit("tlb_sync", v=vm_id)
            return
        else:
            return
        self.stale = False
        self.pending.discard(vm_id)
        self.log.emit("tlb_flush", v=vm_id)

    def invalidate(self, gva: int) -> int:
        """The VMM's invlpg of one page on the real CPU; the gva invalidated."""
        self.cpu.invlpg(gva)
        return gva
