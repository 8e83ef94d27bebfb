"""Ground compilation: the spec at a small bound as straight-line Python over flat states.

`dmm explore` spends its time on three things per state: computing successors (most of it copying
and hashing states), canonicalising them under symmetry, and checking invariants. At the small
bounds it explores, every action has few argument tuples and every quantifier few instances, so
this module compiles the spec once per bound into code with no loops and no generators:

- a state is one flat tuple (every symbol's values, in layout order) instead of a tuple of tuples:
  one copy and one hash per successor instead of one per modified symbol;
- each action instance (action, concrete arguments) is its guard's conjuncts followed by its writes,
  every index a constant; instances that share their first conjuncts test them once (a trie), and
  every instance of every action sits in one function, expand(), with no call per transition;
- quantifiers of up to UNROLL instances are unrolled, and conjuncts made constant by the arguments
  (`v1 != v2` at v1=v2=0) are folded away;
- instances that write the same positions whatever the state share a memo (MEMO_MIN), a step that
  changes nothing is told before its successor is built, and each instance knows which invariants
  it can change (the explorer checks only those after it);
- the permutations of the symmetric sorts' elements are tuple displays in one `min`.

The meaning is the one compile.py gives the same AST (tests compare the two explorers state for
state); a bound too large for this (too many instances, permutations or characters of code) raises
TooLarge, and the explorer takes the general path.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import Action

from .compile import conjuncts
from .state import State, Universe

UNROLL = 64  # a quantifier with more instances than this stays a loop
MAX_INSTANCES = 4096  # argument tuples of one action: past this the generated code grows too large
MAX_SOURCE = 4 << 20  # characters of generated code
MAX_PERMUTATIONS = 720  # one tuple display each, in canon()
PREFIX = 16  # canon() compares a permuted copy's first values before it builds the rest

Flat = tuple  # a state as one flat tuple of values, `none` as NONE
# `none` in a flat state: unlike None it orders against ints and bools and hashes the same in every
# process, so the smallest permuted copy of a state is a deterministic orbit representative (no
# digest needed), and it is no value an int symbol can take.
NONE = float("-inf")

_INT = re.compile(r"^-?\d+$")
_CMP = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge, "+": operator.add, "-": operator.sub}


class TooLarge(ValueError):
    """The bound is past what ground compilation is for; explore the general way."""


def _const(src: str) -> tuple[bool, Any]:
    """(True, value) when src is a literal this module emitted."""
    if src in ("True", "False", "_N"):
        return True, {"True": True, "False": False, "_N": None}[src]
    if _INT.match(src):
        return True, int(src)
    return False, None


def _lit(v: Any) -> str:
    return "_N" if v is None else repr(v)


def _join(parts: list[str], op: str, unit: bool) -> str:
    """`and`/`or` of parts, folding constants (unit: the value that leaves the other side alone)."""
    out = []
    for p in parts:
        is_c, v = _const(p)
        if is_c and isinstance(v, bool):
            if v == unit:
                continue
            return _lit(not unit)
        out.append(p)
    if not out:
        return _lit(unit)
    return out[0] if len(out) == 1 else "(" + f" {op} ".join(out) + ")"


class _Emitter:
    """Expressions and updates as source over a flat state `s` (writes into the list `n`), with the
    variables in env replaced by their values."""

    def __init__(self, u: Universe, offsets: dict[str, int]) -> None:
        self.u = u
        self.offsets = offsets
        self.track()

    def track(self) -> None:
        """Start recording what the code emitted next reads and writes (memo keys, invariant checks)."""
        self.reads: set[int] = set()
        self.writes: set[int] = set()
        self.always: set[int] = set()  # written whatever the state (outside any non-constant `if`)
        self.dynamic = False  # some position is computed at run time: the footprint is unknown
        self.depth = 0  # nesting of non-constant ifs around the update being emitted

    def point(self, pos: str, write: bool = False) -> str:
        if not _INT.match(pos):
            self.dynamic = True
        elif write:
            self.writes.add(int(pos))
            if self.depth == 0:
                self.always.add(int(pos))
        else:
            self.reads.add(int(pos))
        return pos

    def domain(self, t: A.TypeRef) -> tuple[Any, ...]:
        return self.u.domain(t)

    def position(self, name: str, args: tuple[A.Expr, ...], env: dict[str, Any]) -> str:
        lay = self.u.layout[name]
        base, parts = self.offsets[name], []
        for a, st in zip(args, lay.strides):
            code = self.expr(a, env)
            is_c, v = _const(code)
            if is_c:
                base += int(v) * st
            else:
                parts.append(code if st == 1 else f"{code}*{st}")
        return " + ".join([str(base), *parts]) if parts else str(base)

    def expr(self, e: A.Expr, env: dict[str, Any]) -> str:
        match e:
            case A.Var(name):
                return _lit(env[name]) if name in env else f"v_{name}"
            case A.Sym(name, args):
                return f"s[{self.point(self.position(name, args, env))}]"
            case A.ParamApp(name, args, fun):  # the instance's function: a literal tuple
                vals, codes = env[name], [self.expr(a, env) for a in args]
                consts = [_const(c) for c in codes]
                if all(is_c for is_c, _ in consts):
                    return _lit(vals[self.u.param_index(fun, tuple(v for _, v in consts))])
                index = codes[0]
                for arg_type, code in zip(fun.args[1:], codes[1:]):
                    index = f"({index})*{self.u.domain_size(arg_type)} + {code}"
                return f"({''.join(_lit(x) + ', ' for x in vals)})[{index}]"
            case A.EnumLit(enum, value):
                return str(self.u.spec.enums[enum].index(value))
            case A.Some(arg):
                return self.expr(arg, env)
            case A.NoneLit():
                return "_N"
            case A.BoolLit(v):
                return _lit(bool(v))
            case A.IntLit(v):
                return str(v)
            case A.Not(arg):
                a = self.expr(arg, env)
                is_c, v = _const(a)
                return _lit(not v) if is_c else f"(not {a})"
            case A.BinOp("and", l, r):
                return _join([self.expr(l, env), self.expr(r, env)], "and", True)
            case A.BinOp("or", l, r):
                return _join([self.expr(l, env), self.expr(r, env)], "or", False)
            case A.BinOp("implies", l, r):
                return _join([self.expr(A.Not(l), env), self.expr(r, env)], "or", False)
            case A.BinOp("iff", l, r):
                a, b = self.expr(l, env), self.expr(r, env)
                (ca, va), (cb, vb) = _const(a), _const(b)
                return _lit(bool(va) == bool(vb)) if ca and cb else f"(bool({a}) == bool({b}))"
            case A.BinOp(op, l, r):
                a, b = self.expr(l, env), self.expr(r, env)
                (ca, va), (cb, vb) = _const(a), _const(b)
                if ca and cb and (op in ("=", "!=") or (isinstance(va, int) and isinstance(vb, int))):
                    return _lit(_CMP[op](va, vb))
                return f"({a} {'==' if op == '=' else op} {b})"
            case A.Quant(kind, vs, body):
                return self.quant(kind, vs, body, env)
            case A.Count(vs, body):
                return self.count(vs, body, env)
            case A.Ite(c, t, f):
                cond = self.expr(c, env)
                is_c, v = _const(cond)
                if is_c:
                    return self.expr(t if v else f, env)
                return f"({self.expr(t, env)} if {cond} else {self.expr(f, env)})"
        raise TypeError(f"cannot compile {e!r}")

    def instances(self, vs: tuple[A.Var, ...], env: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every binding of vs (each added to env), or None past UNROLL of them: keep the loop."""
        domains = [self.domain(v.type) for v in vs]
        n = 1
        for d in domains:
            n *= len(d)
        if n > UNROLL:
            return None
        return [{**env, **{v.name: x for v, x in zip(vs, combo)}} for combo in itertools.product(*domains)]

    def loops(self, vs: tuple[A.Var, ...]) -> str:
        return " ".join(f"for v_{v.name} in {self.domain(v.type)!r}" for v in vs)

    def unbound(self, vs: tuple[A.Var, ...], env: dict[str, Any]) -> dict[str, Any]:
        return {k: x for k, x in env.items() if k not in {v.name for v in vs}}

    def quant(self, kind: str, vs: tuple[A.Var, ...], body: A.Expr, env: dict[str, Any]) -> str:
        insts = self.instances(vs, env)
        if insts is None:
            b = self.expr(body, self.unbound(vs, env))
            return f"{'all' if kind == 'forall' else 'any'}({b} {self.loops(vs)})"
        parts = [self.expr(body, e) for e in insts]
        return _join(parts, "and", True) if kind == "forall" else _join(parts, "or", False)

    def count(self, vs: tuple[A.Var, ...], body: A.Expr, env: dict[str, Any]) -> str:
        insts = self.instances(vs, env)
        if insts is None:
            return f"sum(1 {self.loops(vs)} if {self.expr(body, self.unbound(vs, env))})"
        known, terms = 0, []
        for e in insts:
            b = self.expr(body, e)
            is_c, v = _const(b)
            if is_c:
                known += 1 if v else 0
            else:
                terms.append(f"(1 if {b} else 0)")
        return "(" + " + ".join([str(known), *terms]) + ")" if terms else str(known)

    def update(self, upd: A.Update, env: dict[str, Any], indent: str, out: list[str]) -> None:
        match upd:
            case A.Assign(target, value):
                pos = self.point(self.position(target.name, target.args, env), write=True)
                out.append(f"{indent}n[{pos}] = {self.expr(value, env)}")
            case A.Insert(target) | A.Remove(target):
                pos = self.point(self.position(target.name, target.args, env), write=True)
                out.append(f"{indent}n[{pos}] = {isinstance(upd, A.Insert)}")
            case A.ForallUpdate(vs, body):
                insts = self.instances(vs, env)
                if insts is None:
                    inner = self.unbound(vs, env)
                    for v in vs:
                        out.append(f"{indent}for v_{v.name} in {self.domain(v.type)!r}:")
                        indent += "    "
                    self.update(body, inner, indent, out)
                else:
                    for e in insts:
                        self.update(body, e, indent, out)
            case A.IfUpdate(cond, then, else_):
                c = self.expr(cond, env)
                is_c, v = _const(c)
                if is_c:
                    for x in (then if v else else_):
                        self.update(x, env, indent, out)
                    return
                out.append(f"{indent}if {c}:")
                self.depth += 1
                for x in then:
                    self.update(x, env, indent + "    ", out)
                out.append(f"{indent}    pass")
                if else_:
                    out.append(f"{indent}else:")
                    for x in else_:
                        self.update(x, env, indent + "    ", out)
                self.depth -= 1


@dataclass
class GroundAction:
    name: str
    instances: list[tuple[Any, ...]]  # argument tuples; successors() name them by index
    parts: list[Callable[[Flat], list[tuple[int, Flat]]]]  # (instance, successor) for each enabled one
    noop: bool  # modifies nothing: its successors are s itself, counted and not visited
    # per instance: do the invariants hold after it, given that they held before (None: never enabled)
    checks: list[Callable[[Flat], bool] | None]

    def successors(self, s: Flat) -> list[tuple[int, Flat]]:
        return [x for p in self.parts for x in p(s)]


# Instances that share a footprint worth a memo (guest_map: 32 rights and A/D bits per gfn). Which
# of them are enabled, and what each makes of s, depend only on s outside the positions they all
# write whatever the state and none of them reads (the key): once a state with that key was
# expanded, the group's successors from another are the same states, already visited, and only
# their number is needed.
MEMO_MIN = 8


@dataclass
class _Instance:
    index: int
    conds: list[str]
    updates: list[str] | None  # None: the action modifies nothing
    reads: frozenset[int]
    writes: frozenset[int]
    always: frozenset[int]
    dynamic: bool


def _instance(em: _Emitter, action: Action, parts: list[A.Expr], k: int, args: tuple[Any, ...]) -> _Instance | None:
    """One instance's guard conjuncts and body; None when a conjunct is constant false."""
    env = {p.name: a for p, a in zip(action.params, args)}
    em.track()
    conds = [em.expr(c, env) for c in parts]
    if "False" in conds:
        return None
    conds = [c for c in conds if c != "True"]
    body: list[str] | None = None
    if action.modifies:
        body = []
        for upd in action.updates:
            em.update(upd, env, "", body)
    return _Instance(k, conds, body, frozenset(em.reads), frozenset(em.writes), frozenset(em.always), em.dynamic)


def _listed(x: _Instance) -> list[str]:
    """An enabled instance, in successors(): appended as (instance, successor)."""
    if x.updates is None:
        return [f"a(({x.index}, s))"]
    return ["n = list(s)", *x.updates, f"a(({x.index}, tuple(n)))"]


_WRITE = re.compile(r"^n\[(\d+)\] = (.*)$")


def _visited(x: _Instance, action: int, counter: str) -> list[str]:
    """An enabled instance, in expand(): counted, and its successor visited unless seen. A third of
    the steps outside guest_map change nothing (invlpg of an empty TLB entry, a flush already
    owed): a stutter is told by the positions the instance writes, before a state is built and
    hashed; when every write is unconditional, before the state is even copied."""
    if x.updates is None:
        return [f"{counter} += 1"]
    visit = ["t = tuple(n)", f"if t not in seen: visit(t, (s, {action}, {x.index}))"]
    writes = [_WRITE.match(line) for line in x.updates]
    if x.dynamic or not x.writes:
        return [f"{counter} += 1", "n = list(s)", *x.updates, *visit]
    if all(writes):
        final = {int(m[1]): m[2] for m in writes if m is not None}  # a later write wins
        same = " and ".join(f"s[{k}] == {v}" for k, v in final.items())
        return [f"{counter} += 1", f"if not ({same}):", "    n = list(s)",
                *("    " + line for line in x.updates), *("    " + line for line in visit)]
    changed = " or ".join(f"n[{k}] != s[{k}]" for k in sorted(x.writes))
    return [f"{counter} += 1", "n = list(s)", *x.updates, f"if {changed}:", *("    " + line for line in visit)]


def _trie(items: list[tuple[list[str], list[str]]], indent: str, out: list[str]) -> None:
    """Emit `if` tests for items (conjuncts, body), testing a conjunct shared by consecutive items
    once: instances of one action mostly share their first conjuncts (live(v) for every w, u, ...)."""
    i = 0
    while i < len(items):
        conds, body = items[i]
        if not conds:
            out.extend(indent + line for line in body)
            i += 1
            continue
        j = i
        while j < len(items) and items[j][0][:1] == conds[:1]:
            j += 1
        out.append(f"{indent}if {conds[0]}:")
        _trie([(c[1:], b) for c, b in items[i:j]], indent + "    ", out)
        i = j


def _part_source(items: list[_Instance]) -> str:
    lines = ["def successors(s):", "    r = []", "    a = r.append"]
    _trie([(x.conds, _listed(x)) for x in items], "    ", lines)
    lines.append("    return r")
    return "\n".join(lines) + "\n"


Group = tuple[list[_Instance], list[int] | None]  # instances, and the positions of their memo key (or None)


def _ground_action(em: _Emitter, action: Action, width: int) -> tuple[list[Group], list[tuple[Any, ...]], list[_Instance]]:
    """The action's instances in groups (one memo each, but the last), all its instances in order,
    and those that can be enabled."""
    count = math.prod(em.u.domain_count(p.type) for p in action.params)
    if count > MAX_INSTANCES:  # (counted first: a choice parameter's values are many)
        raise TooLarge(f"{action.name} has {count} argument tuples")
    instances = list(itertools.product(*(em.domain(p.type) for p in action.params)))
    conj = [c for g in action.guards for c in conjuncts(g)]
    items = [x for k, args in enumerate(instances) if (x := _instance(em, action, conj, k, args)) is not None]
    groups: dict[frozenset[int], list[_Instance]] = {}
    rest: list[_Instance] = []
    for x in items:
        if x.dynamic or not action.modifies:
            rest.append(x)
        else:
            groups.setdefault(x.always, []).append(x)
    out: list[Group] = []
    for always, members in groups.items():
        free = always - frozenset().union(*(x.reads for x in members))
        if len(members) < MEMO_MIN or not free:
            rest += members
            continue
        out.append((members, [i for i in range(width) if i not in free]))
    if rest or not out:
        out.append((sorted(rest, key=lambda x: x.index), None))
    return out, instances, items


def _expand_source(actions: list[list[Group]]) -> tuple[str, list[list[int]]]:
    """expand(s, seen, visit, counts): every action's enabled instances from s counted, their
    successors not in seen visited; the memo groups' keys K0, K1, ... and memos M0, M1, ... are
    globals. One function with no calls per instance: the explorer's inner loop."""
    lines = ["def expand(s, seen, visit, counts):"]
    lines += [f"    c{i} = 0" for i in range(len(actions))]
    keys: list[list[int]] = []
    for i, groups in enumerate(actions):
        for members, key in groups:
            if key is None:
                _trie([(x.conds, _visited(x, i, f"c{i}")) for x in members], "    ", lines)
                continue
            j = len(keys)
            keys.append(key)
            lines += [f"    kk = K{j}(s)", f"    m = M{j}.get(kk)", "    if m is None:", "        p = 0"]
            _trie([(x.conds, _visited(x, i, "p")) for x in members], "        ", lines)
            lines += [f"        M{j}[kk] = p", f"        c{i} += p", "    else:", f"        c{i} += m"]
    lines += [f"    counts[{i}] += c{i}" for i in range(len(actions))]
    lines.append("    return None")  # a body even for a spec with no action
    return "\n".join(lines) + "\n", keys


class Ground:
    """The spec at one bound, compiled for flat states."""

    def __init__(self, u: Universe, invariants: list[tuple[str, A.Expr]], actions: dict[str, Action],
                 perms: list[dict[str, tuple[int, ...]]]) -> None:
        if len(perms) > MAX_PERMUTATIONS:
            raise TooLarge(f"{len(perms)} permutations")
        self.u = u
        self.offsets: dict[str, int] = {}
        at = 0
        for name, lay in u.layout.items():
            self.offsets[name] = at
            at += lay.size
        self.width = at
        em = _Emitter(u, self.offsets)
        self.invariant_names = [n for n, _ in invariants]
        inv_src, inv_reads = [], []
        for _, e in invariants:
            em.track()
            inv_src.append(em.expr(e, {}))
            inv_reads.append(None if em.dynamic else frozenset(em.reads))
        self.invariants = [_exec(f"def f(s):\n    return {src}\n", f"ground invariant {n}", "f")
                           for n, src in zip(self.invariant_names, inv_src)]
        cache: dict[tuple[int, ...], Callable[[Flat], bool]] = {}
        self.all_hold = _checker(inv_src, range(len(inv_src)), cache)
        size = sum(map(len, inv_src))
        self.actions: list[GroundAction] = []
        all_groups: list[list[Group]] = []
        for name, act in actions.items():
            groups, instances, items = _ground_action(em, act, self.width)
            all_groups.append(groups)
            sources = [_part_source(members) for members, _ in groups]
            size += 2 * sum(map(len, sources))
            if size > MAX_SOURCE:
                raise TooLarge(f"the generated code passes {MAX_SOURCE:,} characters")
            parts = [_exec(src, f"ground {name}", "successors") for src in sources]
            checks: list[Callable[[Flat], bool] | None] = [None] * len(instances)
            for x in items:
                # an invariant none of whose positions the instance may write keeps its value
                which = tuple(j for j, r in enumerate(inv_reads) if x.dynamic or r is None or r & x.writes)
                checks[x.index] = _checker(inv_src, which, cache)
            self.actions.append(GroundAction(name, instances, parts, not act.modifies, checks))
        src, self._keys = _expand_source(all_groups)
        self._expand = compile(src, "<ground expand>", "exec")
        self.canonical = self._canonical(perms)

    def expander(self) -> Callable[[Flat, set[Flat], Callable[..., None], list[int]], None]:
        """A new expand() (see _expand_source), with empty memos: one per search."""
        ns: dict[str, Any] = {"_N": NONE}
        for j, key in enumerate(self._keys):
            ns[f"K{j}"], ns[f"M{j}"] = _key(key), {}
        exec(self._expand, ns)
        return ns["expand"]

    def flatten(self, s: State) -> Flat:
        return tuple(NONE if v is None else v for v in itertools.chain.from_iterable(s))

    def nest(self, f: Flat) -> State:
        return tuple(tuple(None if v == NONE else v for v in f[o:o + lay.size])
                     for o, lay in zip(self.offsets.values(), self.u.layout.values()))

    def failing(self, f: Flat) -> list[str]:
        return [n for n, inv in zip(self.invariant_names, self.invariants) if not inv(f)]

    def _display(self, perm: dict[str, tuple[int, ...]], k: int) -> list[str]:
        """new[position of pi(args)] = pi(old[position of args]), each position's source."""
        src = [""] * self.width
        for name, lay in self.u.layout.items():
            sym = lay.symbol
            arg_perms = [perm.get(t.name) for t in sym.args]
            res = sym.result.name
            read = f"m_{res}_{{}}[s[{{}}]]" if res in perm else "s[{1}]"
            for i, point in enumerate(self.u.points(name)):
                moved = tuple(p[a] if p is not None else a for p, a in zip(arg_perms, point))
                src[self.offsets[name] + self.u.index(name, moved)] = read.format(k, self.offsets[name] + i)
        return src

    def _canonical(self, perms: list[dict[str, tuple[int, ...]]]) -> Callable[[Flat], Flat]:
        """The smallest of the state's permuted copies (tuple order). A copy whose first PREFIX
        values already compare greater than the best so far is not built (most are not)."""
        if not perms or not self.width:  # nothing to permute (a spec with no state)
            return lambda f: f
        maps: dict[str, dict[Any, Any]] = {}
        k_pre = min(PREFIX, self.width)
        lines = ["def canon(s):", "    b = s", f"    bp = s[:{k_pre}]"]
        for k, perm in enumerate(perms):
            for sort, p in perm.items():
                maps[f"m_{sort}_{k}"] = {NONE: NONE, **dict(enumerate(p))}
            src = self._display(perm, k)
            lines += [f"    p = ({', '.join(src[:k_pre])},)", "    if p <= bp:",
                      f"        t = p + ({', '.join(src[k_pre:])},)" if k_pre < self.width else "        t = p",
                      "        if t < b:", "            b, bp = t, p"]
        lines.append("    return b")
        return _exec("\n".join(lines) + "\n", "canonical", "canon", maps)


def _checker(inv_src: list[str], which: Any, cache: dict[tuple[int, ...], Callable[[Flat], bool]]) -> Callable[[Flat], bool]:
    """Do the invariants numbered `which` hold? One function, shared by every instance that needs
    the same ones."""
    key = tuple(which)
    if key not in cache:
        body = " and ".join(f"({inv_src[j]})" for j in key) or "True"
        cache[key] = _exec(f"def holds(s):\n    return {body}\n", "ground invariants", "holds")
    return cache[key]


def _key(positions: list[int]) -> Callable[[Flat], Any]:
    if not positions:  # the group reads no state: one memo entry serves every state
        return lambda f: ()
    if len(positions) == 1:
        def pick(f: Flat, i: int = positions[0]) -> tuple[Any]:  # i a local: the hot path's fastest read
            return (f[i],)
        return pick
    return operator.itemgetter(*positions)


def _exec(src: str, name: str, fn: str, env: dict[str, Any] | None = None) -> Callable[..., Any]:
    ns: dict[str, Any] = {"_N": NONE, **(env or {})}
    exec(compile(src, f"<{name}>", "exec"), ns)
    return ns[fn]
