"""Readable counterexamples (model/cex.py): the universe minimised per sort, the facts minimised,
immutable symbols printed once, constants and nullary relations read plainly, and the failing
conjunct named with its file:line:col. Golden text in tests/model/cex/*.expect."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path


from dmmcheck.model import report
from dmmcheck.model.cex import conjuncts, shrink_sizes, show_symbol
from dmmcheck.model.prove import Obligation, Prover
from dmmcheck.model.state import Universe
from dmmcheck.spec import check, parse

HERE = Path(__file__).parent / "cex"


def _cti(name: str, action: str, invariant: str):
    spec = check(parse((HERE / f"{name}.dmm").read_text(), f"{name}.dmm"))
    r = Prover(spec).check(Obligation("inductive", action, invariant))
    assert r.status == "violated", (r.status, r.reason)
    return spec, r


def test_universe_is_minimal_per_sort():
    # two pages are needed (one used before, one taken), one owner is enough
    _, r = _cti("pages", "take", "one_page")
    assert r.counterexample["universe"] == {"owner": 1, "page": 2}


def test_facts_are_minimised_and_arguments_canonical():
    _, r = _cti("pages", "take", "one_page")
    cx = r.counterexample
    assert cx["args"] == {"o": "owner0", "p": "page0"}
    # one used page is all the failure needs: no holder recorded, no last page, not locked
    assert cx["before_text"].splitlines() == ["used = {page1}", "holder: -", "last = none", "!locked"]


def test_failing_conjunct_is_named_with_its_place():
    _, r = _cti("pages", "take", "one_page")
    part = r.counterexample["conjunct"]
    assert (part["index"], part["of"]) == (3, 3)
    assert part["text"] == "used(q) and used(p) implies q = p"
    assert part["loc"] == "pages.dmm:34:26"


def test_immutable_symbols_printed_once():
    _, r = _cti("pages", "take", "one_page")
    cx = r.counterexample
    assert cx["immutable_text"] == "admin = owner0"
    assert "admin" not in cx["before_text"] and "admin" not in cx["after_text"]


def test_golden_counterexample_text():
    _, r = _cti("pages", "take", "one_page")
    buf = io.StringIO()
    report._show_counterexample(report.Out(buf), r)
    got = buf.getvalue()
    expect = HERE / "pages.expect"
    if os.environ.get("DMM_REGEN_GOLDEN"):
        expect.write_text(got)
    assert got == expect.read_text()


def test_nullary_symbols_and_constants_read_plainly():
    spec = check(parse((HERE / "pages.dmm").read_text(), "pages.dmm"))
    u = Universe(spec, {"owner": 1, "page": 2})
    s = u.from_dict({"admin": {"admin": "owner0"}, "used": {"used(page0)": True, "used(page1)": False},
                     "holder": {"holder(page0)": "owner0", "holder(page1)": None},
                     "last": {"last": "page1"}, "locked": {"locked()": True}})
    assert show_symbol(u, s, "locked") == "locked"
    assert show_symbol(u, s, "last") == "last = page1"
    assert show_symbol(u, s, "used") == "used = {page0}"
    assert show_symbol(u, s, "holder") == "holder: page0 -> owner0"
    s2 = u.from_dict({"locked": {"locked()": False}}, default=s)
    assert show_symbol(u, s2, "locked") == "!locked"


def test_shrink_sizes_tries_each_sort_in_turn():
    # sat when a >= 2 or b >= 3: from (3, 3), a shrinks to 1 only if b stays 3
    sat = lambda sz: sz["a"] >= 2 or sz["b"] >= 3  # noqa: E731
    assert shrink_sizes({"a": 3, "b": 3}, sat) == {"a": 1, "b": 3}
    assert shrink_sizes({"b": 3, "a": 3}, sat) == {"b": 1, "a": 2}


def test_conjuncts_split_under_outer_foralls():
    spec = check(parse((HERE / "pages.dmm").read_text(), "pages.dmm"))
    parts = conjuncts(spec.invariants[0].formula)
    # the third conjunct's own forall is split too: its variable joins the clause's
    assert [[v.name for v in vs] for vs, _ in parts] == [["p"], ["p"], ["p", "q"]]


def test_report_is_plain_off_a_terminal_and_coloured_on_one():
    _, r = _cti("pages", "take", "one_page")
    plain, tty = io.StringIO(), io.StringIO()
    report._show_counterexample(report.Out(plain), r)
    report._show_counterexample(report.Out(tty, color=True), r)
    assert "\x1b[" not in plain.getvalue() and "\x1b[31m✗ inductive/take/one_page" in tty.getvalue()
    # the same text either way, columns aligned and no line wrapped
    assert re.sub(r"\x1b\[[0-9;]*m", "", tty.getvalue()) == plain.getvalue()
