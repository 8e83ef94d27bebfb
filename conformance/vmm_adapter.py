"""The adapter for the bundled VMM (impl/): the only module of conformance/ that imports impl.

The guest is played here, on the harness's layout convention (scope.guest_tables): root r (a gfn)
is the PML4, then at consecutive gfns one PDPT per 512 GiB region, one PD per 1 GiB region and one
PT per 2 MiB region the configuration's gvas touch. `guest_map` writes the leaf (and the upper
entries it needs) as the guest's own stores, which the VMM traps when the table is shadowed (with
unsync on, a leaf table that only leaf sps shadow is unsynced by the first: no trap from then on).
Page-table edits are reported as guest writes so the ideal machine makes them too.

Each operation runs on the vCPU it names (c): the VMM runs every vCPU of a VM on a CPU of its own,
and keys its shadow by role (the paging-mode bits of `set_mode`), so its events and read-back name
the vCPU and the role themselves.
"""

from __future__ import annotations

import os
from typing import Any

from dmmcheck.impl import x86
from dmmcheck.impl.abstract import Abstraction
from dmmcheck.impl.vmm import BEYOND_MEMORY, OutOfMemory, Vmm, min_shadow_pages
from dmmcheck.impl.walker import (
    walk,  # the shadow's walk as the CPU does it (a mutant may replace the VMM's)
)
from dmmcheck.impl.x86 import Access

from .adapter import (
    AccessResult,
    Bounds,
    Capabilities,
    Config,
    Observation,
    Operation,
    role_bits,
)
from .mutants import MUTANTS, apply_mutant
from .scope import guest_tables, table_for

UPPER = x86.P | x86.RW | x86.US | x86.A
ACCESS_OPS = ("shadow_hit", "tlb_hit", "guest_walk", "guest_fault")
OPERATIONS = frozenset(ACCESS_OPS + (
    "vm_create", "vm_destroy", "cr3_load", "set_mode", "guest_map", "guest_unmap", "invlpg",
    "demand_page", "swap_in", "oom_injected", "swap_out", "swap_io_error", "share_merge", "cow_break",
    "balloon_inflate", "balloon_inflate_unmapped", "balloon_inflate_swapped", "balloon_deflate",
    "pool_grow", "pool_shrink",
    "gpte_write", "share_scan",  # not spec actions: the guest's raw edits, the scanner
))


# Campaigns vary each test case's scope up to this: a third VM, three roots, gvas over three page
# tables and past the VMM's page-by-page flush limit, scarce machine pages, a budget, few slots; two
# vCPUs per VM.
SCOPE = Bounds(vms=3, gfns=24, mfns=48, slots=4, roots=3, gvas=16, regions=3, budget=True, vcpus=2,
               shadow_pages=min_shadow_pages(2))


class BundledVmm:
    """Adapter over dmmcheck.impl.vmm.Vmm, with unsync sps on: the default of `dmm fuzz` and
    `dmm mutants`, since it is the VMM with the most to get wrong (BundledVmmSync: off)."""

    name = "dmmcheck.conformance.vmm_adapter:BundledVmm"
    unsync = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # a subclass (a user's variant, a seeded bug) reports itself as MODULE:ATTR, not as this class
        super().__init_subclass__(**kwargs)
        cls.name = f"{cls.__module__}:{cls.__qualname__}"

    def __init__(self) -> None:
        self.vmm: Vmm | None = None
        self.abstraction: Abstraction | None = None
        self.config = Config()
        self.tables: dict[int, dict[tuple[int, int], int]] = {}  # root -> its tables' gfns

    def capabilities(self) -> Capabilities:
        return Capabilities(OPERATIONS, events=True, guest_memory=True, mutants=tuple(MUTANTS), scope=SCOPE)

    def reset(self, config: Config) -> None:
        if config.beyond_memory not in BEYOND_MEMORY:  # refused before anything changes
            raise ValueError(f"the bundled VMM knows the beyond-memory conventions {', '.join(BEYOND_MEMORY)}, "
                             f"not {config.beyond_memory!r}")
        if self.vmm is not None and self.vmm.policy.swap is not None:
            self.vmm.policy.swap.close()
        if not 1 <= config.vcpus <= SCOPE.vcpus:
            raise ValueError(f"the bundled VMM runs 1 to {SCOPE.vcpus} vCPUs per VM, not {config.vcpus}")
        self.config = config
        self.tables = {r: guest_tables(r, config.gvas) for r in config.roots}
        _check_layout(config, self.tables)
        # the CPUs of the last run, reused: a Unicorn instance costs more than a test case's steps
        cpus = self.vmm.cpus if self.vmm is not None else None
        self.vmm = Vmm(config.mfns, 160, swap_slots=config.slots, swap_sync=False, budget=config.budget, quota=config.quota,
                       cpu=cpus, beyond_memory=config.beyond_memory, vcpus=config.vcpus, unsync=self.unsync,
                       shadow_pages=config.shadow_pages)
        self.vmm.events = []
        self.abstraction = Abstraction(self.vmm)
        apply_mutant(self.vmm, config.mutant or os.environ.get("DMM_MUTANT"))

    # ---------------------------------------------------------------- steps
    def step(self, op: Operation) -> Observation:
        assert self.vmm is not None, "reset first"
        vmm, a = self.vmm, op.args
        vmm.events = []
        obs = Observation()
        name = op.action
        vm = vmm.vms.get(a["v"]) if "v" in a else None
        try:
            if name == "vm_create":
                vmm.create_vm(self.config.gfns, a["v"])
            elif name == "vm_destroy":
                vmm.destroy_vm(vm)
            elif name == "cr3_load":
                vmm.load_cr3(vm, a["r"], a["c"])
            elif name == "set_mode":
                bits = role_bits(a["o"])
                modes = {b: b in bits for b in ("wp", "nxe", "smep", "smap")}
                vmm.set_controls(vm, vcpu=a["c"], **modes)  # type: ignore[arg-type]
            elif name == "guest_map":
                leaf = (a["g"] << x86.PAGE_SHIFT) | x86.P | (x86.RW if a["w"] else 0) | (x86.US if a["u"] else 0) \
                    | (x86.XD if a["nx"] else 0) | (x86.A if a["a"] else 0) | (x86.D if a["d"] else 0)
                self._edit(vm, a["r"], a["x"], 1, leaf, obs)
            elif name == "guest_unmap":
                self._edit(vm, a["r"], a["x"], 1, 0, obs)
            elif name == "gpte_write":
                self._edit(vm, a["r"], a["x"], a["level"], (a["g"] << x86.PAGE_SHIFT) | a["bits"], obs)
            elif name in ACCESS_OPS:
                obs.access = self._access(vm, a, obs)
            elif name == "invlpg":
                vmm.invlpg(vm, a["x"], a["c"])
            elif name in ("demand_page", "swap_in"):
                vmm.gfn_mfn(vm, a["g"])
            elif name == "oom_injected":
                vmm.policy.fail_next_allocation = True
                vmm.gfn_mfn(vm, a["g"])
            elif name in ("swap_out", "swap_io_error"):
                if name == "swap_io_error" and vmm.policy.swap is not None:
                    vmm.policy.swap.inject("io")
                vmm.policy.swap_out(vm, a["g"])
                if vmm.policy.swap is not None:
                    vmm.policy.swap.inject(None)
            elif name == "share_merge":
                vmm.policy.share_pair(vmm.vms[a["v1"]], a["g1"], vmm.vms[a["v2"]], a["g2"])
            elif name == "share_scan":
                vmm.policy.scan()
            elif name == "cow_break":
                data = a.get("value", 0).to_bytes(8, "little")  # a bmc trace names no value
                vmm.gpa_write(vm, a["g"] << x86.PAGE_SHIFT, data)
                obs.guest_writes.append((a["v"], a["g"] << x86.PAGE_SHIFT, data))
            elif name.startswith("balloon_inflate"):
                vmm.policy.balloon_inflate(vm, a["g"])
            elif name == "balloon_deflate":
                vmm.policy.balloon_deflate(vm, a["g"])
            elif name == "pool_grow":
                vmm.policy.pool_grow(vm)
            elif name == "pool_shrink":
                vmm.policy.pool_shrink(vm)
            else:
                raise ValueError(f"unknown operation {name!r}")
        except OutOfMemory as e:
            obs.note = f"out of memory: {e}"
        obs.events = vmm.events
        vmm.events = []
        return obs

    def _edit(self, vm: Any, root: int, gva: int, level: int, entry: int, obs: Observation) -> None:
        """The guest writes one entry on gva's path in root's tables (and the upper entries above it
        that are not there yet). Each store that happened is reported."""
        tables = {lvl: table_for(self.tables[root], gva, lvl) for lvl in (4, 3, 2, 1)}
        for lvl in (4, 3, 2, 1):
            table = tables[lvl]
            gpa = (table << x86.PAGE_SHIFT) + 8 * x86.index(gva, lvl)
            value = entry if lvl == level else tables[lvl - 1] << x86.PAGE_SHIFT | UPPER
            current = int.from_bytes(self.vmm.peek(vm, gpa, 8), "little")  # type: ignore[union-attr]
            if lvl == level or not current & x86.P:
                if current != value:
                    data = value.to_bytes(8, "little")
                    self.vmm.guest_store(vm, gpa, data)  # type: ignore[union-attr]
                    obs.guest_writes.append((vm.id, gpa, data))
            if lvl == level:
                return

    def _access(self, vm: Any, a: dict[str, Any], obs: Observation) -> AccessResult:
        acc = Access(a["a"])
        r = self.vmm.access(vm, a["x"] + a.get("offset", 0), acc, user=a["u"], value=a.get("value", 0),  # type: ignore[union-attr]
                            size=a.get("size", 8), vcpu=a["c"])
        return AccessResult(r.fault, r.error_code, r.cr2, r.value, r.oom, r.gp)

    # ---------------------------------------------------------------- reading back
    def abstract_state(self) -> dict[str, Any]:
        return self.abstract_state_parts(frozenset({"shadow", "guest"}))

    def abstract_state_parts(self, parts: frozenset[str]) -> dict[str, Any]:
        """abstract_state() without the costly parts not in `parts` ("shadow": spte, rmap,
        spte_at; "guest": gmap, g_tables): the harness asks only for what a step's events say may
        have changed (docs/conformance.md, "Read-back")."""
        assert self.vmm is not None and self.abstraction is not None
        st = self.abstraction.state(list(self.config.gvas), list(self.config.roots), parts)
        gone = {"live": False, "vcpus": [{"cr3_gfn": None, "role": None}] * self.config.vcpus}
        st["vms"] = {v: st["vms"].get(v, gone) for v in range(self.config.vms)}
        return st

    def shadow_walk(self, v: int, root: int, gva: int) -> list[tuple[int, int, int]] | None:
        """The shadow tables' walk of gva under VM v's shadow root for guest root `root` in the role
        vCPU 0 runs in, as (level, machine address, entry) top-down; None when there is no such
        shadow root. Optional for an adapter: the HTML report draws it beside the guest's walk."""
        assert self.vmm is not None
        vm = self.vmm.vms.get(v)
        sp = self.vmm.mmu.roots.get((v, root, vm.vcpus[0].paging)) if vm is not None else None
        if sp is None:
            return None
        probe = x86.Mode(user=False, wp=False, nxe=True)  # any present translation, no A/D written
        return walk(self.vmm.cpu.read64, None, sp.paddr, gva, Access.READ, probe, set_ad=False).entries

    def read_guest(self, vm: int, gpa: int, n: int) -> bytes:
        assert self.vmm is not None
        return self.vmm.peek(self.vmm.vms[vm], gpa, n)

    def close(self) -> None:
        if self.vmm is not None and self.vmm.policy.swap is not None:
            self.vmm.policy.swap.close()


class BundledVmmSync(BundledVmm):
    """The bundled VMM with unsync sps off: every guest table it shadows stays write-protected, so
    every guest store to one traps and is emulated."""

    unsync = False


def _check_layout(config: Config, tables: dict[int, dict[tuple[int, int], int]]) -> None:
    """What this adapter cannot lay out: a ValueError the harness shows as a refused configuration."""
    for x in config.gvas:
        if x86.index(x, 4) == 511:
            raise ValueError(f"gva {x:#x}: the top 512 GiB (PML4 entry 511) hold the bundled VMM's own code page")
    owner: dict[int, int] = {}
    for r, ts in tables.items():
        for g in ts.values():
            if g >= config.gfns:
                raise ValueError(f"root {r}'s page tables need gfns {r}..{max(ts.values())}, beyond the "
                                 f"{config.gfns} gfns of guest memory")
            if owner.setdefault(g, r) != r:
                raise ValueError(f"roots {owner[g]} and {r} would share gfn {g} for their page tables "
                                 f"(each root needs {len(ts)} consecutive gfns for these gvas)")
