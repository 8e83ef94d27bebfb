"""Checked specs kept between processes: the same spec as checking it again, keyed by everything the
result depends on (the path as given, the text, the spec language's code), never an error when the
cache cannot be used, and never a way around a spec's diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmmcheck.spec import SpecError, bundled_path, cache, check, load, parse_file

SPEC = "sort node\nrelation r(node)\ninit { forall n: node. r(n) := false }\ninvariant ok: true\n"


@pytest.fixture
def kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DMM_PARSER_CACHE", str(tmp_path / "parsers"))
    return tmp_path / "parsers"


def _checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = cache.check
    monkeypatch.setattr(cache, "check", lambda f: calls.append(f.file) or real(f))
    return calls


def test_a_spec_checked_once_comes_from_the_cache_the_same(kept, monkeypatch):
    calls = _checks(monkeypatch)
    first = load(None)
    again = load(None)
    assert calls == [str(bundled_path())]  # checked once
    assert again == first == check(parse_file(bundled_path()))
    assert again is not first  # a fresh copy: a caller may not change another's
    assert len(list(kept.glob("spec-*.pickle"))) == 1


def test_a_changed_text_or_another_path_is_checked_again(kept, monkeypatch, tmp_path):
    calls = _checks(monkeypatch)
    f = tmp_path / "a.dmm"
    f.write_text(SPEC)
    load(f)
    f.write_text(SPEC.replace("ok", "fine"))
    assert [i.name for i in load(f).invariants] == ["fine"]
    link = tmp_path / "b.dmm"
    link.symlink_to(f)
    assert load(link).file == str(link)  # locations name the path as given
    assert len(calls) == 3


def test_a_change_to_the_spec_language_is_a_new_key(kept, monkeypatch):
    load(None)
    cache._code_id.cache_clear()
    monkeypatch.setattr(cache, "_FORMAT", "another checker")
    try:
        calls = _checks(monkeypatch)
        load(None)
        assert len(calls) == 1
    finally:
        cache._code_id.cache_clear()


def test_a_damaged_or_unwritable_cache_is_never_an_error(kept, monkeypatch, tmp_path):
    want = load(None)
    (entry,) = kept.glob("spec-*.pickle")
    entry.write_bytes(b"not a pickle")
    assert load(None) == want
    assert entry.read_bytes() != b"not a pickle"  # kept anew
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DMM_PARSER_CACHE", str(blocker / "parsers"))  # below a file: cannot be made
    assert load(None) == want


def test_a_spec_with_errors_is_never_kept_and_always_diagnosed(kept, tmp_path):
    f = tmp_path / "bad.dmm"
    f.write_text(SPEC.replace("r(n) := false", "q(n) := false"))
    for _ in range(2):
        with pytest.raises(SpecError) as e:
            load(f)
        assert "bad.dmm:3:" in e.value.render()
    assert not list(kept.glob("spec-*.pickle"))
    with pytest.raises(SpecError) as e:
        load(tmp_path / "missing.dmm")
    assert "cannot read spec" in e.value.render()
