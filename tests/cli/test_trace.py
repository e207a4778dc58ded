"""`capsule trace` and `capsule timeline`, run for real: real kernel, real BPF.

Each test traces a real command and asserts events that only the kernel could have
reported: pids, parentage, paths and flags are checked against what the command did.
"""

import json
import os
import subprocess

import pytest
from trace_helpers import REPO, capsule, needs_root, summary_json, trace

from capsule.events.schema import FLAGS
from capsule.runtime.store import RunReader

pytestmark = [pytest.mark.bpf, needs_root]

AREAS = {
    "process",
    "network",
    "file",
    "creds",
    "memory",
    "ipc",
    "device",
    "system",
    "namespace",
    "signal",
}


@pytest.fixture(scope="module")
def shell_run(tmp_path_factory):
    """sh writes a file, runs two children, and exits 3."""
    base = tmp_path_factory.mktemp("shell")
    script = (
        f"echo hi > {base}/made.txt; /bin/true; cat /etc/hostname >/dev/null; exit 3"
    )
    return trace(base / "run", "sh", "-c", script, options=["--json"]), base


class TestShellRun:
    def test_exit_code_is_the_commands(self, shell_run):
        run, _ = shell_run
        assert run.returncode == 3, run.stderr

    def test_json_summary_matches_the_store(self, shell_run):
        run, _ = shell_run
        printed = summary_json(run.stdout)
        assert printed["exit_code"] == 3
        assert printed == run.summary
        assert printed["drops"] == 0
        assert printed["events"] == len(run.events)
        assert printed["per_area"]["process"] >= 5

    def test_root_exec_and_file_create(self, shell_run):
        run, base = shell_run
        root = run.exec_of("sh")
        assert root["depth"] == 0
        assert root["argv"][:2] == ["sh", "-c"]
        assert root["exe"] in ("/usr/bin/dash", "/bin/dash")
        created = run.where("file", "create", path=f"{base}/made.txt")
        assert created and created[0]["pid"] == root["pid"]
        assert (base / "made.txt").read_text() == "hi\n"

    def test_children_have_the_shell_as_parent(self, shell_run):
        run, _ = shell_run
        root = run.exec_of("sh")
        forks = {e["child_pid"] for e in run.where("process", "fork", pid=root["pid"])}
        for program in ("/bin/true", "cat"):
            child = run.exec_of(program)
            assert child["ppid"] == root["pid"]
            assert child["pid"] in forks
            assert child["depth"] == 1
            assert child["proc_start_ns"] > root["proc_start_ns"]
        cat = run.exec_of("cat")
        reads = run.where("file", "read", pid=cat["pid"], path="/etc/hostname")
        assert reads and reads[0]["argv"] == ["cat", "/etc/hostname"]

    def test_every_process_exits(self, shell_run):
        run, _ = shell_run
        pids = {e["pid"] for e in run.where("process", "exec")}
        exited = {e["pid"] for e in run.where("process", "exit")}
        assert pids <= exited
        root = run.exec_of("sh")
        (root_exit,) = run.where("process", "exit", pid=root["pid"])
        assert root_exit["exit_status"] == 3

    def test_files_written(self, shell_run):
        run, _ = shell_run
        lines = (run.directory / "events.jsonl").read_text().splitlines()
        assert len(lines) == len(run.events)
        assert json.loads(lines[0])["seq"] == 1


class TestExitCodes:
    @pytest.mark.parametrize(
        "command, code, message",
        [
            (
                ["no-such-command-capsule"],
                127,
                "no-such-command-capsule: command not found",
            ),
            (["{tmp}/data.txt"], 126, "{tmp}/data.txt: Permission denied"),
            (["sh", "-c", "kill -KILL $$"], 137, None),
        ],
    )
    def test_as_a_shell(self, tmp_path, command, code, message):
        (tmp_path / "data.txt").write_text("not a program\n")  # mode 0644
        command = [arg.format(tmp=tmp_path) for arg in command]
        message = message and message.format(tmp=tmp_path)
        run = trace(tmp_path / "run", *command)
        assert run.returncode == code
        if message:
            assert f"capsule: {message}" in run.stderr


REUSE_PID = """
import os, sys
def start(argv):
    pid = os.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    os.waitpid(pid, 0)
    return pid
first = start(["/bin/cat", "/etc/hostname"])
for _ in range(50):  # other processes on the machine may take the pid first
    with open("/proc/sys/kernel/ns_last_pid", "w") as last:
        last.write(str(first - 1))
    if start(["/bin/ls", "/"]) == first:
        print(first)
        sys.exit(0)
sys.exit(1)
"""


class TestPidReuse:
    def test_a_reused_pid_is_two_processes(self, tmp_path):
        run = trace(tmp_path / "run", "/usr/bin/python3", "-c", REUSE_PID)
        if run.returncode == 1:
            pytest.skip("SKIPPED: could not get the same pid twice on a busy machine")
        assert run.returncode == 0, run.stderr
        pid = int(run.stdout.split()[-1])  # after the hostname that cat printed
        execs = run.where("process", "exec", pid=pid)
        assert [e["argv"][0] for e in execs][:1] == ["/bin/cat"]
        assert execs[-1]["argv"] == ["/bin/ls", "/"]
        assert execs[0]["proc_start_ns"] < execs[-1]["proc_start_ns"]
        reads = run.where("file", "read", pid=pid, path="/etc/hostname")
        assert reads and reads[0]["argv"] == ["/bin/cat", "/etc/hostname"]
        assert reads[0]["proc_start_ns"] == execs[0]["proc_start_ns"]
        exits = run.where("process", "exit", pid=pid)
        assert [e["proc_start_ns"] for e in exits] == [
            execs[0]["proc_start_ns"],
            execs[-1]["proc_start_ns"],
        ]


def test_killed_process_exit_event(tmp_path):
    run = trace(tmp_path / "run", "sh", "-c", "kill -KILL $$")
    assert run.returncode == 137
    (gone,) = run.where("process", "exit", pid=run.exec_of("sh")["pid"])
    assert (gone["exit_signal"], gone["exit_signal_name"]) == (9, "SIGKILL")
    shown = capsule("timeline", str(run.directory), "--area", "process").stdout
    assert "killed by SIGKILL" in shown


class TestUser:
    def test_command_runs_as_the_user(self, tmp_path):
        run = trace(
            tmp_path / "run",
            "sh",
            "-c",
            "id -u; exec /bin/true",
            options=["--user", "nobody"],
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.split()[0] == "65534"
        true_exec = run.exec_of("/bin/true")
        assert (true_exec["uid"], true_exec["user"]) == (65534, "nobody")

    def test_unknown_user(self, tmp_path):
        run = trace(tmp_path / "run", "true", options=["--user", "no-such-user-x"])
        assert run.returncode == 125
        assert run.stderr.strip().splitlines()[0] == (
            "capsule: error: failed to find user 'no-such-user-x': no such user"
        )


class TestCgroup:
    def test_command_runs_in_the_cgroup(self, tmp_path):
        from capsule.runtime.enrich import cgroup2_mount

        cgroup = cgroup2_mount() / f"capsule-test-{os.getpid()}"
        cgroup.mkdir()
        try:
            run = trace(
                tmp_path / "run",
                "sh",
                "-c",
                "cat /proc/self/cgroup",
                options=["--cgroup", str(cgroup)],
            )
            assert run.returncode == 0, run.stderr
            assert f"0::/{cgroup.name}" in run.stdout
            cat = run.exec_of("cat")
            assert cat["cgroup"] == f"/{cgroup.name}"
            assert cat["cgroup_id"] == os.stat(cgroup).st_ino
        finally:
            cgroup.rmdir()


class TestNames:
    def test_hostile_file_name_stays_on_one_line(self, tmp_path):
        name = "evil\n  0.000000      1 init            process   exec  x\x1b[31m"
        script = 'import sys; open(sys.argv[1], "w").close()'
        target = tmp_path / name
        run = trace(tmp_path / "run", "/usr/bin/python3", "-c", script, str(target))
        assert run.returncode == 0, run.stderr
        assert run.where("file", "create", path=str(target))
        shown = capsule("timeline", str(tmp_path / "run"), "--area", "file")
        forged = [line for line in shown.stdout.splitlines() if "evil" in line]
        assert len(forged) >= 1
        assert all("\\n" in line and "\x1b" not in line for line in forged)
        assert not any(
            line.lstrip().startswith("0.000000") for line in shown.stdout.splitlines()
        )

    def test_invalid_utf8_name_is_escaped(self, tmp_path):
        target = os.fsencode(tmp_path) + b"/inv\xffalid\xc3"
        script = "import sys, os; open(os.fsencode(sys.argv[1]), 'w').close()"
        run = trace(
            tmp_path / "run", "/usr/bin/python3", "-c", script, os.fsdecode(target)
        )
        assert run.returncode == 0, run.stderr
        created = [e for e in run.where("file", "create") if "inv" in e["path"]]
        assert len(created) == 1
        shown = capsule("timeline", str(tmp_path / "run"), "--area", "file")
        lines = [line for line in shown.stdout.splitlines() if "inv" in line]
        assert len(lines) == 1 and "xff" in lines[0] and "xc3" in lines[0]
        assert "\ufffd" not in lines[0]
        jsonl = (tmp_path / "run" / "events.jsonl").read_bytes()
        jsonl.decode("utf-8")  # the store stays valid UTF-8

    def test_long_path_is_flagged_truncated(self, tmp_path):
        deep = tmp_path / ("d" * 200) / ("e" * 200)
        deep.mkdir(parents=True)
        target = deep / ("f" * 200)
        run = trace(tmp_path / "run", "sh", "-c", f"echo > {target}")
        created = [e for e in run.where("file", "create") if "fff" in e.get("path", "")]
        assert created and created[0]["flags"] & FLAGS["TRUNCATED"]
        assert run.summary["truncated"] >= 1
        shown = capsule("timeline", str(tmp_path / "run"), "--area", "file")
        assert "[truncated...]" in shown.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with a gap in time: cat, a pause, then ls."""
    base = tmp_path_factory.mktemp("timeline")
    return trace(base / "run", "sh", "-c", "cat /etc/hostname; sleep 0.3; ls /")


class TestTimeline:
    def test_area_filter(self, run):
        out = capsule(
            "timeline", str(run.directory), "--area", "process", "--format", "jsonl"
        )
        events = [json.loads(line) for line in out.stdout.splitlines()]
        assert events and {e["area"] for e in events} == {"process"}

    def test_pid_filter(self, run):
        cat = run.exec_of("cat")
        out = capsule(
            "timeline",
            str(run.directory / "run.db"),
            "--pid",
            str(cat["pid"]),
            "--format",
            "jsonl",
        )
        events = [json.loads(line) for line in out.stdout.splitlines()]
        assert events and {e["pid"] for e in events} == {cat["pid"]}

    def test_tree_filter(self, run):
        root = run.exec_of("sh")
        out = capsule(
            "timeline",
            str(run.directory),
            "--pid",
            str(root["pid"]),
            "--tree",
            "--area",
            "process",
            "--format",
            "jsonl",
        )
        pids = {json.loads(line)["pid"] for line in out.stdout.splitlines()}
        assert pids == {
            root["pid"],
            run.exec_of("cat")["pid"],
            run.exec_of("ls")["pid"],
            run.exec_of("sleep")["pid"],
        }

    def test_time_filter(self, run):
        ls_exec = run.exec_of("ls")
        t0 = json.loads(
            capsule(
                "timeline", str(run.directory), "--format", "jsonl"
            ).stdout.splitlines()[0]
        )["ts_ns"]
        cut = (ls_exec["ts_ns"] - t0) / 1e9 - 0.1  # between cat and ls
        early = capsule(
            "timeline", str(run.directory), "--until", f"{cut}s", "--format", "jsonl"
        ).stdout
        late = capsule(
            "timeline",
            str(run.directory),
            "--since",
            f"{cut * 1000}ms",
            "--format",
            "jsonl",
        ).stdout
        assert '"/etc/hostname"' in early and '"ls"' not in early
        assert '"ls"' in late and '"/etc/hostname"' not in late

    def test_text_lines(self, run):
        out = capsule("timeline", str(run.directory))
        lines = out.stdout.splitlines()
        assert len(lines) == len(run.events)
        assert any(" sh " in line and "process   exec" in line for line in lines)

    @pytest.mark.parametrize(
        "args, message",
        [
            (
                ["--area", "files"],
                "capsule: error: failed to filter by area 'files': unknown area",
            ),
            (["--since", "soon"], "capsule: error: failed to parse --since 'soon'"),
            (["--format", "xml"], "capsule: error: failed to use format 'xml'"),
        ],
    )
    def test_bad_options(self, run, args, message):
        out = capsule("timeline", str(run.directory), *args)
        assert out.returncode == 64
        assert out.stderr.startswith(message)
        assert "Traceback" not in out.stderr

    @pytest.mark.parametrize("value", ["-5", "0"])
    def test_bad_pid_is_a_usage_error(self, run, value):
        out = capsule("timeline", str(run.directory), "--pid", value)
        assert out.returncode == 64
        assert out.stderr.splitlines()[0] == (
            f"capsule: error: failed to filter by --pid {value}: expected a process "
            "id above 0"
        )
        assert out.stdout == ""

    def test_missing_run(self, tmp_path):
        out = capsule("timeline", str(tmp_path / "none.db"))
        assert out.returncode == 125
        assert out.stderr.splitlines()[0] == (
            f"capsule: error: failed to open run {tmp_path / 'none.db'}: no such file"
        )


class TestDrops:
    """Nothing is lost silently: what the ring could not hold is counted and shown."""

    def test_overflow_is_counted_everywhere(self, tmp_path):
        target = tmp_path / "target"
        target.write_text("x")
        loop = (
            f"import os\nfor _ in range(50000): os.close(os.open({str(target)!r}, "
            "os.O_RDONLY))"
        )
        run = trace(
            tmp_path / "run",
            "/usr/bin/python3",
            "-c",
            loop,
            # every open its own event (folded, the loop makes a few dozen)
            options=["--buffer-mb", "1", "--json", "--no-fold"],
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        summary = summary_json(run.stdout)
        taken = [e for e in run.events if e.get("path") == str(target)]
        assert summary["drops"] > 0
        assert len(taken) + summary["drops"] >= 50000  # every open accounted for
        assert RunReader(run.directory).drops() == summary["drops"]
        assert f"capsule: {summary['drops']} events dropped by the kernel" in run.stderr
        assert "--buffer-mb 256" in run.stderr
        shown = capsule("timeline", str(run.directory), "--area", "process")
        assert "lost" in shown.stderr and str(summary["drops"]) in shown.stderr

    @pytest.mark.parametrize("size", ["0", "3", "8192"])
    def test_bad_buffer_size(self, tmp_path, size):
        run = trace(tmp_path / "run", "true", options=["--buffer-mb", size])
        assert run.returncode == 125
        assert run.stderr.startswith(
            f"capsule: error: failed to size the ring buffer: --buffer-mb {size} "
        )


class TestDemo:
    def test_demo_touches_all_ten_areas(self, tmp_path):
        run = trace(tmp_path / "demo", str(REPO / "examples/demo/agent.sh"))
        assert run.returncode == 0, run.stderr
        assert set(run.summary["per_area"]) == AREAS
        assert run.summary["drops"] == 0
        persist = run.where("system", "persist", path="/etc/cron.d/capsule-demo")
        assert persist and persist[0]["persist"] == "cron"
        assert run.where("device", "open", device_class="tun")
        (listen,) = run.where("network", "listen", family=2)
        (connect,) = run.where("network", "connect", address=listen["address"])
        assert listen["address"].startswith("127.0.0.1:")
        assert connect["pid"] == listen["pid"]  # one python process does both ends
        signal = run.where("signal", "send", signal_name="SIGTERM")
        assert signal and signal[0]["target_comm"] == "sleep"


class TestMissingPrerequisites:
    def test_without_root(self, tmp_path):
        tmp_path.chmod(0o777)
        out = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                *capsule_argv(),
                "trace",
                "-o",
                str(tmp_path / "r"),
                "--",
                "true",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 125
        assert out.stderr.splitlines() == [
            "capsule: error: failed to start tracing: capsule trace needs root",
            "capsule: hint: run it as root, e.g. `sudo capsule trace -- CMD`",
        ]

    def test_without_clang(self, tmp_path):
        env = dict(os.environ, PATH="/nonexistent")
        run = trace(tmp_path / "run", "/bin/true", env=env)
        assert run.returncode == 125
        assert run.stderr.splitlines()[0] == (
            "capsule: error: failed to start tracing: clang is not installed"
        )

    def test_without_btf(self, monkeypatch, tmp_path):
        from capsule.errors import CapsuleError
        from capsule.runtime import session

        monkeypatch.setattr(session, "BTF_PATH", tmp_path / "no-btf")
        with pytest.raises(CapsuleError, match="kernel BTF .* is missing") as err:
            session.preflight()
        assert "CONFIG_DEBUG_INFO_BTF" in err.value.hint


def capsule_argv():
    from trace_helpers import CAPSULE

    return CAPSULE
