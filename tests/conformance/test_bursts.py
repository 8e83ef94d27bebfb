"""A burst: more writable sptes weakened by one operation than a VMM invalidates page by page (a
page many gvas map writable becomes a page table). The generator draws it once in an aliasing test
case with room for it; its steps kill a VMM whose flush list overflows into a partial flush, and the
correct VMM passes them."""

from __future__ import annotations

import pytest

from dmmcheck.conformance import inputs
from dmmcheck.conformance.adapter import Config, Operation
from dmmcheck.conformance.fuzz import Choices, Drawer
from dmmcheck.conformance.operations import Catalogue
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load
from tests.conformance.modes import moded

SPEC = load(None)
# ten gvas in one 2 MiB region, one in another: room for a burst of nine and a y to shadow
CONFIG = Config(gvas=tuple(0x400000 + 0x1000 * i for i in range(10)) + (0x600000,), vcpus=1)
OPS = BundledVmm().capabilities().operations
BOOT = [Operation("vm_create", {"v": 0}), Operation("cr3_load", {"v": 0, "r": 0, "c": 0})]


def run(ops: list[Operation], mutant: str | None = None) -> Runner:
    r = Runner(BundledVmm(), SPEC, Config(**{**CONFIG.__dict__, "mutant": mutant}))
    r.reset()
    for o in moded(ops):
        r.step(o)
    return r


def drawn_burst(r: Runner) -> list[Operation]:
    """The first burst the generator draws from r's state (over choice integers 0, 1, ...)."""
    cat = Catalogue(r.judge.it, OPS)
    for i in range(2000):
        drawer = Drawer(cat, r.config, sorted(OPS))
        first = drawer._aim_burst(Choices(i), r.oracle.state, [0])
        if first is not None:
            return [first] + drawer.pending
    raise AssertionError("no burst in 2,000 draws")


def test_the_generators_burst_kills_a_flush_list_that_overflows_into_a_partial_flush():
    burst = drawn_burst(run(BOOT))
    maps = [o for o in burst if o.action == "guest_map"]
    assert len(maps) == inputs.BURST and len({o.args["g"] for o in maps}) == 1  # all onto one page
    assert [o.action for o in burst].count("gpte_write") == 1
    run(BOOT + burst)  # the correct VMM conforms
    with pytest.raises(Failure) as e:
        run(BOOT + burst, "flush_list_overflow_truncated")
    assert e.value.kind in ("refinement", "invariant", "observation"), e.value


def test_a_burst_is_drawn_once_a_test_case_and_only_when_aliasing():
    r = run(BOOT)
    cat = Catalogue(r.judge.it, OPS)
    for aliasing in (False, True):
        drawer = Drawer(cat, r.config, sorted(OPS), features=(False, aliasing))
        bursts = 0
        for i in range(200):
            drawer.pending = []
            drawer.draw(Choices(i), sorted(OPS), r.oracle.state, _Result())
            bursts += drawer.inputs[f"burst of {inputs.BURST} writable sptes weakened at once"]
            drawer.inputs.clear()
        assert bursts == (1 if aliasing else 0), (aliasing, bursts)


class _Result:
    """What Drawer.draw records into (FuzzResult's guard counts)."""

    def __init__(self) -> None:
        self.guards: dict = {}
