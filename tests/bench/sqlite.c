/*
 * sqlite.c - the SQLite workloads of `make bench`, run against a path that
 * is native, on a bare FUSE passthrough, or on ltfs.
 *
 *   bench-sqlite commits DB JOURNAL_MODE SYNCHRONOUS SECONDS MAX
 *       one-row transactions from one connection; prints "rate=N"
 *   bench-sqlite reads DB SECONDS MAX
 *       random point reads by primary key of table t; prints "rate=N"
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/bench/bench.h"

static int commits(sqlite3 *db, const char *mode, const char *sync,
		   double secs, long max)
{
	char sql[256];
	sqlite3_stmt *st;
	double t0, t;
	long n = 0;

	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=%s; PRAGMA synchronous=%s;"
		 "CREATE TABLE IF NOT EXISTS k(id INTEGER PRIMARY KEY, v BLOB);", mode, sync);
	if (exec(db, sql) < 0 ||
	    sqlite3_prepare_v2(db, "INSERT INTO k(v) VALUES (randomblob(100))", -1, &st, NULL) != SQLITE_OK)
		return -1;
	t0 = now();
	do {
		if (sqlite3_step(st) != SQLITE_DONE) {
			fprintf(stderr, "bench-sqlite: insert: %s\n", sqlite3_errmsg(db));
			return -1;
		}
		sqlite3_reset(st);
		n++;
		t = now() - t0;
	} while (t < secs && n < max);
	sqlite3_finalize(st);
	printf("rate=%.1f n=%ld secs=%.3f\n", (double)n / t, n, t);
	return 0;
}

static int reads(sqlite3 *db, double secs, long max)
{
	sqlite3_stmt *st, *mx;
	long top, n = 0;
	unsigned seed = 12345;
	double t0, t;

	if (sqlite3_prepare_v2(db, "SELECT max(id) FROM t", -1, &mx, NULL) != SQLITE_OK ||
	    sqlite3_step(mx) != SQLITE_ROW)
		return -1;
	top = (long)sqlite3_column_int64(mx, 0);
	sqlite3_finalize(mx);
	if (sqlite3_prepare_v2(db, "SELECT length(b) FROM t WHERE id = ?", -1, &st, NULL) != SQLITE_OK)
		return -1;
	exec(db, "BEGIN"); /* one read transaction: point reads, not lock traffic */
	t0 = now();
	do {
		seed = seed * 1103515245u + 12345u;
		sqlite3_bind_int64(st, 1, (long long)(((seed >> 8) % (unsigned long)top) + 1));
		if (sqlite3_step(st) != SQLITE_ROW) {
			fprintf(stderr, "bench-sqlite: read: %s\n", sqlite3_errmsg(db));
			return -1;
		}
		sqlite3_reset(st);
		n++;
		t = now() - t0;
	} while (t < secs && n < max);
	exec(db, "COMMIT");
	sqlite3_finalize(st);
	printf("rate=%.1f n=%ld secs=%.3f\n", (double)n / t, n, t);
	return 0;
}

int main(int argc, char **argv)
{
	sqlite3 *db;
	int rc;

	if (argc < 3) {
		fprintf(stderr, "usage: see tests/bench/sqlite.c\n");
		return 2;
	}
	if (sqlite3_open(argv[2], &db) != SQLITE_OK) {
		fprintf(stderr, "bench-sqlite: open '%s': %s\n", argv[2], sqlite3_errmsg(db));
		return 1;
	}
	sqlite3_busy_timeout(db, 5000);
	if (strcmp(argv[1], "commits") == 0 && argc == 7)
		rc = commits(db, argv[3], argv[4], atof(argv[5]), atol(argv[6]));
	else if (strcmp(argv[1], "reads") == 0 && argc == 5)
		rc = reads(db, atof(argv[3]), atol(argv[4]));
	else
		rc = -2;
	sqlite3_close(db);
	return rc == -2 ? 2 : rc < 0 ? 1 : 0;
}
