"""Make untrusted names safe to show: no control characters, no invalid UTF-8.

A traced program chooses its file names, its argv and its comm. Shown raw, a newline
or an escape sequence in a name could forge a timeline line or recolour the terminal,
so every such string passes through `escape` before it is shown or stored as text.
"""

import unicodedata

# control, format (bidi overrides, zero-width), line and paragraph separators
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _is_safe(char: str) -> bool:
    if char.isascii():
        return char.isprintable() and char != "\\"
    return unicodedata.category(char) not in _UNSAFE_CATEGORIES


def escape(value: str | bytes) -> str:
    """Printable text: unsafe characters and undecodable bytes become \\xNN escapes.

    A backslash is doubled, so an escape in the output never comes from the input.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if value.isascii() and value.isprintable() and "\\" not in value:
        return value
    return "".join(
        char if _is_safe(char) else _SHORT.get(char) or _escape_char(char)
        for char in value
    )


def needs_escape(value: str) -> bool:
    """True when `escape` would change the string."""
    return escape(value) != value


def json_safe(value: str | bytes) -> str:
    """A string that encodes as UTF-8: undecodable bytes become \\xNN, the rest stays.

    JSON escapes control characters itself; only bytes that are not UTF-8 (and so
    cannot be written to a UTF-8 file) need a textual escape.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return escape(value)
    return value
