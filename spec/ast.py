"""The typed AST of the dmm spec language.

Nodes are immutable value classes (`node.py`: what frozen dataclasses are, made faster): hashable,
comparable, cheap to share. Source locations ride along
but never take part in equality, so `parse(print(ast)) == ast` compares structure only.

The parser produces *surface* nodes (`Name`, `App`, and the `Surface*` forms whose binders are
`Binder`s as written and whose update targets are names as written); the checker (`checker.py`)
resolves names and returns *resolved* nodes (`Var`, `Sym`, `EnumLit`, `Some`, and `Quant`, `Count`,
`Assign`... whose binders are `Var`s and whose targets are `Sym`s) in which every expression's type is
known. The two forms are distinct classes so that a consumer of checked specs is typed without casts.
"""

from __future__ import annotations

from typing import Iterator, Union

from .node import field, node


@node
class Loc:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line > 0 else self.file


def _loc() -> Loc | None:
    return field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------- types

BOOL = "bool"
INT = "int"


@node
class TypeRef:
    """A type as written: a sort, an enum, `bool` or `int`; `optional` is the `?` of partial results.
    With `args`, a function type `(args) -> name?` (an action's choice parameter: the action picks a
    whole relation or function at once, which is how a spec writes a nondeterministic assignment)."""

    name: str
    optional: bool = False
    loc: Loc | None = _loc()
    args: tuple[TypeRef, ...] = ()

    @property
    def result(self) -> TypeRef:
        """The type of one application (of a function type), or the type itself."""
        return TypeRef(self.name, self.optional, self.loc) if self.args else self

    def __str__(self) -> str:
        plain = self.name + ("?" if self.optional else "")
        if not self.args:
            return plain
        if len(self.args) == 1:
            return f"{self.args[0]} -> {plain}"
        return f"({', '.join(map(str, self.args))}) -> {plain}"


# ---------------------------------------------------------------- expressions


@node
class Binder:
    name: str
    type: TypeRef
    loc: Loc | None = _loc()


@node
class Name:
    """A bare identifier as written: a variable, a constant, an enum value or a 0-ary symbol."""

    name: str
    loc: Loc | None = _loc()


@node
class App:
    """`f(a, b)` as written: a relation, function or definition applied to arguments."""

    name: str
    args: tuple[Expr, ...]
    loc: Loc | None = _loc()


@node
class BoolLit:
    value: bool
    loc: Loc | None = _loc()


@node
class IntLit:
    value: int
    loc: Loc | None = _loc()


@node
class NoneLit:
    """`none`; after checking, `type` names the optional type it belongs to."""

    type: TypeRef | None = None
    loc: Loc | None = _loc()


@node
class Not:
    arg: Expr
    loc: Loc | None = _loc()


# Binary operators, by their surface spelling.
LOGIC_OPS = ("and", "or", "implies", "iff")
CMP_OPS = ("=", "!=", "<", "<=", ">", ">=")
ARITH_OPS = ("+", "-")


@node
class BinOp:
    op: str
    left: Expr
    right: Expr
    loc: Loc | None = _loc()


@node
class SurfaceQuant:
    """`forall x: S. body` / `exists ...` as written (the checker makes a `Quant`)."""

    kind: str  # "forall" | "exists"
    binders: tuple[Binder, ...]
    body: Expr
    loc: Loc | None = _loc()


@node
class SurfaceCount:
    """`count { x: S, y: T | body }` as written (the checker makes a `Count`)."""

    binders: tuple[Binder, ...]
    body: Expr
    loc: Loc | None = _loc()


@node
class Ite:
    cond: Expr
    then: Expr
    else_: Expr
    loc: Loc | None = _loc()


# Resolved forms (only the checker makes these).


@node
class Var:
    """A bound variable or an action parameter, with its type."""

    name: str
    type: TypeRef
    loc: Loc | None = _loc()


@node
class Sym:
    """A state or immutable symbol (relation, function, constant) applied to arguments."""

    name: str
    args: tuple[Expr, ...]
    loc: Loc | None = _loc()


@node
class ParamApp:
    """A choice parameter (an action parameter of function type `fun`) applied to arguments."""

    name: str
    args: tuple[Expr, ...]
    fun: TypeRef
    loc: Loc | None = _loc()


@node
class Quant:
    """A resolved quantifier: its variables are typed `Var`s."""

    kind: str  # "forall" | "exists"
    binders: tuple[Var, ...]
    body: Expr
    loc: Loc | None = _loc()


@node
class Count:
    """A resolved `count { x: S, y: T | body }`: how many tuples satisfy body (an int)."""

    binders: tuple[Var, ...]
    body: Expr
    loc: Loc | None = _loc()


@node
class EnumLit:
    enum: str
    value: str
    loc: Loc | None = _loc()


@node
class Some:
    """The coercion of a value of type S into S? (inserted by the checker, never written)."""

    arg: Expr
    loc: Loc | None = _loc()


# One union for both forms: the operators (Not, BinOp, Ite) are shared by them.
Expr = Union[Name, App, SurfaceQuant, SurfaceCount,
             BoolLit, IntLit, NoneLit, Not, BinOp, Ite,
             Quant, Count, Var, Sym, ParamApp, EnumLit, Some]


def children(e: Expr) -> tuple[Expr, ...]:
    """The direct subexpressions of e (the one traversal every analysis builds on)."""
    match e:
        case Sym(_, args) | App(_, args) | ParamApp(_, args):
            return args
        case Not(a) | Some(a):
            return (a,)
        case BinOp(_, l, r):
            return (l, r)
        case Ite(c, t, f):
            return (c, t, f)
        case Quant(_, _, body) | Count(_, body) | SurfaceQuant(_, _, body) | SurfaceCount(_, body):
            return (body,)
    return ()


# ---------------------------------------------------------------- statements


@node
class Requires:
    cond: Expr
    loc: Loc | None = _loc()


# Updates as written. A target is a name or an application: what it names is the checker's to find.
Target = Union[Name, App]


@node
class SurfaceAssign:
    target: Target
    value: Expr
    loc: Loc | None = _loc()


@node
class SurfaceInsert:
    target: Target
    loc: Loc | None = _loc()


@node
class SurfaceRemove:
    target: Target
    loc: Loc | None = _loc()


@node
class SurfaceForallUpdate:
    binders: tuple[Binder, ...]
    body: SurfaceUpdate
    loc: Loc | None = _loc()


@node
class SurfaceIfUpdate:
    cond: Expr
    then: tuple[SurfaceUpdate, ...]
    else_: tuple[SurfaceUpdate, ...]
    loc: Loc | None = _loc()


SurfaceUpdate = Union[SurfaceAssign, SurfaceInsert, SurfaceRemove, SurfaceForallUpdate, SurfaceIfUpdate]
SurfaceStmt = Union[Requires, SurfaceUpdate]


# Resolved updates (only the checker makes these): each target a mutable symbol's `Sym`.


@node
class Assign:
    target: Sym
    value: Expr
    loc: Loc | None = _loc()


@node
class Insert:
    target: Sym
    loc: Loc | None = _loc()


@node
class Remove:
    target: Sym
    loc: Loc | None = _loc()


@node
class ForallUpdate:
    binders: tuple[Var, ...]
    body: Update
    loc: Loc | None = _loc()


@node
class IfUpdate:
    cond: Expr
    then: tuple[Update, ...]
    else_: tuple[Update, ...]
    loc: Loc | None = _loc()


Leaf = Union[Assign, Insert, Remove]  # the updates that write: each names one point of one symbol
Update = Union[Leaf, ForallUpdate, IfUpdate]
Stmt = Union[Requires, Update]
Cond = tuple[Expr, bool]  # an if-condition around an update, and the branch it is on


def syms(e: Expr) -> Iterator[Sym]:
    """Every resolved symbol application in e, outermost first."""
    if isinstance(e, Sym):
        yield e
    for c in children(e):
        yield from syms(c)


def update_leaves(updates: tuple[Update, ...], conds: tuple[Cond, ...] = (), bound: tuple[Var, ...] = ()) \
        -> Iterator[tuple[Leaf, tuple[Cond, ...], tuple[Var, ...]]]:
    """Each assignment, insert or remove in program order, with the if-conditions around it (each
    with its polarity) and the variables of the quantified updates around it."""
    for u in updates:
        match u:
            case ForallUpdate(vs, body):
                yield from update_leaves((body,), conds, bound + vs)
            case IfUpdate(c, then, else_):
                yield from update_leaves(then, conds + ((c, True),), bound)
                yield from update_leaves(else_, conds + ((c, False),), bound)
            case _:
                yield u, conds, bound


# ---------------------------------------------------------------- declarations


@node
class SortDecl:
    name: str
    bound: int | None = None
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()


@node
class EnumDecl:
    name: str
    values: tuple[str, ...]
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()


@node
class RelationDecl:
    name: str
    arg_types: tuple[TypeRef, ...]
    mutable: bool = True
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()
    ghost: bool = False  # state no implementation shows (mutable)


@node
class FunctionDecl:
    name: str
    arg_types: tuple[TypeRef, ...]
    result: TypeRef
    mutable: bool = True
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()
    ghost: bool = False  # state no implementation shows (mutable)


@node
class ConstDecl:
    name: str
    type: TypeRef
    mutable: bool = True
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()
    ghost: bool = False  # state no implementation shows (mutable)


@node
class DefineDecl:
    name: str
    params: tuple[Binder, ...]
    result: TypeRef
    body: Expr
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()


@node
class AxiomDecl:
    name: str
    formula: Expr
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()


@node
class InvariantDecl:
    name: str
    formula: Expr
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()


@node
class InitDecl:
    body: tuple[SurfaceStmt, ...]
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()


@node
class ActionDecl:
    name: str
    params: tuple[Binder, ...]
    body: tuple[SurfaceStmt, ...]
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()


@node
class ShapeStep:
    """One step of a witness's shape: an action, or any action (`action` None); `star`: zero or more."""

    action: str | None
    star: bool = False
    loc: Loc | None = _loc()

    def __str__(self) -> str:
        return (self.action or "any") + ("*" if self.star else "")


@node
class WitnessDecl:
    """`witness NAME: reach SHAPE such that FORMULA`: a run from init that follows the shape and ends
    where the formula holds; `required`: not finding one fails the run."""

    name: str
    shape: tuple[ShapeStep, ...]
    formula: Expr | None = None
    required: bool = False
    doc: tuple[str, ...] = ()
    loc: Loc | None = _loc()


Decl = Union[
    SortDecl,
    EnumDecl,
    RelationDecl,
    FunctionDecl,
    ConstDecl,
    DefineDecl,
    AxiomDecl,
    InvariantDecl,
    InitDecl,
    ActionDecl,
    WitnessDecl,
]


@node
class SpecFile:
    decls: tuple[Decl, ...]
    file: str = field(default="<spec>", compare=False)
    source: str = field(default="", compare=False, repr=False)
