"""The guest's 4-level walk beside the shadow's, as an SVG diagram (story.Walks).

One row per level (PML4E, PDPTE, PDE, PTE), the guest's entry on the left (guest-physical
addresses), the shadow's on the right (machine addresses), each with its bits; then the frame each
reaches. The row where the two part is drawn in red, with the bit that parts them outlined, so the
bug shows in the picture. The DOM carries what a test checks: `g.level[data-level]`, `g.entry.guest`
/ `g.entry.shadow` with `data-entry`, and the parting row's class `parting`.
"""

from __future__ import annotations

import textwrap
from html import escape

from .story import ENTRY_NAME, FRAME, PS, XD, Entry, Walks

BITS = (("P", 1), ("RW", 2), ("US", 4), ("A", 1 << 5), ("D", 1 << 6), ("PS", PS), ("XD", XD))
W, BOX, ROW, TOP = 980, 390, 92, 58
LEFT, RIGHT = 20, W - 20 - 390


def svg(w: Walks) -> str:
    rows = max(len(w.guest), len(w.shadow or []), 1)
    height = TOP + ROW * rows + 110
    out = [f"<svg class=\"walk\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" "
           f"viewBox=\"0 0 {W} {height}\" data-parting=\"{w.parting or ''}\" role=\"img\" "
           f"aria-label=\"guest and shadow walks of gva {w.gva:#x}\">",
           _heading(LEFT, f"guest walk: VM {w.vm}, root gfn {w.root:#x}, gva {w.gva:#x}"),
           _heading(RIGHT, "shadow walk (machine memory)" if w.shadow is not None else "shadow walk: not shown by the adapter")]
    guest = {lv: (lv, a, e) for lv, a, e in w.guest}
    shadow = {lv: (lv, a, e) for lv, a, e in (w.shadow or [])}
    for i, level in enumerate((4, 3, 2, 1)[:rows] if rows < 4 else (4, 3, 2, 1)):
        if level not in guest and level not in shadow:
            continue
        out.append(_row(level, TOP + ROW * i, guest.get(level), shadow.get(level), w))
    out.append(_frames(w, TOP + ROW * rows + 10))
    out.append("</svg>")
    return "".join(out)


def _heading(x: int, text: str) -> str:
    return f"<text x=\"{x}\" y=\"24\" font-size=\"13\" font-weight=\"bold\">{escape(text)}</text>"


def _row(level: int, y: int, g: Entry | None, s: Entry | None, w: Walks) -> str:
    parts = level == w.parting
    out = [f"<g class=\"level{' parting' if parts else ''}\" data-level=\"{level}\">"]
    out.append(_entry("guest", LEFT, y, g, level, parts, w, "gpa"))
    out.append(_entry("shadow", RIGHT, y, s, level, parts, w, "maddr") if w.shadow is not None else "")
    x1, x2, mid = LEFT + BOX, RIGHT, y + 30
    colour = "#c62828" if parts else "#9e9e9e"
    dash = "" if parts else " stroke-dasharray='3 4'"
    out.append(f"<line x1=\"{x1}\" y1=\"{mid}\" x2=\"{x2}\" y2=\"{mid}\" stroke=\"{colour}\" "
               f"stroke-width=\"{4 if parts else 1}\"{dash}/>")
    if parts:
        out.append(f"<text class=\"part-label\" x=\"{(x1 + x2) / 2}\" y=\"{mid - 8}\" text-anchor=\"middle\" "
                   f"font-size=\"13\" font-weight=\"bold\" fill=\"#c62828\">✗ they part here</text>")
    out.append("</g>")
    return "".join(out)


def _entry(side: str, x: int, y: int, e: Entry | None, level: int, parts: bool, w: Walks, space: str) -> str:
    if e is None:
        return (f"<g class=\"entry {side} absent\" data-level=\"{level}\"><rect x=\"{x}\" y=\"{y}\" width=\"{BOX}\" "
                f"height=\"62\" rx=\"6\" fill=\"none\" stroke=\"#bdbdbd\" stroke-dasharray=\"4 4\"/>"
                f"<text x=\"{x + 12}\" y=\"{y + 36}\" font-size=\"12\" fill=\"#9e9e9e\">{ENTRY_NAME[level]}: not walked</text></g>")
    _, addr, entry = e
    stroke, fill = ("#c62828", "#ffebee") if parts else ("#78909c", "#fafafa")
    out = [f"<g class=\"entry {side}\" data-level=\"{level}\" data-entry=\"{entry:#x}\">"
           f"<rect x=\"{x}\" y=\"{y}\" width=\"{BOX}\" height=\"62\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" "
           f"stroke-width=\"{2.5 if parts else 1}\"/>"
           f"<text x=\"{x + 10}\" y=\"{y + 17}\" font-size=\"12\" font-weight=\"bold\">{ENTRY_NAME[level]}</text>"
           f"<text x=\"{x + 70}\" y=\"{y + 17}\" font-size=\"11\" fill=\"#555\">at {space} {addr:#x}</text>"
           f"<text x=\"{x + 10}\" y=\"{y + 36}\" font-size=\"13\">{entry:#018x}</text>"
           f"<text x=\"{x + 190}\" y=\"{y + 36}\" font-size=\"11\" fill=\"#555\">→ {_target(level, entry, side)}</text>"]
    marked = _parting_bits(w) if parts else set()
    for k, (name, bit) in enumerate(BITS):
        on = bool(entry & bit)
        bx = x + 10 + k * 40
        edge = "#c62828" if name in marked else "#9e9e9e"
        out.append(f"<g class=\"bit{' on' if on else ''}\" data-bit=\"{name}\"><rect x=\"{bx}\" y=\"{y + 42}\" width=\"36\" "
                   f"height=\"15\" rx=\"2\" fill=\"{'#c8e6c9' if on else '#eeeeee'}\" stroke=\"{edge}\" "
                   f"stroke-width=\"{2.5 if name in marked else 0.5}\"/><text x=\"{bx + 18}\" y=\"{y + 53}\" font-size=\"10\" "
                   f"text-anchor=\"middle\" fill=\"{'#1b5e20' if on else '#9e9e9e'}\">{name}</text></g>")
    out.append("</g>")
    return "".join(out)


def _target(level: int, entry: int, side: str) -> str:
    if not entry & 1:
        return "not present"
    frame = (entry & FRAME) >> 12
    leaf = level == 1 or entry & PS
    unit = "gfn" if side == "guest" else "mfn"
    return f"{'page' if leaf else 'table'} {unit} {frame:#x}"


def _parting_bits(w: Walks) -> set[str]:
    """The bits the parting is about, read from its explanation."""
    why = w.why
    return {name for name, token in (("RW", "R/W"), ("US", "U/S"), ("XD", "XD"), ("P", "not present")) if token in why}


def _frames(w: Walks, y: int) -> str:
    stale = w.parting == 1 and ("p2m" in w.why or "mfn" in w.why)
    colour = "#c62828" if stale else "#2e7d32"
    reach = w.guest_outcome + (f" → p2m → {'mfn ' + format(w.mfn, '#x') if w.mfn is not None else 'none (no machine page)'}"
                               if w.gfn is not None else "")
    out = [f"<g class=\"frames\"><text class=\"guest-frame\" x=\"{LEFT}\" y=\"{y + 14}\" font-size=\"13\" fill=\"{colour}\">"
           f"guest reaches: {escape(reach)}</text>"]
    if w.shadow is not None:
        leaf = w.shadow[-1][2] if w.shadow else 0
        shown = f"mfn {(leaf & FRAME) >> 12:#x}" if w.shadow and leaf & 1 and (w.shadow[-1][0] == 1 or leaf & PS) \
            else "no translation"
        out.append(f"<text class=\"shadow-frame\" x=\"{RIGHT}\" y=\"{y + 14}\" font-size=\"13\" fill=\"{colour}\">"
                   f"shadow reaches: {shown}</text>")
    colour = "#c62828" if w.parting else "#2e7d32"
    lines = textwrap.wrap(("✗ " if w.parting else "✓ ") + w.why, 105)  # the box is 980 px: two lines at most
    spans = "".join(f"<tspan x=\"{LEFT}\" dy=\"{0 if i == 0 else 18}\">{escape(t)}</tspan>" for i, t in enumerate(lines))
    out.append(f"<text class=\"why\" x=\"{LEFT}\" y=\"{y + 44}\" font-size=\"14\" font-weight=\"bold\" "
               f"fill=\"{colour}\">{spans}</text></g>")
    return "".join(out)
