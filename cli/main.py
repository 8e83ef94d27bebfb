"""The `dmm` command: one subcommand per job, each a thin layer over the library.

Exit statuses are part of the public interface (CI scripts read them): one table for every command
(docs/exit-codes.md, the EXIT_ constants below). A spec error never ends in a traceback: it prints
file:line:col diagnostics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from dmmcheck.model.limits import BACKSTOP, REACH_SECONDS, RLIMIT, WITNESS_DEPTH

if TYPE_CHECKING:  # the model is imported only by the commands that use it
    from dmmcheck.model.explore import ExploreResult

# Exit statuses, the same in every command (docs/exit-codes.md): a verdict never shares a code with
# a usage error.
EXIT_FOUND = 1  # something is wrong with what was checked: a violation, a failure, a survivor
EXIT_USAGE = 2  # bad input: options, files that cannot be read, traces, configurations, adapters
EXIT_INCOMPLETE = 3  # not everything could be checked: unknown obligations, a search stopped by a limit
EXIT_SPEC_ERROR = 4  # the spec has errors (located diagnostics)
EXIT_NOT_INDUCTIVE = 5  # dmm prove: a counterexample to induction, and no reachable violation


def _load_or_report(path: str | None):
    """The checked spec, or the exit status after printing why there is none: a spec with errors
    (4), or a file that cannot be read at all (2)."""
    # Here, not at the top: `dmm --help` and the harness's commands start without the spec's imports.
    from dmmcheck.spec import SpecError, load

    try:
        return load(path)
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        n = len(e.diagnostics)
        print(f"dmm: {n} error{'s' if n != 1 else ''} in {e.diagnostics[0].loc.file}", file=sys.stderr)
        unreadable = all(d.loc.line == 0 for d in e.diagnostics)  # missing, a folder, a FIFO, no path
        return EXIT_USAGE if unreadable else EXIT_SPEC_ERROR


def cmd_parse(args: argparse.Namespace) -> int:
    """Parse and type-check a spec. Exit 0, 4 on a spec error, 2 when it cannot be read."""
    spec = _load_or_report(args.spec)
    if isinstance(spec, int):
        return spec
    s = spec.summary()
    if args.json:
        print(json.dumps(s))
    else:
        counts = ", ".join(f"{len(v)} {k}" for k, v in s.items() if v)
        print(f"{spec.file}: ok: {counts}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The main job: prove every obligation, explore CHECK_BOUND (the largest scope that finishes in
    its time limit; the report names the actions it never enables) and CHECK_BOUND_VCPUS (two
    vCPUs), fuzz the bundled VMM, one summary table. Exit 0 when everything passed; otherwise the
    first failing stage's status."""
    from rich.console import Console
    from rich.table import Table

    from dmmcheck.model import report
    from dmmcheck.model.explore import CHECK_SECONDS, check_bounds, explore
    from dmmcheck.model.interp import Interpreter
    from dmmcheck.model.runner import ProveOptions, exit_status

    spec = _load_or_report(args.spec)
    if isinstance(spec, int):
        return spec
    out = Console()
    err = Console(stderr=True)
    out.print(f"dmm check: {spec.file}: parsed and type-checked ({len(spec.actions)} actions, "
              f"{len(spec.invariants)} invariants)")
    results, seconds = report.run_with_progress(ProveOptions(args.spec, jobs=os.cpu_count() or 1,
                                                             reach_seconds=REACH_SECONDS, spec=spec), err)
    prove_status = exit_status(results)
    s = report.summary(results)
    explored = []
    for bound in check_bounds(spec):
        with err.status(f"exploring {', '.join(f'{k}={v}' for k, v in bound.items()) or 'the declared sizes'}"):
            explored.append(explore(Interpreter(spec, bound), max_seconds=CHECK_SECONDS, jobs=os.cpu_count() or 1))
    table = Table(title="dmm check")
    for col in ("stage", "result", "seconds", "detail"):
        table.add_column(col)
    table.add_row("prove", "[green]passed[/]" if prove_status == 0 else f"[red]failed (exit {prove_status})[/]",
                  f"{seconds:.1f}", f"{s['proved']} proved, {s['violated']} violated, {s['unknown']} unknown (unbounded)")
    for r in explored:
        table.add_row("explore", "[green]passed[/]" if r.complete and not r.violations else "[red]failed[/]",
                      f"{r.seconds:.1f}", _explore_detail(r))
    fuzz_ok = True
    if args.spec is None:  # the bundled VMM conforms to the bundled spec; another spec has no implementation here
        from dmmcheck.conformance.cli import FuzzOptions, run_fuzz
        from dmmcheck.conformance.report import show_failure

        fr, trace = run_fuzz(spec, FuzzOptions(seconds=args.fuzz_seconds), err)
        fuzz_ok = fr.failure is None
        never = [a for a in spec.actions if not fr.coverage.get(a)]
        detail = (f"{fr.steps} steps, {fr.examples} cases, {fr.steps_per_second:.0f} steps/s on the bundled VMM"
                  + (f"; never exercised: {', '.join(never)}" if never else ""))
        if fr.failure is not None:
            detail = f"{fr.failure.kind}: {fr.failure.message}; trace {trace}"
        table.add_row("fuzz", "[green]passed[/]" if fuzz_ok else "[red]failed[/]", f"{fr.seconds:.1f}", detail)
    else:
        table.add_row("fuzz", "[yellow]not run[/]", "", "no implementation of this spec (dmm fuzz --impl)")
    out.print(table)
    for res in results:
        if res.status != "proved":
            out.print(f"  {res.status}: {res.name} {res.reason}")
            if res.reachability:
                out.print(f"    {res.reachability['text']}")
    if args.spec is None and not fuzz_ok:
        show_failure(out, fr.shrunk, fr.failure, seed=0, trace=trace)  # type: ignore[arg-type]
    if prove_status:
        return prove_status
    if any(r.violations for r in explored) or not fuzz_ok:
        return EXIT_FOUND
    return 0 if all(r.complete for r in explored) else EXIT_INCOMPLETE


def _explore_detail(r: "ExploreResult") -> str:
    """One explore row of `dmm check`'s table: the bound, what was found, what was never enabled."""
    detail = (f"{r.states:,} states, bound {', '.join(f'{k}={v}' for k, v in r.bound.items())} "
              f"({r.transitions:,} transitions); "
              + (f"[yellow]warning: {r.never_enabled_warning()}[/]" if r.never_enabled else "every action enabled"))
    if r.violations:
        detail += f"; violated: {', '.join(v.invariant for v, _ in r.violations)}"
    elif not r.complete:
        detail += f"; incomplete ({r.stopped_by})"
    return detail


def _parse_bound(text: str | None) -> dict[str, int]:
    bound: dict[str, int] = {}
    for part in filter(None, (text or "").split(",")):
        name, sep, num = part.partition("=")
        if not sep or not num.strip().isdigit():
            raise argparse.ArgumentTypeError(f"bad bound {part!r}: expected SORT=N, e.g. vm=2,mfn=3")
        bound[name.strip()] = int(num)
    return bound


def _print_action_table(counts: dict[str, int]) -> None:
    """Per action: the transitions it made, and whether any explored state enabled it."""
    width = max(map(len, counts), default=6)
    print(f"  {'action':<{width}}  {'transitions':>12}  enabled")
    for a, n in counts.items():
        print(f"  {a:<{width}}  {n:>12,}  {'yes' if n else 'NEVER'}")


def cmd_explore(args: argparse.Namespace) -> int:
    """Every reachable state within the bound; exit 0 with no violation, 1 with one, 3 stopped by a
    limit, 2 a bad bound, 4 a spec error."""
    from dmmcheck.model.explore import MAX_PERMUTATIONS, default_bound, explore
    from dmmcheck.model.interp import InterpError, Interpreter
    from dmmcheck.model.state import UniverseError

    spec = _load_or_report(args.spec)
    if isinstance(spec, int):
        return spec
    try:
        given = _parse_bound(args.bound)
        # the sorts --bound leaves out take the default bound's sizes (the spec's declared ones when
        # it has no default), as with no --bound at all
        bound = {**default_bound(spec), **given}
        it = Interpreter(spec, bound)
    except (argparse.ArgumentTypeError, UniverseError) as e:
        print(f"dmm explore: {e}", file=sys.stderr)
        return EXIT_USAGE
    progress = None
    if not args.json and sys.stderr.isatty():
        def progress(states: int, frontier: int) -> None:
            print(f"\r  {states} states, {frontier} queued", end="", file=sys.stderr, flush=True)
    try:
        r = explore(it, max_states=args.max_states, max_seconds=args.max_seconds, progress=progress,
                    keep_going=args.keep_going, max_memory=args.max_memory and args.max_memory << 20,
                    jobs=args.jobs)
    except InterpError as e:  # e.g. an init whose requires leave too many initial states at this bound
        print(f"\ndmm explore: {e}" if progress else f"dmm explore: {e}", file=sys.stderr)
        return EXIT_USAGE
    if progress:
        print(file=sys.stderr)
    violations = [{"invariant": v.invariant, "blame": str(v.blame),
                   "trace": [{"action": st.action, "args": st.args} for st in trace]}
                  for v, trace in r.violations]
    if args.json:
        print(json.dumps({"bound": r.bound, "states": r.states, "transitions": r.transitions,
                          "seconds": round(r.seconds, 3), "states_per_second": round(r.states_per_second),
                          "transitions_per_second": round(r.transitions_per_second), "processes": r.processes,
                          "complete": r.complete, "stopped_by": r.stopped_by or None,
                          "symmetry": r.symmetry, "not_symmetric": r.not_symmetric,
                          "actions": {a: {"transitions": n, "enabled": n > 0} for a, n in r.action_counts.items()},
                          "never_enabled": r.never_enabled,
                          "warnings": [w for w in [r.never_enabled_warning()] if w],
                          "violations": violations}))
    else:
        print(f"dmm explore: bound {it.u.describe()}")
        sym = (f"symmetry reduced over {', '.join(r.symmetry)}" if r.symmetry else "no symmetry reduction") + \
            (f"; not over {', '.join(r.not_symmetric)} (more than {MAX_PERMUTATIONS:,} permutations)"
             if r.not_symmetric else "")
        procs = f" in {r.processes} processes" if r.processes > 1 else ""
        print(f"  {r.states:,} states, {r.transitions:,} transitions in {r.seconds:.1f} s{procs} "
              f"({r.states_per_second:,.0f} states/s, {r.transitions_per_second:,.0f} transitions/s, {sym})")
        if not r.complete and not r.violations:
            print(f"  INCOMPLETE: stopped by {r.stopped_by}; states beyond it were not explored")
        _print_action_table(r.action_counts)
        if r.never_enabled:
            print(f"  WARNING: {r.never_enabled_warning()}")
        for v, trace in r.violations:
            print(f"  VIOLATED {v}")
            for i, st in enumerate(trace):
                print(f"    {i:3d}. {st.action}({st.args})")
            print("    state at the violation:")
            for line in it.u.show_state(trace[-1].state).splitlines():
                print(f"      {line}")
        if not r.violations:
            print("  no invariant violated" + ("" if r.complete else " in the explored part"))
    if r.violations:
        return EXIT_FOUND
    return 0 if r.complete else EXIT_INCOMPLETE


def cmd_prove(args: argparse.Namespace) -> int:
    """Exit 0 all proved; 1 a reachable violation; 5 a counterexample to induction (or a vacuity or
    init failure) and no reachable violation; 3 some unknown; 4 a spec error; 2 bad options."""
    import hashlib

    from dmmcheck.model import report
    from dmmcheck.model.runner import ProveOptions, exit_status, write_trace

    spec = _load_or_report(args.spec)
    if isinstance(spec, int):
        return spec
    # The HTML and ITF writers (and their imports) only when a file is asked for.
    files = args.html is not None or args.itf is not None
    if files:
        from dmmcheck.model import prove_html

        if not prove_html.outputs_ok(args.html, args.itf):
            return EXIT_USAGE
    opts = ProveOptions(args.spec, args.finite, args.timeout, args.bmc, args.k_induction, args.only,
                        use_cache=not args.no_cache, jobs=args.jobs, rlimit=args.rlimit,
                        reach_seconds=args.reach_seconds, spec=spec)
    opts.witness_depth = args.witness_depth
    results, seconds = report.run_with_progress(opts, quiet=args.json)
    if args.only and not results:  # a typo must not pass as "nothing failed"
        print(f"dmm prove: no obligation matches --only {args.only!r}", file=sys.stderr)
        return EXIT_USAGE
    spec_text = Path(spec.file).read_text()
    traces = []
    for r in results:
        if r.kind == "bmc" and r.status == "violated":
            path = Path(args.trace_dir) / f"bmc-{r.invariant}.jsonl"
            write_trace(path, spec.file, hashlib.sha256(spec_text.encode()).hexdigest(), r)
            traces.append(str(path))
        if r.kind == "inductive" and (r.reachability or {}).get("verdict") == "reachable":
            from dmmcheck.model.reachable import write_trace as write_reached

            path = Path(args.trace_dir) / f"cti-{r.action}-{r.invariant}.jsonl"
            write_reached(path, spec.file, hashlib.sha256(spec_text.encode()).hexdigest(), r)
            r.reachability["trace_file"] = str(path)
            traces.append(str(path))
        if r.kind == "witness" and r.status == "proved":  # a run to drive an implementation through
            from dmmcheck.model.witness import write_trace as write_witness

            path = Path(args.trace_dir) / f"witness-{r.invariant}.jsonl"
            write_witness(path, spec.file, hashlib.sha256(spec_text.encode()).hexdigest(), r)
            r.witness["trace_file"] = str(path)  # type: ignore[index]
            traces.append(str(path))
    if args.json:
        print(json.dumps(report.as_json(spec.file, results, seconds, traces)))
    else:
        report.show(report.Out(), spec, results, seconds, traces)
    if not files:
        return exit_status(results)
    return prove_html.finish(spec, results, seconds, traces, exit_status(results), html=args.html, itf_path=args.itf)


def cmd_fuzz(args: argparse.Namespace) -> int:
    """Differential fuzzing of an implementation against the spec. Exit 0 no failure, 1 a
    failure, 2 bad input, 4 a spec error."""
    from dmmcheck.conformance import cli

    spec = _load_or_report(args.spec)
    return spec if isinstance(spec, int) else cli.cmd_fuzz(spec, args)


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-run a saved trace; the same verdict. Exit 0 pass, 1 failure, 2 bad input, 4 spec error."""
    from dmmcheck.conformance import cli

    spec = _load_or_report(args.spec)
    return spec if isinstance(spec, int) else cli.cmd_replay(spec, args)


def cmd_report(args: argparse.Namespace) -> int:
    """A trace as one HTML page (docs/report.md). Exit 0 written, 2 bad input, 4 a spec error."""
    from dmmcheck.conformance import report_cli
    from dmmcheck.conformance.cli import FuzzOptions

    spec = _load_or_report(args.spec)
    return spec if isinstance(spec, int) else report_cli.report(spec, args.trace, args.output, FuzzOptions.of(args))


def cmd_mutants(args: argparse.Namespace) -> int:
    """The harness against every seeded VMM bug. Exit 0 all killed, 1 a survivor, 2 bad input."""
    from dmmcheck.conformance import cli

    return cli.cmd_mutants(args)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve an in-process adapter over dmm-adapter/1 on stdin/stdout. Exit 0 after `close` or end
    of input, 2 when the adapter cannot be loaded."""
    from dmmcheck.conformance import serve

    return serve.run(args.impl)


def cmd_adapter_check(args: argparse.Namespace) -> int:
    """Drive an adapter through canned sequences and name each protocol violation. Exit 0 clean,
    1 violations, 2 bad input."""
    from dmmcheck.conformance import adapter_check

    return adapter_check.main(adapter_check.CheckOptions(args.impl, args.impl_cmd, args.timeout, args.config,
                                                         args.json))


class _Harness:
    """The harness's option adders (conformance/cli.py), imported only when the command being parsed
    is one of the harness's: importing the harness imports Hypothesis and Unicorn (about 0.4 s of
    CPU), which `dmm parse`, `dmm prove` and `dmm --help` never use. For another command the adders
    do nothing: that command's subparser is never parsed, only named in the command list."""

    def __init__(self, wanted: bool) -> None:
        self.wanted = wanted

    def __getattr__(self, name: str) -> Callable[..., None]:
        if not self.wanted:
            return lambda *args, **kwargs: None
        from dmmcheck.conformance import cli

        return getattr(cli, name)


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named on the command line: the first word that is not an option (the top-level
    options, --help and --version, take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; `command` (the subcommand being run) decides which harness commands get
    their options, so that a prover command imports nothing of the harness."""
    from dmmcheck import __version__
    from dmmcheck.options import count, seconds

    p = argparse.ArgumentParser(prog="dmm", description="Model, prove and conformance-test a VMM's Dynamic Memory Mapping layer.")
    p.add_argument("--version", action="version", version=f"dmm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        sp.add_argument("spec", nargs="?", metavar="SPEC", help="spec file (default: the bundled DMM spec)")
        return sp

    sp = add("parse", cmd_parse, "parse and type-check a spec, print a summary")
    sp.add_argument("--json", action="store_true", help="print the declared names as JSON")
    sp = add("explore", cmd_explore, "enumerate every reachable state within a bound and check every invariant")
    sp.add_argument("--bound", metavar="SORT=N,...", help="sort sizes (default for the bundled spec: see docs)")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.add_argument("--max-states", type=count(), default=None, help="stop after this many states (result: incomplete)")
    sp.add_argument("--max-seconds", type=seconds(), default=None, help="stop after this long (result: incomplete)")
    sp.add_argument("--max-memory", type=count(), default=None, metavar="MIB",
                    help="stop before the states kept pass this many MiB (default: half the memory available; "
                         "result: incomplete)")
    sp.add_argument("--keep-going", action="store_true",
                    help="after a violation, go on to find the shortest violation of every invariant")
    sp.add_argument("-j", "--jobs", type=count(1, 256), default=1, metavar="N",
                    help="explore in up to N processes, split by the model's parameters (default 1; the same result)")
    sp = add("prove", cmd_prove, "prove every invariant inductive with Z3; report every obligation")
    sp.add_argument("--json", action="store_true", help="print the report as JSON")
    sp.add_argument("--html", metavar="FILE", help="also write the results as one self-contained HTML page (docs/report.md)")
    sp.add_argument("--itf", metavar="FILE", help="also write a BMC violation as an ITF trace (Apalache, Quint; "
                    "docs/trace-format.md)")
    sp.add_argument("--bmc", type=count(0, 64), default=0, metavar="K", help="also bounded model checking to depth K (at most 64)")
    sp.add_argument("--k-induction", type=count(0, 64), default=0, metavar="K", help="also k-induction with depth K (at most 64)")
    sp.add_argument("--finite", type=count(1, 64), default=None, metavar="N",
                    help="finite universes of N per sort instead of unbounded (at most 64)")
    sp.add_argument("--rlimit", type=count(), default=RLIMIT, metavar="N",
                    help=f"Z3 resource units per check (default {RLIMIT:,}: about 10 s idle); the limit that decides "
                         "unknown, the same on a loaded machine as on an idle one")
    sp.add_argument("--timeout", type=seconds(), default=BACKSTOP, metavar="S",
                    help=f"wall-clock backstop per check (default {BACKSTOP:g} s), for what the resource limit misses")
    sp.add_argument("-j", "--jobs", type=count(), default=0, metavar="N",
                    help="parallel solver processes (default: one per core, none for a run of fewer than "
                         "300 obligations to prove)")
    sp.add_argument("--only", metavar="PATTERN", help="obligations whose name matches (glob or substring)")
    sp.add_argument("--no-cache", action="store_true", help="ignore and do not write the result cache")
    sp.add_argument("--trace-dir", default="dmm-traces", metavar="DIR",
                    help="where BMC traces and traces reaching a counterexample to induction are written")
    sp.add_argument("--reach-seconds", type=seconds(positive=False), default=REACH_SECONDS, metavar="S",
                    help=f"search at most this long for an execution reaching each counterexample to induction "
                         f"(all share one search; default {REACH_SECONDS:g}; 0: no search)")
    sp.add_argument("--witness-depth", type=count(0, 64), default=WITNESS_DEPTH, metavar="K",
                    help=f"search each witness the spec declares among runs of at most K actions (default "
                         f"{WITNESS_DEPTH}; none found within K is unknown beyond K, never unreachable)")
    sp = add("fuzz", cmd_fuzz, "differential fuzzing of a VMM implementation against the spec")
    _Harness(command == "fuzz").add_arguments(sp)
    sp = sub.add_parser("replay", help="re-run a saved trace on an implementation",
                        description="re-run a saved trace on an implementation, deterministically")
    sp.set_defaults(fn=cmd_replay)
    sp.add_argument("trace", metavar="TRACE", help="a dmm-trace/1 file (from dmm fuzz or dmm prove --bmc)")
    harness = _Harness(command == "replay")
    harness.add_impl_arguments(sp, None, "the one the trace names")
    sp.add_argument("--spec", metavar="SPEC", help="spec file (default: the bundled DMM spec)")
    sp.add_argument("--json", action="store_true", help="print the verdict as JSON")
    sp.add_argument("--html", metavar="FILE", help="also write the replay as one self-contained HTML page (docs/report.md)")
    sp.add_argument("--export-itf", metavar="FILE", help="also write the trace in the Informal Trace Format (ITF)")
    sp.add_argument("--step-timeout", type=seconds(), default=10.0, metavar="S", help="seconds one step may take")
    sp.add_argument("--config", metavar="FILE", help="replay on this scope (TOML) instead of the trace's own")
    harness.add_level_argument(sp)
    harness.add_known_argument(sp)
    sp = sub.add_parser("mutants", help="measure the harness's bug-finding power on seeded bugs",
                        description="run the harness against every seeded VMM bug (and spec bug)")
    sp.set_defaults(fn=cmd_mutants)
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.add_argument("--seconds-per-mutant", type=seconds(), default=60.0, metavar="N", help="budget per mutant (default 60)")
    sp.add_argument("--only", metavar="PATTERN", help="mutants whose name matches (glob or substring)")
    sp.add_argument("-j", "--jobs", type=count(), default=os.cpu_count() or 1, metavar="N", help="mutants run at once")
    sp.add_argument("--spec-mutants", action="store_true", help="also seeded spec bugs: prover and harness")
    sp.add_argument("--seed", type=count(0), default=0, metavar="S", help="the campaigns' seed (default 0)")
    sp.add_argument("--config", metavar="FILE", help="run every mutant's campaign at this scope (TOML, as dmm fuzz --config)")
    harness = _Harness(command == "mutants")
    harness.add_impl_arguments(sp, None, "the bundled VMM, its mutants run in process")
    harness.add_level_argument(sp)
    harness.add_known_argument(sp)
    harness.add_campaign_arguments(sp, jobs=False)
    sp.add_argument("--html", metavar="FILE", help="also write the mutant table as one self-contained HTML page")
    sp = sub.add_parser("report", help="write a trace as one self-contained HTML page",
                        description="replay a trace (dmm-trace/1 or ITF) and write what happened at each step as one "
                                    "self-contained HTML page: the timeline, states, walks, the verdict (docs/report.md)")
    sp.set_defaults(fn=cmd_report)
    sp.add_argument("trace", metavar="TRACE", help="a trace file (from dmm fuzz, dmm prove --bmc, or ITF)")
    sp.add_argument("-o", "--output", metavar="FILE.html", help="where to write the page (default: TRACE with .html)")
    sp.add_argument("--spec", metavar="SPEC", help="spec file (default: the bundled DMM spec)")
    sp.add_argument("--impl", metavar="MODULE:ATTR", help="the adapter (default: the one the trace names)")
    sp.add_argument("--step-timeout", type=seconds(), default=10.0, metavar="S", help="seconds one step may take")
    sp = sub.add_parser("serve", help="serve an adapter over the wire protocol dmm-adapter/1 on stdin/stdout",
                        description="serve an in-process adapter over dmm-adapter/1 on stdin/stdout "
                                    "(docs/adapter-protocol.md)")
    sp.set_defaults(fn=cmd_serve)
    sp.add_argument("--impl", default="dmmcheck.conformance.vmm_adapter:BundledVmm", metavar="MODULE:ATTR",
                    help="the adapter to serve (default: the bundled VMM)")
    sp = sub.add_parser("adapter-check", help="self-test an adapter: name every protocol violation",
                        description="drive an adapter through canned sequences (handshake, reset, a few steps, "
                                    "reads, an unknown operation, close) and name each protocol violation")
    sp.set_defaults(fn=cmd_adapter_check)
    _Harness(command == "adapter-check").add_impl_arguments(sp, None, "none: one of the two is required")
    sp.add_argument("--timeout", type=seconds(), default=10.0, metavar="S", help="seconds one call may take (default 10)")
    sp.add_argument("--config", metavar="FILE", help="reset the adapter on this configuration (TOML, as dmm fuzz --config) "
                                                    "instead of the default one")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp = add("check", cmd_check, "the main job: everything dmm can check about a spec and the bundled VMM")
    sp.add_argument("--fuzz-seconds", type=seconds(positive=False), default=60.0, metavar="N",
                    help="how long to fuzz the bundled VMM (default 60)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_of(argv)).parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("dmm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (Exception, BaseException) as e:  # noqa: BLE001 - the one place that turns a bug into a message
        if isinstance(e, SystemExit):
            raise
        print(f"dmm: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("dmm: this is a bug in dmm; please report it with the command that caused it", file=sys.stderr)
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
