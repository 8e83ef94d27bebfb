"""x86-64 4-level paging: entry bits, error-code bits, CPU paging mode, address helpers.

Facts from the Intel SDM Vol. 3A §4.5-4.7. MAXPHYADDR
is 40, what Unicorn's CPU model reports (bits 51:40 of an entry are reserved, checked by probing).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ENTRIES = 512
MAXPHYADDR = 40

# Entry bits.
P = 1 << 0
RW = 1 << 1
US = 1 << 2
PWT = 1 << 3
PCD = 1 << 4
A = 1 << 5
D = 1 << 6
PS = 1 << 7
G = 1 << 8
XD = 1 << 63

ADDR_MASK = ((1 << MAXPHYADDR) - 1) & ~(PAGE_SIZE - 1)
RSVD_HIGH = ((1 << 52) - 1) & ~((1 << MAXPHYADDR) - 1)  # bits 51:MAXPHYADDR, at every level

# #PF error-code bits.
PF_P = 1 << 0
PF_W = 1 << 1
PF_U = 1 << 2
PF_RSVD = 1 << 3
PF_I = 1 << 4

# Levels, leaf-most last; the linear-address bits each indexes.
LEVELS = (4, 3, 2, 1)
LEVEL_SHIFT = {4: 39, 3: 30, 2: 21, 1: 12}
LEVEL_NAME = {4: "PML4E", 3: "PDPTE", 2: "PDE", 1: "PTE"}
# Size of a page mapped by a leaf at each level.
PAGE_BYTES = {3: 1 << 30, 2: 1 << 21, 1: 1 << 12}


class Access(Enum):
    READ = "read"
    WRITE = "write"
    FETCH = "fetch"


@dataclass(frozen=True)
class Mode:
    """The paging-relevant CPU state of one access."""

    user: bool = False  # CPL 3
    wp: bool = True  # CR0.WP
    nxe: bool = True  # EFER.NXE
    smep: bool = False  # CR4.SMEP
    smap: bool = False  # CR4.SMAP
    ac: bool = False  # EFLAGS.AC (lets supervisor data accesses to user pages through SMAP)


def canonical(gva: int) -> bool:
    top = gva >> 47
    return top == 0 or top == (1 << 17) - 1


def at(base: int, level: int, idx: int) -> int:
    """The gva that entry idx of a level's table starts, under gva prefix base: sign-extended from
    bit 47, so that the upper half (PML4 entries 256..511) gets its canonical addresses."""
    va = base | idx << LEVEL_SHIFT[level]
    return va | 0xFFFF_0000_0000_0000 if va >> 47 & 1 else va


def index(gva: int, level: int) -> int:
    return (gva >> LEVEL_SHIFT[level]) & (ENTRIES - 1)


def reserved_mask(level: int, entry: int, nxe: bool) -> int:
    """The reserved bits of a present entry at this level (§4.5, table 4-14 ... 4-19)."""
    mask = RSVD_HIGH
    if not nxe:
        mask |= XD
    if level == 4:
        mask |= PS
    elif level == 3 and entry & PS:
        mask |= ((1 << 30) - 1) & ~((1 << 13) - 1)  # bits 29:13 of a 1 GiB leaf
    elif level == 2 and entry & PS:
        mask |= ((1 << 21) - 1) & ~((1 << 13) - 1)  # bits 20:13 of a 2 MiB leaf
    return mask


def leaf_frame(level: int, entry: int) -> int:
    """The physical base of the page a leaf maps."""
    size = PAGE_BYTES[level]
    return entry & ADDR_MASK & ~(size - 1)
