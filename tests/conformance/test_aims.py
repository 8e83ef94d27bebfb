"""The generator's aims at sequences uniform draws almost never line up. A burst: more writable
sptes weakened by one operation than a VMM invalidates page by page (a page many gvas map writable
becomes a page table), drawn once in an aliasing test case with room for it. A twin: a data page
the guest makes byte-for-byte equal to a shadowed guest table, then a merge of the two (which the
spec forbids), in one test case in four. Each one's steps kill the bug it is for, and the correct
VMM passes them."""

from __future__ import annotations

import pytest

from dmmcheck.conformance import inputs
from dmmcheck.conformance.adapter import Config, Operation
from dmmcheck.conformance.fuzz import Choices, Drawer
from dmmcheck.conformance.operations import Catalogue
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.scope import table_gfns
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


def test_the_generators_twin_kills_a_merge_that_checks_one_side():
    # VM 0 runs on root 0 (its tables shadowed as it walks); gfn 12 is a data page it wrote
    x = CONFIG.gvas[0]
    before = BOOT + [Operation("guest_map", {"v": 0, "r": 0, "x": x, "g": 12, "w": True, "u": True, "nx": False,
                                             "a": True, "d": True}),
                     Operation("guest_walk", {"v": 0, "c": 0, "x": x, "a": "write", "u": True, "value": 0x5A5A})]
    r = run(before)
    cat = Catalogue(r.judge.it, OPS)
    for i in range(2000):
        drawer = Drawer(cat, r.config, sorted(OPS))
        drawer.page = lambda v, g: r.oracle.ideal.vms[v].mem.read(g << 12, 4096)
        first = drawer._aim_twin(Choices(i), r.oracle.state, [0])
        if first is not None:
            break
    else:
        raise AssertionError("no twin in 2,000 draws")
    twin = [first] + drawer.pending
    merge = twin[-1]
    tables = {g for gs in table_gfns(r.config).values() for g in gs}
    assert merge.action == "share_merge" and merge.args["g1"] in tables and merge.args["g2"] == 12
    run(before + twin)  # the correct VMM declines the merge
    with pytest.raises(Failure) as e:
        run(before + twin, "share_pt_check_one_side")
    assert e.value.kind == "refinement" and "share_merge" in e.value.message, e.value


def test_the_generators_wp0_write_kills_an_executable_supervisor_spte_under_smep():
    # a mode with SMEP and without CR0.WP: the spte that serves the supervisor's write to a
    # read-only user page must not let the supervisor execute it
    config = Config(vcpus=1, roles=("wp+nxe", "smep+nxe"))
    r = Runner(BundledVmm(), SPEC, config)
    r.reset()
    for o in BOOT + [Operation("set_mode", {"v": 0, "c": 0, "o": "wp+nxe"})]:
        r.step(o)
    cat = Catalogue(r.judge.it, OPS)
    drawer = Drawer(cat, config, sorted(OPS))
    first = drawer._aim_wp0(Choices(0), r.oracle.state, [0])
    assert first == Operation("set_mode", {"v": 0, "c": 0, "o": "smep+nxe"})  # the only mode without WP
    steps = [first] + drawer.pending
    kinds = [(o.args["a"], o.args["u"]) for o in steps if o.action == "guest_walk"]
    assert kinds == [("write", False), ("fetch", False), ("read", False), ("write", True)]

    def run_on(mutant: str | None) -> None:
        rr = Runner(BundledVmm(), SPEC, Config(**{**config.__dict__, "mutant": mutant}))
        rr.reset()
        for o in BOOT + steps:
            rr.step(o)
    run_on(None)  # the correct VMM conforms
    with pytest.raises(Failure) as e:
        run_on("smep_wp0_spte_executable")
    assert e.value.kind == "observation" and "fetch" in e.value.message, e.value


def test_a_copy_of_a_huge_leaf_is_written_through_both_and_kills_a_dirty_bit_read_before_the_walk():
    # VM 0 runs on root 5 (its tables are gfns 5-9: the huge page's frames 0-3 are data); the
    # generator wrote one clean, writable, user huge leaf for 0x400000. Its copy at another slot
    # comes with three accesses queued: read through the copy, write through the first, write
    # through the copy, at one offset.
    first = 0x400000
    leaf = inputs.P | inputs.RW | inputs.US | inputs.A | inputs.PS  # D clear, frame 0
    boot = [BOOT[0], Operation("cr3_load", {"v": 0, "r": 5, "c": 0})]
    written = Operation("gpte_write", {"v": 0, "r": 5, "x": first, "level": 2, "g": 0, "bits": leaf})
    r = run(boot + [written])
    cat = Catalogue(r.judge.it, OPS)
    for i in range(5000):
        drawer = Drawer(cat, r.config, sorted(OPS), features=(True, False))
        drawer.huge = [(0, 5, 2, first, leaf)]
        drawer.written_at[(2, leaf & ~(inputs.RW | inputs.US | inputs.XD))] = first
        args = {"v": 0, "r": 5, "x": first, "level": 2}
        drawer._raw_entry(Choices(i), args, r.oracle.state)
        if drawer.pending and args["bits"] == leaf:
            break
    else:
        raise AssertionError("no copy of the huge leaf in 5,000 draws")
    copy = Operation("gpte_write", args)
    kinds = [(o.args["a"], o.args["x"] >> 21) for o in drawer.pending]
    assert kinds == [("read", args["x"] >> 21), ("write", first >> 21), ("write", args["x"] >> 21)]
    steps = boot + [written, copy] + drawer.pending
    run(steps)  # the correct VMM conforms
    with pytest.raises(Failure) as e:
        run(steps, "huge_dirty_role_before_walk")
    assert e.value.kind in ("refinement", "invariant", "observation"), e.value
