"""The VMM's software walker agrees with QEMU's MMU (through Unicorn) on the access.c space."""

from __future__ import annotations

import random

import pytest

from dmmcheck.impl import walker, x86
from dmmcheck.impl.cpu import Cpu
from dmmcheck.impl.mmucheck import BIT13, BIT51, Case, MmuCheck, all_cases, count_cases
from dmmcheck.impl.x86 import Access, Mode


@pytest.fixture(scope="module")
def chk():
    return MmuCheck()


def _by_mode(cases):
    return sorted(cases, key=lambda c: (c.mode.user, c.mode.wp, c.mode.nxe, c.mode.smep, c.mode.smap))


def test_space_size():
    # access.c's ~1.9 million without protection keys; ours collapses entries the walk never reads.
    assert count_cases() == 1_247_232


def test_random_sample_agrees(chk):
    cases = list(all_cases())
    sample = _by_mode(random.Random(2026).sample(cases, 6000))
    bad = [d for c in sample for d in chk.run(c)]
    assert [str(d) for d in bad if not d.quirk] == []
    # The only tolerated difference is the documented 1 GiB-leaf A bit on a fault.
    assert all(d.case.pdpte & x86.PS and "PDPTE after" in d.what for d in bad)


TARGETED = [
    # (pdpte, pde, pte, access, mode, expected fault, expected error code)
    (0x27, 0x27, 0x25 | x86.US, Access.READ, Mode(smap=True), True, x86.PF_P),  # SMAP
    (0x27, 0x27, 0x25 | x86.US, Access.READ, Mode(smap=True, ac=True), False, 0),  # AC lifts SMAP
    (0x27, 0x27, 0x25 | x86.US, Access.FETCH, Mode(smep=True), True, x86.PF_P | x86.PF_I),  # SMEP
    (0x27, 0x27, 0x21, Access.WRITE, Mode(wp=False), False, 0),  # WP=0: supervisor writes RO
    (0x27, 0x27, 0x21, Access.WRITE, Mode(wp=True), True, x86.PF_P | x86.PF_W),
    (0x27, 0x27, 0x27 | x86.XD, Access.READ, Mode(nxe=False), True, x86.PF_P | x86.PF_RSVD),  # XD reserved
    (0x27, 0x27 | x86.PS | BIT13, 0, Access.READ, Mode(), True, x86.PF_P | x86.PF_RSVD),  # 2 MiB rsvd
    (0x27 | x86.PS | BIT13, 0, 0, Access.READ, Mode(), True, x86.PF_P | x86.PF_RSVD),  # 1 GiB rsvd
    (0x27, 0x27, 0x27 | BIT51, Access.READ, Mode(user=True), True, x86.PF_P | x86.PF_RSVD | x86.PF_U),
    (0x27, 0x26, 0, Access.WRITE, Mode(user=True), True, x86.PF_W | x86.PF_U),  # not present
    (0x27 | x86.PS, 0, 0, Access.WRITE, Mode(user=True), False, 0),  # 1 GiB leaf
    (0x27, 0x27 | x86.PS, 0, Access.FETCH, Mode(user=True), False, 0),  # 2 MiB leaf
]


@pytest.mark.parametrize("pdpte,pde,pte,acc,mode,fault,code", TARGETED)
def test_targeted_cases(chk, pdpte, pde, pte, acc, mode, fault, code):
    c = Case(pdpte, pde, pte, acc, mode)
    assert chk.run(c) == []
    cpu = chk.cpu
    cpu.set_mode(chk.root, mode)
    chk._mode = mode
    for addr, val in chk._entries(c):
        cpu.write64(addr, val)
    cpu.flush_tlb()
    out = cpu.access(0x40203000, acc)
    assert out.fault == fault
    if fault:
        assert out.vector == 14 and out.error_code == code


def test_the_comparison_can_fail(chk, monkeypatch):
    # A walker that forgets SMEP must be caught by the real MMU.
    real = walker.allowed
    monkeypatch.setattr(walker, "allowed", lambda a, m, rw, us, nx: real(a, Mode(**{**m.__dict__, "smep": False}), rw, us, nx))
    c = Case(0x27, 0x27, 0x25 | x86.US, Access.FETCH, Mode(smep=True))
    assert any("MMU faults" in d.what for d in chk.run(c))


def test_non_canonical_is_gp():
    w = walker.walk(lambda a: 0, None, 0x1000, 0x0000_8000_0000_0000, Access.READ, Mode())
    assert w.fault and w.gp


def test_error_code_is_observable():
    # Calibration found the context field; if a Unicorn build moves it, this says so loudly.
    assert Cpu(1 << 20).error_code_observable
