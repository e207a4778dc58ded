/*
 * open(PATH) + close, N times, for benchmarks/bench_enforce.py. Prints
 * "openclose <N> <wall seconds> <cpu seconds>": CPU time (CLOCK_PROCESS_CPUTIME_ID)
 * stays meaningful on a loaded machine, where wall time also counts waiting.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	long n;
	double wall, cpu;

	if (argc != 3) {
		fprintf(stderr, "usage: openclose_cpu N PATH\n");
		return 2;
	}
	n = atol(argv[1]);
	wall = clock_s(CLOCK_MONOTONIC);
	cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	for (long i = 0; i < n; i++) {
		int fd = open(argv[2], O_RDONLY);

		if (fd < 0) {
			perror("open");
			return 1;
		}
		close(fd);
	}
	printf("openclose %ld %.6f %.6f\n", n, clock_s(CLOCK_MONOTONIC) - wall,
	       clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu);
	return 0;
}
