"""Trace real tools and check the specific events they must cause.

git init/commit/clone of a local repository, pip installing a locally built wheel with
no network, tar, and curl against an HTTP server on loopback. Every assertion names a
path, address, pid or parent that the tool's behaviour fixes.
"""

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from trace_helpers import needs_root, trace

pytestmark = [pytest.mark.bpf, pytest.mark.slow, needs_root]

GIT_ENV = dict(
    os.environ,
    GIT_AUTHOR_NAME="t",
    GIT_AUTHOR_EMAIL="t@example.invalid",
    GIT_COMMITTER_NAME="t",
    GIT_COMMITTER_EMAIL="t@example.invalid",
    GIT_CONFIG_NOSYSTEM="1",
    HOME="/nonexistent",
)


def descends_from(run, event, ancestor_pid):
    """Follow ppid through the run's exec/fork events up to `ancestor_pid`."""
    parents = {e["child_pid"]: e["pid"] for e in run.where("process", "fork")}
    pid = event["pid"]
    while pid in parents:
        if parents[pid] == ancestor_pid:
            return True
        pid = parents[pid]
    return False


class TestGit:
    def test_init(self, tmp_path):
        repo = tmp_path / "repo"
        run = trace(tmp_path / "run", "git", "init", "-q", str(repo), env=GIT_ENV)
        assert run.returncode == 0, run.stderr
        git = run.exec_of("git")
        assert git["argv"] == ["git", "init", "-q", str(repo)]
        assert run.where("file", "mkdir", path=f"{repo}/.git", pid=git["pid"])
        # HEAD is written as HEAD.lock, then renamed into place
        assert run.where(
            "file", "create", path=f"{repo}/.git/HEAD.lock", pid=git["pid"]
        )
        assert run.where(
            "file",
            "rename",
            path=f"{repo}/.git/HEAD.lock",
            new_path=f"{repo}/.git/HEAD",
            pid=git["pid"],
        )

    def test_commit(self, tmp_path):
        repo = tmp_path / "repo"
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=GIT_ENV)
        (repo / "a.txt").write_text("hello\n")
        subprocess.run(
            ["git", "-C", str(repo), "add", "a.txt"], check=True, env=GIT_ENV
        )
        run = trace(
            tmp_path / "run",
            "git",
            "-C",
            str(repo),
            "commit",
            "-q",
            "-m",
            "one",
            env=GIT_ENV,
        )
        assert run.returncode == 0, run.stderr
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            env=GIT_ENV,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        obj = f"{repo}/.git/objects/{head[:2]}/{head[2:]}"
        # git writes a temporary object file and renames it into place
        renames = run.where("file", "rename", new_path=obj)
        links = run.where("file", "link", new_path=obj)
        assert renames or links, f"no rename/link into {obj}"
        assert run.where(
            "file", "rename", new_path=f"{repo}/.git/refs/heads/master"
        ) or run.where("file", "rename", new_path=f"{repo}/.git/refs/heads/main")

    def test_clone_spawns_upload_pack(self, tmp_path):
        src, dst = tmp_path / "src", tmp_path / "dst"
        subprocess.run(["git", "init", "-q", str(src)], check=True, env=GIT_ENV)
        (src / "f").write_text("x\n")
        subprocess.run(["git", "-C", str(src), "add", "f"], check=True, env=GIT_ENV)
        subprocess.run(
            ["git", "-C", str(src), "commit", "-qm", "c"], check=True, env=GIT_ENV
        )
        run = trace(
            tmp_path / "run",
            "git",
            "clone",
            "-q",
            "--no-local",
            str(src),
            str(dst),
            env=GIT_ENV,
        )
        assert run.returncode == 0, run.stderr
        clone = run.exec_of("git")
        pack = [
            e
            for e in run.where("process", "exec")
            if "upload-pack" in " ".join(e.get("argv") or [])
        ]
        assert pack, "git clone --no-local runs git-upload-pack"
        assert descends_from(run, pack[0], clone["pid"])
        assert pack[0]["depth"] >= 1
        assert run.where("file", "create", path=f"{dst}/f")


def _wheel(directory: Path) -> Path:
    """A minimal pure-Python wheel, zipped here (no build backend, no network)."""
    name, version = "capsule_probe", "1.0"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{dist}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        ),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: capsule-test\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


class TestPip:
    def test_install_local_wheel_without_network(self, tmp_path):
        wheel = _wheel(tmp_path)
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        run = trace(
            tmp_path / "run",
            str(venv / "bin/pip"),
            "install",
            "--no-index",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            str(wheel),
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        site = next(venv.glob("lib/python3*/site-packages"))
        pip = run.exec_of("pip")
        assert run.where("file", "read", path=str(wheel))
        made = run.where("file", "create", path=f"{site}/capsule_probe/__init__.py")
        assert made and made[0]["pid"] == pip["pid"]
        assert run.where(
            "file", "create", path=f"{site}/capsule_probe-1.0.dist-info/RECORD"
        )
        remote = [
            e
            for e in run.where("network", "connect")
            if not str(e.get("address", "")).startswith(("127.", "[::1]", "/"))
        ]
        assert remote == []


class TestTar:
    def test_create_and_extract(self, tmp_path):
        src = tmp_path / "src"
        (src / "sub").mkdir(parents=True)
        (src / "a.txt").write_text("a")
        (src / "sub" / "b.txt").write_text("b")
        archive = tmp_path / "out.tar.gz"
        run = trace(
            tmp_path / "pack", "tar", "-C", str(tmp_path), "-czf", str(archive), "src"
        )
        assert run.returncode == 0, run.stderr
        tar = run.exec_of("tar")
        for name in ("src/a.txt", "src/sub/b.txt"):
            assert run.where("file", "read", path=f"{tmp_path}/{name}", pid=tar["pid"])
        assert run.where("file", "create", path=str(archive))
        gzip = run.exec_of("gzip")
        assert descends_from(run, gzip, tar["pid"]) and gzip["depth"] >= 1

        dest = tmp_path / "dest"
        dest.mkdir()
        run = trace(tmp_path / "unpack", "tar", "-C", str(dest), "-xzf", str(archive))
        assert run.returncode == 0, run.stderr
        assert run.where("file", "mkdir", path=f"{dest}/src/sub")
        assert run.where("file", "create", path=f"{dest}/src/sub/b.txt")


@pytest.fixture
def http_server(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hello.txt").write_text("hello from loopback\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=tmp_path / "www",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    server.terminate()
    server.wait()


class TestCurl:
    def test_get_from_loopback(self, tmp_path, http_server):
        out = tmp_path / "got.txt"
        run = trace(
            tmp_path / "run",
            "curl",
            "-sS",
            "-o",
            str(out),
            f"http://127.0.0.1:{http_server}/hello.txt",
        )
        assert run.returncode == 0, run.stderr
        assert out.read_text() == "hello from loopback\n"
        curl = run.exec_of("curl")
        connects = run.where("network", "connect", address=f"127.0.0.1:{http_server}")
        assert connects and connects[0]["pid"] == curl["pid"]
        assert connects[0]["proto"] == "tcp"
        assert run.where("file", "create", path=str(out), pid=curl["pid"])

    def test_refused_connect_is_recorded_with_its_error(self, tmp_path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]  # closed again: nothing listens
        run = trace(tmp_path / "run", "curl", "-sS", f"http://127.0.0.1:{port}/")
        assert run.returncode == 7  # curl: failed to connect
        connects = run.where("network", "connect", address=f"127.0.0.1:{port}")
        assert connects and connects[-1]["error_name"] in (
            "ECONNREFUSED",
            "EINPROGRESS",
        )
