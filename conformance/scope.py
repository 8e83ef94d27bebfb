"""Scope per test case: every test case of a campaign runs on a configuration of its own, drawn
within the bounds the adapter declares (`Capabilities.scope`), and recorded in its trace.

One fixed scope hides whole classes of bugs: with exactly as many gvas as a VMM's page-by-page
flush limit the path past it never runs; with plenty of machine pages reclaim and out-of-memory
almost never happen; with no budget or quota their checks never run; with many slots the swap device
is never full. The draw below is mostly ordinary and sometimes at the edges, and index 0 of every
choice is the campaign's own configuration, so a shrunk failure moves toward the scope it started
from.

The guest layout convention the harness assumes when it picks roots and biases page-table edits
(`guest_tables`): root r is a PML4 at gfn r, followed by one PDPT per 512 GiB region of the gvas,
one PD per 1 GiB region, one PT per 2 MiB region, at consecutive gfns
(docs/writing-an-adapter.md, "The guest the adapter plays"). An adapter that lays its tables out
otherwise still runs: only the generator's aim is off.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from .adapter import ROLE_BITS, Bounds, Capabilities, Config, role_name

PAGE = 0x1000
REGION = 1 << 21  # what one page table maps
SHIFT = {4: 39, 3: 30, 2: 21, 1: 12}  # the gva bits each level's table is indexed from
# 2 MiB regions the gvas may come from, as base addresses: the default two, the first and last of
# the first GiB (an index at the edge of the page directory), one in the middle, the second GiB
# (another PD), the top of the lower half and the bottom of the upper half (PML4 entries 255 and
# 256, where canonical addresses change sign), and a page-directory edge high in the upper half.
REGIONS = (0x400000, 0x600000, 0x0, 0x3FE00000, 0x19000000, 0x40000000, 0x7FFFFFE00000,
           0xFFFF800000000000, 0xFFFFFF7FFFE00000)


class Pick(Protocol):
    def take(self, k: int) -> int: ...


def draw(c: Pick, base: Config, b: Bounds) -> Config:
    """A configuration for one test case: the base one half the time, else each dimension varied
    within the bounds. (Measured on the history mutants, seed 1: half gave 16/24 killed, three in
    four 14/24 but each kill faster, none at all 17/24 but never a budget bug — deep shadow state
    grows on the ordinary scope, resource bugs need the others.)"""
    if c.take(2) == 0:  # 0, as every first choice, decodes to the base scope
        return base
    vms = 1 + c.take(b.vms)
    regions = 1 + c.take(min(b.regions, len(REGIONS)))
    gvas = _gvas(c, regions, max(1, min(b.gvas, regions * 512)))
    roots_n = 1 + c.take(b.roots)
    stride = tables_per_root(gvas)
    while roots_n > 1 and roots_n * stride + 1 > b.gfns:
        roots_n -= 1
    if stride + 1 > b.gfns:  # no room for the tables: keep the base scope
        return base
    roots = tuple(i * stride for i in range(roots_n))
    tables = roots_n * stride
    gfns = min(b.gfns, tables + (1, 2, 4, 8, 16)[c.take(5)])
    # Machine pages: scarce (reclaim and out-of-memory are common), about what one VM wants, or
    # plenty (the ordinary case).
    want = vms * gfns
    mfns = max(1, min(b.mfns, (2, 4, max(2, gfns // 2), gfns, want + 8, want + 8)[c.take(6)]))
    budget = None
    if b.budget and c.take(2):
        budget = 1 + c.take(mfns)  # tight: at most every mfn, often far fewer
    slots = 1 + c.take(b.slots)
    quota = None  # drawn late: the earlier draws decode as they did before the quota
    if b.quota and c.take(2):
        quota = 1 + c.take(mfns)  # per VM: tight, at most every mfn
    vcpus = 1 + c.take(b.vcpus)  # then the vCPUs and the roles, for the same reason
    roles = _roles(c, base.roles)
    shadow_pages = None  # and last the shadow-page limit: from the fewest the adapter runs on to 4x that
    if b.shadow_pages and c.take(2):
        shadow_pages = b.shadow_pages + c.take(3 * b.shadow_pages + 1)
    if regions > 1 and c.take(4) == 0:  # drawn after everything else, for the reason above
        gvas = _mirrored(gvas, tables, gfns)
    return replace(base, vms=vms, gfns=gfns, mfns=mfns, slots=slots, roots=roots, gvas=gvas, budget=budget,
                   quota=quota, vcpus=vcpus, roles=roles, shadow_pages=shadow_pages)


def _mirrored(gvas: tuple[int, ...], tables: int, gfns: int) -> tuple[int, ...]:
    """The same gvas' regions, each with the same page offsets, taken from the data pages
    (tables <= offset < gfns). Two huge leaves in two regions over one frame then map one data page
    at one gva in each: the aliasing that a shadow keying a huge page's direct sps wrongly (by a D
    bit read before the walk, by the rights of the path above) shows only there. The offsets of a
    random layout rarely agree, and a layout from the start of a region puts them on the tables
    (frame 0 holds every root's tables). The tables per root depend only on the regions, so the
    roots, the tables and the gfns drawn for the gvas stay right."""
    regions = sorted({x & ~(REGION - 1) for x in gvas})
    per = max(1, min(gfns - tables, len(gvas) // len(regions)))
    return tuple(sorted(r + p * PAGE for r in regions for p in range(tables, tables + per)))


# Every paging mode a role can name (the 16 combinations of ROLE_BITS), by name.
ALL_ROLES = tuple(role_name({b for i, b in enumerate(ROLE_BITS) if k >> i & 1}) for k in range(1 << len(ROLE_BITS)))


def _roles(c: Pick, base: tuple[str, ...]) -> tuple[str, ...]:
    """1-3 distinct paging modes: the base ones half the time (WP on and off, NXE on: what the
    shadow's meaning depends on most), else any of the sixteen (SMEP, SMAP, NXE off)."""
    if c.take(2) == 0:
        return base
    pool = list(ALL_ROLES)
    return tuple(pool.pop(c.take(len(pool))) for _ in range(1 + c.take(3)))  # without replacement


def clamp(config: Config, caps: Capabilities) -> Config:
    """The configuration within what the adapter runs: no more vCPUs than its scope gives (an
    adapter that gives no scope runs one)."""
    most = caps.scope.vcpus if caps.scope is not None else 1
    return config if config.vcpus <= most else replace(config, vcpus=most)


def _gvas(c: Pick, regions: int, most: int) -> tuple[int, ...]:
    """`most` or fewer gva pages over `regions` 2 MiB regions: consecutive runs from a random start,
    or spread, with the first and last page of a region among them now and then."""
    n = 1 + c.take(most)
    chosen = sorted(REGIONS, key=lambda r: c.take(8))[:regions]  # all zeros: the first ones
    out: set[int] = set()
    for i, region in enumerate(chosen):
        k = n // regions + (1 if i < n % regions else 0)
        if k == 0:
            continue
        how = c.take(4)
        if how == 0:  # consecutive from the start of the region
            pages = range(k)
        elif how == 1:  # consecutive up to the last page of the region
            pages = range(512 - k, 512)
        else:  # spread
            pages = {c.take(512) for _ in range(k)}
        out.update(region + p * PAGE for p in pages)
    return tuple(sorted(out)) or (REGIONS[0],)


def mirrored(config: Config) -> bool:
    """The gvas lie in several 2 MiB regions at the same page offsets, every offset a data page
    (past the tables, in memory): what `_mirrored` makes."""
    by_region: dict[int, set[int]] = {}
    for x in config.gvas:
        by_region.setdefault(x & ~(REGION - 1), set()).add(x % REGION // PAGE)
    offsets = set().union(*by_region.values()) if by_region else set()
    tables = len(config.roots) * tables_per_root(config.gvas)
    return (len(by_region) > 1 and len({frozenset(o) for o in by_region.values()}) == 1
            and all(tables <= p < config.gfns for p in offsets))


def canonical(gva: int) -> bool:
    """Bits 63:47 all equal: an address the CPU translates (others raise #GP)."""
    top = gva >> 47
    return 0 <= gva < 1 << 64 and top in (0, (1 << 17) - 1)


def _prefixes(gvas: tuple[int, ...], level: int) -> list[int]:
    """The distinct tables of `level` the gvas need, by the gva bits above what one of them maps."""
    return sorted({x >> (SHIFT[level] + 9) for x in gvas})


def tables_per_root(gvas: tuple[int, ...]) -> int:
    """Guest tables one root needs for the gvas: its PML4 and the PDPTs, PDs and PTs under it."""
    return 1 + sum(len(_prefixes(gvas, lvl)) for lvl in (3, 2, 1))


def guest_tables(root: int, gvas: tuple[int, ...]) -> dict[tuple[int, int], int]:
    """The layout convention: {(level, gva >> (its shift + 9)): gfn} of root's tables — the PML4 at
    the root, then the PDPTs, PDs and PTs in order of the gvas they serve, at consecutive gfns."""
    out, g = {(4, 0): root}, root + 1
    for lvl in (3, 2, 1):
        for prefix in _prefixes(gvas, lvl):
            out[(lvl, prefix)] = g
            g += 1
    return out


def table_for(tables: dict[tuple[int, int], int], gva: int, level: int) -> int:
    """The gfn of the `level` table on gva's path."""
    return tables[(level, gva >> (SHIFT[level] + 9) if level < 4 else 0)]


def table_gfns(config: Config) -> dict[int, list[int]]:
    """The gfns of the guest's tables by level under the layout convention above."""
    out: dict[int, list[int]] = {4: [], 3: [], 2: [], 1: []}
    for r in config.roots:
        for (lvl, _), g in guest_tables(r, config.gvas).items():
            out[lvl].append(g)
    return {lvl: [g for g in gs if g < config.gfns] for lvl, gs in out.items()}


def describe(config: Config, default: Config) -> list[str]:
    """The scope classes a configuration belongs to (coverage: which scopes a campaign reached)."""
    out = []
    if config == default:
        out.append("default scope")
    out.append(f"vms={config.vms}")
    out.append(f"roots={len(config.roots)}")
    n = len(config.gvas)
    out.append("gvas 1" if n == 1 else "gvas 2-7" if n < 8 else "gvas 8" if n == 8 else "gvas >8")
    if any((x >> 21) % 512 in (0, 511) for x in config.gvas):
        out.append("gvas at a page directory edge")
    if len({x >> 30 for x in config.gvas}) > 1:
        out.append("gvas in several 1 GiB regions")
    if any(x >> 63 for x in config.gvas):
        out.append("gvas in the upper half")
    if any((x // PAGE) % 512 in (0, 511) for x in config.gvas):
        out.append("gvas at a page table edge")
    if mirrored(config):
        out.append("gvas at equal data-page offsets in several regions")
    if config.mfns < config.gfns:
        out.append("mfns < gfns (scarce)")
    elif config.mfns < config.gfns * config.vms:
        out.append("mfns < gfns x vms")
    if config.budget is not None:
        out.append("budget < mfns" if config.budget < config.mfns else "budget = mfns")
    if config.quota is not None:
        out.append("quota < mfns" if config.quota < config.mfns else "quota = mfns")
    out.append(f"slots={config.slots}")
    out.append(f"vcpus={config.vcpus}")
    out.append(f"roles={len(config.roles)}")
    if any("wp" not in r.split("+") for r in config.roles) and any("wp" in r.split("+") for r in config.roles):
        out.append("roles with and without WP")
    if config.shadow_pages is not None:
        out.append("shadow_pages limit")
    return out
