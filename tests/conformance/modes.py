"""The guest's first paging-mode load, for operation sequences written before the spec had modes.

A vCPU has no paging mode (the spec's mode(v, c) is none) until the guest loads one with set_mode;
until then no access of it can be judged. `moded` puts a set_mode after the first CR3 load of each
vCPU that has none yet."""

from __future__ import annotations

from typing import Any

from dmmcheck.conformance.adapter import Config, Operation

ROLE = Config().roles[0]  # "wp+nxe": CR0.WP set, as the guest's reset value
# The operations that run on a vCPU (they name it: c).
ON_A_VCPU = {"cr3_load", "set_mode", "invlpg", "shadow_hit", "tlb_hit", "guest_walk", "guest_fault"}


def moded(ops: list[Operation], role: str = ROLE) -> list[Operation]:
    """`ops` with set_mode(role) after the first cr3_load of each (vm, vCPU) that loads no mode
    itself, before it or right after it."""
    ops = [on_vcpu0(o) for o in ops]
    out: list[Operation] = []
    done: set[tuple[Any, Any]] = set()
    for i, o in enumerate(ops):
        key = (o.args.get("v"), o.args.get("c", 0))
        if o.action == "vm_destroy":
            done = {k for k in done if k[0] != key[0]}
        if o.action == "set_mode":
            done.add(key)
        out.append(o)
        after = ops[i + 1] if i + 1 < len(ops) else None
        loads = after is not None and after.action == "set_mode" and (after.args.get("v"), after.args.get("c")) == key
        if o.action == "cr3_load" and key not in done and not loads:
            done.add(key)
            out.append(Operation("set_mode", {"v": key[0], "c": key[1], "o": role}))
    return out


def on_vcpu0(o: Operation) -> Operation:
    """An operation that runs on a vCPU and names none, on vCPU 0 (as every one ran before vCPUs)."""
    if o.action in ON_A_VCPU and "c" not in o.args:
        return Operation(o.action, {**o.args, "c": 0})
    return o
