"""The lsm backend of `capsule enforce`: the policy's own BPF LSM programs.

The steps: take the artifact (or compile the policy into the run directory); show the
coverage, where every clause the code generator left out is "not enforced in kernel";
create the agent's cgroup; load the object, fill its maps from maps.json, scope it to
the cgroup and attach every hook; fork the command, held before exec, place it in the
cgroup and release it; stream the `events` ring buffer into the store and the
timeline until the process tree has exited.

SIGHUP reloads: the policy is read and checked again (and compiled when the artifact
no longer matches it), the new object is loaded, filled, scoped and attached, and only
then are the old programs detached. During the swap both sets decide, so an operation
meets the stricter of the two, never neither. A reload that fails at any step leaves
the old programs in place.

The programs decide in the kernel. Their events carry the verdict (flags) but not the
deciding clause, so the runtime names the rule by deciding the event again with the
policy's semantics (capsule/lang/semantics.py), from which the maps were lowered.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

from capsule.cli import exitcodes
from capsule.codegen import artifact, maps
from capsule.errors import CapsuleError
from capsule.events import schema
from capsule.lang.model import Policy
from capsule.runtime import enforce
from capsule.runtime.compat.cgroup import AgentCgroup
from capsule.runtime.compat.coverage import ENFORCED, PARTIAL, Line, Report, describe
from capsule.runtime.session import exit_code_of, spawn_held
from capsule.runtime.store import RunStore

log = logging.getLogger(__name__)

NOT_IN_KERNEL = "not enforced in kernel"
RING_SIZE = 256 * 1024  # the `events` map of bpf/templates/policy.bpf.c.j2
SCOPE_MAP = "scope_cgroup"
FMODE_EXEC = 0x20  # an exec open: the template reports it as a read event
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_FLAG_VERDICTS = (("KILLED", "kill"), ("DENIED", "deny"), ("AUDIT", "audit"))
PROTECTION = [
    "none from the lsm backend beyond the policy's own rules (docs/limitations.md, "
    "Enforcement, lsm backend)"
]


# -- coverage --------------------------------------------------------------------------


def coverage_report(policy: Policy, manifest: dict) -> Report:
    """One line per clause: the hooks that decide it, or "not enforced in kernel"."""
    missing: dict[str, dict[str, str]] = {}  # rule ref -> op -> reason
    for item in manifest.get("unsupported", []):
        ops = missing.setdefault(item["ref"], {})
        for op in item["ops"]:
            ops[op] = item["reason"]
    hooks = {
        decided: hook["name"]
        for hook in manifest["hooks"]
        for decided in hook["decides"]
    }
    lines = [
        _line(clause, missing.get(clause.rule.ref, {}), hooks)
        for clause in policy.clauses()
    ]
    detail = f"BPF LSM, {len(manifest['hooks'])} hook(s), scoped to the agent's cgroup"
    return Report("lsm", detail, lines, list(PROTECTION))


def _line(clause, missing: dict[str, str], hooks: dict[str, str]) -> Line:
    rule = clause.rule
    blocking = rule.enforced.blocks
    text = describe(clause)
    ops = sorted(rule.ops)
    lost = tuple(op for op in ops if op in missing)
    used = sorted({hooks[key] for op in ops if (key := f"{rule.area} {op}") in hooks})
    mechanism = "lsm " + ", ".join(used) if used else ""
    if not lost:
        return Line(rule.ref, text, blocking, ENFORCED, mechanism or "lsm")
    reasons = "; ".join(sorted({missing[op] for op in lost}))  # each names its ops
    if len(lost) == len(ops):
        return Line(rule.ref, text, blocking, NOT_IN_KERNEL, "", reasons, lost)
    return Line(rule.ref, text, blocking, PARTIAL, mechanism, reasons, lost)


def check_require(report: Report, require: str) -> None:
    """--require full: no deny or kill clause may be left out of the kernel."""
    missing = report.audit_only_denials()
    if require == "full" and missing:
        refs = ", ".join(dict.fromkeys(line.ref for line in missing))
        raise CapsuleError(
            f"failed to start with --require full: {len(missing)} deny or kill "
            f"rule(s) not enforced in kernel ({refs})",
            hint="see the coverage report above, or use --require best-effort",
        )


# -- events ----------------------------------------------------------------------------


def to_event(raw: dict, policy: Policy) -> dict:
    """A kernel record as a timeline event: its verdict, and the rule that decided."""
    from capsule.lang.semantics import decide
    from capsule.runtime.compat.observe import policy_event

    event = dict(raw)
    if event.get("area") == "file" and event.get("op") == "read":
        if (event.get("fmode", 0) | event.get("open_flags", 0)) & FMODE_EXEC:
            event["op"] = "exec"
    if not event.get("path") and event.get("exe_path"):
        event["path"] = event["exe_path"]
    flags = set(schema.flag_names(event.get("flags", 0)))
    event["verdict"] = next((v for f, v in _FLAG_VERDICTS if f in flags), None)
    if "TRUNCATED" in flags:
        event["rule"] = f"default:{event.get('area')} (path too long)"
        return event
    try:
        decision = decide(policy, policy_event(event))
    except (KeyError, TypeError, ValueError):
        return event
    if decision.clause is not None:
        event["rule"] = decision.clause.rule.ref
    else:
        event["rule"] = f"default:{event.get('area')}"
    return event


# -- loading ---------------------------------------------------------------------------


def _attach(directory: Path, cgroup_id: int):
    """Load the artifact's object, fill its maps, scope it and attach every program.

    Returns (object, links, ring). On a failure, whatever this call loaded or attached
    is released again before the error propagates.
    """
    from capsule.runtime import libbpf
    from capsule.runtime.ringbuf import RingBuffer

    obj = libbpf.BpfObject(directory / artifact.OBJECT)
    links: list = []
    ring = None
    try:
        obj.load()
        for name, entries in maps.read_json(directory / artifact.MAPS).items():
            table = obj.map(name)
            for key, value in entries:
                table.update(key, value)
        _scope(obj, directory).update(_U32.pack(0), _U64.pack(cgroup_id))
        ring = RingBuffer(obj.map("events").fd, RING_SIZE)
        for program in obj.programs():
            links.append(program.attach())
    except BaseException:
        for link in links:
            link.destroy()
        if ring is not None:
            ring.close()
        obj.close()
        raise
    return obj, links, ring


def _scope(obj, directory: Path):
    try:
        return obj.map(SCOPE_MAP)
    except CapsuleError:
        raise CapsuleError(
            f"failed to scope artifact {directory}: it has no {SCOPE_MAP} map",
            hint="recompile it with this version of capsule compile",
        ) from None


def _load_checked(files: list[str]) -> Policy:
    """The checked policy from its files; the first error as one line."""
    from capsule.lang import load_policy

    if not files:
        raise CapsuleError("no policy source is known")
    policy, diagnostics = load_policy(files)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        first = errors[0]
        raise CapsuleError(
            f"{first.location}: {first.message} [{first.code}]"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        )
    return policy


def _cause(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    return str(err) or type(err).__name__


# -- the run ---------------------------------------------------------------------------


class LsmRun(enforce.BackendRun):
    """One command under the lsm backend, from the artifact to the last event."""

    def __init__(self, request: enforce.EnforceRequest, artifact_dir: Path | None):
        self.request = request
        self.artifact_dir = artifact_dir
        self.result = enforce.EnforceResult(
            request.command, exitcodes.CAPSULE_FAILED, request.directory
        )
        self.obj = None
        self.links: list = []
        self.ring = None
        self.cgroup: AgentCgroup | None = None
        self.watchdog = None
        self.store: RunStore | None = None
        self.stopping = False
        self.decode_errors = 0
        self.policy = request.policy  # the policy in force (changes on a reload)
        self.policy_sha256 = ""
        self.cgroup_id = 0
        self.reload_wanted = False  # set by SIGHUP, acted on by the main loop
        self.reloads: list[dict] = []  # each one that took effect, for the run store

    def run(self) -> enforce.EnforceResult:
        started = time.monotonic()
        request = self.request
        directory = self._artifact()
        manifest = artifact.load(directory)
        self.policy_sha256 = manifest.get("policy_sha256", "")
        report = coverage_report(request.policy, manifest)
        if request.on_coverage:
            request.on_coverage(report)
        check_require(report, request.require)
        self._warn_unsupported_options()

        self._start_store(
            "lsm", coverage=report.to_json(), artifact=str(directory)
        )
        return self._guarded(lambda: self._run(directory), started)

    def _artifact(self) -> Path:
        """The given artifact, or the policy compiled into the run directory."""
        if self.artifact_dir is not None:
            return self.artifact_dir
        out = self.request.directory / "artifact"
        log.info("compiling the policy into %s", out)
        return artifact.build(self.request.policy, out).directory

    def _warn_unsupported_options(self) -> None:
        if self.request.trace:
            log.warning("--trace is not supported by the lsm backend: ignored")
        if enforce.wants_classifier(self.request.policy):
            log.warning(
                "escalate rules enforce their fallback in the kernel; the lsm "
                "backend does not run the escalation classifier"
            )

    def _on_reload_signal(self, _signum: int, _frame) -> None:
        # only a flag: the swap runs in the main loop, between two ring reads
        self.reload_wanted = True

    def _run(self, directory: Path) -> None:
        # the scope and the hooks are in place before the command exists
        self.cgroup = AgentCgroup(f"run-{os.getpid()}-{time.monotonic_ns()}")
        self.watchdog = enforce._start_watchdog(self.cgroup)
        self.cgroup_id = os.stat(self.cgroup.path).st_ino
        self.obj, self.links, self.ring = _attach(directory, self.cgroup_id)
        log.info("lsm: %d hook(s), scope cgroup id %d", len(self.links), self.cgroup_id)
        pid, go_w, err_r = spawn_held(self.request.command, self.request.run_as)
        try:
            self.cgroup.add(pid)
            os.write(go_w, b"x")  # released: it executes CMD inside the scope
        finally:
            os.close(go_w)
        status = self._wait(pid)
        self.result.exit_code = exit_code_of(status)
        enforce._read_exec_error(err_r, self.result)

    def _wait(self, pid: int) -> int:
        status = None
        while True:
            self._poll(int(enforce.POLL_S * 1000))
            if self.reload_wanted:
                self.reload_wanted = False
                self.reload()
            if status is None:
                done, raw = os.waitpid(pid, os.WNOHANG)
                status = raw if done else None
            if status is not None and not self.cgroup.pids():
                return status

    def _poll(self, timeout_ms: int) -> None:
        if self.ring is not None:
            self._read(self.ring, timeout_ms, self.policy)

    def _read(self, ring, timeout_ms: int, policy: Policy) -> None:
        for record in ring.poll(timeout_ms):
            try:
                raw = schema.decode(record)
            except schema.DecodeError as err:
                self.decode_errors += 1
                log.debug("undecodable lsm event: %s", err)
                continue
            self._record(to_event(raw, policy))
        if self.store is not None:
            self.store.flush()

    # -- reload ------------------------------------------------------------------------

    def reload(self) -> bool:
        """Swap in the policy as it is on disk now; on any failure keep the old one."""
        try:
            policy, directory, manifest = self.prepare_reload()
            self._swap(directory)
        except (CapsuleError, OSError, ValueError, KeyError) as err:
            cause = err.message if isinstance(err, CapsuleError) else _cause(err)
            log.error(
                "failed to reload the policy: %s; still enforcing %s",
                cause,
                self.policy_sha256[:12] or "the previous policy",
            )
            return False
        self.policy = policy
        self.policy_sha256 = manifest["policy_sha256"]
        target = directory.resolve()  # a link repointed for the reload: its target
        # shown by default: the rules changed in the middle of the run
        log.warning("policy reloaded: %s (%s)", self.policy_sha256[:12], target)
        self.reloads.append(
            {
                "ts_ns": time.monotonic_ns(),
                "at": time.time(),
                "policy_sha256": self.policy_sha256,
                "artifact": str(target),
            }
        )
        if self.store is not None:
            self.store.set_meta(reloads=self.reloads)
        return True

    def prepare_reload(self) -> tuple[Policy, Path, dict]:
        """The reloaded policy, checked, and its artifact (compiled here if needed).

        Loads nothing into the kernel: a failure here leaves the run as it was.
        """
        from capsule.codegen.ir import policy_hash

        given = self.artifact_dir
        manifest = artifact.load(given) if given is not None else None
        files = manifest["sources"] if manifest else self.request.policy_files
        policy = _load_checked(list(files[:1]))
        directory = given
        # an artifact older than its sources is compiled again
        if manifest is None or manifest["policy_sha256"] != policy_hash(policy):
            directory = self.request.directory / f"artifact-{len(self.reloads) + 1}"
            log.info("compiling the reloaded policy into %s", directory)
            directory = artifact.build(policy, directory).directory
            manifest = artifact.load(directory)
        check_require(coverage_report(policy, manifest), self.request.require)
        return policy, directory, manifest

    def _swap(self, directory: Path) -> None:
        obj, links, ring = _attach(directory, self.cgroup_id)
        old_obj, old_links, old_ring = self.obj, self.links, self.ring
        self.obj, self.links, self.ring = obj, links, ring
        # until here both sets were attached: the stricter of both, never neither
        for link in old_links:
            link.destroy()
        if old_ring is not None:
            self._read(old_ring, 0, self.policy)  # its last events, by its own rules
            old_ring.close()
        if old_obj is not None:
            old_obj.close()
        log.info("lsm: reloaded, %d hook(s) from %s", len(links), directory)

    def _record(self, event: dict) -> None:
        verdict = event.get("verdict")
        if verdict:
            self.result.verdicts[verdict] += 1
            self.result.rules[event.get("rule") or "?"] += 1
        if self.store is not None:
            self.store.add(event)
        if self.request.on_event is not None:
            self.request.on_event(event)

    def _cleanup(self) -> None:
        self._poll(0)
        if self.cgroup is not None:
            self.cgroup.kill_all()
        # the hooks go only once the tree is gone: nothing of it runs unenforced
        for link in self.links:
            link.destroy()
        if self.ring is not None:
            self.ring.close()
        if self.obj is not None:
            self.obj.close()
        if self.cgroup is not None:
            self.cgroup.remove()
        if self.watchdog is not None:
            self.watchdog.disarm()
        if self.decode_errors:
            log.warning("%d lsm event(s) could not be decoded", self.decode_errors)
        if self.store is not None:
            self.store.set_meta(finished_at=time.time(), summary=self.result.summary())
            self.store.close()
