"""The unsync bugs that need a stale spte used at the right moment (an unsync leaf table reached by
a second path; an invalidation of the stale gva, then a read): each is killed here on a directed
run, and by the steps the generator itself draws from such a state; the correct VMM passes the
same steps. The leaf table of X in root 0 is gfn 3 (scope.guest_tables); root 5 has its
own tables (PD in gfn 7)."""

from __future__ import annotations

import pytest

from dmmcheck.conformance.adapter import Config, Operation
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load
from tests.conformance.modes import moded

SPEC = load(None)
X = Config().gvas[0]  # 0x400000
PT_ROOT0 = 3  # the leaf table of X in root 0
UPPER = 0x27  # P | RW | US | A: a table entry


def op(action: str, **args) -> Operation:
    return Operation(action, args)


# X is filled through root 0, then the guest rewrites its gpte: the leaf table goes unsync and the
# spte of X stale (it still maps gfn 10).
STALE = [op("vm_create", v=0), op("cr3_load", v=0, r=0),
         op("guest_map", v=0, r=0, x=X, g=10, w=True, u=False, nx=False, a=True, d=True),
         op("guest_walk", v=0, x=X, a="read", u=False),
         op("guest_map", v=0, r=0, x=X, g=11, w=True, u=False, nx=False, a=True, d=True)]


def run(ops: list[Operation], mutant: str | None = None) -> Runner:
    r = Runner(BundledVmm(), SPEC, Config(mutant=mutant))
    r.reset()
    for o in moded(ops):
        r.step(o)
    return r


def killed(ops: list[Operation], mutant: str) -> Failure:
    run(ops)  # the correct VMM conforms on the same steps
    with pytest.raises(Failure) as e:
        run(ops, mutant)
    return e.value


def test_an_unsync_sp_linked_under_a_second_root_is_resynced_first():
    # root 5's PD entry for X now points at root 0's unsync leaf table; the walk through root 5
    # links the existing shadow page of that table
    ops = STALE + [op("gpte_write", v=0, r=5, x=X, level=2, g=PT_ROOT0, bits=UPPER),
                   op("cr3_load", v=0, r=5), op("guest_walk", v=0, x=X, a="read", u=False)]
    f = killed(ops, "resync_skipped_before_link")
    # the stale spte (gfn 10) appears under root 5 as if filled from the gpte, which says gfn 11
    assert f.kind == "refinement" and "shadow_fill" in f.message and "g=gfn10" in f.message, f


def test_an_unsync_leaf_table_shadowed_as_an_upper_table_is_protected_again():
    # root 5's PDPT entry for X points at root 0's unsync leaf table, read there as a PD: its entry
    # 2 (the gpte of X[2], gfn 12) leads to gfn 12 as a PT, whose entry 0 the guest made a leaf.
    # Once shadowed as an upper table, the leaf table must be write-protected again.
    x2 = Config().gvas[2]  # 0x402000: its gpte is entry 2 of gfn 3, X's PDE when gfn 3 is a PD
    ops = STALE + [op("guest_map", v=0, r=0, x=x2, g=12, w=True, u=False, nx=False, a=True, d=True),
                   op("guest_walk", v=0, x=x2, a="write", u=False, value=(13 << 12) | UPPER),
                   op("gpte_write", v=0, r=5, x=X, level=3, g=PT_ROOT0, bits=UPPER),
                   op("cr3_load", v=0, r=5), op("guest_walk", v=0, x=X, a="read", u=False),
                   op("guest_map", v=0, r=0, x=x2, g=14, w=True, u=False, nx=False, a=True, d=True),
                   op("guest_walk", v=0, x=X, a="read", u=False)]
    f = killed(ops, "upper_table_left_unsync")
    assert f.kind == "invariant" and "walk_protected" in f.message, f


def test_the_generator_sees_which_leaf_tables_the_vmm_left_unsync():
    from dmmcheck.conformance.fuzz import Drawer
    from dmmcheck.conformance.operations import Catalogue

    r = run(STALE[:-1])
    judge = r.judge
    drawer = Drawer(Catalogue(judge.it, BundledVmm().capabilities().operations), r.config, [])
    assert drawer._unsync(r.oracle.state) == ()  # shadowed and write-protected
    r.step(STALE[-1])  # the guest's store into it: the VMM unsyncs it
    assert drawer._unsync(r.oracle.state) == (PT_ROOT0,)


def _drawn_link(r: Runner, level: int) -> tuple[Operation, list[Operation]]:
    """The generator's first raw entry at `level` (over choice integers 0, 1, ...) that links an
    unsync leaf table, and the steps it queued to follow it through."""
    from dmmcheck.conformance.fuzz import Choices, Drawer
    from dmmcheck.conformance.operations import Catalogue

    cat = Catalogue(r.judge.it, BundledVmm().capabilities().operations)
    for i in range(5000):
        drawer = Drawer(cat, r.config, [])
        args = {"v": 0, "r": Config().roots[0], "x": X, "level": level}
        drawer._raw_entry(Choices(i), args, r.oracle.state)
        if drawer.pending and args["level"] == level:
            return Operation("gpte_write", args), drawer.pending
    raise AssertionError(f"no link at level {level} in 5,000 draws")


@pytest.mark.parametrize("level, mutant", [(2, "resync_skipped_before_link"), (3, "upper_table_left_unsync")])
def test_the_generator_follows_a_link_to_an_unsync_table_through(level, mutant):
    # From a state with a stale spte in an unsync leaf table, the generator's own draws link that
    # table at a second path and queue the steps that walk it: they kill the mutant, and the
    # correct VMM passes them.
    # (level 3: a second present gpte in the table, at the index X's walk reads it as a PD)
    before = STALE + ([] if level == 2 else [
        op("guest_map", v=0, r=0, x=Config().gvas[2], g=12, w=True, u=False, nx=False, a=True, d=True)])
    link, follow = _drawn_link(run(before), level)
    assert link.args["g"] == PT_ROOT0 and follow[-1].action == "guest_walk"
    f = killed(before + [link] + follow, mutant)
    assert f.kind in ("refinement", "invariant"), f


@pytest.mark.parametrize("first, mutant", [("invlpg", "resync_skipped_on_invlpg"), ("cr3_load", "cr3_load_skips_resync")])
def test_the_generator_uses_a_stale_spte_after_an_invalidation(first, mutant):
    # While a stale spte waits, the generator's own draws invalidate its gva (the guest's invlpg,
    # or a CR3 load of its root) and read it: the guest must see its gpte as it is now.
    from dmmcheck.conformance.fuzz import Choices, Drawer
    from dmmcheck.conformance.operations import Catalogue

    # (gfn 10, the stale spte's page, holds a value: the stale read shows it, gfn 11 does not)
    before = STALE[:4] + [op("guest_walk", v=0, x=X, a="write", u=False, value=0x5A5A)] + STALE[4:]
    r = run(before)
    cat = Catalogue(r.judge.it, BundledVmm().capabilities().operations)
    for i in range(5000):
        drawer = Drawer(cat, r.config, [])
        op_ = drawer._aim_stale(Choices(i), r.oracle.state, [0])
        if op_ is not None and op_.action == first:
            break
    else:
        raise AssertionError(f"no {first} aimed at the stale spte in 5,000 draws")
    assert drawer.pending[-1].action == "guest_walk" and drawer.pending[-1].args["x"] == X
    f = killed(before + [op_] + drawer.pending, mutant)
    assert f.kind in ("refinement", "observation"), f
