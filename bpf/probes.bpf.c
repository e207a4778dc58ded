/*
 * Tiny programs, one per program type Capsule may use. `capsule doctor` loads and attaches
 * each one on its own (the others' autoload off), because only a real load shows what this
 * kernel, its config and its lockdown state allow; listing /sys/kernel/security/lsm does not.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("lsm/file_open")
int BPF_PROG(probe_lsm, struct file *file)
{
	return 0;
}

SEC("fentry/vfs_read")
int BPF_PROG(probe_fentry)
{
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(probe_tp_btf, struct task_struct *parent, struct task_struct *child)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int probe_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int probe_tracepoint(void *ctx)
{
	return 0;
}

SEC("cgroup/connect4")
int probe_cgroup_connect(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/sock_create")
int probe_cgroup_sock(struct bpf_sock *ctx)
{
	return 1;
}

SEC("cgroup_skb/egress")
int probe_cgroup_skb(struct __sk_buff *skb)
{
	return 1;
}
