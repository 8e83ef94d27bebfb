"""An implementation in a child process, driven over `dmm-adapter/1` (wire.py, docs/adapter-protocol.md).

`ChildAdapter` is an Adapter like any other to the runner, the fuzzer and replay: each call is one
request line on the child's stdin and one reply line from its stdout. The harness owns the child:

- every call has a time limit, kept with select() on the pipes (never a signal: a hang in native
  code must not hold the harness); past it the child's process group is killed and the call is a
  `timeout` verdict naming it;
- a child that dies (a signal, an exit, its stdout closed) is a `crash` verdict naming the call and
  how it ended, with the tail of its stderr — which a thread drains all along into a bounded buffer,
  so a child flooding stderr never blocks;
- a reply that is not one line of JSON or breaks the schema is a `crash` verdict quoting it;
- after any of these the child is gone, and the next `reset` starts a new one. Every child is
  reaped: no zombies.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import subprocess
import threading
import time
import weakref
from typing import Any, Callable

from .adapter import Capabilities, Config, Observation, Operation
from .oracle import Failure
from .wire import (PROTOCOL, PageDigests, WireError, caps_from_json, check_reply, decode, encode,
                   observation_from_json, quote, state_from_json, unb64)

STDERR_KEPT = 64 * 1024  # bytes of the child's stderr kept (the latest)
STDERR_SHOWN = 3000  # characters of it a verdict shows
ALARM_MARGIN = 0.25  # s (at most a fifth of the time left): a call ends this much before the runner's
# own alarm, leaving the time to kill and reap the child, so that the verdict is this call's
EXIT_GRACE = 2.0  # s a child may take to exit after `close`, or after closing its stdout
READ = 1 << 20
MAX_REPLY = 256 << 20  # bytes: a reply line longer than this is a protocol violation, not a memory hog


class CommandError(ValueError):
    """An --impl-cmd that cannot be run: empty, unbalanced quotes, no such program."""


def parse_command(cmd: str) -> list[str]:
    """The argument vector of a command line, or CommandError saying what is wrong with it."""
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        raise CommandError(f"--impl-cmd {cmd!r}: cannot parse the command: {e}") from None
    if not argv:
        raise CommandError("--impl-cmd '': expected a command that speaks dmm-adapter/1, "
                           "e.g. --impl-cmd './myvmm --dmm-serve'")
    if shutil.which(argv[0]) is None:
        raise CommandError(f"--impl-cmd {cmd!r}: no such program {argv[0]!r} (not found, or not executable)")
    return argv


def child_factory(cmd: str, timeout: float = 10.0) -> Callable[[], "ChildAdapter"]:
    """What `--impl-cmd` loads: the command checked now (bad input before anything runs), the child
    started when the factory is called."""
    parse_command(cmd)
    return lambda: ChildAdapter(cmd, timeout)


class ErrorReply(Failure):
    """The child refused or failed a call (an `{"error": ...}` reply): a crash verdict; the child is
    in step and lives on."""

    def __init__(self, message: str, detail: str, error: str, type_: str | None) -> None:
        super().__init__("crash", message, detail)
        self.error, self.type = error, type_


def describe_exit(status: int | None) -> str:
    if status is None:
        return "still running"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "?"
        return f"killed by signal {-status} ({name})"
    return f"exited with status {status}"


class _StderrTail:
    """Drains a pipe in a thread into a bounded buffer: the child never blocks on a full stderr."""

    def __init__(self, pipe: Any) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._drain, args=(pipe,), name="dmm child stderr", daemon=True)
        self.thread.start()

    def _drain(self, pipe: Any) -> None:
        fd = pipe.fileno()
        try:
            while chunk := os.read(fd, 65536):
                with self._lock:
                    self._data += chunk
                    if len(self._data) > STDERR_KEPT:
                        del self._data[:len(self._data) - STDERR_KEPT]
        except OSError:
            pass
        finally:
            pipe.close()

    def tail(self) -> str:
        with self._lock:
            text = self._data.decode("utf-8", "replace")
        if len(text) > STDERR_SHOWN:
            text = "..." + text[-STDERR_SHOWN:]
        return text


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill a child's process group and wait for it (also the finalizer of a forgotten Channel)."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_new_session): helpers die too
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): nothing more to do
            pass
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


class Channel:
    """One child process and its pipes: a request line out, one reply line back, within a time limit.
    Any failure on the way (time limit, death, a signal arriving mid-exchange) kills the child: the
    stream may be out of step."""

    def __init__(self, argv: list[str], timeout: float) -> None:
        self.argv, self.timeout = argv, timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: _StderrTail | None = None
        self._buf = bytearray()
        self._finalizer: Any = None

    @property
    def running(self) -> bool:
        return self.proc is not None

    def start(self) -> None:
        """Spawn the child (OSError if it cannot be)."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0, close_fds=True, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.stderr = _StderrTail(self.proc.stderr)
        self._buf = bytearray()
        self._finalizer = weakref.finalize(self, _reap, self.proc)

    def exchange(self, request: bytes, what: str, limit: float | None = None) -> bytes:
        """Send one request line; the reply line, without its newline."""
        assert self.proc is not None
        try:
            if self._buf:
                raise Failure("crash", f"{what}: the implementation wrote a line no request asked for: "
                              f"{quote(bytes(self._buf))}", self.stderr_tail())
            deadline = time.monotonic() + self._limit(limit)
            self._send(request, what, deadline)
            return self._receive(what, deadline)
        except BaseException:  # a verdict, the runner's alarm, Ctrl-C: the stream is out of step
            self.kill()
            raise

    def _limit(self, limit: float | None) -> float:
        t = self.timeout if limit is None else limit
        # Inside the runner's guarded() a SIGALRM is armed for the same step timeout: end first, so
        # the verdict names this call and the child is killed here, whichever limit is shorter.
        alarm = signal.getitimer(signal.ITIMER_REAL)[0]
        return max(0.0, min(t, alarm - min(ALARM_MARGIN, alarm / 5))) if alarm > 0 else t

    def _send(self, data: bytes, what: str, deadline: float) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        while view:  # a request fits the pipe unless the child stopped reading: write first, wait after
            try:
                view = view[os.write(fd, view):]
                continue
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):  # worded as when the reply does not come:
                raise self._died(what, b"", "before it replied") from None  # which happens first is timing
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout(what)
            select.select([], [fd], [], left)

    def _receive(self, what: str, deadline: float) -> bytes:
        assert self.proc is not None and self.proc.stdout is not None
        fd, buf, seen = self.proc.stdout.fileno(), self._buf, 0
        while True:
            i = buf.find(b"\n", seen)
            if i >= 0:
                line = bytes(buf[:i])
                del buf[:i + 1]
                return line
            seen = len(buf)
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout(what)
            if not select.select([fd], [], [], left)[0]:
                continue
            try:
                chunk = os.read(fd, READ)
            except BlockingIOError:
                continue
            if not chunk:
                raise self._died(what, bytes(buf), "before it replied")
            buf += chunk
            if len(buf) > MAX_REPLY:
                raise Failure("crash", f"{what}: the reply is longer than {MAX_REPLY >> 20} MiB with no end of line: "
                              f"{quote(bytes(buf[:1000]))}", self.stderr_tail())

    def _timeout(self, what: str) -> Failure:
        self.kill()
        return Failure("timeout", f"{what}: no reply within the time limit ({self.timeout:g} s); "
                       "the implementation was killed", self.stderr_tail())

    def _died(self, what: str, partial: bytes, when: str) -> Failure:
        assert self.proc is not None
        try:  # it closed its stdout: most likely it is exiting
            self.proc.wait(timeout=EXIT_GRACE)
        except subprocess.TimeoutExpired:
            pass
        status = self.proc.returncode
        self.kill()
        how = describe_exit(status) if status is not None else "closed its stdout; it was killed"
        if partial:
            return Failure("crash", f"{what}: the implementation died ({how}) in the middle of its reply: "
                           f"{quote(partial)}", self.stderr_tail())
        return Failure("crash", f"{what}: the implementation died ({how}) {when}", self.stderr_tail())

    def kill(self) -> None:
        """Kill and reap the child (a no-op when there is none); its stderr stays readable."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        self._buf = bytearray()
        if self._finalizer is not None:
            self._finalizer.detach()
        _reap(proc)
        if self.stderr is not None:
            self.stderr.thread.join(timeout=1.0)  # the last words, once the pipe's writers are gone

    def finish(self, request: bytes, what: str) -> tuple[bytes | None, int | None]:
        """The last exchange: its reply (None if none came) and the child's exit status (None if it
        had to be killed). The child is gone afterwards."""
        if self.proc is None:
            return None, None
        proc = self.proc
        try:
            reply = self.exchange(request, what, min(self.timeout, 5.0))
        except Failure:
            return None, None
        try:
            proc.wait(timeout=EXIT_GRACE)
        except subprocess.TimeoutExpired:
            pass
        status = proc.returncode
        self.kill()
        return reply, status

    def stderr_tail(self) -> str:
        tail = self.stderr.tail() if self.stderr is not None else ""
        return f"the implementation's stderr (the end):\n{tail}" if tail.strip() else ""


class ChildAdapter:
    """The Adapter protocol (adapter.py) over a child process speaking dmm-adapter/1.

    Calls are named as the runner names them ("step 3 (guest_map)", "abstract_state after step 3")
    so a verdict reads the same in process and out of process. Guest memory is compared by page
    digests (`memory="digest"`): one request returns the sha256 of every page, and bytes travel only
    for a page that differs; `memory="bytes"` fetches every page's bytes in one request instead."""

    def __init__(self, cmd: str, timeout: float = 10.0, memory: str = "digest") -> None:
        self.cmd, self.name, self.timeout, self.memory = cmd, cmd, timeout, memory
        self.channel = Channel(parse_command(cmd), timeout)
        self.peer = ""  # the name the child gave in its handshake
        self.starts: list[float] = []  # seconds each start took, handshake included (restarts measured)
        self._caps: Capabilities | None = None
        self._steps = 0  # steps since reset
        self._pages: dict[tuple[int, int, int], bytes] = {}  # bytes fetched since the last step
        self._digest = PageDigests()  # (vm, gpa) -> the last page seen, its sha256
        try:
            self._start(f"starting {cmd!r}")
        except Failure as f:  # bad input, shown as a message alone: the child's stderr is the best clue
            raise Failure(f.kind, f"{f.message}\n{f.detail}" if f.detail else f.message, f.detail) from None

    # ---------------------------------------------------------------- the child
    def _start(self, what: str) -> None:
        t0 = time.perf_counter()
        try:
            self.channel.start()
        except OSError as e:
            raise Failure("crash", f"{what}: cannot start it: {e.strerror or e}") from None
        hello = f"{what}: the handshake (hello)"
        ok = self._call("hello", {"call": "hello", "protocol": PROTOCOL}, hello)
        if ok["protocol"] != PROTOCOL:
            self.channel.kill()
            raise Failure("crash", f"{hello}: the implementation speaks {ok['protocol']!r}; this harness speaks "
                          f"{PROTOCOL!r} (docs/adapter-protocol.md)")
        self.peer = ok.get("name", "")
        self.starts.append(time.perf_counter() - t0)

    def _call(self, call: str, msg: dict[str, Any], what: str) -> Any:
        if not self.channel.running:
            raise Failure("crash", f"{what}: the implementation is not running (it died or was killed "
                          "earlier; the next reset starts it again)")
        line = self.channel.exchange(encode(msg), what)
        try:
            reply = decode(line)
            check_reply(call, reply)
        except WireError as e:
            raise self._broken(what, f"the reply breaks {PROTOCOL} ({e})", line) from None
        except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
            raise self._broken(what, f"the reply is not a line of JSON ({e})", line) from None
        if "error" in reply:  # refused or failed: the child is in step and lives on
            err = reply["error"]
            said = f"{what} raised {reply['type']}: {err}" if "type" in reply else f"{what} failed: {err}"
            raise ErrorReply(said, reply.get("detail", ""), err, reply.get("type"))
        return reply["ok"]

    def _broken(self, what: str, problem: str, line: bytes) -> Failure:
        self.channel.kill()  # it may be out of step
        return Failure("crash", f"{what}: {problem}: {quote(line)}", self.channel.stderr_tail())

    def _after(self) -> str:
        return f"after step {self._steps - 1}" if self._steps else "after reset"

    # ---------------------------------------------------------------- the Adapter protocol
    def capabilities(self) -> Capabilities:
        if self._caps is None:  # asked once: the runner asks at every test case
            ok = self._call("capabilities", {"call": "capabilities"}, "capabilities")
            self._caps = caps_from_json(ok)
        return self._caps

    def reset(self, config: Config) -> None:
        self._steps, self._pages = 0, {}
        if not self.channel.running:  # it died or was killed: a new one for the new test case
            self._start("reset: restarting the implementation")
        try:
            self._call("reset", {"call": "reset", "config": config.to_json()}, "reset")
        except ErrorReply as e:
            if e.type == "ValueError":  # a configuration it cannot lay out, refused as in process
                raise ValueError(e.error) from None
            raise

    def step(self, op: Operation) -> Observation:
        i, self._steps, self._pages = self._steps, self._steps + 1, {}
        what = f"step {i} ({op.action})"
        ok = self._call("step", {"call": "step", "op": op.to_json()}, what)
        try:
            return observation_from_json(ok)
        except WireError as e:
            raise Failure("crash", f"{what}: the reply breaks {PROTOCOL} (guest_writes: {e})") from None

    def abstract_state(self) -> dict[str, Any]:
        ok = self._call("abstract_state", {"call": "abstract_state"}, f"abstract_state {self._after()}")
        return state_from_json(ok)

    def read_guest(self, vm: int, gpa: int, n: int) -> bytes:
        got = self._pages.get((vm, gpa, n))
        return got if got is not None else self.read_guest_many([(vm, gpa, n)])[0]

    def read_guest_many(self, ranges: list[tuple[int, int, int]]) -> list[bytes]:
        """Many ranges in one request."""
        what = f"read_guest {self._after()}"
        ok = self._call("read_guest", {"call": "read_guest", "ranges": [list(r) for r in ranges]}, what)
        self._count(what, ok, ranges)
        try:
            out = [unb64(s) for s in ok]
        except WireError as e:
            raise Failure("crash", f"{what}: the reply breaks {PROTOCOL} ({e})") from None
        for (vm, gpa, n), data in zip(ranges, out):
            if len(data) != n:
                raise Failure("crash", f"{what}: asked for {n} bytes of VM {vm} at gpa {gpa:#x}, got {len(data)}")
        return out

    def pages_differing(self, pages: list[tuple[int, int, bytes]]) -> list[tuple[int, int]]:
        """Of (vm, gpa, expected bytes), the pages whose bytes in the child may differ, in one
        request (the oracle reads those with read_guest and says how they differ)."""
        ranges = [(vm, gpa, len(want)) for vm, gpa, want in pages]
        if self.memory == "bytes":
            got = self.read_guest_many(ranges)
            self._pages = dict(zip(ranges, got))
            return [(vm, gpa) for (vm, gpa, want), data in zip(pages, got) if data != want]
        what = f"read_guest {self._after()}"
        ok = self._call("read_guest", {"call": "read_guest", "ranges": [list(r) for r in ranges], "digest": "sha256"},
                        what)
        self._count(what, ok, ranges)
        return [(vm, gpa) for (vm, gpa, want), d in zip(pages, ok) if self._digest(vm, gpa, want) != d]

    def _count(self, what: str, ok: list[str], ranges: list[tuple[int, int, int]]) -> None:
        if len(ok) != len(ranges):
            raise Failure("crash", f"{what}: asked for {len(ranges)} ranges, the reply has {len(ok)}")

    def rss_bytes(self) -> int:
        """The child's resident memory (the campaign's memory limit is on the implementation, not
        on the harness); 0 when no child runs."""
        proc = self.channel.proc
        if proc is None:
            return 0
        try:
            with open(f"/proc/{proc.pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def close(self) -> None:
        """Ask the child to exit; kill it if it does not."""
        self.channel.finish(encode({"call": "close"}), "close")
