"""Reading ITF traces (Apalache, Quint) for `dmm replay`, and writing a replayed trace as ITF.

The format and the writer are model/itf.py's. A trace dmm wrote carries its header in `#meta.dmm`
and replays exactly as the JSON-lines trace did. An ITF trace from another tool has no such header:
its steps are read from `mbt::actionTaken` and `mbt::nondetPicks` (Quint's model-based testing
variables; a pick is a `Some`/`None` variant or a plain value), its values taken as spec element
names (`vm0`, `gfn3`), mapped onto the configuration as a `dmm prove --bmc` trace's are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import itf_py
from dmmcheck.model.itf import ACTION, PICKS, write

from .adapter import Operation

FORMAT = "dmm-trace/1"


def looks_like_itf(text: str) -> bool:
    """An ITF trace is one JSON object with `states`; a dmm trace is JSON lines (detected by content,
    not by the file's name)."""
    if not text.lstrip().startswith("{"):
        return False
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return False
    return isinstance(data, dict) and isinstance(data.get("states"), list)


def parse(path: Path, text: str) -> tuple[dict[str, Any], list[Operation]]:
    """(header, operations) of an ITF trace; ValueError naming the state that is not a step."""
    data = _scalars(json.loads(text))
    try:
        trace = itf_py.trace_from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not an ITF trace ({type(e).__name__}: {e})") from None
    meta = trace.meta if isinstance(trace.meta, dict) else {}
    header = dict(meta["dmm"]) if isinstance(meta.get("dmm"), dict) else \
        {"format": FORMAT, "source": f"ITF ({meta.get('source', 'unknown source')})"}
    header["format"] = FORMAT
    ops = []
    for i, state in enumerate(trace.states):
        action = state.values.get(ACTION)
        if i == 0 and action in (None, "init", ""):
            continue  # the initial state: no action leads to it
        if not isinstance(action, str) or not action:
            raise ValueError(f"{path}: state {i} has no {ACTION} (the action taken to reach it)")
        picks = state.values.get(PICKS, {})
        ops.append(Operation(action, _args(path, i, picks)))
    return header, ops


def _scalars(x: Any) -> Any:
    """ITF's `#bigint` and `#tup` decoded first, and `None` variants (a pick not made) dropped: itf-py
    reads a variant whose value is one of them (`{"tag": "Some", "value": {"#bigint": "5"}}`, every
    numeric pick) as a record, and a variant tagged `None` as a Python keyword, and fails."""
    if isinstance(x, dict):
        if set(x) == {"#bigint"}:
            return int(x["#bigint"])
        if set(x) == {"#tup"}:
            return [_scalars(v) for v in x["#tup"]]
        return {k: (v if k == "#meta" else _scalars(v)) for k, v in x.items() if not _none_variant(v)}
    if isinstance(x, list):
        return [_scalars(v) for v in x]
    return x


def _none_variant(v: Any) -> bool:
    return isinstance(v, dict) and v.get("tag") == "None" and set(v) <= {"tag", "value"}


def _args(path: Path, i: int, picks: Any) -> dict[str, Any]:
    items = picks._asdict().items() if hasattr(picks, "_asdict") else picks.items() if isinstance(picks, dict) else None
    if items is None:
        raise ValueError(f"{path}: state {i}: {PICKS} is not a record of the action's arguments")
    args = {}
    for k, v in items:
        if type(v).__name__ == "Some" and hasattr(v, "value"):
            v = v.value
        args[k] = _json(v)
    return args


def _json(v: Any) -> Any:
    """An ITF value as the JSON value a dmm trace holds (tuples and lists as lists)."""
    if isinstance(v, (tuple, list)):
        return [_json(x) for x in v]
    return v


def export(path: Path, header: dict[str, Any], ops: list[Operation]) -> Path:
    """`dmm replay TRACE --export-itf FILE`: the trace's header and operations as ITF."""
    return write(path, header, [(op.action, op.args) for op in ops])
