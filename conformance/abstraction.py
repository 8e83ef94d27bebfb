"""From an implementation's abstract_state() to a state of the spec, in the spec's own terms.

The harness never restates an invariant: it builds the spec state this module returns and lets the
interpreter evaluate the spec's formulas on it. The mapping is explicit about its universe:

- vm: the implementation's VM ids, in order; gfn: 0..nr_gfns-1 of each VM (one size for all);
  mfn: the DMM-managed machine frames, in order; root: the guest root gfns named in the config;
  gva: a window of guest-virtual pages named in the config; slot: the swap device's slots; vcpu:
  0..vcpus-1 of each VM; role: the paging modes the config names, by name (which have CR0.WP, the
  spec's immutable role_wp, is fixed by the config like the budget).
- What the implementation cannot show (the hardware TLB) is empty here: the TLB becomes ghost state
  the harness tracks from the spec's own actions; `flush_pending` is the VMM's own record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dmmcheck.model.interp import Interpreter
from dmmcheck.model.state import State

from .adapter import Config
from .binding import (ACTIVE, BALLOONED, BUDGET, CUR_ROOT, FLUSH_PENDING, G_TABLE, G_UPPER, GFN, GMAP, GPT_PAGE,
                      GVA, IDLE, LIVE, MFN, MODE, OWNER, P2M, PSTATUS, QUOTA, REFCOUNT, RMAP, ROLE, ROLE_WP, ROOT,
                      SLOT, SLOT_USED, SPTE, STATUS, SWAP_SLOT, VCPU, VM, VMM_POOL, WRITE_PROTECTED)


class AbstractionError(ValueError):
    """The implementation's state names something the spec state cannot hold (an mfn outside the
    DMM pages): a refinement failure, reported as such."""


@dataclass(frozen=True)
class Universe:
    """Which implementation values stand for the spec's sort elements."""

    vms: tuple[int, ...]
    nr_gfns: int
    first_mfn: int
    nr_mfns: int
    roots: tuple[int, ...]  # guest root gfns
    gvas: tuple[int, ...]  # guest-virtual page addresses
    slots: int = 1
    budget: int | None = None  # None: every mfn
    quota: int | None = None  # None: every mfn
    vcpus: int = 1
    roles: tuple[str, ...] = Config.roles  # paging modes by name, in the spec's role order

    def sizes(self) -> dict[str, int]:
        return {VM: len(self.vms), GFN: self.nr_gfns, MFN: self.nr_mfns, ROOT: len(self.roots),
                GVA: len(self.gvas), SLOT: self.slots, VCPU: self.vcpus, ROLE: len(self.roles),
                BUDGET: self.nr_mfns if self.budget is None else self.budget,
                QUOTA: self.nr_mfns if self.quota is None else self.quota}

    def fixed(self) -> dict[str, tuple[bool, ...]]:
        """role_wp, as the roles' names say (Config.fixed)."""
        return {ROLE_WP: tuple("wp" in role.split("+") for role in self.roles)}

    def role_ix(self, name: Any) -> int:
        """The spec's role for a role name; AbstractionError for a name the configuration lacks."""
        try:
            return self.roles.index(name)
        except ValueError:
            raise AbstractionError(f"role {name!r} is not one of the configuration's roles "
                                   f"{', '.join(self.roles)}") from None

    @staticmethod
    def of(config: Config, first_mfn: int = 1) -> Universe:
        return Universe(tuple(range(config.vms)), config.gfns, first_mfn, config.mfns, config.roots, config.gvas,
                        config.slots, config.budget, config.quota, config.vcpus, config.roles)


def interpreter_for(spec: Any, u: Universe) -> Interpreter:
    return Interpreter(spec, u.sizes(), fixed=u.fixed())


# The costly parts of abstract_state() an adapter may leave out of a read (abstract_state_parts):
# the keys of each, and the spec symbols they give. Everything else is read at every step.
PARTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "shadow": (("spte", "rmap", "spte_at"), SPTE + (RMAP,)),
    "guest": (("gmap", "g_tables", "g_uppers"), GMAP + (G_TABLE, G_UPPER)),
}
ALL_PARTS = frozenset(PARTS)
# Each group of spec symbols is built from its own keys of abstract_state() alone (and "mfns"): a
# group whose keys hold what they held when `previous` was judged is `previous`'s, unbuilt.
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "vcpus": (("vms", "flush_pending"), (LIVE, CUR_ROOT, MODE, FLUSH_PENDING)),
    "frames": (("pool", "descriptor"), (VMM_POOL, STATUS, REFCOUNT, OWNER, ACTIVE, IDLE)),
    "p2m": (("p2m",), (P2M,)),
    "swap": (("swap", "slots_used"), (SWAP_SLOT, SLOT_USED)),
    "ballooned": (("ballooned",), (BALLOONED,)),
    "protection": (("write_protected", "gpt_pages"), (WRITE_PROTECTED, GPT_PAGE)),
    **PARTS,
}
# abstract_state()'s pool of a machine page ("active:VM", "idle:VM") -> the VM pool symbol it is in
_POOLS = {"active": ACTIVE, "idle": IDLE}


def to_spec_state(it: Interpreter, u: Universe, st: dict[str, Any], vm_flags: dict[int, dict[str, Any]],
                  parts: frozenset[str] = ALL_PARTS, previous: State | None = None,
                  same: frozenset[str] = frozenset(), ghost: tuple[str, ...] = ()) -> State:
    """The spec state the implementation is in. `vm_flags[vm]`: live, and per vCPU (vcpus) its
    cr3_gfn and role. A part not in `parts` was not read, and a group (GROUPS) whose keys are all in
    `same` holds what it held: their symbols are `previous`'s (the same objects, which the oracle's
    comparisons and the incremental invariant check test first). The `ghost` symbols, which no
    implementation shows, are `previous`'s too (when there is one): the caller puts the spec's there."""
    U = it.u
    kept_groups = {g for g, (keys, _) in GROUPS.items() if g in PARTS and g not in parts or same.issuperset(keys)}
    kept = {name for g in kept_groups for name in GROUPS[g][1] if name in U.layout}
    if previous is not None:  # (the parameters and role bits are the scope's: previous has them)
        kept.update(ghost, U.params, U.fixed)
    if kept and previous is None:
        raise ValueError("a read without every part needs the previous state")
    b = _Build(it, u, st, kept)
    if "vcpus" not in kept_groups:
        b.vcpus(vm_flags)
    for g in ("frames", "p2m", "swap", "ballooned", "protection", "guest", "shadow"):
        if g not in kept_groups:
            getattr(b, g)()
    for name in U.params:  # the model's parameters (the budget, the quota) are the scope's, not the implementation's
        if name not in kept:
            b.values[name] = [U.param_value(name)]
    for name, fixed in U.fixed.items():  # so are the roles' bits (role_wp)
        if name not in kept:
            b.values[name] = list(fixed)
    return tuple(tuple(b.values[name]) if name not in kept else previous[lay.index]  # type: ignore[index]
                 for name, lay in U.layout.items())


class _Build:
    """One read-back's spec symbols, filled group by group (to_spec_state)."""

    def __init__(self, it: Interpreter, u: Universe, st: dict[str, Any], kept: set[str]) -> None:
        self.U, self.u, self.st = it.u, u, st
        self.vm_ix = {v: i for i, v in enumerate(u.vms)}
        self.root_ix = {r: i for i, r in enumerate(u.roots)}
        self.gva_ix = {x: i for i, x in enumerate(u.gvas)}
        self.status_ix = {n: i for i, n in enumerate(it.spec.enums[PSTATUS])}
        self.values: dict[str, list[Any]] = {}
        for name, lay in self.U.layout.items():
            if name not in kept:
                res = lay.symbol.result
                self.values[name] = [None if res.optional else (False if res.name == "bool" else 0)] * lay.size

    def put(self, name: str, args: tuple[int, ...], value: Any) -> None:
        self.values[name][self.U.index(name, args)] = value

    def mfn_ix(self, mfn: int) -> int:
        u = self.u
        i = mfn - u.first_mfn
        if not 0 <= i < u.nr_mfns:
            raise AbstractionError(f"mfn {mfn:#x} is not one of the {u.nr_mfns} DMM machine pages "
                                   f"[{u.first_mfn:#x}, {u.first_mfn + u.nr_mfns:#x})")
        return i

    def vcpus(self, vm_flags: dict[int, dict[str, Any]]) -> None:
        """live; per vCPU its CR3's root, its role, and whether the VMM owes it a flush."""
        u, put = self.u, self.put
        pending = {tuple(p) for p in self.st["flush_pending"]}  # (vm, vcpu) pairs (lists, over the wire)
        for v, flags in vm_flags.items():
            i = self.vm_ix[v]
            put(LIVE, (i,), flags["live"])
            cpus = flags.get("vcpus")
            if not isinstance(cpus, list) or len(cpus) != u.vcpus:
                raise AbstractionError(f"abstract_state()['vms'][{v}] lacks 'vcpus': a list of the {u.vcpus} "
                                       "configured vCPUs, each {'cr3_gfn', 'role'}")
            for c, cpu in enumerate(cpus):
                put(CUR_ROOT, (i, c), self.root_ix.get(cpu["cr3_gfn"]))
                put(MODE, (i, c), None if cpu["role"] is None else u.role_ix(cpu["role"]))
                put(FLUSH_PENDING, (i, c), (v, c) in pending)

    def frames(self) -> None:
        """Each machine page's pool and descriptor."""
        u, st, vm_ix = self.u, self.st, self.vm_ix
        pools, descs = st["pool"], st["descriptor"]
        vmm_pool, status_v, refcount_v, owner_v = (self.values[n] for n in (VMM_POOL, STATUS, REFCOUNT, OWNER))
        for m in range(u.nr_mfns):  # the hot loop: one-argument symbols index by m itself
            pool = pools.get(u.first_mfn + m, "vmm")
            status, refcount, owner = descs.get(u.first_mfn + m, ("free", 0, None))
            vmm_pool[m] = pool == "vmm"
            status_v[m] = self.status_ix[status]
            refcount_v[m] = refcount
            owner_v[m] = vm_ix.get(owner) if owner is not None else None
            kind, _, owner_id = pool.partition(":")
            if kind in _POOLS and int(owner_id) in vm_ix:
                self.put(_POOLS[kind], (vm_ix[int(owner_id)], m), True)

    def p2m(self) -> None:
        for (v, g), mfn in self.st["p2m"].items():
            if g < self.u.nr_gfns:
                self.put(P2M, (self.vm_ix[v], g), self.mfn_ix(mfn))

    def swap(self) -> None:
        u, st = self.u, self.st
        for (v, g), slot in st.get("swap", {}).items():
            if g < u.nr_gfns and slot < u.slots:
                self.put(SWAP_SLOT, (self.vm_ix[v], g), slot)
        if "slots_used" not in st:
            raise AbstractionError("abstract_state() lacks 'slots_used': the swap device's own list of the slots "
                                   "it holds (an empty list for a VMM without swap)")
        for slot in st["slots_used"]:
            if not 0 <= slot < u.slots:
                raise AbstractionError(f"slot {slot} is used, but the swap device has {u.slots} slots")
            self.put(SLOT_USED, (slot,), True)

    def ballooned(self) -> None:
        for v, g in self.st.get("ballooned", ()):
            if g < self.u.nr_gfns:
                self.put(BALLOONED, (self.vm_ix[v], g), True)

    def protection(self) -> None:
        st = self.st
        for v, g in st["write_protected"]:
            if g < self.u.nr_gfns:
                self.put(WRITE_PROTECTED, (self.vm_ix[v], g), True)
        for v, g in st.get("gpt_pages", st["write_protected"]):  # an adapter that unprotects lazily tells them apart
            if g < self.u.nr_gfns:
                self.put(GPT_PAGE, (self.vm_ix[v], g), True)

    def guest(self) -> None:
        """gmap and its rights, A and D; g_table: the guest's own walks."""
        U, u, st, values = self.U, self.u, self.st, self.values
        vm_ix, root_ix, gva_ix = self.vm_ix, self.root_ix, self.gva_ix
        for (v, r, x), (gfn, w, us, nx, a, d) in st["gmap"].items():
            if r in root_ix and x in gva_ix and gfn < u.nr_gfns:
                k = U.index(GMAP[0], (vm_ix[v], root_ix[r], gva_ix[x]))  # every (vm, root, gva) symbol: one layout
                for name, val in zip(GMAP, (gfn, w, us, nx, a, d)):
                    values[name][k] = val
        # optional: without them no walk's tables are known (walk_protected is vacuous, every table the
        # leaf's: an adapter that unsyncs gives g_uppers)
        for name, key in ((G_TABLE, "g_tables"), (G_UPPER, "g_uppers")):
            if name not in U.layout:
                continue
            for (v, r, x), tables in st.get(key, {}).items():
                if r in root_ix and x in gva_ix:
                    for t in tables:
                        if t < u.nr_gfns:
                            self.put(name, (vm_ix[v], root_ix[r], gva_ix[x], t), True)

    def shadow(self) -> None:
        """sptes and their rights; the rmap, judged against the leaf entry serving each spte."""
        U, u, st, values = self.U, self.u, self.st, self.values
        vm_ix, root_ix, gva_ix = self.vm_ix, self.root_ix, self.gva_ix
        for (v, r, o, x), (mfn, w, us, nx) in st["spte"].items():
            if r in root_ix and x in gva_ix:
                k = U.index(SPTE[0], (vm_ix[v], root_ix[r], u.role_ix(o), gva_ix[x]))
                for name, val in zip(SPTE, (self.mfn_ix(mfn), w, us, nx)):
                    values[name][k] = val
        spte_at = st.get("spte_at", {})
        for mfn, refs in st["rmap"].items():
            m = self.mfn_ix(mfn)
            for ref in refs:
                for v, r, o, x in spte_at.get(tuple(ref), ()):
                    if r in root_ix and x in gva_ix:
                        self.put(RMAP, (m, vm_ix[v], root_ix[r], u.role_ix(o), gva_ix[x]), True)
