// SPDX-License-Identifier: MIT
/*
 * Report the file syscalls that Landlock refused, for the compat backend's timeline.
 *
 * Landlock denies without telling user space (its audit records need the kernel audit
 * subsystem enabled), so this program looks at every syscall exit instead: one compare
 * of the return value keeps the cost near zero for calls that succeed. For a refused
 * file syscall of a process in the agent's cgroup it copies the path arguments while
 * they are still in the caller's memory; user space decides which rule it was.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "capsule_events.h"
#include "capsule_path.h"

#define EPERM 1
#define EACCES 13
#define EXDEV 18
#define PATH_LEN CAPSULE_PATH_MAX

struct denial {
	__u64 ts_ns;
	__s64 ret;
	__u64 args[4];
	__u32 pid;
	__u32 tid;
	__u32 nr;
	__u32 pad;
	char comm[16];
	char path[PATH_LEN];
	char path2[PATH_LEN];
	char base[PATH_LEN];	/* the directory a relative path starts from */
	char base2[PATH_LEN];
};

/* never used: keeps struct denial in the BTF for the layout test */
struct denial *unused_denial __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} denials SEC(".maps");

const volatile __u64 targ_cgroup_id = 0;

/* which arguments are paths: 0 none, else 1 + the argument index */
static __always_inline void path_args(__u32 nr, int *first, int *second)
{
	*first = 0;
	*second = 0;
	switch (nr) {
	case 2: case 85: case 59: case 76: case 83: case 84: case 87: case 133:
		*first = 1; /* open creat execve truncate mkdir rmdir unlink mknod */
		break;
	case 257: case 437: case 322: case 258: case 263: case 259:
		*first = 2; /* openat openat2 execveat mkdirat unlinkat mknodat */
		break;
	case 82: case 86: case 88:
		*first = 1; /* rename link symlink */
		*second = 2;
		break;
	case 264: case 316: case 265:
		*first = 2; /* renameat renameat2 linkat */
		*second = 4;
		break;
	case 266:
		*first = 1; /* symlinkat */
		*second = 3;
		break;
	}
}

/*
 * A relative path is resolved now, while the caller and its directories still exist:
 * by the time user space reads the record, a short-lived caller is gone.
 */
static __always_inline void base_of(const char *path, int path_arg, bool at, __u64 *args,
				    char *out)
{
	long dirfd = AT_FDCWD;
	struct file *file;

	out[0] = 0;
	if (path[0] == '/' || path[0] == 0)
		return;
	/* in the *at calls the directory fd comes right before the path */
	if (at && path_arg >= 2)
		dirfd = (int)args[path_arg - 2];
	if (dirfd == AT_FDCWD) {
		cwd_path(out);
		return;
	}
	file = fd_file(dirfd);
	if (file)
		file_path(file, out);
}

static __always_inline __u64 arg(struct pt_regs *regs, int index)
{
	switch (index) {
	case 0: return BPF_CORE_READ(regs, di);
	case 1: return BPF_CORE_READ(regs, si);
	case 2: return BPF_CORE_READ(regs, dx);
	default: return BPF_CORE_READ(regs, r10);
	}
}

SEC("raw_tp/sys_exit")
int report_denial(struct bpf_raw_tracepoint_args *ctx)
{
	long ret = (long)ctx->args[1];
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	struct denial *d;
	int first, second;
	bool at;
	__u32 nr;

	if (ret != -EACCES && ret != -EPERM && ret != -EXDEV)
		return 0;
	if (bpf_get_current_cgroup_id() != targ_cgroup_id)
		return 0;
	nr = BPF_CORE_READ(regs, orig_ax);
	path_args(nr, &first, &second);
	if (!first)
		return 0;

	d = bpf_ringbuf_reserve(&denials, sizeof(*d), 0);
	if (!d)
		return 0;
	d->ts_ns = bpf_ktime_get_ns();
	d->ret = ret;
	for (int i = 0; i < 4; i++)
		d->args[i] = arg(regs, i);
	d->pid = bpf_get_current_pid_tgid() >> 32;
	d->tid = (__u32)bpf_get_current_pid_tgid();
	d->nr = nr;
	d->pad = 0;
	bpf_get_current_comm(d->comm, sizeof(d->comm));
	d->path[0] = 0;
	d->path2[0] = 0;
	d->base2[0] = 0;
	bpf_probe_read_user_str(d->path, sizeof(d->path), (void *)d->args[first - 1]);
	/* the *at calls number their first path argument 2 or later (symlinkat aside) */
	at = first >= 2 || nr == 266;
	base_of(d->path, first, at, d->args, d->base);
	if (second) {
		bpf_probe_read_user_str(d->path2, sizeof(d->path2), (void *)d->args[second - 1]);
		base_of(d->path2, second, at, d->args, d->base2);
	}
	bpf_ringbuf_submit(d, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
