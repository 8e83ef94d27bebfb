"""Run mypy on the package and compare its errors with a checked-in baseline (a ratchet).

Usage: python tools/mypy_baseline.py [--update] [--stats]

- The folders install as `dmmcheck.*` through setuptools' import hook, which mypy cannot follow, so
  they are linked into build/mypy/dmmcheck (as installed) and mypy checks `-p dmmcheck` from there.
- An error is keyed by file, code and message, not by line: other edits move lines, not errors.
- New errors fail; errors the baseline lists that are gone are dropped from it (it only shrinks);
  `--update` rewrites it from scratch (to accept errors on purpose).
- STRICT folders may have no errors and no baseline entries, and each of their `# type: ignore`
  must name its code and say why: `# type: ignore[code]  # why`.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINKS = ROOT / "build" / "mypy"
BASELINE = ROOT / "tools" / "mypy-baseline.txt"
FOLDERS = ("spec", "model", "impl", "conformance")  # installed as dmmcheck.<folder>; cli/ is dmmcheck itself
STRICT = ("spec/", "model/")
_LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<msg>.*?)\s+\[(?P<code>[a-z-]+)\]$")
_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def link_tree() -> None:
    """build/mypy/dmmcheck: cli's modules, and each layer's folder, as the package installs them."""
    pkg = LINKS / "dmmcheck"
    pkg.mkdir(parents=True, exist_ok=True)
    want = {src.name: src for src in (ROOT / "cli").glob("*.py")} | {f: ROOT / f for f in FOLDERS}
    for old in pkg.iterdir():  # links already right are kept: two lint runs at once agree
        if old.is_symlink() and want.get(old.name) != Path(os.readlink(old)):
            old.unlink()
    for name, src in want.items():
        if not (pkg / name).is_symlink():
            try:
                (pkg / name).symlink_to(src, target_is_directory=src.is_dir())
            except FileExistsError:  # another run made it just now
                pass


def repo_path(mypy_path: str) -> str:
    """The repository path of a file mypy names through the link tree (the links lead back)."""
    return str((ROOT / mypy_path).resolve().relative_to(ROOT))


def run_mypy() -> list[tuple[str, int, str, str]]:
    """(repo path, line, code, message) of each error."""
    link_tree()
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--no-error-summary", "--no-pretty", "--show-error-codes", "-p", "dmmcheck"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1) or proc.stderr.strip():
        sys.exit(f"mypy failed to run ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    out = []
    for line in proc.stdout.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((repo_path(m["path"]), int(m["line"]), m["code"], m["msg"]))
    return out


def key(path: str, code: str, msg: str) -> str:
    return f"{path}: [{code}] {msg}"


def read_baseline() -> Counter[str]:
    if not BASELINE.exists():
        return Counter()
    return Counter(x for x in BASELINE.read_text().splitlines() if x and not x.startswith("#"))


def write_baseline(keys: Counter[str]) -> None:
    head = "# mypy errors accepted for now (tools/mypy_baseline.py); fixing one shrinks this file\n"
    BASELINE.write_text(head + "".join(k + "\n" for k in sorted(keys.elements())))


def ignores() -> dict[str, list[tuple[str, int, bool]]]:
    """Each `# type: ignore` per top folder: (file, line, whether it names a code and a reason)."""
    found: dict[str, list[tuple[str, int, bool]]] = {}
    for folder in (*FOLDERS, "cli"):
        for f in sorted((ROOT / folder).rglob("*.py")):
            for n, text in enumerate(f.read_text().splitlines(), 1):
                m = _IGNORE.search(text)
                if m:
                    ok = bool(m["codes"]) and m["rest"].strip().startswith("#")
                    found.setdefault(folder, []).append((str(f.relative_to(ROOT)), n, ok))
    return found


def stats(errors: list[tuple[str, int, str, str]]) -> None:
    per = Counter(p.split("/")[0] for p, _, _, _ in errors)
    ign = ignores()
    for folder in (*FOLDERS, "cli"):
        print(f"{folder:12} {per.get(folder, 0):4} errors {len(ign.get(folder, [])):4} type: ignore")
    print(f"{'total':12} {sum(per.values()):4} errors {sum(map(len, ign.values())):4} type: ignore")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="rewrite the baseline from the current errors")
    ap.add_argument("--stats", action="store_true", help="errors and `# type: ignore` per folder")
    opts = ap.parse_args()
    errors = run_mypy()
    if opts.stats:
        stats(errors)
    now = Counter(key(p, c, m) for p, _, c, m in errors)
    if opts.update:
        write_baseline(Counter({k: n for k, n in now.items() if not k.startswith(STRICT)}))
    base = read_baseline()
    new = now - base
    fixed = base - now
    failed = False
    for p, line, c, m in errors:
        if new[key(p, c, m)] > 0:
            print(f"{p}:{line}: error: {m}  [{c}]")
            failed = True
    for f, n, ok in (x for folder in STRICT for x in ignores().get(folder.rstrip("/"), [])):
        if not ok:
            print(f"{f}:{n}: a type: ignore without its code and a reason (`# type: ignore[code]  # why`)")
            failed = True
    if fixed and not opts.update:
        write_baseline(base - fixed)
        print(f"mypy: {sum(fixed.values())} baseline error(s) fixed; {BASELINE.relative_to(ROOT)} shrunk")
    print(f"mypy: {sum(now.values())} error(s), {sum(base.values()) - sum(fixed.values())} in the baseline, "
          f"{sum(new.values())} new")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
