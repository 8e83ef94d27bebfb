"""The Linux KVM ABI, as much of it as the adapter uses: ioctl numbers and struct layouts
(include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h), reached with the standard library only
(os, fcntl, mmap, ctypes, struct).

Every number below is the kernel's `_IO`/`_IOR`/`_IOW`/`_IOWR` encoding of (type 0xAE, nr, size):
direction in bits 31:30 (1 write, 2 read, 3 both), the argument's size in bits 29:16, 0xAE in 15:8,
the number in 7:0. The struct sizes are the x86-64 layouts.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
from typing import Any

KVMIO = 0xAE


def _io(nr: int) -> int:
    return (KVMIO << 8) | nr


def _iow(nr: int, size: int) -> int:
    return (1 << 30) | (size << 16) | (KVMIO << 8) | nr


def _ior(nr: int, size: int) -> int:
    return (2 << 30) | (size << 16) | (KVMIO << 8) | nr


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (KVMIO << 8) | nr


REGS_SIZE = 18 * 8  # struct kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags
SREGS_SIZE = 8 * 24 + 2 * 16 + 7 * 8 + 4 * 8  # 8 kvm_segment, gdt/idt kvm_dtable, 7 u64, interrupt bitmap
REGION_SIZE = 32  # struct kvm_userspace_memory_region: u32 slot, u32 flags, u64 gpa, u64 size, u64 hva

KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, 8)  # struct kvm_cpuid2 header: u32 nent, u32 padding
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, REGION_SIZE)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, REGS_SIZE)
KVM_SET_REGS = _iow(0x82, REGS_SIZE)
KVM_GET_SREGS = _ior(0x83, SREGS_SIZE)
KVM_SET_SREGS = _iow(0x84, SREGS_SIZE)
KVM_SET_MSRS = _iow(0x89, 8)  # struct kvm_msrs header: u32 nmsrs, u32 pad
KVM_SET_CPUID2 = _iow(0x90, 8)

KVM_CAP_SYNC_REGS = 74
KVM_SYNC_X86_REGS = 1

# struct kvm_run: exit_reason at 8; the exit union at 32; kvm_valid_regs at 288, kvm_dirty_regs at
# 296, and the synced registers (struct kvm_sync_regs, kvm_regs first) at 304.
RUN_EXIT_REASON = 8
RUN_UNION = 32
RUN_VALID_REGS = 288
RUN_DIRTY_REGS = 296
RUN_SYNC_REGS = 304

EXIT_IO, EXIT_HLT, EXIT_MMIO, EXIT_SHUTDOWN, EXIT_FAIL_ENTRY, EXIT_INTERNAL_ERROR = 2, 5, 6, 8, 9, 17
EXIT_NAMES = {0: "unknown", 1: "exception", EXIT_IO: "io", 3: "hypercall", 4: "debug", EXIT_HLT: "hlt",
              EXIT_MMIO: "mmio", 7: "irq_window_open", EXIT_SHUTDOWN: "shutdown", EXIT_FAIL_ENTRY: "fail_entry",
              10: "intr", EXIT_INTERNAL_ERROR: "internal_error"}

# Register indices in struct kvm_regs.
RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP, R8, R9, R10, R11, R12, R13, R14, R15, RIP, RFLAGS = range(18)

# Offsets in struct kvm_sregs.
SEG_CS, SEG_DS, SEG_ES, SEG_FS, SEG_GS, SEG_SS, SEG_TR, SEG_LDT = range(8)
SREGS_GDT = 8 * 24
SREGS_IDT = SREGS_GDT + 16
SREGS_CR0 = SREGS_IDT + 16  # then cr2, cr3, cr4, cr8, efer, apic_base
SEGMENT = struct.Struct("<QIHBBBBBBBBBx")  # base, limit, selector, type, present, dpl, db, s, l, g, avl, unusable


class KvmError(OSError):
    """A KVM ioctl failed, or KVM cannot run a vCPU here."""


def _ioctl(fd: int, req: int, arg: Any = 0) -> Any:
    try:
        return fcntl.ioctl(fd, req, arg)
    except OSError as e:
        raise KvmError(e.errno, f"KVM ioctl {req:#x}: {os.strerror(e.errno or 0)}") from None


class Memory:
    """Anonymous shared memory for a memslot: the host's view of guest-physical pages."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.map = mmap.mmap(-1, size, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.map)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.map))

    def madvise(self, offset: int, length: int, advice: int) -> None:
        self.map.madvise(advice, offset, length)


class Kvm:
    """/dev/kvm."""

    def __init__(self, path: str = "/dev/kvm") -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        version = _ioctl(self.fd, KVM_GET_API_VERSION)
        if version != 12:
            raise KvmError(errno.ENOTSUP, f"KVM API version {version}, not 12")
        self.run_size = _ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE)

    def check(self, cap: int) -> int:
        return _ioctl(self.fd, KVM_CHECK_EXTENSION, cap)

    def supported_cpuid(self) -> list[tuple[int, ...]]:
        """KVM_GET_SUPPORTED_CPUID: (function, index, flags, eax, ebx, ecx, edx) entries."""
        n = 256
        buf = bytearray(struct.pack("<II", n, 0) + bytes(40 * n))
        _ioctl(self.fd, KVM_GET_SUPPORTED_CPUID, buf)
        nent = struct.unpack_from("<I", buf)[0]
        return [struct.unpack_from("<7I", buf, 8 + 40 * i) for i in range(nent)]

    def close(self) -> None:
        os.close(self.fd)


class Vm:
    """One KVM VM (KVM_CREATE_VM): memslots and vCPUs."""

    def __init__(self, kvm: Kvm) -> None:
        self.kvm = kvm
        self.fd = _ioctl(kvm.fd, KVM_CREATE_VM, 0)

    def set_memory(self, slot: int, gpa: int, size: int, hva: int, flags: int = 0) -> None:
        """KVM_SET_USER_MEMORY_REGION; size 0 deletes the slot."""
        _ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, struct.pack("<IIQQQ", slot, flags, gpa, size, hva))

    def close(self) -> None:
        os.close(self.fd)


class Vcpu:
    """One vCPU (KVM_CREATE_VCPU) and its kvm_run page. With KVM_CAP_SYNC_REGS the general
    registers travel in the kvm_run page itself: one KVM_RUN ioctl per guest entry, no
    KVM_SET_REGS/KVM_GET_REGS around it."""

    def __init__(self, vm: Vm, index: int = 0) -> None:
        self.vm = vm
        self.fd = _ioctl(vm.fd, KVM_CREATE_VCPU, index)
        self.run_map = mmap.mmap(self.fd, vm.kvm.run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.sync = bool(vm.kvm.check(KVM_CAP_SYNC_REGS) & KVM_SYNC_X86_REGS)
        # the registers, as a view into the kvm_run page (sync) or a buffer for the ioctls
        self._regbuf = bytearray(REGS_SIZE)
        if self.sync:
            self.regs = (ctypes.c_uint64 * 18).from_buffer(self.run_map, RUN_SYNC_REGS)
            struct.pack_into("<Q", self.run_map, RUN_VALID_REGS, KVM_SYNC_X86_REGS)
        else:
            self.regs = (ctypes.c_uint64 * 18).from_buffer(self._regbuf)
        self._dirty = False

    # ---------------------------------------------------------------- registers
    def load_regs(self) -> None:
        """Fill `regs` from the vCPU (needed once before editing them without sync regs)."""
        if self.sync:
            return
        buf = bytearray(_ioctl(self.fd, KVM_GET_REGS, bytes(REGS_SIZE)))
        self._regbuf[:] = buf

    def mark_dirty(self) -> None:
        """The caller changed `regs`: they go to the vCPU on the next run."""
        self._dirty = True

    def get_sregs(self) -> bytearray:
        return bytearray(_ioctl(self.fd, KVM_GET_SREGS, bytes(SREGS_SIZE)))

    def set_sregs(self, sregs: bytes) -> None:
        _ioctl(self.fd, KVM_SET_SREGS, bytes(sregs))

    def set_cpuid(self, entries: list[tuple[int, ...]]) -> None:
        # a bytearray: fcntl.ioctl copies an immutable argument through a 1 KiB buffer
        buf = bytearray(struct.pack("<II", len(entries), 0) + b"".join(struct.pack("<7I12x", *e) for e in entries))
        _ioctl(self.fd, KVM_SET_CPUID2, buf)

    def set_msrs(self, msrs: dict[int, int]) -> None:
        buf = bytearray(struct.pack("<II", len(msrs), 0) + b"".join(struct.pack("<IIQ", i, 0, v) for i, v in msrs.items()))
        n = _ioctl(self.fd, KVM_SET_MSRS, buf)
        if n != len(msrs):
            raise KvmError(errno.EINVAL, f"KVM_SET_MSRS set {n} of {len(msrs)} MSRs")

    # ---------------------------------------------------------------- running
    def run(self) -> int:
        """One KVM_RUN; the exit reason."""
        if self._dirty:
            if self.sync:
                struct.pack_into("<Q", self.run_map, RUN_DIRTY_REGS, KVM_SYNC_X86_REGS)
            else:
                _ioctl(self.fd, KVM_SET_REGS, bytes(self._regbuf))
            self._dirty = False
        while True:
            try:
                fcntl.ioctl(self.fd, KVM_RUN, 0)
                break
            except InterruptedError:  # a signal (the harness's alarm is not ours): enter again
                continue
            except OSError as e:
                raise KvmError(e.errno, f"KVM_RUN: {os.strerror(e.errno or 0)}") from None
        if self.sync:
            struct.pack_into("<Q", self.run_map, RUN_DIRTY_REGS, 0)
        else:
            self.load_regs()
        return struct.unpack_from("<I", self.run_map, RUN_EXIT_REASON)[0]

    def exit_io(self) -> tuple[int, int, int, int, int]:
        """KVM_EXIT_IO: (direction 0 in / 1 out, size, port, count, data offset in the kvm_run page)."""
        return struct.unpack_from("<BBHIQ", self.run_map, RUN_UNION)

    def exit_mmio(self) -> tuple[int, int, bool]:
        """KVM_EXIT_MMIO: (gpa, length, is_write); the data is at RUN_UNION + 8."""
        gpa, _data, length, is_write = struct.unpack_from("<Q8sIB", self.run_map, RUN_UNION)
        return gpa, length, bool(is_write)

    def set_mmio_data(self, data: bytes) -> None:
        self.run_map[RUN_UNION + 8:RUN_UNION + 8 + len(data)] = data

    def internal_error(self) -> tuple[int, list[int]]:
        """KVM_EXIT_INTERNAL_ERROR: (suberror, data)."""
        sub, n = struct.unpack_from("<II", self.run_map, RUN_UNION)
        return sub, list(struct.unpack_from(f"<{min(n, 16)}Q", self.run_map, RUN_UNION + 8))

    def close(self) -> None:
        del self.regs
        self.run_map.close()
        os.close(self.fd)


def segment(sregs: bytearray, index: int, base: int, limit: int, selector: int, type_: int, dpl: int,
            long: bool, db: bool) -> None:
    """Write one kvm_segment of kvm_sregs (present, s=1 for code/data, g=1)."""
    s = 0 if index == SEG_TR else 1
    SEGMENT.pack_into(sregs, index * 24, base, limit, selector, type_, 1, dpl, int(db), s, int(long), 1, 0, 0)


def usable() -> str | None:
    """None when /dev/kvm can run a vCPU here, else why not (tests skip with it)."""
    try:
        kvm = Kvm()
    except OSError as e:
        return f"/dev/kvm: {e.strerror or e}"
    except KvmError as e:
        return str(e)
    try:
        vm = Vm(kvm)
        try:
            Vcpu(vm).close()
        finally:
            vm.close()
    except OSError as e:
        return f"KVM cannot create a vCPU: {e}"
    finally:
        kvm.close()
    return None
