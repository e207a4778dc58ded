// SPDX-License-Identifier: MIT
/* lsm_run: the loader used inside the LSM test VM.
 *
 *   lsm_run OBJ [-m MAPFILE] [-- CMD ARGS...]
 *
 * Loads every program of OBJ through the real verifier, fills maps from MAPFILE
 * (lines "MAP KEYHEX VALUEHEX"), attaches every program, runs CMD and prints what
 * happened as "lsm_run: <what>" lines on stdout, then the ring buffer `events` as
 * "event HEX" lines. The exit code is CMD's, or 100+ for a failed loader step. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <bpf/libbpf.h>

#define EXIT_OPEN 101
#define EXIT_LOAD 102
#define EXIT_MAPS 103
#define EXIT_ATTACH 104
#define EXIT_EXEC 105
#define MAX_BYTES 4096

static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list args)
{
	/* libbpf prints the full verifier log at WARN level when a load fails */
	if (level == LIBBPF_DEBUG && !getenv("LSM_RUN_DEBUG"))
		return 0;
	return vfprintf(stderr, fmt, args);
}

static int unhex(const char *text, unsigned char *out, size_t cap)
{
	size_t len = strlen(text), i;
	unsigned int byte;

	if (len % 2 || len / 2 > cap)
		return -1;
	for (i = 0; i < len / 2; i++) {
		if (sscanf(text + 2 * i, "%2x", &byte) != 1)
			return -1;
		out[i] = byte;
	}
	return len / 2;
}

static int fill_maps(struct bpf_object *obj, const char *path)
{
	static unsigned char key[MAX_BYTES], value[MAX_BYTES];
	char name[256], khex[2 * MAX_BYTES + 1], vhex[2 * MAX_BYTES + 1];
	int count = 0, klen, vlen;
	struct bpf_map *map;
	FILE *file;

	file = fopen(path, "r");
	if (!file) {
		printf("lsm_run: failed to open map file %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fscanf(file, "%255s %8192s %8192s", name, khex, vhex) == 3) {
		map = bpf_object__find_map_by_name(obj, name);
		klen = unhex(khex, key, sizeof(key));
		vlen = unhex(vhex, value, sizeof(value));
		if (!map || klen < 0 || vlen < 0 ||
		    bpf_map__update_elem(map, key, klen, value, vlen, BPF_ANY)) {
			printf("lsm_run: failed to update map %s: %s\n", name, strerror(errno));
			fclose(file);
			return -1;
		}
		count++;
	}
	fclose(file);
	printf("lsm_run: map entries %d\n", count);
	return 0;
}

static int attach_all(struct bpf_object *obj)
{
	struct bpf_program *prog;
	struct bpf_link *link;

	bpf_object__for_each_program(prog, obj) {
		if (!bpf_program__autoload(prog))
			continue;
		link = bpf_program__attach(prog);
		if (!link) {
			printf("lsm_run: failed to attach %s: %s\n", bpf_program__name(prog),
			       strerror(errno));
			return -1;
		}
		printf("lsm_run: attached %s\n", bpf_program__name(prog));
	}
	return 0;
}

static int print_event(void *ctx, void *data, size_t size)
{
	const unsigned char *bytes = data;
	size_t i;

	printf("event ");
	for (i = 0; i < size; i++)
		printf("%02x", bytes[i]);
	printf("\n");
	return 0;
}

static int run_command(char **argv)
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		execvp(argv[0], argv);
		printf("lsm_run: failed to exec %s: %s\n", argv[0], strerror(errno));
		_exit(EXIT_EXEC);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return EXIT_EXEC;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
	const char *map_file = NULL;
	struct ring_buffer *events = NULL;
	struct bpf_object *obj;
	struct bpf_map *ring;
	int opt, rc = 0;

	while ((opt = getopt(argc, argv, "m:")) != -1) {
		if (opt != 'm')
			return EXIT_OPEN;
		map_file = optarg;
	}
	if (optind >= argc) {
		fprintf(stderr, "usage: lsm_run OBJ [-m MAPFILE] [-- CMD ARGS...]\n");
		return EXIT_OPEN;
	}
	libbpf_set_print(print_libbpf);
	setvbuf(stdout, NULL, _IOLBF, 0);

	obj = bpf_object__open_file(argv[optind], NULL);
	if (!obj) {
		printf("lsm_run: failed to open %s: %s\n", argv[optind], strerror(errno));
		return EXIT_OPEN;
	}
	if (bpf_object__load(obj)) {
		printf("lsm_run: failed to load %s: %s\n", argv[optind], strerror(errno));
		return EXIT_LOAD;
	}
	printf("lsm_run: loaded %s\n", argv[optind]);
	if (map_file && fill_maps(obj, map_file))
		return EXIT_MAPS;
	if (attach_all(obj))
		return EXIT_ATTACH;

	ring = bpf_object__find_map_by_name(obj, "events");
	if (ring && bpf_map__type(ring) == BPF_MAP_TYPE_RINGBUF)
		events = ring_buffer__new(bpf_map__fd(ring), print_event, NULL, NULL);
	if (optind + 1 < argc) {
		rc = run_command(argv + optind + 1);
		printf("lsm_run: exit %d\n", rc);
	}
	if (events)
		ring_buffer__consume(events);
	ring_buffer__free(events);
	bpf_object__close(obj);
	return rc;
}
