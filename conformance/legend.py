"""From the spec's element names (`vm1`, `root2`, `gva1`, `mfn4`) back to the implementation's values.

The oracles judge in spec terms, so blame, diffs and spec steps name elements by index; a person
debugging the VMM needs the address, the gfn or the machine frame. The mapping is the abstraction's
(abstraction.py): vmN is VM id N, rootN the N-th of config.roots, gvaN the N-th of config.gvas, gfnN
gfn N, mfnN the N-th DMM machine page (first_mfn + N), slotN slot N.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .adapter import Config
from .binding import GFN, GVA, MFN, ROOT, SLOT, SORTS, VM

ELEMENT = re.compile(rf"\b({'|'.join(SORTS)})(\d+)\b")


def meaning(sort: str, n: int, config: Config, first_mfn: int | None) -> str | None:
    """What element n of `sort` is in the implementation, or None when the scope has no such element."""
    if sort == VM:
        return f"VM {n}" if n < config.vms else None
    if sort == ROOT:
        return f"root gfn {config.roots[n]:#x}" if n < len(config.roots) else None
    if sort == GVA:
        return f"gva {config.gvas[n]:#x}" if n < len(config.gvas) else None
    if sort == GFN:
        return f"gfn {n:#x}" if n < config.gfns else None
    if sort == MFN:
        if n >= config.mfns:
            return None
        # Without the implementation's first DMM page (a fuzz campaign does not keep it) the index
        # is all that is known; a replay knows the frame.
        return f"mfn {first_mfn + n:#x}" if first_mfn is not None else f"DMM machine page #{n} (counted from the first)"
    if sort == SLOT:
        return f"swap slot {n}" if n < config.slots else None
    return None


def value(sort: str, n: int, config: Config, first_mfn: int | None) -> str | None:
    """Just the implementation value (`0x40023000`, `0x5`), for tight places such as a diagram."""
    text = meaning(sort, n, config, first_mfn)
    if text is None:
        return None
    return f"page #{n}" if sort == MFN and first_mfn is None else text.rsplit(" ", 1)[-1]


def mentioned(texts: list[str]) -> list[tuple[str, int]]:
    """The spec elements named in some texts, each once, in sort order then index."""
    found = {(m.group(1), int(m.group(2))) for t in texts for m in ELEMENT.finditer(t)}
    return sorted(found, key=lambda e: (SORTS.index(e[0]), e[1]))


def legend(texts: list[str], config: Config, first_mfn: int | None) -> list[tuple[str, str]]:
    """(spec name, implementation meaning) for every element the texts name."""
    out = []
    for sort, n in mentioned(texts):
        m = meaning(sort, n, config, first_mfn)
        if m is not None:
            out.append((f"{sort}{n}", m))
    return out


def annotate(text: str, config: Config, first_mfn: int | None,
             wrap: Callable[[str, str], str] | None = None) -> str:
    """`text` with each spec element followed by its implementation value: `gva1` becomes
    `gva1[0x400000]`, or whatever `wrap(name, value)` makes of it (the HTML report's markup)."""
    def sub(m: re.Match[str]) -> str:
        v = value(m.group(1), int(m.group(2)), config, first_mfn)
        if v is None or m.group(1) == VM:  # VM n is vmn: nothing to add
            return wrap(m.group(0), "") if wrap else m.group(0)
        return wrap(m.group(0), v) if wrap else f"{m.group(0)}[{v}]"
    return ELEMENT.sub(sub, text)
