"""Every malformed spec gets file:line:col, the source line, a caret and what was expected; never a
traceback. Hand-written cases keep their exact output in `bad/*.expect` (golden, mypyvy-style:
regenerate with DMM_REGEN_GOLDEN=1 and review the diff); mutants of the bundled spec are checked for
the shape of the message."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dmmcheck.spec import SpecError, bundled_path, check, parse
from dmmcheck.main import main

BAD = Path(__file__).parent / "bad"
CASES = sorted(BAD.glob("*.dmm"))
HEAD = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): error: .+$")


def diagnose(text: str, name: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        check(parse(text, name))
    return info.value


def assert_well_formed(err: SpecError, text: str) -> None:
    """Each diagnostic: a located headline, the source line, a caret under the column, an expected line."""
    lines = text.splitlines()
    out = err.render().splitlines()
    for d in err.diagnostics:
        assert 1 <= d.loc.line <= max(len(lines), 1), d
        assert d.loc.col >= 1, d
        assert d.expected, f"no 'expected' for: {d.message}"
        block = d.render(text).splitlines()
        assert HEAD.match(block[0]), block[0]
        if lines:
            # the source line, or on a long line a window of it around the column ("..." each side cut)
            line, shown, caret = lines[d.loc.line - 1].rstrip("\r").expandtabs(1), block[1][4:], block[2].index("^") - 4
            assert shown.removeprefix("...").removesuffix("...").strip() in line
            if d.loc.col - 1 < len(line):
                assert shown[caret] == line[d.loc.col - 1]  # the caret under the character it names
        assert block[-1].startswith("  expected: ")
    assert out, "empty error output"


def test_corpus_is_large_enough():
    assert len(CASES) >= 50


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_hand_written_case_matches_golden(path: Path):
    text = path.read_text()
    err = diagnose(text, path.name)
    assert_well_formed(err, text)
    rendered = err.render() + "\n"
    expect = path.with_suffix(".expect")
    if os.environ.get("DMM_REGEN_GOLDEN"):
        expect.write_text(rendered)
    assert expect.exists(), f"missing golden file {expect.name} (run with DMM_REGEN_GOLDEN=1)"
    assert rendered == expect.read_text()


def test_syntax_cases_say_syntax_and_type_cases_say_type():
    for path in CASES:
        err = diagnose(path.read_text(), path.name)
        msg = err.diagnostics[0].message
        if path.stem.startswith("syntax_"):
            assert msg.startswith("unexpected"), (path.name, msg)
        else:
            assert not msg.startswith("unexpected"), (path.name, msg)


def test_multiple_errors_are_all_reported():
    err = diagnose((BAD / "type_multiple_errors.dmm").read_text(), "m.dmm")
    assert len(err.diagnostics) == 3


# ---------------------------------------------------------------- mutants of the bundled spec

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|:=|!=|<=|>=|[(){}\[\],.:=<>+?-]")
_REPLACEMENTS = ["(", ")", "{", "}", ",", ":", ".", ":=", "=", "none", "true", "forall", "and", "1",
                 "zz_unknown", "mfn", "vm", "gva", "insert", "requires", "?"]


def mutants(count: int, seed: int = 7) -> list[tuple[str, str]]:
    """Variants of the bundled spec with one token deleted, replaced or duplicated; only those that
    actually fail to check are kept (a mutation can be harmless)."""
    text = bundled_path().read_text()
    tokens = [m for m in _TOKEN.finditer(text) if not text[: m.start()].rsplit("\n", 1)[-1].lstrip().startswith("#")]
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    tries = 0
    while len(out) < count and tries < count * 20:
        tries += 1
        t = rng.choice(tokens)
        op = rng.choice(["delete", "replace", "duplicate"])
        new = {"delete": "", "replace": rng.choice(_REPLACEMENTS), "duplicate": t.group() + " " + t.group()}[op]
        variant = text[: t.start()] + new + text[t.end():]
        try:
            check(parse(variant, "dmm.dmm"))
        except SpecError:
            out.append((f"{op}@{t.start()}:{t.group()}->{new}", variant))
    return out


MUTANTS = mutants(60)


def test_enough_mutants_fail():
    assert len(MUTANTS) >= 50


@pytest.mark.parametrize("name,variant", MUTANTS, ids=[n for n, _ in MUTANTS])
def test_mutant_gets_located_message(name: str, variant: str):
    err = diagnose(variant, "dmm.dmm")
    assert_well_formed(err, variant)


def test_cli_exit_4_and_no_traceback(tmp_path: Path, capsys):
    for path in CASES[:10]:
        assert main(["parse", str(path)]) == 4  # a spec error, in every command
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert HEAD.match(err.splitlines()[0])


def test_cli_missing_file(tmp_path: Path, capsys):
    assert main(["parse", str(tmp_path / "nope.dmm")]) == 2
    assert "cannot read spec" in capsys.readouterr().err


def test_cli_binary_file(tmp_path: Path, capsys):
    p = tmp_path / "bin.dmm"
    p.write_bytes(b"\xff\xfe\x00sort")
    assert main(["parse", str(p)]) == 4  # located: a spec error, not an unreadable file
    assert "not UTF-8" in capsys.readouterr().err


def test_cli_subprocess_no_traceback():
    """The installed entry point, end to end, on a malformed spec."""
    r = subprocess.run([sys.executable, "-m", "dmmcheck", "parse", str(BAD / "syntax_missing_paren.dmm")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4
    assert "Traceback" not in r.stderr
    assert "syntax_missing_paren.dmm:3:1: error:" in r.stderr or "syntax_missing_paren.dmm:2:" in r.stderr


# ---------------------------------------------------------------- limits of the front end, stated as errors
def test_definitions_that_double_each_other_are_a_located_error_not_an_exponential_blowup():
    defs = "".join(f"define d{i}(): int = d{i - 1}() + d{i - 1}()\n" if i else "define d0(): int = 1\n" for i in range(40))
    text = f"sort vm\nfunction x(vm): int\n{defs}init {{\n  forall v: vm. x(v) := d39()\n}}\n"
    err = diagnose(text, "exp.dmm")
    first = err.diagnostics[0]
    assert "definition 'd17' expands to more than 200,000 formula nodes" in first.message
    assert first.loc.line == 3 + 17  # the first definition past the limit, where it is declared
    assert_well_formed(err, text)


def test_an_integer_literal_too_long_is_located():
    text = "sort vm\nfunction x(vm): int\ninit {\n  forall v: vm. x(v) := " + "9" * 5000 + "\n}\n"
    with pytest.raises(SpecError) as e:
        parse(text, "big.dmm")
    d = e.value.diagnostics[0]
    assert (d.loc.line, d.loc.col) == (4, 25) and "integer literal of 5000 digits" in d.message
    block = d.render(text).splitlines()  # the long line is shown as a window, the caret on its column
    assert len(block[1]) < 420 and block[1][block[2].index("^")] == "9"


def test_bytes_that_are_not_utf8_are_located(tmp_path: Path, capsys):
    p = tmp_path / "bin.dmm"
    p.write_bytes(b"sort vm\nrelation r(vm)\n# caf\xe9\n")
    assert main(["parse", str(p)]) == 4
    assert f"{p}:3:6: error: spec is not UTF-8 text: byte 0xe9" in capsys.readouterr().err


def test_a_form_feed_or_nel_does_not_shift_the_line_shown():
    text = "sort vm\f\nsort gfn  # a NEL \x85 and a line separator \u2028 in a comment\nfrobnicate\n"
    err = diagnose(text, "ff.dmm")
    d = err.diagnostics[0]
    assert d.loc.line == 3 and d.render(text).splitlines()[1].strip() == "frobnicate"


def test_many_diagnostics_are_counted_past_the_first_hundred():
    text = "sort vm\nrelation r(vm)\ninit {\n  forall v: vm. r(v) := false\n}\n" + \
        "".join(f"invariant i{i}: nope{i}\n" for i in range(5000))
    err = diagnose(text, "many.dmm")
    assert len(err.diagnostics) == 5000
    out = err.render()
    assert out.count(": error: ") == 100 and out.endswith("... and 4900 more errors (the first 100 are shown)")
