"""`--config FILE`: the scope a campaign runs at, in TOML (docs/conformance.md, "Choosing the scope").

    vms = 2
    gfns = 32
    mfns = 12                  # fewer than the guests want: reclaim and out-of-memory paths run
    slots = 2
    budget = 10                # optional: pages all VM pools may hold together
    quota = 6                  # optional: pages one VM's pools (active and idle) may hold
    roots = [0, 16]            # guest root gfns (the PML4 each CR3 names)
    beyond_memory = "fault"    # or "ones", "zeros": what an entry naming memory beyond the VM does
    vcpus = 2                  # vCPUs per VM (a campaign runs no more than the adapter does)
    roles = ["wp+nxe", "nxe"]  # the paging modes the vCPUs switch between: wp, smep, smap, nxe joined by +
    shadow_pages = 8           # optional: the most shadow pages the VMM holds (it reclaims at the limit)
    vary = false               # true: test cases also vary the scope within the adapter's bounds
    gvas = [
        "0x400000",                                              # one page
        { base = "0x7fffffffe000", pages = 2 },                  # consecutive 4 KiB pages
        { base = "0xffff800000000000", pages = 3, stride = "2M" },  # one page per 2 MiB region
        { base = "0x8000000000", pages = 2, stride = "1G" },     # one page per 1 GiB region
    ]

Every key is checked here, before anything runs, and a mistake is reported as FILE:LINE: what is
wrong (exit status 2 from the CLI). Whether the adapter can lay the guest out at this scope is
asked of the adapter itself, also before the campaign (fuzz.check_scope).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from .adapter import BEYOND_MEMORY, Config, role_bits, role_name
from .scope import canonical

STRIDES = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30}
BEYOND = BEYOND_MEMORY  # one list, adapter.py's: Config itself refuses anything else
KEYS = ("vms", "gfns", "mfns", "slots", "budget", "quota", "roots", "gvas", "beyond_memory", "vcpus", "roles",
        "shadow_pages", "vary")
# Past these the spec state of one scope (its largest relation is rmap: mfns x vms x roots x gvas
# points) is too large to judge at any useful speed.
MOST = {"vms": 64, "gfns": 1 << 16, "mfns": 1 << 16, "slots": 1 << 16, "roots": 64, "gvas": 1024, "vcpus": 64,
        "shadow_pages": 1 << 16}
MOST_POINTS = 1 << 22


class ConfigError(ValueError):
    """A configuration file that cannot be used: FILE:LINE: what."""


def read_toml(path: str | Path, error: type[ValueError]) -> tuple[Path, str, dict[str, Any]]:
    """A TOML file's path, text and data; `error` names what is wrong: FILE or FILE:LINE:COL first
    (the scope file and the known-divergences file read alike)."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise error(f"{p}: not a regular file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{p}: cannot read: {e.strerror if isinstance(e, OSError) else e}") from None
    try:
        return p, text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"{p}:{m[1]}:{m[2]}" if m else str(p)
        raise error(f"{where}: not TOML: {str(e).split(' (at line')[0]}") from None


def load(path: str | Path) -> tuple[Config, bool]:
    """The configuration a file names, and whether test cases may vary it (`vary`)."""
    p, text, data = read_toml(path, ConfigError)
    return parse(data, _Where(p, text))


class _Where:
    """Names the line a key is on (tomllib keeps no positions)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def __call__(self, key: str) -> str:
        for n, line in enumerate(self.lines, 1):
            if re.match(rf"\s*{re.escape(key)}\s*=", line):
                return f"{self.path}:{n}"
        return str(self.path)


def parse(data: dict[str, Any], where: Any = lambda key: "config") -> tuple[Config, bool]:
    def bad(key: str, what: str) -> ConfigError:
        return ConfigError(f"{where(key)}: {key}: {what}")

    for key in data:
        if key not in KEYS:
            raise bad(key, f"not a configuration key (the keys: {', '.join(KEYS)})")
    d = Config()
    sizes = {}
    for key in ("vms", "gfns", "mfns", "slots"):
        v = data.get(key, getattr(d, key))
        if not _is_int(v) or not 1 <= v <= MOST[key]:
            raise bad(key, f"expected a whole number from 1 to {MOST[key]}, got {v!r}")
        sizes[key] = v
    budget = data.get("budget")
    if budget is not None and (not _is_int(budget) or not 0 <= budget <= sizes["mfns"]):
        raise bad("budget", f"expected a whole number from 0 to mfns ({sizes['mfns']}), got {budget!r}")
    quota = data.get("quota")
    if quota is not None and (not _is_int(quota) or not 0 <= quota <= sizes["mfns"]):
        raise bad("quota", f"expected a whole number from 0 to mfns ({sizes['mfns']}), got {quota!r}")
    roots = data.get("roots", list(d.roots))
    if not isinstance(roots, list) or not roots or not all(_is_int(r) for r in roots):
        raise bad("roots", f"expected a non-empty list of gfns, got {roots!r}")
    if len(roots) > MOST["roots"] or len(set(roots)) != len(roots):
        raise bad("roots", f"expected at most {MOST['roots']} distinct gfns, got {roots!r}")
    for r in roots:
        if not 0 <= r < sizes["gfns"]:
            raise bad("roots", f"root gfn {r} is not guest memory (gfns 0..{sizes['gfns'] - 1})")
    gvas = _gvas(data["gvas"], lambda what: bad("gvas", what)) if "gvas" in data else d.gvas
    beyond = data.get("beyond_memory", d.beyond_memory)
    if beyond not in BEYOND:
        raise bad("beyond_memory", f"expected one of {', '.join(map(repr, BEYOND))}, got {beyond!r}")
    vary = data.get("vary", False)
    if not isinstance(vary, bool):
        raise bad("vary", f"expected true or false, got {vary!r}")
    vcpus = data.get("vcpus", d.vcpus)
    if not _is_int(vcpus) or not 1 <= vcpus <= MOST["vcpus"]:
        raise bad("vcpus", f"expected a whole number from 1 to {MOST['vcpus']}, got {vcpus!r}")
    roles = _roles(data.get("roles", list(d.roles)), lambda what: bad("roles", what))
    shadow_pages = data.get("shadow_pages")
    if shadow_pages is not None and (not _is_int(shadow_pages) or not 1 <= shadow_pages <= MOST["shadow_pages"]):
        raise bad("shadow_pages", f"expected a whole number from 1 to {MOST['shadow_pages']}, got {shadow_pages!r}")
    points = sizes["mfns"] * sizes["vms"] * len(roots) * len(roles) * len(gvas)
    if points > MOST_POINTS:
        raise ConfigError(f"{where('mfns')}: this scope's rmap alone has mfns x vms x roots x roles x gvas = "
                          f"{points} points (at most {MOST_POINTS}): make it smaller")
    config = Config(vms=sizes["vms"], gfns=sizes["gfns"], mfns=sizes["mfns"], slots=sizes["slots"],
                    roots=tuple(roots), gvas=gvas, budget=budget, quota=quota,
                    beyond_memory=beyond, vcpus=vcpus, roles=roles, shadow_pages=shadow_pages)
    return config, vary


def _roles(value: Any, bad: Any) -> tuple[str, ...]:
    """Distinct paging modes by name, each in the canonical order of its bits."""
    if not isinstance(value, list) or not value or not all(isinstance(r, str) for r in value):
        raise bad(f"expected a non-empty list of role names, got {value!r}")
    try:
        out = tuple(role_name(role_bits(r)) for r in value)
    except ValueError as e:
        raise bad(str(e)) from None
    if out != tuple(value) or len(set(out)) != len(out):
        raise bad(f"expected distinct names, each with its bits in the order wp, smep, smap, nxe: {list(out)}")
    return out


def _gvas(value: Any, bad: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise bad(f"expected a non-empty list of addresses or {{base, pages, stride}} tables, got {value!r}")
    out: list[int] = []
    for item in value:
        if isinstance(item, dict):
            unknown = set(item) - {"base", "pages", "stride"}
            if unknown or "base" not in item:
                raise bad(f"a range is {{base = ADDRESS, pages = N, stride = \"4K\" | \"2M\" | \"1G\"}}, got {item!r}")
            base, pages, stride = _address(item["base"], bad), item.get("pages", 1), item.get("stride", "4K")
            if not _is_int(pages) or not 1 <= pages <= MOST["gvas"]:
                raise bad(f"pages: expected a whole number from 1 to {MOST['gvas']}, got {pages!r}")
            if stride not in STRIDES:
                raise bad(f"stride: expected \"4K\", \"2M\" or \"1G\", got {stride!r}")
            out.extend(base + i * STRIDES[stride] for i in range(pages))
        else:
            out.append(_address(item, bad))
    for x in out:
        if not canonical(x):
            raise bad(f"{x:#x} is not a canonical address (bits 63:47 must be all 0 or all 1)")
        if x % 4096:
            raise bad(f"{x:#x} is not the start of a 4 KiB page")
    if len(set(out)) != len(out):
        dup = next(x for x in out if out.count(x) > 1)
        raise bad(f"{dup:#x} is named twice")
    if len(out) > MOST["gvas"]:
        raise bad(f"{len(out)} gvas: at most {MOST['gvas']}")
    return tuple(sorted(out))


def _address(v: Any, bad: Any) -> int:
    if _is_int(v):
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.replace("_", ""), 0)
        except ValueError:
            pass
    raise bad(f"expected an address (a number, or a string such as \"0xffff800000000000\"), got {v!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
