"""The swap device: fixed-size slots in a real file, written through and flushed to disk on swap-out.

Faults are injectable for the harness: `inject("full")` makes the next slot allocation find the
device full, `inject("io")` makes the next slot write fail; either is one-shot.
"""

from __future__ import annotations

import os
import tempfile

from .x86 import PAGE_SIZE


class SwapFull(Exception):
    """No free slot."""


class SwapIoError(OSError):
    """A slot write failed; the slot holds nothing."""


class SwapDevice:
    def __init__(self, slots: int, path: str | None = None, sync: bool = True) -> None:
        if path is None:
            # A real file, unlinked as soon as it is open: the open descriptor keeps it, and nothing
            # is left in the temporary folder however the process ends (Ctrl-C, a crash, SIGKILL).
            self.fd, tmp = tempfile.mkstemp(prefix="dmm-swap-", suffix=".img")
            os.unlink(tmp)
        else:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self.path = path  # None: the anonymous file above
        self.slots = slots
        self.sync = sync
        os.ftruncate(self.fd, slots * PAGE_SIZE)
        self.free: list[int] = list(range(slots - 1, -1, -1))  # pop() hands out the lowest slot first
        self.used: set[int] = set()
        self._inject: str | None = None
        self.writes = 0

    def inject(self, fault: str | None) -> None:
        if fault not in (None, "full", "io"):
            raise ValueError(f"unknown swap fault {fault!r} (full, io)")
        self._inject = fault

    def allocate(self) -> int:
        if self._inject == "full" or not self.free:
            self._inject = None
            raise SwapFull("the swap device is full")
        slot = self.free.pop()
        self.used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        self.used.remove(slot)  # a slot freed twice is a VMM bug: KeyError, never tolerated
        self.free.append(slot)

    def write(self, slot: int, data: bytes) -> None:
        if self._inject == "io":
            self._inject = None
            raise SwapIoError(f"injected I/O error writing slot {slot}")
        os.pwrite(self.fd, data, slot * PAGE_SIZE)
        if self.sync:
            os.fdatasync(self.fd)  # flushed to disk before the page is freed
        self.writes += 1

    def read(self, slot: int) -> bytes:
        data = os.pread(self.fd, PAGE_SIZE, slot * PAGE_SIZE)
        if len(data) != PAGE_SIZE:
            raise SwapIoError(f"short read of slot {slot}")
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass
