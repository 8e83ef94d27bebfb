"""The spec's own invariants, evaluated by the interpreter on the bundled VMM's abstracted state,
hold after every step of a randomized workload; and a VMM bug shows up as the invariant it breaks.
(The first link between impl and spec; the full harness is in tests/conformance/test_harness.py.)"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from dmmcheck.impl.vmm import Vmm
from dmmcheck.impl.x86 import Access
from dmmcheck.spec import load

sys.path.insert(0, str(Path(__file__).parent.parent / "impl"))
from ideal import Ideal  # noqa: E402
from speccheck import universe, violations  # noqa: E402
from test_vmm import GVAS, NR_GFNS, PML4, ROOT2, random_pte, setup  # noqa: E402

SPEC = load()


@pytest.mark.parametrize("seed", range(int(__import__("os").environ.get("DMM_ABS_SEEDS", "3"))))
def test_spec_invariants_hold_on_the_vmm(seed):
    rng = random.Random(seed)
    vmm, ideal = Vmm(48, 128), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    for step in range(120):
        op = rng.random()
        if op < 0.65:
            gva = rng.choice(GVAS)
            vmm.access(vm, gva, rng.choice([Access.READ, Access.WRITE]), user=rng.random() < 0.5,
                       value=rng.getrandbits(64))
        elif op < 0.85:
            vmm.access(vm, 0x600000 + 8 * rng.randrange(8), Access.WRITE, value=random_pte(rng))
        elif op < 0.93:
            vmm.load_cr3(vm, rng.choice([PML4, ROOT2]))
        else:
            vmm.set_controls(vm, **{rng.choice(["wp", "smep", "smap", "nxe"]): rng.random() < 0.5})
        u = universe(vmm, NR_GFNS, (PML4, ROOT2), tuple(GVAS) + (0x600000,))  # the roles run so far
        assert [str(v) for v in violations(vmm, u)] == [], f"seed {seed} step {step}"


def test_a_vmm_bug_breaks_the_named_invariant(monkeypatch):
    # A VMM that forgets the rmap when it installs a leaf: rmap_consistent must say so, by name.
    vmm, ideal = Vmm(48, 128), Ideal(NR_GFNS)
    vm, _ = setup(vmm, ideal)
    u = universe(vmm, NR_GFNS, (PML4, ROOT2), tuple(GVAS))
    real = vmm.mmu.install_leaf

    def forgetful(sp, idx, gfn, mfn, rights, guest_write):
        real(sp, idx, gfn, mfn, rights, guest_write)
        vmm.mmu.rmap[mfn].discard((sp.mfn, idx))

    monkeypatch.setattr(vmm.mmu, "install_leaf", forgetful)
    vmm.access(vm, 0x400000, Access.READ)
    names = {v.invariant for v in violations(vmm, u)}
    assert "rmap_consistent" in names
