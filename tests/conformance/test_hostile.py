"""A fast sample of the robustness campaign (bench/robustness.py runs the full one, each case in a
process of its own): hostile specs, traces, configuration files, options and adapters, run in
process. None may end in an internal error, a traceback, an exit outside its allowed set, or a
finding lost."""

from __future__ import annotations

import pytest

from dmmcheck.main import main
from tests.hostile import cases

SAMPLE = cases(15, seed=1)


@pytest.mark.parametrize("case", SAMPLE, ids=[f"{i}-{c.kind}-{c.argv[0]}" for i, c in enumerate(SAMPLE)])
def test_hostile_input_gets_a_clear_answer(case, tmp_path, capsys, monkeypatch):
    argv = case.materialize(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DMM_CACHE_DIR", str(tmp_path / "cache"))
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc != 70, err
    assert "Traceback (most recent call last)" not in err, err
    assert rc in case.allowed, (argv, rc, err[-600:])
    if case.finding:
        assert rc != 0, "a misbehaving implementation passed"
