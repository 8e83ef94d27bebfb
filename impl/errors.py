"""The VMM's own exceptions: conditions the architecture or the DMM define, which the VMM answers
(with a guest fault, say). Whatever else is raised in the VMM is a bug and propagates, so the
harness reports it as a crash instead of mistaking it for the guest's doing."""

from __future__ import annotations


class BeyondMemory(IndexError):
    """A guest-physical address outside the VM's memory. With beyond_memory "fault" a guest table
    there faults the walk that reads it. An IndexError too, so that readers of guest memory that
    already treat an address out of range as absent keep doing so."""
