"""How prover results are shown: a progress bar while running; then a PASS/FAIL matrix of actions
against invariants (as Ivy reports guarantees per action), the other obligations, every failure with
its counterexample, and the invariants no proof used.

The report is lines of text in aligned columns (`Out`). On a terminal they are coloured through rich;
anywhere else (a pipe, a CI log, a test) they are plain and unwrapped, and rich is never imported:
its import and table layout were a quarter of the CPU of proving a small spec."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO, Union

from dmmcheck.spec.checker import CheckedSpec

from .prove import Prover, Result
from .runner import ProveOptions, kinduction_holds, loaded, run, select, unused_invariants

if TYPE_CHECKING:
    from rich.console import Console

# A piece of a line: plain text, or (text, rich style) coloured on a terminal.
Cell = Union[str, tuple[str, str]]

_MARK: dict[str, tuple[str, str]] = {"proved": ("✓", "green"), "violated": ("✗", "red"), "unknown": ("?", "yellow")}


class Out:
    """Where a report goes: styled lines on a terminal (rich, imported only there), plain lines
    elsewhere. `color` forces one or the other."""

    def __init__(self, file: TextIO | None = None, color: bool | None = None) -> None:
        self.file = file or sys.stdout
        self._console: Console | None = None
        if self.file.isatty() if color is None else color:
            from rich.console import Console

            self._console = Console(file=self.file, highlight=False, soft_wrap=True, force_terminal=color)

    def line(self, *parts: Cell) -> None:
        if self._console is None:
            self.file.write("".join(_text(p) for p in parts) + "\n")
            return
        from rich.text import Text

        self._console.print(Text.assemble(*parts))

    def columns(self, rows: list[list[Cell]], title: str = "", indent: str = "  ") -> None:
        """Rows in columns as wide as their widest cell (the first row is the header, in bold)."""
        if title:
            self.line((title, "bold"))
        widths = [max(len(_text(r[i])) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
        for n, row in enumerate(rows):
            while row and not _text(row[-1]):  # no trailing blanks
                row = row[:-1]
            parts: list[Cell] = [indent]
            for i, cell in enumerate(row):
                last = i == len(row) - 1
                parts.append((_text(cell), "bold") if n == 0 else cell)
                if not last:
                    parts.append(" " * (widths[i] - len(_text(cell)) + 2))
            self.line(*parts)


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def run_with_progress(opts: ProveOptions, err: Console | None = None, quiet: bool = False) -> tuple[list[Result], float]:
    """The obligations proved, with a progress bar on a terminal's stderr (err, or one made here)."""
    if quiet or not (err.is_terminal if err is not None else sys.stderr.isatty()):
        return run(opts)
    total = len(select(Prover.list_obligations(loaded(opts), opts.bmc, opts.kinduction), opts.only))
    # Imported only for a terminal: a piped or --json run never draws the bar.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("proving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=err or Console(stderr=True), transient=True) as bar:
        task = bar.add_task("prove", total=total, last="")
        return run(opts, lambda r: bar.update(task, advance=1, last=r.name))


def summary(results: list[Result]) -> dict[str, int]:
    """Obligations by status (witnesses are counted apart: witness_summary)."""
    return {s: sum(r.status == s for r in results if r.kind != "witness") for s in ("proved", "violated", "unknown")}


def witness_summary(results: list[Result]) -> dict[str, int]:
    ws = [r for r in results if r.kind == "witness"]
    return {"found": sum(r.status == "proved" for r in ws), "not_found": sum(r.status != "proved" for r in ws),
            "required_not_found": sum(r.status != "proved" and bool((r.witness or {}).get("required")) for r in ws)}


def as_json(spec_file: str, results: list[Result], seconds: float, traces: list[str]) -> dict[str, Any]:
    inductive = [r for r in results if r.kind == "inductive"]
    invs = sorted({r.invariant for r in inductive if r.invariant})
    acts = {r.action for r in inductive}
    full = bool(inductive) and len(inductive) == len(invs) * len(acts)
    return {"spec": spec_file, "seconds": round(seconds, 3), "summary": summary(results),
            "kinduction_proves_all": kinduction_holds(results), "witnesses": witness_summary(results),
            "unused_invariants": unused_invariants(results, invs) if full else None,
            "traces": traces,
            "obligations": [{**r.to_json(), "seconds": round(r.seconds, 4)} for r in results]}


def show(out: Out, spec: CheckedSpec, results: list[Result], seconds: float, traces: list[str]) -> None:
    by_name = {r.name: r for r in results}
    invs = [i.name for i in spec.invariants]
    inductive = [r for r in results if r.kind == "inductive"]
    if inductive:
        rows: list[list[Cell]] = [["action", *(str(k + 1) for k in range(len(invs)))]]
        for a in spec.actions:
            row = [by_name.get(f"inductive/{a}/{i}") for i in invs]
            if any(row):
                rows.append([a, *(_MARK[r.status] if r else "·" for r in row)])
        out.columns(rows, "inductive: action × invariant")
        out.line("  " + "  ".join(f"{k + 1}={n}" for k, n in enumerate(invs)))
    others = [r for r in results if r.kind not in ("inductive", "witness")]
    if others:
        rows = [["obligation", "status", "seconds", "note"]]
        rows += [[r.name, _status(r.status), f"{r.seconds:.2f}", r.reason] for r in others
                 if r.status != "proved" or r.kind in ("init", "bmc", "kinduction")]
        hidden = sum(1 for r in others if r.status == "proved" and r.kind == "vacuity")
        if hidden:
            rows.append([f"vacuity ({hidden} checks)", _status("proved"), "", "init, invariants and every action satisfiable"])
        out.columns(rows, "init, vacuity, bmc, k-induction")
    _show_witnesses(out, [r for r in results if r.kind == "witness"])
    for r in results:
        if r.kind == "witness":
            continue
        if r.status == "violated" and r.counterexample:
            _show_counterexample(out, r)
        elif r.status == "unknown":
            out.line(("unknown", "yellow"), f" {r.name}: {r.reason}")
    _show_summary(out, spec, results, seconds, traces)


def _status(status: str) -> Cell:
    mark, style = _MARK[status]
    return (f"{mark} {status}", style)


def _show_summary(out: Out, spec: CheckedSpec, results: list[Result], seconds: float, traces: list[str]) -> None:
    s = summary(results)
    if kinduction_holds(results) and any(r.kind == "inductive" and r.status != "proved" for r in results):
        out.line("  k-induction proved every invariant: the 1-induction failures above are superseded")
    out.line(f"dmm prove: {s['proved']} proved, {s['violated']} violated, {s['unknown']} unknown "
             f"in {seconds:.2f} s ({sum(r.cached for r in results)} from cache)")
    ws = witness_summary(results)
    if ws["found"] or ws["not_found"]:
        out.line(f"  witnesses: {ws['found']} found, {ws['not_found']} not found within the depth"
                 + (f" ({ws['required_not_found']} required: the run fails)" if ws["required_not_found"] else ""))
    reach = [r.reachability["verdict"] for r in results if r.reachability]
    if reach:
        out.line("  counterexamples to induction: " + ", ".join(
            f"{reach.count(v)} {v}" for v in ("reachable", "not reached", "unknown"))
            + " (an execution reaching each searched for; --reach-seconds)")
    fallbacks = [r for r in results if r.bound and r.kind == "inductive" and r.status == "proved"]
    if fallbacks:
        out.line(f"  {len(fallbacks)} inductive obligations proved only in finite universes: "
                 + "; ".join(sorted({r.reason for r in fallbacks})))
    invs = [i.name for i in spec.invariants]
    full = len([r for r in results if r.kind == "inductive"]) == len(invs) * len(spec.actions)
    unused = unused_invariants(results, invs) if full else []
    if unused:
        out.line(f"  invariants no proof used: {', '.join(unused)}")
    for tr in traces:
        out.line(f"  trace written: {tr} (replay with `dmm replay {tr}`)")
    if any(r.status == "violated" and r.counterexample for r in results):
        out.line("  to see each counterexample drawn (states as tables and relation diagrams, the failing "
                 "line of the spec): dmm prove ... --html FILE.html")


def _steps(out: Out, steps: list[dict[str, Any]]) -> None:
    for i, st in enumerate(steps):
        out.line(f"    {i + 1}. {st['action']}({', '.join(f'{k}={v}' for k, v in st['args'].items())})")


def _show_counterexample(out: Out, r: Result) -> None:
    cx = r.counterexample or {}
    out.line()
    out.line((f"✗ {r.name}", "red"))
    if "steps" in cx:
        out.line(f"  reachable violation in {len(cx['steps'])} steps (universe {_universe(cx)}):")
        _steps(out, cx["steps"])
        _show_failing(out, r, cx, "fails")
        _show_immutable(out, cx)
        return
    if "after_text" in cx:
        args = ", ".join(f"{k}={v}" for k, v in cx["args"].items())
        out.line(f"  counterexample to induction in universe {_universe(cx)}: {cx['action']}({args})")
        _show_failing(out, r, cx, "fails afterwards")
        _show_immutable(out, cx)
        rows: list[list[Cell]] = [["before", "after"]]
        empty = []
        for b, a in zip(cx["before_text"].splitlines(), cx["after_text"].splitlines()):
            if a == b and _is_empty(b):
                empty.append(b.split(" ")[0].split(":")[0].lstrip("!"))
                continue
            rows.append([b, a if a == b else (a, "bold")])  # what the step changed stands out
        out.columns(rows, indent="    ")
        if empty:
            out.line(f"  empty before and after: {', '.join(empty)}")
    else:
        out.line(f"  {cx.get('note', '')}")
    _show_reachability(out, r)


def _show_witnesses(out: Out, results: list[Result]) -> None:
    """One row per witness (found, or not within the depth: unknown beyond it), then each run found."""
    if not results:
        return
    rows: list[list[Cell]] = [["witness", "shape", "result", "steps", "seconds"]]
    for r in results:
        w = r.witness or {}
        found = r.status == "proved"
        verdict: Cell = ("found", "green") if found else ("not found (required)", "red") if w.get("required") \
            else ("not found", "yellow")
        rows.append([r.invariant or r.name, w.get("shape", ""), verdict,
                     str(len(w["steps"])) if found else f"> {w.get('depth')}", f"{r.seconds:.2f}"])
    out.columns(rows, "witnesses (reachability, shortest run)")
    for r in results:
        w = r.witness or {}
        if r.status != "proved":
            out.line(f"  {r.name}: {r.reason}")
            continue
        params = ", ".join(f"{k}={v}" for k, v in (w.get("params") or {}).items())
        out.line(f"  {r.name}: {r.reason}" + (f", {params}" if params else "") + ":")
        _steps(out, w["steps"])


def _is_empty(line: str) -> bool:
    """A symbol line that says nothing holds: `r = {}`, `f: -`, `!flag`."""
    return line.endswith(" = {}") or line.endswith(": -") or (line.startswith("!") and " " not in line)


def _universe(cx: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in (cx.get("universe") or {}).items())


def _show_failing(out: Out, r: Result, cx: dict[str, Any], verb: str) -> None:
    """The invariant, the conjunct that fails with where it is written, and the blame."""
    part = cx.get("conjunct")
    if part:
        where = f"{part['loc']}: " if part.get("loc") else ""
        out.line(f"  {r.invariant} {verb}: {where}conjunct {part['index']} of {part['of']}: {part['text']}")
    out.line(f"  {'blame' if part else f'{r.invariant} {verb}'}: {cx.get('blame')}")


def _show_immutable(out: Out, cx: dict[str, Any]) -> None:
    """Immutable symbols once (they are the same in every state)."""
    text = cx.get("immutable_text")
    if text:
        out.line("  immutable: " + "; ".join(text.splitlines()))
    if cx.get("state_text"):
        out.line("  state at the violation:")
        for line in cx["state_text"].splitlines():
            out.line(f"    {line}")


def _show_reachability(out: Out, r: Result) -> None:
    """Whether an execution reaches the counterexample to induction (reachable.py)."""
    reach = r.reachability
    if not reach:
        return
    out.line("  ", (reach["text"], {"reachable": "red"}.get(reach["verdict"], "yellow")))
    if reach["verdict"] != "reachable":
        return
    _steps(out, reach["trace"])
    out.line(f"  {r.invariant} fails afterwards: {reach['blame']}")
