"""A dmm-adapter/1 child that serves the bundled VMM (the reference server) and misbehaves on cue.

usage: misbehave.py MODE [CALL:N]

The N-th request (from 0) of CALL (default `step:0`) gets the misbehaviour MODE instead of its reply:
hang, segv (killed by SIGSEGV), abort, exit (status 3), garbage (a line that is not JSON), half (half
a reply line, then exit), schema (a reply that breaks the schema), lenient (reply ok where the
reply must be an error), baddigest (wrong sha256 digests). Whatever the cue: flood (1 MiB on
stderr before every reply), version (the handshake answers dmm-adapter/0), ok (no misbehaviour).
"""

import os
import signal
import sys
import time

from dmmcheck.conformance.serve import Server
from dmmcheck.conformance.vmm_adapter import BundledVmm
from dmmcheck.conformance.wire import decode, encode

mode = sys.argv[1]
call, _, n = (sys.argv[2] if len(sys.argv) > 2 else "step:0").partition(":")
cue = (call, int(n or 0))
out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
server = Server(BundledVmm())
seen: dict[str, int] = {}


def reply(msg: dict) -> None:
    out.write(encode(msg))
    out.flush()


for line in sys.stdin.buffer:
    req = decode(line)
    name = req.get("call")
    k = seen[name] = seen.get(name, -1) + 1
    answer, stop = server.handle(line)
    if mode == "flood":
        sys.stderr.write("flood " * 174763 + "\n")  # about 1 MiB: more than a pipe holds
        sys.stderr.flush()
    if mode == "version" and name == "hello":
        answer = {"ok": {"protocol": "dmm-adapter/0"}}
    if (name, k) == cue:
        print(f"misbehave: {mode} at {name} {k}", file=sys.stderr, flush=True)
        if mode == "hang":
            time.sleep(3600)
        elif mode == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif mode == "abort":
            os.abort()
        elif mode == "exit":
            sys.exit(3)
        elif mode == "garbage":
            out.write(b"Segmentation fault? no: garbage\n")
            out.flush()
            continue
        elif mode == "half":
            out.write(encode(answer)[:20])
            out.flush()
            sys.exit(0)
        elif mode == "schema":
            if name == "abstract_state":
                answer["ok"]["vms"][0]["live"] = 1
            else:
                answer = {"ok": {"events": "none", "access": None}}
        elif mode == "lenient":
            answer = {"ok": {"events": []}} if name == "step" else {"ok": None}
        elif mode == "baddigest":
            answer = {"ok": ["0" * 64 for _ in req["ranges"]]}
    if mode == "lenient" and name == "step" and req["op"]["action"] == "no_such_operation":
        answer = {"ok": {"events": []}}
    if mode == "baddigest" and name == "read_guest" and req.get("digest"):
        answer = {"ok": ["0" * 64 for _ in req["ranges"]]}
    reply(answer)
    if stop:
        break
