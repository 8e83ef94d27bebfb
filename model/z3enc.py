"""The symbolic semantics: checked spec -> Z3 formulas.

Sorts become Z3 uninterpreted sorts (unbounded mode) or enumerations of N named elements (finite
mode: `vm0`, `vm1`, ...); enums become Z3 enumerations; `S?` becomes a datatype with `none` and
`some(S)`. Each mutable symbol gets one Z3 function per state copy (`p2m@0`, `p2m@1`, ...); immutable
symbols are shared by all copies.

An action becomes a transition formula whose frame comes from its updates: for every mutable symbol
f, `forall xs. f'(xs) = new_f(xs)`, where new_f folds the action's updates of f in order over the old
value (`If(update fires at xs, its value, earlier value)`, the last update winning) and is the old
value itself for symbols the action does not update. Because the checker makes every quantified
update's variables appear as direct arguments of its target, "the update fires at xs" needs no
quantifier: each variable is read off the matching coordinate of xs.

`count` is expanded over the elements in finite mode. In unbounded mode it has no first-order
encoding of its own; callers that prove counting invariants unbounded supply one (see prove.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import z3
from z3.z3 import _to_expr_ref

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import Action, CheckedSpec, type_of

Env = dict[str, z3.ExprRef]


# Z3 enumeration sorts live in a context, where a sort name may be declared once: an encoding reuses
# the sort of an earlier one in its context with the same elements, and renames a sort whose size
# differs (a finite sort's name carries its size, `vm[2]`; two specs' enums named alike get `e`, `e_1`).
_Enums = tuple[dict[tuple[str, tuple[str, ...]], tuple[z3.SortRef, list[z3.ExprRef]]], dict[str, int]]


def _enums(ctx: z3.Context) -> _Enums:
    """The enumeration sorts declared in ctx, and how many of each name (kept on the context: they
    live and die with it)."""
    reg: _Enums | None = getattr(ctx, "dmm_enums", None)
    if reg is None:
        reg = ({}, {})
        ctx.dmm_enums = reg  # ours, on z3's object
    return reg


def _enum_sort(name: str, elements: list[str]) -> tuple[z3.SortRef, list[z3.ExprRef]]:
    sorts, names = _enums(z3.main_ctx())
    key = (name, tuple(elements))
    if key not in sorts:
        n = names.get(name, 0)
        names[name] = n + 1
        srt, consts = z3.EnumSort(name if n == 0 else f"{name}_{n}", elements)
        sorts[key] = (srt, list(consts))
    return sorts[key]


@contextmanager
def use_context(ctx: z3.Context) -> Iterator[z3.Context]:
    """ctx as Z3's main context for the block: what is encoded there without naming a context
    (z3.Bool, z3.And([]), z3.EnumSort) is made in ctx."""
    saved = z3.z3._main_ctx  # z3py keeps its main context in this module global
    z3.z3._main_ctx = ctx
    try:
        yield ctx
    finally:
        z3.z3._main_ctx = saved


@contextmanager
def own_context() -> Iterator[z3.Context]:
    """A new Z3 context as the main one for the block: what is encoded and solved inside is numbered
    the same whatever the process built before (query.py says why that decides Z3's answers). For a
    search that encodes the spec itself (a finite query, the smallest counterexample, a witness);
    its results must leave the block as plain values."""
    with use_context(z3.Context()) as ctx:
        yield ctx


class EncodingError(ValueError):
    """A construct this encoding cannot express in the chosen mode."""


@dataclass
class Vocab:
    """The Z3 symbols of one state copy."""

    tag: str
    funcs: dict[str, z3.FuncDeclRef]

    def app(self, name: str, args: list[z3.ExprRef]) -> z3.ExprRef:
        return apply(self.funcs[name], args)


class Updated(Vocab):
    """The state after an action, as terms over the state before: f'(xs) is new_f(xs) itself, so a
    post-state formula needs no function symbols and no frame axioms of its own."""

    def __init__(self, enc: "Encoding", pre: Vocab, action: Action, env: Env) -> None:
        super().__init__(pre.tag + "'", pre.funcs)
        self.enc, self.pre, self.action, self.env = enc, pre, action, env
        self._memo: dict[tuple[str, tuple[int, ...]], z3.ExprRef] = {}

    def app(self, name: str, args: list[z3.ExprRef]) -> z3.ExprRef:
        if name not in self.action.modifies:
            return self.pre.app(name, args)
        key = (name, tuple(a.get_id() for a in args))
        if key not in self._memo:
            old = self.pre.app(name, args)
            self._memo[key] = self.enc.new_value(self.action, name, args, self.pre, self.env, old)
        return self._memo[key]


class Encoding:
    def __init__(self, spec: CheckedSpec, finite: dict[str, int] | None = None,
                 count_hook: Callable[["Encoding", A.Count, Vocab, Env], z3.ExprRef] | None = None) -> None:
        self.spec = spec
        self.finite = finite
        self.count_hook = count_hook
        self.sorts: dict[str, z3.SortRef] = {}
        self.elements: dict[str, list[z3.ExprRef]] = {}
        for name in spec.sorts:
            if finite is not None:
                n = finite[name]
                self.sorts[name], self.elements[name] = _enum_sort(f"{name}[{n}]", [f"{name}{i}" for i in range(n)])
            else:
                self.sorts[name] = z3.DeclareSort(name)
        for name, values in spec.enums.items():
            self.sorts[name], self.elements[name] = _enum_sort(name, list(values))
        self.options: dict[str, z3.DatatypeSortRef] = {}
        self.immutable = Vocab("", {s.name: self._decl(s.name, s.args, s.result) for s in spec.symbols.values()
                                    if not s.mutable})
        self._fresh = itertools.count()

    # ---------------------------------------------------------------- sorts and vocabularies
    def sort(self, t: A.TypeRef) -> z3.SortRef:
        if t.optional:
            return self.option(t.name)
        if t.name == A.BOOL:
            return z3.BoolSort()
        if t.name == A.INT:
            return z3.IntSort()
        return self.sorts[t.name]

    def option(self, base: str) -> z3.DatatypeSortRef:
        if base not in self.options:
            dt = z3.Datatype(f"{self.sort(A.TypeRef(base))}?")
            dt.declare(f"none_{base}")
            dt.declare(f"some_{base}", (f"val_{base}", self.sort(A.TypeRef(base))))
            self.options[base] = dt.create()
        return self.options[base]

    def _decl(self, name: str, args: tuple[A.TypeRef, ...], result: A.TypeRef, tag: str = "") -> z3.FuncDeclRef:
        full = f"{name}@{tag}" if tag else name
        return z3.Function(full, *[self.sort(t) for t in args], self.sort(result))

    def vocab(self, tag: str) -> Vocab:
        funcs = dict(self.immutable.funcs)
        for s in self.spec.mutable_symbols:
            funcs[s.name] = self._decl(s.name, s.args, s.result, tag)
        return Vocab(tag, funcs)

    def fresh(self, name: str, t: A.TypeRef) -> z3.ExprRef:
        return z3.Const(f"{name}!{next(self._fresh)}", self.sort(t))

    def reset_fresh(self, base: int) -> None:
        """Bound-variable names from `base` on: encodings built after a reset are named the same
        whatever was encoded before them (cache keys hash the solver's text)."""
        self._fresh = itertools.count(base)

    def param_consts(self, action: Action, tag: str = "") -> Env:
        """The action's parameters: a constant each, and a function for a choice parameter (the
        action picks it whole: unconstrained but by the guards, like any parameter)."""
        return {p.name: self._decl(f"{action.name}.{p.name}{tag}", p.type.args, p.type.result) if p.type.args
                else z3.Const(f"{action.name}.{p.name}{tag}", self.sort(p.type)) for p in action.params}

    # ---------------------------------------------------------------- expressions
    def expr(self, e: A.Expr, st: Vocab, env: Env) -> z3.ExprRef:
        match e:
            case A.Var(name):
                return env[name]
            case A.Sym(name, args):
                return st.app(name, [self.expr(a, st, env) for a in args])
            case A.ParamApp(name, args):
                return apply(env[name], [self.expr(a, st, env) for a in args])
            case A.EnumLit(enum, value):
                return self.elements[enum][self.spec.enums[enum].index(value)]
            case A.Some(arg):
                base = type_of(self.spec, arg).name
                return self.option(base).constructor(1)(self.expr(arg, st, env))
            case A.NoneLit(t):
                assert t is not None
                return self.option(t.name).constructor(0)()
            case A.BoolLit(v):
                return z3.BoolVal(v)
            case A.IntLit(v):
                return z3.IntVal(v)
            case A.Not(arg):
                return neg(self.expr(arg, st, env))
            case A.BinOp(op, l, r):
                a, b = self.expr(l, st, env), self.expr(r, st, env)
                return _BINOPS[op](a, b)
            case A.Quant(kind, vs, body):
                consts = [self.fresh(v.name, v.type) for v in vs]
                inner = {**env, **{v.name: c for v, c in zip(vs, consts)}}
                return quantifier(kind == "forall", consts, self.expr(body, st, inner))
            case A.Count(vs, body):
                if self.finite is None:
                    if self.count_hook is None:
                        raise EncodingError("count needs a finite universe or a count encoding")
                    return self.count_hook(self, e, st, env)
                total = []
                for combo in itertools.product(*(self.domain(v.type) for v in vs)):
                    inner = {**env, **{v.name: c for v, c in zip(vs, combo)}}
                    total.append(z3.If(self.expr(body, st, inner), z3.IntVal(1), z3.IntVal(0)))
                return z3.Sum(total) if total else z3.IntVal(0)
            case A.Ite(c, t, f):
                return ite(self.expr(c, st, env), self.expr(t, st, env), self.expr(f, st, env))
        raise EncodingError(f"cannot encode {e!r}")

    def domain(self, t: A.TypeRef) -> list[z3.ExprRef]:
        if t.name == A.BOOL:
            return [z3.BoolVal(False), z3.BoolVal(True)]
        if t.name in self.elements:
            return self.elements[t.name]
        raise EncodingError(f"{t} has no finite domain in this encoding")

    # ---------------------------------------------------------------- init, actions, invariants
    def guards(self, action: Action, st: Vocab, env: Env) -> z3.BoolRef:
        return conj([self.expr(g, st, env) for g in action.guards])

    def updates_formula(self, action: Action, pre: Vocab, post: Vocab, env: Env,
                        symbols: list[str] | None = None) -> z3.BoolRef:
        """post = pre with the action's updates applied (its frame included: unmodified symbols equal)."""
        parts = []
        for sym in self.spec.mutable_symbols:
            if symbols is not None and sym.name not in symbols:
                continue
            xs = [self.fresh(f"x{i}", t) for i, t in enumerate(sym.args)]
            old = pre.app(sym.name, xs)
            new = self.new_value(action, sym.name, xs, pre, env, old)
            eq = post.app(sym.name, xs) == new
            parts.append(z3.ForAll(xs, eq) if xs else eq)
        return z3.And(parts)

    def transition(self, action: Action, pre: Vocab, post: Vocab, env: Env) -> z3.BoolRef:
        return z3.And(self.guards(action, pre, env), self.updates_formula(action, pre, post, env))

    def new_value(self, action: Action, name: str, xs: list[z3.ExprRef], pre: Vocab, env: Env,
                  old: z3.ExprRef) -> z3.ExprRef:
        value = old
        for leaf, conds, bound in A.update_leaves(action.updates):
            if leaf.target.name != name:
                continue
            args = leaf.target.args
            local = dict(env)
            pinned: set[int] = set()
            for v in bound:  # read each bound variable off its coordinate of xs
                i = next(i for i, a in enumerate(args) if isinstance(a, A.Var) and a.name == v.name)
                local[v.name] = xs[i]
                pinned.add(i)
            fire = [self.expr(c, pre, local) if pos else neg(self.expr(c, pre, local)) for c, pos in conds]
            fire += [xs[i] == self.expr(a, pre, local) for i, a in enumerate(args) if i not in pinned]
            if isinstance(leaf, A.Assign):
                rhs = self.expr(leaf.value, pre, local)
            else:
                rhs = z3.BoolVal(isinstance(leaf, A.Insert))
            value = ite(conj(fire), rhs, value)
        return value

    def init(self, st: Vocab) -> z3.BoolRef:
        assert self.spec.init is not None
        # init's updates read no state, so "pre" is irrelevant: encode them over st itself (a point
        # init leaves unassigned is then unconstrained); its requires constrain st.
        return z3.And(self.updates_formula(self.spec.init, st, st, {}), self.guards(self.spec.init, st, {}))

    def invariant(self, name: str, st: Vocab) -> z3.BoolRef:
        inv = next(i for i in self.spec.invariants if i.name == name)
        return self.expr(inv.formula, st, {})

    def axioms(self) -> z3.BoolRef:
        return z3.And([self.expr(a.formula, self.immutable, {}) for a in self.spec.axioms])

    # ---------------------------------------------------------------- concrete values (finite mode)
    def choice_value(self, t: A.TypeRef, values: tuple[Any, ...]) -> Any:
        """A choice parameter's concrete value (the flat tuple over a finite universe) as a function
        of Z3 terms, to stand where param_consts puts a declared function."""
        points = list(itertools.product(*(range(len(self.elements[a.name])) if a.name in self.elements
                                          else (False, True) for a in t.args)))
        table = [([self.value(a, x) for a, x in zip(t.args, p)], self.value(t.result, v)) for p, v in zip(points, values)]

        def apply(*zs: z3.ExprRef) -> z3.ExprRef:
            out = table[-1][1]
            for at, v in reversed(table[:-1]):
                out = z3.If(z3.And([z == a for z, a in zip(zs, at)]), v, out)
            return out
        return apply

    def value(self, t: A.TypeRef, v: Any) -> z3.ExprRef:
        if t.optional:
            opt = self.option(t.name)
            return opt.constructor(0)() if v is None else opt.constructor(1)(self.value(A.TypeRef(t.name), v))
        if t.name == A.BOOL:
            return z3.BoolVal(bool(v))
        if t.name == A.INT:
            return z3.IntVal(v)
        return self.elements[t.name][v]


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "and": lambda a, b: conj([a, b]),
    "or": lambda a, b: _connective(z3.Z3_mk_or, [a, b], z3.Or),
    "implies": lambda a, b: implies(a, b),
    "iff": lambda a, b: a == b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
}


def apply(f: z3.FuncDeclRef | Callable[..., z3.ExprRef], args: list[z3.ExprRef]) -> z3.ExprRef:
    """f(*args), the term Z3's Python API makes, without its per-argument coercion (a dozen Z3 calls
    an argument: the spec's checker typed every application, and Z3 still refuses a wrong sort).
    With conj, neg, ite and quantifier, encoding paxos_forall's obligations took about 31 ms instead
    of 70. (f may also be a Python function: a choice parameter's value in the cross-check.)"""
    if not isinstance(f, z3.FuncDeclRef) or not all(isinstance(a, z3.ExprRef) and a.ctx is f.ctx for a in args):
        return f(*args)
    return _to_expr_ref(z3.Z3_mk_app(f.ctx_ref(), f.as_ast(), len(args), _asts(args)), f.ctx)


def conj(args: list[Any]) -> z3.BoolRef:
    """z3.And(args), the same term, made as apply makes an application."""
    return _connective(z3.Z3_mk_and, args, z3.And)


def neg(a: Any) -> z3.BoolRef:
    """z3.Not(a), the same term, made as apply makes an application."""
    if isinstance(a, z3.BoolRef):
        return z3.BoolRef(z3.Z3_mk_not(a.ctx.ref(), a.as_ast()), a.ctx)
    return z3.Not(a)


def implies(a: Any, b: Any) -> z3.BoolRef:
    """z3.Implies(a, b), the same term, made as apply makes an application."""
    if isinstance(a, z3.BoolRef) and isinstance(b, z3.BoolRef) and a.ctx is b.ctx:
        return z3.BoolRef(z3.Z3_mk_implies(a.ctx.ref(), a.as_ast(), b.as_ast()), a.ctx)
    return z3.Implies(a, b)


def ite(c: Any, t: Any, e: Any) -> z3.ExprRef:
    """z3.If(c, t, e), the same term; the API's path when t and e need coercing to one sort."""
    if isinstance(c, z3.BoolRef) and all(isinstance(x, z3.ExprRef) and x.ctx is c.ctx for x in (t, e)):
        try:
            return _to_expr_ref(z3.Z3_mk_ite(c.ctx.ref(), c.as_ast(), t.as_ast(), e.as_ast()), c.ctx)
        except z3.Z3Exception:  # sorts that differ: the API coerces them
            pass
    return z3.If(c, t, e)


def quantifier(forall: bool, vs: list[z3.ExprRef], body: z3.BoolRef) -> z3.BoolRef:
    """z3.ForAll(vs, body) or z3.Exists(vs, body), the same term."""
    ctx = body.ctx if isinstance(body, z3.BoolRef) else None
    if not vs or ctx is None or any(v.ctx is not ctx for v in vs):
        return (z3.ForAll if forall else z3.Exists)(vs, body)
    empty = z3.to_symbol("", ctx)
    return z3.QuantifierRef(z3.Z3_mk_quantifier_const_ex(ctx.ref(), forall, 1, empty, empty, len(vs), _asts(vs),
                                                         0, (z3.Pattern * 0)(), 0, (z3.Ast * 0)(), body.as_ast()), ctx)


def _connective(mk: Callable[..., Any], args: list[Any], slow: Callable[..., Any]) -> z3.BoolRef:
    if not args or not all(isinstance(a, z3.BoolRef) and a.ctx is args[0].ctx for a in args):
        return slow(args)  # no argument (its context is the default one), or some to coerce
    ctx = args[0].ctx
    return z3.BoolRef(mk(ctx.ref(), len(args), _asts(args)), ctx)


def _asts(args: list[Any]) -> Any:
    return (z3.Ast * len(args))(*[a.as_ast() for a in args])
