"""The printer inverts the parser: parse(print(ast)) == ast, for generated ASTs and the bundled spec."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings

from dmmcheck.spec import bundled_path, parse, show_spec
from dmmcheck.spec import ast as A
from dmmcheck.spec.printer import show_expr

sys.path.insert(0, str(Path(__file__).parent))
from strategies import exprs, specs  # noqa: E402


@settings(max_examples=300)
@given(specs)
def test_print_then_parse_is_identity(spec: A.SpecFile):
    text = show_spec(spec)
    assert parse(text) == spec, text


@settings(max_examples=500)
@given(exprs)
def test_expression_round_trip(e):
    text = f"invariant i: {show_expr(e)}\n"
    (decl,) = parse(text).decls
    assert decl.formula == e, text


def test_bundled_spec_round_trips():
    original = parse(bundled_path().read_text())
    text = show_spec(original)
    again = parse(text)
    assert again == original
    assert show_spec(again) == text  # printing is a fixed point


def test_bundled_spec_keeps_docs():
    spec = parse(bundled_path().read_text())
    invariants = [d for d in spec.decls if isinstance(d, A.InvariantDecl)]
    assert invariants and all(d.doc for d in invariants), "every bundled invariant carries its doc comment"


def test_precedence_is_kept():
    # Printing must add exactly the parentheses the structure needs.
    a, b, c = A.Name("a"), A.Name("b"), A.Name("c")
    assert show_expr(A.BinOp("and", A.BinOp("or", a, b), c)) == "(a or b) and c"
    assert show_expr(A.BinOp("or", a, A.BinOp("and", b, c))) == "a or b and c"
    assert show_expr(A.BinOp("implies", A.BinOp("implies", a, b), c)) == "(a implies b) implies c"
    assert show_expr(A.BinOp("implies", a, A.BinOp("implies", b, c))) == "a implies b implies c"
    assert show_expr(A.BinOp("-", a, A.BinOp("-", b, c))) == "a - (b - c)"
    assert show_expr(A.Not(A.BinOp("=", a, b))) == "not a = b"
    q = A.SurfaceQuant("forall", (A.Binder("x", A.TypeRef("s")),), a)
    assert show_expr(A.BinOp("and", q, b)) == "(forall x: s. a) and b"
