"""The pytest plugin: `pytest --dmm-impl MODULE:ATTR` runs the conformance suite against an adapter.

One line in a VMM team's CI. `--dmm-impl-cmd 'CMD ARGS'` instead tests a VMM in another process, over
dmm-adapter/1 (docs/adapter-protocol.md). Without either the plugin adds nothing. With one, the
session gains:
- `dmm-conformance::initial-state`: a reset implementation is the spec's initial state;
- `dmm-conformance::fuzz`: a fuzz campaign (--dmm-examples cases, or --dmm-seconds), failing with the
  shrunk trace table and the saved trace's replay command;
- `dmm-conformance::replay[<trace>]`: every trace in --dmm-traces (default `dmm-traces/`, where the
  fuzz item writes a failing trace), replayed as a regression test: a bug found once stays tested.
`--dmm-known-divergences FILE` accepts the implementation's documented quirks (as dmm fuzz
--known-divergences): the fuzz item's report gains a section with the hits per entry.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("dmm", "dmm conformance suite")
    g.addoption("--dmm-impl", metavar="MODULE:ATTR", help="run the dmm conformance suite against this adapter")
    g.addoption("--dmm-impl-cmd", metavar="'CMD ARGS'",
                help="run it against a VMM in another process: the command that starts it, speaking dmm-adapter/1 "
                     "on stdin/stdout (docs/adapter-protocol.md)")
    g.addoption("--dmm-examples", type=int, default=50, metavar="N", help="fuzz test cases (default 50)")
    g.addoption("--dmm-seconds", type=float, default=None, metavar="N", help="fuzz for N seconds instead")
    g.addoption("--dmm-seed", type=int, default=0, metavar="S", help="fuzz seed (default 0)")
    g.addoption("--dmm-spec", metavar="SPEC", help="spec file (default: the bundled DMM spec)")
    g.addoption("--dmm-traces", metavar="DIR", default="dmm-traces",
                help="replay every trace in DIR; failing traces are written there (default dmm-traces)")
    g.addoption("--dmm-config", metavar="FILE", help="the scope to fuzz at, in TOML (as dmm fuzz --config)")
    g.addoption("--dmm-level", metavar="LEVEL", choices=("full", "state", "black-box"),
                help="judge the adapter using only what this conformance level provides (as dmm fuzz --level; "
                     "default: the level it declares)")
    g.addoption("--dmm-known-divergences", metavar="FILE",
                help="accepted divergences of the implementation, in TOML (as dmm fuzz --known-divergences)")


def pytest_report_header(config: pytest.Config) -> str | None:
    if not config.getoption("--dmm-impl") and config.getoption("--dmm-impl-cmd") is None:
        return None
    level = config.getoption("--dmm-level")
    return f"dmm conformance: level {level}" if level else \
        "dmm conformance: at the level the adapter declares (shown in each failure)"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--dmm-impl") and config.getoption("--dmm-impl-cmd") is None:
        return
    if config.getoption("--dmm-impl") and config.getoption("--dmm-impl-cmd") is not None:
        raise pytest.UsageError("--dmm-impl and --dmm-impl-cmd name the implementation both: give one")
    items.append(ConformanceItem.from_parent(session, name="dmm-conformance::initial-state", kind="init"))
    items.append(ConformanceItem.from_parent(session, name="dmm-conformance::fuzz", kind="fuzz"))
    traces = config.getoption("--dmm-traces")
    if Path(traces).is_dir():
        for t in sorted(Path(traces).glob("*.jsonl")):
            items.append(ConformanceItem.from_parent(session, name=f"dmm-conformance::replay[{t.name}]",
                                                     kind="replay", trace=t))


class ConformanceFailed(Exception):
    pass


class ConformanceItem(pytest.Item):
    def __init__(self, *, kind: str, trace: Path | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.kind, self.trace = kind, trace

    def runtest(self) -> None:
        from rich.console import Console

        from dmmcheck.spec import load

        from .adapter import Config
        from .cli import DEFAULT_IMPL, FuzzOptions, adapter_factory, close_adapter, known_of, run_fuzz
        from .configfile import load as load_config
        from .levels import at_level
        from .report import show_failure
        from .runner import Runner
        from .trace import make_adapter, replay

        opt = self.config.getoption
        spec = load(opt("--dmm-spec"))
        console = Console(record=True, width=140, file=io.StringIO())
        seconds = opt("--dmm-seconds")
        opts = FuzzOptions(impl=opt("--dmm-impl") or DEFAULT_IMPL, impl_cmd=opt("--dmm-impl-cmd"), seconds=seconds,
                           examples=None if seconds else opt("--dmm-examples"), seed=opt("--dmm-seed"),
                           trace_dir=opt("--dmm-traces"), config=opt("--dmm-config"), level=opt("--dmm-level"),
                           known_divergences=opt("--dmm-known-divergences"))
        if self.kind == "init":
            config = load_config(opt("--dmm-config"))[0] if opt("--dmm-config") else Config()
            adapter = make_adapter(adapter_factory(opts), opts.step_timeout)
            try:
                Runner(at_level(adapter, opt("--dmm-level")), spec, config).reset()  # raises Failure
            finally:
                close_adapter(adapter)
            return
        if self.kind == "replay":
            known = known_of(spec, opts.known_divergences)
            _, runner, failure = replay(self.trace, spec, adapter_factory(opts),  # type: ignore[arg-type]
                                        level=opt("--dmm-level"))
            close_adapter(runner.adapter)
            accepted = known.match(failure) if known is not None and failure is not None else None
            if accepted is not None:
                self.add_report_section("call", "dmm known divergences",
                                        f"accepted divergence {accepted.name!r}: {failure.kind}: {failure.message}")
            elif failure is not None:
                show_failure(console, runner.records, failure, seed=0, trace=str(self.trace), level=runner.level)
                raise ConformanceFailed(console.export_text())
            return
        result, trace = run_fuzz(spec, opts)
        if result.known is not None:
            from .report import show_known

            text = Console(record=True, width=140, file=io.StringIO())
            show_known(text, result.known)
            self.add_report_section("call", "dmm known divergences", text.export_text())
        if result.failure is not None:
            show_failure(console, result.shrunk, result.failure, seed=opts.seed, trace=trace, level=result.level)
            raise ConformanceFailed(console.export_text())

    def repr_failure(self, excinfo: Any, style: Any = None) -> str:
        if isinstance(excinfo.value, ConformanceFailed):
            return str(excinfo.value)
        from .oracle import Failure

        if isinstance(excinfo.value, Failure):
            return f"{excinfo.value}\n{excinfo.value.detail}"
        if isinstance(excinfo.value, ValueError):  # bad input (a trace, a config, an adapter): its message
            return f"dmm: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.config.getoption("--dmm-impl") or self.config.getoption("--dmm-impl-cmd") or "dmm", None, self.name
