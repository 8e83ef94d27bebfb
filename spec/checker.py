"""Type checker: surface AST -> `CheckedSpec`, the resolved, typed form both semantics consume.

What it resolves: every bare name to a variable, a symbol, an enum value; every definition call
inlined (capture-avoiding); every place an S stands where an S? is expected wrapped in `Some`; every
`none` given its type. What an action modifies is derived here from its updates, never declared.

What it rejects (each with file:line:col): unknown names, wrong arity, sort mismatches, assignment to
immutable symbols, unbound and shadowed variables, duplicate declarations, quantified updates whose
bound variables do not pick out the updated point, axioms over mutable state, and an init that leaves
a mutable symbol unassigned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ast as A
from .errors import Diagnostic, SpecError, source_lines

BOOL = A.TypeRef(A.BOOL)
INT = A.TypeRef(A.INT)
_BUILTIN_TYPES = {A.BOOL, A.INT}
_RESERVED = {"bool", "int", "none", "true", "false", "count", "forall", "exists", "not", "and", "or",
             "implies", "iff", "if", "then", "else", "witness", "required", "reach", "such", "that", "any"}


@dataclass(frozen=True)
class Symbol:
    """A relation (result bool), function or constant (no arguments)."""

    name: str
    kind: str  # "relation" | "function" | "const"
    args: tuple[A.TypeRef, ...]
    result: A.TypeRef
    mutable: bool
    doc: tuple[str, ...] = ()
    loc: A.Loc | None = None
    ghost: bool = False  # no implementation shows it: the harness tracks it from the spec's actions


@dataclass(frozen=True)
class Action:
    name: str
    params: tuple[A.Var, ...]
    guards: tuple[A.Expr, ...]
    updates: tuple[A.Update, ...]
    modifies: frozenset[str]
    doc: tuple[str, ...] = ()
    loc: A.Loc | None = None


@dataclass(frozen=True)
class Invariant:
    name: str
    formula: A.Expr
    doc: tuple[str, ...] = ()
    loc: A.Loc | None = None


@dataclass(frozen=True)
class Witness:
    """A reachability question: a run from init whose actions follow `shape` (each step an action
    name or None for any action, and whether it repeats) ending where `formula` holds."""

    name: str
    shape: tuple[tuple[str | None, bool], ...]
    formula: A.Expr
    required: bool = False
    doc: tuple[str, ...] = ()
    loc: A.Loc | None = None

    def shape_text(self) -> str:
        return "; ".join((a or "any") + ("*" if star else "") for a, star in self.shape)


@dataclass
class CheckedSpec:
    file: str
    source: str
    sorts: dict[str, int | None] = field(default_factory=dict)  # sort -> declared bound
    enums: dict[str, tuple[str, ...]] = field(default_factory=dict)
    enum_of: dict[str, str] = field(default_factory=dict)  # enum value -> enum
    symbols: dict[str, Symbol] = field(default_factory=dict)
    axioms: list[Invariant] = field(default_factory=list)
    invariants: list[Invariant] = field(default_factory=list)
    init: Action | None = None
    actions: dict[str, Action] = field(default_factory=dict)
    defines: dict[str, A.DefineDecl] = field(default_factory=dict)
    witnesses: list[Witness] = field(default_factory=list)

    @property
    def mutable_symbols(self) -> list[Symbol]:
        return [s for s in self.symbols.values() if s.mutable]

    @property
    def ghost_symbols(self) -> tuple[str, ...]:
        """State no implementation shows (declared `ghost`): tracked from the spec's own actions."""
        return tuple(s.name for s in self.symbols.values() if s.ghost)

    def ghostly_invariants(self) -> frozenset[str]:
        """The invariants that read ghost state (directly or through a define): they can be judged
        only on a state the spec's own actions led to, never on an implementation's state alone."""
        ghost = set(self.ghost_symbols)
        return frozenset(i.name for i in self.invariants if self.reads(i.formula) & ghost)

    def reads(self, e: A.Expr, seen: frozenset[str] = frozenset()) -> set[str]:
        """The symbols e reads, directly or through the defines it names."""
        names = _symbols_in(e)
        for d in names & set(self.defines) - seen:
            names |= self.reads(self.defines[d].body, seen | {d})
        return names

    def frames(self, action: str, invariant: str) -> bool:
        """Does the action leave every symbol the invariant reads as it was? Then the invariant
        after it is the invariant before it: preserved, whatever the action's guards."""
        inv = next(i for i in self.invariants if i.name == invariant)
        return not self.actions[action].modifies & self.reads(inv.formula)

    def summary(self) -> dict[str, list[str]]:
        return {
            "sorts": list(self.sorts),
            "enums": list(self.enums),
            "relations": [s.name for s in self.symbols.values() if s.kind == "relation"],
            "functions": [s.name for s in self.symbols.values() if s.kind == "function"],
            "constants": [s.name for s in self.symbols.values() if s.kind == "const"],
            "definitions": list(self.defines),
            "axioms": [a.name for a in self.axioms],
            "actions": list(self.actions),
            "invariants": [i.name for i in self.invariants],
            "witnesses": [w.name for w in self.witnesses],
        }

    def init_free_symbols(self) -> list[str]:
        """Mutable symbols init leaves (partly) unassigned: their initial values are whatever its
        constraints (`requires`) allow. Empty: init is deterministic given the immutable symbols."""
        if self.init is None:
            return []
        total = set().union(*(_totally_assigned(u) for u in self.init.updates)) if self.init.updates else set()
        return [s.name for s in self.mutable_symbols if s.name not in total]


class _Fail(Exception):
    """Aborts checking of the current declaration or statement; the diagnostic is already recorded."""


class _Checker:
    def __init__(self, spec: A.SpecFile) -> None:
        self.spec = spec
        self.out = CheckedSpec(spec.file, spec.source)
        self.diags: list[Diagnostic] = []
        self.globals: dict[str, A.Loc | None] = {}
        self.define_bodies: dict[str, A.Expr] = {}
        self.pending_witnesses: list[A.WitnessDecl] = []

    # ---------------------------------------------------------------- reporting
    def error(self, loc: A.Loc | None, message: str, expected: str = "") -> _Fail:
        self.diags.append(Diagnostic(loc or A.Loc(self.spec.file, 0, 0), message, expected))
        return _Fail()

    def _suggest(self, name: str, candidates: list[str]) -> str:
        import difflib  # only a spec with errors needs it: not on every command's start

        close = difflib.get_close_matches(name, candidates, n=1)
        return f"; did you mean {close[0]!r}?" if close else ""

    # ---------------------------------------------------------------- declarations
    def declare(self, name: str, loc: A.Loc | None, what: str) -> None:
        if name in _RESERVED:
            raise self.error(loc, f"{name!r} is a reserved word and cannot name a {what}", "another name")
        if name in self.globals:
            prev = self.globals[name]
            raise self.error(loc, f"duplicate declaration of {name!r} (first declared at {prev})", "a new name")
        self.globals[name] = loc

    def check_type(self, t: A.TypeRef, *, allow_optional: bool, allow_int: bool) -> A.TypeRef:
        if t.name not in self.out.sorts and t.name not in self.out.enums and t.name not in _BUILTIN_TYPES:
            hint = self._suggest(t.name, [*self.out.sorts, *self.out.enums, *_BUILTIN_TYPES])
            raise self.error(t.loc, f"unknown type {t.name!r}{hint}", "a declared sort or enum, bool or int")
        if t.name == A.INT and not allow_int:
            raise self.error(t.loc, "int is not allowed here", "a sort, an enum or bool (finite types)")
        if t.optional and not allow_optional:
            raise self.error(t.loc, f"optional type {t} is not allowed here", f"{t.name} without '?'")
        if t.optional and t.name in _BUILTIN_TYPES:
            raise self.error(t.loc, f"{t} cannot be optional", "a sort or enum before '?'")
        return t

    def run(self) -> CheckedSpec:
        for d in self.spec.decls:
            try:
                self.decl(d)
            except _Fail:
                pass
        for w in self.pending_witnesses:
            try:
                self.out.witnesses.append(self.witness(w))
            except _Fail:
                pass
        if self.out.mutable_symbols and not any(isinstance(d, A.InitDecl) for d in self.spec.decls):
            lines = source_lines(self.spec.source.removesuffix("\n"))
            self.error(A.Loc(self.spec.file, len(lines), 1), "the spec has mutable state but no init block",
                       "init { ... } assigning every mutable symbol")
        if self.diags:
            self.diags.sort(key=lambda d: (d.loc.line, d.loc.col))
            raise SpecError(self.diags, self.spec.source)
        if self.out.init is None:  # no state: the one initial state is the empty one (every command agrees)
            self.out.init = Action("init", (), (), (), frozenset())
        return self.out

    def decl(self, d: A.Decl) -> None:
        match d:
            case A.SortDecl(name, bound):
                self.declare(name, d.loc, "sort")
                if bound is not None and bound < 1:
                    raise self.error(d.loc, f"sort {name} has bound {bound}", "a bound of at least 1")
                self.out.sorts[name] = bound
            case A.EnumDecl(name, values):
                self.declare(name, d.loc, "enum")
                for v in values:
                    self.declare(v, d.loc, "enum value")
                    self.out.enum_of[v] = name
                self.out.enums[name] = values
            case A.RelationDecl(name, args, mutable):
                self.declare(name, d.loc, "relation")
                targs = tuple(self.check_type(t, allow_optional=False, allow_int=False) for t in args)
                self.out.symbols[name] = Symbol(name, "relation", targs, BOOL, mutable, d.doc, d.loc, d.ghost)
            case A.FunctionDecl(name, args, result, mutable):
                self.declare(name, d.loc, "function")
                targs = tuple(self.check_type(t, allow_optional=False, allow_int=False) for t in args)
                res = self.check_type(result, allow_optional=True, allow_int=True)
                self.out.symbols[name] = Symbol(name, "function", targs, res, mutable, d.doc, d.loc, d.ghost)
            case A.ConstDecl(name, type_, mutable):
                self.declare(name, d.loc, "constant")
                res = self.check_type(type_, allow_optional=True, allow_int=True)
                self.out.symbols[name] = Symbol(name, "const", (), res, mutable, d.doc, d.loc, d.ghost)
            case A.DefineDecl(name, params, result, body):
                self.declare(name, d.loc, "definition")
                env = self.binders({}, params)
                res = self.check_type(result, allow_optional=True, allow_int=True)
                inlined = self.expect(body, env, res)
                if _size(inlined, MAX_DEFINE_NODES) > MAX_DEFINE_NODES:
                    # Definitions are inlined where they are used: one that uses another twice doubles
                    # in size, and a chain of them grows exponentially. Refused here, where it is cheap.
                    raise self.error(d.loc, f"definition {name!r} expands to more than {MAX_DEFINE_NODES:,} "
                                            "formula nodes once the definitions it uses are inlined",
                                     "definitions that use other definitions several times each: "
                                     "share a sub-formula through a state symbol or restructure")
                self.define_bodies[name] = inlined
                self.out.defines[name] = d
            case A.AxiomDecl(name, formula):
                self.declare(name, d.loc, "axiom")
                f = self.expect(formula, {}, BOOL)
                state = sorted(_symbols_in(f) & {s.name for s in self.out.mutable_symbols})
                if state:
                    raise self.error(d.loc, f"axiom {name} mentions mutable state ({', '.join(state)})",
                                     "a formula over immutable symbols only (state properties are invariants)")
                self.out.axioms.append(Invariant(name, f, d.doc, d.loc))
            case A.InvariantDecl(name, formula):
                self.declare(name, d.loc, "invariant")
                self.out.invariants.append(Invariant(name, self.expect(formula, {}, BOOL), d.doc, d.loc))
            case A.InitDecl(body):
                if self.out.init is not None:
                    raise self.error(d.loc, "a second init block", "one init block per spec")
                self.out.init = self.init(d)
            case A.ActionDecl(name, params, body):
                self.declare(name, d.loc, "action")
                self.out.actions[name] = self.action(d)
            case A.WitnessDecl(name):
                self.declare(name, d.loc, "witness")
                self.pending_witnesses.append(d)  # checked last: a witness may name any action

    def binders(self, env: dict[str, A.Var], bs: tuple[A.Binder, ...], choice: bool = False) -> dict[str, A.Var]:
        """Bind `bs` over env; `choice`: an action's parameters, which may be of a function type."""
        env = dict(env)
        for b in bs:
            if b.name in env:
                raise self.error(b.loc, f"variable {b.name!r} shadows a variable already bound here", "a fresh name")
            if b.name in self.globals:
                raise self.error(b.loc, f"variable {b.name!r} shadows the declaration at {self.globals[b.name]}",
                                 "a name not declared globally")
            if b.name in _RESERVED:
                raise self.error(b.loc, f"{b.name!r} is a reserved word", "a variable name")
            if b.type.args and not choice:
                raise self.error(b.type.loc, f"a variable of function type {b.type} is only allowed as an action's parameter",
                                 "a sort, an enum or bool")
            if b.type.args:  # a choice parameter: finite arguments, a result that may be optional
                for t in b.type.args:
                    self.check_type(t, allow_optional=False, allow_int=False)
                self.check_type(b.type.result, allow_optional=True, allow_int=False)
                env[b.name] = A.Var(b.name, b.type, b.loc)
                continue
            t = self.check_type(b.type, allow_optional=False, allow_int=False)
            env[b.name] = A.Var(b.name, t, b.loc)
        return env

    # ---------------------------------------------------------------- init and actions
    def init(self, d: A.InitDecl) -> Action:
        updates: list[A.Update] = []
        constraints: list[A.Expr] = []
        for u in d.body:
            try:
                if isinstance(u, A.Requires):  # a constraint on the initial state: it reads that state
                    constraints.append(self.expect(u.cond, {}, BOOL))
                    continue
                r = self.update(u, {})
                state = sorted(_symbols_in_update_rhs(r) & {s.name for s in self.out.mutable_symbols})
                if state:
                    raise self.error(u.loc, f"init reads mutable state ({', '.join(state)}), which has no value yet",
                                     "values from constants, variables and immutable symbols "
                                     "(a requires in init may read the initial state)")
                updates.append(r)
            except _Fail:
                pass
        total = set().union(*(_totally_assigned(u) for u in updates)) if updates else set()
        constrained = set().union(*(_symbols_in(c) for c in constraints)) if constraints else set()
        for s in self.out.mutable_symbols:
            if s.name not in total and s.name not in constrained:
                quant = ", ".join(f"x{i}: {t}" for i, t in enumerate(s.args))
                how = f"forall {quant}. {s.name}(...) := ..." if s.args else f"{s.name} := ..."
                self.error(d.loc, f"init does not assign every value of mutable {s.kind} {s.name!r}",
                           how + f", or a requires that constrains {s.name}")
        modifies = frozenset(n for u in updates for n in _targets(u))
        return Action("init", (), tuple(constraints), tuple(updates), modifies, d.doc, d.loc)

    def witness(self, d: A.WitnessDecl) -> Witness:
        shape: list[tuple[str | None, bool]] = []
        for step in d.shape:
            if step.action is not None and step.action not in self.out.actions:
                hint = self._suggest(step.action, list(self.out.actions))
                raise self.error(step.loc, f"unknown action {step.action!r} in the shape of witness {d.name}{hint}",
                                 "a declared action, or any")
            shape.append((step.action, step.star))
        formula = self.expect(d.formula, {}, BOOL) if d.formula is not None else A.BoolLit(True, d.loc)
        return Witness(d.name, tuple(shape), formula, d.required, d.doc, d.loc)

    def action(self, d: A.ActionDecl) -> Action:
        env = self.binders({}, d.params, choice=True)
        guards: list[A.Expr] = []
        updates: list[A.Update] = []
        for s in d.body:
            try:
                if isinstance(s, A.Requires):
                    guards.append(self.expect(s.cond, env, BOOL))
                else:
                    updates.append(self.update(s, env))
            except _Fail:
                pass
        modifies = frozenset(n for u in updates for n in _targets(u))
        params = tuple(env[b.name] for b in d.params)
        return Action(d.name, params, tuple(guards), tuple(updates), modifies, d.doc, d.loc)

    def update(self, u: A.SurfaceUpdate, env: dict[str, A.Var]) -> A.Update:
        match u:
            case A.SurfaceAssign(target, value):
                sym, args = self.target(target, env, relation_only=False)
                return A.Assign(A.Sym(sym.name, args, target.loc), self.expect(value, env, sym.result), u.loc)
            case A.SurfaceInsert(target):
                sym, args = self.target(target, env, relation_only=True)
                return A.Insert(A.Sym(sym.name, args, target.loc), u.loc)
            case A.SurfaceRemove(target):
                sym, args = self.target(target, env, relation_only=True)
                return A.Remove(A.Sym(sym.name, args, target.loc), u.loc)
            case A.SurfaceForallUpdate(binders, body):
                inner = self.binders(env, binders)
                r = self.update(body, inner)
                for b in binders:
                    if not _picks_point(r, b.name):
                        raise self.error(b.loc, f"bound variable {b.name!r} does not appear as an argument of every "
                                                "updated symbol, so the update would write one point many times",
                                         f"{b.name} as a direct argument of the updated relation or function")
                return A.ForallUpdate(tuple(inner[b.name] for b in binders), r, u.loc)
            case A.SurfaceIfUpdate(cond, then, else_):
                c = self.expect(cond, env, BOOL)
                return A.IfUpdate(c, tuple(self.update(x, env) for x in then),
                                  tuple(self.update(x, env) for x in else_), u.loc)
        raise TypeError(u)

    def target(self, t: A.Target, env: dict[str, A.Var], *, relation_only: bool) -> tuple[Symbol, tuple[A.Expr, ...]]:
        name = t.name
        args = t.args if isinstance(t, A.App) else ()
        if name in env:
            raise self.error(t.loc, f"cannot assign to variable {name!r}", "a mutable relation, function or constant")
        sym = self.out.symbols.get(name)
        if sym is None:
            hint = self._suggest(name, list(self.out.symbols))
            raise self.error(t.loc, f"unknown symbol {name!r}{hint}", "a mutable relation, function or constant")
        if not sym.mutable:
            raise self.error(t.loc, f"cannot assign to immutable {sym.kind} {name!r}", "a mutable symbol")
        if relation_only and sym.kind != "relation":
            raise self.error(t.loc, f"insert and remove apply to relations; {name!r} is a {sym.kind}",
                             f"{name}(...) := value")
        return sym, self.args(sym, args, env, t.loc)

    def args(self, sym: Symbol, args: tuple[A.Expr, ...], env: dict[str, A.Var], loc: A.Loc | None) -> tuple[A.Expr, ...]:
        if len(args) != len(sym.args):
            raise self.error(loc, f"{sym.kind} {sym.name!r} takes {len(sym.args)} argument(s), got {len(args)}",
                             f"{sym.name}({', '.join(map(str, sym.args))})")
        return tuple(self.expect(a, env, t) for a, t in zip(args, sym.args))

    # ---------------------------------------------------------------- expressions
    def expect(self, e: A.Expr, env: dict[str, A.Var], want: A.TypeRef) -> A.Expr:
        """Check e against an expected type; an S stands where an S? is expected via `Some`."""
        if isinstance(e, A.NoneLit):
            if not want.optional:
                raise self.error(e.loc, f"none is not a value of type {want}", f"a value of type {want}")
            return A.NoneLit(want, e.loc)
        r, t = self.infer(e, env)
        if _same(t, want):
            return r
        if want.optional and _same(t, A.TypeRef(want.name)):
            return A.Some(r, e.loc)
        if t.optional and _same(A.TypeRef(t.name), want):
            raise self.error(e.loc, f"this {t} may be none, but {want} is needed",
                             f"a value of type {want}: compare it first, e.g. exists x: {want}. ... = x and ...")
        raise self.error(e.loc, f"type mismatch: this is {_kind(t)}", _kind(want))

    def infer(self, e: A.Expr, env: dict[str, A.Var]) -> tuple[A.Expr, A.TypeRef]:
        match e:
            case A.Name(name):
                return self.name(name, env, e.loc)
            case A.App(name, args):
                return self.app(name, args, env, e.loc)
            case A.BoolLit():
                return e, BOOL
            case A.IntLit():
                return e, INT
            case A.NoneLit():
                raise self.error(e.loc, "cannot tell which optional type this none belongs to",
                                 "none compared with or assigned to a value of a known optional type")
            case A.Not(arg):
                return A.Not(self.expect(arg, env, BOOL), e.loc), BOOL
            case A.BinOp(op, left, right) if op in A.LOGIC_OPS:
                return A.BinOp(op, self.expect(left, env, BOOL), self.expect(right, env, BOOL), e.loc), BOOL
            case A.BinOp(op, left, right) if op in ("=", "!="):
                lhs, rhs = self.unify(left, right, env, e.loc)
                return A.BinOp(op, lhs, rhs, e.loc), BOOL
            case A.BinOp(op, left, right):
                res = INT if op in A.ARITH_OPS else BOOL
                return A.BinOp(op, self.expect(left, env, INT), self.expect(right, env, INT), e.loc), res
            case A.SurfaceQuant(kind, binders, body):
                inner = self.binders(env, binders)
                vs = tuple(inner[b.name] for b in binders)
                return A.Quant(kind, vs, self.expect(body, inner, BOOL), e.loc), BOOL
            case A.SurfaceCount(binders, body):
                inner = self.binders(env, binders)
                vs = tuple(inner[b.name] for b in binders)
                return A.Count(vs, self.expect(body, inner, BOOL), e.loc), INT
            case A.Ite(cond, then, else_):
                c = self.expect(cond, env, BOOL)
                t, f = self.unify(then, else_, env, e.loc)
                return A.Ite(c, t, f, e.loc), self.infer_resolved_type(t, f)
        raise TypeError(e)

    def infer_resolved_type(self, t: A.Expr, f: A.Expr) -> A.TypeRef:
        for x in (t, f):
            if isinstance(x, A.NoneLit) and x.type is not None:
                return x.type
        return self.type_of(t)

    def type_of(self, e: A.Expr) -> A.TypeRef:
        return type_of(self.out, e)

    def unify(self, left: A.Expr, right: A.Expr, env: dict[str, A.Var], loc: A.Loc | None) -> tuple[A.Expr, A.Expr]:
        """Two operands of one type, up to `none` and the S -> S? coercion."""
        if isinstance(left, A.NoneLit) and isinstance(right, A.NoneLit):
            raise self.error(loc, "none compared with none", "at least one side of a known optional type")
        if isinstance(left, A.NoneLit):
            r, t = self.infer(right, env)
            return self.expect(left, env, t), r
        l, t = self.infer(left, env)
        if isinstance(right, A.NoneLit):
            return l, self.expect(right, env, t)
        r, u = self.infer(right, env)
        if _same(t, u):
            return l, r
        if t.name == u.name:  # S against S?: lift the plain side
            return (A.Some(l, left.loc), r) if u.optional else (l, A.Some(r, right.loc))
        raise self.error(loc, f"type mismatch: left side is {_kind(t)}, right side is {_kind(u)}",
                         "both sides of the same type")

    def name(self, name: str, env: dict[str, A.Var], loc: A.Loc | None) -> tuple[A.Expr, A.TypeRef]:
        if name in env:
            v = env[name]
            if v.type.args:
                raise self.error(loc, f"parameter {name!r} has type {v.type}: it needs arguments",
                                 f"{name}({', '.join(map(str, v.type.args))})")
            return A.Var(v.name, v.type, loc), v.type
        if name in self.out.enum_of:
            enum = self.out.enum_of[name]
            return A.EnumLit(enum, name, loc), A.TypeRef(enum)
        if name in self.out.symbols or name in self.out.defines:
            return self.app(name, (), env, loc)
        candidates = [*env, *self.out.symbols, *self.out.enum_of, *self.out.defines]
        raise self.error(loc, f"unknown name {name!r}{self._suggest(name, candidates)}",
                         "a variable, constant, enum value or 0-ary symbol in scope")

    def app(self, name: str, args: tuple[A.Expr, ...], env: dict[str, A.Var], loc: A.Loc | None) -> tuple[A.Expr, A.TypeRef]:
        if name in self.out.symbols:
            sym = self.out.symbols[name]
            return A.Sym(name, self.args(sym, args, env, loc), loc), sym.result
        if name in self.out.defines:
            d = self.out.defines[name]
            fake = Symbol(name, "definition", tuple(b.type for b in d.params), d.result, False)
            actual = self.args(fake, args, env, loc)
            return substitute(self.define_bodies[name], {b.name: a for b, a in zip(d.params, actual)}), d.result
        if name in self.globals and name not in self.out.actions:
            raise _Fail()  # declared, but its own declaration failed: that error is already reported
        if name in env and env[name].type.args:  # a choice parameter applied
            t = env[name].type
            fake = Symbol(name, "parameter", t.args, t.result, False)
            return A.ParamApp(name, self.args(fake, args, env, loc), t, loc), t.result
        if name in env:
            raise self.error(loc, f"variable {name!r} is not a relation or function", f"{name} without arguments")
        hint = self._suggest(name, [*self.out.symbols, *self.out.defines])
        raise self.error(loc, f"unknown relation or function {name!r}{hint}", "a declared relation, function or definition")


# -------------------------------------------------------------------- helpers on resolved trees


def _same(a: A.TypeRef, b: A.TypeRef) -> bool:
    return a.name == b.name and a.optional == b.optional


def _kind(t: A.TypeRef) -> str:
    return {"bool": "a formula (bool)", "int": "an int"}.get(str(t), f"a value of type {t}")


def type_of(spec: CheckedSpec, e: A.Expr) -> A.TypeRef:
    """The type of a resolved expression."""
    match e:
        case A.Var(_, t):
            return t
        case A.Sym(name, _):
            return spec.symbols[name].result
        case A.ParamApp(_, _, t):
            return t.result
        case A.EnumLit(enum, _):
            return A.TypeRef(enum)
        case A.Some(arg):
            return A.TypeRef(type_of(spec, arg).name, True)
        case A.NoneLit(t):
            assert t is not None
            return t
        case A.IntLit() | A.Count():
            return INT
        case A.BinOp(op, _, _) if op in A.ARITH_OPS:
            return INT
        case A.Ite(_, t, f):
            return type_of(spec, f) if isinstance(t, A.NoneLit) and t.type is None else type_of(spec, t)
    return BOOL


def free_vars(e: A.Expr) -> set[str]:
    match e:
        case A.Var(name):
            return {name}
        case A.ParamApp(name, args):
            return {name}.union(*(free_vars(a) for a in args))
        case A.Quant(_, vs, body) | A.Count(vs, body):
            return free_vars(body) - {v.name for v in vs}
    return set().union(*(free_vars(c) for c in A.children(e))) if A.children(e) else set()


MAX_DEFINE_NODES = 200_000


def _size(e: A.Expr, limit: int) -> int:
    """Nodes in e, counting no further than just past limit."""
    n, todo = 0, [e]
    while todo and n <= limit:
        x = todo.pop()
        n += 1
        todo.extend(A.children(x))
    return n


def substitute(e: A.Expr, sub: dict[str, A.Expr]) -> A.Expr:
    """Replace free variables; bound variables that would capture a substituted one are renamed."""
    match e:
        case A.Var(name):
            return sub.get(name, e)
        case A.Sym(name, args):
            return A.Sym(name, tuple(substitute(a, sub) for a in args), e.loc)
        case A.ParamApp(name, args, t):  # (only scalars are ever substituted: the name stays)
            return A.ParamApp(name, tuple(substitute(a, sub) for a in args), t, e.loc)
        case A.Not(a):
            return A.Not(substitute(a, sub), e.loc)
        case A.Some(a):
            return A.Some(substitute(a, sub), e.loc)
        case A.BinOp(op, l, r):
            return A.BinOp(op, substitute(l, sub), substitute(r, sub), e.loc)
        case A.Ite(c, t, f):
            return A.Ite(substitute(c, sub), substitute(t, sub), substitute(f, sub), e.loc)
        case A.Quant(_, vs, body) | A.Count(vs, body):
            sub = {k: v for k, v in sub.items() if k not in {x.name for x in vs}}
            taken = set().union(*(free_vars(v) for v in sub.values())) if sub else set()
            new_vs = []
            for v in vs:
                if v.name in taken:
                    fresh = _fresh(v.name, taken | free_vars(body))
                    sub[v.name] = A.Var(fresh, v.type, v.loc)
                    v = A.Var(fresh, v.type, v.loc)
                new_vs.append(v)
            body = substitute(body, sub)
            if isinstance(e, A.Quant):
                return A.Quant(e.kind, tuple(new_vs), body, e.loc)
            return A.Count(tuple(new_vs), body, e.loc)
    return e


def _fresh(base: str, taken: set[str]) -> str:
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def _symbols_in(e: A.Expr) -> set[str]:
    return {s.name for s in A.syms(e)}


def _leaves(u: A.Update) -> list[A.Leaf]:
    return [leaf for leaf, _, _ in A.update_leaves((u,))]


def _targets(u: A.Update) -> set[str]:
    return {leaf.target.name for leaf in _leaves(u)}


def _symbols_in_update_rhs(u: A.Update) -> set[str]:
    match u:
        case A.Assign(target, value):
            return _symbols_in(value).union(*(_symbols_in(a) for a in target.args))
        case A.Insert(target) | A.Remove(target):
            return set().union(*(_symbols_in(a) for a in target.args))
        case A.ForallUpdate(_, body):
            return _symbols_in_update_rhs(body)
        case A.IfUpdate(cond, then, else_):
            return _symbols_in(cond).union(*(_symbols_in_update_rhs(x) for x in (*then, *else_)))
    return set()


def _picks_point(u: A.Update, var: str) -> bool:
    return all(any(isinstance(a, A.Var) and a.name == var for a in leaf.target.args)
               for leaf in _leaves(u))


def _totally_assigned(u: A.Update, bound: frozenset[str] = frozenset()) -> set[str]:
    """Symbols that u assigns at every point: unguarded, each argument a distinct enclosing variable."""
    match u:
        case A.ForallUpdate(vs, body):
            return _totally_assigned(body, bound | {v.name for v in vs})
        case A.Assign(target) | A.Insert(target) | A.Remove(target):
            args = target.args
            names = [a.name for a in args if isinstance(a, A.Var) and a.name in bound]
            if len(names) == len(args) and len(set(names)) == len(names):
                return {target.name}
    return set()


def check(spec: A.SpecFile) -> CheckedSpec:
    """Type-check a parsed spec, or raise SpecError listing every error found."""
    return _Checker(spec).run()
