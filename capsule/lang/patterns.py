"""Object and subject patterns: what one field of a rule matches, with exact semantics.

Every pattern is a frozen value with `matches(value)` and `specificity()`. Parsing
functions raise PatternError with a message meant for the user; the checker turns it
into a diagnostic at the value's location.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from dataclasses import dataclass

from capsule.lang import names

_MAPPED_V4 = 0xFFFF_0000_0000  # ::ffff:0:0/96, where IPv4 lives in IPv6
_HOME = r"(?:/root|/home/[^/]+)"
_COMPONENT = r"/[^/]+"
_DIGITS = re.compile(r"[0-9]{1,20}\Z")  # ASCII only: str.isdigit() accepts '²'
MAX_UID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel, so it is no uid


class PatternError(ValueError):
    """A value that is not a valid pattern of its kind; str() is the user message."""


# ---------------------------------------------------------------------------- paths


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "lit", "sep", "star", "qmark", "globstar"
    text: str = ""


_GLOB_TOKEN = re.compile(r"\\(.)?|(\*\*)|([*?/])|([^\\*?/]+)", re.DOTALL)


_GLOBSTAR = _Token("globstar")
_SEP = _Token("sep", "/")
_SPECIAL = {"/": _SEP, "*": _Token("star", "*"), "?": _Token("qmark", "?")}


@functools.cache
def _literal(char: str) -> _Token:
    # tokens are frozen values: one shared token per character saves most of the
    # time tokenizing takes on large policies
    return _Token("lit", char)


@functools.lru_cache(maxsize=65536)
def _tokenize(text: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    for escaped, globstar, special, literal in _GLOB_TOKEN.findall(text):
        if literal:
            tokens.extend(map(_literal, literal))
        elif globstar:
            tokens.append(_GLOBSTAR)
        elif special:
            tokens.append(_SPECIAL[special])
        elif escaped == "/":
            raise PatternError(f"invalid glob '{text}': '/' cannot be escaped")
        elif escaped:
            tokens.append(_literal(escaped))
        else:
            raise PatternError(f"invalid glob '{text}': ends with a lone backslash")
    return tuple(tokens)


def _components(text: str, tokens: list[_Token]) -> list[list[_Token]]:
    """Split tokens at separators; check `**`, `.`, `..` and empty components."""
    # separators are all the one shared token: find them by identity, then slice
    cuts = [i for i, token in enumerate(tokens) if token is _SEP]
    parts, start = [], 0
    for cut in cuts:
        parts.append(list(tokens[start:cut]))
        start = cut + 1
    parts.append(list(tokens[start:]))
    globstars = "**" in text  # else no part can hold one: skip looking
    for part in parts[1:]:
        if not part:
            raise PatternError(f"invalid glob '{text}': empty path component ('//')")
        if len(part) <= 2 and _is_dots(part):
            literal = "".join(t.text for t in part)
            raise PatternError(f"invalid glob '{text}': '{literal}' component")
        if globstars and len(part) > 1 and any(t is _GLOBSTAR for t in part):
            raise PatternError(
                f"invalid glob '{text}': '**' must be a whole path component"
            )
    return parts


def _is_dots(part: list[_Token]) -> bool:
    """True for the components `.` and `..` (unescaped or escaped: both literal;
    only a literal token has the text '.')."""
    return all(t.text == "." for t in part)


@dataclass(frozen=True, slots=True)
class PathGlob:
    """A path pattern, as in docs/architecture.md "Path patterns".

    `text` is the normalized pattern. `home` means it started with `~` (any home
    directory); `tree` means it ended with `/` (the directory and everything below).
    """

    text: str

    @classmethod
    def parse(cls, text: str) -> PathGlob:
        """Validate and normalize `text`; raise PatternError if it is no valid glob."""
        return _parse_glob(text)

    @classmethod
    def _parse(cls, text: str) -> PathGlob:
        if not text:
            raise PatternError("invalid glob '': empty path")
        if not (text.startswith("/") or text == "~" or text.startswith("~/")):
            raise PatternError(f"invalid glob '{text}': a path starts with '/' or '~/'")
        if "\x00" in text:
            raise PatternError("invalid glob: NUL byte in path")
        glob = cls(text)
        glob._check_components()
        return glob

    def _check_components(self) -> None:
        """Raise PatternError on a bad component, as _components would.

        Without a backslash every `/` separates and every `**` is a globstar, so the
        text itself can be checked, and the tokens are made only when needed.
        """
        body = self._body()
        if "\\" in body:
            self._parts()  # escapes: only the tokens tell
            return
        if body in ("", "/"):
            return
        for part in body.split("/")[1:]:
            if not part:
                raise PatternError(
                    f"invalid glob '{self.text}': empty path component ('//')"
                )
            if part in (".", ".."):
                raise PatternError(f"invalid glob '{self.text}': '{part}' component")
            if "**" in part and part != "**":
                raise PatternError(
                    f"invalid glob '{self.text}': '**' must be a whole path component"
                )

    @property
    def home(self) -> bool:
        return self.text == "~" or self.text.startswith("~/")

    @property
    def tree(self) -> bool:
        """True for `D/`: D itself and everything below it."""
        return (
            len(self.text) > 1 and self.text.endswith("/") and not self._escaped_end()
        )

    def _escaped_end(self) -> bool:
        body = self.text[:-1]
        return (len(body) - len(body.rstrip("\\"))) % 2 == 1

    def _parts(self) -> list[list[_Token]]:
        return _parts(self)

    def _body(self) -> str:
        """The text after `~`, without the trailing slash of a tree."""
        body = self.text[1:] if self.home else self.text
        return body[:-1] if self.tree else body

    def _uncached_parts(self) -> list[list[_Token]]:
        """The components after the leading `/` or `~`, without a trailing slash."""
        body = self._body()
        if body in ("", "/"):
            return []
        return _components(self.text, _tokenize(body))[1:]

    def regex(self) -> str:
        """An anchored Python regex that matches exactly the paths this glob covers."""
        return _regex(self.text)

    @property
    def compiled(self) -> re.Pattern[str]:
        return _compiled(self.text)

    def matches(self, path: str) -> bool:
        """True if the normalized absolute `path` is covered by this glob."""
        return self.compiled.fullmatch(path) is not None

    @property
    def literal_prefix(self) -> str:
        """The literal text every matching path starts with ("" for `~` patterns)."""
        if self.home:
            return ""
        prefix = []
        for token in _tokenize(self.text[:-1] if self.tree else self.text):
            if token.kind in ("star", "qmark", "globstar"):
                break
            prefix.append("/" if token.kind == "sep" else token.text)
        return "".join(prefix)

    @property
    def is_literal(self) -> bool:
        """True if the glob matches exactly one path (no wildcard, `~` or tree)."""
        if self.home or self.tree or self.text == "/":  # "/" covers everything
            return False
        return all(t.kind in ("lit", "sep") for t in _tokenize(self.text))

    def expand_home(self) -> tuple[PathGlob, ...]:
        """`~/x` as (`/root/x`, `/home/*/x`); any other glob as itself."""
        if not self.home:
            return (self,)
        rest = self.text[1:]
        return (PathGlob("/root" + rest or "/root"), PathGlob("/home/*" + rest))

    def specificity(self) -> int:
        """16 per literal character and separator (`~` counts 1), minus a cost per
        wildcard: `?` 1, `*` 2, `**` 4, and 2 for `~`, 4 for a trailing slash."""
        literal, cost = int(self.home), 2 * self.home + 4 * self.tree
        parts = self._parts()
        for part in parts:
            literal += 1  # the separator
            for token in part:
                literal += token.kind == "lit"
                cost += _WILDCARD_COST.get(token.kind, 0)
        if not parts and not self.home:
            literal, cost = 1, 4  # "/" is the root and everything below it
        return 16 * literal - cost

    def __str__(self) -> str:
        return self.text


_WILDCARD_COST = {"qmark": 1, "star": 2, "globstar": 4}


@functools.lru_cache(maxsize=65536)
def _parse_glob(text: str) -> PathGlob:
    # policies repeat globs (lists used by many rules): parse each text once
    return PathGlob._parse(text)


@functools.lru_cache(maxsize=65536)
def _parts(glob: PathGlob) -> list[list[_Token]]:
    return glob._uncached_parts()


@functools.lru_cache(maxsize=65536)
def _regex(text: str) -> str:
    glob = PathGlob(text)
    out = [_HOME if glob.home else ""]
    parts = glob._parts()
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part[0].kind == "globstar":
            # trailing `**` is strictly below; inner `**` may match zero components
            out.append(f"(?:{_COMPONENT})" + ("+" if last else "*"))
            continue
        out.append("/" + "".join(_token_regex(t) for t in part))
    if glob.tree:
        out.append(f"(?:{_COMPONENT})*")
    body = "".join(out)
    if not parts and not glob.home:
        body = f"/|(?:{_COMPONENT})+"  # "/" or "/" with a trailing slash: everything
    return rf"\A(?:{body})\Z"


def _token_regex(token: _Token) -> str:
    if token.kind == "star":
        return "[^/]*"
    if token.kind == "qmark":
        return "[^/]"
    return re.escape(token.text)


@functools.lru_cache(maxsize=65536)
def _compiled(text: str) -> re.Pattern[str]:
    return re.compile(_regex(text))


# ----------------------------------------------------------------------- addresses


def to_ipv6(address: object) -> ipaddress.IPv6Address:
    """An address (text, int or ipaddress object) as IPv6: IPv4 as ::ffff:a.b.c.d."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.split("%")[0])
    if isinstance(address, int):
        address = (
            ipaddress.IPv4Address(address)
            if address < 2**32
            else (ipaddress.IPv6Address(address))
        )
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv6Address(_MAPPED_V4 | int(address))
    if isinstance(address, ipaddress.IPv6Address):
        return address
    raise TypeError(f"not an IP address: {address!r}")


@dataclass(frozen=True, slots=True)
class Cidr:
    """An address block. IPv4 is stored inside ::ffff:0:0/96, so an IPv4 rule also
    matches the IPv4-mapped IPv6 form of its addresses, and the reverse."""

    network: ipaddress.IPv6Network

    @classmethod
    def parse(cls, text: str) -> Cidr:
        try:
            net = ipaddress.ip_network(text, strict=True)
        except ValueError as err:
            raise PatternError(f"bad CIDR '{text}': {_cidr_cause(text, err)}") from None
        if isinstance(net, ipaddress.IPv4Network):
            base = _MAPPED_V4 | int(net.network_address)
            net = ipaddress.IPv6Network((base, 96 + net.prefixlen))
        return cls(net)

    @property
    def is_ipv4(self) -> bool:
        return self.network.prefixlen >= 96 and (
            int(self.network.network_address) >> 32 == 0xFFFF
        )

    def matches(self, address: object) -> bool:
        return to_ipv6(address) in self.network

    def specificity(self) -> int:
        """The prefix length in IPv6 terms (an IPv4 /24 counts 120)."""
        return self.network.prefixlen

    def __str__(self) -> str:
        if not self.is_ipv4:
            return str(self.network)
        v4 = ipaddress.IPv4Address(int(self.network.network_address) & 0xFFFF_FFFF)
        return f"{v4}/{self.network.prefixlen - 96}"


def _cidr_cause(text: str, err: ValueError) -> str:
    address, _, prefix = text.partition("/")
    if "has host bits set" in str(err):
        return "host bits are set below the prefix length"
    if "/" in text and not _DIGITS.match(prefix):
        return "the prefix length is not a number"
    top = 128 if ":" in address else 32
    if prefix and int(prefix) > top:
        return f"prefix length {prefix} is out of range 0-{top}"
    return "not an IPv4 or IPv6 address or network"


# -------------------------------------------------------------------------- ranges


def _range(text: str, top: int, what: str) -> tuple[int, int]:
    lo_text, sep, hi_text = text.partition("-")
    if not _DIGITS.match(lo_text) or (sep and not _DIGITS.match(hi_text)):
        raise PatternError(f"bad {what} '{text}': expected N or N-M")
    lo, hi = int(lo_text), int(hi_text) if sep else int(lo_text)
    if hi > top:
        raise PatternError(f"bad {what} '{text}': {hi} is out of range 0-{top}")
    if lo > hi:
        raise PatternError(f"bad {what} '{text}': {lo} is greater than {hi}")
    return lo, hi


def _range_specificity(lo: int, hi: int, bits: int) -> int:
    return bits - math.ceil(math.log2(hi - lo + 1))


@dataclass(frozen=True, slots=True)
class PortRange:
    """Ports lo..hi inclusive, 0-65535."""

    lo: int
    hi: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        return cls(*_range(text, 65535, "port"))

    def matches(self, port: int) -> bool:
        return self.lo <= int(port) <= self.hi

    def specificity(self) -> int:
        return _range_specificity(self.lo, self.hi, 16)

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


@dataclass(frozen=True, slots=True)
class IdRange:
    """User or group ids lo..hi inclusive, 0-4294967294."""

    lo: int
    hi: int

    @classmethod
    def parse(cls, text: str, what: str = "id") -> IdRange:
        return cls(*_range(text, MAX_UID, what))

    def matches(self, ident: int) -> bool:
        return self.lo <= int(ident) <= self.hi

    def specificity(self) -> int:
        return _range_specificity(self.lo, self.hi, 32)

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


# --------------------------------------------------------------------------- names


@dataclass(frozen=True, slots=True)
class Name:
    """One name of a closed vocabulary, in canonical spelling.

    kind is one of capability, signal, namespace, protocol, fstype, mount-flag,
    device-class. Events may carry a name or its number; flags match if the event's
    set of flags contains this one.
    """

    kind: str
    value: str

    def matches(self, value: object) -> bool:
        if self.kind == names.MOUNT_FLAG and not isinstance(value, (str, int)):
            return any(self.matches(v) for v in value)  # a set of flags
        if self.kind == "device-class":
            return any(d.matches(value) for d in device_class_numbers(self.value))
        if isinstance(value, int):
            return value == self.number
        return _canonical(self.kind, str(value)) == self.value

    @property
    def number(self) -> int | None:
        """The kernel's number for this name, where it has one."""
        table = {
            names.CAPABILITY: lambda v: names.capability_number(v),
            names.SIGNAL: lambda v: names.signal_number(v),
            names.NAMESPACE: names.NAMESPACES.get,
            names.PROTOCOL: names.PROTOCOLS.get,
            names.MOUNT_FLAG: names.MOUNT_FLAGS.get,
        }.get(self.kind)
        return table(self.value) if table else None

    def specificity(self) -> int:
        if self.kind == "device-class":
            return 8
        return 16

    def __str__(self) -> str:
        return self.value


_FSTYPE = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}\Z")


def _canonical(kind: str, text: str) -> str | None:
    if kind == names.CAPABILITY:
        return names.canonical_capability(text)
    if kind == names.SIGNAL:
        return names.canonical_signal(text)
    if kind == names.FSTYPE:
        return text.lower() if _FSTYPE.match(text.lower()) else None
    table = {
        names.NAMESPACE: names.NAMESPACES,
        names.PROTOCOL: names.PROTOCOLS,
        names.MOUNT_FLAG: names.MOUNT_FLAGS,
        "device-class": names.DEVICE_CLASSES,
    }[kind]
    return text.lower() if text.lower() in table else None


_UNKNOWN = {
    names.CAPABILITY: ("unknown capability", names.CAPABILITIES, "CAP_"),
    names.SIGNAL: ("unknown signal", names.SIGNALS, "SIG"),
    names.NAMESPACE: ("unknown namespace kind", names.NAMESPACES, ""),
    names.PROTOCOL: ("unknown protocol", names.PROTOCOLS, ""),
    names.MOUNT_FLAG: ("unknown mount flag", names.MOUNT_FLAGS, ""),
    "device-class": ("unknown device class", names.DEVICE_CLASSES, ""),
}


def parse_name(kind: str, text: str) -> Name:
    """Parse a name of `kind`; raise PatternError naming the vocabulary if unknown."""
    value = _canonical(kind, text)
    if value is not None:
        return Name(kind, value)
    if kind == names.FSTYPE:
        raise PatternError(f"bad filesystem type '{text}'")
    message, table, prefix = _UNKNOWN[kind]
    close = _close_matches(text.upper().removeprefix(prefix), table, prefix)
    return _raise(f"{message} '{text}'" + (f"; did you mean {close}?" if close else ""))


def _close_matches(text: str, table: object, prefix: str) -> str:
    import difflib

    keys = [k.upper() if prefix else k for k in table]
    found = difflib.get_close_matches(text if prefix else text.lower(), keys, n=1)
    return f"'{prefix}{found[0]}'" if found else ""


def _raise(message: str) -> Name:
    raise PatternError(message)


# ------------------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class DeviceNumber:
    """A device by major and minor number; minor None means every minor."""

    major: int
    minor: int | None

    @classmethod
    def parse(cls, text: str) -> DeviceNumber:
        major, sep, minor = text.partition(":")
        if (
            not sep
            or not _DIGITS.match(major)
            or not (_DIGITS.match(minor) or minor == "*")
        ):
            raise PatternError(f"bad device '{text}': expected MAJOR:MINOR or MAJOR:*")
        if int(major) > 4095 or (minor != "*" and int(minor) > 1048575):
            raise PatternError(f"bad device '{text}': major or minor is out of range")
        return cls(int(major), None if minor == "*" else int(minor))

    def matches(self, device: object) -> bool:
        major, minor = device  # an event's (major, minor)
        return major == self.major and self.minor in (None, minor)

    def specificity(self) -> int:
        return 16 if self.minor is not None else 12

    def __str__(self) -> str:
        return f"{self.major}:{'*' if self.minor is None else self.minor}"


@functools.cache
def device_class_numbers(name: str) -> tuple[DeviceNumber, ...]:
    """The device numbers a device class stands for."""
    return tuple(DeviceNumber(*pair) for pair in names.DEVICE_CLASSES[name])


def parse_device(text: str) -> DeviceNumber | Name:
    if ":" in text:
        return DeviceNumber.parse(text)
    return parse_name("device-class", text)


Pattern = PathGlob | Cidr | PortRange | IdRange | Name | DeviceNumber


@functools.lru_cache(maxsize=65536)
def parse_pattern(kind: str, text: str) -> Pattern:
    """Parse the text of a field of `kind` (see names.FIELDS); raise PatternError.

    Patterns are immutable, so a value used by many rules is parsed once.
    """
    if kind == names.PATH:
        return PathGlob.parse(text)
    if kind == names.CIDR:
        return Cidr.parse(text)
    if kind == names.PORT:
        return PortRange.parse(text)
    if kind == names.ID:
        return IdRange.parse(text)
    if kind == names.DEVICE:
        return parse_device(text)
    return parse_name(kind, text)
