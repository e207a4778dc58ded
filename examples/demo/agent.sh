#!/bin/bash
# A harmless stand-in for an AI agent's tool calls, for `make demo`: it touches each of
# Capsule's ten areas once or twice. It uses only a temporary directory, loopback and
# a private mount namespace, and removes what it made before it exits.
set -eu

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
work=$(mktemp -d /tmp/capsule-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
step() { printf 'agent: %s\n' "$*" >&2; }

step "process + file: write, rename and delete files"
echo "notes" > notes.txt
mkdir -p out
mv notes.txt out/notes.md
cat out/notes.md | tr a-z A-Z > out/upper.md   # a pipe: ipc
rm out/notes.md
chmod 600 out/upper.md

step "network: listen, connect, accept and send on 127.0.0.1"
"$PY" - <<'EOF'
import socket
server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname())
peer, _ = server.accept()
client.sendall(b"hello")
assert peer.recv(5) == b"hello"
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.sendto(b"ping", ("127.0.0.1", server.getsockname()[1]))
EOF

step "ipc: a unix socket and SysV shared memory, message queue and semaphore"
"$PY" - <<EOF
import socket
path = "$work/agent.sock"
server = socket.socket(socket.AF_UNIX)
server.bind(path)
server.listen()
client = socket.socket(socket.AF_UNIX)
client.connect(path)
client.sendall(b"x")
EOF
for kind in -M -Q -S; do
    id=$(ipcmk $kind 1 | awk '{print $NF}')
    case $kind in -M) ipcrm -m "$id" ;; -Q) ipcrm -q "$id" ;; -S) ipcrm -s "$id" ;; esac
done

step "memory: a writable+executable mapping, a memfd, and running a binary from it"
"$PY" - <<'EOF'
import mmap, os
wx = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
fd = os.memfd_create("capsule-demo")
with open("/bin/true", "rb") as binary:
    os.write(fd, binary.read())
pid = os.fork()
if pid == 0:
    os.execve(f"/proc/self/fd/{fd}", ["true-from-memory"], {})
os.waitpid(pid, 0)
EOF

step "device: open the tun device (no interface is created) and /dev/null"
"$PY" -c 'open("/dev/net/tun", "rb").close()' 2>/dev/null || true
echo discard > /dev/null

step "creds: run a command as nobody"
if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=65534 --regid=65534 --clear-groups true
fi

step "namespace + system: a private mount namespace with a throwaway cron entry"
if [ "$(id -u)" = 0 ]; then
    unshare --mount --propagation private sh -c '
        mount -t tmpfs capsule-demo /etc/cron.d
        echo "* * * * * root true" > /etc/cron.d/capsule-demo
        umount /etc/cron.d'
fi
(ulimit -n 256; true)

step "signal: stop a helper"
sleep 30 &
helper=$!
for _ in $(seq 1000); do   # until the child has become `sleep` (at most ~10 s)
    read -r comm < /proc/$helper/comm && [ "$comm" = sleep ] && break
    sleep 0.01
done
kill -TERM $helper
wait $helper 2>/dev/null || true

step "done"
