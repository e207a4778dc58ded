#!/bin/bash
# `make demo`, second part: run misbehaving-agent.sh under coding-agent.cap with
# `capsule enforce`. The agent gets a throwaway workspace below the policy's
# workspace (/work/agent) and a throwaway home below /home (the policy's `~` is
# /root or /home/*) with a fake ~/.ssh/id_rsa and ~/.bashrc; both are removed after.
# Usage (as root): enforce-demo.sh RUN_DIR CAPSULE [ARG...]   (CAPSULE: how to run it)
# CAPSULE_DEMO_POLICY (a compiled artifact instead of coding-agent.cap) and
# CAPSULE_DEMO_BACKEND (default auto) are how `make demo-lsm` runs it in the LSM VM.
# Exit status: the agent's, as capsule enforce reports it (0: behaved as expected).
set -eu

run=$(realpath -m "$1")
shift
capsule=("$@")
case ${capsule[0]} in */*) capsule[0]=$(realpath -s "${capsule[0]}") ;; esac
here=$(dirname "$(readlink -f "$0")")
policy=${CAPSULE_DEMO_POLICY:-$here/coding-agent.cap}
backend=${CAPSULE_DEMO_BACKEND:-auto}
[ -d /work/agent ] || made_root=1
mkdir -p /work/agent
workspace=$(mktemp -d /work/agent/capsule-demo.XXXXXX)
home=$(mktemp -d /home/capsule-demo.XXXXXX)
cleanup() {
    rm -rf "$workspace" "$home"
    [ -z "${made_root:-}" ] || rmdir --ignore-fail-on-non-empty /work/agent
}
trap cleanup EXIT

# made before the sandbox: Landlock grants rights on paths that exist when it starts
cp "$here/misbehaving-agent.sh" "$workspace/"
echo "TODO: fix the failing test in parser.py" > "$workspace/notes.md"
mkdir -m 700 "$home/.ssh"
echo "not a real key: a stand-in for make demo" > "$home/.ssh/id_rsa"
echo "# a stand-in ~/.bashrc for make demo" > "$home/.bashrc"
bashrc=$(cat "$home/.bashrc")

# the agent starts in its workspace, as an agent would
status=0
(cd "$workspace" && HOME=$home "${capsule[@]}" enforce -o "$run" \
    --backend "$backend" "$policy" -- ./misbehaving-agent.sh) || status=$?

# seen from outside the sandbox too: the persistence attempt changed nothing
if [ "$(cat "$home/.bashrc")" != "$bashrc" ]; then
    echo "enforce-demo: ~/.bashrc was changed: enforcement failed open" >&2
    status=1
fi
exit "$status"
