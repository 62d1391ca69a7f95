/*
 * compact.c - keep the bucket small and fast to restore from.
 *
 *   levels 1..N  every interval of level L, the files of level L-1 past
 *                level L's head are merged into one file at level L
 *                (defaults: 30 s, 5 min, 1 h);
 *   level 9      every snapshot interval (default 24 h), a snapshot
 *                1-HEAD built from the local history;
 *   retention    snapshots older than the retention (default 24 h) go,
 *                always keeping the newest; files of levels 1..N that end
 *                before the oldest snapshot kept go; level-0 files go once
 *                level 1 covers them and they are older than the level-0
 *                retention (default 5 min). A restore to any moment within
 *                the retention thus always finds a chain.
 *
 * One thread, with its own connection, beside the upload thread; it works
 * from the bucket's contents as the upload thread keeps them in memory
 * (listed once at start), so no LIST runs on a schedule. Objects are
 * created with If-None-Match: *; a crash between steps leaves either the
 * old or the new files, and both restore.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster_int.h"

#define MERGE_FILES_MAX 1024
#define MERGE_BYTES_MAX (256u << 20)

/* ---- the local history as one file --------------------------------------- */

int cl_history_compact(struct cluster *c, const char *name, uint64_t from, uint64_t to,
		       int *out_fd, struct ltx_header *oh, struct ltfs_err *err)
{
	struct ltx_decoder **decs = NULL;
	struct ltx_trailer ot;
	int *fds = NULL, out = -1, rc = 0;
	size_t n = 0, cap = 0;
	uint64_t next;
	char stage[64];

	*out_fd = -1;
	for (next = from; next <= to;) {
		struct ltx_header h;
		int fd;

		rc = fs_history_open(c->fs, name, next, &fd, &h, err);
		if (rc == -ENOENT && n > 0 && to == UINT64_MAX) {
			rc = 0;
			break; /* the head */
		}
		if (rc < 0) {
			if (rc == -ENOENT)
				ltfs_err_set(err, rc, "'%s': no history file starts at txid %llu", name,
					     (unsigned long long)next);
			goto out;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct ltx_decoder **d = realloc(decs, ncap * sizeof(*d));
			int *f = d ? realloc(fds, ncap * sizeof(*f)) : NULL;

			if (d)
				decs = d;
			if (!d || !f) {
				close(fd);
				rc = ltfs_err_set(err, -ENOMEM, NULL);
				goto out;
			}
			fds = f;
			cap = ncap;
		}
		fds[n] = fd;
		decs[n] = NULL;
		n++;
		next = h.max_txid + 1;
		if (h.max_txid >= to)
			break;
	}
	/* decoders keep a pointer into fds: open them once it stops moving */
	for (size_t i = 0; i < n; i++) {
		rc = ltx_decoder_open_fd(&decs[i], &fds[i], LTX_DEC_IN_MERGE, err);
		if (rc < 0) {
			ltfs_err_prefix(err, "'%s'", name);
			goto out;
		}
	}
	out = fs_stage_create(c->fs, stage, err);
	if (out < 0) {
		rc = out;
		goto out;
	}
	fs_stage_discard(c->fs, stage); /* used through the descriptor only */
	rc = ltx_compact(decs, n, NULL, ltx_write_fd, &out, oh, &ot, err);
	if (rc < 0)
		ltfs_err_prefix(err, "'%s': compact", name);
out:
	for (size_t i = 0; i < n; i++) {
		ltx_decoder_free(decs[i]);
		close(fds[i]);
	}
	free(decs);
	free(fds);
	if (rc < 0) {
		if (out >= 0)
			close(out);
		return rc;
	}
	*out_fd = out;
	return 0;
}

/* ---- the schedule -------------------------------------------------------- */

void cluster_backup_defaults(struct cluster_backup_opts *o)
{
	static const unsigned levels[] = { 30000, 300000, 3600000 };

	if (o->interval_ms < 0)
		o->interval_ms = 1000;
	if (o->nlevels == 0) {
		memcpy(o->levels_ms, levels, sizeof(levels));
		o->nlevels = 3;
	}
	if (o->snapshot_ms <= 0)
		o->snapshot_ms = 24 * 3600000ll;
	if (o->retention_ms <= 0)
		o->retention_ms = 24 * 3600000ll;
	if (o->l0_retention_ms <= 0)
		o->l0_retention_ms = 300000;
}

/* ---- one merge ----------------------------------------------------------- */

struct pick {
	uint64_t min, max;
	size_t n;
	uint64_t mins[MERGE_FILES_MAX], maxs[MERGE_FILES_MAX];
};

/*
 * The files of level `src` that continue level `dst` (c->mu held): from
 * dst's head + 1, or from src's first file when dst is empty, as long as
 * they chain, within the bounds.
 */
static void pick_files(const struct bdb *d, unsigned src, unsigned dst, struct pick *p)
{
	const struct blevel *s = &d->lv[src], *t = &d->lv[dst];
	uint64_t next = t->n ? t->v[t->n - 1].max + 1 : (s->n ? s->v[0].min : 0), bytes = 0;

	p->n = 0;
	for (size_t i = 0; i < s->n && p->n < MERGE_FILES_MAX; i++) {
		const struct bfile *f = &s->v[i];

		if (f->max < next)
			continue;
		/* a file reaching back before next overlaps what dst holds:
		 * merged results stay correct (newest page wins) */
		if (f->min > next || bytes + f->size > MERGE_BYTES_MAX)
			break;
		p->mins[p->n] = f->min;
		p->maxs[p->n] = f->max;
		p->n++;
		bytes += f->size;
		next = f->max + 1;
	}
	if (p->n) {
		p->min = p->mins[0];
		p->max = p->maxs[p->n - 1];
	}
}

/* Download the picked files of level src and merge them into out. A
 * deletion or a change of page size ends the run (the rest waits for the
 * next round); p->max and p->n are cut to what was merged. */
static int merge_level(struct cl_backup *b, const char *name, unsigned src, struct pick *p,
		       struct ltfs_buf *out, struct ltx_header *oh, struct ltfs_err *err)
{
	struct ltfs_buf *bufs = calloc(p->n, sizeof(*bufs));
	struct ltx_mem_source *srcs = calloc(p->n, sizeof(*srcs));
	struct ltx_decoder **decs = calloc(p->n, sizeof(*decs));
	struct ltx_trailer ot;
	size_t n = 0;
	int rc = 0;

	if (!bufs || !srcs || !decs)
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	for (size_t i = 0; i < p->n && rc == 0; i++) {
		char key[S3_KEY_MAX];
		const struct ltx_header *h;

		if (s3_ltx_key(b->s3, key, name, src, p->mins[i], p->maxs[i]) < 0) {
			rc = ltfs_err_set(err, LTFS_E_LIMIT, "'%s': key too long", name);
			break;
		}
		ltfs_buf_init(&bufs[i], MERGE_BYTES_MAX + (16u << 20));
		rc = s3_get(b->cconn, key, 0, 0, &bufs[i], NULL, err);
		if (rc < 0)
			break;
		srcs[i] = (struct ltx_mem_source){ .data = bufs[i].data, .len = bufs[i].len };
		rc = ltx_decoder_open(&decs[i], ltx_read_mem, &srcs[i], NULL, err);
		if (rc < 0) {
			ltfs_err_prefix(err, "%s", key);
			break;
		}
		h = ltx_decoder_header(decs[i]);
		if (i > 0 && (h->page_size != ltx_decoder_header(decs[0])->page_size ||
			      h->commit == 0 || (h->flags ^ ltx_decoder_header(decs[0])->flags))) {
			ltx_decoder_free(decs[i]);
			decs[i] = NULL;
			break;
		}
		n = i + 1;
		if (h->commit == 0)
			break; /* a deletion ends a run */
	}
	if (rc == 0 && n == 0)
		rc = ltfs_err_set(err, LTFS_E_STATE, "'%s': nothing to merge", name);
	if (rc == 0) {
		p->n = n;
		p->max = p->maxs[n - 1];
		rc = ltx_compact(decs, n, NULL, ltx_write_buf, out, oh, &ot, err);
		if (rc < 0)
			ltfs_err_prefix(err, "'%s': merging level %u", name, src);
	}
	for (size_t i = 0; i < p->n; i++) {
		if (decs)
			ltx_decoder_free(decs[i]);
		if (bufs)
			ltfs_buf_release(&bufs[i]);
	}
	free(bufs);
	free(srcs);
	free(decs);
	return rc;
}

/* Put a new object at level; created once (If-None-Match). An object
 * already there (a crash after its upload) is taken as it is. */
static int put_level(struct cl_backup *b, const char *name, unsigned level, uint64_t min,
		     uint64_t max, const void *data, int fd, uint64_t size, int64_t ts,
		     struct ltfs_err *err)
{
	struct s3_put_opts o = { .if_none_match = true, .timestamp_ms = ts };
	char key[S3_KEY_MAX];
	struct bdb *d;
	int rc;

	if (s3_ltx_key(b->s3, key, name, level, min, max) < 0)
		return ltfs_err_set(err, LTFS_E_LIMIT, "'%s': key too long", name);
	rc = data ? s3_put(b->cconn, key, data, size, &o, NULL, err)
		  : s3_put_fd(b->cconn, key, fd, size, &o, NULL, err);
	if (rc == LTFS_E_CONFLICT)
		rc = 0;
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&b->c->mu);
	d = cl_bdb_find(b, name, false);
	if (d)
		rc = cl_level_add(&d->lv[level], min, max, size, cl_now_ms());
	b->compactions++;
	pthread_mutex_unlock(&b->c->mu);
	ltfs_debug(b->c->log, "compact", "'%s': wrote %s (%llu bytes)", name, key,
		   (unsigned long long)size);
	return rc;
}

static int compact_level(struct cl_backup *b, const char *name, unsigned level,
			 struct ltfs_err *err)
{
	struct pick *p = malloc(sizeof(*p));
	struct ltx_header oh;
	struct ltfs_buf out;
	struct bdb *d;
	int rc;

	if (!p)
		return ltfs_err_set(err, -ENOMEM, NULL);
	pthread_mutex_lock(&b->c->mu);
	d = cl_bdb_find(b, name, false);
	p->n = 0;
	if (d)
		pick_files(d, level - 1, level, p);
	pthread_mutex_unlock(&b->c->mu);
	if (p->n == 0) {
		free(p);
		return 0;
	}
	ltfs_buf_init(&out, 2 * (size_t)MERGE_BYTES_MAX);
	rc = merge_level(b, name, level - 1, p, &out, &oh, err);
	if (rc == 0)
		rc = put_level(b, name, level, p->min, p->max, out.data, -1, out.len, oh.timestamp, err);
	ltfs_buf_release(&out);
	free(p);
	return rc;
}

/* A snapshot 1-HEAD from the local history, when the head moved past the
 * newest snapshot. */
static int snapshot(struct cl_backup *b, const char *name, struct ltfs_err *err)
{
	struct ltx_header oh;
	uint64_t last = 0;
	struct bdb *d;
	off_t size;
	int fd, rc;

	pthread_mutex_lock(&b->c->mu);
	d = cl_bdb_find(b, name, false);
	if (d && d->lv[SNAPSHOT_LEVEL].n)
		last = d->lv[SNAPSHOT_LEVEL].v[d->lv[SNAPSHOT_LEVEL].n - 1].max;
	rc = d && d->remote_txid > last ? 0 : 1;
	pthread_mutex_unlock(&b->c->mu);
	if (rc)
		return 0; /* nothing new since the last snapshot */
	rc = cl_history_compact(b->c, name, 1, UINT64_MAX, &fd, &oh, err);
	if (rc < 0)
		return rc;
	size = lseek(fd, 0, SEEK_END);
	if (oh.max_txid > last && oh.commit > 0 && size > 0)
		rc = put_level(b, name, SNAPSHOT_LEVEL, 1, oh.max_txid, NULL, fd, (uint64_t)size,
			       oh.timestamp, err);
	close(fd);
	return rc;
}

/* ---- retention ----------------------------------------------------------- */

struct doomed {
	unsigned level;
	uint64_t min, max;
};

/* What retention removes from one database now (c->mu held). */
static size_t pick_doomed(const struct cl_backup *b, const struct bdb *d, int64_t now,
			  struct doomed *out, size_t cap)
{
	const struct blevel *snaps = &d->lv[SNAPSHOT_LEVEL], *l1 = &d->lv[1];
	size_t n = 0, keep_from = 0;
	uint64_t covered;

	/* a snapshot goes when the next one already serves the whole window */
	while (keep_from + 1 < snaps->n && snaps->v[keep_from + 1].ts_ms < now - b->opts.retention_ms)
		keep_from++;
	for (size_t i = 0; i < keep_from && n < cap; i++)
		out[n++] = (struct doomed){ SNAPSHOT_LEVEL, snaps->v[i].min, snaps->v[i].max };
	/* compacted files before the oldest snapshot kept, once the level
	 * above holds them too (it merges from them) */
	if (snaps->n) {
		uint64_t floor = snaps->v[keep_from].max;

		for (unsigned l = 1; l < SNAPSHOT_LEVEL; l++) {
			const struct blevel *up = l < b->opts.nlevels ? &d->lv[l + 1] : NULL;
			uint64_t lim = up ? (up->n ? up->v[up->n - 1].max : 0) : UINT64_MAX;

			for (size_t i = 0; i + 1 < d->lv[l].n && n < cap; i++)
				if (d->lv[l].v[i].max < floor && d->lv[l].v[i].max <= lim)
					out[n++] = (struct doomed){ l, d->lv[l].v[i].min, d->lv[l].v[i].max };
		}
	}
	/* uploads once level 1 holds them and they are old enough */
	covered = l1->n ? l1->v[l1->n - 1].max : 0;
	for (size_t i = 0; i + 1 < d->lv[0].n && n < cap; i++) {
		const struct bfile *f = &d->lv[0].v[i];

		if (f->max > covered || f->ts_ms >= now - b->opts.l0_retention_ms)
			break;
		out[n++] = (struct doomed){ 0, f->min, f->max };
	}
	return n;
}

static void forget_file(struct blevel *lv, uint64_t min, uint64_t max)
{
	for (size_t i = 0; i < lv->n; i++) {
		if (lv->v[i].min == min && lv->v[i].max == max) {
			memmove(&lv->v[i], &lv->v[i + 1], (lv->n - i - 1) * sizeof(*lv->v));
			lv->n--;
			return;
		}
	}
}

static int retain(struct cl_backup *b, const char *name, struct ltfs_err *err)
{
	struct doomed v[256];
	size_t n = 0;
	struct bdb *d;
	int rc = 0;

	pthread_mutex_lock(&b->c->mu);
	d = cl_bdb_find(b, name, false);
	if (d)
		n = pick_doomed(b, d, cl_now_ms(), v, sizeof(v) / sizeof(v[0]));
	pthread_mutex_unlock(&b->c->mu);
	/* oldest first: a crash leaves a shorter past, never a hole */
	for (size_t i = 0; i < n && rc == 0; i++) {
		char key[S3_KEY_MAX];

		if (s3_ltx_key(b->s3, key, name, v[i].level, v[i].min, v[i].max) < 0)
			continue;
		rc = s3_delete(b->cconn, key, err);
		if (rc < 0)
			break;
		pthread_mutex_lock(&b->c->mu);
		d = cl_bdb_find(b, name, false);
		if (d)
			forget_file(&d->lv[v[i].level], v[i].min, v[i].max);
		b->deletions++;
		pthread_mutex_unlock(&b->c->mu);
	}
	return rc;
}

/* ---- the thread ---------------------------------------------------------- */

/* Names of the databases the bucket or the node knows (c->mu held). */
static char **names_of(struct cl_backup *b, size_t *n)
{
	char **v = calloc(b->ndbs ? b->ndbs : 1, sizeof(*v));

	*n = 0;
	if (!v)
		return NULL;
	for (size_t i = 0; i < b->ndbs; i++) {
		v[i] = strdup(b->dbs[i].name);
		if (!v[i])
			break;
		*n = i + 1;
	}
	return v;
}

/* The next wall-clock multiple of every (so schedules line up across
 * restarts and nodes). */
static int64_t next_multiple(int64_t now, int64_t every)
{
	return (now / every + 1) * every;
}

void *cl_compact_main(void *arg)
{
	struct cl_backup *b = arg;
	struct cluster *c = b->c;
	const struct cluster_backup_opts *o = &b->opts;
	int64_t due[BUCKET_LEVELS] = { 0 }, snap_due, now = cl_now_ms();

	pthread_setname_np(pthread_self(), "compact");
	for (unsigned l = 1; l <= o->nlevels; l++)
		due[l] = next_multiple(now, o->levels_ms[l - 1]);
	snap_due = next_multiple(now, o->snapshot_ms);
	pthread_mutex_lock(&c->mu);
	while (!c->stopping) {
		struct ltfs_err err = { 0 };
		bool run[BUCKET_LEVELS] = { false }, snap = false;
		char **names;
		size_t n;
		int rc = 0;

		cl_wait(c, 1000);
		now = cl_now_ms();
		if (c->stopping || !b->listed ||
		    (c->lease ? !c->serving || !cl_lease_valid(c) : !fs_is_primary(c->fs)))
			continue;
		for (unsigned l = 1; l <= o->nlevels; l++) {
			run[l] = now >= due[l];
			if (run[l])
				due[l] = next_multiple(now, o->levels_ms[l - 1]);
		}
		if (now >= snap_due) {
			snap = true;
			snap_due = next_multiple(now, o->snapshot_ms);
		}
		names = names_of(b, &n);
		pthread_mutex_unlock(&c->mu);
		for (size_t i = 0; i < n; i++) {
			for (unsigned l = 1; l <= o->nlevels && rc == 0; l++)
				if (run[l])
					rc = compact_level(b, names[i], l, &err);
			if (rc == 0 && snap)
				rc = snapshot(b, names[i], &err);
			if (rc == 0)
				rc = retain(b, names[i], &err);
			if (rc < 0 && rc != -ENOENT)
				ltfs_warn(c->log, "compact", "%s (again next round)", err.msg);
			rc = 0;
			free(names[i]);
		}
		free(names);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}
