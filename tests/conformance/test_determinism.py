"""A seed fixes a campaign: loading other code — here a module with an integer literal nobody else
has, as an edit to the VMM, an adapter or the launcher would — changes nothing of the run."""

from __future__ import annotations

import importlib
import sys

from dmmcheck.conformance.adapter import Config
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load


def campaign(seed: int = 3) -> dict:
    r = fuzz(BundledVmm, load(None), Config(), examples=120, seed_=seed)
    return {"steps": r.steps, "cases": r.examples, "coverage": dict(r.coverage), "asked": dict(r.generated),
            "guards": {k: dict(v) for k, v in r.guards.items()}, "failure": r.failure and r.failure.message}


def test_an_unrelated_loaded_literal_changes_nothing(tmp_path, monkeypatch):
    before = campaign()
    # A module outside site-packages and outside any test folder: Hypothesis would harvest its literals.
    (tmp_path / "launcher_extra.py").write_text("PAGE_COUNT = 7340033\nOTHER = -918273645\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("launcher_extra")
    try:
        after = campaign()
    finally:
        sys.modules.pop("launcher_extra", None)
    assert after == before
    assert before["steps"] > 1000 and before["failure"] is None  # a real campaign, not an empty one


def test_a_trace_records_the_hypothesis_version(tmp_path):
    import json

    import hypothesis

    from dmmcheck.conformance.trace import write

    r = fuzz(BundledVmm, load(None), Config(mutant="swap_in_not_read"), examples=200, seed_=1)
    assert r.failure is not None
    path = write(tmp_path / "t.jsonl", spec=load(None), seed=1, adapter="bundled", config=Config(), records=r.shrunk,
                 failure=r.failure, it=r.it)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["hypothesis_version"] == hypothesis.__version__
    assert hypothesis.__version__.startswith("6.170.")  # the range pyproject.toml pins
