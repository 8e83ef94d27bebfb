"""The guest the KVM adapter runs: its private pages, hand-encoded code and the register protocol
of its dispatcher.

Everything of the adapter's own lives in the top slot of the address space (PML4 entry 511), at
`AREA` = 0xFFFFFFC0_00000000, in the middle of that slot: an instruction run by a fetch test can
reach 2 GiB around its own address (RIP-relative) or the bottom and top 2 GiB of the address space
(an absolute 32-bit displacement), and the harness's gvas reach at most the end of slot 510, so
neither reaches the adapter's pages. Slot 511's tables and pages are in a memslot of their own,
placed high in guest-physical space (`PRIV_GPA`, below 2^40: MAXPHYADDR is 40), far from the
configured gfns. Under AREA:

    AREA + 0x000000  GDT page, IDT page, TSS page, kernel code, user code, IST, kernel and user stacks
    AREA + 0x200000  the direct map: guest-physical page g at DIRECT + g * 4096 (2 MiB pages)

Each operation is one KVM_RUN: the adapter sets RIP to a snippet and its inputs in registers
(`rbx` the address, `rax`/`rdx` the value), the snippet runs and ends in `hlt` (KVM_EXIT_HLT).
Every exception vector 0-31 has an interrupt gate on IST1 (so a fault is delivered whatever RSP
is) whose stub leaves the vector in r15, the error code in r14 (0 for vectors without one), CR2
in r13 and the faulting RIP in r12, then `hlt`. User-mode code comes back to CPL 0 through an
exception: its snippet ends in `ud2`, whose #UD the gate delivers at CPL 0 (the stub's saved RIP
says it was that ud2). (`int 0x81` through a DPL-3 gate was the first choice; this host's KVM, PVM,
raises #UD for `int n` at CPL 3.) The adapter preloads r15 with `DONE`, which a kernel snippet that
completes leaves in place.

Every instruction is hand-encoded below, with its encoding spelled out (REX prefix: 0100WRXB;
ModRM: mod(2) reg(3) rm(3)).
"""

from __future__ import annotations

import struct

PAGE = 4096
AREA = 0xFFFF_FFC0_0000_0000  # PML4 511, PDPT 256, PD 0, PT 0
DIRECT = AREA + (1 << 21)  # the direct map of guest-physical memory
PRIV_GPA = 0xFF_0000_0000  # the adapter's memslot (gpa), below 2^40

# Private pages, by index from PRIV_GPA (the first five are tables, never mapped as data).
BOOT_PML4, PDPT, PD, PT, GDT, IDT, TSS, KCODE, UCODE, ISTACK, KSTACK, USTACK = range(12)
PRIV_PAGES = 12
# Which private pages the PT maps, at AREA + 4096 * slot, and how (P=1, RW=2, US=4). No XD bit
# anywhere: with EFER.NXE clear it is a reserved bit, and a fault on the stack would triple-fault.
P, RW, US, A, D, PS = 1, 2, 4, 0x20, 0x40, 0x80
XD = 1 << 63
MAPPED = {GDT: (0, P | RW), IDT: (1, P), TSS: (2, P | RW), KCODE: (3, P), UCODE: (4, P | US),
          ISTACK: (5, P | RW), KSTACK: (6, P | RW), USTACK: (7, P | RW | US)}
DIRECT_PDES = 64  # the direct map covers 64 x 2 MiB = 128 MiB of guest-physical memory
MAX_GFNS = DIRECT_PDES * 512

KERNEL_CS, KERNEL_SS, USER_SS, USER_CS, TSS_SEL = 0x08, 0x10, 0x1B, 0x23, 0x28
DONE = 0x100  # r15 when a kernel snippet ran to its hlt
ERROR_CODE_VECTORS = (8, 10, 11, 12, 13, 14, 17, 21, 29, 30)


def va(page: int) -> int:
    """Where a private page is mapped."""
    return AREA + PAGE * MAPPED[page][0]


def gpa(page: int) -> int:
    return PRIV_GPA + PAGE * page


# The PML4 entry every root the guest runs on holds in slot 511 (user-reachable: each leaf decides).
SLOT511 = gpa(PDPT) | P | RW | US

# ---------------------------------------------------------------- the code
HLT = "f4"
UD2 = "0f0b"  # ud2: back to CPL 0 through the #UD gate
# Loads and stores of each size, `rbx` the address, `rax` (and `rdx` for the high half of 16) the
# value. The same bytes run at CPL 0 (ending in hlt) and at CPL 3 (ending in ud2).
ACCESS = {
    ("read", 1): "0fb603",       # movzx eax, byte [rbx]   0F B6 /r, ModRM 00 000(eax) 011(rbx)
    ("read", 2): "0fb703",       # movzx eax, word [rbx]   0F B7 /r
    ("read", 4): "8b03",         # mov eax, [rbx]          8B /r (a 32-bit destination zero-extends)
    ("read", 8): "488b03",       # mov rax, [rbx]          REX.W 8B /r
    # 16 bytes go through xmm0 and the stack: this host's KVM (PVM) cannot run the moves between
    # xmm and general registers (movq xmm0, rax; pinsrq; pextrq) at CPL 0 (KVM_EXIT_INTERNAL_ERROR,
    # an emulation failure), while movdqu to and from memory runs.
    ("read", 16): "f30f6f03"     # movdqu xmm0, [rbx]      F3 0F 6F /r
                  "f30f7f4424f0"  # movdqu [rsp-16], xmm0  F3 0F 7F /r, ModRM 01 000 100(SIB), SIB 00 100 100 (rsp), disp8 -16
                  "488b4424f0"   # mov rax, [rsp-16]       REX.W 8B /r, ModRM 01 000(rax) 100, SIB 24, disp8 -16
                  "488b5424f8",  # mov rdx, [rsp-8]        REX.W 8B /r, ModRM 01 010(rdx) 100, SIB 24, disp8 -8
    ("write", 1): "8803",        # mov [rbx], al           88 /r
    ("write", 2): "668903",      # mov [rbx], ax           66 89 /r
    ("write", 4): "8903",        # mov [rbx], eax          89 /r
    ("write", 8): "488903",      # mov [rbx], rax          REX.W 89 /r
    ("write", 16): "48894424f0"  # mov [rsp-16], rax   REX.W 89 /r, ModRM 01 000 100, SIB 24, disp8 -16
                   "48895424f8"  # mov [rsp-8], rdx        REX.W 89 /r, ModRM 01 010(rdx) 100, SIB 24, disp8 -8
                   "f30f6f4424f0"  # movdqu xmm0, [rsp-16]  F3 0F 6F /r, ModRM 01 000 100, SIB 24, disp8 -16
                   "f30f7f03",   # movdqu [rbx], xmm0      F3 0F 7F /r
}
# System instructions, each followed by hlt.
SYSTEM = {
    "mov_cr3": "0f22db",   # mov cr3, rbx    0F 22 /r, ModRM 11 011(cr3) 011(rbx)
    "mov_cr0": "0f22c3",   # mov cr0, rbx    ModRM 11 000(cr0) 011(rbx)
    "mov_cr4": "0f22e3",   # mov cr4, rbx    ModRM 11 100(cr4) 011(rbx)
    "wrmsr": "0f30",       # wrmsr           MSR[ecx] := edx:eax
    "invlpg": "0f013b",    # invlpg [rbx]    0F 01 /7, ModRM 00 111 011(rbx)
    "store8": "488903",    # mov [rbx], rax  (a page-table edit, through the direct map)
}
# iretq to (r12 RIP, r11 CS, r10 RFLAGS, r9 RSP, r8 SS), with r8-r12 set to rax first so that no
# register but RSP keeps a usable address (the fetch test: every GPR is POISON).
IRET = ("4150"        # push r8     REX.B 50+r
        "4151"        # push r9
        "4152"        # push r10
        "4153"        # push r11
        "4154"        # push r12
        "4989c0"      # mov r8, rax   REX.W+B 89 /r, ModRM 11 000(rax) 000(r8)
        "4989c1"      # mov r9, rax   ModRM 11 000 001
        "4989c2"      # mov r10, rax  ModRM 11 000 010
        "4989c3"      # mov r11, rax  ModRM 11 000 011
        "4989c4"      # mov r12, rax  ModRM 11 000 100
        "48cf")       # iretq         REX.W CF


def _stub(vector: int) -> bytes:
    """An exception stub: r15 := vector, r14 := error code (popped) or 0, r13 := CR2, r12 := the
    RIP the frame saved, hlt."""
    code = "41bf" + struct.pack("<I", vector).hex()  # mov r15d, imm32   REX.B B8+r id (zero-extends)
    code += "415e" if vector in ERROR_CODE_VECTORS else "4531f6"  # pop r14 (REX.B 58+r) | xor r14d, r14d (REX.R+B 31 /r, 11 110 110)
    code += "410f20d5"  # mov r13, cr2      REX.B 0F 20 /r, ModRM 11 010(cr2) 101(r13)
    code += "4c8b2424"  # mov r12, [rsp]    REX.W+R 8B /r, ModRM 00 100(r12) 100(SIB), SIB 00 100 100 (rsp)
    code += HLT
    return bytes.fromhex(code)


STUB_BASE, STUB_SIZE = 0x800, 0x20


def stub_offset(vector: int) -> int:
    return STUB_BASE + STUB_SIZE * vector


class Layout:
    """Offsets of the snippets in the kernel and user code pages."""

    def __init__(self) -> None:
        self.kernel = bytearray(PAGE)
        self.user = bytearray(PAGE)
        self.kaccess: dict[tuple[str, int], int] = {}
        self.uaccess: dict[tuple[str, int], int] = {}
        self.uend: dict[tuple[str, int], int] = {}  # the ud2 that ends each user snippet
        self.system: dict[str, int] = {}
        at = 0
        for key, code in ACCESS.items():
            k, u = bytes.fromhex(code + HLT), bytes.fromhex(code + UD2)
            self.kernel[at:at + len(k)] = k
            self.user[at:at + len(u)] = u
            self.kaccess[key], self.uaccess[key] = va(KCODE) + at, va(UCODE) + at
            self.uend[key] = va(UCODE) + at + len(u) - 2
            at += 0x20
        for name, code in SYSTEM.items():
            b = bytes.fromhex(code + HLT)
            self.kernel[at:at + len(b)] = b
            self.system[name] = va(KCODE) + at
            at += 0x10
        b = bytes.fromhex(IRET)
        self.kernel[at:at + len(b)] = b
        self.iret = va(KCODE) + at
        at += 0x20
        assert at <= STUB_BASE
        for v in range(32):
            s = _stub(v)
            assert len(s) <= STUB_SIZE
            self.kernel[stub_offset(v):stub_offset(v) + len(s)] = s


LAYOUT = Layout()


def _gate(handler: int, dpl: int) -> bytes:
    """A 64-bit interrupt gate (type 0xE) on IST1."""
    return struct.pack("<HHBBHIi", handler & 0xFFFF, KERNEL_CS, 1, 0x80 | (dpl << 5) | 0xE,
                       (handler >> 16) & 0xFFFF, handler >> 32, 0)


def private_image() -> bytes:
    """The adapter's memslot: tables, descriptor tables, code, stacks (PRIV_PAGES pages)."""
    mem = bytearray(PRIV_PAGES * PAGE)

    def q(page: int, index: int, value: int) -> None:
        struct.pack_into("<Q", mem, page * PAGE + 8 * index, value)

    q(BOOT_PML4, 511, SLOT511)
    q(PDPT, (AREA >> 30) & 511, gpa(PD) | P | RW | US)
    q(PD, 0, gpa(PT) | P | RW | US)
    for i in range(DIRECT_PDES):  # the direct map: supervisor, writable
        q(PD, 1 + i, (i << 21) | P | RW | PS)
    for page, (slot, flags) in MAPPED.items():
        q(PT, slot, gpa(page) | flags)
    # GDT: null, kernel code (64-bit), kernel data, user data, user code (64-bit), TSS (16 bytes)
    gdt = [0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFF2000000FFFF, 0x00AFFA000000FFFF]
    tss = va(TSS)
    gdt += [(103 & 0xFFFF) | ((tss & 0xFFFFFF) << 16) | (0x89 << 40) | (((tss >> 24) & 0xFF) << 56), tss >> 32]
    for i, d in enumerate(gdt):
        q(GDT, i, d)
    for v in range(32):
        off = IDT * PAGE + 16 * v
        mem[off:off + 16] = _gate(va(KCODE) + stub_offset(v), 0)
    # TSS: RSP0 and IST1 the IST stack's top; no I/O bitmap (its base past the limit)
    struct.pack_into("<Q", mem, TSS * PAGE + 4, va(ISTACK) + PAGE)
    struct.pack_into("<Q", mem, TSS * PAGE + 0x24, va(ISTACK) + PAGE)
    struct.pack_into("<H", mem, TSS * PAGE + 0x66, 104)
    mem[KCODE * PAGE:(KCODE + 1) * PAGE] = LAYOUT.kernel
    mem[UCODE * PAGE:(UCODE + 1) * PAGE] = LAYOUT.user
    return bytes(mem)


KSTACK_TOP = va(KSTACK) + PAGE - 64
USTACK_TOP = va(USTACK) + PAGE - 64  # (the 16-byte user snippets spill xmm0 below it)
