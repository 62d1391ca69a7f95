/*
 * lease.c - the writer behind tests/bench/lease.
 *
 *   bench-lease writer SECONDS OUT DB...
 *       Workers insert one row at a time into the DBs (one per node's
 *       mount) for SECONDS; a refused or failing row gets a fresh
 *       connection 5 ms later. Every acknowledged commit is written to OUT
 *       as the CLOCK_REALTIME ms and the DB's number (1 = the first), one
 *       line each. The shell script puts its own events (kill, promote) on
 *       the same clock and reads the gaps.
 *       Like an app's pool of connections, not one client trying the
 *       nodes in turn: each DB has a worker, and a worker stuck for more
 *       than STALL_S gets a fresh one beside it. A connection left on a
 *       killed node's mount spins in SQLite's WAL retry loop for 10 s
 *       (every lock fails), even once the node has restarted and become
 *       the primary again; a client with one connection per node would
 *       time that loop, not the failover.
 *   bench-lease commits N DB
 *       N commits, one row each, timed one by one: prints
 *       "p50_ms p99_ms commits_per_s".
 */
#include <pthread.h>
#include <stdbool.h>
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

#define STALL_S 0.3
#define WORKERS_MAX 64 /* per DB, over the whole run */

struct worker {
	pthread_t thread;
	struct writer *w;
	int number;         /* 1 = the first DB */
	double attempt;     /* when the current attempt began, 0 between */
	bool done;          /* retired after a stall, or out of time */
};

struct writer {
	pthread_mutex_t mu;
	char **dbs;
	double end;
	FILE *out;          /* shared: stdio locks it per call */
	long rows;
};

static void set_attempt(struct worker *k, double t)
{
	pthread_mutex_lock(&k->w->mu);
	k->attempt = t;
	pthread_mutex_unlock(&k->w->mu);
}

static void *worker_main(void *arg)
{
	struct worker *k = arg;
	struct writer *w = k->w;
	sqlite3 *db = NULL;
	long rows = 0;

	while (now() < w->end) {
		double t0 = now();

		set_attempt(k, t0);
		if (!db)
			db = open_db(w->dbs[k->number - 1]);
		if (db && sqlite3_exec(db, "INSERT INTO w VALUES(1)", NULL, NULL, NULL) == SQLITE_OK) {
			fprintf(w->out, "%.0f %d\n", wall_ms(), k->number);
			fflush(w->out);
			rows++;
			continue;
		}
		set_attempt(k, 0);
		if (db)
			sqlite3_close(db);
		db = NULL;
		if (now() - t0 > STALL_S) {
			/* a fresh worker took over meanwhile: say what held this one */
			fprintf(stderr, "writer: %.0f %s: stalled %.0f ms\n", wall_ms(),
				w->dbs[k->number - 1], (now() - t0) * 1e3);
			break;
		}
		usleep(5000);
	}
	if (db)
		sqlite3_close(db);
	pthread_mutex_lock(&w->mu);
	k->done = true;
	w->rows += rows;
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* 1 if DB number has a worker that is not stalled */
static bool has_live_worker(struct worker *ks, int nk, int number, double t)
{
	for (int i = 0; i < nk; i++)
		if (ks[i].number == number && !ks[i].done &&
		    (ks[i].attempt == 0 || t - ks[i].attempt <= STALL_S))
			return true;
	return false;
}

static int writer(double secs, const char *out, char **dbs, int n)
{
	struct writer w = { .mu = PTHREAD_MUTEX_INITIALIZER, .dbs = dbs,
			    .end = now() + secs, .out = fopen(out, "w") };
	struct worker *ks = calloc((size_t)n * WORKERS_MAX, sizeof(*ks));
	int *started = calloc((size_t)n, sizeof(*started));
	int nk = 0;

	if (!w.out || !ks || !started) {
		perror(out);
		return 1;
	}
	while (now() < w.end) {
		for (int d = 1; d <= n; d++) {
			bool live;

			pthread_mutex_lock(&w.mu);
			live = has_live_worker(ks, nk, d, now());
			pthread_mutex_unlock(&w.mu);
			if (live || started[d - 1] == WORKERS_MAX)
				continue;
			ks[nk] = (struct worker){ .w = &w, .number = d };
			if (pthread_create(&ks[nk].thread, NULL, worker_main, &ks[nk]) != 0) {
				fprintf(stderr, "writer: cannot start a thread\n");
				break;
			}
			nk++;
			started[d - 1]++;
		}
		usleep(20000);
	}
	for (int i = 0; i < nk; i++)
		pthread_join(ks[i].thread, NULL);
	fclose(w.out);
	fprintf(stderr, "writer: %ld commits, %d workers\n", w.rows, nk);
	free(ks);
	free(started);
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
