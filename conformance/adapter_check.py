"""`dmm adapter-check`: a new adapter's self-test, before any fuzzing.

It drives the adapter through canned sequences over `dmm-adapter/1` — the handshake, capabilities,
reset on the default Config, the initial abstract state, vm_create / cr3_load / guest_map /
guest_walk, reads of guest memory (bytes, many ranges, digests), an unknown operation (refused with
an error reply, and the child lives on), an unknown call, close — and names every protocol
violation with the request that caused it and the reply. An in-process adapter (--impl) is checked
through the reference server (serve.py), which is how its replies would travel. An adapter at level
black-box (Capabilities.level) is not asked for events or an abstract state; `--config FILE` resets
it on that configuration instead of the default one.

Exit status: 0 no violation; 1 violations; 2 bad input (a command that cannot be run, an --impl that
cannot be loaded).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any

from .adapter import Config
from .child import Channel, CommandError, describe_exit, parse_command
from .oracle import Failure
from .wire import PROTOCOL, WireError, check_reply, decode, encode, quote, state_from_json, unb64

EXIT_VIOLATIONS, EXIT_INPUT = 1, 2
VALUE = 0x1122334455667788  # what the guest stores, then reads back through read_guest
NEEDED = ("vm_create", "cr3_load", "set_mode", "guest_map", "guest_walk")  # the sequence below, and every swarm


@dataclass
class Check:
    name: str
    ok: bool
    sent: str = ""  # the request, as sent
    reply: str = ""  # the reply, quoted
    problem: str = ""
    ran: bool = True  # False: not run (the child was gone); not a violation of its own


class _Gone(Exception):
    """The child is gone (or out of step): the checks after this one cannot run."""


NO_REPLY = object()  # a call whose reply was a violation (already recorded)


class Checker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.checks: list[Check] = []
        self.last = (b"", b"")  # the last request and its reply, as they travelled

    def call(self, name: str, msg: dict[str, Any], expect_error: bool = False, schema: str | None = None) -> Any:
        """Send one request; its `ok` value after the checks every reply gets, or NO_REPLY when the
        reply was a violation (recorded; _Gone raised when nothing after it can run). A call made
        with `expect_error` must be refused: that is recorded either way."""
        sent = encode(msg)
        try:
            raw = self.channel.exchange(sent, name)
        except Failure as f:  # timeout, death (the channel killed the child)
            self.fail(name, sent, b"", f.message + (f"\n{f.detail}" if f.detail else ""))
            raise _Gone() from None
        self.last = (sent, raw)
        try:
            reply = decode(raw)
        except (ValueError, RecursionError) as e:
            self.channel.kill()
            self.fail(name, sent, raw, f"the reply is not a line of JSON ({e})")
            raise _Gone() from None
        if expect_error and not (isinstance(reply, dict) and "error" in reply):
            self.fail(name, sent, raw, "this request must be refused with an error reply ({\"error\": message})")
            return NO_REPLY
        try:
            check_reply(schema or msg["call"], reply)
        except WireError as e:
            self.channel.kill()  # it may be out of step
            self.fail(name, sent, raw, f"the reply breaks {PROTOCOL} ({e})")
            raise _Gone() from None
        if expect_error:
            self.passed(name, sent, raw)
            return NO_REPLY
        if "error" in reply:
            self.fail(name, sent, raw, f"refused: {reply['error']}")
            return NO_REPLY
        return reply["ok"]

    def passed(self, name: str, sent: bytes, raw: bytes) -> None:
        self.checks.append(Check(name, True, quote(sent), quote(raw)))

    def fail(self, name: str, sent: bytes, raw: bytes, problem: str) -> None:
        self.checks.append(Check(name, False, quote(sent), quote(raw) if raw else "(no reply)", problem))

    def expect(self, name: str, problems: list[str]) -> None:
        """Record the outcome of the last call, whose reply was valid: `problems` found in its content."""
        sent, raw = self.last
        if problems:
            self.fail(name, sent, raw, "; ".join(problems))
        else:
            self.passed(name, sent, raw)


def run_checks(channel: Channel, config: Config = Config()) -> list[Check]:
    """The canned sequences; the checks made, passed or not."""
    c = Checker(channel)
    try:
        _sequence(c, config)
    except _Gone:
        c.checks.append(Check("the checks after this point", False, problem="not run: the implementation is gone",
                              ran=False))
    return c.checks


def _sequence(c: Checker, config: Config) -> None:
    msg: dict[str, Any] = {"call": "hello", "protocol": PROTOCOL}
    ok = c.call("hello", msg)
    if ok is NO_REPLY:
        raise _Gone()
    c.expect("hello", [] if ok["protocol"] == PROTOCOL else
             [f"speaks {ok['protocol']!r}; the harness speaks {PROTOCOL!r}"])
    if ok["protocol"] != PROTOCOL:
        raise _Gone()

    msg = {"call": "capabilities"}
    caps = c.call("capabilities", msg)
    blind = False  # level black-box: no events, no abstract state (never asked for)
    if caps is not NO_REPLY and config.vcpus > 1:  # no more vCPUs than it runs (a campaign clamps likewise)
        most = (caps.get("scope") or {}).get("vcpus", 1)
        config = config if config.vcpus <= most else replace(config, vcpus=most)
    if caps is not NO_REPLY:
        blind = caps.get("level", "full") == "black-box"
        problems = [f"operations lacks {op!r} (every campaign needs it)" for op in NEEDED
                    if op not in caps["operations"]]
        needs = ("guest_memory",) if blind else ("events", "guest_memory")
        problems += [f"{k} is false: the harness needs it" for k in needs if not caps.get(k, True)]
        c.expect("capabilities", problems)

    what = "the default Config" if config == replace(Config(), vcpus=config.vcpus) else "the given Config"
    msg = {"call": "reset", "config": config.to_json()}
    if c.call(f"reset on {what}", msg) is not NO_REPLY:
        c.expect(f"reset on {what}", [])
    if not blind:
        _initial_state(c, config)

    root, x, g = config.roots[0], config.gvas[0], config.gfns - 1
    for name, args, want in (
            ("vm_create", {"v": 0}, "vm_create"),
            ("cr3_load", {"v": 0, "c": 0, "r": root}, "cr3_load"),
            ("set_mode", {"v": 0, "c": 0, "o": config.roles[0]}, "set_mode"),
            ("guest_map", {"v": 0, "r": root, "x": x, "g": g, "w": True, "u": True, "nx": False, "a": False,
                           "d": False}, None),
            ("guest_walk", {"v": 0, "c": 0, "x": x, "a": "write", "u": False, "value": VALUE}, None)):
        msg = {"call": "step", "op": {"action": name, "args": args}}
        obs = c.call(f"step {name}", msg)
        if obs is NO_REPLY:
            continue
        problems = []
        events = [e[0] for e in obs["events"]]
        if want and want not in events and not blind:
            problems.append(f"no {want!r} event: the events were {events}")
        if name == "guest_map" and not obs.get("guest_writes"):
            problems.append("no guest_writes: the guest's stores to its page tables must be reported")
        if name == "guest_walk":
            a = obs.get("access")
            if a is None:
                problems.append("no access: an access operation must report what the guest saw")
            elif a["fault"]:
                problems.append(f"the store faulted (error code {a.get('error_code', 0):#x}); the guest mapped {x:#x} "
                                f"writable to gfn {g}")
        c.expect(f"step {name}", problems)

    msg = {"call": "abstract_state"}
    st = NO_REPLY if blind else c.call("abstract_state after the steps", msg)
    if st is not NO_REPLY:
        problems = []
        vm0 = st["vms"][0] if st["vms"] else {}
        cpu0 = (vm0.get("vcpus") or [{}])[0]
        if not vm0.get("live") or cpu0.get("cr3_gfn") != root or cpu0.get("role") != config.roles[0]:
            problems.append(f"vms[0] is {vm0}: VM 0 lives with vCPU 0's CR3 at gfn {root}, in role {config.roles[0]}")
        if not any(row[:4] == [0, root, x, g] for row in st["gmap"]):
            problems.append(f"gmap has no row [0, {root}, {x}, {g}, ...]: the guest maps {x:#x} to gfn {g}")
        c.expect("abstract_state after the steps", problems)

    gpa = g * 4096
    msg = {"call": "read_guest", "ranges": [[0, gpa, 4096]]}
    got = c.call("read_guest of a page", msg)
    page = None
    if got is not NO_REPLY:
        problems, page = _bytes(got, [4096])
        if page is not None and int.from_bytes(page[0][:8], "little") != VALUE:
            first = int.from_bytes(page[0][:8], "little")
            problems.append(f"the page starts with {first:#x}; the guest stored {VALUE:#x}")
        c.expect("read_guest of a page", problems)

    msg = {"call": "read_guest", "ranges": [[0, gpa, 8], [0, 0, 8]]}
    got = c.call("read_guest of many ranges", msg)
    if got is not NO_REPLY:
        c.expect("read_guest of many ranges", _bytes(got, [8, 8])[0])

    msg = {"call": "read_guest", "ranges": [[0, gpa, 4096]], "digest": "sha256"}
    got = c.call("read_guest digest", msg)
    if got is not NO_REPLY:
        problems = [] if len(got) == 1 else [f"asked for 1 digest, got {len(got)}"]
        if page is not None and got and got[0] != hashlib.sha256(page[0]).hexdigest():
            problems.append("the digest is not the sha256 (lowercase hex) of the page's bytes")
        c.expect("read_guest digest", problems)

    c.call("step of an unknown operation (must be refused)",
           {"call": "step", "op": {"action": "no_such_operation", "args": {}}}, expect_error=True)
    if blind:  # the child lives on: a read of guest memory answers
        got = c.call("read_guest after the refusal (the child lives on)",
                     {"call": "read_guest", "ranges": [[0, gpa, 8]]})
        if got is not NO_REPLY:
            c.expect("read_guest after the refusal (the child lives on)", _bytes(got, [8])[0])
    else:
        msg = {"call": "abstract_state"}
        st = c.call("abstract_state after the refusal (the child lives on)", msg)
        if st is not NO_REPLY:
            c.expect("abstract_state after the refusal (the child lives on)", [])
    c.call("an unknown call (must be refused)", {"call": "no_such_call"}, expect_error=True, schema="reset")
    _close(c)


def _initial_state(c: Checker, config: Config) -> None:
    from dmmcheck.spec import load

    from .oracle import Judge, Oracle

    msg = {"call": "abstract_state"}
    st = c.call("abstract_state after reset", msg)
    if st is NO_REPLY:
        return
    problem = ""
    try:
        state = state_from_json(st)
        first = state.get("mfns", (1,))[0]
        Oracle(Judge(load(None), config), first).start(state)
    except Failure as f:
        problem = f"not the spec's initial state: {f.message}" + (f"\n{f.detail}" if f.detail else "")
    except Exception as e:  # noqa: BLE001 - the state's content broke the abstraction: reported, not raised
        problem = f"the harness cannot read it: {type(e).__name__}: {e}"
    c.expect("abstract_state after reset", [problem] if problem else [])


def _bytes(got: list[str], sizes: list[int]) -> tuple[list[str], list[bytes] | None]:
    if len(got) != len(sizes):
        return [f"asked for {len(sizes)} ranges, got {len(got)}"], None
    try:
        data = [unb64(s) for s in got]
    except WireError as e:
        return [str(e)], None
    bad = [f"range {i}: {len(d)} bytes instead of {n}" for i, (d, n) in enumerate(zip(data, sizes)) if len(d) != n]
    return bad, None if bad else data


def _close(c: Checker) -> None:
    name = "close (reply, then exit with status 0)"
    msg = encode({"call": "close"})
    reply, status = c.channel.finish(msg, name)
    if reply is None:
        c.fail(name, msg, b"", "no reply to close: " + (c.channel.stderr_tail() or "the implementation did not answer"))
        return
    try:
        check_reply("close", decode(reply))
    except (ValueError, RecursionError) as e:
        c.fail(name, msg, reply, f"the reply breaks {PROTOCOL} ({e})")
        return
    if status != 0:
        c.fail(name, msg, reply, f"after close the implementation {describe_exit(status)}"
               if status is not None else "the implementation did not exit after close; it was killed")
        return
    c.passed(name, msg, reply)


@dataclass(frozen=True)
class CheckOptions:
    """What `dmm adapter-check` checks, and how (the command line builds it from its arguments)."""

    impl: str | None = None  # MODULE:ATTR: an in-process adapter, checked through the reference server
    impl_cmd: str | None = None  # 'CMD ARGS': a program speaking dmm-adapter/1
    timeout: float = 10.0  # seconds one call may take
    config: str | None = None  # a scope file to reset on instead of the default Config
    json: bool = False


def main(args: CheckOptions) -> int:
    cmd, impl = args.impl_cmd, args.impl
    if impl is not None:  # checked through the reference server: the replies travel as they would
        from .trace import TraceError, load_adapter

        try:
            load_adapter(impl)
        except TraceError as e:
            print(f"dmm adapter-check: {e}", file=sys.stderr)
            return EXIT_INPUT
        argv = [sys.executable, "-m", "dmmcheck.conformance.serve", "--impl", impl]
        label = impl
    elif cmd is not None:
        try:
            argv = parse_command(cmd)
        except CommandError as e:
            print(f"dmm adapter-check: {e}", file=sys.stderr)
            return EXIT_INPUT
        label = cmd
    else:
        print("dmm adapter-check: give the adapter: --impl-cmd 'CMD ARGS' or --impl MODULE:ATTR", file=sys.stderr)
        return EXIT_INPUT
    channel = Channel(argv, args.timeout)
    try:
        channel.start()
    except OSError as e:
        print(f"dmm adapter-check: cannot start {label!r}: {e.strerror or e}", file=sys.stderr)
        return EXIT_INPUT
    config = Config()
    if args.config:
        from .configfile import ConfigError, load as load_config

        try:
            config = load_config(args.config)[0]
        except ConfigError as e:
            channel.kill()
            print(f"dmm adapter-check: {e}", file=sys.stderr)
            return EXIT_INPUT
    try:
        checks = run_checks(channel, config)
    finally:
        channel.kill()
    bad = [ch for ch in checks if not ch.ok and ch.ran]
    if args.json:
        print(json.dumps({"adapter": label, "protocol": PROTOCOL, "checks": [asdict(ch) for ch in checks],
                          "violations": len(bad)}))
    else:
        _show(label, checks)
    return EXIT_VIOLATIONS if bad else 0


def _show(label: str, checks: list[Check]) -> None:
    print(f"dmm adapter-check: {label} ({PROTOCOL})")
    for ch in checks:
        print(f"  {'ok  ' if ch.ok else 'FAIL' if ch.ran else 'skip'}  {ch.name}")
        if not ch.ok:
            for line in ch.problem.splitlines() or [""]:
                print(f"        {line}")
            if ch.sent:
                print(f"        sent:  {ch.sent}")
            if ch.reply:
                print(f"        reply: {ch.reply}")
    bad = sum(not ch.ok and ch.ran for ch in checks)
    print(f"{sum(ch.ran for ch in checks)} checks, {bad} violation{'s' if bad != 1 else ''}")

