/* Path and fd helpers shared by Capsule's BPF programs: absolute paths from dentries. */
#ifndef CAPSULE_PATH_H
#define CAPSULE_PATH_H

#define AT_FDCWD -100
#define PATH_DEPTH 64 /* dentries plus mount crossings walked before a path counts as cut */
#define HALF_MASK (CAPSULE_PATH_MAX - 1)

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFBLK 0060000
#define S_IFCHR 0020000

/* the per-CPU buffer a path is assembled in, back to front */
struct path_scratch {
	char buf[2 * CAPSULE_PATH_MAX];
};

static __always_inline struct mount *real_mount(struct vfsmount *vfsmnt)
{
	return (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct path_scratch);
} scratch SEC(".maps");

static __always_inline char *scratch_buf(void)
{
	u32 zero = 0;
	struct path_scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	return s ? s->buf : NULL;
}

/* the state of one path walk, kept on the caller's stack across bpf_loop() steps */
struct path_walk {
	struct dentry *dentry, *root;
	struct vfsmount *vfsmnt, *root_mnt;
	struct dentry *mnt_root; /* vfsmnt's, read once per mount rather than per step */
	u32 pos; /* the path so far starts at scratch[pos] */
	u32 done;
};

/* struct dentry's d_parent and d_name (a struct qstr: hash, len, name), which follow
 * each other: one read instead of three per step */
struct dentry_link {
	struct dentry *parent;
	u32 hash;
	u32 len;
	const unsigned char *name;
};

static __always_inline void read_link(struct dentry *dentry, struct dentry_link *link)
{
	if (bpf_core_field_offset(struct dentry, d_name) ==
	    bpf_core_field_offset(struct dentry, d_parent) + sizeof(void *)) {
		bpf_probe_read_kernel(link, sizeof(*link),
				      (void *)dentry + bpf_core_field_offset(struct dentry, d_parent));
		return;
	}
	/* a kernel that moved them apart: resolved at load time, so only one branch stays */
	link->parent = BPF_CORE_READ(dentry, d_parent);
	link->len = BPF_CORE_READ(dentry, d_name.len);
	link->name = BPF_CORE_READ(dentry, d_name.name);
}

/* one step up: a mount crossing or one more name, written in front of the rest */
static long path_walk_step(u64 index, void *arg)
{
	struct path_walk *w = arg;
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = real_mount(vfsmnt);
	char *buf = scratch_buf();
	struct dentry_link link;
	u32 pos = w->pos;

	if (!buf || (dentry == w->root && vfsmnt == w->root_mnt))
		goto done;
	if (dentry == w->mnt_root) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt)
			goto done;
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->vfsmnt = &up->mnt;
		w->mnt_root = BPF_CORE_READ(up, mnt.mnt_root);
		return 0;
	}
	/* a pseudo file (memfd, pipe) has a dentry that is its own parent: keep its name */
	read_link(dentry, &link);
	if (link.len + 1 > pos)
		return 1; /* does not fit: cut */

	pos -= link.len + 1;
	buf[pos & HALF_MASK] = '/';
	bpf_probe_read_kernel(&buf[(pos + 1) & HALF_MASK], link.len & HALF_MASK, link.name);
	w->pos = pos;
	w->dentry = link.parent;
	if (link.parent == dentry)
		goto done;
	return 0;
done:
	w->done = 1;
	return 1;
}

/*
 * Write the absolute path of (dentry, vfsmnt) into out[CAPSULE_PATH_MAX].
 * bpf_d_path() is only allowed in a few fentry/LSM hooks, which this kernel refuses,
 * so the walk climbs d_parent itself and crosses mounts through mnt_parent, in
 * bpf_loop() steps so that the verifier checks one step, not every depth. It stops at
 * the task's root, so a chrooted task sees the path it used. Returns true when cut; a cut
 * path keeps its last components behind "...", as in ".../lib/python3/site.py".
 */
static __always_inline bool path_to_string(struct dentry *dentry, struct vfsmount *vfsmnt,
					   char *out)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct path root = BPF_CORE_READ(task, fs, root); /* one read for both halves */
	struct path_walk w = {
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.root = root.dentry,
		.root_mnt = root.mnt,
		.mnt_root = BPF_CORE_READ(vfsmnt, mnt_root),
		.pos = CAPSULE_PATH_MAX - 1,
	};
	char *buf = scratch_buf();
	u32 pos;

	if (!buf) {
		out[0] = 0;
		return true;
	}
	buf[CAPSULE_PATH_MAX - 1] = 0;
	bpf_loop(PATH_DEPTH, path_walk_step, &w, 0);
	pos = w.pos & HALF_MASK;
	if (pos == CAPSULE_PATH_MAX - 1 && w.done) { /* the root itself */
		pos--;
		buf[pos] = '/';
	}
	if (!w.done && pos >= 3) { /* cut: show it, so the tail never passes for a path */
		pos -= 3;
		buf[pos & HALF_MASK] = '.';
		buf[(pos + 1) & HALF_MASK] = '.';
		buf[(pos + 2) & HALF_MASK] = '.';
	}
	bpf_probe_read_kernel(out, CAPSULE_PATH_MAX - pos, &buf[pos]);
	return !w.done;
}

/*
 * Several fields of one kernel object in one probe read. Each BPF_CORE_READ is a helper
 * call, and on a syscall storm they are most of a handler's cost: where the fields lie in
 * the first SPAN_BYTES of the object, one read of that span replaces them. The offsets
 * are relocated at load time, so the verifier sees constants and keeps one branch.
 */
#define SPAN_BYTES 96
#define IN_SPAN(type, field)                                                                   \
	(bpf_core_field_offset(type, field) + bpf_core_field_size(type, field) <= SPAN_BYTES)
#define SPAN_FIELD(span, type, field, ctype)                                                   \
	(*(ctype *)((void *)(span) + bpf_core_field_offset(type, field)))

/*
 * The struct file behind fd in the current task, or NULL. The task from
 * bpf_get_current_task_btf() is a typed pointer: the verifier lets the program load
 * task->files->fdt and its fields directly (a fault reads as 0), where each probe read
 * would be a helper call. Only the fd array, a pointer to pointers, needs one.
 */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	struct fdtable *fdt;
	struct file **fds;
	struct file *file = NULL;

	if (!files)
		return NULL;
	fdt = files->fdt;
	if (!fdt || fd < 0 || fd >= fdt->max_fds)
		return NULL;

	fds = fdt->fd;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* what an open reports about its file: two probe reads where there were six */
struct file_facts {
	struct path path;
	struct inode *inode;
	u64 ino;
	u32 fmode;
	u32 imode;
	u32 rdev;
};

/* the file's mode, path and inode pointer */
static __always_inline void file_facts(struct file *file, struct file_facts *f)
{
	u64 span[SPAN_BYTES / 8];

	if (IN_SPAN(struct file, f_mode) && IN_SPAN(struct file, f_inode) &&
	    IN_SPAN(struct file, f_path) && !bpf_probe_read_kernel(span, sizeof(span), file)) {
		f->fmode = SPAN_FIELD(span, struct file, f_mode, u32);
		f->inode = SPAN_FIELD(span, struct file, f_inode, struct inode *);
		f->path = SPAN_FIELD(span, struct file, f_path, struct path);
	} else {
		f->fmode = BPF_CORE_READ(file, f_mode);
		f->inode = BPF_CORE_READ(file, f_inode);
		f->path = BPF_CORE_READ(file, f_path);
	}
}

/* the inode's mode, number and device, after file_facts() */
static __always_inline void inode_facts(struct file_facts *f)
{
	struct inode *inode = f->inode;
	u64 span[SPAN_BYTES / 8];

	if (IN_SPAN(struct inode, i_mode) && IN_SPAN(struct inode, i_ino) &&
	    IN_SPAN(struct inode, i_rdev) && !bpf_probe_read_kernel(span, sizeof(span), inode)) {
		f->imode = SPAN_FIELD(span, struct inode, i_mode, u16);
		f->ino = SPAN_FIELD(span, struct inode, i_ino, unsigned long);
		f->rdev = SPAN_FIELD(span, struct inode, i_rdev, u32);
	} else {
		f->imode = BPF_CORE_READ(inode, i_mode);
		f->ino = BPF_CORE_READ(inode, i_ino);
		f->rdev = BPF_CORE_READ(inode, i_rdev);
	}
}

static __always_inline bool file_path(struct file *file, char *out)
{
	struct path path = BPF_CORE_READ(file, f_path);

	return path_to_string(path.dentry, path.mnt, out);
}

static __always_inline bool cwd_path(char *out)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct path pwd = BPF_CORE_READ(task, fs, pwd);

	return path_to_string(pwd.dentry, pwd.mnt, out);
}

static __always_inline u32 file_mode(struct file *file)
{
	return BPF_CORE_READ(file, f_inode, i_mode);
}

#endif
