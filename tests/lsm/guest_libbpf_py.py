"""Guest side: load an artifact with capsule.runtime.libbpf (the project's ctypes
binding) instead of lsm_run, then probe. Usage: guest_libbpf_py.py ARTIFACT PROBE..."""

import json
import subprocess
import sys
from pathlib import Path

from capsule.codegen import maps
from capsule.runtime import libbpf

HERE = Path(__file__).resolve().parent


def main(artifact: str, probes: list[str]) -> int:
    for path in ("/run/capsule/pyload/secret", "/run/capsule/pyload/other"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("data\n")
    obj = libbpf.BpfObject(Path(artifact) / "policy.bpf.o")
    obj.load()
    for name, entries in maps.read_json(Path(artifact) / "maps.json").items():
        for key, value in entries:
            obj.map(name).update(key, value)
    links = [program.attach() for program in obj.programs()]
    print(json.dumps({"attached": len(links)}))
    done = subprocess.run([sys.executable, str(HERE / "probe.py"), *probes])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
