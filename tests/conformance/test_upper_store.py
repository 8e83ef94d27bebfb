"""A guest store to an upper-level entry moves every gva under it to another subtree at once: the
harness explains it as one guest_store_upper step (its choice parameters read from the walks the
implementation shows), then each gva's new gpte as a leaf edit; a VMM whose emulation of such a
store zaps nothing is caught. Layout of root 0 (scope.guest_tables):
PML4 gfn 0, PDPT gfn 1, PD gfn 2; the PDE of 0x400000 links the page table in gfn 3, the PDE of
0x600000 the one in gfn 4."""

from __future__ import annotations

import pytest

from dmmcheck.conformance.adapter import Config, Operation
from dmmcheck.conformance.binding import GUEST_PATH, GUEST_STORE_UPPER
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

SPEC = load(None)
LOW, HIGH = Config().gvas[:4], Config().gvas[4:]  # 0x400000.. (PT gfn 3), 0x600000.. (PT gfn 4)
PT_HIGH = 4
TABLE = 0x27  # P | RW | US | A: an entry that links a table


def op(action: str, **args) -> Operation:
    return Operation(action, args)


def mapped_and_filled() -> list[Operation]:
    """Every gva mapped (LOW to gfns 8.., HIGH to gfns 12..) and read once, so each has an spte."""
    ops = [op("vm_create", v=0), op("cr3_load", v=0, c=0, r=0), op("set_mode", v=0, c=0, o=Config().roles[0])]
    for k, x in enumerate(LOW + HIGH):
        ops.append(op("guest_map", v=0, r=0, x=x, g=8 + k, w=True, u=False, nx=False, a=True, d=True))
        ops.append(op("guest_walk", v=0, c=0, x=x, a="read", u=False))
    return ops


def run(ops: list[Operation], mutant: str | None = None) -> Runner:
    r = Runner(BundledVmm(), SPEC, Config(mutant=mutant))
    r.reset()
    for o in ops:
        r.step(o)
    return r


# The PDE of LOW now links HIGH's page table: LOW's four gvas read HIGH's translations.
RELINK = op("gpte_write", v=0, r=0, x=LOW[0], level=2, g=PT_HIGH, bits=TABLE)


def test_a_store_to_a_pde_is_one_step_that_moves_every_gva_under_it():
    r = run(mapped_and_filled())
    rec = r.step(RELINK)
    names = [s.action for s in rec.spec_steps]
    assert names.count(GUEST_STORE_UPPER) == 1 and GUEST_PATH not in names, names
    i = names.index(GUEST_STORE_UPPER)
    store = rec.spec_steps[i]
    assert store.inferred
    shown = r.oracle.it.show_args(GUEST_STORE_UPPER, store.args)
    h, tab = store.args[3], store.args[4]
    assert sum(h) == len(LOW), shown  # every gva under the entry, and only those
    assert tab[PT_HIGH] and not tab[3], shown  # they now read HIGH's page table, no longer their own
    # then the gpte each reads there, a leaf edit of its own: HIGH's translations
    assert names[i + 1:] == ["guest_map"] * len(LOW), names
    spec = r.oracle.state
    low = [r.oracle.u.get(spec, "gmap", 0, 0, x) for x in range(len(h)) if h[x]]
    high = [r.oracle.u.get(spec, "gmap", 0, 0, x) for x in range(len(h)) if not h[x]]
    assert low == high and None not in low, shown
    # the next walk of a LOW gva is judged against that state, and passes
    assert not r.step(op("guest_walk", v=0, c=0, x=LOW[1], a="read", u=False)).observation.access.fault


def test_a_vmm_that_zaps_nothing_on_such_a_store_is_caught():
    with pytest.raises(Failure) as e:
        r = run(mapped_and_filled(), "upper_store_not_propagated")
        r.step(RELINK)
        r.step(op("guest_walk", v=0, c=0, x=LOW[1], a="read", u=False))
    assert e.value.kind in ("invariant", "refinement", "observation"), e.value
