"""docs/exit-codes.md: a spec with errors exits 4 in every command that reads a spec, whatever the
error (syntax, type, encoding, a missing init); a spec file that cannot be read exits 2; neither ever
ends in a traceback or an internal error (70). A spec with no state at all is a spec, not a crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dmmcheck.main import main

BAD = {
    "syntax": "sort vm\nrelation r(vm\n",
    "type": "sort vm\nrelation r(vmm)\n",
    "no_init": "sort a\nrelation r(a)\naction x(y: a) {\n  insert r(y)\n}\n",
    "reserved_word": "sort vm\nrelation forall(vm)\n",
}


def _commands(spec: str) -> list[list[str]]:
    """Every command that reads a spec, cheap options, the spec last (replay: --spec)."""
    return [["parse", spec], ["explore", spec], ["prove", "--no-cache", spec], ["fuzz", "--examples", "1", spec],
            ["replay", "missing-trace.jsonl", "--spec", spec], ["check", "--fuzz-seconds", "0", spec]]


@pytest.mark.parametrize("kind", [*BAD, "not_utf8"])
def test_a_spec_error_is_4_in_every_command(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.setenv("DMM_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / f"{kind}.dmm"
    if kind == "not_utf8":
        bad.write_bytes(b"\xff\xfe sort vm\n")
    else:
        bad.write_text(BAD[kind])
    for argv in _commands(str(bad)):
        assert main(argv) == 4, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    assert err.count(f"{bad.name}:") >= 6  # every command located the error


def test_a_spec_that_cannot_be_read_is_2_in_every_command(tmp_path, capsys):
    for path in (tmp_path / "missing.dmm", tmp_path):
        for argv in _commands(str(path)):
            assert main(argv) == 2, argv
    assert "Traceback" not in capsys.readouterr().err


def test_the_process_exit_status_is_the_commands(tmp_path):
    bad = tmp_path / "bad.dmm"
    bad.write_text(BAD["type"])
    p = subprocess.run([sys.executable, "-m", "dmmcheck", "prove", "--no-cache", str(bad)], capture_output=True,
                       text=True, env={**__import__("os").environ, "DMM_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 4 and "unknown type 'vmm'" in p.stderr


def test_a_spec_with_no_state_is_checked_not_a_crash(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DMM_CACHE_DIR", str(tmp_path / "cache"))
    for text in ("", "sort a\n", "sort a\nimmutable relation le(a, a)\naxiom refl: forall x: a. le(x, x)\n"):
        spec = tmp_path / "stateless.dmm"
        spec.write_text(text)
        for argv in (["parse", str(spec)], ["explore", str(spec)], ["prove", "--no-cache", str(spec)],
                     ["check", "--fuzz-seconds", "0", str(spec)]):
            assert main(argv) == 0, (text, argv)
    assert "internal error" not in capsys.readouterr().err
    assert Path(spec).exists()
