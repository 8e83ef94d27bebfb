"""The generator's input values over the whole x86 input space: guest page-table entries at every
level with every field, huge entries with every combination of rights and frames, gfns at the edges
of memory and on the guest's own tables, stores of 1, 2, 4, 8 and 16 bytes at any alignment.

Each distribution is mostly ordinary — what a guest kernel writes and does — and sometimes at an
edge, because a VMM's bugs live at both: the ordinary case must run often enough to build deep
shadow state, the edges often enough that each is tried in every short campaign. Every draw also
names its input class, so a campaign reports what it tried (FuzzResult.inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

P, RW, US, PWT, PCD, A, D, PS, G = (1 << i for i in range(9))
XD = 1 << 63
AVAIL_LOW = 0x7 << 9  # bits 11:9, ignored by the MMU
AVAIL_HIGH = 0x7F << 52  # bits 58:52, ignored
PKEY = 0xF << 59  # protection key: ignored with CR4.PKE clear, as here
MAXPHYADDR = 40
RSVD_HIGH = ((1 << 52) - 1) & ~((1 << MAXPHYADDR) - 1)  # bits 51:40
FRAME = ((1 << 52) - 1) & ~0xFFF  # bits 51:12: the frame, and the reserved bits above MAXPHYADDR
SHIFT = {1: 12, 2: 21, 3: 30, 4: 39}
SIZES = (1, 2, 4, 8, 16)

# Store values: small, repeated (so pages become identical and get merged), page-table-shaped (so a
# store into a guest table makes a mapping), and all ones (every reserved bit).
VALUES = (0, 1, 0xDEADBEEF, 0x8027, 0x9067, 0x3027 | XD, 0xFFFFFFFFFFFFFFFF)


class Pick(Protocol):
    def take(self, k: int) -> int: ...

    def pick(self, seq: object) -> object: ...


@dataclass(frozen=True)
class Guest:
    """What the generator knows of the guest when it aims: memory size, its tables, its data."""

    gfns: int
    tables: dict[int, list[int]]  # level -> gfns of the guest's tables at that level
    mapped: tuple[int, ...] = ()  # gfns some gva maps now
    slots: tuple[int, ...] = (0,)  # entry indices the guest's gvas use, at any level (where a store into a table matters)
    earlier: tuple[tuple[int, int], ...] = ()  # (level, entry) of the raw entries written before in this test case
    unsync: tuple[int, ...] = ()  # gfns of guest tables the VMM left writable (unsync leaf tables)


def gfn(c: Pick, g: Guest, level: int = 1) -> tuple[int, str]:
    """A frame for an entry at `level` (1: a leaf's page; 2-4: the table below, or a huge leaf's
    first frame when the caller sets PS)."""
    k = c.take(16)
    if k < 9:
        return c.take(g.gfns), "gfn ordinary"
    if k < 11 and g.tables.get(max(level - 1, 1)):
        if level in (2, 3) and g.unsync and c.take(2):
            # a second path to a leaf table the VMM left unsync: linking its shadow page there
            # (level 2) must resync it first ("synchronize the shadow page table before linking
            # it"); read as a page directory (level 3) it is an upper table, whose stores must trap
            return c.pick(g.unsync), "gfn an unsync leaf table"  # type: ignore[return-value]
        return c.pick(g.tables[max(level - 1, 1)]), "gfn a guest table"  # type: ignore[return-value]
    if k < 13 and g.mapped:
        return c.pick(g.mapped), "gfn mapped elsewhere"  # type: ignore[return-value]
    if k < 15:
        return g.gfns - 1 + c.take(3), "gfn at the end of memory"  # gfns-1 (last), gfns, gfns+1 (beyond)
    return ((1 << (MAXPHYADDR - 12)) - 1, 1 << 20)[c.take(2)], "gfn far beyond memory"


def gpte(c: Pick, g: Guest, level: int, huge_heavy: bool = False) -> tuple[int, str]:
    """A guest page-table entry for `level`, with the name of its class. `huge_heavy` (a swarm
    feature of the test case): huge leaves and entries over earlier frames most of the time."""
    if c.take(16) == 0:  # not present: the other bits are the guest's to use, any value at all
        return c.take(1 << 62) << 1, "gpte not present"
    same = [e for lvl, e in g.earlier if lvl == level and e & P]
    huge = level in (2, 3) and (c.take(3) != 0 if huge_heavy else c.take(3) == 0) \
        or level == 4 and c.take(16) == 0  # PS in a PML4E: reserved
    if same and c.take(2 if huge_heavy else 4) == 0:
        # An earlier entry with one right flipped (R/W, U/S or NX): two paths to the same frames that
        # differ in one permission, the classic way shadow pages get shared under the wrong role.
        e0 = c.pick(same)
        cls = "same frames as an earlier entry"
        return e0 ^ c.pick((RW, US, XD)), f"level {level} {'huge leaf' if e0 & PS and level > 1 else 'leaf' if level == 1 else 'table entry'}; {cls}"
    if huge:
        frame, cls = _huge_frame(c, g, level)
    else:
        frame, cls = gfn(c, g, level)
        frame <<= 12
    e = frame | P
    # rights and A/D: each half the time, so every combination of W, U, NX, A, D comes up
    for bit in (RW, US, A, D, XD):
        if c.take(2):
            e |= bit
    if level == 1 and c.take(8) == 0:
        e |= PS  # the PAT bit of a 4 KiB leaf: not a size bit
    if huge:
        e |= PS
    # bits the MMU ignores (or that change only caching): a VMM must neither trip on nor lose them
    if c.take(8) == 0:
        e |= c.pick((PWT, PCD, G, AVAIL_LOW, AVAIL_HIGH, PKEY))  # type: ignore[operator]
    if c.take(16) == 0:
        e |= 1 << (MAXPHYADDR + c.take(52 - MAXPHYADDR))  # one reserved bit (51:40)
        cls = "gpte reserved bit"
    kind = "huge leaf" if huge else "leaf" if level == 1 else "table entry"
    return e, f"level {level} {kind}; {cls}"


def unsync_link(c: Pick, g: Guest) -> int:
    """A table entry to a leaf table the VMM left unsync (g.unsync not empty): present, accessed,
    writable and user, as the guest's own upper entries are, so that a walk through it finds the
    table's existing shadow page (whose role carries the rights of the entries above it)."""
    table: int = c.pick(g.unsync)  # type: ignore[assignment]
    return table << 12 | P | RW | US | A


def walkable_huge(entry: int, level: int) -> bool:
    """A present huge leaf without reserved bits: no frame bits below its size (bit 12 is PAT, as a
    PS leaf reads it) and none above MAXPHYADDR, so that a walk through it can succeed."""
    low = ((1 << SHIFT[level]) - 1) & ~0x1FFF
    return level in (2, 3) and entry & (P | PS) == P | PS and not entry & (low | RSVD_HIGH)


ROLES = tuple((a, u) for a in ("read", "write", "fetch") for u in (False, True))


def role(c: Pick, entry: int, wp: bool, nxe: bool, smep: bool, smap: bool) -> tuple[str, bool]:
    """An access (kind, user) that a leaf's own rights allow under the VM's controls, when one does:
    a user access needs U/S; a write R/W, or a supervisor one with CR0.WP clear; a fetch no XD
    (with NXE), and from a user page not by the supervisor under SMEP; the supervisor's data
    accesses to a user page fault under SMAP. The walk succeeds and fills the shadow, in a role that
    differs from another leaf's over the same frames exactly where their rights do."""
    def allows(a: str, u: bool) -> bool:
        user_page = bool(entry & US)
        if u and not user_page or a == "write" and not entry & RW and (u or wp):
            return False
        if a == "fetch":
            return not (nxe and entry & XD) and not (smep and user_page and not u)
        return not (smap and user_page and not u)
    fits = [r for r in ROLES if allows(*r)]
    return c.pick(fits or ROLES)  # type: ignore[return-value]


def _huge_frame(c: Pick, g: Guest, level: int) -> tuple[int, str]:
    """A huge leaf's frame: aligned at memory's start (the only one inside a small VM), aligned
    beyond memory, or misaligned (bits 20:13 or 29:13 set: reserved, the walk must fault)."""
    span = 1 << SHIFT[level]
    k = c.take(8)
    if k < 5:
        return 0, "huge frame at 0"
    if k < 7:
        return span * (1 + c.take(2)), "huge frame beyond memory"
    return (c.take(span >> 12) << 12) or 0x2000, "huge frame misaligned"


def store(c: Pick, g: Guest | None = None) -> tuple[int, int, str]:
    """(size, offset in the page, class): mostly 8-byte aligned stores; narrower and wider ones, at
    any alignment, straddling two 8-byte entries, or ending at the page's last byte. Where the page
    is a guest table, only the entries the guest's gvas use matter, so offsets favour those."""
    size = 8 if c.take(4) else c.pick((1, 2, 4, 16))  # what a 64-bit guest mostly does
    k = c.take(8)
    used = g.slots if g is not None else (0,)
    if k < 4:
        off, cls = (0, "aligned at 0") if c.take(2) else (min(8 * c.pick(used), 4096 - size), "aligned at an entry in use")
    elif k < 6:
        off, cls = size * c.take(4096 // size), "aligned"
    elif k < 7 and size > 1:
        # across the boundary just before or after an entry in use
        edge = 8 * c.pick(used) + 8 * c.take(2)
        off, cls = min(max(edge - size // 2, 0), 4096 - size), "straddles two entries"
    else:
        off, cls = 4096 - size - c.take(2), "at the end of the page"
    return size, off, f"{size}-byte store {cls}"


def non_canonical(c: Pick, gva: int) -> int:
    """A non-canonical address made from a canonical gva (bits 63:47 no longer all equal): bit 47
    flipped, or bits 63:48 — either way every byte of the page is non-canonical."""
    return gva ^ (1 << 47 if c.take(2) else 0xFFFF << 48)


# The gvas a burst drops at once (fuzz.Drawer._aim_burst): more than a VMM's list of pages to
# invalidate one by one usually holds (the bundled VMM's: 8), so that it must fall back to a full flush.
BURST = 9


def classes() -> list[str]:
    """Every input class the draws above name: what a campaign could have tried."""
    frames = ("gfn ordinary", "gfn a guest table", "gfn mapped elsewhere", "gfn at the end of memory",
              "gfn far beyond memory", "gpte reserved bit")
    huge = ("huge frame at 0", "huge frame beyond memory", "huge frame misaligned", "gpte reserved bit")
    from .operations import REFUSABLE

    out = ["gpte not present", "non-canonical gva"] + [f"request the spec forbids: {name}" for name in REFUSABLE]
    out += [f"level {level} {kind}; same frames as an earlier entry" for level, kind in
            ((1, "leaf"), (2, "table entry"), (2, "huge leaf"), (3, "table entry"), (3, "huge leaf"), (4, "table entry"))]
    out += [f"level {level} table entry; gfn an unsync leaf table" for level in (2, 3)]
    out.append(f"burst of {BURST} writable sptes weakened at once")
    out.append("merge of a guest table and its twin")
    out.append("supervisor write to a read-only user page under CR0.WP=0")
    for level in (1, 2, 3, 4):
        out += [f"level {level} {'leaf' if level == 1 else 'table entry'}; {f}" for f in frames]
        if level > 1:
            out += [f"level {level} huge leaf; {f}" for f in huge]
    for size in SIZES:
        for how in ("aligned at 0", "aligned at an entry in use", "aligned", "straddles two entries",
                    "at the end of the page"):
            if how == "straddles two entries" and size == 1:
                continue
            out += [f"{size}-byte {kind} {how}" for kind in ("load", "store")]
    return out


def value(c: Pick, g: Guest) -> int:
    """A store's value: a few fixed ones (pages become identical), or a gpte (the store may land in
    a guest table)."""
    if c.take(4):
        return c.pick(VALUES)  # type: ignore[return-value]
    return gpte(c, g, 1 + c.take(4))[0]
