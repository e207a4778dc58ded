"""Ways around a file rule: every alias the kernel resolves must still be denied.

Where the compat backend has no mechanism (a hard link made before the run), the
test asserts that the coverage report said so before the command started.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from enforce_helpers import needs_kernel

pytestmark = needs_kernel
PROGS = Path(__file__).with_name("progs")
SECRET = "the-secret"


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text(SECRET)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "mine").write_text("mine")
    return tmp_path


def _deny(
    tree: Path, ops: str = "read,write,create,rename,link,delete,truncate"
) -> str:
    return f"deny file {ops} {tree}/secret/\n"


def _leaked(run) -> bool:
    return SECRET in run.stdout


def test_symlink_with_dotdot(enforce, tree):
    (tree / "work" / "alias").symlink_to(f"{tree}/work/../secret/key")
    run = enforce(_deny(tree), ["cat", f"{tree}/work/alias"])
    assert run.exit_code != 0 and not _leaked(run)


def test_proc_self_root_alias(enforce, tree):
    run = enforce(_deny(tree), ["cat", f"/proc/self/root{tree}/secret/key"])
    assert run.exit_code != 0 and not _leaked(run)


def test_hard_link_made_inside_is_refused(enforce, tree):
    run = enforce(
        _deny(tree),
        ["sh", "-c", f"ln {tree}/secret/key {tree}/work/hl; cat {tree}/work/hl"],
    )
    assert not _leaked(run) and not (tree / "work" / "hl").exists()


def test_hard_link_made_before_is_reported_before_the_start(enforce, tree):
    os.link(tree / "secret" / "key", tree / "work" / "old-link")
    run = enforce(_deny(tree), ["cat", f"{tree}/work/old-link"])
    line = run.coverage.lines[0]
    assert line.status == "partial"
    assert f"other hard links to {tree}/secret/key" in line.note
    assert _leaked(run)  # the documented limit: Landlock judges the path, not the inode


@pytest.mark.parametrize("how", ["rename", "link", "exchange"])
def test_rename_link_exchange_onto_a_denied_name(enforce, tree, py, how):
    src, dst = f"{tree}/work/mine", f"{tree}/secret/key"
    code = {
        "rename": f"import os; os.rename('{src}', '{dst}')",
        "link": f"import os; os.link('{src}', '{tree}/secret/new')",
        "exchange": (
            "import ctypes, sys; libc = ctypes.CDLL(None, use_errno=True)\n"
            f"sys.exit(1 if libc.renameat2(-100, b'{src}', -100, b'{dst}', 2) "
            "else 0)"
        ),
    }[how]
    run = enforce(_deny(tree), [py, "-c", code])
    assert run.exit_code != 0, run.stdout
    assert (tree / "secret" / "key").read_text() == SECRET
    assert not (tree / "secret" / "new").exists()


@pytest.mark.parametrize("depth,name_len", [(2, 100), (21, 10), (25, 200)])
def test_long_and_deep_paths(enforce, tree, py, depth, name_len):
    # built with dir_fd steps: past 4096 bytes no single path reaches the file
    fd = os.open(tree / "secret", os.O_RDONLY)
    for level in range(depth):
        name = f"{level:03d}" + "d" * (name_len - 3)
        os.mkdir(name, dir_fd=fd)
        fd2 = os.open(name, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = fd2
    leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(leaf, SECRET.encode())
    os.close(leaf)
    os.close(fd)
    code = (
        f"import os\nfd = os.open('{tree}/secret', os.O_PATH)\n"
        "while True:\n"
        " names = [n for n in os.listdir(f'/proc/self/fd/{fd}') if n != 'leaf'] "
        "if False else sorted(os.listdir(fd))\n"
        " if names == ['leaf']: break\n"
        " fd = os.open(names[0], os.O_PATH, dir_fd=fd)\n"
        "print(open(os.open('leaf', os.O_RDONLY, dir_fd=fd)).read())\n"
    )
    total = (name_len + 1) * depth
    run = enforce(_deny(tree, "read"), [py, "-c", code])
    assert run.exit_code != 0 and not _leaked(run), (total, run.stdout)


def test_deep_path_through_an_opened_parent(enforce, tree, py):
    # the parent is opened with O_PATH (allowed: no read), then the child relative
    deep = tree / "secret" / ("/".join(["d"] * 22))
    deep.mkdir(parents=True)
    (deep / "leaf").write_text(SECRET)
    code = (
        f"import os\nfd = os.open('{deep}', os.O_PATH)\n"
        "print(open(os.open('leaf', os.O_RDONLY, dir_fd=fd)).read())\n"
    )
    run = enforce(_deny(tree, "read"), [py, "-c", code])
    assert run.exit_code != 0 and not _leaked(run)


@pytest.mark.parametrize("via", ["execveat", "proc-fd"])
def test_memfd_exec(enforce, py, via):
    target = "fd" if via == "execveat" else "f'/proc/self/fd/{fd}'"
    code = (
        "import os\nfd = os.memfd_create('x', 0)\n"
        "os.write(fd, open('/bin/true', 'rb').read())\n"
        f"os.execve({target}, ['true'], {{}})\n"
    )
    run = enforce("deny memory fileless-exec\n", [py, "-c", code])
    assert run.exit_code != 0
    assert "Operation not permitted" in run.stdout
    assert run.verdicts("memory", "fileless-exec")[0]["path"].startswith("/memfd:x")
    # the coverage said before the start that the check can be raced
    assert run.coverage.lines[0].status == "partial"
    assert "another thread" in run.coverage.lines[0].note


def test_script_with_a_denied_interpreter(enforce, tree):
    interp = tree / "work" / "interp"
    interp.write_bytes(Path("/bin/sh").read_bytes())
    interp.chmod(0o755)
    script = tree / "work" / "script"
    script.write_text(f"#!{interp}\necho ran\n")
    script.chmod(0o755)
    run = enforce(f"deny file exec {interp}\n", [str(script)])
    assert run.exit_code == 126 and "ran" not in run.stdout


def test_script_itself_denied(enforce, tree):
    script = tree / "work" / "script"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)
    run = enforce(f"deny file exec {script}\n", ["sh", "-c", f"{script}; echo rc=$?"])
    assert "ran" not in run.stdout and "rc=126" in run.stdout


@pytest.fixture(scope="module")
def uring_open(tmp_path_factory):
    out = tmp_path_factory.mktemp("progs") / "uring_open"
    subprocess.run(
        ["clang", "-O2", "-o", str(out), str(PROGS / "uring_open.c")], check=True
    )
    return out


def test_io_uring_openat(enforce, tree, uring_open):
    allowed = enforce(_deny(tree, "read"), [str(uring_open), f"{tree}/work/mine"])
    assert allowed.exit_code == 0, allowed.stdout
    run = enforce(_deny(tree, "read"), [str(uring_open), f"{tree}/secret/key"])
    assert run.exit_code == 1 and "uring openat -13" in run.stdout


def test_wx_mprotect(enforce, py):
    code = (
        "import ctypes, mmap, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.mmap.restype = ctypes.c_void_p\n"
        "p = libc.mmap(None, 4096, 3, 0x22, -1, 0)\n"
        "sys.exit(5 if libc.mprotect(ctypes.c_void_p(p), 4096, 7) == -1 else 0)\n"
    )
    run = enforce("deny memory wx\n", [py, "-c", code])
    assert run.exit_code == 5
    assert run.verdicts("memory", "wx")[0]["syscall"] == "mprotect"
