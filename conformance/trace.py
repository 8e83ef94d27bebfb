"""Traces: a failing run saved as `dmm-trace/1` JSON lines, and replayed (docs/trace-format.md).

A fuzz trace's steps are operations in implementation values, exactly as sent to the adapter; a
trace from `dmm prove --bmc` names spec elements (`vm0`, `gfn3`) and includes the VMM's internal
actions — on replay those are mapped onto the configuration and the internal ones left to the
implementation (it performs them on its own when it does what the operations ask).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import levels
from .adapter import LEVELS, Adapter, Capabilities, Config, Operation
from .binding import (ACCESS_ACTIONS, COW_BREAK, EXTRA_ARGS, GFN, GVA, INTERNAL, OUTPUTS, ROLE, ROLE_ARG, ROOT, SLOT,
                      VCPU, VM)
from .oracle import Failure
from .runner import Runner, StepRecord, guarded
from .scope import clamp

FORMAT = "dmm-trace/1"


class TraceError(ValueError):
    """A trace file that cannot be replayed: what and where."""


def spec_hash(spec: Any) -> str:
    return hashlib.sha256(Path(spec.file).read_bytes()).hexdigest()


def write(path: Path, *, spec: Any, seed: int, adapter: str | None, config: Config, records: list[StepRecord],
          failure: Failure | None, it: Any, impl_cmd: str | None = None, level: str = "full") -> Path:
    import hypothesis

    from dmmcheck import __version__

    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"format": FORMAT, "source": "dmm fuzz", "spec": spec.file, "spec_hash": spec_hash(spec),
              "seed": seed, "dmm_version": __version__, "hypothesis_version": hypothesis.__version__, "adapter": adapter, "config": config.to_json(),
              "values": "impl", "level": level}
    if impl_cmd is not None:  # an implementation out of process: replay starts the same command
        header["impl_cmd"] = impl_cmd
    if failure is not None:
        header["failure"] = {"kind": failure.kind, "message": failure.message, "detail": failure.detail,
                             "step": len(records) - 1}
    text = "".join(json.dumps(row) + "\n" for row in [header] + [rec.to_json(it) for rec in records])
    # Written whole to a temporary name, then renamed: a full disk leaves no truncated trace.
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save(directory: str, name: str, **kw: Any) -> tuple[str | None, str | None]:
    """Write a failing trace to `directory`, or, if that fails (read-only, full, not a folder), to
    the system's temporary folder. Returns (path or None, a warning saying what happened or None):
    a failure already found is never lost to a trace that cannot be written."""
    import tempfile

    tried = []
    for where in (Path(directory), Path(tempfile.gettempdir()) / "dmm-traces"):
        try:
            path = write(where / name, **kw)
        except OSError as e:
            tried.append(f"{where}: {e.strerror or e}")
            continue
        warning = f"could not write the trace to {tried[0]}; wrote it to {path}" if tried else None
        return str(path), warning
    return None, "could not write the trace anywhere (" + "; ".join(tried) + "); the failure is shown below"


@dataclass
class Trace:
    header: dict[str, Any]
    ops: list[Operation]
    lines: list[int] = field(default_factory=list)  # the file line of each step


def read(path: Path) -> Trace:
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO would block forever
        raise TraceError(f"{path}: cannot read: not a regular file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{path}: cannot read: {e}") from None
    from . import itf

    if itf.looks_like_itf(text):  # an ITF trace (Apalache, Quint, dmm replay --export-itf): by content
        try:
            header, ops = itf.parse(path, text)
        except ValueError as e:
            raise TraceError(str(e)) from None
        return Trace(header, ops)
    lines = text.splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise TraceError(f"{path}:{n}:{e.colno}: not JSON: {e.msg}") from None
    if not rows or not isinstance(rows[0][1], dict) or rows[0][1].get("format") != FORMAT:
        raise TraceError(f"{path}:1: not a {FORMAT} trace (the first line must be its header)")
    header = rows[0][1]
    ops = []
    for n, row in rows[1:]:
        if not isinstance(row, dict) or not isinstance(row.get("action"), str) or not isinstance(row.get("args"), dict):
            raise TraceError(f"{path}:{n}: a step needs \"action\" (a string) and \"args\" (an object)")
        ops.append(Operation(row["action"], row["args"]))
    return Trace(header, ops, [n for n, _ in rows[1:]])


def check_steps(path: Path, trace: Trace, ops: list[Operation], spec: Any, operations: frozenset[str]) -> None:
    """A broken trace is bad input, named by its line — never replayed as a crash of the
    implementation: every step an operation the adapter accepts, with the arguments it needs."""
    for i, op in enumerate(ops):
        where = f"{path}:{trace.lines[i]}" if trace.header.get("values") == "impl" and i < len(trace.lines) \
            else f"{path}: step {i}"
        if op.action not in operations:
            raise TraceError(f"{where}: {op.action!r} is not an operation of this adapter "
                             f"(it accepts {', '.join(sorted(operations))})")
        need = list(EXTRA_ARGS.get(op.action, ()))
        if op.action in spec.actions:
            outs = set(OUTPUTS.get(op.action, ())) | ({"r", ROLE_ARG} if op.action in ACCESS_ACTIONS else set())
            need = [p.name for p in spec.actions[op.action].params if p.name not in outs]
        if op.action == COW_BREAK and trace.header.get("values") == "impl":
            need.append("value")  # the guest's store that breaks the sharing (a bmc trace's is 0)
        missing = [k for k in need if k not in op.args]
        if missing:
            raise TraceError(f"{where}: {op.action} lacks argument(s) {', '.join(missing)}")
        bad = [k for k in need if not isinstance(op.args[k], (int, str))]
        if bad:
            raise TraceError(f"{where}: {op.action}: argument {bad[0]} is {op.args[bad[0]]!r}, not a number, "
                             "boolean or name")


def operations_of(trace: Trace, config: Config) -> list[Operation]:
    """The operations to send: as saved for a fuzz trace; mapped from spec element names for a
    `dmm prove --bmc` trace (internal actions dropped, outputs left to the implementation)."""
    if trace.header.get("values") == "impl":
        return trace.ops
    out = []
    for op in trace.ops:
        if op.action in INTERNAL:
            continue
        outs = set(OUTPUTS.get(op.action, ())) | ({"r", ROLE_ARG} if op.action in ACCESS_ACTIONS else set())
        out.append(Operation(op.action, {k: _impl_value(v, config) for k, v in op.args.items() if k not in outs}))
    return out


def _impl_value(v: Any, config: Config) -> Any:
    if not isinstance(v, str):
        return v
    if v in ("true", "false"):
        return v == "true"
    for sort, values in ((VM, range(config.vms)), (ROOT, config.roots), (GVA, config.gvas),
                         (GFN, range(config.gfns)), (SLOT, range(config.slots)), (VCPU, range(config.vcpus)),
                         (ROLE, config.roles)):
        if v.startswith(sort) and v[len(sort):].isdigit():
            i = int(v[len(sort):])
            if i >= len(values):
                raise TraceError(f"the trace names {v}, but the configuration has {len(values)} {sort} element(s)")
            return values[i]
    return v  # an enum value name (read, write, fetch)


def _config_of(path: Path, trace: Trace) -> Config:
    if "config" not in trace.header:
        return Config()
    try:
        return Config.from_json(trace.header["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise TraceError(f"{path}:1: the header's config is not a configuration ({type(e).__name__}: {e})") from None


def load_adapter(target: str, timeout: float = 60.0) -> Callable[[], Adapter]:
    """MODULE:ATTR naming an adapter class (or a factory); clear errors, never a traceback, and an
    import that hangs (or calls sys.exit) is an error too."""
    mod_name, sep, attr = target.partition(":")
    if not sep or not mod_name or not attr:
        raise TraceError(f"--impl {target!r}: expected MODULE:ATTR, e.g. mypkg.adapter:MyVmm")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # an adapter in the current project, as `python -m` would find it
    try:
        mod = guarded(lambda: importlib.import_module(mod_name), f"importing {mod_name}", timeout)
    except Failure as e:  # any import failure is the user's to fix
        raise TraceError(f"--impl {target}: cannot import {mod_name}: {e.message}") from None
    factory = getattr(mod, attr, None)
    if factory is None or not callable(factory):
        raise TraceError(f"--impl {target}: {mod_name} has no callable {attr!r}")
    return factory


def make_adapter(factory: Callable[[], Adapter], timeout: float) -> Adapter:
    """Build the adapter and ask its capabilities, each under the time limit; what goes wrong is
    bad input (TraceError), never a traceback or a hang."""
    try:
        adapter = guarded(factory, "building the adapter", timeout)
        caps = guarded(adapter.capabilities, "the adapter's capabilities()", timeout)
    except Failure as e:
        raise TraceError(e.message) from None
    if not isinstance(caps, Capabilities):
        raise TraceError(f"the adapter's capabilities() returned {type(caps).__name__}, not Capabilities")
    return adapter


def prepare(path: Path, spec: Any, factory: Callable[[], Adapter] | None = None, step_timeout: float = 10.0,
            config: Config | None = None, level: str | None = None) -> tuple[Trace, Adapter, Runner, list[Any]]:
    """A trace read and checked, its adapter made (the trace's own when `factory` is None) and a runner
    judging at `level`, else at the level the trace was recorded at (when the adapter provides it),
    else at the adapter's own; the operations to run. `dmm replay` and the report's story share it."""
    trace = read(path)
    if config is None:
        config = _config_of(path, trace)
    if factory is None and isinstance(trace.header.get("impl_cmd"), str):
        from .child import child_factory

        factory = child_factory(trace.header["impl_cmd"], step_timeout)
    if factory is None:
        target = trace.header.get("adapter") or "dmmcheck.conformance.vmm_adapter:BundledVmm"
        factory = load_adapter(target)
    adapter = make_adapter(factory, step_timeout)
    within = clamp(config, adapter.capabilities())
    if within != config and "config" in trace.header:  # its operations name vCPUs the adapter lacks
        raise TraceError(f"{path}: the trace runs {config.vcpus} vCPUs per VM; the adapter runs {within.vcpus}")
    config = within
    if level is None:
        recorded, own = trace.header.get("level"), levels.declared(adapter.capabilities())
        level = recorded if recorded in LEVELS and levels.rank(recorded) >= levels.rank(own) else None
    runner = Runner(levels.at_level(adapter, level), spec, config, step_timeout)
    ops = operations_of(trace, config)
    check_steps(path, trace, ops, spec, runner.adapter.capabilities().operations)
    return trace, adapter, runner, ops


def replay(path: Path, spec: Any, factory: Callable[[], Adapter] | None = None,
           step_timeout: float = 10.0, config: Config | None = None,
           level: str | None = None) -> tuple[Trace, Runner, Failure | None]:
    """Re-run a trace's operations (on its own configuration, or `config`); the verdict is the
    first failure, or None (the level as `prepare` chooses it)."""
    trace, _adapter, runner, ops = prepare(path, spec, factory, step_timeout, config, level)
    try:
        runner.reset()
        for op in ops:
            runner.step(op)
    except Failure as f:
        return trace, runner, f
    return trace, runner, None
