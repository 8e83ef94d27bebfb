"""The DMM policies on the real VMM: demand paging with reclaim and OOM, swapping to a real file with
a clock, content-based sharing with copy-on-write, ballooning, pool sizing under a global budget,
and all of them composed — every guest read checked against the last value written, every state
judged by the spec's own invariants. And the patent's point: no policy touches an spte or the rmap;
every shadow change goes through the MMU (impl/mmu.py), driven by the DMM mapping interface."""

from __future__ import annotations

import ast
import dataclasses
import os
import random
import sys
from pathlib import Path

import pytest

from dmmcheck.impl import policies as policies_mod
from dmmcheck.impl import x86
from dmmcheck.impl.abstract import abstract_state
from dmmcheck.impl.vmm import Vm, Vmm
from dmmcheck.impl.x86 import Access
from dmmcheck.spec import bundled_path, load

sys.path.insert(0, str(Path(__file__).parent))
from speccheck import universe, violations  # noqa: E402

IMPL = Path(policies_mod.__file__).resolve().parent
UP = x86.P | x86.RW | x86.US
PML4, PDPT, PD, PT = 1, 2, 3, 4
TABLES = (PML4, PDPT, PD, PT, 5)  # 5: the window table of build(window=True)
DATA0 = 8  # data gfn of page i: DATA0 + i, at gva 0x400000 + i * 4 KiB
NDATA = 12
NR_GFNS = DATA0 + NDATA
GVAS = tuple(0x400000 + i * x86.PAGE_SIZE for i in range(NDATA))
OFFSETS = (0, 8, 0x800, 0xFF8)


def gva(i: int, off: int = 0) -> int:
    return GVAS[i] + off


def gfn(i: int) -> int:
    return DATA0 + i


PTW = 5  # with a window: a table mapping PT itself at WINDOW, so guest stores there edit PT
WINDOW = 0x600000


def build(vmm: Vmm, ndata: int = NDATA, window: bool = False) -> Vm:
    """A VM whose tables (PML4 1, PDPT 2, PD 3, PT 4) map gva(i) onto gfn(i), user-writable."""
    vm = vmm.create_vm(DATA0 + ndata)

    def put(gpa: int, v: int) -> None:
        vmm.gpa_write(vm, gpa, v.to_bytes(8, "little"))

    put(PML4 << 12, (PDPT << 12) | UP)
    put(PDPT << 12, (PD << 12) | UP)
    put((PD << 12) + 8 * 2, (PT << 12) | UP)  # 0x400000
    for i in range(ndata):
        put((PT << 12) + 8 * i, (gfn(i) << 12) | UP)
    if window:
        put((PD << 12) + 8 * 3, (PTW << 12) | UP)  # 0x600000
        put(PTW << 12, (PT << 12) | UP)
    vmm.load_cr3(vm, PML4)
    return vm


def write(vmm: Vmm, vm: Vm, i: int, value: int, off: int = 0) -> None:
    r = vmm.access(vm, gva(i, off), Access.WRITE, value=value)
    assert not r.fault, (vm.id, i, off, r)


def read(vmm: Vmm, vm: Vm, i: int, off: int = 0) -> int:
    r = vmm.access(vm, gva(i, off), Access.READ)
    assert not r.fault, (vm.id, i, off, r)
    return r.value


def events(vmm: Vmm, name: str) -> list[dict]:
    return [a for n, a in vmm.events if n == name]


def sptes(vmm: Vmm, vm: Vm) -> dict[int, tuple]:
    """gva -> (mfn, writable, user, nx) of the VM's present leaf sptes, read from the shadow tables."""
    st = abstract_state(vmm, gvas=list(GVAS))
    return {x: e for (v, _r, _o, x), e in st["spte"].items() if v == vm.id}


def spec_violations(vmm: Vmm) -> list[str]:
    u = universe(vmm, NR_GFNS, (PML4,), GVAS)
    if vmm.policy.swap is not None:
        u = dataclasses.replace(u, slots=vmm.policy.swap.slots)
    return [str(v) for v in violations(vmm, u)]


def holders_exact(vmm: Vmm) -> None:
    """Refcounts are the holders, p2m reversed is vmm.mapping.holders, every mapped page in an active list."""
    rev: dict[int, set] = {}
    for vm in vmm.vms.values():
        for g, m in vm.p2m.items():
            rev.setdefault(m, set()).add((vm.id, g))
    assert rev == vmm.mapping.holders
    for m, hs in rev.items():
        d = vmm.machine.desc[m]
        assert d.refcount == len(hs), (m, d, hs)
        assert d.status in ("mapped", "shared") and vmm.machine.pool_of(m) == f"active:{d.owner}"


# ---------------------------------------------------------------- demand paging

def test_demand_paging_takes_the_idle_pool_first_then_the_vmm_pool_and_zeroes_pages():
    vmm = Vmm(48, 128)
    vm = build(vmm)
    vmm.events = []
    m_idle = vmm.policy.pool_grow(vm)
    assert m_idle is not None and vmm.machine.pool_of(m_idle) == f"idle:{vm.id}"
    assert events(vmm, "pool_grow") == [{"v": vm.id, "m": m_idle}]
    write(vmm, vm, 0, 0x1111)
    assert vm.p2m[gfn(0)] == m_idle and vmm.machine.pool_of(m_idle) == f"active:{vm.id}"
    assert events(vmm, "demand_page") == [{"v": vm.id, "g": gfn(0), "m": m_idle}]
    # The idle pool is empty now: the next page comes from the VMM pool.
    assert len(vmm.machine.idle[vm.id]) == 0
    m_next = vmm.machine.first_mfn + len(vmm.machine.desc)  # not yet touched: in the VMM pool
    assert vmm.machine.pool_of(m_next) == "vmm"
    assert read(vmm, vm, 1) == 0
    assert vm.p2m[gfn(1)] == m_next and vmm.machine.pool_of(m_next) == f"active:{vm.id}"
    # A reused frame is zeroed: balloon page 0 out (its frame goes to the VMM pool, dirty), then the
    # next first touch gets that very frame and reads zero everywhere.
    write(vmm, vm, 0, 0x2222, 0x800)
    assert vmm.policy.balloon_inflate(vm, gfn(0))
    assert vmm.machine.pool_of(m_idle) == "vmm" and vmm.mapping.read_frame(m_idle) != bytes(4096)
    assert [read(vmm, vm, 2, off) for off in OFFSETS] == [0] * len(OFFSETS)
    assert vm.p2m[gfn(2)] == m_idle
    assert spec_violations(vmm) == []


def test_budget_exhausted_reclaims_by_swapping_and_the_touch_succeeds():
    vmm = Vmm(48, 128, swap_slots=16, budget=8)
    vm = build(vmm)
    for i in range(4):
        write(vmm, vm, i, 0x100 + i)
        read(vmm, vm, i)  # the tables are shadowed now: never reclaim victims
    assert vmm.machine.held() == 8
    vmm.events = []
    write(vmm, vm, 4, 0x104)  # the budget is exhausted: a page must be swapped out first
    out = events(vmm, "swap_out")
    assert len(out) == 1 and out[0]["v"] == vm.id and out[0]["g"] not in TABLES
    assert events(vmm, "demand_page") == [{"v": vm.id, "g": gfn(4), "m": out[0]["m"]}]  # its frame reused
    assert vmm.machine.held() == 8
    for i in range(5, NDATA):
        write(vmm, vm, i, 0x100 + i)
        assert vmm.machine.held() <= 8
    assert vmm.policy.stats["reclaims"] >= NDATA - 4
    for i in range(NDATA):  # everything reads back, through swap-in
        assert read(vmm, vm, i) == 0x100 + i
        assert vmm.machine.held() <= 8
    assert vmm.policy.stats["swap_ins"] >= NDATA - 4
    assert spec_violations(vmm) == []


@pytest.mark.parametrize("frames,budget", [(8, None), (48, 8)], ids=["no-memory", "budget"])
def test_out_of_memory_without_swap_loses_nothing(frames, budget):
    vmm = Vmm(frames, 128, budget=budget)
    vm = build(vmm)  # 4 table pages
    for i in range(4):
        write(vmm, vm, i, 0xA0 + i)
    vmm.events = []
    p2m = dict(vm.p2m)
    r = vmm.access(vm, gva(4), Access.WRITE, value=0xBAD)
    assert r.fault and r.oom
    assert events(vmm, "oom") == [{"v": vm.id, "g": gfn(4)}]
    assert vm.p2m == p2m and not vm.swapped and vmm.policy.stats["ooms"] == 1
    r = vmm.access(vm, gva(5), Access.READ)
    assert r.fault and r.oom
    for i in range(4):
        assert read(vmm, vm, i) == 0xA0 + i
    # Giving a page back makes room: the access that failed now succeeds.
    assert vmm.policy.balloon_inflate(vm, gfn(3))
    write(vmm, vm, 4, 0xB4)
    assert read(vmm, vm, 4) == 0xB4
    assert vmm.access(vm, gva(3), Access.READ).oom  # full again: gfn 3 now has no page to come back to
    assert spec_violations(vmm) == []


# ---------------------------------------------------------------- swapping

def test_swap_out_writes_the_file_frees_the_page_and_swap_in_restores_it():
    vmm = Vmm(48, 128, swap_slots=16)
    vm = build(vmm)
    for i in range(6):
        write(vmm, vm, i, 0x1000 + i)
        write(vmm, vm, i, 0xF000 + i, 0x800)
    vmm.events = []
    slots = {}
    swap = vmm.policy.swap
    real_write = swap.write
    current: list[int] = []
    mapped_at_write = []

    def write_slot(slot: int, data: bytes) -> None:
        # When the slot is written the guest must no longer reach the page (a store racing with the
        # write would be lost): no spte maps it any more.
        sptes_now = abstract_state(vmm, gvas=list(GVAS))["spte"].values()
        mapped_at_write.append(any(e[0] == current[-1] for e in sptes_now))
        real_write(slot, data)

    swap.write = write_slot
    for i in range(4):
        current.append(vm.p2m[gfn(i)])
        g, mfn = gfn(i), vm.p2m[gfn(i)]
        assert gva(i) in sptes(vmm, vm)
        assert vmm.policy.swap_out(vm, g)
        slot = vm.swapped[g]
        slots[i] = (slot, mfn)
        assert vmm.events[-1] == ("swap_out", {"v": vm.id, "g": g, "m": mfn, "s": slot})
        assert ("zap_spte", {"v": vm.id, "r": PML4, "o": "wp+nxe", "x": gva(i)}) in vmm.events
        assert g not in vm.p2m and mfn not in vmm.mapping.holders and mfn not in vmm.mmu.rmap
        assert gva(i) not in sptes(vmm, vm)
        d = vmm.machine.desc[mfn]
        assert vmm.machine.pool_of(mfn) == f"idle:{vm.id}" and (d.status, d.refcount) == ("reserved", 0)
        assert (vm.id, 0) in vmm.tlb.pending
    assert mapped_at_write == [False] * 4
    swap.write = real_write
    assert len({s for s, _ in slots.values()}) == 4
    disk = os.pread(vmm.policy.swap.fd, 16 * 4096, 0)  # the file itself (unlinked: nothing left behind)
    for i, (slot, mfn) in slots.items():
        page = disk[slot * 4096:(slot + 1) * 4096]
        assert int.from_bytes(page[0:8], "little") == 0x1000 + i
        assert int.from_bytes(page[0x800:0x808], "little") == 0xF000 + i
        assert vmm.peek(vm, gfn(i) << 12, 8) == (0x1000 + i).to_bytes(8, "little")  # no swap-in
        vmm.mapping.write_frame(mfn, b"\xee" * 4096)  # scribble on the freed frame: swap-in must read the file
    assert all(gfn(i) in vm.swapped for i in slots)
    vmm.events = []
    for i, (slot, _mfn) in slots.items():
        assert read(vmm, vm, i) == 0x1000 + i and read(vmm, vm, i, 0x800) == 0xF000 + i
        ins = events(vmm, "swap_in")[-1]
        assert (ins["v"], ins["g"], ins["s"]) == (vm.id, gfn(i), slot) and vm.p2m[gfn(i)] == ins["m"]
        assert gfn(i) not in vm.swapped and slot not in vmm.policy.swap.used
    for i in (4, 5):  # never swapped: untouched
        assert read(vmm, vm, i) == 0x1000 + i
    assert not vmm.policy.swap.used and vmm.policy.stats["swap_ins"] == 4
    # Page tables are never swapped.
    assert not vmm.policy.swap_out(vm, PT) and PT in vm.p2m
    assert spec_violations(vmm) == []


@pytest.mark.parametrize("fault,event", [("full", "swap_full"), ("io", "swap_io_error")])
def test_injected_swap_faults_leave_the_page_resident_and_intact(fault, event):
    vmm = Vmm(48, 128, swap_slots=4)
    vm = build(vmm)
    for i in range(3):
        write(vmm, vm, i, 0x77 + i)
    p2m = dict(vm.p2m)
    vmm.events = []
    vmm.policy.swap.inject(fault)
    assert not vmm.policy.swap_out(vm, gfn(1))
    assert events(vmm, event) == [{"v": vm.id, "g": gfn(1)}] and not events(vmm, "swap_out")
    assert vm.p2m == p2m and not vm.swapped and not vmm.policy.swap.used
    assert vmm.machine.desc[p2m[gfn(1)]].status == "mapped"
    assert [read(vmm, vm, i) for i in range(3)] == [0x77, 0x78, 0x79]
    assert spec_violations(vmm) == []
    # One-shot: the next swap-out works and the page comes back intact.
    assert vmm.policy.swap_out(vm, gfn(1))
    assert read(vmm, vm, 1) == 0x78


def test_a_swap_fault_during_reclaim_is_out_of_memory_and_loses_nothing():
    vmm = Vmm(48, 128, swap_slots=4, budget=7)
    vm = build(vmm)
    for i in range(3):
        write(vmm, vm, i, 0x50 + i)
    vmm.policy.swap.inject("io")
    p2m = dict(vm.p2m)
    r = vmm.access(vm, gva(3), Access.WRITE, value=0x53)
    assert r.fault and r.oom and vm.p2m == p2m and not vm.swapped
    write(vmm, vm, 3, 0x53)  # one-shot: now reclaim works
    assert [read(vmm, vm, i) for i in range(4)] == [0x50, 0x51, 0x52, 0x53]


def test_clock_gives_a_recently_used_page_a_second_chance():
    def setup() -> tuple[Vmm, Vm, int, int]:
        vmm = Vmm(48, 128, swap_slots=4)
        vm = build(vmm)
        write(vmm, vm, 0, 1)
        write(vmm, vm, 1, 2)
        p, q = vm.p2m[gfn(0)], vm.p2m[gfn(1)]
        assert p < q  # the hand reaches p first
        for m in (p, q):
            vmm.mapping.young(m)  # both sptes old
        return vmm, vm, p, q

    # Control: neither used since: the first page the hand reaches goes.
    vmm, vm, p, q = setup()
    assert vmm.policy.clock_victim() == (vm, gfn(0), p)
    # p used since (a TLB flush first, so the real MMU walks the shadow and sets A): skipped once.
    vmm, vm, p, q = setup()
    vmm.invlpg(vm, gva(0))
    assert read(vmm, vm, 0) == 1
    assert vmm.policy.clock_victim() == (vm, gfn(1), q)
    assert vmm.policy.clock_victim() == (vm, gfn(0), p)  # its chance is used up
    # The tables are never victims, and nor is a shared page.
    assert vmm.policy.share_pair(vm, gfn(0), vm, gfn(2)) is False  # gfn 2 not resident
    write(vmm, vm, 2, 1)
    assert vmm.policy.share_pair(vm, gfn(0), vm, gfn(2))
    for _ in range(4):
        v = vmm.policy.clock_victim()
        assert v is not None and v[1] not in TABLES and v[2] != p


# ---------------------------------------------------------------- sharing

def two_vms(swap_slots: int = 0, **kw) -> tuple[Vmm, Vm, Vm]:
    vmm = Vmm(48, 128, swap_slots=swap_slots, **kw)
    return vmm, build(vmm), build(vmm)


def test_identical_pages_merge_into_one_read_only_page():
    vmm, a, b = two_vms()
    for vm in (a, b):
        write(vmm, vm, 0, 0xC0FFEE)
        write(vmm, vm, 0, 0xBEEF, 0xFF8)
    m1, m2 = a.p2m[gfn(0)], b.p2m[gfn(0)]
    assert sptes(vmm, a)[gva(0)][1] is True  # writable before the merge
    vmm.events = []
    assert vmm.policy.share_pair(a, gfn(0), b, gfn(0))
    assert events(vmm, "share_merge") == [dict(v1=a.id, g1=gfn(0), m1=m1, v2=b.id, g2=gfn(0), m2=m2)]
    assert a.p2m[gfn(0)] == b.p2m[gfn(0)] == m1
    d = vmm.machine.desc[m1]
    assert (d.status, d.refcount) == ("shared", 2) and vmm.mapping.holders[m1] == {(a.id, gfn(0)), (b.id, gfn(0))}
    assert vmm.machine.pool_of(m2) == f"idle:{b.id}" and vmm.machine.desc[m2].status == "reserved"
    assert sptes(vmm, a)[gva(0)][:2] == (m1, False)  # protected in place, not left writable
    assert gva(0) not in sptes(vmm, b)
    for vm in (a, b):
        assert read(vmm, vm, 0) == 0xC0FFEE and read(vmm, vm, 0, 0xFF8) == 0xBEEF
        assert sptes(vmm, vm)[gva(0)][:2] == (m1, False)
    assert not vmm.policy.share_pair(a, gfn(0), b, gfn(0))  # already one page
    assert spec_violations(vmm) == []


class _CollidingHash:
    """hashlib with a blake2b under which every page collides."""

    calls = 0

    def blake2b(self, data: bytes, digest_size: int = 16):
        _CollidingHash.calls += 1

        class _H:
            def digest(self) -> bytes:
                return bytes(digest_size)
        return _H()


def test_pages_differing_in_one_byte_never_merge_even_when_hashes_collide(monkeypatch):
    vmm, a, b = two_vms()
    for vm in (a, b):
        write(vmm, vm, 0, 0x5555)
        write(vmm, vm, 1, 0x5555)
    write(vmm, b, 1, 0x5555 | 1 << 56)  # one byte apart from every other page
    write(vmm, a, 2, 0x5555 | 2 << 56)  # one byte apart too
    monkeypatch.setattr(policies_mod, "hashlib", _CollidingHash())
    _CollidingHash.calls = 0
    before = {(v.id, g): m for v in (a, b) for g, m in v.p2m.items()}
    assert not vmm.policy.share_pair(a, gfn(0), b, gfn(1))
    assert not vmm.policy.share_pair(a, gfn(2), b, gfn(1))
    merges = vmm.policy.scan()
    assert _CollidingHash.calls > 0  # the scanner did hash, and every hash collided
    # Only the byte-identical pages merged: gfn 0 of a and b, and a's gfn 1 onto them.
    assert merges == 2
    shared = a.p2m[gfn(0)]
    assert b.p2m[gfn(0)] == shared and a.p2m[gfn(1)] == shared and vmm.machine.desc[shared].refcount == 3
    assert b.p2m[gfn(1)] == before[(b.id, gfn(1))] and a.p2m[gfn(2)] == before[(a.id, gfn(2))]
    assert vmm.machine.desc[b.p2m[gfn(1)]].status == "mapped"
    assert read(vmm, b, 1) == 0x5555 | 1 << 56 and read(vmm, a, 2) == 0x5555 | 2 << 56
    assert read(vmm, a, 1) == 0x5555
    assert spec_violations(vmm) == []


def test_scan_merges_zero_pages_and_leaves_distinct_pages_alone():
    vmm, a, b = two_vms()
    for i in range(3):
        assert read(vmm, a, i) == 0
    for i in range(2):
        assert read(vmm, b, i) == 0
    write(vmm, a, 3, 1)
    write(vmm, b, 3, 2)
    held = vmm.machine.held()
    vmm.events = []
    assert vmm.policy.scan() == 4
    zero = a.p2m[gfn(0)]
    assert {a.p2m[gfn(i)] for i in range(3)} | {b.p2m[gfn(i)] for i in range(2)} == {zero}
    assert vmm.machine.desc[zero].refcount == 5 and vmm.mapping.read_frame(zero) == bytes(4096)
    assert a.p2m[gfn(3)] != b.p2m[gfn(3)]
    assert len(events(vmm, "share_merge")) == 4
    assert vmm.machine.held() == held  # merged pages went to idle pools, still the VMs'
    assert vmm.policy.scan() == 0  # nothing left to merge
    for vm, n in ((a, 3), (b, 2)):
        assert [read(vmm, vm, i) for i in range(n)] == [0] * n
    assert read(vmm, a, 3) == 1 and read(vmm, b, 3) == 2
    holders_exact(vmm)
    assert spec_violations(vmm) == []


def test_a_guest_write_to_a_shared_page_breaks_copy_on_write():
    vmm = Vmm(48, 128)
    a, b, c = build(vmm), build(vmm), build(vmm)
    for vm in (a, b, c):
        write(vmm, vm, 0, 0x1234)
        write(vmm, vm, 0, 0x5678, 8)
    assert vmm.policy.share_pair(a, gfn(0), b, gfn(0)) and vmm.policy.share_pair(a, gfn(0), c, gfn(0))
    m = a.p2m[gfn(0)]
    assert vmm.machine.desc[m].refcount == 3
    for vm in (a, b, c):
        read(vmm, vm, 0)  # read-only sptes everywhere
    vmm.events = []
    r = vmm.access(b, gva(0), Access.WRITE, value=0x9999)  # the writer gets its own copy,
    assert not r.fault and not r.emulated  # writable in the shadow at once: the store runs on the CPU
    n = b.p2m[gfn(0)]
    assert n != m and events(vmm, "cow_break") == [{"v": b.id, "g": gfn(0), "m": m, "n": n}]
    assert (vmm.machine.desc[m].refcount, vmm.machine.desc[m].status) == (2, "shared")
    assert (vmm.machine.desc[n].refcount, vmm.machine.desc[n].status) == (1, "mapped")
    assert vmm.machine.pool_of(n) == f"active:{b.id}"
    assert read(vmm, b, 0) == 0x9999 and read(vmm, b, 0, 8) == 0x5678  # the rest of the page copied
    assert read(vmm, a, 0) == 0x1234 and read(vmm, c, 0) == 0x1234  # the others keep the old value
    assert sptes(vmm, b)[gva(0)][:2] == (n, True)
    assert sptes(vmm, a)[gva(0)][:2] == (m, False)
    write(vmm, a, 0, 0xAAAA, 8)
    assert a.p2m[gfn(0)] not in (m, n) and vmm.machine.desc[m].refcount == 1
    assert read(vmm, c, 0, 8) == 0x5678 and read(vmm, a, 0, 8) == 0xAAAA and read(vmm, a, 0) == 0x1234
    holders_exact(vmm)


def test_guest_tables_merged_before_first_use_are_unshared_by_the_walk():
    """Two VMs with identical tables: the scanner merges the tables no shadow page uses yet; the
    walker's A/D writes into them then break copy-on-write, and each VM still sees its own data."""
    vmm = Vmm(48, 128)
    a, b = build(vmm), build(vmm)
    assert vmm.policy.scan() >= 3  # PDPT, PD, PT of b onto a's (the roots are shadowed: never)
    assert b.p2m[PT] == a.p2m[PT] and vmm.machine.desc[a.p2m[PT]].status == "shared"
    write(vmm, a, 0, 0xA)
    write(vmm, b, 0, 0xB)
    assert a.p2m[PT] != b.p2m[PT]
    assert read(vmm, a, 0) == 0xA and read(vmm, b, 0) == 0xB
    holders_exact(vmm)
    assert spec_violations(vmm) == []


def test_guest_tables_reclaimed_before_first_use_come_back_through_the_walk():
    """Tables no shadow page uses yet are ordinary pages: the clock may swap them out. The walk of
    the VM's first access swaps them back in (each swap-in may reclaim again)."""
    vmm = Vmm(48, 128, swap_slots=32, budget=12)
    a, b = build(vmm), build(vmm)  # b does not run yet: its PDPT, PD and PT are unshadowed
    vmm.events = []
    for i in range(NDATA):
        write(vmm, a, i, 0xA00 + i)
    swapped_tables = {e["g"] for e in events(vmm, "swap_out") if e["v"] == b.id and e["g"] in TABLES}
    assert swapped_tables == {PDPT, PD, PT}
    assert spec_violations(vmm) == []
    for i in range(NDATA):
        write(vmm, b, i, 0xB00 + i)
        assert vmm.machine.held() <= 12
    for i in range(NDATA):
        assert read(vmm, a, i) == 0xA00 + i and read(vmm, b, i) == 0xB00 + i
    holders_exact(vmm)
    assert spec_violations(vmm) == []


@pytest.mark.parametrize("memory", [True, False], ids=["copied", "out-of-memory"])
def test_a_wp0_supervisor_write_to_a_read_only_shared_page_is_copied_or_out_of_memory(memory):
    """CR0.WP=0: a supervisor store to a read-only gpte is emulated; on a shared page the VMM must
    copy first. Without a page for the copy the access ends as out-of-memory (it used to raise)."""
    vmm = Vmm(48, 128, budget=None if memory else 12)
    a, b = build(vmm), build(vmm)
    for vm in (a, b):
        write(vmm, vm, 0, 0x5EED)
    vmm.gpa_write(a, PT << 12, ((gfn(0) << 12) | x86.P | x86.US).to_bytes(8, "little"))  # read-only
    assert vmm.policy.share_pair(a, gfn(0), b, gfn(0))
    m = a.p2m[gfn(0)]
    vmm.set_controls(a, wp=False)
    if not memory:
        while vmm.policy.pool_grow(b) is not None:
            pass
    r = vmm.access(a, gva(0), Access.WRITE, value=0x7777)
    if memory:
        assert not r.fault and a.p2m[gfn(0)] != m and read(vmm, a, 0) == 0x7777
    else:
        assert r.fault and r.oom and a.p2m[gfn(0)] == m and read(vmm, a, 0) == 0x5EED
    assert b.p2m[gfn(0)] == m and read(vmm, b, 0) == 0x5EED
    vmm.set_controls(a, wp=True)
    assert vmm.access(a, gva(0), Access.WRITE, value=1).error_code == x86.PF_P | x86.PF_W
    holders_exact(vmm)
    assert spec_violations(vmm) == []


# ---------------------------------------------------------------- ballooning

def test_balloon_inflate_resident_page_frees_it_to_the_vmm_pool_and_deflate_gives_zero():
    vmm = Vmm(48, 128)
    vm = build(vmm)
    write(vmm, vm, 0, 0xDEAD)
    mfn = vm.p2m[gfn(0)]
    held = vmm.machine.held()
    vmm.events = []
    assert vmm.policy.balloon_inflate(vm, gfn(0))
    assert events(vmm, "balloon_inflate") == [{"v": vm.id, "g": gfn(0), "m": mfn}]
    assert vmm.machine.pool_of(mfn) == "vmm" and vmm.machine.desc[mfn].status == "free"
    assert gfn(0) in vm.ballooned and gfn(0) not in vm.p2m and gva(0) not in sptes(vmm, vm)
    assert vmm.machine.held() == held - 1
    assert spec_violations(vmm) == []
    assert read(vmm, vm, 0) == 0  # the touch deflates and demand-pages a zero page
    assert [n for n, _ in vmm.events if n in ("balloon_deflate", "demand_page")] == ["balloon_deflate", "demand_page"]
    assert gfn(0) not in vm.ballooned
    # Explicit deflate, then a touch: zero as well.
    write(vmm, vm, 1, 0xBEEF)
    assert vmm.policy.balloon_inflate(vm, gfn(1)) and vmm.policy.balloon_deflate(vm, gfn(1))
    assert not vmm.policy.balloon_deflate(vm, gfn(1))
    assert gfn(1) not in vm.ballooned and read(vmm, vm, 1) == 0
    # A gfn never touched; a guest table is refused.
    assert vmm.policy.balloon_inflate(vm, gfn(5)) and events(vmm, "balloon_inflate_unmapped")
    assert not vmm.policy.balloon_inflate(vm, PT) and PT not in vm.ballooned
    assert spec_violations(vmm) == []


def test_balloon_inflate_swapped_page_frees_its_slot():
    vmm = Vmm(48, 128, swap_slots=4)
    vm = build(vmm)
    write(vmm, vm, 0, 0x4242)
    assert vmm.policy.swap_out(vm, gfn(0))
    slot = vm.swapped[gfn(0)]
    vmm.events = []
    assert vmm.policy.balloon_inflate(vm, gfn(0))
    assert events(vmm, "balloon_inflate_swapped") == [{"v": vm.id, "g": gfn(0), "s": slot}]
    assert gfn(0) not in vm.swapped and slot not in vmm.policy.swap.used and gfn(0) in vm.ballooned
    assert spec_violations(vmm) == []
    assert read(vmm, vm, 0) == 0 and not events(vmm, "swap_in")


def test_ballooning_a_shared_page_keeps_it_for_the_other_holders():
    vmm, a, b = two_vms()
    for vm in (a, b):
        write(vmm, vm, 0, 0x3131)
    assert vmm.policy.share_pair(a, gfn(0), b, gfn(0))
    m = a.p2m[gfn(0)]
    assert vmm.policy.balloon_inflate(a, gfn(0))  # the owner gives its gfn back
    assert vmm.machine.desc[m].refcount == 1 and vmm.machine.pool_of(m) != "vmm"
    assert read(vmm, b, 0) == 0x3131 and read(vmm, a, 0) == 0
    assert spec_violations(vmm) == []
    assert vmm.policy.balloon_inflate(b, gfn(0))  # the last holder: the page is free
    assert vmm.machine.pool_of(m) == "vmm" and vmm.machine.desc[m].refcount == 0
    assert read(vmm, b, 0) == 0
    holders_exact(vmm)
    assert spec_violations(vmm) == []


# ---------------------------------------------------------------- pools and the budget

def test_pool_grow_and_shrink_respect_the_global_budget():
    vmm = Vmm(48, 128, budget=11)
    a, b = build(vmm), build(vmm)  # 8 table pages
    assert vmm.machine.held() == 8
    ga = vmm.policy.pool_grow(a)
    gb = vmm.policy.pool_grow(b)
    assert ga is not None and gb is not None and vmm.machine.held() == 10
    write(vmm, a, 0, 1)  # from a's idle pool: held unchanged
    assert a.p2m[gfn(0)] == ga and vmm.machine.held() == 10
    write(vmm, a, 1, 2)  # from the VMM pool, the last page the budget allows
    assert vmm.machine.held() == 11
    vmm.events = []
    assert vmm.policy.pool_grow(a) is None and vmm.policy.pool_grow(b) is None
    assert not events(vmm, "pool_grow") and vmm.machine.held() == 11
    assert vmm.access(a, gva(2), Access.READ).oom  # a's pool is empty, the budget is spent, no swap
    # b's idle page is b's: b can still touch a page; a cannot have it.
    write(vmm, b, 0, 3)
    assert b.p2m[gfn(0)] == gb
    assert vmm.policy.pool_shrink(b) is None  # nothing idle left
    # Shrinking gives the budget back.
    assert vmm.policy.balloon_inflate(a, gfn(1))
    assert vmm.machine.held() == 10
    g2 = vmm.policy.pool_grow(b)
    assert g2 is not None and vmm.policy.pool_grow(a) is None
    assert vmm.policy.pool_shrink(b) == g2 and vmm.machine.pool_of(g2) == "vmm"
    assert events(vmm, "pool_shrink") == [{"v": b.id, "m": g2}]
    assert vmm.machine.held() == 10
    assert vmm.policy.pool_grow(a) is not None and vmm.machine.held() == 11
    assert spec_violations(vmm) == []


def test_pool_grow_without_a_budget_is_bounded_by_the_machine():
    vmm = Vmm(10, 128)
    vm = build(vmm)
    grown = [vmm.policy.pool_grow(vm) for _ in range(8)]
    assert grown[:6] == sorted(grown[:6]) and None not in grown[:6] and grown[6:] == [None, None]
    assert vmm.machine.vmm_free() == 0
    while vmm.policy.pool_shrink(vm) is not None:
        pass
    assert vmm.machine.vmm_free() == 6 and vmm.machine.held() == 4


# ---------------------------------------------------------------- composition

def test_a_shared_page_swapped_out_and_back_in():
    vmm, a, b = two_vms(swap_slots=8)
    for vm in (a, b):
        write(vmm, vm, 0, 0x600D)
        write(vmm, vm, 0, 0xF00D, 0x800)
    assert vmm.policy.share_pair(a, gfn(0), b, gfn(0))
    m = a.p2m[gfn(0)]
    for vm in (a, b):
        read(vmm, vm, 0)
        assert sptes(vmm, vm)[gva(0)][0] == m
    vmm.events = []
    assert vmm.policy.swap_out_page(m) == 2
    outs = events(vmm, "swap_out")
    assert sorted((e["v"], e["g"], e["m"]) for e in outs) == [(a.id, gfn(0), m), (b.id, gfn(0), m)]
    assert a.swapped[gfn(0)] != b.swapped[gfn(0)]  # a slot each
    assert gva(0) not in sptes(vmm, a) and gva(0) not in sptes(vmm, b)
    assert m not in vmm.mapping.holders and m not in vmm.mmu.rmap
    d = vmm.machine.desc[m]
    assert (d.refcount, d.status) == (0, "reserved") and vmm.machine.pool_of(m) == f"idle:{d.owner}"
    assert spec_violations(vmm) == []
    assert read(vmm, b, 0) == 0x600D and read(vmm, a, 0, 0x800) == 0xF00D
    assert a.p2m[gfn(0)] != b.p2m[gfn(0)]  # back as two private pages
    write(vmm, a, 0, 0x1)
    assert read(vmm, b, 0) == 0x600D and read(vmm, a, 0) == 0x1 and read(vmm, b, 0, 0x800) == 0xF00D
    holders_exact(vmm)
    assert not vmm.policy.swap.used
    assert spec_violations(vmm) == []


def test_swap_out_of_one_holder_of_a_shared_page_keeps_the_page_for_the_other():
    vmm, a, b = two_vms(swap_slots=8)
    for vm in (a, b):
        write(vmm, vm, 0, 0x7777)
    assert vmm.policy.share_pair(a, gfn(0), b, gfn(0))
    m = a.p2m[gfn(0)]
    read(vmm, a, 0)
    assert vmm.policy.swap_out(b, gfn(0))
    assert vmm.machine.desc[m].refcount == 1 and a.p2m[gfn(0)] == m
    assert sptes(vmm, a)[gva(0)][0] == m  # a's spte is untouched
    assert spec_violations(vmm) == []
    # Ballooning the swapped gfn frees the slot; the other holder is not affected.
    assert vmm.policy.balloon_inflate(b, gfn(0)) and not vmm.policy.swap.used
    assert read(vmm, a, 0) == 0x7777 and read(vmm, b, 0) == 0
    write(vmm, a, 0, 0x8888)  # a write to a page shared with no one any more
    assert read(vmm, a, 0) == 0x8888
    holders_exact(vmm)
    assert spec_violations(vmm) == []


def test_destroying_a_vm_rehomes_its_shared_pages_and_returns_everything():
    vmm, a, b = two_vms(swap_slots=8)
    for i in range(4):
        for vm in (a, b):
            write(vmm, vm, i, 0x900 + i)
    for i in range(3):
        assert vmm.policy.share_pair(a, gfn(i), b, gfn(i))  # a owns the shared pages
    assert vmm.policy.swap_out(a, gfn(3))
    assert vmm.policy.balloon_inflate(a, gfn(5))
    vmm.policy.pool_grow(a)
    vmm.events = []
    vmm.destroy_vm(a)
    assert len(events(vmm, "share_rehome")) == 3 and events(vmm, "vm_destroy") == [{"v": a.id}]
    assert vmm.machine.held() == vmm.machine.held(b.id)
    assert not vmm.policy.swap.used
    assert [read(vmm, b, i) for i in range(4)] == [0x900 + i for i in range(4)]
    holders_exact(vmm)
    assert spec_violations(vmm) == []


class Mix:
    """Two VMs, every policy enabled, a small budget; a reference model of guest memory: every read
    is checked against the last value written to that address (0 after a balloon inflation)."""

    def __init__(self, seed: int, *, frames: int = 40, budget: int = 18, slots: int = 32) -> None:
        self.rng = random.Random(seed)
        self.vmm = Vmm(frames, 192, swap_slots=slots, budget=budget)
        self.vmm.events = []
        self.budget = budget
        self.vms = [build(self.vmm, window=True), build(self.vmm, window=True)]
        self.mem: dict[tuple[int, int, int], int] = {}  # (vm, page, offset) -> value
        self.ro: set[tuple[int, int]] = set()  # (vm, page) the guest mapped read-only
        self.ooms = 0

    def value(self) -> int:
        # Few distinct values at few offsets: pages often end up identical, so they merge.
        return self.rng.choice([0, 1, 2, 0xFFFF, self.rng.getrandbits(64)])

    def data_gfn(self) -> tuple[Vm, int]:
        return self.rng.choice(self.vms), self.rng.randrange(NDATA)

    def step(self) -> str:
        rng, vmm, pol = self.rng, self.vmm, self.vmm.policy
        op = rng.random()
        if op < 0.55:
            vm, i = self.data_gfn()
            off = rng.choice(OFFSETS)
            if rng.random() < 0.5:
                v = self.value()
                r = vmm.access(vm, gva(i, off), Access.WRITE, value=v)
                if r.oom:
                    self.ooms += 1
                elif (vm.id, i) in self.ro and vm.wp:  # CR0.WP=0 lets the supervisor write anyway
                    assert r.fault and r.error_code == x86.PF_P | x86.PF_W, r
                else:
                    assert not r.fault, r
                    self.mem[(vm.id, i, off)] = v
                return "write"
            r = vmm.access(vm, gva(i, off), Access.READ)
            if r.oom:
                self.ooms += 1
            else:
                assert not r.fault, r
                assert r.value == self.mem.get((vm.id, i, off), 0), (vm.id, i, off)
            return "read"
        if op < 0.63:
            vm, i = self.data_gfn()
            if rng.random() < 0.1:
                pol.swap.inject(rng.choice(["full", "io"]))
            pol.swap_out(vm, gfn(i))
            pol.swap.inject(None)
            return "swap_out"
        if op < 0.66:
            resident = sorted(vmm.mapping.holders)
            if resident:
                pol.swap_out_page(rng.choice(resident))
            return "swap_out_page"
        if op < 0.70:
            pol.scan()
            return "scan"
        if op < 0.78:
            (v1, i1), (v2, i2) = self.data_gfn(), self.data_gfn()
            pol.share_pair(v1, gfn(i1), v2, gfn(i2))
            return "share_pair"
        if op < 0.83:
            vm, i = self.data_gfn()
            assert pol.balloon_inflate(vm, gfn(i))
            for off in OFFSETS:
                self.mem.pop((vm.id, i, off), None)  # the content is gone
            return "inflate"
        if op < 0.86:
            vm, i = self.data_gfn()
            pol.balloon_deflate(vm, gfn(i))
            return "deflate"
        if op < 0.90:
            pol.pool_grow(rng.choice(self.vms))
            return "grow"
        if op < 0.94:
            pol.pool_shrink(rng.choice(self.vms))
            return "shrink"
        if op < 0.955:
            vm = rng.choice(self.vms)
            vmm.invlpg(vm, rng.choice(GVAS))  # lets the clock see use again
            return "invlpg"
        if op < 0.97:
            # The guest edits its PTE through its window on PT: read-only or writable again.
            vm, i = self.data_gfn()
            ro = (vm.id, i) not in self.ro
            pte = (gfn(i) << 12) | x86.P | x86.US | (0 if ro else x86.RW)
            r = vmm.access(vm, WINDOW + 8 * i, Access.WRITE, value=pte)
            if r.oom:
                self.ooms += 1
            else:
                assert not r.fault, r
                (self.ro.add if ro else self.ro.discard)((vm.id, i))
                vmm.invlpg(vm, gva(i))
            return "pte"
        if op < 0.98:
            vm = rng.choice(self.vms)
            vmm.set_controls(vm, wp=not vm.wp)  # switches the vCPU to the shadow of its new role
            return "wp"
        # A store while the swap device refuses: if it needs a page it fails as out-of-memory, and
        # nothing is lost (the model is not updated; later reads check it).
        pol.swap.inject("full")
        vm, i = self.data_gfn()
        v = self.value()
        r = vmm.access(vm, gva(i), Access.WRITE, value=v)
        pol.swap.inject(None)
        if r.oom:
            self.ooms += 1
        elif (vm.id, i) in self.ro and vm.wp:
            assert r.fault and r.error_code == x86.PF_P | x86.PF_W, r
        else:
            assert not r.fault, r
            self.mem[(vm.id, i, 0)] = v
        return "write_swap_full"

    def check(self, spec: bool = True) -> None:
        assert self.vmm.machine.held() <= self.budget
        holders_exact(self.vmm)
        for vm in self.vms:
            assert not (set(vm.p2m) & set(vm.swapped)) and not (vm.ballooned & (set(vm.p2m) | set(vm.swapped)))
        assert sorted(s for vm in self.vms for s in vm.swapped.values()) == sorted(self.vmm.policy.swap.used)
        if spec:  # ~10 ms: after every policy step, every 10th guest access
            assert spec_violations(self.vmm) == []

    def verify_all(self) -> None:
        """Every address reads back what the model says (swapping pages in as needed)."""
        for vm in self.vms:
            for i in range(NDATA):
                for off in OFFSETS:
                    r = self.vmm.access(vm, gva(i, off), Access.READ)
                    if not r.oom:
                        assert r.value == self.mem.get((vm.id, i, off), 0), (vm.id, i, off)


MIX_STEPS = 1000


@pytest.mark.parametrize("seed", range(3))
def test_all_policies_composed_keep_guest_memory_and_the_spec_invariants(seed):
    mix = Mix(seed)
    ops: dict[str, int] = {}
    for step in range(MIX_STEPS):
        op = mix.step()
        ops[op] = ops.get(op, 0) + 1
        try:
            mix.check(spec=op not in ("read", "write") or step % 10 == 0)
        except AssertionError as e:
            raise AssertionError(f"seed {seed} step {step} after {op}: {e}") from e
    mix.verify_all()
    st = mix.vmm.policy.stats
    # The mix really composed the policies.
    assert st["swap_outs"] and st["swap_ins"] and st["merges"] and st["cow_breaks"] and st["reclaims"], st
    names = {n for n, _ in mix.vmm.events}
    assert {"balloon_inflate", "balloon_deflate", "pool_grow", "pool_shrink", "demand_page"} <= names
    # Teardown of one VM in the middle of all this leaves the other intact.
    a, b = mix.vms
    mix.vmm.destroy_vm(a)
    mix.vms = [b]
    mix.check()
    mix.verify_all()
    assert mix.vmm.machine.held() == mix.vmm.machine.held(b.id)


# ---------------------------------------------------------------- no policy writes an spte

def test_only_the_mmu_writes_shadow_tables_under_a_policy_heavy_mix():
    mix = Mix(101, budget=16)
    vmm = mix.vmm
    cpu = vmm.cpu
    lo = vmm.private.first_mfn << x86.PAGE_SHIFT
    hi = (vmm.private.first_mfn + vmm.private.count) << x86.PAGE_SHIFT
    writers: dict[str, int] = {}  # nearest impl/ module writing a shadow table -> writes
    by_policy = [0]  # shadow writes with a policy frame on the stack
    dmm_writers: set[str] = set()
    orig_write64, orig_write = cpu.write64, cpu.write

    def nearest() -> tuple[str, bool]:
        f = sys._getframe(2)
        name, policy = None, False
        while f is not None:
            p = Path(f.f_code.co_filename).resolve()
            if p.parent == IMPL:
                name = name or p.name
                policy = policy or p.name in ("policies.py", "swap.py")
            f = f.f_back
        return name or "?", policy

    def record(paddr: int, n: int) -> None:
        name, policy = nearest()
        if paddr < hi and paddr + n > lo:
            writers[name] = writers.get(name, 0) + 1
            by_policy[0] += policy
        else:
            dmm_writers.add(name)

    def write64(paddr: int, value: int) -> None:
        record(paddr, 8)
        orig_write64(paddr, value)

    def write_(paddr: int, data: bytes) -> None:
        record(paddr, len(data))
        orig_write(paddr, data)

    cpu.write64, cpu.write = write64, write_
    for _ in range(500):
        mix.step()
    mix.verify_all()
    assert set(writers) <= {"mmu.py", "cpu.py"}, writers
    assert writers.get("mmu.py", 0) > 100 and by_policy[0] > 20  # policies did change the shadow, via the MMU
    assert not dmm_writers & {"policies.py", "swap.py"}, dmm_writers  # frames only through mapping.write_frame


FORBIDDEN = {"rmap", "install_leaf", "zap", "zap_mfn", "zap_vm", "write64", "read64", "mmu", "cpu", "sps",
             "by_mfn", "shadow_table", "link", "write_protect", "flush_pending", "uc"}


@pytest.mark.parametrize("module", ["policies.py", "swap.py"])
def test_policies_name_nothing_of_the_shadow(module):
    tree = ast.parse((IMPL / module).read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            bad.append((node.lineno, node.attr))
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN:
            bad.append((node.lineno, node.id))
        elif isinstance(node, ast.Constant) and node.value in FORBIDDEN:
            bad.append((node.lineno, repr(node.value)))  # getattr(x, "rmap")
        elif isinstance(node, ast.ImportFrom) and node.module in ("mmu", "cpu", "walker"):
            bad.append((node.lineno, f"from .{node.module}"))
        elif isinstance(node, ast.alias) and node.name.split(".")[-1] in FORBIDDEN | {"Mmu", "Cpu"}:
            bad.append((node.lineno, node.name))
    assert bad == []


# ---------------------------------------------------------------- events are spec actions

def test_every_event_is_a_spec_action_with_its_parameters():
    actions = load(bundled_path()).actions
    mix = Mix(7)
    for _ in range(400):
        mix.step()
    vmm = mix.vmm
    # The rarer policy actions, on purpose.
    a, b = mix.vms
    vmm.policy.swap.inject("full")
    vmm.policy.swap_out(a, next(iter(sorted(a.p2m.keys() - set(TABLES))), gfn(0)))
    vmm.policy.swap.inject("io")
    vmm.policy.swap_out(b, next(iter(sorted(b.p2m.keys() - set(TABLES))), gfn(0)))
    vmm.policy.balloon_inflate(a, gfn(NDATA - 1))
    vmm.policy.balloon_inflate(a, gfn(NDATA - 1))
    for vm in (a, b):  # a zero page a owns and b shares: rehomed to b when a goes
        vmm.policy.balloon_inflate(vm, gfn(0))
        assert read(vmm, vm, 0) == 0
    assert vmm.policy.share_pair(a, gfn(0), b, gfn(0))
    vmm.destroy_vm(a)
    c = build(vmm)
    while vmm.policy.pool_shrink(c) is not None or vmm.policy.pool_shrink(b) is not None:
        pass
    vmm.policy.budget = vmm.machine.held()  # no page for c beyond its tables, and no reclaim
    vmm.policy.reclaim_enabled = False
    assert vmm.access(c, gva(0), Access.WRITE, value=1).oom
    names = {n for n, _ in vmm.events}
    policy_actions = {"demand_page", "oom", "swap_out", "swap_in", "swap_full", "swap_io_error", "share_merge",
                      "share_rehome", "cow_break", "balloon_inflate", "balloon_inflate_unmapped",
                      "balloon_inflate_swapped", "balloon_deflate", "pool_grow", "pool_shrink", "vm_create",
                      "vm_destroy"}
    assert policy_actions <= names, policy_actions - names
    for name, args in vmm.events:
        if name in ("hit", "guest_write"):  # the harness's: shadow_hit/tlb_hit; a marker
            continue
        assert name in actions, name
        assert set(args) == {p.name for p in actions[name].params}, (name, args)


def test_a_swap_device_leaves_no_file_behind_even_when_killed(tmp_path):
    import subprocess
    import textwrap

    code = textwrap.dedent("""
        import os, signal, tempfile
        tempfile.tempdir = os.environ["TMP_FOR_SWAP"]
        from dmmcheck.impl.swap import SwapDevice
        d = SwapDevice(4, sync=False)
        d.write(1, b"x" * 4096)
        os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit: as after a crash
    """)
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMP_FOR_SWAP": str(tmp_path)}, timeout=60)
    assert r.returncode == -9
    assert list(tmp_path.iterdir()) == []
