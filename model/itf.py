"""Traces in the Informal Trace Format (ITF) of Apalache and Quint, written with the itf-py package.

An ITF trace is one JSON object: `#meta`, `vars`, and `states`, each state a map from variable to
value. dmm's traces are sequences of actions, so each state holds the action taken to reach it and
its arguments, under the names Quint's model-based testing uses (`mbt::actionTaken`,
`mbt::nondetPicks`, each pick a `Some` variant), plus `dmm::step`, its index. The first state is the
initial one (action `init`, no picks). The dmm trace header rides in `#meta` as `dmm`, so a trace
converted to ITF and back replays the same (docs/trace-format.md, "ITF").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import itf_py

ACTION, PICKS, STEP = "mbt::actionTaken", "mbt::nondetPicks", "dmm::step"
VARS = [ACTION, PICKS, STEP]
DESCRIPTION = "https://apalache-mc.org/docs/adr/015adr-trace.html"


@itf_py.itf_variant
class Some:
    """Quint's Option: a nondeterministic pick that was made."""

    def __init__(self, value: Any) -> None:
        self.value = value


def to_itf(header: dict[str, Any], steps: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The ITF object of a dmm trace: its header and its (action, args) steps, in order."""
    states = [itf_py.State({"index": 0}, {ACTION: "init", PICKS: {}, STEP: -1})]
    for i, (action, args) in enumerate(steps):
        picks = {k: Some(_plain(v)) for k, v in args.items()}
        states.append(itf_py.State({"index": i + 1}, {ACTION: action, PICKS: picks, STEP: i}))
    meta = {"format": "ITF", "format-description": DESCRIPTION, "source": header.get("source", "dmm"),
            "description": f"dmm trace ({header.get('source', 'dmm')}): {len(steps)} steps", "dmm": header}
    out = itf_py.trace_to_json(itf_py.Trace(meta, [], list(VARS), states, None))
    return _records(out)


def _plain(v: Any) -> Any:
    """JSON values itf-py can write: lists become tuples (ITF `#tup`), the rest as they are."""
    return tuple(_plain(x) for x in v) if isinstance(v, list) else v


def _records(x: Any) -> Any:
    """itf-py writes a Python dict as an ITF `#map` (keys as values); nondetPicks is a record (a JSON
    object keyed by argument name), as Quint writes it."""
    if isinstance(x, dict) and "#map" in x and all(isinstance(k, str) for k, _ in x["#map"]):
        return {k: _records(v) for k, v in x["#map"]}
    if isinstance(x, dict):
        return {k: _records(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_records(v) for v in x]
    return x


def write(path: Path, header: dict[str, Any], steps: list[tuple[str, dict[str, Any]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_itf(header, steps), indent=1) + "\n", encoding="utf-8")
    return path


def write_bmc(path: Path, spec_path: str, spec_hash: str, r: Any) -> Path:
    """A BMC counterexample (`dmm prove --bmc --itf FILE`), with the header its dmm trace has."""
    cx = r.counterexample or {}
    header = {"format": "dmm-trace/1", "source": "dmm prove --bmc", "spec": spec_path, "spec_hash": spec_hash,
              "universe": cx.get("universe"), "violates": r.invariant, "blame": cx.get("blame")}
    return write(path, header, [(st["action"], st["args"]) for st in cx.get("steps", [])])
