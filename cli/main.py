"""The `dmm` command: one subcommand per job, each a thin layer over the library.

Exit statuses are part of the public interface (CI scripts read them); each subcommand documents its
own. A spec error never ends in a traceback: it prints file:line:col diagnostics.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from dmmcheck.spec import SpecError, load

EXIT_SPEC_ERROR = 2


def _load_or_report(path: str | None):
    try:
        return load(path)
    except SpecError as e:
        print(e.render(), file=sys.stderr)
        n = len(e.diagnostics)
        print(f"dmm: {n} error{'s' if n != 1 else ''} in {e.diagnostics[0].loc.file}", file=sys.stderr)
        return None


def cmd_parse(args: argparse.Namespace) -> int:
    """Parse and type-check a spec. Exit 0, or 2 on a spec error."""
    spec = _load_or_report(args.spec)
    if spec is None:
        return EXIT_SPEC_ERROR
    s = spec.summary()
    if args.json:
        print(json.dumps(s))
    else:
        counts = ", ".join(f"{len(v)} {k}" for k, v in s.items() if v)
        print(f"{spec.file}: ok: {counts}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The main job. Today it parses and type-checks; the prover and fuzzer join as they land."""
    spec = _load_or_report(args.spec)
    if spec is None:
        return EXIT_SPEC_ERROR
    s = spec.summary()
    print(f"dmm check: parsed and type-checked {spec.file}")
    print(f"  {len(s['sorts'])} sorts, {len(s['relations']) + len(s['functions']) + len(s['constants'])} state "
          f"and immutable symbols, {len(s['actions'])} actions, {len(s['invariants'])} invariants")
    print("  not run: proofs (dmm prove) and differential fuzzing (dmm fuzz) are not built yet")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dmmcheck import __version__

    p = argparse.ArgumentParser(prog="dmm", description="Model, prove and conformance-test a VMM's Dynamic Memory Mapping layer.")
    p.add_argument("--version", action="version", version=f"dmm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        sp.add_argument("spec", nargs="?", metavar="SPEC", help="spec file (default: the bundled DMM spec)")
        return sp

    sp = add("parse", cmd_parse, "parse and type-check a spec, print a summary")
    sp.add_argument("--json", action="store_true", help="print the declared names as JSON")
    add("check", cmd_check, "the main job: everything dmm can check about a spec and the bundled VMM")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("dmm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
