"""The standalone parser kept in the parser cache: the same ASTs (locations included) as lark's own
parser, rebuilt when the grammar changes, and never needed: a cache that cannot be written or read
leaves parsing to lark."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmmcheck.spec import ast as A
from dmmcheck.spec.node import fields_of
from dmmcheck.spec import bundled_path, parser
from dmmcheck.spec.errors import SpecError

EXAMPLES = Path(__file__).resolve().parent.parent / "model" / "examples"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DMM_PARSER_CACHE", str(tmp_path / "parsers"))
    parser._standalone.cache_clear()
    yield tmp_path / "parsers"
    parser._standalone.cache_clear()


def _locs(node: object) -> list[tuple[str, A.Loc | None]]:
    """Every node's location: equality of AST nodes ignores them."""
    out: list[tuple[str, A.Loc | None]] = []
    if isinstance(node, tuple):
        for x in node:
            out += _locs(x)
    elif hasattr(node, "__node_fields__"):
        out.append((type(node).__name__, getattr(node, "loc", None)))
        for f in fields_of(node):
            if f.name != "loc":
                out += _locs(getattr(node, f.name))
    return out


def _by_lark(text: str, file: str) -> A.SpecFile:
    from lark import Tree

    return parser._to_spec(parser._lark_parse(text, file), Tree, text, file)


@pytest.mark.parametrize("path", [bundled_path(), *sorted(EXAMPLES.glob("*.dmm"))], ids=lambda p: p.stem)
def test_standalone_parses_as_lark_does(cache_dir: Path, path: Path) -> None:
    text = path.read_text()
    fast = parser.parse(text, str(path))
    assert parser._standalone() is not None, "the standalone parser was not used"
    slow = _by_lark(text, str(path))
    assert fast == slow
    assert _locs(fast.decls) == _locs(slow.decls)
    assert [d.doc for d in fast.decls] == [d.doc for d in slow.decls]


def test_kept_between_processes_and_loaded_again(cache_dir: Path) -> None:
    parser.parse("sort node\n")
    (kept,) = cache_dir.glob("parser-*.marshal")
    parser._standalone.cache_clear()
    before = kept.stat().st_mtime_ns
    assert parser._standalone() is not None
    assert kept.stat().st_mtime_ns == before  # read, not made again


def test_a_changed_grammar_is_a_new_parser(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = "sort node\nrelation r(node)\ninvariant ok: true\n"
    parser.parse(spec)
    grammar = parser._grammar()
    changed = grammar.replace('invariant_decl: "invariant"', 'invariant_decl: "safety"')
    assert changed != grammar
    monkeypatch.setattr(parser, "_grammar", lambda: changed)
    parser._standalone.cache_clear()
    parser._parser.cache_clear()
    try:
        renamed = parser.parse(spec.replace("invariant", "safety"))
        assert parser._standalone() is not None
        assert [type(d).__name__ for d in renamed.decls][-1] == "InvariantDecl"
        with pytest.raises(SpecError):  # the old keyword is gone: the cached parser was not reused
            parser.parse(spec)
        assert len(list(cache_dir.glob("parser-*.marshal"))) == 2
    finally:
        parser._parser.cache_clear()


def test_unwritable_cache_dir_parses_with_lark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DMM_PARSER_CACHE", str(blocker / "parsers"))  # below a file: cannot be made
    parser._standalone.cache_clear()
    try:
        spec = parser.parse(bundled_path().read_text(), "dmm.dmm")
        assert parser._standalone() is None
        assert spec == _by_lark(bundled_path().read_text(), "dmm.dmm")
    finally:
        parser._standalone.cache_clear()


def test_damaged_cache_entry_is_made_again(cache_dir: Path) -> None:
    parser.parse("sort node\n")
    (kept,) = cache_dir.glob("parser-*.marshal")
    kept.write_bytes(b"not marshal data")
    parser._standalone.cache_clear()
    assert parser.parse("sort node\n").decls[0] == A.SortDecl("node")
    assert parser._standalone() is not None
    assert kept.read_bytes() != b"not marshal data"


@pytest.mark.parametrize("text", ["sort node\nrelation r(node\n", "sort node\nrelation r(node) & \n",
                                  "sort node\ninvariant x: 123456789012345678901\n"])
def test_errors_read_as_without_the_cache(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          text: str) -> None:
    with pytest.raises(SpecError) as fast:
        parser.parse(text, "x.dmm")
    assert parser._standalone() is not None
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("DMM_PARSER_CACHE", str(tmp_path / "a-file" / "parsers"))
    parser._standalone.cache_clear()
    with pytest.raises(SpecError) as slow:
        parser.parse(text, "x.dmm")
    assert parser._standalone() is None
    assert fast.value.render() == slow.value.render()
