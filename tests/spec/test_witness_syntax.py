"""Witness declarations and init constraints: parsed, printed back, type-checked."""

from __future__ import annotations

import pytest

from dmmcheck.spec import SpecError, check, parse, show_spec
from dmmcheck.spec import ast as A

BASE = """sort client [3]
relation holds(client)
relation free()
init {
  free() := true
  requires forall c: client. not holds(c)
}
action acquire(c: client) {
  requires free()
  insert holds(c)
  free() := false
}
action release(c: client) {
  requires holds(c)
  remove holds(c)
  free() := true
}
"""


def test_witness_parses_prints_back_and_checks():
    text = BASE + """
# acquired twice, released between
required witness twice:
  reach acquire; any*; acquire
  such that exists c: client. holds(c)
witness anything: reach any*
"""
    ast = parse(text, "w.dmm")
    w = [d for d in ast.decls if isinstance(d, A.WitnessDecl)]
    assert [x.name for x in w] == ["twice", "anything"]
    assert w[0].required and not w[1].required
    assert [str(s) for s in w[0].shape] == ["acquire", "any*", "acquire"]
    assert w[0].doc == ("acquired twice, released between",)
    assert parse(show_spec(ast), "w.dmm") == ast
    spec = check(ast)
    assert [x.shape for x in spec.witnesses] == [(("acquire", False), (None, True), ("acquire", False)), ((None, True),)]
    assert spec.witnesses[1].formula == A.BoolLit(True)  # no `such that`: any state
    assert spec.summary()["witnesses"] == ["twice", "anything"]


def test_init_requires_constrain_unassigned_symbols():
    spec = check(parse(BASE, "w.dmm"))
    assert spec.init is not None and len(spec.init.guards) == 1
    assert spec.init_free_symbols() == ["holds"]


def test_unassigned_and_unconstrained_symbol_is_refused():
    text = BASE.replace("  requires forall c: client. not holds(c)\n", "")
    with pytest.raises(SpecError) as e:
        check(parse(text, "w.dmm"))
    assert "init does not assign every value of mutable relation 'holds'" in str(e.value)


@pytest.mark.parametrize("name", ["reach", "such", "that", "any", "witness", "required"])
def test_new_keywords_are_reserved(name):
    with pytest.raises(SpecError):
        check(parse(f"sort {name}\n", "w.dmm"))


def test_a_witness_may_name_an_action_declared_after_it():
    text = BASE.replace("action acquire", "witness early: reach acquire\naction acquire", 1)
    spec = check(parse(text, "w.dmm"))
    assert spec.witnesses[0].shape == (("acquire", False),)
