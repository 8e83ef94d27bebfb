"""The VMM's #PF path answers only the faults the architecture defines: a guest table beyond the
VM's memory is a guest fault; any other exception of the walk is a bug and reaches the caller (the
harness reports it as a crash, never as the guest's fault)."""

from __future__ import annotations

import pytest

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.impl import x86
from dmmcheck.impl.errors import BeyondMemory
from dmmcheck.impl.vmm import BAD_GFN_CODE, Vmm
from dmmcheck.impl.x86 import Access
from dmmcheck.spec import load

NR_GFNS = 8
UP = x86.P | x86.RW | x86.US
GVA = 0x400000


def _vm_with_pml4_entry(vmm: Vmm, entry: int):
    vm = vmm.create_vm(NR_GFNS)
    vmm.gpa_write(vm, 1 << x86.PAGE_SHIFT, entry.to_bytes(8, "little"))
    vmm.load_cr3(vm, 1)
    return vm


def test_a_table_beyond_memory_is_a_guest_fault():
    vmm = Vmm(beyond_memory="fault")
    vm = _vm_with_pml4_entry(vmm, ((NR_GFNS + 3) << x86.PAGE_SHIFT) | UP)  # the PDPT beyond memory
    res = vmm.access(vm, GVA, Access.READ)
    assert res.fault and res.error_code & BAD_GFN_CODE == BAD_GFN_CODE


def test_a_gfn_beyond_memory_raises_the_vmms_own_error():
    vmm = Vmm()
    vm = vmm.create_vm(NR_GFNS)
    with pytest.raises(BeyondMemory):
        vmm.gfn_mfn(vm, NR_GFNS)


@pytest.mark.parametrize("bug", [IndexError("list index out of range"), KeyError(3), AttributeError("x")])
def test_a_bug_in_the_walk_is_a_crash_not_a_guest_fault(monkeypatch, bug):
    vmm = Vmm(beyond_memory="fault")
    vm = _vm_with_pml4_entry(vmm, 0)  # not present: the access takes the #PF path

    def broken_walk(*args, **kwargs):
        raise bug
    monkeypatch.setattr(vmm, "walk", broken_walk)
    with pytest.raises(type(bug)):
        vmm.access(vm, GVA, Access.READ)


class WalkBug(BundledVmm):
    """The bundled VMM with a bug in its software walk (an index off the end of a list)."""

    def reset(self, config: Config) -> None:
        super().reset(config)

        def walk(*args, **kwargs):
            return [][0]
        self.vmm.walk = walk


def test_the_harness_reports_a_walk_bug_as_a_crash():
    r = fuzz(WalkBug, load(None), Config(), examples=50, seed_=0)
    assert r.failure is not None and r.failure.kind == "crash", r.failure
    assert "IndexError" in r.failure.message
