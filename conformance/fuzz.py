"""Differential fuzzing: a Hypothesis state machine whose rules are the spec's actions.

Each test case picks its scope (scope.py: a configuration within the adapter's bounds), resets the
implementation, picks a swarm (a random subset of the operations, so that rare interactions are not
drowned by common ones — Groce et al., "Swarm testing"), then draws operations: an action of the
swarm, its inputs (inputs.py: the whole input space, mostly ordinary and sometimes at the edges),
kept only when the spec says the operation is legal in the current spec state
(operations.Catalogue). Every step is judged by both oracles (runner.py); a Failure is shrunk by
Hypothesis and the shrunk run's steps, with the scope they ran on, are the trace.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import hypothesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from . import inputs, levels, scope
from .adapter import Adapter, Config, Operation, role_bits
from .binding import (
    ACCESS,
    ACCESS_ACTIONS,
    CR3_LOAD,
    CUR_ROOT,
    EXTRA,
    G_TABLE,
    G_UPPER,
    GMAP,
    GPT_PAGE,
    INVLPG,
    LIVE,
    MODE,
    P2M,
    PSTATUS,
    REFUSABLE,
    S_STALE,
    SET_MODE,
    STATUS,
    WRITE_PROTECTED,
)
from .operations import Catalogue
from .oracle import Failure
from .runner import Runner, StepRecord, alarm_handler, guarded
from .scope import table_gfns

if TYPE_CHECKING:
    from hypothesis.database import ExampleDatabase

    from .divergences import KnownDivergences, Tally

# The narrow generator's values (Tuning(wide_inputs=False), kept to measure what the wide one buys).
VALUES = (0, 1, 0xDEADBEEF, 0x8027, 0x9067, 0x3027 | (1 << 63))
GPTE_BITS = (0x27, 0x25, 0x23, 0x07, 0x67, 0xA7, 0xE7, 0x87, 0x27 | (1 << 63), 0x27 | (1 << 51), 0x21)
# The operations every swarm keeps: without them nothing else happens.
CORE = ("vm_create", "cr3_load", SET_MODE, "guest_map") + ACCESS_ACTIONS
WEIGHT = {"guest_walk": 6, "guest_map": 4, "swap_out": 2, "share_merge": 2, SET_MODE: 3, "gpte_write": 3}


@dataclass
class CaseResult:
    records: list[StepRecord]
    failure: Failure | None = None
    config: Config | None = None
    it: Any = None


# The most stores a twin may take (_aim_twin): a page table holds few entries, a data page a few
# values; past this the pages are too far apart to be worth the steps.
TWIN_STORES = 12
SAMPLE_PERIOD = 1.0  # seconds between rate samples
SAMPLE_EVERY = 64  # steps between looks at the clock: at ~2,000 steps/s, ~30 ms; a look costs ~0.1 µs a step


@dataclass
class FuzzResult:
    impl: str
    seed: int
    examples: int = 0
    steps: int = 0
    seconds: float = 0.0
    coverage: Counter[str] = field(default_factory=Counter)
    generated: Counter[str] = field(default_factory=Counter)  # operations asked, by name
    guards: dict[str, Counter[str]] = field(default_factory=dict)  # action -> {"true": n, "false": n}
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds_in_impl: float = 0.0
    seconds_in_oracle: float = 0.0
    shrunk: list[StepRecord] = field(default_factory=list)
    failure: Failure | None = None
    it: Any = None  # the interpreter the oracles used (names spec steps in traces)
    first_failure_steps: int | None = None  # steps run when the first failure showed (before shrinking)
    first_failure_seconds: float | None = None  # from the start of the campaign (seconds_to_failure)
    seconds_shrinking: float | None = None  # from the first failure to the end of the campaign: shrinking it
    started: float = 0.0
    config: Config | None = None  # the scope of the failing test case (the trace records it)
    interrupted: bool = False  # stopped by Ctrl-C; a failure found before is kept, maybe unshrunk
    shrink_cut: bool = False  # shrinking ran out of its time (shrink_seconds): the smallest so far is kept
    first: CaseResult | None = None  # the first failing test case, as found (before shrinking)
    smallest: CaseResult | None = None  # the shortest failing test case seen while shrinking
    shrink_until: float | None = None  # shrinking stops here (perf_counter), keeping the smallest
    inputs: Counter[str] = field(default_factory=Counter)  # input classes drawn
    scopes: Counter[str] = field(default_factory=Counter)  # scope classes of the test cases run
    warnings: list[str] = field(default_factory=list)  # what went wrong besides the verdict (a failing close)
    memory_limit_mib: int | None = 4096  # the implementation's resident memory may not pass this
    memory_mib_start: float = 0.0
    memory_mib_peak: float = 0.0
    level: str = "full"  # the conformance level the implementation was judged at (levels.py)
    known: Tally | None = None  # the accepted divergences met (--known-divergences), per entry
    skipped: Counter[str] = field(default_factory=Counter)  # accesses not performed by the adapter, by kind
    reads: Counter[str] = field(default_factory=Counter)  # abstract-state reads, "full" or "partial" (runner.py)
    # steps judged over time, [seconds since the start, steps], about one a second (and one at the
    # end): a campaign report draws steps/s over time from it (a slowdown, a stall while shrinking)
    rate_samples: list[list[float]] = field(default_factory=list)
    next_sample: float = 0.0  # perf_counter of the next sample

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0

    def sample(self, now: float | None = None) -> None:
        """Record [seconds, steps] now, if a second has passed since the last sample."""
        now = time.perf_counter() if now is None else now
        if now >= self.next_sample:
            self.rate_samples.append([round(now - self.started, 3), self.steps])
            self.next_sample = now + SAMPLE_PERIOD

    @property
    def seconds_to_failure(self) -> float | None:
        """From the start of the campaign to the first failure (before shrinking it)."""
        return self.first_failure_seconds


class Choices:
    """Decodes one drawn integer into many choices. One Hypothesis draw per step keeps generation
    cheap (a draw costs more than a whole spec step).

    The integer is hashed first, so its value bears no order on the choices: a smaller integer
    decodes to an unrelated step, not to a simpler one. Shrinking a failure therefore works by
    deleting steps (each is one choice of Hypothesis's sequence); Hypothesis's tries at smaller
    integers are a random search among other steps, kept only when the case still fails. 0 decodes
    to one fixed set of choices: the hash leaves the lowest 64 bits 0, so a choice among a power of
    two (k dividing 2**64: a coin, `take(2)`) decodes to its first option — scope.draw's first
    choice, so the campaign's own scope — but a choice among k other than a power of two (the
    operation of a swarm, a gfn of most scopes) does not."""

    def __init__(self, n: int) -> None:
        # Hypothesis favours small and boundary integers; mixed (splitmix64's finalizer), every
        # choice is near uniform. The finalizer maps 0 to 0: the low 64 bits of Choices(0) are 0.
        n = (n ^ (n >> 30)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        n = (n ^ (n >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        n ^= n >> 31
        # room for a step's many choices (each divides it down); a second mix for the upper part
        m = (n * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF
        m = (m ^ (m >> 29)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        self.n = n | (m << 64) | ((n ^ m) << 128)

    def take(self, k: int) -> int:
        v, self.n = self.n % k, self.n // k
        return v

    def pick(self, seq: Any) -> Any:
        return seq[self.take(len(seq))]


@dataclass(frozen=True)
class Tuning:
    """What steers generation; each part measured on the mutant catalogue (docs/conformance.md)."""

    focus: bool = True  # accesses mostly at mapped gvas; raw edits aimed at the guest's pages
    vary_scope: bool = True  # each test case on a configuration of its own (scope.py)
    wide_inputs: bool = True  # the whole input space (inputs.py): every gpte field, store widths


class Drawer:
    """One operation: its name from the swarm, its inputs in implementation values; kept only when
    the spec says it is legal."""

    def __init__(self, cat: Catalogue, config: Config, ops: list[str], tuning: Tuning = Tuning(),
                 features: tuple[bool, bool] = (False, False)) -> None:
        self.cat, self.config, self.tuning = cat, config, tuning
        self.access = list(cat.it.spec.enums[ACCESS])
        self.live_ix = cat.it.u.layout[LIVE].index
        self.root_ix = cat.it.u.layout[CUR_ROOT].index  # (vm, vcpu): vm-major
        self.vcpus = cat.vcpus
        self.gmap_ix = cat.it.u.layout[GMAP[0]].index
        self.ops = ops
        self.focus = tuning.focus
        self.tables = table_gfns(config)
        # the gfns some layout table may live in: a data page for an aim is none of them
        self.data_gfns = [g for g in range(config.gfns) if all(g not in ts for ts in self.tables.values())]
        self.slots = tuple(sorted({x >> shift & 511 for x in config.gvas for shift in (12, 21, 30, 39)}))
        self.earlier: list[tuple[int, int]] = []  # raw entries written in this test case
        self._guest_key: tuple[Any, int] | None = None  # (state, raw entries written) self._guest was read at
        self._guest: inputs.Guest | None = None
        self.written_at: dict[tuple[int, int], int] = {}  # (level, entry less its rights) -> the gva it was written for
        self.huge: list[tuple[int, int, int, int, int]] = []  # (vm, root gfn, level, gva, entry): huge leaves written
        # (vm, root gfn, level, gva, stale gva): entries written that link a leaf table the VMM
        # left unsync, and a gva whose spte in that table is stale (None: none known)
        self.links: list[tuple[int, int, int, int, int | None]] = []
        self.mode_ix = cat.it.u.layout[MODE].index  # (vm, vcpu): vm-major, like cur_root
        u = cat.it.u
        self.gpt_ix, self.wp_ix = u.layout[GPT_PAGE].index, u.layout[WRITE_PROTECTED].index
        # (gfn, its gpt_page point, its write_protected point) of every VM, looked up once a test case
        self.per_gfn = [(g, u.index(GPT_PAGE, (v, g)), u.index(WRITE_PROTECTED, (v, g)))
                        for v in range(config.vms) for g in range(config.gfns)]
        # Swarm features of the test case (Groce et al.: leaving features out helps as much as putting
        # them in): huge-page-heavy raw edits; guest mappings piled onto few pages.
        self.huge_heavy, self.aliasing = features if tuning.wide_inputs else (False, False)
        # The aims decided once a test case, at their first chance (_aim_twin, _aim_wp0)
        self.twin, self.wp0 = tuning.wide_inputs, tuning.wide_inputs
        self.pending: list[Operation] = []  # steps queued to follow the one drawn (_follow)
        # while a link to an unsync table is drawn: the gpte it aims at (gva, role, root gfn, table)
        self.aim: tuple[int, int, int, int] | None = None
        self.force_link = False  # the raw entry drawn now links an unsync leaf table
        self.now: inputs.Guest | None = None  # the guest as of the operation being drawn
        self.inputs: Counter[str] = Counter()  # input classes drawn (coverage)
        self.burst_tried = False  # a burst is considered once a test case (_aim_burst)
        # The guest's page content, (vm, gfn) -> bytes (None: not known), from the ideal machine:
        # set by the campaign; only the twin aim reads it.
        self.page: Callable[[int, int], bytes | None] = lambda v, g: None
        self.p2m_ix, self.status_ix = u.layout[P2M].index, u.layout[STATUS].index

    def guest(self, s: Any) -> inputs.Guest:
        """What the generator aims at, read once per state (a step the implementation skipped, or
        a draw tried again, leaves the state as it was) and raw entry written."""
        key, got = self._guest_key, self._guest
        if got is None or key is None or key[0] is not s or key[1] != len(self.earlier):
            mapped = tuple(g for g in s[self.gmap_ix] if g is not None)
            got = self._guest = inputs.Guest(self.config.gfns, self.tables, mapped, self.slots,
                                             tuple(self.earlier), self._unsync(s))
            self._guest_key = (s, len(self.earlier))  # (the state held: its id is not reused)
        return got

    def _unsync(self, s: Any) -> tuple[int, ...]:
        """The gfns some VM's VMM left unsync: guest tables that are not write-protected."""
        gpt, wp = s[self.gpt_ix], s[self.wp_ix]
        return tuple(sorted({g for g, i, j in self.per_gfn if gpt[i] and not wp[j]}))

    def draw(self, c: Choices, swarm: list[str], s: Any, result: FuzzResult) -> Operation | None:
        live = [v for v in range(self.config.vms) if s[self.live_ix][v]]
        while self.pending:  # the steps an earlier draw queued (_follow), while they still apply
            queued = self.pending.pop(0)
            a = queued.args
            v = a.get("v", a.get("v1"))
            if v in live and a.get("v2", v) in live and (queued.action in self.cat.ops or queued.action in EXTRA) and (
                    queued.action not in ACCESS_ACTIONS or s[self.mode_ix][v * self.vcpus + a["c"]] is not None):
                return queued
        if live and c.take(16) == 0:
            aimed = self._aim_stale(c, s, live)
            if aimed is not None:
                return aimed
        if self.aliasing and not self.burst_tried and any(self.cat.running(s, v) for v in live):
            aimed = self._aim_burst(c, s, live)
            if aimed is not None:
                return aimed
        if self.twin and live:
            aimed = self._aim_twin(c, s, live)
            if aimed is not None:
                return aimed
        if self.wp0 and any(self.cat.running(s, v) for v in live):
            self.wp0 = False  # decided once: now
            aimed = self._aim_wp0(c, s, live) if c.take(4) == 1 else None
            if aimed is not None:
                return aimed
        running = [v for v in live if self.cat.running(s, v)]
        for _ in range(4):  # a few tries before the step is skipped
            name = c.pick(swarm)
            vms = {"vm_create": [v for v in range(self.config.vms) if v not in live]}.get(
                name, running if name in ACCESS_ACTIONS else live)
            if name in ACCESS_ACTIONS and not running and live:
                # No vCPU can run yet: the load (CR3, then the paging mode) it needs first, so that
                # accesses start as early as they did when a vCPU had a mode from reset.
                boot = self._boot(c, s, live)
                if boot is not None:
                    return boot
            if not vms and (name != "share_scan" or not live):
                continue
            op = self._extra(c, name, vms, s) if name in EXTRA else self._spec_op(c, name, vms, s, result)
            if op is not None:
                return op
        return None

    def _boot(self, c: Choices, s: Any, live: list[int]) -> Operation | None:
        """cr3_load or set_mode for a vCPU of a live VM that lacks it (None when the swarm has neither)."""
        v, cpu = c.pick(live), c.take(self.vcpus)
        k = self.cat.it.u.index(CUR_ROOT, (v, cpu))
        if s[self.root_ix][k] is None and "cr3_load" in self.cat.ops:
            return Operation("cr3_load", {"v": v, "c": cpu, "r": c.pick(self.config.roots)})
        if SET_MODE in self.cat.ops:
            return Operation(SET_MODE, {"v": v, "c": cpu, "o": c.pick(self.config.roles)})
        return None

    def _value(self, c: Choices, t: str, vms: list[int]) -> tuple[Any, Any]:
        """(implementation value, spec value) of one input (a vCPU: any of the VM's)."""
        cfg = self.config
        if t == "vm":
            v = c.pick(vms)
            return v, v
        if t == "vcpu":
            i = c.take(cfg.vcpus)
            return i, i
        if t == "role":
            i = c.take(len(cfg.roles))
            return cfg.roles[i], i
        if t == "root":
            i = c.take(len(cfg.roots))
            return cfg.roots[i], i
        if t == "gva":
            i = c.take(len(cfg.gvas))
            return cfg.gvas[i], i
        if t == "gfn":
            g = c.take(cfg.gfns)
            if self.tuning.wide_inputs and c.take(2 if self.aliasing else 4) == 0:
                # a guest table's own gfn (tables and data alias), the last gfn of memory, or a gfn
                # some gva maps already (many gvas on one page: one zap weakens many sptes)
                mapped = list(self.now.mapped) if self.now is not None else []
                g = c.pick([t for ts in self.tables.values() for t in ts] + [cfg.gfns - 1] + mapped)
            return g, g
        if t == "access":
            i = c.take(len(self.access))
            return self.access[i], i
        b = bool(c.take(2))
        return b, b

    def _spec_op(self, c: Choices, name: str, vms: list[int], s: Any, result: FuzzResult) -> Operation | None:
        args: dict[str, Any] = {}
        xs: list[Any] = []
        self.now = guest = self.guest(s)
        for p in self.cat.ops[name].inputs:
            if p.type.name == "vcpu" and name in ACCESS_ACTIONS:  # one of the VM's running vCPUs
                args[p.name] = x = c.pick(self.cat.running(s, xs[0]))
            else:
                args[p.name], x = self._value(c, p.type.name, vms)
            xs.append(x)
        if name in ("guest_map", "guest_unmap") and self.focus and c.take(4):
            # Mostly the tables the VM runs on: an edit elsewhere changes nothing it can see yet.
            cur = self._root(s, xs[0], c)
            if cur is not None:
                xs[1], args["r"] = cur, self.config.roots[cur]
        ok = self.cat.legal(s, name, tuple(xs))
        result.guards.setdefault(name, Counter())["true" if ok else "false"] += 1
        if not ok and self.tuning.wide_inputs and name in REFUSABLE and c.take(8) == 0:
            self.inputs[f"request the spec forbids: {name}"] += 1
            return Operation(name, args)  # the VMM must decline it
        if not ok:
            # Repair: the gfns that make the operation legal (resident for swap_out, swapped for
            # swap_in, shared for cow_break, ...) — uniform gfns rarely are, once memory fills.
            pos = [i for i, p in enumerate(self.cat.ops[name].inputs) if p.type.name == "gfn"]
            if not pos:
                return None
            i = pos[-1]
            fits = [g for g in range(self.config.gfns) if self.cat.legal(s, name, tuple(xs[:i]) + (g,) + tuple(xs[i + 1:]))]
            if not fits:
                return None
            xs[i] = c.pick(fits)
            args[self.cat.ops[name].inputs[i].name] = xs[i]
        if name in ACCESS_ACTIONS and self.focus and c.take(4):
            # Mostly where the guest has a mapping: an access to nothing is a plain #PF, and the
            # VMM's paths (fills, emulation, CoW, swap-in) run only behind a mapping.
            mapped = [x for i, x in enumerate(self.config.gvas)
                      if s[self.gmap_ix][self._point(xs[0], xs[1], s, i)] is not None]
            if mapped:
                args["x"] = c.pick(mapped)
        if name in ACCESS_ACTIONS and self.huge and c.take(4):
            self._through_huge(c, args, s)
        if self.links and (name in ACCESS_ACTIONS or name == CR3_LOAD) and c.take(2):
            self._through_link(c, name, args, s)
        if name in ACCESS_ACTIONS and args["a"] == "write" or name == "cow_break":
            args["value"] = inputs.value(c, guest) if self.tuning.wide_inputs else c.pick(VALUES)
        if name in ACCESS_ACTIONS and args["a"] != "fetch" and self.tuning.wide_inputs:
            args["size"], args["offset"], cls = inputs.store(c, guest)
            self.inputs[cls.replace("store", "load") if args["a"] == "read" else cls] += 1
        if name in ACCESS_ACTIONS and self.tuning.wide_inputs and c.take(64) == 0:
            # An address the CPU does not translate: #GP, no walk. (Drawn last, so every other
            # choice of the step is what it would have been.)
            args["x"] = inputs.non_canonical(c, args["x"])
            self.inputs["non-canonical gva"] += 1
        return Operation(name, args)

    def _point(self, v: int, cpu: int, s: Any, x: int) -> int:
        """Where (v, vCPU cpu's current root, gva x) lies in gmap's entry of the spec state."""
        return self.cat.it.u.index(GMAP[0], (v, s[self.root_ix][v * self.vcpus + cpu], x))

    def _root(self, s: Any, v: int, c: Choices) -> int | None:
        """The root one of VM v's vCPUs runs on (None: none has loaded CR3)."""
        k = v * self.vcpus
        roots = [r for r in s[self.root_ix][k:k + self.vcpus] if r is not None]
        return c.pick(roots) if roots else None

    def _extra(self, c: Choices, name: str, vms: list[int], s: Any = None) -> Operation:
        if name == "share_scan":
            return Operation(name, {})
        args: dict[str, Any] = {"v": c.pick(vms)}
        if name == "gpte_write":
            cfg = self.config
            args.update(r=c.pick(cfg.roots), x=c.pick(cfg.gvas), level=1 + c.take(4))
            if self.tuning.wide_inputs:
                self._raw_entry(c, args, s)
            else:
                self._narrow_entry(c, args, s)
        return Operation(name, args)

    def _through_huge(self, c: Choices, args: dict[str, Any], s: Any) -> None:
        """Aim an access through a huge leaf this test case wrote on the VM's running root, mostly in
        a role the leaf's own rights allow. The direct sps that split a huge page are filled only by
        a walk that succeeds, and two leaves over the same frames with different rights must not
        share them: each leaf has to be walked in a role it grants, not only faulted on."""
        k = args["v"] * self.vcpus + args["c"]
        cur = s[self.root_ix][k]
        root = self.config.roots[cur] if cur is not None else None
        leaves = [h for h in self.huge if h[0] == args["v"] and h[1] == root]
        if not leaves:
            return
        _v, _r, level, at, entry = c.pick(leaves)
        shift = inputs.SHIFT[level]
        under = [x for x in self.config.gvas if x >> shift == at >> shift]
        args["x"] = c.pick(self._in_memory(under, level, entry) or under)
        o = s[self.mode_ix][k]
        if c.take(4) and o is not None:
            bits = role_bits(self.config.roles[o])
            args["a"], args["u"] = inputs.role(c, entry, "wp" in bits, "nxe" in bits, "smep" in bits, "smap" in bits)

    def _through_link(self, c: Choices, name: str, args: dict[str, Any], s: Any) -> None:
        """Follow a link to an unsync leaf table through: load the root that holds it (a CR3 load),
        or access a gva under it from a vCPU running on that root. The stale sptes such a table
        holds are the bug only a walk through the second path shows (its shadow page linked
        there unsynced, or left writable once it is read as an upper table)."""
        mine = [k for k in self.links if k[0] == args["v"]]
        if not mine:
            return
        _v, root, level, at, z = c.pick(mine)
        if name == CR3_LOAD:
            args["r"] = root
            return
        cur = s[self.root_ix][args["v"] * self.vcpus + args["c"]]
        if cur is None or self.config.roots[cur] != root:
            return
        shift = inputs.SHIFT[level]
        under = [x for x in self.config.gvas if x >> shift == at >> shift]
        same = self._reading(level, at, z)
        args["x"] = c.pick(same if same and c.take(4) else under)

    def _reading(self, level: int, at: int, z: int | None) -> list[int]:
        """The gvas under the level-`level` entry of gva `at` whose walk through that entry, which
        links a leaf table, reads the table's gpte of gva z (the table read one level up: the index
        there is z's leaf index)."""
        if z is None:
            return []
        slot, below = inputs.SHIFT[level], inputs.SHIFT[level - 1]
        return [y for y in self.config.gvas if y >> slot == at >> slot and y >> below & 511 == z >> 12 & 511]

    def _unsync_leaves(self, s: Any, stale: bool) -> list[tuple[int, int, int, int, int]]:
        """(vm, root gfn, gva, leaf table gfn, role) of every stale spte (the spec's ghost s_stale;
        `stale`) or every present gpte (not `stale`; role 0) whose leaf table is unsync: where a
        second path to that table shows the stale translation, or a walk through it as an upper
        table gets past it."""
        u = self.cat.it.u
        if S_STALE not in u.layout or G_TABLE not in u.layout or G_UPPER not in u.layout:
            return []
        tab, up = s[u.layout[G_TABLE].index], s[u.layout[G_UPPER].index]
        unsync = set(self._unsync(s))
        if not unsync:
            return []
        if stale:
            points = [u.point(S_STALE, k) for k, b in enumerate(s[u.layout[S_STALE].index]) if b]
        else:
            points = [u.point(GMAP[0], k)[:2] + (0,) + u.point(GMAP[0], k)[2:]
                      for k, g in enumerate(s[self.gmap_ix]) if g is not None]
        out = set()
        for v, r, o, x in points:
            for t in unsync:
                i = u.index(G_TABLE, (v, r, x, t))
                if tab[i] and not up[i]:
                    out.add((v, self.config.roots[r], self.config.gvas[x], t, o))
        return sorted(out)

    def _raw_entry(self, c: Choices, args: dict[str, Any], s: Any) -> None:
        """A raw gpte from the whole input space, mostly in the tables the VM runs on."""
        cur = self._root(s, args["v"], c) if s is not None else None
        if cur is not None and (self.huge_heavy or c.take(4)):
            args["r"] = self.config.roots[cur]
        mine = [h for h in self.huge if h[0] == args["v"]]
        guest = self.guest(s)
        if self.huge_heavy and mine and c.take(4):
            entry, cls = self._second_leaf(c, args, mine)
        elif guest.unsync and (self.force_link or c.take(4) == 0):
            # While a leaf table is unsync, a second path to it: the stale sptes it holds show
            # only through one (uniform frames reach it about once a minute)
            args["level"] = 2 + c.take(2)
            # level 2: the table read as a leaf table again, where a stale spte shows; level 3: read
            # as a page directory, past one of its present gptes
            stale = [t for t in self._unsync_leaves(s, args["level"] == 2) if t[0] == args["v"]]
            if stale:
                _v, rz, z, table, role = c.pick(stale)
                guest = replace(guest, unsync=(table,))
                self.aim = (z, role, rz, table)
                self._second_path(c, args, s, rz, z)
            entry = inputs.unsync_link(c, guest)
            cls = f"level {args['level']} table entry; gfn an unsync leaf table"
        else:
            if self.huge_heavy and c.take(4):
                args["level"] = 2 + c.take(2)
            entry, cls = inputs.gpte(c, guest, args["level"], self.huge_heavy)
        level = args["level"]
        self.inputs[cls] += 1
        key = (level, entry & ~(inputs.RW | inputs.US | inputs.XD))
        if "same frames" in cls:
            # the second path to those frames: a slot of this level other than the first entry's
            shift = 12 + 9 * (level - 1)
            first = self.written_at.get(key, args["x"])
            other = [x for x in self.config.gvas if x >> shift & 511 != first >> shift & 511]
            if other:
                args["x"] = c.pick(self._in_memory(other, level, entry) or other)
            if any(h[2:] == (level, first, entry) for h in mine):  # a copy of the first: its D bit apart
                self._alias_writes(c, s, args, level, first, entry)
        elif level in (2, 3) and entry & inputs.PS and c.take(4):
            # a huge leaf maps a gva's page only when the gva's offset in it stays inside memory
            args["x"] = c.pick(self._in_memory(self.config.gvas, level, entry) or [args["x"]])
        if cls.endswith("unsync leaf table"):
            self.links.append((args["v"], args["r"], level, args["x"], self.aim[0] if self.aim else None))
            if self.aim is not None:
                self._follow(c, s, self.links[-1], self.aim)
            self.aim = None
        if inputs.walkable_huge(entry, level) and self._in_memory(self.config.gvas, level, entry):
            self.huge.append((args["v"], args["r"], level, args["x"], entry))
        self.earlier.append((level, entry))
        self.written_at[key] = args["x"]
        args.update(g=(entry & inputs.FRAME) >> 12, bits=entry & ~inputs.FRAME)

    def _alias_writes(self, c: Choices, s: Any, args: dict[str, Any], level: int, first: int, entry: int) -> None:
        """After a copy of a huge leaf at another slot (two mappings of one huge page, each with its
        own D bit): read through the copy, write through the first, write through the copy, at one
        offset of a data page inside the huge page, on a vCPU running on the leaves' root (loaded
        first if none is). The first write's walk sets the first leaf's D; the copy is still clean,
        so its write must fault to the VMM (which sets its D). A shadow that keys the huge page's
        direct sps by the D bit read before the walk puts the writable spte where the copy's path
        finds it."""
        shift = 12 + 9 * (level - 1)
        span = 1 << shift
        frame = entry & inputs.FRAME & ~(span - 1)
        tables = set(scope.guest_tables(args["r"], self.config.gvas).values())
        k = args["v"] * self.vcpus
        moded = [i for i in range(self.vcpus) if s[self.mode_ix][k + i] is not None]
        pairs = [(a, b) for a in self.config.gvas for b in self.config.gvas
                 if a >> shift == first >> shift and b >> shift == args["x"] >> shift and a % span == b % span
                 and (frame | a % span) >> 12 < self.config.gfns and (frame | a % span) >> 12 not in tables]
        if not moded or not pairs:
            return
        cpu, (a, b), user = c.pick(moded), c.pick(pairs), bool(entry & inputs.US)

        def access(x: int, kind: str) -> Operation:
            return Operation("guest_walk", {"v": args["v"], "c": cpu, "x": x, "a": kind, "u": user, "value": c.take(256)})
        self.pending = [access(b, "read"), access(a, "write"), access(b, "write")]
        cur = s[self.root_ix][k + cpu]
        if cur is None or self.config.roots[cur] != args["r"]:
            self.pending.insert(0, Operation("cr3_load", {"v": args["v"], "c": cpu, "r": args["r"]}))

    def _aim_stale(self, c: Choices, s: Any, live: list[int]) -> Operation | None:
        """A stale spte waits in an unsync leaf table: use it now, before a resync takes the chance
        away (uniform draws line these steps up about once a minute). One of: link the table at a
        second path (_raw_entry, _follow); the guest's own invlpg of the gva, then a read of it;
        a CR3 load of its root, then a read of it. After either invalidation the guest must see
        the translation its gpte gives now, never the stale one."""
        stale = [t for t in self._unsync_leaves(s, True) if t[0] in live]
        if not stale:
            return None
        how = c.take(3)
        if how == 0 and "gpte_write" in self.ops:
            self.force_link = True
            try:
                return self._extra(c, "gpte_write", [c.pick(stale)[0]], s)
            finally:
                self.force_link = False
        v, rz, z, _table, role = c.pick(stale)
        k = v * self.vcpus
        # a vCPU in the stale spte's role (its shadow is the one read; a mode load would resync it)
        cpus = [i for i in range(self.vcpus) if s[self.mode_ix][k + i] == role]
        if not cpus:
            return None
        cpu = c.pick(cpus)
        cur = s[self.root_ix][k + cpu]
        if how == 1 and INVLPG in self.cat.ops and cur is not None and self.config.roots[cur] == rz:
            first = Operation(INVLPG, {"v": v, "c": cpu, "x": z})
        elif "cr3_load" in self.cat.ops:
            first = Operation("cr3_load", {"v": v, "c": cpu, "r": rz})
        else:
            return None
        self.pending = [Operation("guest_walk", {"v": v, "c": cpu, "x": z, "a": "read", "u": False})]
        return first

    def _aim_burst(self, c: Choices, s: Any, live: list[int]) -> Operation | None:
        """Once, in an aliasing test case with room for it: more writable sptes weakened by one operation
        than a VMM invalidates page by page. inputs.BURST gvas of a running vCPU are mapped onto one
        gfn g and written (the TLB holds each, writable); one of the stores puts a present gpte in
        g. Then a gva y of another 2 MiB region gets g as its page table and is read: the VMM
        shadows g and write-protects it, every one of the writable sptes weakened at once. Then each
        gva is written again: each store must trap. A VMM whose flush list overflows into anything
        but a full flush leaves one writable in the TLB. (The VMM's own p2m changes shoot every TLB
        down, and with unsync sps a guest edit zaps nothing until the guest's invlpg; uniform draws
        almost never line up these twenty-nine steps.)"""
        self.burst_tried = True
        cfg = self.config
        if "gpte_write" not in self.ops:
            return None
        # y: a gva whose 2 MiB region leaves room for the burst in the others
        ys = [y for y in cfg.gvas if sum(x >> 21 != y >> 21 for x in cfg.gvas) >= inputs.BURST]
        if not ys:
            return None
        y = c.pick(ys)
        others = [x for x in cfg.gvas if x >> 21 != y >> 21]
        v = c.pick([v for v in live if self.cat.running(s, v)])
        cpu = c.pick(self.cat.running(s, v))
        if not self.data_gfns:  # (a table already is write-protected)
            return None
        root, g = cfg.roots[s[self.root_ix][v * self.vcpus + cpu]], c.pick(self.data_gfns)
        chosen = sorted(others, key=lambda x: c.take(8))[:inputs.BURST]
        gpte = c.take(cfg.gfns) << 12 | inputs.P | inputs.RW | inputs.US | inputs.A | inputs.D
        entry = {"size": 8, "offset": 8 * (y >> 12 & 511)}  # the entry y's walk reads in g

        def store(x: int, value: int) -> Operation:
            return Operation("guest_walk", {"v": v, "c": cpu, "x": x, "a": "write", "u": True, "value": value, **entry})
        ops = [Operation("guest_map", {"v": v, "r": root, "x": x, "g": g, "w": True, "u": True, "nx": False,
                                       "a": True, "d": True}) for x in chosen]
        ops += [store(x, gpte) for x in chosen]
        ops += [Operation("gpte_write", {"v": v, "r": root, "x": y, "level": 2, "g": g,
                                         "bits": inputs.P | inputs.RW | inputs.US | inputs.A}),
                Operation("guest_walk", {"v": v, "c": cpu, "x": y, "a": "read", "u": True})]
        ops += [store(x, gpte) for x in sorted(chosen, key=lambda x: c.take(8))]
        self.inputs[f"burst of {inputs.BURST} writable sptes weakened at once"] += 1
        self.pending = ops[1:]
        return ops[0]

    def _aim_twin(self, c: Choices, s: Any, live: list[int]) -> Operation | None:
        """Once, in one test case in four, at its first chance: a merge the spec forbids, of a page the
        VMM shadows as a guest table (kept) and a data page the guest first makes its byte-for-byte
        twin (discarded). A VMM that checks only the page it discards for guest-table use makes a
        live page table shared and read-only. The twin is made by the guest's own stores through a
        gva mapped onto the data page, one per 8 bytes that differ (the ideal machine's content;
        at most TWIN_STORES of them). Uniform draws almost never make two such pages equal."""
        if "share_merge" not in self.cat.ops:
            self.twin = False
            return None
        if not any(s[self.gpt_ix]):
            return None  # no guest table shadowed yet (the common case, asked every step: cheap)
        cfg, u, gfns = self.config, self.cat.it.u, self.config.gfns
        mapped = list(self.cat.it.spec.enums[PSTATUS]).index("mapped")

        def held(v: int, g: int) -> Any:
            return s[self.p2m_ix][u.index(P2M, (v, g))]
        tables = [(v, g) for v in live for g in range(gfns) if s[self.gpt_ix][v * gfns + g] and held(v, g) is not None]
        running = [v for v in live if self.cat.running(s, v)]
        datas = [(v, g) for v in running for g in range(gfns) if not s[self.gpt_ix][v * gfns + g]
                 and held(v, g) is not None and s[self.status_ix][held(v, g)] == mapped]
        if not tables or not datas:
            return None  # not yet: tried again at the next step
        self.twin = False  # decided once, now: one test case in four (0, where shrinking goes, is no)
        if c.take(4) != 1:
            return None
        (v1, t), (v2, d) = c.pick(tables), c.pick(datas)
        want, have = self.page(v1, t), self.page(v2, d)
        if want is None or have is None or held(v1, t) == held(v2, d):
            return None
        differ = [i for i in range(0, len(want), 8) if want[i:i + 8] != have[i:i + 8]]
        cpu = c.pick(self.cat.running(s, v2))
        root = cfg.roots[s[self.root_ix][v2 * self.vcpus + cpu]]
        layout = scope.guest_tables(root, cfg.gvas)
        # a gva whose own tables are neither page (the store that maps it must not change them)
        xs = [x for x in cfg.gvas if not (v1 == v2 and t in self._chain(layout, x)) and d not in self._chain(layout, x)]
        if len(differ) > TWIN_STORES or not xs:
            return None
        x = c.pick(xs)
        ops = [Operation("guest_map", {"v": v2, "r": root, "x": x, "g": d, "w": True, "u": True, "nx": False,
                                       "a": True, "d": True})]
        ops += [Operation("guest_walk", {"v": v2, "c": cpu, "x": x, "a": "write", "u": True, "size": 8, "offset": i,
                                         "value": int.from_bytes(want[i:i + 8], "little")}) for i in differ]
        ops.append(Operation("share_merge", {"v1": v1, "g1": t, "v2": v2, "g2": d}))
        self.inputs["merge of a guest table and its twin"] += 1
        self.pending = ops[1:]
        return ops[0]

    def _aim_wp0(self, c: Choices, s: Any, live: list[int]) -> Operation | None:
        """Once, in one test case in four with a paging mode without CR0.WP (decided by the caller): the
        supervisor write to a read-only user page that WP=0 allows, then every other kind of access
        to that page in the same mode. A shadow MMU serves the write with a writable spte the user
        may not use (KVM's U=0, W=1 trick); that spte must still refuse a supervisor fetch under
        CR4.SMEP and a supervisor read under CR4.SMAP, and the user's write. Five steps in one
        mode that uniform draws rarely line up."""
        cfg = self.config
        modes = [i for i, r in enumerate(cfg.roles) if "wp" not in role_bits(r)]
        if not modes:
            return None
        v = c.pick([v for v in live if self.cat.running(s, v)])
        cpu = c.pick(self.cat.running(s, v))
        k = v * self.vcpus + cpu
        root, mode, x = cfg.roots[s[self.root_ix][k]], c.pick(modes), c.pick(cfg.gvas)
        g = c.pick(self.data_gfns or list(range(cfg.gfns)))

        def access(a: str, user: bool) -> Operation:
            return Operation("guest_walk", {"v": v, "c": cpu, "x": x, "a": a, "u": user, "value": inputs.value(c, self.guest(s))})
        ops = [] if s[self.mode_ix][k] == mode else [Operation(SET_MODE, {"v": v, "c": cpu, "o": cfg.roles[mode]})]
        ops += [Operation("guest_map", {"v": v, "r": root, "x": x, "g": g, "w": False, "u": True, "nx": False,
                                        "a": True, "d": bool(c.take(2))}),
                access("write", False), access("fetch", False), access("read", False), access("write", True)]
        self.inputs["supervisor write to a read-only user page under CR0.WP=0"] += 1
        self.pending = ops[1:]
        return ops[0]

    @staticmethod
    def _chain(layout: dict[tuple[int, int], int], x: int) -> list[int]:
        """The gfns of gva x's tables under the layout convention."""
        return [scope.table_for(layout, x, level) for level in (4, 3, 2, 1)]

    def _follow(self, c: Choices, s: Any, link: tuple[int, int, int, int, int | None],
                aim: tuple[int, int, int, int]) -> None:
        """Queue the steps that walk a new link to an unsync leaf table: a vCPU of the VM loads the
        link's root (unless it runs on it: a CR3 load resyncs what the root's shadow reaches) and
        reads the gva whose walk through the link reads the aimed gpte z. At level 2, in the stale
        spte's role (the shadow page found for the table is then the one holding it), which must
        be resynced before it is linked there. At level 3 the walk reads the table as a page
        directory: z is first pointed at the table itself (a self-map), so that the walk goes on
        through the table as a page table to a present gpte, succeeds, and shadows the table as
        an upper one, which must then be write-protected again."""
        v, root, level, at, _ = link
        z, role, rz, table = aim
        ys = self._reading(level, at, z)
        if level == 3:  # and the table's entry for y as a page table present
            present = {w >> 12 & 511 for vv, r, w, t, _o in self._unsync_leaves(s, False) if (vv, r, t) == (v, rz, table)}
            ys = [y for y in ys if y >> 12 & 511 in present]
        if not ys:
            return
        k = v * self.vcpus
        cpu, y = c.take(self.vcpus), c.pick(ys)
        self.pending = [Operation("guest_walk", {"v": v, "c": cpu, "x": y, "a": "read", "u": False})]
        cur = s[self.root_ix][k + cpu]
        if cur is None or self.config.roots[cur] != root:
            self.pending.insert(0, Operation("cr3_load", {"v": v, "c": cpu, "r": root}))
        if level == 3:
            self.pending.insert(0, Operation("guest_map", {"v": v, "r": rz, "x": z, "g": table, "w": True, "u": True,
                                                           "nx": False, "a": True, "d": True}))
            if s[self.mode_ix][k + cpu] is not None:
                return
            role = c.take(len(self.config.roles))  # (the access needs the vCPU to have a paging mode)
        if s[self.mode_ix][k + cpu] != role:
            self.pending.insert(0, Operation(SET_MODE, {"v": v, "c": cpu, "o": self.config.roles[role]}))

    def _second_path(self, c: Choices, args: dict[str, Any], s: Any, rz: int, z: int) -> None:
        """Where a link to the leaf table of gva z in root rz is a second path to it: an entry of
        another root (mostly one a vCPU of the VM runs on, so a walk can follow), or of rz at a slot
        other than z's own; and at a gva whose region holds a gva with z's leaf index, the one
        whose walk through the link reads z's stale gpte."""
        level, gvas = args["level"], self.config.gvas
        slot = inputs.SHIFT[level]
        k = args["v"] * self.vcpus
        running = {self.config.roots[r] for r in s[self.root_ix][k:k + self.vcpus] if r is not None}
        others = [r for r in self.config.roots if r != rz]
        mine = [x for x in gvas if x >> slot != z >> slot]  # other slots of rz's own tables
        if others and (c.take(4) or not mine):
            args["r"] = c.pick(sorted(running & set(others)) or others)
            xs = list(gvas)
        else:
            args["r"] = rz
            xs = mine
        reach = [x for x in xs if self._reading(level, x, z)]
        if reach or xs:
            args["x"] = c.pick(reach or xs)

    def _second_leaf(self, c: Choices, args: dict[str, Any], mine: list[tuple[int, int, int, int, int]]) -> tuple[int, str]:
        """A walkable huge leaf written before, again with one right flipped (R/W, U/S or NX), or
        as it is (a second mapping of the same huge page, with its own A and D), under the same
        root: the caller puts it at another slot of its level. The two leaves' direct sps cover the
        same frames and must differ in role exactly by that right; two copies, by the D bit each
        walk leaves (a write through one must not make the other's sptes writable)."""
        _v, r, level, _at, e0 = c.pick(mine)
        args.update(r=r, level=level)
        return e0 ^ c.pick((inputs.RW, inputs.US, inputs.XD, 0)), f"level {level} huge leaf; same frames as an earlier entry"

    def _in_memory(self, gvas: Any, level: int, entry: int) -> list[int]:
        """The gvas whose page a huge leaf at `level` maps inside the VM's memory."""
        span = 1 << inputs.SHIFT[level]
        frame = entry & inputs.FRAME & ~(span - 1)
        return [x for x in gvas if (frame | x & span - 1) >> 12 < self.config.gfns]

    def _narrow_entry(self, c: Choices, args: dict[str, Any], s: Any) -> None:
        """The narrow generator's raw gpte (kept to measure what the wide one buys)."""
        args.update(bits=c.pick(GPTE_BITS), g=c.take(self.config.gfns))
        if self.focus and c.take(2):
            if args["level"] > 1 and args["bits"] & 0x80:
                args["g"] = 0  # a huge page needs an aligned frame: the only one in guest memory
            elif args["level"] > 1 and s is not None:
                # a page the guest maps as data becomes a page table: write protection must catch up
                used = [g for g in s[self.gmap_ix] if g is not None]
                if used:
                    args["g"] = c.pick(used)


class _ShrinkBudget(KeyboardInterrupt):
    """Shrinking ran out of time (a KeyboardInterrupt, so that Hypothesis lets it through at once)."""


START_LABEL = "dmm: the test case's scope, swarm and features"


class Case:
    """One batch's test cases: each draws its swarm (a boolean per operation), its scope (an
    integer), two features (booleans), then up to `steps` operations, one integer each (Choices
    decodes it).

    The draws go straight to Hypothesis's choice sequence (`ConjectureData.draw_integer`, an API of
    the pinned Hypothesis: a stateful machine's rule selection, argument dictionaries and step
    printing cost about 200 µs a step, more than a step of the bundled VMM). A step is one choice,
    so the shrinker drops steps by deleting choices; a test case ends at its failing step, so no
    choice follows it."""

    def __init__(self, runner: Runner, result: FuzzResult, steps: int, last: list[CaseResult],
                 tuning: Tuning = Tuning(), shrink_seconds: float = 60.0) -> None:
        self.runner, self.result, self.steps, self.last = runner, result, steps, last
        self.tuning, self.shrink_seconds = tuning, shrink_seconds
        self.caps = runner.adapter.capabilities()
        self.base = runner.config
        spec_actions = runner.judge.it.spec.actions  # type: ignore[union-attr]
        self.ops = sorted(n for n in list(spec_actions) + list(EXTRA) if n in self.caps.operations)
        self.bounds = self.caps.scope if tuning.vary_scope else None

    def __call__(self, data: Any) -> None:
        cd = data.conjecture_data
        keep = tuple(cd.draw_boolean() for _ in self.ops)
        where = cd.draw_integer(0, 2 ** 63 - 1)
        features = (cd.draw_boolean(), cd.draw_boolean())
        if features[0] and self.tuning.wide_inputs and cd.draw_boolean():
            # a huge-page-heavy test case on the campaign's own scope three times in four (0 decodes
            # to it): splitting huge pages takes shadow pages that the scarce scopes do not have (half
            # the accesses through a huge leaf ran out of memory there)
            where = 0
        drawer, swarm = self.start(keep, where, features)
        try:
            for _ in range(self.steps):
                if not self.step(drawer, swarm, cd.draw_integer(0, 2 ** 63 - 1)):
                    return
            try:  # the steps judged on partial reads: the whole state is as their events explain
                self.runner.verify()
            except Failure as f:
                if not self._failed(f, after_last=True):
                    raise
        finally:
            self.result.inputs.update(drawer.inputs)

    def _check_budget(self) -> None:
        if self.result.shrink_until is not None and time.perf_counter() > self.result.shrink_until:
            # Shrinking replays the failure many times: an implementation that hangs until the
            # step timeout would make that take hours. The smallest failing case so far is kept.
            raise _ShrinkBudget()

    def start(self, keep: tuple[bool, ...], where: int, features: tuple[bool, bool]) -> tuple[Drawer, list[str]]:
        """Reset the implementation on the test case's scope; its drawer and swarm."""
        self._check_budget()
        runner, result, ops = self.runner, self.result, self.ops
        # The scope first (0 decodes to the campaign's own), then the swarm.
        config = scope.draw(Choices(where), self.base, self.bounds) if self.bounds is not None else self.base
        runner.reset(config)
        self.last[:] = [CaseResult(runner.records, config=config, it=runner.judge.it)]  # type: ignore[union-attr]
        result.examples += 1
        for cls in scope.describe(config, self.base):
            result.scopes[cls] += 1
        judge = runner.judge
        assert judge is not None
        if judge.catalogue is None:  # the legality plans live as long as the scope's oracles
            judge.catalogue = Catalogue(judge.it, self.caps.operations)
        # (at level black-box the spec state has no VMM side: the VMM's operations go unfiltered)
        cat = judge.catalogue if runner.level != "black-box" else levels.Blind(judge.catalogue)
        drawer = Drawer(cat, config, [n for n in ops if n in cat.ops or n in EXTRA], self.tuning, features)
        drawer.page = self._page
        for name, on in zip(("huge-heavy", "aliasing"), (drawer.huge_heavy, drawer.aliasing)):
            result.scopes[f"feature {name}"] += on
        # a huge-page-heavy test case always has raw edits: they are how huge entries are made
        must = CORE + (("gpte_write",) if drawer.huge_heavy else ())
        chosen = [n for n, k in zip(ops, keep) if (n in must or k) and n in drawer.ops]
        return drawer, [n for n in chosen for _ in range(WEIGHT.get(n, 1))]

    def _page(self, v: int, g: int) -> bytes | None:
        """VM v's page g as the ideal machine holds it (what the guest must see there)."""
        ideal = getattr(self.runner.oracle, "ideal", None)
        vm = ideal.vms.get(v) if ideal is not None else None
        return vm.mem.read(g << 12, 4096) if vm is not None else None

    def step(self, drawer: Drawer, swarm: list[str], choice: int) -> bool:
        """One step; False when the test case ends (an accepted divergence: the rest is not judged)."""
        self._check_budget()
        runner, result = self.runner, self.result
        op = drawer.draw(Choices(choice), swarm, runner.oracle.state, result)  # type: ignore[union-attr]
        if op is None:
            return True
        result.generated[op.action] += 1
        try:
            runner.step(op)
            result.steps += 1
            if not result.steps % SAMPLE_EVERY:
                result.sample()
        except Failure as f:
            if self._failed(f):
                return False
            raise
        return True

    def _failed(self, f: Failure, after_last: bool = False) -> bool:
        """A failure of this test case: True when it is an accepted divergence (the test case ends
        there: the ideal machine, or the spec state, and the implementation now disagree, so
        nothing after it can be judged); else it is kept (the first, the smallest) for the report."""
        result = self.result
        if result.known is not None and result.known.accept(f) is not None:
            return True
        self.last[0].failure = f
        found = CaseResult(list(self.runner.records), f, self.last[0].config, self.last[0].it)
        if result.first is None:
            result.first = found
            result.shrink_until = time.perf_counter() + self.shrink_seconds
        if result.smallest is None or len(found.records) < len(result.smallest.records):
            result.smallest = found
        if result.first_failure_steps is None:
            result.first_failure_steps = result.steps + (0 if after_last else 1)
            result.first_failure_seconds = time.perf_counter() - result.started
        return False


def _run_case(data: Any) -> None:
    """The Hypothesis test every batch runs (the Case it calls is bound per batch, in _BATCH)."""
    _BATCH[0](data)


_BATCH: list[Case] = []
_DIGEST: list[bytes] = []


def _database_key() -> bytes:
    """The example database's key for dmm's test cases: the same in every batch and every process
    (Hypothesis would otherwise hash the test's source anew for every batch)."""
    if not _DIGEST:
        from hypothesis.internal.reflection import function_digest

        _DIGEST.append(function_digest(Case.__call__) + function_digest(_run_case))
    return _DIGEST[0]


@contextmanager
def seed_alone() -> Iterator[None]:
    """While a campaign runs, Hypothesis draws from the seed alone.

    Hypothesis mixes integer literals it finds in the loaded modules outside site-packages (the VMM
    under test, an adapter, the launching script) into about one draw in twenty, so an edit to any
    loaded file would change the campaign. Those "local constants" are switched off here (its global
    constants depend only on its version, which pyproject.toml pins and traces record). The hook is
    a private one of the pinned Hypothesis: if it is missing the campaign refuses to run rather than
    silently losing reproducibility."""
    from hypothesis.internal.conjecture import providers

    real = getattr(providers, "_get_local_constants", None)
    if real is None or not hasattr(providers, "CONSTANTS_CACHE"):
        raise RuntimeError(f"hypothesis {hypothesis.__version__} is not a version dmm supports "
                           "(pyproject.toml pins the tested range)")
    none = providers.Constants()
    providers._get_local_constants = lambda: none
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = real
        providers.CONSTANTS_CACHE.cache.clear()


def fuzz(adapter_factory: Callable[[], Adapter], spec: Any, config: Config, *, seconds: float | None = None,
         examples: int | None = None, seed_: int = 0, steps_per_case: int = 40, step_timeout: float = 10.0,
         batch: int = 10, progress: Callable[[FuzzResult], None] | None = None,
         tuning: Tuning = Tuning(), memory_limit_mib: int | None = 4096, shrink_seconds: float = 60.0,
         level: str | None = None, known: KnownDivergences | None = None,
         database: ExampleDatabase | None = None, full_readback: bool = False) -> FuzzResult:
    """Run test cases until `seconds` or `examples` is reached, or the first failure (shrunk). Each
    test case runs on a scope of its own within the adapter's bounds (`tuning.vary_scope`); `config`
    is the campaign's own scope (and the mutant, if any). `level`: judge the implementation at this
    conformance level (levels.py; None: the one it declares). `known`: accepted divergences
    (divergences.py): a failure one of them matches ends its test case, counted, instead of the
    campaign. `database`: a Hypothesis example database (campaign.py): failing examples are saved to
    it, and the ones it holds are replayed first in every batch. `full_readback`: read the whole
    abstract state after every step (else only the parts a step's events say may have changed, with
    a full read every few steps and at the end of each test case: runner.py, READBACK_GUARD)."""
    from .trace import make_adapter

    adapter = levels.at_level(make_adapter(adapter_factory, step_timeout), level)
    config = scope.clamp(config, adapter.capabilities())  # no more vCPUs than the adapter runs
    check_scope(adapter, config, step_timeout)
    runner = Runner(adapter, spec, config, step_timeout, full_readback=full_readback)
    result = FuzzResult(getattr(adapter, "name", type(adapter).__name__), seed_, memory_limit_mib=memory_limit_mib)
    result.level = levels.declared(adapter.capabilities())
    if known is not None:
        from .divergences import Tally

        result.known = Tally(known)
    if seconds is None and examples is None:
        examples = 100
    start = result.started = time.perf_counter()
    result.sample(start)
    result.it, result.config = runner.judge.it, config  # type: ignore[union-attr]
    last: list[CaseResult] = []
    # Whatever the campaign prints (Hypothesis's notes on a failing example, an adapter's debug
    # output) goes to stderr: stdout is the result's alone, and with --json it is pure JSON.
    with seed_alone(), redirect_stdout(sys.stderr), alarm_handler():
        _campaign(runner, result, last, seconds, examples, seed_, steps_per_case, batch, progress, tuning,
                  shrink_seconds, database)
    result.seconds = time.perf_counter() - start
    result.next_sample = 0.0  # the end is always sampled
    result.sample(start + result.seconds)
    if result.first_failure_seconds is not None:
        result.seconds_shrinking = result.seconds - result.first_failure_seconds
    if hasattr(adapter, "close"):
        try:  # a close() that fails or hangs must not lose what the campaign found
            guarded(adapter.close, "the adapter's close()", step_timeout)  # type: ignore[attr-defined]
        except Failure as e:
            result.warnings.append(e.message)
    return result


def check_scope(adapter: Adapter, config: Config, timeout: float) -> None:
    """Up front: the adapter can lay the guest out at the campaign's scope (a reset that raises
    ValueError refuses it: bad input, exit 2, not a verdict). Any other failure is left to the
    campaign, where it is a verdict with a trace. The scope is clamped to the vCPUs the adapter
    runs, as the campaign clamps it."""
    from .trace import TraceError

    config = scope.clamp(config, adapter.capabilities())
    mutants = adapter.capabilities().mutants
    if config.mutant is not None and config.mutant not in mutants:
        listed = f"it lists {len(mutants)}: " + ", ".join(mutants[:8]) + (", ..." if len(mutants) > 8 else "") \
            if mutants else "it lists none in Capabilities.mutants"
        raise TraceError(f"--mutant {config.mutant!r}: not a seeded bug of this adapter ({listed})")

    bounds = adapter.capabilities().scope
    if config.shadow_pages is not None and (bounds is None or not bounds.shadow_pages):
        raise TraceError(f"shadow_pages = {config.shadow_pages}: the adapter takes no shadow-page limit "
                         "(its scope gives no shadow_pages)")

    def attempt() -> ValueError | None:
        try:
            adapter.reset(config)
        except ValueError as e:
            return e
        return None

    try:
        refused = guarded(attempt, "reset", timeout)
    except Failure:
        return
    if refused is not None:
        raise TraceError(f"the adapter refuses the configuration: {refused}")


def memory_mib(adapter: Adapter) -> float:
    """The implementation's resident memory in MiB: an adapter that runs it elsewhere says how much
    (`rss_bytes()`); an in-process one is the harness process itself."""
    rss = getattr(adapter, "rss_bytes", None)
    if callable(rss):
        try:
            return float(rss()) / 2**20
        except Exception:  # noqa: BLE001 - a child that died: its verdict comes from the step, not here
            return 0.0
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; the peak


def _over_memory(runner: Runner, result: FuzzResult) -> bool:
    """Checked between batches of test cases: memory grows across them, so a leak is a verdict on
    the campaign, not on one shrinkable test case (it has no trace)."""
    now = memory_mib(runner.adapter)
    result.memory_mib_peak = max(result.memory_mib_peak, now)
    if result.memory_limit_mib and now > result.memory_limit_mib:
        result.failure = Failure("memory", f"the implementation's memory grew from {result.memory_mib_start:,.0f} "
                                           f"MiB to {now:,.0f} MiB in {result.steps:,} steps ({result.examples:,} test "
                                           f"cases), past the limit of {result.memory_limit_mib:,} MiB (--memory-limit)")
        return True
    return False


def _campaign(runner: Runner, result: FuzzResult, last: list[CaseResult], seconds: float | None,
              examples: int | None, seed_: int, steps_per_case: int, batch: int,
              progress: Callable[[FuzzResult], None] | None, tuning: Tuning, shrink_seconds: float = 60.0,
              database: ExampleDatabase | None = None) -> None:
    start, n = result.started, 0
    result.memory_mib_start = result.memory_mib_peak = memory_mib(runner.adapter)
    while True:
        if _over_memory(runner, result):
            break
        if seconds is not None and time.perf_counter() - start >= seconds:
            break
        if examples is not None and result.examples >= examples:
            break
        todo = batch if examples is None else min(batch, examples - result.examples)
        _BATCH[:] = [Case(runner, result, steps_per_case, last, tuning, shrink_seconds)]
        test = settings(
            max_examples=todo, deadline=None,
            database=database,  # explicit: a loaded profile's database must not creep in
            derandomize=False,  # the seed is ours (below): a loaded profile must not replace it
            suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
            phases=([Phase.reuse] if database is not None else []) + [Phase.generate, Phase.shrink],
            # @seed before the settings: applied after them, it would drop the example database
            print_blob=False)(seed(seed_ * 1_000_003 + n)(given(st.data())(_run_case)))
        test._hypothesis_internal_database_key = _database_key()  # type: ignore[attr-defined]
        n += 1
        try:
            test()
        except Failure as f:
            _keep(result, last, f)
            break
        except Flaky as e:  # the implementation answered the same steps differently: itself a finding
            _keep(result, last, Failure("crash", f"the implementation is not deterministic: {e}"))
            break
        except _ShrinkBudget:
            result.shrink_cut = True
            _keep(result, [result.smallest], result.smallest.failure)  # type: ignore[list-item, union-attr]
            break
        except KeyboardInterrupt:
            # Ctrl-C: a failure already found is reported (as found, when shrinking was cut short)
            result.interrupted = True
            if result.first is not None:
                _keep(result, [result.first], result.first.failure)  # type: ignore[arg-type]
            break
        finally:
            result.seconds = time.perf_counter() - start
            result.seconds_in_impl, result.seconds_in_oracle = runner.timing.impl, runner.timing.oracle
            result.coverage = runner.coverage
            result.skipped = runner.skipped
            result.reads = runner.reads
            if progress:
                progress(result)


def _keep(result: FuzzResult, last: list[CaseResult], f: Failure) -> None:
    """The shrunk failing test case: its steps, and the scope and interpreter they ran with."""
    result.failure = f
    if last:
        result.shrunk = list(last[0].records)
        result.config, result.it = last[0].config or result.config, last[0].it or result.it
