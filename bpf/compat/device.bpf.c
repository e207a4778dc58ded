// SPDX-License-Identifier: MIT
/*
 * Device rules of the compat backend, at the cgroup device hook.
 *
 * The kernel asks this program before any process of the agent's cgroup opens a
 * device node for reading or writing (and before mknod), whatever path names it, so
 * a rule on a device number holds for every alias of the node. A rule key is
 * (major, minor), (major, any) or (any, any); user space stores at each key the
 * winner among the rules that cover it, the program keeps the highest rank.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define ANY 0xffffffff
#define ACC_READ 2
#define ACC_WRITE 4

enum verdict { V_ALLOW = 0, V_AUDIT = 1, V_DENY = 2, V_KILL = 3 };

struct dev_key {
	__u32 major;
	__u32 minor;
};

struct dev_value {
	__u32 rank;
	__u32 rule_id;
	__u8 verdict;
	__u8 pad[3];
};

struct dev_event {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 rule_id;
	__u32 major;
	__u32 minor;
	__u16 access;
	__u8 verdict;
	__u8 pad;
	char comm[16];
};

/* never used: keeps struct dev_event in the BTF for the layout test */
struct dev_event *unused_dev_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct dev_key);
	__type(value, struct dev_value);
} dev_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} dev_events SEC(".maps");

const volatile __u8 targ_default_verdict = V_ALLOW;

static __always_inline void take(struct dev_key *key, struct dev_value *best, bool *found)
{
	struct dev_value *val = bpf_map_lookup_elem(&dev_rules, key);

	if (val && (!*found || val->rank > best->rank)) {
		*best = *val;
		*found = true;
	}
}

static __always_inline void emit(struct bpf_cgroup_dev_ctx *ctx, struct dev_value *val)
{
	struct dev_event *ev = bpf_ringbuf_reserve(&dev_events, sizeof(*ev), 0);
	__u64 id = bpf_get_current_pid_tgid();

	if (!ev)
		return;
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->rule_id = val->rule_id;
	ev->major = ctx->major;
	ev->minor = ctx->minor;
	ev->access = ctx->access_type >> 16;
	ev->verdict = val->verdict;
	ev->pad = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
}

SEC("cgroup/dev")
int check_device(struct bpf_cgroup_dev_ctx *ctx)
{
	struct dev_value best = { .verdict = targ_default_verdict };
	struct dev_key key = { .major = ctx->major, .minor = ctx->minor };
	bool found = false;

	/* mknod is a file create, decided by the file rules */
	if (!((ctx->access_type >> 16) & (ACC_READ | ACC_WRITE)))
		return 1;
	take(&key, &best, &found);
	key.minor = ANY;
	take(&key, &best, &found);
	key.major = ANY;
	take(&key, &best, &found);
	if (best.verdict != V_ALLOW)
		emit(ctx, &best);
	return best.verdict >= V_DENY ? 0 : 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
