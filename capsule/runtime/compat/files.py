"""Translate the policy's path rules into one Landlock ruleset, soundly.

Landlock is an allow-list: a handled right is denied unless a rule on the path or on
one of its parent directories grants it, and a grant covers everything beneath. The
policy is a mix of allow and deny rules with the rule-combining of docs/architecture.md.
For each right this module finds the largest subtrees where every path beneath is
allowed by the policy and grants the right there. Where a denied path lies inside an
allowed tree, the tree is split: its existing entries are granted one by one, the
denied ones are left out. The split directory itself gets no grant, so entries that
appear in it later are denied too: the translation errs toward deny, never toward
allow, and the coverage report names every directory where it did.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from capsule.lang.model import DEFAULT_FALLBACK, Clause, Effect, Event, PathGlob, Policy
from capsule.lang.model import Rule
from capsule.lang.semantics import decide
from capsule.runtime.compat.landlock import FS

log = logging.getLogger(__name__)

SELF, PARENT = "self", "parent"  # a right on the object, or on its directory
# a file name that no literal pattern component names: stands for "any other entry"
PROBE = "\x01"


@dataclass(frozen=True)
class Use:
    """An operation whose object is the `field` path, checked by `right` at `level`."""

    area: str
    op: str
    field: str
    level: str


_MAKE_ANY = FS.MAKE_REG | FS.MAKE_DIR | FS.MAKE_SYM | FS.MAKE_SOCK | FS.MAKE_FIFO
_MAKE_NODES = FS.MAKE_REG | FS.MAKE_SOCK | FS.MAKE_FIFO | FS.MAKE_CHAR | FS.MAKE_BLOCK

# (area, op) -> [(rights, field, level)]: how the kernel checks the operation
OP_RIGHTS: dict[tuple[str, str], list[tuple[FS, str, str]]] = {
    ("file", "read"): [(FS.READ_FILE | FS.READ_DIR, "path", SELF)],
    ("file", "write"): [(FS.WRITE_FILE, "path", SELF)],
    ("file", "truncate"): [(FS.TRUNCATE, "path", SELF)],
    ("file", "exec"): [(FS.EXECUTE, "path", SELF)],
    ("process", "exec"): [(FS.EXECUTE, "path", SELF)],
    ("file", "create"): [(_MAKE_NODES, "path", PARENT)],
    ("file", "mkdir"): [(FS.MAKE_DIR, "path", PARENT)],
    ("file", "symlink"): [(FS.MAKE_SYM, "path", PARENT)],
    ("file", "delete"): [(FS.REMOVE_FILE, "path", PARENT)],
    ("file", "rmdir"): [(FS.REMOVE_DIR, "path", PARENT)],
    ("file", "rename"): [
        (FS.REMOVE_FILE | FS.REMOVE_DIR | FS.REFER, "path", PARENT),
        (_MAKE_ANY | FS.REFER, "to", PARENT),
    ],
    ("file", "link"): [
        (FS.REFER, "path", PARENT),
        (FS.MAKE_REG | FS.REFER, "to", PARENT),
    ],
    ("device", "ioctl"): [(FS.IOCTL_DEV, "path", SELF)],
}


def uses_of(right: FS) -> list[Use]:
    """Every operation that the kernel checks with this one right."""
    found = []
    for (area, op), entries in OP_RIGHTS.items():
        for rights, fld, level in entries:
            if right & rights:
                found.append(Use(area, op, fld, level))
    return found


def single_rights(rights: FS) -> list[FS]:
    return [FS(bit) for bit in FS if rights & bit]


def enforced(rule: Rule) -> Effect:
    """What the kernel applies now: an escalate rule applies its fallback."""
    return rule.enforced or DEFAULT_FALLBACK


# -- which clauses Landlock can see ----------------------------------------------------


def landlock_limit(clause: Clause) -> str | None:
    """Why Landlock cannot enforce this clause as written, or None if it can."""
    rule = clause.rule
    if not rule.subject.is_any:
        return "Landlock cannot tell processes apart (subject conditions)"
    if rule.after is not None:
        return "Landlock cannot follow taints (after)"
    fields = set(clause.object)
    if len(fields) > 1:
        return "Landlock checks one path at a time, not both path and to"
    for name in fields:
        pattern = clause.object[name]
        if isinstance(pattern, PathGlob) and deep_glob(pattern):
            return "'**' inside a pattern matches paths that may appear anywhere later"
    return None


def deep_glob(glob: PathGlob) -> bool:
    """True if `**` stands before the last component: matches at unbounded depth."""
    parts = _components(glob)
    return any(part == "**" for part in parts[:-1])


def _components(glob: PathGlob) -> list[str]:
    # `/` cannot be escaped in a pattern, so every `/` separates components
    text = glob.text[:-1] if glob.tree else glob.text
    return [part for part in text.split("/")[1:] if part]


def landlock_policy(policy: Policy, extra: Iterable[Clause] = ()) -> Policy:
    """The policy as Landlock sees it: only the clauses it can tell apart."""
    from dataclasses import replace

    keep = [
        r
        for r in policy.rules
        if r.subject.is_any
        and r.after is None
        and all(landlock_limit(c) is None for c in r.clauses())
    ]
    return replace(policy, rules=tuple(keep) + tuple(c.rule for c in extra))


# -- the paths that rules name ---------------------------------------------------------


def _is_glob(part: str) -> bool:
    escaped = False
    for char in part:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "*?":
            return True
    return False


def _unescape(part: str) -> str:
    out, escaped = [], False
    for char in part:
        if char == "\\" and not escaped:
            escaped = True
            continue
        out.append(char)
        escaped = False
    return "".join(out)


def _entries(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as listing:
            return sorted(e.name for e in listing)
    except OSError:
        return []


def _real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _exists_real(path: str) -> bool:
    try:
        return not stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _ancestors(path: str) -> list[str]:
    found = []
    while path != "/":
        path = os.path.dirname(path)
        found.append(path)
    return found


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def named_paths(glob: PathGlob) -> set[str]:
    """Existing paths on the way to what the glob names: the directories to split.

    A symbolic link is never followed: the kernel checks the resolved path, which has
    its own place in the tree.
    """
    found: set[str] = set()
    for each in glob.expand_home():
        nodes = ["/"]
        found.add("/")
        for part in _components(each):
            if part == "**":
                break  # a trailing `**`: everything below the nodes reached so far
            if _is_glob(part):
                single = PathGlob("/" + part)
                nodes = [
                    _join(n, e)
                    for n in nodes
                    if _real_dir(n)
                    for e in _entries(n)
                    if single.matches("/" + e)
                ]
            else:
                nodes = [_join(n, _unescape(part)) for n in nodes]
            nodes = [n for n in nodes if _exists_real(n)]
            found.update(nodes)
    return found


# -- granting --------------------------------------------------------------------------


@dataclass
class Translation:
    """The grants for each path, and the directories where the translation denies
    more than the policy says (new entries there get no right)."""

    grants: dict[str, FS] = field(default_factory=dict)
    split: dict[FS, set[str]] = field(default_factory=dict)
    handled: FS = FS(0)
    # denied files that have more than one name: Landlock judges a file by the path
    # it is opened through, so a hard link elsewhere is a way around the rule
    hardlinked: set[str] = field(default_factory=set)


class _Right:
    """Finds the grants for one right under one (Landlock-visible) policy."""

    def __init__(self, policy: Policy, right: FS, uses: list[Use]):
        self.policy = policy
        self.right = right
        self.uses = uses
        self.named: set[str] = set()
        for clause in policy.clauses():
            for use in uses:
                if clause.rule.area == use.area and use.op in clause.rule.ops:
                    pattern = clause.object.get(use.field)
                    if isinstance(pattern, PathGlob):
                        self.named |= named_paths(pattern)
        # the directories with a named path strictly below: these must be split
        self.inner = {os.path.dirname(p) for p in self.named if p != "/"}
        self.inner |= {a for p in self.inner for a in _ancestors(p)}

    def blocks(self, path: str) -> bool:
        for use in self.uses:
            event = Event(use.area, use.op, {use.field: path})
            if decide(self.policy, event).enforced.blocks:
                return True
        return False

    def probes(self, node: str) -> list[bool]:
        """Does the policy block the paths that a grant on `node` would cover?

        The node itself (for rights on the object), one entry below and one two
        levels below stand for every path there: no rule names anything below a node
        that is not split, so deeper paths decide like these.
        """
        paths = []
        if any(u.level == SELF for u in self.uses):
            paths.append(node)
        if _real_dir(node):  # below a file there is nothing a grant could cover
            paths += [_join(node, PROBE), _join(_join(node, PROBE), PROBE)]
        return [self.blocks(p) for p in paths]

    def grant(self, node: str, out: Translation) -> None:
        if node not in self.inner:
            blocked = self.probes(node)
            if not any(blocked):
                out.grants[node] = out.grants.get(node, FS(0)) | self.right
                return
            if all(blocked) or not _real_dir(node):
                out.hardlinked |= hard_links_below(node)
                return
        if not _real_dir(node):
            return
        out.split.setdefault(self.right, set()).add(node)
        for name in _entries(node):
            child = _join(node, name)
            if _exists_real(child):
                self.grant(child, out)


HARDLINK_SCAN_LIMIT = 5000  # entries looked at below one denied node


def hard_links_below(node: str) -> set[str]:
    """Regular files at or below `node` with more than one link (bounded walk)."""
    found: set[str] = set()
    seen = 0
    stack = [node]
    while stack and seen < HARDLINK_SCAN_LIMIT:
        path = stack.pop()
        seen += 1
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            found.add(path)
        elif stat.S_ISDIR(info.st_mode):
            stack += [_join(path, name) for name in _entries(path)]
    return found


def translate(policy: Policy, handled: FS) -> Translation:
    """The Landlock grants that enforce `policy` (already Landlock-visible)."""
    out = Translation(handled=handled)
    for right in single_rights(handled):
        uses = uses_of(right)
        if not uses:
            continue
        _Right(policy, right, uses).grant("/", out)
    return out


def handled_rights(policy: Policy, supported: FS) -> FS:
    """The rights some clause or default could deny: only those are restricted."""
    handled = FS(0)
    for right in single_rights(supported):
        for use in uses_of(right):
            if policy.default(use.area).blocks:
                handled |= right
            for clause in policy.clauses(use.area):
                if use.op in clause.rule.ops and enforced(clause.rule).blocks:
                    handled |= right
    return handled
