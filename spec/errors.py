"""Spec errors: `file:line:col: error: message`, the source line, a caret, and what was expected."""

from __future__ import annotations

from dataclasses import dataclass

from .ast import Loc


@dataclass(frozen=True)
class Diagnostic:
    loc: Loc
    message: str
    expected: str = ""

    def render(self, source: str) -> str:
        lines = source.splitlines()
        out = [f"{self.loc}: error: {self.message}"]
        if 1 <= self.loc.line <= len(lines):
            text = lines[self.loc.line - 1].expandtabs(1)
            out.append(f"    {text}")
            out.append("    " + " " * max(self.loc.col - 1, 0) + "^")
        if self.expected:
            out.append(f"  expected: {self.expected}")
        return "\n".join(out)


class SpecError(Exception):
    """One or more diagnostics about a spec file; `str()` renders them all."""

    def __init__(self, diagnostics: list[Diagnostic], source: str = "") -> None:
        self.diagnostics = diagnostics
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.source) for d in self.diagnostics)
