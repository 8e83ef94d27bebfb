"""The generator's inputs and scopes stay inside what they promise, and every class they name is
one the coverage report knows."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from dmmcheck.conformance.vmm_adapter import _check_layout
from dmmcheck.conformance import inputs, scope
from dmmcheck.conformance.adapter import Bounds, Config
from dmmcheck.conformance.fuzz import Choices

GUEST = inputs.Guest(16, {4: [0], 3: [1], 2: [2], 1: [3, 4]}, (9, 12), (0, 2, 3, 511), ((2, 0x87), (1, 0x9027)))
BOUNDS = Bounds(vms=3, gfns=24, mfns=48, slots=4, roots=3, gvas=16, regions=3, budget=True, shadow_pages=6)


@given(st.integers(0, 2 ** 63 - 1))
def test_a_store_stays_in_its_page_and_names_a_known_class(n):
    size, off, cls = inputs.store(Choices(n), GUEST)
    assert size in inputs.SIZES and 0 <= off and off + size <= 4096
    assert cls.replace("store", "load") in inputs.classes() and cls in inputs.classes()


@given(st.integers(0, 2 ** 63 - 1), st.integers(1, 4))
def test_a_gpte_names_a_known_class(n, level):
    e, cls = inputs.gpte(Choices(n), GUEST, level)
    assert cls in inputs.classes(), cls
    assert 0 <= e < 1 << 64


@given(st.integers(0, 2 ** 63 - 1))
def test_a_scope_stays_within_the_bounds_and_lays_its_tables_out(n):
    base = Config(mutant="nx_ignored")
    c = scope.draw(Choices(n), base, BOUNDS)
    assert c.mutant == "nx_ignored"  # the campaign's own switch survives
    assert 1 <= c.vms <= BOUNDS.vms and 1 <= c.gfns <= BOUNDS.gfns and 1 <= c.mfns <= BOUNDS.mfns
    assert 1 <= c.slots <= BOUNDS.slots and 1 <= len(c.roots) <= BOUNDS.roots
    assert 1 <= len(c.gvas) <= BOUNDS.gvas and all(scope.canonical(x) and x % 4096 == 0 for x in c.gvas)
    assert c.budget is None or 1 <= c.budget <= c.mfns
    assert c.shadow_pages is None or BOUNDS.shadow_pages <= c.shadow_pages <= 4 * BOUNDS.shadow_pages
    assert scope.draw(Choices(n), base, replace(BOUNDS, shadow_pages=0)).shadow_pages is None  # no limit taken
    tables = [g for gs in scope.table_gfns(c).values() for g in gs]
    assert len(tables) == len(set(tables)) and all(g < c.gfns for g in tables)  # every table in memory, none shared
    _check_layout(c, {r: scope.guest_tables(r, c.gvas) for r in c.roots})  # the bundled adapter lays it out


def test_zero_decodes_to_the_campaigns_own_scope():
    assert scope.draw(Choices(0), Config(), BOUNDS) == Config()


def test_a_long_campaign_keeps_a_bounded_number_of_compiled_scopes():
    from dmmcheck.conformance.runner import JUDGES_KEPT, Runner
    from dmmcheck.conformance.vmm_adapter import BundledVmm
    from dmmcheck.spec import load

    r = Runner(BundledVmm(), load(None), Config())
    for n in range(JUDGES_KEPT + 20):
        r.reset(Config(gfns=16 + n % 2, mfns=10 + n))  # a new scope every time
    assert len(r._judges) == JUDGES_KEPT
    # (kept by the configuration the runner ran)
    assert r.judge is r._judges[Config(gfns=16 + (JUDGES_KEPT + 19) % 2, mfns=10 + JUDGES_KEPT + 19)]


def test_a_table_entry_may_link_a_leaf_table_the_vmm_left_unsync():
    from dmmcheck.conformance import inputs
    from dmmcheck.conformance.fuzz import Choices

    g = inputs.Guest(16, {1: [3, 4], 2: [2], 3: [1]}, unsync=(4,))
    for level in (2, 3):  # read as a leaf table again, or as a page directory
        drawn = [inputs.gfn(Choices(n), g, level) for n in range(400)]
        linked = {f for f, cls in drawn if cls == "gfn an unsync leaf table"}
        assert linked == {4}  # only the unsync one, and it is drawn
        assert f"level {level} table entry; gfn an unsync leaf table" in inputs.classes()
    # a leaf (level 1) or a PML4 entry (level 4) never names it as a table
    for level in (1, 4):
        assert all(cls != "gfn an unsync leaf table" for f, cls in (inputs.gfn(Choices(n), g, level) for n in range(400)))


def test_some_scopes_mirror_their_gvas_over_the_data_pages_of_several_regions():
    # Two huge leaves over one frame alias a data page only where two regions hold a gva at that
    # page's offset: a random layout rarely gives it, one from a region's start puts it on the tables.
    drawn = [scope.draw(Choices(n), Config(), BOUNDS) for n in range(3000)]
    mirrors = [c for c in drawn if scope.mirrored(c)]
    assert len(mirrors) >= 30, len(mirrors)
    for c in mirrors:
        tables = {g for gs in scope.table_gfns(c).values() for g in gs}
        offsets = {x % scope.REGION // scope.PAGE for x in c.gvas}
        assert offsets.isdisjoint(tables) and max(offsets) < c.gfns  # data pages, in memory
        assert len({x & ~(scope.REGION - 1) for x in c.gvas}) > 1
        assert "gvas at equal data-page offsets in several regions" in scope.describe(c, Config())
        _check_layout(c, {r: scope.guest_tables(r, c.gvas) for r in c.roots})
    assert not scope.mirrored(Config())  # the default scope's offsets are its tables'
