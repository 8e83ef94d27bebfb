"""The dmm spec language: grammar (lark), parser, typed AST, type checker, printer; the DMM spec.

Pipeline: text --parse--> SpecFile (surface AST) --check--> CheckedSpec (resolved, typed).
"""

from __future__ import annotations

from pathlib import Path

from .ast import SpecFile
from .cache import load_checked
from .checker import CheckedSpec, check
from .errors import Diagnostic, SpecError
from .parser import parse, parse_file
from .printer import show_spec

BUNDLED_NAME = "dmm.dmm"


def bundled_path() -> Path:
    """The bundled DMM spec, the default of every command."""
    # Beside this file, where setuptools installs package data (importlib.resources would say the
    # same for an installed package, at ~10 ms of imports on every command's start).
    return Path(__file__).with_name(BUNDLED_NAME)


def load(path: str | Path | None = None) -> CheckedSpec:
    """Parse and type-check a spec file (default: the bundled DMM spec), or raise SpecError. A spec
    checked before comes from the cache (cache.py)."""
    return load_checked(bundled_path() if path is None else path)


__all__ = ["CheckedSpec", "Diagnostic", "SpecError", "SpecFile", "bundled_path", "check", "load", "parse",
           "parse_file", "show_spec"]
