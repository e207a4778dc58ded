"""Give parsed files their meaning: resolve names and lists, validate every value and
build the resolved Policy, reporting each problem as a Diagnostic.

All files of one policy share one namespace for `let` and `taint` names.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from capsule.lang import names
from capsule.lang import syntax as ast
from capsule.lang.diagnostics import ERROR, WARNING, Diagnostic, Related
from capsule.lang.model import (
    DEFAULT_FALLBACK,
    After,
    Effect,
    Location,
    ObjectPattern,
    Policy,
    Rule,
    Subject,
)
from capsule.lang.parser import unescape
from capsule.lang.patterns import Pattern, PatternError, parse_pattern

MAX_CLAUSES = 100_000  # per rule; lists multiply, and codegen pays per clause
MAX_DEFINITION_DEPTH = 50
PRIORITY_RANGE = range(-1000, 1001)
_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_PATTERN_CODES = {
    names.PATH: "bad-glob",
    names.CIDR: "bad-cidr",
    names.PORT: "bad-port",
    names.ID: "bad-id",
    names.CAPABILITY: "unknown-capability",
    names.SIGNAL: "unknown-signal",
    names.NAMESPACE: "unknown-namespace",
    names.PROTOCOL: "unknown-protocol",
    names.MOUNT_FLAG: "unknown-mount-flag",
    names.FSTYPE: "bad-fstype",
    names.DEVICE: "bad-device",
}


@dataclass(frozen=True, slots=True)
class Resolved:
    """A value after `$name` expansion, with the value that wrote its text."""

    text: str
    origin: ast.Value

    @property
    def loc(self) -> Location:
        return self.origin.loc

    @property
    def length(self) -> int:
        return self.origin.length


class Checker:
    """Checks the files of one policy; `check()` returns the Policy and findings."""

    def __init__(
        self,
        files: Iterable[ast.FileSyntax],
        paths: tuple[str, ...] = (),
        roots: Iterable[str] | None = None,
    ):
        self.files = list(files)
        self.paths = paths or tuple(f.path for f in self.files)
        # unused names are reported only in these files: an included file is a
        # library, and its user may need only part of it
        self.roots = set(self.paths if roots is None else roots)
        self.diags: list[Diagnostic] = []
        self.lets: dict[str, ast.Let] = {}
        self.taint_defs: dict[str, ast.TaintDef] = {}
        self.used: set[str] = set()
        self._expanded: dict[str, tuple[Resolved, ...]] = {}
        self._expanding: list[str] = []
        self._taints: dict[str, After] = {}

    # -- reporting

    def error(
        self,
        code: str,
        loc: Location,
        message: str,
        length: int = 1,
        related: tuple[Related, ...] = (),
    ) -> None:
        self.diags.append(
            Diagnostic(ERROR, code, message, loc, related, max(1, length))
        )

    def warning(self, code: str, loc: Location, message: str, length: int = 1) -> None:
        self.diags.append(Diagnostic(WARNING, code, message, loc, (), max(1, length)))

    # -- the steps

    def check(self) -> tuple[Policy, list[Diagnostic]]:
        statements = [s for f in self.files for s in f.statements]
        self._collect_definitions(statements)
        taints = {name: self._taint(d) for name, d in self.taint_defs.items()}
        self._taints = {k: v for k, v in taints.items() if v is not None}
        rules = [self._rule(s) for s in statements if isinstance(s, ast.RuleSyntax)]
        defaults, fallbacks = self._defaults(statements)
        settings = self._settings(statements)
        self._report_unused()
        policy = Policy(
            rules=tuple(r for r in rules if r is not None),
            defaults=defaults,
            settings=settings,
            files=self.paths,
            default_fallbacks=fallbacks,
        )
        return policy, _unique_sorted(self.diags)

    def _collect_definitions(self, statements: list[ast.Statement]) -> None:
        seen: dict[str, ast.Word] = {}
        for stmt in statements:
            if not isinstance(stmt, (ast.Let, ast.TaintDef)):
                continue
            word = stmt.name
            if word.text in seen:
                first = seen[word.text]
                self.error(
                    "duplicate-definition",
                    word.loc,
                    f"'{word.text}' is already defined",
                    len(word.text),
                    (Related(first.loc, f"'{word.text}' was first defined here"),),
                )
                continue
            seen[word.text] = word
            table = self.lets if isinstance(stmt, ast.Let) else self.taint_defs
            table[word.text] = stmt

    def _report_unused(self) -> None:
        for name, let in self.lets.items():
            if name not in self.used and let.loc.file in self.roots:
                self.warning(
                    "unused-definition",
                    let.name.loc,
                    f"'{name}' is defined but never used",
                    len(name),
                )
        for name, taint in self.taint_defs.items():
            if name not in self.used and taint.loc.file in self.roots:
                self.warning(
                    "unused-taint",
                    taint.name.loc,
                    f"taint '{name}' is defined but no rule waits for it",
                    len(name),
                )

    # -- values and names

    def expand(self, items: Iterable[ast.Item]) -> list[Resolved]:
        """Flatten lists and replace `$name` (with any suffix) by the name's values."""
        out: list[Resolved] = []
        for item in items:
            values = item.items if isinstance(item, ast.ListValue) else (item,)
            for value in values:
                if value.quoted or not value.text.startswith("$"):
                    out.append(Resolved(value.text, value))  # most values: no `$`
                else:
                    out.extend(self._expand_value(value))
        return out

    def _expand_value(self, value: ast.Value) -> list[Resolved]:
        ref = None if value.quoted else _REF.match(value.text)
        if ref is None:
            return [Resolved(value.text, value)]
        name = ref.group(1) or ref.group(2)
        suffix = value.text[ref.end() :]
        found = self._let_values(name, value.loc, ref.end())
        if not suffix:
            return list(found)
        return [Resolved(v.text + suffix, value) for v in found]

    def _let_values(
        self, name: str, loc: Location, length: int
    ) -> tuple[Resolved, ...]:
        self.used.add(name)
        if name in self._expanded:
            return self._expanded[name]
        let = self.lets.get(name)
        if let is None:
            what = "a taint, not a list" if name in self.taint_defs else "not defined"
            self.error("undefined-name", loc, f"'${name}' is {what}", length)
            return ()
        if name in self._expanding:
            chain = " -> ".join(self._expanding[self._expanding.index(name) :] + [name])
            self.error(
                "definition-cycle",
                let.name.loc,
                f"'{name}' refers to itself: {chain}",
                len(name),
            )
            return ()
        if len(self._expanding) >= MAX_DEFINITION_DEPTH:
            self.error(
                "definition-cycle",
                loc,
                f"definitions refer to each other more "
                f"than {MAX_DEFINITION_DEPTH} levels deep",
                length,
            )
            return ()
        self._expanding.append(name)
        values = tuple(self.expand(let.items))
        self._expanding.pop()
        self._expanded[name] = values
        return values

    def _values(self, obj: ast.ObjectSyntax, what: str) -> list[Resolved]:
        """The expanded values of a field; an empty list is an error, unless a broken
        reference already explains it."""
        errors = len(self.diags)
        values = self.expand(obj.items)
        if not values and len(self.diags) == errors:
            self.error(
                "empty-list",
                obj.loc,
                f"{what} has no values; an empty list would match nothing",
            )
        return values

    def patterns(self, kind: str, values: list[Resolved]) -> list[Pattern]:
        out: dict[Pattern, None] = {}  # ordered and without duplicates
        for value in values:
            try:
                out[parse_pattern(kind, value.text)] = None
            except PatternError as err:
                self.error(_PATTERN_CODES[kind], value.loc, str(err), value.length)
        return list(out)

    # -- rules

    def _effect(self, syntax: ast.EffectSyntax) -> tuple[Effect, Effect | None]:
        effect = Effect(syntax.effect.text)
        fallback = syntax.fallback
        if fallback is None:
            return effect, DEFAULT_FALLBACK if effect is Effect.ESCALATE else None
        if effect is not Effect.ESCALATE:
            self.error(
                "bad-fallback",
                fallback.loc,
                f"only escalate takes a fallback effect, not {effect}",
                len(fallback.text),
            )
            return effect, None
        if fallback.text == "escalate":
            self.error(
                "bad-fallback",
                fallback.loc,
                "escalate cannot fall back to escalate; use allow, audit, deny or kill",
                8,
            )
            return effect, DEFAULT_FALLBACK
        return effect, Effect(fallback.text)

    def _area(self, word: ast.Word) -> str | None:
        if word.text in names.AREAS:
            return word.text
        self.error(
            "unknown-area",
            word.loc,
            f"unknown area '{word.text}'" + _suggest(word.text, names.AREAS),
            len(word.text),
        )
        return None

    def _ops(self, area: str, words: tuple[ast.Word, ...]) -> frozenset[str]:
        known = names.AREAS[area]
        ops: set[str] = set()
        for word in words:
            if word.text in ("*", "any"):
                ops.update(known)
            elif word.text in known:
                ops.add(word.text)
            else:
                self.error(
                    "unknown-operation",
                    word.loc,
                    f"unknown operation '{word.text}' for area {area}"
                    + _suggest(word.text, known, f"; {area} has: {', '.join(known)}"),
                    len(word.text),
                )
        return frozenset(ops)

    def _objects(
        self, area: str, objs: tuple[ast.ObjectSyntax, ...]
    ) -> tuple[ObjectPattern, ...] | None:
        fields: dict[str, list[Pattern]] = {}
        index = 0
        while index < len(objs):
            obj = objs[index]
            index += 1
            if index < len(objs) and objs[index].field is None:
                self._missing_comma(area, objs[index], obj)
                index += 1
                fields.setdefault("", [])  # the rule is broken: build no objects
                continue
            field = self._object_field(area, obj)
            if field is None:
                fields.setdefault("", [])
                continue
            if field in fields:
                where = obj.field.loc if obj.field else obj.loc
                self.error(
                    "duplicate-field",
                    where,
                    f"field '{field}' is given twice; list its values with ','",
                    len(field),
                )
                continue
            values = self._values(obj, f"field '{field}'")
            fields[field] = self.patterns(names.FIELDS[area][field], values)
        if any(not patterns for patterns in fields.values()):
            return None
        return self._product(fields, objs[0].loc if objs else None)

    def _object_field(self, area: str, obj: ast.ObjectSyntax) -> str | None:
        known = names.FIELDS[area]
        if obj.field is None:
            field = names.DEFAULT_FIELD.get(area)
            if field is None:
                self.error(
                    "no-default-field",
                    obj.loc,
                    f"area {area} needs a field name "
                    f"before a value: one of {', '.join(known)}",
                )
            return field
        if obj.field.text not in known:
            self.error(
                "unknown-field",
                obj.field.loc,
                f"area {area} has no field "
                f"'{obj.field.text}'; its fields: {', '.join(known)}",
                len(obj.field.text),
            )
            return None
        return obj.field.text

    def _missing_comma(
        self, area: str, obj: ast.ObjectSyntax, previous: ast.ObjectSyntax
    ) -> None:
        """`host example.org`: a word meant as a field, or two values without ','."""
        last = previous.items[-1]
        if (
            previous.field is None
            and isinstance(last, ast.Value)
            and not last.quoted
            and re.fullmatch(r"[a-z][a-z_-]*", last.text)
        ):
            known = ", ".join(names.FIELDS[area])
            self.error(
                "unknown-field",
                last.loc,
                f"area {area} has no field '{last.text}'; its fields: {known}",
                len(last.text),
            )
            return
        self.error(
            "syntax-error",
            obj.loc,
            "unexpected value; separate values with ',' or name a field before them",
        )

    def _product(
        self, fields: dict[str, list[Pattern]], loc: Location | None
    ) -> tuple[ObjectPattern, ...] | None:
        if not fields:
            return ()
        count = 1
        for patterns in fields.values():
            count *= len(patterns)
        if count > MAX_CLAUSES:
            self.error(
                "too-many-clauses",
                loc,
                f"the lists of this rule expand to "
                f"{count} clauses, more than {MAX_CLAUSES}",
            )
            return None
        keys = list(fields)
        if len(keys) == 1:  # most rules name one field: no product to form
            (key,) = keys
            return tuple(ObjectPattern({key: pattern}) for pattern in fields[key])
        return tuple(
            ObjectPattern(dict(zip(keys, combo, strict=True)))
            for combo in itertools.product(*(fields[k] for k in keys))
        )

    def _subject(self, conditions: tuple[ast.ObjectSyntax, ...]) -> Subject | None:
        found: dict[str, tuple[Pattern, ...]] = {}
        ok = True
        for cond in conditions:
            field = cond.field.text
            if field in found:
                self.error(
                    "duplicate-field",
                    cond.field.loc,
                    f"condition '{field}' is given twice; list its values with ','",
                    len(field),
                )
                continue
            values = self._values(cond, f"condition '{field}'")
            patterns = self.patterns(names.SUBJECT_FIELDS[field], values)
            ok = ok and bool(patterns)
            found[field] = tuple(patterns)
        return Subject(**found) if ok else None

    def _after(self, after: ast.Word | ast.Trigger | None) -> After | None | bool:
        """The rule's taint; False if it is broken (the rule is then dropped)."""
        if after is None:
            return None
        if isinstance(after, ast.Trigger):
            return self._trigger(after, after.text) or False
        name = after.text.removeprefix("$")
        self.used.add(name)
        if name in self._taints:
            return self._taints[name]
        if name not in self.taint_defs:
            what = "a list, not a taint" if name in self.lets else "not defined"
            self.error(
                "undefined-name",
                after.loc,
                f"taint '{name}' is {what}",
                len(after.text),
            )
        return False

    def _taint(self, taint: ast.TaintDef) -> After | None:
        return self._trigger(taint.trigger, taint.name.text)

    def _trigger(self, trigger: ast.Trigger, name: str) -> After | None:
        area = self._area(trigger.area)
        if area is None:
            return None
        ops = self._ops(area, trigger.ops)
        objects = self._objects(area, trigger.objects)
        if not ops or objects is None:
            return None
        return After(name, area, ops, objects, trigger.loc)

    def _rule(self, rule: ast.RuleSyntax) -> Rule | None:
        effect, fallback = self._effect(rule.effect)
        for word in rule.repeated:
            self.error(
                "duplicate-field",
                word.loc,
                f"'{word.text}' is given twice in one rule",
                len(word.text),
            )
        area = self._area(rule.area)
        if area is None:
            return None
        ops = self._ops(area, rule.ops)
        objects = self._objects(area, rule.objects)
        subject = self._subject(rule.conditions)
        after = self._after(rule.after)
        meta = self._metadata(rule)
        if not ops or objects is None or subject is None or after is False or not meta:
            return None
        return Rule(
            loc=rule.loc,
            effect=effect,
            fallback=fallback,
            area=area,
            ops=ops,
            objects=objects,
            subject=subject,
            after=after,
            text=rule.text,
            **meta,
        )

    def _metadata(self, rule: ast.RuleSyntax) -> dict | None:
        meta: dict = {"tags": tuple(unescape(v.text) for v in self.expand(rule.tags))}
        ok = True
        if rule.priority is not None:
            priority = int(rule.priority.text)
            if priority not in PRIORITY_RANGE:
                ok = False
                self.error(
                    "bad-priority",
                    rule.priority.loc,
                    f"priority {priority} is outside -1000..1000",
                    len(rule.priority.text),
                )
            meta["priority"] = priority
        if rule.severity is not None:
            if rule.severity.text not in names.SEVERITIES:
                ok = False
                self.error(
                    "bad-severity",
                    rule.severity.loc,
                    f"unknown severity "
                    f"'{rule.severity.text}'; use one of "
                    f"{', '.join(names.SEVERITIES)}",
                    len(rule.severity.text),
                )
            meta["severity"] = rule.severity.text
        if rule.message is not None:
            meta["message"] = rule.message.text
        return meta if ok else None

    # -- defaults and settings

    def _defaults(
        self, statements: list[ast.Statement]
    ) -> tuple[dict[str, Effect], dict[str, Effect]]:
        chosen: dict[str, tuple[Effect, Effect | None, Location]] = {}
        for stmt in statements:
            if not isinstance(stmt, ast.Default):
                continue
            effect, fallback = self._effect(stmt.effect)
            areas = [self._area(w) for w in stmt.areas] if stmt.areas else ["*"]
            for area in filter(None, areas):
                if area in chosen:
                    what = "every area" if area == "*" else f"area {area}"
                    self.error(
                        "duplicate-default",
                        stmt.loc,
                        f"{what} already has a default",
                        7,
                        (Related(chosen[area][2], "the first default is here"),),
                    )
                    continue
                chosen[area] = (effect, fallback, stmt.loc)
        defaults, fallbacks = {}, {}
        for area in names.AREAS:
            pick = chosen.get(area) or chosen.get("*")
            if pick:
                defaults[area] = pick[0]
                if pick[1] is not None:
                    fallbacks[area] = pick[1]
        return defaults, fallbacks

    def _settings(self, statements: list[ast.Statement]) -> dict[str, str]:
        settings: dict[str, str] = {}
        first: dict[str, Location] = {}
        for stmt in statements:
            if not isinstance(stmt, ast.Setting):
                continue
            key, value = stmt.key.text, unescape(stmt.value.text)
            if key in first:
                self.error(
                    "duplicate-setting",
                    stmt.key.loc,
                    f"setting '{key}' is given twice",
                    len(key),
                    (Related(first[key], "first set here"),),
                )
                continue
            first[key] = stmt.key.loc
            if key not in names.SETTINGS:
                self.warning(
                    "unknown-setting",
                    stmt.key.loc,
                    f"unknown setting "
                    f"'{key}'"
                    + _suggest(
                        key,
                        names.SETTINGS,
                        "; known settings: " + ", ".join(names.SETTINGS),
                    ),
                    len(key),
                )
                continue
            allowed = names.SETTINGS[key]
            if allowed is not None and value not in allowed:
                self.error(
                    "bad-setting",
                    stmt.value.loc,
                    f"setting '{key}' takes {' or '.join(allowed)}, not '{value}'",
                    stmt.value.length,
                )
                continue
            if key == "escalate-policy":
                # like include: a path relative to the file that names it
                value = os.path.normpath(
                    os.path.join(os.path.dirname(str(stmt.loc.file)), value)
                )
            settings[key] = value
        if settings.get("escalate-action") == "switch" and (
            "escalate-policy" not in settings
        ):
            loc = first["escalate-action"]
            self.error(
                "missing-escalate-policy",
                loc,
                "escalate-action switch needs the stricter policy: "
                'set escalate-policy = "FILE"',
                len("escalate-action"),
            )
        return settings


def _suggest(word: str, choices: Iterable[str], otherwise: str = "") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else otherwise


def _unique_sorted(diags: list[Diagnostic]) -> list[Diagnostic]:
    # a bad value in a list is reported once, however many rules use the list
    unique = list(dict.fromkeys(diags))
    return sorted(unique, key=Diagnostic.sort_key)


def check(
    files: list[ast.FileSyntax],
    paths: tuple[str, ...] = (),
    roots: Iterable[str] | None = None,
) -> tuple[Policy, list[Diagnostic]]:
    """Check parsed files as one policy; `roots` are the files not included."""
    return Checker(files, paths, roots).check()
