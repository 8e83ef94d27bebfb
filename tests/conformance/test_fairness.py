"""Fair oracles: where the architecture allows several outcomes, an implementation taking any of
them is accepted, and one the architecture forbids is still caught (docs/conformance.md, "Fair
oracles"). Most tests feed the oracle what an implementation would report — its AccessResult and
its guest memory as `read_guest` shows it — so each alternative can be stated exactly; the rest run
the bundled VMM under each convention."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dmmcheck.conformance.adapter import AccessResult, Config, Observation, Operation
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.ideal import A, D, PF_I, PF_P, PF_RSVD, PF_U, PF_W, Controls, Ideal, IdealCpu, permits
from dmmcheck.conformance.oracle import Failure, Judge, Oracle
from dmmcheck.conformance.runner import Runner
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.spec import load

SPEC = load(None)
PAGE = 4096
X = 0x400000  # PML4 0, PDPT 0, PD 2, PT 0 of the default layout
UP = 0x7  # P | RW | US, A clear: a walk sets it
PML4E, PDPTE, PDE, PTE = 0x0, 0x1000, 0x2010, 0x3000  # where X's entries live (tables at gfns 0-3)
NONCANONICAL = X ^ (1 << 47)


def op(action: str, **args) -> Operation:
    return Operation(action, args)


class Impl:
    """An implementation as the oracle sees it: the AccessResults and guest memory a test gives it.
    Guest stores go to both sides; the test changes `mem` alone for what the implementation did."""

    def __init__(self, config: Config = Config()) -> None:
        self.config = config
        self.oracle = Oracle(Judge(SPEC, config))
        self.mem = bytearray(config.gfns * PAGE)
        self.oracle.observe(op("vm_create", v=0), Observation(events=[("vm_create", {"v": 0})]), self.read)
        self.vm: IdealCpu = self.oracle.ideal.vms[0].cpus[0]

    def read(self, v: int, gpa: int, n: int) -> bytes:
        if not 0 <= gpa <= len(self.mem) - n:
            raise IndexError(f"gpa {gpa:#x} is beyond guest memory")
        return bytes(self.mem[gpa:gpa + n])

    def entry(self, gpa: int) -> int:
        return int.from_bytes(self.mem[gpa:gpa + 8], "little")

    def set_entry(self, gpa: int, e: int) -> None:
        """What the implementation did to an entry (the ideal machine is not told)."""
        self.mem[gpa:gpa + 8] = e.to_bytes(8, "little")

    def store(self, gpa: int, e: int) -> None:
        """The guest's own store (a page-table edit): both sides make it."""
        data = e.to_bytes(8, "little")
        self.mem[gpa:gpa + 8] = data
        self.oracle.observe(op("gpte_write", v=0), Observation(guest_writes=[(0, gpa, data)]), self.read)

    def tables(self, leaf: int, pde: int = 0x3000 | UP) -> None:
        for gpa, e in ((PML4E, 0x1000 | UP), (PDPTE, 0x2000 | UP), (PDE, pde), (PTE, leaf)):
            self.store(gpa, e)
        self.oracle.observe(op("cr3_load", v=0, c=0, r=0), Observation(), self.read)

    def access(self, result: AccessResult, x: int = X, a: str = "read", u: bool = False, c: int = 0, **kw) -> None:
        self.oracle.observe(op("guest_walk", v=0, c=c, x=x, a=a, u=u, **kw), Observation(access=result), self.read)

    def control(self, action: str, c: int = 0, **args) -> None:
        """A guest instruction on vCPU c (cr3_load, set_mode, invlpg)."""
        self.oracle.observe(op(action, v=0, c=c, **args), Observation(), self.read)


def caught(impl: Impl, result: AccessResult, **kw) -> Failure:
    with pytest.raises(Failure) as e:
        impl.access(result, **kw)
    assert e.value.kind == "observation"
    return e.value


# ---------------------------------------------------------------- A bits on a walk that faults (SDM 4.8)

def not_present_leaf() -> Impl:
    impl = Impl()
    impl.tables(leaf=0)
    return impl


@pytest.mark.parametrize("set_a_on", [(), (PML4E,), (PML4E, PDPTE), (PML4E, PDPTE, PDE)])
def test_a_faulting_walk_may_leave_a_on_a_top_down_prefix_of_the_entries_it_used(set_a_on):
    """Not present at the PTE: the PML4E, PDPTE and PDE led there; an Intel-style walker sets A on
    them as it goes, KVM's and the bundled one on none. Either is accepted, and the ideal machine
    adopts it (guest memory is compared afterwards)."""
    impl = not_present_leaf()
    for gpa in set_a_on:
        impl.set_entry(gpa, impl.entry(gpa) | A)
    impl.access(AccessResult(True, 0, X))
    for gpa in (PML4E, PDPTE, PDE):
        assert impl.vm.mem.read64(gpa) == impl.entry(gpa)  # adopted
    impl.oracle.compare_memory(impl.read)


def test_a_faulting_walk_must_not_set_a_below_an_entry_left_clear():
    impl = not_present_leaf()
    impl.set_entry(PDE, impl.entry(PDE) | A)  # the PDE, but not the PML4E above it
    f = caught(impl, AccessResult(True, 0, X))
    assert "top-down" in f.message and f"{PDE:#x}" in f.message


def test_a_faulting_walk_must_not_set_a_on_the_entry_that_faulted():
    impl = not_present_leaf()
    impl.set_entry(PTE, A)  # a not-present entry is used for nothing (and its other bits are software's)
    assert f"{PTE:#x}" in caught(impl, AccessResult(True, 0, X)).message
    impl = Impl()
    impl.tables(leaf=0x9003 | (1 << 45))  # a reserved bit (51:40): that entry is not used either
    impl.set_entry(PTE, impl.entry(PTE) | A)
    assert f"{PTE:#x}" in caught(impl, AccessResult(True, PF_P | PF_RSVD, X)).message


def test_a_permission_fault_may_set_a_on_every_entry_the_leaf_included_but_never_d():
    """A rights fault has a complete, valid translation (SDM 4.7): every entry was used, the leaf
    too. Leaving them all, or setting A top-down on all of them, is accepted; D never is."""
    for set_a in (False, True):
        impl = Impl()
        impl.tables(leaf=0x9005)  # P | US, read-only
        if set_a:
            for gpa in (PML4E, PDPTE, PDE, PTE):
                impl.set_entry(gpa, impl.entry(gpa) | A)
        impl.access(AccessResult(True, PF_P | PF_W, X), a="write", value=1)
        assert impl.vm.mem.read64(PTE) == impl.entry(PTE)
    impl = Impl()
    impl.tables(leaf=0x9005)
    impl.set_entry(PTE, impl.entry(PTE) | A | D)
    assert "sets no D" in caught(impl, AccessResult(True, PF_P | PF_W, X), a="write", value=1).message


def test_the_bundled_vmm_with_a_set_on_faulting_walks_is_accepted():
    """The history mutant accessed_set_on_faulting_walk (KVM's walker before it moved A/D after the
    walk) sets A on every entry of a rights-faulting walk: allowed, so not a failure any more."""
    ops = [op("vm_create", v=0), op("cr3_load", v=0, c=0, r=0), op("set_mode", v=0, c=0, o="wp+nxe"),
           op("guest_map", v=0, r=0, x=X, g=12, w=False, u=False, nx=False, a=False, d=False),
           op("guest_walk", v=0, c=0, x=X, a="write", u=True, value=5)]
    r = Runner(BundledVmm(), SPEC, Config(mutant="accessed_set_on_faulting_walk"))
    r.reset()
    for o in ops:
        r.step(o)
    leaf = int.from_bytes(r.adapter.read_guest(0, 3 * PAGE, 8), "little")
    assert r.records[-1].observation.access.fault and leaf & A and not leaf & D


# ---------------------------------------------------------------- non-canonical gvas: #GP (SDM 3A 3.3.7.1, 6.15)

def test_a_non_canonical_access_is_gp_with_no_walk():
    impl = Impl()
    impl.tables(leaf=0x9007)
    impl.access(AccessResult(True, gp=True), x=NONCANONICAL)
    impl.access(AccessResult(True, gp=True, cr2=0x1234), x=X ^ 0xFFFF << 48)  # bits 63:48: no CR2 to compare
    assert impl.vm.mem.read64(PTE) == 0x9007  # no walk: no A bit anywhere
    assert "#GP" in caught(impl, AccessResult(True, PF_P, NONCANONICAL), x=NONCANONICAL).message
    impl.set_entry(PTE, 0x9007 | A)  # A set by a walk the CPU never does
    with pytest.raises(Failure):
        impl.access(AccessResult(True, gp=True), x=NONCANONICAL, a="write", value=1)  # memory compared after a store
    impl = Impl()
    impl.tables(leaf=0x9007)
    assert "#GP" in caught(impl, AccessResult(True, gp=True), x=X).message  # #GP where the access succeeds


def test_the_bundled_vmm_answers_gp_and_events_outside_the_window_are_skipped():
    class Reporting(BundledVmm):
        """Also reports a guest_fault for the #GP, at the non-canonical gva: outside the window."""

        def step(self, o):
            obs = super().step(o)
            if obs.access is not None and obs.access.gp:
                obs.events.append(("guest_fault", {"v": 0, "c": 0, "r": 0, "o": "wp+nxe", "x": o.args["x"],
                                                   "a": o.args["a"], "u": False}))
            return obs

    r = Runner(Reporting(), SPEC, Config())
    r.reset()
    for o in (op("vm_create", v=0), op("cr3_load", v=0, c=0, r=0), op("set_mode", v=0, c=0, o="wp+nxe"),
              op("guest_map", v=0, r=0, x=X, g=12, w=True, u=True, nx=False, a=False, d=False)):
        r.step(o)
    for a in ("read", "write", "fetch"):
        rec = r.step(op("guest_walk", v=0, c=0, x=NONCANONICAL, a=a, u=False, value=7))
        assert rec.observation.access.gp and rec.spec_steps == []
    assert r.oracle.spec_args("guest_fault", {"v": 0, "c": 0, "r": 0, "o": "wp+nxe", "x": NONCANONICAL, "a": "read",
                                              "u": False}) is None


# ---------------------------------------------------------------- memory beyond the VM

BEYOND = Config().gfns  # the first gfn past guest memory


def beyond_runner(convention: str) -> Runner:
    r = Runner(BundledVmm(), SPEC, Config(beyond_memory=convention))
    r.reset()
    for o in (op("vm_create", v=0), op("cr3_load", v=0, c=0, r=0), op("set_mode", v=0, c=0, o="wp+nxe"),
              op("guest_map", v=0, r=0, x=X, g=BEYOND, w=True, u=False, nx=False, a=False, d=False)):
        r.step(o)
    return r


def test_beyond_memory_fault_convention_with_the_bundled_vmm():
    r = beyond_runner("fault")
    got = r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False)).observation.access
    assert (got.fault, got.error_code, got.cr2) == (True, PF_P | PF_RSVD, X)


def test_beyond_memory_ones_convention_with_the_bundled_vmm():
    r = beyond_runner("ones")
    assert r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False)).observation.access.value == (1 << 64) - 1
    assert r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False, size=2, offset=6)).observation.access.value == 0xFFFF
    store = r.step(op("guest_walk", v=0, c=0, x=X, a="write", u=False, value=5)).observation.access
    assert not store.fault  # dropped: nothing to compare but the A/D bits, which the oracle did
    assert not r.step(op("guest_walk", v=0, c=0, x=X, a="fetch", u=False)).observation.access.fault
    leaf = int.from_bytes(r.adapter.read_guest(0, 3 * PAGE, 8), "little")
    assert leaf & A and leaf & D  # a translation like any: the walk set A, the store D


def test_beyond_memory_zeros_convention_with_the_bundled_vmm():
    r = beyond_runner("zeros")
    assert r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False)).observation.access.value == 0
    assert r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False, size=2, offset=6)).observation.access.value == 0
    assert r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False, size=16)).observation.access.value == 0
    store = r.step(op("guest_walk", v=0, c=0, x=X, a="write", u=False, value=5)).observation.access
    assert not store.fault
    assert r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False)).observation.access.value == 0  # dropped
    assert not r.step(op("guest_walk", v=0, c=0, x=X, a="fetch", u=False)).observation.access.fault
    leaf = int.from_bytes(r.adapter.read_guest(0, 3 * PAGE, 8), "little")
    assert leaf & A and leaf & D  # a translation like any: the walk set A, the store D


@pytest.mark.parametrize("convention", ["fault", "ones"])
def test_a_table_beyond_memory_faults_rsvd_and_rights_win_over_the_frame(convention):
    r = beyond_runner(convention)
    # the PDE names a page table past memory: all-ones entries there are present with reserved bits
    r.step(op("gpte_write", v=0, r=0, x=X, level=2, bits=UP, g=BEYOND + 1))
    got = r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=True)).observation.access
    assert (got.error_code, got.cr2) == (PF_P | PF_RSVD | PF_U, X)
    # a read-only, supervisor leaf beyond memory: the user write lacks the right; that is reported
    r.step(op("gpte_write", v=0, r=0, x=X, level=2, bits=UP, g=3))
    r.step(op("guest_map", v=0, r=0, x=X, g=BEYOND, w=False, u=False, nx=False, a=True, d=False))
    got = r.step(op("guest_walk", v=0, c=0, x=X, a="write", u=True, value=1)).observation.access
    assert got.error_code == PF_P | PF_W | PF_U


def test_a_table_beyond_memory_under_zeros_faults_not_present_and_rights_still_win():
    r = beyond_runner("zeros")
    # the PDE names a page table past memory: its entries read 0, so the walk meets a not-present PTE
    r.step(op("gpte_write", v=0, r=0, x=X, level=2, bits=UP, g=BEYOND + 1))
    for a, u, code in (("read", True, PF_U), ("write", False, PF_W), ("fetch", True, PF_U | PF_I)):
        got = r.step(op("guest_walk", v=0, c=0, x=X, a=a, u=u, value=1)).observation.access
        assert (got.fault, got.error_code, got.cr2) == (True, code, X)
    # a table beyond memory higher up (the PML4 entry names a PDPT there): the same, one level up
    r.step(op("gpte_write", v=0, r=0, x=X, level=4, bits=UP, g=BEYOND + 5))
    got = r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False)).observation.access
    assert (got.fault, got.error_code) == (True, 0)
    # a read-only, supervisor leaf beyond memory: the user write's missing right is reported
    r.step(op("gpte_write", v=0, r=0, x=X, level=4, bits=UP, g=1))
    r.step(op("gpte_write", v=0, r=0, x=X, level=2, bits=UP, g=3))
    r.step(op("guest_map", v=0, r=0, x=X, g=BEYOND, w=False, u=False, nx=False, a=True, d=False))
    got = r.step(op("guest_walk", v=0, c=0, x=X, a="write", u=True, value=1)).observation.access
    assert got.error_code == PF_P | PF_W | PF_U


@pytest.mark.parametrize("table", [False, True])
def test_a_vmm_playing_ones_under_zeros_is_caught(table):
    """The bundled VMM told "zeros" but answering as "ones" (its convention switched after reset):
    a load beyond memory reads all-ones, a table there faults RSVD; both are observation failures."""
    r = beyond_runner("zeros")
    r.adapter.vmm.beyond_memory = "ones"
    if table:
        r.step(op("gpte_write", v=0, r=0, x=X, level=2, bits=UP, g=BEYOND + 1))
    with pytest.raises(Failure) as e:
        r.step(op("guest_walk", v=0, c=0, x=X, a="read", u=False))
    assert e.value.kind == "observation" and "ideal machine allows" in e.value.message


def test_the_ideal_machine_under_zeros():
    ideal = Ideal(BEYOND, "zeros")
    ideal.create(0)
    vm = ideal.vms[0].cpus[0]
    vm.load_cr3(0)
    for gpa, e in ((PML4E, 0x1000 | UP), (PDPTE, 0x2000 | UP), (PDE, (BEYOND + 1) << 12 | UP)):
        vm.mem.write64(gpa, e)
    # a page table beyond memory: not present at level 1, with W/U/I as for any fault
    for a, u, code in (("read", False, 0), ("read", True, PF_U), ("write", True, PF_W | PF_U),
                       ("fetch", False, PF_I)):
        o, t, _ = vm.walk(X, a, u)
        assert (o.fault, o.error_code, o.cr2, t) == (True, code, X, None)
        assert o.may_set_a == (PML4E, PDPTE, PDE)  # the entries above the missing table were used
    # a final page beyond memory: a translation like any; loads read 0, stores are dropped, A/D set
    vm.mem.write64(PDE, 0x3000 | UP)
    vm.mem.write64(PTE, BEYOND << 12 | UP)
    o, t, used = vm.walk(X, "write", False)
    assert not o.fault and o.paddr == BEYOND * PAGE
    vm.commit(X, "write", o, t, used, 0x1234, 8)
    assert vm.mem.read64(PTE) & (A | D) == A | D
    assert len(vm.mem.mem) == BEYOND * PAGE  # the store went nowhere
    o, t, used = vm.walk(X + 8, "read", False)
    assert vm.load(o, "read", used, 16) == 0
    assert vm.commit(X + 8, "read", o, t, used, 0, 4).value == 0
    assert not vm.walk(X, "fetch", True)[0].fault


@pytest.mark.parametrize("convention, other", [
    ("fault", AccessResult(False, value=(1 << 64) - 1)), ("fault", AccessResult(False, value=0)),
    ("ones", AccessResult(True, PF_P | PF_RSVD, X)), ("ones", AccessResult(False, value=0)),
    ("zeros", AccessResult(True, PF_P | PF_RSVD, X)), ("zeros", AccessResult(False, value=(1 << 64) - 1)),
])
def test_each_convention_rejects_the_others(convention, other):
    impl = Impl(Config(beyond_memory=convention))
    impl.tables(leaf=(BEYOND << 12) | 0x7)
    f = caught(impl, other)
    assert "ideal machine allows" in f.message


@pytest.mark.parametrize("convention, other", [("fault", AccessResult(True, 0, X)),
                                               ("ones", AccessResult(True, 0, X)),
                                               ("zeros", AccessResult(True, PF_P | PF_RSVD, X))])
def test_a_table_beyond_memory_rejects_the_other_conventions_error_code(convention, other):
    impl = Impl(Config(beyond_memory=convention))
    impl.tables(leaf=0, pde=(BEYOND + 1) << 12 | UP)
    f = caught(impl, other)
    assert "ideal machine allows" in f.message


def test_one_list_of_conventions():
    """The harness's list is adapter.py's (the ideal machine, the config file, the wire schema follow
    it); the bundled VMM, which imports nothing of the harness, knows the same conventions."""
    import json
    from pathlib import Path

    from dmmcheck.conformance import adapter, configfile, ideal
    from dmmcheck.impl import vmm

    assert ideal.BEYOND_MEMORY is adapter.BEYOND_MEMORY and configfile.BEYOND is adapter.BEYOND_MEMORY
    schema = json.loads((Path(adapter.__file__).parent / "schemas" / "request.json").read_text())
    enums = []

    def find(node):  # type: ignore[no-untyped-def]
        if isinstance(node, dict):
            if "beyond_memory" in node and isinstance(node["beyond_memory"], dict):
                enums.append(node["beyond_memory"].get("enum"))
            for v in node.values():
                find(v)
        elif isinstance(node, list):
            for v in node:
                find(v)
    find(schema)
    assert enums == [list(adapter.BEYOND_MEMORY)]
    assert vmm.BEYOND_MEMORY == adapter.BEYOND_MEMORY


def test_an_unknown_convention_is_refused_by_the_harness_and_the_adapter():
    with pytest.raises(ValueError, match="beyond_memory"):
        Config(beyond_memory="twos")
    with pytest.raises(ValueError):
        Config.from_json({**Config().to_json(), "beyond_memory": "twos"})
    with pytest.raises(ValueError):
        Ideal(16, "twos")
    bad = Config()
    object.__setattr__(bad, "beyond_memory", "twos")  # an adapter must not trust what it is given
    with pytest.raises(ValueError, match="twos"):
        BundledVmm().reset(bad)


def test_a_campaign_under_the_ones_convention_passes_and_tries_non_canonical_gvas():
    r = fuzz(BundledVmm, SPEC, Config(beyond_memory="ones"), examples=60, seed_=2)
    assert r.failure is None, r.failure and f"{r.failure}\n{r.failure.detail}"
    assert r.inputs["non-canonical gva"] > 0
    assert any("beyond memory" in k or "end of memory" in k for k in r.inputs)


def test_a_campaign_under_the_zeros_convention_passes_and_reaches_memory_beyond():
    r = fuzz(BundledVmm, SPEC, Config(beyond_memory="zeros"), examples=60, seed_=2)
    assert r.failure is None, r.failure and f"{r.failure}\n{r.failure.detail}"
    assert any("beyond memory" in k or "end of memory" in k for k in r.inputs)


# ---------------------------------------------------------------- the TLB (SDM 4.10)

def cached_read_only() -> Impl:
    """X read once through a read-only leaf (cached), then made writable without invlpg."""
    impl = Impl()
    impl.tables(leaf=0x9001)  # P, supervisor, read-only
    for gpa in (PML4E, PDPTE, PDE, PTE):
        impl.set_entry(gpa, impl.entry(gpa) | A)  # the walk's A bits
    impl.access(AccessResult(False, value=0))
    impl.store(PTE, 0x9003)  # + RW, A clear: a fresh walk sets it
    return impl


def test_a_spurious_fault_from_a_stale_read_only_translation_is_accepted_once():
    """SDM 4.10.4.3: a rights upgrade not yet invalidated may fault; 4.10.4.1: the fault drops the
    gva's cached translations, so the same stale entry cannot be used again."""
    impl = cached_read_only()
    impl.access(AccessResult(True, PF_P | PF_W, X), a="write", value=1)
    assert impl.vm.tlb == {}
    caught(impl, AccessResult(True, PF_P | PF_W, X), a="write", value=1)  # not twice


def test_a_stale_translation_to_the_same_frame_leaves_a_and_d_unchanged():
    """Fresh walk and stale entry agree on the frame; the fresh one sets A (and D), the stale one
    sets nothing. Either is accepted: each candidate is tried in full, A/D included."""
    for stale in (True, False):
        impl = cached_read_only()
        if not stale:
            impl.set_entry(PTE, 0x9003 | A)
        impl.access(AccessResult(False, value=0))
        assert impl.vm.mem.read64(PTE) == impl.entry(PTE)
    impl = cached_read_only()
    impl.set_entry(PTE, 0x9003 | A | D)  # D on a read: neither outcome
    assert "A/D" in caught(impl, AccessResult(False, value=0)).message


def test_setting_smep_invalidates_the_tlb_and_a_fault_drops_the_gvas_entries():
    impl = cached_read_only()
    impl.control("set_mode", o="wp+smep+nxe")  # SDM 4.10.4.1: SMEP 0 -> 1 flushes
    caught(impl, AccessResult(True, PF_P | PF_W, X), a="write", value=1)
    impl = cached_read_only()
    impl.store(PTE, 0)  # unmapped, no invlpg: the old translation may still be used ...
    impl.access(AccessResult(True, PF_I, X), a="fetch")  # ... but this #PF drops it (4.10.4.1)
    caught(impl, AccessResult(False, value=0))


def two_vcpus_on_root_0() -> Impl:
    """Both vCPUs on root 0; X maps gfn 9 (which holds 0x1111), A set on every entry of its walk."""
    impl = Impl()
    impl.tables(leaf=0x9003)
    impl.control("cr3_load", c=1, r=0)
    impl.store(0x9000, 0x1111)
    for gpa in (PML4E, PDPTE, PDE, PTE):
        impl.set_entry(gpa, impl.entry(gpa) | A)
    return impl


def two_vcpus_cached() -> Impl:
    """Both vCPUs read X, then the guest remaps X to gfn 10 (zeros) without invlpg."""
    impl = two_vcpus_on_root_0()
    for c in (0, 1):
        impl.access(AccessResult(False, value=0x1111), c=c)
    impl.store(PTE, 0xA003 | A)
    return impl


def test_an_invlpg_on_vcpu_0_leaves_vcpu_1s_stale_translation_accepted():
    impl = two_vcpus_cached()
    impl.control("invlpg", c=0, x=X)
    impl.access(AccessResult(False, value=0x1111), c=1)  # vCPU 1 has not invalidated
    caught(impl, AccessResult(False, value=0x1111), c=0)
    impl.access(AccessResult(False, value=0), c=0)


def test_a_cr3_load_on_vcpu_1_leaves_vcpu_0s_stale_translation_accepted():
    impl = two_vcpus_cached()
    impl.control("cr3_load", c=1, r=0)
    caught(impl, AccessResult(False, value=0x1111), c=1)
    impl.access(AccessResult(False, value=0x1111), c=0)


def test_a_vcpu_may_use_a_translation_it_could_have_cached_speculatively():
    """SDM 4.10.2.3: vCPU 1 never read X, but the old translation was valid through its CR3 (A set
    on every entry) until the remap: it may hold it, until its own invlpg."""
    impl = two_vcpus_on_root_0()
    impl.access(AccessResult(False, value=0x1111), c=0)
    impl.store(PTE, 0xA003 | A)
    impl.access(AccessResult(False, value=0x1111), c=1)
    impl.control("invlpg", c=1, x=X)
    caught(impl, AccessResult(False, value=0x1111), c=1)


def test_no_speculative_translation_without_a_set_or_after_the_cr3_load():
    """A speculative walk sets A like any: an entry left with A clear shows none was made. And a
    translation the guest replaced before the vCPU's CR3 load was never valid for it since."""
    impl = Impl()
    impl.tables(leaf=0x9003)  # A clear in every entry
    impl.control("cr3_load", c=1, r=0)
    impl.store(0x9000, 0x1111)
    impl.store(PTE, 0xA003)
    caught(impl, AccessResult(False, value=0x1111), c=1)
    impl = two_vcpus_cached()
    impl.control("cr3_load", c=1, r=0)
    impl.store(0xB000, 0)  # a store to a data page: no translation changes
    caught(impl, AccessResult(False, value=0x1111), c=1)


def test_a_tlb_hit_equal_to_the_fresh_walk_sets_no_a_and_no_d_only_where_cached_dirty():
    """The guest clears A (and D) in a gpte without invlpg; the frame is the same. A read served by
    the TLB leaves A clear; a write leaves D clear only if the entry was cached dirty."""
    impl = Impl()
    impl.tables(leaf=0x9003)
    for gpa in (PML4E, PDPTE, PDE, PTE):
        impl.set_entry(gpa, impl.entry(gpa) | A)
    impl.access(AccessResult(False, value=0))  # cached clean (D clear)
    impl.store(PTE, 0x9003)
    impl.access(AccessResult(False, value=0))  # A left clear: a TLB hit
    assert impl.vm.mem.read64(PTE) == 0x9003
    impl.set_entry(PTE, 0x9003 | A)  # the implementation set A but no D on a write
    assert "A/D" in caught(impl, AccessResult(False), a="write", value=1).message
    impl = Impl()
    impl.tables(leaf=0x9003)
    for gpa in (PML4E, PDPTE, PDE):
        impl.set_entry(gpa, impl.entry(gpa) | A)
    impl.set_entry(PTE, 0x9003 | A | D)
    impl.mem[0x9000:0x9008] = (1).to_bytes(8, "little")
    impl.access(AccessResult(False), a="write", value=1)  # cached dirty
    impl.store(PTE, 0x9003)
    impl.mem[0x9000:0x9008] = (2).to_bytes(8, "little")
    impl.access(AccessResult(False), a="write", value=2)  # a TLB hit: no A, no D
    assert impl.vm.mem.read64(PTE) == 0x9003


def test_two_vcpus_in_different_modes_are_judged_each_in_its_own():
    """A supervisor write to a read-only page: vCPU 1 with CR0.WP clear may, vCPU 0 may not."""
    impl = Impl()
    impl.tables(leaf=0x9001 | A | D)
    impl.control("cr3_load", c=1, r=0)
    impl.control("set_mode", c=1, o="nxe")
    for gpa in (PML4E, PDPTE, PDE):
        impl.set_entry(gpa, impl.entry(gpa) | A)
    caught(impl, AccessResult(True, PF_P | PF_W, X), a="write", value=1, c=1)
    impl.mem[0x9000:0x9008] = (1).to_bytes(8, "little")
    impl.access(AccessResult(False), a="write", value=1, c=1)
    caught(impl, AccessResult(False), a="write", value=2, c=0)
    impl.access(AccessResult(True, PF_P | PF_W, X), a="write", value=2, c=0)


# ---------------------------------------------------------------- what the architecture requires stays required

def test_error_code_i_only_with_nxe_or_smep():
    impl = Impl()
    impl.tables(leaf=0)
    impl.control("set_mode", o="wp")
    caught(impl, AccessResult(True, PF_I, X), a="fetch")
    impl.access(AccessResult(True, 0, X), a="fetch")
    impl.control("set_mode", o="wp+smep")
    impl.access(AccessResult(True, PF_I, X), a="fetch")


def test_a_reserved_bit_fault_carries_p():
    impl = Impl()
    impl.tables(leaf=0x9003 | (1 << 40))  # bit 40: above MAXPHYADDR, reserved
    caught(impl, AccessResult(True, PF_RSVD, X))  # RSVD without P
    impl.access(AccessResult(True, PF_P | PF_RSVD, X))


def test_a_successful_walk_must_set_a_everywhere_and_d_on_a_huge_leaf():
    impl = Impl()
    impl.tables(leaf=0, pde=UP | 0x80)  # a 2 MiB leaf at frame 0
    for gpa in (PML4E, PDPTE, PDE):
        impl.set_entry(gpa, impl.entry(gpa) | A)
    f = caught(impl, AccessResult(False), x=X + 0x9000, a="write", value=3)  # (gpa 0x9000) D missing on the 2 MiB leaf
    assert "A/D" in f.message and f"{PDE:#x}" in f.message


def test_wp0_supervisor_write_to_a_read_only_page_succeeds_and_sets_d():
    impl = Impl()
    impl.tables(leaf=0x9001)
    impl.control("set_mode", o="nxe")
    for gpa in (PML4E, PDPTE, PDE):
        impl.set_entry(gpa, impl.entry(gpa) | A)
    impl.set_entry(PTE, 0x9001 | A | D)
    impl.mem[0x9000:0x9008] = (9).to_bytes(8, "little")
    impl.access(AccessResult(False), a="write", value=9)


def test_smap_respects_eflags_ac_and_applies_to_user_pages_only():
    c = Controls(smap=True)
    assert not permits("read", False, False, c, True, True, False)  # supervisor read of a user page
    assert permits("read", False, True, c, True, True, False)  # EFLAGS.AC set: allowed
    assert permits("write", False, True, replace(c, wp=False), False, True, False)  # AC, WP=0: as without SMAP
    assert permits("read", False, False, c, True, False, False)  # a supervisor page: SMAP does not apply


def test_a_cached_2mib_translation_serves_the_whole_page_until_invlpg_of_any_part():
    """SDM 4.10.2: a 2 MiB page may be cached as one entry; INVLPG of any address in it drops it."""
    impl = Impl()
    impl.tables(leaf=0, pde=UP | A | 0x80)  # a 2 MiB leaf at frame 0 (guest memory is its first 64 KiB)
    for gpa in (PML4E, PDPTE):
        impl.set_entry(gpa, impl.entry(gpa) | A)
    impl.access(AccessResult(False, value=0), x=X + 0x9000)
    impl.store(0xA000, 0x5A5A)
    impl.store(PDE, 0x3000 | UP | A)  # now a page table (all not present), no invlpg
    impl.access(AccessResult(False, value=0x5A5A), x=X + 0xA000)  # another 4 KiB of the cached page
    impl.control("invlpg", x=X + 0x5000)
    caught(impl, AccessResult(False, value=0x5A5A), x=X + 0xA000)


def cached_pde() -> Impl:
    """X read once (its PML4E, PDPTE and PDE cached), its page table's entry 1 mapping gfn 10."""
    impl = Impl()
    impl.tables(leaf=0x9003)
    impl.store(PTE + 8, 0xA003)
    for gpa in (PML4E, PDPTE, PDE, PTE):
        impl.set_entry(gpa, impl.entry(gpa) | A)
    impl.access(AccessResult(False, value=0))
    impl.store(0xA000, 0x1111)
    impl.store(0xB000, 0x2222)
    return impl


def test_a_cached_upper_entry_may_stand_in_for_one_rewritten_without_invlpg():
    """SDM 4.10.3: a paging-structure cache may keep a PDE after the guest rewrites it; a walk of
    another gva under it may go through the old page table."""
    for old in (True, False):
        impl = cached_pde()
        impl.store(0x4008, 0xB003)  # a second page table (gfn 4): entry 1 maps gfn 11 ...
        impl.store(PDE, 0x4000 | UP | A)  # ... and the PDE now names it, no invlpg
        via = 0x3008 if old else 0x4008
        impl.set_entry(via, impl.entry(via) | A)
        impl.access(AccessResult(False, value=0x1111 if old else 0x2222), x=X + 0x1000)
    impl = cached_pde()
    impl.store(0x4008, 0xB003)
    impl.store(PDE, 0x4000 | UP | A)
    impl.control("invlpg", x=0x600000)  # INVLPG of any address drops every paging-structure-cache entry
    impl.set_entry(0x3008, 0xA003 | A)
    caught(impl, AccessResult(False, value=0x1111), x=X + 0x1000)


def test_an_upper_a_bit_cleared_without_invlpg_may_stay_clear():
    """SDM 4.10.4.3: clearing A without invalidating may leave it clear on a later access (the
    processor walks from its cached copy)."""
    for sets_it in (False, True):
        impl = cached_pde()
        impl.store(PDE, 0x3000 | UP)  # A cleared, no invlpg
        impl.set_entry(0x3008, 0xA003 | A)
        if sets_it:
            impl.set_entry(PDE, impl.entry(PDE) | A)
        impl.access(AccessResult(False, value=0x1111), x=X + 0x1000)
        assert impl.vm.mem.read64(PDE) == impl.entry(PDE)
