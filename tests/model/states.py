"""Hypothesis strategies for arbitrary finite states (reachable or not) and action arguments."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from dmmcheck.model.interp import Interpreter
from dmmcheck.spec import ast as A


def value_strategy(it: Interpreter, t: A.TypeRef) -> st.SearchStrategy:
    if t.name == A.INT:
        base = st.integers(0, 3)
    elif t.name == A.BOOL:
        base = st.booleans()
    else:
        base = st.integers(0, it.u.domain_size(A.TypeRef(t.name)) - 1)
    return st.one_of(st.none(), base) if t.optional else base


def states(it: Interpreter) -> st.SearchStrategy:
    parts = [st.lists(value_strategy(it, lay.symbol.result), min_size=lay.size, max_size=lay.size).map(tuple)
             for lay in it.u.layout.values()]
    return st.tuples(*parts)


def args_for(it: Interpreter, action: str) -> st.SearchStrategy:
    params = it.spec.actions[action].params
    return st.tuples(*(st.sampled_from(it.u.domain(p.type)) for p in params))


def all_args(it: Interpreter, action: str):
    params = it.spec.actions[action].params
    return itertools.product(*(it.u.domain(p.type) for p in params))
