"""What the enforce tests share besides fixtures."""

import os

import pytest

from capsule.runtime.compat import landlock

ROOT = os.geteuid() == 0
ABI = landlock.abi_version()

# said loudly in `pytest -rs`: these tests need the kernel, never a mock of it
needs_kernel = pytest.mark.skipif(
    not ROOT or ABI < 1,
    reason=f"needs root and Landlock (euid {os.geteuid()}, Landlock ABI {ABI})",
)
