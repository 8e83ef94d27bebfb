"""Checked specs kept between processes.

Every command starts by parsing and type-checking its spec: 0.33 s of CPU for the bundled spec,
most of a warm `dmm prove` and of a fuzzing worker's start. A spec that checked is kept in the parser
cache folder (`parser.parser_cache_dir()`), pickled, under a key made of everything the result
depends on: the path as given (locations name it), the spec's text, the Python, and the text of the
spec language's own code and grammar. Loading it again costs about 0.03 s. Only successes are kept:
a spec with errors is parsed every time, so its diagnostics are always the checker's own. A cache
that cannot be read or written is never an error: the spec is checked as if there were none.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from contextlib import suppress
from functools import lru_cache
from pathlib import Path

from .checker import CheckedSpec, check
from .parser import parse_file, parser_cache_dir

_FORMAT = "dmm checked spec 1"


@lru_cache(maxsize=1)
def _code_id() -> str:
    """The spec language's code and grammar, and the Python: a change to any of them is a new key."""
    here = Path(__file__).parent
    h = hashlib.sha256(f"{_FORMAT}\n{sys.version}\n".encode())
    for f in sorted(here.glob("*.py")) + [here / "grammar.lark"]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def load_checked(path: str | Path) -> CheckedSpec:
    """The checked spec at path, from the cache when it was checked before; else parsed, checked
    (SpecError as ever) and kept."""
    kept = _entry(path)
    if kept is not None:
        with suppress(Exception):  # absent, unreadable or damaged: checked again and kept anew
            found = pickle.loads(kept.read_bytes())  # noqa: S301 - our own cache folder, as the parser's code
            if isinstance(found, CheckedSpec):
                return found
    spec = check(parse_file(path))
    if kept is not None:
        _keep(kept, spec)
    return spec


def _entry(path: str | Path) -> Path | None:
    """Where the checked spec at path is kept; None for what parse_file alone must answer (no
    path, not a regular file — a FIFO would block — or unreadable) or without a cache folder."""
    try:
        p = Path(path)
        text = p.read_bytes() if str(path) and p.is_file() else None
        folder = parser_cache_dir()
    except (OSError, RuntimeError):  # RuntimeError: no home folder to put the cache in
        return None
    if text is None:
        return None
    key = hashlib.sha256(f"{_code_id()}\n{path}\n".encode() + text).hexdigest()[:32]
    return folder / f"spec-{key}.pickle"


def _keep(path: Path, spec: CheckedSpec) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except (OSError, pickle.PicklingError, RecursionError):
        with suppress(OSError):
            tmp.unlink()
