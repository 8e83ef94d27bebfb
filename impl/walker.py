"""The software page walker: the VMM's walk of a guest's own tables (as KVM's paging_tmpl.h does).

It follows the rules of x86.py over any 64-bit memory given as read/write callbacks (guest-physical
memory for the VMM, flat memory for the ideal machine). A and D are written only when the access
succeeds — A in every entry used, D in the leaf on a write — never on a fault: the leaf of a
faulting access is untouched (the SDM lets upper-level A bits be set on a fault; kvm-unit-tests and
our comparison with Unicorn treat those as don't-care).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import x86
from .x86 import Access, Mode

Read64 = Callable[[int], int]
Write64 = Callable[[int, int], None]


@dataclass
class Walk:
    """The outcome of one walk."""

    gva: int
    fault: bool = False
    gp: bool = False  # a non-canonical address: #GP, not #PF
    error_code: int = 0
    paddr: int = 0  # the physical address of the access (on success)
    level: int = 0  # level of the leaf (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB)
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (level, entry address, entry)
    writable: bool = False  # effective rights of the translation
    user: bool = False
    nx: bool = False

    @property
    def leaf(self) -> tuple[int, int, int]:
        return self.entries[-1]

    @property
    def frame(self) -> int:
        """Base of the 4 KiB frame holding the access (within a huge page, the right one)."""
        return self.paddr & ~(x86.PAGE_SIZE - 1)


def walk(read64: Read64, write64: Write64 | None, cr3: int, gva: int, access: Access, mode: Mode,
         set_ad: bool = True) -> Walk:
    """Walk the 4-level tables at cr3 for one access; update A/D through write64 on success."""
    w = Walk(gva)
    if not x86.canonical(gva):
        w.fault, w.gp = True, True
        return w
    base_code = access_error_code(access, mode)
    table = cr3 & x86.ADDR_MASK
    rw = us = True
    nx = False
    for level in x86.LEVELS:
        addr = table + 8 * x86.index(gva, level)
        entry = read64(addr)
        w.entries.append((level, addr, entry))
        if not entry & x86.P:
            return _fault(w, base_code)
        if entry & x86.reserved_mask(level, entry, mode.nxe):
            return _fault(w, base_code | x86.PF_P | x86.PF_RSVD)
        rw &= bool(entry & x86.RW)
        us &= bool(entry & x86.US)
        nx |= mode.nxe and bool(entry & x86.XD)
        if level == 1 or (level in (2, 3) and entry & x86.PS):
            w.level = level
            size = x86.PAGE_BYTES[level]
            w.paddr = x86.leaf_frame(level, entry) | (gva & (size - 1))
            break
        table = entry & x86.ADDR_MASK
    w.writable, w.user, w.nx = rw, us, nx
    if not allowed(access, mode, rw, us, nx):
        return _fault(w, base_code | x86.PF_P)
    if set_ad and write64 is not None:
        for level, addr, entry in w.entries:
            new = entry | x86.A
            if (level, addr, entry) == w.leaf and access is Access.WRITE:
                new |= x86.D
            if new != entry:
                write64(addr, new)
    return w


def access_error_code(access: Access, mode: Mode) -> int:
    """The #PF error-code bits that describe the access itself (W/R, U/S, I/D), whatever the cause."""
    code = (x86.PF_W if access is Access.WRITE else 0) | (x86.PF_U if mode.user else 0)
    if access is Access.FETCH and (mode.nxe or mode.smep):
        code |= x86.PF_I
    return code


def allowed(access: Access, mode: Mode, rw: bool, us: bool, nx: bool) -> bool:
    """The SDM's access-rights rules (§4.6) for effective rights rw, us, nx."""
    if access is Access.FETCH:
        if nx:
            return False
        if mode.user:
            return us
        return not (us and mode.smep)
    if mode.user:
        return us and (rw or access is Access.READ)
    if us and mode.smap and not mode.ac:
        return False
    return access is Access.READ or rw or not mode.wp


def _fault(w: Walk, code: int) -> Walk:
    w.fault = True
    w.error_code = code
    return w
