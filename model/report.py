"""How prover results are shown: a progress bar while running; then a PASS/FAIL matrix of actions
against invariants (as Ivy reports guarantees per action), the other obligations, every failure with
its counterexample, and the invariants no proof used."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dmmcheck.spec.checker import CheckedSpec

from .prove import Prover, Result
from .runner import ProveOptions, kinduction_holds, loaded, run, select, unused_invariants

_MARK = {"proved": "[green]✓[/]", "violated": "[red]✗[/]", "unknown": "[yellow]?[/]"}


def run_with_progress(opts: ProveOptions, console: Console, quiet: bool = False) -> tuple[list[Result], float]:
    if quiet or not console.is_terminal:
        return run(opts)
    total = len(select(Prover.list_obligations(loaded(opts), opts.bmc, opts.kinduction), opts.only))
    # Imported only for a terminal: a piped or --json run never draws the bar (rich.progress: ~5 ms).
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("proving"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=console, transient=True) as bar:
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


def show(console: Console, spec: CheckedSpec, results: list[Result], seconds: float, traces: list[str]) -> None:
    by_name = {r.name: r for r in results}
    invs = [i.name for i in spec.invariants]
    inductive = [r for r in results if r.kind == "inductive"]
    if inductive:
        t = Table(title="inductive: action × invariant", show_lines=False, pad_edge=False)
        t.add_column("action")
        for k, _ in enumerate(invs):
            t.add_column(str(k + 1), justify="center")
        for a in spec.actions:
            row = [by_name.get(f"inductive/{a}/{i}") for i in invs]
            if any(row):
                t.add_row(a, *[_MARK[r.status] if r else "·" for r in row])
        console.print(t)
        console.print("  " + "  ".join(f"{k + 1}={n}" for k, n in enumerate(invs)))
    others = [r for r in results if r.kind not in ("inductive", "witness")]
    if others:
        t = Table(title="init, vacuity, bmc, k-induction")
        for col in ("obligation", "status", "seconds", "note"):
            t.add_column(col)
        for r in others:
            if r.status != "proved" or r.kind in ("init", "bmc", "kinduction"):
                t.add_row(r.name, _MARK[r.status] + " " + r.status, f"{r.seconds:.2f}", r.reason)
        hidden = sum(1 for r in others if r.status == "proved" and r.kind == "vacuity")
        if hidden:
            t.add_row(f"vacuity ({hidden} checks)", _MARK["proved"] + " proved", "", "init, invariants and every action satisfiable")
        console.print(t)
    _show_witnesses(console, [r for r in results if r.kind == "witness"])
    for r in results:
        if r.kind == "witness":
            continue
        if r.status == "violated" and r.counterexample:
            _show_counterexample(console, r)
        elif r.status == "unknown":
            console.print(f"[yellow]unknown[/] {r.name}: {r.reason}")
    s = summary(results)
    if kinduction_holds(results) and any(r.kind == "inductive" and r.status != "proved" for r in results):
        console.print("  k-induction proved every invariant: the 1-induction failures above are superseded")
    fallbacks = [r for r in results if r.bound and r.kind == "inductive" and r.status == "proved"]
    console.print(f"dmm prove: {s['proved']} proved, {s['violated']} violated, {s['unknown']} unknown "
                  f"in {seconds:.2f} s ({sum(r.cached for r in results)} from cache)")
    ws = witness_summary(results)
    if ws["found"] or ws["not_found"]:
        console.print(f"  witnesses: {ws['found']} found, {ws['not_found']} not found within the depth"
                      + (f" ({ws['required_not_found']} required: the run fails)" if ws["required_not_found"] else ""))
    reach = [r.reachability["verdict"] for r in results if r.reachability]
    if reach:
        console.print("  counterexamples to induction: " + ", ".join(
            f"{reach.count(v)} {v}" for v in ("reachable", "not reached", "unknown"))
            + " (an execution reaching each searched for; --reach-seconds)")
    if fallbacks:
        console.print(f"  {len(fallbacks)} inductive obligations proved only in finite universes: "
                      + "; ".join(sorted({r.reason for r in fallbacks})))
    full = len(inductive) == len(invs) * len(spec.actions)
    unused = unused_invariants(results, invs) if full else []
    if unused:
        console.print(f"  invariants no proof used: {', '.join(unused)}")
    for tr in traces:
        console.print(f"  trace written: {tr} (replay with `dmm replay {tr}`)", soft_wrap=True)
    if any(r.status == "violated" and r.counterexample for r in results):
        console.print("  to see each counterexample drawn (states as tables and relation diagrams, the failing "
                      "line of the spec): dmm prove ... --html FILE.html", highlight=False)


def _show_counterexample(console: Console, r: Result) -> None:
    cx = r.counterexample or {}
    console.print(f"\n[red]✗ {r.name}[/]")
    if "steps" in cx:
        console.print(f"  reachable violation in {len(cx['steps'])} steps (universe {_universe(cx)}):", highlight=False)
        for i, st in enumerate(cx["steps"]):
            console.print(f"    {i + 1}. {st['action']}({', '.join(f'{k}={v}' for k, v in st['args'].items())})",
                          highlight=False)
        _show_failing(console, r, cx, "fails")
        _show_immutable(console, cx)
        return
    if "after_text" in cx:
        args = ", ".join(f"{k}={v}" for k, v in cx["args"].items())
        console.print(f"  counterexample to induction in universe {_universe(cx)}: {cx['action']}({args})",
                      highlight=False)
        _show_failing(console, r, cx, "fails afterwards")
        _show_immutable(console, cx)
        t = Table(show_header=True)
        t.add_column("before")
        t.add_column("after")
        before, after = cx["before_text"].splitlines(), cx["after_text"].splitlines()
        empty = []
        for b, a in zip(before, after):
            if a == b and _is_empty(b):
                empty.append(b.split(" ")[0].split(":")[0].lstrip("!"))
                continue
            t.add_row(escape(b), escape(a) if a == b else f"[bold]{escape(a)}[/]")
        console.print(t)
        if empty:
            console.print(f"  empty before and after: {', '.join(empty)}", highlight=False, markup=False)
    else:
        console.print(f"  {cx.get('note', '')}")
    _show_reachability(console, r)


def _show_witnesses(console: Console, results: list[Result]) -> None:
    """One row per witness (found, or not within the depth: unknown beyond it), then each run found."""
    if not results:
        return
    t = Table(title="witnesses (reachability, shortest run)")
    for col in ("witness", "shape", "result", "steps", "seconds"):
        t.add_column(col)
    for r in results:
        w = r.witness or {}
        found = r.status == "proved"
        verdict = "[green]found[/]" if found else "[red]not found[/] (required)" if w.get("required") else \
            "[yellow]not found[/]"
        t.add_row(r.invariant or r.name, escape(w.get("shape", "")), verdict,
                  str(len(w["steps"])) if found else f"> {w.get('depth')}", f"{r.seconds:.2f}")
    console.print(t)
    for r in results:
        w = r.witness or {}
        if r.status != "proved":
            console.print(f"  {r.name}: {r.reason}", highlight=False, markup=False)
            continue
        params = ", ".join(f"{k}={v}" for k, v in (w.get("params") or {}).items())
        console.print(f"  {r.name}: {r.reason}" + (f", {params}" if params else "") + ":", highlight=False,
                      markup=False)
        for i, st in enumerate(w["steps"]):
            console.print(f"    {i + 1}. {st['action']}({', '.join(f'{k}={v}' for k, v in st['args'].items())})",
                          highlight=False, markup=False)


def _is_empty(line: str) -> bool:
    """A symbol line that says nothing holds: `r = {}`, `f: -`, `!flag`."""
    return line.endswith(" = {}") or line.endswith(": -") or (line.startswith("!") and " " not in line)


def _universe(cx: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in (cx.get("universe") or {}).items())


def _show_failing(console: Console, r: Result, cx: dict[str, Any], verb: str) -> None:
    """The invariant, the conjunct that fails with where it is written, and the blame."""
    part = cx.get("conjunct")
    if part:
        where = f"{part['loc']}: " if part.get("loc") else ""
        console.print(f"  {r.invariant} {verb}: {where}conjunct {part['index']} of {part['of']}: {part['text']}",
                      highlight=False, markup=False)
    console.print(f"  {'blame' if part else f'{r.invariant} {verb}'}: {cx.get('blame')}", highlight=False, markup=False)


def _show_immutable(console: Console, cx: dict[str, Any]) -> None:
    """Immutable symbols once (they are the same in every state)."""
    text = cx.get("immutable_text")
    if text:
        console.print("  immutable: " + "; ".join(text.splitlines()), highlight=False, markup=False)
    if cx.get("state_text"):
        console.print("  state at the violation:", highlight=False)
        for line in cx["state_text"].splitlines():
            console.print(f"    {line}", highlight=False, markup=False)


def _show_reachability(console: Console, r: Result) -> None:
    """Whether an execution reaches the counterexample to induction (reachable.py)."""
    reach = r.reachability
    if not reach:
        return
    color = {"reachable": "red", "not reached": "yellow"}.get(reach["verdict"], "yellow")
    console.print(f"  [{color}]{reach['text']}[/]", highlight=False)
    if reach["verdict"] != "reachable":
        return
    for i, st in enumerate(reach["trace"]):
        console.print(f"    {i + 1}. {st['action']}({', '.join(f'{k}={v}' for k, v in st['args'].items())})",
                      highlight=False)
    console.print(f"  {r.invariant} fails afterwards: {reach['blame']}", highlight=False)
