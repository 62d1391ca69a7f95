/*
 * fake_primary.c - a stand-in primary for replica tests: answers every
 * POST on 127.0.0.1:PORT with a replication stream built from the command
 * line, so a test can send a replica exactly the bytes it wants (broken
 * ones included), which a real primary never would.
 *
 *   fake-primary [--max-conns N] [--requests FILE] PORT SPEC...
 *
 * SPEC items, in order, make the response body:
 *   ltx NAME FILE   an LTX frame for database NAME with FILE's bytes
 *   ready           a READY frame (the current clock)
 *   heartbeat       a HEARTBEAT frame (the current clock)
 *   drop NAME       a DROP frame
 *   end             an END frame
 *   raw FILE        FILE's bytes as they are
 *   cut N           the body stops after N bytes in all; the connection
 *                   closes there
 *   hold S          wait S seconds (a fraction is fine) at this point of
 *                   the body, e.g. before closing
 *
 * Each connection gets the same body. The server answers at most N
 * connections (default 5), one at a time, then exits 0; it exits 0 after
 * 60 s in any case. With --requests, each request body is appended to
 * FILE, one per line. Once listening it prints "listening on PORT".
 * Exit status 2 for a bad command line, 1 if it cannot listen.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LIFETIME_MS 60000
#define IO_TIMEOUT_S 5
#define HEADERS_MAX (64 * 1024)
#define BODY_MAX (4 * 1024 * 1024)
#define FILE_MAX (256 * 1024 * 1024)
#define ITEMS_MAX 256
#define NAME_MAX_BYTES 65535

enum item_kind { IT_BYTES, IT_CLOCK, IT_HOLD };

/* One piece of the body: fixed bytes, a clock frame, or a pause. */
struct item {
	enum item_kind kind;
	uint8_t *data;     /* IT_BYTES */
	size_t len;
	uint8_t type;      /* IT_CLOCK: frame type */
	long hold_ms;      /* IT_HOLD */
};

struct spec {
	struct item items[ITEMS_MAX];
	size_t n;
	uint64_t cut;      /* UINT64_MAX = none */
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void header(uint8_t *h, uint8_t type, size_t name_len, uint64_t payload_len)
{
	h[0] = type;
	h[1] = 0;
	h[2] = (uint8_t)(name_len >> 8);
	h[3] = (uint8_t)name_len;
	put_be64(h + 4, payload_len);
}

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
	va_list ap;

	fputs("fake-primary: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nusage: fake-primary [--max-conns N] [--requests FILE] PORT SPEC...\n", stderr);
	return 2;
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *p = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n <= FILE_MAX &&
	    fseek(f, 0, SEEK_SET) == 0 && (p = malloc((size_t)n + 1)) != NULL) {
		if (n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n) {
			free(p);
			p = NULL;
		}
		*len = (size_t)n;
	}
	fclose(f);
	return p;
}

static struct item *new_item(struct spec *s, enum item_kind kind)
{
	struct item *it;

	if (s->n == ITEMS_MAX)
		return NULL;
	it = &s->items[s->n++];
	memset(it, 0, sizeof(*it));
	it->kind = kind;
	return it;
}

/* A frame with a name and an optional file as payload. */
static int add_frame(struct spec *s, uint8_t type, const char *name, const char *file)
{
	size_t nl = strlen(name), plen = 0;
	uint8_t *payload = NULL;
	struct item *it = new_item(s, IT_BYTES);

	if (!it)
		return usage("more than %d items", ITEMS_MAX);
	if (nl > NAME_MAX_BYTES)
		return usage("name '%s' is longer than 65535 bytes", name);
	if (file && !(payload = read_file(file, &plen)))
		return usage("cannot read '%s'", file);
	it->len = 12 + nl + plen;
	it->data = malloc(it->len);
	if (!it->data)
		return usage("out of memory for '%s'", name);
	header(it->data, type, nl, plen);
	memcpy(it->data + 12, name, nl);
	if (plen)
		memcpy(it->data + 12 + nl, payload, plen);
	free(payload);
	return 0;
}

static int parse_spec(struct spec *s, int argc, char **argv)
{
	s->cut = UINT64_MAX;
	for (int i = 0; i < argc; i++) {
		const char *w = argv[i];
		int need = !strcmp(w, "ltx") ? 2 : !strcmp(w, "drop") || !strcmp(w, "raw") ||
				 !strcmp(w, "cut") || !strcmp(w, "hold") ? 1 : 0;
		struct item *it;
		char *end;
		int rc = 0;

		if (i + need >= argc)
			return usage("'%s' needs more arguments", w);
		if (!strcmp(w, "ltx")) {
			rc = add_frame(s, 1, argv[i + 1], argv[i + 2]);
		} else if (!strcmp(w, "drop")) {
			rc = add_frame(s, 4, argv[i + 1], NULL);
		} else if (!strcmp(w, "end")) {
			rc = add_frame(s, 5, "", NULL);
		} else if (!strcmp(w, "ready") || !strcmp(w, "heartbeat")) {
			if (!(it = new_item(s, IT_CLOCK)))
				return usage("more than %d items", ITEMS_MAX);
			it->type = !strcmp(w, "ready") ? 2 : 3;
		} else if (!strcmp(w, "raw")) {
			if (!(it = new_item(s, IT_BYTES)))
				return usage("more than %d items", ITEMS_MAX);
			if (!(it->data = read_file(argv[i + 1], &it->len)))
				return usage("cannot read '%s'", argv[i + 1]);
		} else if (!strcmp(w, "cut")) {
			unsigned long long v;

			errno = 0;
			v = strtoull(argv[i + 1], &end, 10);
			if (errno || end == argv[i + 1] || *end)
				return usage("cut '%s': want a byte count", argv[i + 1]);
			if (v < s->cut)
				s->cut = v;
		} else if (!strcmp(w, "hold")) {
			double sec = strtod(argv[i + 1], &end);

			if (end == argv[i + 1] || *end || !(sec >= 0 && sec <= 60))
				return usage("hold '%s': want 0..60 seconds", argv[i + 1]);
			if (!(it = new_item(s, IT_HOLD)))
				return usage("more than %d items", ITEMS_MAX);
			it->hold_ms = (long)(sec * 1000);
		} else {
			return usage("unknown SPEC item '%s'", w);
		}
		if (rc)
			return rc;
		i += need;
	}
	return 0;
}

/* Write all of p, or fail (the peer went away, or stalled for IO_TIMEOUT_S). */
static int write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Read the request: headers to CRLFCRLF, then Content-Length bytes.
 * Returns the body (malloc'd, NUL-terminated) or NULL. */
static char *read_request(int fd, size_t *body_len)
{
	char *buf = malloc(HEADERS_MAX + BODY_MAX + 1), *eoh = NULL, *body;
	size_t have = 0, want = 0, hlen = 0;
	const char *cl;
	bool continued = false;

	if (!buf)
		return NULL;
	for (;;) {
		ssize_t r;

		if (eoh && have >= want)
			break;
		if (have == HEADERS_MAX + BODY_MAX)
			goto fail;
		r = recv(fd, buf + have, HEADERS_MAX + BODY_MAX - have, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			goto fail;
		have += (size_t)r;
		buf[have] = '\0';
		if (eoh)
			continue;
		eoh = strstr(buf, "\r\n\r\n");
		if (!eoh) {
			if (have >= HEADERS_MAX)
				goto fail;
			continue;
		}
		hlen = (size_t)(eoh - buf) + 4;
		*eoh = '\0';
		want = hlen;
		for (cl = buf; (cl = strchr(cl, '\n')) != NULL;) {
			cl++;
			if (!strncasecmp(cl, "Content-Length:", 15)) {
				unsigned long long v = strtoull(cl + 15, NULL, 10);

				if (v > BODY_MAX)
					goto fail;
				want = hlen + (size_t)v;
			} else if (!strncasecmp(cl, "Expect: 100-continue", 20) && !continued) {
				static const char go[] = "HTTP/1.1 100 Continue\r\n\r\n";

				if (write_all(fd, go, sizeof(go) - 1) < 0)
					goto fail;
				continued = true;
			}
		}
		*eoh = '\r';
	}
	*body_len = want - hlen;
	body = malloc(*body_len + 1);
	if (body) {
		memcpy(body, buf + hlen, *body_len);
		body[*body_len] = '\0';
	}
	free(buf);
	return body;
fail:
	free(buf);
	return NULL;
}

static void record(const char *path, const char *body, size_t len)
{
	int fd;

	if (!path)
		return;
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "fake-primary: '%s': %s\n", path, strerror(errno));
		return;
	}
	if (write(fd, body, len) != (ssize_t)len || write(fd, "\n", 1) != 1)
		fprintf(stderr, "fake-primary: '%s': short write\n", path);
	close(fd);
}

/* Sleep ms, but never past the deadline. */
static void hold(long ms, int64_t deadline)
{
	int64_t left = deadline - mono_ms();
	struct timespec ts;

	if (ms > left)
		ms = left > 0 ? (long)left : 0;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Send the body, stopping at the cut; returns bytes sent. */
static uint64_t serve_body(int fd, const struct spec *s, int64_t deadline)
{
	uint64_t sent = 0;

	for (size_t i = 0; i < s->n && sent < s->cut; i++) {
		const struct item *it = &s->items[i];
		uint8_t clock[20];
		const uint8_t *p = it->data;
		size_t n = it->len;

		if (it->kind == IT_HOLD) {
			hold(it->hold_ms, deadline);
			continue;
		}
		if (it->kind == IT_CLOCK) {
			header(clock, it->type, 0, 8);
			put_be64(clock + 12, (uint64_t)wall_ms());
			p = clock;
			n = sizeof(clock);
		}
		if (n > s->cut - sent)
			n = (size_t)(s->cut - sent);
		if (write_all(fd, p, n) < 0)
			break;
		sent += n;
	}
	return sent;
}

static void serve(int fd, const struct spec *s, const char *requests, int64_t deadline)
{
	static const char head[] = "HTTP/1.1 200 OK\r\n"
				   "Content-Type: application/x-ltfs-stream\r\n"
				   "Connection: close\r\n\r\n";
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	size_t len = 0;
	char *body;
	uint64_t sent;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	body = read_request(fd, &len);
	if (!body) {
		fprintf(stderr, "fake-primary: no complete request\n");
		return;
	}
	record(requests, body, len);
	free(body);
	if (write_all(fd, head, sizeof(head) - 1) < 0)
		return;
	sent = serve_body(fd, s, deadline);
	fprintf(stderr, "fake-primary: sent %llu body bytes\n", (unsigned long long)sent);
}

int main(int argc, char **argv)
{
	struct spec *s = calloc(1, sizeof(*s));
	struct sockaddr_in sa = { .sin_family = AF_INET };
	const char *requests = NULL;
	long max_conns = 5, port;
	int64_t deadline = mono_ms() + LIFETIME_MS;
	int i = 1, ls, one = 1, rc;
	char *end;

	if (!s)
		return 1;
	for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
		if (!strcmp(argv[i], "--max-conns") && i + 1 < argc) {
			max_conns = strtol(argv[++i], &end, 10);
			if (*end || max_conns < 1 || max_conns > 1000)
				return usage("--max-conns '%s': want 1..1000", argv[i]);
		} else if (!strcmp(argv[i], "--requests") && i + 1 < argc) {
			requests = argv[++i];
		} else {
			return usage("unknown option '%s'", argv[i]);
		}
	}
	if (i >= argc)
		return usage("%s", "missing PORT");
	port = strtol(argv[i], &end, 10);
	if (*end || port < 1 || port > 65535)
		return usage("PORT '%s': want 1..65535", argv[i]);
	rc = parse_spec(s, argc - i - 1, argv + i + 1);
	if (rc)
		return rc;

	signal(SIGPIPE, SIG_IGN);
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0 || setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 8) < 0) {
		fprintf(stderr, "fake-primary: listen on 127.0.0.1:%ld: %s\n", port, strerror(errno));
		return 1;
	}
	printf("listening on %ld\n", port);
	fflush(stdout);

	for (long served = 0; served < max_conns;) {
		struct pollfd pfd = { .fd = ls, .events = POLLIN };
		int64_t left = deadline - mono_ms();
		int fd;

		if (left <= 0) {
			fprintf(stderr, "fake-primary: %d s are up\n", LIFETIME_MS / 1000);
			break;
		}
		rc = poll(&pfd, 1, (int)left);
		if (rc < 0 && errno != EINTR)
			break;
		if (rc <= 0)
			continue;
		fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		served++;
		fprintf(stderr, "fake-primary: connection %ld\n", served);
		serve(fd, s, requests, deadline);
		close(fd);
	}
	close(ls);
	for (size_t k = 0; k < s->n; k++)
		free(s->items[k].data);
	free(s);
	return 0;
}
