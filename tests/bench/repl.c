/*
 * repl.c - the replication measurements of `make bench`, driven by
 * tests/bench/repl on a primary and replicas mounted on loopback.
 *
 *   bench-repl lag PRIMARY_DB REPLICA_POS RATE SECONDS [poll|read]
 *       One-row transactions (WAL, synchronous=NORMAL) on PRIMARY_DB, a
 *       database in the primary's mount, RATE per second on a fixed
 *       schedule (0 = as fast as possible) for SECONDS. Commit i is TXID
 *       base + 1 + i, base being the primary's NAME-pos before the first one
 *       (checked against NAME-pos after the last). A second thread reads
 *       REPLICA_POS, the same database's NAME-pos on a replica, with pread
 *       on one open descriptor (a direct_io file: every read reaches the
 *       daemon), and notes when each TXID first shows there; between two
 *       reads it waits in poll() for the replica to announce a new
 *       position (poll, the default), or sleeps POLL_US (read: 75 us, a
 *       read loop that costs the replica about 13,000 requests a second).
 *       Lag = shown - committed. Prints one line:
 *       "n=N secs=S rate=R p50=MS p99=MS max=MS missing=N poll_us=US txid_ok=0|1"
 *       (poll_us: the mean time between two reads).
 *   bench-repl wait POS WANT SECONDS
 *       Wait until the file POS (it may not exist yet: tried every
 *       millisecond) holds WANT, reading it whenever poll() says it
 *       changed; prints "t=SECONDS" (CLOCK_REALTIME) then. Exits 1 after
 *       SECONDS without it.
 *
 * Reports only: a slow replica gives large figures, never a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "tests/bench/bench.h"
#define POLL_US 75               /* from one read of REPLICA_POS to the next */
#define SYNC_TIMEOUT 30.0        /* s: replica reaching the primary before the run */
#define DRAIN_TIMEOUT 20.0       /* s: replica reaching the last commit after it */
#define MAX_COMMITS 4000000      /* per run, whatever the rate */
#define MAX_POLLS 100000000      /* per run, whatever the time */
#define POS_LEN 34               /* "TXID/CHECKSUM\n" */

static void sleep_for(double secs)
{
	sleep_until(now() + secs);
}

/*
 * Wait for the next change of fd (a NAME-pos): poll() it, at most 20 ms.
 * `stale` (woken last time, yet nothing new) means a daemon without poll()
 * support, which answers at once: a fixed `period` first. True when poll()
 * said it changed.
 */
static bool await_change(int fd, bool stale, double period)
{
	struct pollfd pf = { .fd = fd, .events = POLLIN };

	if (stale)
		sleep_for(period);
	return poll(&pf, 1, 20) > 0;
}

/* Read a whole small file into buf (NUL-terminated); its length or -1. */
static ssize_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = pread(fd, buf, cap - 1, 0);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return n;
}

/* ---- lag ---------------------------------------------------------------- */

struct poller {
	int fd;                       /* REPLICA_POS, open */
	uint64_t base;                /* TXID before the first measured commit */
	size_t cap;
	double *shown;                /* [i]: when TXID base+1+i first showed; < 0 = not yet */
	_Atomic uint64_t target;      /* stop once this TXID showed; 0 = not known yet */
	_Atomic double deadline;      /* stop at this time anyway */
	uint64_t polls, errors, seen;
	double first, last;           /* times of the first and last read */
	bool wait_poll;               /* poll() between reads, not POLL_US sleeps */
};

static void *poll_main(void *arg)
{
	struct poller *p = arg;
	char buf[64];
	uint64_t before = 0;
	bool woke = false;

	/* sleeps as short as asked, not rounded up by the default 50 us slack */
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	p->first = now();
	for (double next = p->first;;) {
		ssize_t n = pread(p->fd, buf, sizeof(buf), 0);
		double t = now();
		uint64_t txid, tgt;

		p->polls++;
		p->last = t;
		txid = n > 0 ? pos_txid(buf, (size_t)n) : 0;
		if (txid == 0)
			p->errors++;
		if (txid > p->seen) {
			/* every TXID up to it shows now: indexes seen-base .. txid-base-1 */
			uint64_t hi = txid - p->base < p->cap ? txid - p->base : p->cap;

			for (uint64_t i = p->seen - p->base; i < hi; i++)
				p->shown[i] = t;
			p->seen = txid;
		}
		tgt = atomic_load(&p->target);
		if ((tgt && p->seen >= tgt) || t >= atomic_load(&p->deadline) ||
		    p->polls >= MAX_POLLS)
			break;
		if (p->wait_poll) {
			woke = await_change(p->fd, woke && txid <= before, POLL_US / 1e6);
			before = p->seen;
			continue;
		}
		/* a fixed period; no sleep when the read itself took longer */
		next += POLL_US / 1e6;
		if (next < t)
			next = t;
		sleep_until(next);
	}
	return NULL;
}

/* Wait until the replica's position equals the primary's; 0 or -1. */
static int wait_same(const char *ppos, const char *rpos, double timeout)
{
	char a[64], b[64];
	double end = now() + timeout;

	while (now() < end) {
		if (read_small(ppos, a, sizeof(a)) == POS_LEN &&
		    read_small(rpos, b, sizeof(b)) == POS_LEN && strcmp(a, b) == 0)
			return 0;
		sleep_for(0.002);
	}
	if (read_small(ppos, a, sizeof(a)) < 0)
		a[0] = '\0';
	if (read_small(rpos, b, sizeof(b)) < 0)
		b[0] = '\0';
	fprintf(stderr, "bench-repl: '%s' (%.33s) did not reach '%s' (%.33s) in %.0f s\n",
		rpos, b, ppos, a, timeout);
	return -1;
}

static int lag(const char *dbpath, const char *rpos, double rate, double secs,
	       bool wait_poll)
{
	struct poller p = { .fd = -1, .wait_poll = wait_poll };
	char ppos[4096], buf[64];
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	double *committed = NULL, *lags = NULL, t0, t, wall;
	uint64_t end_txid = 0;
	size_t n = 0, m = 0, missing = 0;
	pthread_t th;
	bool started = false;
	int rc = 1;

	snprintf(ppos, sizeof(ppos), "%s-pos", dbpath);
	p.cap = rate > 0 ? (size_t)(rate * secs) + 16 : (size_t)(secs * 200000);
	if (p.cap > MAX_COMMITS)
		p.cap = MAX_COMMITS;
	committed = calloc(p.cap, sizeof(*committed));
	p.shown = malloc(p.cap * sizeof(*p.shown));
	lags = malloc(p.cap * sizeof(*lags));
	if (!committed || !p.shown || !lags) {
		fprintf(stderr, "bench-repl: out of memory\n");
		goto out;
	}
	for (size_t i = 0; i < p.cap; i++)
		p.shown[i] = -1;

	if (open_commit_db(dbpath, &db, &st) < 0)
		goto out;
	if (wait_same(ppos, rpos, SYNC_TIMEOUT) < 0)
		goto out;
	if (read_small(ppos, buf, sizeof(buf)) != POS_LEN || !(p.base = pos_txid(buf, POS_LEN))) {
		fprintf(stderr, "bench-repl: '%s': no position\n", ppos);
		goto out;
	}
	p.fd = open(rpos, O_RDONLY | O_CLOEXEC);
	if (p.fd < 0) {
		fprintf(stderr, "bench-repl: '%s': %s\n", rpos, strerror(errno));
		goto out;
	}
	p.seen = p.base;
	atomic_store(&p.target, 0);
	atomic_store(&p.deadline, now() + secs + 60);
	if (pthread_create(&th, NULL, poll_main, &p) != 0) {
		fprintf(stderr, "bench-repl: cannot start the poller\n");
		goto out;
	}
	started = true;

	t0 = now();
	for (n = 0; n < p.cap; n++) {
		if (rate > 0) {
			double at = t0 + (double)n / rate;

			if (at - t0 >= secs)
				break;
			sleep_until(at);
		} else if (now() - t0 >= secs) {
			break;
		}
		if (sqlite3_step(st) != SQLITE_DONE) {
			fprintf(stderr, "bench-repl: insert: %s\n", sqlite3_errmsg(db));
			break;
		}
		committed[n] = now();
		sqlite3_reset(st);
	}
	wall = now() - t0;
	atomic_store(&p.target, p.base + n);
	atomic_store(&p.deadline, now() + DRAIN_TIMEOUT);
	if (read_small(ppos, buf, sizeof(buf)) == POS_LEN)
		end_txid = pos_txid(buf, POS_LEN);
	pthread_join(th, NULL);
	started = false;

	for (size_t i = 0; i < n; i++) {
		if (p.shown[i] < 0)
			missing++;
		else
			lags[m++] = (p.shown[i] - committed[i]) * 1e3;
	}
	qsort(lags, m, sizeof(*lags), cmp_double);
	t = p.polls > 1 ? (p.last - p.first) / (double)(p.polls - 1) * 1e6 : 0;
	printf("n=%zu secs=%.3f rate=%.1f p50=%.3f p99=%.3f max=%.3f missing=%zu poll_us=%.1f txid_ok=%d\n",
	       n, wall, wall > 0 ? (double)n / wall : 0, pct(lags, m, 0.50), pct(lags, m, 0.99),
	       m ? lags[m - 1] : 0, missing, t, end_txid == p.base + n);
	if (end_txid != p.base + n)
		fprintf(stderr, "bench-repl: the primary is at txid %llu after %zu commits from %llu: other writers?\n",
			(unsigned long long)end_txid, n, (unsigned long long)p.base);
	if (missing)
		fprintf(stderr, "bench-repl: %zu of %zu commits never showed on '%s' (it reached txid %llu of %llu)\n",
			missing, n, rpos, (unsigned long long)p.seen, (unsigned long long)(p.base + n));
	if (p.errors)
		fprintf(stderr, "bench-repl: %llu of %llu reads of '%s' gave no position\n",
			(unsigned long long)p.errors, (unsigned long long)p.polls, rpos);
	rc = 0;
out:
	if (started) {
		atomic_store(&p.deadline, 0);
		pthread_join(th, NULL);
	}
	if (p.fd >= 0)
		close(p.fd);
	sqlite3_finalize(st);
	sqlite3_close(db);
	free(committed);
	free(p.shown);
	free(lags);
	return rc;
}

/* ---- wait --------------------------------------------------------------- */

static int wait_pos(const char *path, const char *want, double timeout)
{
	char buf[64], prev[64];
	size_t wl = strlen(want);
	double end = now() + timeout;
	struct timespec ts;
	ssize_t last = -1;
	bool woke = false;
	int fd = -1;

	while (now() < end) {
		ssize_t n;

		/* the file shows once the database exists; then poll() on it */
		if (fd < 0 && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			sleep_for(0.001);
			continue;
		}
		n = pread(fd, buf, sizeof(buf) - 1, 0);
		if (n > 0 && buf[n - 1] == '\n')
			n--;
		if (n >= 0 && (size_t)n == wl && memcmp(buf, want, wl) == 0) {
			clock_gettime(CLOCK_REALTIME, &ts);
			printf("t=%lld.%09ld\n", (long long)ts.tv_sec, ts.tv_nsec);
			close(fd);
			return 0;
		}
		/* gone (a fixed period too), or woken with nothing new */
		woke = await_change(fd, n < 0 || (woke && n == last && memcmp(buf, prev, (size_t)n) == 0),
				    0.001);
		if (n >= 0) {
			memcpy(prev, buf, (size_t)n);
			last = n;
		}
	}
	if (fd >= 0)
		close(fd);
	fprintf(stderr, "bench-repl: '%s' did not read '%s' in %.0f s (last: '%s')\n", path,
		want, timeout, read_small(path, buf, sizeof(buf)) > 0 ? buf : "");
	return 1;
}

int main(int argc, char **argv)
{
	double rate, secs;

	if ((argc == 6 || (argc == 7 && (strcmp(argv[6], "poll") == 0 ||
					  strcmp(argv[6], "read") == 0))) &&
	    strcmp(argv[1], "lag") == 0 && parse_double(argv[4], 0, 1e6, &rate) == 0 &&
	    parse_double(argv[5], 0.1, 3600, &secs) == 0)
		return lag(argv[2], argv[3], rate, secs, argc == 6 || strcmp(argv[6], "poll") == 0);
	if (argc == 5 && strcmp(argv[1], "wait") == 0 &&
	    parse_double(argv[4], 0.1, 3600, &secs) == 0)
		return wait_pos(argv[2], argv[3], secs);
	fprintf(stderr, "usage: see tests/bench/repl.c\n");
	return 2;
}
