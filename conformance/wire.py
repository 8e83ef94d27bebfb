"""The wire protocol `dmm-adapter/1`: the adapter calls as JSON lines (docs/adapter-protocol.md).

An implementation in any language is tested out of process: the harness (child.py) writes one
request per line on its stdin and reads one reply per line from its stdout. This module holds what
both ends share: the JSON forms of the adapter's data types, converted both ways, and the JSON
Schemas (schemas/*.json) every message is validated against.

The abstract state's maps are keyed by tuples, which JSON cannot hold: on the wire each such map is
a list of rows, key fields first (`p2m: [[vm, gfn, mfn], ...]`, `spte: [[vm, root, gva, mfn, w, u,
nx], ...]`), and `vms` a list indexed by VM id. Bytes travel as base64; page digests as hex sha256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any, Callable

from .adapter import AccessResult, Bounds, Capabilities, Observation

PROTOCOL = "dmm-adapter/1"
CALLS = ("hello", "capabilities", "reset", "step", "abstract_state", "read_guest", "close")
QUOTE = 300  # characters of an offending reply quoted in a verdict


class WireError(ValueError):
    """A message that breaks the protocol: what is wrong with it."""


# ---------------------------------------------------------------- schemas
def schema(name: str) -> dict[str, Any]:
    """A shipped schema by file stem: `request`, or `reply-<call>`."""
    text = resources.files("dmmcheck.conformance").joinpath("schemas", f"{name}.json").read_text()
    return json.loads(text)


@cache
def _compiled(name: str, definition: str | None) -> Callable[[Any], Any]:
    import fastjsonschema

    s = schema(name)
    if definition is not None:  # one request kind: its own errors name the field, not "one of 7"
        s = s["definitions"][definition] | {"definitions": s["definitions"]}
    # Local references inlined: the same schema, but fastjsonschema then checks a row's fields in
    # place instead of calling a function per field (measured: 7x faster on an abstract state).
    return fastjsonschema.compile(_inline(s, s.get("definitions", {})))


def _inline(s: Any, defs: dict[str, Any]) -> Any:
    if isinstance(s, dict):
        ref = s.get("$ref", "")
        if ref.startswith("#/definitions/"):
            return _inline(defs[ref[len("#/definitions/"):]], defs)
        return {k: _inline(v, defs) for k, v in s.items() if k not in ("definitions", "$id")}
    if isinstance(s, list):
        return [_inline(v, defs) for v in s]
    return s


def check_reply(call: str, msg: Any) -> None:
    """Validate a reply to `call`; WireError saying what breaks the schema."""
    _validate(_compiled(f"reply-{call}", None), msg)


def check_request(msg: Any) -> str:
    """Validate a request; its call name, or WireError."""
    call = msg.get("call") if isinstance(msg, dict) else None
    if call not in CALLS:
        raise WireError(f"unknown call {call!r}: expected one of {', '.join(CALLS)}")
    _validate(_compiled("request", call), msg)
    return call


def _validate(v: Callable[[Any], Any], msg: Any) -> None:
    import fastjsonschema

    try:
        v(msg)
    except fastjsonschema.JsonSchemaException as e:
        raise WireError(f"schema violation: {e.message}") from None


def quote(raw: bytes | str) -> str:
    """An offending message as a verdict shows it: the start of it, and how long it was."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.rstrip("\n")
    if len(text) <= QUOTE:
        return repr(text)
    return f"{text[:QUOTE]!r}... ({len(text)} characters)"


# Built once: json.loads and json.dumps with options build a new decoder or encoder per call, a
# measurable part of a round trip.
_DECODER = json.JSONDecoder(parse_float=Decimal)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def decode(line: bytes) -> Any:
    """A message line as JSON (ValueError if it is not). A JSON float is kept as a Decimal, which
    the schemas' integers refuse (JSON Schema would accept 3.0 as an integer; an mfn of 3.0 must not
    reach the oracles)."""
    return _DECODER.decode(line.decode("utf-8"))


def encode(msg: Any) -> bytes:
    """One message as its line."""
    return (_ENCODER.encode(msg) + "\n").encode()


# ---------------------------------------------------------------- bytes
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WireError(f"not base64: {e}") from None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class PageDigests:
    """sha256 of guest pages, remembered per (vm, gpa). Both sides hash every page after most
    steps and few change: comparing with the last copy (a memcmp) is far cheaper than hashing."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, int], tuple[bytes, str]] = {}

    def __call__(self, vm: int, gpa: int, data: bytes) -> str:
        last = self._last.get((vm, gpa))
        if last is not None and last[0] == data:
            return last[1]
        d = digest(data)
        self._last[(vm, gpa)] = (data, d)
        return d


# ---------------------------------------------------------------- capabilities
def caps_to_json(c: Capabilities) -> dict[str, Any]:
    scope = None
    if c.scope is not None:
        b = c.scope
        scope = {"vms": b.vms, "gfns": b.gfns, "mfns": b.mfns, "slots": b.slots, "roots": b.roots, "gvas": b.gvas,
                 "regions": b.regions, "budget": b.budget, "quota": b.quota, "vcpus": b.vcpus,
                 "shadow_pages": b.shadow_pages}
    return {"operations": sorted(c.operations), "events": c.events, "guest_memory": c.guest_memory,
            "mutants": list(c.mutants), "scope": scope, "level": c.level}


def caps_from_json(d: dict[str, Any]) -> Capabilities:
    s = d.get("scope")
    return Capabilities(frozenset(d["operations"]), events=d.get("events", True),
                        guest_memory=d.get("guest_memory", True), mutants=tuple(d.get("mutants", ())),
                        scope=Bounds(**s) if s is not None else None, level=d.get("level", "full"))


# ---------------------------------------------------------------- observations
def observation_to_json(o: Observation) -> dict[str, Any]:
    return {"events": [[n, a] for n, a in o.events],
            "access": o.access.to_json() if o.access is not None else None,
            "guest_writes": [[v, gpa, b64(bytes(data))] for v, gpa, data in o.guest_writes],
            "note": o.note}


def observation_from_json(d: dict[str, Any]) -> Observation:
    a = d.get("access")
    access = None
    if a is not None:
        access = AccessResult(a["fault"], a.get("error_code", 0), a.get("cr2"), a.get("value"), a.get("oom", False),
                              a.get("gp", False), a.get("skipped", False))
    return Observation([(n, args) for n, args in d["events"]], access,
                       [(v, gpa, unb64(data)) for v, gpa, data in d.get("guest_writes", ())], d.get("note", ""))


# ---------------------------------------------------------------- the abstract state
# Keys whose value is a set of (vm, gfn) pairs, and maps from a tuple key to a tuple value: on the
# wire, rows of the key's fields then the value's.
PAIRS = ("ballooned", "write_protected", "gpt_pages")
KNOWN = ("mfns", "pool", "descriptor", "p2m", "swap", "slots_used", "flush_pending", "spte", "rmap", "spte_at",
         "gmap", "g_tables", "g_uppers", "vms") + PAIRS
WALKS = ("g_tables", "g_uppers")  # (vm, root, gva) -> the gfns of tables its walk reads


def state_to_json(st: dict[str, Any]) -> dict[str, Any]:
    """An adapter's abstract_state() in its wire form (iteration order kept: it must be deterministic)."""
    out: dict[str, Any] = {k: v for k, v in st.items() if k not in KNOWN}  # extra keys pass through
    if "mfns" in st:
        out["mfns"] = list(st["mfns"])
    out["pool"] = [[m, p] for m, p in st["pool"].items()]
    out["descriptor"] = [[m, s, r, o] for m, (s, r, o) in st["descriptor"].items()]
    out["p2m"] = [[v, g, m] for (v, g), m in st["p2m"].items()]
    if "swap" in st:
        out["swap"] = [[v, g, s] for (v, g), s in st["swap"].items()]
    out["slots_used"] = list(st["slots_used"])
    for k in PAIRS:
        if k in st:
            out[k] = [[v, g] for v, g in st[k]]
    out["flush_pending"] = [[v, c] for v, c in st["flush_pending"]]
    out["spte"] = [[v, r, o, x, m, bool(w), bool(u), bool(nx)] for (v, r, o, x), (m, w, u, nx) in st["spte"].items()]
    out["rmap"] = [[m, [list(ref) for ref in refs]] for m, refs in st["rmap"].items()]
    if "spte_at" in st:
        out["spte_at"] = [[list(ref), [list(t) for t in ts]] for ref, ts in st["spte_at"].items()]
    out["gmap"] = [[v, r, x, g, bool(w), bool(u), bool(nx), bool(a), bool(d)]
                   for (v, r, x), (g, w, u, nx, a, d) in st["gmap"].items()]
    for k in WALKS:
        if k in st:
            out[k] = [[v, r, x, list(ts)] for (v, r, x), ts in st[k].items()]
    vms = st["vms"]
    out["vms"] = [{"live": bool(f["live"]), "vcpus": [{"cr3_gfn": c["cr3_gfn"], "role": c["role"]} for c in f["vcpus"]]}
                  for f in (vms[v] for v in sorted(vms))]
    return out


def state_from_json(d: dict[str, Any]) -> dict[str, Any]:
    """The wire form back to what conformance/abstraction.py reads (tuple keys, tuple values)."""
    st: dict[str, Any] = {k: v for k, v in d.items() if k not in KNOWN}
    if "mfns" in d:
        st["mfns"] = tuple(d["mfns"])
    st["pool"] = {m: p for m, p in d["pool"]}
    st["descriptor"] = {m: (s, r, o) for m, s, r, o in d["descriptor"]}
    st["p2m"] = {(v, g): m for v, g, m in d["p2m"]}
    if "swap" in d:
        st["swap"] = {(v, g): s for v, g, s in d["swap"]}
    st["slots_used"] = list(d["slots_used"])
    for k in PAIRS:
        if k in d:
            st[k] = [(v, g) for v, g in d[k]]
    st["flush_pending"] = [(v, c) for v, c in d["flush_pending"]]
    st["spte"] = {(v, r, o, x): (m, w, u, nx) for v, r, o, x, m, w, u, nx in d["spte"]}
    st["rmap"] = {m: [tuple(ref) for ref in refs] for m, refs in d["rmap"]}
    if "spte_at" in d:
        st["spte_at"] = {tuple(ref): [tuple(t) for t in ts] for ref, ts in d["spte_at"]}
    st["gmap"] = {(v, r, x): (g, w, u, nx, a, dd) for v, r, x, g, w, u, nx, a, dd in d["gmap"]}
    for k in WALKS:
        if k in d:
            st[k] = {(v, r, x): tuple(ts) for v, r, x, ts in d[k]}
    st["vms"] = dict(enumerate(d["vms"]))
    return st
