"""Several vCPUs, roles and unsync shadow pages in the bundled spec: a flush owed to one vCPU only is
a violation only where a second vCPU can hold the entry; a stale translation is usable until the
guest's invlpg and not after; a mode change switches shadows without zapping them."""

from __future__ import annotations

from typing import Any

from dmmcheck.model.explore import explore
from dmmcheck.model.interp import Interpreter
from dmmcheck.spec import bundled_path, check, load, parse

SPEC = load()
# role0 has CR0.WP, role1 not; two vCPUs, two gfns (a data page and the leaf table that maps it).
SIZES = {"vm": 1, "root": 1, "gva": 1, "gfn": 2, "mfn": 2, "slot": 1, "vcpu": 2, "role": 2, "budget": 2, "quota": 2}
IT = Interpreter(SPEC, SIZES, fixed={"role_wp": (True, False)})
READ = SPEC.enums["access"].index("read")


def _run(it: Interpreter, s: Any, steps: list[tuple[str, tuple[Any, ...]]]) -> Any:
    for name, args in steps:
        assert it.is_enabled(s, name, args), (name, args)
        s = it.apply(s, name, args)
        assert it.all_hold(s), (name, it.check(s))
    return s


# VM 0, gva 0 of root 0 maps gfn 0 (page mfn 0) through the leaf table in gfn 1 (page mfn 1), which a
# shadow page shadows; vCPU 0 runs root 0 in role 0 and has the translation in its TLB.
CACHED = [("vm_create", (0,)), ("demand_page", (0, 0, 0)), ("demand_page", (0, 1, 1)),
          ("guest_path", (0, 0, 0, 1, True)), ("protect_gpt", (0, 1)),
          ("guest_map", (0, 0, 0, 0, True, True, False, True, True)),
          ("cr3_load", (0, 0, 0)), ("set_mode", (0, 0, 0)), ("tlb_flush", (0, 0)),
          ("shadow_fill", (0, 0, 0, 0, 0, 0, True, False)), ("shadow_hit", (0, 0, 0, 0, 0, READ, False))]


def test_a_stale_translation_is_usable_until_the_guests_cr3_load_and_not_after():
    s = _run(IT, IT.initial_state(), CACHED)
    # the VMM unsyncs the leaf table; the guest clears the gpte without a trap: the spte goes stale
    s = _run(IT, s, [("unsync_gpt", (0, 1)), ("guest_unmap_unsync", (0, 0, 0))])
    assert IT.u.get(s, "s_stale", 0, 0, 0, 0) and IT.u.get(s, "old_gmap", 0, 0, 0, 0) == 0
    hit = (0, 0, 0, 0, 0, READ, False)
    # the old translation still serves the guest, from the TLB and from the shadow
    assert IT.is_enabled(s, "tlb_hit", hit) and IT.is_enabled(s, "shadow_hit", hit)
    assert not IT.u.get(IT.apply(s, "tlb_hit", hit), "bad_access", 0)
    # the guest's CR3 load cannot complete until the VMM has resynced the spte (here: zapped it); an
    # invlpg alone can (the VMM's own, paying a flush, leaves the spte stale)
    assert not IT.is_enabled(s, "cr3_load", (0, 0, 0)) and IT.is_enabled(s, "invlpg", (0, 0, 0))
    s = _run(IT, s, [("zap_spte", (0, 0, 0, 0))])
    assert IT.u.get(s, "flush_pending", 0, 0) and IT.u.get(s, "flush_pending", 0, 1)  # every vCPU owed one
    s = _run(IT, s, [("cr3_load", (0, 0, 0))])
    assert not IT.is_enabled(s, "tlb_hit", hit) and not IT.is_enabled(s, "shadow_hit", hit)


def test_a_trapping_edit_zaps_a_stale_spte_with_its_stale_mark():
    s = _run(IT, IT.initial_state(), CACHED + [("unsync_gpt", (0, 1)), ("guest_unmap_unsync", (0, 0, 0)),
                                               ("guest_map", (0, 0, 0, 0, False, True, False, True, False))])
    assert IT.u.get(s, "spte", 0, 0, 0, 0) is None and not IT.u.get(s, "s_stale", 0, 0, 0, 0)
    assert IT.u.get(s, "flush_pending", 0, 0) and IT.u.get(s, "flush_pending", 0, 1)


def test_a_resync_fill_of_a_stale_spte_owes_every_vcpu_a_flush():
    # the guest makes the gpte read-only without a trap: the spte stays, stale and still writable
    s = _run(IT, IT.initial_state(), CACHED + [("unsync_gpt", (0, 1)),
                                               ("guest_map_unsync", (0, 0, 0, 0, False, True, False, True, False))])
    assert IT.u.get(s, "s_stale", 0, 0, 0, 0) and IT.u.get(s, "s_write", 0, 0, 0, 0)
    assert not IT.u.get(s, "flush_pending", 0, 1)
    s = _run(IT, s, [("shadow_fill", (0, 0, 0, 0, 0, 0, False, False))])
    assert not IT.u.get(s, "s_stale", 0, 0, 0, 0) and not IT.u.get(s, "s_write", 0, 0, 0, 0)
    assert IT.u.get(s, "flush_pending", 0, 0) and IT.u.get(s, "flush_pending", 0, 1)
    assert IT.is_enabled(s, "invlpg", (0, 0, 0))


def test_a_mode_change_switches_shadows_without_zapping_and_owes_the_vcpu_a_flush():
    s = _run(IT, IT.initial_state(), CACHED)
    s = _run(IT, s, [("set_mode", (0, 0, 1))])
    assert IT.u.get(s, "spte", 0, 0, 0, 0) == 0  # role 0's spte stays cached
    assert IT.u.get(s, "spte", 0, 0, 1, 0) is None  # role 1 has its own shadow, empty
    assert IT.u.get(s, "flush_pending", 0, 0) and not IT.u.get(s, "flush_pending", 0, 1)
    assert not IT.is_enabled(s, "tlb_hit", (0, 0, 0, 1, 0, READ, False))  # the old role's TLB entry
    # back in role 0 after the flush: its spte serves without a new fill
    s = _run(IT, s, [("set_mode", (0, 0, 0)), ("tlb_flush", (0, 0))])
    assert IT.is_enabled(s, "shadow_hit", (0, 0, 0, 0, 0, READ, False))


def test_invlpg_on_one_vcpu_leaves_the_other_vcpus_tlb():
    s = _run(IT, IT.initial_state(), CACHED + [("cr3_load", (0, 1, 0)), ("set_mode", (0, 1, 0)),
                                               ("tlb_flush", (0, 1)), ("shadow_hit", (0, 1, 0, 0, 0, READ, False))])
    s = _run(IT, s, [("invlpg", (0, 0, 0))])
    assert IT.u.get(s, "tlb", 0, 0, 0) is None and IT.u.get(s, "tlb", 0, 1, 0) == 0


# A VMM that flushes only the vCPU it runs on when it zaps an spte (no remote flush): zap_spte names
# that vCPU. Harmless with one vCPU; with two, the other keeps a translation whose spte is gone.
_ZAP_FLUSH = "  remove s_stale(v, r, o, x)\n  forall c: vcpu. insert flush_pending(v, c)\n}\n"
LOCAL_FLUSH_ONLY = [("action zap_spte(v: vm, r: root, o: role, x: gva) {\n",
                     "action zap_spte(v: vm, r: root, o: role, x: gva, c: vcpu) {\n"),
                    (_ZAP_FLUSH, "  remove s_stale(v, r, o, x)\n  insert flush_pending(v, c)\n}\n")]


def _local_flush_only() -> Any:
    text = bundled_path().read_text()
    for old, new in LOCAL_FLUSH_ONLY:
        assert text.count(old) == 1
        text = text.replace(old, new)
    return check(parse(text, "local_flush.dmm"))


def test_a_zap_that_flushes_only_the_local_vcpu_is_caught_only_with_two_vcpus():
    spec = _local_flush_only()
    tiny = {"vm": 1, "root": 1, "gva": 1, "gfn": 1, "mfn": 1, "slot": 1, "role": 1, "budget": 1, "quota": 1}
    one = explore(Interpreter(spec, {**tiny, "vcpu": 1}, fixed={"role_wp": (True,)}))
    assert one.complete and one.violations == []
    two = explore(Interpreter(spec, {**tiny, "vcpu": 2}, fixed={"role_wp": (True,)}))
    (v, trace) = two.violations[0]
    assert v.invariant == "tlb_coherent"
    # the last step zaps on one vCPU while the other holds the translation in its TLB
    assert trace[-1].action == "zap_spte"
    hits = {step.args for step in trace if step.action == "shadow_hit"}
    assert hits and all("c=vcpu" in a for a in hits)
    zap_on = trace[-1].args.split("c=")[1]
    assert all(f"c={zap_on}" not in a for a in hits)
