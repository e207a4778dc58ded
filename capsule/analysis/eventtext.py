"""Events as one line of text, for `capsule explain` and for the witnesses of findings.

    AREA OP [VALUE] [FIELD=VALUE ...] [exe=PATH] [uid=N] [cgroup=PATH]
            [ancestor=PATH ...] [taint=NAME ...]

VALUE belongs to the area's default field (names.DEFAULT_FIELD); for `network` it is
ADDR[:PORT], with an IPv6 address in brackets when a port follows. Words are split as
a shell splits them, so a path with spaces can be quoted. `format_event` writes the
same syntax, so every printed witness can be pasted into `capsule explain`.
"""

from __future__ import annotations

import ipaddress
import shlex

from capsule.errors import CapsuleError
from capsule.lang import names
from capsule.lang.model import Event

SUBJECT_KEYS = ("exe", "uid", "cgroup", "ancestor", "taint")


def parse_event(text: str) -> Event:
    """Parse one event line.

    Raises:
        CapsuleError: the text is no event; the message names the bad word.
    """
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise _error(text, f"{err}") from None
    if len(words) < 2:
        raise _error(text, "expected AREA OP [VALUE] [FIELD=VALUE ...]")
    area, op, rest = words[0], words[1], words[2:]
    if area not in names.AREAS:
        raise _error(text, f"unknown area '{area}' (one of {', '.join(names.AREAS)})")
    if op not in names.AREAS[area]:
        ops = ", ".join(names.AREAS[area])
        raise _error(text, f"area {area} has no operation '{op}' (one of {ops})")
    fields: dict = {}
    subject: dict = {"ancestor": [], "taint": []}
    for position, word in enumerate(rest, start=3):
        _take_word(text, area, word, position, fields, subject)
    if area == "file" and "path" not in fields:
        # every file operation is on a path: without one no rule could be matched
        raise _error(text, f"file {op} needs a path (file OP PATH [FIELD=VALUE ...])")
    return Event(
        area=area,
        op=op,
        fields=fields,
        exe=subject.get("exe"),
        ancestors=tuple(subject["ancestor"]),
        uid=subject.get("uid"),
        cgroup=subject.get("cgroup"),
        taints=frozenset(subject["taint"]),
    )


def _take_word(text, area, word, position, fields, subject) -> None:
    key, sep, value = word.partition("=")
    if not sep:
        default = names.DEFAULT_FIELD.get(area)
        if default is None or default in fields:
            raise _error(text, f"word {position} '{word}': expected FIELD=VALUE")
        _set_default_value(text, area, default, word, position, fields)
        return
    where = f"word {position} '{word}'"
    if key in ("ancestor", "taint"):
        subject[key].append(_subject_value(text, key, value, where))
    elif key in ("exe", "uid", "cgroup"):
        subject[key] = _subject_value(text, key, value, where)
    elif key in names.FIELDS[area]:
        fields[key] = _field_value(text, names.FIELDS[area][key], value, where)
    else:
        known = ", ".join([*names.FIELDS[area], *SUBJECT_KEYS])
        raise _error(text, f"{where}: area {area} has no field '{key}' ({known})")


def _set_default_value(text, area, field, word, position, fields) -> None:
    where = f"word {position} '{word}'"
    if area == "network":
        addr, port = _split_host_port(text, word, where)
        fields["addr"] = addr
        if port is not None:
            fields["port"] = port
        return
    fields[field] = _field_value(text, names.FIELDS[area][field], word, where)


def _split_host_port(text, word, where) -> tuple[str, int | None]:
    if word.startswith("["):
        host, _, rest = word[1:].partition("]")
        port = rest.removeprefix(":") if rest else None
    elif word.count(":") == 1:
        host, port = word.split(":")
    else:
        host, port = word, None
    address = _field_value(text, names.CIDR, host, where)
    return address, (_number(text, port, 65535, where) if port is not None else None)


def _subject_value(text, key, value, where):
    if key == "uid":
        return _number(text, value, 2**32 - 2, where)
    if key == "taint":
        if not value:
            raise _error(text, f"{where}: empty taint name")
        return value
    return _path(text, value, where)


def _field_value(text, kind, value, where):
    if kind == names.PATH:
        return _path(text, value, where)
    if kind == names.CIDR:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise _error(text, f"{where}: '{value}' is not an IP address") from None
    if kind == names.PORT:
        return _number(text, value, 65535, where)
    if kind == names.ID:
        return _number(text, value, 2**32 - 2, where)
    if kind == names.DEVICE:
        major, sep, minor = value.partition(":")
        if not (sep and major.isdigit() and minor.isdigit()):
            raise _error(text, f"{where}: expected a device as MAJOR:MINOR")
        return (int(major), int(minor))
    if kind == names.MOUNT_FLAG:
        return {flag for flag in value.split(",") if flag}
    return int(value) if value.isdigit() else value


def _path(text, value, where) -> str:
    parts = value.split("/")
    normalized = value.startswith("/") and all(
        p not in ("", ".", "..") for p in parts[1:]
    )
    if not normalized and value != "/":
        raise _error(text, f"{where}: a path must be absolute and normalized")
    return value


def _number(text, value, top, where) -> int:
    if not value.isdigit() or int(value) > top:
        raise _error(text, f"{where}: expected a number in 0-{top}")
    return int(value)


def _error(text: str, cause: str) -> CapsuleError:
    return CapsuleError(
        f"failed to parse event '{text}': {cause}",
        hint="example: file read /home/a/.ssh/id_rsa exe=/usr/bin/cat",
    )


# -------------------------------------------------------------------------- format


def format_event(event: Event, subject: tuple[str, ...] = SUBJECT_KEYS) -> str:
    """The event as parse_event reads it; `subject` picks the subject keys to show."""
    words = [event.area, event.op]
    fields = dict(event.fields)
    default = names.DEFAULT_FIELD.get(event.area)
    if event.area == "network" and "addr" in fields:
        words.append(_host_port(fields.pop("addr"), fields.pop("port", None)))
    elif default in fields:
        words.append(_value_text(fields.pop(default)))
    words += [f"{k}={_value_text(v)}" for k, v in sorted(fields.items())]
    if "exe" in subject and event.exe is not None:
        words.append(f"exe={event.exe}")
    if "uid" in subject and event.uid is not None:
        words.append(f"uid={event.uid}")
    if "cgroup" in subject and event.cgroup is not None:
        words.append(f"cgroup={event.cgroup}")
    if "ancestor" in subject:
        words += [f"ancestor={a}" for a in event.ancestors]
    if "taint" in subject:
        words += [f"taint={t}" for t in sorted(event.taints)]
    return " ".join(shlex.quote(w) for w in words)


def _host_port(addr, port) -> str:
    host = str(addr)
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _value_text(value) -> str:
    if isinstance(value, tuple):
        return f"{value[0]}:{value[1]}"
    if isinstance(value, (set, frozenset)):
        return ",".join(sorted(value))
    return str(value)
