"""The spec's own invariants on the bundled VMM: its abstract_state() mapped to a spec state and
judged by the interpreter. Tests use this instead of restating an invariant in Python."""

from __future__ import annotations

from functools import cache

from dmmcheck.conformance.abstraction import Universe, interpreter_for, to_spec_state
from dmmcheck.conformance.vmm_adapter import RoleShim
from dmmcheck.impl.abstract import abstract_state
from dmmcheck.impl.vmm import Vmm
from dmmcheck.model.interp import Interpreter, Violation
from dmmcheck.spec import load


@cache
def _interpreter(u: Universe) -> Interpreter:
    return interpreter_for(load(), u)


def universe(vmm: Vmm, nr_gfns: int, roots: tuple[int, ...], gvas: tuple[int, ...]) -> Universe:
    return Universe(tuple(sorted(vmm.vms)), nr_gfns, vmm.machine.first_mfn, vmm.machine.count, roots, gvas)


def violations(vmm: Vmm, u: Universe) -> list[Violation]:
    it = _interpreter(u)
    # The VMM's one vCPU per VM runs in the role of its control bits (as the adapter's shim says); of
    # those the spec reads only WP, so the universe's two roles, with WP and without, stand for all.
    with_wp, without = u.roles
    roles: dict[int, str | None] = {v.id: with_wp if v.wp else without for v in vmm.vms.values()}
    st = RoleShim.state(abstract_state(vmm, gvas=list(u.gvas), roots=list(u.roots)), vmm, u.vms, roles)
    flags = st["vms"]
    # Ghost state (the TLB, the guest's access history) is the spec's own: judged by the harness,
    # which tracks it from the spec's actions, never on an implementation's state alone.
    ghostly = load().ghostly_invariants()
    return [v for v in it.check(to_spec_state(it, u, st, flags)) if v.invariant not in ghostly]
