"""The first program of the sandbox: restrict itself, then execute the agent's command.

`python -m capsule.runtime.compat.shim PLAN_FD SOCK_FD -- CMD ...` reads the plan (JSON)
from PLAN_FD, enforces Landlock and seccomp on itself, sends the seccomp notification fd
to the runtime over SOCK_FD, and only then executes CMD. Both restrictions survive
execve and are inherited by every child, so CMD runs sandboxed from its first
instruction. It is a separate program, not code run between fork and exec in the
runtime, so that no lock held by another runtime thread can hang the child.
"""

import json
import os
import socket
import subprocess
import sys

import pyseccomp  # noqa: F401  (loaded now: after Landlock it may be unreadable)

from capsule.runtime.compat import landlock, seccomp

_EXIT_SETUP = 125  # as `env`: the wrapper itself failed
_EXIT_NOEXEC = 126
_EXIT_NOTFOUND = 127


def _ruleset(data: dict) -> landlock.Ruleset:
    rules = landlock.Ruleset(
        handled_fs=landlock.FS(data["handled_fs"]),
        handled_net=landlock.Net(data["handled_net"]),
        scoped=landlock.Scope(data["scoped"]),
    )
    for path, rights in data["paths"]:
        rules.allow_path(path, landlock.FS(rights))
    for port, rights in data["ports"]:
        rules.allow_port(port, landlock.Net(rights))
    return rules


def _read_plan(fd: int) -> dict:
    with os.fdopen(fd, "rb") as stream:
        return json.loads(stream.read())


def _send_notify_fd(sock_fd: int, notify_fd: int | None) -> None:
    sock = socket.socket(fileno=sock_fd)
    fds = [] if notify_fd is None else [notify_fd]
    socket.send_fds(sock, [b"ready"], fds)
    sock.close()
    if notify_fd is not None:
        os.close(notify_fd)  # the agent must never answer its own notifications


def _mount_points(under: str) -> list[str]:
    """Mount points at or below `under`, from this namespace's mount table."""
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            point = line.split()[4].replace("\\040", " ")
            if point == under or point.startswith(under.rstrip("/") + "/"):
                found.append(point)
    return found


def _read_only(paths: list[str]) -> None:
    """Make each path read-only in this (private) mount namespace.

    `remount,bind,ro` changes only this namespace's copy of the mount, never the
    file system itself, so the runtime outside keeps writing its timeline.
    """
    for path in paths:
        if not os.path.exists(path):
            continue
        points = _mount_points(path)
        if path not in points:
            subprocess.run(["mount", "--bind", path, path], check=True)
            points.append(path)
        for point in points:
            subprocess.run(["mount", "-o", "remount,bind,ro", point], check=True)


def _become(user: dict) -> None:
    os.initgroups(user["name"], user["gid"])
    os.setgid(user["gid"])
    os.setuid(user["uid"])
    os.environ.update(HOME=user["home"], USER=user["name"], LOGNAME=user["name"])


def _apply(plan: dict, sock_fd: int) -> None:
    # mounts first: the filter would send them to a supervisor not yet listening
    if plan.get("protected"):
        _read_only(plan["protected"])
    # then the capabilities for administering the host, while still root (dropping
    # needs CAP_SETPCAP) and before the filter (capset may be a notified syscall)
    if plan.get("drop_caps"):
        landlock.drop_capabilities(plan["drop_caps"])
    # then the user (--user): still root for the mounts, never root for the command
    if plan.get("user"):
        _become(plan["user"])
    # seccomp before Landlock: finding the notification fd reads /proc, which the
    # policy may not let the agent read
    notify_fd = None
    filt = seccomp.FilterPlan.from_json(plan["seccomp"])
    if not filt.empty():
        notify_fd = seccomp.load_filter(filt)
    if plan.get("landlock"):
        landlock.restrict_self(
            _ruleset(plan["landlock"]), landlock.RestrictFlag(plan["landlock"]["flags"])
        )
    _send_notify_fd(sock_fd, notify_fd)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: shim PLAN_FD SOCK_FD -- CMD [ARG...]\n")
        return _EXIT_SETUP
    plan_fd, sock_fd, cmd = int(argv[0]), int(argv[1]), argv[3:]
    try:
        _apply(_read_plan(plan_fd), sock_fd)
    except Exception as err:  # the runtime sees the exit code and our one line
        sys.stderr.write(f"capsule: error: failed to enforce the policy: {err}\n")
        return _EXIT_SETUP
    try:
        os.execvp(cmd[0], cmd)  # os.environ: the --user variables included
    except FileNotFoundError:
        sys.stderr.write(f"capsule: error: failed to execute {cmd[0]}: not found\n")
        return _EXIT_NOTFOUND
    except OSError as err:
        sys.stderr.write(
            f"capsule: error: failed to execute {cmd[0]}: {err.strerror}\n"
        )
        return _EXIT_NOEXEC
    return _EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
