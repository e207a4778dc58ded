"""The tracer on the real kernel: each area's events, paths, addresses, parentage."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from tracer_helpers import of_kind, one, require_root, run_traced

pytestmark = pytest.mark.bpf
PY = sys.executable
CGROUP2 = Path("/sys/fs/cgroup/unified")


@pytest.fixture(scope="module")
def tracer():
    require_root()
    from capsule.runtime.tracer import Tracer

    with Tracer() as t:
        t.start()
        yield t


def py(tracer, code: str, **kw) -> list[dict]:
    return run_traced(tracer, [PY, "-S", "-c", textwrap.dedent(code)], **kw)


# -- 1 process -------------------------------------------------------------------------


def test_exec_fork_exit_and_parentage(tracer, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n/bin/true first\nexit 7\n")
    script.chmod(0o755)
    events = run_traced(tracer, ["/bin/sh", "-c", f"cd {tmp_path} && ./job.sh; exit 3"])

    root = one(events, "proc_exec", filename="/bin/sh")
    assert root["argv"][:2] == ["/bin/sh", "-c"] and root["exe_path"] == "/usr/bin/dash"
    job = one(events, "proc_exec", filename=str(script))  # relative ./job.sh, resolved
    assert job["script"] == str(script) and job["interpreter"] == "/bin/sh"
    assert job["exe_path"] == "/usr/bin/dash" and job["ppid"] == root["pid"]
    true = one(events, "proc_exec", filename="/bin/true")
    assert true["argv"] == ["/bin/true", "first"] and true["ppid"] == job["pid"]
    fork = one(events, "proc_fork", child_pid=job["pid"])
    assert fork["pid"] == root["pid"]
    assert one(events, "proc_exit", pid=job["pid"])["exit_status"] == 7
    assert one(events, "proc_exit", pid=root["pid"])["exit_status"] == 3


def test_threads_are_in_scope_with_their_tid(tracer, tmp_path):
    target = tmp_path / "from-thread"
    events = py(
        tracer,
        f"""
        import threading
        t = threading.Thread(target=lambda: open({str(target)!r}, "w").close())
        t.start(); t.join()
    """,
    )
    created = one(events, "file_create", path=str(target))
    assert created["tid"] != created["pid"]
    assert not of_kind(events, "proc_fork")  # a thread is not a new process


def test_setsid_and_killed_exit(tracer):
    events = py(
        tracer,
        """
        import os, signal
        pid = os.fork()
        if pid == 0:
            os.setsid(); os.kill(os.getpid(), signal.SIGKILL)
        os.waitpid(pid, 0)
    """,
    )
    setsid = one(events, "proc_setsid")
    assert setsid["ret"] == setsid["pid"]  # the new session id is the caller's pid
    assert one(events, "proc_exit", pid=setsid["pid"])["exit_signal"] == 9


# -- 2 network -------------------------------------------------------------------------


def test_tcp_ipv4_connect_listen_accept(tracer):
    events = py(
        tracer,
        """
        import socket
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
        cli = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        print(srv.getsockname()[1], cli.getsockname()[1])
    """,
    )
    listen = one(events, "net_listen")
    port = listen["port"]
    assert listen["addr"] == "127.0.0.1" and listen["proto"] == "tcp"
    bind = one(events, "net_bind", addr="127.0.0.1")
    assert bind["port"] == 0 and bind["family"] == socket.AF_INET  # as asked: any port
    connect = one(events, "net_connect", port=port)
    assert connect["addr"] == "127.0.0.1" and connect["ret"] == 0
    accept = one(events, "net_accept")
    assert accept["addr"] == "127.0.0.1" and accept["port"] not in (0, port)


def test_udp_ipv6_and_ipv4_mapped(tracer):
    events = py(
        tracer,
        """
        import socket
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"x", ("127.0.0.1", 9))
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s6.sendto(b"x", ("::1", 9))
        m = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try: m.connect(("::ffff:127.0.0.1", 9))
        except OSError: pass
    """,
    )
    send4 = one(events, "net_send", addr="127.0.0.1", port=9)
    assert send4["proto"] == "udp" and send4["send_len"] == 1
    send6 = one(events, "net_send", addr="::1", port=9)
    assert send6["family"] == socket.AF_INET6
    mapped = one(events, "net_connect", port=9)
    assert mapped["family"] == socket.AF_INET and mapped["addr"] == "127.0.0.1"
    assert mapped["proto"] == "tcp" and mapped["error"] == 111  # ECONNREFUSED


def test_unix_sockets_by_path_and_abstract_name(tracer, tmp_path):
    path = tmp_path / "s.sock"
    name = f"capsule-test-{uuid.uuid4().hex[:8]}"
    events = py(
        tracer,
        f"""
        import socket
        srv = socket.socket(socket.AF_UNIX); srv.bind({str(path)!r}); srv.listen()
        c = socket.socket(socket.AF_UNIX); c.connect({str(path)!r})
        a = socket.socket(socket.AF_UNIX); a.bind("\\0{name}"); a.listen()
        b = socket.socket(socket.AF_UNIX); b.connect("\\0{name}")
    """,
    )
    assert one(events, "net_bind", addr=str(path))["family"] == socket.AF_UNIX
    assert one(events, "ipc_unix_connect", addr=str(path))["ret"] == 0
    assert one(events, "ipc_unix_connect", addr="@" + name)["ret"] == 0
    assert one(events, "net_listen", addr="@" + name)


# -- 3 file ----------------------------------------------------------------------------


def test_dirfd_and_cwd_relative_opens_show_absolute_paths(tracer, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "old.txt").write_text("x")
    events = py(
        tracer,
        f"""
        import os
        d = os.open({str(tmp_path)!r}, os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open("sub/new.txt", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=d)
        os.chdir({str(tmp_path / "sub")!r})
        os.close(os.open("../sub/./old.txt", os.O_RDONLY))
        os.close(os.open("old.txt", os.O_WRONLY | os.O_TRUNC))
        try: os.open("missing/x", os.O_RDONLY, dir_fd=d)
        except OSError: pass
    """,
    )
    assert one(events, "file_create", path=f"{tmp_path}/sub/new.txt")["ret"] >= 0
    assert one(events, "file_read", path=f"{tmp_path}/sub/old.txt")["fd"] >= 0
    assert one(events, "file_write", path=f"{tmp_path}/sub/old.txt")
    assert one(events, "file_read", path=f"{tmp_path}/missing/x")["error"] == 2


def test_name_based_file_operations(tracer, tmp_path):
    events = py(
        tracer,
        f"""
        import os
        os.chdir({str(tmp_path)!r})
        os.mkdir("d"); open("d/f", "w").close()
        os.chmod("d/f", 0o640); os.chown("d/f", 1, 2); os.truncate("d/f", 0)
        os.rename("d/f", "g"); os.link("g", "h"); os.symlink("g", "d/s")
        os.unlink("h"); os.unlink("d/s"); os.rmdir("d")
        fd = os.open("g", os.O_RDWR); os.ftruncate(fd, 3); os.fchmod(fd, 0o600)
    """,
    )
    t = str(tmp_path)
    assert one(events, "file_mkdir", path=f"{t}/d")["arg"] == 0o777
    assert one(events, "file_chmod", path=f"{t}/d/f")["arg"] == 0o640
    chown = one(events, "file_chown", path=f"{t}/d/f")
    assert (chown["owner_uid"], chown["owner_gid"]) == (1, 2)
    assert one(events, "file_truncate", path=f"{t}/d/f")["ret"] == 0
    assert one(events, "file_rename", path=f"{t}/d/f", new_path=f"{t}/g")["ret"] == 0
    assert one(events, "file_link", path=f"{t}/g", new_path=f"{t}/h")
    assert one(events, "file_symlink", path="g", new_path=f"{t}/d/s")
    assert one(events, "file_delete", path=f"{t}/h")
    assert one(events, "file_rmdir", path=f"{t}/d")["ret"] == 0
    assert one(events, "file_truncate", path=f"{t}/g")["arg"] == 3  # by fd
    assert one(events, "file_chmod", path=f"{t}/g")["arg"] == 0o600


def test_long_path_is_flagged_truncated(tracer, tmp_path):
    from capsule.events.schema import flag_names

    deep = tmp_path
    for i in range(12):
        deep = deep / (f"{i:02d}" + "d" * 28)
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    events = py(
        tracer,
        f"import os; open({str(deep / 'f')!r}).close(); os.chdir({str(deep)!r}); "
        "os.mkdir('sub')",
    )
    opened = [e for e in of_kind(events, "file_read") if e["path"].endswith("/f")]
    assert opened and "TRUNCATED" in flag_names(opened[0]["flags"])
    # the tail is kept behind "...", so a cut path never looks complete
    assert opened[0]["path"].startswith(".../") and len(opened[0]["path"]) <= 255
    assert str(deep / "f").endswith(opened[0]["path"][3:])
    mkdir = one(events, "file_mkdir")
    assert "TRUNCATED" in flag_names(mkdir["flags"])
    assert mkdir["path"].startswith(".../") and mkdir["path"].endswith(
        deep.name + "/sub"
    )


# -- 4 credentials ---------------------------------------------------------------------


def test_setuid_setgid_capset(tracer):
    events = py(
        tracer,
        """
        import ctypes, os
        os.setgid(0); os.setresuid(0, 0, 0)
        libc = ctypes.CDLL(None, use_errno=True)
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        libc.capget(hdr, data); data[0] = 0; libc.capset(hdr, data)
    """,
    )
    assert one(events, "cred_setgid", arg0=0)["new_egid"] == 0
    assert one(events, "cred_setuid", arg0=0, arg1=0, arg2=0)["ret"] == 0
    capset = one(events, "cred_capset")
    assert capset["ret"] == 0 and capset["cap_effective"] & 0xFFFFFFFF == 0


def test_setuid_binary_exec_changes_creds(tracer, tmp_path):
    exe = tmp_path / "id-suid"
    shutil.copy("/usr/bin/id", exe)
    os.chown(exe, 65534, 65534)
    os.chmod(exe, 0o4755)  # root running it becomes euid 65534
    events = run_traced(tracer, [str(exe)])
    creds = one(events, "cred_setid_exec")
    assert creds["new_euid"] == 65534 and creds["new_uid"] == 0


# -- 5 memory --------------------------------------------------------------------------


def test_wx_memfd_fileless_exec_module_and_bpf(tracer):
    events = py(
        tracer,
        """
        import ctypes, mmap, os
        m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(313, os.open("/dev/null", os.O_RDONLY), b"", 0)   # finit_module
        libc.syscall(321, 5, None, 0)  # bpf(BPF_PROG_LOAD)
        fd = os.memfd_create("capsule-mem")
        os.write(fd, open("/bin/true", "rb").read())
        os.execve(fd, ["true"], {})
    """,
    )
    wx = one(events, "mem_wx")
    assert wx["length"] == 4096 and wx["prot"] == 7 and wx["addr"] != 0
    memfd = one(events, "mem_memfd")
    assert memfd["path"] == "capsule-mem" and memfd["fd"] == memfd["ret"] >= 0
    assert one(events, "mem_module_load")["path"] == "/dev/null"
    assert one(events, "mem_bpf", prot=5)["error"] != 0
    fileless = one(events, "mem_fileless_exec")
    assert "capsule-mem" in fileless["path"]


def test_exec_of_a_deleted_file_is_fileless(tracer, tmp_path):
    exe = tmp_path / "gone"
    shutil.copy("/bin/true", exe)
    events = py(
        tracer,
        f"""
        import os
        fd = os.open({str(exe)!r}, os.O_RDONLY)
        os.unlink({str(exe)!r})
        os.execve(fd, ["gone"], {{}})
    """,
    )
    assert one(events, "mem_fileless_exec")["path"] == str(exe)
    assert one(events, "proc_exec", exe_path=str(exe))


# -- 6 IPC -----------------------------------------------------------------------------


def test_pipes_sysv_posix_ptrace_and_vm_write(tracer):
    events = py(
        tracer,
        """
        import ctypes, os, signal, time
        libc = ctypes.CDLL(None, use_errno=True)
        r, w = os.pipe(); print(r, w, flush=True)
        libc.shmget(0, 4096, 0o1600); libc.msgget(0, 0o1600); libc.semget(0, 1, 0o1600)
        libc.mq_open(b"/capsule-test-mq", os.O_RDONLY)
        pid = os.fork()
        if pid == 0:
            time.sleep(2); os._exit(0)
        libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
        os.waitpid(pid, 0); libc.ptrace(17, pid, None, 0)
        buf = ctypes.create_string_buffer(8)
        iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
        libc.process_vm_writev(os.getpid(), iov, 1, iov, 1, 0)
    """,
    )
    pipe = one(events, "ipc_pipe")
    assert pipe["fd0"] >= 0 and pipe["fd1"] == pipe["fd0"] + 1
    assert one(events, "ipc_shm")["id"] >= 0
    assert one(events, "ipc_msgq", syscall=68)["id"] >= 0
    assert one(events, "ipc_sem")["id"] >= 0
    assert one(events, "ipc_msgq", name="capsule-test-mq")  # glibc drops the leading /
    child = one(events, "proc_fork")["child_pid"]
    assert one(events, "ipc_ptrace", request=16)["target_pid"] == child
    vm = one(events, "ipc_vm_write")
    assert vm["target_pid"] == vm["pid"] and vm["ret"] == 8


# -- 7 devices -------------------------------------------------------------------------


def test_device_open_has_major_minor(tracer):
    events = py(
        tracer, "open('/dev/null', 'w').close(); open('/dev/zero', 'rb').close()"
    )
    null = one(events, "dev_open", path="/dev/null")
    assert (null["major"], null["minor"]) == (1, 3) and stat.S_ISCHR(null["mode"])
    assert one(events, "dev_open", path="/dev/zero")["minor"] == 5


def test_device_ioctl_names_device_and_command(tracer):
    events = py(
        tracer,
        """
        import fcntl, os, termios
        fd = os.open("/dev/null", os.O_RDONLY)
        try: fcntl.ioctl(fd, termios.TCGETS, bytes(64))
        except OSError: pass
        r, w = os.pipe()
        try: fcntl.ioctl(r, termios.FIONREAD, bytes(4))
        except OSError: pass
    """,
    )
    ioctl = one(events, "dev_ioctl", path="/dev/null")
    assert ioctl["cmd"] == 0x5401 and (ioctl["major"], ioctl["minor"]) == (1, 3)
    assert ioctl["error"] == 25  # ENOTTY
    assert not of_kind(events, "dev_ioctl", cmd=0x541B)  # FIONREAD on a pipe: no event


# -- 8 system --------------------------------------------------------------------------


def test_mount_umount_chroot_pivot_root(tracer, tmp_path):
    (tmp_path / "m").mkdir()
    events = py(
        tracer,
        f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(0x20000)                       # CLONE_NEWNS: keep the host clean
        libc.mount(b"none", b"/", None, 0x40000 | 0x4000, None)   # MS_PRIVATE|MS_REC
        os.chdir({str(tmp_path)!r})
        libc.mount(b"capsule", b"m", b"tmpfs", 0, None)
        libc.syscall(155, b"m", b"m/old")           # pivot_root: fails, still seen
        libc.umount2(b"m", 0)
        pid = os.fork()
        if pid == 0:
            os.chroot("m"); os._exit(0)
        os.waitpid(pid, 0)
    """,
    )
    t = str(tmp_path)
    mount = one(events, "sys_mount", path=f"{t}/m")
    assert (
        mount["fstype"] == "tmpfs"
        and mount["source"] == "capsule"
        and mount["ret"] == 0
    )
    assert one(events, "sys_pivot_root", path=f"{t}/m", new_path=f"{t}/m/old")
    assert one(events, "sys_umount", path=f"{t}/m")["ret"] == 0
    assert one(events, "sys_chroot", path=f"{t}/m")["ret"] == 0


# -- 9 namespaces ----------------------------------------------------------------------

CLONE_C = r"""
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
static char stack[65536];
static int child(void *arg) { return 0; }
int main(void)
{
	int pid = clone(child, stack + sizeof(stack), CLONE_NEWUTS | SIGCHLD, 0);
	return pid < 0 || waitpid(pid, 0, 0) < 0;
}
"""


def test_unshare_setns_clone_setrlimit_cgroup_move(tracer, tmp_path):
    src = tmp_path / "clone.c"
    src.write_text(CLONE_C)
    subprocess.run(["cc", "-o", tmp_path / "clone", src], check=True)
    group = CGROUP2 / f"capsule-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        events = py(
            tracer,
            f"""
            import ctypes, os, resource, subprocess
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
            libc.unshare(0x04000000)                   # CLONE_NEWUTS
            libc.setns(fd, 0x04000000)
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))
            subprocess.run([{str(tmp_path / "clone")!r}], check=True)
            pid = os.fork()
            if pid == 0:
                open({str(group / "cgroup.procs")!r}, "w").write(str(os.getpid()))
                os._exit(0)
            os.waitpid(pid, 0)
        """,
        )
    finally:
        group.rmdir()
    assert one(events, "ns_unshare", ns_flags=0x04000000)["ret"] == 0
    assert one(events, "ns_setns", ns_flags=0x04000000)["fd"] >= 0
    rlim = one(events, "ns_setrlimit", resource=7)
    assert (rlim["rlim_cur"], rlim["rlim_max"]) == (256, 512)
    assert one(events, "ns_clone")["clone_flags"] & 0x04000000
    move = one(events, "ns_cgroup_move")
    assert (
        move["cgroup_path"].endswith(group.name) and move["target_pid"] == move["pid"]
    )


# -- 10 signals ------------------------------------------------------------------------


def test_kill_and_tgkill_have_sender_target_signal(tracer):
    events = py(
        tracer,
        """
        import os, signal, time
        pid = os.fork()
        if pid == 0:
            time.sleep(5); os._exit(0)
        os.kill(pid, signal.SIGTERM); os.waitpid(pid, 0)
        signal.signal(signal.SIGUSR1, lambda *a: None)
        signal.pthread_kill(__import__("threading").get_ident(), signal.SIGUSR1)
    """,
    )
    child = one(events, "proc_fork")["child_pid"]
    kill = one(events, "sig_send", target_pid=child)
    assert kill["sig"] == 15 and kill["pid"] != child
    tgkill = one(events, "sig_send", sig=10)
    assert (
        tgkill["target_pid"] == tgkill["pid"] and tgkill["target_tid"] == tgkill["tid"]
    )


INT80_C = r"""
#include <sys/wait.h>
#include <unistd.h>
int main(void)
{
	long ret;

	/* ia32 syscall 2 is fork; x86-64 syscall 2 is open */
	asm volatile("int $0x80" : "=a"(ret) : "a"(2L) : "memory");
	if (ret == 0)
		_exit(0);
	waitpid(ret, 0, 0);
	return ret < 0;
}
"""


def test_32bit_syscalls_are_not_misread_as_64bit_ones(tracer, tmp_path):
    (tmp_path / "int80.c").write_text(INT80_C)
    subprocess.run(["cc", "-o", tmp_path / "int80", tmp_path / "int80.c"], check=True)
    events = run_traced(tracer, [str(tmp_path / "int80")])
    main = one(events, "proc_exec", filename=str(tmp_path / "int80"))
    assert one(events, "proc_fork", pid=main["pid"])  # seen by sched_process_fork
    assert not [e for e in events if e["pid"] == main["pid"] and e.get("syscall") == 2]


# -- scope and accounting --------------------------------------------------------------


def test_untracked_processes_are_not_seen(tracer, tmp_path):
    marker = tmp_path / "outside"
    subprocess.run(["touch", str(marker)], check=True)  # not tracked
    events = run_traced(tracer, ["/bin/true"])
    assert not [e for e in tracer.poll(50) if e.get("path") == str(marker)]
    assert one(events, "proc_exec", filename="/bin/true")


def test_cgroup_scope_sees_only_the_cgroup():
    require_root()
    from capsule.runtime.tracer import Tracer

    group = CGROUP2 / f"capsule-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        with Tracer(cgroup_path=group) as t:
            t.start()
            inside = f"echo $$ > {group}/cgroup.procs && exec cat /etc/hostname"
            subprocess.run(["sh", "-c", inside], stdout=subprocess.DEVNULL, check=True)
            subprocess.run(
                ["cat", "/etc/os-release"], stdout=subprocess.DEVNULL, check=True
            )
            events = t.poll(100) + t.poll(100)
    finally:
        group.rmdir()
    paths = {e.get("path") for e in events}
    assert "/etc/hostname" in paths and "/etc/os-release" not in paths


def test_ring_buffer_drops_are_counted():
    require_root()
    from capsule.runtime.tracer import Tracer

    # unfolded: every open is a record (folded, the same file would make one or two)
    with Tracer(ring_size=4096 * 4, fold_ns=0) as t:  # 16 KiB: full after a few dozen
        t.start()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.read(ready_r, 1)
            for _ in range(2000):
                os.close(os.open("/etc/hostname", os.O_RDONLY))
            os._exit(0)
        t.track_pid(pid)
        os.write(ready_w, b"x")
        os.waitpid(pid, 0)  # nobody reads while the child runs
        events = t.poll(0)
        stats = t.stats()
    assert stats["drops"] > 0 and stats["missed"] >= 0
    assert len(of_kind(events, "file_read")) + stats["drops"] + stats["missed"] >= 2000


OPEN_LOOP = "import os\nfor _ in range(3000): os.close(os.open('/etc/hostname', 0))"


def test_small_ring_wraps_without_corrupting_records():
    require_root()
    from capsule.runtime.tracer import Tracer

    with Tracer(ring_size=4096 * 4, fold_ns=0) as t:  # 632-byte opens: wraps every ~25
        t.start()
        events = run_traced(
            t,
            [
                PY,
                "-S",
                "-c",
                OPEN_LOOP,
            ],
        )
        stats = t.stats()
    opens = of_kind(events, "file_read", path="/etc/hostname")
    # more than one ring's worth arrived, so the reader wrapped around at least once
    assert stats["decode_errors"] == 0 and len(opens) > 30, stats
    assert all(e["ret"] >= 0 and e["pid"] == opens[0]["pid"] for e in opens)
    lost = stats["drops"] + stats["missed"]
    assert len(opens) + lost >= 3000, (len(opens), stats)


def _opens_in_child(tracer, count: int) -> None:
    """A tracked child opens /etc/hostname count times and exits; reaped on return."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(ready_r, 1)
        for _ in range(count):
            os.close(os.open("/etc/hostname", os.O_RDONLY))
        os._exit(0)
    tracer.track_pid(pid)
    os.write(ready_w, b"x")
    os.waitpid(pid, 0)


def test_reader_is_woken_by_a_batch_not_by_each_record():
    require_root()
    from capsule.runtime.tracer import Tracer

    with Tracer(ring_size=1 << 20, fold_ns=0) as t:  # wakes the reader at 128 KiB
        t.start()
        assert t.wakeup_bytes == 128 << 10
        _opens_in_child(t, 1)
        started = time.monotonic()
        t.wait(400)  # one open is below the mark: nothing wakes the reader
        assert time.monotonic() - started >= 0.35 and t.unread() > 0
        assert of_kind(t.poll(0), "file_read", path="/etc/hostname")

        _opens_in_child(t, 400)  # 400 records of 640 bytes cross the mark
        started = time.monotonic()
        t.wait(10_000)
        assert time.monotonic() - started < 5 and t.unread() >= t.wakeup_bytes


# -- folding repeated opens -----------------------------------------------------------


def _opens(tracer, code: str) -> list[dict]:
    return [e for e in py(tracer, code) if e["kind"] in ("file_read", "file_repeat")]


def _folded_total(events: list[dict], path: str) -> int:
    """Opens of path that the events stand for: one per open event, plus each repeat
    event's count, checked to follow the open event it repeats."""
    total, last_open = 0, None
    for e in events:
        if e["kind"] == "file_read":
            last_open = e
            total += e["path"] == path
        elif e["kind"] == "file_repeat":
            assert last_open is not None and e["first_ns"] == last_open["ts_ns"], e
            assert e["fd"] == last_open["fd"] and e["tid"] == last_open["tid"]
            assert e["first_ns"] <= e["last_ns"] <= e["ts_ns"] and e["count"] > 0
            total += e["count"] if last_open["path"] == path else 0
    return total


def test_repeated_opens_fold_into_a_counted_repeat_event(tracer):
    events = _opens(tracer, OPEN_LOOP)
    reads = of_kind(events, "file_read", path="/etc/hostname")
    repeats = of_kind(events, "file_repeat")
    # one event per 100 ms window at most: far fewer than 3000, and the count is exact
    assert repeats and len(reads) < 100 and len(repeats) <= len(reads)
    assert _folded_total(events, "/etc/hostname") == 3000
    assert repeats[0]["syscall"] == reads[0]["syscall"] and repeats[0]["ret"] >= 0


def test_other_opens_end_the_run_and_keep_the_order(tmp_path):
    require_root()
    from capsule.runtime.tracer import Tracer

    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("a")
    b.write_text("b")
    code = f"""
        import os
        def o(p, n, flags=0):
            for _ in range(n): os.close(os.open(p, flags))
        a, b = {str(a)!r}, {str(b)!r}
        o(a, 3); o(b, 1); o(a, 2); o(a, 2, os.O_RDWR)
        os.getppid(); o(a, 3)
        try: os.setsid()
        except OSError: pass
        o(a, 1)
    """
    with Tracer(fold_ns=60 * 10**9) as t:  # a window no pause under load can outlast
        t.start()
        events = py(t, code)
    events = [
        e
        for e in events
        if e["kind"] in ("file_repeat", "proc_setsid")
        or str(tmp_path) in (e.get("path") or "")
    ]
    seen = [(e["kind"], e.get("path"), e.get("count")) for e in events]
    assert seen == [
        ("file_read", str(a), None),
        ("file_repeat", None, 2),  # the decoder leaves the path to enrichment
        ("file_read", str(b), None),
        ("file_read", str(a), None),
        ("file_repeat", None, 1),
        ("file_write", str(a), None),  # other flags: a new event
        ("file_repeat", None, 1),
        ("file_read", str(a), None),  # other flags again (getppid is not traced)
        ("file_repeat", None, 2),  # a traced syscall of another kind ends the run
        ("proc_setsid", None, None),
        ("file_read", str(a), None),
    ], seen


def test_no_folding_with_fold_ns_zero():
    require_root()
    from capsule.runtime.tracer import Tracer

    with Tracer(fold_ns=0) as t:
        t.start()
        events = _opens(t, OPEN_LOOP)
        stats = t.stats()
    assert not of_kind(events, "file_repeat") and stats["drops"] == 0
    assert len(of_kind(events, "file_read", path="/etc/hostname")) == 3000


@pytest.mark.parametrize("path", ["/tmp", "/sys/fs/cgroup/unified/no-such-group"])
def test_cgroup_scope_must_be_a_cgroup2_directory(path):
    from capsule.errors import CapsuleError
    from capsule.runtime.tracer import Tracer

    with Tracer(cgroup_path=path) as t, pytest.raises(CapsuleError) as err:
        t.start()
    assert err.value.message == (
        f"failed to scope to cgroup {path}: not a cgroup v2 directory"
    )
