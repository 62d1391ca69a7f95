/*
 * bench.h - helpers the benchmark programs share. Header only: each .c
 * file of tests/bench is a program of its own.
 */
#ifndef LTFS_BENCH_H
#define LTFS_BENCH_H

#include <errno.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void sleep_until(double t)
{
	struct timespec ts;

	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
	if (ts.tv_nsec >= 1000000000L)
		ts.tv_nsec = 999999999L;
	for (int i = 0; i < 100; i++)
		if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != EINTR)
			break;
}

static inline int parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

/* The TXID of a NAME-pos text: its first 16 hex digits; 0 if malformed. */
static inline uint64_t pos_txid(const char *s, size_t n)
{
	uint64_t v = 0;

	if (n < 17 || s[16] != '/')
		return 0;
	for (size_t i = 0; i < 16; i++) {
		char c = s[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
			   : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) : 16;

		if (d > 15)
			return 0;
		v = v << 4 | d;
	}
	return v;
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static inline double pct(const double *v, size_t n, double q)
{
	size_t k = (size_t)(q * (double)n);

	if ((double)k < q * (double)n)
		k++; /* rounded up */
	return n == 0 ? 0 : v[k ? k - 1 : 0];
}

static inline int exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		fprintf(stderr, "bench: %s: %s\n", sql, msg ? msg : sqlite3_errmsg(db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

/* A WAL/NORMAL database with table k, and the one-row insert the lag
 * measurements commit: 0, or -1 with the reason on stderr. */
static inline int open_commit_db(const char *path, sqlite3 **db, sqlite3_stmt **st)
{
	if (sqlite3_open(path, db) != SQLITE_OK) {
		fprintf(stderr, "bench: open '%s': %s\n", path, sqlite3_errmsg(*db));
		return -1;
	}
	sqlite3_busy_timeout(*db, 5000);
	if (exec(*db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
		 "CREATE TABLE IF NOT EXISTS k(id INTEGER PRIMARY KEY, v BLOB);") < 0 ||
	    sqlite3_prepare_v2(*db, "INSERT INTO k(v) VALUES (randomblob(100))", -1, st,
			       NULL) != SQLITE_OK)
		return -1;
	return 0;
}

#endif /* LTFS_BENCH_H */
