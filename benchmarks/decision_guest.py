"""Guest side of bench_decision: per-program BPF run time of each compiled policy.

Runs inside the LSM test VM: `decision_guest.py CONFIG_JSON`. CONFIG names the
artifacts (one per policy size), the probe paths and the loop length. For each round
and each artifact in turn, it loads the artifact with capsule.runtime.libbpf, fills its
maps, attaches it, and for each probe reads the `file_open` program's run_time_ns and
run_cnt (struct bpf_prog_info, kept while kernel.bpf_stats_enabled is 1), opens and
closes the probe path N times, and reads them again, in W short windows (the mean ns
per run of each window is kept). Prints one JSON line.
"""

import ctypes
import json
import os
import sys
import time
from pathlib import Path

from capsule.codegen import maps
from capsule.runtime import libbpf

STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
NR_BPF, BPF_OBJ_GET_INFO_BY_FD = 321, 15  # x86_64 syscall number, bpf() command
PROG_INFO_SIZE, RUN_TIME_NS, RUN_CNT = 232, 192, 200  # offsets in struct bpf_prog_info
HOOK = "file_open"
CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def prog_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the program behind fd, from BPF_OBJ_GET_INFO_BY_FD."""
    info = ctypes.create_string_buffer(PROG_INFO_SIZE)
    # union bpf_attr.info: bpf_fd (u32), info_len (u32), info (u64 pointer)
    attr = (ctypes.c_uint32 * 4)(fd, PROG_INFO_SIZE, 0, 0)
    ctypes.memmove(
        ctypes.addressof(attr) + 8,
        ctypes.byref(ctypes.c_uint64(ctypes.addressof(info))),
        8,
    )
    if _libc.syscall(NR_BPF, BPF_OBJ_GET_INFO_BY_FD, attr, ctypes.sizeof(attr)):
        err = ctypes.get_errno()
        raise OSError(err, f"failed to read bpf_prog_info: {os.strerror(err)}")
    raw = info.raw
    return (
        int.from_bytes(raw[RUN_TIME_NS : RUN_TIME_NS + 8], "little"),
        int.from_bytes(raw[RUN_CNT : RUN_CNT + 8], "little"),
    )


def open_loop(path: str, iterations: int) -> int:
    """Open and close path `iterations` times; return how many opens were refused."""
    refused = 0
    for _ in range(iterations):
        try:
            os.close(os.open(path, os.O_RDONLY))
        except PermissionError:
            refused += 1
    return refused


def measure_artifact(
    artifact: Path, probes: dict, windows: int, iterations: int
) -> dict:
    obj = libbpf.BpfObject(artifact / "policy.bpf.o")
    obj.load()
    started = time.monotonic()
    for name, entries in maps.read_json(artifact / "maps.json").items():
        for key, value in entries:
            obj.map(name).update(key, value)
    filled = time.monotonic() - started
    links = [program.attach() for program in obj.programs()]
    fd = obj.program(HOOK).fd
    result = {"fill_s": round(filled, 3)}
    for label, path in probes.items():
        per_run, runs, refused = [], 0, 0
        for _ in range(windows):
            ns0, cnt0 = prog_stats(fd)
            refused += open_loop(path, iterations)
            ns1, cnt1 = prog_stats(fd)
            per_run.append((ns1 - ns0) / max(cnt1 - cnt0, 1))
            runs += cnt1 - cnt0
        result[label] = {"ns_per_run": per_run, "run_cnt": runs, "refused": refused}
    for link in links:
        link.destroy()
    obj.close()
    return result


def main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    for path in config["probes"].values():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Path(path).write_text("data\n")
    Path(STATS_SYSCTL).write_text("1\n")
    rounds: list[dict] = []
    sizes = list(config["artifacts"])
    for index in range(config["rounds"]):
        # each round starts with another size, so no size always runs first or last
        order = sizes[index % len(sizes) :] + sizes[: index % len(sizes)]
        one = {}
        for size in order:
            artifact = Path(config["artifacts"][size])
            one[size] = measure_artifact(
                artifact, config["probes"], config["windows"], config["iterations"]
            )
        rounds.append({"order": order, **one})
    Path(STATS_SYSCTL).write_text("0\n")
    clocksource = Path(CLOCKSOURCE).read_text().strip()
    print(
        json.dumps(
            {"kernel": os.uname().release, "clocksource": clocksource, "rounds": rounds}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
