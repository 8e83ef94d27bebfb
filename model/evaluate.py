"""The reference evaluator: a direct walk over the checked AST.

Slow and obviously right. It is what the compiled fast path (`compile.py`) is tested against, and
what explains a failure: which conjunct of an invariant is false, for which values of its quantified
variables, and which update of an action wrote a point.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from dmmcheck.spec import ast as A
from dmmcheck.spec.printer import show_expr

from .state import State, Universe

Env = dict[str, Any]


def evaluate(u: Universe, s: State, e: A.Expr, env: Env) -> Any:
    match e:
        case A.Var(name):
            return env[name]
        case A.Sym(name, args):
            return s[u.layout[name].index][u.index(name, tuple(evaluate(u, s, a, env) for a in args))]
        case A.ParamApp(name, args, fun):
            return env[name][u.param_index(fun, tuple(evaluate(u, s, a, env) for a in args))]
        case A.EnumLit(enum, value):
            return u.spec.enums[enum].index(value)
        case A.Some(arg):
            return evaluate(u, s, arg, env)
        case A.NoneLit():
            return None
        case A.BoolLit(v) | A.IntLit(v):
            return v
        case A.Not(arg):
            return not evaluate(u, s, arg, env)
        case A.BinOp(op, l, r):
            a = evaluate(u, s, l, env)
            if op == "and":
                return bool(a) and bool(evaluate(u, s, r, env))
            if op == "or":
                return bool(a) or bool(evaluate(u, s, r, env))
            if op == "implies":
                return (not a) or bool(evaluate(u, s, r, env))
            b = evaluate(u, s, r, env)
            return {"iff": lambda: bool(a) == bool(b), "=": lambda: a == b, "!=": lambda: a != b,
                    "<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b, ">=": lambda: a >= b,
                    "+": lambda: a + b, "-": lambda: a - b}[op]()
        case A.Quant(kind, vs, body):
            results = (evaluate(u, s, body, {**env, **b}) for b in instances(u, vs))
            return all(results) if kind == "forall" else any(results)
        case A.Count(vs, body):
            return sum(1 for b in instances(u, vs) if evaluate(u, s, body, {**env, **b}))
        case A.Ite(c, t, f):
            return evaluate(u, s, t if evaluate(u, s, c, env) else f, env)
    raise TypeError(f"cannot evaluate {e!r}")


def instances(u: Universe, vs: tuple[A.Var, ...]):
    names = [v.name for v in vs]
    for combo in itertools.product(*(u.domain(v.type) for v in vs)):
        yield dict(zip(names, combo))


# ---------------------------------------------------------------- updates, the slow way


def apply_updates(u: Universe, s: State, updates: tuple[A.Update, ...], env: Env,
                  writes: dict[tuple[str, int], A.Update] | None = None) -> State:
    """Apply updates in order; every right-hand side reads s. `writes` records the last writer of a point."""
    new = [list(x) for x in s]
    for upd in updates:
        _apply(u, s, upd, env, new, writes, upd)
    return tuple(tuple(x) for x in new)


def _apply(u, s, upd, env, new, writes, top) -> None:
    match upd:
        case A.Assign() | A.Insert() | A.Remove():
            target = upd.target
            if isinstance(upd, A.Assign):
                val = evaluate(u, s, upd.value, env)
            else:
                val = isinstance(upd, A.Insert)
            idx = u.index(target.name, tuple(evaluate(u, s, a, env) for a in target.args))
            new[u.layout[target.name].index][idx] = val
            if writes is not None:
                writes[(target.name, idx)] = top
        case A.ForallUpdate(vs, body):
            for b in instances(u, vs):
                _apply(u, s, body, {**env, **b}, new, writes, top)
        case A.IfUpdate(cond, then, else_):
            for x in (then if evaluate(u, s, cond, env) else else_):
                _apply(u, s, x, env, new, writes, top)


# ---------------------------------------------------------------- blame


@dataclass
class Blame:
    """Where a formula is false: the smallest failing part, and the values of the variables there."""

    formula: str
    bindings: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""

    def __str__(self) -> str:
        at = ", ".join(f"{k}={v}" for k, v in self.bindings)
        return f"{self.formula}" + (f" at {at}" if at else "") + (f" ({self.note})" if self.note else "")


def blame(u: Universe, s: State, e: A.Expr, env: Env | None = None) -> Blame:
    """Explain why a formula that evaluates to false is false (call only when it is false)."""
    env = dict(env or {})
    shown: list[tuple[str, str]] = []
    while True:
        match e:
            case A.Quant("forall", vs, body):
                for b in instances(u, vs):
                    if not evaluate(u, s, body, {**env, **b}):
                        env.update(b)
                        shown += [(v.name, u.show_value(v.type, b[v.name])) for v in vs]
                        e = body
                        break
                else:
                    return Blame(show_expr(e), shown, "holds here")
                continue
            case A.BinOp("and", l, r):
                e = l if not evaluate(u, s, l, env) else r
                continue
            case A.BinOp("implies", l, r):
                e = r
                continue
            case A.Ite(c, t, f):  # a boolean if-then-else: the branch taken is what failed
                e = t if evaluate(u, s, c, env) else f
                continue
            case A.Not(A.Quant("exists", vs, body)):
                for b in instances(u, vs):
                    if evaluate(u, s, body, {**env, **b}):
                        w = ", ".join(f"{v.name}={u.show_value(v.type, b[v.name])}" for v in vs)
                        return Blame(show_expr(e), shown, f"witness {w}")
            case A.BinOp("iff", l, r):
                note = f"left is {_tf(evaluate(u, s, l, env))}, right is {_tf(evaluate(u, s, r, env))}"
                return Blame(show_expr(e), shown, note)
            case A.BinOp(op, l, r) if op in A.CMP_OPS:
                lv, rv = evaluate(u, s, l, env), evaluate(u, s, r, env)
                return Blame(show_expr(e), shown, _compare_note(u, ((l, lv), (r, rv))))
        return Blame(show_expr(e), shown)


def _compare_note(u: Universe, sides: tuple[tuple[A.Expr, Any], ...]) -> str:
    """What each side of a failed comparison is. A literal side is not restated ("none is none"),
    and an optional value that is none is said as what it means: the point is unmapped."""
    literal = (A.NoneLit, A.BoolLit, A.IntLit, A.EnumLit)
    said = [f"{show_expr(e)} is {'unmapped' if v is None else _show_any(u, e, v)}"
            for e, v in sides if not isinstance(e, literal)]
    return ", ".join(said)


def _tf(v: Any) -> str:
    return "true" if v else "false"


def _show_any(u: Universe, e: A.Expr, v: Any) -> str:
    from dmmcheck.spec.checker import type_of

    return u.show_value(type_of(u.spec, e), v)
