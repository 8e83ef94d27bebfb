"""Judging several vCPUs, roles and unsync shadow pages: the refinement oracle replays an event
stream per vCPU (a flush owed to one vCPU stops that vCPU, not another), infers an unsync leaf edit
where the sptes stayed, demands the resync before a CR3 load completes, and the read-back
refuses a role the configuration does not name.

The implementation's states here are the spec's own (built with the interpreter), so each test
judges one event stream: the honest one passes, the one that forgets what the spec requires fails."""

from __future__ import annotations

from typing import Any

import pytest

from dmmcheck.conformance.abstraction import AbstractionError, Universe, to_spec_state
from dmmcheck.conformance.adapter import Config, Observation
from dmmcheck.conformance.oracle import Failure, Judge, Oracle
from dmmcheck.model.state import State
from dmmcheck.spec import load

SPEC = load(None)
CONFIG = Config(vms=1, gfns=8, mfns=8, slots=1, roots=(0,), gvas=(0x400000, 0x401000), vcpus=2)
X = CONFIG.gvas[0]
ROLE = CONFIG.roles[0]  # "wp+nxe": spec role 0


def oracle_after(steps: list[tuple[str, tuple[Any, ...]]]) -> Oracle:
    """An oracle whose spec state is the initial one after `steps` (spec values, by position)."""
    o = Oracle(Judge(SPEC, CONFIG))
    for name, args in steps:
        o.state = apply(o, o.state, name, args)
    return o


def apply(o: Oracle, s: State, name: str, args: tuple[Any, ...]) -> State:
    assert o.it.is_enabled(s, name, args), f"{name}{args}"
    return o.it.apply(s, name, args)


def judge(o: Oracle, events: list[tuple[str, dict[str, Any]]], impl: State) -> list[str]:
    """Refinement of one step's events against the implementation's state `impl`; the spec steps."""
    steps, o.state = o.refine(Observation(events=events), impl)
    return [s.action for s in steps]


# Both vCPUs of VM 0 run root 0 in role 0; gva 0 maps gfn 1 (page mfn 0) through the leaf table in
# gfn 2, shadowed; its spte is filled and vCPU 1's TLB holds it.
RUNNING = [("vm_create", (0,)), ("cr3_load", (0, 0, 0)), ("cr3_load", (0, 1, 0)), ("set_mode", (0, 0, 0)),
           ("set_mode", (0, 1, 0)), ("tlb_flush", (0, 0)), ("tlb_flush", (0, 1)), ("demand_page", (0, 1, 0)),
           ("demand_page", (0, 2, 1)), ("guest_path", (0, 0, 0, 2, True)), ("protect_gpt", (0, 2)),
           ("guest_map", (0, 0, 0, 1, True, False, False, True, True)),
           ("shadow_fill", (0, 0, 0, 0, 1, 0, True, False)), ("shadow_hit", (0, 1, 0, 0, 0, 0, False))]


def test_a_flush_owed_to_another_vcpu_must_be_paid_before_that_vcpu_runs():
    zap = ("zap_spte", {"v": 0, "r": 0, "o": ROLE, "x": X})
    flush = [("tlb_flush", {"v": 0, "c": c}) for c in (0, 1)]
    hit = ("hit", {"v": 0, "c": 1, "r": 0, "o": ROLE, "x": X, "a": "read", "u": False})
    # Honest: the zap owes both vCPUs a flush; the VMM pays both (a remote flush for vCPU 1).
    o = oracle_after(RUNNING)
    paid = apply(o, apply(o, apply(o, o.state, "zap_spte", (0, 0, 0, 0)), "tlb_flush", (0, 0)), "tlb_flush", (0, 1))
    assert judge(o, [zap] + flush, paid) == ["zap_spte", "tlb_flush", "tlb_flush"]
    # Forgetful: it pays vCPU 0 only (its record shows nothing owed) and vCPU 1 runs on, its TLB
    # still holding the zapped translation.
    o = oracle_after(RUNNING)
    forgot = apply(o, apply(o, o.state, "zap_spte", (0, 0, 0, 0)), "tlb_flush", (0, 0))
    forgot = _set(o, forgot, (0, 1))
    with pytest.raises(Failure) as e:
        judge(o, [zap, flush[0], hit], forgot)
    assert e.value.kind == "refinement" and "event 2" in e.value.message and "not enabled" in e.value.message
    assert "flush_pending" in e.value.detail or "runnable" in e.value.detail  # it is the owed flush that stops it


def _set(o: Oracle, s: State, point: tuple[int, ...]) -> State:
    """s with flush_pending at `point` false (what a VMM that forgot the remote flush shows)."""
    lay = o.u.layout["flush_pending"]
    values = list(s[lay.index])
    values[o.u.index("flush_pending", point)] = False
    return s[:lay.index] + (tuple(values),) + s[lay.index + 1:]


# RUNNING, then the VMM unsyncs the leaf table (gfn 2): the guest's leaf stores no longer trap.
UNSYNC = RUNNING + [("unsync_gpt", (0, 2))]
REMAP = (0, 0, 0, 3, True, False, False, True, True)  # gva 0 now maps gfn 3 (the sptes go stale)


def test_an_unsync_leaf_edit_is_inferred_where_the_sptes_stayed_and_resynced_before_cr3_load():
    o = oracle_after(UNSYNC)
    edited = apply(o, o.state, "demand_page", (0, 3, 2))
    stale = apply(o, edited, "guest_map_unsync", REMAP)
    store = [("demand_page", {"v": 0, "g": 3, "m": 3}), ("guest_write", {"v": 0, "gpa": 2 << 12})]
    assert judge(o, store, stale) == ["demand_page", "guest_map_unsync"]  # no trap, no zap
    saved = o.state
    # The VMM's own invlpg of the stale gva (paying a flush page by page) leaves the spte stale:
    # legal; the guest's invlpg must also resync, which the ideal machine holds it to.
    invlpg = ("invlpg", {"v": 0, "c": 0, "x": X})
    assert judge(o, [invlpg], apply(o, o.state, "invlpg", (0, 0, 0))) == ["invlpg"]
    load = ("cr3_load", {"v": 0, "c": 0, "r": 0})
    # Honest: the VMM resyncs gva 0 (here by dropping the stale spte) before the CR3 load completes.
    o.state = saved
    after = apply(o, apply(o, o.state, "zap_spte", (0, 0, 0, 0)), "cr3_load", (0, 0, 0))
    assert judge(o, [("zap_spte", {"v": 0, "r": 0, "o": ROLE, "x": X}), load], after) == ["zap_spte", "cr3_load"]
    # Forgetful: the CR3 load completes with the spte still stale.
    o.state = saved
    with pytest.raises(Failure) as e:
        judge(o, [load], o.state)
    assert e.value.kind == "refinement" and "cr3_load" in e.value.message and "not enabled" in e.value.message


def test_a_leaf_edit_of_a_write_protected_table_traps_and_zaps():
    o = oracle_after(RUNNING)
    edited = apply(o, apply(o, o.state, "demand_page", (0, 3, 2)), "guest_map", REMAP)
    store = [("demand_page", {"v": 0, "g": 3, "m": 3}), ("guest_write", {"v": 0, "gpa": 2 << 12})]
    assert judge(o, store, edited) == ["demand_page", "guest_map"]


def test_a_role_the_configuration_does_not_name_is_an_abstraction_error():
    o = oracle_after(RUNNING)
    u = Universe.of(CONFIG)
    st = {"mfns": (1, CONFIG.mfns), "pool": {}, "descriptor": {}, "p2m": {}, "slots_used": [], "write_protected": [],
          "flush_pending": [], "gmap": {}, "g_tables": {}, "rmap": {}, "spte_at": {},
          "spte": {(0, 0, "wp+smep", X): (1, False, False, False)}}
    vms = {0: {"live": True, "vcpus": [{"cr3_gfn": 0, "role": ROLE}, {"cr3_gfn": 0, "role": ROLE}]}}
    with pytest.raises(AbstractionError, match="role 'wp\\+smep' is not one of the configuration's roles"):
        to_spec_state(o.it, u, st, vms)
    vms[0]["vcpus"][1]["role"] = "smap"  # a vCPU in a mode the configuration lacks, too
    st["spte"] = {}
    with pytest.raises(AbstractionError, match="role 'smap'"):
        to_spec_state(o.it, u, st, vms)
    # through the oracle: a refinement failure naming it
    with pytest.raises(Failure, match="role 'smap'") as e:
        o.abstract(dict(st, vms=vms))
    assert e.value.kind == "refinement"
