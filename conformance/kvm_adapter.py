"""The KVM adapter: the host's own Linux KVM under test, at conformance level black-box.

    dmm fuzz --impl-cmd 'python -m dmmcheck.conformance.kvm_adapter' --config kvm.toml
    dmm serve --impl dmmcheck.conformance.kvm_adapter:KvmVmm

Each harness VM is a KVM VM with one vCPU (machine.py), kept across test cases and powered on
afresh by `vm_create`: the adapter's scope has one vCPU (`c` is 0 in every operation). The guest plays every operation itself, as instructions (guest.py): page-
table edits are stores through its direct map (KVM write-protects the tables it shadows, so these
trap and are emulated, as any guest's are), CR3/CR0/CR4/EFER loads and invlpg are instructions,
accesses are loads, stores and fetches at CPL 0 or 3; `set_mode` loads the role's CR0.WP, CR4.SMEP,
CR4.SMAP and EFER.NXE. KVM shows nothing of itself, so the adapter
reports no events and no abstract state: the harness judges what the guest sees (docs/kvm.md).

PML4 entry 511 of the root the guest runs on holds the adapter's own tables. The adapter keeps the
value the harness's guest wrote there (normally 0) and shows it in `read_guest`; an access whose
walk uses that entry, or whose bytes cover it, is not performed (`AccessResult.skipped`): one
entry cannot hold both. A fetch that could reach memory other than through its registers is not
performed either (fetch.py). Both are counted by the harness as skipped, never as passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .adapter import (
    AccessResult,
    Bounds,
    Capabilities,
    Config,
    Observation,
    Operation,
    role_bits,
)
from .scope import guest_tables, table_for

from dmmcheck.impl.kvm import fetch as F
from dmmcheck.impl.kvm import guest as G
from dmmcheck.impl.kvm import ioctl as K
from dmmcheck.impl.kvm.machine import UNBACKED, GuestError, Machine, cpuid, features

PAGE = G.PAGE
UPPER = G.P | G.RW | G.US | G.A
ACCESS_OPS = ("shadow_hit", "tlb_hit", "guest_walk", "guest_fault")
OPERATIONS = frozenset(ACCESS_OPS + (
    "vm_create", "vm_destroy", "cr3_load", "set_mode", "guest_map", "guest_unmap", "gpte_write",
    "invlpg", "balloon_inflate", "balloon_inflate_unmapped", "balloon_inflate_swapped", "balloon_deflate",
    "demand_page"))
# Campaigns vary each test case's scope up to this: three VMs and roots, gvas over up to four 2 MiB
# regions drawn from the whole canonical space (scope.REGIONS), memory for their tables; one vCPU
# per VM (machine.py runs one).
SCOPE = Bounds(vms=3, gfns=48, mfns=48, slots=4, roots=3, gvas=16, regions=4, budget=True, vcpus=1)
CAPACITY = 256  # gfns each KVM VM's memory mapping holds (a larger configuration maps more)
ENTRY511 = 0xFF8  # the byte offset of PML4 entry 511 in a root
NO_1G = -1  # a walk through a 1 GiB page (_walk)
PML4E_BIT8 = -2  # a walk through a PML4 entry with bit 8 set (_walk)


def canonical(gva: int) -> bool:
    return gva >> 47 in (0, (1 << 17) - 1)


@dataclass
class GuestState:
    """What the adapter knows of one live guest: its root, the value the harness's guest keeps in
    that root's entry 511, and the gva pages whose translations the CPU may have cached (to decode
    every frame a fetch might run from)."""

    root: int | None = None
    shadow511: int = 0
    cached: dict[int, set[int]] = field(default_factory=dict)  # gva page -> frame gpas


class KvmVmm:
    """Adapter over the host's /dev/kvm (docs/kvm.md)."""

    name = "dmmcheck.conformance.kvm_adapter:KvmVmm"

    def __init__(self) -> None:
        self.kvm: K.Kvm | None = None
        self.cpuid: list[tuple[int, ...]] = []
        self.machines: list[Machine] = []
        self.config = Config()
        self.live: dict[int, GuestState] = {}
        self.tables: dict[int, dict[tuple[int, int], int]] = {}
        self.skips: dict[str, int] = {}

    def capabilities(self) -> Capabilities:
        return Capabilities(OPERATIONS, events=False, guest_memory=True, scope=SCOPE, level="black-box")

    # ---------------------------------------------------------------- reset
    def reset(self, config: Config) -> None:
        _check(config)
        if self.kvm is None:
            self.kvm = K.Kvm()
            self.cpuid = cpuid(self.kvm)
            # Only NX is needed of what KVM advertises: this host's KVM (PVM) advertises neither
            # SMEP, SMAP nor 1 GiB pages, yet accepts CR4.SMEP/SMAP and enforces them (docs/kvm.md);
            # a walk through a 1 GiB page is not performed (_unsafe).
            missing = [k for k, ok in features(self.cpuid).items() if not ok and k == "nx"]
            if missing:
                raise ValueError(f"this host's KVM does not offer the guest {', '.join(missing)}")
        cap = max(CAPACITY, config.gfns)
        for i, m in enumerate(self.machines):
            if m.capacity < cap:
                m.close()
                self.machines[i] = Machine(self.kvm, self.cpuid, cap)
        while len(self.machines) < config.vms:
            self.machines.append(Machine(self.kvm, self.cpuid, cap))
        for m in self.machines:
            m.unbacked = UNBACKED[config.beyond_memory]
        self.config = config
        self.tables = {r: guest_tables(r, config.gvas) for r in config.roots}
        self.live = {}

    # ---------------------------------------------------------------- steps
    def step(self, op: Operation) -> Observation:
        a, name, obs = op.args, op.action, Observation()
        v = a.get("v")
        if name == "vm_create":
            self.machines[v].power_on(self.config.gfns)
            self.live[v] = GuestState()
            return obs
        if name not in OPERATIONS:
            raise ValueError(f"unknown operation {name!r}")
        st = self.live.get(v)  # type: ignore[arg-type]
        if st is None:
            raise ValueError(f"{name}: VM {v} does not exist")
        if a.get("c", 0) != 0:
            raise ValueError(f"{name}: vCPU {a['c']}: each VM has one vCPU, 0")
        m = self.machines[v]
        if name == "vm_destroy":
            del self.live[v]
        elif name == "cr3_load":
            self._cr3_load(m, st, a["r"])
        elif name == "set_mode":
            self._set_mode(m, st, a["o"])
        elif name == "guest_map":
            leaf = (a["g"] << 12) | G.P | (G.RW if a["w"] else 0) | (G.US if a["u"] else 0) \
                | (G.XD if a["nx"] else 0) | (G.A if a["a"] else 0) | (G.D if a["d"] else 0)
            self._edit(v, m, st, a["r"], a["x"], 1, leaf, obs)
        elif name == "guest_unmap":
            self._edit(v, m, st, a["r"], a["x"], 1, 0, obs)
        elif name == "gpte_write":
            self._edit(v, m, st, a["r"], a["x"], a["level"], (a["g"] << 12) | a["bits"], obs)
        elif name in ACCESS_OPS:
            obs.access = self._access(m, st, a, obs)
        elif name == "invlpg":
            m.invlpg(a["x"])
            st.cached.clear()  # (invlpg drops every paging-structure-cache entry too)
        elif name.startswith("balloon_inflate"):
            self._balloon(m, st, a["g"], obs)
        elif name == "balloon_deflate":
            obs.note = "nothing to do: the guest's next touch faults a zero page in"
        elif name == "demand_page":
            if not m.populate(a["g"]):
                obs.note = "declined: MADV_POPULATE_WRITE is not available"
        return obs

    def _cr3_load(self, m: Machine, st: GuestState, r: int) -> None:
        """mov cr3 by the guest. Before it, the guest stores the adapter's entry into the new root's
        slot 511 (keeping what was there); after it, it puts back what the old root held there."""
        old = st.root
        if old != r:
            saved = m.read64(r * PAGE + ENTRY511)
            m.store(r * PAGE + ENTRY511, G.SLOT511)
            m.load_cr3(r * PAGE)
            if old is not None:
                m.store(old * PAGE + ENTRY511, st.shadow511)
            st.root, st.shadow511 = r, saved
        else:
            m.load_cr3(r * PAGE)
        st.cached.clear()

    def _set_mode(self, m: Machine, st: GuestState, role: str) -> None:
        """The guest loads the role's bits: wrmsr, mov cr4, mov cr0, each only where it changes."""
        bits = role_bits(role)
        smep = "smep" in bits
        flush = smep and not m.smep
        m.set_controls("wp" in bits, "nxe" in bits, smep, "smap" in bits)
        if flush:  # (SDM 4.10.4.1: setting SMEP invalidates the TLB)
            st.cached.clear()

    def _edit(self, v: int, m: Machine, st: GuestState, root: int, gva: int, level: int, entry: int,
              obs: Observation) -> None:
        """The guest writes one entry on gva's path in root's tables (and the upper entries above
        it that are not there yet): each a store through its direct map, reported."""
        tables = {lvl: table_for(self.tables[root], gva, lvl) for lvl in (4, 3, 2, 1)}
        for lvl in (4, 3, 2, 1):
            gpa = (tables[lvl] << 12) + 8 * ((gva >> (12 + 9 * (lvl - 1))) & 511)
            value = entry if lvl == level else tables[lvl - 1] << 12 | UPPER
            current = self._read64(v, gpa)
            if (lvl == level or not current & G.P) and current != value:
                if st.root is not None and gpa == st.root * PAGE + ENTRY511:
                    st.shadow511 = value  # the entry holds the adapter's own: kept aside (docs/kvm.md)
                else:
                    m.store(gpa, value)
                obs.guest_writes.append((v, gpa, value.to_bytes(8, "little")))
            if lvl == level:
                return

    # ---------------------------------------------------------------- accesses
    def _access(self, m: Machine, st: GuestState, a: dict[str, Any], obs: Observation) -> AccessResult:
        acc, user = a["a"], a["u"]
        x = a["x"] + a.get("offset", 0)
        size = 1 if acc == "fetch" else a.get("size", 8)
        if canonical(x):
            why = self._unsafe(m, st, x, acc, user, size)
            if why is not None:
                self.skips[acc] = self.skips.get(acc, 0) + 1
                obs.note = f"not performed: {why}"
                return AccessResult(False, skipped=True)
        if acc == "fetch":
            return self._fetch(m, st, x, user, obs)
        res = m.access(x, acc, user, size, a.get("value", 0))
        if res.exit != "hlt":
            raise GuestError(f"{acc} of {x:#x}: KVM exit {res.exit} at RIP {res.rip:#x}")
        if res.mmio:
            obs.note = f"{res.mmio} MMIO exit(s) answered as memory that does not exist ({self.config.beyond_memory})"
        if res.vector is None:
            self._cache(m, st, x)
            value = None
            if acc == "read":
                value = (res.rax | res.rdx << 64) if size == 16 else res.rax & ((1 << 8 * size) - 1)
            return AccessResult(False, value=value)
        return self._fault(st, res, x, acc)

    def _fault(self, st: GuestState, res: Any, x: int, acc: str) -> AccessResult:
        if res.vector == 14:
            st.cached.pop(x >> 12, None)  # (a #PF drops the faulting address's translations)
            return AccessResult(True, res.error_code, res.cr2)
        if res.vector == 13 and not canonical(x):
            return AccessResult(True, gp=True)
        raise GuestError(f"{acc} of {x:#x}: vector {res.vector} (error code {res.error_code:#x}) at RIP {res.rip:#x}")

    def _fetch(self, m: Machine, st: GuestState, x: int, user: bool, obs: Observation) -> AccessResult:
        res = m.fetch(x, user)
        if res.vector == 14 and res.cr2 == x:
            st.cached.pop(x >> 12, None)
            return AccessResult(True, res.error_code, res.cr2)
        if res.vector == 13 and not canonical(x) and res.rip in (x, G.LAYOUT.iret + len(bytes.fromhex(G.IRET)) - 2):
            # iretq to a non-canonical RIP: #GP, saved with the iretq's RIP (Intel) or, as here
            # (AMD), with the non-canonical target's
            return AccessResult(True, gp=True)
        # Anything else — the single-step trap, another exception of the instruction run there,
        # hlt, an exit — came after the fetch: it succeeded.
        if res.exit not in ("hlt", "internal_error"):  # (internal_error: KVM cannot emulate a fetch from MMIO)
            raise GuestError(f"fetch of {x:#x}: KVM exit {res.exit} at RIP {res.rip:#x}")
        what = f"exit {res.exit}" if res.exit != "hlt" else "hlt" if res.vector is None else f"vector {res.vector}"
        obs.note = f"fetched; then {what}"
        self._cache(m, st, x)
        return AccessResult(False)

    def _cache(self, m: Machine, st: GuestState, x: int) -> None:
        _, frame = self._walk(m, st, x)
        if frame is not None and frame >= 0:
            st.cached.setdefault(x >> 12, set()).add(frame & ~(PAGE - 1))

    def _unsafe(self, m: Machine, st: GuestState, x: int, acc: str, user: bool, size: int) -> str | None:
        """Why the access could not be performed faithfully (None: it can): from a walk of the
        guest's tables in memory, for prediction only."""
        mine = st.root * PAGE + ENTRY511 if st.root is not None else None
        used, frame = self._walk(m, st, x)
        if frame == NO_1G:
            return ("its walk meets a 1 GiB page: the guest CPU this host's KVM offers has none "
                    "(CPUID 80000001H EDX bit 26 clear; KVM faults the PDPTE's PS as reserved)")
        if frame == PML4E_BIT8:
            return ("its walk meets a PML4 entry with bit 8 set: reserved on the AMD guest CPU this host's "
                    "KVM offers (KVM faults it RSVD), ignored on the harness's (Intel SDM)")
        if mine is not None and mine in used:
            return "its walk uses the current root's PML4 entry 511, which holds the adapter's own tables"
        frames = ({frame} if frame is not None else set()) | st.cached.get(x >> 12, set())
        for f in sorted(frames):
            if _private(f) or any(_private(u) for u in used):
                return "it reaches the adapter's own memory"
            lo = (f & ~(PAGE - 1)) + (x & (PAGE - 1))
            if mine is not None and acc != "fetch" and lo < mine + 8 and mine < lo + size:
                return "its bytes cover the current root's PML4 entry 511, which holds the adapter's own tables"
            if acc == "fetch":
                base = f & ~(PAGE - 1)
                if base >= self.config.gfns * PAGE:
                    continue  # MMIO: KVM cannot run it (an emulation failure), nothing runs
                code = m.read(base, F.LEN)
                why = F.unsafe(code, user)
                if why is not None:
                    return f"the instruction at gpa {base:#x} could reach memory: {why}"
        return None

    def _walk(self, m: Machine, st: GuestState, x: int) -> tuple[list[int], int | None]:
        """The entries a walk of x reads and the address it reaches (None: it faults), ignoring
        rights: what the CPU may touch."""
        if st.root is None:
            return [], None
        table, used = st.root * PAGE, []
        limit = self.config.gfns * PAGE
        for lvl in (4, 3, 2, 1):
            gpa = table + 8 * ((x >> (12 + 9 * (lvl - 1))) & 511)
            used.append(gpa)
            if gpa >= limit:
                return used, None  # a table beyond memory: KVM's walk faults it not present
            e = st.shadow511 if gpa == st.root * PAGE + ENTRY511 else m.read64(gpa)
            if not e & G.P or (lvl == 4 and e & G.PS) or e & 0x000F_FF00_0000_0000:
                return used, None
            if lvl == 4 and e & 0x100:
                return used, PML4E_BIT8
            if lvl == 3 and e & G.PS:
                return used, NO_1G
            if lvl == 1 or e & G.PS:
                span = 1 << (12 + 9 * (lvl - 1))
                return used, (e & 0xFF_FFFF_F000 & ~(span - 1)) | (x & (span - 1))
            table = e & 0xFF_FFFF_F000
        return used, None

    # ---------------------------------------------------------------- the host's operations
    def _balloon(self, m: Machine, st: GuestState, g: int, obs: Observation) -> None:
        """The balloon driver gives gfn g back and the host discards it (MADV_DONTNEED). Declined
        for a page the guest uses as a page table: a balloon driver gives only pages the guest
        does not use."""
        if g in self._table_gfns(m, st):
            obs.note = f"declined: gfn {g} is one of the guest's page tables"
            return
        m.discard(g)

    def _table_gfns(self, m: Machine, st: GuestState) -> set[int]:
        out: set[int] = set()
        saved = st.root
        for r in self.config.roots:
            out.add(r)
            st.root = r
            shadow, st.shadow511 = st.shadow511, (st.shadow511 if r == saved else m.read64(r * PAGE + ENTRY511))
            for x in self.config.gvas:
                used, _ = self._walk(m, st, x)
                out.update(u >> 12 for u in used[1:])
            st.shadow511 = shadow
        st.root = saved
        return out

    # ---------------------------------------------------------------- reading back
    def _read64(self, v: int, gpa: int) -> int:
        return int.from_bytes(self.read_guest(v, gpa, 8), "little")

    def read_guest(self, vm: int, gpa: int, n: int) -> bytes:
        m, st = self.machines[vm], self.live.get(vm)
        data = m.read(gpa, n)
        if st is not None and st.root is not None:
            mine = st.root * PAGE + ENTRY511
            if gpa < mine + 8 and mine < gpa + n:  # show the harness's guest's entry 511, not the adapter's
                buf = bytearray(data)
                val = st.shadow511.to_bytes(8, "little")
                for i in range(8):
                    if gpa <= mine + i < gpa + n:
                        buf[mine + i - gpa] = val[i]
                data = bytes(buf)
        return data

    def abstract_state(self) -> dict[str, Any]:
        raise NotImplementedError("level black-box: KVM shows no abstract state")

    def rss_bytes(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def close(self) -> None:
        for m in self.machines:
            m.close()
        self.machines = []
        if self.kvm is not None:
            self.kvm.close()
            self.kvm = None


def _private(gpa: int) -> bool:
    return G.PRIV_GPA <= gpa < G.PRIV_GPA + G.PRIV_PAGES * PAGE


def _check(config: Config) -> None:
    """What this adapter cannot lay out or play: a ValueError (a refused configuration)."""
    if config.beyond_memory not in UNBACKED:
        raise ValueError(f"beyond_memory {config.beyond_memory!r}: KVM gives a final page beyond guest memory to the "
                         "VMM as MMIO (no #PF), so only \"zeros\" (KVM's own convention for a table there) or "
                         "\"ones\" can be played (docs/kvm.md)")
    if config.vcpus != 1:
        raise ValueError(f"{config.vcpus} vCPUs per VM: the adapter runs one (its scope's vcpus)")
    if config.gfns > G.MAX_GFNS:
        raise ValueError(f"{config.gfns} gfns: the adapter's direct map covers {G.MAX_GFNS}")
    for x in config.gvas:
        if (x >> 39) & 511 == 511:
            raise ValueError(f"gva {x:#x}: the top 512 GiB (PML4 entry 511) hold the adapter's own pages")
    owner: dict[int, int] = {}
    for r in config.roots:
        ts = guest_tables(r, config.gvas)
        for g in ts.values():
            if g >= config.gfns:
                raise ValueError(f"root {r}'s page tables need gfns {r}..{max(ts.values())}, beyond the "
                                 f"{config.gfns} gfns of guest memory")
            if owner.setdefault(g, r) != r:
                raise ValueError(f"roots {owner[g]} and {r} would share gfn {g} for their page tables")


if __name__ == "__main__":  # `python -m dmmcheck.conformance.kvm_adapter`: served over dmm-adapter/1
    import sys

    from .serve import run
    sys.exit(run("dmmcheck.conformance.kvm_adapter:KvmVmm"))
