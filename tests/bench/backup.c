/*
 * backup.c - the backup measurements of `make bench`, driven by
 * tests/bench/backup against the S3 test server (tests/tools/s3-server).
 * Endpoint and credentials come from the AWS_* variables ltfs reads; URL
 * is s3://BUCKET[/PREFIX], as for ltfs mount --s3.
 *
 *   bench-backup save URL NAME DIR THREADS
 *       Download every object under PREFIX/NAME/ into DIR, keeping the
 *       key's path below PREFIX/NAME/ (DIR/0000/MIN-MAX.ltx), THREADS at
 *       once. Prints "files=N bytes=B secs=S".
 *   bench-backup load URL NAME DIR THREADS [LLLL]
 *       The reverse: every DIR/LLLL/FILE (of that level only, when given)
 *       goes up as PREFIX/NAME/LLLL/FILE,
 *       created with If-None-Match and the LTX header's timestamp as
 *       x-amz-meta-litestream-timestamp, like the primary uploads it.
 *       Prints "files=N bytes=B secs=S".
 *   bench-backup put URL KEY FILE
 *       FILE as the object KEY (a full key).
 *   bench-backup top URL NAME LLLL
 *       Prints the last TXID the objects of level LLLL of NAME reach
 *       (decimal; 0 when there are none).
 *   bench-backup lag DB URL RATE SECONDS
 *       One-row transactions (WAL, synchronous=NORMAL) on DB, a database
 *       in the mount of a node backing up to URL, RATE per second on a
 *       fixed schedule for SECONDS. Commit i is TXID base + 1 + i, base
 *       being the node's DB-pos before the first (checked after the last).
 *       First waits (30 s at most) until the bucket holds base. A second
 *       thread lists the level-0 keys of the database every POLL_MS (or
 *       as soon as the previous listing returned, when that took longer),
 *       restricted to the 16 TXIDs around the next one awaited (keys sort
 *       by their first TXID), and follows the chain of objects from base:
 *       a TXID is in the bucket when an object reaching it continues the
 *       chain. Lag = end of the listing that first showed the TXID - the
 *       return of its commit. Prints one line:
 *       "n=N secs=S rate=R p50=MS p99=MS max=MS missing=N objects=N
 *        poll_ms=MS list_ms=MS errors=N txid_ok=0|1"
 *
 * Reports only: a slow upload gives large figures, never a failure.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "tests/bench/bench.h"

#define POLL_MS 2.0              /* from one listing to the next */
#define SYNC_TIMEOUT 30.0        /* s: the bucket reaching the node before the run */
#define DRAIN_TIMEOUT 20.0       /* s: the bucket reaching the last commit after it */
#define MAX_COMMITS 1000000      /* per run, whatever the rate */
#define MAX_FILES 1000000        /* save and load */
#define MAX_THREADS 64
#define POS_LEN 34               /* "TXID/CHECKSUM\n" */

static int open_bucket(const char *url, struct s3 **s3)
{
	struct s3_config cfg = { .url = url, .path_style = -1 };
	struct ltfs_err err = { 0 };

	if (s3_open(s3, &cfg, &err) < 0) {
		fprintf(stderr, "bench-backup: %s: %s\n", url, err.msg);
		return -1;
	}
	return 0;
}

/* ---- save and load: many objects, several connections ------------------- */

struct xfer {
	struct s3 *s3;
	const char *name, *dir;
	const char *level;            /* load: only this LLLL; NULL = all */
	char **rel;                   /* paths below PREFIX/NAME/ and DIR */
	uint64_t *sizes;
	size_t n;
	bool up;                      /* load (true) or save */
	pthread_mutex_t mu;
	size_t next;
	uint64_t bytes;
	int rc;
	char err[LTFS_ERR_MSG_MAX];
};

static int xfer_one(struct xfer *x, struct s3_conn *c, size_t i, uint64_t *bytes,
		    struct ltfs_err *err)
{
	char key[S3_KEY_MAX], path[4096];
	int fd, rc;

	if (s3_key(x->s3, key, "%s/%s", x->name, x->rel[i]) < 0 ||
	    (size_t)snprintf(path, sizeof(path), "%s/%s", x->dir, x->rel[i]) >= sizeof(path))
		return ltfs_err_set(err, LTFS_E_LIMIT, "'%s': path too long", x->rel[i]);
	if (x->up) {
		struct s3_put_opts o = { .if_none_match = true };
		uint8_t hdr[LTX_HEADER_SIZE];
		struct ltx_header h;
		struct stat st;

		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			rc = ltfs_err_set(err, -errno, "'%s': %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return rc;
		}
		if (pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
		    ltx_header_decode(hdr, &h, NULL) == 0)
			o.timestamp_ms = h.timestamp;
		rc = s3_put_fd(c, key, fd, (uint64_t)st.st_size, &o, NULL, err);
		*bytes = (uint64_t)st.st_size;
	} else {
		char *slash = strrchr(path, '/');

		*slash = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return ltfs_err_set(err, -errno, "mkdir '%s': %s", path, strerror(errno));
		*slash = '/';
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			return ltfs_err_set(err, -errno, "'%s': %s", path, strerror(errno));
		rc = s3_get_fd(c, key, fd, bytes, err);
		if (rc == 0 && *bytes != x->sizes[i])
			rc = ltfs_err_set(err, LTFS_E_TRUNCATED, "%s: %llu bytes, listed %llu", key,
					  (unsigned long long)*bytes, (unsigned long long)x->sizes[i]);
	}
	close(fd);
	return rc;
}

static void *xfer_main(void *arg)
{
	struct xfer *x = arg;
	struct ltfs_err err = { 0 };
	struct s3_conn *c = NULL;
	int rc = s3_conn_open(x->s3, &c, &err);

	for (;;) {
		uint64_t bytes = 0;
		size_t i;

		pthread_mutex_lock(&x->mu);
		if (rc < 0 && x->rc == 0) {
			x->rc = rc;
			snprintf(x->err, sizeof(x->err), "%s", err.msg);
		}
		i = x->next < x->n && x->rc == 0 ? x->next++ : x->n;
		pthread_mutex_unlock(&x->mu);
		if (i == x->n)
			break;
		rc = xfer_one(x, c, i, &bytes, &err);
		pthread_mutex_lock(&x->mu);
		x->bytes += bytes;
		pthread_mutex_unlock(&x->mu);
	}
	s3_conn_free(c);
	return NULL;
}

static int xfer_add(struct xfer *x, const char *rel, uint64_t size)
{
	if (x->n % 1024 == 0) {
		char **r = realloc(x->rel, (x->n + 1024) * sizeof(*r));
		uint64_t *s = r ? realloc(x->sizes, (x->n + 1024) * sizeof(*s)) : NULL;

		if (r)
			x->rel = r;
		if (!r || !s)
			return -ENOMEM;
		x->sizes = s;
	}
	if (x->n >= MAX_FILES || !(x->rel[x->n] = strdup(rel)))
		return -ENOMEM;
	x->sizes[x->n++] = size;
	return 0;
}

static int on_save_listed(void *ctx, const struct s3_object *o)
{
	struct xfer *x = ctx;
	char pre[S3_KEY_MAX];
	size_t pl;

	if (s3_key(x->s3, pre, "%s/", x->name) < 0)
		return LTFS_E_LIMIT;
	pl = strlen(pre);
	/* LLLL/FILE only: one directory level, as the layout has */
	if (strncmp(o->key, pre, pl) != 0 || !strchr(o->key + pl, '/') ||
	    strchr(strchr(o->key + pl, '/') + 1, '/'))
		return 0;
	return xfer_add(x, o->key + pl, o->size);
}

static int list_dir(struct xfer *x)
{
	DIR *top = opendir(x->dir), *sub;
	struct dirent *e, *f;
	char path[4096], rel[1024];
	int rc = 0;

	if (!top) {
		fprintf(stderr, "bench-backup: '%s': %s\n", x->dir, strerror(errno));
		return -1;
	}
	while (rc == 0 && (e = readdir(top)) != NULL) {
		if (e->d_name[0] == '.' || strlen(e->d_name) != 4 ||
		    (x->level && strcmp(e->d_name, x->level) != 0))
			continue;
		snprintf(path, sizeof(path), "%s/%s", x->dir, e->d_name);
		sub = opendir(path);
		if (!sub)
			continue;
		while (rc == 0 && (f = readdir(sub)) != NULL) {
			size_t l = strlen(f->d_name);

			if (l < 5 || strcmp(f->d_name + l - 4, ".ltx") != 0 ||
			    (size_t)snprintf(rel, sizeof(rel), "%s/%s", e->d_name, f->d_name) >=
				    sizeof(rel))
				continue;
			rc = xfer_add(x, rel, 0);
		}
		closedir(sub);
	}
	closedir(top);
	if (rc < 0)
		fprintf(stderr, "bench-backup: out of memory\n");
	return rc;
}

static int xfer(const char *url, const char *name, const char *dir, double threads,
		const char *level, bool up)
{
	struct xfer x = { .name = name, .dir = dir, .level = level, .up = up };
	struct ltfs_err err = { 0 };
	pthread_t th[MAX_THREADS];
	size_t nt = 0;
	double t0 = now();
	int rc = 1;

	pthread_mutex_init(&x.mu, NULL);
	if (open_bucket(url, &x.s3) < 0)
		goto out;
	if (up) {
		if (list_dir(&x) < 0)
			goto out;
	} else {
		struct s3_conn *c = NULL;
		char pre[S3_KEY_MAX];
		int lrc = s3_key(x.s3, pre, "%s/", name) < 0 ? LTFS_E_LIMIT : 0;

		if (lrc == 0)
			lrc = s3_conn_open(x.s3, &c, &err);
		if (lrc == 0)
			lrc = s3_list(c, pre, on_save_listed, &x, &err);
		s3_conn_free(c);
		if (lrc < 0) {
			fprintf(stderr, "bench-backup: listing %s: %s\n", pre,
				err.msg[0] ? err.msg : strerror(-lrc));
			goto out;
		}
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			fprintf(stderr, "bench-backup: mkdir '%s': %s\n", dir, strerror(errno));
			goto out;
		}
	}
	for (; nt < (size_t)threads && nt < x.n; nt++)
		if (pthread_create(&th[nt], NULL, xfer_main, &x) != 0)
			break;
	for (size_t i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
	if (x.rc < 0 || (x.n && nt == 0)) {
		fprintf(stderr, "bench-backup: %s\n", x.rc < 0 ? x.err : "cannot start threads");
		goto out;
	}
	printf("files=%zu bytes=%llu secs=%.3f\n", x.n, (unsigned long long)x.bytes, now() - t0);
	rc = 0;
out:
	for (size_t i = 0; i < x.n; i++)
		free(x.rel[i]);
	free(x.rel);
	free(x.sizes);
	s3_free(x.s3);
	pthread_mutex_destroy(&x.mu);
	return rc;
}

/* ---- put and top ---------------------------------------------------------- */

static int put(const char *url, const char *key, const char *path)
{
	struct ltfs_err err = { 0 };
	struct s3 *s3 = NULL;
	struct s3_conn *c = NULL;
	struct s3_put_opts o = { 0 };
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = -1;

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "bench-backup: '%s': %s\n", path, strerror(errno));
	} else if (open_bucket(url, &s3) == 0) {
		rc = s3_conn_open(s3, &c, &err);
		if (rc == 0)
			rc = s3_put_fd(c, key, fd, (uint64_t)st.st_size, &o, NULL, &err);
		if (rc < 0)
			fprintf(stderr, "bench-backup: %s\n", err.msg);
	}
	if (fd >= 0)
		close(fd);
	s3_conn_free(c);
	s3_free(s3);
	return rc < 0;
}

struct top {
	struct s3 *s3;
	const char *name;
	unsigned level;
	uint64_t max;
};

static int on_top(void *ctx, const struct s3_object *o)
{
	struct top *t = ctx;
	char name[FRAME_NAME_MAX + 1];
	unsigned level;
	uint64_t min, max;

	if (s3_ltx_key_parse(s3_prefix(t->s3), o->key, name, sizeof(name), &level, &min, &max) ==
		    0 &&
	    level == t->level && strcmp(name, t->name) == 0 && max > t->max)
		t->max = max;
	return 0;
}

static int top(const char *url, const char *name, const char *level)
{
	struct top t = { .name = name };
	struct ltfs_err err = { 0 };
	struct s3_conn *c = NULL;
	char prefix[S3_KEY_MAX];
	int rc = -1;

	if (sscanf(level, "%4x", &t.level) != 1 || open_bucket(url, &t.s3) < 0)
		return 1;
	if (s3_key(t.s3, prefix, "%s/%s/", name, level) < 0)
		rc = ltfs_err_set(&err, LTFS_E_LIMIT, "name too long");
	else if ((rc = s3_conn_open(t.s3, &c, &err)) == 0)
		rc = s3_list(c, prefix, on_top, &t, &err);
	if (rc < 0)
		fprintf(stderr, "bench-backup: %s\n", err.msg);
	else
		printf("%llu\n", (unsigned long long)t.max);
	s3_conn_free(c);
	s3_free(t.s3);
	return rc < 0;
}

/* ---- lag ---------------------------------------------------------------- */

static uint64_t read_pos(const char *path)
{
	char buf[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	return n == POS_LEN ? pos_txid(buf, (size_t)n) : 0;
}

struct range {
	uint64_t min, max;
};

struct poller {
	struct s3 *s3;
	struct s3_conn *conn;
	const char *name;
	uint64_t base;                /* TXID before the first measured commit */
	uint64_t reached;             /* the bucket's chain reaches this TXID */
	size_t cap;
	double *shown;                /* [i]: when TXID base+1+i first showed; < 0 = not yet */
	struct range *got;            /* one listing */
	size_t ngot, capgot;
	_Atomic uint64_t target;      /* stop once this TXID showed; 0 = not known yet */
	_Atomic double deadline;      /* stop at this time anyway */
	uint64_t polls, errors, objects;
	double first, last, listing;  /* times of the first and last listing; time listing */
	char err[LTFS_ERR_MSG_MAX];
};

static int on_listed(void *ctx, const struct s3_object *o)
{
	struct poller *p = ctx;
	char name[FRAME_NAME_MAX + 1];
	unsigned level;
	uint64_t min, max;

	if (s3_ltx_key_parse(s3_prefix(p->s3), o->key, name, sizeof(name), &level, &min, &max) <
		    0 ||
	    strcmp(name, p->name) != 0)
		return 0;
	if (p->ngot == p->capgot) {
		size_t cap = p->capgot ? 2 * p->capgot : 512;
		struct range *v = realloc(p->got, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		p->got = v;
		p->capgot = cap;
	}
	p->got[p->ngot].min = min;
	p->got[p->ngot++].max = max;
	return 0;
}

/* List the objects that may continue the chain (all of the database's
 * with window false); follow it; 0 or an error. */
static int poll_once(struct poller *p, bool window)
{
	char prefix[S3_KEY_MAX];
	struct ltfs_err err = { 0 };
	double t0 = now(), t;
	uint64_t from = p->reached;
	int rc;

	if (window)
		rc = s3_key(p->s3, prefix, "%s/0000/%015llx", p->name,
			    (unsigned long long)((p->reached + 1) >> 4));
	else
		rc = s3_key(p->s3, prefix, "%s/", p->name);
	p->ngot = 0;
	if (rc == 0)
		rc = s3_list(p->conn, prefix, on_listed, p, &err);
	t = now();
	p->polls++;
	p->listing += t - t0;
	p->last = t;
	if (rc < 0) {
		p->errors++;
		snprintf(p->err, sizeof(p->err), "%s", err.msg[0] ? err.msg : strerror(-rc));
		return rc;
	}
	for (bool moved = true; moved;) {
		moved = false;
		for (size_t i = 0; i < p->ngot; i++) {
			if (p->got[i].min <= p->reached + 1 && p->got[i].max > p->reached) {
				p->reached = p->got[i].max;
				p->objects++;
				moved = true;
			}
		}
	}
	if (p->shown && p->reached > from) {
		/* TXIDs from+1 .. reached: indexes from-base .. reached-base-1 */
		uint64_t lo = from > p->base ? from - p->base : 0;
		uint64_t hi = p->reached - p->base < p->cap ? p->reached - p->base : p->cap;

		for (uint64_t i = lo; i < hi; i++)
			p->shown[i] = t;
	}
	return 0;
}

static void *poll_main(void *arg)
{
	struct poller *p = arg;

	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	p->first = now();
	for (double next = p->first;;) {
		uint64_t tgt;

		poll_once(p, true);
		tgt = atomic_load(&p->target);
		if ((tgt && p->reached >= tgt) || p->last >= atomic_load(&p->deadline))
			break;
		next += POLL_MS / 1e3;
		if (next < p->last)
			next = p->last;
		sleep_until(next);
	}
	return NULL;
}

static int lag(const char *dbpath, const char *url, double rate, double secs)
{
	struct poller p = { .name = NULL };
	struct ltfs_err err = { 0 };
	char ppos[4096];
	const char *slash = strrchr(dbpath, '/');
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	double *committed = NULL, *lags = NULL, t0, wall, end;
	uint64_t end_txid;
	size_t n = 0, m = 0, missing = 0;
	pthread_t th;
	bool started = false;
	int rc = 1;

	p.name = slash ? slash + 1 : dbpath;
	snprintf(ppos, sizeof(ppos), "%s-pos", dbpath);
	p.cap = (size_t)(rate * secs) + 16;
	if (p.cap > MAX_COMMITS)
		p.cap = MAX_COMMITS;
	committed = calloc(p.cap, sizeof(*committed));
	lags = malloc(p.cap * sizeof(*lags));
	if (!committed || !lags) {
		fprintf(stderr, "bench-backup: out of memory\n");
		goto out;
	}
	if (open_bucket(url, &p.s3) < 0)
		goto out;
	if (s3_conn_open(p.s3, &p.conn, &err) < 0) {
		fprintf(stderr, "bench-backup: %s\n", err.msg);
		goto out;
	}
	if (open_commit_db(dbpath, &db, &st) < 0)
		goto out;
	if (!(p.base = read_pos(ppos))) {
		fprintf(stderr, "bench-backup: '%s': no position\n", ppos);
		goto out;
	}
	/* the bucket holds everything before the run */
	end = now() + SYNC_TIMEOUT;
	while (poll_once(&p, p.reached > 0) < 0 || p.reached < p.base) {
		if (now() > end) {
			fprintf(stderr, "bench-backup: the bucket reached TXID %llu, not the node's %llu, "
				"in %.0f s%s%s\n", (unsigned long long)p.reached,
				(unsigned long long)p.base, SYNC_TIMEOUT, p.err[0] ? ": " : "", p.err);
			goto out;
		}
		sleep_until(now() + 0.01);
	}
	if (p.reached != p.base) {
		fprintf(stderr, "bench-backup: the bucket is at TXID %llu, past the node's %llu\n",
			(unsigned long long)p.reached, (unsigned long long)p.base);
		goto out;
	}
	p.shown = malloc(p.cap * sizeof(*p.shown));
	if (!p.shown) {
		fprintf(stderr, "bench-backup: out of memory\n");
		goto out;
	}
	for (size_t i = 0; i < p.cap; i++)
		p.shown[i] = -1;
	p.polls = p.errors = p.objects = 0;
	p.listing = 0;
	atomic_store(&p.target, 0);
	atomic_store(&p.deadline, now() + secs + 60);
	if (pthread_create(&th, NULL, poll_main, &p) != 0) {
		fprintf(stderr, "bench-backup: cannot start the poller\n");
		goto out;
	}
	started = true;

	t0 = now();
	for (n = 0; n < p.cap; n++) {
		double at = t0 + (double)n / rate;

		if (at - t0 >= secs)
			break;
		sleep_until(at);
		if (sqlite3_step(st) != SQLITE_DONE) {
			fprintf(stderr, "bench-backup: insert: %s\n", sqlite3_errmsg(db));
			break;
		}
		committed[n] = now();
		sqlite3_reset(st);
	}
	wall = now() - t0;
	end_txid = read_pos(ppos);
	atomic_store(&p.target, p.base + n);
	atomic_store(&p.deadline, now() + DRAIN_TIMEOUT);
	pthread_join(th, NULL);
	started = false;

	for (size_t i = 0; i < n; i++) {
		if (p.shown[i] < 0)
			missing++;
		else
			lags[m++] = (p.shown[i] - committed[i]) * 1e3;
	}
	qsort(lags, m, sizeof(*lags), cmp_double);
	printf("n=%zu secs=%.3f rate=%.1f p50=%.3f p99=%.3f max=%.3f missing=%zu objects=%llu "
	       "poll_ms=%.2f list_ms=%.2f errors=%llu txid_ok=%d\n",
	       n, wall, wall > 0 ? (double)n / wall : 0, pct(lags, m, 0.50), pct(lags, m, 0.99),
	       m ? lags[m - 1] : 0, missing, (unsigned long long)p.objects,
	       p.polls > 1 ? (p.last - p.first) / (double)(p.polls - 1) * 1e3 : 0,
	       p.polls ? p.listing / (double)p.polls * 1e3 : 0, (unsigned long long)p.errors,
	       end_txid == p.base + n);
	if (end_txid != p.base + n)
		fprintf(stderr, "bench-backup: the node is at TXID %llu after %zu commits from %llu: "
			"other writers?\n", (unsigned long long)end_txid, n,
			(unsigned long long)p.base);
	if (missing)
		fprintf(stderr, "bench-backup: %zu of %zu commits never showed in the bucket (it "
			"reached TXID %llu of %llu)\n", missing, n, (unsigned long long)p.reached,
			(unsigned long long)(p.base + n));
	if (p.errors)
		fprintf(stderr, "bench-backup: %llu of %llu listings failed; the last: %s\n",
			(unsigned long long)p.errors, (unsigned long long)p.polls, p.err);
	rc = 0;
out:
	if (started) {
		atomic_store(&p.deadline, 0);
		pthread_join(th, NULL);
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	s3_conn_free(p.conn);
	s3_free(p.s3);
	free(p.got);
	free(p.shown);
	free(committed);
	free(lags);
	return rc;
}

int main(int argc, char **argv)
{
	double a, b;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fprintf(stderr, "bench-backup: curl_global_init failed\n");
		return 1;
	}
	if (argc == 6 && strcmp(argv[1], "save") == 0 &&
	    parse_double(argv[5], 1, MAX_THREADS, &a) == 0)
		return xfer(argv[2], argv[3], argv[4], a, NULL, false);
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "load") == 0 &&
	    parse_double(argv[5], 1, MAX_THREADS, &a) == 0)
		return xfer(argv[2], argv[3], argv[4], a, argc == 7 ? argv[6] : NULL, true);
	if (argc == 5 && strcmp(argv[1], "put") == 0)
		return put(argv[2], argv[3], argv[4]);
	if (argc == 5 && strcmp(argv[1], "top") == 0)
		return top(argv[2], argv[3], argv[4]);
	if (argc == 6 && strcmp(argv[1], "lag") == 0 &&
	    parse_double(argv[4], 1, 1e5, &a) == 0 && parse_double(argv[5], 0.1, 3600, &b) == 0)
		return lag(argv[2], argv[3], a, b);
	fprintf(stderr, "usage: see tests/bench/backup.c\n");
	return 2;
}
