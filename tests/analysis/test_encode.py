"""Tables of sat, unsat and undecided queries for every pattern kind in encode.py."""

import ipaddress

import pytest
import z3
from hypothesis import given, settings
from hypothesis import strategies as st

from capsule.analysis import encode
from capsule.analysis.encode import Sat, Undecided, Unsat
from capsule.lang.patterns import PathGlob


def _path_matches(pattern: str, path: str) -> encode.Outcome:
    p = z3.String("path")
    return encode.solve(
        [p == encode.string_literal(path), encode.glob_matches(p, pattern)]
    )


# (pattern, path, matches?) straight from docs/architecture.md "Path patterns"
GLOB_MEMBERSHIP = [
    ("/tmp/*", "/tmp/a", True),
    ("/tmp/*", "/tmp/a/b", False),
    ("/tmp/*", "/tmp", False),
    ("/tmp/**", "/tmp/a/b/c", True),
    ("/tmp/**", "/tmp/a", True),
    ("/tmp/**", "/tmp", False),  # strictly below, not the directory itself
    ("/tmp/**", "/tmpfoo", False),  # prefix boundary
    ("/tmp/**", "/tmpfoo/x", False),
    ("/tmp*", "/tmp", True),
    ("/tmp*", "/tmpfoo", True),
    ("/tmp*", "/tmp/x", False),
    ("/tmp/", "/tmp", True),  # trailing slash: the directory and below
    ("/tmp/", "/tmp/a/b", True),
    ("/tmp/", "/tmpfoo", False),
    ("/", "/", True),
    ("/", "/etc/passwd", True),
    ("/**", "/", False),
    ("/**", "/etc", True),
    ("/a/**/b", "/a/b", True),  # ** in the middle: zero components
    ("/a/**/b", "/a/x/y/b", True),
    ("/a/**/b", "/a/x/y/c", False),
    ("/a/?", "/a/x", True),
    ("/a/?", "/a/xy", False),
    ("/a/?", "/a/é", True),  # one character, not one byte
    ("/a/b**c", "/a/bxc", True),  # ** inside a component is just *
    ("/a/b**c", "/a/bx/c", False),
    ("~/.ssh/**", "/root/.ssh/id_rsa", True),
    ("~/.ssh/**", "/home/al/.ssh/id_rsa", True),
    ("~/.ssh/**", "/home/al/x/.ssh/id_rsa", False),
    ("~/.ssh/**", "/srv/.ssh/id_rsa", False),
    ("~", "/home/al", True),
    ("~/", "/home/al/notes", True),
    ("/x~", "/x~", True),  # ~ only at the start is special
    # regex metacharacters are literal
    ("/a/f.o+(b)[c]{2}^$|", "/a/f.o+(b)[c]{2}^$|", True),
    ("/a/f.o", "/a/fxo", False),
    ("/a/(b|c)", "/a/b", False),
    # a backslash escapes the next character
    (r"/a/\*", "/a/*", True),
    (r"/a/\*", "/a/x", False),
    (r"/a/\?", "/a/x", False),
    (r"/a/\\", "/a/\\", True),
    # z3's own escape syntax in a path is just text
    ("/a/\\\\u{41}", "/a/\\u{41}", True),
    ("/a/\\\\u{41}", "/a/A", False),
    # unicode
    ("/home/*/Résumé ☃/*", "/home/zoë/Résumé ☃/cv.pdf", True),
    ("/home/*/Résumé ☃/*", "/home/zoë/Resume ☃/cv.pdf", False),
]


@pytest.mark.parametrize("pattern,path,matches", GLOB_MEMBERSHIP)
def test_glob_membership(pattern, path, matches):
    outcome = _path_matches(pattern, path)
    assert isinstance(outcome, Sat if matches else Unsat)


def _exists_in_a_not_b(a: str, b: str) -> encode.Outcome:
    p = z3.String("path")
    literals = encode.glob_literals(a) | encode.glob_literals(b)
    return encode.solve(
        [
            encode.path_domain(p, literals),
            encode.glob_matches(p, a),
            z3.Not(encode.glob_matches(p, b)),
        ]
    )


# (a, b, does a normalized path match a but not b?)
GLOB_DIFFERENCE = [
    ("/tmp/*", "/tmp/**", False),
    ("/tmp/**", "/tmp/*", True),
    ("/tmp/**", "/tmp/", False),
    ("/tmp/", "/tmp/**", True),  # only /tmp itself
    ("/tmp*", "/tmp/", True),
    ("/tmp/**", "/tmp*", True),
    ("/home/*/.ssh/**", "/home/**", False),
    ("/home/**", "/home/*/.ssh/**", True),
    ("~/.ssh/**", "/home/**", True),  # /root/.ssh/x
    ("/a/*/b", "/a/**/b", False),  # only with normalized paths: no /a//b
    ("/a/**/b", "/a/*/b", True),
    ("/a/?", "/a/*", False),
    ("/a/*", "/a/?", True),
    ("/a/.x", "/a/*", False),
    ("/a/*", "/", False),
    ("/**", "/", False),
    ("/", "/**", True),
    ("/é/*", "/é/**", False),
]


@pytest.mark.parametrize("a,b,sat", GLOB_DIFFERENCE)
def test_glob_difference(a, b, sat):
    outcome = _exists_in_a_not_b(a, b)
    assert isinstance(outcome, Sat if sat else Unsat)


def test_witness_is_normalized_readable_and_matches():
    p = z3.String("path")
    outcome = encode.solve(
        [
            encode.path_domain(p, encode.glob_literals("/a/**/b")),
            encode.glob_matches(p, "/a/**/b"),
            z3.Not(encode.glob_matches(p, "/a/b")),
        ]
    )
    assert isinstance(outcome, Sat)
    path = encode.string_value(outcome.model.eval(p))
    assert path.startswith("/a/") and path.endswith("/b") and path != "/a/b"
    assert "//" not in path and all(c.isprintable() for c in path)
    assert isinstance(_path_matches("/a/**/b", path), Sat)


def test_dot_components_are_not_paths():
    p = z3.String("path")
    outcome = encode.solve(
        [
            encode.path_domain(p, {"a", "."}),
            z3.Or(
                p == encode.string_literal("/a/."), p == encode.string_literal("/..")
            ),
        ]
    )
    assert isinstance(outcome, Unsat)


def test_string_value_round_trips_escapes_and_unicode():
    text = "/a/\\u{41}/é/\U0001f600/\x01"
    p = z3.String("p")
    outcome = encode.solve([p == encode.string_literal(text)])
    assert encode.string_value(outcome.model.eval(p)) == text


@pytest.mark.parametrize("bad", ["tmp/x", "", "/a/\\", "~x"])
def test_bad_glob_is_an_encode_error(bad):
    with pytest.raises(encode.EncodeError):
        encode.glob_re(bad)


def test_char_beyond_z3_range_is_an_encode_error():
    with pytest.raises(encode.EncodeError, match="beyond"):
        encode.glob_re("/a/\U0010ffff")


def _addr_in(address: str, network: str) -> encode.Outcome:
    a = z3.BitVec("addr", encode.ADDR_BITS)
    value = z3.BitVecVal(encode.addr_int(address), encode.ADDR_BITS)
    return encode.solve([a == value, encode.in_cidr(a, network)])


CIDR_MEMBERSHIP = [
    ("10.0.0.5", "10.0.0.0/8", True),
    ("11.0.0.5", "10.0.0.0/8", False),
    ("10.0.0.5", "10.0.0.5/32", True),
    ("10.0.0.6", "10.0.0.5/32", False),
    ("10.0.0.5", "0.0.0.0/0", True),
    ("::ffff:10.0.0.5", "10.0.0.0/8", True),  # IPv4-mapped IPv6 is IPv4
    ("10.0.0.5", "::ffff:10.0.0.0/104", True),
    ("10.0.0.5", "::/0", True),
    ("2001:db8::1", "0.0.0.0/0", False),  # all of IPv4 is not all addresses
    ("2001:db8::1", "2001:db8::/32", True),
    ("2001:db9::1", "2001:db8::/32", False),
    ("::1", "127.0.0.0/8", False),
]


@pytest.mark.parametrize("address,network,inside", CIDR_MEMBERSHIP)
def test_cidr_membership(address, network, inside):
    assert isinstance(_addr_in(address, network), Sat if inside else Unsat)


CIDR_OVERLAP = [
    ("10.0.0.0/8", "10.1.0.0/16", True),
    ("10.0.0.0/8", "11.0.0.0/8", False),
    ("10.0.0.0/8", "::ffff:10.0.0.0/104", True),
    ("10.0.0.0/8", "::ffff:11.0.0.0/104", False),
    ("0.0.0.0/0", "::1/128", False),
    ("::/0", "::1/128", True),
]


@pytest.mark.parametrize("a,b,overlap", CIDR_OVERLAP)
def test_cidr_overlap(a, b, overlap):
    x = z3.BitVec("addr", encode.ADDR_BITS)
    outcome = encode.solve([encode.in_cidr(x, a), encode.in_cidr(x, b)])
    assert isinstance(outcome, Sat if overlap else Unsat)
    if overlap:
        text = encode.addr_text(outcome.model.eval(x).as_long())
        ip = ipaddress.ip_address(text)
        for net in (a, b):
            assert isinstance(_addr_in(str(ip), net), Sat)


def test_mapped_addresses_print_as_ipv4():
    assert encode.addr_text(encode.addr_int("10.0.0.5")) == "10.0.0.5"
    assert encode.addr_text(encode.addr_int("2001:db8::1")) == "2001:db8::1"


PORT_OVERLAP = [
    ((22, 22), (22, 22), True),
    ((1, 1023), (1024, 65535), False),
    ((1000, 2000), (2000, 3000), True),  # both ends included
    ((0, 65535), (443, 443), True),
    ((80, 80), (443, 443), False),
]


@pytest.mark.parametrize("a,b,overlap", PORT_OVERLAP)
def test_port_range_overlap(a, b, overlap):
    port = z3.BitVec("port", encode.PORT_BITS)
    outcome = encode.solve(
        [encode.in_port_range(port, *a), encode.in_port_range(port, *b)]
    )
    assert isinstance(outcome, Sat if overlap else Unsat)


def test_port_range_outside_16_bits_is_an_encode_error():
    with pytest.raises(encode.EncodeError, match="port range"):
        encode.in_port_range(z3.BitVec("p", 16), 1, 70000)


ID_CASES = [
    ((0, 0), (0, 999), True),
    ((1000, 60000), (0, 999), False),
    ((0, encode.ID_MAX), (encode.ID_MAX, encode.ID_MAX), True),
]


@pytest.mark.parametrize("a,b,overlap", ID_CASES)
def test_id_range_overlap(a, b, overlap):
    uid = encode.id_var("uid")
    outcome = encode.solve(
        [
            encode.id_domain(uid),
            encode.in_id_range(uid, *a),
            encode.in_id_range(uid, *b),
        ]
    )
    assert isinstance(outcome, Sat if overlap else Unsat)


def test_id_above_32_bits_is_unsat():
    uid = encode.id_var("uid")
    outcome = encode.solve([encode.id_domain(uid), uid > encode.ID_MAX])
    assert isinstance(outcome, Unsat)


def test_enumeration_other_stands_for_unnamed_values():
    caps = encode.Enumeration("cap", ["CAP_SYS_ADMIN", "CAP_NET_RAW"])
    c = caps.var("cap")
    outcome = encode.solve(
        [z3.Not(caps.is_one_of(c, ["CAP_SYS_ADMIN", "CAP_NET_RAW"]))]
    )
    assert isinstance(outcome, Sat)
    assert caps.name_of(outcome.model.eval(c)) == encode.OTHER
    both = encode.solve(
        [c == caps.value("CAP_SYS_ADMIN"), c == caps.value("CAP_NET_RAW")]
    )
    assert isinstance(both, Unsat)


def test_enumeration_rejects_unknown_names():
    with pytest.raises(encode.EncodeError, match="unknown signal"):
        encode.Enumeration("signal", ["SIGKILL"]).value("SIGFOO")


def test_resource_limit_gives_undecided_not_unsat():
    # a query that z3 can decide, given resources; with almost none it must say so
    p = z3.String("path")
    hard = [
        encode.path_domain(p, encode.glob_literals("/a/**/b/**/c/*")),
        encode.glob_matches(p, "/a/**/b/**/c/*"),
        z3.Not(encode.glob_matches(p, "/a/*/b/**/c/*")),
        z3.Length(p) > 40,
    ]
    assert isinstance(encode.solve(hard), Sat)
    starved = encode.solve(hard, rlimit=50)
    assert isinstance(starved, Undecided)
    assert "resource" in starved.reason or "canceled" in starved.reason


def test_same_query_gives_the_same_witness():
    def witness():
        p = z3.String("path")
        outcome = encode.solve(
            [
                encode.path_domain(p, encode.glob_literals("/home/**")),
                encode.glob_matches(p, "/home/**"),
                z3.Not(encode.glob_matches(p, "/home/*")),
            ]
        )
        return encode.string_value(outcome.model.eval(p))

    assert witness() == witness()


# -- agreement with the language's own matcher ---------------------------------------


_COMPONENT_ATOMS = st.sampled_from(["a", "b", ".", "é", "*", "?", "+", "("])
_GLOB_COMPONENT = st.one_of(
    st.just("**"), st.lists(_COMPONENT_ATOMS, min_size=1, max_size=3).map("".join)
)
_GLOBS = st.tuples(
    st.sampled_from(["/", "~/"]),
    st.lists(_GLOB_COMPONENT, min_size=0, max_size=3).map("/".join),
    st.sampled_from(["", "/"]),
).map("".join)
_PATHS = st.lists(
    st.lists(st.sampled_from(["a", "b", ".", "é", "+", "("]), min_size=1, max_size=3)
    .map("".join)
    .filter(lambda c: c not in (".", "..")),
    min_size=0,
    max_size=4,
).map(lambda comps: "/" + "/".join(comps))


def _valid_glob(text: str) -> PathGlob | None:
    try:
        return PathGlob.parse(text.replace("//", "/"))
    except ValueError:
        return None


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_GLOBS, st.one_of(_PATHS, st.sampled_from(["/root/a", "/home/a/b", "/home"])))
def test_z3_encoding_agrees_with_the_language_matcher(text, path):
    glob = _valid_glob(text)
    if glob is None:
        return
    expected = glob.matches(path)
    assert isinstance(_path_matches(glob.text, path), Sat if expected else Unsat)


def _undecided_queries():
    addr, port = z3.BitVec("addr", 128), z3.BitVec("port", 16)
    uid, path = encode.id_var("uid"), z3.String("path")
    caps = encode.Enumeration("cap", ["CAP_SYS_ADMIN", "CAP_NET_RAW"])
    cap = caps.var("cap")
    glob, cidr, ports = encode.glob_matches, encode.in_cidr, encode.in_port_range
    return {
        "glob": [glob(path, "/a/**"), z3.Not(glob(path, "/a/*"))],
        "cidr": [cidr(addr, "10.0.0.0/8"), z3.Not(cidr(addr, "::ffff:10.1.0.0/112"))],
        "port": [ports(port, 1, 1023), z3.Not(ports(port, 22, 22))],
        "id": [encode.id_domain(uid), encode.in_id_range(uid, 0, 999), uid != 0],
        "enumeration": [z3.Not(caps.is_one_of(cap, ["CAP_SYS_ADMIN"]))],
    }


@pytest.mark.parametrize("kind", list(_undecided_queries()))
def test_every_pattern_kind_is_undecided_when_starved(kind):
    query = _undecided_queries()[kind]
    assert isinstance(encode.solve(query), Sat)
    starved = encode.solve(query, rlimit=1)
    assert isinstance(starved, Undecided), "unknown must never read as unsat"
