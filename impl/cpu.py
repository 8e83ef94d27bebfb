"""A real x86-64 CPU and MMU: QEMU's, through Unicorn.

One Unicorn instance owns the machine's physical memory. The top slot of every address space
(PML4 entry 511, the "hole") holds the CPU's own pages: a GDT with 64-bit user segments, a stack,
and the code that performs one guest access — as supervisor directly, as user through an `iretq`
into CPL 3 (writing CS does not change the privilege level in Unicorn; a real transition does).
`install_hole(root)` puts the hole into a page-table root; guests use the lower half.

A page fault reaches us as interrupt 14 with CR2 set; Unicorn has no register for the #PF error
code, so it is read from the saved CPU context at an offset found by calibration at start-up:
faults with known, distinct error codes are provoked and the one 32-bit field matching them all is
used. Where calibration finds none, `error_code` is None ("not observable"), never a guess.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_INTR, UC_MODE_64, Uc, UcError
from unicorn.unicorn_const import (
    UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_PROT_ALL,
)
from unicorn.x86_const import (
    UC_CPU_X86_BROADWELL,
    UC_X86_REG_CR0,
    UC_X86_REG_CR2,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_GDTR,
    UC_X86_REG_RAX,
    UC_X86_REG_RBX,
    UC_X86_REG_RCX,
    UC_X86_REG_RDI,
    UC_X86_REG_RDX,
    UC_X86_REG_RSI,
    UC_X86_REG_RSP,
    UC_X86_REG_XMM0,
)

from . import x86
from .x86 import Access, Mode

try:  # Unicorn's C library, as its Python binding loaded it (see Cpu._write_regs)
    from unicorn.unicorn_py3.unicorn import uclib as _UCLIB
except ImportError:  # pragma: no cover - another binding layout
    _UCLIB = None

MSR_EFER = 0xC0000080
EFER_NXE = 1 << 11
CR0_PE, CR0_WP, CR0_PG = 1 << 0, 1 << 16, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_SMEP, CR4_SMAP = 1 << 5, 1 << 9, 1 << 20, 1 << 21
RFLAGS_AC = 1 << 18

HOLE_VA = 0xFFFF_FF80_0000_0000  # PML4 slot 511
HOLE_SLOT = 511
KERNEL_CS, KERNEL_DS, USER_DS, USER_CS = 0x08, 0x10, 0x18 | 3, 0x20 | 3
GDT = [0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFF2000000FFFF, 0x00AFFA000000FFFF]

# The hole's pages, by index: page tables, then the pages they map.
_Q = struct.Struct("<Q")
_PDPT, _PD, _PT, _GDT, _STACK, _KCODE, _UCODE = range(7)
HOLE_PAGES = 7
# Access instructions, at these offsets of both code pages: mov rax,[rbx] / mov [rbx],rax / jmp rbx
_CODE = {Access.READ: (0x00, bytes.fromhex("488b03")), Access.WRITE: (0x10, bytes.fromhex("488903")),
         Access.FETCH: (0x20, bytes.fromhex("ffe3"))}
_IRETQ = 0x40
# wrmsr; mov cr4, rsi; mov cr0, rdi: control registers loaded the way the CPU loads them, so that
# QEMU's derived state (the SMAP check lives there) follows; a register write alone does not.
_LOAD_CONTROLS = 0x50
_LOAD_CODE = bytes.fromhex("0f30" "0f22e6" "0f22c7")
_INVLPG = 0x70  # invlpg [rbx]
_INVLPG_CODE = bytes.fromhex("0f013b")
# Loads and stores of 1, 2, 4 and 16 bytes (8 is _CODE's), at 0x100 + 0x10 * k of both code pages:
# movzx eax,byte/word [rbx] and mov eax,[rbx] zero-extend into rax; the 16-byte ones go through
# xmm0 (movdqu: any alignment; CR4.OSFXSR is set so SSE is usable).
_SIZED = {(Access.READ, 1): "0fb603", (Access.READ, 2): "0fb703", (Access.READ, 4): "8b03",
          (Access.READ, 16): "f30f6f03", (Access.WRITE, 1): "8803", (Access.WRITE, 2): "668903",
          (Access.WRITE, 4): "8903", (Access.WRITE, 16): "f30f7f03"}
_SIZED_CODE = {k: (0x100 + 0x10 * i, bytes.fromhex(c)) for i, (k, c) in enumerate(_SIZED.items())}
SIZES = (1, 2, 4, 8, 16)


@dataclass
class Outcome:
    """What the real CPU did for one access."""

    fault: bool
    vector: int | None = None  # 14 for #PF, 13 for #GP
    cr2: int | None = None
    error_code: int | None = None  # None: not observable in this build
    value: int | None = None  # the value a read returned


class Cpu:
    def __init__(self, phys_bytes: int, *, share: Cpu | None = None) -> None:
        """`share`: another CPU whose physical memory this one runs on (a second vCPU of the same
        machine: its own registers and TLB over the same host buffer, calibrated once)."""
        if share is not None:
            phys_bytes = share.phys_bytes
        if phys_bytes % x86.PAGE_SIZE or phys_bytes < (HOLE_PAGES + 1) * x86.PAGE_SIZE:
            raise ValueError("physical memory must be whole pages, more than the CPU's own")
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        # The default model (qemu64) has no SMAP: CR4.SMAP is silently dropped. Broadwell has SMEP,
        # SMAP, NX and 1 GiB pages, and MAXPHYADDR 40 (probed: tests/impl/test_cpu.py).
        self.uc.ctl_set_cpu_model(UC_CPU_X86_BROADWELL)
        # Physical memory is a host buffer Unicorn maps (mem_map_ptr): the VMM's and the harness's
        # reads and writes of it are slices of a memoryview, not calls into Unicorn that allocate
        # a buffer each (most of the VMM's time went there). The CPU's code, the only code Unicorn
        # translates, is written once (_build_hole), before any translation.
        self._ram: ctypes.Array[ctypes.c_char] = (ctypes.c_char * phys_bytes)() if share is None else share._ram
        self.mem = memoryview(self._ram).cast("B")
        self.uc.mem_map_ptr(0, phys_bytes, UC_PROT_ALL, ctypes.addressof(self._ram))
        self.phys_bytes: int = phys_bytes
        # The CPU's own pages live at the top of physical memory.
        self.hole_base = phys_bytes - HOLE_PAGES * x86.PAGE_SIZE
        self._fault: Outcome | None = None
        self.uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        # A fetch must only fetch: the instruction at the guest address is translated (so the MMU
        # checks execute rights) and then not run — whatever bytes the guest keeps there. The CPU's
        # own code lives in the hole, in the last 512 GiB (PML4 entry 511), outside both ranges: the
        # hooks cost nothing for loads and stores. Both halves of the canonical space are guest's.
        stop = lambda uc, _a, _s, _d: uc.emu_stop()  # noqa: E731
        self.uc.hook_add(UC_HOOK_CODE, stop, begin=0, end=(1 << 47) - 1)
        self.uc.hook_add(UC_HOOK_CODE, stop, begin=0xFFFF_8000_0000_0000, end=0xFFFF_FF7F_FFFF_FFFF)
        self._build_hole()
        self._base_context = self.uc.context_save()
        self._ec_offset: int | None = None
        self._mode: Mode | None = None
        self._clean = False
        self._regbuf = ctypes.c_uint64(0)
        self._fault_blob: bytes | None = None
        if share is not None:
            # The same CPU model: the same context layout. Calibrating again would also scribble on
            # the scratch pages while the other CPU's VMM may be using memory.
            self._ec_offset = share._ec_offset
            self._calibrating = False
            return
        self._calibrating = True
        self._calibrate()
        self._calibrating = False

    def wipe(self, memory: bool = True) -> None:
        """Back to power-on for a new VMM: memory below the CPU's own pages zeroed (`memory`: a
        sibling sharing it need not zero it again), nothing loaded, the TLB empty. (Cheaper than a
        new Cpu: no re-calibration.)"""
        if memory:
            ctypes.memset(self._ram, 0, self.hole_base)
        self.uc.context_restore(self._base_context)
        self._mode = None
        self._clean = False
        self.flush_tlb()

    # ---------------------------------------------------------------- physical memory
    def read64(self, paddr: int) -> int:
        return _Q.unpack_from(self.mem, paddr)[0]

    def write64(self, paddr: int, value: int) -> None:
        _Q.pack_into(self.mem, paddr, value & (2**64 - 1))

    def read(self, paddr: int, n: int) -> bytes:
        if paddr < 0 or paddr + n > self.phys_bytes:
            raise UcError(UC_ERR_READ_UNMAPPED)  # as Unicorn's mem_read says it
        return bytes(self.mem[paddr:paddr + n])

    def write(self, paddr: int, data: bytes) -> None:
        if paddr < 0 or paddr + len(data) > self.phys_bytes:
            raise UcError(UC_ERR_WRITE_UNMAPPED)
        self.mem[paddr:paddr + len(data)] = data

    def page(self, i: int) -> int:
        return self.hole_base + i * x86.PAGE_SIZE

    # ---------------------------------------------------------------- the hole
    def _build_hole(self) -> None:
        for i in range(HOLE_PAGES):
            self.write(self.page(i), bytes(x86.PAGE_SIZE))
        up = x86.P | x86.RW | x86.US  # user-reachable above; each leaf decides
        self.write64(self.page(_PDPT), self.page(_PD) | up)
        self.write64(self.page(_PD), self.page(_PT) | up)
        leaves = {_GDT: x86.P | x86.RW, _STACK: x86.P | x86.RW, _KCODE: x86.P, _UCODE: x86.P | x86.US}
        for i, flags in leaves.items():
            self.write64(self.page(_PT) + 8 * (i - _GDT), self.page(i) | flags)
        self.write(self.page(_GDT), b"".join(struct.pack("<Q", d) for d in GDT))
        for page in (_KCODE, _UCODE):
            for off, code in (*_CODE.values(), *_SIZED_CODE.values()):
                self.write(self.page(page) + off, code)
        self.write(self.page(_KCODE) + _IRETQ, bytes.fromhex("48cf"))
        self.write(self.page(_KCODE) + _LOAD_CONTROLS, _LOAD_CODE)
        self.write(self.page(_KCODE) + _INVLPG, _INVLPG_CODE)
        self.uc.reg_write(UC_X86_REG_GDTR, (0, self.va(_GDT), len(GDT) * 8 - 1, 0))

    def va(self, page: int) -> int:
        return HOLE_VA + (page - _GDT) * x86.PAGE_SIZE

    def install_hole(self, root: int) -> None:
        """Make the CPU's pages reachable from a page-table root (its PML4 slot 511)."""
        self.write64(root + 8 * HOLE_SLOT, self.page(_PDPT) | x86.P | x86.RW | x86.US)

    # ---------------------------------------------------------------- mode and TLB
    def set_mode(self, cr3: int, mode: Mode) -> None:
        """Load CR3 and the paging controls, as instructions would (and flush the TLB)."""
        uc = self.uc
        uc.context_restore(self._base_context)
        uc.reg_write(UC_X86_REG_CR3, cr3)  # the root must reach the hole: the loader runs there
        efer = uc.msr_read(MSR_EFER) | (1 << 8) | (1 << 10)
        efer = (efer | EFER_NXE) if mode.nxe else (efer & ~EFER_NXE)
        cr4 = uc.reg_read(UC_X86_REG_CR4) | CR4_PAE | CR4_OSFXSR
        cr4 = (cr4 | CR4_SMEP) if mode.smep else (cr4 & ~CR4_SMEP)
        cr4 = (cr4 | CR4_SMAP) if mode.smap else (cr4 & ~CR4_SMAP)
        cr0 = uc.reg_read(UC_X86_REG_CR0) | CR0_PE | CR0_PG
        cr0 = (cr0 | CR0_WP) if mode.wp else (cr0 & ~CR0_WP)
        # Register writes first turn paging on (the loader's own fetch goes through it), then the
        # loader writes the same values again as instructions.
        uc.msr_write(MSR_EFER, efer)
        uc.reg_write(UC_X86_REG_CR4, cr4 & ~CR4_SMAP)
        uc.reg_write(UC_X86_REG_CR0, cr0)
        for reg, val in ((UC_X86_REG_RCX, MSR_EFER), (UC_X86_REG_RAX, efer & 0xFFFFFFFF),
                         (UC_X86_REG_RDX, efer >> 32), (UC_X86_REG_RSI, cr4), (UC_X86_REG_RDI, cr0)):
            uc.reg_write(reg, val)
        self._fault = None
        start = self.va(_KCODE) + _LOAD_CONTROLS
        try:
            uc.emu_start(start, start + len(_LOAD_CODE), count=3)
        except UcError as e:
            raise RuntimeError(f"loading control registers failed: {e}") from None
        if self._fault is not None:
            raise RuntimeError(f"loading control registers raised vector {self._fault.vector} "
                               f"(CR4={cr4:#x}: a feature this CPU model lacks?)")
        uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        uc.ctl_flush_tb()
        self._mode = mode
        self._context = uc.context_save()
        self._clean = False

    def _write_regs(self, regs: list[tuple[int, int]]) -> None:
        """Register writes straight through Unicorn's C API: the binding's per-register dispatch
        costs more than the guest access itself. Falls back to the binding if its internals differ."""
        if _UCLIB is None:
            self.uc.reg_write_batch(regs)
            return
        buf, uch = self._regbuf, self.uc._uch
        for reg, val in regs:
            buf.value = val & 0xFFFFFFFFFFFFFFFF
            _UCLIB.uc_reg_write(uch, reg, ctypes.byref(buf))

    def _read_rax(self) -> int:
        if _UCLIB is None:
            return self.uc.reg_read(UC_X86_REG_RAX)
        _UCLIB.uc_reg_read(self.uc._uch, UC_X86_REG_RAX, ctypes.byref(self._regbuf))
        return self._regbuf.value

    def invlpg(self, gva: int) -> None:
        """Drop the TLB's translation of one page, by executing invlpg (QEMU flushes that page)."""
        assert self._mode is not None, "set_mode first"
        if not self._clean:
            self.uc.context_restore(self._context)
        self._write_regs([(UC_X86_REG_RBX, gva), (UC_X86_REG_EFLAGS, 0x2),
                          (UC_X86_REG_RSP, self.va(_STACK) + x86.PAGE_SIZE - 64)])
        start = self.va(_KCODE) + _INVLPG
        self.uc.emu_start(start, start + len(_INVLPG_CODE), count=1)
        self._clean = True  # as a clean supervisor access leaves it

    def flush_tlb(self) -> None:
        """Drop every cached translation (what a CR3 reload does for non-global entries)."""
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    # ---------------------------------------------------------------- one access
    def access(self, gva: int, access: Access, value: int = 0, user: bool | None = None,
               ac: bool | None = None, size: int = 8) -> Outcome:
        """Perform one access of `size` bytes (1, 2, 4, 8 or 16; a fetch ignores it) at gva on the
        real MMU, with the control registers of the last set_mode; user and ac (CPL 3, EFLAGS.AC)
        may be given per access. The bytes must not cross a page (one translation per access)."""
        assert self._mode is not None, "set_mode first"
        mode = self._mode
        if (user is not None and user != mode.user) or (ac is not None and ac != mode.ac):
            mode = Mode(user=mode.user if user is None else user, wp=mode.wp, nxe=mode.nxe, smep=mode.smep,
                        smap=mode.smap, ac=mode.ac if ac is None else ac)
        # After a clean supervisor access the CPU is as the saved context left it but for RIP, RAX,
        # RBX, RSP and RFLAGS, which are set below; anything else (a fault, CPL 3) restores it.
        if not self._clean:
            self.uc.context_restore(self._context)
        self._clean = False
        off, code = _CODE[access] if size == 8 or access is Access.FETCH else _SIZED_CODE[(access, size)]
        flags = 0x2 | (RFLAGS_AC if mode.ac else 0)
        self._fault = None
        regs = [(UC_X86_REG_RBX, gva), (UC_X86_REG_RAX, value)]
        if size == 16 and access is Access.WRITE:
            self.uc.reg_write(UC_X86_REG_XMM0, value & (1 << 128) - 1)
        if mode.user:
            entry = self.va(_UCODE) + off
            rsp = self.va(_STACK) + x86.PAGE_SIZE - 5 * 8
            frame = [entry, USER_CS, flags, self.va(_STACK) + 0x800, USER_DS]
            self.write(self.page(_STACK) + x86.PAGE_SIZE - 5 * 8, b"".join(struct.pack("<Q", q) for q in frame))
            regs.append((UC_X86_REG_RSP, rsp))
            start = self.va(_KCODE) + _IRETQ
        else:
            regs += [(UC_X86_REG_EFLAGS, flags), (UC_X86_REG_RSP, self.va(_STACK) + x86.PAGE_SIZE - 64)]
            start = self.va(_KCODE) + off
        self._write_regs(regs)
        until = (gva + 1) if access is Access.FETCH else ((self.va(_UCODE) if mode.user else self.va(_KCODE)) + off + len(code))
        try:
            self.uc.emu_start(start, until, count=4 if access is Access.FETCH else 3)
        except UcError:
            return Outcome(True, None, None, None, None) if self._fault is None else self._fault
        if self._fault is not None:
            return self._fault
        value_out = None
        if access is Access.READ:
            value_out = self.uc.reg_read(UC_X86_REG_XMM0) if size == 16 else self._read_rax()
        self._clean = not mode.user and access is not Access.FETCH
        return Outcome(False, value=value_out)

    def _on_interrupt(self, uc: Uc, intno: int, _data: object) -> None:
        cr2 = uc.reg_read(UC_X86_REG_CR2) if intno == 14 else None
        code = self._error_code() if intno == 14 else None
        if self._calibrating:
            self._fault_blob = self._context_bytes()  # the code is only there while the fault is
        self._fault = Outcome(True, intno, cr2, code)
        uc.emu_stop()

    # ---------------------------------------------------------------- error code, by calibration
    def _context_bytes(self) -> bytes | None:
        ctx = self.uc.context_save()
        size = getattr(ctx, "_size", None)
        raw = getattr(ctx, "context", None)
        if not size or raw is None:
            return None
        return ctypes.string_at(raw, size)

    def _error_code(self) -> int | None:
        if self._ec_offset is None:
            return None
        blob = self._context_bytes()
        return None if blob is None else struct.unpack_from("<I", blob, self._ec_offset)[0]

    def _calibrate(self) -> None:
        """Find the context offset holding the #PF error code, from faults whose codes are known."""
        from .walker import walk

        root = self.hole_base - x86.PAGE_SIZE * 4  # four scratch table pages below the hole
        pdpt, pd, pt = root + 0x1000, root + 0x2000, root + 0x3000
        for t in (root, pdpt, pd, pt):
            self.write(t, bytes(x86.PAGE_SIZE))
        self.install_hole(root)
        up = x86.P | x86.RW | x86.US
        self.write64(root, pdpt | up)
        self.write64(pdpt, pd | up)
        self.write64(pd, pt | up)
        target = 0x1000
        cases = [(0, Access.READ, Mode()), (0, Access.WRITE, Mode(user=True)),
                 (x86.P, Access.WRITE, Mode()), (x86.P, Access.WRITE, Mode(user=True)),
                 (x86.P | x86.US | x86.RW | (1 << 45), Access.READ, Mode(user=True)),
                 (x86.P | x86.US | x86.XD, Access.FETCH, Mode(user=True)),
                 (x86.P | x86.RW, Access.READ, Mode(user=True))]
        candidates: set[int] | None = None
        for flags, acc, mode in cases:
            self.write64(pt + 8, (0x1000 if flags else 0) | flags)
            expect = walk(self.read64, None, root, target, acc, mode, set_ad=False)
            self.set_mode(root, mode)
            self._fault_blob = None
            out = self.access(target, acc)
            blob = self._fault_blob if out.fault else None
            if blob is None or not expect.fault:
                return
            want = struct.pack("<I", expect.error_code)
            found = {i for i in range(0, len(blob) - 3, 4) if blob[i:i + 4] == want}
            candidates = found if candidates is None else candidates & found
        if candidates and len(candidates) == 1:
            self._ec_offset = candidates.pop()
        # Leave the scratch pages clean.
        for t in (root, pdpt, pd, pt):
            self.write(t, bytes(x86.PAGE_SIZE))

    @property
    def error_code_observable(self) -> bool:
        return self._ec_offset is not None
