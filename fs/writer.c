/*
 * writer.c - the LTX writer thread for WAL-mode commits.
 *
 * In WAL mode a commit is durable in the WAL itself, so the commit path
 * only validates the frames, updates the checksums and the position, and
 * queues a job on the database's own queue; this thread compresses the
 * pages (read again from the WAL) into the history file and then tells
 * the commit hook. File creation, rename and compression stay off SQLite's
 * commit latency. Databases with queued jobs wait in line, each for its
 * next file to be due (pacing, below), so that one busy database's
 * commits never cut another's files short.
 *
 * The frames a job names stay in place until the job is done: everything
 * that could overwrite or remove them (a WAL restart, truncation or
 * deletion, a checkpoint writing the database file) first waits for the
 * database's queue to drain (fs_writer_drain) and syncs the history.
 *
 * The thread never takes db->mu (the drain waits while holding it); the
 * history's pending-sync list has its own db->hist_mu.
 *
 * Folding old history files into a snapshot rewrites a whole database and
 * can take seconds on a loaded machine; it runs on a thread of its own so
 * that it never holds up the writer (a checkpoint waiting for the writer
 * gives up after WRITER_DRAIN_S with an I/O error).
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_int.h"

#define WRITER_MAX_QUEUED 4096
#define WRITER_MAX_RUN 256 /* commits merged into one file at most */
#define WRITER_DRAIN_S 5
#define FOLD_EVERY_S 1 /* the folder looks at the histories this often */

/*
 * Pacing: each file of a history costs every node something (create,
 * write, rename, fold; on each replica receive, stage, apply), so a busy
 * database should make few, each holding many commits, while a quiet one
 * should write each commit at once for the replicas' sake. A database's
 * next file therefore starts no sooner than PACE_NS_PER_RATE ns per commit
 * per second of its recent rate after the last one: at 1,000 commits/s a
 * file per ms, about one commit each; from 8,000/s on, a file per
 * PACE_MAX_NS, 64 commits and more. The rate is smoothed over about
 * PACE_SMOOTH_NS, so an idle database starts its next burst unpaced.
 */
#define PACE_NS_PER_RATE 1000
#define PACE_MAX_NS 8000000
#define PACE_SMOOTH_NS 50000000

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec mono_ts(int64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };

	return ts;
}

/* A file of `count` commits starts now: update the pace (w->mu held). */
static void pace_file(struct fs_db *db, uint32_t count, int64_t now)
{
	double dt = (double)(now - db->pace.last_ns), rate;

	if (db->pace.last_ns == 0 || dt <= 0)
		dt = PACE_SMOOTH_NS; /* the first file, or no time passed */
	/* the average of the old rate over PACE_SMOOTH_NS and this
	 * interval's, weighted by their lengths */
	rate = (db->pace.rate * PACE_SMOOTH_NS + count * 1e9) / (PACE_SMOOTH_NS + dt);
	db->pace.rate = rate;
	db->pace.last_ns = now;
	db->pace.next_ns = now + (rate * PACE_NS_PER_RATE < PACE_MAX_NS
					  ? (int64_t)(rate * PACE_NS_PER_RATE) : PACE_MAX_NS);
}

/* Each database with queued jobs has a place in line (w->mu held). */
static void busy_append(struct fs_writer *w, struct fs_db *db)
{
	db->queue.next_busy = NULL;
	if (w->busy_tail)
		w->busy_tail->queue.next_busy = db;
	else
		w->busy = db;
	w->busy_tail = db;
}

static void busy_remove(struct fs_writer *w, struct fs_db *db)
{
	struct fs_db **at = &w->busy, *prev = NULL;

	while (*at != db) {
		prev = *at;
		at = &prev->queue.next_busy;
	}
	*at = db->queue.next_busy;
	if (w->busy_tail == db)
		w->busy_tail = prev;
	db->queue.next_busy = NULL;
}

/* The number of jobs of db's next file if it is due now; else 0, and
 * *wake is brought forward to when it will be (w->mu held). */
static uint32_t due_run(struct fs_writer *w, struct fs_db *db, int64_t now, int64_t *wake)
{
	uint32_t count = db->queue.n < WRITER_MAX_RUN ? db->queue.n : WRITER_MAX_RUN;
	int64_t due = db->queue.head->due_ns;

	if (count >= WRITER_MAX_RUN || w->stop || w->hurry || now >= due)
		return count;
	if (due < *wake)
		*wake = due;
	return 0;
}

static int cmp_ref(const void *a, const void *b)
{
	const struct fs_page_ref *x = a, *y = b;

	return x->pgno < y->pgno ? -1 : x->pgno > y->pgno;
}

/*
 * Write the first `count` jobs of one database's queue as one file
 * covering their TXID range: under load the writer falls behind and each
 * file holds several commits, so creating files costs less per commit.
 */
static int write_jobs(struct fs *fs, struct fs_job *first, uint32_t count,
		      struct ltfs_err *err)
{
	struct fs_db *db = first->db;
	struct fs_job *last = first;
	struct ltx_header h;
	char name[LTX_FILENAME_SIZE], tmp[LTX_FILENAME_SIZE + 8];
	struct ltx_encoder *enc = NULL;
	struct fs_page_ref *refs;
	uint8_t *page = malloc(first->h.page_size);
	size_t nrefs = 0, total = 0, n = 0;
	uint64_t bytes = 0;
	int fd, rc;

	for (uint32_t i = 0; i < count; i++, last = last->next) {
		total += last->n;
		if (i + 1 == count)
			break;
	}
	refs = malloc((total ? total : 1) * sizeof(*refs));
	if (!page || !refs) {
		free(page);
		free(refs);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	for (struct fs_job *j = first;; j = j->next) {
		memcpy(refs + nrefs, j->refs, j->n * sizeof(*refs));
		nrefs += j->n;
		if (j == last)
			break;
	}
	{
		/* the newest version of each page: tag refs with their order,
		 * sort by page, keep the highest order of each page */
		struct tagged {
			struct fs_page_ref r;
			size_t order;
		} *t = malloc((nrefs ? nrefs : 1) * sizeof(*t));

		if (!t) {
			free(page);
			free(refs);
			return ltfs_err_set(err, -ENOMEM, NULL);
		}
		for (size_t i = 0; i < nrefs; i++) {
			t[i].r = refs[i];
			t[i].order = i;
		}
		qsort(t, nrefs, sizeof(*t), cmp_ref); /* compares t->r.pgno */
		for (size_t i = 0; i < nrefs;) {
			size_t j = i, best = i;

			while (j < nrefs && t[j].r.pgno == t[i].r.pgno) {
				if (t[j].order > t[best].order)
					best = j;
				j++;
			}
			if (t[best].r.pgno <= last->h.commit)
				refs[n++] = t[best].r;
			i = j;
		}
		free(t);
	}
	h = last->h;
	h.min_txid = first->h.min_txid;
	h.pre_apply_checksum = first->h.pre_apply_checksum;
	h.wal_offset = first->h.wal_offset;
	h.wal_size = last->h.wal_offset + last->h.wal_size - first->h.wal_offset;
	fd = fs_ltx_create(db, h.min_txid, h.max_txid, name, tmp, err);
	if (fd < 0) {
		free(page);
		free(refs);
		return fd;
	}
	rc = fs_fault_hit(fs, "writer-ltx") ? ltfs_err_set(err, -EIO, "injected fault")
					    : ltx_encoder_open(&enc, &h, NULL, ltx_write_fd,
							       &fd, err);
	for (size_t i = 0; rc == 0 && i < n; i++) {
		const struct fs_page_ref *r = &refs[i];

		if (r->off == FS_FROM_DB) {
			ssize_t got;

			memset(page, 0, h.page_size);
			got = pread(db->db_fd, page, h.page_size,
				    (off_t)(r->pgno - 1) * h.page_size);
			rc = got < 0 ? ltfs_err_set(err, -errno, "read page %u: %s",
						    r->pgno, strerror(errno)) : 0;
		} else {
			rc = ltx_pread_full(db->wal_fd, page, h.page_size, r->off);
			if (rc < 0)
				ltfs_err_set(err, rc, "read wal frame of page %u: %s",
					     r->pgno, ltfs_strerror(rc));
		}
		if (rc == 0)
			rc = ltx_encoder_add_page(enc, r->pgno, page, NULL, err);
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, last->post, NULL, err);
	if (rc == 0)
		bytes = ltx_encoder_bytes_written(enc);
	if (rc == 0)
		rc = fs_ltx_publish(db, fd, tmp, name, false, err);
	if (rc == 0) {
		pthread_mutex_lock(&db->hist_mu);
		rc = fs_db_defer_sync(db, fd);
		pthread_mutex_unlock(&db->hist_mu);
		fd = -1;
		if (rc < 0)
			ltfs_err_set(err, rc, "sync ltx history: %s", strerror(-rc));
	}
	ltx_encoder_free(enc);
	free(page);
	free(refs);
	if (fd >= 0) {
		close(fd);
		unlinkat(db->ltxfd, tmp, 0);
	}
	if (rc < 0) {
		ltfs_err_prefix(err, "'%s': write %s", db->name, name);
		return rc;
	}
	fs_db_published(db, &h, last->post, name, bytes);
	return 0;
}

static void job_free(struct fs_job *job)
{
	free(job);
}

/* Fold the history of each database that has grown (history.c). */
static void fold_histories(struct fs *fs)
{
	uint32_t keep = fs->cfg.history_keep ? fs->cfg.history_keep : 1000;

	for (size_t i = 0;; i++) {
		struct ltfs_err err = { 0 };
		struct fs_db *db;
		uint32_t nltx;
		uint64_t limit;
		int rc;

		pthread_mutex_lock(&fs->lock);
		db = i < fs->ndbs ? fs->dbs[i] : NULL;
		pthread_mutex_unlock(&fs->lock);
		if (!db)
			break;
		pthread_mutex_lock(&db->hist_mu);
		nltx = db->nltx;
		limit = fs->cfg.hold_unshipped ? db->shipped_txid : UINT64_MAX;
		pthread_mutex_unlock(&db->hist_mu);
		if (nltx <= 2 * keep || nltx < db->fold_at)
			continue;
		rc = fs_history_fold(db, keep, limit, &err);
		if (rc < 0)
			ltfs_warn(fs->log, "history", "%s", err.msg);
		/* not worth it (or failed): look again after `keep` more */
		if (rc <= 0)
			db->fold_at = nltx + keep;
		/* a fold reads many files at once (a decoder buffer each): give
		 * that memory back rather than keep it in this thread's arena */
		if (rc > 0)
			malloc_trim(0);
	}
}

static void *folder_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_writer *w = &fs->writer;

	pthread_setname_np(pthread_self(), "fold");
	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += FOLD_EVERY_S;
		pthread_cond_timedwait(&w->fold_cv, &w->mu, &ts);
		if (w->stop)
			break;
		pthread_mutex_unlock(&w->mu);
		fold_histories(fs);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void *writer_main(void *arg)
{
	struct fs *fs = arg;
	struct fs_writer *w = &fs->writer;

	pthread_setname_np(pthread_self(), "writer");
	pthread_mutex_lock(&w->mu);
	for (;;) {
		struct ltfs_err err = { 0 };
		int64_t now, wake = INT64_MAX;
		struct fs_db *db;
		uint32_t count = 0;
		int rc;

		while (!w->busy && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (!w->busy)
			break; /* stopping, nothing left */
		/* the first database in line whose next file is due; commits
		 * arriving before then join it */
		now = mono_ns();
		for (db = w->busy; db; db = db->queue.next_busy)
			if ((count = due_run(w, db, now, &wake)) > 0)
				break;
		if (!db) {
			struct timespec due = mono_ts(wake);

			pthread_cond_timedwait(&w->cv, &w->mu, &due);
			continue;
		}
		pace_file(db, count, now);
		pthread_mutex_unlock(&w->mu);
		fs_fault_stall(fs, "writer-slow", 1000);
		rc = write_jobs(fs, db->queue.head, count, &err);
		pthread_mutex_lock(&w->mu);
		/* its turn is over either way: the next in line goes first */
		busy_remove(w, db);
		if (rc < 0) {
			/* Keep the job: the frames stay until it is written.
			 * Retry after a pause; writers of new commits wait
			 * once the queue is full, nothing is lost. */
			struct timespec ts = mono_ts(mono_ns() + 1000000000);

			busy_append(w, db);
			ltfs_error(fs->log, "writer", "%s; retrying in 1 s", err.msg);
			if (w->stop)
				break; /* left in the WAL: recorded at the next start */
			pthread_cond_timedwait(&w->cv, &w->mu, &ts);
			continue;
		}
		while (count--) {
			struct fs_job *job = db->queue.head;

			db->queue.head = job->next;
			db->queue.n--;
			w->depth--;
			job_free(job);
		}
		if (db->queue.head)
			busy_append(w, db);
		else
			db->queue.tail = NULL;
		pthread_cond_broadcast(&w->done);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

int fs_writer_start(struct fs *fs)
{
	struct fs_writer *w = &fs->writer;
	pthread_condattr_t mono;

	pthread_condattr_init(&mono);
	pthread_condattr_setclock(&mono, CLOCK_MONOTONIC);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, &mono);
	pthread_condattr_destroy(&mono);
	pthread_cond_init(&w->done, NULL);
	pthread_cond_init(&w->fold_cv, NULL);
	if (pthread_create(&w->thread, NULL, writer_main, fs) != 0)
		return -EAGAIN;
	if (pthread_create(&w->folder, NULL, folder_main, fs) != 0) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
		return -EAGAIN;
	}
	w->running = true;
	return 0;
}

/* Drain everything, then stop the thread. */
void fs_writer_stop(struct fs *fs)
{
	struct fs_writer *w = &fs->writer;

	if (!w->running)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_broadcast(&w->cv);
	pthread_cond_broadcast(&w->fold_cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	pthread_join(w->folder, NULL);
	w->running = false;
	if (w->depth)
		ltfs_error(fs->log, "writer", "%u commits not written to the history; their frames stay in the WAL and are recorded at the next start",
			   w->depth);
	while (w->busy) {
		struct fs_db *db = w->busy;

		while (db->queue.head) {
			struct fs_job *job = db->queue.head;

			db->queue.head = job->next;
			job_free(job);
		}
		db->queue.tail = NULL;
		db->queue.n = 0;
		busy_remove(w, db);
	}
	w->depth = 0;
	pthread_cond_destroy(&w->cv);
	pthread_cond_destroy(&w->done);
	pthread_cond_destroy(&w->fold_cv);
	pthread_mutex_destroy(&w->mu);
}

/* Queue a job (takes ownership). Waits while the queue is full. */
void fs_writer_queue(struct fs *fs, struct fs_job *job)
{
	struct fs_writer *w = &fs->writer;
	struct fs_db *db = job->db;

	pthread_mutex_lock(&w->mu);
	while (w->depth >= WRITER_MAX_QUEUED)
		pthread_cond_wait(&w->done, &w->mu);
	job->next = NULL;
	job->due_ns = db->pace.next_ns;
	if (db->queue.tail) {
		db->queue.tail->next = job;
	} else {
		db->queue.head = job;
		busy_append(w, db);
	}
	db->queue.tail = job;
	db->queue.n++;
	w->depth++;
	/* A database's first queued commit wakes the writer: its file may be
	 * due before whatever the writer sleeps towards. The next ones join
	 * that file at its due time, so they cost no wakeup of their own
	 * unless they fill it. */
	if (db->queue.n == 1 || db->queue.n % WRITER_MAX_RUN == 0)
		pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/*
 * Wait until no job of `db` (NULL: of any database) is queued or running:
 * 0, or -EIO after WRITER_DRAIN_S seconds (the history cannot be written,
 * e.g. disk full; the caller refuses what would destroy the frames, SQLite
 * sees an I/O error, and nothing is lost). A job leaves the queue only
 * once it is written.
 */
int fs_writer_drain(struct fs *fs, struct fs_db *db)
{
	struct fs_writer *w = &fs->writer;
	struct timespec until;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WRITER_DRAIN_S;
	pthread_mutex_lock(&w->mu);
	w->hurry++; /* someone waits: no more pacing */
	pthread_cond_signal(&w->cv);
	while ((db ? db->queue.n > 0 : w->depth > 0) && rc == 0)
		if (pthread_cond_timedwait(&w->done, &w->mu, &until) == ETIMEDOUT)
			rc = -EIO;
	w->hurry--;
	pthread_mutex_unlock(&w->mu);
	if (rc < 0)
		ltfs_error(fs->log, "writer", "'%s': history not written after %d s (what waits "
					      "for it fails: a checkpoint, a handoff)",
			   db ? db->name : "every database", WRITER_DRAIN_S);
	return rc;
}

int fs_history_drain(struct fs *fs)
{
	return fs_writer_drain(fs, NULL);
}
