"""Pattern semantics, as documented in docs/language.md, from tables of examples."""

import ipaddress
import re

import pytest

from capsule.lang.patterns import (
    Cidr,
    DeviceNumber,
    IdRange,
    PathGlob,
    PatternError,
    PortRange,
    parse_device,
    parse_name,
)

# glob -> (paths it matches, paths it does not match)
GLOBS = {
    "/tmp/**": (["/tmp/a", "/tmp/a/b/c"], ["/tmp", "/tmpfoo", "/tmpfoo/a", "/"]),
    "/tmp/": (["/tmp", "/tmp/a", "/tmp/a/b"], ["/tmpfoo", "/tm", "/"]),
    "/tmp": (["/tmp"], ["/tmp/a", "/tmpfoo"]),
    "/tmp*": (["/tmp", "/tmpfoo"], ["/tmp/a", "/tm"]),
    "/tmp/*": (["/tmp/a", "/tmp/.hidden"], ["/tmp", "/tmp/a/b"]),
    "/tmp/?": (["/tmp/a"], ["/tmp/ab", "/tmp/"]),
    "/a/**/b": (["/a/b", "/a/x/b", "/a/x/y/b"], ["/a/b/c", "/a/xb", "/ab"]),
    "/**/id_rsa": (["/id_rsa", "/home/u/.ssh/id_rsa"], ["/home/u/id_rsa.pub"]),
    "/**": (["/a", "/a/b"], ["/"]),
    "/": (["/", "/a", "/a/b"], []),
    "/etc/*.conf": (["/etc/a.conf", "/etc/.conf"], ["/etc/x/a.conf", "/etc/a.confx"]),
    "~/.ssh/": (
        ["/root/.ssh", "/root/.ssh/id_rsa", "/home/alice/.ssh/config"],
        ["/home/.ssh", "/home/a/b/.ssh", "/srv/alice/.ssh", "/rootx/.ssh"],
    ),
    "~/.ssh/**": (["/home/alice/.ssh/id_rsa"], ["/home/alice/.ssh"]),
    "~": (["/root", "/home/alice"], ["/home", "/home/alice/x"]),
    "/a\\*b": (["/a*b"], ["/axb", "/ab"]),
    "/with space/x": (["/with space/x"], ["/with"]),
    "/a/~/b": (["/a/~/b"], ["/a/root/b"]),
}


@pytest.mark.parametrize("glob", sorted(GLOBS))
def test_glob_matches_exactly_its_paths(glob):
    pattern = PathGlob.parse(glob)
    yes, no = GLOBS[glob]
    assert [p for p in yes if not pattern.matches(p)] == []
    assert [p for p in no if pattern.matches(p)] == []


@pytest.mark.parametrize("glob", sorted(GLOBS))
def test_glob_regex_is_anchored_and_agrees_with_matches(glob):
    pattern = PathGlob.parse(glob)
    regex = re.compile(pattern.regex())
    yes, no = GLOBS[glob]
    for path in yes + no:
        assert bool(regex.match(path)) == pattern.matches(path)
        assert not regex.match(path + "/\x01extra") or pattern.matches(
            path + "/\x01extra"
        )


@pytest.mark.parametrize(
    "glob, prefix",
    [
        ("/tmp/**", "/tmp/"),
        ("/tmp/", "/tmp"),
        ("/tmp*", "/tmp"),
        ("/a/**/b", "/a/"),
        ("~/.ssh/", ""),
        ("/etc/passwd", "/etc/passwd"),
        ("/a\\*b/*", "/a*b/"),
    ],
)
def test_literal_prefix_starts_every_match(glob, prefix):
    assert PathGlob.parse(glob).literal_prefix == prefix


@pytest.mark.parametrize(
    "bad, cause",
    [
        ("", "empty path"),
        ("etc/passwd", "starts with '/' or '~/'"),
        ("~alice/x", "starts with '/' or '~/'"),
        ("/a//b", "empty path component"),
        ("/a/./b", "'.' component"),
        ("/a/../b", "'..' component"),
        ("/a**", "'**' must be a whole path component"),
        ("/**.conf", "'**' must be a whole path component"),
        ("/a\\", "lone backslash"),
        ("/a\\/b", "'/' cannot be escaped"),
    ],
)
def test_invalid_globs_are_rejected_with_their_cause(bad, cause):
    with pytest.raises(PatternError, match=re.escape(cause)):
        PathGlob.parse(bad)


@pytest.mark.parametrize(
    "glob, literal",
    [
        ("/etc/passwd", True),
        ("/a\\*b", True),
        ("/", False),
        ("/etc/", False),
        ("/etc/*", False),
        ("~/.ssh", False),
    ],
)
def test_is_literal_means_exactly_one_path(glob, literal):
    assert PathGlob.parse(glob).is_literal is literal


def test_expand_home_gives_root_and_home_dirs():
    assert [g.text for g in PathGlob.parse("~/.aws/").expand_home()] == [
        "/root/.aws/",
        "/home/*/.aws/",
    ]


@pytest.mark.parametrize(
    "narrow, wide",
    [
        ("/etc/passwd", "/etc/*"),
        ("/etc/*", "/etc/**"),
        ("/etc/ssh/**", "/etc/**"),
        ("/etc/**", "/etc/"),
        ("/home/alice/.ssh/", "~/.ssh/"),
        ("/tmp/a?", "/tmp/a*"),
    ],
)
def test_a_narrower_glob_is_more_specific(narrow, wide):
    assert PathGlob.parse(narrow).specificity() > PathGlob.parse(wide).specificity()


# cidr -> (addresses in it, addresses not in it)
CIDRS = {
    "10.0.0.0/8": (
        ["10.1.2.3", "::ffff:10.1.2.3", "::ffff:a01:203"],
        ["11.0.0.1", "::a01:203"],
    ),
    "::ffff:10.0.0.0/104": (["10.9.9.9"], ["11.0.0.0"]),
    "127.0.0.1": (["127.0.0.1", "::ffff:127.0.0.1"], ["127.0.0.2", "::1"]),
    "::1": (["::1"], ["127.0.0.1", "::2"]),
    "fe80::/10": (["fe80::1", "febf::1"], ["fec0::1"]),
    "0.0.0.0/0": (["1.2.3.4", "::ffff:8.8.8.8"], ["2001:db8::1"]),
    "::/0": (["1.2.3.4", "2001:db8::1"], []),
}


@pytest.mark.parametrize("cidr", sorted(CIDRS))
def test_cidr_contains_ipv4_and_its_mapped_form(cidr):
    block = Cidr.parse(cidr)
    yes, no = CIDRS[cidr]
    assert [a for a in yes if not block.matches(a)] == []
    assert [a for a in no if block.matches(a)] == []
    assert all(block.matches(ipaddress.ip_address(a)) for a in yes)


def test_ipv4_and_mapped_cidr_are_the_same_pattern():
    assert Cidr.parse("192.168.0.0/16") == Cidr.parse("::ffff:192.168.0.0/112")
    assert Cidr.parse("192.168.0.0/16").network == ipaddress.IPv6Network(
        "::ffff:192.168.0.0/112"
    )
    assert str(Cidr.parse("::ffff:192.168.0.0/112")) == "192.168.0.0/16"


@pytest.mark.parametrize(
    "bad, cause",
    [
        ("10.0.0.1/8", "host bits are set"),
        ("10.0.0.0/33", "prefix length 33 is out of range 0-32"),
        ("fe80::/129", "prefix length 129 is out of range 0-128"),
        ("10.0.0.0/x", "prefix length is not a number"),
        ("300.1.1.1", "not an IPv4 or IPv6 address"),
        ("example.org", "not an IPv4 or IPv6 address"),
        ("1.2.3", "not an IPv4 or IPv6 address"),
    ],
)
def test_bad_cidrs_are_rejected(bad, cause):
    with pytest.raises(PatternError, match=re.escape(cause)):
        Cidr.parse(bad)


@pytest.mark.parametrize(
    "text, lo, hi",
    [
        ("0", 0, 0),
        ("443", 443, 443),
        ("8000-9000", 8000, 9000),
        ("65535", 65535, 65535),
    ],
)
def test_port_ranges_are_inclusive(text, lo, hi):
    ports = PortRange.parse(text)
    assert (ports.lo, ports.hi) == (lo, hi)
    assert ports.matches(lo) and ports.matches(hi)
    assert not ports.matches(hi + 1)


@pytest.mark.parametrize(
    "bad", ["65536", "9000-8000", "-1", "80-", "http", "1.5", "\u0663"]
)
def test_bad_ports_are_rejected(bad):
    with pytest.raises(PatternError, match="bad port"):
        PortRange.parse(bad)


def test_id_range_stops_below_minus_one():
    assert IdRange.parse("4294967294").matches(4294967294)
    with pytest.raises(PatternError, match="out of range"):
        IdRange.parse("4294967295")


@pytest.mark.parametrize(
    "kind, text, canonical",
    [
        ("capability", "CAP_SYS_ADMIN", "CAP_SYS_ADMIN"),
        ("capability", "sys_admin", "CAP_SYS_ADMIN"),
        ("capability", "cap_bpf", "CAP_BPF"),
        ("signal", "SIGKILL", "SIGKILL"),
        ("signal", "term", "SIGTERM"),
        ("signal", "9", "SIGKILL"),
        ("signal", "SIGIOT", "SIGABRT"),
        ("namespace", "NET", "net"),
        ("protocol", "UDP", "udp"),
        ("mount-flag", "nosuid", "nosuid"),
        ("fstype", "ext4", "ext4"),
        ("fstype", "fuse.sshfs", "fuse.sshfs"),
    ],
)
def test_names_have_one_canonical_spelling(kind, text, canonical):
    assert parse_name(kind, text).value == canonical


@pytest.mark.parametrize(
    "kind, text",
    [
        ("capability", "CAP_ROOT"),
        ("signal", "SIGNONE"),
        ("signal", "65"),
        ("namespace", "users"),
        ("protocol", "quic"),
        ("mount-flag", "readonly"),
    ],
)
def test_unknown_names_are_rejected(kind, text):
    with pytest.raises(PatternError, match="unknown"):
        parse_name(kind, text)


def test_names_match_event_numbers_and_spellings():
    assert parse_name("signal", "SIGKILL").matches(9)
    assert parse_name("signal", "SIGKILL").matches("kill")
    assert parse_name("capability", "CAP_SYS_ADMIN").matches(21)
    assert parse_name("mount-flag", "nosuid").matches({"ro", "nosuid"})
    assert not parse_name("mount-flag", "nosuid").matches({"ro"})


@pytest.mark.parametrize(
    "text, device, expected",
    [
        ("10:232", (10, 232), True),
        ("10:232", (10, 233), False),
        ("8:*", (8, 17), True),
        ("kvm", (10, 232), True),
        ("kvm", (10, 200), False),
        ("tty", (136, 4), True),
        ("disk", (259, 0), True),
    ],
)
def test_devices_by_number_or_class(text, device, expected):
    assert parse_device(text).matches(device) is expected


@pytest.mark.parametrize("bad", ["10", "10:", ":5", "x:1", "4096:0", "webcam"])
def test_bad_devices_are_rejected(bad):
    with pytest.raises(PatternError):
        parse_device(bad)


def test_device_number_text():
    assert str(DeviceNumber.parse("8:*")) == "8:*"
