"""Every diagnostic code, from a table of bad snippets, with its exact rendered text.

The golden files in tests/lang/golden/ hold the rendered output; regenerate them
with CAPSULE_UPDATE_GOLDEN=1 after a deliberate change, and read the diff.
"""

import os
from pathlib import Path

import pytest

from capsule.lang import load_policy
from capsule.lang.diagnostics import CODES, SourceCache, render_text

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CAPSULE_UPDATE_GOLDEN") == "1"

# code -> (severity, {file name: content}); policy.cap is the file checked
CASES = {
    "syntax-error": ("error", {"policy.cap": "deny file read /x message nope\n"}),
    "invalid-utf8": ("error", {"policy.cap": b"deny file read /caf\xe9\n"}),
    "bad-character": ("error", {"policy.cap": "deny file read /a\x00b\n"}),
    "unreadable-file": ("error", {}),
    "unknown-area": ("error", {"policy.cap": "deny filee read /x\n"}),
    "unknown-operation": ("error", {"policy.cap": "deny file reed /x\n"}),
    "unknown-field": ("error", {"policy.cap": "allow network connect host pypi.org\n"}),
    "no-default-field": ("error", {"policy.cap": "deny creds setuid 0\n"}),
    "duplicate-field": (
        "error",
        {"policy.cap": "deny network connect port 22 port 23\n"},
    ),
    "bad-glob": ("error", {"policy.cap": "deny file read /home/**secret\n"}),
    "bad-cidr": ("error", {"policy.cap": "deny network connect addr 10.0.0.1/8\n"}),
    "bad-port": ("error", {"policy.cap": "deny network connect port 8000-70000\n"}),
    "bad-id": ("error", {"policy.cap": "deny creds setuid uid 4294967295\n"}),
    "unknown-capability": (
        "error",
        {"policy.cap": "deny creds capset cap CAP_SYS_ADMN\n"},
    ),
    "unknown-signal": ("error", {"policy.cap": "deny signal send SIGKIL\n"}),
    "unknown-namespace": (
        "error",
        {"policy.cap": "deny namespace unshare ns network\n"},
    ),
    "unknown-protocol": (
        "error",
        {"policy.cap": "deny network connect protocol tcpp\n"},
    ),
    "unknown-mount-flag": (
        "error",
        {"policy.cap": "deny system mount flags nosuidd\n"},
    ),
    "bad-fstype": ("error", {"policy.cap": 'deny system mount fstype "ext 4"\n'}),
    "bad-device": ("error", {"policy.cap": "deny device open dev 10:x\n"}),
    "bad-fallback": ("error", {"policy.cap": "deny(kill) file read /x\n"}),
    "bad-severity": ("error", {"policy.cap": "deny file read /x severity urgent\n"}),
    "bad-priority": ("error", {"policy.cap": "deny file read /x priority 5000\n"}),
    "unknown-setting": ("warning", {"policy.cap": "set colour = blue\n"}),
    "bad-setting": ("error", {"policy.cap": "set mode = strict\n"}),
    "missing-escalate-policy": (
        "error",
        {"policy.cap": "set escalate-action = switch\n"},
    ),
    "duplicate-setting": (
        "error",
        {"policy.cap": "set mode = enforce\nset mode = monitor\n"},
    ),
    "missing-include": ("error", {"policy.cap": 'include "lib/missing.cap"\n'}),
    "include-cycle": (
        "error",
        {"policy.cap": 'include "a.cap"\n', "a.cap": 'include "policy.cap"\n'},
    ),
    "include-depth": (
        "error",
        {"policy.cap": 'include "d1.cap"\n'}
        | {f"d{i}.cap": f'include "d{i + 1}.cap"\n' for i in range(1, 40)},
    ),
    "duplicate-definition": (
        "error",
        {"policy.cap": "let a = /x\nlet a = /y\ndeny file read $a\n"},
    ),
    "undefined-name": ("error", {"policy.cap": "deny file read $secrets/**\n"}),
    "definition-cycle": (
        "error",
        {"policy.cap": "let a = $b\nlet b = [/x, $a]\ndeny file read $a\n"},
    ),
    "empty-list": ("error", {"policy.cap": "let none = []\ndeny file read $none\n"}),
    "unused-definition": ("warning", {"policy.cap": "let spare = [/x, /y]\n"}),
    "unused-taint": ("warning", {"policy.cap": "taint keys = file read ~/.ssh/\n"}),
    "duplicate-default": ("error", {"policy.cap": "default deny\ndefault allow\n"}),
    "too-many-clauses": (
        "error",
        {
            "policy.cap": "let ports = ["
            + ", ".join(str(p) for p in range(1, 401))
            + "]\nlet nets = ["
            + ", ".join(f"10.0.{i}.0/24" for i in range(251))
            + "]\ndeny network connect addr $nets port $ports\n"
        },
    ),
}
NOT_FROM_CHECKER = {"internal-error"}  # raised by the CLI, tested in test_cli_check


def _write(tmp_path: Path, files: dict) -> None:
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (tmp_path / name).write_bytes(data)


@pytest.mark.parametrize("code", sorted(CASES))
def test_code_has_golden_rendering(code, tmp_path, monkeypatch):
    severity, files = CASES[code]
    _write(tmp_path, files)
    monkeypatch.chdir(tmp_path)

    _, diags = load_policy(["policy.cap"])

    assert [d.code for d in diags] == [code]
    assert diags[0].severity == severity
    rendered = render_text(diags, SourceCache())
    golden = GOLDEN / f"{code}.txt"
    if UPDATE:
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def test_every_code_is_in_the_table():
    assert set(CODES) - NOT_FROM_CHECKER == set(CASES)


def test_rendering_shape_is_file_line_col_severity_message_code(tmp_path, monkeypatch):
    (tmp_path / "policy.cap").write_text("# bad op\ndeny file reed /x\n")
    monkeypatch.chdir(tmp_path)

    _, diags = load_policy(["policy.cap"])

    assert render_text(diags, SourceCache()).splitlines() == [
        "policy.cap:2:11: error: unknown operation 'reed' for area file; "
        "did you mean 'read'? [unknown-operation]",
        "    deny file reed /x",
        "              ^~~~",
    ]
