"""What the harness needs of a spec before it can judge an implementation against it.

The harness is spec-derived but DMM-bound: it draws operations by action name (operations.py's
tables), reads the implementation's state back into the DMM spec's symbols (abstraction.py) and
infers the guest's page-table edits through `guest_path`. A spec it can judge is therefore the
bundled DMM spec or a variant of it (a mutated guard, an extra invariant, a ghost relation added):
every sort, every state symbol an implementation shows and every action must be there with the
bundled spec's signature (extra actions, symbols and invariants are the variant's own). Anything else
is refused up front with what it lacks, instead of failing deep inside a campaign with a missing key.
"""

from __future__ import annotations

from functools import cache

from dmmcheck.spec import load
from dmmcheck.spec.checker import Action, CheckedSpec, Symbol


@cache
def _reference() -> CheckedSpec:
    return load(None)


def missing(spec: CheckedSpec) -> list[str]:
    """What `spec` lacks for the harness, one line each; empty when the harness can judge it."""
    ref = _reference()
    out = [f"sort '{s}'" for s in ref.sorts if s not in spec.sorts]
    for sym in ref.symbols.values():
        if not sym.mutable or sym.ghost:
            continue  # an implementation shows only the mutable, non-ghost state
        have = spec.symbols.get(sym.name)
        if have is None:
            out.append(f"state {sym.kind} '{sym.name}'")
        elif _signature(have) != _signature(sym):
            out.append(f"{sym.kind} '{sym.name}' with the DMM spec's signature")
    # every action: the harness names some in its tables and strings (operations.py, the oracle),
    # draws the others from the spec, and an implementation performs all of them
    for name, want in ref.actions.items():
        act = spec.actions.get(name)
        if act is None:
            out.append(f"action '{name}'")
        elif _params(act) != _params(want):
            params = ", ".join(f"{n}: {t}" for n, t in _params(want))
            out.append(f"action '{name}' with the parameters ({params})")
    return out


def _signature(sym: Symbol) -> tuple[tuple[str, ...], str]:
    return tuple(str(t) for t in sym.args), str(sym.result)


def _params(action: Action) -> list[tuple[str, str]]:
    return [(p.name, str(p.type)) for p in action.params]


def check(spec: CheckedSpec) -> None:
    """Raise ValueError naming what the spec lacks, when the harness cannot judge against it."""
    deterministic_init(spec)
    lacks = missing(spec)
    if lacks:
        shown = "; ".join(lacks[:8]) + (f"; and {len(lacks) - 8} more" if len(lacks) > 8 else "")
        raise ValueError(f"{spec.file}: the conformance harness judges implementations against the DMM "
                         f"spec or a variant of it; this spec lacks {shown}")


def deterministic_init(spec: CheckedSpec) -> None:
    """The harness judges an implementation from one initial state: an init with requires that
    leave state open (several initial states) is refused, with where (ValueError: bad input)."""
    free = spec.init_free_symbols()
    if free and spec.init is not None:
        raise ValueError(f"{spec.init.loc}: the spec's init leaves {', '.join(free)} to its requires (a non-deterministic "
                         "initial state); the harness needs one initial state: assign them in init "
                         "(dmm prove and dmm explore handle such a spec)")
