"""Rewrite dmm-trace/1 fuzz traces recorded before VMs had vCPUs and paging modes had roles.

usage: tools/vcpu_traces.py TRACE.jsonl...   (each rewritten in place)

An old trace's VM had one vCPU whose paging mode was CR0.WP=1, EFER.NXE=1 from reset, changed by
set_cr0_wp {v, b} and set_cr4 {v, nxe, smep, smap}. The new one names vCPU 0 (c) in cr3_load,
accesses and invlpg; the guest loads its mode with set_mode {v, c, o} (a role name), and a vCPU has
no mode until it does. So: a set_mode to the reset mode right after each vm_create, each
set_cr0_wp / set_cr4 a set_mode to the mode it makes, and the header's configuration one vCPU and
the roles the trace uses (the default two first). The header's failure step moves with the steps
inserted before it; the recorded events and spec steps of each step are left as they were (replay
judges anew).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmmcheck.conformance.adapter import Config, role_name

RESET = {"wp": True, "smep": False, "smap": False, "nxe": True}  # an old VM's mode from reset
WITH_C = {"cr3_load", "invlpg", "shadow_hit", "tlb_hit", "guest_walk", "guest_fault"}


def convert(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The header and steps of an old trace, in the new terms (a trace already new is returned as is)."""
    header, steps = rows[0], rows[1:]
    config = header.get("config") or {}
    if "vcpus" in config or header.get("values") != "impl":
        return rows
    modes: dict[int, dict[str, bool]] = {}
    roles = list(Config().roles)
    out: list[dict[str, Any]] = []
    moved = {}  # old step index -> new
    for old, row in enumerate(steps):
        action, args = row["action"], dict(row["args"])
        if action in ("set_cr0_wp", "set_cr4"):
            mode = modes.setdefault(args["v"], dict(RESET))
            mode.update({"wp": bool(args["b"])} if action == "set_cr0_wp" else
                        {k: bool(args[k]) for k in ("nxe", "smep", "smap")})
            action, args = "set_mode", {"v": args["v"], "c": 0, "o": _role(mode, roles)}
        elif action in WITH_C:
            args["c"] = 0
        moved[old] = len(out)
        out.append(dict(row, action=action, args=args))
        if action == "vm_create":
            modes[args["v"]] = dict(RESET)
            out.append({"action": "set_mode", "args": {"v": args["v"], "c": 0, "o": _role(RESET, roles)},
                        "impl": [], "spec": [], "access": None, "note": "inserted: the mode from reset"})
    for i, row in enumerate(out):
        row["step"] = i
    header = dict(header, config=dict(config, vcpus=1, roles=roles))
    if isinstance(header.get("failure"), dict) and header["failure"].get("step") in moved:
        header["failure"] = dict(header["failure"], step=moved[header["failure"]["step"]])
    return [header] + out


def _role(mode: dict[str, bool], roles: list[str]) -> str:
    name = role_name({b for b, on in mode.items() if on})
    if name not in roles:
        roles.append(name)
    return name


def main(paths: list[str]) -> int:
    for p in paths:
        path = Path(p)
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        new = convert(rows)
        if new is not rows:
            path.write_text("".join(json.dumps(r) + "\n" for r in new))
            print(f"{path}: {len(rows) - 1} steps -> {len(new) - 1}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
