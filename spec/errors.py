"""Spec errors: `file:line:col: error: message`, the source line, a caret, and what was expected."""

from __future__ import annotations

from dataclasses import dataclass

from .ast import Loc


WIDTH = 400  # source shown around an error, in characters (a whole line of any hand-written spec)
SHOWN = 100  # diagnostics rendered; the rest are counted


@dataclass(frozen=True)
class Diagnostic:
    loc: Loc
    message: str
    expected: str = ""

    def render(self, source: str | list[str]) -> str:
        lines = source_lines(source) if isinstance(source, str) else source
        out = [f"{self.loc}: error: {self.message}"]
        if 1 <= self.loc.line <= len(lines):
            text, col = lines[self.loc.line - 1].rstrip("\r").expandtabs(1), max(self.loc.col - 1, 0)
            if len(text) > WIDTH:  # a window around the column, not a line of megabytes
                start = max(0, min(col - WIDTH // 2, len(text) - WIDTH))
                text = ("..." if start else "") + text[start:start + WIDTH] + ("..." if start + WIDTH < len(text) else "")
                col = col - start + (3 if start else 0)
            out.append(f"    {text}")
            out.append("    " + " " * col + "^")
        if self.expected:
            out.append(f"  expected: {self.expected}")
        return "\n".join(out)


def source_lines(source: str) -> list[str]:
    """The lines as the parser numbers them: split at newlines only (a form feed, a vertical tab or a
    NEL inside a line does not start a new one for the parser, so it must not here)."""
    return source.split("\n")


class SpecError(Exception):
    """One or more diagnostics about a spec file; `str()` renders them all."""

    def __init__(self, diagnostics: list[Diagnostic], source: str = "") -> None:
        self.diagnostics = diagnostics
        self.source = source
        super().__init__(f"{len(diagnostics)} error(s)")

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        lines = source_lines(self.source)  # once for all the diagnostics: rendering stays linear
        shown = [d.render(lines) for d in self.diagnostics[:SHOWN]]
        if len(self.diagnostics) > SHOWN:
            shown.append(f"... and {len(self.diagnostics) - SHOWN} more errors (the first {SHOWN} are shown)")
        return "\n".join(shown)
