"""One guest on the host's KVM: a KVM VM with one vCPU, guest memory in memslot 0, the adapter's own
pages in memslot 1, and the guest operations as real instructions (guest.py).

The host never writes guest memory behind KVM's back: page-table edits, control-register loads,
invlpg and every access are instructions the vCPU runs. The host reads guest memory through the
memslot's mapping (changing nothing), and the host-side operations are the Linux mechanisms a VMM
uses on guest memory (madvise).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

from . import guest as G
from . import ioctl as K

MSR_EFER = 0xC0000080
EFER_LME, EFER_LMA, EFER_NXE = 1 << 8, 1 << 10, 1 << 11
CR0_BASE = 0x80040033  # PG, AM, NE, ET, MP, PE (WP separately)
CR0_WP = 1 << 16
CR4_BASE = 0x620  # PAE, OSFXSR, OSXMMEXCPT (SSE for the 16-byte accesses)
CR4_SMEP, CR4_SMAP = 1 << 20, 1 << 21
MAXPHYADDR = 40
POISON = 0x1111_1111_1111_1111  # every GPR of a fetch test: k * POISON + disp32 is never canonical for k in 1..5, 8, 9
MADV_POPULATE_WRITE = 23
UNBACKED = {"ones": b"\xff" * 16, "zeros": bytes(16)}  # what an MMIO read answers, by convention


class GuestError(RuntimeError):
    """The guest did something the adapter's own code never does (an unexpected exit or vector):
    the adapter's bug or the host's, never a verdict about the operation."""


@dataclass
class Result:
    """What one guest run ended with."""

    vector: int | None  # None: the snippet completed; else the exception vector its stub recorded
    error_code: int = 0
    cr2: int = 0
    rip: int = 0  # the RIP the exception frame saved
    rax: int = 0
    rdx: int = 0
    mmio: int = 0  # KVM_EXIT_MMIO exits answered on the way
    exit: str = "hlt"


class Machine:
    """A KVM VM kept across test cases: `power_on` gives it fresh zero memory and a fresh vCPU state."""

    def __init__(self, kvm: K.Kvm, cpuid: list[tuple[int, ...]], capacity: int) -> None:
        self.kvm = kvm
        self.vm = K.Vm(kvm)
        self.capacity = capacity  # gfns the memory mapping holds
        # Private anonymous memory, as a VMM's guest RAM usually is (MAP_PRIVATE: KSM and
        # MADV_DONTNEED behave as for any process memory).
        self.mem = mmap.mmap(-1, capacity * G.PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.mem_addr = K.ctypes.addressof(K.ctypes.c_char.from_buffer(self.mem))
        self.priv = K.Memory(G.PRIV_PAGES * G.PAGE)
        self.priv.map[:] = G.private_image()
        self.vm.set_memory(1, G.PRIV_GPA, G.PRIV_PAGES * G.PAGE, self.priv.addr)
        self.cpu = K.Vcpu(self.vm)
        self.cpu.set_cpuid(cpuid)
        self.gfns = 0
        self.unbacked = UNBACKED["zeros"]  # memory beyond the guest's (MMIO to KVM) reads this
        self.wp, self.nxe, self.smep, self.smap = True, True, False, False

    # ---------------------------------------------------------------- power on
    def power_on(self, gfns: int) -> None:
        """A new guest: `gfns` pages of zero memory and the vCPU as the firmware leaves it (64-bit
        mode on the adapter's boot PML4, CR0.WP=1, EFER.NXE=1, SMEP and SMAP off). Memslot 0 is
        deleted and added again, so KVM drops every shadow page of the last guest (a memslot
        deletion zaps them all) rather than keeping what the old tables said."""
        if gfns > self.capacity:
            raise ValueError(f"{gfns} gfns: this machine holds {self.capacity}")
        if self.gfns:
            self.vm.set_memory(0, 0, 0, self.mem_addr)
        self.mem.madvise(mmap.MADV_DONTNEED, 0, self.capacity * G.PAGE)  # zero again
        self.vm.set_memory(0, 0, gfns * G.PAGE, self.mem_addr)
        self.gfns = gfns
        self.wp, self.nxe, self.smep, self.smap = True, True, False, False
        self._boot_sregs()

    def _boot_sregs(self) -> None:
        s = self.cpu.get_sregs()
        K.segment(s, K.SEG_CS, 0, 0xFFFFFFFF, G.KERNEL_CS, 11, 0, True, False)
        for i in (K.SEG_DS, K.SEG_ES, K.SEG_FS, K.SEG_GS, K.SEG_SS):
            K.segment(s, i, 0, 0xFFFFFFFF, G.KERNEL_SS, 3, 0, False, True)
        # TR: the 64-bit TSS, busy (type 11), system segment (s=0), byte granular
        K.SEGMENT.pack_into(s, K.SEG_TR * 24, G.va(G.TSS), 103, G.TSS_SEL, 11, 1, 0, 0, 0, 0, 0, 0, 0)
        K.SEGMENT.pack_into(s, K.SEG_LDT * 24, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1)  # unusable
        struct.pack_into("<QH", s, K.SREGS_GDT, G.va(G.GDT), 7 * 8 - 1)
        struct.pack_into("<QH", s, K.SREGS_IDT, G.va(G.IDT), 16 * 256 - 1)
        struct.pack_into("<QQQQQQ", s, K.SREGS_CR0, CR0_BASE | CR0_WP, 0, G.gpa(G.BOOT_PML4), CR4_BASE, 0,
                         EFER_LME | EFER_LMA | EFER_NXE)
        s[K.SREGS_CR0 + 7 * 8:] = bytes(len(s) - K.SREGS_CR0 - 7 * 8)  # no pending interrupt
        self.cpu.set_sregs(s)
        self.cpu.load_regs()

    # ---------------------------------------------------------------- running
    def run(self, rip: int, regs: dict[int, int], flags: int = 0x2) -> Result:
        """Enter the guest at `rip` with these registers (the rest zero, r15 = DONE, RSP on the
        kernel stack) and run to its hlt, answering MMIO exits as memory that does not exist: reads
        all-ones or zeros (`unbacked`, the configuration's convention), writes dropped."""
        r = self.cpu.regs
        for i in range(18):
            r[i] = 0
        r[K.R15] = G.DONE
        r[K.RSP] = G.KSTACK_TOP
        r[K.RFLAGS] = flags
        r[K.RIP] = rip
        for i, v in regs.items():
            r[i] = v & 0xFFFF_FFFF_FFFF_FFFF
        self.cpu.mark_dirty()
        mmio = 0
        while True:
            ex = self.cpu.run()
            if ex == K.EXIT_HLT:
                break
            if ex == K.EXIT_MMIO:
                _gpa, n, write = self.cpu.exit_mmio()
                if not write:
                    self.cpu.set_mmio_data(self.unbacked[:n])
                mmio += 1
                if mmio > 64:
                    raise GuestError("more than 64 MMIO exits in one run")
                continue
            if ex == K.EXIT_IO:
                direction, size, _port, count, off = self.cpu.exit_io()
                if direction == 0:  # in: an absent port reads all-ones
                    self.cpu.run_map[off:off + size * count] = b"\xff" * (size * count)
                mmio += 1
                continue
            return Result(None, rip=r[K.RIP], exit=K.EXIT_NAMES.get(ex, str(ex)))
        vec = r[K.R15]
        if vec == G.DONE:
            return Result(None, rax=r[K.RAX], rdx=r[K.RDX], mmio=mmio)
        return Result(vec, r[K.R14], r[K.R13], r[K.R12], r[K.RAX], r[K.RDX], mmio)

    def system(self, name: str, rbx: int, **regs: int) -> None:
        """One system snippet at CPL 0 (mov crN, wrmsr, invlpg, a store through the direct map);
        it must complete."""
        rr = {K.RBX: rbx}
        rr.update({getattr(K, k.upper()): v for k, v in regs.items()})
        res = self.run(G.LAYOUT.system[name], rr)
        if res.vector is not None or res.exit != "hlt":
            raise GuestError(f"{name} (rbx={rbx:#x}) raised vector {res.vector} (error code {res.error_code:#x}, "
                             f"CR2 {res.cr2:#x}, RIP {res.rip:#x}); exit {res.exit}")

    def store(self, gpa: int, value: int) -> None:
        """The guest stores 8 bytes at a guest-physical address, through its direct map."""
        self.system("store8", G.DIRECT + gpa, rax=value)

    def load_cr3(self, gpa: int) -> None:
        self.system("mov_cr3", gpa)

    def set_controls(self, wp: bool, nxe: bool, smep: bool, smap: bool) -> None:
        """CR0.WP, EFER.NXE, CR4.SMEP/SMAP as the guest sets them: wrmsr, mov cr4, mov cr0 (each
        only when it changes)."""
        if nxe != self.nxe:
            efer = EFER_LME | EFER_LMA | (EFER_NXE if nxe else 0)
            self.system("wrmsr", 0, rcx=MSR_EFER, rax=efer & 0xFFFFFFFF, rdx=efer >> 32)
        if (smep, smap) != (self.smep, self.smap):
            self.system("mov_cr4", CR4_BASE | (CR4_SMEP if smep else 0) | (CR4_SMAP if smap else 0))
        if wp != self.wp:
            self.system("mov_cr0", CR0_BASE | (CR0_WP if wp else 0))
        self.wp, self.nxe, self.smep, self.smap = wp, nxe, smep, smap

    def invlpg(self, gva: int) -> None:
        self.system("invlpg", gva)

    def access(self, gva: int, acc: str, user: bool, size: int, value: int) -> Result:
        """One load or store of `size` bytes at gva, at CPL 0 (RFLAGS.AC clear) or CPL 3 (entered by
        iretq, left by the ud2 that ends the snippet: an #UD through an interrupt gate)."""
        key = (acc, size)
        regs = {K.RBX: gva, K.RAX: value & 0xFFFF_FFFF_FFFF_FFFF, K.RDX: value >> 64}
        if not user:
            return self.run(G.LAYOUT.kaccess[key], regs)
        code = G.LAYOUT.uaccess[key]
        regs.update({K.R12: code, K.R11: G.USER_CS, K.R10: 0x2, K.R9: G.USTACK_TOP, K.R8: G.USER_SS})
        res = self.run(G.LAYOUT.iret, regs)
        if res.vector == 6 and res.rip == G.LAYOUT.uend[key]:  # the ud2 after the access: it completed
            return Result(None, rax=res.rax, rdx=res.rdx, mmio=res.mmio)
        return res

    def fetch(self, gva: int, user: bool) -> Result:
        """Jump to gva (iretq, to CPL 0 or 3) with RFLAGS.TF set and every register but RSP
        POISON, RSP too: the one instruction fetched and run there has no register to reach memory
        with, and the single-step trap (#DB) stops the guest after it."""
        regs = {i: POISON for i in (K.RAX, K.RBX, K.RCX, K.RDX, K.RSI, K.RDI, K.RBP, K.R13, K.R14, K.R15)}
        regs.update({K.R12: gva, K.R11: G.USER_CS if user else G.KERNEL_CS, K.R10: 0x102, K.R9: POISON,
                     K.R8: G.USER_SS if user else G.KERNEL_SS})
        return self.run(G.LAYOUT.iret, regs)

    # ---------------------------------------------------------------- the host's side
    def read(self, gpa: int, n: int) -> bytes:
        """Guest memory through the memslot's mapping: no fault, no A/D bit, nothing changes."""
        return bytes(self.mem[gpa:gpa + n])

    def read64(self, gpa: int) -> int:
        return struct.unpack_from("<Q", self.mem, gpa)[0]

    def discard(self, gfn: int) -> None:
        """MADV_DONTNEED on one guest page (a balloon inflate): the host frees it; KVM's MMU
        notifier drops every spte of it, and the guest's next touch faults in a zero page."""
        self.mem.madvise(mmap.MADV_DONTNEED, gfn * G.PAGE, G.PAGE)

    def populate(self, gfn: int) -> bool:
        """MADV_POPULATE_WRITE on one guest page: the host faults it in ahead of the guest (demand
        paging done early). False where the kernel lacks it."""
        try:
            self.mem.madvise(MADV_POPULATE_WRITE, gfn * G.PAGE, G.PAGE)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.cpu.close()
        self.vm.close()
        self.mem.close()


def cpuid(kvm: K.Kvm) -> list[tuple[int, ...]]:
    """The guest's CPUID: what KVM supports (NX, 1 GiB pages, SMEP, SMAP among it), with
    MAXPHYADDR 40 (leaf 0x80000008 EAX[7:0]), the harness's guest."""
    out = []
    for fn, idx, flags, eax, ebx, ecx, edx in kvm.supported_cpuid():
        if fn == 0x80000008:
            eax = (eax & ~0xFF) | MAXPHYADDR
        out.append((fn, idx, flags, eax, ebx, ecx, edx))
    return out


def features(entries: list[tuple[int, ...]]) -> dict[str, bool]:
    """What the guest's CPUID offers that the harness's guest needs."""
    by = {(e[0], e[1]): e for e in entries}
    l7 = by.get((7, 0), (0,) * 7)
    ext = by.get((0x80000001, 0), (0,) * 7)
    return {"nx": bool(ext[6] >> 20 & 1), "pdpe1gb": bool(ext[6] >> 26 & 1), "smep": bool(l7[4] >> 7 & 1),
            "smap": bool(l7[4] >> 20 & 1)}
