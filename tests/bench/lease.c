/*
 * lease.c - the writer behind tests/bench/lease.
 *
 *   bench-lease writer SECONDS OUT DB...
 *       Insert one row at a time into the first DB that takes it (a row
 *       refused or failing moves on to the next DB, with a fresh
 *       connection), for SECONDS, writing the CLOCK_REALTIME ms of every
 *       acknowledged commit and the DB's number (1 = the first) to OUT,
 *       one line each. The shell script puts
 *       its own events (kill, promote) on the same clock and reads the
 *       gaps.
 *   bench-lease commits N DB
 *       N commits, one row each, timed one by one: prints
 *       "p50_ms p99_ms commits_per_s".
 */
#include <string.h>
#include <unistd.h>

#include "bench.h"

static double wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static sqlite3 *open_db(const char *path)
{
	sqlite3 *db = NULL;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, 200);
	if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS w(x)", NULL, NULL,
			 NULL) != SQLITE_OK) {
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

static int writer(double secs, const char *out, char **dbs, int n)
{
	FILE *f = fopen(out, "w");
	double end = now() + secs;
	sqlite3 *db = NULL;
	int at = 0;
	long rows = 0;

	if (!f) {
		perror(out);
		return 1;
	}
	while (now() < end) {
		if (!db)
			db = open_db(dbs[at]);
		if (db && sqlite3_exec(db, "INSERT INTO w VALUES(1)", NULL, NULL, NULL) == SQLITE_OK) {
			fprintf(f, "%.0f %d\n", wall_ms(), at + 1);
			rows++;
			continue;
		}
		if (db)
			sqlite3_close(db);
		db = NULL;
		at = (at + 1) % n;
		usleep(5000);
	}
	if (db)
		sqlite3_close(db);
	fclose(f);
	fprintf(stderr, "writer: %ld commits\n", rows);
	return 0;
}

static int commits(long n, const char *path)
{
	sqlite3 *db = open_db(path);
	double *lat = malloc((size_t)n * sizeof(*lat)), t0;

	if (!db || !lat) {
		fprintf(stderr, "%s: cannot open\n", path);
		return 1;
	}
	t0 = now();
	for (long i = 0; i < n; i++) {
		double t = now();

		if (sqlite3_exec(db, "INSERT INTO w VALUES(1)", NULL, NULL, NULL) != SQLITE_OK) {
			fprintf(stderr, "%s: %s\n", path, sqlite3_errmsg(db));
			return 1;
		}
		lat[i] = (now() - t) * 1e3;
	}
	t0 = now() - t0;
	qsort(lat, (size_t)n, sizeof(*lat), cmp_double);
	printf("%.2f %.2f %.0f\n", pct(lat, (size_t)n, 0.50), pct(lat, (size_t)n, 0.99),
	       (double)n / t0);
	sqlite3_close(db);
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	double secs;

	if (argc >= 5 && strcmp(argv[1], "writer") == 0 && parse_double(argv[2], 0.1, 3600, &secs) == 0)
		return writer(secs, argv[3], argv + 4, argc - 4);
	if (argc == 4 && strcmp(argv[1], "commits") == 0 && atol(argv[2]) > 0)
		return commits(atol(argv[2]), argv[3]);
	fprintf(stderr, "usage: bench-lease writer SECONDS OUT DB... | commits N DB\n");
	return 2;
}
