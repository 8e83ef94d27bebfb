"""The mutant catalogue: registered, off by default, and (a quick subset in CI) killed by the oracle
each should be killed by. The whole catalogue is `dmm mutants` (docs/conformance.md)."""

from __future__ import annotations

import pytest

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.mutants import MUTANTS, apply_mutant
from dmmcheck.conformance.mutation import run_one, run_spec_mutant
from dmmcheck.conformance.spec_mutants import INVARIANT_ABLATIONS, KINDS, SPEC_MUTANTS
from dmmcheck.conformance.vmm_adapter import BundledVmm

MECHANISMS = ["rmap", "zap", "gpt", "dirty", "accessed", "user", "wp0", "nx", "smep", "smap", "reserved", "huge",
              "invlpg", "root", "flush", "alloc", "release", "swap_slot", "swap_in", "cow", "merge", "balloon", "cross_vm"]


def test_at_least_twenty_named_described_mutants_cover_every_mechanism():
    assert len(MUTANTS) >= 20
    for m in MUTANTS.values():
        assert m.description and m.catches and m.name.islower()
    for word in MECHANISMS:
        assert any(word in name for name in MUTANTS), word


def test_mutants_are_off_by_default_and_switch_on_per_adapter():
    plain, bugged = BundledVmm(), BundledVmm()
    plain.reset(Config(vcpus=1))
    bugged.reset(Config(mutant="nx_ignored", vcpus=1))
    assert "leaf_rights" not in vars(plain.vmm.mmu)  # the class's own method: nothing patched, nothing paid
    assert "leaf_rights" in vars(bugged.vmm.mmu)
    with pytest.raises(ValueError, match="unknown mutant"):
        apply_mutant(plain.vmm, "no_such_bug")


@pytest.mark.parametrize("name, oracle", [
    ("rmap_insert_forgotten", "invariant"), ("alloc_vmm_pool_first", "refinement|invariant"),
    ("reserved_bits_ignored", "observation"), ("swap_in_not_read", "observation"),
    # flush_forgotten: its state shows no flush owed (refinement), while the TLB the events filled
    # still holds the entry (tlb_coherent, judged on that ghost)
    ("cow_refcount_kept", "invariant"), ("flush_forgotten", "refinement|invariant")])
def test_a_quick_subset_is_killed_by_its_oracle(name, oracle):
    r = run_one(name, seconds=30)
    assert r.killed and r.oracle in oracle.split("|"), r
    assert r.shrunk_steps is not None and r.shrunk_steps <= 8


@pytest.mark.parametrize("name, oracle", [("shadow_frame_leaked", "crash"), ("reclaim_skips_flush", "refinement|invariant")])
def test_the_shadow_page_limit_kills_the_reclaim_bugs(name, oracle):
    """A leaked shadow frame, or a reclaim that owes no flush, is found in the scopes whose
    shadow_pages limit makes the VMM reclaim (without one the pool outlasts any test case)."""
    r = run_one(name, seconds=30)
    assert r.killed and r.oracle in oracle.split("|"), r
    assert r.shrunk_steps is not None and r.shrunk_steps <= 10


def test_a_vmm_that_ignores_the_quota_is_killed_on_a_quota_scope():
    """quota_ignored: with a per-VM quota configured, a VMM that never checks it is caught (its
    allocations and pool growth past the quota are not enabled, or within_quota fails)."""
    r = run_one("quota_ignored", seconds=30, config=Config(vms=2, gfns=16, mfns=24, slots=4, quota=3))
    assert r.killed and r.oracle in ("refinement", "invariant"), r
    assert "quota" in r.message or any(a in r.message for a in ("demand_page", "pool_grow", "share_rehome",
                                                                "swap_in", "cow_break")), r


def test_a_spec_mutant_is_caught_by_the_prover_and_the_harness(tmp_path, monkeypatch):
    monkeypatch.setenv("DMM_CACHE_DIR", str(tmp_path))
    sm = next(m for m in SPEC_MUTANTS if m.name == "balloon_page_not_freed")
    r = run_spec_mutant(sm, seconds=30)
    assert r.prover.startswith("caught") and "balloon_inflate" in r.prover
    assert r.harness.startswith("caught (refinement")  # the VMM frees the page; this spec says it does not


def test_every_spec_mutant_still_applies_to_the_bundled_spec():
    from dmmcheck.spec import bundled_path, load

    text = open(bundled_path()).read()
    for m in SPEC_MUTANTS + INVARIANT_ABLATIONS:
        assert text.count(m.old) == 1, f"{m.name}: its text must occur exactly once in the bundled spec"
        assert load(None) is not None


def _signature(spec):
    from dmmcheck.spec.printer import show_expr, show_update

    return ({n: ([show_expr(g) for g in a.guards], [show_update(u) for u in a.updates]) for n, a in spec.actions.items()},
            [(i.name, show_expr(i.formula)) for i in spec.invariants],
            ([show_update(u) for u in spec.init.updates] if spec.init else []),
            sorted(spec.symbols), [(a.name, show_expr(a.formula)) for a in spec.axioms])


def test_every_spec_mutant_parses_type_checks_and_changes_only_its_action(tmp_path):
    """`dmm check`'s front end (parse + check) accepts every mutated spec; a mutant of SPEC_MUTANTS
    changes the guards or updates of its own action (a define: of the actions using it) and nothing
    else: the invariants, the init, the declarations and the axioms stay the bundled spec's, so the
    score measures the invariants as they are."""
    from dmmcheck.spec import bundled_path, load

    text = bundled_path().read_text()
    actions, invariants, init, symbols, axioms = _signature(load(None))
    for m in SPEC_MUTANTS + INVARIANT_ABLATIONS:
        path = tmp_path / f"{m.name}.dmm"
        path.write_text(text.replace(m.old, m.new))
        mutated = load(str(path))  # raises SpecError on a parse or type error
        if m in INVARIANT_ABLATIONS:
            assert _signature(mutated)[1] != invariants, m.name
            continue
        m_actions, m_invariants, m_init, m_symbols, m_axioms = _signature(mutated)
        assert (m_invariants, m_init, m_symbols, m_axioms) == (invariants, init, symbols, axioms), m.name
        changed = [a for a in actions if actions[a] != m_actions[a]]
        assert m.action in changed, f"{m.name}: changes {changed}, not {m.action}"
        assert len(changed) == 1 or m.kind in ("off-by-one", "idle-ignored"), f"{m.name}: changes {changed}"


def test_the_spec_mutant_catalogue_covers_every_action_and_bug_class():
    from dmmcheck.spec import load

    assert len(SPEC_MUTANTS) >= 40
    names = [m.name for m in SPEC_MUTANTS + INVARIANT_ABLATIONS]
    assert len(names) == len(set(names))
    for m in SPEC_MUTANTS:
        assert m.description and m.name.islower() and m.kind in KINDS, m.name
    assert set(load(None).actions) <= {m.action for m in SPEC_MUTANTS}
    assert set(KINDS) == {m.kind for m in SPEC_MUTANTS}
    assert all("invariant" not in m.old for m in SPEC_MUTANTS)


def test_every_history_mutant_applies_to_a_fresh_vmm_and_replaces_something():
    """The second part of the catalogue (conformance/mutants_history.py: bugs KVM and Xen fixed):
    each switches on without raising and patches at least one method or attribute of the VMM."""
    from dmmcheck.conformance import mutants_history

    names = [n for n, m in MUTANTS.items() if m.apply.__module__ == mutants_history.__name__]
    assert len(names) >= 22
    plain, bugged = BundledVmm(), BundledVmm()
    plain.reset(Config(vcpus=1))

    def parts(adapter):
        v = adapter.vmm
        return {"vmm": v, "mmu": v.mmu, "policy": v.policy, "machine": v.machine, "private": v.private,
                "swap": v.policy.swap}

    def same(a, b):
        return getattr(a, "__func__", a) is getattr(b, "__func__", b)

    for name in names:
        m = MUTANTS[name]
        assert m.description and m.catches and name.islower() and "imitates" in m.description, name
        assert "://" not in m.description, name
        bugged.reset(Config(mutant=name, vcpus=1))
        before, after = parts(plain), parts(bugged)
        changed = [f"{part}.{k}" for part, obj in after.items() for k, val in vars(obj).items()
                   if callable(val) and not isinstance(val, type)
                   and (k not in vars(before[part]) or not same(val, vars(before[part])[k]))]
        assert changed, f"{name} replaces nothing"


def test_mutants_are_selected_by_name_glob_substring_or_several_of_them():
    from dmmcheck.conformance.mutation import select

    assert select("cr3_load_skips_resync") == ["cr3_load_skips_resync"]
    several = select("remote_flush_forgotten,*resync*")
    assert "remote_flush_forgotten" in several and "cr3_load_skips_resync" in several
    assert "quota_ignored" not in several and several == [n for n in select(None) if n in several]
