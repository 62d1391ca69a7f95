/*
 * proxy_app.c - a tiny web app and raw HTTP client for the proxy tests
 * and benchmark (tests/cluster/proxy.sh, tests/bench/proxy).
 *
 *   proxy-app serve PORT DB     HTTP/1.1 app, a thread per connection:
 *       GET  /rows         "COUNT LAST\n" of table t(id, v) in DB
 *       GET  /static       "hello\n" (no SQLite: the proxy's own cost)
 *       GET  /headers      the request head as received
 *       GET  /chunked      a chunked body "0123456789" x 3
 *       GET  /ws           Upgrade: 101, then echo bytes until EOF
 *       POST /write        insert the body as v: 201 "ok\n"
 *       POST /slow         read the body, sleep 3 s, then 200
 *   proxy-app send HOST:PORT    stdin to the server as is, then print
 *                               what comes back until it closes (5 s)
 *   proxy-app ws HOST:PORT PATH MSG [HOLD_S]
 *                               upgrade, send MSG twice, print the echoes;
 *                               then wait up to HOLD_S for the close
 *
 * Test code: every read is bounded, errors exit 1 with a message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX (64 * 1024)
#define BODY_MAX (8 << 20)

struct app {
	const char *db;
};

struct conn {
	struct app *app;
	int fd;
	char buf[HEAD_MAX + 1];
	size_t len;
	sqlite3 *sq;
};

static int send_all(int fd, const void *p, size_t n)
{
	const char *s = p;

	while (n > 0) {
		ssize_t k = send(fd, s, n, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		s += k;
		n -= (size_t)k;
	}
	return 0;
}

/* More bytes into c->buf (at most 60 s of silence): bytes, 0 EOF, -1. */
static ssize_t fill(struct conn *c)
{
	struct pollfd pf = { .fd = c->fd, .events = POLLIN };
	ssize_t n;

	if (c->len >= HEAD_MAX)
		return -1;
	if (poll(&pf, 1, 60000) <= 0)
		return -1;
	n = recv(c->fd, c->buf + c->len, HEAD_MAX - c->len, 0);
	if (n > 0)
		c->len += (size_t)n;
	return n;
}

static void consume(struct conn *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

static const char *header(const char *head, const char *name, char *out, size_t n)
{
	size_t nl = strlen(name);

	for (const char *l = strstr(head, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
		const char *s = l + 2;

		if (strncasecmp(s, name, nl) == 0 && s[nl] == ':') {
			const char *v = s + nl + 1, *e;

			v += strspn(v, " ");
			e = strstr(v, "\r\n");
			snprintf(out, n, "%.*s", (int)(e ? e - v : (long)strlen(v)), v);
			return out;
		}
	}
	return NULL;
}

/* The request body (Content-Length or chunked) into a malloc'd buffer. */
static char *read_body(struct conn *c, const char *head, size_t *blen)
{
	char v[64];
	char *body = malloc(BODY_MAX + 1);
	size_t n = 0;

	if (!body)
		return NULL;
	if (header(head, "Content-Length", v, sizeof(v))) {
		size_t want = strtoul(v, NULL, 10);

		if (want > BODY_MAX)
			goto fail;
		while (n < want) {
			size_t k;

			if (c->len == 0 && fill(c) <= 0)
				goto fail;
			k = c->len < want - n ? c->len : want - n;
			memcpy(body + n, c->buf, k);
			consume(c, k);
			n += k;
		}
	} else if (header(head, "Transfer-Encoding", v, sizeof(v))) {
		for (int chunks = 0; chunks < 100000; chunks++) {
			char *nl;
			size_t size;

			while (!(nl = memchr(c->buf, '\n', c->len)))
				if (fill(c) <= 0)
					goto fail;
			size = strtoul(c->buf, NULL, 16);
			consume(c, (size_t)(nl - c->buf) + 1);
			if (size == 0) {
				while (c->len < 2)
					if (fill(c) <= 0)
						goto fail;
				consume(c, 2);
				break;
			}
			if (n + size > BODY_MAX)
				goto fail;
			while (size > 0) {
				size_t k;

				if (c->len == 0 && fill(c) <= 0)
					goto fail;
				k = c->len < size ? c->len : size;
				memcpy(body + n, c->buf, k);
				consume(c, k);
				n += k;
				size -= k;
			}
			while (c->len < 2)
				if (fill(c) <= 0)
					goto fail;
			consume(c, 2);
		}
	}
	body[n] = '\0';
	*blen = n;
	return body;
fail:
	free(body);
	return NULL;
}

static int reply(struct conn *c, int status, const char *body, size_t n, bool close_it)
{
	char head[256];
	int h = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
			 status, n, close_it ? "Connection: close\r\n" : "");

	return send_all(c->fd, head, (size_t)h) < 0 || send_all(c->fd, body, n) < 0 ? -1 : 0;
}

static int rows(struct conn *c, char *out, size_t n)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (!c->sq) {
		if (sqlite3_open(c->app->db, &c->sq) != SQLITE_OK)
			return snprintf(out, n, "open: %s\n", sqlite3_errmsg(c->sq)), -1;
		sqlite3_busy_timeout(c->sq, 5000);
	}
	rc = sqlite3_prepare_v2(c->sq, "SELECT count(*), coalesce((SELECT v FROM t ORDER BY id DESC "
				       "LIMIT 1), '') FROM t", -1, &st, NULL);
	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		snprintf(out, n, "%d %s\n", sqlite3_column_int(st, 0),
			 (const char *)sqlite3_column_text(st, 1));
	else
		snprintf(out, n, "error: %s\n", sqlite3_errmsg(c->sq));
	rc = rc == SQLITE_OK ? 0 : -1;
	sqlite3_finalize(st);
	return rc;
}

static int write_row(struct conn *c, const char *v, char *out, size_t n)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (!c->sq) {
		if (sqlite3_open(c->app->db, &c->sq) != SQLITE_OK)
			return snprintf(out, n, "open: %s\n", sqlite3_errmsg(c->sq)), -1;
		sqlite3_busy_timeout(c->sq, 5000);
	}
	rc = sqlite3_prepare_v2(c->sq, "INSERT INTO t(v) VALUES (?)", -1, &st, NULL);
	if (rc == SQLITE_OK)
		sqlite3_bind_text(st, 1, v, -1, SQLITE_TRANSIENT);
	rc = rc == SQLITE_OK ? sqlite3_step(st) : rc;
	snprintf(out, n, rc == SQLITE_DONE ? "ok\n" : "error: %s\n", sqlite3_errmsg(c->sq));
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static void echo(struct conn *c)
{
	char b[4096];

	if (c->len && send_all(c->fd, c->buf, c->len) < 0)
		return;
	for (int i = 0; i < 100000; i++) {
		struct pollfd pf = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pf, 1, 60000) <= 0)
			return;
		n = recv(c->fd, b, sizeof(b), 0);
		if (n <= 0 || send_all(c->fd, b, (size_t)n) < 0)
			return;
	}
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	int one = 1;

	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (int req = 0; req < 10000000; req++) {
		char *end, head[HEAD_MAX + 1], method[16], path[1024], v[256], out[512];
		char *body = NULL;
		size_t hl, blen = 0;
		bool close_it;

		c->buf[c->len] = '\0';
		while (!(end = strstr(c->buf, "\r\n\r\n"))) {
			if (fill(c) <= 0)
				goto done;
			c->buf[c->len] = '\0';
		}
		hl = (size_t)(end - c->buf) + 4;
		memcpy(head, c->buf, hl);
		head[hl] = '\0';
		consume(c, hl);
		if (sscanf(head, "%15s %1023s", method, path) != 2)
			goto done;
		close_it = header(head, "Connection", v, sizeof(v)) && strcasecmp(v, "close") == 0;
		body = read_body(c, head, &blen);
		if (!body)
			goto done;
		if (strcmp(path, "/static") == 0) {
			if (reply(c, 200, "hello\n", 6, close_it) < 0)
				close_it = true;
		} else if (strcmp(path, "/rows") == 0) {
			int rc = rows(c, out, sizeof(out));

			if (reply(c, rc < 0 ? 500 : 200, out, strlen(out), close_it) < 0)
				close_it = true;
		} else if (strcmp(path, "/headers") == 0) {
			if (reply(c, 200, head, hl, close_it) < 0)
				close_it = true;
		} else if (strcmp(path, "/chunked") == 0) {
			static const char r[] = "HTTP/1.1 200 X\r\nTransfer-Encoding: chunked\r\n\r\n"
						"a\r\n0123456789\r\na\r\n0123456789\r\n"
						"a;ext=1\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";

			if (send_all(c->fd, r, sizeof(r) - 1) < 0)
				close_it = true;
		} else if (strcmp(path, "/ws") == 0 && header(head, "Upgrade", v, sizeof(v))) {
			static const char r[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
						"Connection: Upgrade\r\n\r\n";

			free(body);
			if (send_all(c->fd, r, sizeof(r) - 1) == 0)
				echo(c);
			goto done;
		} else if (strcmp(method, "POST") == 0 && strcmp(path, "/write") == 0) {
			int rc = write_row(c, body, out, sizeof(out));

			if (reply(c, rc < 0 ? 500 : 201, out, strlen(out), close_it) < 0)
				close_it = true;
		} else if (strcmp(method, "POST") == 0 && strcmp(path, "/slow") == 0) {
			struct timespec ts = { 3, 0 };

			nanosleep(&ts, NULL);
			if (reply(c, 200, "slow\n", 5, close_it) < 0)
				close_it = true;
		} else {
			if (reply(c, 404, "no\n", 3, close_it) < 0)
				close_it = true;
		}
		free(body);
		if (close_it)
			break;
	}
done:
	sqlite3_close(c->sq);
	close(c->fd);
	free(c);
	return NULL;
}

static int serve(int port, const char *db)
{
	struct app app = { .db = db };
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 512) < 0) {
		perror("proxy-app: listen");
		return 1;
	}
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		struct conn *c;
		pthread_t t;

		if (fd < 0)
			continue;
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->app = &app;
		c->fd = fd;
		if (pthread_create(&t, NULL, conn_main, c) != 0) {
			close(fd);
			free(c);
			continue;
		}
		pthread_detach(t);
	}
}

static int dial(const char *hostport)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(hostport, ':');
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (!colon || fd < 0)
		return -1;
	snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* stdin to the server as it comes, its answers to stdout, until the
 * server closes or, once stdin ended, is silent for 5 s. */
static int send_stdin(const char *hostport)
{
	char b[65536];
	bool in_open = true;
	int fd = dial(hostport);

	if (fd < 0) {
		perror("proxy-app send: connect");
		return 1;
	}
	for (int i = 0; i < 1000000; i++) {
		struct pollfd pf[2] = { { .fd = fd, .events = POLLIN },
					{ .fd = in_open ? 0 : -1, .events = POLLIN } };
		ssize_t n;

		if (poll(pf, 2, 5000) <= 0 && !in_open)
			break;
		if (pf[0].revents) {
			n = recv(fd, b, sizeof(b), 0);
			if (n <= 0)
				break;
			fwrite(b, 1, (size_t)n, stdout);
			fflush(stdout);
		}
		if (in_open && pf[1].revents) {
			n = read(0, b, sizeof(b));
			/* a server may answer and close before taking it all */
			if (n <= 0 || send_all(fd, b, (size_t)n) < 0)
				in_open = false;
		}
	}
	close(fd);
	return 0;
}

static int ws(const char *hostport, const char *path, const char *msg, int hold_s)
{
	char req[2048], b[8192];
	size_t got = 0, want = strlen(msg);
	char *end = NULL;
	int fd = dial(hostport);

	if (fd < 0) {
		perror("proxy-app ws: connect");
		return 1;
	}
	snprintf(req, sizeof(req),
		 "GET %s HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
		 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
		 path);
	if (send_all(fd, req, strlen(req)) < 0)
		return 1;
	while (!end && got < sizeof(b) - 1) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pf, 1, 5000) <= 0)
			break;
		n = recv(fd, b + got, sizeof(b) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		b[got] = '\0';
		end = strstr(b, "\r\n\r\n");
	}
	if (!end || strncmp(b, "HTTP/1.1 101", 12) != 0) {
		fprintf(stderr, "proxy-app ws: no 101: %.200s\n", b);
		return 1;
	}
	printf("%.*s", (int)(end - b + 4), b);
	got -= (size_t)(end - b + 4);
	memmove(b, end + 4, got);
	/* twice, so that the tunnel carries more than one exchange */
	for (int round = 0; round < 2; round++) {
		if (send_all(fd, msg, want) < 0)
			return 1;
		while (got < want) {
			struct pollfd pf = { .fd = fd, .events = POLLIN };
			ssize_t n;

			if (poll(&pf, 1, 5000) <= 0)
				break;
			n = recv(fd, b + got, sizeof(b) - 1 - got, 0);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		printf("echo: %.*s\n", (int)(got < want ? got : want), b);
		if (got < want)
			return 1;
		memmove(b, b + want, got - want);
		got -= want;
	}
	if (hold_s > 0) {
		/* then wait for the other side to close the connection */
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		double t0 = (double)time(NULL);

		fflush(stdout);
		if (poll(&pf, 1, hold_s * 1000) > 0 && recv(fd, b, sizeof(b), 0) <= 0)
			printf("closed after %.0f s\n", (double)time(NULL) - t0);
		else
			printf("still open\n");
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "serve") == 0)
		return serve(atoi(argv[2]), argv[3]);
	if (argc == 3 && strcmp(argv[1], "send") == 0)
		return send_stdin(argv[2]);
	if ((argc == 5 || argc == 6) && strcmp(argv[1], "ws") == 0)
		return ws(argv[2], argv[3], argv[4], argc == 6 ? atoi(argv[5]) : 0);
	fprintf(stderr, "usage: proxy-app serve PORT DB | send HOST:PORT | ws HOST:PORT PATH MSG [HOLD_S]\n");
	return 2;
}
