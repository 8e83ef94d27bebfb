"""`dmm report TRACE`, and the --html / --export-itf outputs of `dmm fuzz`, `dmm replay`, `dmm mutants`.

Exit statuses of `dmm report`: 0 the page is written (whatever the trace's verdict: the page says
it); 2 bad input (a trace that cannot be read or replayed, an adapter that cannot be loaded, a page
that cannot be written); 4 a spec error (main.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dmmcheck.model.html import check_outputs  # re-exported: the harness commands check their outputs with it

EXIT_INPUT = 2


def write_page(command: str, path: str, text: str) -> bool:
    from .html import write

    try:
        written = write(path, text)
    except OSError as e:
        print(f"dmm {command}: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return False
    print(f"dmm {command}: report written to {written} (open it in a browser)", file=sys.stderr)
    return True


def story_of(command: str, spec: Any, trace: str, args: argparse.Namespace) -> Any:
    """The trace replayed step by step for the page (story.tell); None after printing why not."""
    from .story import tell
    from .trace import TraceError, load_adapter

    try:
        factory = load_adapter(args.impl) if getattr(args, "impl", None) else None
        if factory is None and getattr(args, "impl_cmd", None) is not None:
            from .child import child_factory

            factory = child_factory(args.impl_cmd, getattr(args, "step_timeout", 10.0))
        return tell(Path(trace), spec, factory, getattr(args, "step_timeout", 10.0), None, getattr(args, "level", None))
    except (TraceError, ValueError, OSError) as e:
        print(f"dmm {command}: {e}", file=sys.stderr)
        return None


def cmd_report(spec: Any, args: argparse.Namespace) -> int:
    from .html import story_page

    out = args.output or str(Path(args.trace).with_suffix(".html"))
    if not check_outputs("report", out):
        return EXIT_INPUT
    story = story_of("report", spec, args.trace, args)
    if story is None:
        return EXIT_INPUT
    return 0 if write_page("report", out, story_page(story)) else EXIT_INPUT


def replay_outputs(spec: Any, args: argparse.Namespace) -> int:
    """`dmm replay --html FILE --export-itf FILE`, after the verdict: 0 or EXIT_INPUT."""
    ok = True
    if getattr(args, "export_itf", None):
        from .itf import export
        from .trace import read

        try:
            trace = read(Path(args.trace))
            export(Path(args.export_itf), trace.header, trace.ops)
            print(f"dmm replay: ITF trace written to {args.export_itf}", file=sys.stderr)
        except (ValueError, OSError) as e:
            print(f"dmm replay: cannot export {args.export_itf}: {e}", file=sys.stderr)
            ok = False
    if getattr(args, "html", None):
        from .html import story_page

        story = story_of("replay", spec, args.trace, args)
        ok = ok and story is not None and write_page("replay", args.html, story_page(story, "dmm replay"))
    return 0 if ok else EXIT_INPUT


def fuzz_output(spec: Any, args: argparse.Namespace, result: Any, trace: str | None) -> int:
    """`dmm fuzz --html FILE`: the campaign, and its failing trace replayed when there is one."""
    from .html import campaign_page

    story = story_of("fuzz", spec, trace, args) if trace else None
    page = campaign_page(result, list(spec.actions), trace, story)
    return 0 if write_page("fuzz", args.html, page) else EXIT_INPUT


def mutants_output(args: argparse.Namespace, results: list[Any], summary: dict[str, Any]) -> int:
    from .html import mutants_page

    page = mutants_page(results, summary, getattr(args, "level", None) or "full")
    return 0 if write_page("mutants", args.html, page) else EXIT_INPUT
