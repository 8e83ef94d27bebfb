"""One conformance run: reset the implementation, then for each operation step it, read it back,
and judge the step with both oracles. The fuzzer and `dmm replay` both drive this loop.

The implementation is untrusted: an exception, a wrong shape or a hang (past the per-step
timeout) becomes a Failure of kind crash or timeout naming the step; the harness goes on.
"""

from __future__ import annotations

import _signal  # signal.signal without its enum conversions (about 30 µs a call; here 6 a step)
import signal
import threading
import time
import traceback
from collections import Counter, OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .adapter import Adapter, Config, Observation, Operation
from . import levels
from .abstraction import ALL_PARTS
from .oracle import Failure, Judge, Oracle, SpecStep
from .scope import clamp


@dataclass
class StepRecord:
    index: int
    op: Operation
    observation: Observation
    spec_steps: list[SpecStep]

    def to_json(self, it: Any) -> dict[str, Any]:
        return {"step": self.index, "action": self.op.action, "args": self.op.args,
                "impl": [[n, a] for n, a in self.observation.events],
                "spec": [f"{s.action}({it.show_args(s.action, s.args)})" for s in self.spec_steps],
                "access": self.observation.access.to_json() if self.observation.access else None,
                "note": self.observation.note}


@dataclass
class Timing:
    impl: float = 0.0  # in the adapter: steps and abstract_state
    oracle: float = 0.0  # spec interpreter, invariants, ideal machine


JUDGES_KEPT = 64
# With partial reads (Runner.full_readback off), every this many steps the whole state is read
# anyway, and at the end of a test case: an implementation that changes state it does not report
# is caught within that many steps.
READBACK_GUARD = 8


class _StepTimeout(BaseException):
    """Raised by the alarm: a BaseException, so that no `except Exception` on the way (in an
    adapter, in the harness's own wrappers) can turn a timeout into something else."""


_armed = False  # the alarm raises only while a guarded call runs: one firing after it is ignored


def _on_alarm(_sig: int, _frame: Any) -> None:
    if _armed:
        raise _StepTimeout()


@dataclass
class Runner:
    adapter: Adapter
    spec: Any
    config: Config
    step_timeout: float = 10.0
    timing: Timing = field(default_factory=Timing)
    records: list[StepRecord] = field(default_factory=list)
    oracle: Oracle | None = None
    judge: Judge | None = None
    coverage: Counter[str] = field(default_factory=Counter)  # spec actions performed, over every scope
    # What the oracles compile, per scope: the most recent ones kept (each about half a megabyte; a
    # long campaign with scopes varied per test case meets thousands)
    _judges: OrderedDict[Config, Judge] = field(default_factory=OrderedDict)
    level: str = "full"  # the adapter's conformance level (levels.py), read at each reset
    # accesses the adapter could not perform safely (AccessResult.skipped), by kind, over every test case
    skipped: Counter[str] = field(default_factory=Counter)
    # Read the whole abstract state after every step. Off (the fuzzer's default), an adapter with
    # abstract_state_parts is asked only for the costly parts a step's events say may have changed
    # (Oracle.parts_for), and for everything every READBACK_GUARD steps and at verify().
    full_readback: bool = True
    reads: Counter[str] = field(default_factory=Counter)  # abstract-state reads: "full", "partial"
    _since_full: int = 0  # steps judged on a partial read since the last full one

    def __post_init__(self) -> None:
        self.config = self._within(self.config)
        self.judge = self._judges[self.config] = Judge(self.spec, self.config, self.coverage)

    def _within(self, config: Config) -> Config:
        """The configuration with no more vCPUs than the adapter runs (a replay refuses a trace
        that needs more up front: trace.prepare)."""
        try:
            return clamp(config, self.adapter.capabilities())
        except Exception:  # noqa: BLE001 - capabilities that fail: the reset reports the adapter's fault
            return config

    def reset(self, config: Config | None = None) -> None:
        """A new test case, on `config` (default: the last one)."""
        config = None if config is None else self._within(config)
        if config is not None and config != self.config:
            self.config = config
            if config not in self._judges:
                self._judges[config] = Judge(self.spec, config, self.coverage)
                if len(self._judges) > JUDGES_KEPT:
                    self._judges.popitem(last=False)
            self._judges.move_to_end(config)
            self.judge = self._judges[config]
        self.records = []
        self._since_full = 0
        self.level = levels.declared(self.adapter.capabilities())  # what it shows decides what is judged
        self._guarded(lambda: self.adapter.reset(self.config), "reset")
        if self.level == "black-box":
            self.oracle = Oracle(self.judge)  # type: ignore[arg-type]
            self.oracle.skipped = self.skipped
            self.oracle.state = levels.guest_view(self.oracle)
            return
        st = self._guarded(self.adapter.abstract_state, "abstract_state after reset")
        self.oracle = Oracle(self.judge, _first_mfn(st))  # type: ignore[arg-type]
        self.oracle.skipped = self.skipped
        self._judge(lambda: self.oracle.start(st))  # type: ignore[union-attr]

    def step(self, op: Operation) -> StepRecord:
        assert self.oracle is not None, "reset first"
        # Recorded before it runs: a step that crashes or hangs is the last step of the trace, and
        # the trace replays to the same crash.
        rec = StepRecord(len(self.records), op, Observation(note="no answer: the step did not complete"), [])
        self.records.append(rec)
        controls = self._controls(op)  # as the operation found them (a set_mode changes them)
        try:
            return self._step(op, rec)
        except Failure as f:  # what the verdict is about, as data (known divergences match on it)
            f.facts.update(step=rec.index, operation={"action": op.action, "args": dict(op.args)}, controls=controls)
            raise

    def _controls(self, op: Operation) -> dict[str, bool] | None:
        """The control bits of the operation's vCPU (the ideal machine's: every level has them)."""
        cpu = self.oracle.ideal_cpu(op.args) if self.oracle is not None else None
        if cpu is None:
            return None
        return {"wp": cpu.ctl.wp, "nxe": cpu.ctl.nxe, "smep": cpu.ctl.smep, "smap": cpu.ctl.smap}

    def _step(self, op: Operation, rec: StepRecord) -> StepRecord:
        t0 = time.perf_counter()
        try:
            obs = self._guarded(lambda: self.adapter.step(op), f"step {rec.index} ({op.action})")
            if not isinstance(obs, Observation):
                raise Failure("crash", f"step {rec.index} ({op.action}) returned {type(obs).__name__}, "
                              "not an Observation")
            rec.observation = obs
            parts = self._parts(op, obs)
            st = None if self.level == "black-box" else self._read(parts, f"abstract_state after step {rec.index}")
        finally:
            self.timing.impl += time.perf_counter() - t0
        t1 = time.perf_counter()
        oracle, read = self.oracle, self.adapter.read_guest
        try:
            if self.level == "full":
                judge = lambda: oracle.check(op, obs, st, read, parts)  # noqa: E731
            elif self.level == "state":
                # The search for the spec steps is the harness's own work: outside the time limit
                reach = levels.reach_of(oracle, self.judge)
                ex = self._judge(lambda: levels.explain(oracle, reach, op, st))  # type: ignore[arg-type]
                judge = lambda: levels.judge_state(oracle, reach, op, obs, ex, read)  # noqa: E731
            else:
                judge = lambda: levels.judge_black_box(oracle, op, obs, read)  # noqa: E731
            rec.spec_steps = self._guarded(  # read_guest is the adapter's too: under the same timeout
                lambda: self._judge(judge), f"judging step {rec.index} ({op.action})")
        finally:
            self.timing.oracle += time.perf_counter() - t1
        return rec

    def _parts(self, op: Operation, obs: Observation) -> frozenset[str]:
        """What to read back after this step: everything, or (partial reads at level full) the
        costly parts its events say may have changed, with a full read every READBACK_GUARD steps."""
        if self.full_readback or self.level != "full" or not hasattr(self.adapter, "abstract_state_parts") \
                or self._since_full + 1 >= READBACK_GUARD:
            return ALL_PARTS
        try:
            return self.oracle.parts_for(op, obs)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - events of the wrong shape: read everything, the oracle reports them
            return ALL_PARTS

    def _read(self, parts: frozenset[str], what: str) -> Any:
        if parts == ALL_PARTS:
            self._since_full = 0
            self.reads["full"] += 1
            return self._guarded(self.adapter.abstract_state, what)
        self._since_full += 1
        self.reads["partial"] += 1
        return self._guarded(lambda: self.adapter.abstract_state_parts(parts), what)  # type: ignore[attr-defined]

    def verify(self) -> None:
        """At the end of a test case: if the last steps were judged on partial reads, read the
        whole state; it must be the one their events explain (else a Failure on the last step)."""
        if self._since_full == 0 or self.level != "full" or not self.records:
            return
        rec = self.records[-1]
        what = f"after step {rec.index} ({rec.op.action})"
        t0 = time.perf_counter()
        try:
            st = self._read(ALL_PARTS, f"abstract_state {what}")
        finally:
            self.timing.impl += time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            read = self.adapter.read_guest
            self._guarded(lambda: self._judge(lambda: self.oracle.verify(st, what, read)),  # type: ignore[union-attr]
                          f"judging the state {what}")
        except Failure as f:
            f.facts.update(step=rec.index, operation={"action": rec.op.action, "args": dict(rec.op.args)})
            raise
        finally:
            self.timing.oracle += time.perf_counter() - t1

    def _judge(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Failure:
            raise
        except Exception as e:  # the adapter's data broke the oracle: the adapter's fault, reported
            raise Failure("crash", f"the harness could not read the implementation's state: "
                          f"{type(e).__name__}: {e}", traceback.format_exc(limit=-4)) from None

    def _guarded(self, fn: Callable[[], Any], what: str) -> Any:
        return guarded(fn, what, self.step_timeout)


def guarded(fn: Callable[[], Any], what: str, timeout: float) -> Any:
    """fn() under a time limit (the main thread only: SIGALRM); an exception, a sys.exit or a hang
    becomes a Failure (crash or timeout) naming `what`."""
    global _armed
    timed = timeout > 0 and threading.current_thread() is threading.main_thread()
    # (installed for the whole campaign by alarm_handler(): then no signal() call per step)
    old = _signal.signal(signal.SIGALRM, _on_alarm) if timed and _signal.getsignal(signal.SIGALRM) is not _on_alarm \
        else None
    try:
        try:
            if timed:  # armed inside the try: an alarm at any point after is a timeout verdict
                _armed = True
                signal.setitimer(signal.ITIMER_REAL, timeout)
            return fn()
        finally:
            if timed:  # disarmed before the timer is cancelled: a late alarm cannot escape
                _armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
    except _StepTimeout:
        raise Failure("timeout", f"{what} did not return within {timeout:g} s") from None
    except Failure:
        raise
    except SystemExit as e:  # an implementation that exits must not end the run as a pass
        raise Failure("crash", f"{what} called sys.exit({e.code!r})") from None
    except KeyboardInterrupt:  # the user's Ctrl-C: the campaign keeps what it found
        raise
    except BaseException as e:  # noqa: BLE001 - any other exception class an adapter defines is its crash
        raise Failure("crash", f"{what} raised {type(e).__name__}: {e}",
                      traceback.format_exc(limit=-4)) from None
    finally:
        if old is not None:
            _signal.signal(signal.SIGALRM, old)


@contextmanager
def alarm_handler() -> Iterator[None]:
    """The step timeout's SIGALRM handler, installed once around a whole campaign (in the main
    thread) instead of once per guarded call: two signal() calls a call, about 1% of a
    campaign. Outside, the handler is whatever it was."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = _signal.signal(signal.SIGALRM, _on_alarm)
    try:
        yield
    finally:
        _signal.signal(signal.SIGALRM, old)


def _first_mfn(st: Any) -> int:
    try:
        return int(st["mfns"][0])
    except (KeyError, TypeError, IndexError, ValueError):
        return 1
