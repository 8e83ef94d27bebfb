"""Known divergences: `--known-divergences FILE` (docs/conformance.md, "Known divergences").

A VMM may differ from the architecture in a corner on purpose or by a documented quirk (the host's
KVM reporting an error code one way, say). A campaign against it should go on past that one
difference and still fail on every other. The file lists each accepted divergence as a precise
predicate on a failure's data (oracle.Failure.facts):

    [[divergence]]
    name = "fetch-fault-no-id-bit-without-nxe"
    reason = "the host reports I/D in a fetch fault's error code only with EFER.NXE set"
    kind = "observation"
    what = "access"
    action = "access"                          # any guest access (or a list of operation names)
    access = "fetch"
    controls = { nxe = false, smep = true }
    expected = { outcome = "#PF", error_code = { mask = "0x10", value = "0x10" } }
    observed = { outcome = "#PF" }
    differ = "0x10"                            # the error codes differ in exactly this bit

Every entry must name the kind of failure, the operation, and what differs (for an observation:
both sides of the difference); everything it does not name is "any". Every key is checked before
anything runs, and a mistake is `FILE:LINE: divergence 'NAME': KEY: what is wrong` (exit status 2).

A failure an entry matches ends its test case there, counted, instead of failing the run: after a
divergence the ideal machine (or the spec state) and the implementation no longer agree, so the
rest of that test case cannot be judged. The first matching entry (in file order) takes it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .binding import ACCESS_ACTIONS, EXTRA_ARGS, INTERNAL, OUTPUTS
from .configfile import read_toml
from .oracle import Failure

KINDS = ("observation", "invariant", "refinement")
# What an observation failure is about (Failure.facts["what"]).
WHATS = {
    "access": "an access's outcome (exception, #PF error code, CR2, value) is none the ideal machine allows",
    "walk-ad": "a faulting walk left a page-table entry the architecture does not allow (A/D bits)",
    "ad-bits": "after a successful access a page-table entry differs from the ideal machine's (A/D bits)",
    "store": "after a store a place it could have gone holds something else",
    "memory": "guest memory differs from the ideal machine's after an operation",
}
OUTCOMES = ("success", "#PF", "#GP", "out of memory")
CONTROLS = ("wp", "nxe", "smep", "smap")
ACCESS_KINDS = ("read", "write", "fetch")
ACCESS_EXTRAS = ("value", "size", "offset")
KEYS = ("name", "reason", "kind", "what", "action", "vm", "access", "user", "size", "gva", "gpa", "args",
        "controls", "expected", "observed", "differ", "invariants", "message")
NOT_ACCEPTED = {
    "crash": "a crash cannot be accepted: the implementation's state after it is unknown",
    "timeout": "a timeout cannot be accepted: the implementation's state after it is unknown",
    "memory": "a memory verdict is on the whole campaign, not on one step: raise --memory-limit instead",
}

Test = Callable[[Failure], bool]


class DivergenceFileError(ValueError):
    """A known-divergences file that cannot be used: FILE:LINE: what."""


@dataclass(frozen=True)
class Entry:
    name: str
    reason: str
    kind: str
    line: int
    tests: tuple[Test, ...] = field(repr=False)

    def matches(self, f: Failure) -> bool:
        return f.kind == self.kind and all(t(f) for t in self.tests)


@dataclass(frozen=True)
class KnownDivergences:
    path: str
    entries: tuple[Entry, ...]

    def match(self, f: Failure) -> Entry | None:
        """The first entry that accepts this failure, or None (the failure stands)."""
        for e in self.entries:
            try:
                if e.matches(f):
                    return e
            except (KeyError, TypeError, ValueError, AttributeError):
                continue  # facts without the field an entry names: not that entry's failure
        return None


@dataclass
class Tally:
    """What a campaign accepted: hits per entry (test cases ended there), the first of each."""

    known: KnownDivergences
    hits: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def accept(self, f: Failure) -> Entry | None:
        e = self.known.match(f)
        if e is not None:
            self.hits[e.name] += 1
            if e.name not in self.first:
                self.first[e.name] = describe(f)
        return e

    @property
    def cut_short(self) -> int:
        return sum(self.hits.values())

    def never_hit(self) -> list[str]:
        return [e.name for e in self.known.entries if not self.hits[e.name]]

    def to_json(self) -> dict[str, Any]:
        return {"file": self.known.path, "cut_short": self.cut_short,
                "entries": [{"name": e.name, "reason": e.reason, "kind": e.kind, "hits": self.hits[e.name],
                             "first": self.first.get(e.name)} for e in self.known.entries],
                "never_hit": self.never_hit()}


def describe(f: Failure) -> str:
    op = f.facts.get("operation") or {}
    where = f"step {f.facts['step']} ({op.get('action')}): " if "step" in f.facts else ""
    return f"{where}{f.kind}: {f.message}"


def operation_args(spec: Any) -> dict[str, tuple[str, ...]]:
    """The operations the fuzzer can ask and the arguments each carries (operations.Catalogue's
    inputs; an access also `value`, `size`, `offset`)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, act in spec.actions.items():
        if name in INTERNAL:
            continue
        outs = set(OUTPUTS.get(name, ())) | ({"r"} if name in ACCESS_ACTIONS else set())
        out[name] = tuple(p.name for p in act.params if p.name not in outs) \
            + (ACCESS_EXTRAS if name in ACCESS_ACTIONS else ())
    out.update(EXTRA_ARGS)
    return out


# ---------------------------------------------------------------- loading
def load(path: str | Path, spec: Any) -> KnownDivergences:
    """The entries a file lists, each checked against the spec's operations and invariants."""
    p, text, data = read_toml(path, DivergenceFileError)
    return parse(data, _Lines(str(p), text), operation_args(spec), tuple(i.name for i in spec.invariants))


class _Lines:
    """Names the line an entry or one of its keys is on (tomllib keeps no positions)."""

    HEADER = re.compile(r"\s*\[\[\s*divergence\s*\]\]")

    def __init__(self, path: str, text: str) -> None:
        self.path, self.lines = path, text.splitlines()
        self.headers = [n for n, line in enumerate(self.lines) if self.HEADER.match(line)]

    def __call__(self, i: int | None = None, key: str | None = None) -> str:
        if i is None or i >= len(self.headers):
            if key is not None:
                for n, line in enumerate(self.lines):
                    if re.match(rf"\s*({re.escape(key)}\s*=|\[\s*{re.escape(key)}\s*\])", line):
                        return f"{self.path}:{n + 1}"
            return self.path
        start = self.headers[i]
        end = self.headers[i + 1] if i + 1 < len(self.headers) else len(self.lines)
        if key is not None:
            pat = re.compile(rf"\s*({re.escape(key)}\s*=|\[\s*divergence\.{re.escape(key)}\s*\])")
            for n in range(start, end):
                if pat.match(self.lines[n]):
                    return f"{self.path}:{n + 1}"
        return f"{self.path}:{start + 1}"

    def line(self, i: int) -> int:
        return self.headers[i] + 1 if i < len(self.headers) else 0


def parse(data: dict[str, Any], where: Any, ops: dict[str, tuple[str, ...]],
          invariants: tuple[str, ...]) -> KnownDivergences:
    path = getattr(where, "path", "known divergences")
    for key in data:
        if key != "divergence":
            raise DivergenceFileError(f"{where(None, key)}: {key}: not a key of a known-divergences file "
                                      "(it holds [[divergence]] entries only)")
    items = data.get("divergence")
    if isinstance(items, dict):
        raise DivergenceFileError(f"{where(None, 'divergence')}: divergence: write each entry as [[divergence]] "
                                  "(an array of tables), not [divergence]")
    if not isinstance(items, list) or not items or not all(isinstance(d, dict) for d in items):
        raise DivergenceFileError(f"{where()}: no [[divergence]] entries: a file that accepts nothing is "
                                  "not what was meant")
    entries: list[Entry] = []
    for i, d in enumerate(items):
        entry = _entry(i, d, where, ops, invariants)
        if any(e.name == entry.name for e in entries):
            raise DivergenceFileError(f"{where(i, 'name')}: divergence {entry.name!r}: name: named twice "
                                      "(every entry needs a name of its own: hits are counted by name)")
        entries.append(entry)
    return KnownDivergences(path, tuple(entries))


def _entry(i: int, d: dict[str, Any], where: Any, ops: dict[str, tuple[str, ...]],
           invariants: tuple[str, ...]) -> Entry:
    label = f"divergence #{i + 1}"
    if isinstance(d.get("name"), str) and d["name"].strip():
        label = f"divergence {d['name']!r}"

    def bad(key: str, what: str) -> DivergenceFileError:
        return DivergenceFileError(f"{where(i, key)}: {label}: {key}: {what}")

    for key in d:
        if key not in KEYS:
            raise bad(key, f"not a key of an entry (the keys: {', '.join(KEYS)})")
    for key in ("name", "reason", "kind", "action"):
        if key not in d:
            raise DivergenceFileError(f"{where(i)}: {label}: {key}: missing (every entry names its name, reason, "
                                      "kind and action)")
    for key in ("name", "reason"):
        if not isinstance(d[key], str) or not d[key].strip():
            raise bad(key, f"expected a non-empty string, got {d[key]!r}")
    kind = d["kind"]
    if not isinstance(kind, str):
        raise bad("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    if kind in NOT_ACCEPTED:
        raise bad("kind", NOT_ACCEPTED[kind])
    if kind not in KINDS:
        raise bad("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    tests: list[Test] = []

    # what the failure is about, and the outcome on each side
    what = d.get("what")
    if kind == "observation":
        if not isinstance(what, str) or what not in WHATS:
            raise bad("what", f"an observation entry names what differs: one of {', '.join(WHATS)}; got {what!r}"
                      if "what" in d else f"missing: an observation entry names what differs: one of {', '.join(WHATS)}")
        tests.append(lambda f, w=what: f.facts.get("what") == w)
        tests.extend(_outcomes(d, what, bad))
    else:
        for key in ("what", "expected", "observed", "differ"):
            if key in d:
                raise bad(key, f"only an observation entry names this (a {kind} failure has no expected and "
                          "observed outcome)")
    if kind == "invariant":
        names = d.get("invariants")
        if names is None:
            raise DivergenceFileError(f"{where(i)}: {label}: invariants: missing: an invariant entry names the "
                                      "invariants that fail (all of them: the set must be the same)")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
                or len(set(names)) != len(names):
            raise bad("invariants", f"expected a non-empty list of distinct invariant names, got {names!r}")
        unknown = [n for n in names if n not in invariants]
        if unknown:
            raise bad("invariants", f"{unknown[0]!r} is not an invariant of the spec (its invariants: "
                      f"{', '.join(invariants)})")
        tests.append(lambda f, s=frozenset(names): frozenset(f.facts["invariants"]) == s)
    elif "invariants" in d:
        raise bad("invariants", "only an invariant entry names invariants")
    if "message" in d:
        try:
            rx = re.compile(d["message"]) if isinstance(d["message"], str) and d["message"] else None
        except re.error as e:
            raise bad("message", f"not a regular expression: {e}") from None
        if rx is None:
            raise bad("message", f"expected a non-empty regular expression, got {d['message']!r}")
        tests.append(lambda f, rx=rx: rx.fullmatch(f.message) is not None)
    elif kind == "refinement":
        raise DivergenceFileError(f"{where(i)}: {label}: message: missing: a refinement entry names the "
                                  "failure's message (a regular expression the whole message must match)")

    # the operation
    actions = d["action"]
    actions = [actions] if isinstance(actions, str) else actions
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        raise bad("action", f"expected an operation name or a list of them, got {d['action']!r}")
    names: set[str] = set()
    for a in actions:
        if a == "access":
            names |= set(ACCESS_ACTIONS)
        elif a in ops:
            names.add(a)
        else:
            raise bad("action", f"{a!r} is not an operation the harness asks (\"access\" for any guest access, "
                      f"or one of: {', '.join(sorted(ops))})")
    tests.append(lambda f, n=frozenset(names): f.facts["operation"]["action"] in n)
    accesses_only = names <= set(ACCESS_ACTIONS)
    for key in ("access", "user", "size"):
        if key in d and not accesses_only:
            raise bad(key, "names an access's argument: the entry's action must be guest accesses only "
                      "(action = \"access\")")
    if "access" in d:
        kinds = d["access"] if isinstance(d["access"], list) else [d["access"]]
        if not kinds or not all(k in ACCESS_KINDS for k in kinds):
            raise bad("access", f"expected one of {', '.join(ACCESS_KINDS)} or a list of them, got {d['access']!r}")
        tests.append(lambda f, k=frozenset(kinds): _arg(f, "a") in k)
    if "user" in d:
        if not isinstance(d["user"], bool):
            raise bad("user", f"expected true (user mode) or false (supervisor), got {d['user']!r}")
        tests.append(lambda f, u=d["user"]: _arg(f, "u") is u)
    if "size" in d:
        sizes = _numbers(d["size"], lambda w: bad("size", w))
        tests.append(lambda f, t=sizes: t(_args(f).get("size", 8)))
    if "vm" in d:
        vms = _numbers(d["vm"], lambda w: bad("vm", w))
        tests.append(lambda f, t=vms: t(_arg(f, "v")))
    if "gva" in d:
        gvas = _numbers(d["gva"], lambda w: bad("gva", w))
        tests.append(lambda f, t=gvas: t(_gva(f)))
    if "gpa" in d:
        gpas = _numbers(d["gpa"], lambda w: bad("gpa", w))
        tests.append(lambda f, t=gpas: t(f.facts["gpa"]))
    if "args" in d:
        if not isinstance(d["args"], dict) or not d["args"]:
            raise bad("args", f"expected a table of argument = value, got {d['args']!r}")
        known = {n for a in names for n in ops.get(a, ())}
        for arg, want in d["args"].items():
            if arg not in known:
                raise bad("args", f"{arg!r} is not an argument of {', '.join(sorted(names))} (its arguments: "
                          f"{', '.join(sorted(known)) or 'none'})")
            test = _values(want, lambda w, a=arg: bad("args", f"{a}: {w}"))
            tests.append(lambda f, a=arg, t=test: a in _args(f) and t(_args(f)[a]))
    if "controls" in d:
        ctl = d["controls"]
        if not isinstance(ctl, dict) or not ctl:
            raise bad("controls", f"expected a table of {', '.join(CONTROLS)} = true | false, got {ctl!r}")
        for k, v in ctl.items():
            if k not in CONTROLS or not isinstance(v, bool):
                raise bad("controls", f"{k} = {v!r}: expected {' | '.join(CONTROLS)} = true | false (CR0.WP, "
                          "EFER.NXE, CR4.SMEP, CR4.SMAP)")
        tests.append(lambda f, c=dict(ctl): f.facts["controls"] is not None
                     and all(f.facts["controls"][k] is v for k, v in c.items()))
    line = where.line(i) if hasattr(where, "line") else 0
    return Entry(d["name"], d["reason"], kind, line, tuple(tests))


def _outcomes(d: dict[str, Any], what: str, bad: Callable[[str, str], DivergenceFileError]) -> list[Test]:
    """The expected and observed sides of an observation entry, and `differ`."""
    tests: list[Test] = []
    fields = ("outcome", "error_code", "cr2", "value") if what == "access" else ("value",)
    given: dict[str, dict[str, Any]] = {}
    for side in ("expected", "observed"):
        if side not in d:
            continue
        t = d[side]
        if not isinstance(t, dict) or not t:
            raise bad(side, f"expected a table of {', '.join(fields)}, got {t!r}")
        for k in t:
            if k not in fields:
                raise bad(side, f"{k}: not a field of {'an access outcome' if what == 'access' else 'a ' + what + ' difference'}"
                          f" (the fields: {', '.join(fields)})")
        if what == "access":
            outcome = t.get("outcome")
            if outcome not in OUTCOMES:
                raise bad(side, f"outcome: expected one of {', '.join(map(repr, OUTCOMES))}, got {outcome!r}"
                          if "outcome" in t else f"outcome: missing (one of {', '.join(map(repr, OUTCOMES))})")
            if outcome != "#PF" and ("error_code" in t or "cr2" in t):
                raise bad(side, f"error_code and cr2 belong to a #PF outcome, not {outcome!r}")
            if outcome != "success" and "value" in t:
                raise bad(side, f"value belongs to a successful load, not {outcome!r}")
            tests.append(lambda f, s=side, o=outcome: f.facts[s]["outcome"] == o)
        for k in fields[1:] if what == "access" else fields:
            if k in t:
                pred = _numbers(t[k], lambda w, s=side, k=k: bad(s, f"{k}: {w}"))
                tests.append(lambda f, s=side, k=k, p=pred: p(f.facts[s].get(k)))
        given[side] = t
    if "differ" in d:
        diff = _number(d["differ"])
        if diff is None or diff <= 0:
            raise bad("differ", f"expected a positive number (the bits in which the observed "
                      f"{'error code' if what == 'access' else 'value'} differs from the expected one), "
                      f"got {d['differ']!r}")
        if what == "access" and not all(given.get(s, {}).get("outcome") == "#PF" for s in ("expected", "observed")):
            raise bad("differ", "compares two #PF error codes: expected and observed must both be outcome = \"#PF\"")
        k = "error_code" if what == "access" else "value"
        tests.append(lambda f, k=k, x=diff: f.facts["expected"][k] ^ f.facts["observed"][k] == x)
    if what == "access":
        for side in ("expected", "observed"):
            if side not in given:
                raise bad(side, "missing: an access entry names both sides of the difference (what the ideal "
                          "machine allows, what the guest saw), each at least its outcome")
    elif "differ" not in d and not all("value" in given.get(s, {}) for s in ("expected", "observed")):
        raise bad("differ", f"missing: a {what} entry names what differs: differ = BITS, or both "
                  "expected = { value = ... } and observed = { value = ... }")
    return tests


def _args(f: Failure) -> dict[str, Any]:
    return f.facts["operation"]["args"]


def _arg(f: Failure, name: str) -> Any:
    return _args(f)[name]


def _gva(f: Failure) -> int:
    """The gva the operation names: an access's first byte (x + offset), else its `x`."""
    a = _args(f)
    if f.facts["operation"]["action"] in ACCESS_ACTIONS:
        return a["x"] + a.get("offset", 0)
    return a["x"]


def _number(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.replace("_", ""), 0)
        except ValueError:
            return None
    return None


def _numbers(v: Any, bad: Callable[[str], DivergenceFileError]) -> Callable[[Any], bool]:
    """A number, "0x..." string, a list of them, { from = A, to = B } (inclusive) or
    { mask = M, value = V } (x & M == V)."""
    if isinstance(v, list):
        if not v:
            raise bad("expected a non-empty list")
        tests = [_numbers(x, bad) for x in v]
        return lambda x: any(t(x) for t in tests)
    if isinstance(v, dict):
        if set(v) == {"from", "to"}:
            lo, hi = _number(v["from"]), _number(v["to"])
            if lo is None or hi is None or lo > hi:
                raise bad(f"a range is {{ from = A, to = B }} with numbers A <= B, got {v!r}")
            return lambda x: _is_int(x) and lo <= x <= hi
        if set(v) == {"mask", "value"}:
            mask, want = _number(v["mask"]), _number(v["value"])
            if mask is None or want is None or mask <= 0 or want & ~mask:
                raise bad(f"a mask is {{ mask = M, value = V }} with M > 0 and V within M, got {v!r}")
            return lambda x: _is_int(x) and x & mask == want
        raise bad(f"expected a number, a list, {{ from = A, to = B }} or {{ mask = M, value = V }}, got {v!r}")
    n = _number(v)
    if n is None:
        raise bad(f"expected a number (or a string such as \"0x10\"), got {v!r}")
    return lambda x: _is_int(x) and x == n


def _values(v: Any, bad: Callable[[str], DivergenceFileError]) -> Callable[[Any], bool]:
    """An operation argument: true/false, a string, or numbers as _numbers (a list of strings or
    booleans: any of them)."""
    if isinstance(v, bool):
        return lambda x: x is v
    if isinstance(v, str) and _number(v) is None:
        return lambda x: x == v
    if isinstance(v, list) and v and all(isinstance(x, (str, bool)) and _number(x) is None for x in v):
        return lambda x: any(x is w if isinstance(w, bool) else x == w for w in v)
    return _numbers(v, bad)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
