"""The wire protocol dmm-adapter/1: the JSON forms, the child the harness owns (time limits, deaths,
malformed replies, restarts, no zombies), the reference server, adapter-check, the CLI, and the
same verdicts in process and out of process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmmcheck.conformance import wire
from dmmcheck.conformance.abstraction import Universe, to_spec_state
from dmmcheck.conformance.adapter import Config, Observation, Operation
from dmmcheck.conformance.child import STDERR_KEPT, ChildAdapter
from dmmcheck.conformance.fuzz import Tuning, fuzz
from dmmcheck.conformance.oracle import Failure, Judge
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.main import build_parser, main
from dmmcheck.spec import load
from tests.conformance.modes import moded
from tests.scenarios import SETUP as SCENARIO
from tests.scenarios import X, op

SPEC = load(None)
SETUP = moded(SCENARIO)
PY = sys.executable
SERVE = f"{PY} -m dmmcheck.conformance.serve"
MISBEHAVE = f"{PY} {Path(__file__).parent / 'children' / 'misbehave.py'}"


# Everything the state can hold: swap, sharing, balloon, a second VM, several gvas and roots.
BUSY = SETUP + moded([op("vm_create", v=1), op("cr3_load", v=1, c=0, r=5)]) + [
                op("guest_map", v=1, r=5, x=X[1], g=13, w=True, u=False, nx=True, a=True, d=True),
                op("guest_walk", v=1, c=0, x=X[1], a="write", u=False, value=5),
                op("guest_map", v=0, r=0, x=X[4], g=14, w=False, u=True, nx=False, a=True, d=False),
                op("guest_walk", v=0, c=0, x=X[4], a="read", u=True),
                op("share_merge", v1=0, g1=12, v2=1, g2=13), op("swap_out", v=0, g=14),
                op("balloon_inflate", v=1, g=15), op("pool_grow", v=0)]


def misbehave(mode: str, cue: str = "step:0", timeout: float = 10.0) -> ChildAdapter:
    return ChildAdapter(f"{MISBEHAVE} {mode} {cue}", timeout)


def verdict(adapter, ops: list[Operation], timeout: float = 10.0) -> Failure:
    r = Runner(adapter, SPEC, Config(), timeout)
    with pytest.raises(Failure) as e:
        r.reset()
        for o in ops:
            r.step(o)
    return e.value


def gone(pid: int) -> bool:
    """Reaped: no process, not even a zombie."""
    return not Path(f"/proc/{pid}").exists()


# ---------------------------------------------------------------- the JSON forms
def busy_vmm() -> BundledVmm:
    a = BundledVmm()
    a.reset(Config(vcpus=1))
    for o in BUSY:
        a.step(o)
    return a


def test_the_json_form_round_trips_the_abstract_state():
    st = busy_vmm().abstract_state()
    assert st["swap"] and st["spte"] and st["rmap"] and st["gmap"] and st["ballooned"]  # a state worth the test
    sent = json.loads(json.dumps(wire.state_to_json(st)))
    wire.check_reply("abstract_state", {"ok": sent})
    assert not any(isinstance(k, tuple) for v in sent.values() if isinstance(v, dict) for k in v)
    back = wire.state_from_json(sent)
    assert back == st
    judge = Judge(SPEC, Config(vcpus=1))
    u = Universe((0, 1), 16, 1, 24, Config().roots, X, 4, vcpus=1)
    assert to_spec_state(judge.it, u, back, back["vms"]) == to_spec_state(judge.it, u, st, st["vms"])


def test_the_json_forms_of_observations_and_capabilities_round_trip():
    a = BundledVmm()
    a.reset(Config(vcpus=1))
    for o in SETUP[:4]:  # up to the guest_map: an observation with guest writes
        obs = a.step(o)
    sent = json.loads(json.dumps(wire.observation_to_json(obs)))
    wire.check_reply("step", {"ok": sent})
    assert wire.observation_from_json(sent) == obs and obs.guest_writes
    caps = a.capabilities()
    assert wire.caps_from_json(json.loads(json.dumps(wire.caps_to_json(caps)))) == caps


def test_the_schemas_name_what_a_reply_breaks():
    state = wire.state_to_json(busy_vmm().abstract_state())
    state["gmap"][0][4] = 1  # a bool as an int
    with pytest.raises(wire.WireError, match=r"gmap\[0\]\[4\] must be boolean"):
        wire.check_reply("abstract_state", {"ok": state})
    with pytest.raises(wire.WireError, match="integer"):
        wire.check_reply("step", wire.decode(b'{"ok":{"events":[],"guest_writes":[[0,4096.0,""]]}}'))
    with pytest.raises(wire.WireError):  # ok and error at once
        wire.check_reply("reset", {"ok": None, "error": "x"})
    wire.check_reply("reset", {"error": "over budget", "type": "ValueError"})
    with pytest.raises(wire.WireError, match="unknown call"):
        wire.check_request({"call": "step_all"})


# ---------------------------------------------------------------- the child the harness owns
def test_the_bundled_vmm_out_of_process_is_judged_as_in_process():
    a = ChildAdapter(SERVE)
    r = Runner(a, SPEC, Config())
    r.reset()
    for o in BUSY:
        r.step(o)
    b = Runner(BundledVmm(), SPEC, Config())
    b.reset()
    for o in BUSY:
        b.step(o)
    assert [rec.spec_steps for rec in r.records] == [rec.spec_steps for rec in b.records]
    assert a.peer == BundledVmm.name
    pid = a.channel.proc.pid
    a.close()
    assert gone(pid)


def test_a_child_that_hangs_is_a_timeout_naming_the_step_and_is_killed_then_restarted():
    a = misbehave("hang", "step:2", timeout=0.5)
    pid = a.channel.proc.pid
    t0 = time.monotonic()
    f = verdict(a, SETUP, timeout=5.0)  # the runner's own alarm is later: the verdict is the child's
    assert time.monotonic() - t0 < 4
    assert f.kind == "timeout" and f.message.startswith(f"step 2 ({SETUP[2].action}): no reply within")
    assert "misbehave: hang at step 2" in f.detail  # the stderr tail
    assert gone(pid) and not a.channel.running
    r = Runner(a, SPEC, Config())  # the harness goes on: the next reset starts a new child
    r.reset()
    r.step(SETUP[0])
    assert len(a.starts) == 2 and a.channel.proc.pid != pid
    a.close()


def test_the_runners_alarm_cannot_fire_first():
    # Same limit for both: the child's is kept a margin shorter, so the verdict still names the call.
    a = misbehave("hang", "step:1", timeout=0.6)
    f = verdict(a, SETUP, timeout=0.6)
    assert f.kind == "timeout" and f.message.startswith("step 1 (cr3_load): no reply")
    assert not a.channel.running


@pytest.mark.parametrize("mode, how", [("segv", "killed by signal 11 (SIGSEGV)"),
                                       ("abort", "killed by signal 6 (SIGABRT)"), ("exit", "exited with status 3")])
def test_a_child_that_dies_is_a_crash_naming_the_step_and_how_it_ended(mode, how):
    a = misbehave(mode, "step:3")
    pid = a.channel.proc.pid
    f = verdict(a, SETUP)
    assert f.kind == "crash"
    assert f.message == f"step 3 ({SETUP[3].action}): the implementation died ({how}) before it replied"
    assert f"misbehave: {mode} at step 3" in f.detail
    assert gone(pid)
    a.reset(Config(vcpus=1))  # restarted
    assert a.channel.running
    a.close()


def test_a_reply_that_is_not_json_is_a_crash_quoting_it():
    f = verdict(misbehave("garbage", "abstract_state:2"), SETUP)
    assert f.kind == "crash"
    assert f.message.startswith("abstract_state after step 1: the reply is not a line of JSON")
    assert "'Segmentation fault? no: garbage'" in f.message


def test_half_a_line_is_a_crash_quoting_the_half():
    f = verdict(misbehave("half", "step:1"), SETUP)
    # (the root is paged in before it is shadowed: the first event of the CR3 load is demand_page)
    assert f.kind == "crash" and f.message.endswith("in the middle of its reply: '{\"ok\":{\"events\":[[\"d'")
    assert f.message.startswith("step 1 (cr3_load): the implementation died (exited with status 0)")


def test_a_schema_violation_is_a_crash_quoting_the_reply():
    f = verdict(misbehave("schema", "abstract_state:3"), SETUP)
    assert f.kind == "crash"
    assert f.message.startswith("abstract_state after step 2: the reply breaks dmm-adapter/1 (schema violation: "
                                "data.ok.vms[0].live must be boolean)")
    assert '\'{"ok":{"mfns":[1,24]' in f.message and f.message.endswith("characters)")  # quoted, truncated
    f = verdict(misbehave("schema", "step:0"), SETUP)
    assert "data.ok.events must be array" in f.message and '{"ok":{"events":"none"' in f.message


def test_an_error_reply_is_a_crash_and_the_child_lives_on():
    a = ChildAdapter(SERVE)
    f = verdict(a, [op("vm_create", v=0), op("no_such_operation")])
    assert f.kind == "crash"
    assert f.message == "step 1 (no_such_operation) raised ValueError: unknown operation 'no_such_operation'"
    assert "Traceback" in f.detail and a.channel.running
    # the same verdict in process
    g = verdict(BundledVmm(), [op("vm_create", v=0), op("no_such_operation")])
    assert (g.kind, g.message) == (f.kind, f.message)
    a.close()


def test_a_configuration_refused_out_of_process_is_bad_input_as_in_process(tmp_path, monkeypatch, capsys):
    (tmp_path / "refuse.py").write_text(
        "from dmmcheck.conformance.vmm_adapter import BundledVmm\n"
        "class Vmm(BundledVmm):\n"
        "    def reset(self, config):\n"
        "        if config.vms > 1:\n"
        "            raise ValueError('this VMM runs one VM at a time')\n"
        "        super().reset(config)\n")
    monkeypatch.chdir(tmp_path)
    assert main(["fuzz", "--impl", "refuse:Vmm", "--examples", "1"]) == 2
    assert main(["fuzz", "--impl-cmd", f"{SERVE} --impl refuse:Vmm", "--examples", "1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["dmm fuzz: the adapter refuses the configuration: this VMM runs one VM at a time"] * 2


def test_a_child_flooding_stderr_never_blocks_the_harness():
    a = misbehave("flood", "none:0")
    r = Runner(a, SPEC, Config())
    t0 = time.monotonic()
    r.reset()
    for o in SETUP:
        r.step(o)
    assert time.monotonic() - t0 < 30
    assert r.records[-1].observation.access.value == 5  # the read-back of SETUP's store
    assert 0 < len(a.channel.stderr.tail()) <= STDERR_KEPT and len(a.channel.stderr._data) <= STDERR_KEPT
    a.close()


def test_a_child_speaking_another_version_is_refused_at_the_handshake(tmp_path, capsys):
    with pytest.raises(Failure, match=r"speaks 'dmm-adapter/0'; this harness speaks 'dmm-adapter/1'"):
        misbehave("version")
    assert main(["fuzz", "--impl-cmd", f"{MISBEHAVE} version", "--examples", "1", "--trace-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the handshake (hello): the implementation speaks 'dmm-adapter/0'" in err and "Traceback" not in err


def test_a_restart_is_measured_and_no_child_is_left_behind():
    a = misbehave("exit", "reset:1")
    r = Runner(a, SPEC, Config())
    pids = [a.channel.proc.pid]
    r.reset()
    for _ in range(2):  # each child exits at its second reset; the reset after that starts a new one
        with pytest.raises(Failure, match=r"^crash: reset: the implementation died \(exited with status 3\)"):
            r.reset()
        assert not a.channel.running
        r.reset()
        pids.append(a.channel.proc.pid)
        r.step(SETUP[0])
    assert len(a.starts) == 3 and len(set(pids)) == 3 and all(0 < s < 10 for s in a.starts)
    a.close()
    assert all(gone(p) for p in pids)


# ---------------------------------------------------------------- adapter-check
def test_adapter_check_passes_the_reference_server(capsys):
    assert main(["adapter-check", "--impl-cmd", SERVE]) == 0
    out = capsys.readouterr().out
    assert "17 checks, 0 violations" in out


@pytest.mark.parametrize("mode, cue, check, problem", [
    ("lenient", "none:0", "step of an unknown operation (must be refused)", "must be refused with an error reply"),
    ("baddigest", "none:0", "read_guest digest", "not the sha256"),
    ("segv", "step:1", "step cr3_load", "killed by signal 11 (SIGSEGV)"),
    ("schema", "abstract_state:0", "abstract_state after reset", "data.ok.vms[0].live must be boolean"),
    ("version", "none:0", "hello", "speaks 'dmm-adapter/0'"),
])
def test_adapter_check_names_each_violation_with_its_message(capsys, mode, cue, check, problem):
    assert main(["adapter-check", "--impl-cmd", f"{MISBEHAVE} {mode} {cue}", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    bad = [c for c in out["checks"] if not c["ok"]]
    assert bad[0]["name"] == check and problem in bad[0]["problem"] and bad[0]["sent"].startswith("'{\"call\"")
    assert out["violations"] == sum(c["ran"] for c in bad) >= 1
    if mode == "segv":  # the child is gone: what follows is not run, and not counted
        assert out["violations"] == 1 and not out["checks"][-1]["ran"]


def test_adapter_check_of_an_in_process_adapter_and_bad_input(capsys):
    assert main(["adapter-check", "--impl", "dmmcheck.conformance.vmm_adapter:BundledVmm"]) == 0
    assert main(["adapter-check", "--impl", "no.such:Thing"]) == 2
    assert main(["adapter-check", "--impl-cmd", "no-such-program"]) == 2
    assert main(["adapter-check"]) == 2
    err = capsys.readouterr().err
    assert "cannot import no.such" in err and "no such program 'no-such-program'" in err and "Traceback" not in err


def test_adapter_check_is_a_library_call_with_typed_options(capsys):
    # no argparse: what a team's own tooling calls; the options' defaults are the command line's
    from dmmcheck.conformance.adapter_check import CheckOptions
    from dmmcheck.conformance.adapter_check import main as check

    assert check(CheckOptions(impl_cmd=SERVE, json=True)) == 0
    assert json.loads(capsys.readouterr().out)["violations"] == 0
    assert check(CheckOptions()) == 2
    parsed = build_parser("adapter-check").parse_args(["adapter-check", "--impl-cmd", "x"])
    assert CheckOptions(impl_cmd="x") == CheckOptions(parsed.impl, parsed.impl_cmd, parsed.timeout, parsed.config,
                                                      parsed.json)


def test_fuzz_options_defaults_are_the_command_lines():
    from dataclasses import fields

    from dmmcheck.conformance.cli import FuzzOptions

    parsed = build_parser("fuzz").parse_args(["fuzz"])
    assert all(hasattr(parsed, f.name) for f in fields(FuzzOptions))  # every option is one of dmm fuzz's
    assert FuzzOptions.of(parsed) == FuzzOptions()
    assert FuzzOptions.of(build_parser("fuzz").parse_args(["fuzz", "--seed", "3", "--fixed-scope"])) == \
        FuzzOptions(seed=3, fixed_scope=True)


# ---------------------------------------------------------------- the command line
@pytest.mark.parametrize("argv, message", [
    (["fuzz", "--impl-cmd", ""], "--impl-cmd '': expected a command"),
    (["fuzz", "--impl-cmd", "no-such-program --serve"], "no such program 'no-such-program'"),
    (["fuzz", "--impl-cmd", "'unbalanced"], "cannot parse the command"),
    (["fuzz", "--impl-cmd", "true"], "the handshake (hello): the implementation died (exited with status 0)"),
    (["fuzz", "--impl-cmd", "sh -c 'echo cannot open the device >&2; exit 1'"],
     "(exited with status 1) before it replied\nthe implementation's stderr (the end):\ncannot open the device"),
    (["mutants", "--impl-cmd", ""], "--impl-cmd '': expected a command"),
    (["mutants", "--impl-cmd", "no-such-program"], "no such program"),
])
def test_a_bad_impl_cmd_is_a_message_and_exit_2(capsys, tmp_path, argv, message):
    assert main(argv + ["--json"] + (["--trace-dir", str(tmp_path)] if argv[0] == "fuzz" else [])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_bad_impl_cmd_for_replay_is_exit_2(capsys, tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"format": "dmm-trace/1", "values": "impl", "impl_cmd": "no-such-program"}) + "\n")
    assert main(["replay", str(trace)]) == 2
    assert main(["replay", str(trace), "--impl-cmd", ""]) == 2
    err = capsys.readouterr().err
    assert "no such program 'no-such-program'" in err and "expected a command" in err
    with pytest.raises(SystemExit) as e:  # one or the other
        main(["replay", str(trace), "--impl", "a:b", "--impl-cmd", "true"])
    assert e.value.code == 2


def test_a_trace_records_the_command_and_replays_it(capsys, tmp_path):
    assert main(["fuzz", "--impl-cmd", SERVE, "--mutant", "swap_in_not_read", "--fixed-scope", "--steps", "20",
                 "--trace-dir", str(tmp_path), "--json"]) == 1
    (trace,) = tmp_path.glob("*.jsonl")
    header = json.loads(trace.read_text().splitlines()[0])
    assert header["impl_cmd"] == SERVE and header["adapter"] is None
    capsys.readouterr()
    assert main(["replay", str(trace), "--json"]) == 1  # the command the trace names
    out = json.loads(capsys.readouterr().out)
    assert out["same_as_recorded"] and out["verdict"] == "observation"
    assert main(["replay", str(trace), "--json", "--impl", "dmmcheck.conformance.vmm_adapter:BundledVmm"]) == 1
    assert json.loads(capsys.readouterr().out)["same_as_recorded"]


def test_mutants_of_an_out_of_process_adapter_come_from_its_capabilities(capsys):
    assert main(["mutants", "--impl-cmd", SERVE, "--only", "swap_in_not_read", "--seconds-per-mutant", "60",
                 "-j", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in out["mutants"]] == ["swap_in_not_read"] and out["killed"] == 1
    assert out["mutants"][0]["oracle"] == "observation"
    assert main(["mutants", "--impl-cmd", f"{MISBEHAVE} ok", "--only", "no_such_mutant"]) == 2


def test_serve_answers_on_stdout_only_and_exits_0_after_close():
    p = subprocess.run([PY, "-m", "dmmcheck.conformance.serve"], input=b"\n".join([
        wire.encode({"call": "hello", "protocol": "dmm-adapter/1"}).strip(), b"not json",
        wire.encode({"call": "close"}).strip(), wire.encode({"call": "capabilities"}).strip()]) + b"\n",
        capture_output=True, timeout=60)
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and len(lines) == 3  # nothing answered after close
    assert json.loads(lines[0])["ok"]["protocol"] == "dmm-adapter/1"
    assert json.loads(lines[1])["error"].startswith("bad request: not a line of JSON")
    assert json.loads(lines[2]) == {"ok": None}
    p = subprocess.run([PY, "-m", "dmmcheck.conformance.serve", "--impl", "no.such:Thing"], input=b"",
                       capture_output=True, timeout=60)
    assert p.returncode == 2 and b"cannot import no.such" in p.stderr and p.stdout == b""


def test_pytest_plugin_runs_the_suite_out_of_process(tmp_path):
    p = subprocess.run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--dmm-impl-cmd", SERVE,
                        "--dmm-examples", "3", "--dmm-traces", str(tmp_path / "traces")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2 passed" in p.stdout
    p = subprocess.run([PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--dmm-impl-cmd", "",
                        "--dmm-traces", str(tmp_path / "traces")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 1 and "--impl-cmd '': expected a command" in p.stdout


# ---------------------------------------------------------------- same verdicts
def test_the_same_seed_gives_the_same_campaign_in_process_and_out_of_process():
    a = fuzz(BundledVmm, SPEC, Config(), examples=12, seed_=5)
    b = fuzz(lambda: ChildAdapter(SERVE), SPEC, Config(), examples=12, seed_=5)
    assert a.failure is None and b.failure is None
    assert (a.examples, a.steps, a.coverage, a.generated, a.scopes) == (b.examples, b.steps, b.coverage, b.generated,
                                                                         b.scopes)
    assert b.steps > 100


@pytest.mark.parametrize("mutant, kind", [("rmap_insert_forgotten", "invariant"), ("swap_in_not_read", "observation")])
def test_a_mutant_gets_the_same_verdict_in_process_and_out_of_process(mutant, kind):
    kw = dict(examples=300, seed_=0, tuning=Tuning(vary_scope=False), steps_per_case=20)  # quick to shrink
    a = fuzz(BundledVmm, SPEC, Config(mutant=mutant), **kw)
    b = fuzz(lambda: ChildAdapter(SERVE), SPEC, Config(mutant=mutant), **kw)
    assert a.failure is not None and a.failure.kind == kind
    assert (b.failure.kind, b.failure.message) == (a.failure.kind, a.failure.message)
    assert [r.op for r in b.shrunk] == [r.op for r in a.shrunk] and b.steps == a.steps


def test_an_observation_seen_out_of_process_reads_as_in_process():
    # guest memory that differs: found through the page digests, then the page's bytes
    ops = SETUP[:5]
    for adapter in (BundledVmm(), ChildAdapter(SERVE)):
        r = Runner(adapter, SPEC, Config())
        r.reset()
        for o in ops:
            r.step(o)
        r.oracle.ideal.vms[0].mem.write64(12 * 4096 + 8, 0x77)  # the ideal machine now disagrees
        with pytest.raises(Failure) as e:
            r.step(op("invlpg", v=0, c=0, x=X[0]))
        assert e.value.message == ("VM 0 gfn 12: guest memory differs from the ideal machine's at gpa 0xc008: "
                                   "0x0 instead of 0x77")


def test_observation_carries_bytes_through_guest_writes():
    obs = wire.observation_from_json({"events": [["guest_write", {"v": 0, "gpa": 8}]],
                                      "guest_writes": [[0, 8, wire.b64(b"\x01\x02")]]})
    assert obs == Observation([("guest_write", {"v": 0, "gpa": 8})], None, [(0, 8, b"\x01\x02")], "")
    with pytest.raises(wire.WireError, match="not base64"):
        wire.observation_from_json({"events": [], "guest_writes": [[0, 8, "**"]]})


def test_no_zombies_after_a_campaign():
    before = _zombies()
    fuzz(lambda: misbehave("segv", "step:5"), SPEC, Config(), examples=20, seed_=1)
    assert _zombies() <= before


def _zombies() -> int:
    me = str(os.getpid())
    n = 0
    for st in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = st.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        n += fields[0] == "Z" and fields[1] == me
    return n
