"""Tries each "OP:PATH" given (OP: read, write or exec) and prints one JSON object
{"OP:PATH": "ok" or errno name}.

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


FILE_OPS = {
    "delete": os.unlink,
    "rmdir": os.rmdir,
    "mkdir": os.mkdir,
    "create": lambda path: os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)),
    "truncate": lambda path: os.truncate(path, 0),
    "chmod": lambda path: os.chmod(path, 0o600),
    "chown": lambda path: os.chown(path, 0, 0),
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
        *FILE_OPS,
    ):
        op, path = "read", item
    try:
        if op in FILE_OPS:
            FILE_OPS[op](path)
        elif op in ("connect", "bind", "send"):
            sock(op, path)
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
