"""The harness refuses, up front and with what is missing, a spec it cannot judge against."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dmmcheck.conformance import binding
from dmmcheck.conformance.spec_mutants import SPEC_MUTANTS
from dmmcheck.main import main
from dmmcheck.spec import bundled_path, check, load, node, parse

EXAMPLES = Path(__file__).resolve().parent.parent / "model" / "examples"


def _variant(old: str, new: str):
    text = bundled_path().read_text()
    assert text.count(old) == 1
    return check(parse(text.replace(old, new), "variant.dmm"))


def test_the_bundled_spec_and_every_spec_mutant_are_judged():
    assert binding.missing(load(None)) == []
    text = bundled_path().read_text()
    for m in SPEC_MUTANTS:
        spec = check(parse(text.replace(m.old, m.new, 1), f"{m.name}.dmm"))
        assert binding.missing(spec) == [], m.name


def test_a_variant_with_an_extra_invariant_is_judged():
    spec = _variant("invariant no_stale_spte:", "invariant extra_one:\n  true\n\ninvariant no_stale_spte:")
    assert binding.missing(spec) == []


def test_a_changed_parameter_a_missing_action_and_a_missing_symbol_are_named():
    ref = load(None)
    create = ref.actions["vm_create"]
    other = dataclasses.replace(create, params=(node.replace(create.params[0], name="w"),))
    actions = {**{k: a for k, a in ref.actions.items() if k != "swap_out"}, "vm_create": other}
    symbols = {k: s for k, s in ref.symbols.items() if k != "rmap"}
    lacks = binding.missing(dataclasses.replace(ref, actions=actions, symbols=symbols))
    assert lacks == ["state relation 'rmap'", "action 'vm_create' with the parameters (v: vm)", "action 'swap_out'"]


def test_every_name_the_harness_declares_is_the_dmm_specs_and_required_of_a_variant():
    ref = load(None)
    assert binding.named(ref) == []
    # the symbols it names are state an implementation shows: the check against the reference requires them
    assert all(ref.symbols[n].mutable and not ref.symbols[n].ghost for n in binding.NAMED_SYMBOLS)
    assert binding.GMAP[0] in binding.NAMED_SYMBOLS and binding.OUTPUTS.keys() <= binding.NAMED_ACTIONS
    # the symbols the configuration fixes are immutable, and required of a variant too
    assert all(not ref.symbols[n].mutable for n in binding.FIXED_SYMBOLS)
    symbols = {k: s for k, s in ref.symbols.items() if k != binding.ROLE_WP}
    assert binding.missing(dataclasses.replace(ref, symbols=symbols)) == \
        ["immutable relation 'role_wp' with the DMM spec's signature"]


def test_an_enum_whose_values_the_harness_names_must_keep_them():
    # the harness draws and names accesses by these values: a spec with another is refused
    spec = _variant("enum access { read, write, fetch }", "enum access { read, write, fetch, prefetch }")
    assert binding.missing(spec) == ["enum access {read, write, fetch}"]
    with pytest.raises(ValueError, match="lacks enum access"):
        binding.check(spec)


@pytest.mark.parametrize("command", ["fuzz", "replay"])
def test_fuzz_and_replay_refuse_a_spec_that_is_not_the_dmm_spec(command, tmp_path, capsys):
    spec = str(EXAMPLES / "lockserv.dmm")
    trace = tmp_path / "t.jsonl"
    trace.write_text("")
    args = ["fuzz", spec, "--examples", "1"] if command == "fuzz" else ["replay", str(trace), "--spec", spec]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "lockserv.dmm: the conformance harness judges implementations against the DMM spec" in err
    assert "lacks sort 'vm'" in err and "Traceback" not in err
