"""No input ends in a traceback: valid policies, mutated, give clean diagnostics.

Mutations: deleted, inserted and swapped tokens, random bytes, invalid UTF-8, NUL
bytes, very long lines and deep nesting. Each case must load, render in all three
formats, and every diagnostic must point into the file.
"""

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsule.lang.diagnostics import SourceCache, render_json, render_sarif, render_text
from capsule.lang.loader import load_source
from capsule.lang.names import AREAS, FIELDS

EXAMPLES = Path(__file__).parents[2] / "examples" / "policies"
SEEDS = [p.read_text() for p in sorted(EXAMPLES.glob("*.cap"))] + [
    "taint t = file read ~/.ssh/\nkill network send after t priority 9\n",
    "escalate(deny) network connect addr ::ffff:10.0.0.0/104 port 1-1024\n",
    'let a = [/x, "/y z"]\nlet b = [$a, ${a}/q]\ndeny file * $b message "m"\n',
    "deny device open dev 10:232, 8:*, kvm\ndeny system mount fstype proc flags ro\n",
    "allow creds setuid uid 1000-2000 when uid 0 cgroup /a/ ancestor /usr/bin/*\n",
]
VOCABULARY = sorted(
    {
        "allow",
        "audit",
        "deny",
        "kill",
        "escalate",
        "(",
        ")",
        "[",
        "]",
        ",",
        "=",
        "#",
        '"',
        "$",
        "${",
        "}",
        "let",
        "taint",
        "include",
        "default",
        "set",
        "when",
        "after",
        "priority",
        "message",
        "severity",
        "tags",
        "*",
        "**",
        "~",
        "/",
        "\\",
        "-",
        ":",
        "::",
        "/32",
        "-1",
        "99999999999999999999",
        "\n",
        "\t",
        "\r",
        "é",
        "\u2028",
        "\ufeff",
        "²",
        "٣",
    }
    | set(AREAS)
    | {op for ops in AREAS.values() for op in ops}
    | {f for fields in FIELDS.values() for f in fields}
)
TOKEN = re.compile(r"\s+|[^\s]+")


def tokens(text):
    return TOKEN.findall(text)


@st.composite
def mutated(draw):
    parts = tokens(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["delete", "insert", "swap", "bytes", "repeat"]))
        at = draw(st.integers(0, max(0, len(parts) - 1)))
        if kind == "delete" and parts:
            del parts[at]
        elif kind == "insert":
            word = draw(st.sampled_from(VOCABULARY) | st.text(max_size=8))
            parts.insert(at, word)
        elif kind == "swap" and parts:
            other = draw(st.integers(0, len(parts) - 1))
            parts[at], parts[other] = parts[other], parts[at]
        elif kind == "repeat" and parts:
            parts.insert(at, parts[at] * draw(st.integers(2, 50)))
    data = "".join(parts).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    return data


def assert_clean(data: bytes):
    name = str(EXAMPLES / "fuzz.cap")  # so that includes of lib/ resolve
    policy, diags = load_source(data, name)
    text = data.decode("utf-8", "replace")
    cache = SourceCache({name: text})
    render_text(diags, cache)
    render_json(diags)
    render_sarif(diags)
    lines = text.split("\n")
    for diag in diags:
        assert diag.code and diag.message and "\n" not in diag.message
        if diag.location.file == name and diag.code != "invalid-utf8":
            assert 1 <= diag.location.line <= len(lines)
            assert 1 <= diag.location.col <= len(lines[diag.location.line - 1]) + 1
    if not any(d.is_error for d in diags):
        assert policy.files


FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same cases on every run; raise max_examples to explore
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(mutated())
def test_mutated_policies_give_clean_diagnostics(data):
    assert_clean(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_give_clean_diagnostics(data):
    assert_clean(data)


@FUZZ
@given(st.lists(st.sampled_from(VOCABULARY + [" "]), max_size=40))
def test_keyword_soup_gives_clean_diagnostics(words):
    assert_clean("".join(words).encode("utf-8"))


def test_invalid_utf8_nul_bytes_long_lines_and_deep_nesting():
    cases = [
        b"deny file read /\xc3\x28\n",
        b"\xff\xfe" + "deny file read /x\n".encode("utf-16-le"),
        b"deny file read /a\x00\n",
        b"deny file read /" + b"a" * 200_000 + b"\n",
        b"deny file read " + b", ".join(b"/x%d" % i for i in range(20_000)) + b"\n",
        b"let a = " + b"[" * 10_000 + b"/x" + b"]" * 10_000 + b"\n",
        b"deny file read " + b"(" * 10_000 + b"\n",
        b'deny file read "' + b"\\" * 10_001 + b'"\n',
        b"\n".join(b"let v%d = $v%d" % (i, i + 1) for i in range(3000))
        + b"\nlet v3000 = /x\ndeny file read $v0\n",
        b"#" * 100_000,
        b"",
        b"\r\n".join([b"default deny", b"allow file read /x"]),
    ]
    for data in cases:
        assert_clean(data)
