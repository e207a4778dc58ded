/*
 * Syscall loops for benchmarks/bench_trace.py. Each loop times itself, so that the
 * tracer's start-up (loading BPF) is not counted as overhead, and prints
 * "<loop> <iterations> <seconds>" on stdout.
 *
 *   loops openclose N PATH   open(PATH) + close, N times
 *   loops forkexec N         fork + exec /bin/true + wait, N times
 *   loops connect N          TCP connect to a listener on 127.0.0.1 + accept + close
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int openclose(long n, const char *path)
{
	for (long i = 0; i < n; i++) {
		int fd = open(path, O_RDONLY);

		if (fd < 0) {
			perror("open");
			return 1;
		}
		close(fd);
	}
	return 0;
}

static int forkexec(long n)
{
	for (long i = 0; i < n; i++) {
		pid_t pid = fork();
		int status;

		if (pid == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &status, 0) < 0 || status != 0) {
			perror("fork/exec");
			return 1;
		}
	}
	return 0;
}

static int connect_loop(long n)
{
	struct sockaddr_in addr = { .sin_family = AF_INET };
	socklen_t len = sizeof(addr);
	int one = 1;
	int server = socket(AF_INET, SOCK_STREAM, 0);

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(server, (void *)&addr, len) || listen(server, 128) ||
	    getsockname(server, (void *)&addr, &len)) {
		perror("listen");
		return 1;
	}
	for (long i = 0; i < n; i++) {
		int client = socket(AF_INET, SOCK_STREAM, 0);
		int peer;

		/* linger 0: close with RST, so that TIME_WAIT does not exhaust ports */
		struct linger lin = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(client, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
		if (connect(client, (void *)&addr, sizeof(addr))) {
			perror("connect");
			return 1;
		}
		peer = accept(server, NULL, NULL);
		close(client);
		close(peer);
	}
	close(server);
	return 0;
}

int main(int argc, char **argv)
{
	double start, elapsed;
	long n;
	int err;

	if (argc < 3) {
		fprintf(stderr, "usage: loops openclose|forkexec|connect N [PATH]\n");
		return 2;
	}
	n = atol(argv[2]);
	start = now();
	if (!strcmp(argv[1], "openclose") && argc > 3)
		err = openclose(n, argv[3]);
	else if (!strcmp(argv[1], "forkexec"))
		err = forkexec(n);
	else if (!strcmp(argv[1], "connect"))
		err = connect_loop(n);
	else {
		fprintf(stderr, "loops: unknown loop %s\n", argv[1]);
		return 2;
	}
	elapsed = now() - start;
	if (!err)
		printf("%s %ld %.6f\n", argv[1], n, elapsed);
	return err;
}
