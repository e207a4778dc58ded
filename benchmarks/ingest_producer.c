/*
 * An event storm for benchmarks/bench_ingest.py and the accounting test: N traced
 * syscalls as fast as one process can make them, each of which the tracer turns into
 * exactly one event.
 *
 * usage: ingest_producer setsid|open N
 *
 * Protocol on stdin/stdout, so that only the loop is in the tracer's scope: wait for one
 * byte on stdin (the tracer tracks this pid meanwhile), make the N syscalls, print N on
 * stdout, then wait for another byte (the tracer untracks the pid) and exit. Neither
 * read nor write is a traced syscall.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void wait_byte(void)
{
	char c;

	if (read(0, &c, 1) != 1)
		exit(2);
}

int main(int argc, char **argv)
{
	long n, i;
	int setsid_mode;

	if (argc != 3 || (strcmp(argv[1], "setsid") && strcmp(argv[1], "open"))) {
		fprintf(stderr, "usage: %s setsid|open N\n", argv[0]);
		return 2;
	}
	setsid_mode = !strcmp(argv[1], "setsid");
	n = atol(argv[2]);
	wait_byte();

	/* setsid: an 80-byte event; after the first call it fails with EPERM, still traced */
	if (setsid_mode) {
		for (i = 0; i < n; i++)
			syscall(SYS_setsid);
	} else {
		/* a failed open of a missing file: one 624-byte file_read event, no fd */
		for (i = 0; i < n; i++)
			syscall(SYS_openat, AT_FDCWD, "/nonexistent-capsule-ingest", O_RDONLY);
	}
	printf("%ld\n", i);
	fflush(stdout);
	wait_byte();
	return 0;
}
