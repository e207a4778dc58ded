// SPDX-License-Identifier: GPL-2.0
/* A hand-written BPF LSM program that proves the test VM enforces: file_open of any
 * inode listed in `denied_inodes` fails with EPERM. Keys are the inode the kernel
 * resolved (device, inode number), never the path string the caller passed. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#define EPERM 1

struct inode_key {
	__u64 dev; /* kernel encoding: major << 20 | minor */
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct inode_key);
	__type(value, __u32);
} denied_inodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} denials SEC(".maps");

static __always_inline int deny_if_listed(struct file *file)
{
	struct inode_key key = {};
	__u32 zero = 0;
	__u64 *count;

	key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	key.ino = BPF_CORE_READ(file, f_inode, i_ino);
	if (!bpf_map_lookup_elem(&denied_inodes, &key))
		return 0;

	count = bpf_map_lookup_elem(&denials, &zero);
	if (count)
		__sync_fetch_and_add(count, 1);
	return -EPERM;
}

SEC("lsm/file_open")
int BPF_PROG(file_open, struct file *file)
{
	return deny_if_listed(file);
}

char LICENSE[] SEC("license") = "GPL";
