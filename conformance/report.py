"""How conformance results read: the failure table, the state diff, coverage, JSON."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from . import inputs, legend, levels
from .adapter import Config
from .fuzz import FuzzResult
from .oracle import Failure
from .runner import StepRecord


def _hexish(k: str, v: Any) -> str:
    return f"{v:#x}" if k in ("x", "gpa", "value", "bits") and isinstance(v, int) else str(v)


def failure_table(records: list[StepRecord], failure: Failure, level: str = "full") -> Table:
    t = Table(title=f"{failure.kind} failure at level {level}: shrunk to {len(records)} step(s)", show_lines=True)
    # Lines break between arguments, never inside one: a hex value split over two lines misleads.
    longest = max((len(f"{k}={_hexish(k, v)},") for rec in records for k, v in rec.op.args.items()), default=8)
    for col in ("step", "operation", "arguments", "implementation did", "spec expected"):
        t.add_column(col, overflow="fold", min_width=longest if col == "arguments" else None)
    for rec in records:
        did = ", ".join(n for n, _ in rec.observation.events) or ("nothing" if level == "full" else "(not shown)")
        if rec.observation.access is not None:
            a = rec.observation.access
            shown = "#GP" if a.gp else "out of memory" if a.oom else f"#PF {a.error_code:#x}" if a.fault else "ok"
            did += f" → {shown}" + (f" value {a.value:#x}" if a.value is not None else "")
        last = rec is records[-1]
        expected = failure.message if last else (", ".join(s.action for s in rec.spec_steps) or "nothing")
        t.add_row(str(rec.index), rec.op.action, ", ".join(f"{k}={_hexish(k, v)}" for k, v in rec.op.args.items()),
                  did, f"[red]{expected}[/]" if last else expected)
    return t


def show_failure(console: Console, records: list[StepRecord], failure: Failure, *, seed: int, trace: str | None,
                 level: str = "full", config: Config | None = None, first_mfn: int | None = None) -> None:
    """The failure: its steps, the detail (a refinement's state diff; an invariant's blame and what
    the failing step changed), the legend from spec names to implementation values (`config`: the
    failing test case's scope; `first_mfn`: the implementation's first DMM page, when known)."""
    console.print(failure_table(records, failure, level))
    if failure.detail:
        console.print("[bold]spec state against implementation state at the failing step[/]"
                      if failure.kind == "refinement" else "[bold]detail[/]")
        console.print(failure.detail, markup=False, highlight=False)
    changed = failure.facts.get("changed") if failure.kind == "invariant" else None
    if changed:
        console.print(_changed_table(changed, failure.detail))
    if config is not None:
        texts = [failure.message, failure.detail] + [" ".join(map(str, c)) for c in changed or []]
        names = legend.legend(texts, config, first_mfn)
        if names:
            console.print("[bold]legend[/] (spec names → implementation values): "
                          + ", ".join(f"{n} = {m}" for n, m in names), highlight=False)
    console.print(f"seed: {seed}")
    if trace:  # one line each, never wrapped: they are copied and pasted
        console.print(f"trace: {trace}", soft_wrap=True, highlight=False)
        console.print(f"replay: dmm replay {trace}", soft_wrap=True, highlight=False)


def _changed_table(changed: list[Any], detail: str) -> Table:
    """What the failing step changed (before and after it), the points the blame reads in red."""
    from dmmcheck.model.html import blamed_points

    blamed = set().union(*(blamed_points(line) for line in detail.splitlines())) if detail else set()
    t = Table(title="what the failing step changed", caption="red: a point the blame reads")
    t.add_column("point", overflow="fold")
    for col in ("before", "after"):
        t.add_column(col, no_wrap=True)
    for point, before, after in changed:
        style = "bold red" if point in blamed else None
        t.add_row(point, before, after, style=style)
    return t


def coverage(result: FuzzResult, actions: list[str]) -> dict[str, int]:
    return {a: result.coverage.get(a, 0) for a in actions}


def show_fuzz(console: Console, result: FuzzResult, actions: list[str]) -> None:
    console.print(f"conformance level: {result.level} ({levels.WHAT[result.level]})")
    if result.level == "black-box":
        console.print("spec coverage: not observable at level black-box (the implementation shows no spec actions)")
    else:
        _coverage_table(console, result, actions)
    _summary(console, result)
    if result.known is not None:
        show_known(console, result.known)


def show_known(console: Console, tally: Any) -> None:
    """The accepted divergences (--known-divergences): hits per entry, entries never hit."""
    t = Table(title=f"known divergences ({tally.known.path})")
    for col in ("entry", "kind", "hits", "first accepted"):
        t.add_column(col, overflow="fold")
    for e in tally.known.entries:
        n = tally.hits[e.name]
        t.add_row(e.name, e.kind, str(n) if n else "[yellow]0 (never hit)[/]", tally.first.get(e.name, "-"))
    console.print(t)
    console.print(f"{tally.cut_short} test case(s) cut short at an accepted divergence (not judged past it)")
    never = tally.never_hit()
    if never:
        console.print(f"[yellow]never hit:[/] {', '.join(never)}")


def _coverage_table(console: Console, result: FuzzResult, actions: list[str]) -> None:
    t = Table(title="spec coverage" + (" (the actions of the sequences found)" if result.level == "state" else ""))
    for col in ("action", "performed", "asked", "guard true/false"):
        t.add_column(col)
    for a in actions:
        n = result.coverage.get(a, 0)
        g = result.guards.get(a)
        t.add_row(a, str(n) if n else "[yellow]0 (never)[/]", str(result.generated.get(a, 0)),
                  f"{g['true']}/{g['false']}" if g else "-")
    console.print(t)
    never = [a for a in actions if not result.coverage.get(a)]
    if never:
        console.print(f"[yellow]never exercised:[/] {', '.join(never)}")


def _summary(console: Console, result: FuzzResult) -> None:
    if result.scopes:
        console.print("scopes: " + ", ".join(f"{k} {n}" for k, n in sorted(result.scopes.items())))
    if result.inputs:
        tried = not_tried(result)
        console.print(f"input classes: {len(inputs.classes()) - len(tried)} of {len(inputs.classes())} tried"
                      + (f"; [yellow]not tried:[/] {', '.join(tried)}" if tried else ""))
    if result.skipped:
        console.print("[yellow]not performed by the adapter (skipped, not judged):[/] "
                      + ", ".join(f"{n} {k}" for k, n in sorted(result.skipped.items())))
    console.print(f"{result.examples} test cases, {result.steps} steps in {result.seconds:.1f} s "
                  f"({result.steps_per_second:.0f} steps/s; {result.seconds_in_impl:.1f} s in the implementation, "
                  f"{result.seconds_in_oracle:.1f} s in the oracles)")
    console.print(f"implementation memory: {result.memory_mib_start:,.0f} MiB at the start, {result.memory_mib_peak:,.0f} MiB "
                  f"at most (limit {result.memory_limit_mib:,} MiB)" if result.memory_limit_mib else
                  f"implementation memory: {result.memory_mib_start:,.0f} MiB at the start, {result.memory_mib_peak:,.0f} MiB at most")


def not_tried(result: FuzzResult) -> list[str]:
    return [c for c in inputs.classes() if not result.inputs.get(c)]


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def as_json(result: FuzzResult, actions: list[str], trace: str | None) -> dict[str, Any]:
    failures = []
    if result.failure is not None:
        failures.append({"trace": trace, "steps": len(result.shrunk), "kind": result.failure.kind,
                         "message": result.failure.message, "facts": result.failure.facts or None})
    seen = result.level != "black-box"  # no spec actions to count at black-box: null, not zeros
    return {"impl": result.impl, "level": result.level, "seed": result.seed, "examples": result.examples,
            "steps": result.steps, "seconds": round(result.seconds, 3),
            "steps_per_second": round(result.steps_per_second, 1),
            "coverage": coverage(result, actions) if seen else None,
            "never_exercised": [a for a in actions if not result.coverage.get(a)] if seen else None,
            "guards": {a: dict(c) for a, c in result.guards.items()},
            "inputs": dict(sorted(result.inputs.items())), "inputs_not_tried": not_tried(result),
            "scopes": dict(sorted(result.scopes.items())),
            "skipped": dict(sorted(result.skipped.items())),
            "config": result.config.to_json() if result.config is not None else None,
            "seconds_in_impl": round(result.seconds_in_impl, 3),
            "seconds_in_oracle": round(result.seconds_in_oracle, 3), "failures": failures,
            "warnings": result.warnings, "shrink_cut": result.shrink_cut,
            "seconds_to_failure": _round(result.seconds_to_failure), "seconds_shrinking": _round(result.seconds_shrinking),
            "readback": dict(result.reads), "rate_samples": result.rate_samples,
            "known_divergences": result.known.to_json() if result.known is not None else None,
            "memory": {"start_mib": round(result.memory_mib_start, 1), "peak_mib": round(result.memory_mib_peak, 1),
                       "limit_mib": result.memory_limit_mib}}
