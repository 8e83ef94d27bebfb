"""Hostile input for every `dmm` command: a generator of bad specs, traces, configuration files,
options and misbehaving adapters, each with the exit statuses it may end in (docs/exit-codes.md).

Used twice: a fast sample in the test suite (tests/conformance/test_hostile.py, in process) and the
full campaign in bench/robustness.py (each case a `dmm` process of its own, so tracebacks, hangs and
exit statuses are seen as a user sees them). A case is bad when its command exits 70 (an internal
error), prints a traceback, hangs, exits with a status outside its allowed set, or loses a finding
(a misbehaving implementation that passes).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from dmmcheck.spec import bundled_path

SPEC = bundled_path().read_text()
TRACE_HEADER = {"format": "dmm-trace/1", "values": "impl",
                "config": {"vms": 2, "gfns": 16, "mfns": 24, "slots": 4, "roots": [0, 5], "gvas": [4194304, 6291456],
                           "budget": None, "mutant": None}}
GOOD_STEPS = [{"action": "vm_create", "args": {"v": 0}}, {"action": "cr3_load", "args": {"v": 0, "r": 0}},
              {"action": "guest_map", "args": {"v": 0, "r": 0, "x": 4194304, "g": 12, "w": True, "u": True,
                                               "nx": False, "a": False, "d": False}},
              {"action": "guest_walk", "args": {"v": 0, "x": 4194304, "a": "write", "u": False, "value": 5}}]
# Values each kind of option must refuse (a large value is valid where nothing caps it: it only
# asks for a long run; the capped options refuse it).
SECONDS = {"--seconds", "--step-timeout", "--timeout", "--max-seconds", "--seconds-per-mutant", "--shrink-seconds",
           "--reach-seconds"}
CAPPED = {"--finite", "--bmc", "--k-induction"}
BAD_SECONDS = ["-1", "0", "nan", "inf", "-inf", "1e400", "", "x", "0x10"]
BAD_COUNTS = ["-1", "nan", "inf", "", "x", "0x10", "1.5"]
BAD_BOUNDS = ["vm=0", "vmm=2", "vm", "x", "vm=-1", "vm=1e3", "vm=100,mfn=100,gva=100,root=10", "=3"]
NUMERIC = {"fuzz": ["--seconds", "--examples", "--seed", "--steps", "--step-timeout", "--memory-limit"],
           "prove": ["--timeout", "--rlimit", "--bmc", "--k-induction", "--finite", "-j", "--reach-seconds"],
           "explore": ["--max-states", "--max-seconds", "--max-memory", "--bound", "-j"],
           "mutants": ["--seconds-per-mutant", "-j", "--seed"],
           "replay": ["--step-timeout"]}
# What an adapter can do wrong, in which method: the harness must turn each into a verdict (1) or,
# before the campaign, a message (2).
MISBEHAVIOURS = {
    "raise": "raise RuntimeError('adapter bug')",
    "base": "raise Odd('not an Exception')",
    "exit0": "import sys; sys.exit(0)",
    "none": "return None",
    "junk": "return 'junk'",
    "hang": "import time; time.sleep(3600)",
}
ZERO_OK = {"--seed", "--bmc", "--k-induction", "--reach-seconds"}  # 0 is a valid value of these
METHODS = ("step", "abstract_state", "reset", "read_guest", "capabilities", "__init__")


@dataclass
class Case:
    kind: str  # spec | trace | config | option | adapter
    argv: list[str]
    allowed: set[int]
    files: dict[str, str] = field(default_factory=dict)  # name -> text, written in the case's folder
    finding: bool = False  # the input hides a real failure: exit 0 would lose it
    timeout: float = 120.0

    def materialize(self, where: Path) -> list[str]:
        """Write the case's files under `where`; the argv with {dir} filled in."""
        for name, text in self.files.items():
            (where / name).write_text(text)
        return [a.replace("{dir}", str(where)) for a in self.argv]


def bad_values(opt: str) -> list[str]:
    if opt == "--bound":
        return BAD_BOUNDS
    if opt in SECONDS:
        return [v for v in BAD_SECONDS if not (v == "0" and opt in ZERO_OK)]
    return BAD_COUNTS + ([] if opt in ZERO_OK else ["0"]) + (["99999999999999999999999"] if opt in CAPPED else [])


def bad_spec(rng: random.Random) -> str:
    """The bundled spec with one corruption: a flipped, deleted or repeated piece, or a pathology."""
    s = SPEC
    how = rng.randrange(8)
    i = rng.randrange(len(s))
    if how == 0:
        return s[:i] + s[i + rng.randrange(1, 40):]
    if how == 1:
        return s[:i] + rng.choice("(){}[]:=,.?|!<>+-#\\\"'\x00\x85\x0c") + s[i:]
    if how == 2:
        j = min(len(s), i + rng.randrange(1, 200))
        return s[:j] + s[i:j] + s[j:]
    if how == 3:
        return s.replace(rng.choice(["vm", "mfn", "gfn", "p2m", "rmap", "spte", "true", "none"]),
                         rng.choice(["vmm", "mfn2", "", "0", "forall"]), rng.randrange(1, 4))
    if how == 4:
        depth = rng.choice([500, 5000, 50000])
        return s + f"\ninvariant deep: {'(' * depth}true{')' * depth}\n"
    if how == 5:
        return s + "\ninvariant big: budget < " + "9" * rng.choice([19, 5000, 50000]) + "\n"
    if how == 6:
        defs = "".join(f"define e{k}(): bool = e{k - 1}() and e{k - 1}()\n" if k else "define e0(): bool = true\n"
                       for k in range(rng.choice([20, 40])))
        return s + defs + "invariant blow: e19()\n"
    return s.encode("utf-8")[:i].decode("utf-8", "ignore")  # cut anywhere


def bad_trace(rng: random.Random) -> str:
    how = rng.randrange(7)
    rows: list[object] = [TRACE_HEADER, *GOOD_STEPS]
    if how == 0:
        return "not json at all\n"
    if how == 1:
        text = "\n".join(json.dumps(r) for r in rows)
        return text[:rng.randrange(len(text))]
    if how == 2:
        rows[0] = {**TRACE_HEADER, "config": rng.choice([None, 3, "x", {}, {"vms": -1}, {"vms": "two"}])}
    elif how == 3:
        k = rng.randrange(1, len(rows))
        step = dict(rows[k])  # type: ignore[arg-type]
        step["args"] = {a: rng.choice([None, [], "x", -5, 2 ** 70]) for a in step["args"]}  # type: ignore[union-attr]
        rows[k] = step
    elif how == 4:
        rows.insert(rng.randrange(1, len(rows) + 1), {"action": rng.choice(["frobnicate", "", 7, None]), "args": {}})
    elif how == 5:
        rows = [rng.choice([[], 1, "s", None])] + rows[1:]
    else:
        rows = rows[:1]  # a header and no steps
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def bad_config(rng: random.Random) -> str:
    return rng.choice([
        "vms = 0\n", "vms = -3\n", "gfns = 1e9\n", "roots = []\n", "roots = [0, 0]\n", "gvas = []\n",
        "gvas = [\"0x800000000000\"]\n", "gvas = [\"0x400001\"]\n", "budget = -1\n", "mfns = 3\nbudget = 9\n",
        "beyond_memory = \"maybe\"\n", "colour = 1\n", "vms = [\n", "gvas = [{ base = \"0x400000\", pages = 0 }]\n",
        "gvas = [{ base = \"0x400000\", pages = 99999 }]\n", "\x00\x01\x02", "roots = [0, 2]\n",
        "mfns = 65536\nvms = 64\nroots = [0]\ngvas = [{ base = 0, pages = 1024 }]\n"])


def adapter_module(misbehaviour: str, method: str) -> str:
    body = MISBEHAVIOURS[misbehaviour]
    params = {"step": "self, op", "abstract_state": "self", "reset": "self, config",
              "read_guest": "self, vm, gpa, n", "capabilities": "self", "__init__": "self"}[method]
    return ("from dmmcheck.conformance.vmm_adapter import BundledVmm\n"
            "class Odd(BaseException):\n    pass\n"
            "class Vmm(BundledVmm):\n"
            f"    def {method}({params}):\n"
            f"        {body}\n")


def cases(n: int, seed: int = 0) -> list[Case]:
    """n cases, a mix of every kind, reproducible from the seed."""
    rng = random.Random(seed)
    out: list[Case] = []
    kinds = ["spec", "trace", "config", "option", "adapter"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "spec":
            cmd = rng.choice([["parse"], ["explore", "--max-seconds", "5"], ["prove", "--no-cache", "--only", "init/"]])
            out.append(Case("spec", cmd + ["{dir}/spec.dmm"], {0, 1, 2, 3, 4, 5}, {"spec.dmm": bad_spec(rng)}))
        elif kind == "trace":
            out.append(Case("trace", ["replay", "{dir}/t.jsonl", "--step-timeout", "5"], {0, 1, 2},
                            {"t.jsonl": bad_trace(rng)}))
        elif kind == "config":
            out.append(Case("config", ["fuzz", "--config", "{dir}/scope.toml", "--examples", "2"], {2},
                            {"scope.toml": bad_config(rng)}))
        elif kind == "option":
            cmd = rng.choice(sorted(NUMERIC))
            opt = rng.choice(NUMERIC[cmd])
            value = rng.choice(bad_values(opt))
            argv = [cmd] + (["{dir}/none.jsonl"] if cmd == "replay" else []) + [opt, value]
            out.append(Case("option", argv, {2}))
        else:
            mis, method = rng.choice(sorted(MISBEHAVIOURS)), rng.choice(METHODS)
            early = method in ("capabilities", "__init__")  # before any test case: bad input
            harmless = method == "reset" and mis in ("none", "junk")  # what reset returns is not used
            module = f"hostile_adapter_{seed}_{i}"  # one module name per case: imports are cached
            allowed = {2} if early else {0, 1, 2} if harmless else {1, 2}
            out.append(Case("adapter", ["fuzz", "--impl", f"{module}:Vmm", "--examples", "3", "--step-timeout", "3",
                                        "--shrink-seconds", "10", "--trace-dir", "{dir}/traces"],
                            allowed, {f"{module}.py": adapter_module(mis, method)},
                            finding=not early and not harmless, timeout=120))
    return out
