"""A symbolic event of one area, and each clause's match set as a z3 formula over it.

`SymbolicEvent` holds one z3 variable per thing a clause can test (operation, object
fields, subject, taints); `matches(clause)` mirrors `Clause.matches` in
capsule/lang/model.py, and `witness(model)` turns a z3 model back into a model.Event
that semantics.decide accepts, so every finding can be replayed.
"""

from __future__ import annotations

import functools

import z3

from capsule.analysis import encode
from capsule.lang import names
from capsule.lang.model import (
    Cidr,
    Clause,
    DeviceNumber,
    Event,
    IdRange,
    Name,
    PathGlob,
    PortRange,
    Subject,
    device_class_numbers,
)
from capsule.lang.patterns import MAX_UID

# Object fields that only some operations carry; every other field of an area is
# always present. A clause that names a field the event lacks does not match it.
FIELD_OPS = {
    ("file", "to"): {"rename", "link", "symlink"},
    ("creds", "uid"): {"setuid"},
    ("creds", "gid"): {"setgid"},
    ("creds", "cap"): {"capset"},
    ("creds", "path"): {"setid-exec"},
}
# Fields an event of the area may lack whatever the operation.
OPTIONAL_FIELDS = {
    ("ipc", "path"),
    ("ipc", "target"),
    ("device", "path"),
    ("system", "fstype"),
    ("system", "flags"),
    ("namespace", "path"),
    ("signal", "target"),
}

MAJOR_MAX, MINOR_MAX = 4095, 1048575
_VOCABULARY = {
    names.CAPABILITY: lambda: [f"CAP_{n}" for n in names.CAPABILITIES],
    names.SIGNAL: lambda: [f"SIG{n}" for n in names.SIGNALS],
    names.NAMESPACE: lambda: list(names.NAMESPACES),
    names.PROTOCOL: lambda: list(names.PROTOCOLS),
}
# Values that stand for "none of the names" in a witness event.
_OTHER_VALUE = {names.CAPABILITY: 63, names.SIGNAL: 33, names.NAMESPACE: "other"}


class SymbolicEvent:
    """z3 variables for one event of `area`; `clauses` fixes the closed sets.

    Ancestors are a set of executables of any size; `ancestor_slots` of them are
    enough to satisfy or refute as many distinct ancestor patterns, so the
    encoding is exact with one slot per distinct pattern.
    """

    def __init__(self, area: str, clauses, ancestor_slots: int | None = None):
        self.area = area
        self.ops = names.AREAS[area]
        self.op = z3.Int("op")
        clauses = list(clauses)
        self._enums = self._make_enums(clauses)
        self.fields = {f: self._field_var(f, k) for f, k in names.FIELDS[area].items()}
        self.present = {f: z3.Bool(f"has_{f}") for f in names.FIELDS[area]}
        self.exe, self.cgroup = z3.String("exe"), z3.String("cgroup")
        self.uid = z3.Int("subject_uid")
        slots = ancestor_slots
        if slots is None:
            slots = len({p for c in clauses for p in c.rule.subject.ancestor})
        self.ancestors = [z3.String(f"ancestor{i}") for i in range(slots)]
        self.ancestor_count = z3.Int("ancestor_count")
        taint_names = sorted({c.rule.after.name for c in clauses if c.rule.after})
        self.taints = {t: z3.Bool(f"taint_{t}") for t in taint_names}

    # -- variables and their domains ---------------------------------------------

    def _make_enums(self, clauses) -> dict[str, encode.Enumeration]:
        fstypes = {
            p.value
            for c in clauses
            for p in c.object.values()
            if isinstance(p, Name) and p.kind == names.FSTYPE
        }
        enums = dict(_closed_enums())
        enums[names.FSTYPE] = encode.Enumeration(names.FSTYPE, fstypes)
        return enums

    def _field_var(self, field: str, kind: str):
        if kind == names.PATH:
            return z3.String(field)
        if kind == names.CIDR:
            return z3.BitVec(field, encode.ADDR_BITS)
        if kind == names.PORT:
            return z3.BitVec(field, encode.PORT_BITS)
        if kind == names.ID:
            return z3.Int(field)
        if kind == names.DEVICE:
            return (z3.Int(f"{field}_major"), z3.Int(f"{field}_minor"))
        if kind == names.MOUNT_FLAG:
            return z3.BitVec(field, len(names.MOUNT_FLAGS))
        return self._enums[kind].var(field)

    def domain(self, clauses) -> list[z3.BoolRef]:
        """Constraints every real event satisfies (normalized paths, id ranges, ...).

        Only the path variables that `clauses` (those in the query) test are
        constrained: the others take no part, and a witness gives them "/". The path
        alphabet is cut down to what `clauses` name; see encode.path_domain for why
        that loses no solutions.
        """
        literals = frozenset(_path_literals(clauses))
        named = {field for clause in clauses for field in clause.object}
        used = {key for clause in clauses for key in _subject_keys(clause.rule.subject)}
        out = [self.op >= 0, self.op < len(self.ops)]
        for field, kind in names.FIELDS[self.area].items():
            out.append(self._presence(field))
            if kind != names.PATH or field in named:
                out.extend(self._value_domain(self.fields[field], kind, literals))
        paths = [self.exe] * ("exe" in used) + [self.cgroup] * ("cgroup" in used)
        paths += self.ancestors if "ancestor" in used else []
        out += [encode.path_domain(path, literals) for path in paths]
        out.append(z3.And(self.uid >= 0, self.uid <= MAX_UID))
        slots = len(self.ancestors)
        out.append(z3.And(self.ancestor_count >= 0, self.ancestor_count <= slots))
        return out

    def _presence(self, field: str) -> z3.BoolRef:
        has = self.present[field]
        ops = FIELD_OPS.get((self.area, field))
        if ops is not None:
            return has == self.op_in(ops)
        if (self.area, field) in OPTIONAL_FIELDS:
            return z3.BoolVal(True)
        return has

    def _value_domain(self, var, kind: str, literals) -> list[z3.BoolRef]:
        if kind == names.PATH:
            return [encode.path_domain(var, literals)]
        if kind == names.ID:
            return [var >= 0, var <= MAX_UID]
        if kind == names.DEVICE:
            major, minor = var
            return [major >= 0, major <= MAJOR_MAX, minor >= 0, minor <= MINOR_MAX]
        return []

    # -- match sets --------------------------------------------------------------

    def op_in(self, ops) -> z3.BoolRef:
        wanted = [self.ops.index(op) for op in sorted(ops) if op in self.ops]
        return z3.Or(*[self.op == i for i in wanted]) if wanted else z3.BoolVal(False)

    def matches(self, clause: Clause) -> z3.BoolRef:
        """The clause's match set, as Clause.matches decides it."""
        rule = clause.rule
        if rule.area != self.area:
            return z3.BoolVal(False)
        parts = [self.op_in(rule.ops)]
        if rule.after is not None:
            parts.append(self.taints[rule.after.name])
        for field, pattern in clause.object.items():
            parts.append(self.present[field])
            parts.append(self.pattern(self.fields[field], pattern))
        parts.append(self.subject(rule.subject))
        return z3.And(*parts)

    def subject(self, subject: Subject) -> z3.BoolRef:
        parts = []
        if subject.exe:
            parts.append(z3.Or(*[self.pattern(self.exe, p) for p in subject.exe]))
        if subject.uid:
            parts.append(z3.Or(*[self.pattern(self.uid, p) for p in subject.uid]))
        if subject.cgroup:
            parts.append(z3.Or(*[self.pattern(self.cgroup, p) for p in subject.cgroup]))
        if subject.ancestor:
            parts.append(self._some_ancestor(subject.ancestor))
        return z3.And(*parts) if parts else z3.BoolVal(True)

    def _some_ancestor(self, patterns) -> z3.BoolRef:
        return z3.Or(
            *[
                z3.And(self.ancestor_count > i, self.pattern(var, p))
                for i, var in enumerate(self.ancestors)
                for p in patterns
            ],
            z3.BoolVal(False),
        )

    def pattern(self, var, pattern) -> z3.BoolRef:
        """One field pattern (model.Pattern) applied to its variable."""
        if isinstance(pattern, PathGlob):
            return encode.glob_matches(var, pattern.text)
        if isinstance(pattern, Cidr):
            return encode.in_cidr(var, pattern.network)
        if isinstance(pattern, PortRange):
            return encode.in_port_range(var, pattern.lo, pattern.hi)
        if isinstance(pattern, IdRange):
            return encode.in_id_range(var, pattern.lo, pattern.hi)
        if isinstance(pattern, DeviceNumber):
            return _device_matches(var, pattern)
        if isinstance(pattern, Name):
            return self._name_matches(var, pattern)
        raise encode.EncodeError(f"no encoding for pattern {pattern!r}")

    def _name_matches(self, var, name: Name) -> z3.BoolRef:
        if name.kind == "device-class":
            numbers = device_class_numbers(name.value)
            return z3.Or(*[_device_matches(var, d) for d in numbers])
        if name.kind == names.MOUNT_FLAG:
            bit = list(names.MOUNT_FLAGS).index(name.value)
            return z3.Extract(bit, bit, var) == 1
        return var == self._enums[name.kind].value(name.value)

    # -- decisions ---------------------------------------------------------------

    def decision(self, ranked, default_code: int, code_of) -> z3.ArithRef:
        """The decision as an integer code: an if-chain over `ranked` clauses
        (strongest first, as semantics.matching_clauses sorts them)."""
        term = z3.IntVal(default_code)
        for clause in reversed(ranked):
            term = z3.If(self.matches(clause), z3.IntVal(code_of(clause)), term)
        return term

    # -- witnesses ---------------------------------------------------------------

    def witness(self, model: z3.ModelRef) -> Event:
        """The concrete event a model describes, as semantics.decide takes it."""
        op = self.ops[model.eval(self.op, model_completion=True).as_long()]
        fields = {}
        for field, kind in names.FIELDS[self.area].items():
            if z3.is_true(model.eval(self.present[field], model_completion=True)):
                fields[field] = self._value(model, self.fields[field], kind)
        count = model.eval(self.ancestor_count, model_completion=True).as_long()
        return Event(
            area=self.area,
            op=op,
            fields=fields,
            exe=self._string(model, self.exe),
            ancestors=tuple(self._string(model, a) for a in self.ancestors[:count]),
            uid=model.eval(self.uid, model_completion=True).as_long(),
            cgroup=self._string(model, self.cgroup),
            taints=frozenset(
                t for t, v in self.taints.items() if z3.is_true(model.eval(v, True))
            ),
        )

    def _string(self, model, var) -> str:
        value = encode.string_value(model.eval(var, model_completion=True))
        return value or "/"  # unconstrained: any path will do

    def _value(self, model, var, kind: str):
        if kind == names.PATH:
            return self._string(model, var)
        if kind == names.CIDR:
            return encode.addr_text(model.eval(var, True).as_long())
        if kind in (names.PORT, names.ID):
            return model.eval(var, True).as_long()
        if kind == names.DEVICE:
            return tuple(model.eval(v, True).as_long() for v in var)
        if kind == names.MOUNT_FLAG:
            bits = model.eval(var, True).as_long()
            return {f for i, f in enumerate(names.MOUNT_FLAGS) if bits >> i & 1}
        name = self._enums[kind].name_of(model.eval(var, True))
        if name == encode.OTHER:
            return _OTHER_VALUE.get(kind, "other-" + kind)
        return name

    def fix(self, event: Event) -> list[z3.BoolRef]:
        """Constraints that pin the symbolic event to one concrete event."""
        out = [self.op == self.ops.index(event.op)]
        for field, kind in names.FIELDS[self.area].items():
            value = event.fields.get(field)
            out.append(self.present[field] == (value is not None))
            if value is not None:
                out.append(self._equals(self.fields[field], kind, value))
        for var, value in ((self.exe, event.exe), (self.cgroup, event.cgroup)):
            out.append(var == encode.string_literal(value or ""))
        out.append(self.uid == (event.uid if event.uid is not None else -1))
        out.append(self.ancestor_count == len(event.ancestors))
        for var, value in zip(self.ancestors, event.ancestors):
            out.append(var == encode.string_literal(value))
        for name, var in self.taints.items():
            out.append(var == (name in event.taints))
        return out

    def _equals(self, var, kind: str, value) -> z3.BoolRef:
        if kind == names.PATH:
            return var == encode.string_literal(str(value))
        if kind == names.CIDR:
            return var == encode.addr_int(str(value))
        if kind in (names.PORT, names.ID):
            return var == int(value)
        if kind == names.DEVICE:
            return z3.And(var[0] == value[0], var[1] == value[1])
        if kind == names.MOUNT_FLAG:
            bits = sum(1 << i for i, f in enumerate(names.MOUNT_FLAGS) if f in value)
            return var == bits
        enum = self._enums[kind]
        named = [
            n for n in enum.names if n != encode.OTHER and Name(kind, n).matches(value)
        ]
        return var == enum.value(named[0] if named else encode.OTHER)


@functools.cache
def _closed_enums() -> dict[str, encode.Enumeration]:
    # made once: each z3 enumeration sort lives as long as the z3 context
    return {
        kind: encode.Enumeration(kind, make()) for kind, make in _VOCABULARY.items()
    }


def _device_matches(var, device: DeviceNumber) -> z3.BoolRef:
    major, minor = var
    if device.minor is None:
        return major == device.major
    return z3.And(major == device.major, minor == device.minor)


def _subject_keys(subject: Subject) -> list[str]:
    return [k for k in ("exe", "ancestor", "uid", "cgroup") if getattr(subject, k)]


def _path_literals(clauses) -> set[str]:
    chars: set[str] = set()
    for clause in clauses:
        subject = clause.rule.subject
        globs = [p for p in clause.object.values() if isinstance(p, PathGlob)]
        globs += [*subject.exe, *subject.ancestor, *subject.cgroup]
        for glob in globs:
            chars |= encode.glob_literals(glob.text)
    return chars
