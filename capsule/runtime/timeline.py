"""The terminal timeline: one line per event, indented by process tree.

Lines are built as rich `Text` pieces, never as markup, and every name the traced
program chose passes through `escape`: a file called "x\\n[fake line]" stays on its
own line and cannot recolour or forge anything.
"""

import shlex
import socket

from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style
from rich.text import Text

from capsule.events.schema import flag_names
from capsule.runtime.escape import escape
from capsule.runtime.names import ALL_CAPS

AREA_STYLES = {
    "process": "cyan",
    "network": "blue",
    "file": "green",
    "creds": "magenta",
    "memory": "red",
    "ipc": "yellow",
    "device": "bright_magenta",
    "system": "bright_red",
    "namespace": "bright_blue",
    "signal": "bright_yellow",
}
VERDICT_STYLES = {
    "kill": "bold white on red",
    "deny": "bold red",
    "escalate": "bold yellow",
    "audit": "yellow",
    "allow": "dim",
}
INDENT = "  "


def _quote(arg: str) -> str:
    safe = escape(arg)
    return shlex.quote(safe) if safe == arg else "'" + safe + "'"


def _command_line(event: dict) -> str:
    # a refused exec has no argv yet: the path it named
    name = event.get("filename") or event.get("path") or event.get("exe")
    argv = event.get("argv") or [name or "?"]
    text = " ".join(_quote(a) for a in argv)
    if event.get("interpreter"):
        text += f"  (script, via {escape(event['interpreter'])})"
    return text


def _path(event: dict) -> str:
    path = event.get("path") or event.get("fd_path") or ""
    if event.get("new_path"):
        return f"{escape(path)} -> {escape(event['new_path'])}"
    return escape(path)


def _file(event: dict) -> str:
    text = _path(event)
    syscall = event.get("syscall")
    if "xattr" in event or (isinstance(syscall, str) and "xattr" in syscall):
        # an extended attribute has a name, not a mode (recorded as `file chmod`)
        text += f" xattr={escape(event.get('xattr') or '?')}"
    elif event.get("op") == "chmod":
        text += f" mode={event.get('arg', 0) & 0o7777:04o}"  # without file-type bits
    elif event.get("op") == "chown":
        text += f" owner={event.get('owner_uid')}:{event.get('owner_gid')}"
    elif event.get("op") == "repeat":  # opens the kernel folded into a count
        text += f" opened {event.get('count')} more times, same flags and fd"
    elif event.get("persist"):
        text += f" (persistence: {event['persist']})"
    return text


_INET = (socket.AF_INET, socket.AF_INET6)


def _network(event: dict) -> str:
    text = escape(event.get("address") or "")
    proto = event.get("proto") if event.get("family") in _INET else "unix"
    text = f"{proto} {text}" if proto and proto != "0" else text
    if event.get("op") in ("send", "unix-send") and event.get("send_len"):
        text += f" {event['send_len']} bytes"
    return text.strip()


def _process(event: dict) -> str:
    op = event.get("op")
    if op == "exec":
        return _command_line(event)
    if op == "fork":
        return f"child {event.get('child_pid')}"
    if op == "exit":
        if event.get("exit_signal"):
            return f"killed by {event.get('exit_signal_name') or event['exit_signal']}"
        return f"code {event.get('exit_status', event.get('exit_code'))}"
    return ""


def _signal(event: dict) -> str:
    target = event.get("target_pid", "?")
    comm = event.get("target_comm")
    who = f"{target} ({escape(comm)})" if comm else str(target)
    return f"{event.get('signal_name', event.get('sig'))} -> {who}"


def _creds(event: dict) -> str:
    ids = (
        f"uid={event.get('new_uid')} euid={event.get('new_euid')} "
        f"gid={event.get('new_gid')} egid={event.get('new_egid')}"
    )
    if "caps" not in event:
        return ids
    caps = event["caps"]
    if len(caps) >= ALL_CAPS:
        return ids + " caps=all"
    return ids + " caps=" + (",".join(caps) or "none")


def _memory(event: dict) -> str:
    text = _path(event)
    if event.get("prot_text"):
        text += f" prot={event['prot_text']} len={event.get('length', 0)}"
    return text.strip()


def _ipc(event: dict) -> str:
    if event.get("family") is not None:
        return _network(event)
    parts = [escape(event["name"])] if event.get("name") else []
    if event.get("target_pid"):
        who = event.get("target_comm")
        parts.append(
            f"target {event['target_pid']}" + (f" ({escape(who)})" if who else "")
        )
    if event.get("op") == "pipe":
        parts.append(f"fds {event.get('fd0')},{event.get('fd1')}")
    elif event.get("key"):
        parts.append(f"key {event['key']:#x}")
    return " ".join(parts)


def _device(event: dict) -> str:
    kind = event.get("device_class") or "device"
    text = f"{_path(event)} ({kind} {event.get('device', '?')})"
    if event.get("op") == "ioctl":
        text += f" {event.get('ioctl_name') or hex(event.get('cmd', 0))}"
    return text


def _system(event: dict) -> str:
    if event.get("op") == "32-bit-syscall":
        abi = event.get("abi", "32-bit")
        return f"{abi} syscall blocked: {escape(str(event.get('syscall', '?')))}"
    if event.get("op") == "persist":
        return f"{escape(event.get('path', ''))} ({event.get('persist')})"
    if event.get("op") == "mount":
        source, fstype = (
            escape(event.get("source", "")),
            escape(event.get("fstype", "")),
        )
        return f"{source} on {_path(event)} type {fstype}"
    return _path(event)


def _namespace(event: dict) -> str:
    op, spaces = event.get("op"), ",".join(event.get("namespaces") or ())
    if op == "setrlimit":
        return (
            f"{event.get('resource_name')} cur={event.get('rlim_cur')} "
            f"max={event.get('rlim_max')}"
        )
    if op == "cgroup-move":
        return f"{event.get('target_pid')} -> {escape(event.get('cgroup_path', ''))}"
    if op == "clone":
        return f"child {event.get('child_pid')} new {spaces}"
    return spaces


_DESCRIBE = {
    "process": _process,
    "network": _network,
    "file": _file,
    "creds": _creds,
    "memory": _memory,
    "ipc": _ipc,
    "device": _device,
    "system": _system,
    "namespace": _namespace,
    "signal": _signal,
}


def describe(event: dict) -> str:
    """The readable detail of one event (escaped, single line)."""
    text = _DESCRIBE.get(event.get("area"), _path)(event)
    if event.get("error"):
        text += f" = {event.get('error_name') or -event['error']}"
    return text


def verdict_of(event: dict) -> str | None:
    if event.get("verdict"):
        return event["verdict"]
    names = flag_names(event.get("flags", 0))
    for flag, verdict in (("KILLED", "kill"), ("DENIED", "deny"), ("AUDIT", "audit")):
        if flag in names:
            return verdict
    return None


def render(event: dict, t0_ns: int) -> Text:
    """One timeline line for one event."""
    area = event.get("area", "?")
    line = Text(no_wrap=True, overflow="ignore")
    line.append(f"{(event['ts_ns'] - t0_ns) / 1e9:10.6f} ", style="dim")
    line.append(f"{event.get('pid', 0):>7} ", style="dim")
    line.append(INDENT * event.get("depth", 0))
    line.append(f"{escape(event.get('comm', '')):<15} ", style="bold")
    line.append(f"{area:<9} ", style=AREA_STYLES.get(area, ""))
    line.append(f"{event.get('op', '?'):<12} ", style=AREA_STYLES.get(area, ""))
    line.append(describe(event))
    _append_markers(line, event)
    return line


def _append_markers(line: Text, event: dict) -> None:
    verdict = verdict_of(event)
    undelivered = verdict == "kill" and event.get("killed") is False
    if undelivered:
        verdict = "deny"  # the operation was refused, but nothing was killed
    if verdict and verdict != "allow":
        line.append(" ")
        line.append(f"[{verdict.upper()}]", style=VERDICT_STYLES.get(verdict, "bold"))
        if event.get("rule"):
            line.append(f" {escape(event['rule'])}", style="dim")
    if undelivered:
        reason = escape(event.get("kill_error") or "not delivered")
        line.append(f" (kill rule, no kill: {reason})", style="dim")
    outcome = event.get("escalation")
    if outcome is not None:
        _append_escalation(line, outcome, event.get("rule"))
    if "TRUNCATED" in flag_names(event.get("flags", 0)):
        line.append(" [truncated...]", style="dim italic")
    if event.get("derived_from"):
        line.append(f" (from {event['derived_from']})", style="dim")


def _append_escalation(line: Text, outcome: dict, rule: str | None) -> None:
    # the classifier's verdict on an operation its rule's fallback already decided
    if "error" in outcome:
        text = f" [ESCALATION no verdict: {outcome['error']}]"
    else:
        text = (
            f" [ESCALATION {outcome['verdict']} {outcome['score']:.3f}, "
            f"{outcome['latency_ms']:.2f} ms, action {outcome['action']}]"
        )
    line.append(escape(text), style=VERDICT_STYLES.get("escalate", "bold"))
    if rule:
        line.append(f" {escape(rule)}", style="dim")


class Timeline:
    """Writes timeline lines to a console (a terminal, or a file without colour).

    Lines go straight to the console's file: rich's print costs ~150 us a line, which
    would make the live timeline the slowest part of a busy trace.
    """

    def __init__(self, console: Console, t0_ns: int = 0) -> None:
        self.console = console
        self.t0_ns = t0_ns
        self._colors = _COLOR_SYSTEMS.get(console.color_system or "")
        self._styles: dict[str, Style] = {}

    def write(self, event: dict) -> None:
        if not self.t0_ns:
            self.t0_ns = event["ts_ns"]
        line = render(event, self.t0_ns)
        text = self._ansi(line) if self._colors else line.plain
        self.console.file.write(text + "\n")

    def _ansi(self, line: Text) -> str:
        """The line with ANSI colours; render() makes spans that never overlap."""
        plain, out, pos = line.plain, [], 0
        for span in line.spans:
            out.append(plain[pos : span.start])
            style = self._styles.get(span.style)
            if style is None:
                style = self._styles[span.style] = Style.parse(span.style)
            out.append(
                style.render(plain[span.start : span.end], color_system=self._colors)
            )
            pos = span.end
        out.append(plain[pos:])
        return "".join(out)


_COLOR_SYSTEMS = {
    "standard": ColorSystem.STANDARD,
    "256": ColorSystem.EIGHT_BIT,
    "truecolor": ColorSystem.TRUECOLOR,
    "windows": ColorSystem.WINDOWS,
}


def file_console(stream) -> Console:
    """A console that writes plain lines to a file: no colour, no wrapping."""
    return Console(
        file=stream,
        no_color=True,
        color_system=None,
        width=10_000,
        soft_wrap=True,
        emoji=False,
        highlight=False,
    )
