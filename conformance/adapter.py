"""The adapter API: how the harness drives a VMM implementation and reads it back.

An adapter wraps one VMM. The harness calls `reset(config)` once per test case, then `step(op)`
for each operation, and `abstract_state()` after every step. Everything crosses this boundary in
implementation terms (VM ids, guest root gfns, gva addresses, gfns, mfns, slot numbers); the
harness owns the mapping to spec elements (conformance/abstraction.py). docs/writing-an-adapter.md
is the guide for a third party.

- An Operation is named as the spec action it stands for (`swap_out`, `guest_map`, `shadow_hit`,
  ...) with that action's *input* parameters; what the implementation chooses (the mfn it
  allocated, the slot it used) it reports back in the Observation's events.
- Events are the spec actions the implementation performed, in order, with implementation values:
  ("demand_page", {"v": 0, "g": 5, "m": 17}). Two names are not spec actions: "hit" (an access the
  hardware served without the VMM; the spec calls it shadow_hit or tlb_hit) and "guest_write" (the
  guest's memory changed through the VMM: an emulated store).
- An Observation also carries what the guest saw of an access (`AccessResult`) — judged against
  the ideal machine — and, for reads of guest memory, `data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Event = tuple[str, dict[str, Any]]
# What an entry naming memory beyond the VM does (Config.beyond_memory; docs/conformance.md "Fair
# oracles"): "fault" — the access faults with P|RSVD; "ones" — unbacked memory as on bare metal
# (reads all-ones, so a table there faults RSVD; a leaf's frame there reads all-ones, drops stores);
# "zeros" — memory that reads as zeros and ignores writes (a table there holds not-present entries,
# so the walk faults not present; a leaf's frame there reads zeros, drops stores), as KVM's
# software walker treats a table in no memslot. The harness's one list: the ideal machine, the
# config file and the wire schema follow it.
BEYOND_MEMORY = ("fault", "ones", "zeros")
# The paging-mode bits that make a shadow page's role (the spec's sort `role`), in the order a role's
# name lists them: "wp+nxe" is CR0.WP and EFER.NXE set, CR4.SMEP and CR4.SMAP clear; "-" none.
ROLE_BITS = ("wp", "smep", "smap", "nxe")


def role_bits(name: str) -> frozenset[str]:
    """The bits a role name sets; a ValueError says what is wrong with a malformed one."""
    bits = [] if name == "-" else name.split("+")
    if not bits and name != "-" or any(b not in ROLE_BITS for b in bits) or len(set(bits)) != len(bits):
        raise ValueError(f"role {name!r}: a role is its set bits among {', '.join(ROLE_BITS)} joined by '+' "
                         "in that order, or '-' for none")
    return frozenset(bits)


def role_name(bits: Any) -> str:
    """The canonical name of a set of role bits (the inverse of role_bits)."""
    return "+".join(b for b in ROLE_BITS if b in bits) or "-"


@dataclass(frozen=True)
class Config:
    """What one test case runs on. Sizes are the spec's sort sizes; the adapter lays the guest out
    so that these elements exist (vms 0..vms-1, gfns 0..gfns-1, `gvas` and `roots` as given)."""

    vms: int = 2
    gfns: int = 16
    mfns: int = 24
    slots: int = 4
    roots: tuple[int, ...] = (0, 5)  # guest root gfns
    # two page tables' worth (two 2 MiB regions): a page the guest maps as data under one can
    # become the page table of the other
    gvas: tuple[int, ...] = tuple(base + 0x1000 * i for base in (0x400000, 0x600000) for i in range(4))
    budget: int | None = None  # pages all VM pools may hold together (None: every mfn)
    quota: int | None = None  # pages one VM's pools (active and idle) may hold (None: every mfn)
    mutant: str | None = None  # a seeded bug to switch on (dmm mutants); None: the real VMM
    # What a guest entry naming a gfn beyond the VM's memory does (the architecture leaves it to
    # the platform; docs/conformance.md "Fair oracles"): "fault" (#PF with P|RSVD), "ones"
    # (unbacked memory: reads all-ones, writes dropped, as on bare metal) or "zeros" (reads zeros,
    # writes dropped: a table there is not present).
    beyond_memory: str = "fault"
    vcpus: int = 2  # vCPUs per VM (the spec's sort vcpu)
    # The paging modes the guest's vCPUs switch between (the spec's sort role, in this order), by
    # name (ROLE_BITS): with CR0.WP and without, NXE on.
    roles: tuple[str, ...] = ("wp+nxe", "nxe")
    # The most shadow pages the VMM may hold at once (None: its own default). At the limit it must
    # reclaim some (zap them, owe the flushes) to build more, as KVM does under `nr_mmu_pages` and
    # Xen under its shadow pool size: the path where a freed shadow page's frame, or the flush its
    # zap owes, can go missing. Not a spec size: the spec sees only the zaps.
    shadow_pages: int | None = None

    def __post_init__(self) -> None:
        # Checked where every configuration is made (a trace header, a config file, a scope drawn):
        # the oracles have no rule for another value.
        if self.beyond_memory not in BEYOND_MEMORY:
            raise ValueError(f"beyond_memory must be one of {', '.join(map(repr, BEYOND_MEMORY))}, "
                             f"not {self.beyond_memory!r}")
        if self.vcpus < 1:
            raise ValueError(f"vcpus must be at least 1, not {self.vcpus}")
        if not self.roles:
            raise ValueError("roles must name at least one paging mode")
        canonical = [role_name(role_bits(r)) for r in self.roles]
        if canonical != list(self.roles):
            raise ValueError(f"roles {list(self.roles)}: write each in canonical form {canonical}")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"roles {list(self.roles)}: each paging mode once")
        if self.shadow_pages is not None and self.shadow_pages < 1:
            raise ValueError(f"shadow_pages must be at least 1 (or none), not {self.shadow_pages}")

    def fixed(self) -> dict[str, tuple[bool, ...]]:
        """The spec's immutable symbols this configuration decides: which roles have CR0.WP."""
        return {"role_wp": tuple("wp" in role_bits(r) for r in self.roles)}

    def sizes(self) -> dict[str, int]:
        """The spec's sort sizes and its parameters, the budget and the quota (none: every mfn)."""
        return {"vm": self.vms, "gfn": self.gfns, "mfn": self.mfns, "root": len(self.roots),
                "gva": len(self.gvas), "slot": self.slots, "vcpu": self.vcpus, "role": len(self.roles),
                "budget": self.mfns if self.budget is None else self.budget,
                "quota": self.mfns if self.quota is None else self.quota}

    def to_json(self) -> dict[str, Any]:
        out = {"vms": self.vms, "gfns": self.gfns, "mfns": self.mfns, "slots": self.slots,
               "roots": list(self.roots), "gvas": list(self.gvas), "budget": self.budget, "quota": self.quota,
               "mutant": self.mutant,
               "beyond_memory": self.beyond_memory, "vcpus": self.vcpus, "roles": list(self.roles)}
        if self.shadow_pages is not None:  # only when set: an adapter that takes no limit never sees the key
            out["shadow_pages"] = self.shadow_pages
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Config":
        return Config(vms=d["vms"], gfns=d["gfns"], mfns=d["mfns"], slots=d["slots"], roots=tuple(d["roots"]),
                      gvas=tuple(d["gvas"]), budget=d.get("budget"), quota=d.get("quota"),
                      mutant=d.get("mutant"),
                      beyond_memory=d.get("beyond_memory", "fault"), vcpus=d.get("vcpus", 1),
                      roles=tuple(d.get("roles", ("wp+nxe", "nxe"))), shadow_pages=d.get("shadow_pages"))


@dataclass(frozen=True)
class Operation:
    """One step asked of the implementation: a spec action's name and its input arguments, in
    implementation values (`access`: "read" | "write" | "fetch"; plus `value` for stores)."""

    action: str
    args: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "args": self.args}


@dataclass
class AccessResult:
    """What the guest saw of one access."""

    fault: bool
    error_code: int = 0
    cr2: int | None = None
    value: int | None = None  # the value a read returned
    oom: bool = False  # the VMM could not serve it: no machine page
    gp: bool = False  # the access raised #GP (a non-canonical gva), not #PF: no error code, no CR2
    # The adapter could not perform this access safely and did nothing (e.g. a fetch whose
    # instruction could write memory the adapter cannot predict): not judged, counted as skipped.
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"fault": self.fault, "error_code": self.error_code, "cr2": self.cr2, "value": self.value,
                "oom": self.oom, "gp": self.gp, "skipped": self.skipped}


@dataclass
class Observation:
    events: list[Event] = field(default_factory=list)
    access: AccessResult | None = None
    # What the guest itself wrote to its memory for this operation (page-table edits, a store the
    # operation made), as (vm, gpa, bytes): the ideal machine makes the same writes.
    guest_writes: list[tuple[int, int, bytes]] = field(default_factory=list)
    note: str = ""  # free text for the trace (e.g. "refused: over budget")


@dataclass(frozen=True)
class Bounds:
    """The largest scope an adapter accepts; campaigns vary the configuration within it."""

    vms: int = 2
    gfns: int = 16
    mfns: int = 24
    slots: int = 4
    roots: int = 2
    gvas: int = 8
    regions: int = 2  # 2 MiB regions the gvas may span (each a page table per root)
    budget: bool = True  # a budget may be set
    quota: bool = True  # a per-VM quota may be set
    vcpus: int = 1  # vCPUs per VM (an adapter that runs several says how many)
    # The fewest shadow pages a Config.shadow_pages limit may set, with `vcpus` vCPUs; 0: the
    # adapter takes no limit (campaigns never set one).
    shadow_pages: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What the adapter can do. `operations`: the spec actions it accepts as operations (plus any
    extra, non-spec operations such as raw page-table edits). `events`: it reports the spec actions
    it performs (required for refinement checking). `guest_memory`: it can read guest-physical
    memory without side effects (required for the observation oracle's A/D and data checks)."""

    operations: frozenset[str]
    events: bool = True
    guest_memory: bool = True
    mutants: tuple[str, ...] = ()
    # The scopes it accepts: campaigns vary each test case's configuration within them. None: only
    # the configuration the campaign was started with.
    scope: Bounds | None = None
    # How much of itself the VMM shows (LEVELS): "full" (events, abstract state, guest memory),
    # "state" (abstract state and guest memory), "black-box" (accesses and guest memory only).
    level: str = "full"


LEVELS = ("full", "state", "black-box")


@runtime_checkable
class Adapter(Protocol):
    name: str

    def capabilities(self) -> Capabilities: ...

    def reset(self, config: Config) -> None: ...

    def step(self, op: Operation) -> Observation: ...

    def abstract_state(self) -> dict[str, Any]:
        """The DMM state in implementation terms (docs/writing-an-adapter.md lists the keys)."""
        ...

    def read_guest(self, vm: int, gpa: int, n: int) -> bytes:
        """Guest-physical bytes as the guest would read them, changing nothing."""
        ...


class AdapterError(ValueError):
    """The adapter did something the harness cannot accept (wrong shape, unknown event)."""
