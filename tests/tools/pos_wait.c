/*
 * pos_wait.c - wait in poll() for a database's NAME-pos to change, as an
 * app waiting for replication would (libc only).
 *
 *   pos-wait FILE TIMEOUT_MS
 *
 * Opens FILE, reads it and prints "at POSITION", then polls it once for
 * POLLIN. Prints and exits with:
 *   0  "now POSITION": woken, and the position read again differs;
 *   2  "timeout": nothing woke it in TIMEOUT_MS;
 *   3  "woke without a change": poll() returned but the position is the
 *      same (a file system that does not implement poll answers at once);
 *   1  any error, on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int read_pos(int fd, const char *path, char *buf, size_t cap)
{
	ssize_t n = pread(fd, buf, cap - 1, 0);

	if (n < 0) {
		fprintf(stderr, "pos-wait: read '%s': %s\n", path, strerror(errno));
		return -1;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

int main(int argc, char **argv)
{
	char before[128], after[128];
	struct pollfd p;
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: pos-wait FILE TIMEOUT_MS\n");
		return 1;
	}
	p.fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (p.fd < 0) {
		fprintf(stderr, "pos-wait: open '%s': %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (read_pos(p.fd, argv[1], before, sizeof(before)) < 0)
		return 1;
	printf("at %s\n", before);
	fflush(stdout);
	p.events = POLLIN;
	p.revents = 0;
	rc = poll(&p, 1, atoi(argv[2]));
	if (rc < 0) {
		fprintf(stderr, "pos-wait: poll '%s': %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (rc == 0) {
		printf("timeout\n");
		return 2;
	}
	if (read_pos(p.fd, argv[1], after, sizeof(after)) < 0)
		return 1;
	if (strcmp(before, after) == 0) {
		printf("woke without a change\n");
		return 3;
	}
	printf("now %s\n", after);
	return 0;
}
