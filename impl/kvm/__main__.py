"""`python -m dmmcheck.impl.kvm`: the KVM adapter served over dmm-adapter/1 on stdin/stdout, as
`dmm serve --impl dmmcheck.impl.kvm.adapter:KvmVmm` serves it (docs/kvm.md):

    dmm fuzz --impl-cmd 'python -m dmmcheck.impl.kvm' --config kvm.toml
"""

from __future__ import annotations

import sys

from dmmcheck.conformance.serve import run

if __name__ == "__main__":
    sys.exit(run("dmmcheck.impl.kvm.adapter:KvmVmm"))
