"""What the enforce tests share besides fixtures."""

import os
import textwrap
from pathlib import Path

import pytest

from capsule.lang import load_policy
from capsule.runtime.compat import landlock

ROOT = os.geteuid() == 0
ABI = landlock.abi_version()

# said loudly in `pytest -rs`: these tests need the kernel, never a mock of it
needs_kernel = pytest.mark.skipif(
    not ROOT or ABI < 1,
    reason=f"needs root and Landlock (euid {os.geteuid()}, Landlock ABI {ABI})",
)


def write_policy(directory: Path, text: str) -> Path:
    path = directory / "policy.cap"
    path.write_text(textwrap.dedent(text))
    return path


def load(path: Path):
    policy, diagnostics = load_policy([str(path)])
    errors = [d for d in diagnostics if d.is_error]
    assert not errors, errors
    return policy
