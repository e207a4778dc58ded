"""Turn one window of a process tree's behaviour into the classifier's feature vector.

A window is what an escalation hands the classifier: a sequence of tokens (system-call
names, or event tokens built from the event dicts of docs/architecture.md), the tree's
resource use, and the agent's declared task. Features come in groups:

- `ngrams`: log(1 + count) of each 1..n-gram of the token sequence that is in the
  vocabulary fitted on the training data; the n-grams carry the order of the calls;
- `resources`: log(1 + value) of each key in RESOURCE_KEYS;
- `task`: the task text's words, hashed into a fixed number of buckets;
- `task_cross`: (task word, event area.op) pairs, hashed, so that a linear model can
  learn that the same action is fine for one task and risky for another;
- `task_match`: per topic, whether the task asks for it and whether the window does it;
- `behaviour`: who did what, and in which order: which process read a secret (a tool
  reading its own config, like wget reading ~/.netrc, is not a secret read), whether
  the same process or another one then sent data, persistence writes, privilege
  changes outside build tools, deletes outside the workspace (BEHAVIOUR).

The spec (vocabulary, n, groups) is saved in the model's metadata so that training and
inference compute exactly the same vector.
"""

from __future__ import annotations

import functools
import math
import posixpath
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from capsule.errors import CapsuleError

RESOURCE_KEYS = (
    "cpu_ns",
    "bytes_read",
    "bytes_written",
    "bytes_sent",
    "processes",
    "files",
    "peers",
)
GROUPS = ("ngrams", "resources", "task", "task_cross", "task_match", "behaviour")
SOURCES = ("syscalls", "events")
_WORD = re.compile(r"[a-z0-9][a-z0-9_.+-]*")


@dataclass(frozen=True)
class Window:
    """One window of recent behaviour: tokens, resource use and the declared task."""

    syscalls: tuple[str, ...] = ()
    events: tuple[Mapping, ...] = ()
    # event tokens, made once per event as it arrives (event_token); empty: made here
    tokens: tuple[str, ...] = ()
    resources: Mapping[str, float] = field(default_factory=dict)
    task: str = ""
    workspace: str = ""

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "window") -> Window:
        """Build a window from JSON-like data; bad input is a one-line CapsuleError."""
        unknown = set(data) - {"syscalls", "events", "resources", "task", "workspace"}
        if unknown:
            raise CapsuleError(
                f"failed to read {where}: unknown key {sorted(unknown)[0]!r}"
            )
        syscalls = data.get("syscalls", [])
        events = data.get("events", [])
        resources = data.get("resources", {})
        if not all(isinstance(name, str) for name in syscalls):
            raise CapsuleError(
                f"failed to read {where}: syscalls must be names (strings)"
            )
        if not all(
            isinstance(ev, Mapping) and "area" in ev and "op" in ev for ev in events
        ):
            raise CapsuleError(
                f"failed to read {where}: each event needs 'area' and 'op'"
            )
        if not isinstance(resources, Mapping) or not all(
            isinstance(v, (int, float)) for v in resources.values()
        ):
            raise CapsuleError(
                f"failed to read {where}: resources must map names to numbers"
            )
        task, workspace = str(data.get("task", "")), str(data.get("workspace", ""))
        if events and not syscalls:
            # built like a recorded window, so the derived counts match too
            return window_from_events(events, task, workspace, resources)
        return cls(
            syscalls=tuple(syscalls),
            events=tuple(events),
            resources=dict(resources),
            task=task,
            workspace=workspace,
        )


def window_from_events(
    events: Iterable[Mapping],
    task: str = "",
    workspace: str = "",
    resources: Mapping[str, float] | None = None,
) -> Window:
    """A window over recorded events (e.g. a `capsule trace` events.jsonl).

    Counts that the events show (processes, distinct files and peers, bytes sent) are
    filled in; CPU time and bytes read or written come only from `resources`, because
    the events do not carry them.
    """
    events = tuple(events)
    derived = {
        "processes": len({ev.get("pid") for ev in events}),
        "files": len(
            {ev["path"] for ev in events if ev.get("area") == "file" and ev.get("path")}
        ),
        "peers": len(
            {
                (ev.get("addr"), ev.get("port"))
                for ev in events
                if ev.get("area") == "network" and ev.get("addr")
            }
        ),
        "bytes_sent": sum(
            int(ev.get("send_len") or 0) for ev in events if ev.get("area") == "network"
        ),
    }
    derived.update(resources or {})
    tokens = tuple(event_token(ev, workspace) for ev in events)
    return Window(
        events=events,
        tokens=tokens,
        resources=derived,
        task=task,
        workspace=workspace,
    )


# --- event tokens ---------------------------------------------------------------------

_CREDENTIAL = re.compile(
    r"/(\.ssh/id_|\.aws/|\.netrc$|\.git-credentials$|\.gnupg/|\.docker/config"
    r"|\.kube/config|\.npmrc$|\.pypirc$)|^/etc/(shadow|gshadow|sudoers)"
)
_PERSISTENCE = re.compile(
    r"^/etc/(cron|rc\.local|ld\.so\.preload|profile|systemd/|init\.d/)"
    r"|/\.config/systemd/"
    r"|/\.(bashrc|profile|bash_profile|zshrc)$|/\.ssh/authorized_keys|^/var/spool/cron"
)
# a home's toolchain files (version shims, caches, tool configs): everyday reads for
# any developer tool, unlike the rest of a home; persistence and secrets match first
_TOOLCHAIN = re.compile(
    r"^/(root|home/[^/]+)/\.(pyenv|cache|local|config|rustup|cargo|npm|nvm|rbenv"
    r"|gradle|m2|gitconfig|pythonhistory|python_history|wget-hsts|terminfo)(/|$)"
)
_PATH_CLASSES = (
    ("/tmp/", "tmp"),
    ("/var/tmp/", "tmp"),
    ("/dev/shm/", "tmp"),
    ("/proc/", "proc"),
    ("/sys/", "proc"),
    ("/dev/", "dev"),
    ("/etc/", "etc"),
    ("/usr/", "sys"),
    ("/bin/", "sys"),
    ("/sbin/", "sys"),
    ("/lib", "sys"),
    ("/boot/", "sys"),
    ("/root/", "home"),
    ("/home/", "home"),
)
_EXE_CLASSES = {
    "shell": {"sh", "bash", "dash", "zsh", "busybox"},
    "fetch": {
        "curl",
        "wget",
        "nc",
        "ncat",
        "netcat",
        "socat",
        "ssh",
        "scp",
        "nslookup",
        "dig",
        "telnet",
    },
    "python": {"python", "python3"},
    "package": {"pip", "pip3", "apt", "apt-get", "dpkg", "npm"},
    "vcs": {"git"},
    "build": {"gcc", "cc", "clang", "ld", "make", "as", "cc1"},
    "priv": {"sudo", "su", "pkexec", "passwd", "chpasswd", "useradd", "usermod"},
    "delete": {"rm", "shred", "find", "dd"},
}


@functools.lru_cache(maxsize=8192)  # agents touch the same paths again and again
def path_class(path: str, workspace: str = "") -> str:
    """A coarse, stable class of a path: what kind of place an agent touched."""
    if not path:
        return "none"
    if _CREDENTIAL.search(path):
        return "cred"
    if _PERSISTENCE.search(path):
        return "persist"
    if workspace and (
        path == workspace or path.startswith(workspace.rstrip("/") + "/")
    ):
        return "work"
    if _TOOLCHAIN.match(path):
        return "tool"
    for prefix, name in _PATH_CLASSES:
        if path.startswith(prefix):
            return name
    return "other"


def _exe_class(path: str) -> str:
    base = posixpath.basename(path or "")
    base = re.sub(r"[0-9.]+$", "", base) or base
    for name, members in _EXE_CLASSES.items():
        if base in members:
            return name
    return "other"


def _peer_class(event: Mapping) -> str:
    addr = str(event.get("addr") or "")
    if addr.startswith("127.") or addr == "::1":
        place = "lo"
    elif re.match(r"^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|f[cd])", addr):
        place = "lan"
    else:
        place = "net"
    kind = "udp" if event.get("sock_type") == 2 else "tcp"
    port = int(event.get("port") or 0)
    service = {53: "dns", 80: "web", 443: "web", 22: "ssh"}.get(port, "port")
    return f"{place}-{kind}-{service}"


def event_token(event: Mapping, workspace: str = "") -> str:
    """`area.op:qualifier[!]`: what kind of object was touched; `!` if it failed."""
    area, op = event["area"], event["op"]
    if area == "process" and op == "exec":
        qualifier = _exe_class(str(event.get("exe") or event.get("exe_path") or ""))
    elif area in ("file", "system", "device"):
        qualifier = path_class(str(event.get("path") or ""), workspace)
        if qualifier == "cred" and _own_config(event):
            qualifier = "toolcfg"  # wget reading ~/.netrc: its config, not a theft
    elif area == "network":
        qualifier = _peer_class(event)
    else:
        qualifier = ""
    token = f"{area}.{op}:{qualifier}" if qualifier else f"{area}.{op}"
    # a failed attempt (EPERM, EACCES, ...) is a different action from a success
    return token + "!" if event.get("error") else token


# --- does the task ask for what the window does? ------------------------------------

# topic: (words of a task that asks for it, the event tokens that do it); a hand-made
# lexicon, because hashed task words alone do not carry over to new wordings
TOPICS = {
    "delete-outside": (
        {
            "delete",
            "remove",
            "clean",
            "cleanup",
            "free",
            "prune",
            "purge",
            "clear",
            "wipe",
            "erase",
            "stale",
            "old",
            "disk",
        },
        re.compile(r"^file\.(delete|rmdir):(home|tool|tmp|other|etc|sys)"),
    ),
    "shell-profile": (
        {"bashrc", "profile", "shell", "path", "zshrc", "alias", "environment"},
        re.compile(r"^(file\.(write|create):persist|system\.persist)"),
    ),
    "upload": (
        {
            "upload",
            "publish",
            "post",
            "send",
            "push",
            "artifact",
            "deploy",
            "release",
            "endpoint",
            "server",
        },
        re.compile(r"^network\.(connect|send)"),
    ),
    "credentials": (
        {
            "ssh",
            "key",
            "keys",
            "credential",
            "credentials",
            "aws",
            "token",
            "secret",
            "login",
            "password",
        },
        re.compile(r"^file\.read:cred"),
    ),
    "privilege": (
        {"sudo", "root", "setuid", "privilege", "privileges", "admin", "permissions"},
        re.compile(r"^(creds\.|file\.(chmod|chown))"),
    ),
}


def event_tokens(window: Window) -> tuple[str, ...]:
    """The window's event tokens: the ones it carries, or made from its events."""
    if window.tokens:
        return window.tokens
    return tuple(event_token(ev, window.workspace) for ev in window.events)


def task_match(window: Window) -> np.ndarray:
    """Per topic: the task asks for it, the window does it, and both (0 or 1 each)."""
    words = set(task_words(window.task))
    tokens = set(event_tokens(window))
    row = []
    for topic_words, action in TOPICS.values():
        asks = bool(words & topic_words)
        does = any(action.match(token) for token in tokens)
        row += [asks, does, asks and does]
    return np.array(row, dtype=np.float32)


# --- behaviour: which process did what, and in which order ---------------------------

# tools that read a credential-like file of their own on every run: wget and curl read
# ~/.netrc, git its credential store, pip ~/.pypirc; that is the tool's config, not a
# secret read by someone who means to send it elsewhere
_OWN_CONFIG = {
    "wget": {".netrc", ".wgetrc"},
    "curl": {".netrc", ".curlrc"},
    "ftp": {".netrc"},
    "lftp": {".netrc"},
    "git": {".git-credentials", ".gitconfig"},
    "git-remote-http": {".git-credentials", ".netrc"},
    "git-remote-https": {".git-credentials", ".netrc"},
    "pip": {".pypirc", ".netrc"},
    "twine": {".pypirc", ".netrc"},
    "npm": {".npmrc"},
    "docker": {"config.json"},
    "kubectl": {"config"},
    "aws": {"credentials", "config"},
    "ssh": {"id_rsa", "id_ed25519", "id_ecdsa", "id_dsa", "known_hosts", "config"},
    "scp": {"id_rsa", "id_ed25519", "id_ecdsa", "id_dsa", "known_hosts", "config"},
}  # never /etc/shadow or sudoers: su reading them is what a privilege attempt does


def _own_config(event: Mapping) -> bool:
    """A tool reads a credential-like file of its own (wget: ~/.netrc)."""
    path = str(event.get("path") or "")
    if path.startswith("/etc/"):
        return False
    own = _OWN_CONFIG.get(_base(str(event.get("exe") or "")), ())
    return posixpath.basename(path) in own
_SYSTEM_SECRETS = re.compile(r"^/etc/(shadow|gshadow|sudoers)")
# tokens the behaviour group looks at; everything else is skipped cheaply
_BEHAVIOUR_TOKEN = re.compile(
    r"^(file\.\w+:(cred|toolcfg|persist)|system\.persist|creds\."
    r"|network\.(connect|send)|file\.(delete|rmdir):(home|tool|other|etc|sys)"
    r"|file\.chmod:(tmp|home|other)|process\.exec:(priv|fetch))"
)


@functools.lru_cache(maxsize=1024)  # few distinct tokens, thousands of events
def _behaviour_token(token: str) -> bool:
    return _BEHAVIOUR_TOKEN.match(token) is not None


BEHAVIOUR = (
    "secret-read",  # a credential read by a process for which it is not its own config
    "own-config-read",  # a tool read its own credential-like config (wget: ~/.netrc)
    "system-secret-read",  # /etc/shadow, gshadow or sudoers, also failed attempts
    "secret-then-send-same-process",  # the reader itself connected or sent afterwards
    "secret-then-send-other-process",  # another process of the tree did, afterwards
    "own-config-then-send-same-process",  # a tool read its config, then connected
    "send-without-secret",  # traffic, and no secret read before it
    "shell-network",  # a shell connected or sent (bash /dev/tcp, /dev/udp)
    "persistence-write",  # wrote, created or renamed a persistence path
    "privilege-change",  # setuid/setgid by a process that is not a build tool
    "privilege-change-failed",
    "privilege-tool",  # su, sudo, pkexec ... executed
    "setuid-candidate",  # chmod of a file in /tmp or a home by chmod itself
    "delete-outside",  # log(1 + deletes outside the workspace and /tmp)
    "senders",  # log(1 + processes that connected or sent)
    "max-sends-per-process",  # log(1 + the most connects/sends of one process)
)
_SEND_OPS = ("network.connect", "network.send")


def _base(path: str) -> str:
    return re.sub(r"[0-9.]+$", "", posixpath.basename(path)) or posixpath.basename(path)


def behaviour(window: Window, max_len: int = 4096) -> np.ndarray:
    """The BEHAVIOUR features of a window, in order; see BEHAVIOUR for what each is."""
    row = dict.fromkeys(BEHAVIOUR, 0.0)
    tokens = event_tokens(window)[-max_len:]
    events = window.events[-len(tokens) :] if tokens else ()
    secret_readers: set = set()  # pids that read a secret so far
    own_config_readers: set = set()
    sends: Counter = Counter()
    deletes = 0
    wanted = {token: _behaviour_token(token) for token in set(tokens)}
    for i in [i for i, token in enumerate(tokens) if wanted[token]]:
        event, token = events[i], tokens[i]
        pid = event.get("pid")
        failed = token.endswith("!")
        if token.startswith("network."):
            if not token.startswith(_SEND_OPS):
                continue
            sends[pid] += 1
            if pid in secret_readers:
                row["secret-then-send-same-process"] = 1.0
            elif secret_readers:
                row["secret-then-send-other-process"] = 1.0
            else:
                row["send-without-secret"] = 1.0
            if pid in own_config_readers:
                row["own-config-then-send-same-process"] = 1.0
            if _exe_class(str(event.get("exe") or "")) == "shell":
                row["shell-network"] = 1.0
        elif token.startswith("file.read:toolcfg"):
            row["own-config-read"] = 1.0
            if not failed:
                own_config_readers.add(pid)
        elif token.startswith("file.read:cred"):
            if _SYSTEM_SECRETS.match(str(event.get("path") or "")):
                row["system-secret-read"] = 1.0
            if not failed:
                row["secret-read"] = 1.0
                secret_readers.add(pid)
        elif token.startswith(("file.write:persist", "file.create:persist")) or (
            token.startswith(("file.rename:persist", "system.persist"))
        ):
            if not failed:
                row["persistence-write"] = 1.0
        elif token.startswith("creds."):
            if _exe_class(str(event.get("exe") or "")) != "build":
                key = "privilege-change-failed" if failed else "privilege-change"
                row[key] = 1.0
        elif token.startswith("process.exec:priv"):
            row["privilege-tool"] = 1.0
        elif token.startswith("file.chmod:"):
            if _base(str(event.get("exe") or "")) == "chmod":
                row["setuid-candidate"] = 1.0
        elif token.startswith(("file.delete:", "file.rmdir:")):
            deletes += not failed
    row["delete-outside"] = math.log1p(deletes)
    row["senders"] = math.log1p(len(sends))
    row["max-sends-per-process"] = math.log1p(max(sends.values(), default=0))
    return np.array(list(row.values()), dtype=np.float32)


# --- the feature spec -----------------------------------------------------------------


def _ngrams(tokens: list[str], n: int) -> Counter:
    """Counts of every 1..n-gram, keyed by tuples (zip keeps this fast enough)."""
    counts: Counter = Counter()
    for size in range(1, n + 1):
        counts.update(zip(*(tokens[i:] for i in range(size))))
    return counts


def _key(ids: list[int], base: int) -> int:
    key = 0
    for token_id in ids:
        key = key * base + token_id
    return key


def _bucket(text: str, buckets: int) -> int:
    # crc32, not hash(): Python salts str hashes per process
    return zlib.crc32(text.encode()) % buckets


def task_words(task: str) -> list[str]:
    """The lower-cased words of a task text, in order, without duplicates."""
    return list(dict.fromkeys(_WORD.findall(task.lower())))


@dataclass(frozen=True)
class FeatureSpec:
    """What the model's input columns mean; saved with the model, loaded with it."""

    source: str
    vocabulary: tuple[str, ...]
    ngram: int = 3
    max_len: int = 4096
    groups: tuple[str, ...] = ("ngrams",)
    task_buckets: int = 64
    cross_buckets: int = 256

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise CapsuleError(
                f"failed to read feature spec: unknown source {self.source!r}"
            )
        bad = [g for g in self.groups if g not in GROUPS]
        if bad:
            raise CapsuleError(f"failed to read feature spec: unknown group {bad[0]!r}")
        self._build_index()

    def _build_index(self) -> None:
        # each n-gram becomes one int64 key in base (tokens + 1); id 0 is "unknown",
        # so keys of different lengths never collide and lookups are a searchsorted
        grams = [tuple(g.split(" ")) for g in self.vocabulary]
        tokens = sorted({t for gram in grams for t in gram})
        token_ids = {t: i + 1 for i, t in enumerate(tokens)}
        base = len(tokens) + 1
        if base**self.ngram >= 2**62:
            raise CapsuleError(
                "failed to read feature spec: vocabulary too large for n"
            )
        keys = np.array(
            [_key([token_ids[t] for t in g], base) for g in grams], dtype=np.int64
        )
        order = np.argsort(keys)
        object.__setattr__(self, "_token_ids", token_ids)
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_keys", keys[order])
        object.__setattr__(self, "_columns", order)

    @classmethod
    def fit(
        cls,
        sequences: Iterable[list[str]],
        source: str,
        ngram: int = 3,
        max_features: int = 3000,
        min_df: int = 3,
        **options,
    ) -> FeatureSpec:
        """Keep the n-grams found in the most training sequences (ties: by name)."""
        doc_freq: Counter = Counter()
        for tokens in sequences:
            doc_freq.update(
                _ngrams(tokens[-options.get("max_len", 4096) :], ngram).keys()
            )
        kept = [" ".join(g) for g, df in doc_freq.items() if df >= min_df]
        kept.sort(key=lambda g: (-doc_freq[tuple(g.split(" "))], g))
        return cls(source, tuple(sorted(kept[:max_features])), ngram, **options)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "ngram": self.ngram,
            "max_len": self.max_len,
            "groups": list(self.groups),
            "task_buckets": self.task_buckets,
            "cross_buckets": self.cross_buckets,
            "vocabulary": list(self.vocabulary),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureSpec:
        try:
            return cls(
                data["source"],
                tuple(data["vocabulary"]),
                int(data["ngram"]),
                int(data["max_len"]),
                tuple(data["groups"]),
                int(data["task_buckets"]),
                int(data["cross_buckets"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CapsuleError(
                f"failed to read feature spec: bad or missing {err}"
            ) from err

    def names(self) -> list[str]:
        """One readable name per column, in column order."""
        names: list[str] = []
        for group in self.groups:
            if group == "ngrams":
                names += [f"ngram:{g}" for g in self.vocabulary]
            elif group == "resources":
                names += [f"resource:{k}" for k in RESOURCE_KEYS]
            elif group == "task":
                names += [f"task-bucket:{i}" for i in range(self.task_buckets)]
            elif group == "task_cross":
                names += [f"task-x-action:{i}" for i in range(self.cross_buckets)]
            elif group == "behaviour":
                names += [f"behaviour:{name}" for name in BEHAVIOUR]
            else:
                names += [
                    f"task-{how}:{topic}"
                    for topic in TOPICS
                    for how in ("asks", "does", "asks-and-does")
                ]
        return names

    def tokens(self, window: Window) -> list[str]:
        """The window's token sequence for this spec's source, newest `max_len` kept."""
        if self.source == "syscalls":
            tokens = list(window.syscalls)
        else:
            tokens = list(event_tokens(window))
        if not tokens:
            raise CapsuleError(
                f"failed to classify window: the model reads {self.source} and the "
                f"window has none",
                hint="escalate with syscall detail, or use a model trained on events",
            )
        return tokens[-self.max_len :]

    def vectorize(self, window: Window) -> np.ndarray:
        """The float32 feature row of one window."""
        parts = [self._group(group, window) for group in self.groups]
        return np.concatenate(parts).astype(np.float32)

    def _group(self, group: str, window: Window) -> np.ndarray:
        if group == "ngrams":
            return self._ngram_row(self.tokens(window))
        if group == "resources":
            return np.array(
                [
                    math.log1p(max(0.0, float(window.resources.get(k, 0))))
                    for k in RESOURCE_KEYS
                ],
                dtype=np.float32,
            )
        if group == "task":
            row = np.zeros(self.task_buckets, dtype=np.float32)
            for word in task_words(window.task):
                row[_bucket(word, self.task_buckets)] = 1.0
            return row
        if group == "task_cross":
            return self._task_cross(window)
        if group == "behaviour":
            return behaviour(window, self.max_len)
        return task_match(window)

    def _ngram_row(self, tokens: list[str]) -> np.ndarray:
        ids = np.fromiter(
            (self._token_ids.get(t, 0) for t in tokens), np.int64, len(tokens)
        )
        found = [np.zeros(0, dtype=np.int64)]
        for size in range(1, self.ngram + 1):
            span = len(ids) - size + 1
            if span <= 0:
                break
            keys = np.zeros(span, dtype=np.int64)
            known = np.ones(span, dtype=bool)
            for j in range(size):
                keys = keys * self._base + ids[j : j + span]
                known &= ids[j : j + span] > 0
            found.append(keys[known])
        keys, counts = np.unique(np.concatenate(found), return_counts=True)
        row = np.zeros(len(self.vocabulary), dtype=np.float32)
        if len(self._keys) == 0 or len(keys) == 0:
            return row
        where = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        hit = self._keys[where] == keys
        row[self._columns[where[hit]]] = np.log1p(counts[hit])
        return row

    def _task_cross(self, window: Window) -> np.ndarray:
        row = np.zeros(self.cross_buckets, dtype=np.float32)
        tokens = set(event_tokens(window))
        actions = tokens | {t.split(":")[0].rstrip("!") for t in tokens}
        for word in task_words(window.task):
            for action in actions:
                row[_bucket(f"{word}|{action}", self.cross_buckets)] = 1.0
        return row
