"""The prover's result cache: results by a hash of what an obligation depends on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import z3

from dmmcheck.spec.checker import CheckedSpec

from .limits import RLIMIT
from .obligation import Obligation, Result

SEED = 0
# Bump when the encoding changes in a way that could change a result: it invalidates the cache.
# 2: each solver in a Z3 context of its own (cores no longer depend on what ran before).
ENCODING_VERSION = "dmm-encoding/2"


def fingerprint_of(spec: CheckedSpec, ob: Obligation, finite: int | None, rlimit: int = RLIMIT,
                   seed: int = SEED) -> str:
    """Everything an obligation's result depends on, as text: the resolved declarations, init,
    axioms and invariants, its own action (not the others), the encoding and solver settings."""
    base, per_action, all_actions = _spec_digests(spec)
    bound = sorted((s, finite or b or 2) for s, b in spec.sorts.items())
    parts = [ENCODING_VERSION, z3.get_version_string(), ob.name, str(ob.depth),
             f"rlimit={rlimit} seed={seed} finite={finite} bound={bound}", base]
    if ob.action:
        parts.append(per_action[ob.action])
    elif ob.kind in ("bmc", "kinduction", "vacuity"):
        parts.append(all_actions)
    return "\n".join(parts)


_DIGESTS: dict[int, tuple[CheckedSpec, str, dict[str, str], str]] = {}


def _spec_digests(spec: CheckedSpec) -> tuple[str, dict[str, str], str]:
    """Hashes of the spec's parts, computed once per checked spec."""
    hit = _DIGESTS.get(id(spec))
    if hit is None or hit[0] is not spec:
        def h(x: object) -> str:
            return hashlib.sha256(repr(x).encode()).hexdigest()

        base = h((sorted(spec.sorts.items()), sorted(spec.enums.items()),
                  [(s.name, s.kind, s.args, s.result, s.mutable) for s in spec.symbols.values()],
                  [(i.name, i.formula) for i in spec.invariants], [(a.name, a.formula) for a in spec.axioms],
                  (spec.init.updates, spec.init.guards) if spec.init else None))
        per_action = {n: h((a.params, a.guards, a.updates)) for n, a in spec.actions.items()}
        hit = (spec, base, per_action, h(sorted(per_action.items())))
        _DIGESTS[id(spec)] = hit
    return hit[1], hit[2], hit[3]


class Cache:
    """Results by a hash of the obligation's solver input, the Z3 version and the solver settings."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root or os.environ.get("DMM_CACHE_DIR") or ".dmm-cache") / "prove"

    def key(self, fingerprint: str) -> str:
        return hashlib.sha256(fingerprint.encode()).hexdigest()

    def get(self, key: str, name: str | None = None) -> Result | None:
        """The cached answer, only if the entry says what it answers (this key, this obligation),
        its checksum holds, and it is proved or violated; anything else is a miss."""
        p = self.root / f"{key}.json"
        try:
            entry = json.loads(p.read_text())
            if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("result"), dict):
                return None
            if entry.get("checksum") != _checksum(key, entry["result"]):
                return None
            res = Result(**entry["result"])
        except (OSError, ValueError, TypeError, UnicodeDecodeError):
            return None
        if res.status not in ("proved", "violated") or (name is not None and res.name != name):
            return None
        return res

    def put(self, key: str, res: Result) -> None:
        if res.status not in ("proved", "violated"):
            return  # an unknown is never an answer to keep
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{key}.{os.getpid()}"
            body = res.to_json()
            tmp.write_text(json.dumps({"key": key, "checksum": _checksum(key, body), "result": body}))
            tmp.replace(self.root / f"{key}.json")
        except OSError:
            pass  # a read-only cache only costs speed


def _checksum(key: str, body: dict[str, object]) -> str:
    return hashlib.sha256((key + json.dumps(body, sort_keys=True)).encode()).hexdigest()
