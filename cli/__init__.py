"""dmmcheck: a formal model of a VMM's Dynamic Memory Mapping layer and a conformance harness.

The layers install as subpackages: `dmmcheck.spec` (the language), `dmmcheck.model` (its semantics),
`dmmcheck.impl` (a concrete shadow-paging VMM), `dmmcheck.conformance` (the harness).
"""

__version__ = "0.1.0"

from .main import main  # noqa: E402

__all__ = ["main", "__version__"]
