"""`count` without cardinality: an unbounded encoding sound for every finite universe.

Each count term `count { xs | phi(xs, ys) }` becomes an integer function C(ys) per state copy, with
axioms that hold of the size of any finite set:

  K0  C(ys) >= 0
  K1  C(ys) = 0  iff  forall xs. not phi(xs, ys)
  K2  C(ys) = 1 and phi(e, ys) implies (phi(xs, ys) implies xs = e)      (one element pins it)
  K3  phi(e, ys) and (forall xs. phi(xs, ys) implies xs = e) implies C(ys) = 1

and, for a step, the exact change at the points the action updates (Hyperkernel keeps a bijection
between holders and 0..count-1 for the same purpose; this needs no ghost state in the spec):

  C'(ys) = C(ys) + sum over distinct affected xs of ([phi'(xs, ys)] - [phi(xs, ys)])

That delta is exact when every update of a symbol phi reads is a point update and every occurrence
of that symbol in phi takes exactly the count's variables as arguments: then phi can change only at
the tuples those points pin. For any other shape `delta` returns None, and the prover falls back to a
finite proof (every size up to N), saying so in its report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import z3

from dmmcheck.spec import ast as A
from dmmcheck.spec.checker import Action, free_vars
from dmmcheck.spec.printer import show_expr

from .z3enc import Encoding, Env, Updated, Vocab


class Unsupported(Exception):
    """No exact unbounded delta for this count term under this action."""


@dataclass
class CountTerm:
    key: str
    node: A.Count
    params: tuple[A.Var, ...]  # the free variables ys, sorted by name


@dataclass
class Counts:
    """Registry of count terms met while encoding, and their functions per state copy."""

    terms: dict[str, CountTerm] = field(default_factory=dict)
    funcs: dict[tuple[str, str], z3.FuncDeclRef] = field(default_factory=dict)

    def hook(self, enc: Encoding, node: A.Count, st: Vocab, env: Env) -> z3.ExprRef:
        term = self.register(node)
        ys = [env[p.name] for p in term.params]
        if isinstance(st, Updated):  # the count after an action: the count before plus the exact delta
            d = delta_terms(enc, term, st.action, st.pre, st, st.env, ys)
            if d is None:
                raise Unsupported(term.key)
            return self.func(enc, term, st.pre.tag)(*ys) + d
        return self.func(enc, term, st.tag)(*ys)

    def register(self, node: A.Count) -> CountTerm:
        key = show_expr(node)
        if key not in self.terms:
            params = tuple(sorted(_free_var_nodes(node).values(), key=lambda v: v.name))
            self.terms[key] = CountTerm(key, node, params)
        return self.terms[key]

    def func(self, enc: Encoding, term: CountTerm, tag: str) -> z3.FuncDeclRef:
        k = (term.key, tag)
        if k not in self.funcs:
            idx = list(self.terms).index(term.key)
            self.funcs[k] = z3.Function(f"#count{idx}@{tag}", *[enc.sort(p.type) for p in term.params], z3.IntSort())
        return self.funcs[k]

    # ---------------------------------------------------------------- axioms
    def axioms(self, enc: Encoding, st: Vocab) -> list[z3.BoolRef]:
        out = []
        for term in list(self.terms.values()):
            ys = [enc.fresh(p.name, p.type) for p in term.params]
            env = {p.name: y for p, y in zip(term.params, ys)}
            c = self.func(enc, term, st.tag)(*ys)
            xs = [enc.fresh(v.name, v.type) for v in term.node.binders]
            es = [enc.fresh(v.name + "_e", v.type) for v in term.node.binders]
            phi_x = enc.expr(term.node.body, st, {**env, **_bind(term, xs)})
            phi_e = enc.expr(term.node.body, st, {**env, **_bind(term, es)})
            same = z3.And([x == e for x, e in zip(xs, es)])
            out.append(_forall(ys, c >= 0))
            out.append(_forall(ys + xs, z3.Implies(c == 0, z3.Not(phi_x))))
            out.append(_forall(ys, z3.Or(c == 0, z3.Exists(xs, phi_x))))
            out.append(_forall(ys + es + xs, z3.Implies(z3.And(c == 1, phi_e, phi_x), same)))
            out.append(_forall(ys + es, z3.Implies(z3.And(phi_e, z3.ForAll(xs, z3.Implies(phi_x, same))), c == 1)))
        return out

    def step(self, enc: Encoding, action: Action, pre: Vocab, post: Vocab, env: Env) -> tuple[list[z3.BoolRef], list[str]]:
        """Relations between each count's pre and post values; and the terms whose delta is not exact."""
        out, unsupported = [], []
        for term in list(self.terms.values()):
            d = delta(enc, self, term, action, pre, post, env)
            if d is None:
                unsupported.append(term.key)
            else:
                out.append(d)
        return out, unsupported


def _bind(term: CountTerm, values: list[z3.ExprRef]) -> Env:
    return {v.name: x for v, x in zip(term.node.binders, values)}


def _forall(vs: list[z3.ExprRef], body: z3.BoolRef) -> z3.BoolRef:
    return z3.ForAll(vs, body) if vs else body


def _free_var_nodes(e: A.Expr) -> dict[str, A.Var]:
    names = free_vars(e)
    found: dict[str, A.Var] = {}

    def walk(x: A.Expr) -> None:
        if isinstance(x, A.Var) and x.name in names:
            found[x.name] = x
        for c in A.children(x):
            walk(c)

    walk(e)
    return found


def delta(enc: Encoding, counts: Counts, term: CountTerm, action: Action, pre: Vocab, post: Vocab,
          env: Env) -> z3.BoolRef | None:
    """forall ys. C_post(ys) = C_pre(ys) + change, between two explicit state copies."""
    ys = [enc.fresh(p.name, p.type) for p in term.params]
    d = delta_terms(enc, term, action, pre, post, env, ys)
    if d is None:
        return None
    c_pre = counts.func(enc, term, pre.tag)(*ys)
    c_post = counts.func(enc, term, post.tag)(*ys)
    return _forall(ys, c_post == c_pre + d)


def delta_terms(enc: Encoding, term: CountTerm, action: Action, pre: Vocab, post: Vocab, env: Env,
                ys: list[z3.ExprRef]) -> z3.ArithRef | None:
    """The change of the count at ys made by the action, or None when it is not exactly computable."""
    node = term.node
    read = {s.name for s in A.syms(node.body)}
    touched = read & action.modifies
    if not touched:
        return z3.IntVal(0)
    yenv = {p.name: y for p, y in zip(term.params, ys)}
    count_vars = [v.name for v in node.binders]
    affected: list[list[z3.ExprRef]] = []
    for name in sorted(touched):
        occs = [s for s in A.syms(node.body) if s.name == name]
        for occ in occs:
            names = [a.name for a in occ.args if isinstance(a, A.Var)]
            if len(names) < len(occ.args) or sorted(names) != sorted(count_vars):
                return None  # this occurrence does not pin the counted tuple
        for leaf, _conds, bound in A.update_leaves(action.updates):
            if leaf.target.name != name:
                continue
            if bound:
                return None  # a quantified update may change phi at many tuples
            point = [enc.expr(a, pre, env) for a in leaf.target.args]
            for occ in occs:
                pos = {a.name: i for i, a in enumerate(occ.args) if isinstance(a, A.Var)}  # all are, checked above
                affected.append([point[pos[v]] for v in count_vars])
    terms = []
    for i, xs in enumerate(affected):
        xenv = {**yenv, **{v: x for v, x in zip(count_vars, xs)}}
        change = z3.If(enc.expr(node.body, post, xenv), 1, 0) - z3.If(enc.expr(node.body, pre, xenv), 1, 0)
        fresh = z3.And([z3.Not(z3.And([a == b for a, b in zip(xs, prev)])) for prev in affected[:i]])
        terms.append(z3.If(fresh, change, 0))
    return z3.Sum(terms) if len(terms) > 1 else terms[0]
