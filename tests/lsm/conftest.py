"""One boot of the LSM test VM for every LSM test (see lsm_harness.py)."""

import warnings

import lsm_harness
import pytest

from capsule.runtime import vm


@pytest.fixture(scope="session")
def lsm_vm(tmp_path_factory: pytest.TempPathFactory) -> vm.GuestRun:
    try:
        vm.check_available()
    except vm.VmUnavailable as err:
        reason = f"LSM VM unavailable, BPF LSM enforcement NOT TESTED: {err.message}"
        warnings.warn(reason + (f" ({err.hint})" if err.hint else ""), stacklevel=1)
        pytest.skip(reason)
    # the guest reads these files through the read-only share of the host filesystem
    workdir = tmp_path_factory.mktemp("lsm")
    loader = lsm_harness.build_loader(workdir)
    commands = []
    for name, builder in lsm_harness.JOBS.items():
        jobdir = workdir / name
        jobdir.mkdir()
        commands.append(builder(jobdir, loader))
    # the boot's allowance plus every job's own limit: the batch grows with the jobs
    limit = vm.DEFAULT_TIMEOUT + sum(command.timeout for command in commands)
    return vm.run_batch(commands, timeout=limit)
