"""The checker's resolved output: what the two semantics rely on."""

from __future__ import annotations

import pytest

from dmmcheck.spec import SpecError, check, load, parse
from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import free_vars

SMALL = """
sort vm
sort mfn [3]
enum st { free, used }
function p2m(vm, mfn): mfn?
function status(mfn): st
relation live(vm)
const flag: bool
immutable const zero: mfn
define mapped(m: mfn): bool = exists v: vm, n: mfn. p2m(v, n) = m
init {
  forall v: vm, m: mfn. p2m(v, m) := none
  forall m: mfn. status(m) := free
  forall v: vm. live(v) := false
  flag := false
}
action a(v: vm, m: mfn) {
  requires live(v) and not mapped(m)
  p2m(v, m) := m
  if flag { status(m) := used }
}
action b(v: vm) {
  requires mapped(zero)
}
invariant inv: forall v: vm. mapped(zero) or live(v)
"""


@pytest.fixture(scope="module")
def small():
    return check(parse(SMALL, "small.dmm"))


def test_modifies_is_derived_from_updates(small):
    assert small.actions["a"].modifies == {"p2m", "status"}
    assert small.actions["b"].modifies == frozenset()
    assert small.init.modifies == {"p2m", "status", "live", "flag"}


def test_plain_value_in_optional_context_is_wrapped(small):
    (upd, _) = small.actions["a"].updates
    assert isinstance(upd.value, A.Some) and isinstance(upd.value.arg, A.Var)


def test_none_gets_its_type(small):
    init = small.init.updates[0]
    assert init.body.value == A.NoneLit(A.TypeRef("mfn", True))


def test_definitions_are_inlined_without_capture():
    # `n` passed into `mapped`, whose body binds its own n: the bound one must be renamed.
    spec = check(parse(SMALL.replace("requires mapped(zero)", "requires forall n: mfn. mapped(n)"), "s.dmm"))
    (guard,) = spec.actions["b"].guards
    body = guard.body  # exists v, n_1. p2m(v, n_1) = Some(n)
    assert [v.name for v in body.binders] == ["v", "n_1"]
    assert free_vars(body) == {"n"}


def test_enum_values_and_sort_bounds(small):
    assert small.enums["st"] == ("free", "used")
    assert small.sorts == {"vm": None, "mfn": 3}
    (upd,) = small.actions["a"].updates[1].then
    assert upd.value == A.EnumLit("st", "used")


def test_symbols_carry_mutability(small):
    assert not small.symbols["zero"].mutable and small.symbols["p2m"].mutable
    assert [s.name for s in small.mutable_symbols] == ["p2m", "status", "live", "flag"]


def test_all_errors_reported_together():
    bad = SMALL.replace("live(v) and", "liv(v) and").replace("mapped(zero) or", "mapped(zer) or")
    with pytest.raises(SpecError) as e:
        check(parse(bad, "s.dmm"))
    assert len(e.value.diagnostics) == 2


def test_bundled_spec_has_every_design_invariant():
    spec = load()
    names = {i.name for i in spec.invariants}
    assert {"rmap_consistent", "no_stale_spte", "pool_conservation", "isolation", "cow_readonly",
            "guest_pt_protected", "swap_exclusive", "refcount_exact", "tlb_coherent"} <= names
    assert all(i.doc for i in spec.invariants)


def test_bundled_spec_has_every_mechanism_and_policy():
    actions = set(load().actions)
    assert {"vm_create", "vm_destroy", "guest_map", "guest_unmap", "tlb_hit", "shadow_hit", "guest_walk",
            "guest_fault", "shadow_fill", "demand_page", "swap_out", "swap_in", "share_merge", "cow_break",
            "balloon_inflate", "balloon_deflate", "pool_grow", "pool_shrink", "invlpg", "cr3_load",
            "oom", "swap_full", "swap_io_error"} <= actions
    # several vCPUs, shadows by role, unsync shadow pages
    assert {"set_mode", "tlb_flush", "tlb_sync", "zap_spte", "guest_upper", "guest_map_unsync", "guest_unmap_unsync",
            "unsync_gpt", "sync_spte"} <= actions
    spec = load()
    assert {"vcpu", "role"} <= set(spec.sorts)
    assert [t.name for t in spec.symbols["tlb"].args] == ["vm", "vcpu", "gva"]
    assert [t.name for t in spec.symbols["spte"].args] == ["vm", "root", "role", "gva"]
    assert not spec.symbols["role_wp"].mutable and spec.symbols["s_stale"].ghost
