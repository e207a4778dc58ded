"""Build model.Policy objects in the analysis tests without the parser: one call per
rule. (Not named policies.py: tests/codegen has a module of that name.)"""

from capsule.lang import names
from capsule.lang.model import (
    After,
    Effect,
    Location,
    ObjectPattern,
    Policy,
    Rule,
    Subject,
)
from capsule.lang.patterns import parse_pattern


def rule(
    line,
    effect,
    area,
    ops,
    *objects,
    priority=0,
    fallback=None,
    after=None,
    file="coding.cap",
    **subject,
):
    """A rule at file:line; each object is "VALUE" (the default field) or a dict."""
    parsed = []
    for obj in objects:
        items = obj if isinstance(obj, dict) else {names.DEFAULT_FIELD[area]: obj}
        parsed.append(
            ObjectPattern(
                {f: parse_pattern(names.FIELDS[area][f], v) for f, v in items.items()}
            )
        )
    subj = Subject(
        **{
            k: tuple(parse_pattern(names.SUBJECT_FIELDS[k], v) for v in vs)
            for k, vs in subject.items()
        }
    )
    effect = Effect(effect)
    if effect is Effect.ESCALATE and fallback is None:
        fallback = Effect.AUDIT
    taint = None
    if after is not None:
        taint = After(after, "file", frozenset({"read"}), (), Location(file, 1, 1))
    return Rule(
        loc=Location(file, line, 1),
        effect=effect,
        fallback=Effect(fallback) if isinstance(fallback, str) else fallback,
        area=area,
        ops=frozenset(ops.split(",")),
        objects=tuple(parsed),
        subject=subj,
        after=taint,
        priority=priority,
    )


def policy(*rules, **defaults):
    return Policy(
        rules=tuple(rules), defaults={a: Effect(e) for a, e in defaults.items()}
    )
