/*
 * restore.c - bring back a database from the bucket, at its newest state,
 * at a TXID, or as it was at a moment.
 *
 * Plan: list PREFIX/NAME/, start from the newest snapshot (level 9) that
 * the target allows, then repeatedly take, across all levels, the file
 * that continues the chain (min <= reached + 1) and reaches furthest
 * (ties: the smaller min, then the higher level). The fewest files, in
 * TXID order.
 *
 * Execution: worker threads download the files of the plan in parallel
 * while the calling thread applies them in order onto OUT.tmp with
 * ltx_build_apply(), which checks each file's pre- and post-apply
 * checksums. A small file is fetched whole into memory by the workers; a
 * big one the applier pulls itself as it applies it (s3_reader), from
 * libcurl's buffer straight into the decoder's: with a worker filling a
 * ring buffer in its place, the restore spent a quarter of its CPU copying
 * into it and took 10 to 15% longer. The checksum of the result is
 * computed from the very pages written, and ltx_build_apply() checks it
 * against each file's post-apply checksum; reading the whole file back to
 * check it again cost a sixth of a restore, so only a chain without
 * checksums is read back, for the checksum it reports. The pages go out
 * through the build's write-behind thread, long runs with O_DIRECT (see
 * ltx/writebehind.c for why). The result is synced and renamed into
 * place: a bad object stops the restore with its key named, and never
 * leaves a wrong database at OUT.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster_int.h"

#define RESTORE_FILES_MAX 1000000
#define RESTORE_PARALLEL_MAX 64
#define RESTORE_MEM_FILE (4u << 20) /* fetched whole; larger ones are pulled */
#define RESTORE_FLUSH_MS 50
#define CATCH_UP_SET_ASIDE_MAX 8 /* files one catch-up may set aside */

struct rfile {
	char key[S3_KEY_MAX];
	unsigned level;
	uint64_t min, max, size;
	int64_t mtime_ms, ts_ms;  /* ts_ms: commit time (HEAD metadata), 0 = unknown */
	bool leads;               /* catch-up: a gapless run from it reaches the target */
	bool refused;             /* catch-up: set aside (damaged, or not continued) */
	/* download state of a small file, guarded by the job's mutex (a big
	 * one is pulled by the applier) */
	struct ltfs_buf mem;
	int rc;
	bool done;
	char err[LTFS_ERR_MSG_MAX];
};

struct listing {
	const char *bucket, *prefix, *db;
	struct rfile *v;
	size_t n, cap;
};

static int on_object(void *ctx, const struct s3_object *o)
{
	struct listing *l = ctx;
	char name[FRAME_NAME_MAX + 1];
	struct rfile *f;
	unsigned level;
	uint64_t min, max;

	if (s3_ltx_key_parse(l->prefix, o->key, name, sizeof(name), &level, &min, &max) < 0 ||
	    strcmp(name, l->db) != 0 || (level > 9))
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		struct rfile *v;

		if (cap > RESTORE_FILES_MAX)
			return LTFS_E_LIMIT;
		v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	f = &l->v[l->n++];
	memset(f, 0, sizeof(*f));
	snprintf(f->key, sizeof(f->key), "%s", o->key);
	f->level = level;
	f->min = min;
	f->max = max;
	f->size = o->size;
	f->mtime_ms = o->mtime_ms;
	return 0;
}

/* Is the file allowed by the target? For a moment, its commit time must
 * be before it. The upload time (LastModified) is never earlier than the
 * commit, so only files uploaded around or after the moment need a look at their
 * header's timestamp (one ranged GET of its first bytes): exact to the
 * millisecond whoever wrote the file, where metadata may be missing and
 * HEAD's Last-Modified has whole seconds. */
static int allowed(struct s3_conn *c, struct rfile *f, uint64_t txid, int64_t before_ms,
		   struct ltfs_err *err)
{
	if (txid && f->max > txid)
		return 0;
	if (!before_ms)
		return 1;
	/* listings may give whole seconds (AWS does): only an upload a full
	 * second before the moment is surely before it */
	if (f->mtime_ms && f->mtime_ms + 1000 <= before_ms)
		return 1;
	if (!f->ts_ms) {
		struct ltx_header h;
		struct ltfs_buf b;
		int rc;

		ltfs_buf_init(&b, LTX_HEADER_SIZE);
		rc = s3_get(c, f->key, 0, LTX_HEADER_SIZE, &b, NULL, err);
		if (rc == 0 && b.len != LTX_HEADER_SIZE)
			rc = ltfs_err_set(err, LTFS_E_TRUNCATED, "%s: shorter than an LTX header", f->key);
		if (rc == 0 && (rc = ltx_header_decode(b.data, &h, err)) < 0)
			ltfs_err_prefix(err, "%s", f->key);
		ltfs_buf_release(&b);
		if (rc < 0)
			return rc;
		f->ts_ms = h.timestamp;
	}
	return f->ts_ms < before_ms;
}

/* Choose the files; plan[] gets indexes into l->v. */
static int make_plan(struct s3_conn *c, struct listing *l, uint64_t txid, int64_t before_ms,
		     size_t **plan_out, size_t *np, struct ltfs_err *err)
{
	size_t *plan = NULL, n = 0;
	uint64_t reached = 0;
	int rc = 0;

	*plan_out = NULL;
	*np = 0;
	if (l->n == 0)
		return ltfs_err_set(err, -ENOENT, "no LTX files for '%s' under s3://%s%s%s", l->db,
				    l->bucket, l->prefix[0] ? "/" : "", l->prefix);
	plan = malloc(l->n * sizeof(*plan));
	if (!plan)
		return ltfs_err_set(err, -ENOMEM, NULL);
	/* the newest snapshot the target allows */
	for (size_t i = 0; i < l->n; i++) {
		struct rfile *f = &l->v[i];

		if (f->level != 9 || f->min != 1 || f->max <= reached)
			continue;
		rc = allowed(c, f, txid, before_ms, err);
		if (rc < 0)
			goto fail;
		if (rc == 1) {
			plan[0] = i;
			n = 1;
			reached = f->max;
		}
	}
	for (;;) {
		size_t best = l->n;

		for (size_t i = 0; i < l->n; i++) {
			struct rfile *f = &l->v[i], *b = best < l->n ? &l->v[best] : NULL;

			if (f->min > reached + 1 || f->max <= reached)
				continue;
			if (b && (f->max < b->max || (f->max == b->max && f->min > b->min) ||
				  (f->max == b->max && f->min == b->min && f->level <= b->level)))
				continue;
			rc = allowed(c, f, txid, before_ms, err);
			if (rc < 0)
				goto fail;
			if (rc == 1)
				best = i;
		}
		if (best == l->n)
			break;
		plan[n++] = best;
		reached = l->v[best].max;
		if (txid && reached == txid)
			break;
	}
	rc = 0;
	if (n == 0 || l->v[plan[0]].min != 1) {
		rc = ltfs_err_set(err, LTFS_E_TXID,
				  "'%s': the bucket has no snapshot or chain from TXID 1%s", l->db,
				  txid || before_ms ? " within the target" : "");
	} else if (txid && reached != txid) {
		rc = ltfs_err_set(err, LTFS_E_TXID,
				  "'%s': TXID %llu is not in the bucket (its files reach TXID %llu "
				  "without a gap)",
				  l->db, (unsigned long long)txid, (unsigned long long)reached);
	} else if (!txid && !before_ms) {
		/* latest: a file beyond the chain means a hole in the bucket */
		for (size_t i = 0; i < l->n && rc == 0; i++)
			if (l->v[i].min > reached + 1)
				rc = ltfs_err_set(err, LTFS_E_TXID,
						  "'%s': the chain stops at TXID %llu but %s starts at %llu: "
						  "the files between are missing (restore --txid %llu for "
						  "the state before the gap)",
						  l->db, (unsigned long long)reached, l->v[i].key,
						  (unsigned long long)l->v[i].min,
						  (unsigned long long)reached);
	}
	if (rc < 0)
		goto fail;
	*plan_out = plan;
	*np = n;
	return 0;
fail:
	free(plan);
	return rc;
}

/* ---- parallel downloads -------------------------------------------------- */

struct job {
	struct s3 *s3;
	struct rfile *files;
	size_t *plan, n;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t next;              /* next plan entry to fetch */
	size_t window;            /* fetched but not yet applied, at most */
	size_t applied;
	bool stop;
	int out;                  /* OUT.tmp, for the flusher */
	bool flushed;             /* the flusher may end */
};

static int to_mem(void *ctx, const void *p, size_t n)
{
	return ltfs_buf_append(ctx, p, n);
}

/* A failed download as the restore's error: a file gone (404, deleted
 * by retention) makes a new plan (LTFS_E_STATE, cluster_restore). */
static int download_failed(int rc, const char *msg, struct ltfs_err *err)
{
	return ltfs_err_set(err, rc == -ENOENT ? LTFS_E_STATE : rc, "%s", msg);
}

/* A download that ended well delivered as many bytes as listed. */
static int check_size(const struct rfile *f, uint64_t got, struct ltfs_err *err)
{
	if (got == f->size)
		return 0;
	return ltfs_err_set(err, LTFS_E_TRUNCATED, "%s: %llu bytes downloaded, the listing said %llu",
			    f->key, (unsigned long long)got, (unsigned long long)f->size);
}

/* Fetch one small file of the plan whole (j->mu not held). */
static int fetch(struct s3_conn *c, struct rfile *f, struct ltfs_err *err)
{
	uint64_t got = 0;
	int rc;

	ltfs_buf_init(&f->mem, f->size + 1);
	rc = s3_get_sink(c, f->key, to_mem, &f->mem, &got, err);
	return rc < 0 ? rc : check_size(f, got, err);
}

static void *fetch_main(void *arg)
{
	struct job *j = arg;
	struct s3_conn *c = NULL;
	struct ltfs_err err = { 0 };
	int crc = s3_conn_open(j->s3, &c, &err);

	pthread_setname_np(pthread_self(), "restore-fetch");
	pthread_mutex_lock(&j->mu);
	for (;;) {
		struct rfile *f;
		size_t i;
		int rc;

		while (!j->stop && j->next < j->n && j->next >= j->applied + j->window)
			pthread_cond_wait(&j->cv, &j->mu);
		if (j->stop || j->next >= j->n)
			break;
		i = j->next++;
		f = &j->files[j->plan[i]];
		if (f->size > RESTORE_MEM_FILE)
			continue; /* the applier pulls it itself */
		pthread_mutex_unlock(&j->mu);
		rc = crc < 0 ? crc : fetch(c, f, &err);
		pthread_mutex_lock(&j->mu);
		f->rc = rc;
		if (rc < 0)
			snprintf(f->err, sizeof(f->err), "%s", err.msg);
		f->done = true;
		pthread_cond_broadcast(&j->cv);
	}
	pthread_mutex_unlock(&j->mu);
	s3_conn_free(c);
	return NULL;
}

/* Start writeback of OUT.tmp as it is written, so that the fsync at the
 * end finds little left to do (it would otherwise add the whole file's
 * write-out to the restore's time). */
static void *flush_main(void *arg)
{
	struct job *j = arg;

	pthread_setname_np(pthread_self(), "restore-flush");
	pthread_mutex_lock(&j->mu);
	while (!j->flushed && !j->stop) {
		cl_cond_wait_ms(&j->cv, &j->mu, RESTORE_FLUSH_MS);
		pthread_mutex_unlock(&j->mu);
		sync_file_range(j->out, 0, 0, SYNC_FILE_RANGE_WRITE);
		pthread_mutex_lock(&j->mu);
	}
	pthread_mutex_unlock(&j->mu);
	return NULL;
}

/* A big file, pulled from the bucket on this thread as it is applied. */
static int apply_pulled(struct s3_conn *c, struct rfile *f, struct ltx_build *b, int out,
			unsigned flags, struct ltx_header *h, struct ltfs_err *err)
{
	struct s3_reader *rd;
	struct ltfs_err ferr = { 0 };
	uint64_t got = 0;
	int rc = s3_reader_open(c, f->key, &rd, err);
	int frc;

	if (rc < 0)
		return rc;
	rc = ltx_build_apply(b, out, s3_reader_read, rd, flags, h, err);
	frc = s3_reader_close(rd, &got, &ferr);
	/* a failed download explains a broken stream better than the decoder */
	if (frc < 0)
		return download_failed(frc, ferr.msg, err);
	if (rc == 0)
		return check_size(f, got, err);
	if (rc < 0)
		ltfs_err_prefix(err, "%s", f->key);
	return rc;
}

/* Apply file f of the plan: a small one once it arrived (j->mu not held). */
static int apply_one(struct job *j, struct s3_conn *c, struct rfile *f, struct ltx_build *b,
		     int out, unsigned flags, struct ltx_header *h, struct ltfs_err *err)
{
	struct ltx_mem_source mem;
	int rc, frc;

	if (f->size > RESTORE_MEM_FILE)
		return apply_pulled(c, f, b, out, flags, h, err);
	pthread_mutex_lock(&j->mu);
	while (!f->done)
		pthread_cond_wait(&j->cv, &j->mu);
	frc = f->rc;
	pthread_mutex_unlock(&j->mu);
	if (frc < 0)
		return download_failed(frc, f->err, err);
	mem = (struct ltx_mem_source){ .data = f->mem.data, .len = f->mem.len };
	rc = ltx_build_apply(b, out, ltx_read_mem, &mem, flags, h, err);
	ltfs_buf_release(&f->mem);
	if (rc < 0)
		ltfs_err_prefix(err, "%s", f->key);
	return rc;
}

/* ---- the whole restore --------------------------------------------------- */

static const char *const companions[] = { "", "-wal", "-shm", "-journal" };

/* OUT and its companions: absent, or regular files that --force replaces. */
static int check_target_free(const char *out, bool force, struct ltfs_err *err)
{
	char path[4096];
	struct stat st;

	for (size_t i = 0; i < 4; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s%s", out, companions[i]) >= sizeof(path))
			return ltfs_err_set(err, LTFS_E_USAGE, "output path too long");
		if (lstat(path, &st) != 0)
			continue;
		if (!S_ISREG(st.st_mode))
			return ltfs_err_set(err, LTFS_E_USAGE, "'%s' exists and is not a regular file",
					    path);
		if (!force)
			return ltfs_err_set(err, LTFS_E_USAGE,
					    "'%s' exists; not overwritten without --force", path);
	}
	return 0;
}

/* With --force, right before OUT is replaced: a stale WAL beside the new
 * file would be replayed into it. */
static int remove_companions(const char *out, struct ltfs_err *err)
{
	char path[4096];

	for (size_t i = 1; i < 4; i++) {
		snprintf(path, sizeof(path), "%s%s", out, companions[i]);
		if (unlink(path) != 0 && errno != ENOENT)
			return ltfs_err_set(err, -errno, "'%s': %s", path, strerror(errno));
	}
	return 0;
}

/*
 * OUT.tmp (open as fd, complete, its checksum checked) becomes OUT: synced,
 * the stale companions removed under force, renamed (never over an
 * existing OUT without force), the directory synced.
 */
static int commit_output(int fd, const char *tmp, const char *out, bool force,
			 struct ltfs_err *err)
{
	char dirbuf[4096];
	int dfd;

	if (fsync(fd) != 0)
		return ltfs_err_set(err, -errno, "fsync '%s': %s", tmp, strerror(errno));
	if (force && remove_companions(out, err) < 0)
		return err->code;
	if ((force ? rename(tmp, out)
		   : renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_NOREPLACE)) != 0)
		return ltfs_err_set(err, -errno, "'%s': %s", out, strerror(errno));
	snprintf(dirbuf, sizeof(dirbuf), "%s", out);
	dfd = open(dirname(dirbuf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

static int restore_once(const struct cluster_restore_opts *o, struct cluster_restore_result *res,
			struct ltfs_err *err);

/* Retention may delete a planned file while it is downloaded: a file gone
 * (404) makes a new plan from a new listing, a few times. */
int cluster_restore(const struct cluster_restore_opts *o, struct cluster_restore_result *res,
		    struct ltfs_err *err)
{
	int rc = 0;

	for (int attempt = 0; attempt < 3; attempt++) {
		rc = restore_once(o, res, err);
		if (rc != LTFS_E_STATE)
			break;
		if (o->log)
			ltfs_info(o->log, "restore", "%s; planning again", err->msg);
	}
	return rc == LTFS_E_STATE ? -ENOENT : rc;
}

/*
 * A bucket used with a lease publishes each database's head in the lease
 * object: objects past it were left by a deposed primary and are no part
 * of the database's history. Restores stop at the head.
 */
static int published_bound(const struct cluster_restore_opts *o, uint64_t *txid,
			   struct ltfs_err *err)
{
	uint64_t head = 0, sum;
	int rc = cl_lease_read_head(o->s3, o->db, &head, &sum, err);

	if (rc == -ENOENT || (rc == 0 && head == 0))
		return 0;
	if (rc < 0)
		return rc;
	if (*txid > head)
		return ltfs_err_set(err, LTFS_E_TXID,
				    "'%s': TXID %llu is past TXID %llu, the newest the lease object "
				    "publishes", o->db, (unsigned long long)*txid,
				    (unsigned long long)head);
	if (!*txid)
		*txid = head;
	return 0;
}

static int restore_once(const struct cluster_restore_opts *o, struct cluster_restore_result *res,
			struct ltfs_err *err)
{
	struct listing l = { .bucket = s3_bucket(o->s3), .prefix = s3_prefix(o->s3), .db = o->db };
	struct job j = { .s3 = o->s3 };
	pthread_t threads[RESTORE_PARALLEL_MAX], flusher;
	bool flusher_started = false;
	size_t nthreads = 0, *plan = NULL, np = 0;
	char prefix[S3_KEY_MAX], tmp[4096];
	struct ltx_build build;
	struct s3_conn *c = NULL;
	uint64_t cksum = LTX_CHECKSUM_FLAG, total = 0, done_bytes = 0, reached = 0, txid = o->txid;
	struct ltx_header h = { 0 };
	struct timespec t0, t1;
	int out = -1, dout = -1, rc;

	memset(res, 0, sizeof(*res));
	ltx_build_init(&build);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_mutex_init(&j.mu, NULL);
	pthread_cond_init(&j.cv, NULL);
	rc = fs_db_name_check(o->db, err);
	if (rc == 0)
		rc = check_target_free(o->out, o->force, err);
	if (rc == 0 && s3_key(o->s3, prefix, "%s/", o->db) < 0)
		rc = ltfs_err_set(err, LTFS_E_LIMIT, "database name too long");
	if (rc == 0)
		rc = s3_conn_open(o->s3, &c, err);
	if (rc == 0)
		rc = s3_list(c, prefix, on_object, &l, err);
	if (rc == LTFS_E_LIMIT)
		ltfs_err_set(err, rc, "'%s': more than %d files in the bucket", o->db, RESTORE_FILES_MAX);
	if (rc == 0)
		rc = published_bound(o, &txid, err);
	if (rc == 0)
		rc = make_plan(c, &l, txid, o->before_ms, &plan, &np, err);
	if (rc < 0)
		goto out;
	for (size_t i = 0; i < np; i++)
		total += l.v[plan[i]].size;
	res->files = np;
	res->bytes = total;
	if (o->log)
		ltfs_info(o->log, "restore", "'%s': %zu files, %llu bytes, TXID %llu..%llu", o->db, np,
			  (unsigned long long)total, (unsigned long long)l.v[plan[0]].min,
			  (unsigned long long)l.v[plan[np - 1]].max);
	if (o->dry_run) {
		res->txid = l.v[plan[np - 1]].max;
		goto out;
	}

	snprintf(tmp, sizeof(tmp), "%s.tmp", o->out);
	unlink(tmp);
	out = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (out < 0) {
		rc = ltfs_err_set(err, -errno, "'%s': %s", tmp, strerror(errno));
		goto out;
	}
	/* the same file for the write-behind's long runs (see ltx.h); a file
	 * system without O_DIRECT gets them through the page cache */
	dout = open(tmp, O_WRONLY | O_DIRECT | O_CLOEXEC);
	rc = ltx_build_write_behind(&build, out, dout, err);
	if (rc < 0)
		goto out;
	j.files = l.v;
	j.plan = plan;
	j.n = np;
	j.window = 2 * (o->parallel ? o->parallel : 8);
	j.out = out;
	flusher_started = pthread_create(&flusher, NULL, flush_main, &j) == 0;
	for (; nthreads < (o->parallel ? o->parallel : 8) && nthreads < RESTORE_PARALLEL_MAX &&
	       nthreads < np;
	     nthreads++)
		if (pthread_create(&threads[nthreads], NULL, fetch_main, &j) != 0)
			break;
	if (nthreads == 0) {
		rc = ltfs_err_set(err, -EAGAIN, "cannot start download threads");
		goto out;
	}
	for (size_t i = 0; i < np && rc == 0; i++) {
		struct rfile *f = &l.v[plan[i]];

		/* a file reaching back into what is applied overlaps it */
		rc = apply_one(&j, c, f, &build, out,
			       f->min > 1 && f->min <= reached ? LTX_APPLY_OVERLAP : 0, &h, err);
		reached = f->max;
		pthread_mutex_lock(&j.mu);
		j.applied = i + 1;
		pthread_cond_broadcast(&j.cv);
		pthread_mutex_unlock(&j.mu);
		done_bytes += f->size;
		if (rc == 0 && o->progress)
			o->progress(o->progress_ctx, done_bytes, total, i + 1, np);
	}
	cksum = build.checksum;
	pthread_mutex_lock(&j.mu);
	j.flushed = true;
	pthread_cond_broadcast(&j.cv);
	pthread_mutex_unlock(&j.mu);
	if (flusher_started) {
		pthread_join(flusher, NULL);
		flusher_started = false;
	}
	if (rc == 0 && h.commit == 0)
		rc = ltfs_err_set(err, -ENOENT,
				  "'%s' was deleted at TXID %llu; restore an earlier --txid or --timestamp",
				  o->db, (unsigned long long)h.max_txid);
	if (rc == 0 && !ltx_header_has_checksums(&h))
		/* a chain without checksums (Litestream's) checked nothing: the
		 * checksum reported is the file's own */
		rc = ltx_db_checksum_fd(out, h.page_size, h.commit, &cksum, err);
	if (rc == 0)
		rc = commit_output(out, tmp, o->out, o->force, err);
	if (rc == 0) {
		res->txid = h.max_txid;
		res->checksum = cksum;
		res->page_size = h.page_size;
		res->pages = h.commit;
		res->timestamp_ms = h.timestamp;
	}
out:
	pthread_mutex_lock(&j.mu);
	j.stop = true;
	pthread_cond_broadcast(&j.cv);
	pthread_mutex_unlock(&j.mu);
	for (size_t i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	if (flusher_started)
		pthread_join(flusher, NULL);
	for (size_t i = 0; i < l.n; i++)
		ltfs_buf_release(&l.v[i].mem);
	ltx_build_release(&build);
	if (dout >= 0)
		close(dout);
	if (out >= 0) {
		close(out);
		if (rc < 0)
			unlink(tmp);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	res->secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	s3_conn_free(c);
	free(plan);
	free(l.v);
	pthread_cond_destroy(&j.cv);
	pthread_mutex_destroy(&j.mu);
	return rc;
}

/* ---- a new node from the bucket ------------------------------------------ */

struct names {
	const char *prefix;
	char **v;
	size_t n, cap;
};

static int on_name(void *ctx, const struct s3_object *o)
{
	struct names *l = ctx;
	char name[FRAME_NAME_MAX + 1];
	unsigned level;
	uint64_t min, max;

	if (s3_ltx_key_parse(l->prefix, o->key, name, sizeof(name), &level, &min, &max) < 0)
		return 0;
	/* keys come sorted: a name's files are together */
	if (l->n && strcmp(l->v[l->n - 1], name) == 0)
		return 0;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		char **v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n] = strdup(name);
	if (!l->v[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

int cluster_bootstrap(struct s3 *s3, const char *data_dir, struct ltfs_log *log, size_t *count,
		      struct ltfs_err *err)
{
	struct names l = { .prefix = s3_prefix(s3) };
	char prefix[S3_KEY_MAX], tmp[4096];
	struct s3_conn *c = NULL;
	int rc;

	*count = 0;
	snprintf(prefix, sizeof(prefix), "%s%s", s3_prefix(s3), s3_prefix(s3)[0] ? "/" : "");
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/bootstrap.db", data_dir) >= sizeof(tmp))
		return ltfs_err_set(err, LTFS_E_LIMIT, "data dir path too long");
	if (mkdir(data_dir, 0755) < 0 && errno != EEXIST)
		return ltfs_err_set(err, -errno, "data dir '%s': %s", data_dir, strerror(errno));
	rc = s3_conn_open(s3, &c, err);
	if (rc == 0)
		rc = s3_list(c, prefix, on_name, &l, err);
	s3_conn_free(c);
	for (size_t i = 0; i < l.n && rc == 0; i++) {
		struct cluster_restore_opts o = { .s3 = s3, .db = l.v[i], .out = tmp, .force = true,
						  .log = log };
		struct cluster_restore_result res;

		rc = cluster_restore(&o, &res, err);
		if (rc == -ENOENT) { /* deleted, or nothing but stray keys */
			ltfs_info(log, "bootstrap", "'%s': skipped: %s", l.v[i], err->msg);
			rc = 0;
			continue;
		}
		if (rc == 0)
			rc = fs_seed_db(data_dir, l.v[i], tmp, res.txid, res.timestamp_ms, err);
		if (rc == LTFS_E_STATE) { /* seeded by an earlier, interrupted start */
			unlink(tmp);
			rc = 0;
			continue;
		}
		if (rc == 0) {
			(*count)++;
			ltfs_info(log, "bootstrap", "'%s': restored TXID %llu (%u pages) from the bucket",
				  l.v[i], (unsigned long long)res.txid, res.pages);
		}
	}
	unlink(tmp);
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i]);
	free(l.v);
	return rc;
}

/* ---- a new primary's catch-up --------------------------------------------- */

static int cmp_min(const void *a, const void *b, void *ctx)
{
	const struct rfile *v = ctx;
	uint64_t x = v[*(const size_t *)a].min, y = v[*(const size_t *)b].min;

	return x < y ? -1 : x > y;
}

/*
 * Mark the files from which a gapless run of files (each starting right
 * after the last one's end) reaches target. A deposed primary's unpublished
 * files may reach further than the published chain's at the same TXID and
 * end where no file continues them: taking the longest file without this
 * would stop there, and every candidate after it would give the lease back.
 * Files sorted by start, decided from the last start down: a file leads
 * when it ends at target or a leading file starts right after it.
 */
static int mark_leads(struct listing *l, uint64_t target)
{
	size_t *by_min = malloc((l->n ? l->n : 1) * sizeof(*by_min));

	if (!by_min)
		return -ENOMEM;
	for (size_t i = 0; i < l->n; i++)
		by_min[i] = i;
	qsort_r(by_min, l->n, sizeof(*by_min), cmp_min, l->v);
	for (size_t k = l->n; k-- > 0;) {
		struct rfile *f = &l->v[by_min[k]];
		size_t lo = k + 1, hi = l->n;

		f->leads = !f->refused && f->max == target;
		if (f->leads || f->max > target || f->refused)
			continue;
		while (lo < hi) { /* the first file starting after f's end */
			size_t mid = lo + (hi - lo) / 2;

			if (l->v[by_min[mid]].min <= f->max)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (; lo < l->n && l->v[by_min[lo]].min == f->max + 1 && !f->leads; lo++)
			f->leads = l->v[by_min[lo]].leads;
	}
	free(by_min);
	return 0;
}

/* The leading file of l starting at `from` (1: any snapshot too) that
 * reaches furthest; l->n if none. */
static size_t next_step(const struct listing *l, uint64_t from)
{
	size_t best = l->n;

	for (size_t i = 0; i < l->n; i++) {
		const struct rfile *f = &l->v[i];

		if (f->min == from && f->leads && (best == l->n || f->max > l->v[best].max))
			best = i;
	}
	return best;
}

static int fetch_apply(struct cluster *c, struct s3_conn *conn, const char *db,
		       const struct rfile *f, struct ltfs_err *err)
{
	char stage[64];
	uint64_t got;
	int fd, rc;

	fd = fs_stage_create(c->fs, stage, err);
	if (fd < 0)
		return fd;
	rc = s3_get_fd(conn, f->key, fd, &got, err);
	if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0)
		rc = ltfs_err_set(err, -errno, "seek: %s", strerror(errno));
	if (rc == 0)
		rc = fs_apply_ltx(c->fs, db, fd, stage, NULL, NULL, err);
	else
		fs_stage_discard(c->fs, stage);
	close(fd);
	return rc;
}

/* Which file an apply error blames: the one applied before when the new
 * one does not continue it, the new one when it is damaged; n: neither
 * (I/O, the network). */
static size_t suspect(int rc, size_t file, size_t prev, size_t n)
{
	if (rc == LTFS_E_TXID)
		return prev;
	if (rc == LTFS_E_CHECKSUM || rc == LTFS_E_CORRUPT || rc == LTFS_E_TRUNCATED ||
	    rc == LTFS_E_FORMAT)
		return file;
	return n;
}

int cl_catch_up_db(struct cluster *c, struct s3_conn *conn, const char *db, uint64_t target,
		   uint64_t checksum, struct ltfs_err *err)
{
	struct listing l = { .bucket = s3_bucket(c->lease->s3), .prefix = s3_prefix(c->lease->s3),
			     .db = db };
	char prefix[S3_KEY_MAX];
	uint64_t pos = 0, sum = 0, reached;
	size_t prev, bad; /* prev: the file applied last in this run; l.n: none */
	unsigned set_aside = 0;
	bool scratch = false;
	int rc = 0;

	if (fs_db_position(c->fs, db, &pos, &sum) < 0)
		pos = 0;
	if (pos == target && sum == checksum)
		return 0;
	if (pos > target) {
		/* ahead of the bucket with what the old primary streamed: keep it
		 * if it continues the published head */
		struct ltx_header h;
		int fd;

		if (fs_history_open(c->fs, db, target + 1, &fd, &h, err) == 0) {
			close(fd);
			if (h.pre_apply_checksum == checksum)
				return 0;
		}
		scratch = true;
	} else if (pos == target || pos == 0) {
		scratch = true;
	}
	if (s3_key(c->lease->s3, prefix, "%s/", db) < 0)
		return ltfs_err_set(err, LTFS_E_LIMIT, "'%s': name too long", db);
	rc = s3_list(conn, prefix, on_object, &l, err);
	if (rc == 0 && (rc = mark_leads(&l, target)) < 0)
		ltfs_err_set(err, rc, NULL);
	prev = l.n;
	reached = scratch ? 0 : pos;
	while (rc == 0 && reached < target) {
		size_t i = next_step(&l, reached + 1);

		if (i == l.n && !scratch) {
			scratch = true; /* nothing continues us: start over from a snapshot */
			reached = 0;
			prev = l.n;
			continue;
		}
		if (i == l.n) {
			rc = ltfs_err_set(err, LTFS_E_TXID,
					  "'%s': the bucket has no file from TXID %llu towards the "
					  "published TXID %llu", db, (unsigned long long)reached + 1,
					  (unsigned long long)target);
			break;
		}
		rc = fetch_apply(c, conn, db, &l.v[i], err);
		if ((rc == LTFS_E_TXID || rc == LTFS_E_CHECKSUM) && !scratch) {
			ltfs_warn(c->log, "lease", "%s; starting '%s' over from a snapshot", err->msg, db);
			scratch = true;
			reached = 0;
			prev = l.n;
			rc = 0;
			continue;
		}
		if (rc < 0 && (bad = suspect(rc, i, prev, l.n)) < l.n &&
		    set_aside < CATCH_UP_SET_ASIDE_MAX) {
			/* a deposed primary's file, never published: another path
			 * through the bucket may lead to the target */
			ltfs_warn(c->log, "lease", "%s; setting %s aside: starting '%s' over", err->msg,
				  l.v[bad].key, db);
			l.v[bad].refused = true;
			set_aside++;
			scratch = true;
			rc = mark_leads(&l, target);
			if (rc < 0)
				ltfs_err_set(err, rc, NULL);
			reached = 0;
			prev = l.n;
			continue;
		}
		prev = i;
		reached = l.v[i].max;
	}
	free(l.v);
	if (rc == 0 && (fs_db_position(c->fs, db, &pos, &sum) < 0 || pos != target ||
			sum != checksum))
		rc = ltfs_err_set(err, LTFS_E_CHECKSUM,
				  "'%s': after the catch-up the database is at TXID %llu checksum "
				  "%016llx, the lease publishes TXID %llu checksum %016llx",
				  db, (unsigned long long)pos, (unsigned long long)sum,
				  (unsigned long long)target, (unsigned long long)checksum);
	if (rc == 0)
		ltfs_info(c->log, "lease", "'%s': caught up with the bucket to TXID %llu", db,
			  (unsigned long long)target);
	return rc;
}

/* ---- export: a node's database through its HTTP API ---------------------- */

int cluster_export(const struct cluster_export_opts *o, struct cluster_restore_result *res,
		   struct ltfs_err *err)
{
	struct ltfs_buf url;
	char tmp[4096], dirbuf[4096], msg[512] = "";
	struct ltx_header h = { 0 };
	uint64_t cksum = LTX_CHECKSUM_FLAG, bytes = 0;
	long status = 0;
	int lfd = -1, out = -1, rc;
	ssize_t n;

	memset(res, 0, sizeof(*res));
	ltfs_buf_init(&url, 16384);
	rc = fs_db_name_check(o->db, err);
	if (rc == 0)
		rc = check_target_free(o->out, o->force, err);
	if (rc == 0 && (size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", o->out) >= sizeof(tmp))
		rc = ltfs_err_set(err, LTFS_E_USAGE, "output path too long");
	if (rc == 0 && (ltfs_buf_printf(&url, "%s/v1/db/", o->url) < 0 ||
			cl_url_encode(&url, o->db, false) < 0 || ltfs_buf_printf(&url, "/ltx") < 0))
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	/* the node's history from TXID 1, compacted: one snapshot of its head */
	if (rc == 0) {
		unlink(tmp);
		out = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		snprintf(dirbuf, sizeof(dirbuf), "%s", o->out);
		lfd = out < 0 ? -1 : open(dirname(dirbuf), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (out < 0 || lfd < 0)
			rc = ltfs_err_set(err, -errno, "'%s': %s", tmp, strerror(errno));
	}
	if (rc == 0)
		rc = cluster_http_get_fd((const char *)url.data, o->token, lfd, &bytes, &status,
					 3600000L, err);
	if (rc == 0 && status != 200) {
		n = pread(lfd, msg, sizeof(msg) - 1, 0);
		msg[n > 0 ? n : 0] = '\0';
		rc = ltfs_err_set(err, status == 404 ? -ENOENT : -EIO, "%s answered %ld: %s",
				  (const char *)url.data, status, msg);
	}
	if (rc == 0 && lseek(lfd, 0, SEEK_SET) < 0)
		rc = ltfs_err_set(err, -errno, "lseek: %s", strerror(errno));
	if (rc == 0) {
		rc = ltx_apply_fd(out, lfd, &cksum, &h, err);
		if (rc < 0)
			ltfs_err_prefix(err, "the snapshot from %s", (const char *)url.data);
	}
	if (rc == 0 && h.commit == 0)
		rc = ltfs_err_set(err, -ENOENT, "'%s' is deleted on that node (TXID %llu)", o->db,
				  (unsigned long long)h.max_txid);
	if (rc == 0)
		rc = commit_output(out, tmp, o->out, o->force, err);
	if (rc == 0) {
		res->txid = h.max_txid;
		res->checksum = cksum;
		res->page_size = h.page_size;
		res->pages = h.commit;
		res->timestamp_ms = h.timestamp;
		res->files = 1;
		res->bytes = bytes;
	}
	if (lfd >= 0)
		close(lfd);
	if (out >= 0) {
		close(out);
		if (rc < 0)
			unlink(tmp);
	}
	ltfs_buf_release(&url);
	return rc;
}
