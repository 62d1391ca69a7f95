/*
 * history.c - keep the local LTX history bounded.
 *
 * The history must always rebuild the database from an empty file, so old
 * files are not deleted but folded: the oldest run (a snapshot, TXID 1..A,
 * and the files after it) is compacted into one new snapshot 1..B, which
 * replaces them. The newest `keep` files always stay as they are.
 *
 * Folding rewrites the whole database, so it runs only when it pays: when
 * the files after the snapshot hold at least as many bytes as the snapshot
 * itself, or when they number more than 100 x keep. The writer thread does
 * it while idle; a crash in the middle leaves either the old files, or the
 * new snapshot next to files it covers, which start-up removes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs_int.h"

/* Files folded at once at most: a long backlog (a bucket that was down)
 * folds in several rounds instead of holding thousands of decoders. */
#define FOLD_MAX_FILES 1024

struct hfile {
	uint64_t min, max;
	uint64_t size;
	char name[LTX_FILENAME_SIZE];
};

static int cmp_hfile(const void *a, const void *b)
{
	const struct hfile *x = a, *y = b;

	if (x->min != y->min)
		return x->min < y->min ? -1 : 1;
	return x->max < y->max ? -1 : x->max > y->max;
}

/* All history files, sorted by TXID range, with their `sizes` (a stat
 * each) or sizes 0; *out is malloc'd. */
static int list_history(struct fs_db *db, bool sizes, struct hfile **out, size_t *n)
{
	struct hfile *v = NULL;
	size_t cap = 0, len = 0;
	struct dirent *de;
	DIR *d = fs_opendir_at(db->ltxfd);

	*out = NULL;
	*n = 0;
	if (!d)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		struct hfile f;
		struct stat st;

		if (ltx_parse_filename(de->d_name, &f.min, &f.max) < 0 ||
		    (sizes && fstatat(db->ltxfd, de->d_name, &st, 0) < 0))
			continue;
		f.size = sizes ? (uint64_t)st.st_size : 0;
		snprintf(f.name, sizeof(f.name), "%s", de->d_name);
		if (len == cap) {
			struct hfile *p;

			cap = cap ? cap * 2 : 256;
			p = realloc(v, cap * sizeof(*v));
			if (!p) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = p;
		}
		v[len++] = f;
	}
	closedir(d);
	if (len)
		qsort(v, len, sizeof(*v), cmp_hfile);
	*out = v;
	*n = len;
	return 0;
}

/* The listing no longer matches the directory (hist_mu not held). */
static void hcache_drop(struct fs_db *db)
{
	pthread_mutex_lock(&db->hist_mu);
	db->hcache.valid = false;
	pthread_mutex_unlock(&db->hist_mu);
}

/* Remove files that a snapshot 1..X next to them already covers (left by
 * a crash in the middle of folding). */
int fs_history_drop_covered(struct fs_db *db)
{
	struct hfile *v;
	size_t n;
	uint64_t top = 0;
	int rc = list_history(db, false, &v, &n), removed = 0;

	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if (v[i].min == 1 && v[i].max > top)
			top = v[i].max;
	for (size_t i = 0; i < n; i++) {
		if (v[i].max <= top && !(v[i].min == 1 && v[i].max == top)) {
			fs_spare_retire(db->fs, db->ltxfd, v[i].name);
			removed++;
		}
	}
	free(v);
	if (removed) {
		hcache_drop(db);
		fsync(db->ltxfd);
		ltfs_info(db->fs->log, "recover", "'%s': removed %d history files covered by a newer snapshot",
			  db->name, removed);
	}
	return removed;
}

/* Decide whether folding pays and how many files to fold: 0 = not now. */
static size_t fold_count(const struct hfile *v, size_t n, uint32_t keep,
			 uint64_t limit)
{
	uint64_t bytes = 0;
	size_t count;

	if (n <= (size_t)keep + 1 || v[0].min != 1)
		return 0;
	count = n - keep;
	while (count > 0 && v[count - 1].max > limit)
		count--; /* not shipped yet: a restore may need each of them */
	for (size_t i = 1; i < count; i++) {
		if (v[i].min != v[i - 1].max + 1)
			return 0; /* not a chain: leave it for an operator */
		bytes += v[i].size;
	}
	if (bytes < v[0].size && count < (size_t)keep * 100)
		return 0;
	/* a decoder (and its buffer) per file: fold at most this many now,
	 * the rest in the next rounds */
	return count > FOLD_MAX_FILES ? FOLD_MAX_FILES : count;
}

static void close_inputs(struct ltx_decoder **decs, int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		ltx_decoder_free(decs[i]);
		decs[i] = NULL;
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

/* 1 if files were folded, 0 if it did not pay, < 0 on error. */
int fs_history_fold(struct fs_db *db, uint32_t keep, uint64_t limit,
		    struct ltfs_err *err)
{
	struct ltx_decoder **decs = NULL;
	struct ltx_header oh;
	struct ltx_trailer ot;
	char name[LTX_FILENAME_SIZE], tmp[LTX_FILENAME_SIZE + 8];
	struct hfile *v;
	size_t n, count;
	int *fds = NULL, out = -1, rc;
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = list_history(db, true, &v, &n);
	if (rc < 0)
		return ltfs_err_set(err, rc, "'%s/ltx': %s", db->dir, strerror(-rc));
	count = fold_count(v, n, keep, limit);
	if (count < 2) {
		free(v);
		return 0; /* not now */
	}
	decs = calloc(count, sizeof(*decs));
	fds = malloc(count * sizeof(*fds));
	if (!decs || !fds) {
		rc = ltfs_err_set(err, -ENOMEM, NULL);
		goto out;
	}
	for (size_t i = 0; i < count; i++)
		fds[i] = -1;
	for (size_t i = 0; i < count && rc == 0; i++) {
		fds[i] = openat(db->ltxfd, v[i].name, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			rc = ltfs_err_set(err, -errno, "'%s': %s", v[i].name, strerror(errno));
		else
			rc = ltx_decoder_open_fd(&decs[i], &fds[i], LTX_DEC_IN_MERGE, err);
	}
	if (rc < 0)
		goto out;
	out = fs_ltx_create(db, 1, v[count - 1].max, name, tmp, err);
	if (out < 0) {
		rc = out;
		goto out;
	}
	rc = ltx_compact(decs, count, NULL, ltx_write_fd, &out, &oh, &ot, err);
	if (rc == 0)
		rc = fs_ltx_publish(db, out, tmp, name, true, err);
	else
		unlinkat(db->ltxfd, tmp, 0);
	if (rc < 0)
		goto out;
	/* the snapshot is durable: the files it replaces can go, closed
	 * first, as a spare still open here could not be reused */
	close_inputs(decs, fds, count);
	for (size_t i = 0; i < count; i++)
		fs_spare_retire(db->fs, db->ltxfd, v[i].name);
	hcache_drop(db);
	fsync(db->ltxfd);
	pthread_mutex_lock(&db->hist_mu);
	db->nltx = db->nltx > count ? db->nltx - (uint32_t)count : 1; /* the snapshot counted */
	pthread_mutex_unlock(&db->hist_mu);
	ltfs_info(db->fs->log, "history", "'%s': folded %zu files into %s in %.3f s", db->name,
		  count, name, fs_elapsed_s(&t0));
	rc = 1;
out:
	if (out >= 0)
		close(out);
	if (decs)
		close_inputs(decs, fds, count);
	free(decs);
	free(fds);
	free(v);
	if (rc < 0)
		ltfs_err_prefix(err, "'%s': fold history", db->name);
	return rc;
}

int fs_history_remove_except(struct fs_db *db, const char *keep)
{
	struct hfile *v;
	size_t n;
	uint32_t removed = 0;
	int rc = list_history(db, false, &v, &n);

	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i].name, keep) != 0 && fs_spare_retire(db->fs, db->ltxfd, v[i].name) == 0)
			removed++;
	free(v);
	hcache_drop(db);
	pthread_mutex_lock(&db->hist_mu);
	db->nltx = db->nltx > removed ? db->nltx - removed : 1;
	pthread_mutex_unlock(&db->hist_mu);
	return 0;
}

/*
 * Read the directory into db->hcache when it changed since (its mtime) or
 * when `fresh`. Replicas catching up and the backup look up file after
 * file; one listing per change keeps that linear in the history's size.
 * The listing runs without hist_mu (the writer takes it on every commit).
 */
static int hcache_load(struct fs_db *db, bool fresh)
{
	uint64_t *mins, *maxs;
	struct hfile *v;
	struct stat st;
	size_t n;
	int rc;

	if (fstat(db->ltxfd, &st) < 0)
		return -errno;
	pthread_mutex_lock(&db->hist_mu);
	rc = !fresh && db->hcache.valid && st.st_mtim.tv_sec == db->hcache.mtime.tv_sec &&
	     st.st_mtim.tv_nsec == db->hcache.mtime.tv_nsec;
	pthread_mutex_unlock(&db->hist_mu);
	if (rc)
		return 0;
	rc = list_history(db, false, &v, &n);
	if (rc < 0)
		return rc;
	mins = malloc((n ? n : 1) * sizeof(*mins));
	maxs = malloc((n ? n : 1) * sizeof(*maxs));
	if (!mins || !maxs) {
		free(mins);
		free(maxs);
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		mins[i] = v[i].min;
		maxs[i] = v[i].max;
	}
	free(v);
	pthread_mutex_lock(&db->hist_mu);
	free(db->hcache.mins);
	free(db->hcache.maxs);
	db->hcache.mins = mins;
	db->hcache.maxs = maxs;
	db->hcache.n = n;
	db->hcache.cap = n ? n : 1;
	db->hcache.mtime = st.st_mtim; /* read before listing: a change during it reads again */
	db->hcache.valid = true;
	pthread_mutex_unlock(&db->hist_mu);
	return 0;
}

static int hcache_append(struct fs_db *db, uint64_t min, uint64_t max)
{
	if (db->hcache.n == db->hcache.cap) {
		size_t cap = db->hcache.cap * 2;
		uint64_t *mins = realloc(db->hcache.mins, cap * sizeof(*mins));
		uint64_t *maxs;

		if (!mins)
			return -ENOMEM;
		db->hcache.mins = mins;
		maxs = realloc(db->hcache.maxs, cap * sizeof(*maxs));
		if (!maxs)
			return -ENOMEM;
		db->hcache.maxs = maxs;
		db->hcache.cap = cap;
	}
	db->hcache.mins[db->hcache.n] = min;
	db->hcache.maxs[db->hcache.n] = max;
	db->hcache.n++;
	return 0;
}

/*
 * `name` was just renamed into ltx/ by this daemon: it counts in nltx, and
 * a listing that it extends takes it, with the directory's new mtime,
 * instead of being read again: a replica behind the head by a few files
 * then finds each of them without a listing per commit. The daemon's own
 * removals drop the listing (hcache_drop); only a change by someone else
 * between the rename and the fstat below would go unseen, until the next
 * change.
 */
void fs_history_added(struct fs_db *db, const char *name)
{
	uint64_t min, max;
	struct stat st;
	bool known = ltx_parse_filename(name, &min, &max) == 0 && fstat(db->ltxfd, &st) == 0;

	pthread_mutex_lock(&db->hist_mu);
	db->nltx++;
	if (known && db->hcache.valid &&
	    (db->hcache.n == 0 || min > db->hcache.mins[db->hcache.n - 1]) &&
	    hcache_append(db, min, max) == 0)
		db->hcache.mtime = st.st_mtim;
	else
		db->hcache.valid = false;
	pthread_mutex_unlock(&db->hist_mu);
}

int fs_history_find(struct fs_db *db, uint64_t min_txid, bool fresh,
		    char name[LTX_FILENAME_SIZE])
{
	uint64_t best = 0;
	int rc;

	rc = hcache_load(db, fresh);
	pthread_mutex_lock(&db->hist_mu);
	if (rc == 0) {
		/* sorted by (min, max): the last file starting at min_txid */
		size_t lo = 0, hi = db->hcache.n;

		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (db->hcache.mins[mid] <= min_txid)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo > 0 && db->hcache.mins[lo - 1] == min_txid)
			best = db->hcache.maxs[lo - 1];
	}
	pthread_mutex_unlock(&db->hist_mu);
	if (rc < 0)
		return rc;
	if (!best)
		return -ENOENT;
	ltx_format_filename(min_txid, best, name);
	return 0;
}
