/*
 * s3.c - a small S3 client on libcurl: PUT (optionally conditional; in
 * parts above the part size), GET (ranged, or resumable into a file),
 * HEAD, DELETE and ListObjectsV2.
 *
 * libcurl signs (CURLOPT_AWS_SIGV4). What it leaves to us, and S3 insists
 * on: x-amz-content-sha256 on every request (curl 7.88 signs the value we
 * give and adds none itself), the key percent-encoded except unreserved
 * bytes and '/', and the query string sorted by name with every value
 * fully encoded, because curl signs the query exactly as written.
 *
 * One s3_conn wraps one curl handle, so consecutive requests of a thread
 * reuse its connection. Errors that may pass (5xx, 429, network) are
 * retried with full-jitter exponential backoff.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "cluster/cluster_int.h"

#define S3_URL_MAX (3 * S3_KEY_MAX + 1024)
#define S3_ERRBODY_MAX 8192
#define S3_LIST_PAGE_MAX (16u << 20)
#define S3_BIG_BODY (8u << 20)        /* no total timeout above this */
#define S3_RECV_BUFFER (128L << 10)   /* libcurl's receive buffer for downloads */
#define S3_PUT_MAX (5ull << 30)       /* S3's limit of one PUT, and of one part */
#define S3_PART_MIN (5ull << 20)      /* S3's smallest part but the last */
#define S3_PARTS_MAX 10000            /* S3's most parts of one object */
#define S3_PART_DEFAULT (4ull << 30)
#define S3_UPLOAD_ID_MAX 1024
#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 3000
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3 {
	char bucket[64];
	char prefix[S3_KEY_MAX];
	char endpoint[URL_MAX];   /* as configured, for messages */
	char base[URL_MAX + 80];  /* scheme://host[:port][/bucket], no slash */
	char sigv4[128];          /* aws:amz:REGION:s3 */
	char userpwd[512];        /* ACCESS:SECRET; never printed */
	char token_hdr[2048];     /* x-amz-security-token: ..., or "" */
	long timeout_ms;
	unsigned attempts;
	uint64_t part_size;       /* a bigger object goes up in parts of this */
};

struct s3_conn {
	struct s3 *s3;
	CURL *curl;
	uint64_t rng;
	uint64_t requests, retries;
	long status;
	char code[64];
	int64_t deadline_ms;      /* CLOCK_MONOTONIC ms; 0 = none */
};

/* ---- settings ------------------------------------------------------------ */

static const char *first_env(const char *a, const char *b)
{
	const char *v = getenv(a);

	if ((!v || !*v) && b)
		v = getenv(b);
	return v && *v ? v : NULL;
}

static int copy(char *dst, size_t n, const char *src, const char *what,
		struct ltfs_err *err)
{
	if ((size_t)snprintf(dst, n, "%s", src) >= n)
		return ltfs_err_set(err, LTFS_E_CONFIG, "%s is longer than %zu bytes", what, n - 1);
	return 0;
}

static int parse_url(struct s3 *s3, const char *url, struct ltfs_err *err)
{
	const char *b, *slash;
	size_t blen;

	if (!url || strncmp(url, "s3://", 5) != 0)
		return ltfs_err_set(err, LTFS_E_CONFIG, "s3 url '%s': want s3://BUCKET/PREFIX",
				    url ? url : "");
	b = url + 5;
	slash = strchr(b, '/');
	blen = slash ? (size_t)(slash - b) : strlen(b);
	if (blen < 3 || blen > 63)
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "s3 url '%s': bucket name must be 3 to 63 characters", url);
	for (size_t i = 0; i < blen; i++)
		if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') ||
		      b[i] == '-' || b[i] == '.'))
			return ltfs_err_set(err, LTFS_E_CONFIG,
					    "s3 url '%s': bucket name may hold only a-z, 0-9, '-' and '.'",
					    url);
	memcpy(s3->bucket, b, blen);
	s3->bucket[blen] = '\0';
	b = slash ? slash : b + blen;
	while (*b == '/')
		b++;
	if (copy(s3->prefix, sizeof(s3->prefix) - 256, b, "s3 prefix", err) < 0)
		return LTFS_E_CONFIG;
	for (size_t n = strlen(s3->prefix); n && s3->prefix[n - 1] == '/';)
		s3->prefix[--n] = '\0';
	return 0;
}

int s3_open(struct s3 **out, const struct s3_config *cfg, struct ltfs_err *err)
{
	struct s3 *s3 = calloc(1, sizeof(*s3));
	const char *ep, *region, *ak, *sk, *tok, *host;
	char scheme[8];
	int path_style, rc;

	*out = NULL;
	if (!s3)
		return ltfs_err_set(err, -ENOMEM, NULL);
	rc = parse_url(s3, cfg->url, err);
	if (rc < 0)
		goto fail;
	region = cfg->region && *cfg->region ? cfg->region : first_env("AWS_REGION", "AWS_DEFAULT_REGION");
	if (!region)
		region = "us-east-1";
	ep = cfg->endpoint && *cfg->endpoint ? cfg->endpoint
					     : first_env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
	path_style = cfg->path_style < 0 ? ep != NULL : cfg->path_style;
	if (!ep) {
		snprintf(s3->endpoint, sizeof(s3->endpoint), "https://s3.%s.amazonaws.com", region);
	} else if (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0) {
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "s3 endpoint '%s': want http(s)://HOST[:PORT]", ep);
		goto fail;
	} else if ((rc = copy(s3->endpoint, sizeof(s3->endpoint), ep, "s3 endpoint", err)) < 0) {
		goto fail;
	}
	for (size_t n = strlen(s3->endpoint); n && s3->endpoint[n - 1] == '/';)
		s3->endpoint[--n] = '\0';
	host = strstr(s3->endpoint, "://") + 3;
	if (!*host || strchr(host, '/') || strchr(host, '?')) {
		rc = ltfs_err_set(err, LTFS_E_CONFIG,
				  "s3 endpoint '%s': want http(s)://HOST[:PORT] with no path", s3->endpoint);
		goto fail;
	}
	snprintf(scheme, sizeof(scheme), "%.*s", (int)(host - s3->endpoint), s3->endpoint);
	if (path_style)
		snprintf(s3->base, sizeof(s3->base), "%s/%s", s3->endpoint, s3->bucket);
	else
		snprintf(s3->base, sizeof(s3->base), "%s%s.%s", scheme, s3->bucket, host);
	ak = cfg->access_key && *cfg->access_key ? cfg->access_key : first_env("AWS_ACCESS_KEY_ID", NULL);
	sk = cfg->secret_key && *cfg->secret_key ? cfg->secret_key : first_env("AWS_SECRET_ACCESS_KEY", NULL);
	tok = cfg->session_token && *cfg->session_token ? cfg->session_token
							: first_env("AWS_SESSION_TOKEN", NULL);
	if (!ak || !sk) {
		rc = ltfs_err_set(err, LTFS_E_CONFIG,
				  "no S3 credentials for %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
				  "(or s3.access-key-id and s3.secret-access-key in the config)",
				  s3->endpoint);
		goto fail;
	}
	if (strchr(ak, ':') || strlen(ak) + strlen(sk) + 2 > sizeof(s3->userpwd)) {
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "S3 access key id is malformed or too long");
		goto fail;
	}
	snprintf(s3->userpwd, sizeof(s3->userpwd), "%s:%s", ak, sk);
	if (tok && (size_t)snprintf(s3->token_hdr, sizeof(s3->token_hdr), "x-amz-security-token: %s",
				    tok) >= sizeof(s3->token_hdr)) {
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "AWS_SESSION_TOKEN is too long");
		goto fail;
	}
	if (strlen(region) > 64 || strpbrk(region, ": ")) {
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "s3 region '%.64s' is not a region name", region);
		goto fail;
	}
	snprintf(s3->sigv4, sizeof(s3->sigv4), "aws:amz:%s:s3", region);
	s3->timeout_ms = cfg->timeout_ms ? (long)cfg->timeout_ms : 30000;
	s3->attempts = cfg->attempts ? cfg->attempts : 5;
	s3->part_size = cfg->part_size ? cfg->part_size : S3_PART_DEFAULT;
	if (s3->part_size < S3_PART_MIN || s3->part_size > S3_PUT_MAX) {
		rc = ltfs_err_set(err, LTFS_E_CONFIG,
				  "s3 part size %llu: want 5MiB to 5GiB (S3's limits of one part)",
				  (unsigned long long)s3->part_size);
		goto fail;
	}
	*out = s3;
	return 0;
fail:
	free(s3);
	return rc;
}

void s3_free(struct s3 *s3)
{
	if (s3)
		explicit_bzero(s3->userpwd, sizeof(s3->userpwd));
	free(s3);
}

const char *s3_bucket(const struct s3 *s3) { return s3->bucket; }
const char *s3_prefix(const struct s3 *s3) { return s3->prefix; }
const char *s3_endpoint(const struct s3 *s3) { return s3->endpoint; }

int s3_key(const struct s3 *s3, char *out, const char *fmt, ...)
{
	char rest[S3_KEY_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(rest, sizeof(rest), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(rest))
		return LTFS_E_LIMIT;
	n = s3->prefix[0] ? snprintf(out, S3_KEY_MAX, "%s/%s", s3->prefix, rest)
			  : snprintf(out, S3_KEY_MAX, "%s", rest);
	return n < 0 || n >= S3_KEY_MAX ? LTFS_E_LIMIT : 0;
}

int s3_conn_open(struct s3 *s3, struct s3_conn **out, struct ltfs_err *err)
{
	struct s3_conn *c = calloc(1, sizeof(*c));
	struct timespec ts;

	*out = NULL;
	if (!c)
		return ltfs_err_set(err, -ENOMEM, NULL);
	c->curl = curl_easy_init();
	if (!c->curl) {
		free(c);
		return ltfs_err_set(err, -ENOMEM, "curl_easy_init failed");
	}
	c->s3 = s3;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	c->rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)c;
	c->rng |= 1;
	*out = c;
	return 0;
}

void s3_conn_free(struct s3_conn *c)
{
	if (!c)
		return;
	curl_easy_cleanup(c->curl);
	free(c);
}

void s3_conn_counts(const struct s3_conn *c, uint64_t *requests, uint64_t *retries)
{
	*requests = c->requests;
	*retries = c->retries;
}

long s3_conn_status(const struct s3_conn *c, const char **code)
{
	if (code)
		*code = c->code;
	return c->status;
}

/* ---- encoding ------------------------------------------------------------ */

int cl_url_encode(struct ltfs_buf *b, const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		char e[3] = { '%', hex[ch >> 4], hex[ch & 15] };
		bool plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
			     (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
			     ch == '~' || (keep_slash && ch == '/');
		int rc = plain ? ltfs_buf_append(b, s, 1) : ltfs_buf_append(b, e, 3);

		if (rc < 0)
			return rc;
	}
	return 0;
}

/* base + "/" + encoded key (+ "?" + query, already encoded and sorted). */
static int build_url(const struct s3 *s3, const char *key, const char *query,
		     struct ltfs_buf *url)
{
	int rc = ltfs_buf_printf(url, "%s/", s3->base);

	if (rc == 0)
		rc = cl_url_encode(url, key, true);
	if (rc == 0 && query)
		rc = ltfs_buf_printf(url, "?%s", query);
	return rc;
}

/* RFC 3339 UTC with milliseconds. */
static void format_time(int64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* RFC 3339 ("2026-11-21T10:14:24.123456789Z" or with +hh:mm) to ms; 0 if bad. */
int64_t s3_parse_time(const char *s)
{
	struct tm tm = { 0 };
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	int64_t ms, frac = 0, scale = 100;

	if (!p)
		return 0;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
			frac += scale ? (*p - '0') * scale : 0;
	ms = (int64_t)timegm(&tm) * 1000 + frac;
	if (*p == 'Z' || *p == 'z')
		return ms;
	if ((*p == '+' || *p == '-') && strlen(p) >= 6 && p[3] == ':') {
		int64_t off = ((p[1] - '0') * 10 + (p[2] - '0')) * 60 + (p[4] - '0') * 10 + (p[5] - '0');

		return *p == '+' ? ms - off * 60000 : ms + off * 60000;
	}
	return 0;
}

/* ---- one request --------------------------------------------------------- */

struct req {
	const char *method;      /* GET PUT POST HEAD DELETE */
	const char *key;         /* object key, "" for the bucket */
	const char *query;       /* encoded and sorted, or NULL */
	const void *body;        /* PUT or POST from memory */
	int body_fd;             /* PUT from a file, or -1 */
	uint64_t body_off, body_len; /* the file's bytes [body_off, +body_len) */
	const char *sha256;      /* body digest (hex) */
	const struct s3_put_opts *put;
	uint64_t range_off, range_len; /* GET: range_len 0 = to the end */
	bool ranged;
	struct ltfs_buf *out;    /* response body (2xx) */
	s3_sink_fn sink;         /* or to this, out_off bytes so far */
	void *sink_ctx;
	uint64_t out_off;
	/* response */
	char etag[S3_ETAG_MAX];
	int64_t meta_ms, mtime_ms;
	uint64_t meta_epoch;
	uint64_t length;
	struct ltfs_buf errbody;
	uint64_t sent;
	bool limit_hit, write_failed;
	CURL *curl;
};

/* An ETag without its surrounding quotes, as [*out, *out + return). S3
 * quotes them; RGW wants them bare in If-Match. */
static size_t unquote(const char *e, const char **out)
{
	size_t el = strlen(e);

	*out = e;
	if (el >= 2 && e[0] == '"' && e[el - 1] == '"') {
		(*out)++;
		el -= 2;
	}
	return el;
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
	struct req *r = ctx;
	size_t len = size * n, vlen;
	const char *v;
	char tmp[256];

	if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response (after 100) */
		r->etag[0] = '\0';
		r->meta_ms = 0;
		r->meta_epoch = 0;
		return len;
	}
	v = memchr(p, ':', len);
	if (!v)
		return len;
	vlen = len - (size_t)(v + 1 - p);
	for (v++; vlen && (*v == ' ' || *v == '\t'); v++, vlen--)
		;
	while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	if (vlen >= sizeof(tmp))
		return len;
	memcpy(tmp, v, vlen);
	tmp[vlen] = '\0';
	if (strncasecmp(p, "etag:", 5) == 0) {
		const char *t;
		size_t tl = unquote(tmp, &t);

		snprintf(r->etag, sizeof(r->etag), "%.*s", (int)tl, t);
	} else if (strncasecmp(p, "x-amz-meta-litestream-timestamp:", 32) == 0) {
		r->meta_ms = s3_parse_time(tmp);
	} else if (strncasecmp(p, "x-amz-meta-ltfs-epoch:", 22) == 0) {
		char *end;
		unsigned long long e = strtoull(tmp, &end, 10);

		r->meta_epoch = *tmp && !*end ? (uint64_t)e : 0;
	} else if (strncasecmp(p, "last-modified:", 14) == 0) {
		struct tm tm = { 0 };

		if (strptime(tmp, "%a, %d %b %Y %H:%M:%S GMT", &tm))
			r->mtime_ms = (int64_t)timegm(&tm) * 1000;
	}
	return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
	struct req *r = ctx;
	size_t len = size * n;
	long status = 0;

	curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status > 299) {
		/* keep the start of an error document; drop the rest */
		size_t room = S3_ERRBODY_MAX - r->errbody.len;

		if (room && ltfs_buf_append(&r->errbody, p, len < room ? len : room) < 0)
			return 0;
		return len;
	}
	if (r->sink) {
		int k = r->sink(r->sink_ctx, p, len);

		if (k < 0) {
			r->write_failed = true;
			return 0;
		}
		if (k > 0)
			return CURL_WRITEFUNC_PAUSE; /* an s3_reader with no room: again later */
		r->out_off += len;
		return len;
	}
	if (r->out && ltfs_buf_append(r->out, p, len) < 0) {
		r->limit_hit = true;
		return 0;
	}
	return len;
}

static size_t on_read(char *p, size_t size, size_t n, void *ctx)
{
	struct req *r = ctx;
	size_t want = size * n;
	uint64_t left = r->body_len - r->sent;
	ssize_t got;

	if (want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	if (r->body_fd < 0) {
		memcpy(p, (const uint8_t *)r->body + r->sent, want);
		r->sent += want;
		return want;
	}
	got = pread(r->body_fd, p, want, (off_t)(r->body_off + r->sent));
	if (got <= 0) {
		r->write_failed = true;
		return CURL_READFUNC_ABORT;
	}
	r->sent += (uint64_t)got;
	return (size_t)got;
}

static int seek_body(void *ctx, curl_off_t off, int origin)
{
	struct req *r = ctx;

	if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len)
		return CURL_SEEKFUNC_FAIL;
	r->sent = (uint64_t)off;
	return CURL_SEEKFUNC_OK;
}

/* The text between <tag> and </tag> in [p, end), XML entities decoded. */
static bool xml_text(const char *p, const char *end, const char *tag, char *out,
		     size_t n, const char **after)
{
	char open[64], close[64];
	const char *a, *b;
	size_t o = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	a = memmem(p, (size_t)(end - p), open, strlen(open));
	if (!a)
		return false;
	a += strlen(open);
	b = memmem(a, (size_t)(end - a), close, strlen(close));
	if (!b)
		return false;
	if (after)
		*after = b + strlen(close);
	while (a < b && o + 1 < n) {
		static const struct { const char *ent; char ch; } ents[] = {
			{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' },
			{ "&quot;", '"' }, { "&apos;", '\'' },
		};
		size_t i, k = sizeof(ents) / sizeof(ents[0]);

		if (*a == '&') {
			for (i = 0; i < k; i++) {
				size_t el = strlen(ents[i].ent);

				if ((size_t)(b - a) >= el && memcmp(a, ents[i].ent, el) == 0) {
					out[o++] = ents[i].ch;
					a += el;
					break;
				}
			}
			if (i < k)
				continue;
			if (a + 2 < b && a[1] == '#') {
				char *e;
				long cp = a[2] == 'x' ? strtol(a + 3, &e, 16) : strtol(a + 2, &e, 10);

				if (e < b && *e == ';' && cp > 0 && cp < 128) {
					out[o++] = (char)cp;
					a = e + 1;
					continue;
				}
			}
		}
		out[o++] = *a++;
	}
	out[o] = '\0';
	return a == b;
}

/* "CODE (Message)" of an S3 error document in [p, end); its code also
 * into code[code_n]. */
static void error_text(const char *p, const char *end, char *code, size_t code_n, char *out,
		       size_t n)
{
	char m[160] = "";

	code[0] = '\0';
	xml_text(p, end, "Code", code, code_n, NULL);
	xml_text(p, end, "Message", m, sizeof(m), NULL);
	snprintf(out, n, "%s%s%s%s", code[0] ? code : "(no S3 error code)", m[0] ? " (" : "", m,
		 m[0] ? ")" : "");
}

static bool retryable_curl(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

void s3_conn_set_deadline(struct s3_conn *c, int64_t mono_deadline_ms)
{
	c->deadline_ms = mono_deadline_ms;
}

/* What is left of the connection's deadline, in ms (LONG_MAX without one). */
static long budget_ms(const struct s3_conn *c)
{
	int64_t left;

	if (!c->deadline_ms)
		return LONG_MAX;
	left = c->deadline_ms - cl_mono_ms();
	return left < 1 ? 0 : left > LONG_MAX ? LONG_MAX : (long)left;
}

static void backoff(struct s3_conn *c, unsigned attempt)
{
	uint64_t cap = BACKOFF_BASE_MS << (attempt < 10 ? attempt : 10);
	uint64_t ms;

	if (cap > BACKOFF_CAP_MS)
		cap = BACKOFF_CAP_MS;
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	ms = cap / 2 + c->rng % (cap / 2 + 1); /* jitter: half to all of cap */
	if ((long)ms > budget_ms(c))
		ms = (uint64_t)budget_ms(c);
	usleep((useconds_t)(ms * 1000));
}

/* Set c->curl up for one attempt of r; *hdrs for perform_finish(). */
static CURLcode perform_setup(struct s3_conn *c, struct req *r, const char *url,
			      char curl_err[CURL_ERROR_SIZE], struct curl_slist **hdrs)
{
	struct s3 *s3 = c->s3;
	struct curl_slist *h = NULL;
	char line[S3_ETAG_MAX + 64], range[64];
	CURL *k = c->curl;
	long timeout;
	bool big;

	snprintf(line, sizeof(line), "x-amz-content-sha256: %s", r->sha256);
	h = curl_slist_append(h, line);
	if (r->put) {
		snprintf(line, sizeof(line), "Content-Type: %s",
			 r->put->content_type ? r->put->content_type : "application/octet-stream");
		h = h ? curl_slist_append(h, line) : NULL;
		if (h && r->put->if_none_match)
			h = curl_slist_append(h, "If-None-Match: *");
		if (h && r->put->if_match) {
			const char *e;
			size_t el = unquote(r->put->if_match, &e);

			snprintf(line, sizeof(line), "If-Match: %.*s", (int)el, e);
			h = curl_slist_append(h, line);
		}
		if (h && r->put->timestamp_ms > 0) {
			char ts[32];

			format_time(r->put->timestamp_ms, ts);
			snprintf(line, sizeof(line), "x-amz-meta-litestream-timestamp: %s", ts);
			h = curl_slist_append(h, line);
		}
		if (h && r->put->epoch) {
			snprintf(line, sizeof(line), "x-amz-meta-ltfs-epoch: %llu",
				 (unsigned long long)r->put->epoch);
			h = curl_slist_append(h, line);
		}
	}
	if (h && s3->token_hdr[0])
		h = curl_slist_append(h, s3->token_hdr);
	if (!h)
		return CURLE_OUT_OF_MEMORY;

	curl_easy_reset(k);
	curl_easy_setopt(k, CURLOPT_URL, url);
	curl_easy_setopt(k, CURLOPT_AWS_SIGV4, s3->sigv4);
	curl_easy_setopt(k, CURLOPT_USERPWD, s3->userpwd);
	curl_easy_setopt(k, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(k, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(k, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(k, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(k, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(k, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(k, CURLOPT_ERRORBUFFER, curl_err);
	timeout = s3->timeout_ms < budget_ms(c) ? s3->timeout_ms : budget_ms(c);
	if (timeout < 1)
		timeout = 1;
	curl_easy_setopt(k, CURLOPT_CONNECTTIMEOUT_MS, timeout < 5000 ? timeout : 5000L);
	curl_easy_setopt(k, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(k, CURLOPT_TCP_KEEPALIVE, 1L);
	/* a stalled transfer fails; a long one that moves does not */
	curl_easy_setopt(k, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(k, CURLOPT_LOW_SPEED_TIME, (timeout + 999) / 1000);
	big = r->body_len > S3_BIG_BODY || r->sink ||
	      (r->ranged && (r->range_len == 0 || r->range_len > S3_BIG_BODY));
	if (!big || c->deadline_ms)
		curl_easy_setopt(k, CURLOPT_TIMEOUT_MS, timeout);
	if (r->sink) /* fewer, larger reads: a restore's downloads run about 5% faster */
		curl_easy_setopt(k, CURLOPT_BUFFERSIZE, S3_RECV_BUFFER);
	if (strcmp(r->method, "PUT") == 0) {
		r->sent = 0;
		curl_easy_setopt(k, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(k, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(k, CURLOPT_READDATA, r);
		curl_easy_setopt(k, CURLOPT_SEEKFUNCTION, seek_body);
		curl_easy_setopt(k, CURLOPT_SEEKDATA, r);
		curl_easy_setopt(k, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
		/* An "Expect:" line to turn 100-continue off would be signed
		 * but never sent; waiting 1 ms for the 100 costs as little. */
		curl_easy_setopt(k, CURLOPT_EXPECT_100_TIMEOUT_MS, 1L);
	} else if (strcmp(r->method, "POST") == 0) {
		curl_easy_setopt(k, CURLOPT_POST, 1L);
		curl_easy_setopt(k, CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
		curl_easy_setopt(k, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
	} else if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(k, CURLOPT_NOBODY, 1L);
	} else if (strcmp(r->method, "DELETE") == 0) {
		curl_easy_setopt(k, CURLOPT_CUSTOMREQUEST, "DELETE");
	}
	if (r->ranged) {
		if (r->range_len)
			snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)r->range_off,
				 (unsigned long long)(r->range_off + r->range_len - 1));
		else
			snprintf(range, sizeof(range), "%llu-", (unsigned long long)r->range_off);
		curl_easy_setopt(k, CURLOPT_RANGE, range);
	}
	curl_err[0] = '\0';
	c->requests++;
	*hdrs = h;
	return CURLE_OK;
}

/* After an attempt that ended with cc: its status and length. */
static void perform_finish(struct s3_conn *c, struct req *r, CURLcode cc, struct curl_slist *h)
{
	c->status = 0;
	curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &c->status);
	if (cc == CURLE_OK) {
		curl_off_t cl = -1;

		curl_easy_getinfo(c->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		r->length = cl >= 0 ? (uint64_t)cl : 0;
	}
	for (struct curl_slist *t = h; t; t = t->next) /* the lines may hold a session token */
		explicit_bzero(t->data, strlen(t->data));
	curl_slist_free_all(h);
}

/* One attempt; 0, or the HTTP status via c->status with CURLE in *cc. */
static CURLcode perform(struct s3_conn *c, struct req *r, const char *url,
			char curl_err[CURL_ERROR_SIZE])
{
	struct curl_slist *h;
	CURLcode cc = perform_setup(c, r, url, curl_err, &h);

	if (cc != CURLE_OK)
		return cc;
	cc = curl_easy_perform(c->curl);
	perform_finish(c, r, cc, h);
	return cc;
}

/* Where a request's attempts start from: what a failed attempt left in
 * r is undone against it. */
struct attempt0 {
	size_t out_len;
	uint64_t out_off, range_off, range_len;
};

static void attempt_begin(struct s3_conn *c, struct req *r, const struct attempt0 *a)
{
	if (r->out && r->out->len > a->out_len)
		r->out->len = a->out_len; /* a failed attempt's partial body */
	if (r->sink && r->out_off > a->out_off && r->ranged) {
		/* resume a whole-object download where it broke off */
		r->range_off = r->out_off;
		r->range_len = a->range_len ? a->range_len - (r->out_off - a->range_off) : 0;
	}
	ltfs_buf_reset(&r->errbody);
	c->code[0] = '\0';
}

/* An attempt that ended with cc: 0 on 2xx; otherwise the error, what
 * went wrong in msg, and whether another attempt may do better. */
static int attempt_outcome(struct s3_conn *c, struct req *r, CURLcode cc, const char *curl_err,
			   char msg[256], bool *retry)
{
	*retry = false;
	if (cc == CURLE_OK && c->status >= 200 && c->status <= 299)
		return 0;
	if (cc == CURLE_OK) {
		const char *body = r->errbody.data ? (const char *)r->errbody.data : "";
		char text[224];

		error_text(body, body + r->errbody.len, c->code, sizeof(c->code), text, sizeof(text));
		snprintf(msg, 256, "%ld %s", c->status, text);
		*retry = c->status >= 500 || c->status == 429;
		return c->status == 404 ? -ENOENT : c->status == 412 ? LTFS_E_CONFLICT
			: c->status == 403 || c->status == 401 ? -EACCES : -EIO;
	}
	if (r->limit_hit) {
		snprintf(msg, 256, "response larger than %zu bytes", r->out->max);
		return LTFS_E_LIMIT;
	}
	if (r->write_failed) {
		snprintf(msg, 256, "storing what arrived failed: %s", strerror(errno));
		return -EIO;
	}
	snprintf(msg, 256, "%s", curl_err[0] ? curl_err : curl_easy_strerror(cc));
	*retry = retryable_curl(cc);
	return cc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO;
}

/* After a failed attempt: whether to try again (after the backoff). */
static bool attempt_again(struct s3_conn *c, bool retry, unsigned attempt)
{
	if (!retry || attempt + 1 >= c->s3->attempts || budget_ms(c) == 0)
		return false;
	c->retries++;
	backoff(c, attempt);
	return true;
}

static int request_url(struct s3_conn *c, struct req *r, struct ltfs_buf *url,
		       struct ltfs_err *err)
{
	r->curl = c->curl;
	ltfs_buf_init(url, S3_URL_MAX);
	if (build_url(c->s3, r->key, r->query, url) < 0)
		return ltfs_err_set(err, LTFS_E_LIMIT, "s3 %s '%s': key too long", r->method, r->key);
	ltfs_buf_init(&r->errbody, S3_ERRBODY_MAX + 1);
	return 0;
}

/*
 * Run a request with retries. Returns 0 on 2xx; otherwise the error with
 * a message naming method, URL (never credentials) and the S3 error code.
 */
static int request(struct s3_conn *c, struct req *r, struct ltfs_err *err)
{
	struct ltfs_buf url;
	char curl_err[CURL_ERROR_SIZE];
	struct attempt0 a = { r->out ? r->out->len : 0, r->out_off, r->range_off, r->range_len };
	char msg[256] = "";
	bool retry;
	int rc = request_url(c, r, &url, err);

	if (rc < 0)
		return rc;
	for (unsigned attempt = 0;; attempt++) {
		CURLcode cc;

		attempt_begin(c, r, &a);
		cc = perform(c, r, (const char *)url.data, curl_err);
		rc = attempt_outcome(c, r, cc, curl_err, msg, &retry);
		if (rc == 0 || !attempt_again(c, retry, attempt))
			break;
	}
	if (rc < 0)
		ltfs_err_set(err, rc, "s3 %s %s: %s", r->method, (const char *)url.data, msg);
	ltfs_buf_release(&url);
	ltfs_buf_release(&r->errbody);
	return rc;
}

static void req_init(struct req *r, const char *method, const char *key)
{
	memset(r, 0, sizeof(*r));
	r->method = method;
	r->key = key;
	r->body_fd = -1;
	r->sha256 = EMPTY_SHA256;
}

/* ---- operations ---------------------------------------------------------- */

static int put(struct s3_conn *c, struct req *r, const struct s3_put_opts *opts,
	       char etag[S3_ETAG_MAX], struct ltfs_err *err)
{
	static const struct s3_put_opts none = { 0 };
	int rc;

	r->put = opts ? opts : &none;
	rc = request(c, r, err);
	if (rc == 0 && etag)
		snprintf(etag, S3_ETAG_MAX, "%s", r->etag);
	return rc;
}

int s3_put(struct s3_conn *c, const char *key, const void *data, size_t len,
	   const struct s3_put_opts *opts, char etag[S3_ETAG_MAX], struct ltfs_err *err)
{
	char sha[65];
	struct req r;

	req_init(&r, "PUT", key);
	r.body = data;
	r.body_len = len;
	s3_sha256_hex(data, len, sha);
	r.sha256 = sha;
	return put(c, &r, opts, etag, err);
}

/* The SHA-256 (hex) of the file's bytes [off, off + len). */
static int hash_range(int fd, uint64_t off, uint64_t len, char sha[65], const char *key,
		      struct ltfs_err *err)
{
	uint8_t *buf = malloc(1u << 20);
	struct s3_sha256 h;

	if (!buf)
		return ltfs_err_set(err, -ENOMEM, NULL);
	s3_sha256_init(&h);
	for (uint64_t end = off + len; off < end;) {
		size_t want = end - off < (1u << 20) ? (size_t)(end - off) : (1u << 20);
		int rc = ltx_pread_full(fd, buf, want, off);

		if (rc < 0) {
			free(buf);
			return ltfs_err_set(err, rc, "s3 PUT '%s': reading the local file: %s", key,
					    ltfs_strerror(rc));
		}
		s3_sha256_update(&h, buf, want);
		off += want;
	}
	free(buf);
	s3_sha256_final(&h, sha);
	return 0;
}

/* "uploadId=ID" (+ "&partNumber=N" sorted before it when part > 0). */
static int upload_query(struct ltfs_buf *q, const char *id, unsigned part)
{
	ltfs_buf_reset(q);
	if (part && ltfs_buf_printf(q, "partNumber=%u&", part) < 0)
		return -ENOMEM;
	if (ltfs_buf_printf(q, "uploadId=") < 0 || cl_url_encode(q, id, false) < 0)
		return -ENOMEM;
	return 0;
}

/* An error document in a 200 answer (CompleteMultipartUpload may send
 * one after it started answering): 0, or the error named. */
static int error_in_body(const struct ltfs_buf *b, const char *what, const char *key,
			 struct ltfs_err *err)
{
	const char *p = (const char *)b->data;
	char code[64], text[224];

	if (!p || !memmem(p, b->len, "<Error>", 7))
		return 0;
	error_text(p, p + b->len, code, sizeof(code), text, sizeof(text));
	return ltfs_err_set(err, strcmp(code, "PreconditionFailed") == 0 ? LTFS_E_CONFLICT : -EIO,
			    "s3 %s '%s': 200 %s", what, key, text);
}

/* A multipart upload's conditions, checked before it starts: S3 checks
 * them again at completion, but some servers (Ceph RGW 16) ignore them
 * there, and would replace the object. */
static int check_conditions(struct s3_conn *c, const char *key, const struct s3_put_opts *opts,
			    struct ltfs_err *err)
{
	struct s3_object o;
	int rc;

	if (!opts->if_none_match && !opts->if_match)
		return 0;
	rc = s3_head(c, key, &o, err);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	if (opts->if_none_match && rc == 0)
		return ltfs_err_set(err, LTFS_E_CONFLICT, "s3 PUT '%s': the object exists "
				    "(If-None-Match: *, checked before a multipart upload)", key);
	if (opts->if_match) {
		const char *e;
		size_t el = unquote(opts->if_match, &e);

		if (rc == -ENOENT || strlen(o.etag) != el || memcmp(o.etag, e, el) != 0)
			return ltfs_err_set(err, LTFS_E_CONFLICT, "s3 PUT '%s': the object is not the "
					    "one of ETag %s (If-Match, checked before a multipart "
					    "upload)", key, opts->if_match);
	}
	return 0;
}

/*
 * A multipart upload of [0, len) of fd: check the conditions, create it
 * (with the object's metadata), put the parts in order, complete it (with
 * the conditions again). Anything failing after the create aborts the
 * upload, so that its parts are not kept (and billed).
 */
static int put_parts(struct s3_conn *c, const char *key, int fd, uint64_t len,
		     const struct s3_put_opts *opts, char etag[S3_ETAG_MAX], struct ltfs_err *err)
{
	const struct s3_put_opts create = { .timestamp_ms = opts->timestamp_ms,
					    .content_type = opts->content_type,
					    .epoch = opts->epoch };
	const struct s3_put_opts complete = { .if_none_match = opts->if_none_match,
					      .if_match = opts->if_match,
					      .content_type = "application/xml" };
	uint64_t psize = c->s3->part_size, nparts = (len + psize - 1) / psize;
	char id[S3_UPLOAD_ID_MAX] = "", sha[65], tag[S3_ETAG_MAX];
	struct ltfs_buf resp, query, doc;
	struct req r;
	int rc = 0;

	if (nparts > S3_PARTS_MAX)
		return ltfs_err_set(err, LTFS_E_LIMIT,
				    "s3 PUT '%s': %llu bytes is more than %d parts of %llu bytes "
				    "(raise s3.part-size)", key, (unsigned long long)len,
				    S3_PARTS_MAX, (unsigned long long)psize);
	rc = check_conditions(c, key, opts, err);
	if (rc < 0)
		return rc;
	ltfs_buf_init(&resp, 1u << 20);
	ltfs_buf_init(&query, 2 * S3_UPLOAD_ID_MAX + 64);
	ltfs_buf_init(&doc, (size_t)nparts * (S3_ETAG_MAX + 80) + 128);
	req_init(&r, "POST", key);
	r.query = "uploads=";
	r.out = &resp;
	rc = put(c, &r, &create, NULL, err);
	if (rc == 0 && !xml_text((const char *)resp.data, (const char *)resp.data + resp.len,
				 "UploadId", id, sizeof(id), NULL))
		rc = ltfs_err_set(err, LTFS_E_CORRUPT, "s3 POST '%s?uploads': no UploadId in the answer",
				  key);
	if (rc == 0 && ltfs_buf_printf(&doc, "<CompleteMultipartUpload>") < 0)
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	for (unsigned part = 1; rc == 0 && part <= nparts; part++) {
		uint64_t off = (uint64_t)(part - 1) * psize;
		uint64_t plen = len - off < psize ? len - off : psize;

		rc = hash_range(fd, off, plen, sha, key, err);
		if (rc == 0 && upload_query(&query, id, part) < 0)
			rc = ltfs_err_set(err, -ENOMEM, NULL);
		if (rc < 0)
			break;
		req_init(&r, "PUT", key);
		r.query = (const char *)query.data;
		r.body_fd = fd;
		r.body_off = off;
		r.body_len = plen;
		r.sha256 = sha;
		rc = put(c, &r, NULL, tag, err);
		if (rc == 0 && !tag[0])
			rc = ltfs_err_set(err, LTFS_E_CORRUPT, "s3 PUT '%s' part %u: no ETag in the answer",
					  key, part);
		if (rc == 0 && ltfs_buf_printf(&doc, "<Part><PartNumber>%u</PartNumber>"
					       "<ETag>\"%s\"</ETag></Part>", part, tag) < 0)
			rc = ltfs_err_set(err, -ENOMEM, NULL);
	}
	if (rc == 0 && (ltfs_buf_printf(&doc, "</CompleteMultipartUpload>") < 0 ||
			upload_query(&query, id, 0) < 0))
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	if (rc == 0) {
		s3_sha256_hex(doc.data, doc.len, sha);
		ltfs_buf_reset(&resp);
		req_init(&r, "POST", key);
		r.query = (const char *)query.data;
		r.body = doc.data;
		r.body_len = doc.len;
		r.sha256 = sha;
		r.out = &resp;
		rc = put(c, &r, &complete, NULL, err);
		if (rc == 0)
			rc = error_in_body(&resp, "POST (complete)", key, err);
		if (rc == 0 && etag) {
			/* the answer's ETag, or (RGW leaves it empty) the object's */
			struct s3_object o;
			const char *t;
			size_t tl;

			tag[0] = '\0';
			xml_text((const char *)resp.data, (const char *)resp.data + resp.len, "ETag",
				 tag, sizeof(tag), NULL);
			if (!tag[0] && s3_head(c, key, &o, err) == 0)
				snprintf(tag, sizeof(tag), "%s", o.etag);
			tl = unquote(tag, &t);
			snprintf(etag, S3_ETAG_MAX, "%.*s", (int)tl, t);
		}
	}
	if (rc < 0 && id[0] && upload_query(&query, id, 0) == 0) {
		struct ltfs_err ignored = { 0 };

		req_init(&r, "DELETE", key);
		r.query = (const char *)query.data;
		request(c, &r, &ignored); /* what fails here, a lifecycle rule removes */
	}
	ltfs_buf_release(&resp);
	ltfs_buf_release(&query);
	ltfs_buf_release(&doc);
	return rc;
}

int s3_put_fd(struct s3_conn *c, const char *key, int fd, uint64_t len,
	      const struct s3_put_opts *opts, char etag[S3_ETAG_MAX], struct ltfs_err *err)
{
	static const struct s3_put_opts none = { 0 };
	char sha[65];
	struct req r;
	int rc;

	if (len > c->s3->part_size)
		return put_parts(c, key, fd, len, opts ? opts : &none, etag, err);
	rc = hash_range(fd, 0, len, sha, key, err);
	if (rc < 0)
		return rc;
	req_init(&r, "PUT", key);
	r.body_fd = fd;
	r.body_len = len;
	r.sha256 = sha;
	return put(c, &r, opts, etag, err);
}

int s3_get(struct s3_conn *c, const char *key, uint64_t off, uint64_t len,
	   struct ltfs_buf *out, char etag[S3_ETAG_MAX], struct ltfs_err *err)
{
	struct req r;
	int rc;

	req_init(&r, "GET", key);
	r.out = out;
	r.ranged = off > 0 || len > 0;
	r.range_off = off;
	r.range_len = len;
	rc = request(c, &r, err);
	if (rc == 0 && etag)
		snprintf(etag, S3_ETAG_MAX, "%s", r.etag);
	return rc;
}

int s3_get_sink(struct s3_conn *c, const char *key, s3_sink_fn sink, void *ctx, uint64_t *size,
		struct ltfs_err *err)
{
	struct req r;
	int rc;

	req_init(&r, "GET", key);
	r.sink = sink;
	r.sink_ctx = ctx;
	r.ranged = true; /* "bytes=0-": so a retry can ask for the rest */
	rc = request(c, &r, err);
	*size = r.out_off;
	return rc;
}

struct fd_sink {
	int fd;
	uint64_t off;
};

static int to_fd(void *ctx, const void *p, size_t n)
{
	struct fd_sink *s = ctx;
	int rc = ltx_pwrite_full(s->fd, p, n, s->off);

	s->off += n;
	return rc;
}

int s3_get_fd(struct s3_conn *c, const char *key, int fd, uint64_t *size,
	      struct ltfs_err *err)
{
	struct fd_sink s = { .fd = fd };

	return s3_get_sink(c, key, to_fd, &s, size, err);
}

/* ---- a download at its reader's pace ------------------------------------ */

/*
 * The applier of a big restore pulls the object through libcurl's multi
 * interface on its own thread: each piece goes from libcurl's buffer
 * straight into the decoder's. A download thread filling a ring buffer
 * for the applier spent about a quarter of the restore's CPU copying.
 */
#define S3_READER_EXTRA_MAX (16u << 20)

struct s3_reader {
	struct s3_conn *c;
	struct req r;
	struct attempt0 a;
	struct ltfs_buf url;
	CURLM *multi;
	struct curl_slist *hdrs;
	char curl_err[CURL_ERROR_SIZE];
	uint8_t *dst;             /* the reader's buffer, during a read */
	size_t dst_n, dst_got;
	struct ltfs_buf extra;    /* what arrived past it, taken first next time */
	size_t extra_off;
	unsigned attempt;
	bool attached, paused, done;
	int rc;
	char msg[256];
};

static int reader_sink(void *ctx, const void *p, size_t n)
{
	struct s3_reader *rd = ctx;
	size_t k;

	if (!rd->dst || rd->dst_got == rd->dst_n) {
		rd->paused = true; /* libcurl keeps the piece and hands it again */
		return 1;
	}
	k = rd->dst_n - rd->dst_got < n ? rd->dst_n - rd->dst_got : n;
	memcpy(rd->dst + rd->dst_got, p, k);
	rd->dst_got += k;
	return k < n ? ltfs_buf_append(&rd->extra, (const uint8_t *)p + k, n - k) : 0;
}

static int reader_attempt(struct s3_reader *rd)
{
	CURLcode cc;

	attempt_begin(rd->c, &rd->r, &rd->a);
	cc = perform_setup(rd->c, &rd->r, (const char *)rd->url.data, rd->curl_err, &rd->hdrs);
	if (cc != CURLE_OK)
		return -ENOMEM;
	if (curl_multi_add_handle(rd->multi, rd->c->curl) != CURLM_OK) {
		perform_finish(rd->c, &rd->r, CURLE_FAILED_INIT, rd->hdrs);
		rd->hdrs = NULL;
		return -ENOMEM;
	}
	rd->attached = true;
	return 0;
}

static void reader_detach(struct s3_reader *rd, CURLcode cc)
{
	if (!rd->attached)
		return;
	curl_multi_remove_handle(rd->multi, rd->c->curl);
	perform_finish(rd->c, &rd->r, cc, rd->hdrs);
	rd->hdrs = NULL;
	rd->attached = false;
	rd->paused = false;
}

/* The transfer ended: done, or the next attempt started. */
static void reader_attempt_ended(struct s3_reader *rd)
{
	CURLcode cc = CURLE_RECV_ERROR;
	CURLMsg *m;
	bool retry;
	int left;

	while ((m = curl_multi_info_read(rd->multi, &left)))
		if (m->msg == CURLMSG_DONE)
			cc = m->data.result;
	reader_detach(rd, cc);
	rd->rc = attempt_outcome(rd->c, &rd->r, cc, rd->curl_err, rd->msg, &retry);
	if (rd->rc == 0 || !attempt_again(rd->c, retry, rd->attempt++)) {
		rd->done = true;
		return;
	}
	if (reader_attempt(rd) < 0) {
		rd->rc = -ENOMEM;
		snprintf(rd->msg, sizeof(rd->msg), "out of memory");
		rd->done = true;
	}
}

int s3_reader_open(struct s3_conn *c, const char *key, struct s3_reader **out,
		   struct ltfs_err *err)
{
	struct s3_reader *rd = calloc(1, sizeof(*rd));
	int rc;

	*out = NULL;
	if (!rd)
		return ltfs_err_set(err, -ENOMEM, NULL);
	rd->c = c;
	req_init(&rd->r, "GET", key);
	rd->r.sink = reader_sink;
	rd->r.sink_ctx = rd;
	rd->r.ranged = true; /* "bytes=0-": so a retry can ask for the rest */
	ltfs_buf_init(&rd->extra, S3_READER_EXTRA_MAX);
	rc = request_url(c, &rd->r, &rd->url, err);
	if (rc == 0 && !(rd->multi = curl_multi_init()))
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	if (rc == 0 && reader_attempt(rd) < 0)
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	if (rc < 0) {
		s3_reader_close(rd, NULL, NULL);
		return rc;
	}
	*out = rd;
	return 0;
}

ssize_t s3_reader_read(void *ctx, void *p, size_t n)
{
	struct s3_reader *rd = ctx;

	if (rd->extra_off < rd->extra.len) {
		size_t k = rd->extra.len - rd->extra_off < n ? rd->extra.len - rd->extra_off : n;

		memcpy(p, rd->extra.data + rd->extra_off, k);
		rd->extra_off += k;
		if (rd->extra_off == rd->extra.len) {
			ltfs_buf_reset(&rd->extra);
			rd->extra_off = 0;
		}
		return (ssize_t)k;
	}
	if (n == 0)
		return 0;
	rd->dst = p;
	rd->dst_n = n;
	rd->dst_got = 0;
	if (rd->paused) {
		rd->paused = false;
		curl_easy_pause(rd->c->curl, CURLPAUSE_CONT); /* may hand a piece right here */
	}
	while (rd->dst_got == 0 && !rd->done) {
		int running = 0;

		if (curl_multi_perform(rd->multi, &running) != CURLM_OK) {
			reader_detach(rd, CURLE_FAILED_INIT);
			rd->rc = -EIO;
			snprintf(rd->msg, sizeof(rd->msg), "curl_multi_perform failed");
			rd->done = true;
		} else if (rd->dst_got == 0 && !running) {
			reader_attempt_ended(rd);
		} else if (rd->dst_got == 0) {
			curl_multi_poll(rd->multi, NULL, 0, 1000, NULL);
		}
	}
	rd->dst = NULL;
	if (rd->dst_got)
		return (ssize_t)rd->dst_got;
	return rd->rc < 0 ? rd->rc : 0;
}

int s3_reader_close(struct s3_reader *rd, uint64_t *size, struct ltfs_err *err)
{
	int rc = 0;

	if (!rd)
		return 0;
	if (size)
		*size = rd->r.out_off;
	if (rd->done && rd->rc < 0) {
		rc = rd->rc;
		if (err)
			ltfs_err_set(err, rc, "s3 GET %s: %s", (const char *)rd->url.data, rd->msg);
	}
	if (rd->multi) {
		reader_detach(rd, CURLE_ABORTED_BY_CALLBACK);
		curl_multi_cleanup(rd->multi);
	}
	ltfs_buf_release(&rd->extra);
	ltfs_buf_release(&rd->url);
	ltfs_buf_release(&rd->r.errbody);
	free(rd);
	return rc;
}

int s3_head(struct s3_conn *c, const char *key, struct s3_object *out,
	    struct ltfs_err *err)
{
	struct req r;
	int rc;

	req_init(&r, "HEAD", key);
	rc = request(c, &r, err);
	if (rc < 0)
		return rc;
	memset(out, 0, sizeof(*out));
	snprintf(out->key, sizeof(out->key), "%s", key);
	snprintf(out->etag, sizeof(out->etag), "%s", r.etag);
	out->size = r.length;
	out->mtime_ms = r.mtime_ms;
	out->meta_ms = r.meta_ms;
	out->meta_epoch = r.meta_epoch;
	return 0;
}

int s3_delete(struct s3_conn *c, const char *key, struct ltfs_err *err)
{
	struct req r;
	int rc;

	req_init(&r, "DELETE", key);
	rc = request(c, &r, err);
	return rc == -ENOENT ? 0 : rc;
}

/* One page of ListObjectsV2: call fn per object; next token in `token`. */
static int list_page(const char *body, size_t len, char *token, size_t token_n,
		     int (*fn)(void *, const struct s3_object *), void *ctx,
		     struct ltfs_err *err)
{
	const char *p = body, *end = body + len, *after;
	char truncated[16] = "";
	struct s3_object o;

	while ((p = memmem(p, (size_t)(end - p), "<Contents>", 10)) != NULL) {
		const char *ce = memmem(p, (size_t)(end - p), "</Contents>", 11);
		char size[32] = "", mtime[64] = "";
		int rc;

		if (!ce)
			return ltfs_err_set(err, LTFS_E_CORRUPT, "s3 list: <Contents> without its end");
		memset(&o, 0, sizeof(o));
		if (!xml_text(p, ce, "Key", o.key, sizeof(o.key), NULL) ||
		    !xml_text(p, ce, "Size", size, sizeof(size), NULL))
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "s3 list: an entry without Key or Size (or a key over %d bytes)",
					    S3_KEY_MAX - 1);
		o.size = strtoull(size, NULL, 10);
		xml_text(p, ce, "LastModified", mtime, sizeof(mtime), NULL);
		o.mtime_ms = s3_parse_time(mtime);
		if (xml_text(p, ce, "ETag", o.etag, sizeof(o.etag), NULL)) {
			const char *t;
			size_t tl = unquote(o.etag, &t);

			memmove(o.etag, t, tl);
			o.etag[tl] = '\0';
		}
		rc = fn(ctx, &o);
		if (rc)
			return rc;
		p = ce + 11;
	}
	token[0] = '\0';
	xml_text(body, end, "IsTruncated", truncated, sizeof(truncated), &after);
	if (strcmp(truncated, "true") == 0 &&
	    !xml_text(body, end, "NextContinuationToken", token, token_n, NULL))
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "s3 list: truncated page without a usable NextContinuationToken");
	return 0;
}

int s3_list(struct s3_conn *c, const char *prefix,
	    int (*fn)(void *ctx, const struct s3_object *o), void *ctx,
	    struct ltfs_err *err)
{
	char token[2048] = "";
	struct ltfs_buf body, query;
	int rc = 0;

	ltfs_buf_init(&body, S3_LIST_PAGE_MAX);
	ltfs_buf_init(&query, 3 * (S3_KEY_MAX + sizeof(token)) + 64);
	for (unsigned page = 0;; page++) {
		struct req r;

		ltfs_buf_reset(&body);
		ltfs_buf_reset(&query);
		/* names in sorted order, values fully encoded: curl signs it as is */
		if (token[0]) {
			rc = ltfs_buf_printf(&query, "continuation-token=");
			if (rc == 0)
				rc = cl_url_encode(&query, token, false);
			if (rc == 0)
				rc = ltfs_buf_printf(&query, "&");
		}
		if (rc == 0)
			rc = ltfs_buf_printf(&query, "list-type=2&max-keys=1000&prefix=");
		if (rc == 0)
			rc = cl_url_encode(&query, prefix, false);
		if (rc < 0) {
			rc = ltfs_err_set(err, rc, "s3 list '%s': prefix too long", prefix);
			break;
		}
		req_init(&r, "GET", "");
		r.query = (const char *)query.data;
		r.out = &body;
		rc = request(c, &r, err);
		if (rc == 0)
			rc = list_page(body.data ? (const char *)body.data : "", body.len, token,
				       sizeof(token), fn, ctx, err);
		if (rc || !token[0])
			break;
		if (page > 1000000) {
			rc = ltfs_err_set(err, LTFS_E_LIMIT, "s3 list '%s': too many pages", prefix);
			break;
		}
	}
	ltfs_buf_release(&body);
	ltfs_buf_release(&query);
	return rc;
}
