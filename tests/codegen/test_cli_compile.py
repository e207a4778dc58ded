"""`capsule compile` as a user runs it: artifact files, summary, one-line errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAPSULE = [sys.executable, "-c", "from capsule.cli.main import run; run()"]

pytestmark = pytest.mark.skipif(not shutil.which("clang"), reason="clang is missing")


def _compile(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CAPSULE, "compile", *args], capture_output=True, text=True,
                          cwd=ROOT)  # fmt: skip


def test_compile_writes_the_artifact_and_says_what_it_left_out(tmp_path: Path) -> None:
    done = _compile("examples/policies/coding-agent.cap", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    names = {"policy.bpf.c", "policy.bpf.o", "maps.json", "manifest.json"}
    assert names <= {p.name for p in tmp_path.iterdir()}
    assert "hooks: file_open, path_unlink," in done.stderr
    assert (
        "path_symlink, bprm_check_security, socket_connect, socket_bind, "
        "socket_sendmsg, socket_listen, socket_accept, task_fix_setuid, "
        "task_fix_setgid, capset, mmap_file, file_mprotect, task_alloc)" in done.stderr
    )
    assert (
        "not enforced in the kernel, decided in user space only: creds" in done.stderr
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sources"][0].endswith("examples/policies/coding-agent.cap")


def test_a_policy_error_is_shown_with_its_location_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cap"
    bad.write_text("deny file reed /x\n")
    done = _compile(str(bad), "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    assert f"{bad}:1:11: error: unknown operation 'reed'" in done.stderr
    assert "capsule: error: failed to compile" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_an_unknown_target_is_one_line(tmp_path: Path) -> None:
    done = _compile("examples/policies/tool-sandbox.cap", "-o", str(tmp_path),
                    "--arch", "riscv64")  # fmt: skip
    assert done.returncode == 125
    assert "failed to compile for riscv64: targets are x86_64, aarch64" in done.stderr
    assert "Traceback" not in done.stderr
