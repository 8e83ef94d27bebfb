"""What the harness needs of a spec before it can judge an implementation against it.

The harness is spec-derived but DMM-bound: it draws operations by action name (the tables
below), reads the implementation's state back into the DMM spec's symbols (abstraction.py) and
infers the guest's page-table edits through `guest_path`. A spec it can judge is therefore the
bundled DMM spec or a variant of it (a mutated guard, an extra invariant, a ghost relation added):
every sort, every state symbol an implementation shows and every action must be there with the
bundled spec's signature (extra actions, symbols and invariants are the variant's own). Anything else
is refused up front with what it lacks, instead of failing deep inside a campaign with a missing key.

Every name of the DMM spec the harness spells — sorts, enums and their values, state symbols, and
the tables of actions that steer generation and judging — is declared here, once: the read-back
(abstraction.py), the generator (operations.py, fuzz.py), the oracles (oracle.py, levels.py,
reach.py) and the traces take them from this module, and `check` refuses a spec without them.
"""

from __future__ import annotations

from functools import cache

from dmmcheck.spec import load
from dmmcheck.spec.checker import Action, CheckedSpec, Symbol


# ---------------------------------------------------------------- sorts and enums
# The sorts, each mapped to implementation values by the read-back (abstraction.Universe): VM ids,
# guest root gfns, guest-virtual pages, guest frames, DMM machine frames, swap slots, vCPU indices,
# paging-mode roles (by name, in Config.roles order).
VM, ROOT, GVA, GFN, MFN, SLOT, VCPU, ROLE = "vm", "root", "gva", "gfn", "mfn", "slot", "vcpu", "role"
SORTS = (VM, ROOT, GVA, GFN, MFN, SLOT, VCPU, ROLE)
# Enums whose values the harness names: a guest access (operations carry it by name), a machine
# page's descriptor status (abstract_state() gives it by name).
ACCESS, PSTATUS = "access", "pstatus"
ENUMS = {ACCESS: ("read", "write", "fetch"), PSTATUS: ("free", "reserved", "mapped", "shared")}
# The model's parameters: the scope sets them, not the implementation.
BUDGET, QUOTA = "budget", "quota"
# The immutable relation the configuration fixes (Config.fixed): which roles have CR0.WP.
ROLE_WP = "role_wp"

# ---------------------------------------------------------------- state symbols
# What the read-back fills in, by what the implementation shows.
LIVE = "live"  # per VM
CUR_ROOT, MODE, FLUSH_PENDING = "cur_root", "mode", "flush_pending"  # per (vm, vcpu)
VMM_POOL, STATUS, REFCOUNT, OWNER = "vmm_pool", "status", "refcount", "owner"  # per machine page
ACTIVE, IDLE = "active", "idle"  # a VM's pools
P2M, SWAP_SLOT, BALLOONED = "p2m", "swap_slot", "ballooned"  # per (vm, gfn)
WRITE_PROTECTED, GPT_PAGE = "write_protected", "gpt_page"  # per (vm, gfn)
SLOT_USED = "slot_used"
# Per (vm, root, gva), one layout: the guest's mapping, its rights, A and D.
GMAP = ("gmap", "g_write", "g_user", "g_nx", "g_accessed", "g_dirty")
# Per (vm, root, role, gva), one layout: the shadow's leaf and its rights.
SPTE = ("spte", "s_write", "s_user", "s_nx")
RMAP = "rmap"  # (mfn, vm, root, role, gva)
# The guest tables each walk reads (what guest_path edits), and those above the leaf's (guest_upper).
G_TABLE, G_UPPER = "g_table", "g_upper"
# An spte the guest rewrote the gpte of in an unsync table (ghost): the generator aims at it
S_STALE = "s_stale"

# ---------------------------------------------------------------- actions
# A hit the hardware served is one of these: the TLB is ghost state, so the oracle picks — the TLB
# first, as a CPU that holds the translation uses it without walking the shadow.
SHADOW_HIT, TLB_HIT, GUEST_WALK = "shadow_hit", "tlb_hit", "guest_walk"
HITS = (TLB_HIT, SHADOW_HIT)
ACCESS_ACTIONS = HITS + (GUEST_WALK, "guest_fault")
SHADOW_FILL = "shadow_fill"
# The guest's control operations (the ideal machine follows them).
CR3_LOAD, SET_MODE, INVLPG = "cr3_load", "set_mode", "invlpg"
# The guest's own page-table edits: read from the abstraction, never reported as events. A leaf edit
# in an unsync table does not trap (the _unsync variants: the sptes stay and go stale).
GUEST_MAP, GUEST_UNMAP, GUEST_PATH, GUEST_UPPER = "guest_map", "guest_unmap", "guest_path", "guest_upper"
GUEST_MAP_UNSYNC, GUEST_UNMAP_UNSYNC = "guest_map_unsync", "guest_unmap_unsync"
# A store to an upper-level entry: the walks it changes, of one (vm, root), as one step (its choice
# parameters are read from the implementation's walks; guest_path and guest_upper explain, walk by
# walk, a change no one table on every changed walk can account for).
GUEST_STORE_UPPER = "guest_store_upper"
GUEST_EDITS = (GUEST_MAP, GUEST_UNMAP, GUEST_PATH, GUEST_UPPER, GUEST_STORE_UPPER, GUEST_MAP_UNSYNC,
               GUEST_UNMAP_UNSYNC)
VM_CREATE, VM_DESTROY = "vm_create", "vm_destroy"
# An inflate of a resident gfn; its variants (a swapped or absent gfn) share the prefix.
BALLOON_INFLATE = "balloon_inflate"
# Breaking a sharing: the guest's store that breaks it carries a value.
COW_BREAK = "cow_break"
# What the implementation chooses, by action (everything else is the harness's to choose).
OUTPUTS = {"demand_page": ("m",), "swap_in": ("s", "m"), "swap_out": ("m", "s"), "share_merge": ("m1", "m2"),
           COW_BREAK: ("m", "n"), "balloon_inflate": ("m",), "balloon_inflate_swapped": ("s",),
           "pool_grow": ("m",), "pool_shrink": ("m",)}
# One operation the implementation may answer with any of these actions (e.g. a balloon inflate
# of a resident, swapped or absent gfn).
ALTERNATIVES = {"balloon_inflate": ("balloon_inflate", "balloon_inflate_swapped", "balloon_inflate_unmapped"),
                "balloon_inflate_swapped": ("balloon_inflate_swapped",),
                "balloon_inflate_unmapped": ("balloon_inflate_unmapped",),
                "demand_page": ("demand_page", "swap_in", "oom"), "swap_in": ("swap_in", "demand_page", "oom"),
                "swap_out": ("swap_out", "swap_full")}
# Operations that are not spec actions: raw page-table edits, one pass of the sharing scanner; the
# inputs the harness draws for each, and every argument a trace records.
EXTRA = {"gpte_write": ("v", "r", "x"), "share_scan": ()}
EXTRA_ARGS = {"gpte_write": ("v", "r", "x", "level", "g", "bits"), "share_scan": ()}
# Composite operations: legal when the VM lives; the implementation performs the steps that make
# the spec action enabled first (vm_destroy: give every page back, then destroy).
# The guest's own instructions are legal whenever its VM lives: what their spec actions guard
# beyond that (no stale spte left where a CR3 or mode load lands) is the VMM's to make true first,
# so the generator must ask for them exactly when it is not yet true.
WHEN_LIVE = {VM_DESTROY, CR3_LOAD, SET_MODE, INVLPG} | set(EXTRA) | set(ACCESS_ACTIONS)
# Policy requests a VMM may always decline (doing nothing is a legal answer): the generator also asks
# them now and then where the spec forbids the action itself — a swap-out or merge of a guest table,
# a balloon of a shadowed table — and the VMM must refuse (its own checks are under test too).
REFUSABLE = ("swap_out", "swap_io_error", "share_merge", "balloon_inflate")
# Only the VMM itself does these; they are judged when reported, never asked for.
INTERNAL = {SHADOW_FILL, "zap_spte", "protect_gpt", "unshadow_gpt", "unprotect_gpt", "tlb_flush", "tlb_sync",
            "tlb_evict", "flush_request", "share_rehome", "unsync_gpt", "sync_spte"}
# Events that may write guest memory (a walk's A/D bits, a page's new content): the guest's edits
# are placed after the last of them. ("guest_write" is the adapter's event of a guest store.)
MEMORY_WRITERS = {GUEST_WALK, "guest_write", "demand_page", "swap_in", COW_BREAK, BALLOON_INFLATE,
                  "balloon_inflate_swapped", "balloon_inflate_unmapped"}
# Operations that change what the guest's walks give without a store or an event: a mode (EFER.NXE:
# a walk's NX), a VM created or destroyed (its walks appear or go).
GUEST_VIEW_OPS = {SET_MODE, VM_CREATE, VM_DESTROY}
# Operations whose legality the guest's own state decides (the rest are requests to the VMM).
GUEST_OPS = {VM_CREATE, VM_DESTROY, CR3_LOAD, SET_MODE, GUEST_MAP, GUEST_UNMAP, INVLPG} \
    | set(ACCESS_ACTIONS) | set(EXTRA)
# An operation's vCPU (the parameter c): where an adapter runs it. Accesses also name the vCPU's
# current role (o), which the harness, not the operation, supplies.
VCPU_ARG, ROLE_ARG = "c", "o"

# Everything above, as what `named` looks for in a spec.
NAMED_SYMBOLS = (LIVE, MODE, CUR_ROOT, FLUSH_PENDING, VMM_POOL, STATUS, REFCOUNT, OWNER, ACTIVE, IDLE, P2M,
                 SWAP_SLOT, BALLOONED, WRITE_PROTECTED, GPT_PAGE, SLOT_USED, RMAP, G_TABLE, G_UPPER) + GMAP + SPTE
# Immutable symbols the configuration fixes (no implementation shows them; a variant must keep them).
FIXED_SYMBOLS = (ROLE_WP,)
NAMED_ACTIONS = (set(ACCESS_ACTIONS) | {SHADOW_FILL, VM_CREATE} | set(GUEST_EDITS) | set(OUTPUTS)
                 | {a for alts in ALTERNATIVES.values() for a in alts} | WHEN_LIVE | set(REFUSABLE) | INTERNAL
                 | GUEST_VIEW_OPS | GUEST_OPS | MEMORY_WRITERS) - set(EXTRA) - {"guest_write"}


def named(spec: CheckedSpec) -> list[str]:
    """What the harness names of the DMM spec (the declarations above) that `spec` lacks, one line each."""
    out = _vocabulary(spec)
    out += [f"state symbol '{n}'" for n in NAMED_SYMBOLS + FIXED_SYMBOLS if n not in spec.symbols]
    out += [f"action '{n}'" for n in sorted(NAMED_ACTIONS) if n not in spec.actions]
    return out


def _vocabulary(spec: CheckedSpec) -> list[str]:
    """The sorts and enums (with exactly their values: the harness looks values up by name) the
    harness names that `spec` lacks."""
    out = [f"sort '{s}'" for s in SORTS if s not in spec.sorts]
    return out + [f"enum {e} {{{', '.join(vals)}}}" for e, vals in ENUMS.items()
                  if set(spec.enums.get(e, ())) != set(vals)]


@cache
def _reference() -> CheckedSpec:
    return load(None)


def missing(spec: CheckedSpec) -> list[str]:
    """What `spec` lacks for the harness, one line each; empty when the harness can judge it."""
    ref = _reference()
    # the symbols and actions the harness names are the reference's (named(reference) is empty): the
    # checks against the reference below cover them
    out = _vocabulary(spec)
    out += [f"sort '{s}'" for s in ref.sorts if s not in spec.sorts and s not in SORTS]
    for sym in ref.symbols.values():
        if not sym.mutable or sym.ghost:
            continue  # an implementation shows only the mutable, non-ghost state
        have = spec.symbols.get(sym.name)
        if have is None:
            out.append(f"state {sym.kind} '{sym.name}'")
        elif _signature(have) != _signature(sym):
            out.append(f"{sym.kind} '{sym.name}' with the DMM spec's signature")
    for name in FIXED_SYMBOLS:  # the configuration fixes their values: they must be there as the harness fixes them
        ref_sym, got = ref.symbols[name], spec.symbols.get(name)
        if got is None or got.mutable or _signature(got) != _signature(ref_sym):
            out.append(f"immutable {ref_sym.kind} '{name}' with the DMM spec's signature")
    # every action: the harness names some in its tables and strings (operations.py, the oracle),
    # draws the others from the spec, and an implementation performs all of them
    for name, want in ref.actions.items():
        act = spec.actions.get(name)
        if act is None:
            out.append(f"action '{name}'")
        elif _params(act) != _params(want):
            params = ", ".join(f"{n}: {t}" for n, t in _params(want))
            out.append(f"action '{name}' with the parameters ({params})")
    return out


def _signature(sym: Symbol) -> tuple[tuple[str, ...], str]:
    return tuple(str(t) for t in sym.args), str(sym.result)


def _params(action: Action) -> list[tuple[str, str]]:
    return [(p.name, str(p.type)) for p in action.params]


def check(spec: CheckedSpec) -> None:
    """Raise ValueError naming what the spec lacks, when the harness cannot judge against it."""
    deterministic_init(spec)
    lacks = missing(spec)
    if lacks:
        shown = "; ".join(lacks[:8]) + (f"; and {len(lacks) - 8} more" if len(lacks) > 8 else "")
        raise ValueError(f"{spec.file}: the conformance harness judges implementations against the DMM "
                         f"spec or a variant of it; this spec lacks {shown}")


def deterministic_init(spec: CheckedSpec) -> None:
    """The harness judges an implementation from one initial state: an init with requires that
    leave state open (several initial states) is refused, with where (ValueError: bad input)."""
    free = spec.init_free_symbols()
    if free and spec.init is not None:
        raise ValueError(f"{spec.init.loc}: the spec's init leaves {', '.join(free)} to its requires (a non-deterministic "
                         "initial state); the harness needs one initial state: assign them in init "
                         "(dmm prove and dmm explore handle such a spec)")
