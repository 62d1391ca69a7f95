/*
 * proxy.c - the write-forwarding HTTP reverse proxy in front of the app
 * (docs/operations.md, "Write forwarding proxy").
 *
 * A small HTTP/1.1 proxy on plain sockets, one thread per client
 * connection (at most PROXY_CONNS_MAX): streaming bodies both ways and
 * tunnelling an Upgrade (WebSocket) are then straight-line code, where a
 * callback server such as libmicrohttpd would have to turn both inside out.
 *
 *   GET /ltfs/health        200 on the primary or a replica within max-lag
 *   passthrough patterns    to the app, untouched
 *   GET/HEAD (reads)        to the app, after waiting for the __txid cookie
 *   other methods, and      on the primary: to the app, then Set-Cookie
 *   always-forward paths    __txid; on a replica: to the primary's proxy
 *
 * Every socket read or write blocks for at most PROXY_SLICE_MS (socket
 * timeouts; connecting and tunnelling poll in slices) before it looks at
 * the stop flag again, so cluster_stop never waits longer than a slice
 * for a connection thread. Bodies are copied
 * as they arrive, never held whole: a chunked body is copied verbatim
 * while its framing is followed, so that the connection can be reused.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cluster/cluster_int.h"

#define PROXY_CONNS_MAX 512          /* client connections at once */
#define PROXY_HEAD_MAX HTTP1_HEAD_MAX
#define PROXY_IO (64u * 1024)        /* bytes per read */
#define PROXY_SLICE_MS 250           /* polls wake this often to see a stop */
#define PROXY_IDLE_MS 60000          /* a keep-alive client may idle this long */
#define PROXY_HEAD_MS 10000          /* a started head must be complete within */
#define PROXY_CONNECT_MS 3000        /* connecting to the app or the primary */
#define PROXY_TUNNEL_IDLE_MS 600000  /* an upgraded connection may idle this long */
#define PROXY_REQUESTS_MAX 100000    /* requests on one client connection */
#define PROXY_CHUNK_LINE_MAX 1024    /* a chunk-size line or a trailer line */
#define PROXY_PATTERNS_MAX 64
#define PROXY_PATTERN_LEN 512
#define PROXY_INFO_TTL_MS 30000      /* the primary's proxy URL is asked again */
#define PROXY_COOKIE_AGE_S 300
#define PROXY_RETRY_AFTER_S 1

#define DEFAULT_MAX_LAG_MS 10000u
#define DEFAULT_TIMEOUT_MS 30000u
#define DEFAULT_WAIT_MS 5000u
#define DEFAULT_MAX_BODY (64ull << 20)

struct cl_proxy {
	struct cluster *c;
	int lfd;
	pthread_t acceptor;
	bool started;
	char addr[256];
	struct sockaddr_storage app;  /* the target */
	socklen_t app_len;
	char target[256];
	char db[FRAME_NAME_MAX + 1];  /* "" = no cookie */
	unsigned max_lag_ms, timeout_ms, wait_ms;
	uint64_t max_body;
	char **fwd, **pass;           /* always-forward, passthrough patterns */
	size_t nfwd, npass;

	pthread_mutex_t mu;
	pthread_cond_t cv;            /* a connection thread ended */
	bool stopping;                /* mu (read unlocked through stopping()) */
	int64_t warned_at;            /* atomic: monotonic ms of the last warning */
	uint64_t n_local, n_forwarded, n_errors; /* atomic: requests, the proxy's 5xx */
	uint64_t unwarned;            /* atomic: 5xx not logged since */
	unsigned active;              /* mu: connection threads running */

	/* the primary's proxy, learnt from its /v1/info (mu) */
	char info_for[URL_MAX];       /* the primary's HTTP URL it was asked of */
	char primary_proxy[URL_MAX];
	struct sockaddr_storage primary_sa;
	socklen_t primary_len;
	int64_t info_at;              /* monotonic ms; 0 = nothing cached */
	pthread_mutex_t info_mu;      /* one /v1/info request at a time */
};

/* A byte buffer a socket is read into, consumed from the front. */
struct sbuf {
	uint8_t *d;
	size_t len, cap;
};

enum route { ROUTE_APP, ROUTE_PRIMARY };

struct pconn {
	struct cl_proxy *p;
	int cfd;
	char peer[INET6_ADDRSTRLEN];
	struct sbuf cin;     /* from the client */
	struct sbuf uin;     /* from the upstream */
	int ufd;             /* upstream connection kept between requests */
	int64_t ufd_used;    /* monotonic ms of its last answer */
	char ukey[URL_MAX];  /* "" for the app, else the primary proxy's URL */
	struct http1_msg req, resp;
	struct ltfs_buf out; /* heads being written */
	bool close_after;    /* the client connection ends after this exchange */
	bool head_req;       /* the request is a HEAD: answers carry no body */
};

static bool stopping(struct cl_proxy *p)
{
	return __atomic_load_n(&p->stopping, __ATOMIC_RELAXED);
}

/* ---- socket I/O, bounded in time ------------------------------------------ */

/* 1 when fd is ready for ev, 0 after ms, -ECANCELED on stop, or -errno. */
static int wait_fd(struct cl_proxy *p, int fd, short ev, int64_t ms)
{
	int64_t end = cl_mono_ms() + ms;

	for (;;) {
		int64_t left = end - cl_mono_ms();
		struct pollfd pf = { .fd = fd, .events = ev };
		int n;

		if (stopping(p))
			return -ECANCELED;
		if (left <= 0)
			return 0;
		n = poll(&pf, 1, (int)(left < PROXY_SLICE_MS ? left : PROXY_SLICE_MS));
		if (n > 0)
			return 1;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* Read what is there into b (at least one byte): bytes read, 0 at EOF,
 * -ETIMEDOUT, -ENOBUFS when b is full, -ECANCELED or -errno. The socket
 * blocks for at most a slice (SO_RCVTIMEO): one system call per wait,
 * where poll and recv would take two. */
static ssize_t sb_fill(struct cl_proxy *p, int fd, struct sbuf *b, int64_t ms)
{
	int64_t end = cl_mono_ms() + ms;

	if (b->len >= b->cap)
		return -ENOBUFS;
	for (;;) {
		ssize_t n = recv(fd, b->d + b->len, b->cap - b->len, 0);

		if (n >= 0) {
			b->len += (size_t)n;
			return n;
		}
		if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (stopping(p))
			return -ECANCELED;
		if (cl_mono_ms() >= end)
			return -ETIMEDOUT;
	}
}

static void sb_consume(struct sbuf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
		return;
	}
	memmove(b->d, b->d + n, b->len - n);
	b->len -= n;
}

/* All n bytes to fd: 0, -ETIMEDOUT (no progress for ms), -ECANCELED or
 * -errno. Sends block for at most a slice (SO_SNDTIMEO). */
static int send_all(struct cl_proxy *p, int fd, const void *data, size_t n, int64_t ms)
{
	const uint8_t *s = data;
	int64_t end = cl_mono_ms() + ms;

	while (n > 0) {
		ssize_t k = send(fd, s, n, MSG_NOSIGNAL);

		if (k > 0) {
			s += k;
			n -= (size_t)k;
			end = cl_mono_ms() + ms;
			continue;
		}
		if (k < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (stopping(p))
			return -ECANCELED;
		if (cl_mono_ms() >= end)
			return -ETIMEDOUT;
	}
	return 0;
}

/* A connected socket as the I/O above wants it: blocking, but for at
 * most a slice per call, so that a stop is seen; no Nagle delay for
 * small heads and replies. */
static int tune_socket(int fd)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = PROXY_SLICE_MS * 1000 };
	int one = 1, fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

/* A connected socket to sa: 0 with *out, or -errno
 * (-ECONNREFUSED: nothing was sent, a retry is safe). */
static int dial(struct cl_proxy *p, const struct sockaddr_storage *sa, socklen_t len, int *out)
{
	int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc = 0, soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, len) < 0) {
		if (errno != EINPROGRESS) {
			rc = -errno;
		} else {
			rc = wait_fd(p, fd, POLLOUT, PROXY_CONNECT_MS);
			if (rc == 0)
				rc = -ETIMEDOUT;
			else if (rc > 0)
				rc = getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 ? -errno
				     : soerr ? -soerr : 0;
		}
	}
	if (rc == 0)
		rc = tune_socket(fd);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

/* HOST:PORT or [V6]:PORT (names resolved) into sa. */
static int resolve(const char *hostport, struct sockaddr_storage *sa, socklen_t *len,
		   struct ltfs_err *err)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	int rc;

	if (!colon || colon == hostport || !colon[1] || (size_t)(colon - hostport) >= sizeof(host))
		return ltfs_err_set(err, LTFS_E_CONFIG, "'%s': want HOST:PORT", hostport);
	snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	rc = getaddrinfo(host, colon + 1, &hints, &ai);
	if (rc != 0 || !ai)
		return ltfs_err_set(err, LTFS_E_CONFIG, "'%s': cannot resolve: %s", hostport,
				    gai_strerror(rc));
	memcpy(sa, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

/* ---- patterns ---------------------------------------------------------------- */

static bool path_matches(char *const *pats, size_t n, const char *target)
{
	char path[PROXY_HEAD_MAX];
	size_t len = strcspn(target, "?#");

	if (len >= sizeof(path))
		return false;
	memcpy(path, target, len);
	path[len] = '\0';
	for (size_t i = 0; i < n; i++)
		if (http1_glob_match(pats[i], path))
			return true;
	return false;
}

/* ---- answers of the proxy itself ------------------------------------------- */

static const char *reason_of(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Content Too Large";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

/* A short text answer; the connection stays open only with keep. */
static int answer(struct pconn *pc, int status, bool keep, const char *fmt, ...)
	LTFS_PRINTF(4, 5);
static int answer(struct pconn *pc, int status, bool keep, const char *fmt, ...)
{
	char body[1024], head[512];
	va_list ap;
	int n, h;

	va_start(ap, fmt);
	n = vsnprintf(body, sizeof(body) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(body) - 2)
		n = (int)sizeof(body) - 2;
	body[n++] = '\n';
	if (!keep)
		pc->close_after = true;
	h = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
		     "Content-Length: %d\r\nVia: 1.1 ltfs\r\n%s%s\r\n",
		     status, reason_of(status), n,
		     status == 503 ? "Retry-After: 1\r\n" : "",
		     pc->close_after ? "Connection: close\r\n" : "");
	if (status >= 500)
		__atomic_add_fetch(&pc->p->n_errors, 1, __ATOMIC_RELAXED);
	if (status == 502 || status == 503 || status == 504) {
		/* trouble upstream: logged, but once a second at most, as a
		 * primary that is down would otherwise log every request */
		struct cl_proxy *p = pc->p;
		int64_t now = cl_mono_ms(), last = __atomic_load_n(&p->warned_at, __ATOMIC_RELAXED);

		if (now - last >= 1000 &&
		    __atomic_compare_exchange_n(&p->warned_at, &last, now, false, __ATOMIC_RELAXED,
						__ATOMIC_RELAXED)) {
			uint64_t more = __atomic_exchange_n(&p->unwarned, 0, __ATOMIC_RELAXED);

			char also[64] = "";

			if (more)
				snprintf(also, sizeof(also), " (and %llu more since the last warning)",
					 (unsigned long long)more);
			ltfs_warn(p->c->log, "proxy", "%d for %s: %.*s%s", status, pc->peer, n - 1, body,
				  also);
		} else {
			__atomic_add_fetch(&p->unwarned, 1, __ATOMIC_RELAXED);
		}
	}
	if (send_all(pc->p, pc->cfd, head, (size_t)h, pc->p->timeout_ms) < 0 ||
	    (!pc->head_req && send_all(pc->p, pc->cfd, body, (size_t)n, pc->p->timeout_ms) < 0)) {
		pc->close_after = true;
		return -EIO;
	}
	return 0;
}

static int serve_health(struct pconn *pc)
{
	struct cl_proxy *p = pc->p;
	int64_t lag;

	if (cl_is_primary(p->c))
		return answer(pc, 200, true, "ok: primary");
	lag = fs_lag_ms(p->c->fs);
	if (lag >= INT32_MAX)
		return answer(pc, 503, true, "not ready: replica has not caught up with a primary yet");
	if (lag > (int64_t)p->max_lag_ms)
		return answer(pc, 503, true, "lagging: replica %lld ms behind the primary (max-lag %u ms)",
			      (long long)lag, p->max_lag_ms);
	return answer(pc, 200, true, "ok: replica, lag %lld ms", (long long)lag);
}

/* ---- the primary's proxy ----------------------------------------------------- */

/*
 * The proxy URL of the primary, from its /v1/info (cached per primary URL
 * for PROXY_INFO_TTL_MS; `refresh` asks again). 0 with *out and its
 * address; -ENOENT when no primary is known or it has no proxy; -EIO when
 * its info cannot be had. why gets the reason.
 */
static int primary_proxy(struct cl_proxy *p, bool refresh, struct sockaddr_storage *sa,
			 socklen_t *len, char out[URL_MAX], char *why, size_t whylen)
{
	struct cluster *c = p->c;
	char http[URL_MAX], url[URL_MAX + 16];
	struct ltfs_buf b;
	struct ltfs_err err = { 0 };
	json_t *o = NULL;
	const char *role, *purl;
	long status = 0;
	int rc;

	pthread_mutex_lock(&c->mu);
	snprintf(http, sizeof(http), "%s", c->replica_of);
	pthread_mutex_unlock(&c->mu);
	if (!http[0]) {
		snprintf(why, whylen, "no primary is known to this node");
		return -ENOENT;
	}
	pthread_mutex_lock(&p->info_mu);
	pthread_mutex_lock(&p->mu);
	if (!refresh && p->info_at && strcmp(p->info_for, http) == 0 &&
	    cl_mono_ms() - p->info_at < PROXY_INFO_TTL_MS) {
		snprintf(out, URL_MAX, "%s", p->primary_proxy);
		*sa = p->primary_sa;
		*len = p->primary_len;
		pthread_mutex_unlock(&p->mu);
		pthread_mutex_unlock(&p->info_mu);
		return 0;
	}
	p->info_at = 0;
	pthread_mutex_unlock(&p->mu);

	snprintf(url, sizeof(url), "%s/v1/info", http);
	ltfs_buf_init(&b, 4u << 20);
	rc = cl_http_get_within(url, c->token, &b, &status, 2000, &err);
	if (rc == 0 && status == 200)
		o = json_loadb((const char *)b.data, b.len, 0, NULL);
	ltfs_buf_release(&b);
	role = o ? json_string_value(json_object_get(o, "role")) : NULL;
	purl = o ? json_string_value(json_object_get(o, "proxy_url")) : NULL;
	if (rc < 0 || status != 200 || !o) {
		snprintf(why, whylen, "the primary %s does not answer /v1/info: %s", http,
			 rc < 0 ? err.msg : status != 200 ? "HTTP error" : "not JSON");
		rc = -EIO;
	} else if (!role || strcmp(role, "primary") != 0) {
		snprintf(why, whylen, "%s is no longer the primary", http);
		rc = -ENOENT;
	} else if (!purl || strncmp(purl, "http://", 7) != 0 || strlen(purl) >= URL_MAX) {
		snprintf(why, whylen, "the primary %s runs no proxy (no proxy_url in its /v1/info)",
			 http);
		rc = -ENOENT;
	} else {
		char hostport[URL_MAX];

		snprintf(hostport, sizeof(hostport), "%.*s", (int)strcspn(purl + 7, "/"), purl + 7);
		rc = resolve(hostport, sa, len, &err);
		if (rc < 0) {
			snprintf(why, whylen, "the primary's proxy_url %s: %s", purl, err.msg);
			rc = -EIO;
		} else {
			snprintf(out, URL_MAX, "%s", purl);
			pthread_mutex_lock(&p->mu);
			snprintf(p->info_for, sizeof(p->info_for), "%s", http);
			snprintf(p->primary_proxy, sizeof(p->primary_proxy), "%s", purl);
			p->primary_sa = *sa;
			p->primary_len = *len;
			p->info_at = cl_mono_ms();
			pthread_mutex_unlock(&p->mu);
		}
	}
	json_decref(o);
	pthread_mutex_unlock(&p->info_mu);
	return rc;
}

/* ---- bodies ------------------------------------------------------------------ */

/* The next `left` bytes from src (buffer b, socket sfd) to dfd (-1: drop). */
static int copy_n(struct cl_proxy *p, int sfd, struct sbuf *b, int dfd, uint64_t left, int64_t ms,
		  bool *sent)
{
	while (left > 0) {
		size_t k;
		int rc;

		if (b->len == 0) {
			ssize_t n = sb_fill(p, sfd, b, ms);

			if (n <= 0)
				return n == 0 ? -ECONNRESET : (int)n;
		}
		k = b->len < left ? b->len : (size_t)left;
		if (dfd >= 0 && (rc = send_all(p, dfd, b->d, k, ms)) < 0)
			return rc;
		*sent = true;
		sb_consume(b, k);
		left -= k;
	}
	return 0;
}

/* Until b starts with a whole line of chunk framing: its length, '\n'
 * included, or LTFS_E_CORRUPT past PROXY_CHUNK_LINE_MAX. */
static int need_line(struct cl_proxy *p, int sfd, struct sbuf *b, int64_t ms)
{
	uint8_t *nl;

	while (!(nl = memchr(b->d, '\n', b->len))) {
		ssize_t n;

		if (b->len > PROXY_CHUNK_LINE_MAX)
			return LTFS_E_CORRUPT;
		n = sb_fill(p, sfd, b, ms);
		if (n <= 0)
			return n == 0 ? -ECONNRESET : (int)n;
	}
	if ((size_t)(nl - b->d) + 1 > PROXY_CHUNK_LINE_MAX)
		return LTFS_E_CORRUPT;
	return (int)(nl - b->d) + 1;
}

/*
 * Copy a body framed as m says from src (buffer b, socket sfd) to dfd
 * (-1: drop it), verbatim. `max` bounds the payload (0 = no bound):
 * LTFS_E_LIMIT past it. *sent is set once a byte went to dfd.
 * close_delim: the body ends when src closes.
 * 0, or -errno / -ETIMEDOUT / LTFS_E_CORRUPT (bad chunk framing).
 */
static int copy_body(struct cl_proxy *p, int sfd, struct sbuf *b, int dfd, const struct http1_msg *m,
		     bool close_delim, uint64_t max, bool *sent)
{
	uint64_t left = m->has_len ? m->len : 0, total = 0;
	int64_t ms = p->timeout_ms;
	int rc;

	if (close_delim) {
		for (;;) {
			ssize_t n;

			if (b->len) {
				if (dfd >= 0 && (rc = send_all(p, dfd, b->d, b->len, ms)) < 0)
					return rc;
				*sent = true;
				b->len = 0;
			}
			n = sb_fill(p, sfd, b, ms);
			if (n == 0)
				return 0;
			if (n < 0)
				return (int)n;
		}
	}
	if (!m->chunked) {
		if (max && left > max)
			return LTFS_E_LIMIT;
		return copy_n(p, sfd, b, dfd, left, ms, sent);
	}
	/* chunked: size line, data, CRLF ... 0 line, trailers, blank line */
	for (;;) {
		char line[PROXY_CHUNK_LINE_MAX + 1], *e;
		size_t ll;
		uint64_t size;
		bool last;

		if ((rc = need_line(p, sfd, b, ms)) < 0)
			return rc;
		ll = (size_t)rc;
		memcpy(line, b->d, ll);
		line[ll] = '\0';
		errno = 0;
		size = strtoull(line, &e, 16);
		if (errno || e == line || !strchr("; \t\r\n", *e) ||
		    strspn(line, "0123456789abcdefABCDEF") > 15)
			return LTFS_E_CORRUPT;
		total += size;
		if (max && total > max)
			return LTFS_E_LIMIT;
		last = size == 0;
		if (dfd >= 0 && (rc = send_all(p, dfd, b->d, ll, ms)) < 0)
			return rc;
		*sent = true;
		sb_consume(b, ll);
		if (last) { /* trailers up to the blank line, each passed on */
			for (int lines = 0; lines < HTTP1_HEADERS_MAX; lines++) {
				bool blank;

				if ((rc = need_line(p, sfd, b, ms)) < 0)
					return rc;
				ll = (size_t)rc;
				blank = ll == 1 || (ll == 2 && b->d[0] == '\r');
				if (dfd >= 0 && (rc = send_all(p, dfd, b->d, ll, ms)) < 0)
					return rc;
				sb_consume(b, ll);
				if (blank)
					return 0;
			}
			return LTFS_E_CORRUPT;
		}
		/* the chunk's data, then its CRLF */
		if ((rc = copy_n(p, sfd, b, dfd, size, ms, sent)) < 0)
			return rc;
		while (b->len < 2) {
			ssize_t n = sb_fill(p, sfd, b, ms);

			if (n <= 0)
				return n == 0 ? -ECONNRESET : (int)n;
			if (b->len == 1 && b->d[0] == '\n')
				break;
		}
		ll = b->d[0] == '\n' ? 1 : (b->d[0] == '\r' && b->d[1] == '\n') ? 2 : 0;
		if (!ll)
			return LTFS_E_CORRUPT;
		if (dfd >= 0 && (rc = send_all(p, dfd, b->d, ll, ms)) < 0)
			return rc;
		sb_consume(b, ll);
	}
}

/* ---- one exchange -------------------------------------------------------------- */

/* Both directions of an upgraded connection until either side closes. */
static void tunnel(struct pconn *pc)
{
	struct cl_proxy *p = pc->p;
	int fds[2] = { pc->cfd, pc->ufd };
	bool open_in[2] = { true, true };
	uint8_t buf[PROXY_IO];
	int64_t last = cl_mono_ms();

	/* what either side sent along with its head */
	if ((pc->uin.len && send_all(p, pc->cfd, pc->uin.d, pc->uin.len, p->timeout_ms) < 0) ||
	    (pc->cin.len && send_all(p, pc->ufd, pc->cin.d, pc->cin.len, p->timeout_ms) < 0))
		return;
	pc->uin.len = pc->cin.len = 0;
	while ((open_in[0] || open_in[1]) && !stopping(p) &&
	       cl_mono_ms() - last < PROXY_TUNNEL_IDLE_MS) {
		struct pollfd pf[2] = { { .fd = open_in[0] ? fds[0] : -1, .events = POLLIN },
					{ .fd = open_in[1] ? fds[1] : -1, .events = POLLIN } };
		int n = poll(pf, 2, PROXY_SLICE_MS);

		if (n < 0 && errno != EINTR)
			return;
		for (int i = 0; i < 2 && n > 0; i++) {
			ssize_t k;

			if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			k = recv(fds[i], buf, sizeof(buf), 0);
			if (k < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (k <= 0) {
				/* one side is done sending: tell the other, let it finish */
				open_in[i] = false;
				shutdown(fds[1 - i], SHUT_WR);
				if (k < 0)
					return;
				continue;
			}
			last = cl_mono_ms();
			if (send_all(p, fds[1 - i], buf, (size_t)k, p->timeout_ms) < 0)
				return;
		}
	}
}

static void drop_upstream(struct pconn *pc)
{
	if (pc->ufd >= 0)
		close(pc->ufd);
	pc->ufd = -1;
	pc->uin.len = 0;
	pc->ukey[0] = '\0';
}

/*
 * Is the kept upstream connection still usable (no EOF, nothing unasked)?
 * Servers close idle connections after seconds, not within a second: a
 * connection used that recently skips the check, a system call per
 * request saved on a busy one.
 */
static bool upstream_fresh(struct pconn *pc, bool idem)
{
	struct pollfd pf = { .fd = pc->ufd, .events = POLLIN };

	if (pc->uin.len)
		return false;
	if (idem && cl_mono_ms() - pc->ufd_used < 1000)
		return true; /* a failure is retried on a new connection anyway */
	return poll(&pf, 1, 0) == 0;
}

/* The strings up to NULL, appended: heads are built per request, and a
 * printf per header was a tenth of the proxy's time. */
static int cat(struct ltfs_buf *o, ...)
{
	va_list ap;
	const char *s;
	int rc = 0;

	va_start(ap, o);
	while (rc == 0 && (s = va_arg(ap, const char *)) != NULL)
		rc = ltfs_buf_append(o, s, strlen(s));
	va_end(ap);
	return rc;
}

/* "NAME: " every earlier value of NAME in m, then last. */
static int joined(struct ltfs_buf *o, const struct http1_msg *m, const char *name, const char *last)
{
	int rc = cat(o, name, ": ", NULL);

	for (size_t i = 0; rc == 0 && i < m->nh; i++)
		if (strcasecmp(m->h[i].name, name) == 0)
			rc = cat(o, m->h[i].val, ", ", NULL);
	return rc == 0 ? cat(o, last, "\r\n", NULL) : rc;
}

/* The end-to-end headers of m, then Via (and X-Forwarded-For when peer
 * is given) with this hop added to what the earlier hops wrote. */
static int pass_headers(struct ltfs_buf *o, const struct http1_msg *m, const char *peer)
{
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < m->nh; i++) {
		const char *n = m->h[i].name;

		if (http1_hop_header(m, n) || strcasecmp(n, "Via") == 0 ||
		    (peer && strcasecmp(n, "X-Forwarded-For") == 0))
			continue;
		rc = cat(o, n, ": ", m->h[i].val, "\r\n", NULL);
	}
	if (rc == 0 && peer)
		rc = joined(o, m, "X-Forwarded-For", peer);
	if (rc == 0)
		rc = joined(o, m, "Via", m->http10 ? "1.0 ltfs" : "1.1 ltfs");
	return rc;
}

/* The request head, rewritten for the upstream, into pc->out. */
static int build_request(struct pconn *pc, bool upgrade, bool forward)
{
	struct http1_msg *m = &pc->req;
	struct ltfs_buf *o = &pc->out;
	int rc;

	ltfs_buf_reset(o);
	rc = cat(o, m->method, " ", m->target, " HTTP/1.1\r\n", NULL);
	if (rc == 0)
		rc = pass_headers(o, m, pc->peer);
	if (rc == 0 && !http1_get(m, "X-Forwarded-Proto"))
		rc = cat(o, "X-Forwarded-Proto: http\r\n", NULL);
	if (rc == 0 && forward) {
		char node[17];

		cl_hex16(fs_node_id(pc->p->c->fs), node);
		rc = cat(o, "Ltfs-Forwarded: ", node, "\r\n", NULL);
	}
	if (rc == 0 && upgrade)
		rc = cat(o, "Connection: Upgrade\r\nUpgrade: ", http1_get(m, "Upgrade"), "\r\n", NULL);
	if (rc == 0)
		rc = cat(o, upgrade ? "" : "Connection: keep-alive\r\n", "\r\n", NULL);
	return rc;
}

/* The response head for the client into pc->out. */
static int build_response(struct pconn *pc, bool upgrade, bool has_cookie, uint64_t txid)
{
	struct http1_msg *m = &pc->resp;
	struct ltfs_buf *o = &pc->out;
	int rc;

	ltfs_buf_reset(o);
	rc = ltfs_buf_printf(o, "HTTP/1.1 %d %s\r\n", m->status, m->reason);
	if (rc == 0)
		rc = pass_headers(o, m, NULL);
	if (rc == 0 && has_cookie) {
		char hex[17];

		cl_hex16(txid, hex);
		rc = ltfs_buf_printf(o, "Set-Cookie: __txid=%s; Path=/; HttpOnly; Max-Age=%d\r\n", hex,
				     PROXY_COOKIE_AGE_S);
	}
	if (rc == 0 && upgrade)
		rc = ltfs_buf_printf(o, "Connection: Upgrade\r\nUpgrade: %s\r\n",
				     http1_get(m, "Upgrade") ? http1_get(m, "Upgrade") : "websocket");
	else if (rc == 0 && pc->close_after)
		rc = cat(o, "Connection: close\r\n", NULL);
	if (rc == 0)
		rc = cat(o, "\r\n", NULL);
	return rc;
}

/* Read a response head from the upstream into pc->resp: 0, or < 0 with
 * *got_any set if any byte of it came. */
static int read_response_head(struct pconn *pc, bool *got_any, const char **why)
{
	struct cl_proxy *p = pc->p;
	size_t end, from = 0;

	*got_any = pc->uin.len > 0;
	while (!(end = http1_head_end(pc->uin.d, pc->uin.len, from))) {
		ssize_t n;

		from = pc->uin.len > 2 ? pc->uin.len - 2 : 0;
		if (pc->uin.len >= PROXY_HEAD_MAX) {
			*why = "response head over 64 KiB";
			return LTFS_E_LIMIT;
		}
		n = sb_fill(p, pc->ufd, &pc->uin, p->timeout_ms);
		if (n == 0) {
			*why = "connection closed before a response";
			return -ECONNRESET;
		}
		if (n < 0) {
			*why = n == -ETIMEDOUT ? "no response within proxy.timeout" : "connection lost";
			return (int)n;
		}
		*got_any = true;
	}
	memcpy(pc->resp.raw, pc->uin.d, end);
	sb_consume(&pc->uin, end);
	if (http1_parse_head(&pc->resp, end, true, why) != 0)
		return LTFS_E_CORRUPT;
	return 0;
}

/*
 * Pass the request in pc->req (its body still in pc->cin) to the app or
 * the primary's proxy, and the answer back. Returns 0 when the client
 * connection may go on, < 0 when it must close.
 */
static int exchange(struct pconn *pc, enum route route, bool set_cookie)
{
	struct cl_proxy *p = pc->p;
	struct http1_msg *rq = &pc->req, *rs = &pc->resp;
	struct sockaddr_storage sa;
	socklen_t salen;
	char key[URL_MAX] = "", why[URL_MAX + 256];
	const char *what = route == ROUTE_APP ? "the app" : "the primary's proxy";
	uint64_t *count = route == ROUTE_APP ? &p->n_local : &p->n_forwarded;
	bool idem = strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0;
	bool has_body = rq->chunked || (rq->has_len && rq->len > 0);
	bool upgrade = rq->conn_upgrade && !has_body;
	bool head = strcmp(rq->method, "HEAD") == 0;
	bool close_delim, up_keep;
	int rc = 0, tries;

	__atomic_add_fetch(count, 1, __ATOMIC_RELAXED);
	if (rq->has_len && rq->len > p->max_body)
		return answer(pc, 413, false, "request body of %llu bytes over proxy.max-body (%llu)",
			      (unsigned long long)rq->len, (unsigned long long)p->max_body);
	if (route == ROUTE_PRIMARY) {
		rc = primary_proxy(p, false, &sa, &salen, key, why, sizeof(why));
		if (rc < 0)
			return answer(pc, 503, !has_body, "cannot forward the write: %s", why);
	} else {
		sa = p->app;
		salen = p->app_len;
	}
	if (pc->ufd >= 0 && (strcmp(pc->ukey, key) != 0 || !upstream_fresh(pc, idem && !has_body)))
		drop_upstream(pc);
	if (build_request(pc, upgrade, route == ROUTE_PRIMARY) < 0)
		return answer(pc, 500, false, "out of memory");
	if (rq->has_len && !rq->chunked && rq->len > 0 && pc->cin.len &&
	    !http1_list_has(http1_get(rq, "Expect"), "100-continue")) {
		/* a small body that came with the head goes with it (fewer sends) */
		size_t k = pc->cin.len < rq->len ? pc->cin.len : (size_t)rq->len;

		if (ltfs_buf_append(&pc->out, pc->cin.d, k) < 0)
			return answer(pc, 500, false, "out of memory");
		sb_consume(&pc->cin, k);
		rq->len -= k;
	}

	/*
	 * Connect, send the head and the body, read the response head. A try
	 * is repeated only when the upstream cannot have acted on it: the
	 * connection was refused, or a kept connection the upstream had
	 * closed failed a request without a body before any answer.
	 */
	for (tries = 0;; tries++) {
		bool reused = pc->ufd >= 0, got_any = false;
		const char *rwhy = "";

		if (!reused) {
			rc = dial(p, &sa, salen, &pc->ufd);
			if (rc < 0) {
				pc->ufd = -1;
				if (route == ROUTE_PRIMARY && rc == -ECONNREFUSED && tries < 2 &&
				    !stopping(p)) {
					/* the primary moved or restarts: ask again */
					struct timespec ts = { 0, 200 * 1000000L };

					nanosleep(&ts, NULL);
					if (primary_proxy(p, true, &sa, &salen, key, why, sizeof(why)) < 0)
						return answer(pc, 503, !has_body,
							      "cannot forward the write: %s", why);
					continue;
				}
				return answer(pc, route == ROUTE_PRIMARY ? 503 : 502, false,
					      "cannot connect to %s (%s): %s", what,
					      route == ROUTE_APP ? p->target : key, strerror(-rc));
			}
			snprintf(pc->ukey, sizeof(pc->ukey), "%s", key);
		}
		rc = send_all(p, pc->ufd, pc->out.data, pc->out.len, p->timeout_ms);
		if (rc < 0) {
			drop_upstream(pc);
			if (reused && !has_body && tries < 2)
				continue;
			return answer(pc, 502, false, "%s (%s) failed while sending: %s", what,
				      route == ROUTE_APP ? p->target : key, strerror(-rc));
		}
		if (has_body) {
			bool body_sent = false;

			if (http1_list_has(http1_get(rq, "Expect"), "100-continue") &&
			    send_all(p, pc->cfd, "HTTP/1.1 100 Continue\r\n\r\n", 25,
				     p->timeout_ms) < 0) {
				drop_upstream(pc);
				return -EIO;
			}
			rc = copy_body(p, pc->cfd, &pc->cin, pc->ufd, rq, false, p->max_body,
				       &body_sent);
			if (rc == LTFS_E_LIMIT) {
				drop_upstream(pc);
				return answer(pc, 413, false,
					      "request body over proxy.max-body (%llu bytes)",
					      (unsigned long long)p->max_body);
			}
			if (rc == LTFS_E_CORRUPT) {
				drop_upstream(pc);
				return answer(pc, 400, false, "malformed chunked request body");
			}
			if (rc < 0) {
				drop_upstream(pc);
				return answer(pc, 502, false, "request body not delivered to %s: %s",
					      what, ltfs_strerror(rc));
			}
		}
		/* the response head (a 1xx other than 101 is dropped: Expect was ours) */
		for (int interim = 0; interim < 8; interim++) {
			rc = read_response_head(pc, &got_any, &rwhy);
			if (rc < 0 || rs->status >= 200 || rs->status == 101)
				break;
			rc = LTFS_E_LIMIT;
			rwhy = "too many interim responses";
		}
		if (rc == 0)
			break;
		drop_upstream(pc);
		if (rc == -ECANCELED)
			return rc;
		if (rc == -ECONNRESET && reused && !got_any && !has_body && idem && tries < 2)
			continue;
		if (rc == -ETIMEDOUT)
			return answer(pc, 504, false, "%s did not answer within %u ms", what,
				      p->timeout_ms);
		return answer(pc, 502, false, "%s (%s): %s", what,
			      route == ROUTE_APP ? p->target : key, rwhy);
	}

	if (rs->status == 101) {
		if (!upgrade) {
			drop_upstream(pc);
			return answer(pc, 502, false, "%s switched protocols unasked", what);
		}
		pc->close_after = true;
		if (build_response(pc, true, false, 0) < 0 ||
		    send_all(p, pc->cfd, pc->out.data, pc->out.len, p->timeout_ms) < 0) {
			drop_upstream(pc);
			return -EIO;
		}
		tunnel(pc);
		drop_upstream(pc);
		return -ECONNRESET; /* the client connection was the tunnel's */
	}

	{
		uint64_t txid = 0, sum;
		bool cookie = set_cookie && p->db[0] &&
			      fs_db_position(p->c->fs, p->db, &txid, &sum) == 0 && txid > 0;
		bool no_body = head || rs->status == 204 || rs->status == 304;

		close_delim = !no_body && !rs->chunked && !rs->has_len;
		up_keep = !close_delim && !rs->conn_close && !rs->http10;
		if (close_delim || rq->conn_close || rq->http10 || upgrade)
			pc->close_after = true;
		if (build_response(pc, false, cookie, txid) < 0) {
			drop_upstream(pc);
			return answer(pc, 500, false, "out of memory");
		}
		if (!no_body && rs->has_len && !rs->chunked && pc->uin.len) {
			/* what of a sized body came with the head goes in the same
			 * send: one wake-up of the client instead of two */
			size_t k = pc->uin.len < rs->len ? pc->uin.len : (size_t)rs->len;

			rc = ltfs_buf_append(&pc->out, pc->uin.d, k);
			if (rc < 0) {
				drop_upstream(pc);
				return answer(pc, 500, false, "out of memory");
			}
			sb_consume(&pc->uin, k);
			rs->len -= k;
		}
		rc = send_all(p, pc->cfd, pc->out.data, pc->out.len, p->timeout_ms);
		if (rc == 0 && !no_body) {
			bool any = false;

			/* the client gone or the upstream gone mid-body: the head is out,
			 * so the only honest signal left is to close */
			rc = copy_body(p, pc->ufd, &pc->uin, pc->cfd, rs, close_delim, 0, &any);
		}
		if (rc < 0 || !up_keep)
			drop_upstream(pc);
		else
			pc->ufd_used = cl_mono_ms();
		if (rc < 0) {
			pc->close_after = true;
			return rc;
		}
	}
	return pc->close_after ? -ECONNRESET : 0;
}

/* Wait until this node has applied TXID want of proxy.db: 0, or -ETIMEDOUT
 * with *have the TXID it got to. */
static int wait_txid(struct cl_proxy *p, uint64_t want, uint64_t *have)
{
	int64_t end = cl_mono_ms() + p->wait_ms;

	for (;;) {
		uint64_t txid = 0, sum;
		struct timespec ts = { 0, 1000000L };

		if (fs_db_position(p->c->fs, p->db, &txid, &sum) < 0)
			txid = 0;
		*have = txid;
		if (txid >= want)
			return 0;
		if (stopping(p))
			return -ECANCELED;
		if (cl_mono_ms() >= end)
			return -ETIMEDOUT;
		nanosleep(&ts, NULL);
	}
}

/* One request from the client: 0 to go on with the connection, < 0 to close. */
static int serve_one(struct pconn *pc, bool first)
{
	struct cl_proxy *p = pc->p;
	struct http1_msg *rq = &pc->req;
	size_t end, from = 0;
	int64_t deadline = 0;
	const char *why = "";
	bool get, has_body;
	int status;

	pc->head_req = false;
	/* the head: idle up to PROXY_IDLE_MS for its first byte, then
	 * PROXY_HEAD_MS for the rest */
	while (!(end = http1_head_end(pc->cin.d, pc->cin.len, from))) {
		int64_t now = cl_mono_ms(), ms;
		ssize_t n;

		from = pc->cin.len > 2 ? pc->cin.len - 2 : 0;
		if (pc->cin.len >= PROXY_HEAD_MAX)
			return answer(pc, 431, false, "request head over %u KiB", PROXY_HEAD_MAX / 1024);
		if (pc->cin.len && !deadline)
			deadline = now + PROXY_HEAD_MS;
		ms = deadline ? deadline - now : first ? PROXY_HEAD_MS : PROXY_IDLE_MS;
		if (ms <= 0)
			return answer(pc, 400, false, "request head incomplete after %d s",
				      PROXY_HEAD_MS / 1000);
		n = sb_fill(p, pc->cfd, &pc->cin, ms);
		if (n == -ETIMEDOUT && deadline)
			continue; /* the check above answers */
		if (n <= 0)
			return -ECONNRESET; /* idle, closed or stopping: no answer due */
	}
	memcpy(rq->raw, pc->cin.d, end);
	sb_consume(&pc->cin, end);
	status = http1_parse_head(rq, end, false, &why);
	if (status)
		return answer(pc, status, false, "%s", why);
	pc->head_req = strcmp(rq->method, "HEAD") == 0;
	pc->close_after = rq->conn_close || rq->http10;

	get = strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0;
	has_body = rq->chunked || (rq->has_len && rq->len > 0);
	if (strcmp(rq->target, "/ltfs/health") == 0 ||
	    strncmp(rq->target, "/ltfs/health?", 13) == 0) {
		if (!get)
			return answer(pc, 405, !has_body, "use GET");
		return serve_health(pc);
	}
	if (path_matches(p->pass, p->npass, rq->target))
		return exchange(pc, ROUTE_APP, false);
	if (get && !path_matches(p->fwd, p->nfwd, rq->target)) {
		uint64_t want = p->db[0] ? http1_cookie_txid(rq) : 0, have = 0;

		if (want && !cl_is_primary(p->c)) {
			int rc = wait_txid(p, want, &have);

			if (rc == -ECANCELED)
				return rc;
			if (rc < 0)
				return answer(pc, 504, !has_body,
					      "this replica has not applied TXID %llu of '%s' after %u ms "
					      "(it is at %llu): retry, or read from the primary",
					      (unsigned long long)want, p->db, p->wait_ms,
					      (unsigned long long)have);
		}
		return exchange(pc, ROUTE_APP, false);
	}
	/* a write */
	if (cl_is_primary(p->c))
		return exchange(pc, ROUTE_APP, true);
	if (http1_get(rq, "Ltfs-Forwarded"))
		/* forwarded to us as the primary, but we are not (any more): a
		 * second hop could loop, so the client retries instead */
		return answer(pc, 503, !has_body, "forwarded write reached a node that is no longer "
						  "the primary");
	return exchange(pc, ROUTE_PRIMARY, false);
}

/*
 * Before closing: stop sending, and read what the client still sends for
 * a moment. Closing with unread bytes makes the kernel reset the
 * connection, which can destroy the answer (a 413 or 431) before the
 * client has read it.
 */
static void linger(struct pconn *pc)
{
	int64_t end = cl_mono_ms() + 1000;
	size_t total = 0;

	if (shutdown(pc->cfd, SHUT_WR) < 0)
		return;
	while (total < (4u << 20) && !stopping(pc->p)) {
		int64_t left = end - cl_mono_ms();
		ssize_t n;

		if (left <= 0)
			return;
		pc->cin.len = 0;
		n = sb_fill(pc->p, pc->cfd, &pc->cin, left);
		if (n <= 0)
			return;
		total += (size_t)n;
	}
}

struct conn_arg {
	struct cl_proxy *p;
	int fd;
	struct sockaddr_storage sa;
};

static void *conn_main(void *arg)
{
	struct conn_arg *ca = arg;
	struct cl_proxy *p = ca->p;
	struct pconn *pc = calloc(1, sizeof(*pc));

	pthread_setname_np(pthread_self(), "proxy-conn");
	if (pc) {
		pc->p = p;
		pc->cfd = ca->fd;
		pc->ufd = -1;
		ltfs_buf_init(&pc->out, PROXY_HEAD_MAX + 4096);
		pc->cin.cap = pc->uin.cap = PROXY_HEAD_MAX;
		pc->cin.d = malloc(pc->cin.cap);
		pc->uin.d = malloc(pc->uin.cap);
		if (ca->sa.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ca->sa)->sin6_addr, pc->peer,
				  sizeof(pc->peer));
		else
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ca->sa)->sin_addr, pc->peer,
				  sizeof(pc->peer));
		if (pc->cin.d && pc->uin.d) {
			for (int i = 0; i < PROXY_REQUESTS_MAX && !stopping(p); i++)
				if (serve_one(pc, i == 0) < 0 || pc->close_after)
					break;
		}
		drop_upstream(pc);
		linger(pc);
		free(pc->cin.d);
		free(pc->uin.d);
		ltfs_buf_release(&pc->out);
		free(pc);
	}
	close(ca->fd);
	free(ca);
	pthread_mutex_lock(&p->mu);
	p->active--;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Over the connection bound: one short answer, then close. */
static void refuse(int fd)
{
	static const char msg[] = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
				  "Content-Length: 33\r\nConnection: close\r\n\r\n"
				  "ltfs proxy: too many connections\n";

	if (send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* nothing more to do for a client we cannot take */
	}
	close(fd);
}

static void *accept_main(void *arg)
{
	struct cl_proxy *p = arg;

	pthread_setname_np(pthread_self(), "proxy");
	while (!stopping(p)) {
		struct pollfd pf = { .fd = p->lfd, .events = POLLIN };
		struct conn_arg *ca;
		struct sockaddr_storage sa;
		socklen_t sl = sizeof(sa);
		pthread_attr_t attr;
		pthread_t t;
		int fd;

		if (poll(&pf, 1, PROXY_SLICE_MS) <= 0)
			continue;
		fd = accept4(p->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE) {
				struct timespec ts = { 0, 50 * 1000000L };

				nanosleep(&ts, NULL); /* let connections end rather than spin */
			}
			continue;
		}
		if (tune_socket(fd) < 0) {
			close(fd);
			continue;
		}
		pthread_mutex_lock(&p->mu);
		if (p->active >= PROXY_CONNS_MAX) {
			pthread_mutex_unlock(&p->mu);
			refuse(fd);
			continue;
		}
		p->active++;
		pthread_mutex_unlock(&p->mu);
		ca = calloc(1, sizeof(*ca));
		if (ca) {
			ca->p = p;
			ca->fd = fd;
			ca->sa = sa;
		}
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 512u * 1024); /* two heads live on the heap */
		if (!ca || pthread_create(&t, &attr, conn_main, ca) != 0) {
			free(ca);
			refuse(fd);
			pthread_mutex_lock(&p->mu);
			p->active--;
			pthread_mutex_unlock(&p->mu);
		}
		pthread_attr_destroy(&attr);
	}
	return NULL;
}

/* ---- start and stop ----------------------------------------------------------- */

static int copy_patterns(char ***out, size_t *n, const char *const *src, size_t count,
			 const char *key, struct ltfs_err *err)
{
	*out = NULL;
	*n = 0;
	if (count == 0)
		return 0;
	if (count > PROXY_PATTERNS_MAX)
		return ltfs_err_set(err, LTFS_E_CONFIG, "proxy.%s: at most %d patterns", key,
				    PROXY_PATTERNS_MAX);
	*out = calloc(count, sizeof(char *));
	if (!*out)
		return ltfs_err_set(err, -ENOMEM, NULL);
	for (size_t i = 0; i < count; i++) {
		if (!src[i] || src[i][0] != '/' || strlen(src[i]) > PROXY_PATTERN_LEN)
			return ltfs_err_set(err, LTFS_E_CONFIG,
					    "proxy.%s: pattern '%s' must start with / and be at most %d bytes",
					    key, src[i] ? src[i] : "", PROXY_PATTERN_LEN);
		(*out)[i] = strdup(src[i]);
		if (!(*out)[i])
			return ltfs_err_set(err, -ENOMEM, NULL);
		*n = i + 1;
	}
	return 0;
}

static void free_patterns(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void proxy_free(struct cl_proxy *p)
{
	if (p->lfd >= 0)
		close(p->lfd);
	free_patterns(p->fwd, p->nfwd);
	free_patterns(p->pass, p->npass);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	pthread_mutex_destroy(&p->info_mu);
	free(p);
}

static int listen_on(struct cl_proxy *p, struct ltfs_err *err)
{
	struct sockaddr_storage sa;
	socklen_t len;
	int one = 1, rc = resolve(p->addr, &sa, &len, err);

	if (rc < 0) {
		ltfs_err_prefix(err, "proxy.addr");
		return rc;
	}
	p->lfd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->lfd < 0)
		return ltfs_err_set(err, -errno, "proxy: socket: %s", strerror(errno));
	setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(p->lfd, (struct sockaddr *)&sa, len) < 0 || listen(p->lfd, 512) < 0)
		return ltfs_err_set(err, -errno, "proxy: cannot listen on '%s': %s", p->addr,
				    strerror(errno));
	return 0;
}

int cl_proxy_start(struct cluster *c, const struct cluster_proxy_opts *o, struct ltfs_err *err)
{
	struct cl_proxy *p = calloc(1, sizeof(*p));
	int rc = 0;

	if (!p)
		return ltfs_err_set(err, -ENOMEM, NULL);
	p->c = c;
	p->lfd = -1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_mutex_init(&p->info_mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->max_lag_ms = o->max_lag_ms ? o->max_lag_ms : DEFAULT_MAX_LAG_MS;
	p->timeout_ms = o->timeout_ms ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
	p->wait_ms = o->wait_ms ? o->wait_ms : DEFAULT_WAIT_MS;
	p->max_body = o->max_body ? o->max_body : DEFAULT_MAX_BODY;
	if (!o->target || !o->target[0])
		rc = ltfs_err_set(err, LTFS_E_CONFIG,
				  "proxy.addr needs proxy.target (the app, HOST:PORT)");
	if (rc == 0 && (snprintf(p->addr, sizeof(p->addr), "%s", o->addr) >= (int)sizeof(p->addr) ||
			snprintf(p->target, sizeof(p->target), "%s", o->target) >= (int)sizeof(p->target) ||
			snprintf(p->db, sizeof(p->db), "%s", o->db ? o->db : "") >= (int)sizeof(p->db)))
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "proxy: addr, target or db too long");
	if (rc == 0 && p->db[0] && fs_db_name_check(p->db, err) < 0)
		rc = LTFS_E_CONFIG;
	if (rc == 0 && (rc = resolve(p->target, &p->app, &p->app_len, err)) < 0)
		ltfs_err_prefix(err, "proxy.target");
	if (rc == 0)
		rc = copy_patterns(&p->fwd, &p->nfwd, o->always_forward, o->n_always_forward,
				   "always-forward", err);
	if (rc == 0)
		rc = copy_patterns(&p->pass, &p->npass, o->passthrough, o->n_passthrough,
				   "passthrough", err);
	if (rc == 0)
		rc = listen_on(p, err);
	if (rc == 0 && pthread_create(&p->acceptor, NULL, accept_main, p) != 0)
		rc = ltfs_err_set(err, -EAGAIN, "proxy: cannot start its thread");
	if (rc < 0) {
		proxy_free(p);
		return rc;
	}
	p->started = true;
	pthread_mutex_lock(&c->mu);
	c->proxy = p;
	pthread_mutex_unlock(&c->mu);
	ltfs_info(c->log, "proxy", "listening on %s for the app at %s%s%s", p->addr, p->target,
		  p->db[0] ? ", read-your-writes on " : "", p->db);
	return 0;
}

void cl_proxy_stop(struct cluster *c)
{
	struct cl_proxy *p = c->proxy;
	bool left;

	if (!p)
		return;
	__atomic_store_n(&p->stopping, true, __ATOMIC_RELAXED);
	if (p->started)
		pthread_join(p->acceptor, NULL);
	/* every connection thread sees the flag within a poll slice */
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < 100 && p->active > 0; i++)
		cl_cond_wait_ms(&p->cv, &p->mu, 100);
	left = p->active > 0;
	pthread_mutex_unlock(&p->mu);
	pthread_mutex_lock(&c->mu); /* /metrics reads it under c->mu */
	c->proxy = NULL;
	pthread_mutex_unlock(&c->mu);
	if (left) {
		/* a thread stuck outside our polls (DNS, curl): leaking is safer
		 * than freeing what it uses */
		ltfs_warn(c->log, "proxy", "%u connections did not end in 10 s", p->active);
		return;
	}
	proxy_free(p);
}

int cl_proxy_metrics(struct cluster *c, struct ltfs_buf *b)
{
	struct cl_proxy *p;
	unsigned active;
	int rc = 0;

	pthread_mutex_lock(&c->mu);
	p = c->proxy;
	if (p) {
		pthread_mutex_lock(&p->mu);
		active = p->active;
		pthread_mutex_unlock(&p->mu);
		rc = ltfs_buf_printf(b,
			"# HELP ltfs_proxy_requests_total Requests the proxy passed on, by where to.\n"
			"# TYPE ltfs_proxy_requests_total counter\n"
			"ltfs_proxy_requests_total{to=\"app\"} %llu\n"
			"ltfs_proxy_requests_total{to=\"primary\"} %llu\n"
			"# HELP ltfs_proxy_errors_total Answers of 500 and above the proxy gave itself.\n"
			"# TYPE ltfs_proxy_errors_total counter\n"
			"ltfs_proxy_errors_total %llu\n"
			"# HELP ltfs_proxy_connections Client connections open.\n"
			"# TYPE ltfs_proxy_connections gauge\n"
			"ltfs_proxy_connections %u\n",
			(unsigned long long)__atomic_load_n(&p->n_local, __ATOMIC_RELAXED),
			(unsigned long long)__atomic_load_n(&p->n_forwarded, __ATOMIC_RELAXED),
			(unsigned long long)__atomic_load_n(&p->n_errors, __ATOMIC_RELAXED), active);
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}
