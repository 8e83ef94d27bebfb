"""`dmm report TRACE`, and the --html / --export-itf outputs of `dmm fuzz`, `dmm replay`, `dmm mutants`.

Exit statuses of `dmm report`: 0 the page is written (whatever the trace's verdict: the page says
it); 2 bad input (a trace that cannot be read or replayed, an adapter that cannot be loaded, a page
that cannot be written); 4 a spec error (main.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmmcheck.model.html import check_outputs  # re-exported: the harness commands check their outputs with it

if TYPE_CHECKING:
    from .cli import FuzzOptions  # (cli imports this module)

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


def story_of(command: str, spec: Any, trace: str, opts: FuzzOptions) -> Any:
    """The trace replayed step by step for the page (story.tell) on the adapter `opts` names (none:
    the trace's own); None after printing why not."""
    from .story import tell
    from .trace import TraceError, load_adapter

    try:
        factory = load_adapter(opts.impl) if opts.impl else None
        if factory is None and opts.impl_cmd is not None:
            from .child import child_factory

            factory = child_factory(opts.impl_cmd, opts.step_timeout)
        return tell(Path(trace), spec, factory, opts.step_timeout, None, opts.level)
    except (TraceError, ValueError, OSError) as e:
        print(f"dmm {command}: {e}", file=sys.stderr)
        return None


def report(spec: Any, trace: str, output: str | None, opts: FuzzOptions) -> int:
    """`dmm report TRACE -o OUTPUT`: the page of a trace replayed on the adapter `opts` names."""
    from .html import story_page

    out = output or str(Path(trace).with_suffix(".html"))
    if not check_outputs("report", out):
        return EXIT_INPUT
    story = story_of("report", spec, trace, opts)
    if story is None:
        return EXIT_INPUT
    return 0 if write_page("report", out, story_page(story)) else EXIT_INPUT


def replay_outputs(spec: Any, trace_path: str, opts: FuzzOptions, html: str | None, export_itf: str | None) -> int:
    """`dmm replay --html FILE --export-itf FILE`, after the verdict: 0 or EXIT_INPUT."""
    ok = True
    if export_itf:
        from .itf import export
        from .trace import read

        try:
            trace = read(Path(trace_path))
            export(Path(export_itf), trace.header, trace.ops)
            print(f"dmm replay: ITF trace written to {export_itf}", file=sys.stderr)
        except (ValueError, OSError) as e:
            print(f"dmm replay: cannot export {export_itf}: {e}", file=sys.stderr)
            ok = False
    if html:
        from .html import story_page

        story = story_of("replay", spec, trace_path, opts)
        ok = ok and story is not None and write_page("replay", html, story_page(story, "dmm replay"))
    return 0 if ok else EXIT_INPUT


def fuzz_output(spec: Any, opts: FuzzOptions, html: str, result: Any, trace: str | None) -> int:
    """`dmm fuzz --html FILE`: the campaign, and its failing trace replayed when there is one."""
    from .html import campaign_page

    story = story_of("fuzz", spec, trace, opts) if trace else None
    page = campaign_page(result, list(spec.actions), trace, story)
    return 0 if write_page("fuzz", html, page) else EXIT_INPUT


def mutants_output(html: str, level: str | None, results: list[Any], summary: dict[str, Any]) -> int:
    from .html import mutants_page

    page = mutants_page(results, summary, level or "full")
    return 0 if write_page("mutants", html, page) else EXIT_INPUT
