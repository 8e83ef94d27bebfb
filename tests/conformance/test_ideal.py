"""The ideal machine with several vCPUs: one memory, and per vCPU its own CR3, paging mode and TLB
allowances (conformance/ideal.py). Driven directly, without a VMM: each test states what one vCPU
may see after what it and the others did."""

from __future__ import annotations

import pytest

from dmmcheck.conformance.ideal import A, PF_P, PF_W, Controls, IdealCpu, IdealVm

PAGE = 4096
X = 0x400000  # PML4 0, PDPT 0, PD 2, PT 0
UP = 0x7 | A  # P | RW | US, A already set: a walk changes nothing above the leaf
ROOT0 = (0x0000, 0x1000, 0x2010, 0x3000)  # where X's entries live under the root at gfn 0
ROOT5 = (0x5000, 0x6000, 0x7010, 0x8000)  # and under the root at gfn 5


def tables(vm: IdealVm, entries: tuple[int, ...], leaf: int) -> None:
    """The walk of X through the four tables `entries` names, ending in `leaf`."""
    for addr, nxt in zip(entries, entries[1:]):
        vm.mem.write64(addr, (nxt & ~(PAGE - 1)) | UP)
    vm.mem.write64(entries[-1], leaf)


def two_vcpus() -> IdealVm:
    """Both roots map X: root 0 to gfn 9 (supervisor, read-only), root 5 to gfn 10 (writable)."""
    vm = IdealVm(16, vcpus=2)
    tables(vm, ROOT0, 0x9001 | A)
    tables(vm, ROOT5, 0xA003 | A)
    return vm


def read(cpu: IdealCpu, x: int = X) -> None:
    """A successful read through the fresh walk: the translation is cached."""
    o, t, used = cpu.walk(x, "read", False)
    assert not o.fault
    cpu.commit(x, "read", o, t, used, 0)


def frames(cpu: IdealCpu, acc: str = "read", user: bool = False) -> list[int | None]:
    """Where each allowed outcome goes (None: a #PF), the fresh walk first."""
    return [None if o.fault else o.paddr for o, _, _ in cpu.candidates(X, acc, user)]


def cached_on_both() -> IdealVm:
    """Both vCPUs on root 0 read X (gfn 9); then the guest remaps X to gfn 11, no invlpg: a store
    that traps or not (an unsync table) alike, a memory write."""
    vm = two_vcpus()
    for cpu in vm.cpus:
        cpu.load_cr3(0)
        read(cpu)
    vm.mem.write64(ROOT0[3], 0xB001 | A)
    return vm


def test_two_vcpus_on_different_roots_see_different_frames():
    vm = two_vcpus()
    vm.cpus[0].load_cr3(0)
    vm.cpus[1].load_cr3(5)
    assert frames(vm.cpus[0]) == [0x9000]
    assert frames(vm.cpus[1]) == [0xA000]


def test_two_vcpus_in_different_modes_see_different_outcomes():
    """A supervisor write to a read-only page: a #PF under CR0.WP=1, a success under WP=0."""
    vm = two_vcpus()
    for cpu in vm.cpus:
        cpu.load_cr3(0)
    vm.cpus[1].set_mode("nxe")
    wp, no_wp = (vm.cpus[c].walk(X, "write", False)[0] for c in (0, 1))
    assert (wp.fault, wp.error_code) == (True, PF_P | PF_W)
    assert not no_wp.fault and no_wp.paddr == 0x9000
    assert (vm.cpus[0].ctl.role, vm.cpus[1].ctl.role) == ("wp+nxe", "nxe")


def test_an_invlpg_on_vcpu_0_leaves_vcpu_1s_stale_translation_allowed():
    vm = cached_on_both()
    assert frames(vm.cpus[0]) == frames(vm.cpus[1]) == [0xB000, 0x9000]  # fresh, then stale
    vm.cpus[0].invlpg(X)
    assert frames(vm.cpus[0]) == [0xB000]
    assert frames(vm.cpus[1]) == [0xB000, 0x9000]
    vm.cpus[1].invlpg(X)
    assert frames(vm.cpus[1]) == [0xB000]


def test_a_cr3_load_on_one_vcpu_flushes_its_tlb_only():
    vm = cached_on_both()
    vm.cpus[1].load_cr3(0)
    assert frames(vm.cpus[1]) == [0xB000]
    assert frames(vm.cpus[0]) == [0xB000, 0x9000]


def test_a_fault_on_one_vcpu_drops_its_own_stale_translations_only():
    vm = cached_on_both()
    vm.mem.write64(ROOT0[3], 0)  # unmapped, no invlpg
    o, t, used = vm.cpus[0].walk(X, "read", False)
    assert o.fault
    vm.cpus[0].commit(X, "read", o, t, used, 0)  # vCPU 0 takes the #PF (SDM 4.10.4.1)
    assert frames(vm.cpus[0]) == [None]
    assert frames(vm.cpus[1]) == [None, 0x9000]


def test_the_vcpus_share_memory_and_its_a_d_bits():
    vm = two_vcpus()
    for cpu in vm.cpus:
        cpu.load_cr3(5)
    vm.mem.write64(ROOT5[3], 0xA003)  # A clear
    o, t, used = vm.cpus[0].walk(X, "write", False)
    vm.cpus[0].commit(X, "write", o, t, used, 0x1234)
    assert vm.mem.read64(ROOT5[3]) == 0xA003 | A | (1 << 6)  # A and D, seen by every vCPU
    o, t, used = vm.cpus[1].walk(X, "read", False)
    assert vm.cpus[1].commit(X, "read", o, t, used, 0).value == 0x1234


def test_clearing_wp_keeps_the_tlb_and_the_new_mode_judges_its_entries():
    """MOV to CR0 flushes nothing unless it clears PG (SDM 4.10.4.1); the TLB holds the entry's
    rights and the mode in force judges them: a stale read-only translation serves a supervisor write
    once WP is clear, where under WP=1 it could only fault."""
    vm = cached_on_both()
    cpu = vm.cpus[0]
    assert frames(cpu, "write") == [None]  # fresh: read-only; the stale one's spurious #PF is the same
    cpu.set_mode("nxe")
    assert frames(cpu, "write") == [0xB000, 0x9000]


@pytest.mark.parametrize("role, flushes", [("wp+smep+nxe", True), ("wp+smap+nxe", False), ("wp", False),
                                           ("nxe", False), ("wp+nxe", False)])
def test_only_setting_smep_flushes_a_vcpus_tlb(role, flushes):
    """SDM 4.10.4.1: of the mode bits, a MOV to CR4 that sets SMEP invalidates; WP, SMAP and NXE
    changes do not (and a load of the same mode does nothing)."""
    vm = cached_on_both()
    vm.cpus[0].set_mode(role)
    assert frames(vm.cpus[0]) == ([0xB000] if flushes else [0xB000, 0x9000])
    assert frames(vm.cpus[1]) == [0xB000, 0x9000]  # another vCPU's mode is its own
    assert vm.cpus[0].ctl == Controls.of(role) and vm.cpus[1].ctl == Controls()


def test_setting_smep_again_flushes_nothing():
    vm = cached_on_both()
    vm.cpus[0].set_mode("wp+smep+nxe")
    read(vm.cpus[0])  # gfn 11 cached
    vm.mem.write64(ROOT0[3], 0x9001 | A)
    vm.cpus[0].set_mode("wp+smep+smap+nxe")  # SMEP stays set: no flush
    assert frames(vm.cpus[0]) == [0x9000, 0xB000]


def test_a_role_names_its_bits():
    assert Controls.of("-") == Controls(wp=False, nxe=False)
    assert Controls.of("wp+smep+smap+nxe") == Controls(smep=True, smap=True)
    assert Controls().role == "wp+nxe" and Controls(wp=False, nxe=False).role == "-"
    with pytest.raises(ValueError):
        Controls.of("nxe+wp")  # not in the canonical order
    with pytest.raises(ValueError):
        IdealVm(16, vcpus=0)
