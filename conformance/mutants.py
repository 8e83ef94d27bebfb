"""Seeded VMM bugs (issue 8): each a realistic mistake, switched on at run time, off by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Mutant:
    name: str
    description: str  # what it breaks
    catches: str  # which invariant or observation should catch it
    apply: Callable[[Any], None]


MUTANTS: dict[str, Mutant] = {}


def apply_mutant(vmm: Any, name: str | None) -> None:
    if not name:
        return
    try:
        MUTANTS[name].apply(vmm)
    except KeyError:
        raise ValueError(f"unknown mutant {name!r} (dmm mutants lists them)") from None
