/*
 * backup.c - the primary ships its LTX history to the bucket.
 *
 * Layout (docs/datadir.md, "Bucket"): PREFIX/NAME/LLLL/MIN-MAX.ltx, LLLL
 * the level in four hex digits: 0000 for what the primary uploads, 0009
 * for snapshots. Level-0 objects are created with If-None-Match: *, so a
 * TXID range is written once.
 *
 * One thread does it all, off the commit path: commits only bump c->gen.
 * Each round (every `interval` ms after a commit, or at once with 0) takes
 * the files of each database's local history past what the bucket holds,
 * merges a run of them into one LTX file when there are several, and
 * uploads it. A run spans at most `interval` of commit time, so a drained
 * backlog keeps that granularity; with 0 it is bounded only in files and
 * bytes: 0 means "do not wait to gather", and whatever piled up while an
 * upload was under way goes up as one object, not one per commit.
 *
 * With a lease an upload counts only once the lease names its TXID. A
 * round first uploads every database's run(s), then writes the lease once
 * for all of them (publish_round): one conditional PUT per round instead
 * of one per object, which is what lets the uploader keep up with a fast
 * writer and a handoff drain its backlog in one round.
 *
 * The bucket is listed once, at start and at each new epoch of ours;
 * after that the thread keeps the bucket's head per database in memory.
 * While the bucket cannot be reached the backlog stays in the local
 * history (fs_set_shipped() tells folding what it may take) and the round
 * is retried with backoff.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/cluster_int.h"

#define BATCH_FILES 256
#define BATCH_BYTES (64u << 20)   /* merged in memory up to this */
#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 30000

/* ---- per-database state (c->mu held) ------------------------------------- */

struct bdb *cl_bdb_find(struct cl_backup *b, const char *name, bool create)
{
	struct bdb *v;

	for (size_t i = 0; i < b->ndbs; i++)
		if (strcmp(b->dbs[i].name, name) == 0)
			return &b->dbs[i];
	if (!create)
		return NULL;
	v = realloc(b->dbs, (b->ndbs + 1) * sizeof(*v));
	if (!v)
		return NULL;
	b->dbs = v;
	memset(&v[b->ndbs], 0, sizeof(*v));
	v[b->ndbs].name = strdup(name);
	if (!v[b->ndbs].name)
		return NULL;
	return &v[b->ndbs++];
}

int cl_level_add(struct blevel *lv, uint64_t min, uint64_t max, uint64_t size, int64_t ts_ms)
{
	size_t i = lv->n;

	if (lv->n == lv->cap) {
		size_t cap = lv->cap ? 2 * lv->cap : 16;
		struct bfile *v = realloc(lv->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		lv->v = v;
		lv->cap = cap;
	}
	while (i > 0 && lv->v[i - 1].min > min) /* listings come sorted: rare */
		i--;
	memmove(&lv->v[i + 1], &lv->v[i], (lv->n - i) * sizeof(*lv->v));
	lv->v[i] = (struct bfile){ .min = min, .max = max, .size = size, .ts_ms = ts_ms };
	lv->n++;
	return 0;
}

/* ---- the bucket at start ----------------------------------------------- */

int s3_ltx_key(const struct s3 *s3, char *out, const char *name, unsigned level, uint64_t min,
	       uint64_t max)
{
	return s3_key(s3, out, "%s/%04x/%016llx-%016llx.ltx", name, level,
		      (unsigned long long)min, (unsigned long long)max);
}

int s3_ltx_key_parse(const char *prefix, const char *key, char *name, size_t n,
			unsigned *level, uint64_t *min, uint64_t *max)
{
	size_t pl = strlen(prefix), kl;
	const char *rest = key, *file, *lvl;
	unsigned long long a, z;
	char tail;

	if (pl) {
		if (strncmp(key, prefix, pl) != 0 || key[pl] != '/')
			return -1;
		rest = key + pl + 1;
	}
	kl = strlen(rest);
	/* NAME/LLLL/%016x-%016x.ltx, the file name 37 bytes */
	if (kl < 1 + 1 + 4 + 1 + 37)
		return -1;
	file = rest + kl - 37;
	lvl = file - 5;
	if (lvl[-1] != '/' || lvl[4] != '/' ||
	    sscanf(file, "%16llx-%16llx.lt%c", &a, &z, &tail) != 3 || tail != 'x' ||
	    strcmp(file + 33, ".ltx") != 0 || sscanf(lvl, "%4x", level) != 1)
		return -1;
	for (int i = 0; i < 4; i++)
		if (!strchr("0123456789abcdef", lvl[i]))
			return -1;
	if ((size_t)(lvl - 1 - rest) >= n || a == 0 || z < a)
		return -1;
	memcpy(name, rest, (size_t)(lvl - 1 - rest));
	name[lvl - 1 - rest] = '\0';
	*min = a;
	*max = z;
	return 0;
}

struct listed {
	struct cl_backup *b;
	struct lobj {
		char *name;
		unsigned level;
		uint64_t min, max, size;
		int64_t mtime_ms;
	} *v;
	size_t n, cap;
};

static int on_listed(void *ctx, const struct s3_object *o)
{
	struct listed *l = ctx;
	char name[FRAME_NAME_MAX + 1];
	unsigned level;
	uint64_t min, max;

	if (s3_ltx_key_parse(s3_prefix(l->b->s3), o->key, name, sizeof(name), &level, &min,
				&max) < 0 || level >= BUCKET_LEVELS)
		return 0; /* not ours: the lease, an operator's notes */
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		struct lobj *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].name = strdup(name);
	if (!l->v[l->n].name)
		return -ENOMEM;
	l->v[l->n].level = level;
	l->v[l->n].min = min;
	l->v[l->n].max = max;
	l->v[l->n].size = o->size;
	l->v[l->n].mtime_ms = o->mtime_ms;
	l->n++;
	return 0;
}

/*
 * List what the bucket holds (without c->mu: it takes a while) and make
 * it the in-memory picture. With a lease, a database's head is the one
 * the lease publishes: objects past it are a deposed primary's, never
 * part of the chain. A refusal here (no bucket, bad key) is a
 * configuration error worth failing the start for.
 */
static int list_bucket(struct cl_backup *b, struct ltfs_err *err)
{
	struct listed l = { .b = b };
	char prefix[S3_KEY_MAX];
	uint64_t *heads = NULL;
	int rc;

	snprintf(prefix, sizeof(prefix), "%s%s", s3_prefix(b->s3), s3_prefix(b->s3)[0] ? "/" : "");
	rc = s3_list(b->conn, prefix, on_listed, &l, err);
	if (rc == -ENOMEM)
		ltfs_err_set(err, rc, "listing the bucket: out of memory");
	if (rc == 0 && b->c->lease && l.n) {
		heads = calloc(l.n, sizeof(*heads));
		if (!heads)
			rc = ltfs_err_set(err, -ENOMEM, NULL);
		for (size_t i = 0; heads && i < l.n; i++)
			heads[i] = i && strcmp(l.v[i].name, l.v[i - 1].name) == 0
					   ? heads[i - 1]
					   : cl_lease_head(b->c, l.v[i].name, NULL);
	}
	pthread_mutex_lock(&b->c->mu);
	for (size_t i = 0; rc == 0 && i < b->ndbs; i++) {
		b->dbs[i].remote_txid = 0;
		b->dbs[i].remote_ms = 0;
		b->dbs[i].nsent = 0; /* what we uploaded unpublished is now an orphan */
		b->dbs[i].orphans.n = 0;
		for (int k = 0; k < BUCKET_LEVELS; k++)
			b->dbs[i].lv[k].n = 0;
	}
	for (size_t i = 0; rc == 0 && i < l.n; i++) {
		struct lobj *o = &l.v[i];
		/* unpublished: past the head the lease publishes, or any object
		 * of a database the lease has no head for (its first primary
		 * died between its first upload and the lease write) */
		bool orphan = heads && o->max > heads[i];
		struct bdb *d;

		if (orphan && o->level != 0)
			continue;
		d = cl_bdb_find(b, o->name, true);
		if (d && orphan) {
			if (cl_level_add(&d->orphans, o->min, o->max, o->size, o->mtime_ms) < 0)
				d = NULL;
			else
				continue;
		}
		if (!d || cl_level_add(&d->lv[o->level], o->min, o->max, o->size, o->mtime_ms) < 0) {
			rc = ltfs_err_set(err, -ENOMEM, NULL);
			break;
		}
		if (o->max > d->remote_txid) {
			d->remote_txid = o->max;
			d->remote_ms = o->mtime_ms;
		}
	}
	pthread_mutex_unlock(&b->c->mu);
	for (size_t i = 0; i < l.n; i++)
		free(l.v[i].name);
	free(l.v);
	free(heads);
	return rc;
}

/* ---- one upload ---------------------------------------------------------- */

struct run {
	int fds[BATCH_FILES];
	struct ltx_header hdrs[BATCH_FILES];
	uint64_t sizes[BATCH_FILES];
	size_t n;
	uint64_t bytes;
};

static void run_close(struct run *r)
{
	for (size_t i = 0; i < r->n; i++)
		close(r->fds[i]);
	r->n = 0;
	r->bytes = 0;
}

/*
 * Files of the local history from `from` on (the first one whatever it
 * reaches, the others ending at `upto` at most), as long as they form one
 * run that can be merged: same page size, no
 * deletion inside (a deletion goes alone), bounded in count and bytes,
 * and, with gap_ms > 0, committed within gap_ms of the first, so that a
 * backlog drained after an outage keeps the time granularity of a
 * point-in-time restore. gap_ms 0: no time bound.
 */
static int gather(struct cl_backup *b, const char *name, uint64_t from, uint64_t upto,
		  unsigned gap_ms, struct run *r, struct ltfs_err *err)
{
	while (r->n < BATCH_FILES && from <= upto) {
		struct ltx_header h;
		struct stat st;
		int fd, rc;

		rc = fs_history_open(b->c->fs, name, from, &fd, &h, err);
		if (rc == -ENOENT)
			break;
		if (rc < 0)
			return rc;
		if (fstat(fd, &st) < 0) {
			rc = -errno;
			close(fd);
			return ltfs_err_set(err, rc, "'%s': history file at TXID %llu: %s", name,
					    (unsigned long long)from, strerror(-rc));
		}
		if (r->n > 0 && (h.max_txid > upto || h.commit == 0 || r->hdrs[0].commit == 0 ||
				 h.page_size != r->hdrs[0].page_size ||
				 (gap_ms && h.timestamp - r->hdrs[0].timestamp >= (int64_t)gap_ms) ||
				 r->bytes + (uint64_t)st.st_size > BATCH_BYTES)) {
			close(fd);
			break;
		}
		r->fds[r->n] = fd;
		r->hdrs[r->n] = h;
		r->sizes[r->n] = (uint64_t)st.st_size;
		r->bytes += (uint64_t)st.st_size;
		r->n++;
		from = h.max_txid + 1;
	}
	return 0;
}

/* Is the object at key byte for byte the file or buffer we meant to put? */
static int same_object(struct cl_backup *b, const char *key, int fd, const struct ltfs_buf *mem,
		       uint64_t size, struct ltfs_err *err)
{
	struct ltfs_buf got;
	uint8_t chunk[65536];
	int rc;

	ltfs_buf_init(&got, size + 1);
	rc = s3_get(b->conn, key, 0, 0, &got, NULL, err);
	if (rc == LTFS_E_LIMIT)
		rc = 0, got.len = size + 1; /* larger: not ours */
	if (rc < 0) {
		ltfs_buf_release(&got);
		return rc;
	}
	rc = got.len == size;
	for (uint64_t off = 0; rc == 1 && off < size; off += sizeof(chunk)) {
		size_t n = size - off < sizeof(chunk) ? (size_t)(size - off) : sizeof(chunk);

		if (mem) {
			rc = memcmp(mem->data + off, got.data + off, n) == 0;
		} else if (ltx_pread_full(fd, chunk, n, off) < 0) {
			rc = ltfs_err_set(err, -EIO, "reading back a history file failed");
		} else {
			rc = memcmp(chunk, got.data + off, n) == 0;
		}
	}
	ltfs_buf_release(&got);
	return rc;
}

/* Merge a run of several files into one LTX file in memory. */
static int merge(struct run *r, struct ltfs_buf *out, struct ltx_header *oh,
		 struct ltfs_err *err)
{
	struct ltx_decoder *decs[BATCH_FILES] = { 0 };
	struct ltx_trailer ot;
	int rc = 0;

	for (size_t i = 0; i < r->n && rc == 0; i++) {
		if (lseek(r->fds[i], 0, SEEK_SET) < 0)
			rc = ltfs_err_set(err, -errno, "seek: %s", strerror(errno));
		else
			rc = ltx_decoder_open_fd(&decs[i], &r->fds[i], LTX_DEC_IN_MERGE, err);
	}
	if (rc == 0)
		rc = ltx_compact(decs, r->n, NULL, ltx_write_buf, out, oh, &ot, err);
	for (size_t i = 0; i < r->n; i++)
		ltx_decoder_free(decs[i]);
	return rc;
}

/*
 * With a lease, an object in our way past the published head is what a
 * deposed primary uploaded and could never publish: replace it. Only the
 * version we looked at is replaced (If-Match), and only while the lease is
 * ours after the look, so a primary that was itself deposed meanwhile can
 * never overwrite what its successor wrote.
 */
static int replace_orphan(struct cl_backup *b, const char *name, const char *key,
			  struct run *r, const struct ltfs_buf *mem, uint64_t size,
			  const struct s3_put_opts *o, struct ltfs_err *err)
{
	struct s3_object obj;
	struct s3_put_opts put = *o;
	int rc;

	rc = s3_head(b->conn, key, &obj, err);
	if (rc < 0)
		return rc;
	if (!cl_lease_valid(b->c))
		return ltfs_err_set(err, LTFS_E_NOT_PRIMARY, "'%s': %s: the lease is not held", name,
				    key);
	put.if_none_match = false;
	put.if_match = obj.etag;
	rc = r->n > 1 ? s3_put(b->conn, key, mem->data, mem->len, &put, NULL, err)
		      : s3_put_fd(b->conn, key, r->fds[0], size, &put, NULL, err);
	if (rc == 0)
		ltfs_warn(b->c->log, "backup", "'%s': replaced %s, left unpublished by a deposed primary",
			  name, key);
	return rc;
}

/*
 * Upload one run; *out says what went up. It counts for nothing yet: the
 * caller adds it to the database's sent objects, which the round
 * publishes (sent_commit).
 */
static int upload_run(struct cl_backup *b, const char *name, struct run *r, unsigned level,
		      struct bsent *out, struct ltfs_err *err)
{
	struct ltfs_buf mem;
	struct ltx_header h = r->hdrs[0];
	char key[S3_KEY_MAX];
	struct s3_put_opts o = { .if_none_match = true };
	uint64_t size = r->sizes[0];
	uint8_t t[8];
	int rc = 0;

	ltfs_buf_init(&mem, BATCH_BYTES + (16u << 20));
	if (r->n > 1) {
		rc = merge(r, &mem, &h, err);
		size = mem.len;
	}
	h.min_txid = r->hdrs[0].min_txid;
	h.max_txid = r->hdrs[r->n - 1].max_txid;
	h.timestamp = r->hdrs[r->n - 1].timestamp;
	if (b->c->lease) {
		pthread_mutex_lock(&b->c->mu);
		o.epoch = b->c->epoch;
		pthread_mutex_unlock(&b->c->mu);
		if (!cl_lease_valid(b->c))
			rc = ltfs_err_set(err, LTFS_E_NOT_PRIMARY, "'%s': not uploaded: the lease "
								  "is not held", name);
	}
	if (rc == 0 && s3_ltx_key(b->s3, key, name, level, h.min_txid, h.max_txid) < 0)
		rc = ltfs_err_set(err, LTFS_E_LIMIT, "'%s': object key too long", name);
	o.timestamp_ms = h.timestamp;
	if (rc == 0)
		rc = r->n > 1 ? s3_put(b->conn, key, mem.data, mem.len, &o, NULL, err)
			      : s3_put_fd(b->conn, key, r->fds[0], size, &o, NULL, err);
	if (rc == LTFS_E_CONFLICT) {
		/* Already there: ours, from an attempt whose answer was lost,
		 * or another writer's, which must never be papered over. */
		struct ltfs_err e2 = { 0 };
		int same = same_object(b, key, r->fds[0], r->n > 1 ? &mem : NULL, size, &e2);

		if (same == 1) {
			rc = 0;
		} else if (same == 0 && b->c->lease) {
			rc = replace_orphan(b, name, key, r, &mem, size, &o, err);
		} else if (same == 0) {
			rc = ltfs_err_set(err, LTFS_E_CONFLICT,
					  "'%s': the bucket already holds %s with other content: another "
					  "node writes to this prefix; uploads of this database stop",
					  name, key);
		}
	}
	/* the database checksum after it, which the lease publishes */
	if (rc == 0 && (r->n > 1 ? (memcpy(t, mem.data + size - 16, 8), 0)
				 : ltx_pread_full(r->fds[0], t, 8, size - 16)) < 0)
		rc = ltfs_err_set(err, -EIO, "'%s': reading back a history file failed", name);
	if (rc == 0) {
		*out = (struct bsent){ .f = { .min = h.min_txid, .max = h.max_txid, .size = size,
					      .ts_ms = h.timestamp },
				       .level = level, .checksum = ltx_get_be64(t) };
		pthread_mutex_lock(&b->c->mu);
		b->uploads++;
		b->upload_bytes += size;
		pthread_mutex_unlock(&b->c->mu);
		ltfs_debug(b->c->log, "backup", "'%s': uploaded %s (%llu bytes)", name, key,
			   (unsigned long long)size);
	}
	ltfs_buf_release(&mem);
	return rc;
}

/* Add an uploaded object to d's sent ones (c->mu held). */
static int sent_add(struct bdb *d, const struct bsent *s)
{
	if (d->nsent == d->capsent) {
		size_t cap = d->capsent ? 2 * d->capsent : 8;
		struct bsent *v = realloc(d->sent, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		d->sent = v;
		d->capsent = cap;
	}
	d->sent[d->nsent++] = *s;
	return 0;
}

/*
 * The sent objects of a database are published (or need not be): they
 * join the in-memory picture, the head moves, commits waiting for the
 * bucket are answered and folding may take them.
 */
static void sent_commit(struct cl_backup *b, const char *name)
{
	struct bdb *d;
	uint64_t head = 0;

	pthread_mutex_lock(&b->c->mu);
	d = cl_bdb_find(b, name, false);
	for (size_t i = 0; d && i < d->nsent; i++) {
		struct bsent *s = &d->sent[i];

		if (s->f.max > d->remote_txid) {
			d->remote_txid = s->f.max;
			d->remote_ms = s->f.ts_ms;
		}
		/* out of memory: compaction and retention do not know this one,
		 * a restore still finds it */
		cl_level_add(&d->lv[s->level], s->f.min, s->f.max, s->f.size, cl_now_ms());
	}
	if (d && d->nsent) {
		d->nsent = 0;
		head = d->remote_txid;
		b->last_ok_ms = cl_now_ms();
		cl_wake(b->c); /* commits waiting for the bucket */
	}
	pthread_mutex_unlock(&b->c->mu);
	if (head)
		fs_set_shipped(b->c->fs, name, head);
}

/*
 * Delete an orphan our history cannot cover, if the object there is still
 * one of an earlier epoch (HEAD): never one of ours, never one whose
 * writer is unknown. Only while the lease is ours after the look.
 */
static int remove_orphan(struct cl_backup *b, const char *name, const struct bfile *o,
			 struct ltfs_err *err)
{
	char key[S3_KEY_MAX];
	struct s3_object obj;
	uint64_t epoch;
	int rc;

	if (s3_ltx_key(b->s3, key, name, 0, o->min, o->max) < 0)
		return ltfs_err_set(err, LTFS_E_LIMIT, "'%s': key too long", name);
	rc = s3_head(b->conn, key, &obj, err);
	if (rc == -ENOENT)
		return 0; /* gone already */
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&b->c->mu);
	epoch = b->c->epoch;
	pthread_mutex_unlock(&b->c->mu);
	if (obj.meta_epoch == 0 || obj.meta_epoch >= epoch) {
		ltfs_warn(b->c->log, "backup",
			  "'%s': %s (TXIDs %llu..%llu) lies past the head published before "
			  "epoch %llu, and the local history cannot cover it; it carries %s, so "
			  "it stays: a restore to a TXID in that range may stop at it",
			  name, key, (unsigned long long)o->min, (unsigned long long)o->max,
			  (unsigned long long)epoch, obj.meta_epoch ? "this epoch or a newer one"
								: "no epoch");
		return 0;
	}
	if (!cl_lease_valid(b->c))
		return ltfs_err_set(err, LTFS_E_NOT_PRIMARY, "'%s': %s: the lease is not held", name,
				    key);
	rc = s3_delete(b->conn, key, err);
	if (rc == 0)
		ltfs_warn(b->c->log, "backup",
			  "'%s': deleted %s (TXIDs %llu..%llu), left unpublished by the deposed "
			  "primary of epoch %llu: the local history cannot cover its range",
			  name, key, (unsigned long long)o->min, (unsigned long long)o->max,
			  (unsigned long long)obj.meta_epoch);
	return rc;
}

/*
 * Level-0 objects past the published head at the listing are what a
 * deposed primary uploaded and never published. Ours take their place
 * only where a key is the same (upload_run); one whose range our uploads
 * do not repeat would stay beside our chain, and once the published head
 * passes it a restore could take it for ours. So each is covered: once our
 * history reaches its end, our own run over exactly its range goes to its
 * key (replacing it, replace_orphan). An orphan whose range our history
 * cannot form (the files were folded, or their boundaries differ) is
 * deleted instead (remove_orphan): once the published head passes it, a
 * restore or a new primary's catch-up could take it for ours and stop
 * there.
 */
static int cover_orphans(struct cl_backup *b, const char *name, uint64_t head,
			 struct ltfs_err *err)
{
	for (size_t i = 0;;) {
		struct run r = { .n = 0 };
		struct bsent s;
		struct bfile o;
		struct bdb *d;
		bool have;
		int rc;

		pthread_mutex_lock(&b->c->mu);
		d = cl_bdb_find(b, name, false);
		have = d && i < d->orphans.n;
		if (have)
			o = d->orphans.v[i];
		pthread_mutex_unlock(&b->c->mu);
		if (!have)
			return 0;
		if (o.max > head) {
			i++; /* our history has not reached its end yet */
			continue;
		}
		rc = gather(b, name, o.min, o.max, 0, &r, err);
		if (rc == 0 && r.n && r.hdrs[0].min_txid == o.min && r.hdrs[r.n - 1].max_txid == o.max) {
			rc = upload_run(b, name, &r, 0, &s, err);
			if (rc == 0)
				ltfs_info(b->c->log, "backup", "'%s': covered TXIDs %llu..%llu, left "
							      "unpublished by a deposed primary",
					  name, (unsigned long long)o.min, (unsigned long long)o.max);
		} else if (rc == 0) {
			rc = remove_orphan(b, name, &o, err);
		}
		run_close(&r);
		if (rc < 0)
			return rc;
		pthread_mutex_lock(&b->c->mu);
		d = cl_bdb_find(b, name, false);
		if (d && i < d->orphans.n) {
			memmove(&d->orphans.v[i], &d->orphans.v[i + 1],
				(d->orphans.n - i - 1) * sizeof(*d->orphans.v));
			d->orphans.n--;
		}
		pthread_mutex_unlock(&b->c->mu);
	}
}

/*
 * Upload everything of one database past the bucket's head (and past what
 * this round sent already). With a lease it counts once the round
 * publishes; without, at once.
 */
static int ship_db(struct cl_backup *b, const char *name, uint64_t head, struct ltfs_err *err)
{
	int rc = b->c->lease ? cover_orphans(b, name, head, err) : 0;

	while (rc == 0) {
		struct run r = { .n = 0 };
		struct bsent s;
		struct bdb *d;
		uint64_t remote;
		unsigned level = 0;
		bool stuck, found;

		pthread_mutex_lock(&b->c->mu);
		d = cl_bdb_find(b, name, true);
		found = d != NULL;
		remote = !found ? 0 : d->nsent ? d->sent[d->nsent - 1].f.max : d->remote_txid;
		stuck = found && d->stuck;
		pthread_mutex_unlock(&b->c->mu);
		if (!found)
			return ltfs_err_set(err, -ENOMEM, NULL);
		if (stuck || remote >= head)
			return 0;
		rc = gather(b, name, remote + 1, head, b->interval_ms, &r, err);
		if (rc == 0 && r.n == 0) {
			/* nothing starts right after the bucket's head: the history
			 * was folded (or restored) into a snapshot reaching past it */
			struct ltx_header h;
			int fd;

			rc = fs_history_open(b->c->fs, name, 1, &fd, &h, err);
			if (rc == 0 && h.max_txid > remote) {
				struct stat st;

				fstat(fd, &st);
				r.fds[0] = fd;
				r.hdrs[0] = h;
				r.sizes[0] = (uint64_t)st.st_size;
				r.n = 1;
				level = 9;
			} else {
				if (rc == 0)
					close(fd);
				rc = ltfs_err_set(err, LTFS_E_TXID,
						  "'%s': the local history has no file continuing the bucket's "
						  "TXID %llu",
						  name, (unsigned long long)remote);
			}
		}
		if (rc == 0)
			rc = upload_run(b, name, &r, level, &s, err);
		run_close(&r);
		if (rc == 0) {
			pthread_mutex_lock(&b->c->mu);
			d = cl_bdb_find(b, name, false);
			rc = d ? sent_add(d, &s) : -ENOMEM;
			pthread_mutex_unlock(&b->c->mu);
			if (rc < 0)
				rc = ltfs_err_set(err, rc, NULL);
			else if (!b->c->lease)
				sent_commit(b, name);
		}
		if (rc == LTFS_E_CONFLICT && b->c->lease) {
			/* someone else writes our keys while we hold the lease */
			ltfs_error(b->c->log, "backup", "%s", err->msg);
			cl_lease_resign(b->c, "an upload lost a conditional write");
			return rc;
		}
		if (rc == LTFS_E_CONFLICT || rc == LTFS_E_TXID) {
			pthread_mutex_lock(&b->c->mu);
			d = cl_bdb_find(b, name, false);
			if (d)
				d->stuck = true;
			pthread_mutex_unlock(&b->c->mu);
			ltfs_error(b->c->log, "backup", "%s", err->msg);
		}
	}
	return rc;
}

/* ---- the thread ---------------------------------------------------------- */

struct round {
	char **names;
	uint64_t *heads;
	size_t n, cap;
	bool nomem;
};

static void collect(void *ctx, const struct fs_db_info *info)
{
	struct round *r = ctx;

	if (r->nomem)
		return;
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 16;
		char **nv = realloc(r->names, cap * sizeof(*nv));
		uint64_t *hv = nv ? realloc(r->heads, cap * sizeof(*hv)) : NULL;

		if (nv)
			r->names = nv;
		if (!nv || !hv) {
			r->nomem = true;
			return;
		}
		r->heads = hv;
		r->cap = cap;
	}
	r->names[r->n] = strdup(info->name);
	if (!r->names[r->n]) {
		r->nomem = true;
		return;
	}
	r->heads[r->n++] = info->hist_txid;
}

/*
 * Publish what the round sent, for every database at once: one write of
 * the lease. Also after a round that failed half-way, so that what did go
 * up is answered; what is not published stays sent and goes out with the
 * next round's write.
 */
static int publish_round(struct cl_backup *b, const struct round *r, struct ltfs_err *err)
{
	struct lease_head *heads = calloc(r->n ? r->n : 1, sizeof(*heads));
	size_t n = 0;
	int rc = 0;

	if (!heads)
		return ltfs_err_set(err, -ENOMEM, NULL);
	pthread_mutex_lock(&b->c->mu);
	for (size_t i = 0; i < r->n; i++) {
		struct bdb *d = cl_bdb_find(b, r->names[i], false);

		if (d && d->nsent)
			heads[n++] = (struct lease_head){ .name = r->names[i],
							   .txid = d->sent[d->nsent - 1].f.max,
							   .checksum = d->sent[d->nsent - 1].checksum };
	}
	pthread_mutex_unlock(&b->c->mu);
	if (n && b->c->lease)
		rc = cl_lease_publish(b->c, heads, n, err);
	for (size_t i = 0; rc == 0 && i < n; i++)
		sent_commit(b, heads[i].name);
	free(heads);
	return rc;
}

/* One pass over every database: 0, or the first error. */
static int ship_all(struct cl_backup *b, struct ltfs_err *err)
{
	struct round r = { 0 };
	struct ltfs_err perr = { 0 };
	uint64_t backlog = 0;
	int rc = 0, prc;

	fs_db_foreach(b->c->fs, collect, &r);
	if (r.nomem)
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	for (size_t i = 0; i < r.n && rc == 0; i++)
		rc = ship_db(b, r.names[i], r.heads[i], err);
	prc = publish_round(b, &r, &perr);
	if (rc == 0 && prc < 0) {
		rc = prc;
		*err = perr;
	}
	pthread_mutex_lock(&b->c->mu);
	for (size_t i = 0; i < r.n; i++) {
		struct bdb *d = cl_bdb_find(b, r.names[i], false);
		uint64_t remote = d ? d->remote_txid : 0;

		backlog += r.heads[i] > remote ? r.heads[i] - remote : 0;
	}
	b->backlog = backlog;
	pthread_mutex_unlock(&b->c->mu);
	for (size_t i = 0; i < r.n; i++)
		free(r.names[i]);
	free(r.names);
	free(r.heads);
	return rc;
}

static void *backup_main(void *arg)
{
	struct cl_backup *b = arg;
	struct cluster *c = b->c;
	uint64_t seen = (uint64_t)-1; /* -1: ship what is left from before */
	int64_t retry_ms = 0, next_at = 0;

	pthread_setname_np(pthread_self(), "backup");
	pthread_mutex_lock(&c->mu);
	for (;;) {
		struct ltfs_err err = { 0 };
		int64_t now = cl_mono_ms();
		bool last = c->stopping;
		uint64_t flush = b->flush_req;
		/* a new epoch of ours: the previous primary changed the bucket */
		bool relist = c->lease && c->serving && c->epoch != b->listed_epoch;
		int rc = 0;

		/* stopping: one last round for what the window still held */
		if (last && (seen == c->gen || retry_ms))
			break;
		if (flush != b->flush_done || relist)
			next_at = 0, seen = (uint64_t)-1;
		if (!last && next_at && now < next_at) {
			cl_wait(c, next_at - now);
			continue;
		}
		if (!last && !next_at && seen == c->gen) {
			cl_wait_commit(c, 1000);
			continue;
		}
		if (!last && !next_at && b->interval_ms && seen != (uint64_t)-1) {
			next_at = now + b->interval_ms; /* let the batch fill */
			continue;
		}
		seen = c->gen;
		next_at = 0;
		if (relist) {
			b->listed = false;
			b->listed_epoch = c->epoch;
		}
		pthread_mutex_unlock(&c->mu);
		if (!b->listed && (rc = list_bucket(b, &err)) == 0)
			b->listed = true;
		if (rc == 0 && cl_is_primary(c))
			rc = ship_all(b, &err);
		pthread_mutex_lock(&c->mu);
		if (rc == 0 && flush != b->flush_done) {
			b->flush_done = flush;
			cl_wake(c);
		}
		if (rc < 0 && rc != LTFS_E_CONFLICT && rc != LTFS_E_TXID && rc != LTFS_E_NOT_PRIMARY) {
			b->failures++;
			snprintf(b->last_error, sizeof(b->last_error), "%s", err.msg);
			retry_ms = retry_ms ? retry_ms * 2 : RETRY_MIN_MS;
			if (retry_ms > RETRY_MAX_MS)
				retry_ms = RETRY_MAX_MS;
			next_at = cl_mono_ms() + retry_ms; /* with or without commits */
			ltfs_warn(c->log, "backup", "%s (retrying in %lld ms; %llu TXIDs wait locally)",
				  err.msg, (long long)retry_ms, (unsigned long long)b->backlog);
		} else {
			if (retry_ms)
				ltfs_info(c->log, "backup", "the bucket answers again");
			retry_ms = 0;
			if (rc == 0)
				b->last_error[0] = '\0';
		}
		if (last)
			break;
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

int cl_backup_flush(struct cluster *c, int64_t timeout_ms, struct ltfs_err *err)
{
	struct cl_backup *b = c->backup;
	int64_t until = cl_mono_ms() + timeout_ms;
	uint64_t want;
	bool done;

	pthread_mutex_lock(&c->mu);
	want = ++b->flush_req;
	cl_wake(c);
	while (b->flush_done < want && !c->stopping && cl_mono_ms() < until)
		cl_wait(c, 20);
	done = b->flush_done >= want;
	pthread_mutex_unlock(&c->mu);
	if (!done)
		return ltfs_err_set(err, -ETIMEDOUT, "the bucket did not take the last commits within "
						     "%lld ms", (long long)timeout_ms);
	return 0;
}

int cl_backup_start(struct cluster *c, struct s3 *s3, const struct cluster_backup_opts *opts,
		    struct ltfs_err *err)
{
	struct cl_backup *b = calloc(1, sizeof(*b));
	int rc;

	if (!b)
		return ltfs_err_set(err, -ENOMEM, NULL);
	b->c = c;
	b->s3 = s3;
	b->opts = *opts;
	cluster_backup_defaults(&b->opts);
	b->interval_ms = b->opts.interval_ms;
	rc = s3_conn_open(s3, &b->conn, err);
	if (rc == 0) {
		rc = list_bucket(b, err);
		b->listed = rc == 0;
		if (rc == -EIO) {
			/* unreachable: serve anyway, keep the backlog, retry */
			ltfs_error(c->log, "backup", "%s; commits are kept locally until it answers",
				   err->msg);
			snprintf(b->last_error, sizeof(b->last_error), "%s", err->msg);
			rc = 0;
		}
	}
	if (rc == 0)
		rc = s3_conn_open(s3, &b->cconn, err);
	if (rc == 0 && pthread_create(&b->thread, NULL, backup_main, b) != 0)
		rc = ltfs_err_set(err, -EAGAIN, "cannot start the backup thread");
	if (rc == 0) {
		b->started = true;
		if (pthread_create(&b->compactor, NULL, cl_compact_main, b) == 0)
			b->compactor_started = true;
		else
			rc = ltfs_err_set(err, -EAGAIN, "cannot start the compaction thread");
	}
	if (rc < 0 && b->started) {
		pthread_mutex_lock(&c->mu);
		c->stopping = true;
		cl_wake(c);
		pthread_mutex_unlock(&c->mu);
		pthread_join(b->thread, NULL);
	}
	if (rc < 0) {
		s3_conn_free(b->cconn);
		s3_conn_free(b->conn);
		free(b->dbs);
		free(b);
		return rc;
	}
	c->backup = b;
	ltfs_info(c->log, "backup",
		  "shipping to s3://%s/%s at %s: uploads every %d ms, %u compaction levels "
		  "(first every %u ms), snapshots every %lld s, retention %lld s",
		  s3_bucket(s3), s3_prefix(s3), s3_endpoint(s3), b->opts.interval_ms,
		  b->opts.nlevels, b->opts.levels_ms[0], (long long)(b->opts.snapshot_ms / 1000),
		  (long long)(b->opts.retention_ms / 1000));
	return 0;
}

void cl_backup_stop(struct cluster *c)
{
	struct cl_backup *b = c->backup;

	if (!b)
		return;
	if (b->started)
		pthread_join(b->thread, NULL); /* c->stopping is set */
	if (b->compactor_started)
		pthread_join(b->compactor, NULL);
	s3_conn_free(b->conn);
	s3_conn_free(b->cconn);
	for (size_t i = 0; i < b->ndbs; i++) {
		free(b->dbs[i].name);
		free(b->dbs[i].sent);
		free(b->dbs[i].orphans.v);
		for (int l = 0; l < BUCKET_LEVELS; l++)
			free(b->dbs[i].lv[l].v);
	}
	free(b->dbs);
	free(b);
	c->backup = NULL;
}

int cl_backup_stats(struct cluster *c, struct cl_backup_stats *out)
{
	struct cl_backup *b = c->backup;

	memset(out, 0, sizeof(*out));
	if (!b)
		return -ENOENT;
	/* c->mu held by the caller */
	out->uploads = b->uploads;
	out->upload_bytes = b->upload_bytes;
	out->failures = b->failures;
	out->last_ok_ms = b->last_ok_ms;
	out->backlog = b->backlog;
	snprintf(out->last_error, sizeof(out->last_error), "%s", b->last_error);
	snprintf(out->url, sizeof(out->url), "s3://%s%s%s", s3_bucket(b->s3),
		 s3_prefix(b->s3)[0] ? "/" : "", s3_prefix(b->s3));
	return 0;
}

uint64_t cl_backup_remote_txid(struct cluster *c, const char *name, bool *stuck)
{
	struct bdb *d = c->backup ? cl_bdb_find(c->backup, name, false) : NULL;

	*stuck = d && d->stuck;
	return d ? d->remote_txid : 0;
}
