"""The software walker against QEMU's MMU over the whole access.c space. Prints one JSON object."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmmcheck.impl.mmucheck import MmuCheck, all_cases  # noqa: E402


def main() -> None:
    chk = MmuCheck()
    start = time.perf_counter()
    cases = real = quirks = 0
    examples = []
    for c in all_cases():
        cases += 1
        for d in chk.run(c):
            if d.quirk:
                quirks += 1
            else:
                real += 1
                if len(examples) < 10:
                    examples.append(str(d))
    print(json.dumps({"cases": cases, "disagreements": real, "seconds": round(time.perf_counter() - start, 1),
                      "known_qemu_quirks": quirks, "error_code_compared": chk.cpu.error_code_observable,
                      "examples": examples}))


if __name__ == "__main__":
    main()
