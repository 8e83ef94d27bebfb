"""A minimal ideal machine for tests: the guest's own tables over flat guest-physical memory, no
VMM, no TLB (the conformance layer will own the full one). What the DMM must be transparent to."""

from __future__ import annotations

from dmmcheck.impl import x86
from dmmcheck.impl.vmm import BAD_GFN_CODE
from dmmcheck.impl.walker import access_error_code, walk
from dmmcheck.impl.x86 import Access


class Ideal:
    def __init__(self, nr_gfns: int) -> None:
        self.mem = bytearray(nr_gfns * x86.PAGE_SIZE)
        self.nr = nr_gfns
        self.cr3_gfn = 0
        self.wp, self.nxe, self.smep, self.smap = True, True, False, False

    def read64(self, gpa: int) -> int:
        if gpa + 8 > len(self.mem):
            raise IndexError(gpa)
        return int.from_bytes(self.mem[gpa:gpa + 8], "little")

    def write64(self, gpa: int, v: int) -> None:
        self.mem[gpa:gpa + 8] = v.to_bytes(8, "little")

    def access(self, gva: int, acc: Access, user: bool, value: int):
        from dmmcheck.impl.x86 import Mode

        mode = Mode(user=user, wp=self.wp, nxe=self.nxe, smep=self.smep, smap=self.smap)
        if x86.index(gva, 4) == 511:
            return (True, access_error_code(acc, mode), None)
        ad: list[tuple[int, int]] = []  # A/D are written only for an access that completes
        try:
            w = walk(self.read64, lambda a, v: ad.append((a, v)), self.cr3_gfn << 12, gva, acc, mode)
        except IndexError:
            return (True, BAD_GFN_CODE | access_error_code(acc, mode), None)
        if w.fault:
            return (True, w.error_code, None)
        if w.paddr >> 12 >= self.nr:
            return (True, BAD_GFN_CODE | access_error_code(acc, mode), None)
        for a, v in ad:
            self.write64(a, v)
        if acc is Access.WRITE:
            self.write64(w.paddr, value)
            return (False, 0, None)
        return (False, 0, self.read64(w.paddr) if acc is Access.READ else None)
