"""--config FILE: any scope, checked up front, recorded in traces; the guest laid out anywhere in
the canonical 48-bit space."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dmmcheck.conformance import configfile, scope
from dmmcheck.conformance.adapter import Config, Operation
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.main import main
from dmmcheck.spec import load

SPEC = load(None)

EXAMPLE = """\
vms = 2
gfns = 48
mfns = 12
slots = 2
budget = 10
roots = [0, 24]
beyond_memory = "ones"
gvas = [
    "0x400000",
    { base = "0x7fffffffe000", pages = 2 },
    { base = "0xffff800000000000", pages = 3, stride = "2M" },
    { base = "0x8000000000", pages = 2, stride = "1G" },
]
"""


def write(tmp_path: Path, text: str, name: str = "scope.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_documented_example_loads_with_gvas_in_both_halves_and_every_stride(tmp_path):
    config, vary = configfile.load(write(tmp_path, EXAMPLE))
    assert not vary and config.mfns == 12 and config.budget == 10 and config.roots == (0, 24)
    assert config.beyond_memory == "ones"
    assert config.gvas == tuple(sorted([0x400000, 0x7FFFFFFFE000, 0x7FFFFFFFF000,
                                        0xFFFF800000000000, 0xFFFF800000200000, 0xFFFF800000400000,
                                        0x8000000000, 0x8040000000]))


@pytest.mark.parametrize("text, where, what", [
    ("vms = 2\ncolour = 3\n", ":2", "colour: not a configuration key"),
    ("gvas = [\"0x800000000000\"]\n", ":1", "not a canonical address"),
    ("gvas = [\"0x400010\"]\n", ":1", "not the start of a 4 KiB page"),
    ("gvas = [\"0x400000\", { base = \"0x400000\" }]\n", ":1", "named twice"),
    ("gvas = [{ base = \"0x400000\", pages = 2, stride = \"3M\" }]\n", ":1", "stride"),
    ("gfns = 8\nroots = [0, 9]\n", ":2", "root gfn 9 is not guest memory"),
    ("mfns = 4\nbudget = 5\n", ":2", "budget: expected a whole number from 0 to mfns (4)"),
    ("mfns = 4\nquota = 5\n", ":2", "quota: expected a whole number from 0 to mfns (4)"),
    ("quota = -1\n", ":1", "quota: expected a whole number"),
    ("quota = \"3\"\n", ":1", "quota: expected a whole number"),
    ("vms = 0\n", ":1", "vms: expected a whole number from 1"),
    ("vms = true\n", ":1", "vms: expected a whole number"),
    ("beyond_memory = \"twos\"\n", ":1", "beyond_memory: expected one of 'fault', 'ones', 'zeros'"),
    ("vms = 2\nroots = [0, 5\ngfns = 3\n", ":3:1", "not TOML"),
    ("mfns = 65536\nvms = 64\nroots = [0]\ngvas = [{ base = 0, pages = 1000 }]\n", ":1", "points"),
])
def test_a_bad_file_names_the_line_and_what_is_wrong(tmp_path, text, where, what):
    p = write(tmp_path, text)
    with pytest.raises(configfile.ConfigError) as e:
        configfile.load(p)
    assert str(e.value).startswith(f"{p}{where}") and what in str(e.value), str(e.value)


def test_a_folder_or_a_missing_file_is_bad_input(tmp_path):
    for p in (tmp_path, tmp_path / "missing.toml"):
        with pytest.raises(configfile.ConfigError, match=str(p)):
            configfile.load(p)


def test_the_cli_refuses_a_bad_file_or_a_layout_the_adapter_refuses_with_exit_2(tmp_path, capsys):
    assert main(["fuzz", "--config", str(write(tmp_path, "vms = 0\n")), "--examples", "1"]) == 2
    assert "vms: expected" in capsys.readouterr().err
    # roots 0 and 3 each need five tables for the default gvas: they would overlap
    assert main(["fuzz", "--config", str(write(tmp_path, "roots = [0, 3]\n")), "--examples", "1"]) == 2
    err = capsys.readouterr().err
    assert "the adapter refuses the configuration" in err and "share gfn 3" in err and "Traceback" not in err
    # the bundled VMM keeps its own code page in the top 512 GiB
    top = write(tmp_path, 'gvas = ["0xffffff8000000000"]\nroots = [0]\n')
    assert main(["fuzz", "--config", str(top), "--examples", "1"]) == 2
    assert "PML4 entry 511" in capsys.readouterr().err


def test_a_quota_is_read_recorded_and_judged(tmp_path):
    """quota = N: the per-VM limit reaches the Config, its JSON (traces, the wire), the spec's quota
    parameter and the bundled VMM; absent, it is None (every mfn)."""
    config, _ = configfile.load(write(tmp_path, "mfns = 12\nquota = 5\n"))
    assert config.quota == 5 and config.budget is None
    assert Config.from_json(config.to_json()) == config and config.to_json()["quota"] == 5
    assert config.sizes()["quota"] == 5 and Config().sizes()["quota"] == Config().mfns
    assert configfile.load(write(tmp_path, "mfns = 12\n"))[0].quota is None
    assert "quota < mfns" in scope.describe(config, Config())
    adapter = BundledVmm()
    adapter.reset(replace(config, vcpus=1))  # (the vCPUs it runs)
    assert adapter.vmm.policy.quota == 5


def test_a_quota_scope_runs_clean_and_its_vms_stay_within_it(tmp_path):
    from dmmcheck.conformance.fuzz import Tuning

    config = Config(vms=2, gfns=16, mfns=24, slots=4, quota=4)
    r = fuzz(BundledVmm, SPEC, config, examples=12, seed_=0, tuning=Tuning(vary_scope=False))
    assert r.failure is None, r.failure
    assert r.coverage["oom"] > 0  # a VM at its quota runs out though the VMM pool has pages


def test_a_scarce_scope_reaches_the_out_of_memory_paths_on_every_test_case(tmp_path):
    config, _ = configfile.load(write(tmp_path, EXAMPLE))
    from dataclasses import replace

    config = replace(config, beyond_memory="fault")
    from dmmcheck.conformance.fuzz import Tuning

    r = fuzz(BundledVmm, SPEC, config, examples=12, seed_=0, tuning=Tuning(vary_scope=False))
    assert r.failure is None, r.failure
    assert r.coverage["oom"] > 0 and r.scopes["vms=2"] == r.examples  # every test case at the file's scope


def test_the_bundled_vmm_runs_a_guest_in_both_halves_of_the_address_space():
    x_low, x_high = 0x7FFFFFFFF000, 0xFFFF800000000000
    config = Config(vms=1, gfns=16, mfns=16, roots=(0,), gvas=(x_low, x_high))
    assert scope.tables_per_root(config.gvas) == 7  # PML4, two PDPTs, two PDs, two PTs
    r = Runner(BundledVmm(), SPEC, config)
    r.reset()
    ops = [Operation("vm_create", {"v": 0}), Operation("cr3_load", {"v": 0, "c": 0, "r": 0}),
           Operation("set_mode", {"v": 0, "c": 0, "o": "wp+nxe"})]
    for i, x in enumerate((x_low, x_high)):
        ops += [Operation("guest_map", {"v": 0, "r": 0, "x": x, "g": 10 + i, "w": True, "u": False, "nx": False,
                                        "a": False, "d": False}),
                Operation("guest_walk", {"v": 0, "c": 0, "x": x, "a": "write", "u": False, "value": 0x1111 * (i + 1)})]
    ops += [Operation("guest_walk", {"v": 0, "c": 0, "x": x, "a": "read", "u": False}) for x in (x_low, x_high)]
    for o in ops:
        r.step(o)
    assert [rec.observation.access.value for rec in r.records[-2:]] == [0x1111, 0x2222]


def test_a_failing_trace_records_the_files_scope_and_replays_on_it(tmp_path, capsys):
    cfg = write(tmp_path, 'vms = 1\ngfns = 12\nmfns = 10\nroots = [0]\n'
                          'gvas = [{ base = "0xffff800000000000", pages = 2 }]\n')
    traces = tmp_path / "traces"
    rc = main(["fuzz", "--config", str(cfg), "--mutant", "accessed_not_set", "--seconds", "60", "--json",
               "--trace-dir", str(traces)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1, out
    assert out["config"]["gfns"] == 12  # the scope the failing test case ran at
    trace = Path(out["failures"][0]["trace"])
    header = json.loads(trace.read_text().splitlines()[0])
    assert header["config"]["gvas"] == [0xFFFF800000000000, 0xFFFF800000001000] and header["config"]["gfns"] == 12
    assert main(["replay", str(trace), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["same_as_recorded"] is True


def test_dmm_mutants_runs_at_the_files_scope(tmp_path, capsys):
    cfg = write(tmp_path, 'vms = 1\ngfns = 12\nmfns = 10\nroots = [0]\ngvas = [{ base = "0xffff800000000000", pages = 2 }]\n')
    assert main(["mutants", "--only", "accessed_not_set", "--config", str(cfg), "--seconds-per-mutant", "60",
                 "-j", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["killed"] == 1
    bad = write(tmp_path, "vms = 0\n", "bad.toml")
    assert main(["mutants", "--only", "accessed_not_set", "--config", str(bad), "-j", "1"]) == 2
    assert f"{bad}:1: vms" in capsys.readouterr().err


def test_vcpus_and_roles_are_read_and_checked(tmp_path):
    config, _ = configfile.load(write(tmp_path, 'vcpus = 3\nroles = ["wp+smep+nxe", "-"]\n'))
    assert (config.vcpus, config.roles) == (3, ("wp+smep+nxe", "-")) and config.fixed()["role_wp"] == (True, False)
    assert configfile.load(write(tmp_path, ""))[0].roles == Config().roles
    for text, words in (('roles = ["nxe+wp"]', "in the order wp, smep, smap, nxe"), ('roles = ["wp", "wp"]', "distinct"),
                        ('roles = ["pae"]', "role 'pae'"), ("roles = []", "non-empty list"), ("vcpus = 0", "from 1 to")):
        with pytest.raises(configfile.ConfigError, match=words):
            configfile.load(write(tmp_path, text + "\n"))


def test_a_shadow_page_limit_is_read_recorded_and_reaches_the_vmm(tmp_path):
    """shadow_pages = N: the VMM's shadow-page limit reaches the Config, its JSON (traces; the wire
    only when set), the scope's coverage classes and the bundled VMM's private allocator."""
    config, _ = configfile.load(write(tmp_path, "vcpus = 1\nshadow_pages = 7\n"))
    assert config.shadow_pages == 7 and Config.from_json(config.to_json()) == config
    assert "shadow_pages" not in Config().to_json()  # an adapter that takes no limit never sees the key
    assert "shadow_pages limit" in scope.describe(config, Config())
    adapter = BundledVmm()
    adapter.reset(config)
    assert len(adapter.vmm.private.free) == 7
    with pytest.raises(ValueError, match="1 vCPUs need at least 5 shadow pages"):
        adapter.reset(replace(config, shadow_pages=4))
    for text in ("shadow_pages = 0", 'shadow_pages = "8"'):
        with pytest.raises(configfile.ConfigError, match="shadow_pages: expected a whole number"):
            configfile.load(write(tmp_path, text + "\n"))


def test_a_shadow_page_limit_for_an_adapter_that_takes_none_is_bad_input(tmp_path):
    from dmmcheck.conformance.adapter import Bounds, Capabilities
    from dmmcheck.conformance.fuzz import check_scope
    from dmmcheck.conformance.trace import TraceError

    class NoLimit(BundledVmm):
        def capabilities(self) -> Capabilities:
            return replace(super().capabilities(), scope=Bounds(vcpus=2))  # shadow_pages 0: no limit taken

    with pytest.raises(TraceError, match="takes no shadow-page limit"):
        check_scope(NoLimit(), Config(shadow_pages=8), 10.0)
    check_scope(BundledVmm(), Config(shadow_pages=8), 10.0)  # the bundled VMM takes one


def test_a_scope_at_the_shadow_page_limit_runs_clean_and_reclaims():
    """The fewest shadow pages the bundled VMM runs on: faults reclaim the oldest shadow pages all
    the time, and the campaign stays clean (each reclaim is zaps the spec allows, flushes owed)."""
    from dmmcheck.conformance.fuzz import Tuning

    reclaimed = []

    class Counting(BundledVmm):
        def reset(self, config: Config) -> None:
            super().reset(config)
            real = self.vmm.mmu.reclaim
            self.vmm.mmu.reclaim = lambda sp: (reclaimed.append(sp.mfn), real(sp))

    r = fuzz(Counting, SPEC, Config(shadow_pages=6), examples=15, seed_=0, tuning=Tuning(vary_scope=False))
    assert r.failure is None, r.failure and f"{r.failure}\n{r.failure.detail}"
    assert len(reclaimed) > 10 and r.coverage["zap_spte"] > 0, len(reclaimed)
