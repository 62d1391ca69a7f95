/*
 * pos_wait.c - wait in poll() for a database's NAME-pos to change, as an
 * app waiting for replication would (libc only).
 *
 *   pos-wait FILE TIMEOUT_MS [poll|select|epoll]
 *
 * Opens FILE, reads it and prints "at POSITION", then waits once for it to
 * be readable, with poll() (the default), select() or epoll. Prints and
 * exits with:
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
#include <sys/epoll.h>
#include <sys/select.h>
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

/* 1 when fd became readable, 0 on timeout, -1 on error (errno) */
static int wait_readable(int fd, int timeout_ms, const char *how)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (strcmp(how, "select") == 0) {
		struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
		fd_set rd;

		FD_ZERO(&rd);
		FD_SET(fd, &rd);
		return select(fd + 1, &rd, NULL, NULL, &tv);
	}
	if (strcmp(how, "epoll") == 0) {
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd }, out;
		int ep = epoll_create1(EPOLL_CLOEXEC), rc = -1;

		if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0)
			rc = epoll_wait(ep, &out, 1, timeout_ms);
		if (ep >= 0)
			close(ep);
		return rc;
	}
	return poll(&p, 1, timeout_ms);
}

int main(int argc, char **argv)
{
	char before[128], after[128];
	int fd, rc;

	if ((argc != 3 && argc != 4) ||
	    (argc == 4 && strcmp(argv[3], "poll") != 0 && strcmp(argv[3], "select") != 0 &&
	     strcmp(argv[3], "epoll") != 0)) {
		fprintf(stderr, "usage: pos-wait FILE TIMEOUT_MS [poll|select|epoll]\n");
		return 1;
	}
	fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "pos-wait: open '%s': %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (read_pos(fd, argv[1], before, sizeof(before)) < 0)
		return 1;
	printf("at %s\n", before);
	fflush(stdout);
	rc = wait_readable(fd, atoi(argv[2]), argc == 4 ? argv[3] : "poll");
	if (rc < 0) {
		fprintf(stderr, "pos-wait: wait for '%s': %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (rc == 0) {
		printf("timeout\n");
		return 2;
	}
	if (read_pos(fd, argv[1], after, sizeof(after)) < 0)
		return 1;
	if (strcmp(before, after) == 0) {
		printf("woke without a change\n");
		return 3;
	}
	printf("now %s\n", after);
	return 0;
}
