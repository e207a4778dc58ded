// SPDX-License-Identifier: MIT
/*
 * Network rules of the compat backend, at the cgroup sock_addr hooks.
 *
 * These hooks run in the calling task before the kernel uses a socket address
 * (connect, bind, and sendmsg on unconnected datagram sockets), for every task in
 * the agent's cgroup and below, so the policy applies to the whole process tree and
 * cannot be raced: the address is the kernel's copy, not the caller's memory.
 *
 * The rules are in one LPM trie. User space stores at each prefix the rule that wins
 * among all rules covering that prefix, so the longest match is also the winner for
 * its port and protocol class; the hook looks up to four classes (exact or any port,
 * exact or any protocol) and keeps the highest rank.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10

enum op { OP_CONNECT = 1, OP_BIND = 2, OP_SEND = 3 };
enum verdict { V_ALLOW = 0, V_AUDIT = 1, V_DENY = 2, V_KILL = 3 };

struct rule_key {
	__u32 prefixlen;	/* bits of op..addr that must match */
	__u8 op;
	__u8 protocol;		/* 0: any protocol */
	__u16 port;		/* host order; 0: any port */
	__u8 addr[16];		/* IPv6, or IPv4 mapped as ::ffff:a.b.c.d */
};

struct rule_value {
	__u32 rank;		/* order of the rule-combining key; higher wins */
	__u32 rule_id;		/* index into the runtime's table of file:line */
	__u8 verdict;
	__u8 pad[3];
};

struct sock_event {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 rule_id;
	__u8 op;
	__u8 verdict;
	__u8 protocol;
	__u8 family;
	__u16 port;
	__u16 pad;
	__u8 addr[16];
	char comm[16];
};

/* never used: keeps struct sock_event in the object's BTF, which a test compares
 * with the Python decoder (a type only reached through a local pointer is dropped) */
struct sock_event *unused_sock_event __attribute__((unused));

/* 32 bits of op, protocol and port come before the address in every key */
#define KEY_HEAD_BITS 32

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__type(key, struct rule_key);
	__type(value, struct rule_value);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* the area's default when no rule matches: set by the loader before load */
const volatile __u8 targ_default_verdict = V_ALLOW;
const volatile __u32 targ_default_rule = 0;

static __always_inline void lookup_class(struct rule_key *key, __u8 protocol, __u16 port,
					 struct rule_value *best, bool *found)
{
	struct rule_value *val;

	key->protocol = protocol;
	key->port = port;
	val = bpf_map_lookup_elem(&rules, key);
	if (!val)
		return;
	if (!*found || val->rank > best->rank) {
		*best = *val;
		*found = true;
	}
}

static __always_inline void emit(struct bpf_sock_addr *ctx, struct rule_key *key,
				 struct rule_value *val, __u16 port)
{
	struct sock_event *ev;
	__u64 id = bpf_get_current_pid_tgid();

	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev)
		return;
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->rule_id = val->rule_id;
	ev->op = key->op;
	ev->verdict = val->verdict;
	ev->protocol = ctx->protocol;
	ev->family = ctx->user_family;
	ev->port = port;
	ev->pad = 0;
	__builtin_memcpy(ev->addr, key->addr, sizeof(ev->addr));
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, 0);
}

static __always_inline int decide(struct bpf_sock_addr *ctx, struct rule_key *key)
{
	struct rule_value best = { .verdict = targ_default_verdict,
				   .rule_id = targ_default_rule };
	bool found = false;
	__u8 protocol = ctx->protocol;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);

	lookup_class(key, protocol, port, &best, &found);
	lookup_class(key, protocol, 0, &best, &found);
	lookup_class(key, 0, port, &best, &found);
	lookup_class(key, 0, 0, &best, &found);
	key->protocol = protocol;
	if (best.verdict != V_ALLOW)
		emit(ctx, key, &best, port);
	/* a kill verdict also refuses the call; the runtime sends the signal */
	return best.verdict >= V_DENY ? 0 : 1;
}

/* IPv4 addresses are looked up as IPv4-mapped IPv6, so one trie holds both */
static __always_inline int decide4(struct bpf_sock_addr *ctx, __u8 op)
{
	struct rule_key key = { .prefixlen = KEY_HEAD_BITS + 128, .op = op };
	__u32 ip = ctx->user_ip4;

	key.addr[10] = 0xff;
	key.addr[11] = 0xff;
	__builtin_memcpy(&key.addr[12], &ip, 4);
	return decide(ctx, &key);
}

/* each word is read on its own: the context allows only 4-byte loads here */
static __always_inline int decide6(struct bpf_sock_addr *ctx, __u8 op)
{
	struct rule_key key = { .prefixlen = KEY_HEAD_BITS + 128, .op = op };
	__u32 word;

	word = ctx->user_ip6[0];
	__builtin_memcpy(&key.addr[0], &word, 4);
	word = ctx->user_ip6[1];
	__builtin_memcpy(&key.addr[4], &word, 4);
	word = ctx->user_ip6[2];
	__builtin_memcpy(&key.addr[8], &word, 4);
	word = ctx->user_ip6[3];
	__builtin_memcpy(&key.addr[12], &word, 4);
	return decide(ctx, &key);
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	return decide4(ctx, OP_CONNECT);
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	return decide6(ctx, OP_CONNECT);
}

SEC("cgroup/sendmsg4")
int sendmsg4(struct bpf_sock_addr *ctx)
{
	return decide4(ctx, OP_SEND);
}

SEC("cgroup/sendmsg6")
int sendmsg6(struct bpf_sock_addr *ctx)
{
	return decide6(ctx, OP_SEND);
}

SEC("cgroup/bind4")
int bind4(struct bpf_sock_addr *ctx)
{
	return decide4(ctx, OP_BIND);
}

SEC("cgroup/bind6")
int bind6(struct bpf_sock_addr *ctx)
{
	return decide6(ctx, OP_BIND);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
