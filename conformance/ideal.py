"""The ideal machine: what a guest should see with no VMM at all.

Each VM is its own 4-level page tables over a flat guest-physical memory, walked by a walker of its
own — written from the Intel SDM's paging rules (Vol. 3A, ch. 4), sharing no code with impl/, so a
walker bug in the VMM cannot hide behind the same bug here. DMM's promise is transparency: every
access through the VMM must give what this machine gives — value, fault or not, #PF error code, CR2,
and the guest's A/D bits.

Where the architecture leaves the outcome open, the machine offers every allowed outcome (the
candidates), and the oracle accepts any of them (docs/conformance.md, "Fair oracles"):
- the TLB: after the guest changes an entry and before it invalidates (invlpg, CR3 load), a CPU may
  still use the old translation, to succeed or to take a "spurious" #PF (SDM 4.10.4.3). Each vCPU
  keeps, per gva page, the translations it may still be using; a #PF on it drops its own for that
  gva (4.10.4.1). A guest edit is a memory write whether the VMM traps it or not (an unsync table):
  no vCPU's TLB is invalidated by it, only by that vCPU's own invlpg, CR3 load or setting of SMEP.
  A CPU may also cache speculatively (SDM 4.10.2.3): any translation valid through its CR3 since
  its last invalidation of the gva, whether it accessed it or not — so before a store that may
  change a translation (to a page a walk read an entry from), each vCPU's TLB takes every
  translation then valid for the gva pages the VM has walked whose entries all have A set (a
  speculative walk that set A would show). A cached translation equal to the fresh walk's is still
  a TLB hit: it sets no A (and no D, where it was cached dirty);
- A bits on a walk that faults (4.8): unchanged, or A set on a top-down prefix of the entries the
  walk used (`Outcome.may_set_a`); never D, never an entry the walk did not use;
- memory beyond the VM (a table, or a leaf's frame, at or past `gfns`): the configuration chooses
  the convention (`beyond`): "fault" (#PF with P|RSVD), "ones" (unbacked memory as on bare metal:
  reads all-ones, so a table there faults RSVD; a leaf there reads all-ones and drops writes) or
  "zeros" (memory that reads zeros: a table there holds not-present entries, so the walk faults not
  present; a leaf there reads zeros and drops writes).
A non-canonical gva raises #GP(0): no walk, no #PF, no CR2 (SDM 3A 3.3.7.1, 6.15).

A VM has several vCPUs over one memory, each with its own CR3, paging mode (a role: CR0.WP,
CR4.SMEP, CR4.SMAP, EFER.NXE) and TLB. A mode change flushes nothing but what SDM 4.10.4.1 names (a
MOV to CR4 that sets SMEP): the TLB caches an entry's rights (R/W, U/S, XD), not the mode, and the
mode in force at the access judges them (4.10.2.2), so a translation cached under CR0.WP=1 may still
serve a supervisor write after WP is cleared, and one cached before SMAP was set is checked with
SMAP. A VMM that flushes on every mode change (as shadow roles do) shows less; that is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# BEYOND_MEMORY: the conventions for memory beyond the VM (Config.beyond_memory); roles by name
from .adapter import BEYOND_MEMORY, ROLE_BITS, role_bits, role_name

PAGE = 4096
P, RW, US, A, D, PS = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7
XD = 1 << 63
PF_P, PF_W, PF_U, PF_RSVD, PF_I = 1, 2, 4, 8, 16
ONES = (1 << 64) - 1  # what a read of memory that does not exist returns on bare metal
ABSENT = {"ones": 0xFF, "zeros": 0x00}  # the byte memory beyond the VM reads as, by convention
MAXPHYADDR = 40
FRAME = ((1 << MAXPHYADDR) - 1) & ~(PAGE - 1)
HIGH_RSVD = ((1 << 52) - 1) & ~((1 << MAXPHYADDR) - 1)
SHIFT = {4: 39, 3: 30, 2: 21, 1: 12}


@dataclass(frozen=True)
class Translation:
    paddr_base: int  # physical base of the page the leaf maps (4 KiB, 2 MiB or 1 GiB)
    rw: bool
    us: bool
    nx: bool
    level: int = 1  # the leaf's level: 1, 2 (2 MiB), 3 (1 GiB)

    def paddr(self, gva: int) -> int:
        return self.paddr_base | (gva & ((1 << SHIFT[self.level]) - 1))

    def order(self) -> tuple:
        return (self.level, self.paddr_base, self.rw, self.us, self.nx)


@dataclass(frozen=True)
class Upper:
    """A paging-structure-cache entry (SDM 4.10.3.1): the table the walk under a PML4E, PDPTE or
    PDE goes to next, the rights accumulated down to it, and the entries it stands for."""
    table: int
    rw: bool
    us: bool
    nx: bool
    above: tuple[int, ...]  # addresses of the entries it was made from (A set in each)

    def order(self) -> tuple:
        return (self.table, self.rw, self.us, self.nx, self.above)


@dataclass
class Outcome:
    fault: bool
    error_code: int = 0
    cr2: int | None = None
    value: int | None = None
    paddr: int | None = None  # where a successful access went
    # Entry addresses the walk read (in memory): after the access each is what this outcome makes
    # it — with A (and D) as set by a successful fresh walk, unchanged by a stale translation, and
    # on a fault unchanged but for A in `may_set_a`.
    touched: list[int] = field(default_factory=list)
    gp: bool = False  # #GP(0): a non-canonical gva (no error code, no CR2)
    # A faulting walk: the entries it used, top-down, whose A it may have set (a prefix of them).
    may_set_a: tuple[int, ...] = ()
    # The upper-level entries the walk used, as the paging-structure caches may keep them:
    # ((level, gva >> its shift), Upper).
    uppers: tuple = ()


@dataclass
class Controls:
    """A vCPU's paging mode: the bits a role names (Config.roles). The reset value is "wp+nxe"."""
    wp: bool = True
    nxe: bool = True
    smep: bool = False
    smap: bool = False

    @staticmethod
    def of(role: str) -> Controls:
        """The mode a role names ("wp+nxe", "-", ...); a ValueError for a malformed name, or one
        not in canonical form (the names Config.roles holds, and traces carry)."""
        bits = role_bits(role)
        if role_name(bits) != role:
            raise ValueError(f"role {role!r}: the canonical name is {role_name(bits)!r}")
        return Controls(wp="wp" in bits, nxe="nxe" in bits, smep="smep" in bits, smap="smap" in bits)

    @property
    def role(self) -> str:
        return role_name({b for b in ROLE_BITS if getattr(self, b)})


class GuestMemory:
    def __init__(self, gfns: int, beyond: str = "fault") -> None:
        if beyond not in BEYOND_MEMORY:
            raise ValueError(f"beyond_memory is one of {BEYOND_MEMORY}, not {beyond!r}")
        self.mem = bytearray(gfns * PAGE)
        self.gfns = gfns
        # the gfns written since the implementation's memory was last compared with this (all of
        # them at first: a new VM's memory is compared once in full)
        self.dirty: set[int] = set(range(gfns))
        self.beyond = beyond
        self.fill = ABSENT.get(beyond, 0xFF)  # ("fault": never read there)

    def has(self, paddr: int, n: int = 8) -> bool:
        return 0 <= paddr and paddr + n <= len(self.mem)

    def read64(self, paddr: int) -> int:
        if not self.has(paddr):
            return int.from_bytes(bytes([self.fill]) * 8, "little")  # (only "ones" and "zeros" read there)
        return int.from_bytes(self.mem[paddr:paddr + 8], "little")

    def read(self, paddr: int, n: int) -> bytes:
        """n bytes within one page; a page beyond memory reads as all-ones ("ones") or zeros."""
        return bytes(self.mem[paddr:paddr + n]) if self.has(paddr, n) else bytes([self.fill]) * n

    def write(self, paddr: int, data: bytes) -> None:
        """n bytes within one page; a store beyond memory is dropped (a bytearray slice past its
        end would grow the memory instead)."""
        if self.has(paddr, len(data)):
            self.mem[paddr:paddr + len(data)] = data
            self.dirty.update(range(paddr // PAGE, (paddr + len(data) - 1) // PAGE + 1))

    def write64(self, paddr: int, value: int) -> None:
        self.mem[paddr:paddr + 8] = (value & (1 << 64) - 1).to_bytes(8, "little")
        self.dirty.add(paddr // PAGE)

    def zero(self, gfn: int) -> None:
        self.mem[gfn * PAGE:(gfn + 1) * PAGE] = bytes(PAGE)
        self.dirty.add(gfn)


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


def canonical(gva: int) -> bool:
    """Bits 63:47 all equal (SDM 3A 3.3.7.1): the only addresses the CPU translates."""
    return gva >> 47 in (0, (1 << 17) - 1)


def permits(acc: str, user: bool, ac: bool, c: Controls, rw: bool, us: bool, nx: bool) -> bool:
    if acc == "fetch":
        return not nx and (us if user else not (us and c.smep))
    if user:
        return us and (rw or acc == "read")
    if us and c.smap and not ac:
        return False
    return acc == "read" or rw or not c.wp


class IdealCpu:
    """One vCPU of a VM: the VM's memory (shared with its other vCPUs), its own CR3 and mode, and
    what its TLB may still hold (SDM 4.10): whole translations (`tlb`: 4 KiB, 2 MiB or 1 GiB, as
    cached by a successful access) and upper-level entries (`psc`, the paging-structure caches: where
    the walk under a PML4E, PDPTE or PDE goes next). It may use either instead of memory until it
    invalidates it itself: another vCPU's invlpg or CR3 load does not reach this TLB."""

    def __init__(self, mem: GuestMemory, vm: IdealVm | None = None) -> None:
        self.mem, self.vm = mem, vm
        self.cr3: int | None = None
        self.ctl = Controls()
        # (level of the leaf, gva >> its shift) -> translations the guest may still be using, each
        # with whether it was cached dirty (D set in its leaf, so a store through it writes no D)
        self.tlb: dict[tuple[int, int], dict[Translation, bool]] = {}
        # (level of the entry, gva >> its shift) -> cached upper-level entries
        self.psc: dict[tuple[int, int], set[Upper]] = {}

    def code(self, acc: str, user: bool) -> int:
        return ((PF_W if acc == "write" else 0) | (PF_U if user else 0)
                | (PF_I if acc == "fetch" and (self.ctl.nxe or self.ctl.smep) else 0))

    def walk(self, gva: int, acc: str, user: bool, ac: bool = False) -> tuple[Outcome, Translation | None, list]:
        """The fresh walk; A/D not yet written (see commit). `used`: the entries it read in memory,
        as (address, entry), top-down."""
        if not canonical(gva):
            return Outcome(True, gp=True), None, []  # #GP before any translation: nothing read
        if self.vm is not None:
            self.vm.gvas.add(gva & ~(PAGE - 1))
        return self._walk(gva, acc, user, ac, 4, (self.cr3 or 0) * PAGE, True, True, False, ())

    def _walk(self, gva: int, acc: str, user: bool, ac: bool, start: int, table: int, rw: bool, us: bool,
              nx: bool, skipped: tuple[int, ...]) -> tuple[Outcome, Translation | None, list]:
        """A walk from the table of level `start` with the rights accumulated above it; `skipped`:
        the entries above it, not read this time (a paging-structure cache stood in for them)."""
        base = self.code(acc, user)
        used: list[tuple[int, int]] = []
        uppers: list[tuple[tuple[int, int], Upper]] = []

        def fault(code: int, above: list) -> tuple[Outcome, None, list]:
            # SDM 4.8: an entry the walk used may have its A set even though the access faults;
            # 4.5: an entry that is not present or sets a reserved bit is used for nothing.
            return Outcome(True, code, gva, touched=list(skipped) + [a for a, _ in used],
                           may_set_a=tuple(a for a, _ in above), uppers=tuple(uppers)), None, used

        for level in range(start, 0, -1):
            addr = table + 8 * (gva >> SHIFT[level] & 511)
            above = list(used)  # the entries that led here
            if self.mem.has(addr):
                e = self.mem.read64(addr)
                used.append((addr, e))
                if self.vm is not None:
                    self.vm.tables.add(addr >> 12)
            elif self.mem.beyond == "fault":
                return fault(PF_P | PF_RSVD | base, above)
            else:
                # a table in memory that does not exist: under "ones" P and reserved bits set (a
                # RSVD fault below), under "zeros" not present (a not-present fault below)
                e = self.mem.read64(addr)
            if not e & P:
                return fault(base, above)
            if reserved(level, e, self.ctl.nxe):
                return fault(PF_P | PF_RSVD | base, above)
            rw, us = rw and bool(e & RW), us and bool(e & US)
            nx = nx or (self.ctl.nxe and bool(e & XD))
            if level == 1 or e & PS:
                frame = (e & FRAME) & ~((1 << SHIFT[level]) - 1)
                break
            table = e & FRAME
            uppers.append(((level, gva >> SHIFT[level]),
                           Upper(table, rw, us, nx, skipped + tuple(a for a, _ in used))))
        t = Translation(frame, rw, us, nx, level)
        # Rights before memory: they belong to the translation, which is complete (every entry was
        # used: 4.7, "a valid translation ... but its access rights do not permit the access"); the
        # memory access comes only after the check, so a permission fault wins over the frame.
        if not permits(acc, user, ac, self.ctl, rw, us, nx):
            return fault(PF_P | base, used)
        paddr = t.paddr(gva)
        if not self.mem.has(paddr & ~(PAGE - 1), PAGE) and self.mem.beyond == "fault":
            return fault(PF_P | PF_RSVD | base, used)
        # ("ones", "zeros": a frame beyond memory is a translation like any, to memory that reads
        # all-ones or zeros and drops stores)
        return Outcome(False, paddr=paddr, touched=list(skipped) + [a for a, _ in used], uppers=tuple(uppers)), t, used

    def candidates(self, gva: int, acc: str, user: bool, ac: bool = False) -> list[tuple[Outcome, Translation | None, list]]:
        """Every outcome the architecture allows, the fresh walk first. Then (SDM 4.10) a walk that
        starts from each cached upper-level entry instead of memory, and each cached translation —
        a success where it permits the access, else a "spurious" #PF with P set (4.10.4.3: a rights
        upgrade not yet invalidated may fault once). Outcomes that would leave the same guest-
        visible result (exception, where the access goes, the entries it leaves) are offered once."""
        fresh = self.walk(gva, acc, user, ac)
        out = [fresh]
        if fresh[0].gp:
            return out
        seen = {self._effect(acc, *fresh)}
        mine = dict(fresh[0].uppers)
        for level in (4, 3, 2):
            key = (level, gva >> SHIFT[level])
            for u in sorted(self.psc.get(key, ()), key=Upper.order):
                if u == mine.get(key) and all(self.mem.read64(a) & A for a in u.above):
                    continue  # what memory says, A already set: the fresh walk's outcome again
                c = self._walk(gva, acc, user, ac, level - 1, u.table, u.rw, u.us, u.nx, u.above)
                if (k := self._effect(acc, *c)) not in seen:
                    seen.add(k)
                    out.append(c)
        # A stale outcome walks nothing: the entries the fresh walk would read stay as they are.
        read = [a for a, _ in fresh[2]]
        for level in (1, 2, 3):
            cached = self.tlb.get((level, gva >> SHIFT[level]), {})
            for t in sorted(cached, key=Translation.order):
                if t == fresh[1] and (acc == "write" and not cached[t] or not self.ad_writes(acc, fresh[2])):
                    continue  # a hit would set what the walk sets: the fresh outcome
                if permits(acc, user, ac, self.ctl, t.rw, t.us, t.nx):
                    o = Outcome(False, paddr=t.paddr(gva), touched=read)
                elif fresh[0].fault and fresh[0].error_code == PF_P | self.code(acc, user):
                    continue  # the fresh fault allows this too (every A bit unchanged included)
                else:
                    o = Outcome(True, PF_P | self.code(acc, user), gva, touched=read)
                if (k := self._effect(acc, o, t, [])) not in seen:
                    seen.add(k)
                    out.append((o, t, []))
        return out

    def _effect(self, acc: str, o: Outcome, t: Translation | None, used: list) -> tuple:
        """What an outcome leaves that the guest can see: two candidates with the same effect are
        one."""
        if o.fault:
            return (True, o.error_code, tuple(o.touched), o.may_set_a)
        ad = self.ad_writes(acc, used)
        return (False, o.paddr, t, tuple((a, ad.get(a, self.mem.read64(a))) for a in o.touched))

    def ad_writes(self, acc: str, used: list) -> dict[int, int]:
        """The A/D bits a successful walk sets: {entry address: new entry}."""
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
        if not self.mem.has(o.paddr, size):
            return int.from_bytes(self.mem.read(o.paddr, size), "little")  # "ones" or "zeros"
        ad = self.ad_writes(acc, used)
        first, last = o.paddr & ~7, (o.paddr + size + 7) & ~7
        words = b"".join(ad.get(a, self.mem.read64(a)).to_bytes(8, "little") for a in range(first, last, 8))
        return int.from_bytes(words[o.paddr - first:o.paddr - first + size], "little")

    def commit(self, gva: int, acc: str, o: Outcome, t: Translation | None, used: list, value: int,
               size: int = 8, adopted: dict[int, int] | None = None) -> Outcome:
        """Perform the chosen outcome: A on every entry its walk used and D on the leaf of a write,
        cache what the walk may cache (the translation; the upper-level entries), do the load or
        store. A #PF instead makes the A bits `adopted` (what the implementation's faulting walk
        set: fault_ad) and drops what the gva's translation could come from (SDM 4.10.4.1: a page
        fault invalidates the TLB entries of its linear address and the paging-structure-cache
        entries that would be used for it). #GP changes nothing."""
        if o.gp:
            return o
        if o.fault:
            for addr, new in (adopted or {}).items():
                self.mem.write64(addr, new)
            self._drop(gva)
            return o
        for addr, new in self.ad_writes(acc, used).items():
            self.mem.write64(addr, new)
        if t is not None:
            self._cache(gva, t, acc == "write" or bool(used and used[-1][1] & D))
        for key, u in o.uppers:  # (their A bits set just above: 4.10.3.1 caches no entry with A clear)
            self.psc.setdefault(key, set()).add(u)
        assert o.paddr is not None
        if acc == "write":
            if self.vm is not None:
                self.vm.before_store(o.paddr)
            self.mem.write(o.paddr, (value & (1 << 8 * size) - 1).to_bytes(size, "little"))
        elif acc == "read":
            o.value = int.from_bytes(self.mem.read(o.paddr, size), "little")
        return o

    def fault_ad(self, o: Outcome, read64: Any) -> tuple[dict[int, int], str | None]:
        """The A bits a faulting access left on its walk (read64: the implementation's guest
        memory), if the architecture allows them: each entry read is unchanged, or — for one in
        o.may_set_a — has gained A, and then so has every entry above it (the CPU sets A as it walks
        down). Never D, never another bit. Returns ({address: entry} to adopt, None) or ({}, why)."""
        may = list(dict.fromkeys(o.may_set_a))
        adopted: dict[int, int] = {}
        for addr in dict.fromkeys(o.touched):
            want, got = self.mem.read64(addr), read64(addr)
            if got == want:
                continue
            if addr in may and got == want | A:
                adopted[addr] = got
                continue
            allowed = f"{want:#x} or {want | A:#x} (A set)" if addr in may and not want & A else f"{want:#x}"
            return {}, (f"the page-table entry at gpa {addr:#x} is {got:#x} after a faulting access; the "
                        f"ideal machine allows {allowed}: a walk that faults sets no D and no A on an entry "
                        f"it did not use")
        for i, addr in enumerate(may):
            if addr in adopted:
                gap = [b for b in may[:i] if not (adopted.get(b, self.mem.read64(b)) & A)]
                if gap:
                    return {}, (f"the page-table entry at gpa {addr:#x} gained A on a faulting walk while the "
                                f"entry above it at gpa {gap[0]:#x} did not: a CPU sets A top-down as it walks")
        return adopted, None

    def _drop(self, gva: int) -> None:
        """What a #PF at gva invalidates: its translations of every size, and the cached upper-level
        entries its walk would use."""
        for level in (1, 2, 3, 4):
            self.tlb.pop((level, gva >> SHIFT[level]), None)
            self.psc.pop((level, gva >> SHIFT[level]), None)

    def invlpg(self, gva: int) -> None:
        """SDM 4.10.4.1: INVLPG drops the translations of gva's page (of any size: a 2 MiB page
        cached as one entry or as many 4 KiB ones goes whole) and every paging-structure-cache entry."""
        for level in (1, 2, 3):
            self.tlb.pop((level, gva >> SHIFT[level]), None)
        self.psc.clear()

    def flush(self) -> None:
        self.tlb.clear()
        self.psc.clear()

    def load_cr3(self, root: int) -> None:
        """MOV to CR3 (no PCIDs, no global pages): a new root and an empty TLB (SDM 4.10.4.1)."""
        self.cr3 = root
        self.flush()

    def set_mode(self, role: str) -> None:
        """The guest loads CR0.WP, CR4.SMEP, CR4.SMAP and EFER.NXE to the role's bits. Of these
        only a MOV to CR4 that sets SMEP invalidates the TLB (SDM 4.10.4.1); the entries kept are
        judged under the new mode when used (the module's docstring)."""
        new = Controls.of(role)
        if new.smep and not self.ctl.smep:
            self.flush()
        elif self.vm is not None:
            self.speculate(self.vm.gvas)  # what the old mode's walks could cache stays cached
        self.ctl = new

    def speculate(self, gvas: set[int]) -> None:
        """Cache what a speculative walk of each gva could (SDM 4.10.2.3): its translation where the
        walk succeeds with A already set in every entry it uses (else it would have had to set A)."""
        if self.cr3 is None:
            return
        for gva in gvas:
            o, t, used = self._walk(gva, "read", False, True, 4, self.cr3 * PAGE, True, True, False, ())
            if t is not None and not o.fault and all(e & A for _, e in used):
                self._cache(gva, t, bool(used[-1][1] & D))

    def _cache(self, gva: int, t: Translation, dirty: bool) -> None:
        """t into the TLB at gva's page of its size; dirty once any caching of it was."""
        cached = self.tlb.setdefault((t.level, gva >> SHIFT[t.level]), {})
        cached[t] = cached.get(t, False) or dirty


class IdealVm:
    """One VM: its guest-physical memory and its vCPUs (indices 0 .. vcpus-1), each an IdealCpu."""

    def __init__(self, gfns: int, beyond: str = "fault", vcpus: int = 1) -> None:
        if vcpus < 1:
            raise ValueError(f"a VM has at least one vCPU, not {vcpus}")
        self.mem = GuestMemory(gfns, beyond)
        self.cpus = [IdealCpu(self.mem, self) for _ in range(vcpus)]
        self.gvas: set[int] = set()  # the gva pages walked: where a speculative walk may have gone
        self.tables: set[int] = set()  # the gfns a walk has read an entry from

    def before_store(self, gpa: int) -> None:
        """A store to gpa is coming: where gpa's page is a page table, every vCPU may have cached,
        speculatively, any translation valid up to now."""
        if gpa >> 12 in self.tables:
            for cpu in self.cpus:
                cpu.speculate(self.gvas)

    def store(self, gpa: int, data: bytes) -> None:
        """A guest store the harness made rather than an access judged here (a page-table edit)."""
        self.before_store(gpa)
        self.mem.write(gpa, data)


class Ideal:
    """One IdealVm per live VM, mirrored from the operations the harness sends."""

    def __init__(self, gfns: int, beyond: str = "fault", vcpus: int = 1) -> None:
        if beyond not in BEYOND_MEMORY:
            raise ValueError(f"beyond_memory is one of {BEYOND_MEMORY}, not {beyond!r}")
        self.gfns, self.beyond, self.vcpus = gfns, beyond, vcpus
        self.vms: dict[int, IdealVm] = {}

    def create(self, v: int) -> None:
        self.vms[v] = IdealVm(self.gfns, self.beyond, self.vcpus)

    def destroy(self, v: int) -> None:
        self.vms.pop(v, None)
