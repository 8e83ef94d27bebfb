"""HTML reports of the conformance harness: a failing trace (`dmm report`, `dmm replay --html`,
`dmm fuzz --html`) and a campaign (`dmm fuzz --html`, `dmm mutants --html`).

A failing trace is replayed (story.py) and shown as a timeline of its steps; each step lists what
the implementation did and the spec steps it was read as, the state points it changed, and for an
access the guest's walk beside the shadow's (walk_svg.py); the failing step opens by itself, with
the verdict and the points it is about. Every spec element name carries its implementation value
(legend.py), and a legend lists them all. The page scaffolding is the model's (model/html.py).
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from typing import Any

from dmmcheck.model.html import blamed_points, page, source_excerpt, table

from . import legend, walk_svg
from .story import Snapshot, Story

GENERATOR = "dmm"


def story_page(story: Story, title: str = "dmm report") -> str:
    return page(f"{title}: {_headline(story)}", story_body(story), GENERATOR)


def story_body(story: Story) -> str:
    ctx = _Ctx(story)
    f = story.failure
    parts = [f"<h1>{escape(_headline(story))}</h1>",
             f"<p class=\"sub\">trace <code>{escape(story.path)}</code> · adapter "
             f"<code>{escape(str(story.header.get('impl_cmd') or story.header.get('adapter') or 'the bundled VMM'))}</code>"
             f" · seed {escape(str(story.header.get('seed', '-')))} · mutant "
             f"<code>{escape(str(story.config.mutant or 'none'))}</code></p>"]
    if f is not None:
        parts.append(f"<div class=\"verdict\" id=\"verdict\"><b>{escape(f.kind)}</b> at step "
                     f"{len(story.snapshots) - 1}: {ctx.ann(f.message)}</div>")
    else:
        parts.append(f"<div class=\"verdict pass\" id=\"verdict\">{len(story.snapshots)} steps replayed: no failure</div>")
    recorded = story.header.get("failure")
    if recorded and (f is None or (recorded.get("kind"), recorded.get("message")) != (f.kind, f.message)):
        parts.append(f"<p class=\"sub\">The trace recorded another verdict: {escape(str(recorded.get('kind')))}: "
                     f"{escape(str(recorded.get('message')))}</p>")
    parts.append(f"<p>Replay it: <span class=\"cmd\" id=\"replay\">dmm replay {escape(story.path)}</span></p>")
    parts.append(_timeline(story))
    steps = "".join(_step(ctx, s, i == len(story.snapshots) - 1 and f is not None) for i, s in enumerate(story.snapshots))
    parts.append(f"<h2>Steps</h2>{steps}")
    parts.append(_legend(ctx))
    return "\n".join(parts)


def _headline(story: Story) -> str:
    f = story.failure
    if f is None:
        return f"no failure in {len(story.snapshots)} steps"
    return f"{f.kind} failure at step {len(story.snapshots) - 1} of {len(story.snapshots)} (level {story.level})"


class _Ctx:
    """What rendering needs besides a step: the legend's mapping, and every element named so far."""

    def __init__(self, story: Story) -> None:
        self.story = story
        self.u = story.it.u
        self.named: list[str] = []

    def ann(self, text: str) -> str:
        """Text, escaped, each spec element followed by its implementation value."""
        self.named.append(text)

        def wrap(name: str, value: str) -> str:
            if not value:
                return f"<span class=\"el\">{name}</span>"
            return f"<span class=\"el\" title=\"{escape(value)}\">{name}<small>={escape(value)}</small></span>"
        return legend.annotate(escape(text), self.story.config, self.story.first_mfn, wrap)

    def point(self, name: str, args: tuple[Any, ...]) -> str:
        return self.ann(self.u.show_point(name, args))

    def value(self, name: str, v: Any) -> str:
        return self.ann(self.u.show_value(self.u.layout[name].symbol.result, v))


def _timeline(story: Story) -> str:
    items = []
    for i, s in enumerate(story.snapshots):
        failing = story.failure is not None and i == len(story.snapshots) - 1
        outcome = story.failure.kind if failing else _short_outcome(s)  # type: ignore[union-attr]
        items.append(f"<li class=\"{'failing' if failing else ''}\" data-step=\"{i}\"><a href=\"#step-{i}\" "
                     f"data-open=\"step-{i}\">{i}. {escape(s.record.op.action)}<b>{escape(outcome)}</b></a></li>")
    return f"<h2>Timeline</h2><ol class=\"timeline\">{''.join(items)}</ol>"


def _short_outcome(s: Snapshot) -> str:
    a = s.record.observation.access
    if a is None:
        return f"{len(s.changes)} point(s) changed"
    if a.gp:
        return "#GP"
    if a.oom:
        return "out of memory"
    return f"#PF {a.error_code:#x}" if a.fault else "ok" + (f" {a.value:#x}" if a.value is not None else "")


def _step(ctx: _Ctx, s: Snapshot, failing: bool) -> str:
    rec = s.record
    args = ", ".join(f"{k}={_hexish(k, v)}" for k, v in rec.op.args.items())
    head = (f"<details class=\"step{' failing' if failing else ''}\" id=\"step-{rec.index}\"{' open' if failing else ''}>"
            f"<summary>{rec.index}. {escape(rec.op.action)}(<span class=\"hex\">{escape(args)}</span>)"
            + (" — <span style=\"color:var(--bad)\">fails here</span>" if failing else "") + "</summary>")
    body = [_did(ctx, s)]
    if failing:
        body.append(_verdict(ctx, s))
    if s.walks is not None:
        body.append("<h3>Walks</h3>" + walk_svg.svg(s.walks))
    body.append(_changes(ctx, s, failing))
    return head + "".join(body) + "</details>"


def _hexish(k: str, v: Any) -> str:
    return f"{v:#x}" if k in ("x", "gpa", "value", "bits", "offset") and isinstance(v, int) else str(v)


def _did(ctx: _Ctx, s: Snapshot) -> str:
    rec = s.record
    events = ", ".join(f"{n}({', '.join(f'{k}={_hexish(k, v)}' for k, v in a.items())})" for n, a in rec.observation.events)
    spec = ", ".join(f"{st.action}({ctx.story.it.show_args(st.action, st.args)})" for st in rec.spec_steps)
    rows = [("the implementation did", f"<span class=\"mono\">{escape(events) or 'nothing it reports'}</span>"),
            ("read as spec steps", f"<span class=\"mono\">{ctx.ann(spec) if spec else '— (none accepted)'}</span>")]
    a = rec.observation.access
    if a is not None:
        rows.append(("the guest saw", f"<span class=\"hex\">{escape(_short_outcome(s))}"
                                      + (f", CR2 {a.cr2:#x}" if a.cr2 is not None else "") + "</span>"))
    if rec.observation.note:
        rows.append(("note", escape(rec.observation.note)))
    return table(("", ""), rows, attrs="class=\"did\"")


def _verdict(ctx: _Ctx, s: Snapshot) -> str:
    f = ctx.story.failure
    assert f is not None
    out = [f"<h3>Verdict: {escape(f.kind)}</h3><p>{ctx.ann(f.message)}</p>"]
    if f.kind == "refinement" and f.detail.startswith("---"):
        out.append("<p>The spec state its steps make against the implementation's state, where they differ:</p>"
                   + _diff_table(ctx, f.detail))
    elif f.kind == "invariant" and s.state is not None:
        out.append(_invariant_source(ctx, f.facts.get("invariants") or []))
        out.append(_blamed(ctx, s, f.detail))
    elif f.detail:
        out.append(f"<pre class=\"detail\">{ctx.ann(f.detail)}</pre>")
    return "".join(out)


def _invariant_source(ctx: _Ctx, names: list[str]) -> str:
    """Each failing invariant as the spec states it, quoted from the spec file."""
    out = []
    for name in names:
        line = _declared_at(ctx.story.spec_file, name)
        if line:
            out.append(f"<p class=\"sub\">{escape(name)} ({escape(ctx.story.spec_file)}:{line}):</p>"
                       + source_excerpt(ctx.story.spec_file, line + 1, 1))
    return "".join(out)


def _declared_at(path: str, invariant: str) -> int:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    decl = re.compile(rf"^\s*invariant\s+{re.escape(invariant)}\b")
    return next((n for n, text in enumerate(lines, 1) if decl.match(text)), 0)


DIFF = re.compile(r"^([-+])(\S.*?) = (.*)$")


def _diff_table(ctx: _Ctx, detail: str) -> str:
    spec: dict[str, str] = {}
    impl: dict[str, str] = {}
    for line in detail.splitlines()[2:]:
        m = DIFF.match(line)
        if m:
            (spec if m.group(1) == "-" else impl)[m.group(2)] = m.group(3)
    rows = [(f"<code>{ctx.ann(p)}</code>", f"<span class=\"hex\">{ctx.ann(spec.get(p, '?'))}</span>",
             f"<span class=\"hex\">{ctx.ann(impl.get(p, '?'))}</span>") for p in spec]
    return table(("point", "spec", "implementation"), rows, ["blamed"] * len(rows), "class=\"refinement-diff\"")


def _blamed(ctx: _Ctx, s: Snapshot, detail: str) -> str:
    """The invariant's blame, and the values in the state of the points it names."""
    out = [f"<p>Why: <code>{ctx.ann(line)}</code></p>" for line in detail.splitlines()]
    rows = []
    for text in sorted(set().union(*(blamed_points(line) for line in detail.splitlines())) if detail else set()):
        name, args = _parse(ctx, text)
        if name is None:
            continue
        v = s.state[ctx.u.layout[name].index][ctx.u.index(name, args)]  # type: ignore[index]
        rows.append((f"<code>{ctx.ann(text)}</code>", f"<span class=\"hex\">{ctx.value(name, v)}</span>"))
    if rows:
        out.append("<p>The points it reads, in the state after the step:</p>"
                   + table(("point", "value"), rows, ["blamed"] * len(rows), "class=\"blamed-points\""))
    return "".join(out)


def _parse(ctx: _Ctx, text: str) -> tuple[str | None, tuple[Any, ...]]:
    """A point's text (`spte(vm1, root2, gva1)`) back to its symbol and argument indices."""
    from dmmcheck.model.html import parse_point

    name, args = parse_point(text)
    lay = ctx.u.layout.get(name)
    if lay is None or len(args) != len(lay.symbol.args):
        return None, ()
    try:
        return name, tuple(ctx.u.parse_value(t, a) for t, a in zip(lay.symbol.args, args))
    except ValueError:
        return None, ()


def _changes(ctx: _Ctx, s: Snapshot, failing: bool) -> str:
    if not s.changes:
        return "<p class=\"sub\">No state point changed.</p>" if s.state is not None else \
            "<p class=\"sub\">The implementation's state after this step could not be read.</p>"
    blamed = set().union(*(blamed_points(line) for line in (ctx.story.failure.detail or "").splitlines())) \
        if failing and ctx.story.failure is not None else set()
    rows, classes = [], []
    for name, args, before, after in s.changes:
        point = ctx.u.show_point(name, args)
        rows.append((f"<code>{ctx.ann(point)}</code>", f"<span class=\"hex\">{ctx.value(name, before)}</span>",
                     f"<span class=\"hex\">{ctx.value(name, after)}</span>"))
        classes.append("blamed" if point in blamed else "changed")
    what = "State points this step changed" + (" (the implementation's state, against the spec's before the step)"
                                               if failing else "")
    return f"<h3>{what}</h3>" + table(("point", "before", "after"), rows, classes, "class=\"changes\"")


def _legend(ctx: _Ctx) -> str:
    rows = [(f"<code>{escape(n)}</code>", f"<span class=\"hex\">{escape(m)}</span>")
            for n, m in legend.legend(ctx.named, ctx.story.config, ctx.story.first_mfn)]
    cfg = ctx.story.config
    scope = (f"{cfg.vms} VMs, {cfg.gfns} gfns, {cfg.mfns} DMM machine pages from mfn {ctx.story.first_mfn:#x}, "
             f"{cfg.slots} swap slots, roots {', '.join(f'{r:#x}' for r in cfg.roots)}, "
             f"budget {cfg.budget if cfg.budget is not None else 'none'}, quota {cfg.quota if cfg.quota is not None else 'none'}")
    return (f"<h2 id=\"legend\">Legend: spec names → implementation values</h2><p class=\"sub\">Scope: {escape(scope)}. "
            "Spec names index the scope's elements; each is shown with its value where it appears.</p>"
            + table(("spec name", "implementation"), rows, attrs="class=\"legend\""))


# ---------------------------------------------------------------- campaigns


def campaign_page(result: Any, actions: list[str], trace: str | None, story: Story | None) -> str:
    """`dmm fuzz --html`: the verdict and speed; the failing trace replayed, when there is one; then
    coverage per action and guard outcome (weak rows marked), input classes and scopes (folded)."""
    f = result.failure
    parts = [f"<h1>dmm fuzz: {escape(result.impl)}</h1>",
             f"<div class=\"verdict{'' if f else ' pass'}\" id=\"verdict\">"
             + (f"<b>{escape(f.kind)}</b>: {escape(f.message)}" if f else "no failure") + "</div>",
             f"<p>{result.examples} test cases, {result.steps} steps in {result.seconds:.1f} s "
             f"({result.steps_per_second:.0f} steps/s; {result.seconds_in_impl:.1f} s in the implementation, "
             f"{result.seconds_in_oracle:.1f} s in the oracles); seed {result.seed}; level {escape(result.level)}</p>"]
    chart = rate_chart(getattr(result, "rate_samples", None) or [])
    if chart:
        parts.append(chart)
    if trace:
        parts.append(f"<p>Failing trace: <code>{escape(trace)}</code> — replay: <span class=\"cmd\">dmm replay "
                     f"{escape(trace)}</span></p>")
    if story is not None:  # the failure first: it is what the reader came for
        parts.append("<section class=\"failure\">" + story_body(story) + "</section><hr>")
    if result.level != "black-box":
        parts.append(_coverage(result, actions))
    parts.append("<details class=\"inputs\"><summary>Input classes drawn</summary>"
                 + _counts("Input classes drawn", result.inputs, _not_tried(result)) + "</details>")
    parts.append("<details class=\"scopes\"><summary>Scopes of the test cases</summary>"
                 + _counts("Scopes of the test cases", result.scopes, []) + "</details>")
    return page(f"dmm fuzz — {'failure' if f else 'no failure'}", "\n".join(parts), GENERATOR)


def rate_chart(samples: list[list[float]], width: int = 480, height: int = 120) -> str:
    """Steps/s over time as an inline SVG line: the rate between successive [seconds, steps]
    samples (FuzzResult.rate_samples; a campaign's are summed over its workers), drawn at the
    interval's end. Empty with fewer than two samples: one rate is the figure above already."""
    pts = [(t1, (n1 - n0) / (t1 - t0)) for (t0, n0), (t1, n1) in zip(samples, samples[1:]) if t1 > t0]
    if not pts:
        return ""
    pad = 30
    end = max(samples[-1][0], 1e-9)
    top = max([r for _, r in pts] + [1.0])

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * t / end

    def y(r: float) -> float:
        return height - pad + (2 * pad - height) * r / top

    line = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, r in [(samples[0][0], pts[0][1])] + pts)
    return (f"<h2>Steps/s over time</h2><svg class=\"rate\" width=\"{width}\" height=\"{height}\" role=\"img\" "
            f"aria-label=\"steps/s over time\" xmlns=\"http://www.w3.org/2000/svg\">"
            f"<title>steps/s over time</title>"
            f"<line x1=\"{pad}\" y1=\"{height - pad}\" x2=\"{width - pad}\" y2=\"{height - pad}\" stroke=\"#888\"/>"
            f"<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{height - pad}\" stroke=\"#888\"/>"
            f"<text x=\"{pad - 4}\" y=\"{pad + 4}\" text-anchor=\"end\" font-size=\"10\">{top:,.0f}</text>"
            f"<text x=\"{pad - 4}\" y=\"{height - pad + 4}\" text-anchor=\"end\" font-size=\"10\">0</text>"
            f"<text x=\"{width - pad}\" y=\"{height - pad + 14}\" text-anchor=\"end\" font-size=\"10\">{end:,.0f} s</text>"
            f"<polyline fill=\"none\" stroke=\"#36c\" stroke-width=\"1.5\" points=\"{line}\"/></svg>")


def _coverage(result: Any, actions: list[str]) -> str:
    top = max([result.coverage.get(a, 0) for a in actions] + [1])
    rows, classes = [], []
    for a in actions:
        n, g = result.coverage.get(a, 0), result.guards.get(a)
        weak = n == 0 or (g is not None and g.get("true", 0) == 0)
        bar = f"<span class=\"bar\" style=\"width:{max(1, round(160 * n / top))}px\"></span>"
        rows.append((escape(a), f"{n} {bar}", str(result.generated.get(a, 0)),
                     f"{g.get('true', 0)} / {g.get('false', 0)}" if g else "-",
                     "never performed" if n == 0 else "guard never true" if weak else ""))
        classes.append("weak" if weak else "")
    return ("<h2>Spec coverage</h2><p class=\"sub\">Performed: spec steps accepted; asked: operations sent; guard: "
            "how often the first draw was legal / illegal. Marked rows are where the campaign was weak.</p>"
            + table(("action", "performed", "asked", "guard true / false", "weak"), rows, classes, "class=\"coverage\""))


def _not_tried(result: Any) -> list[str]:
    from . import inputs

    return [c for c in inputs.classes() if not result.inputs.get(c)]


def _counts(title: str, counts: dict[str, int], missing: list[str]) -> str:
    """Counts by class; the classes never drawn in one marked paragraph (there may be a hundred)."""
    rows = [(escape(k), str(n)) for k, n in sorted(counts.items())]
    out = f"<h2>{escape(title)}</h2>" + (table(("class", "count"), rows, attrs="class=\"counts\"") if rows else "")
    if missing:
        out += (f"<p class=\"weak-list\" style=\"background:#fff8e1;padding:6px 10px\"><b>{len(missing)} never drawn:</b> "
                + escape(", ".join(missing)) + "</p>")
    return out


def mutants_page(results: list[Any], summary: dict[str, Any], level: str) -> str:
    """`dmm mutants --html`: every seeded bug, killed or not, by which oracle, how fast."""
    rows = [(escape(r.name), "killed" if r.killed else ("lost: " + escape(r.lost) if r.lost else "survived"),
             f"{r.seconds:.1f}", str(r.steps or "-"), str(r.shrunk_steps or "-"), escape(r.oracle or "-"),
             escape(r.description)) for r in results]
    classes = ["" if r.killed else "blamed" for r in results]
    head = (f"<h1>dmm mutants at level {escape(level)}</h1><div class=\"verdict"
            f"{' pass' if summary['killed'] == summary['total'] else ''}\" id=\"verdict\">{summary['killed']}/"
            f"{summary['total']} killed; median {summary['median_seconds']} s to the first failure</div>")
    return page("dmm mutants", head + table(("mutant", "verdict", "seconds", "steps", "shrunk", "oracle", "what it breaks"),
                                            rows, classes, "class=\"mutants\""), GENERATOR)


def write(path: str, text: str) -> str:
    """Write a page (its folder made); OSError for the caller to report as bad input."""
    p = Path(path)
    if p.parent != Path(""):
        p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return str(p)
