"""The reference server of `dmm-adapter/1`: any in-process adapter, served on stdin/stdout.

    dmm serve [--impl MODULE:ATTR]
    python -m dmmcheck.conformance.serve [--impl MODULE:ATTR]

It is what a VMM in another language implements (docs/adapter-protocol.md), and how the harness
tests itself out of process: `dmm fuzz --impl-cmd 'python -m dmmcheck.conformance.serve'` must give
the verdicts `dmm fuzz` gives in process. An exception in the served adapter is an `{"error": ...}`
reply (the harness makes a crash verdict of it); the server lives on until `close` or end of input.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any, BinaryIO, Callable

from .adapter import Adapter, Config, Operation
from .wire import (PROTOCOL, PageDigests, WireError, b64, caps_to_json, check_request, decode, encode,
                   observation_to_json, state_to_json)

DEFAULT_IMPL = "dmmcheck.conformance.vmm_adapter:BundledVmm"


class Server:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self._digest = PageDigests()  # (vm, gpa) -> the last page seen, its sha256

    def handle(self, line: bytes) -> tuple[dict[str, Any], bool]:
        """One request line: (the reply, whether to stop)."""
        try:
            msg = decode(line)
            call = check_request(msg)
        except WireError as e:
            return {"error": f"bad request: {e}", "type": "ProtocolError"}, False
        except (ValueError, RecursionError) as e:
            return {"error": f"bad request: not a line of JSON ({e})", "type": "ProtocolError"}, False
        try:
            return {"ok": getattr(self, f"_{call}")(msg)}, call == "close"
        except Exception as e:  # noqa: BLE001 - the adapter's failure is the harness's verdict, not ours
            return {"error": str(e) or type(e).__name__, "type": type(e).__name__,
                    "detail": traceback.format_exc(limit=-4)}, call == "close"

    def _hello(self, msg: dict[str, Any]) -> dict[str, Any]:
        # answered with the version spoken here, whatever was asked: the harness judges a mismatch
        return {"protocol": PROTOCOL, "name": str(getattr(self.adapter, "name", type(self.adapter).__name__))}

    def _capabilities(self, msg: dict[str, Any]) -> dict[str, Any]:
        return caps_to_json(self.adapter.capabilities())

    def _reset(self, msg: dict[str, Any]) -> None:
        self.adapter.reset(Config.from_json(msg["config"]))

    def _step(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg["op"]
        return observation_to_json(self.adapter.step(Operation(op["action"], op["args"])))

    def _abstract_state(self, msg: dict[str, Any]) -> dict[str, Any]:
        return state_to_json(self.adapter.abstract_state())

    def _read_guest(self, msg: dict[str, Any]) -> list[str]:
        read = self.adapter.read_guest
        if msg.get("digest") == "sha256":
            return [self._digest(v, gpa, read(v, gpa, n)) for v, gpa, n in msg["ranges"]]
        return [b64(read(v, gpa, n)) for v, gpa, n in msg["ranges"]]

    def _close(self, msg: dict[str, Any]) -> None:
        close = getattr(self.adapter, "close", None)
        if close is not None:
            close()


def serve(adapter: Adapter, inp: BinaryIO, out: BinaryIO) -> int:
    """Answer requests until `close` or end of input; exit status 0."""
    server = Server(adapter)
    for line in inp:
        reply, stop = server.handle(line)
        try:
            out.write(encode(reply))
            out.flush()
        except BrokenPipeError:  # the harness is gone
            return 0
        if stop:
            break
    return 0


def _protocol_stdout() -> BinaryIO:
    """The real stdout for replies only; fd 1 (and sys.stdout) become stderr, so a stray print in
    the served adapter cannot break a reply line."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dmm serve", description="serve an adapter over dmm-adapter/1 on stdin/stdout")
    p.add_argument("--impl", default=DEFAULT_IMPL, metavar="MODULE:ATTR",
                   help="the adapter to serve (default: the bundled VMM)")
    args = p.parse_args(argv)
    return run(args.impl)


def run(target: str) -> int:
    """Load `target` and serve it; a target that cannot be loaded is a message and exit status 2
    (the harness then sees the child exit before the handshake, and shows that message)."""
    from .trace import TraceError, load_adapter, make_adapter

    out = _protocol_stdout()
    try:
        factory: Callable[[], Adapter] = load_adapter(target)
        adapter = make_adapter(factory, 60.0)
    except (TraceError, ValueError) as e:
        print(f"dmm serve: {e}", file=sys.stderr)
        return 2
    return serve(adapter, sys.stdin.buffer, out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
