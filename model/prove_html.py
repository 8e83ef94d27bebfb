"""`dmm prove --html FILE`: the prover's results as one self-contained page.

Each counterexample gets its action and arguments, the failing conjunct with the spec line it is on,
the blame, the states before and after as a table (what the action changed highlighted, the blamed
points in red) and as relation diagrams drawn the same way (so the two pictures line up), and
whether an execution reaches it. Reads only what the prover returns (Result, its counterexample
dict); imports nothing of the conformance harness.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Any

from .html import (
    blamed_elements,
    blamed_points,
    page,
    relation_svg,
    source_excerpt,
    table,
)
from .prove import Result


def render(spec: Any, results: list[Result], seconds: float, traces: list[str]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("proved", "violated", "unknown")}
    bad = counts["violated"] or counts["unknown"]
    head = (f"<h1>dmm prove: {escape(str(spec.file))}</h1>"
            f"<div class=\"verdict{'' if bad else ' pass'}\" id=\"verdict\">{counts['proved']} proved, "
            f"{counts['violated']} violated, {counts['unknown']} unknown in {seconds:.2f} s</div>")
    body = [head, _open_table(results)]
    for r in results:
        if r.status == "violated" and r.counterexample:
            body.append(_counterexample(spec, r))
    if traces:
        body.append("<h2>Traces written</h2>" + "".join(
            f"<div><code>{escape(t)}</code> — replay: <span class=\"cmd\">dmm replay {escape(t)}</span></div>"
            for t in traces))
    return page(f"dmm prove — {counts['violated']} violated", "\n".join(body), "dmm prove")


def _open_table(results: list[Result]) -> str:
    rows = [(f"<a href=\"#{_anchor(r.name)}\">{escape(r.name)}</a>" if r.status == "violated" else escape(r.name),
             escape(r.status), escape(r.reason or "")) for r in results if r.status != "proved"]
    if not rows:
        return "<p>Every obligation is proved.</p>"
    return "<h2>Not proved</h2>" + table(("obligation", "status", "reason"), rows,
                                         ["blamed" if r[1] == "violated" else "weak" for r in rows])


def _anchor(name: str) -> str:
    return "ob-" + re.sub(r"[^\w-]", "-", name)


def _counterexample(spec: Any, r: Result) -> str:
    cx = r.counterexample or {}
    out = [f"<section class=\"cx\" id=\"{_anchor(r.name)}\"><h2>✗ {escape(r.name)}</h2>"]
    if "steps" in cx:
        steps = "".join(f"<li><code>{escape(_call(s['action'], s['args']))}</code></li>" for s in cx["steps"])
        out.append(f"<p>A reachable violation in {len(cx['steps'])} steps (universe "
                   f"{escape(_sizes(cx.get('universe', {})))}):</p><ol>{steps}</ol>")
        out.append(_conjunct(spec, r, cx))
        if cx.get("state_text"):
            out.append(f"<h3>State at the violation</h3><pre>{escape(cx['state_text'])}</pre>")
    elif "after" in cx:
        out.append(f"<p>A counterexample to induction in universe {escape(_sizes(cx['universe']))}: every invariant "
                   f"holds before <code>{escape(_call(cx['action'], cx['args']))}</code>, and "
                   f"<b>{escape(str(r.invariant))}</b> fails after it.</p>")
        out.append(_conjunct(spec, r, cx))
        out.append(_states(spec, cx))
    else:
        out.append(f"<p>{escape(str(cx.get('note', '')))}</p>")
    out.append(_reachability(r))
    out.append("</section>")
    return "\n".join(out)


def _call(action: str, args: dict[str, Any]) -> str:
    return f"{action}({', '.join(f'{k}={v}' for k, v in args.items())})"


def _sizes(universe: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in universe.items())


def _conjunct(spec: Any, r: Result, cx: dict[str, Any]) -> str:
    """The failing conjunct, where it is in the spec, and the blame."""
    conj = cx.get("conjunct") or {}
    text = conj.get("text") or str(cx.get("blame", "")).split(" at ")[0]
    where, line = _location(spec, conj.get("loc"), r.invariant)
    parts = [f"<h3>Failing conjunct</h3><p><code class=\"conjunct\">{escape(text)}</code>"
             + (f" <span class=\"sub\">at {escape(where)}</span>" if where else "")
             + (f" <span class=\"sub\">(conjunct {conj['index']} of {conj['of']})</span>" if conj.get("of") else "") + "</p>"]
    if line:
        parts.append(source_excerpt(_spec_path(spec, where), line))
    parts.append(f"<p>Blame: <code class=\"blame\">{escape(str(cx.get('blame', '')))}</code></p>")
    return "".join(parts)


def _location(spec: Any, loc: str | None, invariant: str | None) -> tuple[str, int]:
    """(file:line:col as shown, its line) from the prover's location, else the invariant's line."""
    if loc:
        m = re.match(r"^(.*):(\d+):(\d+)$", loc)
        if m:
            return loc, int(m.group(2))
    try:
        lines = Path(spec.file).read_text().splitlines()
    except OSError:
        return "", 0
    for n, text in enumerate(lines, 1):
        if invariant and re.match(rf"^\s*invariant\s+{re.escape(invariant)}\b", text):
            return f"{spec.file}:{n + 1}", n + 1  # the formula follows the declaration
    return "", 0


def _spec_path(spec: Any, where: str) -> str:
    """The file a location names, found where the spec is when it is given relative elsewhere."""
    name = where.rsplit(":", 2)[0] if where.count(":") >= 2 else where.rsplit(":", 1)[0]
    if Path(name).is_file():
        return name
    return str(spec.file)


def _states(spec: Any, cx: dict[str, Any]) -> str:
    before, after = cx["before"], cx["after"]
    blamed = blamed_points(str(cx.get("blame", "")))
    sorts, sizes = list(spec.sorts), cx["universe"]
    rows, classes = [], []
    for symbol in after:
        for point in sorted(set(before.get(symbol, {})) | set(after[symbol])):
            b, a = before.get(symbol, {}).get(point), after[symbol].get(point)
            if _unset(b) and _unset(a) and point not in blamed:
                continue
            rows.append((f"<code>{escape(point)}</code>", f"<span class=\"hex\">{escape(_show(b))}</span>",
                         f"<span class=\"hex\">{escape(_show(a))}</span>"))
            classes.append("blamed" if point in blamed else "changed" if b != a else "")
    legend = ("<p class=\"sub\">Rows: every point set before or after. <span style=\"background:var(--hl)\">"
              "Yellow</span>: the action changed it. <span style=\"background:var(--bad-bg)\">Red</span>: a point "
              "the failing conjunct reads. Diagrams: elements as nodes around an ellipse, in sort order; relations and "
              "functions as edges (green: added by the action, red dashed: removed, orange: blamed).</p>")
    return (f"<h3>Before and after</h3>{legend}"
            + table(("point", "before", "after"), rows, classes, "class=\"states\"")
            + "<h3>Before</h3>"
            + relation_svg(before, sizes, sorts, compare=after, new_class="removed", caption="before")
            + "<h3>After</h3>"
            + relation_svg(after, sizes, sorts, compare=before, blamed=blamed, caption="after",
                           marked=blamed_elements(str(cx.get("blame", "")))))


def _unset(v: Any) -> bool:
    return v in (None, False, "none", "false", 0)


def _show(v: Any) -> str:
    return "none" if v is None else "true" if v is True else "false" if v is False else str(v)


def _reachability(r: Result) -> str:
    reach = r.reachability
    if not reach:
        return ""
    out = f"<h3>Reachable?</h3><p class=\"reach-{escape(reach['verdict'].replace(' ', '-'))}\">{escape(reach['text'])}</p>"
    if reach["verdict"] == "reachable":
        out += "<ol>" + "".join(f"<li><code>{escape(_call(s['action'], s['args']))}</code></li>"
                                for s in reach["trace"]) + "</ol>"
        out += f"<p>Blame after it: <code>{escape(str(reach.get('blame', '')))}</code></p>"
    return out


def outputs_ok(*paths: str | None) -> bool:
    """The --html and --itf paths can be written (checked before proving); else say why."""
    from .html import check_outputs

    return check_outputs("prove", *paths)


def finish(spec: Any, results: list[Result], seconds: float, traces: list[str], status: int, *,
           html: str | None = None, itf_path: str | None = None) -> int:
    """`dmm prove --html FILE --itf FILE`: write them; the prover's status, or 2 (bad input) when a
    file could not be written and nothing else was found."""
    import hashlib
    import sys

    from . import itf

    ok = True
    bmc = [r for r in results if r.kind == "bmc" and r.status == "violated"]
    if itf_path:
        digest = hashlib.sha256(Path(spec.file).read_bytes()).hexdigest()
        for r in bmc:
            path = Path(itf_path) if len(bmc) == 1 else Path(itf_path).with_name(f"{Path(itf_path).stem}-{r.invariant}.itf.json")
            try:
                itf.write_bmc(path, str(spec.file), digest, r)
                print(f"dmm prove: ITF trace written to {path}", file=sys.stderr)
            except OSError as e:
                print(f"dmm prove: cannot write {path}: {e.strerror or e}", file=sys.stderr)
                ok = False
        if not bmc:
            print("dmm prove: no BMC violation: no ITF trace written", file=sys.stderr)
    if html:
        try:
            Path(html).parent.mkdir(parents=True, exist_ok=True)
            Path(html).write_text(render(spec, results, seconds, traces), encoding="utf-8")
            print(f"dmm prove: report written to {html} (open it in a browser)", file=sys.stderr)
        except OSError as e:
            print(f"dmm prove: cannot write {html}: {e.strerror or e}", file=sys.stderr)
            ok = False
    return status if status or ok else 2
