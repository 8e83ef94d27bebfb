"""Checked spec -> Python functions over concrete states (the fast path of the interpreter).

Each expression becomes Python source over the state tuple `s`; each action becomes three functions:
`guard(s, *args)`, `apply(s, *args)` (a new state: updates write into copies of the modified
entries, every right-hand side reads the old `s`, later writes win), and `enabled(s)`, a generator of
the argument tuples whose guards hold. `enabled` nests one loop per parameter and tests each guard
conjunct at the outermost loop where its parameters are bound; a conjunct `f(...) = p` binds p
directly instead of looping over p's whole domain.

The slow, obviously-correct evaluator in `evaluate.py` is the reference these are tested against.

`shared=True` emits code that names the universe's sizes (`N_gfn`, a symbol's strides `S_gmap_0`)
instead of writing them in: such code is compiled once per spec and bound to each universe by its
namespace. The conformance harness meets hundreds of universes per campaign (a scope per test case),
and compiling the spec for each cost more than judging the test case.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import Action, CheckedSpec, free_vars

from .state import State, Universe


def _py(name: str) -> str:
    return f"v_{name}"


class _Emitter:
    def __init__(self, universe: Universe, shared: bool = False) -> None:
        self.u = universe
        self.shared = shared  # sizes by name (bound per universe), not written in

    def loops(self, vs: tuple[A.Var, ...]) -> str:
        return " ".join(f"for {_py(v.name)} in {self.domain(v.type)}" for v in vs)

    def quant_loops(self, vs: tuple[A.Var, ...], body: A.Expr, forall: bool) -> str:
        """The loops of a quantifier, with the one-point rule: a variable that a conjunct of the
        body (of a forall's premise) fixes as `term = x`, the term over outer variables only, takes
        the term's one value instead of its whole domain (every other value makes the body false,
        or the premise false): `exists m: mfn. p2m(v, g) = m and ...` reads one mfn, not all."""
        if forall:
            if not (isinstance(body, A.BinOp) and body.op == "implies"):
                return self.loops(vs)
            body = body.left
        names = {v.name for v in vs}
        fixed: list[str] = []
        rest = []
        cs = conjuncts(body)
        for v in vs:
            terms = [] if v.type.optional else [t for c in cs if (t := _term_of(c, v.name)) is not None]
            term = next((t for t in terms if not free_vars(t) & names), None)
            if term is None:
                rest.append(v)
            else:
                fixed.append(f"for {_py(v.name)} in ({self.expr(term)},) if {_py(v.name)} is not None")
        return " ".join(fixed + ([self.loops(tuple(rest))] if rest else []))

    def domain(self, t: A.TypeRef) -> str:
        if t.args:  # a choice parameter: every function, as the flat tuple of its values (row-major)
            vals = self.domain(A.TypeRef(t.name))
            n = "*".join(self.size(a) for a in t.args)
            return f"_product({'(None, *' + vals + ')' if t.optional else vals}, repeat={n})"
        return "(False, True)" if t.name == A.BOOL else f"range({self.size(t)})"

    def param_index(self, t: A.TypeRef, args: tuple[A.Expr, ...]) -> str:
        """The flat index of a choice parameter's point (row-major, as Universe.arg_points)."""
        code = ""
        for k, a in enumerate(args):
            code = self.expr(a) if k == 0 else f"({code})*{self.size(t.args[k])} + {self.expr(a)}"
        return code

    def index(self, name: str, args: tuple[A.Expr, ...]) -> str:
        lay = self.u.layout[name]
        parts = []
        for k, (a, st) in enumerate(zip(args, lay.strides)):
            code = self.expr(a)
            if self.shared and k < len(lay.strides) - 1:  # (row-major: the last stride is always 1)
                parts.append(f"{code}*S_{name}_{k}")
            else:
                parts.append(code if st == 1 else f"{code}*{st}")
        return " + ".join(parts) or "0"

    def expr(self, e: A.Expr) -> str:
        match e:
            case A.Var(name):
                return _py(name)
            case A.Sym(name, args):
                return f"s[{self.u.layout[name].index}][{self.index(name, args)}]"
            case A.ParamApp(name, args, fun):
                return f"{_py(name)}[{self.param_index(fun, args)}]"
            case A.EnumLit(enum, value):
                return str(self.u.spec.enums[enum].index(value))
            case A.Some(arg):
                return self.expr(arg)
            case A.NoneLit():
                return "None"
            case A.BoolLit(v):
                return "True" if v else "False"
            case A.IntLit(v):
                return str(v)
            case A.Not(arg):
                return f"(not {self.expr(arg)})"
            case A.BinOp("and", l, r):
                return f"({self.expr(l)} and {self.expr(r)})"
            case A.BinOp("or", l, r):
                return f"({self.expr(l)} or {self.expr(r)})"
            case A.BinOp("implies", l, r):
                return f"((not {self.expr(l)}) or {self.expr(r)})"
            case A.BinOp("iff", l, r):
                return f"(bool({self.expr(l)}) == bool({self.expr(r)}))"
            case A.BinOp("=", l, r):
                return f"({self.expr(l)} == {self.expr(r)})"
            case A.BinOp(op, l, r):
                return f"({self.expr(l)} {op} {self.expr(r)})"
            case A.Quant("forall", vs, body):
                return f"all({self.expr(body)} {self.quant_loops(vs, body, True)})"
            case A.Quant("exists", vs, body):
                return f"any({self.expr(body)} {self.quant_loops(vs, body, False)})"
            case A.Count(vs, body):
                return f"sum(1 {self.loops(vs)} if {self.expr(body)})"
            case A.Ite(c, t, f):
                return f"({self.expr(t)} if {self.expr(c)} else {self.expr(f)})"
        raise TypeError(f"cannot compile {e!r}")

    def write(self, target: A.Sym, value: str, indent: str, out: list[str]) -> None:
        """One point's new value, copied on write: a symbol's entry is copied the first time one of
        its points really changes, so an update that leaves the state as it was copies nothing and
        an unchanged entry stays the same object (which the incremental invariant check and the
        harness's comparisons test first)."""
        k = self.u.layout[target.name].index
        out.append(f"{indent}_i = {self.index(target.name, target.args)}; _x = {value}")
        out.append(f"{indent}if (s[{k}] if n{k} is None else n{k})[_i] != _x:")
        out.append(f"{indent}    if n{k} is None: n{k} = list(s[{k}])")
        out.append(f"{indent}    n{k}[_i] = _x")

    def sliced(self, vs: tuple[A.Var, ...], body: A.Update, indent: str, out: list[str]) -> bool:
        """`forall vs. f(..) := value` with the value free of vs and one of vs a plain argument of
        f: that variable's points lie at one stride, and are compared and written as one slice
        (in C) instead of point by point. False (nothing emitted) when the update is not so."""
        names = {v.name for v in vs}
        match body:
            case A.Assign(target, value):
                if free_vars(value) & names:
                    return False
                code = self.expr(value)
            case A.Insert(target) | A.Remove(target):
                code = "True" if isinstance(body, A.Insert) else "False"
            case _:
                return False
        plain = [(p, a) for p, a in enumerate(target.args) if isinstance(a, A.Var) and a.name in names
                 and sum(free_vars(b) >= {a.name} for b in target.args) == 1]
        if not plain:
            return False
        # the slice runs over the largest such domain; the other variables stay loops
        p, w = max(plain, key=lambda pa: self.u.domain_size(pa[1].type) if pa[1].type.name != A.BOOL else 2)
        wv = next(v for v in vs if v.name == w.name)
        for v in vs:
            if v is not wv:
                out.append(f"{indent}for {_py(v.name)} in {self.domain(v.type)}:")
                indent += "    "
        k = self.u.layout[target.name].index
        zero = tuple(A.IntLit(0) if q == p else a for q, a in enumerate(target.args))  # the slice's first point
        n = self.size(wv.type)
        step = "1" if p == len(target.args) - 1 else (
            f"S_{target.name}_{p}" if self.shared else str(self.u.layout[target.name].strides[p]))
        out.append(f"{indent}_i = {self.index(target.name, zero)}; _x = {code}; _e = _i + ({n} - 1)*{step} + 1")
        out.append(f"{indent}if (s[{k}] if n{k} is None else n{k})[_i:_e:{step}].count(_x) != {n}:")
        out.append(f"{indent}    if n{k} is None: n{k} = list(s[{k}])")
        out.append(f"{indent}    n{k}[_i:_e:{step}] = (_x,) * {n}")
        return True

    def size(self, t: A.TypeRef) -> str:
        """The size of a type's domain, as code."""
        if t.name == A.BOOL:
            return "2"
        if self.shared and t.name in self.u.sizes:
            return f"N_{t.name}"
        return str(self.u.domain_size(t))

    def update(self, u: A.Update, indent: str, out: list[str]) -> None:
        match u:
            case A.Assign(target, value):
                self.write(target, self.expr(value), indent, out)
            case A.Insert(target) | A.Remove(target):
                self.write(target, "True" if isinstance(u, A.Insert) else "False", indent, out)
            case A.ForallUpdate(vs, body) if self.sliced(vs, body, indent, out):
                pass  # (sliced() emitted it: one slice for one of its variables)
            case A.ForallUpdate(vs, A.IfUpdate(cond, then, ())) if _hoistable(vs, cond, then):
                # `forall vs. if cond {..}` with cond over some of vs: those loop first and cond is
                # tested there, the rest loop (or slice) inside it, once per update of the branch
                # (guest_store_upper: 48 of 384 rmap points for one gva, not every point tested)
                outer = tuple(v for v in vs if v.name in free_vars(cond))
                rest = tuple(v for v in vs if v not in outer)
                for v in outer:
                    out.append(f"{indent}for {_py(v.name)} in {self.domain(v.type)}:")
                    indent += "    "
                out.append(f"{indent}if {self.expr(cond)}:")
                for x in then:
                    self.update(A.ForallUpdate(rest, x) if rest else x, indent + "    ", out)
            case A.ForallUpdate(vs, body):
                for v in vs:
                    out.append(f"{indent}for {_py(v.name)} in {self.domain(v.type)}:")
                    indent += "    "
                self.update(body, indent, out)
            case A.IfUpdate(cond, then, else_):
                out.append(f"{indent}if {self.expr(cond)}:")
                for x in then:
                    self.update(x, indent + "    ", out)
                if not then:
                    out.append(f"{indent}    pass")
                if else_:
                    out.append(f"{indent}else:")
                    for x in else_:
                        self.update(x, indent + "    ", out)


def _writes(u: A.Update) -> list[A.Sym]:
    """The targets an update writes, in nested updates too."""
    match u:
        case A.Assign(target, _) | A.Insert(target) | A.Remove(target):
            return [target]
        case A.ForallUpdate(_, body):
            return _writes(body)
        case A.IfUpdate(_, then, else_):
            return [t for x in then + else_ for t in _writes(x)]
    return []


def _hoistable(vs: tuple[A.Var, ...], cond: A.Expr, then: tuple[A.Update, ...]) -> bool:
    """Whether `forall vs. if cond {then}` may loop over cond's variables first and over the rest
    per update of `then`: cond leaves some of vs free (else nothing is gained), and every point the
    branch writes is one iteration's own (each of vs a plain argument of every target; one target
    per symbol), so the order of the iterations, and of the updates across them, changes no value
    (every value is read from the state before the action)."""
    names = {v.name for v in vs}
    if not names - free_vars(cond) or not then:
        return False
    targets = [t for x in then for t in _writes(x)]
    own = all(names <= {a.name for a in t.args if isinstance(a, A.Var)} for t in targets)
    return own and len({t.name for t in targets}) == len(targets)


def conjuncts(e: A.Expr) -> list[A.Expr]:
    if isinstance(e, A.BinOp) and e.op == "and":
        return conjuncts(e.left) + conjuncts(e.right)
    return [e]


def _term_of(c: A.Expr, p: str) -> A.Expr | None:
    """If conjunct c reads `term = p` (either way round), the term."""
    if not (isinstance(c, A.BinOp) and c.op == "="):
        return None
    for this, other in ((c.left, c.right), (c.right, c.left)):
        inner = this.arg if isinstance(this, A.Some) else this
        if isinstance(inner, A.Var) and inner.name == p:
            return other
    return None


def _binding(c: A.Expr, p: str, bound: set[str]) -> A.Expr | None:
    """If conjunct c reads `term = p` with term over bound params only, the term that fixes p."""
    term = _term_of(c, p)
    return term if term is not None and free_vars(term) <= bound else None


@dataclass
class CompiledAction:
    action: Action
    guard: Callable[..., bool]
    apply: Callable[..., State]
    enabled: Callable[[State], Iterator[tuple[Any, ...]]]
    source: str


# Code compiled in shared mode, per spec (the most recent few): (spec, {key: (code, source, node)}),
# keyed by the node's identity (hashing a formula's tree costs more than binding its code). The spec
# and the nodes are held so that their ids are not reused while their code is cached.
_SHARED: OrderedDict[int, tuple[CheckedSpec, dict[Any, tuple[Any, str, Any]]]] = OrderedDict()
_SPECS_KEPT = 8


def _bindings(u: Universe) -> dict[str, int]:
    """The names shared code reads its universe's sizes by."""
    b = getattr(u, "_shared_bindings", None)
    if b is None:
        b = {f"N_{sort}": n for sort, n in u.sizes.items()}
        for name, lay in u.layout.items():
            b.update((f"S_{name}_{k}", st) for k, st in enumerate(lay.strides))
        u._shared_bindings = b  # type: ignore[attr-defined]  # a cache the universe does not declare
    return b


def _namespace(u: Universe, node: Any, key: Any, shared: bool, filename: str,
               emit: Callable[[_Emitter], str]) -> tuple[dict[str, Any], str]:
    """The namespace the source `emit` writes defines its functions in; in shared mode its code is
    compiled once per spec, AST `node` (by identity) and `key`, and bound to `u` by the namespace."""
    if not shared:
        source = emit(_Emitter(u))
        ns: dict[str, Any] = {}
        exec(compile(source, filename, "exec"), ns)
        return ns, source
    entry = _SHARED.get(id(u.spec))
    if entry is None or entry[0] is not u.spec:
        entry = _SHARED[id(u.spec)] = (u.spec, {})
        if len(_SHARED) > _SPECS_KEPT:
            _SHARED.popitem(last=False)
    _SHARED.move_to_end(id(u.spec))
    codes, key = entry[1], (id(node), key)
    if key not in codes:
        source = emit(_Emitter(u, shared=True))
        codes[key] = (compile(source, filename, "exec"), source, node)
    code, source, _ = codes[key]
    # One namespace per universe for all its functions: they read only the sizes from it (the
    # names each exec defines are taken from it at once, before the next exec rebinds them).
    ns = _bindings(u)
    exec(code, ns)
    return ns, source


def compile_action(u: Universe, action: Action, shared: bool = False) -> CompiledAction:
    ns, source = _namespace(u, action, "action", shared, f"<action {action.name}>",
                            lambda em: _action_source(em, action))
    return CompiledAction(action, ns["guard"], ns["apply"], ns["enabled"], source)


def _action_source(em: _Emitter, action: Action) -> str:
    u = em.u
    params = [_py(p.name) for p in action.params]
    sig = ", ".join(["s", *params])
    lines = ["from itertools import product as _product"] if any(p.type.args for p in action.params) else []
    lines.append(f"def guard({sig}):")
    lines.append(f"    return {' and '.join(em.expr(g) for g in action.guards) or 'True'}")

    # apply: copy a modified entry when a point of it first changes (Emitter.write), rebuild the
    # state tuple
    modified = sorted(u.layout[n].index for n in action.modifies)
    lines.append(f"def apply({sig}):")
    for k in modified:
        lines.append(f"    n{k} = None")
    body: list[str] = []
    for upd in action.updates:
        em.update(upd, "    ", body)
    lines += body
    entries = ", ".join(f"(s[{k}] if n{k} is None else tuple(n{k}))" if k in modified else f"s[{k}]"
                        for k in range(len(u.layout)))
    lines.append(f"    return ({entries},)" if entries else "    return ()")  # a spec with no state

    lines += _enabled_source(em, action, "def enabled(s):", lambda k, p: em.domain(p.type))
    return "\n".join(lines) + "\n"


def _enabled_source(em: _Emitter, action: Action, header: str, domain: Callable[[int, Any], str]) -> list[str]:
    """`enabled`: nested loops over each parameter's `domain` (source of an iterable), with early
    guard checks and direct bindings."""
    params = [_py(p.name) for p in action.params]
    return _nested_source(em, action.params, [c for g in action.guards for c in conjuncts(g)], header, domain,
                          f"yield ({''.join(x + ', ' for x in params)})", "return", set())


def _nested_source(em: _Emitter, params: Sequence[Any], parts: list[A.Expr], header: str,
                   domain: Callable[[int, Any], str], final: str, stop: str, unbindable: set[str],
                   indent: str = "    ") -> list[str]:
    """Nested loops over `params` in order (a parameter: over its `domain`, or the one value a
    conjunct `term = p` gives it once the term's parameters are bound, unless p is `unbindable`),
    each conjunct of `parts` tested at the outermost loop where its parameters are bound, `final`
    innermost; `stop` leaves when a conjunct with no parameter is false."""
    placed: set[int] = set()
    lines = [header]
    bound: set[str] = set()

    def emit_ready() -> None:
        for i, c in enumerate(parts):
            if i not in placed and free_vars(c) <= bound:
                lines.append(f"{indent}if not {em.expr(c)}: {'continue' if bound else stop}")
                placed.add(i)

    emit_ready()
    for k, p in enumerate(params):
        binder = None if p.name in unbindable else next(
            ((i, t) for i, c in enumerate(parts) if i not in placed and (t := _binding(c, p.name, bound)) is not None), None)
        if binder is not None:
            i, term = binder
            lines.append(f"{indent}for {_py(p.name)} in ({em.expr(term)},):")
            indent += "    "
            lines.append(f"{indent}if {_py(p.name)} is None: continue")
            placed.add(i)
        else:
            lines.append(f"{indent}for {_py(p.name)} in {domain(k, p)}:")
            indent += "    "
        bound.add(p.name)
        emit_ready()
    lines.append(f"{indent}{final}")
    return lines


def compile_search(u: Universe, vs: tuple[A.Var, ...], parts: list[A.Expr], pins: tuple[tuple[int, str], ...],
                   node: Any, name: str = "search", shared: bool = False) -> Callable[[State, Sequence[Any]], bool]:
    """`f(s, P)`: whether, for some point (_a, _old, _new) of P (a changed point's arguments, old
    and new value), some values of `vs` make every formula of `parts` true. `pins`: (position in
    vs, source of that variable's few values, over _a, _old, _new and _vals, the old and new values
    that are not none); those variables loop outermost, every other one is bound directly by a
    conjunct `term = x` where one allows, else loops over its domain. `node` and `pins` are the
    shared code's cache key."""
    first = [k for k, _ in pins]
    code = dict(pins)
    order = first + [k for k in range(len(vs)) if k not in code]
    header = ["def search(s, P):", "    for _a, _old, _new in P:"]
    if any("_vals" in c for c in code.values()):
        header.append("        _vals = tuple(x for x in (_old, _new) if x is not None)")

    def emit(em: _Emitter) -> str:
        body = _nested_source(em, [vs[k] for k in order], parts, "\n".join(header),
                              lambda k, p: code.get(order[k]) or em.domain(p.type), "return True",
                              "return False", {vs[k].name for k in first}, indent="        ")
        return "\n".join(body + ["    return False"]) + "\n"

    ns, _ = _namespace(u, node, ("search", pins), shared, f"<{name}>", emit)
    return ns["search"]


def compile_enabled_within(u: Universe, action: Action, shared: bool = False) -> Callable[..., Iterator[tuple[Any, ...]]]:
    """`enabled` over given candidates: `f(s, D)` yields the enabled argument tuples whose
    parameters not bound by a guard (`term = p`) range over D[i] (one iterable per parameter)."""
    ns, _ = _namespace(u, action, "within", shared, f"<action {action.name} within>", lambda em: "\n".join(
        _enabled_source(em, action, "def enabled_within(s, D):", lambda k, p: f"D[{k}]")) + "\n")
    return ns["enabled_within"]


def compile_formula(u: Universe, e: A.Expr, params: tuple[str, ...] = (), name: str = "formula",
                    shared: bool = False) -> Callable[..., Any]:
    """A closed formula (or one over the given free variables) as a function of (s, *params)."""
    sig = ", ".join(["s", *(_py(p) for p in params)])
    ns, _ = _namespace(u, e, ("formula", params), shared, f"<{name}>",
                       lambda em: f"def f({sig}):\n    return {em.expr(e)}\n")
    return ns["f"]


def compile_init(u: Universe, spec: CheckedSpec) -> Callable[[State], State]:
    """init as an action over a blank state (every entry None; immutables filled in by the caller)."""
    assert spec.init is not None
    return compile_action(u, spec.init).apply
