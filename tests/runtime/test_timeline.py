"""The terminal timeline: exact lines, indentation, colours, and escaping of names."""

import io

import pytest
from rich.console import Console

from capsule.events.schema import FLAGS
from capsule.runtime import names
from capsule.runtime.escape import escape, json_safe
from capsule.runtime.timeline import Timeline, describe, file_console, render

T0 = 1_000_000_000


def event(area, op, **fields):
    base = {
        "ts_ns": T0 + 1_500_000,
        "pid": 42,
        "tid": 42,
        "ppid": 1,
        "uid": 0,
        "flags": 0,
        "comm": "sh",
        "area": area,
        "op": op,
        "depth": 0,
    }
    base.update(fields)
    return base


class TestEscape:
    @pytest.mark.parametrize(
        "raw, shown",
        [
            ("plain.txt", "plain.txt"),
            ("a b", "a b"),
            ("line\nforged", "line\\nforged"),
            ("cr\rback", "cr\\rback"),
            ("\x1b[31mred", "\\x1b[31mred"),
            ("bell\x07", "bell\\x07"),
            ("del\x7f", "del\\x7f"),
            ("back\\slash", "back\\\\slash"),
            ("caf\u00e9", "caf\u00e9"),
            ("\u65e5\u672c", "\u65e5\u672c"),
            ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
            ("zero\u200bwidth", "zero\\u200bwidth"),
            ("nel\u0085", "nel\\u0085"),
            ("sep\u2028x", "sep\\u2028x"),
            (b"bad\xffbyte", "bad\\xffbyte"),
            (b"caf\xc3\xa9", "caf\u00e9"),
            (b"half\xc3", "half\\xc3"),
            (
                "bad\udcfe".encode("utf-8", "surrogatepass").decode(
                    "utf-8", "surrogatepass"
                ),
                "bad\\xfe",
            ),
        ],
    )
    def test_escape(self, raw, shown):
        assert escape(raw) == shown

    def test_escaped_text_has_no_control_characters(self):
        every_byte = bytes(range(256))
        shown = escape(every_byte)
        assert shown.isprintable()
        assert "\n" not in shown and "\x1b" not in shown

    def test_json_safe_keeps_valid_text(self):
        assert json_safe("a\nb") == "a\nb"
        assert json_safe(b"ok\xff") == "ok\\xff"


class TestLines:
    def test_exec_line(self):
        ev = event("process", "exec", argv=["git", "commit", "-m", "two words"])
        assert render(ev, T0).plain == (
            "  0.001500      42 sh              process   exec         "
            "git commit -m 'two words'"
        )

    def test_child_is_indented(self):
        parent = render(event("file", "write", path="/tmp/a"), T0).plain
        child = render(event("file", "write", path="/tmp/a", depth=2), T0).plain
        assert child.index("sh") == parent.index("sh") + 4

    def test_file_and_rename(self):
        assert describe(event("file", "create", path="/tmp/new")) == "/tmp/new"
        assert describe(event("file", "rename", path="/a", new_path="/b")) == "/a -> /b"

    def test_folded_opens_show_their_count(self):
        ev = event("file", "repeat", path="/etc/hosts", count=41, fd=3, syscall=257)
        assert describe(ev) == "/etc/hosts opened 41 more times, same flags and fd"

    def test_network(self):
        ev = event(
            "network",
            "connect",
            address="127.0.0.1:8000",
            family=2,
            port=8000,
            addr=b"\x7f\0\0\1",
        )
        assert describe(ev) == "127.0.0.1:8000"

    @pytest.mark.parametrize(
        "area, op, fields, text",
        [
            ("process", "fork", {"child_pid": 43}, "child 43"),
            ("process", "exit", {"exit_code": 256, "exit_status": 1}, "code 1"),
            (
                "process",
                "exit",
                {
                    "exit_code": 9,
                    "exit_status": 0,
                    "exit_signal": 9,
                    "exit_signal_name": "SIGKILL",
                },
                "killed by SIGKILL",
            ),
            ("file", "chmod", {"path": "/tmp/x", "arg": 0o755}, "/tmp/x mode=0755"),
            ("file", "read", {"path": "/tmp/x", "syscall": 257}, "/tmp/x"),
            (
                "process",
                "exec",
                {"path": "/usr/bin/sudo", "error": 13, "error_name": "EACCES"},
                "/usr/bin/sudo = EACCES",
            ),
            (
                "system",
                "32-bit-syscall",
                {"syscall": "getpid", "abi": "32-bit"},
                "32-bit syscall blocked: getpid",
            ),
            (
                "file",
                "chmod",
                {"path": "/tmp/x", "syscall": "setxattr", "xattr": "user.k"},
                "/tmp/x xattr=user.k",
            ),
            (
                "file",
                "chmod",
                {"path": "/tmp/x", "syscall": "fremovexattr", "xattr": "a\nb"},
                "/tmp/x xattr=a\\nb",
            ),
            (
                "file",
                "chmod",
                {"path": "/tmp/x", "syscall": "lsetxattr", "xattr": None},
                "/tmp/x xattr=?",
            ),
            (
                "file",
                "delete",
                {"path": "/nope", "error": 2, "error_name": "ENOENT"},
                "/nope = ENOENT",
            ),
            (
                "network",
                "send",
                {
                    "address": "127.0.0.1:53",
                    "proto": "udp",
                    "send_len": 30,
                    "family": 2,
                },
                "udp 127.0.0.1:53 30 bytes",
            ),
            (
                "creds",
                "setuid",
                {"new_uid": 65534, "new_euid": 65534, "new_gid": 0, "new_egid": 0},
                "uid=65534 euid=65534 gid=0 egid=0",
            ),
            (
                "memory",
                "wx",
                {"path": "", "prot_text": "rwx", "length": 4096},
                "prot=rwx len=4096",
            ),
            ("ipc", "pipe", {"fd0": 3, "fd1": 4}, "fds 3,4"),
            (
                "ipc",
                "unix-connect",
                {"family": 1, "proto": "tcp", "address": "/run/x.sock"},
                "unix /run/x.sock",
            ),
            (
                "creds",
                "capset",
                {
                    "new_uid": 0,
                    "new_euid": 0,
                    "new_gid": 0,
                    "new_egid": 0,
                    "caps": names.capability_names((1 << 41) - 1),
                },
                "uid=0 euid=0 gid=0 egid=0 caps=all",
            ),
            (
                "creds",
                "capset",
                {
                    "new_uid": 0,
                    "new_euid": 0,
                    "new_gid": 0,
                    "new_egid": 0,
                    "caps": ["CAP_NET_RAW"],
                },
                "uid=0 euid=0 gid=0 egid=0 caps=CAP_NET_RAW",
            ),
            (
                "device",
                "open",
                {"path": "/dev/net/tun", "device_class": "tun", "device": "10:200"},
                "/dev/net/tun (tun 10:200)",
            ),
            (
                "device",
                "ioctl",
                {
                    "path": "/dev/net/tun",
                    "device_class": "tun",
                    "device": "10:200",
                    "cmd": 0x400454CA,
                    "ioctl_name": "TUNSETIFF",
                },
                "/dev/net/tun (tun 10:200) TUNSETIFF",
            ),
            (
                "system",
                "mount",
                {"source": "none", "path": "/mnt", "fstype": "tmpfs"},
                "none on /mnt type tmpfs",
            ),
            ("namespace", "unshare", {"namespaces": ["mnt", "net"]}, "mnt,net"),
            (
                "namespace",
                "setrlimit",
                {"resource_name": "RLIMIT_NOFILE", "rlim_cur": 64, "rlim_max": 64},
                "RLIMIT_NOFILE cur=64 max=64",
            ),
        ],
    )
    def test_details(self, area, op, fields, text):
        assert describe(event(area, op, **fields)) == text

    def test_signal(self):
        ev = event(
            "signal",
            "send",
            sig=10,
            signal_name="SIGUSR1",
            target_pid=77,
            target_comm="sleep",
        )
        assert describe(ev) == "SIGUSR1 -> 77 (sleep)"

    def test_persist(self):
        ev = event(
            "system",
            "persist",
            path="/root/.bashrc",
            persist="shell-rc",
            derived_from="file/write",
        )
        assert render(ev, T0).plain.endswith(
            "system    persist      /root/.bashrc (shell-rc) (from file/write)"
        )

    def test_verdict_and_rule(self):
        ev = event(
            "file", "write", path="/etc/passwd", verdict="deny", rule="agent.cap:12"
        )
        line = render(ev, T0)
        assert line.plain.endswith("/etc/passwd [DENY] agent.cap:12")
        styles = {str(span.style) for span in line.spans}
        assert "bold red" in styles

    def test_area_colour(self):
        line = render(event("network", "connect", address="127.0.0.1:1"), T0)
        assert any(str(span.style) == "blue" for span in line.spans)

    def test_truncated_is_marked(self):
        ev = event("file", "read", path="/very/long", flags=FLAGS["TRUNCATED"])
        assert render(ev, T0).plain.endswith("/very/long [truncated...]")


class TestForgery:
    """A traced program chooses names; none of them may forge or restyle a line."""

    @pytest.mark.parametrize(
        "name",
        [
            "x\n  0.000001      1 init            process   exec         /bin/evil",
            "x\r  0.000001      1 init",
            "\x1b[2K\x1b[1Gfake",
            "[bold red]DENY[/]",
            ":skull: emoji",
        ],
    )
    def test_one_event_is_one_line(self, name):
        buffer = io.StringIO()
        out = Timeline(file_console(buffer), t0_ns=T0)
        out.write(event("file", "create", path="/tmp/" + name, comm=name[:15]))
        text = buffer.getvalue()
        assert text.count("\n") == 1 and "\r" not in text and "\x1b" not in text

    def test_markup_in_names_is_literal(self):
        buffer = io.StringIO()
        console = Console(
            file=buffer, force_terminal=True, color_system="standard", width=300
        )
        Timeline(console, t0_ns=T0).write(
            event("file", "create", path="/tmp/[red]x[/]")
        )
        assert "/tmp/[red]x[/]" in buffer.getvalue()

    def test_colours_on_a_terminal(self):
        buffer = io.StringIO()
        console = Console(file=buffer, force_terminal=True, color_system="standard")
        name = "/tmp/\x1b[31mred"
        Timeline(console, t0_ns=T0).write(event("network", "connect", address=name))
        text = buffer.getvalue()
        assert "\x1b[34mnetwork" in text  # blue, the network colour
        assert "\\x1b[31mred" in text and text.count("\x1b[31m") == 0
        assert text.count("\n") == 1

    def test_argv_with_newline(self):
        ev = event("process", "exec", argv=["sh", "-c", "echo a\necho b"])
        assert describe(ev) == "sh -c 'echo a\\necho b'"
