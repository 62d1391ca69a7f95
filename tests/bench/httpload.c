/*
 * httpload.c - a keep-alive HTTP/1.1 load client for the proxy benchmark.
 *
 *   bench-httpload HOST:PORT METHOD PATH CONNS SECONDS [BODY]
 *
 * CONNS threads, each with one connection, send METHOD PATH back to back
 * (BODY as a Content-Length body, if given) for SECONDS, each waiting for
 * its answer (Content-Length bodies only: what the test app sends). A
 * connection that fails is opened again. Prints one line:
 *   rate=REQ/S p50=MS p99=MS max=MS ok=N errors=N
 * A non-2xx answer counts as an error. Bounded: SECONDS, and at most
 * SAMPLES_MAX requests per thread.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/bench/bench.h"

#define SAMPLES_MAX (1u << 20)
#define THREADS_MAX 64

struct worker {
	pthread_t t;
	struct sockaddr_in sa;
	const char *req;
	size_t req_len;
	double end;
	double *lat;
	size_t n, errors;
};

static int dial(const struct sockaddr_in *sa)
{
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One exchange on fd: the status, or -1 when the connection failed. */
static int exchange(int fd, const char *req, size_t len, char *buf, size_t cap)
{
	size_t got = 0, need = 0;
	char *end = NULL;
	int status;

	if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -1;
	for (int i = 0; i < 10000; i++) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pf, 1, 10000) <= 0)
			return -1;
		n = recv(fd, buf + got, cap - 1 - got, 0);
		if (n <= 0)
			return -1;
		got += (size_t)n;
		buf[got] = '\0';
		if (!end && (end = strstr(buf, "\r\n\r\n"))) {
			const char *cl = strcasestr(buf, "\r\nContent-Length:");

			need = (size_t)(end - buf) + 4 + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
		}
		if (end && got >= need)
			break;
		if (got >= cap - 1)
			return -1;
	}
	if (!end || got != need || sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		return -1;
	return status;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	char buf[16384];
	int fd = -1;

	while (w->n < SAMPLES_MAX) {
		double t0 = now();
		int st;

		if (t0 >= w->end)
			break;
		if (fd < 0 && (fd = dial(&w->sa)) < 0) {
			w->errors++;
			sleep_until(t0 + 0.01);
			continue;
		}
		st = exchange(fd, w->req, w->req_len, buf, sizeof(buf));
		if (st < 0) {
			close(fd);
			fd = -1;
		}
		if (st < 200 || st > 299) {
			w->errors++;
			continue;
		}
		w->lat[w->n++] = (now() - t0) * 1000.0;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	struct worker w[THREADS_MAX];
	char req[4096], host[64];
	const char *colon;
	double secs, conns, t0, total;
	size_t n = 0, errors = 0, k = 0;
	double *all;

	if (argc < 6 || !(colon = strrchr(argv[1], ':')) ||
	    parse_double(argv[4], 1, THREADS_MAX, &conns) < 0 ||
	    parse_double(argv[5], 0.1, 600, &secs) < 0) {
		fprintf(stderr, "usage: bench-httpload HOST:PORT METHOD PATH CONNS(1..64) SECONDS [BODY]\n");
		return 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - argv[1]), argv[1]);
	snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n\r\n%s",
		 argv[2], argv[3], argv[1], argc > 6 ? strlen(argv[6]) : 0, argc > 6 ? argv[6] : "");
	t0 = now();
	for (int i = 0; i < (int)conns; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].sa.sin_family = AF_INET;
		w[i].sa.sin_port = htons((uint16_t)strtoul(colon + 1, NULL, 10));
		if (inet_pton(AF_INET, host, &w[i].sa.sin_addr) != 1) {
			fprintf(stderr, "bench-httpload: '%s' is not an IPv4 address\n", host);
			return 2;
		}
		w[i].req = req;
		w[i].req_len = strlen(req);
		w[i].end = t0 + secs;
		w[i].lat = malloc(SAMPLES_MAX * sizeof(double));
		if (!w[i].lat || pthread_create(&w[i].t, NULL, run, &w[i]) != 0) {
			fprintf(stderr, "bench-httpload: out of memory or threads\n");
			return 1;
		}
	}
	for (int i = 0; i < (int)conns; i++) {
		pthread_join(w[i].t, NULL);
		n += w[i].n;
		errors += w[i].errors;
	}
	total = now() - t0;
	all = malloc((n ? n : 1) * sizeof(double));
	if (!all)
		return 1;
	for (int i = 0; i < (int)conns; i++) {
		memcpy(all + k, w[i].lat, w[i].n * sizeof(double));
		k += w[i].n;
		free(w[i].lat);
	}
	qsort(all, n, sizeof(double), cmp_double);
	printf("rate=%.0f p50=%.3f p99=%.3f max=%.3f ok=%zu errors=%zu\n", (double)n / total,
	       pct(all, n, 0.5), pct(all, n, 0.99), n ? all[n - 1] : 0.0, n, errors);
	free(all);
	return 0;
}
