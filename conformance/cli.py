"""`dmm fuzz` and `dmm replay`: the conformance harness from the command line.

Exit statuses: 0 no failure; 1 a failure (the implementation disagrees with the spec, crashed or
hung); 2 bad input (an --impl that cannot be loaded, an unreadable trace, a bad option); 4 a spec
error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console

from dmmcheck.options import count, seconds

from .adapter import LEVELS, Adapter, Config
from .child import child_factory
from .fuzz import FuzzResult, Tuning, fuzz
from .oracle import Failure
from . import report_cli
from .report import as_json, show_failure, show_fuzz
from .trace import TraceError, load_adapter, replay, save, spec_hash

if TYPE_CHECKING:
    from .gaps import FillOptions  # imported where used: gaps loads the prover

DEFAULT_IMPL = "dmmcheck.conformance.vmm_adapter:BundledVmm"
EXIT_FAILURE, EXIT_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 1, 2, 3, 130


@dataclass(frozen=True)
class FuzzOptions:
    """What a campaign in this process runs with, typed: `dmm fuzz`'s options (`of` reads them from
    the parsed arguments), also built by the pytest plugin and `dmm check`; the defaults are the
    command line's."""

    impl: str | None = DEFAULT_IMPL  # MODULE:ATTR; None with no impl_cmd: the trace's own (dmm replay)
    impl_cmd: str | None = None  # 'CMD ARGS': an adapter in another process
    seconds: float | None = None
    examples: int | None = None
    seed: int = 0
    steps: int = 40  # per test case
    step_timeout: float = 10.0
    shrink_seconds: float = 60.0
    memory_limit: int = 4096  # MiB
    mutant: str | None = None
    config: str | None = None  # a scope file
    fixed_scope: bool = False
    level: str | None = None
    known_divergences: str | None = None  # a known-divergences file
    db: str | None = None  # a shared example database
    full_readback: bool = False
    trace_dir: str = "dmm-traces"

    @classmethod
    def of(cls, args: argparse.Namespace) -> FuzzOptions:
        """The options a command's parsed arguments give (a command without one keeps its default)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def add_impl_arguments(sp: argparse.ArgumentParser, default: str | None = DEFAULT_IMPL,
                       what: str = "the bundled VMM") -> None:
    """--impl MODULE:ATTR (an adapter in this process) or --impl-cmd 'CMD ARGS' (a program speaking
    dmm-adapter/1 on its stdin and stdout, docs/adapter-protocol.md): one or the other."""
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--impl", default=default, metavar="MODULE:ATTR", help=f"the adapter to test (default: {what})")
    g.add_argument("--impl-cmd", metavar="'CMD ARGS'",
                   help="test a VMM in another process: the command that starts it, speaking dmm-adapter/1 "
                        "on stdin/stdout (docs/adapter-protocol.md)")


def adapter_factory(opts: FuzzOptions) -> Callable[[], Adapter]:
    """What --impl-cmd or --impl names (bad input: TraceError or ValueError, with a message)."""
    if opts.impl_cmd is not None:
        return child_factory(opts.impl_cmd, opts.step_timeout)
    if opts.impl is None:
        raise ValueError("no adapter: give --impl MODULE:ATTR or --impl-cmd 'CMD ARGS'")
    return load_adapter(opts.impl)


def fill_options(opts: FuzzOptions) -> FillOptions:
    """--fill-gaps's options, typed (bad input: TraceError or ValueError, as adapter_factory)."""
    from .gaps import FillOptions

    return FillOptions(adapter_factory(opts), scope_of(opts)[0], opts.step_timeout, opts.level)


def close_adapter(adapter: Any) -> None:
    """Release an adapter (an out-of-process one: its child) when the command is done with it."""
    close = getattr(adapter, "close", None)
    if close is not None:
        try:
            close()
        except Exception:  # noqa: BLE001 - the verdict is in; a failing close must not hide it
            pass


def add_arguments(sp: argparse.ArgumentParser) -> None:
    add_impl_arguments(sp)
    budget = sp.add_mutually_exclusive_group()
    budget.add_argument("--seconds", type=seconds(), metavar="N", help="fuzz for N seconds")
    budget.add_argument("--examples", type=count(), metavar="N", help="run N test cases (default 100)")
    sp.add_argument("--seed", type=count(0), default=0, metavar="S", help="the campaign's seed (default 0)")
    sp.add_argument("--steps", type=count(), default=40, metavar="N", help="steps per test case (default 40)")
    sp.add_argument("--step-timeout", type=seconds(), default=10.0, metavar="S", help="seconds one step may take")
    sp.add_argument("--shrink-seconds", type=seconds(), default=60.0, metavar="S",
                    help="how long shrinking a failure may take (default 60); then the smallest case so far is kept")
    sp.add_argument("--memory-limit", type=count(), default=4096, metavar="MIB",
                    help="the implementation's resident memory may not pass this (default 4096; a verdict)")
    sp.add_argument("--mutant", metavar="NAME", help="switch on one of the adapter's seeded bugs (its "
                    "Capabilities.mutants; the bundled VMM's: dmm mutants)")
    sp.add_argument("--config", metavar="FILE", help="the scope to run at, in TOML (docs/conformance.md, "
                    "\"Choosing the scope\"); every test case runs on it unless it says vary = true")
    sp.add_argument("--json", action="store_true", help="print the result as JSON")
    sp.add_argument("--trace-dir", default="dmm-traces", metavar="DIR", help="where failing traces are written")
    add_html_argument(sp)
    sp.add_argument("--fill-gaps", action="store_true",
                    help="after a campaign without failure, drive each action it never exercised (and each guard "
                         "outcome it never drew) with the prover's shortest witness run: filled, failed, or "
                         "impossible for this implementation, with why")
    sp.add_argument("--fixed-scope", action="store_true",
                    help="every test case on the default configuration (campaigns otherwise vary it within "
                         "the adapter's declared bounds)")
    sp.add_argument("--full-readback", action="store_true",
                    help="read the implementation's whole abstract state after every step (by default only the "
                         "parts a step's events say may have changed, and all of it every 8 steps and at the end "
                         "of each test case)")
    add_level_argument(sp)
    add_known_argument(sp)
    add_campaign_arguments(sp)


def add_html_argument(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--html", metavar="FILE", help="also write the result as one self-contained HTML page "
                    "(docs/report.md)")


def add_campaign_arguments(sp: argparse.ArgumentParser, jobs: bool = True) -> None:
    """-j N, --cluster ADDRESS, --db DIR|redis://HOST:PORT (docs/conformance.md, "Campaigns on many
    cores and many machines"). `jobs`: also -j (dmm mutants has its own)."""
    if jobs:
        sp.add_argument("-j", "--jobs", type=count(), default=None, metavar="N",
                        help="workers, each on a seed of its own derived from --seed (default 1: in this process; "
                             "with --cluster: one per worker thread)")
    sp.add_argument("--cluster", metavar="ADDRESS", help="run the workers on this Dask distributed scheduler "
                    "(e.g. tcp://host:8786) instead of local processes")
    sp.add_argument("--db", metavar="DIR|redis://HOST:PORT", help="a shared Hypothesis example database: failing "
                    "examples are saved there and replayed first by every later campaign on the same spec, "
                    "implementation, mutant and scope")


def add_known_argument(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--known-divergences", metavar="FILE",
                    help="accepted divergences of the implementation, in TOML (docs/conformance.md, \"Known "
                         "divergences\"): a failure an entry matches ends its test case, counted, instead of the run")


def known_of(spec: Any, path: str | None) -> Any:
    """The --known-divergences file's entries, or None (a bad file: DivergenceFileError, exit 2)."""
    if path is None:
        return None
    from .divergences import load as load_known

    return load_known(path, spec)


def add_level_argument(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--level", choices=LEVELS, metavar="LEVEL",
                    help="judge the implementation using only what this conformance level provides: "
                         f"{', '.join(LEVELS)} (default: the level the adapter declares; one above it is an error)")


def run_fuzz(spec: Any, opts: FuzzOptions, console: Console | None = None) -> tuple[FuzzResult, str | None]:
    """The campaign, its failing trace (if any) written; progress on `console` when given."""
    known = known_of(spec, opts.known_divergences)  # checked before anything runs
    config, vary = scope_of(opts)
    factory = adapter_factory(opts)
    database = open_database(spec, opts, config, Tuning(vary_scope=vary))
    status = console.status("fuzzing") if console and console.is_terminal else None
    if status:
        status.start()

    def progress(r: FuzzResult) -> None:
        if status:
            covered = sum(1 for a in spec.actions if r.coverage.get(a))
            status.update(f"fuzzing: {r.examples} cases, {r.steps} steps, {r.steps_per_second:.0f} steps/s, "
                          f"{covered}/{len(spec.actions)} actions exercised, "
                          f"{int(r.failure is not None or r.first is not None)} failures")

    try:
        result = fuzz(factory, spec, config, seconds=opts.seconds, examples=opts.examples, seed_=opts.seed,
                      steps_per_case=opts.steps, step_timeout=opts.step_timeout, progress=progress,
                      memory_limit_mib=opts.memory_limit, shrink_seconds=opts.shrink_seconds,
                      tuning=Tuning(vary_scope=vary), level=opts.level, known=known,
                      database=database, full_readback=opts.full_readback)
    finally:
        if status:
            status.stop()
    trace = None
    if result.failure is not None and result.shrunk:
        trace, warning = save(opts.trace_dir, f"fuzz-{result.failure.kind}-seed{opts.seed}-{int(time.time())}.jsonl",
                              spec=spec, seed=opts.seed, impl_cmd=opts.impl_cmd,
                              adapter=None if opts.impl_cmd is not None else opts.impl,
                              config=result.config or config,
                              records=result.shrunk, failure=result.failure, it=result.it, level=result.level)
        if warning:
            print(f"dmm fuzz: {warning}", file=sys.stderr)
    return result, trace


def scope_of(opts: FuzzOptions) -> tuple[Config, bool]:
    """The campaign's configuration (--config, else the default) with --mutant switched on, and
    whether test cases vary it (not with --fixed-scope; with --config only if the file says so)."""
    from dataclasses import replace

    from .configfile import load

    if opts.config:
        config, vary = load(opts.config)
    else:
        config, vary = Config(), True
    vary = vary and not opts.fixed_scope
    return replace(config, mutant=opts.mutant), vary


def open_database(spec: Any, opts: FuzzOptions, config: Config, tuning: Tuning) -> Any:
    """--db's example database for an in-process campaign (the same keys as the workers' of a
    campaign on many: campaign.identity), or None."""
    from .campaign import check_db, identity, open_db

    url = opts.db
    if url is None:
        return None
    check_db(url)
    cmd = opts.impl_cmd
    return open_db(url, *identity(Path(spec.file).read_text(), None if cmd is not None else opts.impl, cmd, config,
                                  opts.level, opts.steps, tuning))


def cmd_fuzz(spec: Any, args: argparse.Namespace) -> int:
    from . import binding, gaps

    try:
        binding.check(spec)
    except ValueError as e:
        print(f"dmm fuzz: {e}", file=sys.stderr)
        return EXIT_INPUT
    if (getattr(args, "jobs", None) or 1) > 1 or getattr(args, "cluster", None) is not None:
        return cmd_fuzz_campaign(spec, args)
    out, err = Console(), Console(stderr=True)
    if not report_cli.check_outputs("fuzz", getattr(args, "html", None)):
        return EXIT_INPUT
    try:
        result, trace = run_fuzz(spec, FuzzOptions.of(args), None if args.json else err)
    except (TraceError, ValueError) as e:
        print(f"dmm fuzz: {e}", file=sys.stderr)
        return EXIT_INPUT
    actions = list(spec.actions)
    for warning in result.warnings:
        print(f"dmm fuzz: warning: {warning}", file=sys.stderr)
    if result.shrink_cut:
        print(f"dmm fuzz: shrinking stopped after {getattr(args, 'shrink_seconds', 60.0):g} s (--shrink-seconds): "
              "the smallest failing case found so far is shown", file=sys.stderr)
    if result.interrupted:
        print("dmm fuzz: interrupted" + (" while shrinking: the failure is shown as far as it was shrunk"
                                         if result.failure else ": no failure found so far; this is not a pass"),
              file=sys.stderr)
    filled = None  # --fill-gaps: after a campaign without failure, each gap driven with a witness
    if getattr(args, "fill_gaps", False) and result.failure is None and not result.interrupted:
        try:
            filled = gaps.run(spec, fill_options(FuzzOptions.of(args)), result, None if args.json else err)
        except (TraceError, ValueError) as e:
            print(f"dmm fuzz: {e}", file=sys.stderr)
            return EXIT_INPUT
    if args.json:
        data = as_json(result, actions, trace)
        if filled is not None:
            data["gaps"] = [g.to_json() for g in filled]
        print(json.dumps(data))
    else:
        show_fuzz(out, result, actions)
        if result.failure is not None:
            show_failure(out, result.shrunk, result.failure, seed=args.seed, trace=trace, level=result.level,
                         config=result.config)
        else:
            out.print("[green]no failure[/]")
        if filled is not None:
            gaps.show(out, filled, args.seed)
    written = report_cli.fuzz_output(spec, FuzzOptions.of(args), args.html, result, trace) \
        if getattr(args, "html", None) else 0
    if result.failure is not None or any(g.verdict == "failed" for g in filled or ()):
        return EXIT_FAILURE
    return written or (EXIT_INTERRUPTED if result.interrupted else 0)


def cmd_fuzz_campaign(spec: Any, args: argparse.Namespace) -> int:
    """`dmm fuzz -j N` / `--cluster`: workers on seeds of their own, one merged report; every distinct
    failure's trace written here. Exit 1 a failure; else 130 when interrupted; else 3 when a worker
    was lost (its seed is unchecked); else 0."""
    from dmmcheck.spec import bundled_path

    from . import levels
    from .campaign import SeedTask, TraceRow, campaign_json, fuzz_campaign
    from .fuzz import check_scope
    from .trace import make_adapter

    out, err = Console(), Console(stderr=True)
    cmd = getattr(args, "impl_cmd", None)
    opts = FuzzOptions.of(args)
    try:
        known = known_of(spec, opts.known_divergences)
        config, vary = scope_of(opts)
        # bad input shows here, once, not as every worker's loss
        adapter = levels.at_level(make_adapter(adapter_factory(opts), args.step_timeout), getattr(args, "level", None))
        try:
            check_scope(adapter, config, args.step_timeout)
        finally:
            close_adapter(adapter)
        bundled = Path(spec.file).resolve() == Path(bundled_path()).resolve()
        kpath = getattr(args, "known_divergences", None)
        task = SeedTask(args.seed, None if bundled else Path(spec.file).read_text(), None if cmd is not None else args.impl,
                        cmd, config, Tuning(vary_scope=vary), args.seconds,
                        args.examples if args.seconds is not None or args.examples is not None else 100, args.steps,
                        args.step_timeout, getattr(args, "memory_limit", 4096), getattr(args, "shrink_seconds", 60.0),
                        getattr(args, "level", None), (kpath, Path(kpath).read_text()) if kpath else None,
                        getattr(args, "db", None), getattr(args, "full_readback", False))
        c = fuzz_campaign(task, args.jobs, args.cluster, list(spec.actions), known, None if args.json else err,
                          cmd if cmd is not None else args.impl)
    except (TraceError, ValueError, OSError) as e:
        print(f"dmm fuzz: {e}", file=sys.stderr)
        return EXIT_INPUT
    for f in [x for x in c.found if x.rows]:  # as in a single campaign: no trace without steps (memory)
        f.trace, warning = save(args.trace_dir, f"fuzz-{f.failure.kind}-seed{f.seeds[0]}-{int(time.time())}.jsonl",
                                spec=spec, seed=f.seeds[0], impl_cmd=cmd, adapter=None if cmd is not None else args.impl,
                                config=f.config or config, records=[TraceRow(r) for r in f.rows], failure=f.failure,
                                it=None, level=c.merged.level)
        if warning:
            print(f"dmm fuzz: {warning}", file=sys.stderr)
    for warning in c.merged.warnings:
        print(f"dmm fuzz: warning: {warning}", file=sys.stderr)
    filled = None  # --fill-gaps: the merged campaign's gaps, filled here, in this process
    if getattr(args, "fill_gaps", False) and not c.found and not c.merged.interrupted:
        from . import gaps

        try:
            filled = gaps.run(spec, fill_options(opts), c.merged, None if args.json else err)
        except (TraceError, ValueError) as e:
            print(f"dmm fuzz: {e}", file=sys.stderr)
            return EXIT_INPUT
    if args.json:
        data = campaign_json(c, list(spec.actions), args.cluster)
        if filled is not None:
            data["gaps"] = [g.to_json() for g in filled]
        print(json.dumps(data))
    else:
        show_fuzz(out, c.merged, list(spec.actions))
        out.print(f"{c.jobs} workers on {c.where}; seeds {', '.join(map(str, c.seeds))}")
        for seed, why in c.lost:
            out.print(f"[yellow]seed {seed} lost: {why}; its test cases are not in the totals[/]")
        for f in c.found:
            show_failure(out, f.records, f.failure, seed=f.seeds[0], trace=f.trace, level=c.merged.level, config=f.config)
            if len(f.seeds) > 1:
                out.print(f"the same shrunk failure was found by seeds {', '.join(map(str, f.seeds))}")
        if not c.found:
            out.print("[green]no failure[/]" if not c.lost else
                      f"[yellow]no failure in the seeds that finished; {len(c.lost)} lost: not a pass[/]")
        if filled is not None:
            from . import gaps

            gaps.show(out, filled, args.seed)
    written = report_cli.fuzz_output(spec, opts, args.html, c.merged, c.found[0].trace if c.found else None) \
        if getattr(args, "html", None) else 0
    if c.found or any(g.verdict == "failed" for g in filled or ()):
        return EXIT_FAILURE
    if written:
        return written
    if c.merged.interrupted:
        print("dmm fuzz: interrupted: no failure found so far; this is not a pass", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_INCOMPLETE if c.lost else 0


def cmd_replay(spec: Any, args: argparse.Namespace) -> int:
    out = Console()
    if not report_cli.check_outputs("replay", getattr(args, "html", None), getattr(args, "export_itf", None)):
        return EXIT_INPUT
    try:
        from . import binding

        binding.check(spec)
        opts = FuzzOptions.of(args)
        known = known_of(spec, opts.known_divergences)
        factory = adapter_factory(opts) if opts.impl or opts.impl_cmd is not None else None
        config = scope_of(opts)[0] if opts.config else None
        trace, runner, failure = replay(Path(args.trace), spec, factory, args.step_timeout, config,
                                        getattr(args, "level", None))
        close_adapter(runner.adapter)
    except (TraceError, ValueError) as e:
        print(f"dmm replay: {e}", file=sys.stderr)
        return EXIT_INPUT
    accepted = known.match(failure) if known is not None and failure is not None else None
    saved = trace.header.get("failure")
    recorded = trace.header.get("spec_hash")
    if recorded and recorded != spec_hash(spec):
        Console(stderr=True).print(f"[yellow]dmm replay: the trace was recorded against another version of the spec "
                                   f"({trace.header.get('spec', '?')}); the verdict may differ[/]")
    if args.json:
        print(json.dumps({"trace": args.trace, "level": runner.level, "steps": len(runner.records),
                          "verdict": "accepted" if accepted else failure.kind if failure else "pass",
                          "message": failure.message if failure else None,
                          "accepted_by": accepted.name if accepted else None,
                          "same_as_recorded": _same(saved, failure)}))
    else:
        if accepted is not None:
            out.print(f"step {len(runner.records) - 1}: accepted divergence {accepted.name!r} ({known.path}: "  # type: ignore[union-attr]
                      f"{accepted.reason}): {failure.kind}: {failure.message}\nthe replay stops there: past a "  # type: ignore[union-attr]
                      "divergence the rest cannot be judged", markup=False, highlight=False)
        elif failure is not None:
            show_failure(out, runner.records, failure, seed=trace.header.get("seed", 0), trace=None, level=runner.level,
                         config=runner.config, first_mfn=runner.oracle.au.first_mfn if runner.oracle else None)
        else:
            out.print(f"[green]{len(runner.records)} steps replayed: no failure[/]")
        if saved is not None:
            out.print("same verdict as recorded" if _same(saved, failure) else
                      f"[yellow]recorded verdict was {saved.get('kind')}: {saved.get('message')}[/]")
    written = report_cli.replay_outputs(spec, args.trace, FuzzOptions.of(args), getattr(args, "html", None),
                                        getattr(args, "export_itf", None))
    return EXIT_FAILURE if failure is not None and accepted is None else written


def _same(saved: dict[str, Any] | None, failure: Failure | None) -> bool:
    if saved is None or failure is None:
        return saved is None and failure is None
    return saved.get("kind") == failure.kind and saved.get("message") == failure.message


def cmd_mutants(args: argparse.Namespace) -> int:
    """Every seeded VMM bug against the harness (and, with --spec-mutants, every seeded spec bug
    against the prover and the harness). Exit 0 when every VMM mutant is killed, 1 otherwise."""
    from dataclasses import asdict

    from rich.table import Table

    from .mutation import adapter_mutants, run_all, run_spec_mutants, select, summary

    impl, impl_cmd = getattr(args, "impl", None), getattr(args, "impl_cmd", None)
    catalogue = None  # the bundled VMM's
    if impl or impl_cmd is not None:  # another adapter's: the mutants it lists in its capabilities
        try:
            catalogue = adapter_mutants(impl, impl_cmd)
        except (TraceError, ValueError) as e:
            print(f"dmm mutants: {e}", file=sys.stderr)
            return EXIT_INPUT
        if not catalogue:
            print(f"dmm mutants: {impl if impl_cmd is None else impl_cmd} lists no mutants (Capabilities.mutants)",
                  file=sys.stderr)
            return EXIT_INPUT
    names = select(args.only, catalogue)
    if not names and not args.spec_mutants:
        print(f"dmm mutants: no mutant matches {args.only!r}", file=sys.stderr)
        return EXIT_INPUT
    err = Console(stderr=True)
    if not report_cli.check_outputs("mutants", getattr(args, "html", None)):
        return EXIT_INPUT
    try:
        from dmmcheck.spec import load

        known = getattr(args, "known_divergences", None)
        known_of(load(None), known)  # checked here, before any campaign (each loads it again)
        config, vary = scope_of(FuzzOptions.of(args)) if getattr(args, "config", None) else (None, True)
        cluster = getattr(args, "cluster", None)
        quiet = args.json or not err.is_terminal or args.jobs > 1 or cluster is not None  # a campaign draws its own
        with err.status(f"running {len(names)} mutants, {args.seconds_per_mutant:g} s each at most") if not quiet \
                else nullcontext():
            results = run_all(names, args.seconds_per_mutant, args.jobs, Tuning(vary_scope=vary), seed=args.seed,
                              impl=impl, impl_cmd=impl_cmd, level=getattr(args, "level", None), config=config,
                              known=known, cluster=cluster, db=getattr(args, "db", None),
                              console=None if args.json else err)
    except (TraceError, ValueError) as e:  # a --level above what the adapter provides
        print(f"dmm mutants: {e}", file=sys.stderr)
        return EXIT_INPUT
    out = {"level": getattr(args, "level", None) or "full", **summary(results)}
    spec_results = run_spec_mutants(args.seconds_per_mutant, args.jobs, args.only) if args.spec_mutants else []
    if args.json:
        out["spec_mutants"] = [asdict(r) for r in spec_results]
        print(json.dumps(out))
    else:
        con = Console()
        t = Table(title=f"VMM mutants at level {out['level']}")
        cols = ("mutant", "killed", "seconds", "steps", "shrunk", "oracle") + (("accepted",) if known else ()) \
            + ("what it breaks",)
        for col in cols:
            t.add_column(col, overflow="fold")
        for r in results:
            accepted = (", ".join(f"{k} {n}" for k, n in r.accepted.items() if n) or "-",) if known else ()
            verdict = "[green]killed[/]" if r.killed else "[yellow]lost[/]" if r.lost else "[red]survived[/]"
            t.add_row(r.name, verdict, f"{r.seconds:.1f}",
                      str(r.steps or "-"), str(r.shrunk_steps or "-"), r.oracle or "-", *accepted, r.description)
        con.print(t)
        con.print(f"{out['killed']}/{out['total']} killed; median {out['median_seconds']} s to the first failure, "
                  f"median shrunk trace {out['median_shrunk_steps']} steps")
        for r in results:
            if r.lost:
                con.print(f"[yellow]{r.name} lost: {r.lost}; neither killed nor survived[/]")
        if spec_results:
            st = Table(title="spec mutants")
            for col in ("mutant", "what it breaks", "prover", "harness"):
                st.add_column(col, overflow="fold")
            for sr in spec_results:
                st.add_row(sr.name, sr.description, sr.prover, sr.harness)
            con.print(st)
    written = report_cli.mutants_output(args.html, getattr(args, "level", None), results, out) \
        if getattr(args, "html", None) else 0
    if out["killed"] + out["lost"] < out["total"]:
        return EXIT_FAILURE  # a survivor
    if written:
        return written
    return EXIT_INCOMPLETE if out["lost"] else 0
