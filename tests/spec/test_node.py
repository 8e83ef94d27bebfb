"""`@node` behaves as `@dataclass(frozen=True)` for the same declaration: the same equality, hash,
repr, match arguments, refusal to change, pickling and copying."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from dmmcheck.spec import ast as A
from dmmcheck.spec.node import field, fields_of, node, replace


@node
class Pair:
    left: int
    right: tuple[int, ...] = ()
    note: str = field(default="", compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class PairDC:
    left: int
    right: tuple[int, ...] = ()
    note: str = dataclasses.field(default="", compare=False, repr=False)


@node
class Empty:
    pass


CASES = [((1,), {}), ((1, (2, 3)), {}), ((1,), {"note": "x"}), ((2,), {"right": (1,), "note": "y"})]


@pytest.mark.parametrize("args,kwargs", CASES)
def test_same_behaviour_as_a_frozen_dataclass(args, kwargs):
    mine, theirs = Pair(*args, **kwargs), PairDC(*args, **kwargs)
    assert repr(mine) == repr(theirs).replace("PairDC", "Pair")
    for a2, k2 in CASES:
        assert (mine == Pair(*a2, **k2)) == (theirs == PairDC(*a2, **k2))
        assert (hash(mine) == hash(Pair(*a2, **k2))) == (hash(theirs) == hash(PairDC(*a2, **k2)))
    assert Pair.__match_args__ == PairDC.__match_args__
    assert [f.name for f in fields_of(mine)] == [f.name for f in dataclasses.fields(theirs)]


def test_equality_ignores_fields_that_do_not_compare_and_other_classes():
    assert Pair(1, note="a") == Pair(1, note="b") and hash(Pair(1, note="a")) == hash(Pair(1, note="b"))
    assert Pair(1) != Pair(2) and Pair(1) != PairDC(1) and Pair(1) != (1, ())
    assert Empty() == Empty() and hash(Empty()) == hash(Empty()) and repr(Empty()) == "Empty()"
    assert A.Name("x") != A.Var("x", A.TypeRef("gva"))  # same fields, different classes
    assert A.TypeRef("gva", loc=A.Loc("a.dmm", 1, 1)) == A.TypeRef("gva", loc=A.Loc("b.dmm", 2, 2))


def test_refuses_to_change():
    p = Pair(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.left = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.left  # type: ignore[misc]
    assert p.left == 1


def test_arguments_are_checked_as_a_dataclass_checks_them():
    with pytest.raises(TypeError):
        Pair()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Pair(1, wrong=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Pair(1, (), "", 4)  # type: ignore[call-arg]


def test_pickles_copies_and_matches():
    p = Pair(1, (2,), note="kept")
    for q in (pickle.loads(pickle.dumps(p)), copy.copy(p), copy.deepcopy(p)):
        assert q == p and q.note == "kept" and type(q) is Pair
    match p:
        case Pair(left, right):
            assert (left, right) == (1, (2,))
        case _:
            pytest.fail("no match")


def test_replace_copies_with_fields_changed():
    p = Pair(1, (2,), note="n")
    q = replace(p, right=(3,))
    assert (q.left, q.right, q.note) == (1, (3,), "n") and p.right == (2,) and type(q) is Pair
    with pytest.raises(TypeError):
        replace(p, wrong=1)
