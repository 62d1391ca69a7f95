/*
 * replica.c - the store's side of replication.
 *
 * On a primary the cluster layer reads positions (fs_db_foreach) and the
 * files of the local history (fs_history_open) to stream them.
 *
 * On a replica, files received from the primary are staged in
 * DATA/staging and applied by fs_apply_ltx(). Readers must never see half
 * a transaction, so the apply takes SQLite's own locks as a writer would,
 * through the mount (hold_locks):
 *   rollback modes: PENDING, RESERVED and the SHARED range of the database;
 *   WAL mode: the database's PENDING byte (no new connection, and no
 *   last one closing, which deletes -wal and -shm), then the WAL-index
 *   bytes WRITE, CKPT, RECOVER and READ0..4 (WAL readers keep a SHARED
 *   database lock while connected, so more of the database's cannot be
 *   had).
 * Bytes are taken one at a time and kept, so a stream of new readers cannot
 * starve the apply; an open read transaction delays it. SQLite's requests
 * meanwhile fail with EAGAIN, i.e. SQLITE_BUSY: apps on a replica need a
 * busy timeout.
 *
 * Order, for crash safety: verify the whole file and compute the checksum
 * the database will have from the cached page checksums (nothing is
 * written unless it equals the file's post-apply checksum); take the locks;
 * move the file into the history; write the pages. A crash after the move
 * leaves a database that start-up repairs by applying the newest file
 * again. No fsync: a replica's history copies the primary's, and a replica
 * whose database fails verification asks the primary for a snapshot.
 *
 * A big snapshot of a database this node does not have yet (a new
 * replica's catch-up) is prebuilt instead: written out beside the staged
 * file while it still arrives (fs_prebuild_ltx), and checked whole; the
 * apply then only renames it into place. One decode instead of two, and
 * none of it after the last byte came.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "fs/fs_int.h"

/* SQLite's locks (os_unix.c, wal.c), in the order an apply takes them. */
struct lock_range {
	uint64_t start;
	uint32_t len;
};
static const struct lock_range db_locks[] = {
	{ FS_DB_PENDING_BYTE, 1 },  /* no new readers */
	{ FS_DB_RESERVED_BYTE, 1 }, /* no writer */
	{ FS_DB_SHARED_FIRST, FS_DB_SHARED_SIZE }, /* the readers there are gone */
};
static const struct lock_range wal_db_locks[] = {
	{ FS_DB_PENDING_BYTE, 1 }, /* no new reader, no last one closing */
};
static const struct lock_range shm_locks[] = {
	{ FS_SHM_WRITE_BYTE, 1 }, { FS_SHM_CKPT_BYTE, 1 }, { FS_SHM_RECOVER_BYTE, 1 },
	{ FS_SHM_READ_BYTE(0), 1 }, { FS_SHM_READ_BYTE(1), 1 }, { FS_SHM_READ_BYTE(2), 1 },
	{ FS_SHM_READ_BYTE(3), 1 }, { FS_SHM_READ_BYTE(4), 1 },
};

/* WAL-index header (wal.c: WalIndexHdr, WalCkptInfo), native byte order. */
#define WALIDX_VERSION 3007000u
#define WALIDX_HDR_SIZE 48
#define WALIDX_CKPT_END 136 /* two headers + checkpoint info */
#define READMARK_NOT_USED 0xffffffffu

#define APPLY_WARN_S 5

/* ---- positions and history, for the primary's streams ----------------- */

void fs_db_foreach(struct fs *fs, fs_db_fn fn, void *ctx)
{
	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < fs->ndbs; i++) {
		struct fs_db *db = fs->dbs[i];
		struct fs_db_info info = { .name = db->name };

		pthread_mutex_lock(&db->mu);
		info.txid = db->txid;
		info.checksum = db->txid ? db->checksum : 0;
		info.timestamp = db->timestamp;
		info.page_size = db->page_size;
		info.pages = db->commit;
		info.exists = db->db_fd >= 0;
		info.broken = db->broken;
		pthread_mutex_unlock(&db->mu);
		pthread_mutex_lock(&db->hist_mu);
		info.hist_txid = db->hist_txid;
		info.commits = db->n_commits;
		info.ltx_bytes = db->ltx_bytes;
		pthread_mutex_unlock(&db->hist_mu);
		fn(ctx, &info);
	}
	pthread_mutex_unlock(&fs->lock);
}

static struct fs_db *lookup(struct fs *fs, const char *name)
{
	struct fs_db *db;

	pthread_mutex_lock(&fs->lock);
	db = fs_db_find(fs, name, false);
	pthread_mutex_unlock(&fs->lock);
	return db; /* databases live as long as the store */
}

static int read_header(int fd, struct ltx_header *h, const char *what,
		       struct ltfs_err *err)
{
	uint8_t buf[LTX_HEADER_SIZE];
	int rc = ltx_pread_full(fd, buf, sizeof(buf), 0);

	if (rc < 0)
		return ltfs_err_set(err, rc == LTFS_E_TRUNCATED ? LTFS_E_TRUNCATED : rc,
				    "%s: header: %s", what, ltfs_strerror(rc));
	rc = ltx_header_decode(buf, h, err);
	if (rc < 0)
		ltfs_err_prefix(err, "%s", what);
	return rc;
}

int fs_history_open(struct fs *fs, const char *name, uint64_t min_txid,
		    int *fdp, struct ltx_header *h, struct ltfs_err *err)
{
	struct fs_db *db = lookup(fs, name);
	char file[LTX_FILENAME_SIZE];
	uint64_t top;
	int fd, rc;

	*fdp = -1;
	if (!db)
		return -ENOENT;
	pthread_mutex_lock(&db->hist_mu);
	top = db->hist_txid;
	pthread_mutex_unlock(&db->hist_mu);
	if (min_txid == 0 || min_txid > top)
		return -ENOENT;
	/* Following replicas want the newest file: try its name first. */
	ltx_format_filename(min_txid, top, file);
	fd = openat(db->ltxfd, file, O_RDONLY | O_CLOEXEC);
	/* then the names as last listed; a name that is gone (folded) or
	 * none at all is asked of the directory itself */
	for (int fresh = 0; fd < 0 && fresh < 2; fresh++) {
		rc = fs_history_find(db, min_txid, fresh, file);
		if (rc == -ENOENT && !fresh)
			continue;
		if (rc < 0)
			return rc;
		fd = openat(db->ltxfd, file, O_RDONLY | O_CLOEXEC);
		if (fd < 0 && fresh)
			return -errno; /* folded away meanwhile */
	}
	rc = read_header(fd, h, file, err);
	if (rc == 0 && h->min_txid != min_txid)
		rc = ltfs_err_set(err, LTFS_E_CORRUPT, "'%s/ltx/%s': header says txid %llu",
				  db->dir, file, (unsigned long long)h->min_txid);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	*fdp = fd;
	return 0;
}

/* ---- names --------------------------------------------------------------- */

int fs_db_name_check(const char *name, struct ltfs_err *err)
{
	size_t len = strnlen(name, FS_PATH_MAX), blen;
	const char *p = name, *last = name;

	if (len == 0 || len >= FS_PATH_MAX - 64)
		return ltfs_err_set(err, LTFS_E_USAGE, "database name is empty or longer than %d bytes",
				    FS_PATH_MAX - 65);
	if (name[0] == '/')
		return ltfs_err_set(err, LTFS_E_USAGE, "database name '%s' is an absolute path", name);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return ltfs_err_set(err, LTFS_E_USAGE,
					    "database name has a control character at byte %zu", i);
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);

		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return ltfs_err_set(err, LTFS_E_USAGE,
					    "database name '%s' has an empty, '.' or '..' component", name);
		if (n > FS_NAME_MAX)
			return ltfs_err_set(err, LTFS_E_USAGE,
					    "database name '%s' has a component over %d bytes", name,
					    FS_NAME_MAX);
		last = p;
		if (!slash)
			break;
		p = slash + 1;
	}
	if (fs_suffix_kind(last, &blen) != FS_FILE)
		return ltfs_err_set(err, LTFS_E_USAGE,
				    "database name '%s' ends in a companion file suffix", name);
	if (last == name && (strcmp(name, ".lag") == 0 || strcmp(name, ".primary") == 0))
		return ltfs_err_set(err, LTFS_E_USAGE, "database name '%s' is reserved", name);
	return 0;
}

/* ---- staging -------------------------------------------------------------- */

int fs_stage_create(struct fs *fs, char name[64], struct ltfs_err *err)
{
	for (int tries = 0; tries < 100; tries++) {
		uint64_t seq = __atomic_add_fetch(&fs->stage_seq, 1, __ATOMIC_RELAXED);
		int fd;

		snprintf(name, 64, "recv-%llu.ltx", (unsigned long long)seq);
		fd = fs_spare_create(fs, fs->staging_fd, name, true);
		if (fd >= 0)
			return fd;
		if (fd != -EEXIST)
			return ltfs_err_set(err, fd, "'%s/staging/%s': %s", fs->data_dir, name,
					    strerror(-fd));
	}
	return ltfs_err_set(err, -EEXIST, "'%s/staging': no free name", fs->data_dir);
}

void fs_stage_discard(struct fs *fs, const char *stage_name)
{
	unlinkat(fs->staging_fd, stage_name, 0);
}

/* ---- apply ---------------------------------------------------------------- */

struct plan {
	struct ltx_header h;
	uint64_t sum;       /* the database checksum after the apply, FLAG set */
	uint32_t *pgnos;    /* pages in the file, ascending */
	size_t npgnos, cap;
	uint32_t old_pages; /* database pages before */
	bool wal_mode;      /* the database is in WAL mode before the apply */
};

static int add_pgno(struct plan *p, uint32_t pgno)
{
	if (p->npgnos == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 256;
		uint32_t *v = realloc(p->pgnos, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		p->pgnos = v;
		p->cap = cap;
	}
	p->pgnos[p->npgnos++] = pgno;
	return 0;
}

/* Does the file continue the database? (db->mu held) */
static int check_continues(struct fs_db *db, const struct ltx_header *h,
			   struct ltfs_err *err)
{
	uint64_t cur = db->txid ? db->checksum : 0;

	if (!ltx_header_has_checksums(h))
		return ltfs_err_set(err, LTFS_E_FORMAT,
				    "file has no checksums: replication needs them");
	if (ltx_header_is_snapshot(h))
		return 0;
	if (db->broken)
		return ltfs_err_set(err, LTFS_E_TXID,
				    "database failed verification: only a snapshot can repair it");
	if (h->min_txid != db->txid + 1)
		return ltfs_err_set(err, LTFS_E_TXID,
				    "file starts at txid %llu, the database is at txid %llu",
				    (unsigned long long)h->min_txid,
				    (unsigned long long)db->txid);
	if (h->pre_apply_checksum != cur)
		return ltfs_err_set(err, LTFS_E_TXID,
				    "pre-apply checksum %016llx differs from the database's %016llx at txid %llu",
				    (unsigned long long)h->pre_apply_checksum,
				    (unsigned long long)cur, (unsigned long long)db->txid);
	if (db->page_size && db->commit && h->page_size != db->page_size)
		return ltfs_err_set(err, LTFS_E_USAGE, "page size %u differs from the database's %u",
				    h->page_size, db->page_size);
	return 0;
}

/*
 * Pass 1: decode and verify the whole file and compute the checksum the
 * database will have: each page in the file replaces its old checksum,
 * pages beyond the new commit leave the sum (db->mu held: the cached page
 * checksums are read).
 */
static int plan_apply(struct fs_db *db, int fd, struct plan *p,
		      struct ltfs_err *err)
{
	struct ltx_decoder *dec = NULL;
	struct ltx_frame_info fi;
	struct ltx_trailer t;
	const uint8_t *page;
	uint32_t pgno, old;
	uint64_t sum;
	int rc = ltx_decoder_open_fd(&dec, &fd, 0, err);

	if (rc < 0)
		return rc;
	p->h = *ltx_decoder_header(dec);
	rc = check_continues(db, &p->h, err);
	if (rc < 0)
		goto out;
	old = ltx_header_is_snapshot(&p->h) ? 0 : db->commit;
	p->old_pages = db->commit;
	sum = old ? db->checksum & ~LTX_CHECKSUM_FLAG : 0;
	while ((rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1) {
		ltx_decoder_frame_info(dec, &fi);
		sum ^= fi.checksum & ~LTX_CHECKSUM_FLAG;
		if (pgno <= old)
			sum ^= db->page_cksums[pgno - 1] & ~LTX_CHECKSUM_FLAG;
		if (add_pgno(p, pgno) < 0) {
			rc = ltfs_err_set(err, -ENOMEM, NULL);
			goto out;
		}
	}
	if (rc < 0)
		goto out;
	rc = ltx_decoder_finish(dec, &t, err);
	if (rc < 0)
		goto out;
	for (pgno = p->h.commit + 1; pgno <= old; pgno++)
		sum ^= db->page_cksums[pgno - 1] & ~LTX_CHECKSUM_FLAG;
	p->sum = LTX_CHECKSUM_FLAG | sum;
	if (t.post_apply_checksum != p->sum)
		rc = ltfs_err_set(err, LTFS_E_CHECKSUM,
				  "post-apply checksum %016llx differs from the %016llx the database would have",
				  (unsigned long long)t.post_apply_checksum,
				  (unsigned long long)p->sum);
out:
	ltx_decoder_free(dec);
	return rc;
}

/* Pass 2: write the pages (db->mu held; the file verified in pass 1). */
static int write_pages(struct fs_db *db, int fd, const struct plan *p,
		       struct ltfs_err *err)
{
	const struct ltx_header *h = &p->h;
	struct ltx_decoder *dec = NULL;
	struct ltx_frame_info fi;
	struct ltx_page_run run = { 0 };
	const uint8_t *page;
	uint32_t pgno;
	int rc;

	if (h->commit == 0) {
		fs_db_remove_files(db);
		return 0;
	}
	if (db->db_fd < 0) {
		db->db_fd = openat(db->dirfd, "database", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
		if (db->db_fd < 0)
			return ltfs_err_set(err, -errno, "'%s/database': %s", db->dir,
					    strerror(errno));
	}
	rc = fs_db_cksums_reserve(db, h->commit);
	if (rc < 0)
		return ltfs_err_set(err, rc, NULL);
	for (uint32_t i = ltx_header_is_snapshot(h) ? 0 : db->commit; i < h->commit; i++)
		db->page_cksums[i] = 0; /* pages new to the database */
	rc = ltx_decoder_open_fd(&dec, &fd, 0, err);
	while (rc == 0 && (rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1) {
		ltx_decoder_frame_info(dec, &fi);
		rc = ltx_page_run_add(&run, db->db_fd, page, h->page_size,
				      (uint64_t)(pgno - 1) * h->page_size, err);
		/* a failed write marks the whole database broken */
		db->page_cksums[pgno - 1] = fi.checksum;
	}
	if (rc == 0)
		rc = ltx_page_run_flush(&run, db->db_fd, err);
	if (rc == 0)
		rc = ltx_decoder_finish(dec, NULL, err);
	if (rc < 0)
		ltfs_err_prefix(err, "'%s/database'", db->dir);
	ltx_decoder_free(dec);
	ltx_page_run_release(&run);
	if (rc == 0 && ftruncate(db->db_fd, (off_t)h->commit * h->page_size) < 0)
		rc = ltfs_err_set(err, -errno, "'%s/database': truncate: %s", db->dir,
				  strerror(errno));
	return rc;
}

/*
 * Take SQLite's locks for the apply, one range at a time (and keep each),
 * waiting for SQLite's readers to let go. The app's locks are the
 * kernel's (ltfs does not serve locks: each would be a FUSE round trip on
 * the commit path), so the apply takes its own the same way, as
 * open-file-description locks on the file opened through the mount (by a
 * helper process: opener.c), where they conflict with the app's. Closing
 * *fd releases them. Nothing may be held here that a FUSE worker needs.
 * With no mount being served (starting, stopping) or no such file in it,
 * no app can read it, and the apply goes ahead with *fd = -1.
 */
static int hold_locks(struct fs *fs, struct fs_db *db, const char *suffix,
		      const struct lock_range *r, size_t count, int *fd)
{
	char path[FS_PATH_MAX];
	struct timespec t0, now;
	bool warned = false;
	int rc;

	*fd = -1;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s%s", fs->mountpoint, db->name,
			     suffix) >= sizeof(path))
		return -ENAMETOOLONG;
	while (!__atomic_load_n(&fs->running, __ATOMIC_SEQ_CST)) {
		if (__atomic_load_n(&fs->stopping, __ATOMIC_SEQ_CST) ||
		    !__atomic_load_n(&fs->mounted, __ATOMIC_SEQ_CST))
			return 0;
		usleep(1000); /* mounted, the loop about to start: requests wait for it */
	}
	rc = fs_open_in_mount(fs, path, O_RDWR, fd);
	if (rc < 0) /* not there, or the mount went away meanwhile (fs_run) */
		return rc == -ENOENT || !__atomic_load_n(&fs->mounted, __ATOMIC_SEQ_CST) ? 0 : rc;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (size_t i = 0; i < count; i++) {
		struct flock fl = {
			.l_type = F_WRLCK,
			.l_whence = SEEK_SET,
			.l_start = (off_t)r[i].start,
			.l_len = (off_t)r[i].len,
		};

		while (fcntl(*fd, F_OFD_SETLK, &fl) < 0) {
			if (errno != EAGAIN && errno != EACCES)
				return -errno;
			if (__atomic_load_n(&fs->stopping, __ATOMIC_RELAXED))
				return -ECANCELED;
			usleep(1000);
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (!warned && now.tv_sec - t0.tv_sec >= APPLY_WARN_S) {
				ltfs_warn(fs->log, "replica",
					  "'%s': apply waits for a read transaction to end",
					  db->name);
				warned = true;
			}
		}
	}
	return 0;
}

static bool file_in_wal_mode(struct fs_db *db)
{
	uint8_t hdr[LTX_SQLITE_HEADER_SIZE];
	struct ltx_db_header dh;

	return db->db_fd >= 0 &&
	       pread(db->db_fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
	       ltx_db_header_parse(hdr, sizeof(hdr), &dh, NULL) == 0 &&
	       ltx_db_header_is_wal(&dh);
}

/* The nodes an apply locks and invalidates, pinned for its duration. */
struct apply_nodes {
	struct fs_node *db, *shm;
	uint64_t db_ino, shm_ino, parent_ino;
	int lock_fd, db_lock_fd; /* the apply's locks, through the mount; -1: none */
	bool unwatched; /* no app had the files open: none may open them */
	char base[FS_NAME_MAX + 1];
};

static int pin_nodes(struct fs *fs, struct fs_db *db, struct apply_nodes *an)
{
	char path[FS_PATH_MAX], parent[FS_PATH_MAX];
	const char *slash = strrchr(db->name, '/');
	struct fs_node *pn;

	memset(an, 0, sizeof(*an));
	an->lock_fd = an->db_lock_fd = -1;
	snprintf(an->base, sizeof(an->base), "%s", slash ? slash + 1 : db->name);
	snprintf(parent, sizeof(parent), "%.*s", slash ? (int)(slash - db->name) : 0, db->name);
	snprintf(path, sizeof(path), "%s-shm", db->name);
	pthread_mutex_lock(&fs->lock);
	if (!db->node)
		db->node = fs_node_new(fs, db->name, FS_DB, db);
	an->shm = fs_node_find(fs, path);
	if (!an->shm)
		an->shm = fs_node_new(fs, path, FS_SHM, db);
	if (!db->node || !an->shm) {
		if (an->shm)
			fs_node_maybe_free(fs, an->shm);
		pthread_mutex_unlock(&fs->lock);
		return -ENOMEM;
	}
	an->db = db->node;
	/* With no handle open on the database or its WAL index, no app holds
	 * a lock or reads: the apply needs none of SQLite's locks, only that
	 * no app opens the files meanwhile (open_node waits). Hot standbys
	 * then apply without a trip through the mount. */
	an->unwatched = an->db->nopen == 0 && an->shm->nopen == 0;
	if (an->unwatched)
		db->applying = true;
	an->db->nopen++;
	an->shm->nopen++;
	an->db_ino = fs_node_ino(fs, an->db);
	an->shm_ino = fs_node_ino(fs, an->shm);
	pn = parent[0] ? fs_node_find(fs, parent) : fs->root;
	an->parent_ino = pn ? fs_node_ino(fs, pn) : 0;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

/*
 * Let apps open the files again. Before an invalidation of names: the
 * kernel holds the directory's lock while it waits for a create (an open
 * with O_CREAT), which would wait for us, and the invalidation takes it.
 */
static void end_applying(struct fs *fs, struct apply_nodes *an)
{
	pthread_mutex_lock(&fs->lock);
	if (an->unwatched) {
		an->db->db->applying = false;
		an->unwatched = false;
		pthread_cond_broadcast(&fs->apply_cv);
	}
	pthread_mutex_unlock(&fs->lock);
}

static void unpin_nodes(struct fs *fs, struct apply_nodes *an)
{
	if (an->lock_fd >= 0)
		close(an->lock_fd);
	if (an->db_lock_fd >= 0)
		close(an->db_lock_fd);
	end_applying(fs, an);
	pthread_mutex_lock(&fs->lock);
	an->db->nopen--;
	an->shm->nopen--;
	fs_node_maybe_free(fs, an->shm);
	fs_node_maybe_free(fs, an->db);
	pthread_mutex_unlock(&fs->lock);
}

/*
 * A fresh WAL index: an empty WAL (mxFrame 0) with a new change counter,
 * so every connection drops its page cache at its next transaction and
 * reads the database file again.
 */
static void build_wal_index(const uint8_t old[WALIDX_HDR_SIZE], uint32_t page_size,
			    uint32_t pages, uint8_t out[WALIDX_CKPT_END])
{
	uint32_t v, cksum[2] = { 0, 0 };
	uint16_t sz = (uint16_t)((page_size & 0xff00) | (page_size >> 16));
	bool big = __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__;

	memset(out, 0, WALIDX_CKPT_END);
	v = WALIDX_VERSION;
	memcpy(out + 0, &v, 4);
	memcpy(&v, old + 8, 4);
	v++;                             /* iChange */
	memcpy(out + 8, &v, 4);
	out[12] = 1;                     /* isInit */
	out[13] = big;                   /* bigEndCksum */
	memcpy(out + 14, &sz, 2);
	memcpy(out + 20, &pages, 4);     /* nPage; mxFrame (16) stays 0 */
	memcpy(out + 32, old + 32, 8);   /* salts: unused without frames */
	ltx_wal_checksum(big, out, 40, cksum);
	memcpy(out + 40, cksum, 8);
	memcpy(out + WALIDX_HDR_SIZE, out, WALIDX_HDR_SIZE);
	/* checkpoint info at 96: nBackfill 0, readMark[0] 0, others unused */
	v = READMARK_NOT_USED;
	for (int i = 1; i <= 4; i++)
		memcpy(out + FS_SHM_READ_MARK_OFF(i), &v, 4);
}

static void inval_inode(struct fs *fs, uint64_t ino, off_t off, off_t len)
{
	if (fs->se && ino)
		fuse_lowlevel_notify_inval_inode(fs->se, ino, off, len);
}

/* Rewrite the WAL index under the locks (db->mu not held: the kernel may
 * write dirty pages back through us while we invalidate). */
static int reset_wal_index(struct fs *fs, struct fs_db *db,
			   const struct apply_nodes *an, struct ltfs_err *err)
{
	uint8_t old[WALIDX_HDR_SIZE] = { 0 }, idx[WALIDX_CKPT_END];
	int fd, rc = 0;

	fd = openat(db->dirfd, fs_db_aux_name(FS_SHM), O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return 0; /* nobody has it open: SQLite builds it afresh */
	pthread_mutex_lock(&db->mu);
	db->shm_resetting = true;
	pthread_mutex_unlock(&db->mu);
	/* write back (and drop) what the page cache holds first */
	inval_inode(fs, an->shm_ino, 0, 0);
	if (pread(fd, old, sizeof(old), 0) < 0)
		memset(old, 0, sizeof(old));
	build_wal_index(old, db->page_size, db->commit, idx);
	rc = ltx_pwrite_full(fd, idx, sizeof(idx), 0);
	inval_inode(fs, an->shm_ino, 0, 0);
	pthread_mutex_lock(&db->mu);
	db->shm_resetting = false;
	pthread_mutex_unlock(&db->mu);
	close(fd);
	if (rc < 0)
		return ltfs_err_set(err, rc, "'%s/shm': %s", db->dir, ltfs_strerror(rc));
	return 0;
}

/* Drop the kernel's cached pages of what changed. */
static void invalidate(struct fs *fs, const struct plan *p,
		       const struct apply_nodes *an)
{
	uint64_t ps = p->h.page_size;

	if (!fs->se)
		return;
	if (p->h.commit == 0) {
		static const char *const sfx[] = { "", "-wal", "-shm", "-journal", "-pos" };
		char name[FS_NAME_MAX + 16];

		for (size_t i = 0; an->parent_ino && i < sizeof(sfx) / sizeof(sfx[0]); i++) {
			snprintf(name, sizeof(name), "%s%s", an->base, sfx[i]);
			fuse_lowlevel_notify_inval_entry(fs->se, an->parent_ino, name,
							 strlen(name));
		}
		return;
	}
	if (ltx_header_is_snapshot(&p->h) || p->old_pages == 0) {
		inval_inode(fs, an->db_ino, 0, 0);
		return;
	}
	for (size_t i = 0; i < p->npgnos;) {
		size_t j = i + 1;

		while (j < p->npgnos && p->pgnos[j] == p->pgnos[j - 1] + 1)
			j++;
		inval_inode(fs, an->db_ino, (off_t)((p->pgnos[i] - 1) * ps),
			    (off_t)((j - i) * ps));
		i = j;
	}
	if (p->h.commit != p->old_pages) /* size changed: attributes and the tail */
		inval_inode(fs, an->db_ino,
			    (off_t)((p->h.commit < p->old_pages ? p->h.commit : p->old_pages) * ps), 0);
}

/* Make the database a verified file names, and the directories above it
 * (fs->lock held). */
static int apply_target(struct fs *fs, const char *name, struct fs_db **out,
			struct ltfs_err *err)
{
	struct fs_db *db = fs_db_find(fs, name, false);
	struct stat st;
	char dir[FS_PATH_MAX];
	int rc;

	if (db) {
		*out = db;
		return 0;
	}
	if (fstatat(fs->tree_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return ltfs_err_set(err, LTFS_E_STATE,
				    "a file that is not a replicated database is in the way; remove it from '%s/tree'",
				    fs->data_dir);
	for (const char *s = strchr(name, '/'); s; s = strchr(s + 1, '/')) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(s - name), name);
		if (fs_db_find(fs, dir, false) ||
		    (fstatat(fs->tree_fd, dir, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode)))
			return ltfs_err_set(err, LTFS_E_STATE, "'%s' is a file, not a directory", dir);
	}
	for (const char *s = strchr(name, '/'); s; s = strchr(s + 1, '/')) {
		snprintf(dir, sizeof(dir), "%.*s", (int)(s - name), name);
		if (mkdirat(fs->tree_fd, dir, 0755) < 0 && errno != EEXIST)
			return ltfs_err_set(err, -errno, "mkdir '%s/tree/%s': %s",
					    fs->data_dir, dir, strerror(errno));
	}
	rc = fs_db_create(fs, name, &db, err);
	if (rc == 0 && (rc = fs_db_register(fs, db, err)) < 0)
		fs_db_free(db);
	if (rc == 0) {
		ltfs_info(fs->log, "replica", "'%s': new database", name);
		*out = db;
	}
	return rc;
}

/* Move the staged file into the history (db->mu held). */
static int publish(struct fs *fs, struct fs_db *db, const struct plan *p,
		   const char *stage_name, char file[LTX_FILENAME_SIZE],
		   struct ltfs_err *err)
{
	ltx_format_filename(p->h.min_txid, p->h.max_txid, file);
	if (renameat(fs->staging_fd, stage_name, db->ltxfd, file) < 0)
		return ltfs_err_set(err, -errno, "move into '%s/ltx/%s': %s", db->dir, file,
				    strerror(errno));
	fs_history_added(db, file);
	if (ltx_header_is_snapshot(&p->h))
		fs_history_remove_except(db, file);
	return 0;
}

/* ---- prebuilt snapshots ---------------------------------------------------- */

struct fs_prebuilt {
	struct ltx_header h;
	uint64_t sum;            /* the database checksum, FLAG set */
	uint64_t *cksums;        /* [0..ncksums), ncksums <= h.commit */
	uint32_t ncksums;
	int fd;                  /* the database written out */
	char file[80];           /* its name in DATA/staging */
};

void fs_prebuilt_free(struct fs *fs, struct fs_prebuilt *pb)
{
	if (!pb)
		return;
	if (pb->fd >= 0) {
		close(pb->fd);
		unlinkat(fs->staging_fd, pb->file, 0);
	}
	free(pb->cksums);
	free(pb);
}

/* Room for page pgno's checksum. The array grows with the pages that came,
 * never to what an unchecked header claims. */
static int grow_cksums(struct fs_prebuilt *pb, uint32_t pgno, struct ltfs_err *err)
{
	uint64_t want = (uint64_t)pb->ncksums * 2;
	uint64_t *v;

	if (want < pgno)
		want = pgno;
	if (want < 1024)
		want = 1024;
	if (want > pb->h.commit)
		want = pb->h.commit;
	v = realloc(pb->cksums, want * sizeof(*v));
	if (!v)
		return ltfs_err_set(err, -ENOMEM, NULL);
	memset(v + pb->ncksums, 0, (want - pb->ncksums) * sizeof(*v)); /* the lock page stays 0 */
	pb->cksums = v;
	pb->ncksums = (uint32_t)want;
	return 0;
}

int fs_prebuild_ltx(struct fs *fs, const char *name, const char *stage_name, ltx_read_fn read,
		    void *ctx, struct fs_prebuilt **out, struct ltfs_err *err)
{
	struct ltx_decoder *dec = NULL;
	struct ltx_page_run run = { 0 };
	struct ltx_frame_info fi;
	struct ltx_trailer t;
	struct fs_prebuilt *pb = NULL;
	const uint8_t *page;
	uint64_t sum = 0;
	uint32_t pgno;
	int rc;

	*out = NULL;
	if (lookup(fs, name))
		return 0;
	rc = ltx_decoder_open(&dec, read, ctx, NULL, err);
	if (rc < 0)
		return rc;
	fs_fault_stall(fs, "prebuild-slow", 1000); /* the frame outruns the writer */
	if (!ltx_header_is_snapshot(ltx_decoder_header(dec)) ||
	    !ltx_header_has_checksums(ltx_decoder_header(dec)) ||
	    ltx_decoder_header(dec)->commit == 0)
		goto out; /* not for a prebuild: the apply does it all */
	pb = calloc(1, sizeof(*pb));
	if (!pb) {
		rc = ltfs_err_set(err, -ENOMEM, NULL);
		goto out;
	}
	pb->fd = -1;
	pb->h = *ltx_decoder_header(dec);
	snprintf(pb->file, sizeof(pb->file), "%s.db", stage_name);
	pb->fd = openat(fs->staging_fd, pb->file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (pb->fd < 0) {
		rc = ltfs_err_set(err, -errno, "'%s/staging/%s': %s", fs->data_dir, pb->file,
				  strerror(errno));
		goto out;
	}
	while ((rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1) {
		ltx_decoder_frame_info(dec, &fi);
		rc = ltx_page_run_add(&run, pb->fd, page, pb->h.page_size,
				      (uint64_t)(pgno - 1) * pb->h.page_size, err);
		if (rc == 0 && pgno > pb->ncksums)
			rc = grow_cksums(pb, pgno, err);
		if (rc < 0)
			goto out;
		sum ^= fi.checksum & ~LTX_CHECKSUM_FLAG;
		pb->cksums[pgno - 1] = fi.checksum;
	}
	if (rc == 0)
		rc = ltx_page_run_flush(&run, pb->fd, err);
	if (rc == 0)
		rc = ltx_decoder_finish(dec, &t, err);
	if (rc == 0 && ftruncate(pb->fd, (off_t)pb->h.commit * pb->h.page_size) < 0)
		rc = ltfs_err_set(err, -errno, "'%s/staging/%s': truncate: %s", fs->data_dir,
				  pb->file, strerror(errno));
	pb->sum = LTX_CHECKSUM_FLAG | sum;
	if (rc == 0 && t.post_apply_checksum != pb->sum)
		rc = ltfs_err_set(err, LTFS_E_CHECKSUM,
				  "post-apply checksum %016llx differs from the %016llx of its pages",
				  (unsigned long long)t.post_apply_checksum,
				  (unsigned long long)pb->sum);
out:
	ltx_page_run_release(&run);
	ltx_decoder_free(dec);
	if (rc < 0) {
		fs_prebuilt_free(fs, pb);
		return rc;
	}
	*out = pb;
	return 0;
}

/* The prebuilt database becomes the database's file (db->mu held; the
 * database is new: no file, no pages). */
static int install_prebuilt(struct fs *fs, struct fs_db *db, struct fs_prebuilt *pb,
			    struct ltfs_err *err)
{
	int rc = fs_db_cksums_reserve(db, pb->h.commit);

	if (rc < 0)
		return ltfs_err_set(err, rc, NULL);
	if (renameat(fs->staging_fd, pb->file, db->dirfd, "database") < 0)
		return ltfs_err_set(err, -errno, "move into '%s/database': %s", db->dir,
				    strerror(errno));
	memcpy(db->page_cksums, pb->cksums, (size_t)pb->ncksums * sizeof(*pb->cksums));
	memset(db->page_cksums + pb->ncksums, 0,
	       (size_t)(pb->h.commit - pb->ncksums) * sizeof(*pb->cksums));
	db->db_fd = pb->fd;
	pb->fd = -1;
	return 0;
}

/*
 * Hold SQLite's readers off for the apply (hold_locks), into an's lock
 * fds. A database that is not served (broken), or that no app has open
 * (opens wait meanwhile: pin_nodes), has no reader to hold. The file that
 * carries the locks must exist, or an app could open it in the middle of
 * the apply and not be held; a prebuilt snapshot arrives whole, by rename.
 */
static int hold_readers(struct fs *fs, struct fs_db *db, const struct plan *p,
			bool prebuilt, struct apply_nodes *an, struct ltfs_err *err)
{
	int rc = 0;

	pthread_mutex_lock(&db->mu);
	if (db->broken || an->unwatched) {
		pthread_mutex_unlock(&db->mu);
		return 0;
	}
	if (p->wal_mode)
		rc = fs_db_open_aux(db, FS_SHM, true);
	else if (!prebuilt && db->db_fd < 0 && p->h.commit > 0 &&
		 (db->db_fd = openat(db->dirfd, "database", O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0)
		rc = -errno;
	pthread_mutex_unlock(&db->mu);
	if (rc < 0)
		return ltfs_err_set(err, rc, "'%s': %s", db->dir, strerror(-rc));
	if (p->wal_mode) {
		/* PENDING first: no new connection, and no last one closing,
		 * which would delete -wal and -shm under the apply */
		rc = hold_locks(fs, db, "", wal_db_locks, 1, &an->db_lock_fd);
		if (rc == 0)
			rc = hold_locks(fs, db, "-shm", shm_locks,
					sizeof(shm_locks) / sizeof(shm_locks[0]), &an->lock_fd);
	} else {
		rc = hold_locks(fs, db, "", db_locks, sizeof(db_locks) / sizeof(db_locks[0]),
				&an->lock_fd);
	}
	if (rc < 0)
		return ltfs_err_set(err, rc, "taking the database's locks: %s", ltfs_strerror(rc));
	return 0;
}

int fs_apply_ltx(struct fs *fs, const char *name, int fd, const char *stage_name,
		 struct fs_prebuilt *pb, struct ltx_header *out, struct ltfs_err *err)
{
	struct plan p = { 0 };
	struct apply_nodes an;
	struct fs_db *db = NULL;
	char file[LTX_FILENAME_SIZE];
	struct stat st;
	bool pinned = false, moved = false, prebuilt = false;
	int rc;

	rc = fs_db_name_check(name, err);
	if (rc < 0)
		goto out;
	db = lookup(fs, name);
	if (db && pb) { /* the database came meanwhile: a plain apply */
		fs_prebuilt_free(fs, pb);
		pb = NULL;
	}
	if (db) {
		pthread_mutex_lock(&db->mu);
		rc = plan_apply(db, fd, &p, err);
		p.wal_mode = file_in_wal_mode(db);
		pthread_mutex_unlock(&db->mu);
	} else if (pb) {
		p.h = pb->h;
		p.sum = pb->sum;
		pthread_mutex_lock(&fs->lock);
		rc = apply_target(fs, name, &db, err);
		pthread_mutex_unlock(&fs->lock);
	} else {
		/* verified against an empty database before anything is made */
		struct fs_db empty = { .checksum = LTX_CHECKSUM_FLAG, .db_fd = -1 };

		rc = plan_apply(&empty, fd, &p, err);
		if (rc == 0) {
			pthread_mutex_lock(&fs->lock);
			rc = apply_target(fs, name, &db, err);
			pthread_mutex_unlock(&fs->lock);
		}
	}
	if (rc < 0)
		goto out;

	rc = pin_nodes(fs, db, &an);
	if (rc < 0) {
		ltfs_err_set(err, rc, NULL);
		goto out;
	}
	pinned = true;
	rc = hold_readers(fs, db, &p, pb != NULL, &an, err);
	if (rc < 0)
		goto out;

	pthread_mutex_lock(&db->mu);
	rc = fs_db_settle(db, p.wal_mode, err);
	/* nothing else applies, but the position must still be the planned one */
	if (rc == 0)
		rc = check_continues(db, &p.h, err);
	if (rc == 0)
		rc = publish(fs, db, &p, stage_name, file, err);
	if (rc == 0) {
		moved = true;
		prebuilt = pb && db->db_fd < 0 && db->commit == 0;
		if (prebuilt)
			rc = install_prebuilt(fs, db, pb, err);
		else
			rc = write_pages(db, fd, &p, err);
		if (rc < 0) {
			db->broken = true;
			snprintf(db->broken_msg, sizeof(db->broken_msg),
				 "apply of %s failed halfway: %s", file, err->msg);
		}
	}
	if (rc == 0) {
		db->txid = p.h.max_txid;
		db->checksum = p.sum;
		db->timestamp = p.h.timestamp;
		db->commit = p.h.commit;
		db->page_size = p.h.commit ? p.h.page_size : 0;
		db->broken = false;
	}
	pthread_mutex_unlock(&db->mu);
	if (rc < 0)
		goto out;
	/* tests: the new pages are there, the caches not yet dropped */
	fs_fault_stall(fs, "apply-slow", 100);
	if (p.h.commit > 0 && (p.wal_mode || file_in_wal_mode(db)))
		rc = reset_wal_index(fs, db, &an, err);
	if (p.h.commit == 0)
		end_applying(fs, &an);
	invalidate(fs, &p, &an);
	fs_pos_changed(db); /* after the caches: a woken reader sees the new state */
	if (fstat(fd, &st) == 0) /* the staged file, now in the history */
		fs_db_published(db, &p.h, p.sum, file, (uint64_t)st.st_size);
	if (out)
		*out = p.h;
	if (prebuilt)
		ltfs_info(fs->log, "replica", "'%s': snapshot %s written out as it arrived, %u pages, checksum %016llx",
			  name, file, p.h.commit, (unsigned long long)p.sum);
	else
		ltfs_debug(fs->log, "replica", "'%s': applied %s, %u pages, checksum %016llx",
			   name, file, p.h.commit, (unsigned long long)p.sum);
out:
	if (pinned)
		unpin_nodes(fs, &an);
	if (!moved)
		fs_stage_discard(fs, stage_name);
	fs_prebuilt_free(fs, pb);
	free(p.pgnos);
	if (rc < 0 && p.h.max_txid) {
		ltx_format_filename(p.h.min_txid, p.h.max_txid, file);
		ltfs_err_prefix(err, "'%s': %s", name, file);
	} else if (rc < 0) {
		ltfs_err_prefix(err, "'%s'", name);
	}
	return rc;
}

int fs_db_forget(struct fs *fs, const char *name, struct ltfs_err *err)
{
	struct fs_db *db = lookup(fs, name);
	struct apply_nodes an;
	struct plan p = { 0 };
	int rc;

	if (!db)
		return 0;
	rc = pin_nodes(fs, db, &an);
	if (rc < 0)
		return ltfs_err_set(err, rc, "'%s': %s", name, strerror(-rc));
	pthread_mutex_lock(&db->mu);
	fs_db_remove_files(db);
	fs_history_remove_except(db, "");
	db->txid = 0;
	db->checksum = LTX_CHECKSUM_FLAG;
	db->timestamp = 0;
	db->broken = false;
	pthread_mutex_unlock(&db->mu);
	fs_pos_changed(db);
	pthread_mutex_lock(&db->hist_mu);
	db->hist_txid = 0;
	db->nltx = 0;
	pthread_mutex_unlock(&db->hist_mu);
	end_applying(fs, &an);
	invalidate(fs, &p, &an); /* commit 0: the names go */
	unpin_nodes(fs, &an);
	ltfs_info(fs->log, "replica", "'%s': removed (the primary has no such database)", name);
	return 0;
}

/* ---- lag ------------------------------------------------------------------ */

void fs_set_primary_time(struct fs *fs, int64_t ms)
{
	__atomic_store_n(&fs->primary_time, ms, __ATOMIC_RELAXED);
}

int64_t fs_lag_ms(struct fs *fs)
{
	int64_t t = __atomic_load_n(&fs->primary_time, __ATOMIC_RELAXED), now;
	struct timespec ts;

	if (fs_is_primary(fs))
		return 0;
	if (t == 0)
		return INT32_MAX;
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	return now <= t ? 0 : now - t > INT32_MAX ? INT32_MAX : now - t;
}

bool fs_is_primary(struct fs *fs)
{
	return __atomic_load_n(&fs->role, __ATOMIC_RELAXED) == FS_ROLE_PRIMARY;
}

void fs_set_write_deadline(struct fs *fs, int64_t mono_ms)
{
	/* acknowledgements first: as writes close, a commit recorded under
	 * the old deadline and answered in between is reported as failed */
	__atomic_store_n(&fs->ack_deadline, mono_ms, __ATOMIC_SEQ_CST);
	__atomic_store_n(&fs->write_deadline, mono_ms, __ATOMIC_SEQ_CST);
}

void fs_fence_writes(struct fs *fs)
{
	__atomic_store_n(&fs->write_deadline, 1, __ATOMIC_SEQ_CST);
	/* Every write checks the deadline and records its commit under its
	 * database's lock: once each lock has been free once, no write that
	 * passed the check is still short of recording. */
	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < fs->ndbs; i++) {
		pthread_mutex_lock(&fs->dbs[i]->mu);
		pthread_mutex_unlock(&fs->dbs[i]->mu);
	}
	pthread_mutex_unlock(&fs->lock);
}

void fs_set_ack_deadline(struct fs *fs, int64_t mono_ms)
{
	__atomic_store_n(&fs->ack_deadline, mono_ms, __ATOMIC_SEQ_CST);
}

static bool before_deadline(const int64_t *deadline)
{
	int64_t until = __atomic_load_n(deadline, __ATOMIC_SEQ_CST);
	struct timespec ts;

	if (until == 0)
		return true;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 < until;
}

bool fs_write_allowed(struct fs *fs)
{
	return fs_is_primary(fs) && before_deadline(&fs->write_deadline);
}

bool fs_ack_allowed(struct fs *fs)
{
	return before_deadline(&fs->ack_deadline);
}

uint64_t fs_node_id(struct fs *fs)
{
	return fs->node_id;
}
