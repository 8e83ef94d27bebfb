"""AccessResult.skipped: an access the adapter could not perform safely is not judged, and counted
as skipped (never as passed), in process and over the wire."""

from __future__ import annotations

from dmmcheck.conformance.adapter import AccessResult, Config, Observation, Operation
from dmmcheck.conformance.fuzz import fuzz
from dmmcheck.conformance.report import as_json
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.conformance.wire import check_reply, observation_from_json, observation_to_json
from dmmcheck.spec import load

SPEC = load(None)


class SkipsFetches(BundledVmm):
    """The bundled VMM, but every fetch is declared not performed (nothing happens)."""

    def step(self, op: Operation) -> Observation:
        if op.args.get("a") == "fetch" and op.action in ("shadow_hit", "tlb_hit", "guest_walk", "guest_fault"):
            return Observation(access=AccessResult(False, skipped=True), note="not performed")
        return super().step(op)


class WrongWhenSkipping(SkipsFetches):
    """Claims a skipped fetch but stores to guest memory anyway: the memory compare still sees it."""

    def step(self, op: Operation) -> Observation:
        obs = super().step(op)
        if obs.access is not None and obs.access.skipped and self.vmm is not None:
            vm = self.vmm.vms[op.args["v"]]
            self.vmm.gpa_write(vm, (self.config.gfns - 1) * 4096, b"\x01")  # (a page of every scope's memory)
        return obs


def test_skipped_accesses_are_counted_not_judged() -> None:
    r = fuzz(SkipsFetches, SPEC, Config(), examples=40, seed_=1)
    assert r.failure is None
    assert r.skipped.get("fetch", 0) > 0
    assert set(r.skipped) == {"fetch"}
    assert as_json(r, [], None)["skipped"] == dict(r.skipped)


def test_a_skipped_access_that_changed_memory_is_caught() -> None:
    r = fuzz(WrongWhenSkipping, SPEC, Config(), examples=60, seed_=1)
    assert r.failure is not None and r.failure.kind == "observation"


def test_skipped_travels_the_wire() -> None:
    obs = Observation(access=AccessResult(False, skipped=True), note="not performed")
    msg = observation_to_json(obs)
    check_reply("step", {"ok": msg})
    assert observation_from_json(msg).access.skipped is True  # type: ignore[union-attr]
    plain = observation_to_json(Observation(access=AccessResult(True, 2, 0x1000)))
    assert observation_from_json(plain).access.skipped is False  # type: ignore[union-attr]
