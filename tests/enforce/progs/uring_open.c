// Open a file with io_uring's IORING_OP_OPENAT, not the openat syscall: prints the
// result (a file descriptor or -errno) and exits 0 if it opened, 1 if not, 2 on setup.
// Raw syscalls, so the test needs no liburing.
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct io_uring_params p;
	int fd;
	void *sq, *cq;
	struct io_uring_sqe *sqes;

	if (argc != 2)
		return 2;
	memset(&p, 0, sizeof(p));
	fd = syscall(__NR_io_uring_setup, 4, &p);
	if (fd < 0) {
		perror("io_uring_setup");
		return 2;
	}
	sq = mmap(0, p.sq_off.array + p.sq_entries * sizeof(__u32), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
	cq = mmap(0, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
		  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
	sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	/* one openat request in slot 0 */
	memset(&sqes[0], 0, sizeof(sqes[0]));
	sqes[0].opcode = IORING_OP_OPENAT;
	sqes[0].fd = AT_FDCWD;
	sqes[0].addr = (unsigned long)argv[1];
	sqes[0].open_flags = O_RDONLY;
	unsigned *tail = (unsigned *)((char *)sq + p.sq_off.tail);
	unsigned *mask = (unsigned *)((char *)sq + p.sq_off.ring_mask);
	unsigned *array = (unsigned *)((char *)sq + p.sq_off.array);
	array[*tail & *mask] = 0;
	__atomic_store_n(tail, *tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) {
		perror("io_uring_enter");
		return 2;
	}
	unsigned *chead = (unsigned *)((char *)cq + p.cq_off.head);
	unsigned *cmask = (unsigned *)((char *)cq + p.cq_off.ring_mask);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)((char *)cq + p.cq_off.cqes);
	int res = cqes[*chead & *cmask].res;
	printf("uring openat %d\n", res);
	return res >= 0 ? 0 : 1;
}
