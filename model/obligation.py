"""What the prover proves and what it reports: obligations and their results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dmmcheck.spec.checker import CheckedSpec


@dataclass(frozen=True)
class Obligation:
    kind: str
    action: str | None = None
    invariant: str | None = None
    depth: int = 0

    @property
    def name(self) -> str:
        parts = [self.kind] + ([str(self.depth)] if self.depth else []) + [x for x in (self.action, self.invariant) if x]
        return "/".join(parts)


@dataclass
class Result:
    name: str
    kind: str
    action: str | None
    invariant: str | None
    status: str  # proved | violated | unknown
    seconds: float
    core: list[str] = field(default_factory=list)
    counterexample: dict[str, Any] | None = None
    reason: str = ""
    bound: dict[str, int] | None = None  # finite universe the result is about; None = unbounded
    cached: bool = False
    # A counterexample to induction: is it reachable from init? (reachable.py; None: not searched)
    reachability: dict[str, Any] | None = None
    # A reachability witness (witness.py): required, shape, depth, universe, and the run when found
    witness: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def result(ob: Obligation, status: str, **kw: Any) -> Result:
    """A result for ob; its seconds are set by whoever timed the check."""
    return Result(ob.name, ob.kind, ob.action, ob.invariant, status, 0.0, **kw)


def list_obligations(spec: CheckedSpec, bmc: int = 0, kinduction: int = 0) -> list[Obligation]:
    obs = [Obligation("vacuity", invariant="init"), Obligation("vacuity", invariant="invariants")]
    obs += [Obligation("vacuity", action=a) for a in spec.actions]
    obs += [Obligation("init", invariant=i.name) for i in spec.invariants]
    obs += [Obligation("inductive", action=a, invariant=i.name)
            for a in spec.actions for i in spec.invariants]
    if bmc:
        obs += [Obligation("bmc", invariant=i.name, depth=bmc) for i in spec.invariants]
    if kinduction:
        obs.append(Obligation("kinduction", invariant="base", depth=kinduction))
        obs += [Obligation("kinduction", invariant=i.name, depth=kinduction) for i in spec.invariants]
    return obs
