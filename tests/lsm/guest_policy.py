"""Guest side of a generated-policy test: make the files, load the artifact, probe.

Usage: guest_policy.py LSM_RUN ARTIFACT_DIR SCENARIO_JSON. The scenario names files
to create ("files", "dirs", "executables", "sleepers": copies of sleep) under
/run/capsule and the probe items to try.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from capsule.codegen import maps

HERE = Path(__file__).resolve().parent


def _make_files(scenario: dict) -> None:
    for path in scenario.get("files", []):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_text("data\n")
    for path in scenario.get("dirs", []):
        os.makedirs(path, exist_ok=True)
    for path in scenario.get("executables", []):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy("/bin/true", path)
    for path in scenario.get("sleepers", []):  # signal receivers
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy("/bin/sleep", path)


def main(lsm_run: str, artifact: str, scenario_path: str) -> int:
    scenario = json.loads(Path(scenario_path).read_text())
    _make_files(scenario)
    lines = Path("/run/capsule") / f"maps-{os.getpid()}.txt"
    lines.write_text(maps.to_loader_lines(maps.read_json(Path(artifact) / "maps.json")))
    argv = [lsm_run, "-m", str(lines), str(Path(artifact) / "policy.bpf.o")]
    if scenario["probes"]:  # else: load, fill and attach only
        argv += ["--", sys.executable, str(HERE / "probe.py"), *scenario["probes"]]
    return subprocess.run(argv).returncode


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
