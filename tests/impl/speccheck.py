"""The spec's own invariants on the bundled VMM: its abstract_state() mapped to a spec state and
judged by the interpreter. Tests use this instead of restating an invariant in Python."""

from __future__ import annotations

from functools import cache

from dmmcheck.conformance.abstraction import Universe, interpreter_for, to_spec_state
from dmmcheck.impl.abstract import abstract_state
from dmmcheck.impl.vmm import Vmm
from dmmcheck.model.interp import Interpreter, Violation
from dmmcheck.spec import load


@cache
def _interpreter(u: Universe) -> Interpreter:
    return interpreter_for(load(), u)


@cache
def _ghostly() -> frozenset[str]:
    return frozenset(load().ghostly_invariants())


def universe(vmm: Vmm, nr_gfns: int, roots: tuple[int, ...], gvas: tuple[int, ...]) -> Universe:
    """The VMM's VMs, vCPUs and the roles it has run in (its vCPUs' modes, its cached roots')."""
    roles = {p.name for (_v, _r, p) in vmm.mmu.roots} | {c.paging.name for v in vmm.vms.values() for c in v.vcpus}
    return Universe(tuple(sorted(vmm.vms)), nr_gfns, vmm.machine.first_mfn, vmm.machine.count, roots, gvas,
                    vcpus=vmm.nr_vcpus, roles=tuple(sorted(roles)))


def violations(vmm: Vmm, u: Universe) -> list[Violation]:
    it = _interpreter(u)
    st = abstract_state(vmm, gvas=list(u.gvas), roots=list(u.roots))
    flags = st["vms"]
    # Ghost state (the TLB, the guest's access history) is the spec's own: judged by the harness,
    # which tracks it from the spec's actions, never on an implementation's state alone.
    ghostly = _ghostly()
    return [v for v in it.check(to_spec_state(it, u, st, flags)) if v.invariant not in ghostly]
