"""The tools bench_enforce compares Capsule with: auditd watch rules and bpftrace.

Both are given the file rules of a Capsule policy: auditd watches every path a file
rule names (`auditctl -w PATH -p rwxa`), bpftrace counts the openat calls whose path
starts with one of them. Both act on every process of the machine, where Capsule acts
on the agent's tree only. `~` ("any home directory") becomes /root and each existing
/home/NAME. A tool that cannot run here raises Unavailable with the reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from capsule.lang import load_policy

AUDIT_KEY = "capsule-bench"


class Unavailable(Exception):
    """A comparison tool cannot run on this machine; the message says why."""


def file_rule_paths(policy: Path) -> list[str]:
    """The paths named by the file rules of a policy, `~` expanded, in rule order."""
    loaded, diags = load_policy([str(policy)])
    errors = [d for d in diags if d.is_error]
    if errors:
        raise ValueError(f"{policy}: {errors[0]}")
    homes = ["/root", *sorted(str(p) for p in Path("/home").glob("*") if p.is_dir())]
    paths: list[str] = []
    for rule in loaded.rules:
        if rule.area != "file":
            continue
        for pattern in rule.objects:
            text = pattern["path"].text.removesuffix("**")
            expanded = [text]
            if text.startswith("~"):
                expanded = [home + text[1:] for home in homes]
            paths += [p for p in expanded if p not in paths]
    return paths


def _auditctl(*args: str, check: bool = True) -> str:
    done = subprocess.run(["auditctl", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise Unavailable(f"auditctl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def audit_status() -> dict[str, int]:
    """`auditctl -s` as numbers: enabled, pid, backlog_limit, lost, ..."""
    status = {}
    for line in _auditctl("-s").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            status[parts[0]] = int(parts[1])
    return status


class Auditd:
    """auditd receiving the kernel's audit records, and watch rules on demand.

    Starts auditd (private configuration, log in `workdir`) unless one already runs.
    Between runs it leaves `-a never,task`, so processes started then get no audit
    context; once the audit subsystem was enabled, the kernel otherwise gives every new
    task one (`audit_ever_enabled`). `close()` restores the enabled flag, the backlog
    limit and an empty rule list, and stops the daemon it started.
    """

    def __init__(self, paths: list[str], workdir: Path):
        if not shutil.which("auditctl") or not shutil.which("auditd"):
            raise Unavailable("auditd is not installed (Debian package auditd)")
        self.paths, self.workdir = paths, workdir
        self.daemon: subprocess.Popen | None = None
        self.skipped: dict[str, str] = {}
        if _auditctl("-l", check=False).strip() not in ("", "No rules"):
            raise Unavailable("audit rules are already loaded; not touching them")
        self.saved = audit_status()
        if self.saved.get("enabled") == 2:
            raise Unavailable("the audit configuration is locked (enabled 2)")
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        _auditctl("-a", "never,task")
        _auditctl("-b", "8192")  # Debian's default rules set this for busy systems
        if self.saved.get("pid"):
            return
        conf = self.workdir / "auditd"
        conf.mkdir(mode=0o700)
        text = Path("/etc/audit/auditd.conf").read_text()
        settings = {
            "log_file": str(conf / "audit.log"),
            "max_log_file": "64",
            "num_logs": "2",
            "max_log_file_action": "ROTATE",
        }
        for key, value in settings.items():
            text = re.sub(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
        (conf / "auditd.conf").write_text(text)
        self.log = conf / "auditd.stderr"
        with self.log.open("w") as err:
            self.daemon = subprocess.Popen(
                ["auditd", "-n", "-c", str(conf)],
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        self._wait_registered()

    def _wait_registered(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise Unavailable(
                    f"auditd exited ({self.daemon.returncode}): "
                    f"{self.log.read_text().strip()[-300:]}"
                )
            if audit_status().get("pid") == self.daemon.pid:
                return
            time.sleep(0.2)
        raise Unavailable("auditd did not register with the kernel within 15 s")

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Watch rules on every path, audit enabled, for the duration of the block."""
        _auditctl("-D")
        try:
            for path in self.paths:
                err = _watch(path)
                if err:
                    self.skipped[path] = err
            if len(self.skipped) == len(self.paths):
                raise Unavailable(f"no watch rule could be added: {self.skipped}")
            _auditctl("-e", "1")
            yield
        finally:
            _auditctl("-e", "0", check=False)
            _auditctl("-D", check=False)
            _auditctl("-a", "never,task", check=False)

    def lost(self) -> int:
        return audit_status().get("lost", 0)

    def close(self) -> None:
        _auditctl("-e", str(self.saved.get("enabled", 0)), check=False)
        _auditctl("-D", check=False)
        if "backlog_limit" in self.saved:
            _auditctl("-b", str(self.saved["backlog_limit"]), check=False)
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()


def _watch(path: str) -> str | None:
    done = subprocess.run(
        ["auditctl", "-w", path, "-p", "rwxa", "-k", AUDIT_KEY],
        capture_output=True,
        text=True,
    )
    return done.stderr.strip().splitlines()[0] if done.returncode else None


def bpftrace_script(paths: list[str]) -> str:
    """Count openat calls per policy path, by prefix: one probe and filter per path.

    One program with an if/else chain over every path would do less work per call,
    but bpftrace 0.17 unrolls each strncmp and the verifier was still checking the
    chain for the coding-agent's 60 paths after a minute.
    """
    probes = [
        "tracepoint:syscalls:sys_enter_openat\n"
        f'/strncmp(str(args->filename), "{path}", {len(path)}) == 0/\n'
        f"{{\n\t@rule[{index}] = count();\n}}\n"
        for index, path in enumerate(paths)
    ]
    return "\n".join(probes)


class Bpftrace:
    """bpftrace running a counting script while a block runs; `counts` after it."""

    def __init__(self, paths: list[str], workdir: Path):
        if not shutil.which("bpftrace"):
            raise Unavailable("bpftrace is not installed (Debian package bpftrace)")
        self.paths = paths
        self.script = workdir / "count.bt"
        self.script.write_text(bpftrace_script(paths))
        self.counts: dict[int, int] = {}

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        proc = subprocess.Popen(
            ["bpftrace", "-B", "line", str(self.script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            self._wait_attached(proc)
            yield
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        self.counts = {
            int(key): int(value)
            for key, value in re.findall(r"@rule\[(-?\d+)\]: (\d+)", out)
        }

    @staticmethod
    def _wait_attached(proc: subprocess.Popen) -> None:
        # bpftrace prints "Attaching N probes" before it loads and attaches them, and
        # waits in epoll_wait once every probe is attached
        deadline = time.monotonic() + 120  # it compiles the script with LLVM first
        wchan = Path(f"/proc/{proc.pid}/wchan")
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                if "epoll_wait" in wchan.read_text():
                    return
            time.sleep(0.2)
        proc.kill()
        _, err = proc.communicate()
        raise Unavailable(f"bpftrace did not attach: {err.strip()[-300:]}")
