"""The spec sees resources: running out when something is allocatable, overrunning the budget and
leaking a swap slot are failures; running out for real, or when the harness injects it, is not."""

from __future__ import annotations

import pytest

from dmmcheck.conformance.adapter import Config, Operation
from dmmcheck.conformance.oracle import Failure
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load
from tests.conformance.modes import moded

SPEC = load(None)
X = Config().gvas


def op(action: str, **args) -> Operation:
    return Operation(action, args)


START = [op("vm_create", v=0), op("cr3_load", v=0, r=0)]


def touch(g: int, x: int = X[0]) -> list[Operation]:
    """The guest maps gva x to gfn g and writes it: a demand page for g."""
    return [op("guest_map", v=0, r=0, x=x, g=g, w=True, u=False, nx=False, a=False, d=False),
            op("guest_walk", v=0, x=x, a="write", u=False, value=7)]


class Patched(BundledVmm):
    """The bundled VMM with one resource bug switched on after reset."""

    def __init__(self, bug: str) -> None:
        super().__init__()
        self.bug = bug

    def reset(self, config: Config) -> None:
        super().reset(config)
        policy = self.vmm.policy  # type: ignore[union-attr]
        if self.bug == "spurious_oom":
            real = policy._allocate
            policy._allocate = lambda vm: None if vm.p2m else real(vm)  # fails once the VM holds a page
        elif self.bug == "budget_ignored":
            policy._within_budget = lambda: True
        elif self.bug == "slot_leaked":
            swap, failed = policy.swap, []
            real_write, real_release = swap.write, swap.release

            def write(slot: int, data: bytes) -> None:
                try:
                    real_write(slot, data)
                except Exception:
                    failed.append(slot)  # the write failed: the VMM then "forgets" to free this slot
                    raise
            swap.write = write
            swap.release = lambda slot: failed.remove(slot) if slot in failed else real_release(slot)


def run(ops: list[Operation], adapter=None, config: Config = Config()) -> Runner:
    r = Runner(adapter or BundledVmm(), SPEC, config)
    r.reset()
    for o in moded(ops):  # (vCPU 0, its mode loaded after its first CR3 load)
        r.step(o)
    return r


def failure(ops: list[Operation], bug: str, config: Config = Config()) -> Failure:
    run(ops, config=config)  # the real VMM conforms on the same steps
    with pytest.raises(Failure) as e:
        run(ops, Patched(bug), config)
    return e.value


def test_out_of_memory_while_a_page_is_allocatable_is_a_failure():
    f = failure(START + touch(12) + touch(13, X[1]), "spurious_oom")
    assert f.kind == "refinement" and "oom" in f.message and "not enabled" in f.message


def test_out_of_memory_for_real_and_injected_are_legal():
    scarce = Config(mfns=5)  # the guest's four tables take four of them
    r = run(START + touch(12) + touch(13, X[1]) + [op("oom_injected", v=0, g=14)], config=scarce)
    steps = [s.action for rec in r.records for s in rec.spec_steps]
    assert "oom_injected" in steps and ("oom" in steps or "swap_out" in steps)


def test_a_budget_overrun_is_a_failure():
    f = failure(START + touch(12) + touch(13, X[1]), "budget_ignored", Config(budget=4))
    assert f.kind in ("refinement", "invariant") and ("budget" in f.message or "demand_page" in f.message)


def test_a_swap_slot_leaked_on_an_io_error_is_a_failure():
    f = failure(START + touch(12) + [op("swap_io_error", v=0, g=12)], "slot_leaked")
    assert f.kind in ("refinement", "invariant")
    assert "slot_used" in f.message + f.detail or "swap_exclusive" in f.message


def test_a_campaign_varies_its_scope_and_reaches_the_resource_paths():
    from dmmcheck.conformance.fuzz import fuzz
    from dmmcheck.conformance.report import not_tried

    r = fuzz(BundledVmm, SPEC, Config(), examples=200, seed_=5)  # (the steps that load vCPU modes take a share)
    assert r.failure is None, r.failure and f"{r.failure}\n{r.failure.detail}"
    for cls in ("default scope", "gvas >8", "mfns < gfns (scarce)", "budget < mfns", "slots=1", "vms=3"):
        assert r.scopes[cls] > 0, cls
    for action in ("oom", "swap_full", "oom_injected"):
        assert r.coverage[action] > 0, action
    assert len(not_tried(r)) < 10, not_tried(r)
    for cls in ("8-byte store straddles two entries", "16-byte store aligned", "level 2 huge leaf; huge frame misaligned",
                "level 1 leaf; gfn at the end of memory"):
        assert r.inputs[cls] > 0, cls


def _touch(v: int, g: int, x: int, value: int) -> list[Operation]:
    return [op("guest_map", v=v, r=0, x=x, g=g, w=True, u=False, nx=False, a=False, d=False),
            op("guest_walk", v=v, x=x, a="write", u=False, value=value)]


# Two VMs, quota 6: each has its four tables; VM 1 also gfns 12 and 13 (6 pages, at the quota). VM 1's
# gfn 12 merges onto VM 0's: the shared page is charged to VM 0, VM 1's old page waits in its idle pool.
SHARED = ([op("vm_create", v=0), op("cr3_load", v=0, r=0), op("vm_create", v=1), op("cr3_load", v=1, r=0)]
          + _touch(0, 12, X[0], 7) + _touch(1, 12, X[0], 7) + _touch(1, 13, X[1], 9)
          + [op("share_merge", v1=0, g1=12, v2=1, g2=12)])


def _steps(r: Runner, i: int) -> list[str]:
    return [s.action for s in r.records[i].spec_steps]


def test_a_shared_page_moves_only_to_a_holder_with_room_under_the_quota():
    """share_rehome puts the page in the new holder's pools: a holder at its quota first gives an
    idle page back (pool_shrink); every step judged against the spec."""
    r = run(SHARED + [op("vm_destroy", v=0)], config=Config(quota=6))
    steps = _steps(r, -1)
    assert steps.index("pool_shrink") < steps.index("share_rehome") < steps.index("vm_destroy")


def test_a_shared_page_no_holder_has_room_for_stays_charged():
    """VM 1 at its quota with no idle page: VM 0 cannot let go of the page charged to it. The balloon
    is declined, a write that needs a copy is out of memory (the spec's charge_stuck), the teardown
    stops with the VM still there; once VM 1 makes room, the teardown finishes."""
    stuck = [op("pool_shrink", v=1)] + _touch(1, 14, X[2], 11)  # VM 1 back at 6 pages, none idle
    tail = [op("balloon_inflate", v=0, g=12), op("guest_walk", v=0, x=X[0], a="write", u=False, value=5),
            op("vm_destroy", v=0), op("balloon_inflate", v=1, g=13), op("vm_destroy", v=0)]
    r = run(SHARED + stuck + tail, config=Config(quota=6))
    n = len(r.records)
    assert _steps(r, n - 5) == []
    assert _steps(r, n - 4)[-1] == "oom"
    assert "vm_destroy" not in _steps(r, n - 3) and "cannot be torn down" in r.records[n - 3].observation.note
    steps = _steps(r, n - 1)
    # (between them: the walks through VM 1's ballooned page, its content gone, as guest_path edits)
    assert steps[:2] == ["share_rehome", "balloon_inflate"] and steps[-1] == "vm_destroy"
    assert set(steps[2:-1]) <= {"guest_path"}


def test_a_vm_at_its_quota_reclaims_its_own_page_and_uses_it():
    """Found by a campaign (seed 1): VM 0 at its quota of 1 needs a page for a table. Reclaiming
    another VM's page frees nothing it may take; the VMM swaps out VM 0's own page and allocates
    that (its idle page) — it used to report out-of-memory after the second reclaim without
    looking again, while a page was allocatable."""
    cfg = Config(vms=3, gfns=12, mfns=6, slots=4, roots=(0,), gvas=(0x4EE000, 0x191FE000, 0x191FF000, 0x7FFFFFE8F000),
                 quota=1)
    r = run([op("vm_create", v=2), op("guest_unmap", v=2, r=0, x=0x191FF000),
             op("vm_create", v=0), op("guest_unmap", v=0, r=0, x=0x7FFFFFE8F000)], config=cfg)
    assert "oom" not in _steps(r, -1)
