"""dmm prove: the bundled spec proves completely; every invariant has a broken variant that the
prover reports violated by name; golden results for small specs; exit statuses; the cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dmmcheck.main import main
from dmmcheck.model.prove import Obligation
from dmmcheck.model.runner import ProveOptions, exit_status, run
from dmmcheck.model.limits import RLIMIT
from dmmcheck.spec import bundled_path, check, load, parse

HERE = Path(__file__).parent / "prove"
BUNDLED = bundled_path().read_text()


def prove(tmp_path: Path, text: str | None = None, *, only: str | None = None, bmc: int = 0, kind: int = 0,
          jobs: int = 1, cache: bool = False, timeout: float = 120.0, rlimit: int = RLIMIT):
    path = None
    if text is not None:
        path = tmp_path / "spec.dmm"
        path.write_text(text)
    opts = ProveOptions(str(path) if path else None, None, timeout, bmc, kind, only,
                        cache_dir=str(tmp_path / "cache"), use_cache=cache, jobs=jobs, rlimit=rlimit)
    results, _ = run(opts)
    return results


def test_bundled_spec_proves_completely(tmp_path):
    results = prove(tmp_path, jobs=2)
    bad = [(r.name, r.status, r.reason) for r in results if r.status != "proved"]
    assert bad == []
    spec = load()
    assert len(results) == 2 + len(spec.actions) * (1 + len(spec.invariants)) + len(spec.invariants)
    # Every counting obligation is proved unbounded, not only in finite universes — but within_quota's
    # under the actions that move pages between pools: its count ranges over active(v, m) or
    # idle(v, m), whose argument v is not counted, and the exact unbounded delta needs relations over
    # the counted variables alone (docs/prover.md, "Counting"). Reported as finite, never as unbounded.
    finite = {r.name for r in results if r.kind in ("inductive", "init") and r.bound is not None}
    assert all(r.bound is None for r in results if r.kind in ("inductive", "init") and r.invariant != "within_quota")
    assert finite == {f"inductive/{a}/within_quota" for a in ("demand_page", "swap_out", "swap_in", "share_merge",
                                                             "share_rehome", "cow_break", "balloon_inflate",
                                                             "pool_grow", "pool_shrink")}, finite
    assert exit_status(results) == 0


# One realistic VMM bug per invariant: (invariant it breaks, action, text removed or changed, new text).
MUTATIONS = [
    ("rmap_consistent", "zap_spte", "  forall m: mfn. remove rmap(m, v, r, o, x)\n  remove s_stale(v, r, o, x)\n",
     "  remove s_stale(v, r, o, x)\n"),
    ("no_stale_spte", "guest_map", "  g_wrote(v, r, x) := d\n  forall o: role. spte(v, r, o, x) := none\n",
     "  g_wrote(v, r, x) := d\n"),
    ("spte_rights", "shadow_fill", "  s_user(v, r, o, x) := g_user(v, r, x) and (g_write(v, r, x) or not w)",
     "  s_user(v, r, o, x) := true"),
    ("ad_emulated", "shadow_fill", "p2m(v, g) = m and g_accessed(v, r, x)", "p2m(v, g) = m"),
    ("pool_conservation", "pool_grow", "  remove vmm_pool(m)\n  insert idle(v, m)", "  insert idle(v, m)"),
    ("descriptor_status", "pool_shrink", "  owner(m) := none\n  status(m) := free", "  owner(m) := none"),
    ("isolation", "share_merge", "  refcount(m1) := refcount(m1) + 1\n  status(m1) := shared",
     "  refcount(m1) := refcount(m1) + 1"),
    ("cow_readonly", "share_merge",
     "  forall w: vm, r: root, o: role, x: gva. if rmap(m1, w, r, o, x) {\n    remove s_write(w, r, o, x)\n  }\n", ""),
    ("guest_pt_protected", "protect_gpt",
     ("  forall r: root, o: role, x: gva. if exists m: mfn. p2m(v, g) = m and rmap(m, v, r, o, x) {\n"
      "    remove s_write(v, r, o, x)\n  }\n"), ""),
    ("swap_exclusive", "swap_out", "not gpt_page(v, g) and not slot_used(s)", "not gpt_page(v, g)"),
    ("refcount_exact", "balloon_inflate", "  refcount(m) := refcount(m) - 1\n  if refcount(m) = 1 {\n    status(m) := free",
     "  if refcount(m) = 1 {\n    status(m) := free"),
    ("ballooned_unmapped", "balloon_inflate_swapped", "  insert ballooned(v, g)\n  swap_slot(v, g) := none",
     "  insert ballooned(v, g)"),
    ("tlb_coherent", "zap_spte", "  remove s_stale(v, r, o, x)\n  forall c: vcpu. insert flush_pending(v, c)\n}",
     "  remove s_stale(v, r, o, x)\n}"),
    ("dead_vm_empty", "vm_destroy", "  requires forall m: mfn. not in_pool(v, m)\n", ""),
    # an access served while a TLB flush is owed
    ("access_sound", "tlb_hit", "u: bool) {\n  requires runnable(v, c, r, o)\n  requires tlb(v, c, x) != none",
     "u: bool) {\n  requires live(v) and cur_root(v, c) = r and mode(v, c) = o\n  requires tlb(v, c, x) != none"),
    # the guest's D bit set on a read
    ("ad_justified", "guest_walk", "  insert g_used(v, r, x)\n  if a = write {\n    insert g_dirty(v, r, x)\n",
     "  insert g_used(v, r, x)\n  insert g_dirty(v, r, x)\n  if a = write {\n"),
    # swap-out frees the page while the TLB still maps it (the first shootdown is swap_out's)
    ("tlb_isolated", "swap_out",
     ("  forall c: vcpu, x: gva. if tlb_gfn(v, c, x) = g {\n    tlb(v, c, x) := none\n    remove tlb_write(v, c, x)\n"
      "    tlb_gfn(v, c, x) := none\n  }\n"), ""),
    # a shadowed guest table swapped out
    ("gpt_resident", "swap_out", "requires p2m(v, g) = m and not gpt_page(v, g) and not slot_used(s)",
     "requires p2m(v, g) = m and not slot_used(s)"),
    # the VM a shared page is charged to swaps its hold out (the first such guard is swap_out's)
    ("owner_holds", "swap_out",
     "  requires status(m) = shared and owner(m) = v implies refcount(m) = 1 or (exists h: gfn. h != g and p2m(v, h) = m)\n", ""),
    # a fill through a walk that read a table nobody shadows (so a guest edit of it would not trap)
    ("walk_protected", "shadow_fill",
     "  requires forall t: gfn. g_table(v, r, x, t) implies write_protected(v, t) or gpt_page(v, t) and not g_upper(v, r, x, t)\n",
     ""),
    ("within_budget", "pool_grow", "  requires live(v) and vmm_pool(m) and held() < budget", "  requires live(v) and vmm_pool(m)"),
    ("within_quota", "pool_grow", "  requires pool_size(v) < quota\n", ""),
    # a resync that keeps the spte drops the stale mark but not the old gpte
    ("old_gpte_cleared", "sync_spte", "  remove s_stale(v, r, o, x)\n  old_gmap(v, r, o, x) := none\n",
     "  remove s_stale(v, r, o, x)\n"),
]


def test_every_invariant_has_a_mutation():
    assert {m[0] for m in MUTATIONS} == {i.name for i in load().invariants}


@pytest.mark.parametrize("invariant,action,old,new", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_broken_variant_is_reported_violated(tmp_path, invariant, action, old, new):
    assert BUNDLED.count(old) >= 1, "mutation no longer applies to the bundled spec"
    text = BUNDLED.replace(old, new, 1)
    check(parse(text, "mutant.dmm"))  # still a well-formed spec
    results = prove(tmp_path, text, only=f"inductive/{action}/{invariant}")
    (r,) = results
    assert r.status == "violated", (r.name, r.status, r.reason)
    assert r.counterexample and invariant in r.counterexample.get("blame", "") or r.invariant == invariant
    assert r.counterexample["action"] == action
    assert exit_status(results) == 5


def _golden_view(results) -> list[dict]:
    out = []
    for r in results:
        row = {"name": r.name, "status": r.status}
        if r.status == "proved":
            row["core"] = r.core
        if r.counterexample:
            # Which elements Z3 picks varies between processes; the failing conjunct and the
            # trace's actions do not.
            row["conjunct"] = (r.counterexample.get("blame") or "").split(" at ")[0]
            part = r.counterexample.get("conjunct")
            if part:  # which top-level conjunct, and where it is written (file:line:col, the file's name only)
                row["conjunct_at"] = f"{part['index']} of {part['of']} at {Path(part['loc']).name}"
            if r.counterexample.get("steps") is not None:
                row["actions"] = [s["action"] for s in r.counterexample["steps"]]
        out.append(row)
    return out


GOLDEN = {"lockserv": (3, 2), "broken_lock": (3, 2), "refcount": (3, 0), "shift": (3, 2), "vacuous": (0, 0)}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_small_specs(tmp_path, name):
    bmc, kind = GOLDEN[name]
    results = prove(tmp_path, (HERE / f"{name}.dmm").read_text(), bmc=bmc, kind=kind)
    got = json.dumps({"exit": exit_status(results), "obligations": _golden_view(results)}, indent=1) + "\n"
    expect = HERE / f"{name}.expect"
    if os.environ.get("DMM_REGEN_GOLDEN"):
        expect.write_text(got)
    assert got == expect.read_text()


def test_unbounded_count_needs_no_finite_fallback(tmp_path):
    results = prove(tmp_path, (HERE / "refcount.dmm").read_text(), only="inductive/")
    assert all(r.status == "proved" and r.bound is None for r in results)


def test_count_with_quantified_update_falls_back_to_finite(tmp_path):
    text = (HERE / "refcount.dmm").read_text() + """
action reset_all(p: page) {
  requires refs(p) = 0
  forall h: holder. if maps(h) = p { maps(h) := none }
}
"""
    (r,) = prove(tmp_path, text, only="inductive/reset_all/exact")
    assert r.status == "proved" and r.bound is not None
    assert "finite proof up to" in r.reason


def test_exit_statuses(tmp_path, capsys):
    assert main(["prove", str(HERE / "lockserv.dmm"), "--no-cache", "--json", "-j", "1"]) == 0
    tr = tmp_path / "traces"
    # a counterexample to induction: 5 when no execution is searched for (or none reaches it), 1 when
    # one does (the release that does not check the holder is a real bug)
    assert main(["prove", str(HERE / "broken_lock.dmm"), "--no-cache", "--json", "-j", "1",
                 "--reach-seconds", "0"]) == 5
    assert main(["prove", str(HERE / "broken_lock.dmm"), "--no-cache", "--json", "-j", "1",
                 "--trace-dir", str(tr / "reach")]) == 1
    assert main(["prove", str(HERE / "broken_lock.dmm"), "--no-cache", "--json", "-j", "1", "--bmc", "3",
                 "--trace-dir", str(tr)]) == 1
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (trace,) = [t for t in out["traces"] if Path(t).name.startswith("bmc-")]
    lines = Path(trace).read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "dmm-trace/1" and header["violates"] == "mutex"
    # A second acquire needs the lock free: the shortest run frees it with an unchecked release.
    assert [json.loads(x)["action"] for x in lines[1:]] == ["acquire", "release", "acquire"]
    bad = tmp_path / "bad.dmm"
    bad.write_text("sort vm\nrelation r(vmm)\n")
    assert main(["prove", str(bad)]) == 4


def test_unknown_is_never_proved(tmp_path):
    # With almost no resource budget nothing a solver must answer can be proved: every obligation
    # the frame rule does not settle says unknown, with the limit that stopped it, and the exit
    # status says so too.
    results = prove(tmp_path, only="inductive/share_merge/", rlimit=1)
    framed = [r for r in results if r.reason.startswith("frame: share_merge modifies nothing")]
    asked = [r for r in results if r not in framed]
    assert framed and all(r.status == "proved" for r in framed)
    assert asked and all(r.status == "unknown" for r in asked), [(r.name, r.status) for r in asked]
    assert all(r.reason.startswith("resource limit reached (--rlimit 1)") for r in asked), {r.reason for r in asked}
    assert exit_status(results) == 3


def test_verdicts_do_not_change_with_the_machines_load(tmp_path):
    """The solver's limit is resource units, not seconds: at a budget where some obligations prove
    and others run out, a machine loaded with busy processes gives the same verdicts as an idle
    one. (Under a wall-clock limit, the load turned proofs into unknowns.)"""
    import multiprocessing as mp

    only, budget = "inductive/cow_break/", 10_000  # between the easy and the hard cow_break proofs
    idle = {r.name: r.status for r in prove(tmp_path, only=only, rlimit=budget)}
    assert {"proved", "unknown"} <= set(idle.values()), idle  # the budget does cut somewhere
    burners = [mp.Process(target=_burn, daemon=True) for _ in range(2 * (os.cpu_count() or 1))]
    for b in burners:
        b.start()
    try:
        loaded = {r.name: r.status for r in prove(tmp_path, only=only, rlimit=budget)}
    finally:
        for b in burners:
            b.kill()
    assert loaded == idle


def _burn() -> None:
    while True:
        pass


def test_json_shape(tmp_path, capsys):
    assert main(["prove", str(HERE / "lockserv.dmm"), "--no-cache", "--json", "-j", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"spec", "seconds", "summary", "obligations"}
    assert set(out["summary"]) == {"proved", "violated", "unknown"}
    ob = out["obligations"][0]
    assert set(ob) >= {"name", "kind", "action", "invariant", "status", "seconds", "core", "counterexample"}
    assert {o["kind"] for o in out["obligations"]} == {"vacuity", "init", "inductive"}


def test_cache_reproves_at_once_and_invalidates_per_action(tmp_path):
    first = prove(tmp_path, cache=True, only="inductive/")
    again = prove(tmp_path, cache=True, only="inductive/")
    # Unknown results are never cached (a loaded CI machine may time one out); all others are.
    assert all(r.cached for r, f in zip(again, first) if f.status != "unknown")
    assert [r.status for r, f in zip(again, first) if f.status != "unknown"] == \
        [f.status for f in first if f.status != "unknown"]
    # Change one action: only its obligations are re-proved.
    text = BUNDLED.replace("action tlb_evict(v: vm, c: vcpu, x: gva) {\n  requires tlb(v, c, x) != none",
                           "action tlb_evict(v: vm, c: vcpu, x: gva) {\n  requires tlb(v, c, x) != none and live(v)")
    changed = prove(tmp_path, text, cache=True, only="inductive/")
    fresh = {r.action for r in changed if not r.cached}
    assert fresh == {"tlb_evict"}


def test_parallel_equals_sequential(tmp_path):
    a = prove(tmp_path, (HERE / "broken_lock.dmm").read_text(), jobs=1)
    b = prove(tmp_path, (HERE / "broken_lock.dmm").read_text(), jobs=2)
    assert [(r.name, r.status) for r in a] == [(r.name, r.status) for r in b]


def test_obligation_names():
    assert Obligation("inductive", "swap_out", "rmap_consistent").name == "inductive/swap_out/rmap_consistent"
    assert Obligation("bmc", None, "isolation", 4).name == "bmc/4/isolation"


def test_the_cache_trusts_only_entries_that_say_what_they_answer(tmp_path):
    import json as _json

    text = (HERE / "lockserv.dmm").read_text()
    first = prove(tmp_path, text, cache=True)
    entries = sorted((tmp_path / "cache" / "prove").glob("*.json"))
    assert len(entries) >= 4 and all(r.status == "proved" for r in first)
    a, b, c, d = entries[:4]
    raw = bytearray(a.read_bytes())
    raw[len(raw) // 2] ^= 0x41  # a flipped byte
    a.write_bytes(bytes(raw))
    entry = _json.loads(b.read_text())
    entry["result"]["status"] = "banana"  # a status that is no answer
    b.write_text(_json.dumps(entry))
    c.write_text(d.read_text())  # an entry under another obligation's key
    entry = _json.loads(d.read_text())
    entry["result"]["status"] = "unknown"  # with a matching checksum: an unknown is still not an answer
    from dmmcheck.model.prove import _checksum
    entry["checksum"] = _checksum(entry["key"], entry["result"])
    d.write_text(_json.dumps(entry))
    again = prove(tmp_path, text, cache=True)
    assert [(r.name, r.status) for r in again] == [(r.name, r.status) for r in first]
    assert sum(not r.cached for r in again) >= 4  # the four bad entries were misses, re-proved


def test_ctrl_c_stops_prove_at_once_not_after_every_queued_obligation(tmp_path):
    """SIGINT to a `dmm prove -j 2` with hundreds of obligations queued: it exits 130 within
    seconds, and no worker process is left behind."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "DMM_CACHE_DIR": str(tmp_path / "cache")}
    # many obligations, each slow: the k-induction and bmc ones on the bundled spec
    # Started as a shell starts a foreground job: SIGINT at its default. A test run that is itself
    # a background job without job control (`make test &` in a script, nohup) ignores SIGINT, and an
    # ignored signal stays ignored across exec: the child would never see the Ctrl-C.
    prove = [sys.executable, "-m", "dmmcheck", "prove", "-j", "2", "--no-cache", "--bmc", "6", "--k-induction", "4"]
    fg = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    p = subprocess.Popen([sys.executable, "-c", fg, *prove], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(8)  # the pool is up and working
    # what the child inherited of SIGINT (ignored or blocked there, no Ctrl-C can reach it): said
    # on failure, for a child that does not stop
    status = Path(f"/proc/{p.pid}/status")
    inherited = [ln for ln in status.read_text().splitlines() if ln.startswith(("SigBlk", "SigIgn"))] \
        if status.exists() else []
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    t = time.perf_counter()
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"dmm prove ran on 60 s after SIGINT; its signal masks: {inherited}") from None
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert time.perf_counter() - t < 30
    assert b"Traceback" not in err
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert left == [], left
