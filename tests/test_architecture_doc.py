"""docs/architecture.md names every module of every layer: a new file comes with its line there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["spec", "model", "impl", "conformance"]


@pytest.mark.parametrize("layer", LAYERS)
def test_every_module_is_on_the_architecture_page(layer):
    page = (ROOT / "docs" / "architecture.md").read_text()
    section = page.split(f"## {layer}/", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([\w/]+\.(?:py|lark|dmm))`", section)) | set(re.findall(r"`(\w+)/`", section))
    files = {p.name for p in (ROOT / layer).iterdir() if p.suffix in (".py", ".lark", ".dmm") and p.name != "__init__.py"}
    files |= {p.name for p in (ROOT / layer).iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert files - named == set(), f"not on docs/architecture.md under {layer}/"
