"""`make demo-lsm`: the enforcement demo of `make demo`, under BPF LSM in the test VM.

On the host: compile coding-agent.cap into an artifact and build the probe object
(the guest sees the host's files read-only). Then boot the LSM VM once and run
enforce-demo-lsm-guest.sh there, which runs enforce-demo.sh with `--backend lsm`.
Prints what the guest printed and exits with the demo's status.
Usage: enforce_demo_lsm.py BUILD_DIR
"""

import sys
from pathlib import Path

from capsule.codegen import artifact
from capsule.errors import CapsuleError
from capsule.lang import load_policy
from capsule.runtime import build, doctor, vm

HERE = Path(__file__).resolve().parent
GUEST = HERE / "enforce-demo-lsm-guest.sh"


def main(build_dir: Path) -> int:
    policy, diagnostics = load_policy([str(HERE / "coding-agent.cap")])
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        print(f"capsule: error: {errors[0].location}: {errors[0].message}")
        return 1
    built = artifact.build(policy, build_dir.resolve() / "artifact")
    build.compile_bpf(doctor.PROBES)
    capsule = str(Path(sys.executable).parent / "capsule")
    command = vm.GuestCommand(
        "demo-lsm", ["bash", str(GUEST), str(built.directory), capsule], timeout=600
    )
    print("booting the LSM VM (software emulation: a minute or more) ...", flush=True)
    run = vm.run_batch([command])
    result = run.results["demo-lsm"]
    print(f"guest kernel {run.kernel}, LSMs {','.join(run.lsm)}")
    print("-- the agent's output (stdout) --")
    sys.stdout.write(result.stdout)
    print("-- capsule's coverage report, timeline and summary (stderr) --")
    sys.stdout.write(result.stderr)
    if result.timed_out:
        print("capsule: error: the demo did not finish in the guest")
        return 1
    return result.returncode if result.returncode is not None else 1


if __name__ == "__main__":
    try:
        sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/demo-lsm")))
    except CapsuleError as err:
        print(f"capsule: error: {err.message}", file=sys.stderr)
        sys.exit(1)
