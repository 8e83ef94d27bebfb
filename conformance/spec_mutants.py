"""Seeded spec bugs: the catalogue `dmm mutants --spec-mutants` proves and fuzzes (mutation.py runs it).

A spec mutant replaces one piece of the bundled spec's text (spec/dmm.dmm) with a realistic one-line
bug of an action's guards or updates (or of a define the guards use): a dropped or weakened guard
conjunct, an off-by-one comparison, a wrong variable, a forgotten update, a wrong value, a wrong
condition on an if-update, a zap through the forward mapping instead of the rmap, a forgotten TLB
shootdown or owed flush, a remote flush owed to some vCPUs only, a resync skipped, a stale spte kept,
a role ignored, D set on a read, an allocation that ignores the idle pool, a shared page charged to a
VM that does not hold it, a shadowed guest table swapped, ballooned or merged. No
mutant of SPEC_MUTANTS touches an invariant, an init or a declaration, so the mutation score cannot
be raised by strengthening the guards the mutants weaken: every mutant is a bug of the model, judged
by the invariants as they stand.

INVARIANT_ABLATIONS deletes or weakens an invariant instead: what the prover loses without it. They
are kept apart and never counted in the score (an ablation is caught only by the harness's
invariant check, or not at all).

Every mutant's `old` text occurs exactly once in the bundled spec, and the mutated spec parses and
type-checks (tests/conformance/test_mutants.py). The prover's verdict on each, and the argument for
each survivor, are in docs/prover.md ("Spec mutants"); bench/mutants.py --spec-mutants measures them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The bug classes a mutant belongs to (`kind`).
KINDS = {
    "guard": "a guard conjunct dropped or weakened",
    "off-by-one": "an off-by-one comparison",
    "wrong-variable": "a wrong variable",
    "forgotten-update": "an update (insert, remove, assignment) dropped",
    "wrong-value": "a wrong value assigned",
    "wrong-condition": "a wrong condition on an if-update",
    "forward-zap": "a zap through the forward mapping instead of the rmap",
    "no-shootdown": "a forgotten TLB shootdown",
    "no-flush": "a forgotten owed flush (flush_pending)",
    "dirty-on-read": "the guest's D bit set on a read",
    "idle-ignored": "an allocation or its failure that ignores the VM's idle pool",
    "charged-non-holder": "a shared page charged to a VM that does not hold it",
    "shadowed-gpt": "a shadowed guest table swapped, ballooned or merged",
    "no-remote-flush": "a flush owed to some of the VM's vCPUs only, not to every one that may cache the entry",
    "no-resync": "a stale spte left unsynced when the guest's invlpg, CR3 load or mode change completes",
    "stale-kept": "a stale spte, or its stale mark, kept across the guest's trapping edit",
    "role-ignored": "a role's bits, or the vCPU's role, ignored: another role's WP or shadow read",
}


@dataclass(frozen=True)
class SpecMutant:
    name: str
    description: str
    old: str  # text of the bundled spec to replace (must occur exactly once)
    new: str
    action: str = ""  # the action whose guards or updates it changes (a define: the first action using it)
    kind: str = ""  # one of KINDS


# guest_unmap's zap, from the last ghost it clears: x's sptes in every role (the same block ends
# guest_map, guest_path and guest_upper).
_UNMAP_ZAP = ("  remove g_wrote(v, r, x)\n  forall o: role. spte(v, r, o, x) := none\n  forall o: role. remove s_write(v, r, o, x)\n"
              "  forall o: role. remove s_user(v, r, o, x)\n  forall o: role. remove s_nx(v, r, o, x)\n")
# The remote flush a zap of x in every role owes (guest_map, guest_unmap, guest_path, guest_upper).
_ZAP_FLUSH = "  if exists o: role. spte(v, r, o, x) != none {\n    forall c: vcpu. insert flush_pending(v, c)\n  }\n"
# What clears the gpte a stale spte was built from, with the stale mark: x's in every role (guest_map,
# guest_unmap, guest_path, guest_upper), one role's (zap_spte, after the spte), one role's inside the rmap
# loop (swap_out).
_CLEAR_OLD = "".join(f"  forall o: role. {u}(v, r, o, x){w}\n" for u, w in
                     (("old_gmap", " := none"), ("remove old_write", ""), ("remove old_user", ""), ("remove old_nx", "")))
_CLEAR_OLD_ONE = _CLEAR_OLD.replace("forall o: role. ", "")
_CLEAR_OLD_LOOP = _CLEAR_OLD_ONE.replace("  ", "    ")
# zap_spte, whole: the parameterless remote flush is what its mutants change.
_ZAP_SPTE = ("action zap_spte(v: vm, r: root, o: role, x: gva) {\n  requires spte(v, r, o, x) != none\n  spte(v, r, o, x) := none\n"
             + _CLEAR_OLD_ONE + "  remove s_write(v, r, o, x)\n  remove s_user(v, r, o, x)\n  remove s_nx(v, r, o, x)\n"
             "  forall m: mfn. remove rmap(m, v, r, o, x)\n  remove s_stale(v, r, o, x)\n")

# swap_out's zap through the rmap, up to the rmap entry it removes.
_SWAP_ZAP = ("  insert slot_used(s)\n  forall r: root, o: role, x: gva. if rmap(m, v, r, o, x) {\n    spte(v, r, o, x) := none\n"
             "    remove s_write(v, r, o, x)\n    remove s_user(v, r, o, x)\n    remove s_nx(v, r, o, x)\n")
# The shootdown of every vCPU's TLB entries filled for a gfn (swap_out, cow_break, balloon_inflate).
_SHOOTDOWN = ("  forall c: vcpu, x: gva. if tlb_gfn(v, c, x) = {g} {{\n    tlb(v, c, x) := none\n    remove tlb_write(v, c, x)\n"
              "    tlb_gfn(v, c, x) := none\n  }}\n")
# The end of swap_out and cow_break: the last reference moves the page to the idle pool.
_RESERVE = ("  refcount(m) := refcount(m) - 1\n  if refcount(m) = 1 {\n    status(m) := reserved\n"
            "    forall w: vm. if active(w, m) {\n      remove active(w, m)\n      insert idle(w, m)\n    }\n  }\n}\n\n")


def _m(name: str, action: str, kind: str, description: str, old: str, new: str) -> SpecMutant:
    return SpecMutant(name, description, old, new, action, kind)


SPEC_MUTANTS = [
    # ------------------------------------------------------------ VM lifecycle
    _m("vm_create_twice", "vm_create", "guard", "vm_create does not require the VM to be absent",
       "action vm_create(v: vm) {\n  requires not live(v)\n", "action vm_create(v: vm) {\n"),
    _m("vm_destroy_keeps_pool", "vm_destroy", "guard", "vm_destroy may tear down a VM whose pool still holds pages",
       "  requires forall m: mfn. not in_pool(v, m)\n  remove live(v)\n", "  remove live(v)\n"),
    _m("vm_destroy_keeps_tlb", "vm_destroy", "forgotten-update", "vm_destroy forgets to empty its vCPUs' TLBs",
       "  forall c: vcpu, x: gva. tlb(v, c, x) := none\n", ""),
    _m("vm_destroy_keeps_mode", "vm_destroy", "forgotten-update",
       "vm_destroy leaves its vCPUs' paging mode behind for the next VM in the slot",
       "  forall c: vcpu. mode(v, c) := none\n", ""),
    # ------------------------------------------------------------ guest CPU state
    _m("cr3_load_dead_vm", "cr3_load", "guard", "cr3_load does not require the VM to exist",
       "action cr3_load(v: vm, c: vcpu, r: root) {\n  requires live(v)\n", "action cr3_load(v: vm, c: vcpu, r: root) {\n"),
    _m("cr3_load_keeps_tlb", "cr3_load", "forgotten-update", "cr3_load switches roots without flushing the vCPU's TLB",
       "  cur_root(v, c) := r\n  forall x: gva. tlb(v, c, x) := none\n", "  cur_root(v, c) := r\n"),
    _m("cr3_load_keeps_flush", "cr3_load", "forgotten-update", "cr3_load does not pay the owed TLB flush",
       "  forall x: gva. tlb_gfn(v, c, x) := none\n  remove flush_pending(v, c)\n}\n\n# A control-register load",
       "  forall x: gva. tlb_gfn(v, c, x) := none\n}\n\n# A control-register load"),
    _m("cr3_load_skips_resync", "cr3_load", "no-resync",
       "the CR3 load completes without resyncing the new root's stale sptes",
       "  requires forall o: role, x: gva. mode(v, c) = o implies not s_stale(v, r, o, x)\n", ""),
    _m("set_mode_keeps_tlb", "set_mode", "no-flush",
       "a paging-mode change switches the vCPU's role but owes it no flush (its TLB keeps the old role's entries)",
       "  mode(v, c) := o\n  insert flush_pending(v, c)\n", "  mode(v, c) := o\n"),
    _m("set_mode_flush_only_writable", "set_mode", "wrong-condition",
       "a paging-mode change owes the vCPU a flush only when its TLB holds a writable entry",
       "  mode(v, c) := o\n  insert flush_pending(v, c)\n",
       "  mode(v, c) := o\n  if exists x: gva. tlb_write(v, c, x) {\n    insert flush_pending(v, c)\n  }\n"),
    _m("set_mode_skips_resync", "set_mode", "no-resync",
       "a paging-mode change loads the new role's shadow without resyncing its stale sptes",
       "  requires forall r: root, x: gva. cur_root(v, c) = r implies not s_stale(v, r, o, x)\n", ""),
    # ------------------------------------------------------------ guest page-table edits
    _m("guest_map_wrote_from_a", "guest_map", "wrong-value", "guest_map records the gpte's D write from its A bit (:= a, not := d)",
       "  g_wrote(v, r, x) := d\n  forall o: role. spte(v, r, o, x) := none\n",
       "  g_wrote(v, r, x) := a\n  forall o: role. spte(v, r, o, x) := none\n"),
    _m("guest_map_keeps_spte", "guest_map", "forgotten-update", "the emulated gpte write does not zap the sptes",
       "  g_wrote(v, r, x) := d\n  forall o: role. spte(v, r, o, x) := none\n", "  g_wrote(v, r, x) := d\n"),
    _m("guest_map_flush_only_writable", "guest_map", "wrong-condition",
       "the emulated gpte write owes a flush only when a zapped spte was writable",
       _ZAP_FLUSH + "}\n\n# The guest clears a gpte",
       "  if exists o: role. s_write(v, r, o, x) {\n    forall c: vcpu. insert flush_pending(v, c)\n  }\n}\n\n"
       "# The guest clears a gpte"),
    _m("guest_map_keeps_stale_mark", "guest_map", "stale-kept",
       "the emulated gpte write zaps the sptes but leaves them marked stale",
       "  forall o: role. remove s_stale(v, r, o, x)\n" + _CLEAR_OLD + _ZAP_FLUSH + "}\n\n# The guest clears a gpte",
       _CLEAR_OLD + _ZAP_FLUSH + "}\n\n# The guest clears a gpte"),
    _m("guest_unmap_no_flush", "guest_unmap", "no-flush", "clearing a gpte zaps its sptes but owes no flush",
       _UNMAP_ZAP + "  forall m: mfn, o: role. remove rmap(m, v, r, o, x)\n  forall o: role. remove s_stale(v, r, o, x)\n"
       + _CLEAR_OLD + _ZAP_FLUSH,
       _UNMAP_ZAP + "  forall m: mfn, o: role. remove rmap(m, v, r, o, x)\n  forall o: role. remove s_stale(v, r, o, x)\n"
       + _CLEAR_OLD),
    _m("guest_unmap_keeps_rmap", "guest_unmap", "forgotten-update", "clearing a gpte zaps its sptes but leaves the rmap entries",
       _UNMAP_ZAP + "  forall m: mfn, o: role. remove rmap(m, v, r, o, x)\n", _UNMAP_ZAP),
    _m("guest_path_keeps_spte", "guest_path", "forgotten-update",
       "an emulated edit of an upper-level entry does not zap the sptes behind it",
       "  g_table(v, r, x, t) := b\n  forall o: role. spte(v, r, o, x) := none\n", "  g_table(v, r, x, t) := b\n"),
    _m("guest_path_no_flush", "guest_path", "no-flush", "an emulated edit of an upper-level entry zaps the sptes but owes no flush",
       "  forall o: role. remove s_stale(v, r, o, x)\n" + _CLEAR_OLD + _ZAP_FLUSH
       + "}\n\n# The guest rewrote an entry above x's leaf so",
       "  forall o: role. remove s_stale(v, r, o, x)\n" + _CLEAR_OLD + "}\n\n# The guest rewrote an entry above x's leaf so"),
    _m("guest_path_keeps_stale_spte", "guest_path", "stale-kept",
       "an emulated edit of an upper-level entry zaps only x's in-sync sptes, leaving a stale one to the resync "
       "(which reads only the leaf)",
       "  g_table(v, r, x, t) := b\n  forall o: role. spte(v, r, o, x) := none\n  forall o: role. remove s_write(v, r, o, x)\n"
       "  forall o: role. remove s_user(v, r, o, x)\n  forall o: role. remove s_nx(v, r, o, x)\n"
       "  forall m: mfn, o: role. remove rmap(m, v, r, o, x)\n  forall o: role. remove s_stale(v, r, o, x)\n",
       "  g_table(v, r, x, t) := b\n  forall o: role. if not s_stale(v, r, o, x) {\n    spte(v, r, o, x) := none\n"
       "    remove s_write(v, r, o, x)\n    remove s_user(v, r, o, x)\n    remove s_nx(v, r, o, x)\n"
       "    forall m: mfn. remove rmap(m, v, r, o, x)\n  }\n"),
    _m("guest_upper_keeps_spte", "guest_upper", "forgotten-update",
       "an emulated edit that moves a table above x's leaf does not zap the sptes behind it",
       "  g_upper(v, r, x, t) := b\n  forall o: role. spte(v, r, o, x) := none\n", "  g_upper(v, r, x, t) := b\n"),
    _m("store_upper_keeps_spte", "guest_store_upper", "forgotten-update",
       "an emulated store to an upper-level entry does not zap the sptes of the gvas under it",
       "  forall o: role, x: gva. if h(x) {\n    spte(v, r, o, x) := none\n", "  forall o: role, x: gva. if h(x) {\n"),
    _m("store_upper_no_flush", "guest_store_upper", "no-flush",
       "an emulated store to an upper-level entry zaps the sptes under it but owes no flush",
       "  if exists o: role, x: gva. h(x) and spte(v, r, o, x) != none {\n    forall c: vcpu. insert flush_pending(v, c)\n"
       "  }\n", ""),
    _m("store_upper_keeps_stale_mark", "guest_store_upper", "stale-kept",
       "an emulated store to an upper-level entry zaps the sptes under it but leaves them marked stale",
       "    remove s_nx(v, r, o, x)\n    remove s_stale(v, r, o, x)\n    old_gmap(v, r, o, x) := none\n",
       "    remove s_nx(v, r, o, x)\n    old_gmap(v, r, o, x) := none\n"),
    _m("unsync_write_on_protected_leaf", "guest_map_unsync", "guard",
       "a guest store to a write-protected leaf table is taken as an unsync write (no trap, the sptes go stale)",
       "action guest_map_unsync(v: vm, r: root, x: gva, g: gfn, w: bool, u: bool, nx: bool, a: bool, d: bool) {\n"
       "  requires live(v) and leaf_unsync(v, r, x)\n",
       "action guest_map_unsync(v: vm, r: root, x: gva, g: gfn, w: bool, u: bool, nx: bool, a: bool, d: bool) {\n"
       "  requires live(v)\n"),
    _m("unsync_write_no_snapshot", "guest_map_unsync", "forgotten-update",
       "an unsync gpte write marks the sptes stale without recording the gpte they were built from",
       "  forall o: role. if spte(v, r, o, x) != none and not s_stale(v, r, o, x) {\n    old_gmap(v, r, o, x) := gmap(v, r, x)\n"
       "    old_write(v, r, o, x) := g_write(v, r, x)\n    old_user(v, r, o, x) := g_user(v, r, x)\n"
       "    old_nx(v, r, o, x) := g_nx(v, r, x)\n    insert s_stale(v, r, o, x)\n  }\n  gmap(v, r, x) := g\n",
       "  forall o: role. if spte(v, r, o, x) != none and not s_stale(v, r, o, x) {\n    insert s_stale(v, r, o, x)\n  }\n"
       "  gmap(v, r, x) := g\n"),
    _m("unsync_clear_not_stale", "guest_unmap_unsync", "forgotten-update",
       "an unsync gpte clear keeps the sptes but does not mark them stale",
       "    old_nx(v, r, o, x) := g_nx(v, r, x)\n    insert s_stale(v, r, o, x)\n  }\n  gmap(v, r, x) := none\n",
       "    old_nx(v, r, o, x) := g_nx(v, r, x)\n  }\n  gmap(v, r, x) := none\n"),
    _m("unsync_gpt_used_above_leaf", "unsync_gpt", "guard",
       "unsync_gpt unsyncs a table that a present spte's walk reads above its leaf",
       "  requires forall r: root, o: role, x: gva. g_upper(v, r, x, g) implies spte(v, r, o, x) = none\n", ""),
    _m("unsync_gpt_unshadowed", "unsync_gpt", "guard", "unsync_gpt may unprotect a table no shadow page shadows",
       "  requires gpt_page(v, g) and write_protected(v, g)\n", "  requires write_protected(v, g)\n"),
    _m("sync_keeps_stronger_spte", "sync_spte", "guard",
       "a resync keeps an spte whose rights the gpte as it is now no longer grants",
       "  requires (s_write(v, r, o, x) implies g_dirty(v, r, x) and (g_write(v, r, x) or not role_wp(o) and not "
       "s_user(v, r, o, x))) and (s_user(v, r, o, x) implies g_user(v, r, x)) and (g_nx(v, r, x) implies s_nx(v, r, o, x))\n",
       ""),
    _m("sync_keeps_other_page", "sync_spte", "guard",
       "a resync keeps an spte without checking that it maps the gpte's page as it is now",
       "  requires exists g: gfn. gmap(v, r, x) = g and p2m(v, g) = spte(v, r, o, x)\n", ""),
    _m("protect_gpt_not_protected", "protect_gpt", "forgotten-update", "shadowing a guest table forgets to write-protect its gfn",
       "  insert gpt_page(v, g)\n  insert write_protected(v, g)\n", "  insert gpt_page(v, g)\n"),
    _m("protect_gpt_forward_zap", "protect_gpt", "forward-zap",
       "protect_gpt removes the write right of the sptes whose gpte names g (the forward mapping), not of "
       "those the rmap of g's page lists",
       "  forall r: root, o: role, x: gva. if exists m: mfn. p2m(v, g) = m and rmap(m, v, r, o, x) {\n"
       "    remove s_write(v, r, o, x)",
       "  forall r: root, o: role, x: gva. if gmap(v, r, x) = g {\n    remove s_write(v, r, o, x)"),
    _m("protect_gpt_no_flush", "protect_gpt", "no-flush", "protect_gpt removes write rights but owes no flush",
       "  if exists m: mfn, r: root, o: role, x: gva. p2m(v, g) = m and rmap(m, v, r, o, x) and s_write(v, r, o, x) {\n"
       "    forall c: vcpu. insert flush_pending(v, c)\n  }\n", ""),
    _m("unshadow_gpt_drops_protection", "unshadow_gpt", "wrong-variable",
       "unshadow_gpt clears write_protected instead of gpt_page",
       "implies spte(v, r, o, x) = none)\n  remove gpt_page(v, g)\n", "implies spte(v, r, o, x) = none)\n  remove write_protected(v, g)\n"),
    _m("unshadow_unsync_gpt_under_sptes", "unshadow_gpt", "guard",
       "an unsync table's shadow page goes while sptes built from its gptes stay",
       "  requires write_protected(v, g) or (forall r: root, o: role, x: gva. g_table(v, r, x, g) implies spte(v, r, o, x) = none)\n",
       ""),
    _m("unprotect_gpt_under_walk", "unprotect_gpt", "guard",
       "unprotect_gpt does not check that no spte's walk still reads the table",
       "  requires forall r: root, o: role, x: gva. g_table(v, r, x, g) implies spte(v, r, o, x) = none\n", ""),
    _m("unprotect_gpt_while_shadowed", "unprotect_gpt", "guard", "unprotect_gpt does not check that no shadow depends on g",
       "  requires write_protected(v, g) and not gpt_page(v, g)\n", "  requires write_protected(v, g)\n"),
    # ------------------------------------------------------------ guest accesses
    _m("tlb_hit_ignores_flush_pending", "tlb_hit", "guard", "a TLB hit is allowed while a flush is owed to the vCPU",
       "action tlb_hit(v: vm, c: vcpu, r: root, o: role, x: gva, a: access, u: bool) {\n  requires runnable(v, c, r, o)\n",
       "action tlb_hit(v: vm, c: vcpu, r: root, o: role, x: gva, a: access, u: bool) {\n"
       "  requires live(v) and cur_root(v, c) = r and mode(v, c) = o\n"),
    _m("tlb_hit_write_readonly", "tlb_hit", "guard", "a write may hit a read-only TLB entry",
       "  requires tlb(v, c, x) != none and (a = write implies tlb_write(v, c, x))\n", "  requires tlb(v, c, x) != none\n"),
    _m("shadow_hit_no_tlb_gfn", "shadow_hit", "forgotten-update", "shadow_hit caches the translation without its gfn",
       "  if s_stale(v, r, o, x) {\n    tlb_gfn(v, c, x) := old_gmap(v, r, o, x)\n  } else {\n    tlb_gfn(v, c, x) := gmap(v, r, x)\n  }\n",
       ""),
    _m("shadow_hit_stale_gfn", "shadow_hit", "wrong-value",
       "a hit through a stale spte records the gpte's current gfn as the TLB entry's, not the one it was built from",
       "  if s_stale(v, r, o, x) {\n    tlb_gfn(v, c, x) := old_gmap(v, r, o, x)\n  } else {\n    tlb_gfn(v, c, x) := gmap(v, r, x)\n  }\n",
       "  tlb_gfn(v, c, x) := gmap(v, r, x)\n"),
    _m("shadow_hit_ignores_flush_pending", "shadow_hit", "guard",
       "a shadow hit (and its TLB fill) is allowed while a flush is owed to the vCPU",
       "action shadow_hit(v: vm, c: vcpu, r: root, o: role, x: gva, a: access, u: bool) {\n  requires runnable(v, c, r, o)\n",
       "action shadow_hit(v: vm, c: vcpu, r: root, o: role, x: gva, a: access, u: bool) {\n"
       "  requires live(v) and cur_root(v, c) = r and mode(v, c) = o\n"),
    _m("guest_walk_dirty_on_read", "guest_walk", "dirty-on-read", "guest_walk sets the guest's D bit on every access",
       "  if a = write {\n    insert g_dirty(v, r, x)\n", "  insert g_dirty(v, r, x)\n  if a = write {\n"),
    _m("guest_walk_no_dirty", "guest_walk", "forgotten-update", "guest_walk forgets the guest's D bit on a write",
       "  if a = write {\n    insert g_dirty(v, r, x)\n", "  if a = write {\n"),
    _m("guest_fault_any_root", "guest_fault", "guard", "a #PF may be injected for a root the vCPU is not running",
       "action guest_fault(v: vm, c: vcpu, r: root, o: role, x: gva, a: access, u: bool) {\n"
       "  requires live(v) and cur_root(v, c) = r and mode(v, c) = o\n",
       "action guest_fault(v: vm, c: vcpu, r: root, o: role, x: gva, a: access, u: bool) {\n  requires live(v)\n"),
    _m("fill_ignores_dirty", "shadow_fill", "guard", "shadow_fill may grant write without the guest's D bit",
       "  requires w implies g_dirty(v, r, x) and not write_protected(v, g) and status(m) != shared",
       "  requires w implies not write_protected(v, g) and status(m) != shared"),
    _m("fill_ignores_write_protect", "shadow_fill", "guard", "shadow_fill may grant write to a write-protected gfn",
       "  requires w implies g_dirty(v, r, x) and not write_protected(v, g) and status(m) != shared",
       "  requires w implies g_dirty(v, r, x) and status(m) != shared"),
    _m("fill_shared_writable", "shadow_fill", "guard", "shadow_fill may grant write to a shared page",
       "  requires w implies g_dirty(v, r, x) and not write_protected(v, g) and status(m) != shared",
       "  requires w implies g_dirty(v, r, x) and not write_protected(v, g)"),
    _m("fill_without_accessed", "shadow_fill", "guard", "shadow_fill does not wait for the guest's A bit",
       "  requires gmap(v, r, x) = g and p2m(v, g) = m and g_accessed(v, r, x)\n",
       "  requires gmap(v, r, x) = g and p2m(v, g) = m\n"),
    _m("fill_wp_polarity", "shadow_fill", "wrong-value", "shadow_fill's supervisor-write rule reads the role's CR0.WP the wrong way round",
       "  requires w implies g_write(v, r, x) or not role_wp(o)\n", "  requires w implies g_write(v, r, x) or role_wp(o)\n"),
    _m("fill_wp_of_any_role", "shadow_fill", "role-ignored",
       "shadow_fill applies the CR0.WP=0 supervisor-write rule in every role once some role has WP=0 (the "
       "shadow's own role's WP ignored)",
       "  requires w implies g_write(v, r, x) or not role_wp(o)\n",
       "  requires w implies g_write(v, r, x) or (exists p: role. not role_wp(p))\n"),
    _m("fill_user_ignores_wp0", "shadow_fill", "wrong-value",
       "a writable spte made for a WP=0 supervisor write keeps the guest's user bit",
       "  s_user(v, r, o, x) := g_user(v, r, x) and (g_write(v, r, x) or not w)\n", "  s_user(v, r, o, x) := g_user(v, r, x)\n"),
    _m("fill_overwrites_present", "shadow_fill", "guard", "shadow_fill may overwrite a present spte (weakening it in place)",
       "  requires spte(v, r, o, x) = none or s_stale(v, r, o, x) or not s_write(v, r, o, x) and w and g_write(v, r, x)\n", ""),
    _m("fill_resync_no_flush", "shadow_fill", "no-flush",
       "shadow_fill rebuilds a stale spte (a resync) but owes no flush: the vCPUs keep the old translation cached",
       "  if s_stale(v, r, o, x) {\n    forall c: vcpu. insert flush_pending(v, c)\n  }\n", ""),
    _m("fill_ignores_nx", "shadow_fill", "guard", "shadow_fill may make an spte executable that the guest's NX forbids",
       "  requires g_nx(v, r, x) implies nx\n", ""),
    _m("fill_unprotected_walk", "shadow_fill", "guard", "shadow_fill does not wait for the tables of the walk to be shadowed",
       "  requires forall t: gfn. g_table(v, r, x, t) implies write_protected(v, t) or gpt_page(v, t) and not g_upper(v, r, x, t)\n",
       ""),
    _m("fill_unsync_upper_walk", "shadow_fill", "guard",
       "shadow_fill accepts an unsync table anywhere on the walk, not only as the leaf's",
       "  requires forall t: gfn. g_table(v, r, x, t) implies write_protected(v, t) or gpt_page(v, t) and not g_upper(v, r, x, t)\n",
       "  requires forall t: gfn. g_table(v, r, x, t) implies write_protected(v, t) or gpt_page(v, t)\n"),
    _m("zap_spte_no_flush", "zap_spte", "no-flush", "zap_spte owes no flush",
       _ZAP_SPTE + "  forall c: vcpu. insert flush_pending(v, c)\n}\n", _ZAP_SPTE + "}\n"),
    _m("zap_spte_flush_only_writers", "zap_spte", "no-remote-flush",
       "zap_spte sends the remote flush only to the vCPUs that may write through x: one holding a read-only "
       "entry keeps it",
       _ZAP_SPTE + "  forall c: vcpu. insert flush_pending(v, c)\n}\n",
       _ZAP_SPTE + "  forall c: vcpu. if tlb_write(v, c, x) {\n    insert flush_pending(v, c)\n  }\n}\n"),
    _m("zap_spte_keeps_rmap", "zap_spte", "forgotten-update", "zap_spte leaves the rmap entry",
       "  forall m: mfn. remove rmap(m, v, r, o, x)\n  remove s_stale(v, r, o, x)\n  forall c: vcpu. insert flush_pending(v, c)\n}\n",
       "  remove s_stale(v, r, o, x)\n  forall c: vcpu. insert flush_pending(v, c)\n}\n"),
    # ------------------------------------------------------------ TLB
    _m("flush_request_dead_vm", "flush_request", "guard", "a flush may be owed by a VM that does not exist",
       "action flush_request(v: vm) {\n  requires live(v)\n", "action flush_request(v: vm) {\n"),
    _m("invlpg_keeps_gfn", "invlpg", "forgotten-update", "invlpg drops the entry but not the gfn it was filled for",
       "  tlb(v, c, x) := none\n  remove tlb_write(v, c, x)\n  tlb_gfn(v, c, x) := none\n}\n\n# The VMM flushes",
       "  tlb(v, c, x) := none\n  remove tlb_write(v, c, x)\n}\n\n# The VMM flushes"),
    _m("tlb_flush_keeps_entries", "tlb_flush", "forgotten-update", "tlb_flush pays the owed flush without emptying the TLB",
       "  requires live(v)\n  forall x: gva. tlb(v, c, x) := none\n  forall x: gva. remove tlb_write(v, c, x)\n"
       "  forall x: gva. tlb_gfn(v, c, x) := none\n  remove flush_pending(v, c)\n",
       "  requires live(v)\n  forall x: gva. remove tlb_write(v, c, x)\n  forall x: gva. tlb_gfn(v, c, x) := none\n"
       "  remove flush_pending(v, c)\n"),
    _m("tlb_sync_ignores_write", "tlb_sync", "guard", "tlb_sync pays the flush though a TLB entry is still writable and its spte is not",
       " and (tlb_write(v, c, x) implies s_write(v, r, o, x)))\n  remove flush_pending(v, c)\n",
       ")\n  remove flush_pending(v, c)\n"),
    _m("tlb_sync_any_role", "tlb_sync", "role-ignored",
       "tlb_sync pays the flush when the TLB agrees with the sptes of the vCPU's root in any role, not its own",
       "(exists r: root, o: role. cur_root(v, c) = r and mode(v, c) = o and tlb(v, c, x) = spte(v, r, o, x)",
       "(exists r: root, o: role. cur_root(v, c) = r and tlb(v, c, x) = spte(v, r, o, x)"),
    _m("tlb_evict_keeps_write", "tlb_evict", "forgotten-update", "evicting a TLB entry leaves its write right behind",
       "  requires tlb(v, c, x) != none\n  tlb(v, c, x) := none\n  remove tlb_write(v, c, x)\n",
       "  requires tlb(v, c, x) != none\n  tlb(v, c, x) := none\n"),
    # ------------------------------------------------------------ demand paging
    _m("demand_page_any_pool", "demand_page", "guard", "demand paging may take any page, not only an allocatable one",
       "  requires p2m(v, g) = none and swap_slot(v, g) = none and not ballooned(v, g)\n  requires allocatable(v, m)\n",
       "  requires p2m(v, g) = none and swap_slot(v, g) = none and not ballooned(v, g)\n"),
    _m("demand_page_idle_ignored", "demand_page", "idle-ignored",
       "demand paging takes a VMM-pool page though the VM's idle pool has one",
       "  requires p2m(v, g) = none and swap_slot(v, g) = none and not ballooned(v, g)\n  requires allocatable(v, m)\n",
       "  requires p2m(v, g) = none and swap_slot(v, g) = none and not ballooned(v, g)\n"
       "  requires idle(v, m) or vmm_pool(m) and held() < budget and pool_size(v) < quota\n"),
    _m("demand_page_into_balloon", "demand_page", "guard", "demand paging repopulates a ballooned gfn",
       "  requires p2m(v, g) = none and swap_slot(v, g) = none and not ballooned(v, g)\n",
       "  requires p2m(v, g) = none and swap_slot(v, g) = none\n"),
    _m("demand_page_keeps_idle", "demand_page", "forgotten-update", "demand paging leaves the page in the idle list too",
       "  requires allocatable(v, m)\n  p2m(v, g) := m\n  remove vmm_pool(m)\n  remove idle(v, m)\n",
       "  requires allocatable(v, m)\n  p2m(v, g) := m\n  remove vmm_pool(m)\n"),
    _m("alloc_budget_off_by_one", "demand_page", "off-by-one",
       "allocation from the VMM pool checks held() <= budget (allocatable: demand_page, swap_in, cow_break, oom)",
       "vmm_pool(m) and (forall n: mfn. not idle(v, n)) and held() < budget",
       "vmm_pool(m) and (forall n: mfn. not idle(v, n)) and held() <= budget"),
    _m("oom_ignores_idle", "oom", "idle-ignored", "out-of-memory is declared while the VM's idle pool has a page",
       "forall m: mfn. not allocatable(v, m)", "forall m: mfn. not vmm_pool(m) or held() >= budget"),
    _m("oom_injected_dead_vm", "oom_injected", "guard", "an injected out-of-memory for a VM that does not exist",
       "action oom_injected(v: vm, g: gfn) {\n  requires live(v)\n", "action oom_injected(v: vm, g: gfn) {\n"),
    # ------------------------------------------------------------ swapping
    _m("swap_out_shadowed_gpt", "swap_out", "shadowed-gpt", "swap_out may swap out a shadowed guest table",
       "  requires p2m(v, g) = m and not gpt_page(v, g) and not slot_used(s)\n",
       "  requires p2m(v, g) = m and not slot_used(s)\n"),
    _m("swap_out_slot_in_use", "swap_out", "guard", "swap_out may write into a slot in use",
       "  requires p2m(v, g) = m and not gpt_page(v, g) and not slot_used(s)\n",
       "  requires p2m(v, g) = m and not gpt_page(v, g)\n"),
    _m("swap_out_owner_leaves_first", "swap_out", "charged-non-holder",
       "the VM a shared page is charged to may swap it out while others still hold it",
       "  requires p2m(v, g) = m and not gpt_page(v, g) and not slot_used(s)\n"
       "  requires status(m) = shared and owner(m) = v implies refcount(m) = 1 or (exists h: gfn. h != g and p2m(v, h) = m)\n",
       "  requires p2m(v, g) = m and not gpt_page(v, g) and not slot_used(s)\n"),
    _m("swap_out_keeps_rmap", "swap_out", "forgotten-update", "swap_out forgets to remove the rmap entries of the sptes it zaps",
       _SWAP_ZAP + "    remove rmap(m, v, r, o, x)\n", _SWAP_ZAP),
    _m("swap_out_forward_zap", "swap_out", "forward-zap",
       "swap_out zaps the sptes whose gpte names g (the forward mapping), not those the rmap of m lists",
       "  insert slot_used(s)\n  forall r: root, o: role, x: gva. if rmap(m, v, r, o, x) {\n",
       "  insert slot_used(s)\n  forall r: root, o: role, x: gva. if gmap(v, r, x) = g {\n"),
    _m("swap_out_no_shootdown", "swap_out", "no-shootdown", "swap_out does not shoot down the TLB entries filled for g",
       _SHOOTDOWN.format(g="g") + _RESERVE + "# Swap in", _RESERVE + "# Swap in"),
    _m("swap_out_frees_at_two", "swap_out", "off-by-one",
       "swap_out frees the page when the count after the decrement is 1 (tests the new count against the old one's bound)",
       "  if refcount(m) = 1 {\n    status(m) := reserved\n    forall w: vm. if active(w, m) {\n      remove active(w, m)\n"
       "      insert idle(w, m)\n    }\n  }\n}\n\n# Swap in",
       "  if refcount(m) - 1 = 1 {\n    status(m) := reserved\n    forall w: vm. if active(w, m) {\n      remove active(w, m)\n"
       "      insert idle(w, m)\n    }\n  }\n}\n\n# Swap in"),
    _m("swap_out_flush_only_writable", "swap_out", "wrong-condition",
       "swap_out owes a flush only when a zapped spte was writable",
       _SWAP_ZAP + "    remove rmap(m, v, r, o, x)\n    remove s_stale(v, r, o, x)\n" + _CLEAR_OLD_LOOP
       + "  }\n  if exists r: root, o: role, x: gva. rmap(m, v, r, o, x) {\n",
       _SWAP_ZAP + "    remove rmap(m, v, r, o, x)\n    remove s_stale(v, r, o, x)\n" + _CLEAR_OLD_LOOP
       + "  }\n  if exists r: root, o: role, x: gva. rmap(m, v, r, o, x) and s_write(v, r, o, x) {\n"),
    _m("swap_in_any_page", "swap_in", "guard", "swap_in may read into any page, not only an allocatable one",
       "  requires swap_slot(v, g) = s and allocatable(v, m)\n", "  requires swap_slot(v, g) = s\n"),
    _m("swap_in_keeps_slot_used", "swap_in", "forgotten-update", "swap_in leaves the slot marked used on the device",
       "  swap_slot(v, g) := none\n  remove slot_used(s)\n  p2m(v, g) := m\n", "  swap_slot(v, g) := none\n  p2m(v, g) := m\n"),
    _m("swap_full_with_free_slot", "swap_full", "guard", "the swap device is reported full while a slot is free",
       "  requires forall s: slot. slot_used(s)\n", ""),
    _m("swap_io_error_unmapped", "swap_io_error", "guard", "a slot write fails for a gfn that is not resident",
       "action swap_io_error(v: vm, g: gfn) {\n  requires live(v) and p2m(v, g) != none\n",
       "action swap_io_error(v: vm, g: gfn) {\n  requires live(v)\n"),
    # ------------------------------------------------------------ content-based sharing
    _m("merge_keeps_write", "share_merge", "forgotten-update", "share_merge leaves the merged page writable in existing sptes",
       "  forall w: vm, r: root, o: role, x: gva. if rmap(m1, w, r, o, x) {\n    remove s_write(w, r, o, x)\n  }\n", ""),
    _m("merge_readonly_wrong_vm", "share_merge", "wrong-variable",
       "share_merge removes the write right at the gvas where v1 maps m1, in every VM (v1 for w)",
       "  forall w: vm, r: root, o: role, x: gva. if rmap(m1, w, r, o, x) {\n    remove s_write(w, r, o, x)\n",
       "  forall w: vm, r: root, o: role, x: gva. if rmap(m1, v1, r, o, x) {\n    remove s_write(w, r, o, x)\n"),
    _m("merge_flushes_wrong_vm", "share_merge", "wrong-variable",
       "the zap of v2's sptes of the discarded page owes the flush in v1, not v2",
       "  if exists r: root, o: role, x: gva. rmap(m2, v2, r, o, x) {\n    forall c: vcpu. insert flush_pending(v2, c)\n",
       "  if exists r: root, o: role, x: gva. rmap(m2, v2, r, o, x) {\n    forall c: vcpu. insert flush_pending(v1, c)\n"),
    _m("merge_zaps_m1", "share_merge", "wrong-variable", "share_merge zaps v2's sptes of m1 instead of m2",
       "  forall r: root, o: role, x: gva. if rmap(m2, v2, r, o, x) {\n",
       "  forall r: root, o: role, x: gva. if rmap(m1, v2, r, o, x) {\n"),
    _m("merge_shootdown_wrong_gfn", "share_merge", "wrong-variable", "share_merge shoots down v2's TLB entries for g1, not g2",
       "  forall c: vcpu, x: gva. if tlb_gfn(v2, c, x) = g2 {\n", "  forall c: vcpu, x: gva. if tlb_gfn(v2, c, x) = g1 {\n"),
    _m("merge_shadowed_gpt", "share_merge", "shadowed-gpt", "share_merge may merge away a shadowed guest table (v2, g2)",
       "  requires status(m2) = mapped and not gpt_page(v1, g1) and not gpt_page(v2, g2)\n",
       "  requires status(m2) = mapped and not gpt_page(v1, g1)\n"),
    _m("merge_kept_shadowed_gpt", "share_merge", "shadowed-gpt", "share_merge may make a shadowed guest table (v1, g1) shared",
       "  requires status(m2) = mapped and not gpt_page(v1, g1) and not gpt_page(v2, g2)\n",
       "  requires status(m2) = mapped and not gpt_page(v2, g2)\n"),
    _m("merge_shared_m2", "share_merge", "guard", "share_merge may discard a page that is itself shared",
       "  requires status(m2) = mapped and not gpt_page(v1, g1) and not gpt_page(v2, g2)\n",
       "  requires not gpt_page(v1, g1) and not gpt_page(v2, g2)\n"),
    _m("merge_frees_m2", "share_merge", "wrong-value", "share_merge marks the discarded page free, though it goes to v2's idle pool",
       "  insert idle(v2, m2)\n  status(m2) := reserved\n", "  insert idle(v2, m2)\n  status(m2) := free\n"),
    _m("rehome_to_non_holder", "share_rehome", "charged-non-holder", "a shared page may be rehomed to a VM that does not hold it",
       "  requires status(m) = shared and active(v, m) and live(w) and p2m(w, g) = m\n",
       "  requires status(m) = shared and active(v, m) and live(w)\n"),
    _m("rehome_dead_target", "share_rehome", "guard", "share_rehome does not check that the new owner exists",
       "  requires status(m) = shared and active(v, m) and live(w) and p2m(w, g) = m\n",
       "  requires status(m) = shared and active(v, m) and p2m(w, g) = m\n"),
    _m("rehome_ignores_quota", "share_rehome", "guard", "a shared page may be rehomed to a VM whose pools are full",
       "  requires status(m) = shared and active(v, m) and live(w) and p2m(w, g) = m\n  requires pool_size(w) < quota\n",
       "  requires status(m) = shared and active(v, m) and live(w) and p2m(w, g) = m\n"),
    _m("rehome_keeps_old_owner", "share_rehome", "wrong-variable", "share_rehome puts the page back in the old owner's active list",
       "  remove active(v, m)\n  insert active(w, m)\n  owner(m) := w\n", "  remove active(v, m)\n  insert active(v, m)\n  owner(m) := w\n"),
    _m("cow_owner_off_by_one", "cow_break", "charged-non-holder",
       "the VM a shared page is charged to may break copy-on-write away from it while one other VM holds it",
       "  requires p2m(v, g) = m and status(m) = shared and allocatable(v, n)\n"
       "  requires status(m) = shared and owner(m) = v implies refcount(m) = 1 or",
       "  requires p2m(v, g) = m and status(m) = shared and allocatable(v, n)\n"
       "  requires status(m) = shared and owner(m) = v implies refcount(m) <= 2 or"),
    _m("cow_break_no_shootdown", "cow_break", "no-shootdown", "cow_break does not shoot down the TLB entries filled for g",
       _SHOOTDOWN.format(g="g") + _RESERVE + "# ---------------------------------------------------------------- ballooning",
       _RESERVE + "# ---------------------------------------------------------------- ballooning"),
    _m("cow_break_copy_unowned", "cow_break", "forgotten-update", "cow_break does not record the writer as the copy's owner",
       "  insert active(v, n)\n  owner(n) := v\n  refcount(n) := 1\n  status(n) := mapped\n"
       "  forall r: root, o: role, x: gva. if rmap(m, v, r, o, x) {\n",
       "  insert active(v, n)\n  refcount(n) := 1\n  status(n) := mapped\n  forall r: root, o: role, x: gva. if rmap(m, v, r, o, x) {\n"),
    _m("balloon_page_not_freed", "balloon_inflate", "forgotten-update",
       "balloon_inflate forgets to put the last holder's page in the VMM pool",
       "    status(m) := free\n    insert vmm_pool(m)\n    owner(m) := none", "    status(m) := free\n    owner(m) := none"),
    _m("balloon_shadowed_gpt", "balloon_inflate", "shadowed-gpt", "the balloon driver may give back a shadowed guest table",
       "  requires p2m(v, g) = m and not gpt_page(v, g)\n  requires status(m) = shared and owner(m) = v implies refcount(m) = 1 or "
       "(exists h: gfn. h != g and p2m(v, h) = m)\n  insert ballooned(v, g)\n",
       "  requires p2m(v, g) = m\n  requires status(m) = shared and owner(m) = v implies refcount(m) = 1 or "
       "(exists h: gfn. h != g and p2m(v, h) = m)\n  insert ballooned(v, g)\n"),
    _m("balloon_no_flush", "balloon_inflate", "no-flush", "balloon_inflate zaps sptes through the rmap but owes no flush",
       "  if exists r: root, o: role, x: gva. rmap(m, v, r, o, x) {\n    forall c: vcpu. insert flush_pending(v, c)\n  }\n"
       + _SHOOTDOWN.format(g="g") + "  refcount(m) := refcount(m) - 1\n  if refcount(m) = 1 {\n    status(m) := free\n",
       _SHOOTDOWN.format(g="g") + "  refcount(m) := refcount(m) - 1\n  if refcount(m) = 1 {\n    status(m) := free\n"),
    _m("balloon_frees_shared", "balloon_inflate", "wrong-condition",
       "balloon_inflate frees the page when the ballooning VM owns it, not when it lets go of the last reference",
       "  refcount(m) := refcount(m) - 1\n  if refcount(m) = 1 {\n    status(m) := free\n",
       "  refcount(m) := refcount(m) - 1\n  if owner(m) = v {\n    status(m) := free\n"),
    _m("balloon_unmapped_swapped", "balloon_inflate_unmapped", "guard",
       "the balloon may take a swapped-out gfn as if it were not resident (its slot is kept)",
       "  requires p2m(v, g) = none and swap_slot(v, g) = none\n  insert ballooned(v, g)\n",
       "  requires p2m(v, g) = none\n  insert ballooned(v, g)\n"),
    _m("balloon_swapped_keeps_slot", "balloon_inflate_swapped", "forgotten-update",
       "ballooning a swapped-out gfn leaves its slot used on the device",
       "  insert ballooned(v, g)\n  swap_slot(v, g) := none\n  remove slot_used(s)\n",
       "  insert ballooned(v, g)\n  swap_slot(v, g) := none\n"),
    _m("balloon_deflate_keeps_ballooned", "balloon_deflate", "forgotten-update",
       "the balloon deflates but the gfn stays marked ballooned",
       "  requires live(v) and ballooned(v, g)\n  remove ballooned(v, g)\n", "  requires live(v) and ballooned(v, g)\n"),
    # ------------------------------------------------------------ pool grow and shrink
    _m("pool_grow_budget_off_by_one", "pool_grow", "off-by-one", "pool_grow checks held() <= budget",
       "  requires live(v) and vmm_pool(m) and held() < budget\n", "  requires live(v) and vmm_pool(m) and held() <= budget\n"),
    _m("pool_grow_unowned", "pool_grow", "forgotten-update", "pool_grow does not record the VM as the page's owner",
       "  insert idle(v, m)\n  owner(m) := v\n  status(m) := reserved\n", "  insert idle(v, m)\n  status(m) := reserved\n"),
    _m("pool_grow_ignores_quota", "pool_grow", "guard", "pool_grow does not check the VM's quota",
       "  requires live(v) and vmm_pool(m) and held() < budget\n  requires pool_size(v) < quota\n",
       "  requires live(v) and vmm_pool(m) and held() < budget\n"),
    _m("pool_shrink_active_page", "pool_shrink", "guard", "pool_shrink may give back a page of the active list",
       "action pool_shrink(v: vm, m: mfn) {\n  requires idle(v, m)\n", "action pool_shrink(v: vm, m: mfn) {\n  requires in_pool(v, m)\n"),
]

# Invariant ablations: not bugs of the model but of its safety net. Not counted in the mutation score.
INVARIANT_ABLATIONS = [
    _m("drop_rmap_consistent", "", "ablation", "the invariant rmap_consistent is dropped",
       "invariant rmap_consistent:\n  forall m: mfn, v: vm, r: root, o: role, x: gva. rmap(m, v, r, o, x) iff spte(v, r, o, x) = m\n", ""),
    _m("weaken_cow_readonly", "", "ablation", "cow_readonly no longer says shared pages are read-only",
       " and (forall v: vm, r: root, o: role, x: gva. spte(v, r, o, x) = m and status(m) = shared implies not s_write(v, r, o, x))", ""),
    _m("spte_rights_any_role_wp", "", "ablation",
       "spte_rights reads the CR0.WP=0 supervisor-write rule of any role, not the spte's own",
       "(s_write(v, r, o, x) implies g_write(v, r, x) or not role_wp(o) and not s_user(v, r, o, x))",
       "(s_write(v, r, o, x) implies g_write(v, r, x) or (exists p: role. not role_wp(p)) and not s_user(v, r, o, x))"),
]


@dataclass
class SpecMutantResult:
    name: str
    description: str
    prover: str  # "caught (...)" or "not caught"
    harness: str
    action: str = ""
    kind: str = ""
    prover_caught: bool = False  # some obligation not proved (violated or unknown)
    violated: list[str] = field(default_factory=list)  # the obligations found violated
    unknown: list[str] = field(default_factory=list)  # those neither proved nor violated
    # per violated inductive obligation: whether a state the spec reaches breaks it (reachable, not
    # reached, unknown; only with reach_seconds > 0)
    reachability: dict[str, str] = field(default_factory=dict)
    harness_caught: bool | None = None  # None: the harness was not run (seconds = 0)
