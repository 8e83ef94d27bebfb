"""Operation sequences several test modules drive the harness with (implementation values, the
default configuration's gvas)."""

from __future__ import annotations

from typing import Any

from dmmcheck.conformance.adapter import Config, Operation

X = Config().gvas


def op(action: str, **args: Any) -> Operation:
    return Operation(action, args)


# A guest whose vCPU 0 loads CR3 and then its paging mode (a vCPU has none before its first load),
# maps gva X[0] to data gfn 12 and writes it through a hidden fault (an spte exists afterwards), then
# reads it back through the shadow.
SETUP = [op("vm_create", v=0), op("cr3_load", v=0, c=0, r=0), op("set_mode", v=0, c=0, o="wp+nxe"),
         op("guest_map", v=0, r=0, x=X[0], g=12, w=True, u=True, nx=False, a=False, d=False),
         op("guest_walk", v=0, c=0, x=X[0], a="write", u=False, value=5),
         op("shadow_hit", v=0, c=0, x=X[0], a="read", u=False)]
