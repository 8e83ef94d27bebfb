"""mypyvy's example protocols, translated into the spec language (tests/model/examples/NAME.dmm, each
naming the mypyvy example it translates): each proves with the expected result (NAME.expect: every
obligation's status). Regenerate the expected files with DMM_REGEN_GOLDEN=1 after a change that is
meant to change them. Unsat cores are left out: which of several sufficient sets of invariants Z3
reports depends on the terms the process created before (the order tests ran in), not on the spec."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dmmcheck.model.runner import ProveOptions, exit_status, run

HERE = Path(__file__).parent / "examples"
EXAMPLES = sorted(p.stem for p in HERE.glob("*.dmm"))
MYPYVY = {"lockserv", "sharded_kv", "ring_leader_election", "toy_consensus_forall", "ticket", "client_server_ae",
          "toy_leader_consensus_forall", "paxos_forall", "paxos_forall_choosable"}


def _view(results) -> str:
    rows = [{"name": r.name, "status": r.status} for r in results]
    return json.dumps({"exit": exit_status(results), "obligations": rows}, indent=1) + "\n"


def test_every_mypyvy_example_is_here_and_says_what_it_translates():
    assert set(EXAMPLES) == MYPYVY
    for name in EXAMPLES:
        head = (HERE / f"{name}.dmm").read_text().split("\n", 1)[0]
        assert head.startswith(f"# Translated from mypyvy's examples/{name}.pyv"), name


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_proves_as_expected(tmp_path, name):
    results, _ = run(ProveOptions(str(HERE / f"{name}.dmm"), use_cache=False, cache_dir=str(tmp_path), jobs=1))
    got = _view(results)
    expect = HERE / f"{name}.expect"
    if os.environ.get("DMM_REGEN_GOLDEN"):
        expect.write_text(got)
    assert got == expect.read_text()
    assert exit_status(results) == 0  # mypyvy proves every one of them
