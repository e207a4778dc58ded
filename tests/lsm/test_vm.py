"""The LSM test VM itself: it boots the stock kernel with BPF LSM, and a hand-written
LSM program loaded there really denies an open."""

import sys
from pathlib import Path

import pytest
from lsm_harness import HERE, compile_bpf, guest_job, probe_results

from capsule.runtime import vm

pytestmark = [pytest.mark.lsm, pytest.mark.slow]


@guest_job("deny_inode")
def _deny_inode(workdir: Path, loader: Path) -> vm.GuestCommand:
    obj = compile_bpf(HERE / "bpf" / "deny_inode.bpf.c", workdir / "deny_inode.bpf.o")
    script = str(HERE / "guest_deny_open.py")
    return vm.GuestCommand(
        "deny_inode", [sys.executable, script, str(loader), str(obj)]
    )


@guest_job("guest_facts")
def _guest_facts(workdir: Path, loader: Path) -> vm.GuestCommand:
    # the scratch dir must be writable, the host share must not be (vng only overlays
    # /tmp, /etc, /var and a few more with writable layers, so probe the share's root:
    # the checkout itself may live under /tmp)
    probe = Path("/.capsule-guest-write-probe")
    check = f"touch /run/capsule/w && ! touch {probe} 2>/dev/null && echo rw-ok"
    return vm.GuestCommand("guest_facts", ["sh", "-c", check])


def test_guest_runs_a_kernel_with_bpf_lsm(lsm_vm: vm.GuestRun) -> None:
    assert "bpf" in lsm_vm.lsm
    assert lsm_vm.kernel.startswith("6.1.")
    assert lsm_vm.mounts == {"/sys/fs/bpf": True, "/run/capsule": True}


def test_guest_has_a_writable_scratch_dir_and_a_read_only_host(
    lsm_vm: vm.GuestRun,
) -> None:
    result = lsm_vm.results["guest_facts"]
    assert result.stdout.strip() == "rw-ok", result.stderr


def test_lsm_program_denies_open_of_the_listed_inode_only(lsm_vm: vm.GuestRun) -> None:
    result = lsm_vm.results["deny_inode"]
    assert "lsm_run: attached file_open" in result.stdout, result.stderr
    opened = probe_results(result)
    assert opened == {
        "/run/capsule/deny_open/secret": "EPERM",
        "/run/capsule/deny_open/other": "ok",
    }


class TestVmErrors:
    def test_missing_kernel_image_is_one_clear_error(self) -> None:
        with pytest.raises(vm.VmUnavailable, match="failed to find kernel image"):
            vm.find_kernel("/boot/vmlinuz-does-not-exist")

    def test_missing_qemu_is_one_clear_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(vm.VmUnavailable, match="failed to find qemu-system-x86_64"):
            vm.check_available()

    def test_timeout_kills_the_guest_and_says_so(self) -> None:
        try:
            vm.check_available()
        except vm.VmUnavailable as err:
            pytest.skip(f"LSM VM unavailable, VM timeout NOT TESTED: {err.message}")
        with pytest.raises(vm.CapsuleError, match="no result after 3 s"):
            vm.run_batch([vm.GuestCommand("sleep", ["true"])], timeout=3)

    def test_duplicate_job_names_are_refused(self) -> None:
        with pytest.raises(ValueError, match="unique"):
            vm.run_batch(
                [vm.GuestCommand("a", ["true"]), vm.GuestCommand("a", ["true"])]
            )
