"""Enrichment: names, addresses, devices, persistence paths and the process table.

These tests feed decoded-event dicts (the shape the tracer returns) to the enricher;
what the kernel really sends is covered by tests/cli/test_trace.py.
"""

import os
import socket
import sys
import time
import uuid
from pathlib import Path

import pytest

from capsule.runtime import enrich, names
from capsule.runtime.enrich import Enricher, format_sockaddr, persistence_class


def event(area, op, ts_ns, pid, **fields):
    base = {
        "kind": 0,
        "flags": 0,
        "size": 0,
        "ts_ns": ts_ns,
        "pid": pid,
        "tid": pid,
        "ppid": 1,
        "uid": 0,
        "gid": 0,
        "cgroup_id": 0,
        "comm": "t",
        "area": area,
        "op": op,
    }
    base.update(fields)
    return base


class TestNames:
    @pytest.mark.parametrize(
        "number, name",
        [
            (9, "SIGKILL"),
            (15, "SIGTERM"),
            (10, "SIGUSR1"),
            (34, "SIGRTMIN"),
            (37, "SIGRTMIN+3"),
            (99, "signal 99"),
        ],
    )
    def test_signals(self, number, name):
        assert names.signal_name(number) == name

    @pytest.mark.parametrize(
        "number, name",
        [
            (0, "CAP_CHOWN"),
            (7, "CAP_SETUID"),
            (21, "CAP_SYS_ADMIN"),
            (39, "CAP_BPF"),
            (40, "CAP_CHECKPOINT_RESTORE"),
            (63, "cap 63"),
        ],
    )
    def test_capabilities(self, number, name):
        assert names.capability_name(number) == name

    def test_capability_mask(self):
        mask = 1 << 21 | 1 << 12 | 1
        assert names.capability_names(mask) == [
            "CAP_CHOWN",
            "CAP_NET_ADMIN",
            "CAP_SYS_ADMIN",
        ]

    @pytest.mark.parametrize(
        "number, name",
        [
            (0, "read"),
            (59, "execve"),
            (257, "openat"),
            (231, "exit_group"),
            (99999, "syscall 99999"),
        ],
    )
    def test_syscalls(self, number, name):
        assert names.syscall_name(number) == name

    @pytest.mark.parametrize(
        "number, name",
        [(2, "ENOENT"), (-13, "EACCES"), (-1, "EPERM"), (4000, "errno 4000")],
    )
    def test_errnos(self, number, name):
        assert names.errno_name(number) == name


def test_more_names():
    assert names.rlimit_name(7) == "RLIMIT_NOFILE"
    assert names.namespace_names(0x00020000 | 0x40000000) == ["mnt", "net"]
    assert names.prot_text(7) == "rwx" and names.prot_text(1) == "r--"


class TestSockaddr:
    @pytest.mark.parametrize(
        "family, addr, port, text",
        [
            (socket.AF_INET, bytes([127, 0, 0, 1]), 8080, "127.0.0.1:8080"),
            (socket.AF_INET, "10.1.2.3", 22, "10.1.2.3:22"),
            (
                socket.AF_INET6,
                socket.inet_pton(socket.AF_INET6, "::1"),
                443,
                "[::1]:443",
            ),
            (
                socket.AF_INET6,
                socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1"),
                80,
                "127.0.0.1:80",
            ),
            (
                socket.AF_INET6,
                socket.inet_pton(socket.AF_INET6, "fe80::1"),
                53,
                "[fe80::1]:53",
            ),
            (socket.AF_UNIX, b"/run/docker.sock\0\0", 0, "/run/docker.sock"),
            (socket.AF_UNIX, "", 0, "(unnamed)"),
            (socket.AF_PACKET, b"", 0, f"family {socket.AF_PACKET}"),
        ],
    )
    def test_format(self, family, addr, port, text):
        assert format_sockaddr(family, addr, port) == text


class TestPersistence:
    @pytest.mark.parametrize(
        "path, kind",
        [
            ("/root/.bashrc", "shell-rc"),
            ("/home/alice/.profile", "shell-rc"),
            ("/home/alice/.zshrc", "shell-rc"),
            ("/etc/profile.d/evil.sh", "shell-rc"),
            ("/etc/bash.bashrc", "shell-rc"),
            ("/etc/crontab", "cron"),
            ("/etc/cron.d/job", "cron"),
            ("/etc/cron.daily/job", "cron"),
            ("/var/spool/cron/crontabs/root", "cron"),
            ("/etc/systemd/system/evil.service", "systemd"),
            ("/etc/systemd/system/multi-user.target.wants/evil.service", "systemd"),
            ("/home/bob/.config/systemd/user/x.timer", "systemd"),
            ("/root/.ssh/authorized_keys", "authorized-keys"),
            ("/home/bob/.ssh/authorized_keys2", "authorized-keys"),
            ("/etc/ld.so.preload", "ld-preload"),
            ("/etc/rc.local", "init"),
        ],
    )
    def test_persistence_paths(self, path, kind):
        assert persistence_class(path) == kind

    @pytest.mark.parametrize(
        "path",
        [
            "/tmp/.bashrc",
            "/root/.bashrc.bak",
            "/home/a/b/.bashrc",
            "/etc/cron.dfoo/x",
            "/root/.ssh/known_hosts",
            "/etc/ld.so.cache",
            "/etc/systemd/systemx/a",
            "/home/.bashrc",
            "/etc/passwd",
        ],
    )
    def test_other_paths(self, path):
        assert persistence_class(path) is None


class TestDevices:
    @pytest.mark.parametrize(
        "major, minor, block, kind",
        [
            (10, 232, False, "kvm"),
            (10, 200, False, "tun"),
            (10, 1, False, None),
            (4, 1, False, "tty"),
            (5, 0, False, "tty"),
            (136, 3, False, "tty"),
            (143, 0, False, "tty"),
            (226, 128, False, "gpu"),
            (195, 0, False, "gpu"),
            (189, 2, False, "usb"),
            (1, 3, False, None),
            (8, 0, True, "disk"),
            (7, 0, True, "disk"),
        ],
    )
    def test_classes(self, major, minor, block, kind):
        assert enrich.DeviceClasses()(major, minor, block) == kind

    def test_ioctl_name(self):
        ev = event(
            "device",
            "ioctl",
            10,
            os.getpid(),
            major=10,
            minor=200,
            mode=0o20666,
            cmd=0x400454CA,
        )
        Enricher().enrich(ev)
        assert (ev["device_class"], ev["ioctl_name"]) == ("tun", "TUNSETIFF")
        assert names.ioctl_name(0x1234) == "0x1234"

    def test_kernel_dev_t_split(self):
        assert enrich.split_dev(10 << 20 | 232) == (10, 232)

    def test_device_event(self):
        enricher = Enricher()
        ev = event("device", "open", 10, os.getpid(), major=10, minor=200, mode=0o20666)
        enricher.enrich(ev)
        assert (ev["device"], ev["device_class"]) == ("10:200", "tun")


class TestContainers:
    @pytest.mark.parametrize(
        "path, cid",
        [
            ("/system.slice/docker-" + "a" * 64 + ".scope", "a" * 12),
            ("/docker/" + "b" * 64, "b" * 12),
            ("/machine.slice/libpod-" + "c" * 64 + ".scope", "c" * 12),
            ("/kubepods/burstable/pod1234/" + "d" * 64, "d" * 12),
            ("/lxc.payload.web1", "web1"),
            ("/user.slice/user-0.slice/session-1.scope", None),
        ],
    )
    def test_container_of(self, path, cid):
        assert enrich.container_of(path) == cid


class TestProcessTable:
    def test_reused_pid_gets_its_own_entry(self):
        e = Enricher()
        e.enrich(event("process", "fork", 100, 50, child_pid=4000))
        e.enrich(
            event(
                "process", "exec", 110, 4000, filename="/bin/first", argv=["first", "a"]
            )
        )
        e.enrich(event("process", "exit", 200, 4000))
        e.enrich(event("process", "fork", 300, 60, child_pid=4000))
        e.enrich(
            event("process", "exec", 310, 4000, filename="/bin/second", argv=["second"])
        )
        late_first = event("file", "read", 150, 4000, path="/etc/hosts")
        now_second = event("file", "read", 320, 4000, path="/etc/hosts")
        e.enrich(late_first)
        e.enrich(now_second)
        assert (late_first["exe"], late_first["argv"]) == ("/bin/first", ["first", "a"])
        assert (now_second["exe"], now_second["argv"]) == ("/bin/second", ["second"])
        assert late_first["proc_start_ns"] == 100
        assert now_second["proc_start_ns"] == 300

    def test_depth_follows_forks(self):
        e = Enricher()
        e.procs.fork(None, 10, 1)  # the traced command
        e.enrich(event("process", "fork", 5, 10, child_pid=11))
        e.enrich(event("process", "fork", 6, 11, child_pid=12))
        leaf = event("file", "write", 7, 12, path="/tmp/x")
        e.enrich(leaf)
        assert leaf["depth"] == 2
        assert e.procs.latest(12).parent.pid == 11

    def test_child_inherits_image_until_exec(self):
        e = Enricher()
        e.enrich(
            event("process", "exec", 1, 20, filename="/bin/sh", argv=["sh", "-c", "x"])
        )
        e.enrich(event("process", "fork", 2, 20, child_pid=21))
        forked = event("file", "read", 3, 21, path="/x")
        e.enrich(forked)
        assert forked["argv"] == ["sh", "-c", "x"]

    def test_exe_is_the_loaded_file(self):
        e = Enricher()
        proc = e.procs.fork(None, 30, 1)
        e.enrich(
            event(
                "process",
                "exec",
                2,
                30,
                filename="/srv/run.sh",
                exe_path="/usr/bin/dash",
                argv=["/srv/run.sh"],
            )
        )
        assert (proc.exe, proc.argv) == ("/usr/bin/dash", ["/srv/run.sh"])

    @pytest.mark.parametrize(
        "status, code, signal_number, signal_name",
        [
            (0, 0, 0, None),
            (3 << 8, 3, 0, None),
            (9, 0, 9, "SIGKILL"),
            (0x80 | 11, 0, 11, "SIGSEGV"),
        ],
    )
    def test_exit_status(self, status, code, signal_number, signal_name):
        ev = event("process", "exit", 5, 40, exit_code=status)
        Enricher().enrich(ev)
        assert (ev["exit_status"], ev["exit_signal"]) == (code, signal_number)
        assert ev.get("exit_signal_name") == signal_name

    def test_decoded_exit_fields_are_kept(self):
        ev = event(
            "process", "exit", 5, 41, exit_code=15, exit_status=0, exit_signal=15
        )
        Enricher().enrich(ev)
        assert (ev["exit_signal"], ev["exit_signal_name"]) == (15, "SIGTERM")

    def test_snapshot_of_a_live_process(self):
        proc = enrich.snapshot_process(os.getpid())
        assert proc.exe == os.path.realpath(sys.executable)
        assert proc.cwd == os.getcwd()
        assert proc.argv[0].endswith(("python", "pytest")) or "pytest" in " ".join(
            proc.argv
        )
        assert 0 < proc.start_ns <= time.monotonic_ns()

    def test_snapshot_of_a_gone_process(self):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        assert enrich.snapshot_process(pid) is None


class TestResolution:
    def test_fd_path_from_an_earlier_event(self):
        e = Enricher()
        e.enrich(event("file", "read", 1, 999_999, fd=7, path="/etc/shadow"))
        later = event("file", "write", 2, 999_999, fd=7)
        e.enrich(later)
        assert later["fd_path"] == "/etc/shadow"

    def test_fd_path_from_proc(self, tmp_path):
        path = tmp_path / "open-file"
        with open(path, "w") as handle:
            ev = event(
                "file", "write", time.monotonic_ns(), os.getpid(), fd=handle.fileno()
            )
            Enricher().enrich(ev)
        assert ev["fd_path"] == str(path)

    def test_names_and_address(self):
        ev = event(
            "network",
            "connect",
            1,
            999_998,
            family=socket.AF_INET6,
            addr="::ffff:127.0.0.1",
            port=8000,
            fd=3,
        )
        sig = event("signal", "send", 2, 999_998, sig=15, target_pid=999_998)
        e = Enricher()
        e.enrich(ev)
        e.enrich(sig)
        assert ev["address"] == "127.0.0.1:8000"
        assert sig["signal_name"] == "SIGTERM"
        assert sig["target_comm"] == "t"

    def test_user_name(self):
        ev = event("file", "read", 1, 999_997, uid=0)
        Enricher().enrich(ev)
        assert ev["user"] == "root"

    def test_persistence_write_adds_a_system_event(self):
        out = Enricher().enrich(
            event("file", "write", 1, 999_996, path="/root/.bashrc")
        )
        assert [(x["area"], x["op"]) for x in out] == [
            ("file", "write"),
            ("system", "persist"),
        ]
        assert out[0]["persist"] == out[1]["persist"] == "shell-rc"
        assert out[1]["derived_from"] == "file/write"

    def test_rename_into_persistence_path(self):
        ev = event(
            "file", "rename", 1, 999_995, path="/tmp/x", new_path="/etc/cron.d/x"
        )
        out = Enricher().enrich(ev)
        assert out[-1]["path"] == "/etc/cron.d/x" and out[-1]["persist"] == "cron"

    def test_read_of_persistence_path_is_not_persistence(self):
        out = Enricher().enrich(event("file", "read", 1, 999_994, path="/root/.bashrc"))
        assert len(out) == 1


class TestRepeat:
    """A repeat event is named by the open event of its thread that it repeats."""

    def test_path_comes_from_the_threads_last_open_event(self):
        e = Enricher()
        e.enrich(event("file", "read", 10, 999_990, path="/etc/hosts", fd=3))
        e.enrich(event("file", "read", 11, 999_989, path="/etc/passwd", fd=3))
        rep = e.enrich(
            event("file", "repeat", 20, 999_990, fd=3, count=5, first_ns=10)
        )[0]
        assert rep["path"] == "/etc/hosts" and rep["count"] == 5

    def test_no_path_when_the_open_event_is_not_the_one_repeated(self):
        e = Enricher()
        e.enrich(event("file", "read", 10, 999_988, path="/etc/hosts", fd=3))
        rep = e.enrich(
            event("file", "repeat", 20, 999_988, fd=3, count=5, first_ns=9)
        )[0]
        # never another file's path: only the fd's, marked as such
        assert "path" not in rep and rep.get("fd_path") == "/etc/hosts"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a cgroup needs root")
def test_cgroup_id_resolves_to_its_path():
    root = enrich.cgroup2_mount()
    if root is None:
        pytest.skip("no cgroup v2 mount on this machine")
    name = f"capsule-test-{uuid.uuid4().hex[:8]}"
    Path(root, name).mkdir()
    try:
        cgroup_id = os.stat(Path(root, name)).st_ino
        assert enrich.CgroupNames()(cgroup_id) == "/" + name
    finally:
        Path(root, name).rmdir()
