/*
 * Capsule's tracer: what one process tree (or one cgroup) does, as events in a ring buffer.
 *
 * Scope. The command Capsule starts is added to `tracked` by user space while it is still
 * blocked before exec; sched_process_fork adds every child before it runs its first
 * instruction, and sched_process_exit removes the process. With targ_cgroup set, the
 * scope is the cgroup in `scope_cgroup` and its descendants instead.
 *
 * Syscalls. tp_btf/sys_enter keeps the arguments of the syscalls we care about per thread
 * (`stash`); tp_btf/sys_exit tail-calls the handler for that syscall, which then sees both
 * the arguments and the result, and can read the fd the kernel just installed. Handlers
 * are separate programs so that each one is verified on its own. Opens, the commonest by
 * far, are taken at sys_exit only, and repeats of a thread's last open are folded into a
 * count (struct fold). BTF tracepoints rather than raw ones: their pt_regs is a typed
 * pointer, read with plain loads instead of a probe-read helper call per field.
 *
 * Nothing is lost silently: a failed ring-buffer reservation increments `drops`, and a cut
 * string or path sets CAPSULE_F_TRUNCATED in the event.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <asm/unistd_64.h>
#include "capsule_events.h"
#include "capsule_path.h"

#ifndef __NR_fchmodat2 /* newer than the build host's headers */
#define __NR_fchmodat2 452
#endif

char LICENSE[] SEC("license") = "GPL";

const volatile bool targ_cgroup = false; /* scope is scope_cgroup, not `tracked` */
const volatile u32 targ_self = 0;	 /* Capsule's own pid, never in scope */
const volatile u32 targ_wakeup_bytes = 0; /* see submit(); 0: wake for every record */
const volatile u64 targ_fold_ns = 0;	  /* see struct fold; 0: every open is an event */

#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define O_ACCMODE 03
#define FMODE_CREATED 0x100000
#define AT_REMOVEDIR 0x200
#define PROT_WRITE 0x2
#define PROT_EXEC 0x4
#define MAP_ANONYMOUS 0x20
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SIGCHLD 17
#define CLONE_VM 0x100
#define CLONE_VFORK 0x4000
#define CLONE_NS_FLAGS 0x7e020080 /* NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET */
#define CLONE_NEWTIME 0x80
#define TS_COMPAT 0x0002 /* thread_info.status: in a 32-bit syscall */

/*
 * The last open event a thread sent, and how many identical opens it made since. A
 * thread that opens the same file with the same flags and gets the same fd again within
 * targ_fold_ns of that event sends no event for it: the count is sent as one repeat
 * event when the run ends (see end_fold).
 */
struct fold {
	u64 dentry; /* with the inode: a dentry made negative and positive again is new */
	u64 inode;
	u64 mnt;
	u64 first_ns; /* ts_ns of the event that started the run */
	u64 last_ns;
	u32 flags;
	u32 nr;
	s32 fd;
	u32 kind;
	u32 count; /* opens folded into the run, not sent yet */
	u32 _pad;
};

/* one syscall's number and arguments, kept from sys_enter for its sys_exit */
struct stash {
	u64 args[6];
	u32 nr;
	u32 euid;
};

struct thread_state {
	struct stash call;
	u32 live; /* 0 once sys_exit has taken the call */
	u32 _pad;
	struct fold fold;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u32);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} scope_cgroup SEC(".maps");

/*
 * Per thread, in task local storage rather than a hash keyed by tid: sys_exit runs for
 * every syscall of every process and looks here first, and a task's own storage pointer
 * is cheaper to follow than a hashed lookup; an entry is marked taken instead of
 * deleted, and goes away with its task.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} stash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} drops SEC(".maps");

/* opens folded and not yet sent in a repeat event; per CPU, so one CPU's value can be
 * negative: only the sum means something */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, s64);
} unsent_folds SEC(".maps");

/* never used at run time: makes the object's BTF describe every event layout */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, union capsule_layouts);
} layouts SEC(".maps");

/* --- scope, header, reservation ------------------------------------------------------ */

static __always_inline bool tgid_tracked(u32 tgid)
{
	return bpf_map_lookup_elem(&tracked, &tgid) != NULL;
}

static __always_inline bool in_scope(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (tgid == targ_self)
		return false;
	if (targ_cgroup)
		return bpf_current_task_under_cgroup(&scope_cgroup, 0) == 1;
	return tgid_tracked(tgid);
}

static __always_inline void count_drops(u64 n)
{
	u32 zero = 0;
	u64 *count = bpf_map_lookup_elem(&drops, &zero);

	if (count)
		*count += n;
}

static __always_inline void count_drop(void)
{
	count_drops(1);
}

static __always_inline void count_unsent(s64 n)
{
	u32 zero = 0;
	s64 *count = bpf_map_lookup_elem(&unsent_folds, &zero);

	if (count)
		*count += n;
}

static __always_inline void fill_hdr(struct capsule_hdr *h, u16 kind, u32 size)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u64 uid_gid = bpf_get_current_uid_gid();

	h->kind = kind;
	h->flags = 0;
	h->size = size;
	h->ts_ns = bpf_ktime_get_ns();
	h->pid = pid_tgid >> 32;
	h->tid = (u32)pid_tgid;
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = (u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->_pad0 = 0;
	h->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/* a ring-buffer record with its header filled in, or NULL (counted as a drop) */
static __always_inline void *reserve(u32 size, u16 kind)
{
	struct capsule_hdr *h = bpf_ringbuf_reserve(&events, size, 0);

	if (!h) {
		count_drop();
		return NULL;
	}
	fill_hdr(h, kind, size);
	return h;
}

/*
 * Commit a record. By default the kernel wakes the reader whenever it has caught up,
 * which in a storm is once per event: an irq_work and a context switch each, and a
 * reader woken 100,000 times a second to take one record. With targ_wakeup_bytes set,
 * the reader is woken only by the record that brings the unread data over that mark;
 * below it, user space polls on a timer, which bounds the latency of a quiet event.
 * Waking on every record above the mark instead cost an irq_work per event whenever the
 * reader lagged. A crossing missed by two CPUs committing at once waits for the timer.
 */
static __always_inline void submit(void *ev)
{
	u32 size = ((struct capsule_hdr *)ev)->size + 8; /* the ring's own record header */
	u64 flags = 0, unread;

	if (targ_wakeup_bytes) {
		unread = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
		flags = unread >= targ_wakeup_bytes && unread < targ_wakeup_bytes + size ?
				BPF_RB_FORCE_WAKEUP :
				BPF_RB_NO_WAKEUP;
	}
	bpf_ringbuf_submit(ev, flags);
}

/* a user string into a CAPSULE_PATH_MAX field; a full buffer counts as cut */
static __always_inline void user_string(struct capsule_hdr *h, char *out, const void *uptr)
{
	long n = bpf_probe_read_user_str(out, CAPSULE_PATH_MAX, uptr);

	if (n < 0)
		out[0] = 0;
	if (n == CAPSULE_PATH_MAX)
		h->flags |= CAPSULE_F_TRUNCATED;
}

/*
 * The directory a relative name resolves against, walked in the kernel: the cwd for
 * AT_FDCWD, else the dirfd's own path. User space joins it with the name.
 */
static __always_inline void resolve_at(struct capsule_hdr *h, char *dir, const char *name,
				       long dfd)
{
	struct file *file;
	bool cut = false;

	dir[0] = 0;
	if (name[0] == '/')
		return;
	if ((int)dfd == AT_FDCWD) {
		cut = cwd_path(dir);
	} else {
		file = fd_file((int)dfd);
		if (file)
			cut = file_path(file, dir);
	}
	if (cut)
		h->flags |= CAPSULE_F_TRUNCATED;
}

/* a name argument: the user string plus the directory it is relative to */
static __always_inline void name_at(struct capsule_hdr *h, char *dir, char *name, long dfd,
				    const void *uname)
{
	user_string(h, name, uname);
	resolve_at(h, dir, name, dfd);
}

/* the path of an fd argument, into dir */
static __always_inline void fd_path(struct capsule_hdr *h, char *dir, long fd)
{
	struct file *file = fd_file((int)fd);

	dir[0] = 0;
	if (file && file_path(file, dir))
		h->flags |= CAPSULE_F_TRUNCATED;
}

/* the current thread's state, or NULL when it has none yet */
static __always_inline struct thread_state *thread_state(void)
{
	return bpf_task_storage_get(&stash, bpf_get_current_task_btf(), 0, 0);
}

/* the current thread's syscall stashed at sys_enter, or NULL */
static __always_inline struct stash *pending_stash(void)
{
	struct thread_state *t = thread_state();

	return t && t->live ? &t->call : NULL;
}

static __always_inline int take_stash(struct stash *s)
{
	struct thread_state *t = thread_state();

	if (!t || !t->live)
		return -1;

	*s = t->call;
	t->live = 0;
	return 0;
}

/* --- process tree: fork, exec, exit, cgroup moves ---------------------------------------- */

static __always_inline u64 clone_flags_of_current(void)
{
	struct stash *s = pending_stash();
	u64 flags = 0;

	if (!s)
		return 0;
	if (s->nr == __NR_clone)
		return s->args[0];
	if (s->nr == __NR_clone3) {
		bpf_probe_read_user(&flags, sizeof(flags), (void *)s->args[0]);
		return flags;
	}
	if (s->nr == __NR_vfork)
		return CLONE_VFORK | CLONE_VM | SIGCHLD;
	return SIGCHLD;
}

static __always_inline void emit_fork(u16 kind, u32 child, u64 flags)
{
	struct ev_fork *ev = reserve(sizeof(*ev), kind);

	if (!ev)
		return;
	ev->child_pid = child;
	ev->_pad1 = 0;
	ev->clone_flags = flags;
	submit(ev);
}

/* in the parent, before the child first runs: the child is in scope from its start */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 pid = BPF_CORE_READ(child, pid), tgid = BPF_CORE_READ(child, tgid), one = 1;
	u64 flags;

	if (pid != tgid || !in_scope())
		return 0;

	if (!targ_cgroup)
		bpf_map_update_elem(&tracked, &tgid, &one, BPF_ANY);
	flags = clone_flags_of_current();
	emit_fork(CK_PROC_FORK, tgid, flags);
	if (flags & (CLONE_NS_FLAGS | CLONE_NEWTIME))
		emit_fork(CK_NS_CLONE, tgid, flags);
	return 0;
}

static __always_inline void emit_creds(struct stash *s, long ret, u16 kind);
static __always_inline void end_fold(struct thread_state *t);

static __always_inline void exec_extra_events(struct ev_exec *ev, bool fileless, bool setid)
{
	struct ev_mem *mem;

	if (fileless) {
		mem = reserve(sizeof(*mem), CK_MEM_FILELESS_EXEC);
		if (mem) {
			mem->ret = 0;
			mem->syscall = __NR_execve;
			mem->fd = -1;
			mem->addr = mem->length = 0;
			mem->prot = mem->mflags = 0;
			bpf_probe_read_kernel(mem->dir, sizeof(mem->dir), ev->exe_path);
			submit(mem);
		}
	}
	if (setid) {
		struct stash none = {.nr = __NR_execve};

		emit_creds(&none, 0, CK_CRED_SETID_EXEC);
	}
}

/* after the point of no return: the new image, its argv and the file actually loaded */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	const char *filename, *interp;
	struct ev_exec *ev;
	struct stash *s;
	struct file *file;
	u64 len;
	u32 euid;
	bool setid;

	if (!in_scope())
		return 0;

	file = BPF_CORE_READ(bprm, file);
	filename = BPF_CORE_READ(bprm, filename);
	interp = BPF_CORE_READ(bprm, interp);
	len = BPF_CORE_READ(p, mm, arg_end) - BPF_CORE_READ(p, mm, arg_start);
	euid = BPF_CORE_READ(p, cred, euid.val);
	s = pending_stash();
	if (s && s->nr != __NR_execve && s->nr != __NR_execveat)
		s = NULL; /* sys_enter kept the euid of exec syscalls only */
	setid = BPF_CORE_READ_BITFIELD_PROBED(bprm, secureexec);
	ev = reserve(sizeof(*ev), CK_PROC_EXEC);
	if (!ev)
		return 0;
	ev->argc = BPF_CORE_READ(bprm, argc);
	ev->old_euid = s ? s->euid : euid;
	ev->_pad1 = 0;
	if (s && s->euid != euid)
		setid = true;

	/* argv as NUL-separated strings, cut at CAPSULE_ARGV_MAX */
	if (len > CAPSULE_ARGV_MAX) {
		len = CAPSULE_ARGV_MAX;
		ev->hdr.flags |= CAPSULE_F_TRUNCATED;
	}
	ev->args_len = len;
	if (bpf_probe_read_user(ev->argv, len, (void *)BPF_CORE_READ(p, mm, arg_start)))
		ev->args_len = 0;

	/* a #! script: bprm->interp then names the interpreter, bprm->filename the script */
	if (bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), filename) ==
	    sizeof(ev->filename))
		ev->hdr.flags |= CAPSULE_F_TRUNCATED;
	ev->interpreter[0] = 0;
	if (interp != filename) {
		bpf_probe_read_kernel_str(ev->interpreter, sizeof(ev->interpreter), interp);
		ev->hdr.flags |= CAPSULE_F_SCRIPT;
	}

	ev->cwd[0] = 0;
	if (ev->filename[0] != '/' && cwd_path(ev->cwd))
		ev->hdr.flags |= CAPSULE_F_TRUNCATED;
	if (file_path(file, ev->exe_path))
		ev->hdr.flags |= CAPSULE_F_TRUNCATED;
	/* a memfd or a deleted file has no links left: nothing on disk to look at */
	exec_extra_events(ev, BPF_CORE_READ(file, f_inode, i_nlink) == 0, setid);
	submit(ev);
	return 0;
}

/* once per process, when its last thread exits */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task, bool group_dead)
{
	u32 tgid = BPF_CORE_READ(task, tgid);
	struct thread_state *t = thread_state();
	struct ev_exit *ev;

	/* every exiting thread (this runs in it) sends the count of its folded opens */
	if (t && t->fold.count)
		end_fold(t);
	/* a thread that dies inside a syscall never reaches sys_exit; its stash goes
	 * with its task storage */
	if (!group_dead || !in_scope())
		return 0;

	ev = reserve(sizeof(*ev), CK_PROC_EXIT);
	if (ev) {
		ev->exit_code = BPF_CORE_READ(task, exit_code);
		ev->_pad1 = 0;
		submit(ev);
	}
	bpf_map_delete_elem(&tracked, &tgid);
	return 0;
}

/* a write to cgroup.procs moves a task; the mover or the moved may be in scope */
SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(handle_cgroup_attach, struct cgroup *dst, const char *path,
	     struct task_struct *task, bool threadgroup)
{
	u32 target = BPF_CORE_READ(task, tgid);
	struct ev_cgroup *ev;

	if (!in_scope() && !(!targ_cgroup && tgid_tracked(target)))
		return 0;

	ev = reserve(sizeof(*ev), CK_NS_CGROUP_MOVE);
	if (!ev)
		return 0;
	ev->target_pid = target;
	ev->threadgroup = threadgroup;
	ev->dst_cgroup_id = BPF_CORE_READ(dst, kn, id);
	if (bpf_probe_read_kernel_str(ev->cgroup_path, sizeof(ev->cgroup_path), path) < 0)
		ev->cgroup_path[0] = 0;
	submit(ev);
	return 0;
}

/* --- syscall entry and exit ---------------------------------------------------------- */

static __always_inline bool traced_syscall(long nr)
{
	switch (nr) {
	case __NR_open: case __NR_creat: case __NR_openat: case __NR_openat2:
	case __NR_unlink: case __NR_unlinkat: case __NR_rmdir: case __NR_mkdir:
	case __NR_mkdirat: case __NR_chmod: case __NR_fchmod: case __NR_fchmodat:
	case __NR_fchmodat2: case __NR_chown: case __NR_fchown: case __NR_lchown:
	case __NR_fchownat: case __NR_truncate: case __NR_ftruncate: case __NR_rename:
	case __NR_renameat: case __NR_renameat2: case __NR_link: case __NR_linkat:
	case __NR_symlink: case __NR_symlinkat: case __NR_connect: case __NR_bind:
	case __NR_listen: case __NR_accept: case __NR_accept4: case __NR_sendto:
	case __NR_sendmsg: case __NR_setuid: case __NR_setgid: case __NR_setreuid:
	case __NR_setregid: case __NR_setresuid: case __NR_setresgid: case __NR_setfsuid:
	case __NR_setfsgid: case __NR_capset: case __NR_mmap: case __NR_mprotect:
	case __NR_memfd_create: case __NR_init_module: case __NR_finit_module: case __NR_bpf:
	case __NR_pipe: case __NR_pipe2: case __NR_shmget: case __NR_shmat: case __NR_msgget:
	case __NR_mq_open: case __NR_semget: case __NR_ptrace: case __NR_process_vm_writev:
	case __NR_mount: case __NR_umount2: case __NR_chroot: case __NR_pivot_root:
	case __NR_unshare: case __NR_setns: case __NR_setrlimit: case __NR_prlimit64:
	case __NR_kill: case __NR_tkill: case __NR_tgkill: case __NR_rt_sigqueueinfo:
	case __NR_rt_tgsigqueueinfo: case __NR_pidfd_send_signal: case __NR_setsid:
	case __NR_clone: case __NR_clone3: case __NR_fork: case __NR_vfork: case __NR_execve:
	case __NR_execveat: case __NR_ioctl:
		return true;
	}
	return false;
}

static __always_inline bool is_open(u32 nr)
{
	return nr == __NR_open || nr == __NR_creat || nr == __NR_openat || nr == __NR_openat2;
}

/* --- folding repeated opens (struct fold) ------------------------------------------------ */

/* send the run's count, if any, and forget the open it repeats */
static __always_inline void end_fold(struct thread_state *t)
{
	struct fold *fo = &t->fold;
	u32 count = fo->count;
	struct ev_repeat *ev;

	fo->dentry = 0;
	fo->count = 0;
	if (!count)
		return;

	count_unsent(-(s64)count);
	ev = reserve(sizeof(*ev), CK_FILE_REPEAT);
	if (!ev) {
		count_drops(count - 1); /* reserve() counted one: each folded open is one */
		return;
	}
	ev->ret = fo->fd;
	ev->syscall = fo->nr;
	ev->fd = fo->fd;
	ev->open_flags = fo->flags;
	ev->count = count;
	ev->first_ns = fo->first_ns;
	ev->last_ns = fo->last_ns;
	submit(ev);
}

/*
 * True when this successful open repeats the thread's last open event (same file, mount,
 * flags, syscall, fd and kind) within targ_fold_ns of it: it is counted, not sent. Any
 * other open ends the run first, so the repeat event comes before the new open's event.
 * This skips the ring record, the header and the path walk, which are most of an open's
 * cost, and spares user space an event that says nothing new.
 */
static __always_inline bool fold_open(struct thread_state *t, u32 nr, long fd, u32 flags,
				      u16 kind, struct file_facts *f)
{
	struct fold *fo = &t->fold;
	u64 now;

	if (!fo->dentry)
		return false;
	if (fo->dentry == (u64)f->path.dentry && fo->inode == (u64)f->inode &&
	    fo->mnt == (u64)f->path.mnt && fo->flags == flags && fo->nr == nr &&
	    fo->fd == fd && fo->kind == kind) {
		now = bpf_ktime_get_ns();
		if (now - fo->first_ns < targ_fold_ns) {
			fo->count++;
			fo->last_ns = now;
			count_unsent(1);
			return true;
		}
	}
	end_fold(t);
	return false;
}

/* after an open's event was sent: later identical opens fold into it */
static __always_inline void start_fold(struct thread_state *t, u32 nr, long fd, u32 flags,
				       u16 kind, struct file_facts *f, u64 ts)
{
	struct fold *fo = &t->fold;

	fo->dentry = (u64)f->path.dentry;
	fo->inode = (u64)f->inode;
	fo->mnt = (u64)f->path.mnt;
	fo->first_ns = ts;
	fo->last_ns = ts;
	fo->flags = flags;
	fo->nr = nr;
	fo->fd = fd;
	fo->kind = kind;
	fo->count = 0;
}

/*
 * The x86-64 syscall arguments: rdi, rsi, rdx, r10, r8, r9. In a tp_btf program the
 * tracepoint's pt_regs is a typed pointer, read with plain loads rather than one
 * probe-read helper call per register.
 */
static __always_inline void syscall_args(struct pt_regs *regs, u64 *args)
{
	args[0] = regs->di;
	args[1] = regs->si;
	args[2] = regs->dx;
	args[3] = regs->r10;
	args[4] = regs->r8;
	args[5] = regs->r9;
}

/* a 32-bit (int 0x80) syscall numbers differently: never mistake one for another */
static __always_inline bool compat_syscall(void)
{
	return bpf_get_current_task_btf()->thread_info.status & TS_COMPAT;
}

/* the current thread's state, created if needed; NULL (counted as a drop) if it cannot be */
static __always_inline struct thread_state *new_call(void)
{
	struct thread_state *t = bpf_task_storage_get(&stash, bpf_get_current_task_btf(), 0,
						      BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!t) {
		count_drop(); /* the event this syscall would have made is lost: say so */
		return NULL;
	}
	if (t->live)
		count_drop(); /* the last one's sys_exit never took it: that event is lost */
	return t;
}

SEC("tp_btf/sys_enter")
int handle_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (void *)ctx->args[0];
	long nr = ctx->args[1];
	struct thread_state *t;

	/* an open needs nothing from its entry: sys_exit finds its arguments in regs */
	if (!traced_syscall(nr) || is_open(nr) || !in_scope() || compat_syscall())
		return 0;
	t = new_call();
	if (!t)
		return 0;

	t->call.nr = nr;
	/* only an exec compares the euid before and after (handle_exec) */
	if (nr == __NR_execve || nr == __NR_execveat)
		t->call.euid = BPF_CORE_READ(bpf_get_current_task_btf(), cred, euid.val);
	syscall_args(regs, t->call.args);
	t->live = 1;
	return 0;
}

int exit_open(struct bpf_raw_tracepoint_args *ctx);
int exit_file(struct bpf_raw_tracepoint_args *ctx);
int exit_file2(struct bpf_raw_tracepoint_args *ctx);
int exit_sock(struct bpf_raw_tracepoint_args *ctx);
int exit_creds(struct bpf_raw_tracepoint_args *ctx);
int exit_mem(struct bpf_raw_tracepoint_args *ctx);
int exit_ipc(struct bpf_raw_tracepoint_args *ctx);
int exit_mount(struct bpf_raw_tracepoint_args *ctx);
int exit_ns(struct bpf_raw_tracepoint_args *ctx);
int exit_signal(struct bpf_raw_tracepoint_args *ctx);
int exit_setsid(struct bpf_raw_tracepoint_args *ctx);
int exit_ioctl(struct bpf_raw_tracepoint_args *ctx);

/* the handler of each syscall at exit, by syscall number */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 512);
	__uint(key_size, sizeof(u32));
	__array(values, int(struct bpf_raw_tracepoint_args *));
} exit_progs SEC(".maps") = {
	.values = {
		[__NR_open] = (void *)&exit_open, [__NR_creat] = (void *)&exit_open,
		[__NR_openat] = (void *)&exit_open, [__NR_openat2] = (void *)&exit_open,
		[__NR_unlink] = (void *)&exit_file, [__NR_unlinkat] = (void *)&exit_file,
		[__NR_rmdir] = (void *)&exit_file, [__NR_mkdir] = (void *)&exit_file,
		[__NR_mkdirat] = (void *)&exit_file, [__NR_chmod] = (void *)&exit_file,
		[__NR_fchmod] = (void *)&exit_file, [__NR_fchmodat] = (void *)&exit_file,
		[__NR_fchmodat2] = (void *)&exit_file, [__NR_chown] = (void *)&exit_file,
		[__NR_fchown] = (void *)&exit_file, [__NR_lchown] = (void *)&exit_file,
		[__NR_fchownat] = (void *)&exit_file, [__NR_truncate] = (void *)&exit_file,
		[__NR_ftruncate] = (void *)&exit_file, [__NR_umount2] = (void *)&exit_file,
		[__NR_chroot] = (void *)&exit_file,
		[__NR_rename] = (void *)&exit_file2, [__NR_renameat] = (void *)&exit_file2,
		[__NR_renameat2] = (void *)&exit_file2, [__NR_link] = (void *)&exit_file2,
		[__NR_linkat] = (void *)&exit_file2, [__NR_symlink] = (void *)&exit_file2,
		[__NR_symlinkat] = (void *)&exit_file2, [__NR_pivot_root] = (void *)&exit_file2,
		[__NR_connect] = (void *)&exit_sock, [__NR_bind] = (void *)&exit_sock,
		[__NR_listen] = (void *)&exit_sock, [__NR_accept] = (void *)&exit_sock,
		[__NR_accept4] = (void *)&exit_sock, [__NR_sendto] = (void *)&exit_sock,
		[__NR_sendmsg] = (void *)&exit_sock,
		[__NR_setuid] = (void *)&exit_creds, [__NR_setgid] = (void *)&exit_creds,
		[__NR_setreuid] = (void *)&exit_creds, [__NR_setregid] = (void *)&exit_creds,
		[__NR_setresuid] = (void *)&exit_creds, [__NR_setresgid] = (void *)&exit_creds,
		[__NR_setfsuid] = (void *)&exit_creds, [__NR_setfsgid] = (void *)&exit_creds,
		[__NR_capset] = (void *)&exit_creds,
		[__NR_mmap] = (void *)&exit_mem, [__NR_mprotect] = (void *)&exit_mem,
		[__NR_memfd_create] = (void *)&exit_mem, [__NR_init_module] = (void *)&exit_mem,
		[__NR_finit_module] = (void *)&exit_mem, [__NR_bpf] = (void *)&exit_mem,
		[__NR_pipe] = (void *)&exit_ipc, [__NR_pipe2] = (void *)&exit_ipc,
		[__NR_shmget] = (void *)&exit_ipc, [__NR_shmat] = (void *)&exit_ipc,
		[__NR_msgget] = (void *)&exit_ipc, [__NR_mq_open] = (void *)&exit_ipc,
		[__NR_semget] = (void *)&exit_ipc, [__NR_ptrace] = (void *)&exit_ipc,
		[__NR_process_vm_writev] = (void *)&exit_ipc,
		[__NR_mount] = (void *)&exit_mount,
		[__NR_unshare] = (void *)&exit_ns, [__NR_setns] = (void *)&exit_ns,
		[__NR_setrlimit] = (void *)&exit_ns, [__NR_prlimit64] = (void *)&exit_ns,
		[__NR_kill] = (void *)&exit_signal, [__NR_tkill] = (void *)&exit_signal,
		[__NR_tgkill] = (void *)&exit_signal, [__NR_rt_sigqueueinfo] = (void *)&exit_signal,
		[__NR_rt_tgsigqueueinfo] = (void *)&exit_signal,
		[__NR_pidfd_send_signal] = (void *)&exit_signal,
		[__NR_setsid] = (void *)&exit_setsid,
		[__NR_ioctl] = (void *)&exit_ioctl,
	},
};

SEC("tp_btf/sys_exit")
int handle_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (void *)ctx->args[0];
	long nr = regs->orig_ax;
	struct thread_state *t;

	if (!traced_syscall(nr))
		return 0;
	/*
	 * The argument registers are as the syscall left them, which for an open is as it
	 * found them: its arguments are taken here, so the open itself costs sys_enter no
	 * more than an untraced syscall does (one switch).
	 */
	if (is_open(nr)) {
		if (!in_scope() || compat_syscall())
			return 0;
		t = new_call();
		if (!t)
			return 0;
		t->call.nr = nr;
		syscall_args(regs, t->call.args);
		t->live = 1;
		bpf_tail_call(ctx, &exit_progs, nr);
		t->live = 0;
		return 0;
	}
	t = thread_state();
	if (!t || !t->live)
		return 0;
	/* any other traced syscall ends a run of folded opens: its count is sent first */
	if (t->fold.dentry && !is_open(t->call.nr))
		end_fold(t);

	bpf_tail_call(ctx, &exit_progs, t->call.nr);
	/* no handler (clone, execve): the entry only fed the fork/exec hooks */
	t->live = 0;
	return 0;
}

/* --- files ----------------------------------------------------------------------------- */

static __always_inline u16 open_kind(u32 flags, u32 fmode, u32 imode)
{
	u32 type = imode & S_IFMT;

	if (type == S_IFCHR || type == S_IFBLK)
		return CK_DEV_OPEN;
	/* FMODE_CREATED: this open made the file, not just asked for O_CREAT */
	if ((fmode & FMODE_CREATED) || (!fmode && (flags & O_CREAT)))
		return CK_FILE_CREATE;
	if ((flags & O_ACCMODE) != 0 || (flags & O_TRUNC))
		return CK_FILE_WRITE;
	return CK_FILE_READ;
}

/*
 * A successful open is named by walking the new fd's struct file, so dirfd- and
 * cwd-relative opens show the path the kernel resolved; a failed one by its name.
 */
SEC("tp_btf/sys_exit")
int exit_open(struct bpf_raw_tracepoint_args *ctx)
{
	long ret = ctx->args[1], dfd = AT_FDCWD;
	struct thread_state *t = thread_state();
	struct file_facts f = {};
	struct file *file = NULL;
	const void *uname;
	struct ev_open *ev;
	struct stash s;
	u64 flags, ts;
	u16 kind;

	if (!t || !t->live)
		return 0;
	s = t->call;
	t->live = 0;

	flags = s.args[1];
	uname = (void *)s.args[0];
	if (s.nr == __NR_creat) {
		flags = O_CREAT | O_WRONLY | O_TRUNC;
	} else if (s.nr == __NR_openat || s.nr == __NR_openat2) {
		dfd = s.args[0];
		uname = (void *)s.args[1];
		flags = s.args[2];
		if (s.nr == __NR_openat2) /* struct open_how starts with the flags */
			bpf_probe_read_user(&flags, sizeof(flags), (void *)s.args[2]);
	}
	if (ret >= 0)
		file = fd_file(ret);
	if (file) {
		file_facts(file, &f);
		/* a fold repeats a file it already opened, never a device: the inode can wait */
		kind = open_kind(flags, f.fmode, 0);
		if (targ_fold_ns && fold_open(t, s.nr, ret, flags, kind, &f))
			return 0;
		inode_facts(&f);
	}
	kind = open_kind(flags, f.fmode, f.imode);
	if (!file || kind == CK_DEV_OPEN)
		end_fold(t); /* a failed or device open is never folded: it ends the run */

	ev = reserve(sizeof(*ev), kind);
	if (!ev)
		return 0;
	ts = ev->hdr.ts_ns;
	ev->ret = ret;
	ev->syscall = s.nr;
	ev->fd = ret;
	ev->open_flags = flags;
	ev->mode = f.imode;
	ev->major = f.rdev >> 20;
	ev->minor = f.rdev & 0xfffff;
	ev->fmode = f.fmode;
	ev->_pad1 = 0;
	ev->ino = f.ino;
	ev->name[0] = 0;
	ev->dir[0] = 0;
	if (file) {
		if (path_to_string(f.path.dentry, f.path.mnt, ev->dir))
			ev->hdr.flags |= CAPSULE_F_TRUNCATED;
	} else {
		name_at(&ev->hdr, ev->dir, ev->name, dfd, uname);
	}
	submit(ev);
	if (file && targ_fold_ns && kind != CK_DEV_OPEN)
		start_fold(t, s.nr, ret, flags, kind, &f, ts);
	return 0;
}

/* name- and fd-based operations on one path: what the syscall means, and where */
struct file_op {
	u16 kind;
	long dfd;	/* directory of uname, or AT_FDCWD */
	const void *uname; /* NULL: the object is fd */
	long fd;
	u64 arg;
	u32 uid, gid;
};

static __always_inline bool decode_file_op(struct stash *s, struct file_op *op)
{
	u64 *a = s->args;

	op->dfd = AT_FDCWD;
	op->uname = (void *)a[0];
	op->fd = -1;
	op->uid = op->gid = -1;
	switch (s->nr) {
	case __NR_unlink:
		op->kind = CK_FILE_DELETE;
		break;
	case __NR_unlinkat:
		op->kind = (a[2] & AT_REMOVEDIR) ? CK_FILE_RMDIR : CK_FILE_DELETE;
		op->dfd = a[0], op->uname = (void *)a[1], op->arg = a[2];
		break;
	case __NR_rmdir:
		op->kind = CK_FILE_RMDIR;
		break;
	case __NR_mkdir:
		op->kind = CK_FILE_MKDIR, op->arg = a[1];
		break;
	case __NR_mkdirat:
		op->kind = CK_FILE_MKDIR, op->dfd = a[0], op->uname = (void *)a[1], op->arg = a[2];
		break;
	case __NR_chmod:
		op->kind = CK_FILE_CHMOD, op->arg = a[1];
		break;
	case __NR_fchmod:
		op->kind = CK_FILE_CHMOD, op->uname = NULL, op->fd = a[0], op->arg = a[1];
		break;
	case __NR_fchmodat:
	case __NR_fchmodat2:
		op->kind = CK_FILE_CHMOD, op->dfd = a[0], op->uname = (void *)a[1], op->arg = a[2];
		break;
	case __NR_chown:
	case __NR_lchown:
		op->kind = CK_FILE_CHOWN, op->uid = a[1], op->gid = a[2];
		break;
	case __NR_fchown:
		op->kind = CK_FILE_CHOWN, op->uname = NULL, op->fd = a[0];
		op->uid = a[1], op->gid = a[2];
		break;
	case __NR_fchownat:
		op->kind = CK_FILE_CHOWN, op->dfd = a[0], op->uname = (void *)a[1];
		op->uid = a[2], op->gid = a[3], op->arg = a[4];
		break;
	case __NR_truncate:
		op->kind = CK_FILE_TRUNCATE, op->arg = a[1];
		break;
	case __NR_ftruncate:
		op->kind = CK_FILE_TRUNCATE, op->uname = NULL, op->fd = a[0], op->arg = a[1];
		break;
	case __NR_umount2:
		op->kind = CK_SYS_UMOUNT, op->arg = a[1];
		break;
	case __NR_chroot:
		op->kind = CK_SYS_CHROOT;
		break;
	default:
		return false;
	}
	return true;
}

SEC("tp_btf/sys_exit")
int exit_file(struct bpf_raw_tracepoint_args *ctx)
{
	struct file_op op = {};
	struct ev_file *ev;
	struct stash s;

	if (take_stash(&s) || !decode_file_op(&s, &op))
		return 0;

	ev = reserve(sizeof(*ev), op.kind);
	if (!ev)
		return 0;
	ev->ret = ctx->args[1];
	ev->syscall = s.nr;
	ev->fd = op.fd;
	ev->arg = op.arg;
	ev->owner_uid = op.uid;
	ev->owner_gid = op.gid;
	ev->name[0] = 0;
	if (op.uname)
		name_at(&ev->hdr, ev->dir, ev->name, op.dfd, op.uname);
	else
		fd_path(&ev->hdr, ev->dir, op.fd);
	submit(ev);
	return 0;
}

/* two names: rename, link, symlink (whose first name is content, not resolved), pivot_root */
SEC("tp_btf/sys_exit")
int exit_file2(struct bpf_raw_tracepoint_args *ctx)
{
	long dfd = AT_FDCWD, new_dfd = AT_FDCWD;
	const void *name, *new_name;
	u32 flags = 0;
	struct ev_file2 *ev;
	struct stash s;
	u16 kind;

	if (take_stash(&s))
		return 0;

	name = (void *)s.args[0];
	new_name = (void *)s.args[1];
	switch (s.nr) {
	case __NR_rename:
		kind = CK_FILE_RENAME;
		break;
	case __NR_renameat:
	case __NR_renameat2:
	case __NR_linkat:
		kind = s.nr == __NR_linkat ? CK_FILE_LINK : CK_FILE_RENAME;
		dfd = s.args[0], name = (void *)s.args[1];
		new_dfd = s.args[2], new_name = (void *)s.args[3], flags = s.args[4];
		break;
	case __NR_link:
		kind = CK_FILE_LINK;
		break;
	case __NR_symlink:
		kind = CK_FILE_SYMLINK;
		break;
	case __NR_symlinkat:
		kind = CK_FILE_SYMLINK;
		new_dfd = s.args[1], new_name = (void *)s.args[2];
		break;
	default:
		kind = CK_SYS_PIVOT_ROOT;
	}

	ev = reserve(sizeof(*ev), kind);
	if (!ev)
		return 0;
	ev->ret = ctx->args[1];
	ev->syscall = s.nr;
	ev->op_flags = flags;
	if (kind == CK_FILE_SYMLINK) {
		user_string(&ev->hdr, ev->name, name);
		ev->dir[0] = 0;
	} else {
		name_at(&ev->hdr, ev->dir, ev->name, dfd, name);
	}
	name_at(&ev->hdr, ev->new_dir, ev->new_name, new_dfd, new_name);
	submit(ev);
	return 0;
}

/* --- devices ---------------------------------------------------------------------------- */

/* ioctl on a character or block device; ioctls on sockets, pipes and files are not events */
SEC("tp_btf/sys_exit")
int exit_ioctl(struct bpf_raw_tracepoint_args *ctx)
{
	struct ev_ioctl *ev;
	struct file *file;
	struct stash s;
	u32 imode, rdev;

	if (take_stash(&s))
		return 0;
	file = fd_file(s.args[0]);
	if (!file)
		return 0;
	imode = file_mode(file);
	if ((imode & S_IFMT) != S_IFCHR && (imode & S_IFMT) != S_IFBLK)
		return 0;

	ev = reserve(sizeof(*ev), CK_DEV_IOCTL);
	if (!ev)
		return 0;
	rdev = BPF_CORE_READ(file, f_inode, i_rdev);
	ev->ret = ctx->args[1];
	ev->syscall = s.nr;
	ev->fd = s.args[0];
	ev->cmd = s.args[1];
	ev->mode = imode;
	ev->major = rdev >> 20;
	ev->minor = rdev & 0xfffff;
	ev->arg = s.args[2];
	if (file_path(file, ev->dir))
		ev->hdr.flags |= CAPSULE_F_TRUNCATED;
	submit(ev);
	return 0;
}

/* --- network --------------------------------------------------------------------------- */

struct sock_op {
	long fd;
	const void *uaddr; /* the sockaddr argument, if any */
	u32 alen;
	u64 send_len;
	u16 kind;
	bool peer; /* no sockaddr argument: take the peer (accept) or local (listen) address */
};

static __always_inline bool decode_sock_op(struct stash *s, long ret, struct sock_op *op)
{
	struct user_msghdr msg;

	op->fd = s->args[0];
	op->uaddr = NULL;
	switch (s->nr) {
	case __NR_connect:
	case __NR_bind:
		op->kind = s->nr == __NR_connect ? CK_NET_CONNECT : CK_NET_BIND;
		op->uaddr = (void *)s->args[1], op->alen = s->args[2];
		return true;
	case __NR_listen:
		op->kind = CK_NET_LISTEN;
		return true;
	case __NR_accept:
	case __NR_accept4:
		op->kind = CK_NET_ACCEPT, op->fd = ret, op->peer = true;
		return ret >= 0; /* a failed (non-blocking) accept is only noise */
	case __NR_sendto:
		op->kind = CK_NET_SEND, op->send_len = s->args[2];
		op->uaddr = (void *)s->args[4], op->alen = s->args[5];
		return op->uaddr != NULL;
	case __NR_sendmsg:
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)s->args[1]))
			return false;
		op->kind = CK_NET_SEND, op->send_len = ret;
		op->uaddr = msg.msg_name, op->alen = msg.msg_namelen;
		return op->uaddr != NULL;
	}
	return false;
}

static __always_inline void sockaddr_from_user(struct ev_sock *ev, const void *uaddr, u32 alen)
{
	u16 family = 0, port = 0;
	u64 len;

	bpf_probe_read_user(&family, sizeof(family), uaddr);
	bpf_probe_read_user(&port, sizeof(port), uaddr + 2);
	ev->family = family;
	ev->port = bpf_ntohs(port);
	if (family == AF_INET)
		bpf_probe_read_user(ev->addr, 4, uaddr + 4);
	else if (family == AF_INET6)
		bpf_probe_read_user(ev->addr, 16, uaddr + 8);
	if (family != AF_UNIX || alen <= 2)
		return;
	/* the name is alen - 2 bytes; an abstract one starts with NUL and may hold NULs */
	len = alen - 2;
	if (len > CAPSULE_UNIX_PATH_MAX)
		len = CAPSULE_UNIX_PATH_MAX;
	barrier_var(len); /* keep clang from handing the unclamped copy to the helper */
	ev->path_len = len;
	ev->port = 0;
	bpf_probe_read_user(ev->unix_path, len, uaddr + 2);
}

/* listen: the local address; accept: the peer's (for unix, the listener's name) */
static __always_inline void sockaddr_from_sock(struct ev_sock *ev, struct sock *sk, bool peer)
{
	struct unix_address *ua;
	u16 dport;
	u64 len;
	int ulen;

	if (ev->family == AF_INET) {
		if (peer)
			bpf_core_read(ev->addr, 4, &sk->__sk_common.skc_daddr);
		else
			bpf_core_read(ev->addr, 4, &sk->__sk_common.skc_rcv_saddr);
	} else if (ev->family == AF_INET6) {
		if (peer)
			bpf_core_read(ev->addr, 16, &sk->__sk_common.skc_v6_daddr);
		else
			bpf_core_read(ev->addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
	}
	if (ev->family == AF_INET || ev->family == AF_INET6) {
		dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
		ev->port = peer ? bpf_ntohs(dport) : BPF_CORE_READ(sk, __sk_common.skc_num);
		return;
	}
	ua = BPF_CORE_READ((struct unix_sock *)sk, addr);
	if (!ua)
		return;
	ulen = BPF_CORE_READ(ua, len);
	if (ulen <= 2)
		return;
	len = ulen - 2;
	if (len > CAPSULE_UNIX_PATH_MAX)
		len = CAPSULE_UNIX_PATH_MAX;
	barrier_var(len);
	ev->path_len = len;
	bpf_probe_read_kernel(ev->unix_path, len, &ua->name[0].sun_path);
}

/* connect, bind, listen, accept and addressed sends on IPv4, IPv6 and unix sockets */
SEC("tp_btf/sys_exit")
int exit_sock(struct bpf_raw_tracepoint_args *ctx)
{
	long ret = ctx->args[1];
	struct sock_op op = {};
	struct ev_sock *ev;
	struct socket *sock;
	struct file *file;
	struct sock *sk;
	struct stash s;
	u16 family;

	if (take_stash(&s) || !decode_sock_op(&s, ret, &op))
		return 0;
	file = fd_file(op.fd);
	if (!file || (file_mode(file) & S_IFMT) != S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(sock, sk);
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6 && family != AF_UNIX)
		return 0;

	if (family == AF_UNIX && op.kind == CK_NET_CONNECT)
		op.kind = CK_IPC_UNIX_CONNECT;
	if (family == AF_UNIX && op.kind == CK_NET_SEND)
		op.kind = CK_IPC_UNIX_SEND;
	ev = reserve(sizeof(*ev), op.kind);
	if (!ev)
		return 0;
	ev->ret = ret;
	ev->syscall = s.nr;
	ev->fd = op.fd;
	ev->family = family;
	ev->sock_type = BPF_CORE_READ(sk, sk_type);
	ev->protocol = BPF_CORE_READ(sk, sk_protocol);
	ev->port = 0;
	ev->path_len = 0;
	ev->_pad1 = ev->_pad2 = 0;
	ev->send_len = op.send_len;
	__builtin_memset(ev->addr, 0, sizeof(ev->addr));
	ev->unix_path[0] = 0;
	if (op.uaddr)
		sockaddr_from_user(ev, op.uaddr, op.alen);
	else
		sockaddr_from_sock(ev, sk, op.peer);
	submit(ev);
	return 0;
}

/* --- credentials ------------------------------------------------------------------------ */

static __always_inline void emit_creds(struct stash *s, long ret, u16 kind)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	const struct cred *cred = BPF_CORE_READ(task, cred);
	struct ev_creds *ev = reserve(sizeof(*ev), kind);

	if (!ev)
		return;
	ev->ret = ret;
	ev->syscall = s->nr;
	ev->arg0 = s->args[0];
	ev->arg1 = s->args[1];
	ev->arg2 = s->args[2];
	ev->new_uid = BPF_CORE_READ(cred, uid.val);
	ev->new_euid = BPF_CORE_READ(cred, euid.val);
	ev->new_suid = BPF_CORE_READ(cred, suid.val);
	ev->new_fsuid = BPF_CORE_READ(cred, fsuid.val);
	ev->new_gid = BPF_CORE_READ(cred, gid.val);
	ev->new_egid = BPF_CORE_READ(cred, egid.val);
	ev->new_sgid = BPF_CORE_READ(cred, sgid.val);
	ev->new_fsgid = BPF_CORE_READ(cred, fsgid.val);
	ev->cap_effective = BPF_CORE_READ(cred, cap_effective.val);
	ev->cap_permitted = BPF_CORE_READ(cred, cap_permitted.val);
	ev->cap_inheritable = BPF_CORE_READ(cred, cap_inheritable.val);
	submit(ev);
}

/* the ids asked for are in arg0..arg2; new_* are the credentials after the call */
SEC("tp_btf/sys_exit")
int exit_creds(struct bpf_raw_tracepoint_args *ctx)
{
	struct stash s;
	u16 kind;

	if (take_stash(&s))
		return 0;

	switch (s.nr) {
	case __NR_setgid: case __NR_setregid: case __NR_setresgid: case __NR_setfsgid:
		kind = CK_CRED_SETGID;
		break;
	case __NR_capset:
		kind = CK_CRED_CAPSET;
		break;
	default:
		kind = CK_CRED_SETUID;
	}
	emit_creds(&s, ctx->args[1], kind);
	return 0;
}

/* --- memory ----------------------------------------------------------------------------- */

#define BPF_MAP_CREATE_CMD 0
#define BPF_PROG_LOAD_CMD 5

SEC("tp_btf/sys_exit")
int exit_mem(struct bpf_raw_tracepoint_args *ctx)
{
	long ret = ctx->args[1], fd = -1;
	u64 *a, addr = 0, length = 0;
	u32 prot = 0, flags = 0;
	const void *uname = NULL;
	struct ev_mem *ev;
	struct stash s;
	u16 kind;

	if (take_stash(&s))
		return 0;

	a = s.args;
	switch (s.nr) {
	case __NR_mmap:
	case __NR_mprotect:
		/* only mappings both writable and executable: the shape of injected code */
		prot = a[2];
		if ((prot & (PROT_WRITE | PROT_EXEC)) != (PROT_WRITE | PROT_EXEC))
			return 0;
		kind = CK_MEM_WX, addr = a[0], length = a[1];
		if (s.nr == __NR_mmap) {
			flags = a[3];
			if (!(flags & MAP_ANONYMOUS))
				fd = a[4];
			if (ret >= 0)
				addr = ret;
		}
		break;
	case __NR_memfd_create:
		kind = CK_MEM_MEMFD, uname = (void *)a[0], flags = a[1], fd = ret;
		break;
	case __NR_init_module:
		kind = CK_MEM_MODULE_LOAD, length = a[1];
		break;
	case __NR_finit_module:
		kind = CK_MEM_MODULE_LOAD, fd = a[0], flags = a[2];
		break;
	default: /* bpf(): the command, and for BPF_PROG_LOAD the program type */
		kind = CK_MEM_BPF, prot = a[0];
		if (prot == BPF_PROG_LOAD_CMD || prot == BPF_MAP_CREATE_CMD)
			bpf_probe_read_user(&flags, sizeof(flags), (void *)a[1]);
	}

	ev = reserve(sizeof(*ev), kind);
	if (!ev)
		return 0;
	ev->ret = ret;
	ev->syscall = s.nr;
	ev->fd = fd;
	ev->addr = addr;
	ev->length = length;
	ev->prot = prot;
	ev->mflags = flags;
	if (uname)
		user_string(&ev->hdr, ev->dir, uname);
	else if (fd >= 0 && kind != CK_MEM_MEMFD)
		fd_path(&ev->hdr, ev->dir, fd);
	else
		ev->dir[0] = 0;
	submit(ev);
	return 0;
}

/* --- IPC ------------------------------------------------------------------------------- */

#define PTRACE_TRACEME 0
#define PTRACE_POKETEXT 4
#define PTRACE_POKEDATA 5
#define PTRACE_POKEUSR 6
#define PTRACE_SETREGS 13
#define PTRACE_ATTACH 16
#define PTRACE_SETREGSET 0x4205
#define PTRACE_SEIZE 0x4206

/* ptrace requests that take control of or write into another process */
static __always_inline bool ptrace_writes(u64 request)
{
	switch (request) {
	case PTRACE_TRACEME: case PTRACE_POKETEXT: case PTRACE_POKEDATA: case PTRACE_POKEUSR:
	case PTRACE_SETREGS: case PTRACE_ATTACH: case PTRACE_SETREGSET: case PTRACE_SEIZE:
		return true;
	}
	return false;
}

SEC("tp_btf/sys_exit")
int exit_ipc(struct bpf_raw_tracepoint_args *ctx)
{
	long ret = ctx->args[1];
	struct ev_ipc *ev;
	int fds[2] = {-1, -1};
	struct stash s;
	u64 *a = s.args;
	u16 kind;

	if (take_stash(&s))
		return 0;

	switch (s.nr) {
	case __NR_pipe:
	case __NR_pipe2:
		kind = CK_IPC_PIPE;
		if (ret == 0)
			bpf_probe_read_user(fds, sizeof(fds), (void *)a[0]);
		break;
	case __NR_shmget:
	case __NR_shmat:
		kind = CK_IPC_SHM;
		break;
	case __NR_msgget:
	case __NR_mq_open:
		kind = CK_IPC_MSGQ;
		break;
	case __NR_semget:
		kind = CK_IPC_SEM;
		break;
	case __NR_ptrace:
		if (!ptrace_writes(a[0]))
			return 0;
		kind = CK_IPC_PTRACE;
		break;
	default:
		kind = CK_IPC_VM_WRITE;
	}

	ev = reserve(sizeof(*ev), kind);
	if (!ev)
		return 0;
	ev->ret = ret;
	ev->syscall = s.nr;
	ev->target_pid = 0;
	ev->key = ev->id = -1;
	ev->ipc_flags = ev->request = 0;
	ev->fd0 = fds[0];
	ev->fd1 = fds[1];
	ev->name[0] = 0;
	switch (s.nr) {
	case __NR_pipe2:
		ev->ipc_flags = a[1];
		break;
	case __NR_shmget:
		ev->key = a[0], ev->request = a[1], ev->ipc_flags = a[2], ev->id = ret;
		break;
	case __NR_shmat:
		ev->id = a[0], ev->ipc_flags = a[2];
		break;
	case __NR_msgget:
		ev->key = a[0], ev->ipc_flags = a[1], ev->id = ret;
		break;
	case __NR_mq_open:
		ev->ipc_flags = a[1], ev->id = ret;
		user_string(&ev->hdr, ev->name, (void *)a[0]);
		break;
	case __NR_semget:
		ev->key = a[0], ev->request = a[1], ev->ipc_flags = a[2], ev->id = ret;
		break;
	case __NR_ptrace:
		ev->request = a[0], ev->target_pid = a[1];
		break;
	case __NR_process_vm_writev:
		ev->target_pid = a[0];
		break;
	}
	submit(ev);
	return 0;
}

/* --- system ----------------------------------------------------------------------------- */

SEC("tp_btf/sys_exit")
int exit_mount(struct bpf_raw_tracepoint_args *ctx)
{
	struct ev_mount *ev;
	struct stash s;

	if (take_stash(&s))
		return 0;

	ev = reserve(sizeof(*ev), CK_SYS_MOUNT);
	if (!ev)
		return 0;
	ev->ret = ctx->args[1];
	ev->syscall = s.nr;
	ev->_pad1 = 0;
	ev->mount_flags = s.args[3];
	if (bpf_probe_read_user_str(ev->fstype, sizeof(ev->fstype), (void *)s.args[2]) < 0)
		ev->fstype[0] = 0;
	user_string(&ev->hdr, ev->source, (void *)s.args[0]);
	name_at(&ev->hdr, ev->dir, ev->name, AT_FDCWD, (void *)s.args[1]);
	submit(ev);
	return 0;
}

/* --- namespaces and limits ----------------------------------------------------------------- */

SEC("tp_btf/sys_exit")
int exit_ns(struct bpf_raw_tracepoint_args *ctx)
{
	struct rlimit lim = {};
	const void *ulim = NULL;
	struct ev_ns *ev;
	struct stash s;
	u16 kind;

	if (take_stash(&s))
		return 0;

	if (s.nr == __NR_unshare)
		kind = CK_NS_UNSHARE;
	else if (s.nr == __NR_setns)
		kind = CK_NS_SETNS;
	else
		kind = CK_NS_SETRLIMIT;
	ulim = (void *)(s.nr == __NR_prlimit64 ? s.args[2] : s.args[1]);
	if (kind == CK_NS_SETRLIMIT) {
		if (!ulim) /* prlimit64 that only reads */
			return 0;
		bpf_probe_read_user(&lim, sizeof(lim), ulim);
	}

	ev = reserve(sizeof(*ev), kind);
	if (!ev)
		return 0;
	ev->ret = ctx->args[1];
	ev->syscall = s.nr;
	ev->fd = -1;
	ev->ns_flags = 0;
	ev->target_pid = 0;
	ev->resource = 0;
	ev->rlim_cur = lim.rlim_cur;
	ev->rlim_max = lim.rlim_max;
	if (s.nr == __NR_unshare) {
		ev->ns_flags = s.args[0];
	} else if (s.nr == __NR_setns) {
		ev->fd = s.args[0], ev->ns_flags = s.args[1];
	} else if (s.nr == __NR_setrlimit) {
		ev->resource = s.args[0];
	} else {
		ev->target_pid = s.args[0], ev->resource = s.args[1];
	}
	submit(ev);
	return 0;
}

/* --- signals and sessions --------------------------------------------------------------- */

/* the pid a pidfd refers to: its struct pid's number in the initial namespace */
static __always_inline s32 pidfd_pid(long fd)
{
	struct file *file = fd_file(fd);
	struct pid *pid;

	if (!file)
		return -1;
	pid = BPF_CORE_READ(file, private_data);
	return BPF_CORE_READ(pid, numbers[0].nr);
}

SEC("tp_btf/sys_exit")
int exit_signal(struct bpf_raw_tracepoint_args *ctx)
{
	struct ev_signal *ev;
	struct stash s;

	if (take_stash(&s))
		return 0;

	ev = reserve(sizeof(*ev), CK_SIG_SEND);
	if (!ev)
		return 0;
	ev->ret = ctx->args[1];
	ev->syscall = s.nr;
	ev->target_pid = s.args[0];
	ev->target_tid = 0;
	ev->sig = s.args[1];
	if (s.nr == __NR_tkill) {
		ev->target_tid = s.args[0];
	} else if (s.nr == __NR_tgkill || s.nr == __NR_rt_tgsigqueueinfo) {
		ev->target_tid = s.args[1];
		ev->sig = s.args[2];
	} else if (s.nr == __NR_pidfd_send_signal) {
		ev->target_pid = pidfd_pid(s.args[0]);
	}
	submit(ev);
	return 0;
}

SEC("tp_btf/sys_exit")
int exit_setsid(struct bpf_raw_tracepoint_args *ctx)
{
	struct ev_simple *ev;
	struct stash s;

	if (take_stash(&s))
		return 0;

	ev = reserve(sizeof(*ev), CK_PROC_SETSID);
	if (!ev)
		return 0;
	ev->ret = ctx->args[1];
	ev->syscall = s.nr;
	ev->_pad1 = 0;
	submit(ev);
	return 0;
}

