"""The ideal machine: what a guest should see with no VMM at all.

Each VM is its own 4-level page tables over a flat guest-physical memory, walked by a walker of its
own — written from the Intel SDM's paging rules (Vol. 3A, ch. 4), sharing no code with impl/, so a
walker bug in the VMM cannot hide behind the same bug here. DMM's promise is transparency: every
access through the VMM must give what this machine gives — value, fault or not, #PF error code, CR2,
and the guest's A/D bits.

The TLB is where the architecture leaves the outcome open: after the guest changes an entry and
before it invalidates (invlpg, CR3 load), a CPU may still use the old translation. The machine keeps,
per gva, the translations the guest may still be using, and `access` accepts the fresh walk or any
of those. A gfn beyond the VM's memory named by an entry faults with P|RSVD (this harness's rule for
memory that does not exist; adapters follow it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAGE = 4096
P, RW, US, A, D, PS = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7
XD = 1 << 63
PF_P, PF_W, PF_U, PF_RSVD, PF_I = 1, 2, 4, 8, 16
MAXPHYADDR = 40
FRAME = ((1 << MAXPHYADDR) - 1) & ~(PAGE - 1)
HIGH_RSVD = ((1 << 52) - 1) & ~((1 << MAXPHYADDR) - 1)
SHIFT = {4: 39, 3: 30, 2: 21, 1: 12}


@dataclass(frozen=True)
class Translation:
    paddr_base: int  # physical address of byte 0 of the gva's 4 KiB page
    rw: bool
    us: bool
    nx: bool


@dataclass
class Outcome:
    fault: bool
    error_code: int = 0
    cr2: int | None = None
    value: int | None = None
    paddr: int | None = None  # where a successful access went
    touched: list[int] = field(default_factory=list)  # entry addresses used (their A/D are observed)


@dataclass
class Controls:
    wp: bool = True
    nxe: bool = True
    smep: bool = False
    smap: bool = False


class GuestMemory:
    def __init__(self, gfns: int) -> None:
        self.mem = bytearray(gfns * PAGE)
        self.gfns = gfns

    def has(self, paddr: int, n: int = 8) -> bool:
        return 0 <= paddr and paddr + n <= len(self.mem)

    def read64(self, paddr: int) -> int:
        return int.from_bytes(self.mem[paddr:paddr + 8], "little")

    def write64(self, paddr: int, value: int) -> None:
        self.mem[paddr:paddr + 8] = (value & (1 << 64) - 1).to_bytes(8, "little")

    def zero(self, gfn: int) -> None:
        self.mem[gfn * PAGE:(gfn + 1) * PAGE] = bytes(PAGE)


def reserved(level: int, e: int, nxe: bool) -> bool:
    if e & HIGH_RSVD or (not nxe and e & XD):
        return True
    if e & PS:
        if level == 4:
            return True
        if level == 3 and e & 0x3FFFE000:  # bits 29:13 of a 1 GiB leaf
            return True
        if level == 2 and e & 0x1FE000:  # bits 20:13 of a 2 MiB leaf
            return True
    return False


def permits(acc: str, user: bool, ac: bool, c: Controls, rw: bool, us: bool, nx: bool) -> bool:
    if acc == "fetch":
        return not nx and (us if user else not (us and c.smep))
    if user:
        return us and (rw or acc == "read")
    if us and c.smap and not ac:
        return False
    return acc == "read" or rw or not c.wp


class IdealVm:
    def __init__(self, gfns: int) -> None:
        self.mem = GuestMemory(gfns)
        self.cr3: int | None = None
        self.ctl = Controls()
        self.tlb: dict[int, set[Translation]] = {}  # gva page -> translations it may still use

    def code(self, acc: str, user: bool) -> int:
        return ((PF_W if acc == "write" else 0) | (PF_U if user else 0)
                | (PF_I if acc == "fetch" and (self.ctl.nxe or self.ctl.smep) else 0))

    def walk(self, gva: int, acc: str, user: bool, ac: bool = False) -> tuple[Outcome, Translation | None, list]:
        """The fresh walk; A/D not yet written (see commit)."""
        base = self.code(acc, user)
        table = (self.cr3 or 0) * PAGE
        rw = us = True
        nx = False
        used: list[tuple[int, int]] = []
        for level in (4, 3, 2, 1):
            addr = table + 8 * (gva >> SHIFT[level] & 511)
            if not self.mem.has(addr):
                return Outcome(True, PF_P | PF_RSVD | base, gva), None, used
            e = self.mem.read64(addr)
            used.append((addr, e))
            if not e & P:
                return Outcome(True, base, gva), None, used
            if reserved(level, e, self.ctl.nxe):
                return Outcome(True, PF_P | PF_RSVD | base, gva), None, used
            rw, us = rw and bool(e & RW), us and bool(e & US)
            nx = nx or (self.ctl.nxe and bool(e & XD))
            if level == 1 or e & PS:
                size = 1 << SHIFT[level]
                frame = (e & FRAME) & ~(size - 1)
                paddr_base = frame | (gva & (size - 1) & ~(PAGE - 1))
                break
            table = e & FRAME
        t = Translation(paddr_base, rw, us, nx)
        if not permits(acc, user, ac, self.ctl, rw, us, nx):
            return Outcome(True, PF_P | base, gva), None, used
        if not self.mem.has(paddr_base, PAGE):
            return Outcome(True, PF_P | PF_RSVD | base, gva), None, used
        return Outcome(False, paddr=paddr_base | (gva & (PAGE - 1)), touched=[a for a, _ in used]), t, used

    def candidates(self, gva: int, acc: str, user: bool, ac: bool = False) -> list[tuple[Outcome, Translation | None, list]]:
        """Every outcome the architecture allows: the fresh walk first, then stale TLB entries."""
        out = [self.walk(gva, acc, user, ac)]
        for t in self.tlb.get(gva & ~(PAGE - 1), ()):
            if permits(acc, user, ac, self.ctl, t.rw, t.us, t.nx) and t != out[0][1]:
                out.append((Outcome(False, paddr=t.paddr_base | (gva & (PAGE - 1))), t, []))
        return out

    def ad_writes(self, acc: str, used: list) -> dict[int, int]:
        """The A/D bits a successful fresh walk sets: {entry address: new entry}."""
        out = {}
        for i, (addr, e) in enumerate(used):
            new = e | A | (D if acc == "write" and i == len(used) - 1 else 0)
            if new != e:
                out[addr] = new
        return out

    def load(self, o: Outcome, acc: str, used: list, size: int = 8) -> int:
        """What a load of `size` bytes through outcome o returns: the walk's A/D writes come first
        (a page table read through a mapping of itself sees its own A bit)."""
        assert o.paddr is not None
        ad = self.ad_writes(acc, used)
        first, last = o.paddr & ~7, (o.paddr + size + 7) & ~7
        words = b"".join(ad.get(a, self.mem.read64(a)).to_bytes(8, "little") for a in range(first, last, 8))
        return int.from_bytes(words[o.paddr - first:o.paddr - first + size], "little")

    def commit(self, gva: int, acc: str, o: Outcome, t: Translation | None, used: list, value: int,
               size: int = 8) -> Outcome:
        """Perform the chosen outcome: A on every entry used and D on the leaf of a write (a fresh
        walk only), cache the translation, do the load or store."""
        if o.fault:
            return o
        for addr, new in self.ad_writes(acc, used).items():
            self.mem.write64(addr, new)
        if t is not None:
            self.tlb.setdefault(gva & ~(PAGE - 1), set()).add(t)
        assert o.paddr is not None
        if acc == "write":
            self.mem.mem[o.paddr:o.paddr + size] = (value & (1 << 8 * size) - 1).to_bytes(size, "little")
        elif acc == "read":
            o.value = int.from_bytes(self.mem.mem[o.paddr:o.paddr + size], "little")
        return o

    def invlpg(self, gva: int) -> None:
        self.tlb.pop(gva & ~(PAGE - 1), None)

    def flush(self) -> None:
        self.tlb.clear()


class Ideal:
    """One IdealVm per live VM, mirrored from the operations the harness sends."""

    def __init__(self, gfns: int) -> None:
        self.gfns = gfns
        self.vms: dict[int, IdealVm] = {}

    def create(self, v: int) -> None:
        self.vms[v] = IdealVm(self.gfns)

    def destroy(self, v: int) -> None:
        self.vms.pop(v, None)
