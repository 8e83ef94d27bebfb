"""Hypothesis strategies for surface ASTs of the spec language (syntactically valid, not typed)."""

from __future__ import annotations

from hypothesis import strategies as st

from dmmcheck.spec import ast as A

KEYWORDS = {"sort", "enum", "relation", "function", "const", "define", "axiom", "invariant", "init", "action",
            "immutable", "requires", "insert", "remove", "forall", "exists", "if", "then", "else", "count",
            "and", "or", "not", "implies", "iff", "true", "false", "none"}

names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True).filter(lambda s: s not in KEYWORDS)
types = st.builds(A.TypeRef, names, st.booleans())
binders = st.lists(st.builds(A.Binder, names, types), min_size=1, max_size=3).map(tuple)
docs = st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(str.strip),
                max_size=2).map(tuple)

leaves = st.one_of(
    st.builds(A.Name, names),
    st.builds(A.IntLit, st.integers(0, 10**6)),
    st.builds(A.BoolLit, st.booleans()),
    st.just(A.NoneLit()),
)


def _extend(sub: st.SearchStrategy) -> st.SearchStrategy:
    ops = st.sampled_from([*A.LOGIC_OPS, *A.CMP_OPS, *A.ARITH_OPS])
    return st.one_of(
        st.builds(A.App, names, st.lists(sub, max_size=3).map(tuple)),
        st.builds(A.Not, sub),
        st.builds(A.BinOp, ops, sub, sub),
        st.builds(A.SurfaceQuant, st.sampled_from(["forall", "exists"]), binders, sub),
        st.builds(A.SurfaceCount, binders, sub),
        st.builds(A.Ite, sub, sub, sub),
    )


exprs = st.recursive(leaves, _extend, max_leaves=12)
targets = st.one_of(st.builds(A.Name, names), st.builds(A.App, names, st.lists(exprs, max_size=3).map(tuple)))


def _updates(sub: st.SearchStrategy) -> st.SearchStrategy:
    block = st.lists(sub, max_size=2).map(tuple)
    return st.one_of(
        st.builds(A.SurfaceForallUpdate, binders, sub),
        st.builds(A.SurfaceIfUpdate, exprs, block, block),
    )


updates = st.recursive(
    st.one_of(st.builds(A.SurfaceAssign, targets, exprs), st.builds(A.SurfaceInsert, targets), st.builds(A.SurfaceRemove, targets)),
    _updates, max_leaves=4)
stmts = st.one_of(st.builds(A.Requires, exprs), updates)
arg_types = st.lists(types, max_size=3).map(tuple)

decls = st.one_of(
    st.builds(A.SortDecl, names, st.none() | st.integers(0, 99), docs),
    st.builds(A.EnumDecl, names, st.lists(names, min_size=1, max_size=4).map(tuple), docs),
    st.builds(A.RelationDecl, names, arg_types, st.booleans(), docs),
    st.builds(A.FunctionDecl, names, arg_types, types, st.booleans(), docs),
    st.builds(A.ConstDecl, names, types, st.booleans(), docs),
    st.builds(A.DefineDecl, names, st.lists(st.builds(A.Binder, names, types), max_size=3).map(tuple), types, exprs, docs),
    st.builds(A.AxiomDecl, names, exprs, docs),
    st.builds(A.InvariantDecl, names, exprs, docs),
    st.builds(A.InitDecl, st.lists(updates, max_size=3).map(tuple), docs),
    st.builds(A.ActionDecl, names, st.lists(st.builds(A.Binder, names, types), max_size=3).map(tuple),
              st.lists(stmts, max_size=4).map(tuple), docs),
)
specs = st.lists(decls, max_size=5).map(lambda ds: A.SpecFile(tuple(ds)))
