"""One question to Z3, its answer, and how the answer reads as an obligation's result.

Every check of the prover goes through `solve`: a `Query` (what to assert, in order, and how to read
the answer) on a solver the caller made (its limits set), giving an `Answer` (no solver state left
to read afterwards). `read` turns an answer into a `Result`.

A query is built in the process's Z3 context and solved in a context of its own (`own_solver`): Z3
numbers the terms of a context as they are made (reusing the numbers of freed ones) and its search
follows those numbers, so in a shared context the same query got another core, or unknown instead of
unsat, after other obligations had run. Translated into a fresh context, in the order asserted, a
query's terms are numbered the same whatever ran before it. Translation also copies every datatype
declared in the context the query was built in, so that context must hold the same datatypes
whatever ran before (the prover's declares them all up front; finite queries get contexts of their
own: prove.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeAlias

import z3

from .obligation import Obligation, Result, result

Verdict = Literal["sat", "unsat", "unknown"]


@dataclass(frozen=True)
class Tracked:
    """An invariant asserted under a literal of its own, so that an unsat core names the invariants
    a proof used."""

    name: str
    formula: z3.BoolRef


Assertion: TypeAlias = "z3.BoolRef | Tracked"


def tracked(invariants: dict[str, z3.BoolRef]) -> list[Tracked]:
    return [Tracked(name, f) for name, f in invariants.items()]


# Assertions built when they are asserted, not before: a part may be expensive to build, and a
# deepening query builds a level only when the levels before it were unsat. The order of the parts is
# the order of their translation into the solver's context, and so decides its term numbering.
Part = Callable[[], Sequence[Assertion]]


@dataclass(frozen=True)
class Level:
    """One depth of an iterative deepening: `kept` stays asserted for the deeper levels, `goal` is
    pushed, checked and popped."""

    kept: tuple[Part, ...]
    goal: Callable[[], z3.BoolRef]


class NotEncodable(Exception):
    """A part of a query could not be built (its message says why)."""


@dataclass(frozen=True)
class Answer:
    verdict: Verdict
    core: frozenset[str] = frozenset()  # the tracked invariants in the unsat core
    # z3.ModelRef of a sat answer, in the solver's context: a query that reads it (a BMC trace, a
    # vacuity witness) is solved in the context it was built in. Never translated into the prover's
    # context: that changed how every query translated from there afterwards was solved.
    model: Any = None
    depth: int = 0  # the level of a deepening query that was satisfied
    why: str = ""  # Z3's reason for an unknown
    seconds: float = 0.0  # how long the check that gave `why` took (the wall-clock backstop's sign)


@dataclass(frozen=True)
class Reading:
    """How an answer reads as an obligation's result."""

    proved_by: Verdict = "unsat"  # a negated goal is proved by unsat; a witness search by sat
    proved: str = ""  # the reason given with a proof
    violated: str = ""  # the reason given with a violation
    unknown_context: str = ""  # appended to what stopped an unknown check
    bound: dict[str, int] | None = None  # the finite universe the result is about (None: unbounded)
    counterexample: Callable[[Answer], dict[str, Any]] | None = None  # from a violation's answer


@dataclass(frozen=True)
class Query:
    parts: tuple[Part, ...]
    reading: Reading
    # Iterative deepening (BMC): level d is built only when the levels before it were unsat, so the
    # first violation found has a shortest trace and a short one costs no deeper encoding.
    levels: Callable[[int], Level] | None = None
    depth: int = 0  # the deepest level


def own_solver(params: dict[str, Any], ctx: z3.Context | None = None) -> z3.Solver:
    """A solver with these settings in ctx, a context the caller made for it (and perhaps for the
    solvers of the same queries after it), or else in a new Z3 context of its own (the module
    docstring says why). A context costs 2-4 ms of CPU, much of it the kernel's."""
    sv = z3.Solver(ctx=ctx or z3.Context())
    sv.set(**params)
    return sv


@contextmanager
def pushed(sv: z3.Solver) -> Iterator[z3.Solver]:
    """What is asserted inside the block is retracted after it."""
    sv.push()
    try:
        yield sv
    finally:
        sv.pop()


def assert_all(sv: z3.Solver, assertions: Sequence[Assertion], names: dict[str, str] | None = None,
               assumed: bool = False) -> dict[str, str]:
    """Assert in order, each translated into sv's context; returns (and adds to `names`) tracking
    literal -> invariant. `assumed`: a Tracked one holds only in the checks that assume its literal
    (check's `assume`: a subset of the invariants per goal on one solver), not in every check."""
    names = {} if names is None else names
    for a in assertions:
        if isinstance(a, Tracked):
            lit = z3.Bool(f"assume:{a.name}", sv.ctx)
            if assumed:
                sv.add(z3.Implies(lit, _into(sv, a.formula)))
            else:
                sv.assert_and_track(_into(sv, a.formula), lit)
            names[str(lit)] = a.name
        else:
            sv.add(_into(sv, a))
    return names


def _into(sv: z3.Solver, f: z3.BoolRef) -> z3.BoolRef:
    """f in sv's context (Z3 refuses to translate into the context a term is in already)."""
    return f if f.ctx is sv.ctx else f.translate(sv.ctx)


def assert_parts(sv: z3.Solver, parts: Sequence[Part], names: dict[str, str]) -> None:
    """Each part built, then asserted, in order (NotEncodable: a part could not be built)."""
    for part in parts:
        try:
            built = part()
        except Exception as e:  # an encoding limit: the caller reports it, as for a builder
            raise NotEncodable(str(e)) from e
        assert_all(sv, built, names)


def check(sv: z3.Solver, names: dict[str, str] | None = None, assume: Sequence[z3.BoolRef] = ()) -> Answer:
    """One check of what sv holds, under the literals `assume`; `names`: tracking literal ->
    invariant, for the core."""
    start = time.perf_counter()
    r = str(sv.check(*assume))
    seconds = time.perf_counter() - start
    if r == "unsat":
        core = frozenset(names[str(c)] for c in sv.unsat_core() if str(c) in names) if names else frozenset()
        return Answer("unsat", core=core)
    if r == "sat":
        return Answer("sat", model=sv.model())
    return Answer("unknown", why=sv.reason_unknown(), seconds=seconds)


def check_goal(sv: z3.Solver, goal: Callable[[], z3.BoolRef], names: dict[str, str] | None = None,
               assume: Sequence[z3.BoolRef] = ()) -> Answer:
    """The goal (built after the push) checked on top of what sv holds, and retracted."""
    with pushed(sv):
        sv.add(_into(sv, goal()))
        return check(sv, names, assume)


def solve(query: Query, sv: z3.Solver) -> Answer:
    """The query's answer on sv (a fresh solver: its assertions are added here)."""
    names: dict[str, str] = {}
    assert_parts(sv, query.parts, names)
    if query.levels is None:
        return check(sv, names)
    for d in range(query.depth + 1):
        level = query.levels(d)
        assert_parts(sv, level.kept, names)
        answer = check_goal(sv, level.goal, names)
        if answer.verdict == "sat":
            return Answer("sat", model=answer.model, depth=d)
        if answer.verdict == "unknown":
            return answer
    return Answer("unsat")


def why_unknown(answer: Answer, rlimit: int, timeout_ms: int) -> str:
    """Which limit stopped the solver, in the user's terms."""
    why = answer.why or "unknown"
    # Z3 says "canceled" for both limits: the backstop's only if the check ran that long.
    if answer.seconds >= 0.9 * timeout_ms / 1000:
        return f"wall-clock backstop reached (--timeout {timeout_ms / 1000:g} s)"
    where, _, base = why.rpartition(": ")  # a finite proof names the universe size first
    if "resource" in base or base in ("canceled", "timeout"):
        return f"resource limit reached (--rlimit {rlimit})" + (f" at {where}" if where else "")
    return why


def read(ob: Obligation, reading: Reading, answer: Answer, why: Callable[[Answer], str]) -> Result:
    """The obligation's result from its answer; `why` words an unknown's limit."""
    if answer.verdict == "unknown":
        return result(ob, "unknown", reason=why(answer) + reading.unknown_context, bound=reading.bound)
    if answer.verdict == reading.proved_by:
        return result(ob, "proved", core=sorted(answer.core), reason=reading.proved, bound=reading.bound)
    cx = reading.counterexample(answer) if reading.counterexample else None
    return result(ob, "violated", counterexample=cx, reason=reading.violated, bound=reading.bound)
