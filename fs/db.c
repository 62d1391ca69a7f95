/*
 * db.c - one database: commit detection, checksums and the LTX history.
 *
 * State model. A database's committed state is its position (TXID,
 * post-apply checksum) plus one checksum per page of the logical database:
 * the database file overlaid with the committed frames of the current WAL.
 * Every commit turns the pages it changed into one LTX file, TXID + 1, and
 * updates the per-page checksums, so the database checksum is maintained
 * with two XORs per page and never by rereading the file.
 *
 * Commit points.
 *   Rollback journal (DELETE, TRUNCATE, PERSIST): database writes are
 *   recorded in a dirty-page bitmap; when the journal is finalized (unlink,
 *   truncate to 0, header zeroed) and it holds the journal magic, the dirty
 *   pages are read back from the database file and written as one LTX,
 *   made durable before the finalize goes through (only if SQLite synced
 *   during the transaction: synchronous=OFF gets no fsync from us either).
 *   A rollback that spilled pages restores them, so it leaves the checksum
 *   unchanged and produces no LTX.
 *   WAL: a write that completes a frame whose commit field is set makes the
 *   frames since the last commit a transaction, after validating salts and
 *   the cumulative checksum. This works in locking_mode=EXCLUSIVE too, where
 *   the WAL write lock is never released. LTX files in WAL mode are not
 *   fsynced per commit: the WAL holds the frames durably, and the history is
 *   synced before anything can destroy them (a checkpoint writing the
 *   database file, a WAL restart, truncation or deletion).
 *
 * Locking: db->mu serializes every mutation of one database; callers in
 * ops.c take it through the fs_db_* entry points below.
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

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- per-page checksums and the dirty bitmap ------------------------- */

int fs_db_cksums_reserve(struct fs_db *db, uint32_t npages)
{
	uint64_t *p;
	uint32_t cap;

	if (npages <= db->cksum_cap)
		return 0;
	cap = db->cksum_cap ? db->cksum_cap : 1024;
	while (cap < npages)
		cap = cap > UINT32_MAX / 2 ? npages : cap * 2;
	p = realloc(db->page_cksums, (size_t)cap * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + db->cksum_cap, 0, (size_t)(cap - db->cksum_cap) * sizeof(*p));
	db->page_cksums = p;
	db->cksum_cap = cap;
	return 0;
}

static int dirty_set(struct fs_db *db, uint32_t pgno)
{
	if (pgno >= db->dirty_cap) {
		uint32_t cap = db->dirty_cap ? db->dirty_cap : 8192;
		uint8_t *p;

		while (cap <= pgno)
			cap = cap > UINT32_MAX / 2 ? UINT32_MAX : cap * 2;
		p = realloc(db->dirty, cap / 8 + 1);
		if (!p)
			return -ENOMEM;
		memset(p + (db->dirty_cap ? db->dirty_cap / 8 + 1 : 0), 0,
		       cap / 8 + 1 - (db->dirty_cap ? db->dirty_cap / 8 + 1 : 0));
		db->dirty = p;
		db->dirty_cap = cap;
	}
	if (!(db->dirty[pgno / 8] & (1u << (pgno % 8)))) {
		db->dirty[pgno / 8] |= (uint8_t)(1u << (pgno % 8));
		db->ndirty++;
	}
	return 0;
}

static bool dirty_test(const struct fs_db *db, uint32_t pgno)
{
	return pgno < db->dirty_cap &&
	       (db->dirty[pgno / 8] & (1u << (pgno % 8)));
}

static void dirty_clear(struct fs_db *db)
{
	if (db->dirty)
		memset(db->dirty, 0, db->dirty_cap / 8 + 1);
	db->ndirty = 0;
	db->synced = false;
}

/* ---- LTX history ------------------------------------------------------ */

/*
 * A transaction being turned into an LTX file: written to
 * ltx/MIN-MAX.ltx.tmp, renamed into place by ltx_done(). Recovery adopts a
 * complete .tmp that continues the chain, so the rename itself need not be
 * durable before SQLite's own directory sync.
 */
struct ltx_out {
	struct ltx_encoder *enc;
	struct ltx_header h;
	char name[LTX_FILENAME_SIZE];
	char tmp[LTX_FILENAME_SIZE + 8];
	int fd;
	uint64_t sum;      /* running post-apply checksum, without FLAG */
	uint8_t *page;     /* page buffer */
	uint64_t bytes;    /* file size, once finished */
};

int fs_ltx_create(struct fs_db *db, uint64_t min_txid, uint64_t max_txid,
		  char name[LTX_FILENAME_SIZE], char tmp[LTX_FILENAME_SIZE + 8],
		  struct ltfs_err *err)
{
	int fd;

	ltx_format_filename(min_txid, max_txid, name);
	snprintf(tmp, LTX_FILENAME_SIZE + 8, "%s.tmp", name);
	fd = fs_spare_create(db->fs, db->ltxfd, tmp, false);
	if (fd < 0)
		return ltfs_err_set(err, fd, "ltx '%s/ltx/%s': %s", db->dir, tmp, strerror(-fd));
	return fd;
}

int fs_ltx_publish(struct fs_db *db, int fd, const char *tmp, const char *name,
		   bool durable, struct ltfs_err *err)
{
	int rc = 0;

	if (durable && fsync(fd) < 0)
		rc = ltfs_err_set(err, -errno, "fsync ltx '%s': %s", tmp, strerror(errno));
	/* never replace a file of the history */
	if (rc == 0 && renameat2(db->ltxfd, tmp, db->ltxfd, name, RENAME_NOREPLACE) < 0)
		rc = ltfs_err_set(err, -errno, "rename ltx '%s': %s", tmp, strerror(errno));
	if (rc < 0) {
		unlinkat(db->ltxfd, tmp, 0);
		return rc;
	}
	fs_history_added(db, name);
	if (durable && fsync(db->ltxfd) < 0)
		return ltfs_err_set(err, -errno, "fsync ltx dir of '%s': %s", db->name,
				    strerror(errno));
	return 0;
}

static int ltx_begin(struct fs_db *db, struct ltx_out *o, uint32_t commit,
		     uint64_t txid_max, struct ltfs_err *err)
{
	memset(o, 0, sizeof(*o));
	o->fd = -1;
	o->h.page_size = db->page_size;
	o->h.commit = commit;
	o->h.min_txid = db->txid + 1;
	o->h.max_txid = txid_max;
	o->h.timestamp = now_ms();
	o->h.pre_apply_checksum = db->txid == 0 ? 0 : db->checksum;
	o->h.node_id = db->fs->node_id;
	o->sum = db->txid == 0 ? 0 : db->checksum & ~LTX_CHECKSUM_FLAG;
	o->page = malloc(db->page_size);
	if (!o->page)
		return ltfs_err_set(err, -ENOMEM, NULL);
	if (fs_fault_hit(db->fs, "commit-ltx-open")) {
		ltx_format_filename(o->h.min_txid, o->h.max_txid, o->name);
		return ltfs_err_set(err, -EIO, "ltx '%s.tmp': injected fault", o->name);
	}
	o->fd = fs_ltx_create(db, o->h.min_txid, o->h.max_txid, o->name, o->tmp, err);
	return o->fd < 0 ? o->fd : 0;
}

/* Open the encoder once the header is final (WAL fields known). */
static int ltx_start(struct ltx_out *o, struct ltfs_err *err)
{
	return ltx_encoder_open(&o->enc, &o->h, NULL, ltx_write_fd, &o->fd, err);
}

/* Add a page; `old` is its checksum in the previous state (0 if none). */
static int ltx_page(struct ltx_out *o, uint32_t pgno, const uint8_t *data,
		    uint64_t old, uint64_t *cksum, struct ltfs_err *err)
{
	uint64_t c;
	int rc = ltx_encoder_add_page(o->enc, pgno, data, &c, err);

	if (rc < 0)
		return rc;
	o->sum ^= (old & ~LTX_CHECKSUM_FLAG) ^ (c & ~LTX_CHECKSUM_FLAG);
	*cksum = c;
	return 0;
}

static void ltx_abort(struct fs_db *db, struct ltx_out *o)
{
	ltx_encoder_free(o->enc);
	if (o->fd >= 0) {
		close(o->fd);
		unlinkat(db->ltxfd, o->tmp, 0);
	}
	free(o->page);
	o->enc = NULL;
	o->fd = -1;
	o->page = NULL;
}

static int ltx_done(struct fs_db *db, struct ltx_out *o, bool durable,
		    struct ltfs_err *err)
{
	uint64_t post = LTX_CHECKSUM_FLAG | o->sum;
	int rc;

	rc = ltx_encoder_finish(o->enc, post, NULL, err);
	o->bytes = ltx_encoder_bytes_written(o->enc);
	if (rc == 0 && fs_fault_hit(db->fs, "commit-ltx-write"))
		rc = ltfs_err_set(err, -EIO, "ltx '%s': injected fault", o->tmp);
	if (rc == 0)
		fs_fault_stall(db->fs, "commit-stall", 1500);
	/* TRUNCATE and PERSIST journals are finalized without a directory
	 * sync from SQLite: a durable file needs a durable name too. */
	if (rc == 0)
		rc = fs_ltx_publish(db, o->fd, o->tmp, o->name, durable, err);
	if (rc < 0) {
		ltx_abort(db, o);
		return rc;
	}
	pthread_mutex_lock(&db->hist_mu);
	if (durable)
		close(o->fd);
	else
		rc = fs_db_defer_sync(db, o->fd);
	pthread_mutex_unlock(&db->hist_mu);
	o->fd = -1;
	if (rc < 0) {
		ltx_abort(db, o);
		return ltfs_err_set(err, rc, "sync ltx history: %s", strerror(-rc));
	}
	ltx_encoder_free(o->enc);
	free(o->page);
	o->enc = NULL;
	o->page = NULL;
	return 0;
}

/* Files synced one by one at most; more get one syncfs(). */
#define SYNC_EACH_MAX 16

/* Sync the files written without fsync, then their names (hist_mu held). */
static int sync_unsynced(struct fs_db *db)
{
	int rc = 0;

	if (db->ltx_unsynced == 0)
		return 0;
	if (db->ltx_unsynced > SYNC_EACH_MAX) {
		/*
		 * One syncfs() instead: each fdatasync writes its file's inode
		 * block and flushes the device on its own, and a checkpoint
		 * after a thousand small commits waited 70 ms for that here,
		 * with the history (and so replication) stopped behind
		 * hist_mu. syncfs writes the inodes in one batch and flushes
		 * once; it also writes whatever else is dirty on the file
		 * system (on a data dir of its own: the databases and WALs,
		 * which their own checkpoints sync next anyway).
		 */
		if (syncfs(db->ltxfd) < 0)
			rc = -errno;
		for (uint32_t i = 0; i < db->ltx_unsynced; i++)
			close(db->unsynced_fds[i]);
		db->ltx_unsynced = 0;
		return rc;
	}
	/* Start every file's writeback before waiting for the first: the
	 * device then sees one batch, and each fdatasync below mostly waits
	 * (3-4x faster for a few hundred small files here). */
	for (uint32_t i = 0; i < db->ltx_unsynced; i++)
		sync_file_range(db->unsynced_fds[i], 0, 0, SYNC_FILE_RANGE_WRITE);
	for (uint32_t i = 0; i < db->ltx_unsynced; i++) {
		if (fdatasync(db->unsynced_fds[i]) < 0 && rc == 0)
			rc = -errno;
		close(db->unsynced_fds[i]);
	}
	db->ltx_unsynced = 0;
	if (fsync(db->ltxfd) < 0 && rc == 0)
		rc = -errno;
	return rc;
}

/*
 * Make the whole history durable: wait for queued WAL commits to be
 * written, then sync every file written without fsync, and the directory.
 * Called before anything may destroy the WAL frames or the database pages
 * the history was built from.
 */
int fs_db_sync_history(struct fs_db *db)
{
	int rc = fs_writer_drain(db->fs, db);

	if (rc < 0)
		return rc;
	pthread_mutex_lock(&db->hist_mu);
	rc = sync_unsynced(db);
	pthread_mutex_unlock(&db->hist_mu);
	return rc;
}

/* Keep the descriptor of an LTX file written without fsync (hist_mu held);
 * past a bound, sync them all rather than hold more descriptors. */
int fs_db_defer_sync(struct fs_db *db, int fd)
{
	if (db->ltx_unsynced == db->unsynced_cap) {
		uint32_t cap = db->unsynced_cap ? db->unsynced_cap * 2 : 64;
		int *p = cap > 1024 ? NULL : realloc(db->unsynced_fds, cap * sizeof(*p));

		if (!p) {
			int rc = fdatasync(fd) < 0 ? -errno : 0, rc2;

			close(fd);
			if (db->ltx_unsynced == 0) /* still its name to sync */
				rc2 = fsync(db->ltxfd) < 0 ? -errno : 0;
			else
				rc2 = sync_unsynced(db);
			return rc < 0 ? rc : rc2;
		}
		db->unsynced_fds = p;
		db->unsynced_cap = cap;
	}
	db->unsynced_fds[db->ltx_unsynced++] = fd;
	return 0;
}

/* Remember a commit and tell the hook (called with db->mu held). */
static void committed(struct fs_db *db, const struct ltx_out *o)
{
	db->txid = o->h.max_txid;
	db->checksum = LTX_CHECKSUM_FLAG | o->sum;
	db->timestamp = o->h.timestamp;
	fs_pos_changed(db);
	ltfs_debug(db->fs->log, "fs", "'%s': committed txid %llu, %u pages, checksum %016llx",
		   db->name, (unsigned long long)db->txid, db->commit,
		   (unsigned long long)db->checksum);
	fs_db_published(db, &o->h, db->checksum, o->name, o->bytes);
}

void fs_db_published(struct fs_db *db, const struct ltx_header *h,
		     uint64_t post, const char *name, uint64_t bytes)
{
	pthread_mutex_lock(&db->hist_mu);
	db->hist_txid = h->max_txid;
	db->n_commits++;
	db->ltx_bytes += bytes;
	pthread_mutex_unlock(&db->hist_mu);
	if (db->fs->on_commit) {
		char path[FS_PATH_MAX];
		struct fs_commit_info info = {
			.db = db->name,
			.ltx_path = path,
			.header = *h,
			.post_apply_checksum = post,
		};

		snprintf(path, sizeof(path), "%s/ltx/%s", db->dir, name);
		db->fs->on_commit(db->fs->on_commit_ctx, &info);
	}
}

struct fs_db *fs_db_find(struct fs *fs, const char *name, bool live)
{
	for (size_t i = 0; i < fs->ndbs; i++) {
		struct fs_db *db = fs->dbs[i];

		if (strcmp(db->name, name) == 0 && (!live || db->db_fd >= 0))
			return db;
	}
	return NULL;
}

int fs_db_register(struct fs *fs, struct fs_db *db, struct ltfs_err *err)
{
	struct fs_db **dbs;

	if (fs->ndbs >= FS_MAX_DBS)
		return ltfs_err_set(err, LTFS_E_LIMIT, "more than %d databases", FS_MAX_DBS);
	dbs = realloc(fs->dbs, (fs->ndbs + 1) * sizeof(*dbs));
	if (!dbs)
		return ltfs_err_set(err, -ENOMEM, NULL);
	fs->dbs = dbs;
	fs->dbs[fs->ndbs++] = db;
	return 0;
}

/* ---- rollback-journal commits --------------------------------------- */

/* Page count and page size of the database file from page 1. */
static int read_db_header(struct fs_db *db, uint32_t *npages,
			  struct ltfs_err *err)
{
	uint8_t hdr[LTX_SQLITE_HEADER_SIZE];
	struct ltx_db_header h;
	struct stat st;
	int rc;

	if (fstat(db->db_fd, &st) < 0)
		return ltfs_err_set(err, -errno, "stat '%s': %s", db->name,
				    strerror(errno));
	if (st.st_size == 0) {
		*npages = 0;
		return 0;
	}
	rc = ltx_pread_full(db->db_fd, hdr, sizeof(hdr), 0);
	if (rc == 0)
		rc = ltx_db_header_parse(hdr, sizeof(hdr), &h, err);
	if (rc < 0) {
		ltfs_err_prefix(err, "database '%s'", db->name);
		return rc;
	}
	if (db->page_size && h.page_size != db->page_size)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "database '%s': page size changed from %u to %u",
				    db->name, db->page_size, h.page_size);
	db->page_size = h.page_size;
	/* The in-header size is valid only if the two counters agree;
	 * otherwise SQLite itself falls back to the file size. */
	if (h.change_counter == h.version_valid_for && h.page_count > 0)
		*npages = h.page_count;
	else
		*npages = (uint32_t)((uint64_t)st.st_size / h.page_size);
	if ((uint64_t)*npages * h.page_size > (uint64_t)st.st_size)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "database '%s': header says %u pages, file has %llu bytes",
				    db->name, *npages, (unsigned long long)st.st_size);
	return 0;
}

/*
 * Turn the dirty pages into an LTX (or everything, for the first commit).
 * `durable`: fsync the file before returning.
 */
static int commit_rollback(struct fs_db *db, bool durable, struct ltfs_err *err)
{
	uint32_t commit = 0, lock, old_commit = db->commit;
	struct ltx_out o;
	int rc;

	rc = read_db_header(db, &commit, err);
	if (rc < 0)
		return rc;
	if (commit == 0 && db->txid == 0)
		return 0; /* nothing ever written */
	rc = fs_db_cksums_reserve(db, commit + 1);
	if (rc < 0)
		return ltfs_err_set(err, rc, NULL);
	rc = ltx_begin(db, &o, commit, db->txid + 1, err);
	if (rc == 0)
		rc = ltx_start(&o, err);
	lock = ltx_lock_pgno(db->page_size);
	for (uint32_t p = 1; rc == 0 && p <= commit; p++) {
		uint64_t c, old;

		if (p == lock || (db->txid > 0 && p <= old_commit && !dirty_test(db, p)))
			continue;
		rc = ltx_pread_full(db->db_fd, o.page, db->page_size,
				(uint64_t)(p - 1) * db->page_size);
		if (rc < 0) {
			ltfs_err_set(err, rc, "database '%s': read page %u: %s",
				     db->name, p, ltfs_strerror(rc));
			break;
		}
		old = p <= old_commit ? db->page_cksums[p - 1] : 0;
		rc = ltx_page(&o, p, o.page, db->txid == 0 ? 0 : old, &c, err);
		if (rc == 0)
			db->page_cksums[p - 1] = c; /* undone below on failure */
	}
	/* Pages cut off by a shrink leave the checksum. */
	for (uint32_t p = commit + 1; rc == 0 && p <= old_commit; p++)
		o.sum ^= db->page_cksums[p - 1] & ~LTX_CHECKSUM_FLAG;
	if (rc == 0 && db->txid > 0 && commit == old_commit &&
	    (LTX_CHECKSUM_FLAG | o.sum) == db->checksum) {
		/* A rollback that restored spilled pages: nothing changed. */
		ltx_abort(db, &o);
		return 0;
	}
	if (rc == 0)
		rc = ltx_done(db, &o, durable, err);
	if (rc < 0) {
		ltx_abort(db, &o);
		return rc;
	}
	for (uint32_t p = commit + 1; p <= old_commit; p++)
		db->page_cksums[p - 1] = 0;
	db->commit = commit;
	committed(db, &o);
	return 0;
}

/* Journal magic present: the transaction reached the database file. */
static bool journal_is_hot(struct fs_db *db)
{
	uint8_t hdr[LTX_JOURNAL_HEADER_SIZE];

	if (db->journal_fd < 0 ||
	    ltx_pread_full(db->journal_fd, hdr, sizeof(hdr), 0) < 0)
		return false;
	return ltx_journal_header_parse(hdr, sizeof(hdr), NULL, NULL) == 0;
}

/*
 * SQLite is about to finalize the journal (unlink, truncate to 0, or zero
 * its header): the commit point of the rollback modes. Called before the
 * finalize goes through, so a failure here leaves the journal hot and the
 * transaction is rolled back by the next reader.
 */
int fs_db_journal_finalize(struct fs_db *db, struct ltfs_err *err)
{
	int rc = 0;

	if (db->ndirty > 0 && journal_is_hot(db))
		rc = commit_rollback(db, db->synced, err);
	if (rc < 0)
		return rc;
	dirty_clear(db);
	return 0;
}

/* Commit dirty pages written without a journal (journal_mode=MEMORY or
 * OFF, or a file copied in): at SQLite's sync of the database or the
 * last close. */
int fs_db_commit_unjournaled(struct fs_db *db, struct ltfs_err *err)
{
	int rc;

	if (db->ndirty == 0 || db->wal.active || journal_is_hot(db))
		return 0;
	rc = commit_rollback(db, db->synced, err);
	if (rc == 0)
		dirty_clear(db);
	return rc;
}

int fs_db_note_db_write(struct fs_db *db, const void *buf, size_t n,
			uint64_t off, struct ltfs_err *err)
{
	uint32_t first, count;

	if (db->page_size == 0) {
		struct ltx_db_header h;

		if (off != 0 || ltx_db_header_parse(buf, n, &h, NULL) < 0)
			return ltfs_err_set(err, -EINVAL,
					    "database '%s': first write must be page 1 with a SQLite header (offset %llu, %zu bytes)",
					    db->name, (unsigned long long)off, n);
		db->page_size = h.page_size;
	}
	if (off % db->page_size != 0 || n % db->page_size != 0 || n == 0)
		return ltfs_err_set(err, -EINVAL,
				    "database '%s': unaligned write of %zu bytes at offset %llu (page size %u)",
				    db->name, n, (unsigned long long)off, db->page_size);
	first = (uint32_t)(off / db->page_size) + 1;
	count = (uint32_t)(n / db->page_size);
	if (db->wal.active) {
		/* A checkpoint copying committed frames: the logical state does
		 * not change, but the frames' old versions in the database file
		 * do, so the history must be durable first. */
		int rc = fs_db_sync_history(db);

		return rc < 0 ? ltfs_err_set(err, rc, "sync ltx history of '%s': %s",
					     db->name, strerror(-rc)) : 0;
	}
	for (uint32_t i = 0; i < count; i++) {
		int rc = dirty_set(db, first + i);

		if (rc < 0)
			return ltfs_err_set(err, rc, NULL);
	}
	return 0;
}

int fs_db_truncate(struct fs_db *db, uint64_t size, struct ltfs_err *err)
{
	if (db->page_size && size % db->page_size != 0)
		return ltfs_err_set(err, -EINVAL,
				    "database '%s': truncate to %llu bytes is not a whole number of %u-byte pages",
				    db->name, (unsigned long long)size, db->page_size);
	if (db->wal.active) {
		int rc = fs_db_sync_history(db);

		if (rc < 0)
			return ltfs_err_set(err, rc, "sync ltx history of '%s'", db->name);
	}
	return 0;
}

/* ---- WAL commits ------------------------------------------------------ */

struct frame_ref {
	uint32_t pgno;
	uint64_t off; /* offset of the frame's page data */
};

static int cmp_frame(const void *a, const void *b)
{
	const struct frame_ref *x = a, *y = b;

	if (x->pgno != y->pgno)
		return x->pgno < y->pgno ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

/*
 * One committed transaction: frames [start, end) of the WAL, the last with
 * commit size `commit`. The newest frame of each page wins. Checksums and
 * the position are updated here; the LTX file is written by the writer
 * thread (writer.c).
 */
static int commit_wal_group(struct fs_db *db, struct frame_ref *frames,
			    size_t nframes, uint32_t commit, uint64_t start,
			    uint64_t end, struct ltfs_err *err)
{
	uint32_t lock = ltx_lock_pgno(db->page_size), old_commit = db->commit;
	bool snapshot = db->txid == 0;
	uint64_t sum = snapshot ? 0 : db->checksum & ~LTX_CHECKSUM_FLAG;
	struct fs_job *job;
	uint64_t *cks;
	uint8_t *page;
	size_t k = 0, cap;
	int rc;

	qsort(frames, nframes, sizeof(*frames), cmp_frame);
	rc = fs_db_cksums_reserve(db, commit + 1);
	if (rc < 0)
		return ltfs_err_set(err, rc, NULL);
	/* pages: one per frame page, or every page for a first commit */
	cap = snapshot ? commit : nframes + (commit > old_commit ? commit - old_commit : 0);
	job = calloc(1, sizeof(*job) + cap * sizeof(job->refs[0]));
	page = malloc(db->page_size);
	cks = malloc((cap ? cap : 1) * sizeof(*cks));
	if (!job || !page || !cks) {
		free(job);
		free(page);
		free(cks);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	job->db = db;
	for (uint32_t p = 1; p <= commit; p++) {
		uint64_t off = FS_FROM_DB, c;
		bool have = false;

		while (k < nframes && frames[k].pgno < p)
			k++;
		while (k < nframes && frames[k].pgno == p) {
			off = frames[k++].off; /* sorted: last is newest */
			have = true;
		}
		if (p == lock || (!have && !snapshot && p <= old_commit))
			continue;
		if (have) {
			rc = ltx_pread_full(db->wal_fd, page, db->page_size, off);
		} else {
			/* growth without a frame, or a first commit: the file */
			memset(page, 0, db->page_size);
			rc = pread(db->db_fd, page, db->page_size,
				   (off_t)(p - 1) * db->page_size) < 0 ? -errno : 0;
		}
		if (rc < 0) {
			ltfs_err_set(err, rc, "'%s': read page %u: %s", db->name, p,
				     ltfs_strerror(rc));
			goto fail;
		}
		c = ltx_page_checksum(p, page, db->page_size);
		if (!snapshot && p <= old_commit)
			sum ^= db->page_cksums[p - 1] & ~LTX_CHECKSUM_FLAG;
		sum ^= c & ~LTX_CHECKSUM_FLAG;
		cks[job->n] = c;
		job->refs[job->n].pgno = p;
		job->refs[job->n].off = off;
		job->n++;
	}
	for (uint32_t p = commit + 1; p <= old_commit; p++)
		sum ^= db->page_cksums[p - 1] & ~LTX_CHECKSUM_FLAG;
	/* only now that nothing can fail: the new page checksums */
	for (uint32_t i = 0; i < job->n; i++)
		db->page_cksums[job->refs[i].pgno - 1] = cks[i];
	for (uint32_t p = commit + 1; p <= old_commit; p++)
		db->page_cksums[p - 1] = 0;
	free(page);
	free(cks);

	job->h.page_size = db->page_size;
	job->h.commit = commit;
	job->h.min_txid = job->h.max_txid = db->txid + 1;
	job->h.timestamp = now_ms();
	job->h.pre_apply_checksum = snapshot ? 0 : db->checksum;
	job->h.node_id = db->fs->node_id;
	job->h.wal_offset = (int64_t)start;
	job->h.wal_size = (int64_t)(end - start);
	job->h.wal_salt1 = db->wal.salt1;
	job->h.wal_salt2 = db->wal.salt2;
	job->post = LTX_CHECKSUM_FLAG | sum;
	db->commit = commit;
	db->txid = job->h.max_txid;
	db->checksum = job->post;
	db->timestamp = job->h.timestamp;
	fs_pos_changed(db);
	fs_writer_queue(db->fs, job);
	return 0;
fail:
	free(job);
	free(page);
	free(cks);
	return rc;
}

/*
 * Scan frames after the last commit; every complete transaction (ending in
 * a valid commit frame) becomes an LTX. Frames that fail the salt or
 * checksum test end the scan: they belong to no committed transaction.
 */
int fs_db_wal_commit_pending(struct fs_db *db, struct ltfs_err *err)
{
	size_t fsz, nframes = 0, cap = 0;
	struct frame_ref *frames = NULL;
	struct ltx_wal_header wh;
	uint8_t *frame;
	uint64_t off, start;
	uint32_t running[2];
	int rc = 0;

	if (!db->wal.active || db->wal_fd < 0 || db->page_size == 0)
		return 0;
	fsz = LTX_WAL_FRAME_HEADER_SIZE + db->page_size;
	frame = malloc(fsz);
	if (!frame)
		return ltfs_err_set(err, -ENOMEM, NULL);
	memset(&wh, 0, sizeof(wh));
	wh.big_endian = db->wal.big_endian;
	wh.page_size = db->page_size;
	wh.salt1 = db->wal.salt1;
	wh.salt2 = db->wal.salt2;
	running[0] = db->wal.cksum[0];
	running[1] = db->wal.cksum[1];
	start = off = db->wal.end;
	for (;;) {
		struct ltx_wal_frame_header fh;

		if (ltx_pread_full(db->wal_fd, frame, fsz, off) < 0)
			break;
		if (ltx_wal_frame_check(&wh, running, frame, fsz, &fh, NULL) < 0)
			break;
		if (nframes == cap) {
			struct frame_ref *f;

			cap = cap ? cap * 2 : 64;
			f = realloc(frames, cap * sizeof(*f));
			if (!f) {
				rc = ltfs_err_set(err, -ENOMEM, NULL);
				break;
			}
			frames = f;
		}
		frames[nframes].pgno = fh.pgno;
		frames[nframes].off = off + LTX_WAL_FRAME_HEADER_SIZE;
		nframes++;
		off += fsz;
		if (fh.commit == 0)
			continue;
		rc = commit_wal_group(db, frames, nframes, fh.commit, start, off, err);
		if (rc < 0)
			break;
		db->wal.end = start = off;
		db->wal.cksum[0] = running[0];
		db->wal.cksum[1] = running[1];
		nframes = 0;
	}
	free(frames);
	free(frame);
	return rc;
}

int fs_db_wal_write(struct fs_db *db, const void *buf, size_t n, uint64_t off,
		    struct ltfs_err *err)
{
	if (off == 0) {
		struct ltx_wal_header wh;
		int rc;

		if (n < LTX_WAL_HEADER_SIZE)
			return 0; /* header completed by a later write */
		rc = ltx_wal_header_parse(buf, n, &wh, err);
		if (rc < 0) {
			ltfs_err_prefix(err, "wal of '%s'", db->name);
			return rc;
		}
		/* A new WAL generation: older frames are about to be reused. */
		rc = fs_db_sync_history(db);
		if (rc < 0)
			return ltfs_err_set(err, rc, "sync ltx history of '%s'", db->name);
		if (db->page_size && wh.page_size != db->page_size)
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "wal of '%s': page size %u, database has %u",
					    db->name, wh.page_size, db->page_size);
		db->page_size = wh.page_size;
		db->wal.active = true;
		db->wal.big_endian = wh.big_endian;
		db->wal.salt1 = wh.salt1;
		db->wal.salt2 = wh.salt2;
		db->wal.cksum[0] = wh.cksum1;
		db->wal.cksum[1] = wh.cksum2;
		db->wal.end = db->wal.start = LTX_WAL_HEADER_SIZE;
		return 0;
	}
	if (!db->wal.active || db->page_size == 0)
		return 0;
	if (off < db->wal.end)
		return ltfs_err_set(err, -EINVAL,
				    "wal of '%s': write at offset %llu overwrites committed frames (end %llu)",
				    db->name, (unsigned long long)off,
				    (unsigned long long)db->wal.end);
	/* Only a write that ends a frame can complete a commit. */
	if ((off + n - LTX_WAL_HEADER_SIZE) %
		    (LTX_WAL_FRAME_HEADER_SIZE + db->page_size) == 0) {
		uint8_t fh[8];
		uint64_t frame = off + n - LTX_WAL_FRAME_HEADER_SIZE - db->page_size;

		if (ltx_pread_full(db->wal_fd, fh, sizeof(fh), frame) == 0 &&
		    ltx_get_be32(fh + 4) != 0) {
			/* tests: a handoff's fence must wait for this */
			fs_fault_stall(db->fs, "record-stall", 1500);
			return fs_db_wal_commit_pending(db, err);
		}
	}
	return 0;
}

int fs_db_wal_truncate(struct fs_db *db, uint64_t size, struct ltfs_err *err)
{
	int rc;

	if (size != 0)
		return ltfs_err_set(err, -EINVAL,
				    "wal of '%s': truncate to %llu bytes refused (only 0 is allowed)",
				    db->name, (unsigned long long)size);
	rc = fs_db_sync_history(db);
	if (rc < 0)
		return ltfs_err_set(err, rc, "sync ltx history of '%s'", db->name);
	db->wal.active = false;
	db->wal.end = db->wal.start = 0;
	return 0;
}

/* ---- files of a database ---------------------------------------------- */

const char *fs_db_aux_name(enum fs_kind kind)
{
	switch (kind) {
	case FS_JOURNAL:
		return "journal";
	case FS_WAL:
		return "wal";
	case FS_SHM:
		return "shm";
	default:
		return "database";
	}
}

static int *aux_fd_slot(struct fs_db *db, enum fs_kind kind)
{
	switch (kind) {
	case FS_JOURNAL:
		return &db->journal_fd;
	case FS_WAL:
		return &db->wal_fd;
	case FS_SHM:
		return &db->shm_fd;
	default:
		return &db->db_fd;
	}
}

int fs_db_aux_fd(struct fs_db *db, enum fs_kind kind)
{
	return *aux_fd_slot(db, kind);
}

static void close_aux(struct fs_db *db, enum fs_kind kind)
{
	int *slot = aux_fd_slot(db, kind);

	if (*slot >= 0) {
		close(*slot);
		*slot = -1;
	}
}

/* Remove a backing file; its descriptor is closed once the file is gone.
 * 0 or -errno of the unlink. */
int fs_db_remove_aux(struct fs_db *db, enum fs_kind kind)
{
	if (unlinkat(db->dirfd, fs_db_aux_name(kind), 0) < 0)
		return -errno;
	close_aux(db, kind);
	return 0;
}

/* Open (or create) the backing file of NAME-journal/-wal/-shm. */
int fs_db_open_aux(struct fs_db *db, enum fs_kind kind, bool create)
{
	int *slot = aux_fd_slot(db, kind);
	int fd;

	if (*slot >= 0)
		return 0;
	fd = openat(db->dirfd, fs_db_aux_name(kind),
		    O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
	if (fd < 0)
		return -errno;
	*slot = fd;
	return 0;
}

static int db_init(struct fs *fs, const char *name, const char *escaped,
		   struct fs_db **out, struct ltfs_err *err)
{
	struct fs_db *db = calloc(1, sizeof(*db));
	char dir[FS_PATH_MAX];

	if (!db)
		return ltfs_err_set(err, -ENOMEM, NULL);
	pthread_mutex_init(&db->mu, NULL);
	pthread_mutex_init(&db->hist_mu, NULL);
	pthread_mutex_init(&db->poll_mu, NULL);
	db->fs = fs;
	db->dirfd = db->ltxfd = db->db_fd = -1;
	db->journal_fd = db->wal_fd = db->shm_fd = -1;
	db->checksum = LTX_CHECKSUM_FLAG;
	snprintf(dir, sizeof(dir), "%s/dbs/%s", fs->data_dir, escaped);
	db->name = strdup(name);
	db->dir = strdup(dir);
	if (!db->name || !db->dir) {
		fs_db_free(db);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	*out = db;
	return 0;
}

int fs_db_create(struct fs *fs, const char *name, struct fs_db **out,
		 struct ltfs_err *err)
{
	char esc[FS_PATH_MAX];
	struct fs_db *db = NULL;
	int rc;

	fs_escape_name(name, esc, sizeof(esc));
	rc = db_init(fs, name, esc, &db, err);
	if (rc < 0)
		return rc;
	if (mkdirat(fs->dbs_fd, esc, 0755) < 0 && errno != EEXIST) {
		rc = ltfs_err_set(err, -errno, "mkdir '%s': %s", db->dir, strerror(errno));
		goto fail;
	}
	db->dirfd = openat(fs->dbs_fd, esc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (db->dirfd < 0 ||
	    (mkdirat(db->dirfd, "ltx", 0755) < 0 && errno != EEXIST) ||
	    (db->ltxfd = openat(db->dirfd, "ltx", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = ltfs_err_set(err, -errno, "'%s': %s", db->dir, strerror(errno));
		goto fail;
	}
	*out = db;
	return 0;
fail:
	fs_db_free(db);
	return rc;
}

void fs_db_free(struct fs_db *db)
{
	if (!db)
		return;
	int *fds[] = { &db->dirfd, &db->ltxfd, &db->db_fd, &db->journal_fd,
		       &db->wal_fd, &db->shm_fd };

	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] >= 0)
			close(*fds[i]);
	fs_db_sync_history(db);
	free(db->unsynced_fds);
	free(db->hcache.mins);
	free(db->hcache.maxs);
	free(db->page_cksums);
	free(db->dirty);
	free(db->name);
	free(db->dir);
	pthread_mutex_destroy(&db->mu);
	pthread_mutex_destroy(&db->hist_mu);
	pthread_mutex_destroy(&db->poll_mu);
	free(db);
}

void fs_db_pos_text(struct fs_db *db, char out[34])
{
	snprintf(out, 35, "%016llx/%016llx\n", (unsigned long long)db->txid,
		 (unsigned long long)(db->txid ? db->checksum : 0));
}

/* Record a deletion (commit 0) and remove the database's files. */
int fs_db_drop(struct fs_db *db, struct ltfs_err *err)
{
	struct ltx_out o;
	int rc = fs_db_sync_history(db); /* queued commits read these files */

	if (rc < 0)
		return ltfs_err_set(err, rc, "'%s': history not written: %s", db->name,
				    strerror(-rc));

	if (db->txid > 0 && db->page_size) {
		rc = ltx_begin(db, &o, 0, db->txid + 1, err);
		if (rc == 0)
			rc = ltx_start(&o, err);
		if (rc == 0) {
			o.sum = 0;
			rc = ltx_done(db, &o, true, err);
		}
		if (rc < 0) {
			ltx_abort(db, &o);
			return rc;
		}
		db->commit = 0;
		committed(db, &o);
	}
	fs_db_remove_files(db);
	return 0;
}

void fs_db_remove_files(struct fs_db *db)
{
	for (enum fs_kind k = FS_DB; k <= FS_SHM; k++) {
		fs_db_remove_aux(db, k); /* some never existed */
		close_aux(db, k);
	}
	fsync(db->dirfd);
	memset(&db->wal, 0, sizeof(db->wal));
	dirty_clear(db);
	db->commit = 0;
	db->page_size = 0;
}
