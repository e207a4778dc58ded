#!/bin/bash
# `make demo-lsm`, inside the LSM VM: the same misbehaving agent as `make demo`, under
# the compiled coding-agent policy with `capsule enforce --backend lsm`.
# Usage (as root, in the guest): enforce-demo-lsm-guest.sh ARTIFACT CAPSULE
set -eu

artifact=$1
capsule=$2
here=$(dirname "$(readlink -f "$0")")

# the agent's scope is a cgroup v2
[ -e /sys/fs/cgroup/cgroup.procs ] || mount -t cgroup2 none /sys/fs/cgroup

# the policy's workspace is /work/agent, but the guest sees the host's /work read-only:
# lay a tmpfs over /work that still holds the host's directories, bound in place
if ! mkdir -p /work/agent 2>/dev/null; then
    mkdir -p /run/capsule/work
    mount -t tmpfs tmpfs /run/capsule/work
    for dir in /work/*/; do
        name=$(basename "$dir")
        mkdir -p "/run/capsule/work/$name"
        mount --bind "$dir" "/run/capsule/work/$name"
    done
    mount --rbind /run/capsule/work /work
    mkdir -p /work/agent
fi

CAPSULE_DEMO_POLICY=$artifact CAPSULE_DEMO_BACKEND=lsm \
    exec "$here/enforce-demo.sh" /run/capsule/demo-run "$capsule"
