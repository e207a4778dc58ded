"""Windows, tokens and feature vectors: what each column holds, and bad input."""

import math

import numpy as np
import pytest

from capsule.errors import CapsuleError
from capsule.ml.features import (
    BEHAVIOUR,
    FeatureSpec,
    Window,
    behaviour,
    event_token,
    path_class,
    task_words,
    window_from_events,
)

SPEC = FeatureSpec(
    "syscalls", ("close", "open", "open read", "open read close", "read")
)


def test_ngram_columns_hold_log_counts():
    row = SPEC.vectorize(Window(syscalls=("open", "read", "close", "open", "read")))
    expected = [
        math.log1p(1),
        math.log1p(2),
        math.log1p(2),
        math.log1p(1),
        math.log1p(2),
    ]
    np.testing.assert_allclose(row, expected, rtol=1e-6)


def test_only_the_newest_max_len_tokens_count():
    spec = FeatureSpec("syscalls", ("open", "read"), max_len=2)
    row = spec.vectorize(Window(syscalls=("open", "open", "read", "read")))
    np.testing.assert_allclose(row, [0.0, math.log1p(2)])


def test_fit_keeps_frequent_ngrams_and_round_trips():
    sequences = [["open", "read", "close"]] * 3 + [["execve", "socket"]]
    spec = FeatureSpec.fit(sequences, "syscalls", ngram=2, max_features=10, min_df=2)
    assert spec.vocabulary == ("close", "open", "open read", "read", "read close")
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


PATHS = [
    ("/home/ann/.ssh/id_ed25519", "", "cred"),
    ("/root/.aws/credentials", "", "cred"),
    ("/etc/shadow", "", "cred"),
    ("/etc/cron.d/job", "", "persist"),
    ("/home/ann/.bashrc", "", "persist"),
    ("/root/.ssh/authorized_keys", "", "persist"),
    ("/home/ann/work/src/a.py", "/home/ann/work", "work"),
    ("/home/ann/workshop/a.py", "/home/ann/work", "home"),
    ("/root/.pyenv/versions/3.11.7/bin/python3", "", "tool"),
    ("/home/ann/.cache/pip/x", "", "tool"),
    ("/home/ann/.config/systemd/user/u.service", "", "persist"),
    ("/home/ann/.localrc", "", "home"),
    ("/tmp/x", "", "tmp"),
    ("/etc/hosts", "", "etc"),
    ("/usr/lib/x.so", "", "sys"),
    ("/proc/self/maps", "", "proc"),
    ("/srv/data", "", "other"),
]


@pytest.mark.parametrize("path, workspace, expected", PATHS)
def test_path_class(path, workspace, expected):
    assert path_class(path, workspace) == expected


EVENTS = [
    ({"area": "process", "op": "exec", "exe": "/usr/bin/curl"}, "process.exec:fetch"),
    (
        {"area": "process", "op": "exec", "exe": "/usr/bin/python3.11"},
        "process.exec:python",
    ),
    ({"area": "file", "op": "delete", "path": "/etc/passwd"}, "file.delete:etc"),
    (
        {
            "area": "network",
            "op": "send",
            "addr": "8.8.8.8",
            "port": 53,
            "sock_type": 2,
        },
        "network.send:net-udp-dns",
    ),
    (
        {
            "area": "network",
            "op": "connect",
            "addr": "127.0.0.1",
            "port": 8000,
            "sock_type": 1,
        },
        "network.connect:lo-tcp-port",
    ),
    ({"area": "creds", "op": "setuid"}, "creds.setuid"),
    # a tool reading its own credential-like config is not a secret read
    (
        {"area": "file", "op": "read", "path": "/h/.netrc", "exe": "/usr/bin/wget"},
        "file.read:toolcfg",
    ),
    (
        {"area": "file", "op": "read", "path": "/h/.netrc", "exe": "/usr/bin/cat"},
        "file.read:cred",
    ),
    (
        {"area": "file", "op": "read", "path": "/etc/shadow", "exe": "/usr/bin/su"},
        "file.read:cred",
    ),
]


@pytest.mark.parametrize("event, token", EVENTS)
def test_event_token(event, token):
    assert event_token(event) == token


def test_events_window_counts_what_the_events_show():
    events = [
        {"area": "file", "op": "read", "path": "/a", "pid": 1},
        {"area": "file", "op": "read", "path": "/a", "pid": 2},
        {"area": "file", "op": "write", "path": "/b", "pid": 2},
        {
            "area": "network",
            "op": "send",
            "addr": "10.0.0.1",
            "port": 53,
            "send_len": 40,
            "pid": 2,
        },
    ]
    window = window_from_events(events, task="fix the tests", resources={"cpu_ns": 5})
    assert window.resources == {
        "processes": 2,
        "files": 2,
        "peers": 1,
        "bytes_sent": 40,
        "cpu_ns": 5,
    }


def test_task_features_depend_on_the_task_only_through_its_words():
    spec = FeatureSpec(
        "events",
        ("file.read:etc",),
        groups=("ngrams", "resources", "task", "task_cross"),
    )
    events = ({"area": "file", "op": "read", "path": "/etc/hosts"},)
    a = spec.vectorize(Window(events=events, task="Install numpy"))
    b = spec.vectorize(Window(events=events, task="install  NUMPY install"))
    c = spec.vectorize(Window(events=events, task="delete the logs"))
    assert len(a) == len(spec.names()) == 1 + 7 + 64 + 256
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert task_words("Run pytest, then git-commit") == [
        "run",
        "pytest",
        "then",
        "git-commit",
    ]


BAD_WINDOWS = [
    ({"syscall": ["read"]}, "unknown key 'syscall'"),
    ({"syscalls": [3, 4]}, "syscalls must be names (strings)"),
    ({"events": [{"area": "file"}]}, "each event needs 'area' and 'op'"),
    (
        {"syscalls": ["read"], "resources": {"cpu_ns": "lots"}},
        "resources must map names to numbers",
    ),
]


@pytest.mark.parametrize("data, message", BAD_WINDOWS)
def test_bad_window_is_one_line_with_its_source(data, message):
    with pytest.raises(CapsuleError) as err:
        Window.from_dict(data, "w.json")
    assert err.value.message == f"failed to read w.json: {message}"


def test_bad_spec_is_refused():
    with pytest.raises(CapsuleError, match="unknown source 'bytes'"):
        FeatureSpec("bytes", ())
    with pytest.raises(CapsuleError, match="unknown group 'colour'"):
        FeatureSpec("syscalls", (), groups=("colour",))


def _behaviour(events):
    row = behaviour(window_from_events(events, workspace="/h/project"))
    return {name for name, value in zip(BEHAVIOUR, row) if value}


def _ev(area, op, pid, exe, **more):
    return {"area": area, "op": op, "pid": pid, "exe": exe, **more}


SEND = {"addr": "127.0.0.1", "port": 9, "sock_type": 1}


def test_behaviour_tells_which_process_read_the_secret_and_who_sent_it():
    wget = _behaviour(
        [
            _ev("file", "read", 5, "/usr/bin/wget", path="/h/.netrc"),
            _ev("network", "connect", 5, "/usr/bin/wget", **SEND),
        ]
    )
    assert wget == {
        "own-config-read",
        "own-config-then-send-same-process",
        "send-without-secret",
        "senders",
        "max-sends-per-process",
    }
    piped = _behaviour(
        [
            _ev("file", "read", 5, "/usr/bin/cat", path="/h/.ssh/id_rsa"),
            _ev("network", "connect", 6, "/usr/bin/curl", **SEND),
        ]
    )
    assert {"secret-read", "secret-then-send-other-process"} <= piped
    assert "secret-then-send-same-process" not in piped
    same = _behaviour(
        [
            _ev("file", "read", 5, "/usr/bin/bash", path="/h/.aws/credentials"),
            _ev("network", "send", 5, "/usr/bin/bash", **SEND),
        ]
    )
    assert {"secret-then-send-same-process", "shell-network"} <= same
    # sent before the secret was read: not the read-then-send order
    before = _behaviour(
        [
            _ev("network", "connect", 6, "/usr/bin/curl", **SEND),
            _ev("file", "read", 5, "/usr/bin/cat", path="/h/.ssh/id_rsa"),
        ]
    )
    assert "secret-then-send-other-process" not in before


def test_behaviour_sees_persistence_privileges_and_deletes():
    found = _behaviour(
        [
            _ev("file", "write", 5, "/usr/bin/bash", path="/h/.bashrc"),
            _ev("creds", "setuid", 6, "/usr/bin/python3.11"),
            _ev("creds", "setuid", 7, "/usr/bin/make"),
            _ev("file", "delete", 8, "/usr/bin/rm", path="/h/documents/a"),
            _ev("file", "delete", 8, "/usr/bin/rm", path="/h/project/a"),
        ]
    )
    assert {"persistence-write", "privilege-change", "delete-outside"} <= found
    # make switching ids is a build tool's routine, not a privilege change
    assert _behaviour([_ev("creds", "setuid", 7, "/usr/bin/make")]) == set()
    assert behaviour(window_from_events([{"area": "file", "op": "read"}])).sum() == 0


def test_behaviour_is_in_the_spec_names():
    spec = FeatureSpec("events", ("file.read:cred",), groups=("ngrams", "behaviour"))
    assert spec.names()[1:] == [f"behaviour:{name}" for name in BEHAVIOUR]
    row = spec.vectorize(
        window_from_events([_ev("file", "read", 1, "/bin/cat", path="/h/.netrc")])
    )
    assert row[spec.names().index("behaviour:secret-read")] == 1.0
