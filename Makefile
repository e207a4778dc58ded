# Capsule: `make demo` runs the main job on a bundled example, `make test` runs every test.
# `make setup` installs what a fresh Debian 12 machine lacks; running it again is cheap.

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
BUILD    := build
APT_PKGS := clang llvm libbpf-dev libbpf1 bpftool clang-format git curl tar sqlite3 \
            qemu-system-x86 linux-image-amd64 busybox-static auditd bpftrace sudo
STAMP    := $(BUILD)/.setup-stamp

.PHONY: setup apt venv test demo demo-lsm bench clean vmlinux

setup: $(STAMP) $(BUILD)/vmlinux.h $(BUILD)/capsule_events.h

# apt only runs when a package is missing, so a second `make setup` costs nothing
apt:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory apt
	@mkdir -p $(BUILD)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,train]'
	@touch $@

# the kernel's own type information, for CO-RE compilation of every BPF object
$(BUILD)/vmlinux.h:
	@mkdir -p $(BUILD)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

# the event layouts shared by the BPF C and the Python decoders (capsule/events/schema.py)
$(BUILD)/capsule_events.h: capsule/events/schema.py | $(STAMP)
	$(BIN)/python -m capsule.events.schema $@

test: setup
	$(BIN)/pytest -q -rs

# first what a harmless agent does, then a misbehaving one stopped by a policy
demo: setup
	@echo "== capsule trace: everything examples/demo/agent.sh does =="
	$(BIN)/capsule trace -o $(BUILD)/demo -- examples/demo/agent.sh
	@echo "== capsule enforce: a misbehaving agent under examples/policies/coding-agent.cap =="
	examples/policies/enforce-demo.sh $(BUILD)/demo-enforce $(BIN)/capsule

# the same enforcement demo in the LSM VM (Debian's 6.1 kernel), with --backend lsm
demo-lsm: setup
	@echo "== capsule enforce --backend lsm: the misbehaving agent in the LSM VM =="
	$(BIN)/python examples/policies/enforce_demo_lsm.py $(BUILD)/demo-lsm

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(BUILD) $(VENV)
