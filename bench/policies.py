"""The DMM policies' speed, through the whole stack. Prints one JSON object.

swap_roundtrips_per_second: one page swapped out (its sptes zapped through the rmap, the slot written
  and flushed to the swap file with fdatasync, the page freed) and swapped back in by the guest's
  next access to it (hidden fault, software walk, slot read into a newly allocated page, shadow fill).
  Also without the flush (swap_sync false), for the cost of the disk alone.
merges_per_second: share_pair merges of byte-identical pages of two VMs (byte compare, write
  protection of the kept page through the rmap, remap of the other, its page freed).
cow_breaks_per_second: guest stores to shared pages (hidden fault, walk, copy into a new page,
  remap, writable shadow fill, the store retried on the CPU). The store writes the value the page
  already holds, so the next round finds the pages identical again.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmmcheck.impl import x86  # noqa: E402
from dmmcheck.impl.vmm import Vmm  # noqa: E402
from dmmcheck.impl.x86 import Access  # noqa: E402

UP = x86.P | x86.RW | x86.US
PAGES = 256  # data pages per VM
ROUNDS = 10  # each figure is the best of ROUNDS passes over PAGES pages (this machine is noisy)
BASE = 0x40000000
PML4, PDPT, PD, PT0 = 1, 2, 3, 4
DATA0 = PT0 + 1


def build(vmm: Vmm, pages: int):
    """A VM whose tables map gva BASE + i * 4 KiB onto data gfn DATA0 + i."""
    vm = vmm.create_vm(DATA0 + pages)
    put = lambda gpa, v: vmm.gpa_write(vm, gpa, v.to_bytes(8, "little"))  # noqa: E731
    put(PML4 << 12, (PDPT << 12) | UP)
    put((PDPT << 12) + 8, (PD << 12) | UP)
    put(PD << 12, (PT0 << 12) | UP)
    vmm.gpa_write(vm, PT0 << 12, b"".join((((DATA0 + i) << 12) | UP).to_bytes(8, "little") for i in range(pages)))
    vmm.load_cr3(vm, PML4)
    return vm


def gva(i: int) -> int:
    return BASE + i * x86.PAGE_SIZE


def swap_roundtrips(sync: bool, pages: int, rounds: int) -> float:
    vmm = Vmm(machine_frames=pages + 16, private_frames=64, swap_slots=pages, swap_sync=sync)
    vm = build(vmm, pages)
    for i in range(pages):
        vmm.access(vm, gva(i), Access.WRITE, value=0x5000 + i)
    swap_out = vmm.policy.swap_out
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(pages):
            swap_out(vm, DATA0 + i)
            r = vmm.access(vm, gva(i), Access.READ)
        best = max(best, pages / (time.perf_counter() - t))
        assert r.value == 0x5000 + pages - 1
    st = vmm.policy.stats
    assert st["swap_outs"] == st["swap_ins"] == pages * rounds, st
    vmm.policy.swap.close()
    return best


def merges_and_cow_breaks(pages: int, rounds: int) -> tuple[float, float]:
    vmm = Vmm(machine_frames=2 * pages + 32, private_frames=64)
    a, b = build(vmm, pages), build(vmm, pages)
    for vm in (a, b):
        for i in range(pages):
            vmm.access(vm, gva(i), Access.WRITE, value=0x7000 + i)  # page i of a == page i of b
    share_pair = vmm.policy.share_pair
    merges = cows = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(pages):
            share_pair(a, DATA0 + i, b, DATA0 + i)
        merges = max(merges, pages / (time.perf_counter() - t))
        t = time.perf_counter()
        for i in range(pages):
            vmm.access(b, gva(i), Access.WRITE, value=0x7000 + i)
        cows = max(cows, pages / (time.perf_counter() - t))
    st = vmm.policy.stats
    assert st["merges"] == st["cow_breaks"] == pages * rounds, st
    assert all(vmm.access(vm, gva(i), Access.READ).value == 0x7000 + i for vm in (a, b) for i in range(pages))
    return merges, cows


def main() -> None:
    sync_pages = PAGES // 4  # fdatasync per page: fewer pages, the same figure
    swap = swap_roundtrips(True, sync_pages, ROUNDS)
    swap_nosync = swap_roundtrips(False, PAGES, ROUNDS)
    merges, cows = merges_and_cow_breaks(PAGES, ROUNDS)
    print(json.dumps({"swap_roundtrips_per_second": round(swap), "merges_per_second": round(merges),
                      "cow_breaks_per_second": round(cows), "swap_sync": True,
                      "swap_roundtrips_per_second_nosync": round(swap_nosync), "swap_pages": sync_pages,
                      "pages": PAGES, "rounds": ROUNDS}))


if __name__ == "__main__":
    main()
