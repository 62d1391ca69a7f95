/*
 * recover.c - bring one database back to a proven state at start-up.
 *
 * Order, for DATA/dbs/NAME:
 *   1. adopt a complete ltx/MIN-MAX.ltx.tmp that continues the history (a commit
 *      whose rename was not yet durable), drop other temp files;
 *   2. verify the newest LTX file completely: it is the claim to check;
 *   3. roll back a hot journal (SQLite's format, played back here, since
 *      no SQLite process may touch the file before we serve it);
 *   4. scan the WAL for committed frames (salts + cumulative checksums);
 *   5. checksum the logical database (file overlaid with committed frames);
 *   6. reconcile: committed WAL transactions newer than the history become
 *      one LTX file; a database one transaction behind its newest LTX is
 *      rolled forward with it; any other difference marks the database
 *      broken, and it is not served.
 * The -shm file is deleted: SQLite rebuilds it from the WAL.
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

struct frame_pos {
	uint32_t pgno;
	uint64_t off; /* page data offset in the WAL */
};

struct wal_scan {
	struct ltx_wal_header wh;
	bool valid;
	struct frame_pos *frames; /* committed frames, WAL order */
	size_t nframes, cap;
	uint32_t commit;     /* db size after the last committed frame */
	uint32_t ncommits;
	uint64_t *commit_ends; /* offset after each commit frame */
	uint64_t end;        /* after the last committed frame */
	uint32_t cksum[2];   /* running checksum at `end` */
};

static int scan_wal(int fd, struct wal_scan *ws)
{
	uint8_t hdr[LTX_WAL_HEADER_SIZE], *frame;
	size_t fsz, pending = 0;
	uint32_t running[2];
	uint64_t off;

	memset(ws, 0, sizeof(*ws));
	if (fd < 0 || ltx_pread_full(fd, hdr, sizeof(hdr), 0) < 0 ||
	    ltx_wal_header_parse(hdr, sizeof(hdr), &ws->wh, NULL) < 0)
		return 0;
	ws->valid = true;
	ws->end = LTX_WAL_HEADER_SIZE;
	ws->cksum[0] = running[0] = ws->wh.cksum1;
	ws->cksum[1] = running[1] = ws->wh.cksum2;
	fsz = LTX_WAL_FRAME_HEADER_SIZE + ws->wh.page_size;
	frame = malloc(fsz);
	if (!frame)
		return -ENOMEM;
	for (off = LTX_WAL_HEADER_SIZE;; off += fsz) {
		struct ltx_wal_frame_header fh;

		if (ltx_pread_full(fd, frame, fsz, off) < 0 ||
		    ltx_wal_frame_check(&ws->wh, running, frame, fsz, &fh, NULL) < 0)
			break;
		if (ws->nframes + pending == ws->cap) {
			size_t cap = ws->cap ? ws->cap * 2 : 256;
			struct frame_pos *f = realloc(ws->frames, cap * sizeof(*f));

			if (!f) {
				free(frame);
				return -ENOMEM;
			}
			ws->frames = f;
			ws->cap = cap;
		}
		ws->frames[ws->nframes + pending].pgno = fh.pgno;
		ws->frames[ws->nframes + pending].off = off + LTX_WAL_FRAME_HEADER_SIZE;
		pending++;
		if (fh.commit) {
			uint64_t *ce = realloc(ws->commit_ends,
					       (ws->ncommits + 1) * sizeof(*ce));

			if (!ce) {
				free(frame);
				return -ENOMEM;
			}
			ws->commit_ends = ce;
			ce[ws->ncommits] = off + fsz;
			ws->nframes += pending;
			pending = 0;
			ws->commit = fh.commit;
			ws->ncommits++;
			ws->end = off + fsz;
			ws->cksum[0] = running[0];
			ws->cksum[1] = running[1];
		}
	}
	free(frame);
	return 0;
}

/* ---- rollback-journal playback ------------------------------------- */

static uint32_t record_cksum(const uint8_t *page, uint32_t ps, uint32_t nonce)
{
	uint32_t c = nonce;

	for (int i = (int)ps - 200; i > 0; i -= 200)
		c += page[i];
	return c;
}

/*
 * Undo a hot journal the way SQLite would: truncate the database to its
 * size before the transaction, write back every original page whose record
 * checksum holds, segment by segment. Returns 1 if something was played.
 */
static int play_journal(struct fs_db *db, struct ltfs_err *err)
{
	struct ltx_journal_header jh;
	uint8_t hdr[LTX_JOURNAL_HEADER_SIZE], *rec = NULL;
	uint64_t off = 0, size;
	struct stat st;
	bool first = true;
	uint32_t ps = 0;
	int rc = 0, played = 0;

	if (db->journal_fd < 0 || fstat(db->journal_fd, &st) < 0)
		return 0;
	size = (uint64_t)st.st_size;
	while (off + sizeof(hdr) <= size) {
		uint64_t nrec, roff;

		if (ltx_pread_full(db->journal_fd, hdr, sizeof(hdr), off) < 0 ||
		    ltx_journal_header_parse(hdr, sizeof(hdr), &jh, NULL) < 0)
			break;
		if (first) {
			ps = jh.page_size;
			rec = malloc(ps + 8);
			if (!rec)
				return ltfs_err_set(err, -ENOMEM, NULL);
			if (ftruncate(db->db_fd, (off_t)jh.db_pages * ps) < 0) {
				rc = ltfs_err_set(err, -errno, "'%s': truncate: %s",
						  db->name, strerror(errno));
				break;
			}
			first = false;
		}
		roff = off + jh.sector_size;
		nrec = jh.nrec;
		if (nrec == 0xffffffffu) /* count not written: up to EOF */
			nrec = roff < size ? (size - roff) / (ps + 8) : 0;
		for (uint64_t i = 0; i < nrec; i++, roff += ps + 8) {
			uint32_t pgno;

			if (ltx_pread_full(db->journal_fd, rec, ps + 8, roff) < 0)
				goto done;
			pgno = ltx_get_be32(rec);
			if (pgno == 0 || pgno == ltx_lock_pgno(ps) ||
			    ltx_get_be32(rec + 4 + ps) != record_cksum(rec + 4, ps, jh.nonce))
				goto done; /* SQLite stops at the first bad record */
			rc = ltx_pwrite_full(db->db_fd, rec + 4, ps,
					     (uint64_t)(pgno - 1) * ps);
			if (rc < 0) {
				ltfs_err_set(err, rc, "'%s': write page %u: %s",
					     db->name, pgno, ltfs_strerror(rc));
				goto done;
			}
			played++;
		}
		/* The next segment starts at the next sector boundary. */
		off = (roff + jh.sector_size - 1) / jh.sector_size * jh.sector_size;
	}
done:
	free(rec);
	if (rc < 0)
		return rc;
	if (!first) {
		if (fsync(db->db_fd) < 0)
			return ltfs_err_set(err, -errno, "'%s': fsync: %s", db->name,
					    strerror(errno));
		ltfs_info(db->fs->log, "recover", "'%s': rolled back a hot journal (%d pages restored)",
			  db->name, played);
	}
	close(db->journal_fd);
	db->journal_fd = -1;
	unlinkat(db->dirfd, "journal", 0);
	return first ? 0 : 1;
}

/* ---- the LTX history -------------------------------------------------- */

struct hist {
	uint64_t last_max;
	uint32_t count;
	char last[LTX_FILENAME_SIZE];
};

static int scan_history(struct fs_db *db, struct hist *h, struct ltfs_err *err)
{
	DIR *d = fs_opendir_at(db->ltxfd);
	struct dirent *de;

	memset(h, 0, sizeof(*h));
	if (!d)
		return ltfs_err_set(err, -errno, "'%s/ltx': %s", db->dir, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		uint64_t mn, mx;

		if (ltx_parse_filename(de->d_name, &mn, &mx) < 0)
			continue;
		if (h->count == 0 || mx > h->last_max) {
			h->last_max = mx;
			snprintf(h->last, sizeof(h->last), "%s", de->d_name);
		}
		h->count++;
	}
	closedir(d);
	return 0;
}

/* A complete temp file for the next TXID is a commit whose rename did not
 * survive; anything else in a .tmp name is debris. */
static void adopt_temp_files(struct fs_db *db, const struct hist *h)
{
	DIR *d = fs_opendir_at(db->ltxfd);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) != NULL) {
		char name[LTX_FILENAME_SIZE];
		size_t len = strlen(de->d_name);
		uint64_t mn, mx;
		int fd, ok = 0;

		if (len != LTX_FILENAME_SIZE - 1 + 4 ||
		    strcmp(de->d_name + len - 4, ".tmp") != 0)
			continue;
		memcpy(name, de->d_name, LTX_FILENAME_SIZE - 1);
		name[LTX_FILENAME_SIZE - 1] = '\0';
		if (ltx_parse_filename(name, &mn, &mx) == 0 &&
		    mn == h->last_max + 1) {
			fd = openat(db->ltxfd, de->d_name, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				ok = ltx_verify_fd(fd, NULL, NULL, NULL) == 0;
				close(fd);
			}
		}
		if (ok && renameat2(db->ltxfd, de->d_name, db->ltxfd, name, RENAME_NOREPLACE) == 0) {
			ltfs_info(db->fs->log, "recover", "'%s': adopted %s", db->name, name);
		} else {
			unlinkat(db->ltxfd, de->d_name, 0);
		}
	}
	closedir(d);
	fsync(db->ltxfd);
}

/* ---- logical state ---------------------------------------------------- */

static int cmp_pos(const void *a, const void *b)
{
	const struct frame_pos *x = a, *y = b;

	if (x->pgno != y->pgno)
		return x->pgno < y->pgno ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* Newest committed frame of each page, sorted by page number. */
static size_t newest_frames(struct wal_scan *ws)
{
	size_t n = 0;

	if (ws->nframes == 0)
		return 0;
	qsort(ws->frames, ws->nframes, sizeof(*ws->frames), cmp_pos);
	for (size_t i = 0; i < ws->nframes; i++) {
		if (n > 0 && ws->frames[n - 1].pgno == ws->frames[i].pgno)
			ws->frames[n - 1] = ws->frames[i];
		else
			ws->frames[n++] = ws->frames[i];
	}
	ws->nframes = n;
	return n;
}

static const struct frame_pos *frame_of(const struct wal_scan *ws, uint32_t pgno)
{
	size_t lo = 0, hi = ws->nframes;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ws->frames[mid].pgno == pgno)
			return &ws->frames[mid];
		if (ws->frames[mid].pgno < pgno)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int read_logical(struct fs_db *db, const struct wal_scan *ws,
			uint32_t pgno, uint8_t *page)
{
	const struct frame_pos *f = ws->valid ? frame_of(ws, pgno) : NULL;
	ssize_t r;

	if (f)
		return ltx_pread_full(db->wal_fd, page, db->page_size, f->off);
	memset(page, 0, db->page_size);
	r = pread(db->db_fd, page, db->page_size, (off_t)(pgno - 1) * db->page_size);
	return r < 0 ? -errno : 0;
}

/* Page count of the logical database and its page size. */
static int logical_size(struct fs_db *db, const struct wal_scan *ws,
			uint32_t *npages, struct ltfs_err *err)
{
	uint8_t hdr[LTX_SQLITE_HEADER_SIZE];
	struct ltx_db_header h;
	struct stat st;

	if (ws->valid && ws->ncommits > 0) {
		if (db->page_size && db->page_size != ws->wh.page_size)
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "'%s': wal page size %u, history has %u",
					    db->name, ws->wh.page_size, db->page_size);
		db->page_size = ws->wh.page_size;
		*npages = ws->commit;
		return 0;
	}
	if (fstat(db->db_fd, &st) < 0)
		return ltfs_err_set(err, -errno, "'%s': %s", db->name, strerror(errno));
	if (st.st_size == 0) {
		*npages = 0;
		return 0;
	}
	if (ltx_pread_full(db->db_fd, hdr, sizeof(hdr), 0) < 0 ||
	    ltx_db_header_parse(hdr, sizeof(hdr), &h, err) < 0) {
		ltfs_err_prefix(err, "'%s'", db->name);
		return LTFS_E_CORRUPT;
	}
	if (db->page_size && db->page_size != h.page_size)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "'%s': page size %u, history has %u",
				    db->name, h.page_size, db->page_size);
	db->page_size = h.page_size;
	*npages = (uint32_t)((uint64_t)st.st_size / h.page_size);
	if (h.change_counter == h.version_valid_for && h.page_count > 0 &&
	    h.page_count <= *npages)
		*npages = h.page_count;
	return 0;
}

#define SUM_CHUNK (1u << 20)

/*
 * Per-page checksums of the logical database: the file in 1 MiB reads, then
 * the newest committed WAL frame of each page on top.
 */
static int checksum_logical(struct fs_db *db, const struct wal_scan *ws,
			    uint32_t npages, uint64_t *sum, struct ltfs_err *err)
{
	uint32_t lock = ltx_lock_pgno(db->page_size), ps = db->page_size;
	uint32_t per = SUM_CHUNK / ps ? SUM_CHUNK / ps : 1;
	uint8_t *buf = malloc((size_t)per * ps);
	uint64_t *p = calloc((size_t)npages + 1, sizeof(*p));
	uint64_t x = 0;
	int rc = 0;

	if (!buf || !p) {
		free(buf);
		free(p);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	for (uint32_t pg = 1; rc == 0 && pg <= npages; pg += per) {
		uint32_t n = npages - pg + 1 < per ? npages - pg + 1 : per;
		ssize_t r;

		memset(buf, 0, (size_t)n * ps); /* beyond EOF reads as zeros */
		r = pread(db->db_fd, buf, (size_t)n * ps, (off_t)(pg - 1) * ps);
		if (r < 0) {
			rc = ltfs_err_set(err, -errno, "'%s': read: %s", db->name,
					  strerror(errno));
			break;
		}
		for (uint32_t i = 0; i < n; i++)
			if (pg + i != lock)
				p[pg + i - 1] = ltx_page_checksum(pg + i, buf + (size_t)i * ps, ps);
	}
	for (size_t i = 0; rc == 0 && ws->valid && i < ws->nframes; i++) {
		uint32_t pg = ws->frames[i].pgno;

		if (pg > npages || pg == lock)
			continue;
		rc = ltx_pread_full(db->wal_fd, buf, ps, ws->frames[i].off);
		if (rc < 0)
			ltfs_err_set(err, rc, "'%s': read wal frame of page %u", db->name, pg);
		else
			p[pg - 1] = ltx_page_checksum(pg, buf, ps);
	}
	free(buf);
	if (rc < 0) {
		free(p);
		return rc;
	}
	for (uint32_t i = 0; i < npages; i++)
		x ^= p[i];
	free(db->page_cksums);
	db->page_cksums = p;
	db->cksum_cap = npages + 1;
	db->commit = npages;
	*sum = LTX_CHECKSUM_FLAG | x;
	return 0;
}

/* ---- reconcile -------------------------------------------------------- */

/* Write an LTX for the pages the WAL changed since the history ended (or a
 * snapshot when there is no history). The per-page checksums already hold
 * the new state. */
static int record_wal_tail(struct fs_db *db, const struct wal_scan *ws,
			   uint64_t since, uint64_t new_sum, uint32_t ntx,
			   bool snapshot, struct ltfs_err *err)
{
	struct ltx_header h = {
		.page_size = db->page_size,
		.commit = db->commit,
		.min_txid = snapshot ? 1 : db->txid + 1,
		.max_txid = snapshot ? (ntx ? ntx : 1) : db->txid + ntx,
		.pre_apply_checksum = snapshot ? 0 : db->checksum,
		.node_id = db->fs->node_id,
	};
	char name[LTX_FILENAME_SIZE], tmp[LTX_FILENAME_SIZE + 8];
	const struct frame_pos *f;
	struct ltx_encoder *enc = NULL;
	uint32_t lock = ltx_lock_pgno(db->page_size);
	uint8_t *page = malloc(db->page_size);
	struct timespec ts;
	int fd, rc;

	if (!page)
		return ltfs_err_set(err, -ENOMEM, NULL);
	if (ws->valid && ws->ncommits > 0) {
		/* so the next recovery knows these frames are recorded */
		h.wal_offset = (int64_t)since;
		h.wal_size = (int64_t)(ws->end - since);
		h.wal_salt1 = ws->wh.salt1;
		h.wal_salt2 = ws->wh.salt2;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	h.timestamp = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	fd = fs_ltx_create(db, h.min_txid, h.max_txid, name, tmp, err);
	if (fd < 0) {
		free(page);
		return fd;
	}
	rc = ltx_encoder_open(&enc, &h, NULL, ltx_write_fd, &fd, err);
	for (uint32_t pg = 1; rc == 0 && pg <= db->commit; pg++) {
		if (pg == lock)
			continue;
		f = ws->valid ? frame_of(ws, pg) : NULL;
		if (!snapshot && !(f && f->off > since))
			continue;
		rc = read_logical(db, ws, pg, page);
		if (rc == 0)
			rc = ltx_encoder_add_page(enc, pg, page, NULL, err);
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, new_sum, NULL, err);
	if (rc == 0)
		rc = fs_ltx_publish(db, fd, tmp, name, true, err);
	else
		unlinkat(db->ltxfd, tmp, 0);
	ltx_encoder_free(enc);
	close(fd);
	free(page);
	if (rc < 0) {
		ltfs_err_prefix(err, "'%s': record recovered transactions", db->name);
		return rc;
	}
	db->txid = h.max_txid;
	db->checksum = new_sum;
	db->timestamp = h.timestamp;
	ltfs_info(db->fs->log, "recover", "'%s': recorded %s from the %s (txid %llu-%llu)",
		  db->name, name, snapshot ? "database file" : "wal",
		  (unsigned long long)h.min_txid, (unsigned long long)h.max_txid);
	return 0;
}

/* Write the pages of the newest LTX into the database file and truncate it
 * to its commit, then checksum again. */
static int reapply_newest(struct fs_db *db, const char *name,
			  const struct ltx_header *last, uint64_t *sum,
			  const struct wal_scan *ws, struct ltfs_err *err)
{
	struct ltx_decoder *dec = NULL;
	const uint8_t *page;
	uint32_t pgno;
	int fd = openat(db->ltxfd, name, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return ltfs_err_set(err, -errno, "'%s/ltx/%s': %s", db->dir, name,
				    strerror(errno));
	rc = ltx_decoder_open(&dec, ltx_read_fd, &fd, NULL, err);
	while (rc == 0 && (rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1)
		rc = ltx_pwrite_full(db->db_fd, page, last->page_size,
				     (uint64_t)(pgno - 1) * last->page_size);
	if (rc == 0)
		rc = ltx_decoder_finish(dec, NULL, err);
	ltx_decoder_free(dec);
	close(fd);
	if (rc == 0 && ftruncate(db->db_fd, (off_t)last->commit * last->page_size) < 0)
		rc = -errno;
	if (rc == 0 && fsync(db->db_fd) < 0)
		rc = -errno;
	if (rc < 0) {
		if (err && err->code == 0)
			ltfs_err_set(err, rc, "%s", strerror(-rc));
		ltfs_err_prefix(err, "'%s': re-apply %s", db->name, name);
		return rc;
	}
	rc = checksum_logical(db, ws, last->commit, sum, err);
	if (rc == 0 && *sum == db->checksum)
		ltfs_info(db->fs->log, "recover", "'%s': repaired by re-applying %s",
			  db->name, name);
	return rc;
}

/*
 * Before an apply on a node that was the primary, its database file must
 * hold the whole position, as on any replica. A primary's WAL is seldom
 * checkpointed: its committed frames are copied into the file and the
 * WAL emptied. A journal left hot by a transaction the demotion cut off
 * is played back (the position never included that transaction).
 * Called with the apply's locks and db->mu held.
 */
int fs_db_settle(struct fs_db *db, bool wal_mode, struct ltfs_err *err)
{
	struct wal_scan ws;
	struct stat st;
	uint8_t *page;
	int rc = 0;

	if (db->db_fd < 0)
		return 0;
	if (!wal_mode) {
		if (fs_db_open_aux(db, FS_JOURNAL, false) < 0)
			return 0;
		rc = play_journal(db, err);
		if (rc > 0) {
			ltfs_warn(db->fs->log, "replica", "'%s': rolled back the transaction a demotion "
							  "cut off", db->name);
			if (unlinkat(db->dirfd, fs_db_aux_name(FS_JOURNAL), 0) < 0 && errno != ENOENT)
				return ltfs_err_set(err, -errno, "'%s/journal': %s", db->dir,
						    strerror(errno));
		}
		return rc < 0 ? rc : 0;
	}
	if (fs_db_open_aux(db, FS_WAL, false) < 0 || fstat(db->wal_fd, &st) < 0 || st.st_size == 0)
		return 0;
	rc = scan_wal(db->wal_fd, &ws);
	if (rc < 0)
		return ltfs_err_set(err, rc, "'%s/wal': %s", db->dir, ltfs_strerror(rc));
	page = ws.valid ? malloc(ws.wh.page_size) : NULL;
	if (ws.valid && !page)
		rc = ltfs_err_set(err, -ENOMEM, NULL);
	for (size_t i = 0, n = page ? newest_frames(&ws) : 0; rc == 0 && i < n; i++) {
		rc = ltx_pread_full(db->wal_fd, page, ws.wh.page_size, ws.frames[i].off);
		if (rc == 0)
			rc = ltx_pwrite_full(db->db_fd, page, ws.wh.page_size,
					     (uint64_t)(ws.frames[i].pgno - 1) * ws.wh.page_size);
		if (rc < 0)
			ltfs_err_set(err, rc, "'%s': folding the WAL into the database: %s", db->dir,
				     ltfs_strerror(rc));
	}
	if (rc == 0 && ws.commit &&
	    ftruncate(db->db_fd, (off_t)ws.commit * ws.wh.page_size) < 0)
		rc = ltfs_err_set(err, -errno, "'%s/database': truncate: %s", db->dir, strerror(errno));
	if (rc == 0 && fsync(db->db_fd) < 0)
		rc = ltfs_err_set(err, -errno, "'%s/database': fsync: %s", db->dir, strerror(errno));
	if (rc == 0 && ftruncate(db->wal_fd, 0) < 0)
		rc = ltfs_err_set(err, -errno, "'%s/wal': truncate: %s", db->dir, strerror(errno));
	if (rc == 0) {
		memset(&db->wal, 0, sizeof(db->wal));
		if (ws.nframes)
			ltfs_info(db->fs->log, "replica", "'%s': folded %zu WAL pages into the database "
							  "before applying", db->name, ws.nframes);
	}
	free(page);
	free(ws.frames);
	free(ws.commit_ends);
	return rc;
}

static void mark_broken(struct fs_db *db, const char *fmt, ...) LTFS_PRINTF(2, 3);
static void mark_broken(struct fs_db *db, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(db->broken_msg, sizeof(db->broken_msg), fmt, ap);
	va_end(ap);
	db->broken = true;
	ltfs_error(db->fs->log, "recover",
		   "'%s': %s; not serving it. To rebuild it from its history: "
		   "'ltfs ltx apply NEW.db %s/ltx/*.ltx', check NEW.db, copy it over %s/database and restart; "
		   "to keep the file as it is instead: move %s/ltx away and restart (a new snapshot is recorded)",
		   db->name, db->broken_msg, db->dir, db->dir, db->dir);
}

int fs_db_load(struct fs *fs, const char *escaped, struct fs_db **out,
	       struct ltfs_err *err)
{
	char name[FS_PATH_MAX];
	struct ltx_header last = { 0 };
	struct ltx_trailer last_t = { 0 };
	struct wal_scan ws = { 0 };
	struct fs_db *db;
	struct hist h;
	uint32_t npages = 0, unrecorded = 0;
	uint64_t sum, recorded;
	struct timespec t0;
	int rc;

	if (fs_unescape_name(escaped, name, sizeof(name)) < 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "'%s/dbs/%s': not a valid database directory name",
				    fs->data_dir, escaped);
	rc = fs_db_create(fs, name, &db, err);
	if (rc < 0)
		return rc;
	db->db_fd = openat(db->dirfd, "database", O_RDWR | O_CLOEXEC);
	fs_db_open_aux(db, FS_JOURNAL, false);
	fs_db_open_aux(db, FS_WAL, false);
	unlinkat(db->dirfd, "shm", 0);

	rc = scan_history(db, &h, err);
	if (rc == 0) {
		adopt_temp_files(db, &h);
		fs_history_drop_covered(db);
		rc = scan_history(db, &h, err);
	}
	if (rc < 0)
		goto fail;
	db->nltx = h.count;
	if (h.count > 0) {
		int fd = openat(db->ltxfd, h.last, O_RDONLY | O_CLOEXEC);
		struct ltfs_err verr = { 0 };

		rc = fd < 0 ? ltfs_err_set(&verr, -errno, "%s", strerror(errno))
			    : ltx_verify_fd(fd, &last, &last_t, &verr);
		if (fd >= 0)
			close(fd);
		if (rc < 0) {
			mark_broken(db, "newest ltx file '%s' is invalid: %s", h.last, verr.msg);
			*out = db;
			return 0;
		}
		db->txid = last.max_txid;
		db->checksum = last.commit == 0 ? LTX_CHECKSUM_FLAG : last_t.post_apply_checksum;
		db->page_size = last.page_size;
		db->commit = last.commit;
		db->timestamp = last.timestamp;
	}
	if (db->db_fd < 0) {
		/* deleted (or never written): nothing to serve */
		db->commit = 0;
		*out = db;
		return 0;
	}
	rc = play_journal(db, err);
	if (rc < 0)
		goto fail;
	rc = scan_wal(db->wal_fd, &ws);
	if (rc < 0) {
		rc = ltfs_err_set(err, rc, NULL);
		goto fail;
	}
	if (ws.valid)
		newest_frames(&ws);
	rc = logical_size(db, &ws, &npages, err);
	if (rc < 0) {
		mark_broken(db, "%s", err->msg);
		goto done;
	}
	if (npages == 0 && h.count == 0)
		goto done;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = checksum_logical(db, &ws, npages, &sum, err);
	if (rc < 0)
		goto fail;
	{
		double secs = fs_elapsed_s(&t0);
		double mb = (double)npages * db->page_size / 1e6;

		ltfs_info(fs->log, "recover", "'%s': checksummed %u pages (%.1f MB) in %.3f s (%.2f GB/s)",
			  db->name, npages, mb, secs, secs > 0 ? mb / 1e3 / secs : 0.0);
	}

	/* Where the recorded part of the WAL ends (WAL_HEADER when none of it
	 * is recorded: another generation, or a history from rollback mode). */
	recorded = LTX_WAL_HEADER_SIZE;
	if (ws.valid && h.count > 0 && last.wal_salt1 == ws.wh.salt1 &&
	    last.wal_salt2 == ws.wh.salt2 && last.wal_offset > 0)
		recorded = (uint64_t)(last.wal_offset + last.wal_size);
	for (uint32_t i = 0; ws.valid && i < ws.ncommits; i++)
		if (ws.commit_ends[i] > recorded)
			unrecorded++;

	if (h.count == 0) {
		rc = record_wal_tail(db, &ws, LTX_WAL_HEADER_SIZE, sum,
				     ws.ncommits ? ws.ncommits : 1, true, err);
	} else if (unrecorded > 0) {
		/* Committed WAL transactions newer than the history: one file
		 * covers them all, TXIDs counted by commit frames. */
		rc = record_wal_tail(db, &ws, recorded, sum, unrecorded, false, err);
	} else if (sum == db->checksum) {
		rc = 0; /* the common case: state == newest LTX */
	} else if (!ws.valid && last.commit > 0 && !ltx_header_is_snapshot(&last)) {
		/* The newest transaction's pages may be missing or torn (the LTX
		 * was durable, the database write was not): write them again,
		 * and accept the result only if it is the recorded state. */
		rc = reapply_newest(db, h.last, &last, &sum, &ws, err);
		if (rc == 0 && sum != db->checksum)
			mark_broken(db, "database checksum %016llx on txid %llu does not match the post-apply checksum %016llx of %s, even after re-applying it",
				    (unsigned long long)sum, (unsigned long long)db->txid,
				    (unsigned long long)db->checksum, h.last);
	} else {
		mark_broken(db, "database checksum %016llx on txid %llu does not match the post-apply checksum %016llx of %s",
			    (unsigned long long)sum, (unsigned long long)db->txid,
			    (unsigned long long)db->checksum, h.last);
		rc = 0;
	}
	if (rc < 0)
		goto fail;
done:
	if (ws.valid) {
		db->wal.active = true;
		db->wal.big_endian = ws.wh.big_endian;
		db->wal.salt1 = ws.wh.salt1;
		db->wal.salt2 = ws.wh.salt2;
		db->wal.end = db->wal.start = ws.end;
		db->wal.cksum[0] = ws.cksum[0];
		db->wal.cksum[1] = ws.cksum[1];
	}
	free(ws.frames);
	free(ws.commit_ends);
	*out = db;
	return 0;
fail:
	free(ws.frames);
	free(ws.commit_ends);
	ltfs_err_prefix(err, "recover '%s'", name);
	fs_db_free(db);
	return rc;
}
