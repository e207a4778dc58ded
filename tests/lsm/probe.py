"""Tries each "OP:PATH" given and prints one JSON object {"OP:PATH": "ok" or errno
name}. OP: read, write, exec, deep, a file op, rename, link or symlink (OLD=NEW),
connect, bind, send, listen, accept
(HOST:PORT), signal (NAME:EXE, sent to a running copy of EXE), setuid, setgid
(ID), capset (a capability number, dropped and added back), wx or mprotect (a file
or "anon", mapped writable and executable), clone (namespace kinds, or "none").

Runs inside the LSM test VM under a loaded BPF LSM program, so an EPERM here is the
kernel's verdict, not Python's. A bare PATH means read.
"""

import errno
import json
import os
import socket
import subprocess
import sys


def open_deep(top: str) -> None:
    """Open a file whose path is longer than PATH_MAX, through relative dir fds."""
    os.makedirs(top, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(24):  # 24 * 201 bytes > 4096
        name = "d" * 200
        _mkdir(name, fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(os.open("f", os.O_CREAT | os.O_RDONLY, dir_fd=fd))


def _mkdir(name: str, fd: int) -> None:
    try:
        os.mkdir(name, dir_fd=fd)
    except FileExistsError:
        pass


def sock(op: str, target: str) -> None:
    """connect, bind or send to HOST:PORT[:udp] (IPv6 hosts in brackets)."""
    host, _, rest = (
        target.rpartition("]") if target.startswith("[") else ("", "", target)
    )
    parts = rest.lstrip(":").split(":") if host else rest.split(":")
    host = host.lstrip("[") if host else parts.pop(0)
    port, udp = int(parts[0]), parts[1:] == ["udp"]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        s.settimeout(2)
        if op == "send":
            s.sendto(b"x", (host, port))
        else:
            (s.connect if op == "connect" else s.bind)((host, port))


def listen(target: str, accept: bool = False) -> None:
    """listen on HOST:PORT (TCP); with `accept`, then accept a connection to it."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.settimeout(2)
        server.bind((host, int(port)))
        server.listen(4)
        if not accept:
            return
        with socket.create_connection((host, int(port)), timeout=2):
            server.accept()[0].close()


# the sender runs in its own process: a kill verdict kills it, not this probe
SENDER = """
import errno, os, signal, sys
try:
    os.kill(int(sys.argv[1]), signal.Signals["SIG" + sys.argv[2]])
    print("ok")
except OSError as err:
    print(errno.errorcode.get(err.errno, str(err.errno)))
"""


def send_signal(spec: str) -> str:
    """NAME:EXE: run EXE (a copy of sleep), send it SIGNAME from another process."""
    name, _, exe = spec.partition(":")
    receiver = subprocess.Popen([exe, "30"])  # returns once exec has succeeded
    try:
        done = subprocess.run(
            [sys.executable, "-c", SENDER, str(receiver.pid), name],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == -9:
            return "SIGKILL"
        return done.stdout.strip() or f"exit {done.returncode}: {done.stderr}"
    finally:
        receiver.kill()
        receiver.wait()


# set*id and capset run in a process of their own: they change its credentials, and
# a kill verdict kills it
CREDS = """
import ctypes, errno, os, sys
op, arg = sys.argv[1], sys.argv[2]
try:
    if op == "setuid":
        os.setuid(int(arg))
    elif op == "setgid":
        os.setgid(int(arg))
    else:  # capset: drop the capability from the effective set, then add it back
        libc = ctypes.CDLL(None, use_errno=True)
        head = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        data = (ctypes.c_uint32 * 6)()  # (effective, permitted, inheritable) x 2
        if libc.capget(head, data):
            raise OSError(ctypes.get_errno(), "capget")
        word, bit = 3 * (int(arg) // 32), 1 << (int(arg) % 32)
        data[word] &= ~bit
        if libc.capset(head, data):
            raise OSError(ctypes.get_errno(), "capset drop")
        data[word] |= bit
        if libc.capset(head, data):
            raise OSError(ctypes.get_errno(), "capset add")
    print("ok")
except OSError as err:
    print(errno.errorcode.get(err.errno, str(err.errno)))
"""


def change_creds(op: str, arg: str) -> str:
    """setuid:UID, setgid:GID or capset:CAP_NUMBER, in a child process."""
    done = subprocess.run(
        [sys.executable, "-c", CREDS, op, arg],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == -9:
        return "SIGKILL"
    return done.stdout.strip() or f"exit {done.returncode}: {done.stderr}"


def map_wx(how: str, path: str) -> None:
    """wx: map PATH (or anonymous memory) writable and executable at once;
    mprotect: map it writable, then ask mprotect for write and execute."""
    import ctypes
    import mmap

    rwx = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    fd = -1 if path == "anon" else os.open(path, os.O_RDONLY)
    first = rwx if how == "wx" else mmap.PROT_READ | mmap.PROT_WRITE
    try:
        area = mmap.mmap(fd, 4096 if fd < 0 else 0, flags=mmap.MAP_PRIVATE, prot=first)
        if how == "mprotect":
            libc = ctypes.CDLL(None, use_errno=True)
            start = ctypes.addressof(ctypes.c_char.from_buffer(area))
            failed = libc.mprotect(ctypes.c_void_p(start), len(area), rwx)
            if failed:
                raise OSError(ctypes.get_errno(), "mprotect")
    finally:
        if fd >= 0:
            os.close(fd)


# a raw clone(2) (x86_64) that asks for new namespaces and forks like fork(2)
CLONE = """
import ctypes, errno, os, sys
from capsule.lang.names import NAMESPACES
flags = 17  # SIGCHLD
for kind in filter(None, sys.argv[1].split(",")):
    flags |= NAMESPACES[kind]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
pid = libc.syscall(56, ctypes.c_ulong(flags), None, None, None, None)
if pid == 0:
    os._exit(0)
if pid < 0:
    print(errno.errorcode[ctypes.get_errno()])
else:
    os.waitpid(pid, 0)
    print("ok")
"""


def clone(kinds: str) -> str:
    """clone:KIND,KIND (namespace kinds; "none" for a plain fork), in a child."""
    kinds = "" if kinds == "none" else kinds
    done = subprocess.run(
        [sys.executable, "-c", CLONE, kinds],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == -9:
        return "SIGKILL"
    return done.stdout.strip() or f"exit {done.returncode}: {done.stderr}"


FILE_OPS = {
    "delete": os.unlink,
    "rmdir": os.rmdir,
    "mkdir": os.mkdir,
    "create": lambda path: os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)),
    "truncate": lambda path: os.truncate(path, 0),
    "chmod": lambda path: os.chmod(path, 0o600),
    "chown": lambda path: os.chown(path, 0, 0),
}
# the ops on two names, given as OLD=NEW (symlink: CONTENT=LINK)
NAME_OPS = {
    "rename": os.rename,
    "link": os.link,
    "symlink": os.symlink,
}


def attempt(item: str) -> str:
    op, _, path = item.partition(":")
    if op not in (
        "read",
        "write",
        "exec",
        "deep",
        "connect",
        "bind",
        "send",
        "listen",
        "accept",
        "signal",
        "setuid",
        "setgid",
        "capset",
        "wx",
        "mprotect",
        "clone",
        *FILE_OPS,
        *NAME_OPS,
    ):
        op, path = "read", item
    try:
        if op in FILE_OPS:
            FILE_OPS[op](path)
        elif op in NAME_OPS:
            NAME_OPS[op](*path.split("=", 1))
        elif op in ("connect", "bind", "send"):
            sock(op, path)
        elif op in ("listen", "accept"):
            listen(path, accept=op == "accept")
        elif op == "signal":
            return send_signal(path)
        elif op in ("setuid", "setgid", "capset"):
            return change_creds(op, path)
        elif op in ("wx", "mprotect"):
            map_wx(op, path)
        elif op == "clone":
            return clone(path)
        elif op == "deep":
            open_deep(path)
        elif op == "exec":
            done = subprocess.run([path], check=False, capture_output=True)
            if done.returncode == -9:
                return "SIGKILL"  # killed before it could report exec's errno
        else:
            with open(path, "ab" if op == "write" else "rb"):
                pass
        return "ok"
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))


if __name__ == "__main__":
    print(json.dumps({item: attempt(item) for item in sys.argv[1:]}))
