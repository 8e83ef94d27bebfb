"""dmm explore: the bundled spec at the default bound, and violations with shortest traces."""

from __future__ import annotations

import json
import math

import pytest

from dmmcheck.main import main
from dmmcheck.model.explore import DEFAULT_BOUND, Symmetry, explore
from dmmcheck.model.interp import Interpreter
from dmmcheck.spec import bundled_path, check, load, parse

TINY = {"vm": 1, "root": 1, "gva": 1, "gfn": 1, "mfn": 1, "slot": 1, "vcpu": 1, "role": 1}


def test_bundled_spec_explores_clean_at_default_bound(capsys):
    assert main(["explore", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bound"] == DEFAULT_BOUND
    assert out["complete"] and out["violations"] == []
    assert out["states"] > 10000 and out["transitions"] > out["states"]
    # sharing needs two holders; swap_full needs every slot used and a resident gfn (one gfn: it is swapped)
    never = {"share_merge", "share_rehome", "cow_break", "swap_full"}
    assert set(out["never_enabled"]) == never
    assert {a for a, x in out["actions"].items() if not x["enabled"]} == never and len(out["actions"]) == 43
    assert all(x["transitions"] > 0 for a, x in out["actions"].items() if a not in never)
    (warning,) = out["warnings"]
    assert warning.startswith("never enabled at this bound: ") and all(a in warning for a in never)
    assert out["transitions_per_second"] > out["states_per_second"] > 0 and out["processes"] == 1


# A VMM that forgets to drop the rmap entry when it zaps an spte (zap_spte's rmap update left out).
_ZAP_TAIL = ("  remove s_stale(v, r, o, x)\n  forall c: vcpu. insert flush_pending(v, c)\n}\n\n"
             "# ---------------------------------------------------------------- TLB")
FORGOTTEN_RMAP = ("  forall m: mfn. remove rmap(m, v, r, o, x)\n" + _ZAP_TAIL, _ZAP_TAIL)


def _broken(old: str, new: str = "") -> str:
    text = bundled_path().read_text()
    assert old in text
    return text.replace(old, new, 1)


def test_violation_has_shortest_trace_and_exit_1(tmp_path, capsys):
    # A VMM that forgets to drop the rmap entry when it zaps an spte.
    p = tmp_path / "broken.dmm"
    p.write_text(_broken(*FORGOTTEN_RMAP))
    assert main(["explore", str(p), "--bound", ",".join(f"{k}={v}" for k, v in TINY.items()), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    (v,) = out["violations"]
    assert v["invariant"] == "rmap_consistent"
    actions = [st["action"] for st in v["trace"]]
    # create, map, allocate, fill, zap: nothing shorter reaches a zapped spte.
    assert actions == ["init", "vm_create", "guest_map", "demand_page", "shadow_fill", "zap_spte"]


def test_trace_states_are_real_successors():
    spec = check(parse(_broken("  refcount(m) := refcount(m) - 1\n  if refcount(m) = 1 {\n    status(m) := free",
                                "  if refcount(m) = 1 {\n    status(m) := free"), "b.dmm"))
    it = Interpreter(spec, {**TINY, "mfn": 2})
    r = explore(it)
    assert r.violations
    _, trace = r.violations[0]
    s = trace[0].state
    assert s in it.initial_states()
    for step in trace[1:]:
        args = it.parse_args(step.action, dict(a.split("=") for a in step.args.split(", ")) if step.args else {})
        assert it.is_enabled(s, step.action, args)
        s = it.apply(s, step.action, args)
        assert s == step.state


def test_symmetry_reduces_and_agrees():
    it = Interpreter(check(parse(TOY, "toy.dmm")), {"vm": 3, "mfn": 3})
    with_sym = explore(it, symmetry=True)
    without = explore(it, symmetry=False)
    assert with_sym.complete and without.complete and with_sym.violations == without.violations == []
    # Orbits: 3 VMs x 3 pages, each VM maps at most one page: counted by hand, 4 orbits of
    # "how many VMs map a page, all distinct pages" (0, 1, 2, 3 VMs) vs 34 raw states.
    assert (with_sym.states, without.states) == (4, 34)


TOY = """
sort vm
sort mfn
function owner(mfn): vm?
function has(vm): mfn?
init {
  forall m: mfn. owner(m) := none
  forall v: vm. has(v) := none
}
action grab(v: vm, m: mfn) {
  requires has(v) = none and owner(m) = none
  owner(m) := v
  has(v) := m
}
invariant exclusive: forall v: vm, m: mfn. has(v) = m iff owner(m) = v
"""


def test_canonical_is_orbit_invariant():
    import random

    it = Interpreter(load(), {"vm": 2, "root": 1, "gva": 2, "gfn": 2, "mfn": 3, "slot": 1}, fixed={"role_wp": (True, False)})
    sym = Symmetry(it)
    rng = random.Random(0)
    s = it.initial_state()
    for _ in range(40):
        a, args = rng.choice(list(it.enabled(s)))
        s = it.apply(s, a, args)
    c = sym.canonical(s)
    for entry in sym.maps[:10]:
        t = list(s)
        for k, pick, remap in entry:
            t[k] = pick(s[k]) if remap is None else tuple(map(remap.__getitem__, pick(s[k])))
        assert sym.canonical(tuple(t)) == c


def test_incomplete_is_not_a_pass(capsys):
    assert main(["explore", "--max-states", "100", "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert not out["complete"] and "state limit" in out["stopped_by"]


@pytest.mark.parametrize("bound", ["vmm=2", "vm=0", "vm"])
def test_bad_bound_exit_2(bound, capsys):
    assert main(["explore", "--bound", bound]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_copy_of_the_bundled_spec_explores_at_the_same_default_bound(tmp_path, capsys):
    copy = tmp_path / "copy.dmm"
    copy.write_text(open(bundled_path()).read())
    # the first 20,000 states of each: the full default bound is a minute of CPU per search, and the
    # bundled spec's full search is test_bundled_spec_explores_clean_at_default_bound's
    assert main(["explore", str(copy), "--json", "--max-states", "20000"]) == 3
    from_file = json.loads(capsys.readouterr().out)
    assert from_file["bound"] == DEFAULT_BOUND
    assert main(["explore", "--json", "--max-states", "20000"]) == 3
    bundled = json.loads(capsys.readouterr().out)
    for key in ("seconds", "states_per_second", "transitions_per_second"):
        del from_file[key], bundled[key]
    assert from_file == bundled




def _explore_in_a_new_process(path) -> dict:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dmmcheck", "explore", str(path), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    return json.loads(out.stdout)


def test_a_violation_names_the_same_elements_in_every_run_and_in_blame_and_trace(tmp_path):
    """The representative of each orbit does not depend on the process (hash(None) does), and the
    blame is of the trace's last state: two runs, from two files, agree on every name, and the page
    the blame names is the one the trace mapped."""
    text = _broken(*FORGOTTEN_RMAP)
    runs = []
    for name in ("a.dmm", "b.dmm"):
        (tmp_path / name).write_text(text)
        runs.append(_explore_in_a_new_process(tmp_path / name))
    for r in runs:
        del r["seconds"], r["states_per_second"], r["transitions_per_second"]
    assert runs[0] == runs[1]
    (v,) = runs[0]["violations"]
    fill = next(st for st in v["trace"] if st["action"] == "shadow_fill")
    page = dict(a.split("=") for a in fill["args"].split(", "))["m"]
    assert f"m={page}," in v["blame"]


def test_blame_is_of_the_trace_last_state():
    from dmmcheck.model.evaluate import blame

    spec = check(parse(_broken(*FORGOTTEN_RMAP), "b.dmm"))
    it = Interpreter(spec, DEFAULT_BOUND)
    r = explore(it)
    (v, trace) = r.violations[0]
    inv = next(i for i in spec.invariants if i.name == v.invariant)
    assert str(v.blame) == str(blame(it.u, trace[-1].state, inv.formula))


def test_a_large_bound_is_bounded_in_memory_symmetry_and_time(capsys):
    """A bound far past what exploration can finish: the symmetry tables stay within
    MAX_PERMUTATIONS (the largest sorts left out, and said so), and the time limit holds even
    inside one state's hundreds of thousands of successors."""
    import time

    from dmmcheck.model.explore import MAX_PERMUTATIONS, symmetric_sorts

    chosen, left = symmetric_sorts({"vm": 8, "root": 3, "gva": 8, "gfn": 8, "mfn": 12, "slot": 4})
    assert chosen == ["root", "slot"] and set(left) == {"vm", "gva", "gfn", "mfn"}
    assert math.prod(math.factorial(n) for n in (3, 4)) <= MAX_PERMUTATIONS
    t = time.perf_counter()
    assert main(["explore", "--bound", "vm=4,gfn=6,mfn=8,gva=6,root=2,slot=2", "--max-seconds", "2", "--json"]) == 3
    assert time.perf_counter() - t < 60  # set-up and one state's expansion no longer run unbounded
    out = json.loads(capsys.readouterr().out)
    assert not out["complete"] and out["stopped_by"].startswith("time limit 2 s")
    assert out["not_symmetric"] and set(out["symmetry"]) | set(out["not_symmetric"]) == {"vm", "gfn", "mfn", "gva", "root", "slot"}


def test_the_memory_budget_stops_exploration_as_incomplete(capsys):
    assert main(["explore", "--bound", "vm=2", "--max-memory", "10", "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert not out["complete"] and out["stopped_by"].startswith("memory limit 10 MiB")
    assert 0 < out["states"] < 30_000  # the full vm=2 bound has more than that


def test_a_partial_bound_takes_the_default_bound_for_the_other_sorts(capsys):
    assert main(["explore", "--bound", "vm=2", "--max-states", "50", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["bound"] == {**DEFAULT_BOUND, "vm": 2}


# ---------------------------------------------------------------- the ground path against the general one

# One page, budget and quota fixed: 451,308 states (10,600 before the vCPUs, roles and unsync pages),
# too many for the general path in a test, so the two paths are compared on the first SMALL_CAP
# states of the same breadth-first order (the ground path explores all of them, and more, in
# test_explore_says_how_many_processes_it_ran_in).
SMALL_CAP = 20_000
SMALL = {"vm": 1, "root": 1, "gva": 1, "gfn": 1, "mfn": 1, "slot": 1, "vcpu": 1, "role": 1, "budget": 1, "quota": 1}


def _summary(r) -> tuple:
    return (r.states, r.transitions, r.action_counts, r.complete, r.stopped_by,
            [(v.invariant, str(v.blame), [(st.action, st.args) for st in tr]) for v, tr in r.violations])


def _orbits(it: Interpreter, states) -> set:
    from dmmcheck.model.explore import _ground

    g = _ground(it, True)
    return {g.canonical(g.flatten(s)) for s in states}


def _raw_reachable(it: Interpreter) -> set:
    """Every reachable state, by the plain interpreter, no symmetry: the reference."""
    seen = set(it.initial_states())
    todo = list(seen)
    while todo:
        s = todo.pop()
        for _, _, s2 in it.successors(s):
            if s2 not in seen:
                seen.add(s2)
                todo.append(s2)
    return seen


def test_ground_path_explores_what_the_general_path_does_on_the_bundled_spec():
    it = Interpreter(load(), SMALL)
    fast = explore(it, keep_states=True, max_states=SMALL_CAP)
    plain = explore(it, ground=False, keep_states=True, max_states=SMALL_CAP)
    assert fast.states == plain.states >= SMALL_CAP and not fast.complete
    assert _summary(fast) == _summary(plain)
    assert set(fast.reached) == set(plain.reached)  # no sort has two elements: the states themselves


@pytest.mark.parametrize("symmetry", [True, False])
def test_ground_path_reaches_the_same_orbits(symmetry):
    """client_server_ae has three sorts of two elements: the ground path's states, the general
    path's and every raw reachable state are the same orbits, one state kept per orbit."""
    from pathlib import Path

    path = Path(__file__).parent / "examples" / "client_server_ae.dmm"
    it = Interpreter(check(parse(path.read_text(), str(path))))
    fast = explore(it, symmetry=symmetry, keep_states=True)
    plain = explore(it, symmetry=symmetry, ground=False, keep_states=True)
    assert _summary(fast) == _summary(plain)
    raw = _raw_reachable(it)
    assert _orbits(it, fast.reached) == _orbits(it, plain.reached) == _orbits(it, raw)
    assert fast.states == (len(_orbits(it, raw)) if symmetry else len(raw))
    if symmetry:
        assert fast.states < len(raw)


@pytest.mark.parametrize("mutant,keep_going", [("guest_unmap_keeps_rmap", True), ("zap_spte_keeps_rmap", False)])
def test_ground_path_finds_the_violations_the_general_path_finds(mutant, keep_going):
    from dmmcheck.conformance.spec_mutants import SPEC_MUTANTS

    m = next(x for x in SPEC_MUTANTS if x.name == mutant)
    spec = check(parse(_broken(m.old, m.new), f"{mutant}.dmm"))
    it = Interpreter(spec, SMALL)
    fast = explore(it, keep_going=keep_going, max_states=SMALL_CAP)
    plain = explore(it, keep_going=keep_going, ground=False, max_states=SMALL_CAP)
    assert fast.violations
    assert _summary(fast)[5:] == _summary(plain)[5:]  # the same invariants, blames and shortest traces
    if keep_going:  # on past the violations (their successors checked in full): the same states
        assert _summary(fast) == _summary(plain)
    for v, trace in fast.violations:  # each trace is real: init, then enabled steps, each the action's result
        s = trace[0].state
        assert s in it.initial_states()
        for step in trace[1:]:
            args = it.parse_args(step.action, dict(a.split("=") for a in step.args.split(", ")) if step.args else {})
            assert it.is_enabled(s, step.action, args) and it.apply(s, step.action, args) == step.state
            s = step.state
        assert not it.holds(s, v.invariant)


def test_ground_path_agrees_on_another_spec():
    from pathlib import Path

    path = Path(__file__).parent / "examples" / "lockserv.dmm"
    it = Interpreter(check(parse(path.read_text(), str(path))))
    assert _summary(explore(it, keep_going=True)) == _summary(explore(it, keep_going=True, ground=False))


def test_a_bound_too_large_for_the_ground_path_takes_the_general_one():
    from dmmcheck.model import ground
    from dmmcheck.model.explore import _ground

    it = Interpreter(load(), {**DEFAULT_BOUND, "gfn": 2})
    assert _ground(it, True) is not None
    old = ground.MAX_INSTANCES
    try:
        ground.MAX_INSTANCES = 16  # guest_map alone has 64 argument tuples here
        assert _ground(it, True) is None
        r = explore(it, max_states=200)
        assert r.states >= 200 and not r.complete
    finally:
        ground.MAX_INSTANCES = old


def test_every_action_is_enabled_at_the_all_actions_bound():
    """The smallest scope that enables every action of the bundled spec does. The full search is
    beyond dmm check's time limit: the first 100,000 states enable all but the accesses, the unsync
    edits and two sharing actions, which need more steps than those states reach; two short runs
    enable those."""
    from dmmcheck.model.explore import ALL_ACTIONS_BOUND

    it = Interpreter(load(), ALL_ACTIONS_BOUND, fixed={"role_wp": (True,)})
    r = explore(it, max_states=100_000)
    enabled = {a for a, n in r.action_counts.items() if n}
    read = it.spec.enums["access"].index("read")
    # a data page mapped through a shadowed leaf table, cached in vCPU 0's TLB, then the table unsync
    cached = [("vm_create", (0,)), ("demand_page", (0, 0, 0)), ("demand_page", (0, 1, 1)),
              ("guest_path", (0, 0, 0, 1, True)), ("protect_gpt", (0, 1)),
              ("guest_map", (0, 0, 0, 0, True, True, False, True, True)), ("cr3_load", (0, 0, 0)),
              ("set_mode", (0, 0, 0)), ("tlb_flush", (0, 0)), ("shadow_fill", (0, 0, 0, 0, 0, 0, True, False)),
              ("shadow_hit", (0, 0, 0, 0, 0, read, False)), ("unsync_gpt", (0, 1))]
    # two gfns of one VM merged onto one page, the discarded page given back
    shared = [("vm_create", (0,)), ("demand_page", (0, 0, 0)), ("demand_page", (0, 1, 1)),
              ("share_merge", (0, 0, 0, 0, 1, 1)), ("pool_shrink", (0, 1))]
    for run in (cached, shared):
        s = it.initial_state()
        for name, args in run:
            assert it.is_enabled(s, name, args), (name, args)
            enabled.add(name)
            s = it.apply(s, name, args)
        enabled |= {a for a, _ in it.enabled(s)}
    assert enabled == set(it.spec.actions)


def test_explore_table_says_which_actions_were_never_enabled(capsys):
    assert main(["explore", "--max-states", "3000"]) == 3
    out = capsys.readouterr().out
    assert "transitions  enabled" in out and "  vm_create " in out
    share = next(line for line in out.splitlines() if line.split()[:1] == ["share_merge"])
    assert share.split()[1:] == ["0", "NEVER"]
    assert "WARNING: never enabled in the explored part: " in out  # incomplete: not "at this bound"


def test_check_explores_the_check_bounds_and_warns_of_an_action_never_enabled(monkeypatch, tmp_path, capsys):
    from dmmcheck.model import explore as ex
    from dmmcheck.model import report

    seen = []

    def fake(it, **kw):
        seen.append((ex.bound_of(it.u), kw.get("max_seconds")))
        return ex.ExploreResult(ex.bound_of(it.u), 10, 20, 0.1, True, action_counts={"a": 3, "b": 0})

    monkeypatch.setattr(ex, "explore", fake)
    monkeypatch.setattr(report, "run_with_progress", lambda opts, err: ([], 0.0))
    copy = tmp_path / "copy.dmm"
    copy.write_text(bundled_path().read_text())
    assert main(["check", str(copy)]) == 0
    out = " ".join(capsys.readouterr().out.translate({ord(c): " " for c in "│┃┏┓┗┛┡┩└┘━─┳┻╇┴┬"}).split())
    assert seen == [(ex.CHECK_BOUND, ex.CHECK_SECONDS), (ex.CHECK_BOUND_VCPUS, ex.CHECK_SECONDS)]
    assert out.count("warning: never enabled at this bound: b") == 2
    assert "bound vm=1, root=1, gva=1, gfn=1, mfn=1, slot=1, vcpu=2, role=1, budget=1, quota=1" in out


# ---------------------------------------------------------------- several processes

TINY_OPEN = {"vm": 1, "root": 1, "gva": 1, "gfn": 1, "mfn": 1, "slot": 1, "vcpu": 1, "role": 1}  # budget and quota open: 4 parts


def test_two_processes_explore_what_one_does():
    from dmmcheck.model.explore import _ground
    from dmmcheck.model.parallel_explore import parts

    it = Interpreter(load(), TINY_OPEN)
    g = _ground(it, True)
    budget, quota = (it.u.layout[n].index for n in ("budget", "quota"))
    pairs = [{(g.nest(f)[budget][0], g.nest(f)[quota][0]) for f in grp} for grp in parts(it, g)]
    assert pairs == [{(1, 1)}, {(1, 0)}, {(0, 1)}, {(0, 0)}]  # one (budget, quota) a part, largest first
    one, two = explore(it), explore(it, jobs=2)
    assert two.processes == 2 and one.processes == 1
    assert _summary(one) == _summary(two)


def test_a_violation_found_in_parts_is_reported_as_one_process_finds_it():
    """Which states a part explores past a violation depends on the processes' timing, so a search
    in parts that finds one runs again in one process: the same report whatever -j."""
    from dmmcheck.conformance.spec_mutants import SPEC_MUTANTS

    m = next(x for x in SPEC_MUTANTS if x.name == "cr3_load_keeps_tlb")
    it = Interpreter(check(parse(_broken(m.old, m.new), "m.dmm")), TINY_OPEN)
    one, two = explore(it), explore(it, jobs=2)
    assert one.violations and _summary(one) == _summary(two)


def test_explore_says_how_many_processes_it_ran_in(capsys):
    assert main(["explore", "--bound", "gfn=1,mfn=1", "-j", "2"]) == 0
    assert "91,544 states, 5,700,494 transitions in " in capsys.readouterr().out
    assert main(["explore", "--bound", "gfn=1,mfn=1", "-j", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["processes"] == 2 and out["states"] == 91544


def test_explore_in_parts_keeps_the_time_limit(capsys):
    assert main(["explore", "--bound", "gfn=2", "-j", "2", "--max-seconds", "1", "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert not out["complete"] and out["stopped_by"].startswith("time limit")
    assert out["seconds"] < 30


@pytest.mark.parametrize("unroll,memo", [(1, 2), (64, 1)])
def test_ground_path_with_loops_and_with_memos_everywhere(monkeypatch, unroll, memo):
    """Quantifiers kept as loops (positions computed at run time: no memo, every invariant checked)
    and a memo for every group of instances give the same search as the general path."""
    from dmmcheck.model import ground

    monkeypatch.setattr(ground, "UNROLL", unroll)
    monkeypatch.setattr(ground, "MEMO_MIN", memo)
    it = Interpreter(load(), {**SMALL, "mfn": 2})
    assert _summary(explore(it, max_states=SMALL_CAP)) == _summary(explore(it, ground=False, max_states=SMALL_CAP))


def test_a_worker_that_dies_leaves_the_search_to_this_process(monkeypatch):
    monkeypatch.setenv("DMM_TEST_EXPLORE_CRASH", "1")
    it = Interpreter(load(), TINY_OPEN)
    r = explore(it, jobs=2)
    assert r.processes == 1 and r.complete
    monkeypatch.delenv("DMM_TEST_EXPLORE_CRASH")
    assert _summary(r) == _summary(explore(it, jobs=2))


PARTS_TOY = """
sort vm
sort mfn
immutable const cap: int
immutable relation big(vm)
function owner(mfn): vm?
function has(vm): mfn?
init {
  forall m: mfn. owner(m) := none
  forall v: vm. has(v) := none
}
action grab(v: vm, m: mfn) {
  requires has(v) = none and owner(m) = none and (big(v) or cap > 1)
  owner(m) := v
  has(v) := m
}
invariant exclusive: forall v: vm, m: mfn. has(v) = m iff owner(m) = v
"""


def test_parts_split_by_parameters_only_never_an_orbit():
    """big(vm) is permuted with vm: big={vm0} and big={vm1} are one orbit, so they must be in one
    part (split by cap alone), or both parts would count it."""
    it = Interpreter(check(parse(PARTS_TOY, "toy.dmm")), {"vm": 2, "mfn": 2})
    one, two = explore(it), explore(it, jobs=2)
    assert two.processes == 2 and _summary(one) == _summary(two)


def test_ground_canonical_is_the_smallest_permuted_copy():
    """canon() skips building a copy whose first values already compare greater: the result is
    still the smallest of all the permuted copies, and the same for every state of an orbit."""
    import itertools
    import random

    from dmmcheck.model.explore import ALL_ACTIONS_BOUND, _ground, symmetric_sorts
    from dmmcheck.model.ground import NONE

    it = Interpreter(load(), {**ALL_ACTIONS_BOUND, "gva": 2}, fixed={"role_wp": (True,)})
    g = _ground(it, True)
    assert g.canonical is not None and set(symmetric_sorts(it.u.sizes)[0]) == {"gva", "gfn", "mfn"}
    perms = [dict(zip(("gva", "gfn", "mfn"), c))
             for c in itertools.product(*(itertools.permutations(range(2)) for _ in range(3)))]
    copies = []
    for k, perm in enumerate(perms):
        maps = {f"m_{sort}_{k}": {NONE: NONE, **dict(enumerate(p))} for sort, p in perm.items()}
        copies.append(eval(compile("lambda s: (" + ", ".join(g._display(perm, k)) + ",)", "p", "eval"), maps))
    rng = random.Random(1)
    s = it.initial_state()
    for _ in range(300):
        a, args = rng.choice(list(it.enabled(s)))
        s = it.apply(s, a, args)
        f = g.flatten(s)
        orbit = [p(f) for p in copies]
        assert g.canonical(f) == min(orbit) and all(g.canonical(o) == min(orbit) for o in orbit)
