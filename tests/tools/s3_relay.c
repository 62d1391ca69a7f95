/*
 * s3_relay.c - a relay in front of the test S3 server that makes it
 * misbehave in one of three ways. Requests pass unchanged, so their
 * signatures stay valid.
 *
 *   s3-relay PORT UPSTREAM_PORT unconditional
 *       a store ignoring conditional writes: every "412 Precondition
 *       Failed" the server answers reaches the client as 200. The server
 *       still refuses the write, only the client is told otherwise, which
 *       is what a lease on such a store would believe.
 *   s3-relay PORT UPSTREAM_PORT cut:BYTES
 *       a network that drops connections: each one is closed once BYTES
 *       of answers went through it ("cut after N bytes" on stdout).
 *   s3-relay PORT UPSTREAM_PORT gone:TEXT
 *       objects deleted under a reader: a GET whose request line holds
 *       TEXT is answered 404 NoSuchKey by the relay itself ("gone" on
 *       stdout); everything else passes.
 *
 * Listens on 127.0.0.1:PORT, one process per connection, relays to
 * 127.0.0.1:UPSTREAM_PORT. Prints "listening on PORT" once it listens;
 * exits after 120 s in any case. Exit status 2 for a bad command line, 1
 * if it cannot listen.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LIFETIME_S 120
#define HOLD_MS 20 /* a held-back partial status line waits this long at most */

static const char STATUS_412[] = "HTTP/1.1 412";

static int parse_port(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	return *s && !*end && v > 0 && v < 65536 ? (int)v : -1;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Rewrite each "HTTP/1.1 412" in buf[0..n) to "HTTP/1.1 200"; return how
 * many bytes at the end must wait for more data because they could be the
 * start of that status line. */
static size_t rewrite(char *buf, size_t n)
{
	const size_t plen = sizeof(STATUS_412) - 1;

	for (size_t i = 0; i < n; i++) {
		size_t k = 0;

		while (k < plen && i + k < n && buf[i + k] == STATUS_412[k])
			k++;
		if (k == plen)
			memcpy(buf + i + plen - 3, "200", 3);
		else if (i + k == n && k > 0)
			return n - i; /* a prefix of the pattern ends the buffer */
	}
	return 0;
}

static const char NOT_FOUND_BODY[] =
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchKey</Code>"
	"<Message>deleted (test relay)</Message></Error>";

struct mode {
	long cut_after;   /* cut: bytes a connection carries to the client */
	const char *gone; /* gone: the text of the GETs answered 404 */
};                        /* neither: 412 answers rewritten to 200 */

/* A GET in in[0..n) whose request line holds text. */
static bool is_gone(const char *in, size_t n, const char *text)
{
	const char *eol = memchr(in, '\n', n);

	return text && n > 4 && memcmp(in, "GET ", 4) == 0 && eol &&
	       memmem(in, (size_t)(eol - in), text, strlen(text)) != NULL;
}

static int answer_gone(int client)
{
	char head[256];
	int len = snprintf(head, sizeof(head),
			   "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n"
			   "Content-Length: %zu\r\n\r\n", sizeof(NOT_FOUND_BODY) - 1);

	printf("gone\n");
	fflush(stdout);
	return send_all(client, head, (size_t)len) < 0 ? -1
		: send_all(client, NOT_FOUND_BODY, sizeof(NOT_FOUND_BODY) - 1);
}

static void relay(int client, int upstream_port, const struct mode *m)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)upstream_port) };
	char buf[65536];
	size_t held = 0; /* bytes from the server not yet sent: buf[0..held) */
	long sent = 0;
	int up = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (up < 0 || connect(up, (struct sockaddr *)&a, sizeof(a)) < 0)
		return;
	for (;;) {
		struct pollfd p[2] = { { .fd = client, .events = POLLIN }, { .fd = up, .events = POLLIN } };
		int r = poll(p, 2, held ? HOLD_MS : 60000);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0 && held && send_all(client, buf, held) == 0) {
				held = 0;
				continue;
			}
			return;
		}
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			char in[65536];
			ssize_t n = recv(client, in, sizeof(in), 0);

			if (n > 0 && is_gone(in, (size_t)n, m->gone)) {
				if (answer_gone(client) < 0)
					return;
				continue;
			}
			if (n <= 0 || send_all(up, in, (size_t)n) < 0)
				return;
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(up, buf + held, sizeof(buf) - held, 0);
			size_t total, keep;

			if (n <= 0) {
				if (held)
					send_all(client, buf, held);
				return;
			}
			total = held + (size_t)n;
			if (m->cut_after && sent + (long)total >= m->cut_after) {
				send_all(client, buf, (size_t)(m->cut_after - sent));
				printf("cut after %ld bytes\n", m->cut_after);
				fflush(stdout);
				return;
			}
			sent += (long)total;
			keep = m->cut_after || m->gone ? 0 : rewrite(buf, total);
			if (send_all(client, buf, total - keep) < 0)
				return;
			memmove(buf, buf + total - keep, keep);
			held = keep;
		}
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	int port, upstream, one = 1, ls;
	time_t end = time(NULL) + LIFETIME_S;
	struct mode m = { 0 };
	char *rest = NULL;
	bool ok = argc == 4;

	if (ok && strncmp(argv[3], "cut:", 4) == 0) {
		m.cut_after = strtol(argv[3] + 4, &rest, 10);
		ok = m.cut_after > 0 && !*rest;
	} else if (ok && strncmp(argv[3], "gone:", 5) == 0) {
		m.gone = argv[3] + 5;
		ok = *m.gone != '\0';
	} else if (ok) {
		ok = strcmp(argv[3], "unconditional") == 0;
	}
	if (!ok || (port = parse_port(argv[1])) < 0 || (upstream = parse_port(argv[2])) < 0) {
		fprintf(stderr, "usage: s3-relay PORT UPSTREAM_PORT unconditional|cut:BYTES|gone:TEXT\n");
		return 2;
	}
	signal(SIGCHLD, SIG_IGN); /* no zombies from the per-connection children */
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 16) < 0) {
		perror("s3-relay: listen");
		return 1;
	}
	printf("listening on %d\n", port);
	fflush(stdout);
	while (time(NULL) < end) {
		struct pollfd p = { .fd = ls, .events = POLLIN };
		int c;

		if (poll(&p, 1, 1000) <= 0)
			continue;
		c = accept(ls, NULL, NULL);
		if (c < 0)
			continue;
		if (fork() == 0) {
			close(ls);
			alarm(LIFETIME_S);
			relay(c, upstream, &m);
			_exit(0);
		}
		close(c);
	}
	return 0;
}
