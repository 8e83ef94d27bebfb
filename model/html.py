"""Self-contained HTML pages: the scaffolding every dmm report shares, and the relation diagram.

A page is one file with its CSS, SVG and script inline (no network, no CDN), so it opens from disk
years later. Only the standard library: html.escape and f-strings. The prover's page (prove_html.py)
and the conformance harness's (conformance/html.py) build on this; it imports neither.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Set
from html import escape
from typing import Any

CSS = """
:root { --bad: #c62828; --bad-bg: #ffebee; --good: #2e7d32; --good-bg: #e8f5e9; --warn: #ef6c00;
        --ink: #1a1a1a; --dim: #666; --line: #d0d0d0; --panel: #fafafa; --hl: #fff3c4; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0; padding: 24px 32px 64px; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
code, .mono, td.v, .hex { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 13px; }
.hex, td.v { white-space: nowrap; }
.verdict { border-left: 6px solid var(--bad); background: var(--bad-bg); padding: 10px 14px; margin: 12px 0;
           font-size: 15px; }
.verdict.pass { border-color: var(--good); background: var(--good-bg); }
.sub { color: var(--dim); }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; font-weight: 600; }
tr.changed td, td.changed { background: var(--hl); }
tr.blamed td, td.blamed { background: var(--bad-bg); font-weight: 600; }
tr.weak td { background: #fff8e1; }
.el { border-bottom: 1px dotted var(--dim); }
.el small { color: #0b5394; font-size: 11px; margin-left: 1px; }
.timeline { display: flex; flex-wrap: wrap; gap: 6px; margin: 8px 0 16px; padding: 0; list-style: none; }
.timeline li a { display: block; padding: 6px 10px; border: 1px solid var(--line); border-radius: 6px;
                 text-decoration: none; color: var(--ink); background: var(--panel); min-width: 110px; }
.timeline li a b { display: block; font-size: 12px; color: var(--dim); font-weight: normal; }
.timeline li.failing a { border-color: var(--bad); background: var(--bad-bg); }
.timeline li.failing a b { color: var(--bad); }
details.step { border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; padding: 6px 12px; background: #fff; }
details.step[open] { padding-bottom: 12px; }
details.step.failing { border: 2px solid var(--bad); }
details.step summary { cursor: pointer; font-weight: 600; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.cmd { background: #263238; color: #eceff1; padding: 8px 12px; border-radius: 4px; display: inline-block;
       white-space: pre; }
svg text { font-family: ui-monospace, Menlo, Consolas, monospace; }
.src { background: var(--panel); border: 1px solid var(--line); padding: 6px 0; overflow-x: auto; }
.src div { white-space: pre-wrap; padding: 0 10px 0 4.5em; text-indent: -4em; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
.src div.hit { background: var(--bad-bg); border-left: 4px solid var(--bad); }
.src span.ln { color: var(--dim); display: inline-block; width: 4em; text-indent: 0; }
.bar { display: inline-block; height: 10px; background: #90caf9; vertical-align: middle; }
footer { margin-top: 40px; color: var(--dim); font-size: 12px; }
"""

# What a reader may click: the timeline opens the step it names (details elements stay closed
# otherwise). Plain DOM calls, nothing loaded from anywhere.
SCRIPT = """
document.querySelectorAll('a[data-open]').forEach(function (a) {
  a.addEventListener('click', function () {
    var d = document.getElementById(a.getAttribute('data-open'));
    if (d) { d.open = true; }
  });
});
"""


def page(title: str, body: str, generator: str = "dmm") -> str:
    """One complete HTML document."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"generator\" content=\"{escape(generator)}\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
            f"<footer>written by {escape(generator)}; one self-contained file: no network needed to view it</footer>\n"
            f"<script>{SCRIPT}</script>\n</body></html>\n")


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], classes: Iterable[str] | None = None,
          attrs: str = "") -> str:
    """A table; cells are HTML already (escape text first); `classes` one per row."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for row, cls in zip(rows, classes if classes is not None else _forever("")):
        cells = "".join(f"<td>{c}</td>" for c in row)
        body.append(f"<tr class=\"{cls}\">{cells}</tr>" if cls else f"<tr>{cells}</tr>")
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _forever(x: str) -> Iterable[str]:
    while True:
        yield x


def source_excerpt(path: str, line: int, context: int = 2) -> str:
    """Lines around `line` of a source file, that line marked; empty when the file cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    lo, hi = max(1, line - context), min(len(lines), line + context)
    rows = [f"<div class=\"{'hit' if n == line else ''}\"><span class=\"ln\">{n}</span>{escape(lines[n - 1])}</div>"
            for n in range(lo, hi + 1)]
    return f"<div class=\"src\" data-line=\"{line}\">{''.join(rows)}</div>"


# ---------------------------------------------------------------- the relation diagram

POINT = re.compile(r"^(\w+)\((.*)\)$")


def parse_point(point: str) -> tuple[str, list[str]]:
    """`p2m(vm0, gfn1)` -> ("p2m", ["vm0", "gfn1"]); a constant's name -> (name, [])."""
    m = POINT.match(point)
    return (m.group(1), [a.strip() for a in m.group(2).split(",")]) if m else (point, [])


def element_sort(name: str, sorts: Iterable[str]) -> str | None:
    for s in sorts:
        if name.startswith(s) and name[len(s):].isdigit():
            return s
    return None


def facts(state: dict[str, dict[str, Any]], sorts: list[str]) -> tuple[set[tuple[str, str, str]], dict[str, list[str]]]:
    """A state (the to_dict form) as edges between elements and attributes of elements.

    A function whose value is an element is an edge from its last element argument to the value,
    labelled with the point (p2m(vm0, gfn1) = mfn2: gfn1 -> mfn2); a relation of two or more
    elements is an edge between its last two (rmap(mfn0, vm0, root0, gva0): root0 -> gva0); anything
    else that is set is an attribute of its last element."""
    edges: set[tuple[str, str, str]] = set()
    attrs: dict[str, list[str]] = {}
    for points in state.values():
        for point, value in points.items():
            if value in (False, None, "none", "false"):
                continue
            name, args = parse_point(point)
            els = [a for a in args if element_sort(a, sorts)]
            res = str(value)
            if els and element_sort(res, sorts):
                edges.add((els[-1], res, point))
            elif value is True and len(els) >= 2:
                edges.add((els[-2], els[-1], point))
            elif els:
                attrs.setdefault(els[-1], []).append(name if value is True else f"{name}{_other(args, els[-1])}={res}")
    return edges, attrs


def _other(args: list[str], skip: str) -> str:
    rest = [a for a in args if a != skip]
    return f"({', '.join(rest)})" if rest else ""


def relation_svg(state: dict[str, dict[str, Any]], sizes: dict[str, int], sorts: list[str], *,
                 compare: dict[str, dict[str, Any]] | None = None, blamed: Set[str] = frozenset(),
                 new_class: str = "added", caption: str = "", values: dict[str, str] | None = None,
                 marked: Set[str] = frozenset()) -> str:
    """Elements as nodes on an ellipse, in sort order; relations and functions as edges between
    them (parallel ones fanned out, each labelled). Edges absent from `compare` get `new_class`
    (green when added, red dashed when removed); edges standing for a blamed point get class
    `blamed` (thick orange); `marked` elements (the blame's bindings) get an orange outline, and an
    attribute `compare` lacks is printed green. `values`: an implementation value under an element.
    Deterministic: the same state gives the same picture, so before and after line up."""
    edges, attrs = facts(state, sorts)
    old, old_attrs = facts(compare, sorts) if compare is not None else (edges, attrs)
    els = [f"{s}{i}" for s in sorts for i in range(sizes.get(s, 0))]
    width, height = 980, 150 + 30 * max(2, len(els))
    cx, cy, rx, ry = width / 2, height / 2, width / 2 - 110, height / 2 - 70  # room for fanned labels
    pos = {el: (round(cx - rx * math.cos(2 * math.pi * k / len(els)), 1),
                round(cy - ry * math.sin(2 * math.pi * k / len(els)), 1)) for k, el in enumerate(els)}
    out = [f"<svg class=\"relations\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" "
           f"viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{escape(caption)}\">",
           "<defs><marker id=\"arr\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"9\" markerHeight=\"9\" "
           "markerUnits=\"userSpaceOnUse\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>"]
    pairs: dict[frozenset[str], list[tuple[str, str, str]]] = {}
    for e in sorted(edges):
        pairs.setdefault(frozenset(e[:2]), []).append(e)
    for group in pairs.values():
        for j, (a, b, label) in enumerate(group):
            cls = new_class if (a, b, label) not in old else "same"
            out.append(_edge(pos, a, b, label, (j - (len(group) - 1) / 2) * 34, cls, _is_blamed(label, a, b, blamed)))
    for el, (x, y) in pos.items():
        new = [a for a in attrs.get(el, []) if a not in old_attrs.get(el, [])]
        out.append(_node(el, x, y, attrs.get(el, []), (values or {}).get(el), el in marked, bool(new)))
    out.append("</svg>")
    return "".join(out)


def _is_blamed(label: str, a: str, b: str, blamed: Set[str]) -> bool:
    """An edge stands for a blamed point when its label is that point."""
    return label in blamed


def _edge(pos: dict[str, tuple[float, float]], a: str, b: str, label: str, offset: float, cls: str,
          blamed: bool) -> str:
    """One edge, bowed `offset` pixels off the straight line (parallel edges fan out)."""
    if a not in pos or b not in pos or a == b:
        return ""
    (x1, y1), (x2, y2) = pos[a], pos[b]
    dx, dy = x2 - x1, y2 - y1
    length = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / length, dx / length  # the normal: which way to bow, the same for a -> b and b -> a
    if a > b:
        nx, ny = -nx, -ny
    qx, qy = (x1 + x2) / 2 + nx * offset * 2, (y1 + y2) / 2 + ny * offset * 2
    sx, sy = x1 + dx / length * 30, y1 + dy / length * 14  # leave the node's outline free
    ex, ey = x2 - dx / length * 36, y2 - dy / length * 16
    colour = "#e65100" if blamed else {"added": "#2e7d32", "removed": "#c62828"}.get(cls, "#888")
    dash = " stroke-dasharray=\"6 4\"" if cls == "removed" else ""
    side = 1 if offset >= 0 else -1  # the label beside the curve, on its outer side: no line through it
    lx, ly = (sx + 2 * qx + ex) / 4 + nx * 9 * side, (sy + 2 * qy + ey) / 4 + ny * 9 * side
    classes = f"edge {cls}" + (" blamed" if blamed else "")
    return (f"<g class=\"{classes}\" data-from=\"{escape(a)}\" data-to=\"{escape(b)}\" data-label=\"{escape(label)}\">"
            f"<path d=\"M{sx:.1f},{sy:.1f} Q{qx:.1f},{qy:.1f} {ex:.1f},{ey:.1f}\" fill=\"none\" stroke=\"{colour}\" "
            f"stroke-width=\"{3.5 if blamed else 1.6}\"{dash} marker-end=\"url(#arr)\"/>"
            f"<text x=\"{lx:.1f}\" y=\"{ly + 4:.1f}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{colour}\" "
            f"paint-order=\"stroke\" stroke=\"#fff\" stroke-width=\"4\">{escape(label)}</text></g>")


def _node(el: str, x: float, y: float, attrs: list[str], value: str | None, marked: bool, changed: bool) -> str:
    text = escape(", ".join(attrs)) if attrs else ""
    sub = f"<text x=\"{x}\" y=\"{y + 28}\" font-size=\"10\" text-anchor=\"middle\" fill=\"#0b5394\">{escape(value)}</text>" \
        if value else ""
    stroke, width = ("#e65100", 3) if marked else ("#1565c0", 1)
    colour, weight = ("#2e7d32", "bold") if changed else ("#555", "normal")
    return (f"<g class=\"node{' marked' if marked else ''}\" data-element=\"{escape(el)}\"><rect x=\"{x - 34}\" y=\"{y - 13}\" "
            f"width=\"68\" height=\"26\" rx=\"13\" fill=\"#e3f2fd\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>"
            f"<text x=\"{x}\" y=\"{y + 4}\" font-size=\"12\" text-anchor=\"middle\">{escape(el)}</text>{sub}"
            + (f"<text class=\"attrs{' changed' if changed else ''}\" x=\"{x}\" y=\"{y - 18}\" font-size=\"11\" "
               f"text-anchor=\"middle\" fill=\"{colour}\" font-weight=\"{weight}\">{text}</text>" if text else "")
            + "</g>")

BLAME = re.compile(r"^(?P<formula>.*?) at (?P<bindings>\w+=[\w-]+(?:, \w+=[\w-]+)*)(?: \((?P<note>.*)\))?$")
APPLICATION = re.compile(r"\b(\w+)\(([^()]*)\)")


def blamed_points(blame: str) -> set[str]:
    """The points a blame names, its variables bound: `rmap(m, v) iff ... at m=mfn0, v=vm0` ->
    {"rmap(mfn0, vm0)", ...}. Applications with a variable left unbound are left out."""
    m = BLAME.match(blame.strip().splitlines()[0] if blame.strip() else "")
    if not m:
        return set()
    env = dict(b.split("=", 1) for b in m.group("bindings").split(", "))
    out = set()
    for app in APPLICATION.finditer(m.group("formula")):
        args = [a.strip() for a in app.group(2).split(",")]
        bound = [env.get(a, a) for a in args]
        if all(a not in env for a in bound) and not any(a in env for a in args if a not in env):
            out.add(f"{app.group(1)}({', '.join(bound)})")
    return out


def output_problem(path: str | None) -> str | None:
    """Why a file cannot be written at `path` (checked before a command runs), or None."""
    from pathlib import Path

    if path is None:
        return None
    if not path.strip():
        return "an empty path"
    p = Path(path)
    if p.is_dir():
        return f"{path} is a folder"
    existing = next((d for d in [p.parent, *p.parent.parents] if d.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is not a folder"
    return None


def blamed_elements(blame: str) -> set[str]:
    """The elements a blame binds its variables to (`at a=client0, b=client1`)."""
    m = BLAME.match(blame.strip().splitlines()[0] if blame.strip() else "")
    return {b.split("=", 1)[1] for b in m.group("bindings").split(", ")} if m else set()


def check_outputs(command: str, *paths: str | None) -> bool:
    """Print why an output path is unusable (bad input: checked before any work); True when all are fine."""
    import sys

    for path in paths:
        why = output_problem(path)
        if why:
            print(f"dmm {command}: cannot write {path!r}: {why}", file=sys.stderr)
            return False
    return True
