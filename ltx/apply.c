/*
 * apply.c - apply an LTX file to a SQLite database file, all or nothing
 * against bad input (see ltx.h for the contract).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ltx/ltx_int.h"

static int read_page(int fd, uint32_t pgno, uint32_t page_size, uint8_t *buf)
{
	return ltx_pread_full(fd, buf, page_size, (uint64_t)(pgno - 1) * page_size);
}

/*
 * Pass 1: verify the file and compute the checksum the database will have.
 * For every page it holds, the old page (if the database has it) leaves
 * the sum and the new one enters; pages cut off by a smaller commit leave.
 */
static int plan(int db_fd, int *ltx_fd, uint32_t db_pages, uint64_t cur,
		unsigned flags, uint64_t *result, struct ltx_header *h, uint8_t **scratch,
		struct ltfs_err *err)
{
	struct ltx_decoder *dec;
	const struct ltx_header *dh;
	struct ltx_frame_info fi;
	const uint8_t *page;
	uint32_t pgno, lock;
	uint64_t sum;
	int rc;

	rc = ltx_decoder_open_fd(&dec, ltx_fd, 0, err);
	if (rc < 0)
		return rc;
	dh = ltx_decoder_header(dec);
	*h = *dh;
	lock = ltx_lock_pgno(dh->page_size);
	*scratch = malloc(dh->page_size);
	if (!*scratch) {
		rc = ltfs_err_set(err, -ENOMEM, NULL);
		goto out;
	}
	/* A snapshot replaces everything: start from an empty database. */
	sum = ltx_header_is_snapshot(dh) ? 0 : cur & ~LTX_CHECKSUM_FLAG;
	if (ltx_header_has_checksums(dh) && !ltx_header_is_snapshot(dh) &&
	    !(flags & LTX_APPLY_OVERLAP) && dh->pre_apply_checksum != cur) {
		rc = ltfs_err_set(err, LTFS_E_CHECKSUM,
				  "does not continue the database: pre-apply checksum %016llx, database is %016llx",
				  (unsigned long long)dh->pre_apply_checksum,
				  (unsigned long long)cur);
		goto out;
	}
	while ((rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1) {
		ltx_decoder_frame_info(dec, &fi);
		sum ^= fi.checksum & ~LTX_CHECKSUM_FLAG;
		if (ltx_header_is_snapshot(dh) || pgno > db_pages)
			continue;
		rc = read_page(db_fd, pgno, dh->page_size, *scratch);
		if (rc < 0) {
			ltfs_err_set(err, rc, "read database page %u: %s", pgno,
				     ltfs_strerror(rc));
			goto out;
		}
		sum ^= ltx_page_checksum(pgno, *scratch, dh->page_size) &
		       ~LTX_CHECKSUM_FLAG;
	}
	if (rc < 0)
		goto out;
	rc = ltx_decoder_finish(dec, NULL, err);
	if (rc < 0)
		goto out;
	if (!ltx_header_is_snapshot(dh)) {
		for (pgno = dh->commit + 1; pgno <= db_pages; pgno++) {
			if (pgno == lock)
				continue;
			rc = read_page(db_fd, pgno, dh->page_size, *scratch);
			if (rc < 0) {
				ltfs_err_set(err, rc, "read database page %u: %s",
					     pgno, ltfs_strerror(rc));
				goto out;
			}
			sum ^= ltx_page_checksum(pgno, *scratch, dh->page_size) &
			       ~LTX_CHECKSUM_FLAG;
		}
	}
	*result = LTX_CHECKSUM_FLAG | sum;
out:
	ltx_decoder_free(dec);
	return rc;
}

int ltx_apply_fd(int db_fd, int ltx_fd, uint64_t *db_checksum,
		 struct ltx_header *out_header, struct ltfs_err *err)
{
	return ltx_apply_fd_flags(db_fd, ltx_fd, db_checksum, 0, out_header, err);
}

int ltx_apply_fd_flags(int db_fd, int ltx_fd, uint64_t *db_checksum, unsigned flags,
		       struct ltx_header *out_header, struct ltfs_err *err)
{
	struct ltx_decoder *dec = NULL;
	struct ltx_page_run run = { 0 };
	struct ltx_header h;
	const uint8_t *page;
	uint8_t *scratch = NULL;
	uint64_t result = 0;
	uint32_t pgno, db_pages;
	struct stat st;
	int rc;

	if (fstat(db_fd, &st) < 0)
		return ltfs_err_set(err, -errno, "stat database: %s",
				    strerror(errno));
	/* The page size is only known from the file; peek at its header. */
	{
		uint8_t hdr[LTX_HEADER_SIZE];
		struct ltx_header peek;

		if (pread(ltx_fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
			return ltfs_err_set(err, LTFS_E_TRUNCATED,
					    "header: file shorter than the header");
		rc = ltx_header_decode(hdr, &peek, err);
		if (rc < 0)
			return rc;
		if (!ltx_page_size_valid(peek.page_size))
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "header: page size %u at offset 8 is not a power of two in 512..65536",
					    peek.page_size);
		if (st.st_size % peek.page_size != 0)
			return ltfs_err_set(err, LTFS_E_USAGE,
					    "database size %lld is not a multiple of the page size %u",
					    (long long)st.st_size, peek.page_size);
		if ((uint64_t)st.st_size / peek.page_size > UINT32_MAX)
			return ltfs_err_set(err, LTFS_E_LIMIT,
					    "database has more than 2^32 pages");
		db_pages = (uint32_t)((uint64_t)st.st_size / peek.page_size);
		if (db_pages > 0 && !ltx_header_is_snapshot(&peek)) {
			struct ltx_db_header dbh;
			uint8_t first[LTX_SQLITE_HEADER_SIZE];

			if (pread(db_fd, first, sizeof(first), 0) ==
				    (ssize_t)sizeof(first) &&
			    ltx_db_header_parse(first, sizeof(first), &dbh, NULL) == 0 &&
			    dbh.page_size != peek.page_size)
				return ltfs_err_set(err, LTFS_E_USAGE,
						    "page size %u differs from the database's %u",
						    peek.page_size, dbh.page_size);
		}
	}
	rc = plan(db_fd, &ltx_fd, db_pages, *db_checksum, flags, &result, &h, &scratch,
		  err);
	if (rc < 0)
		goto out;
	if (ltx_header_has_checksums(&h)) {
		uint64_t post;
		uint8_t tr[8];

		if (pread(ltx_fd, tr, 8, lseek(ltx_fd, 0, SEEK_END) -
					     LTX_TRAILER_SIZE) != 8) {
			rc = ltfs_err_set(err, -EIO, "read trailer failed");
			goto out;
		}
		post = ltx_get_be64(tr);
		if (post != result) {
			rc = ltfs_err_set(err, LTFS_E_CHECKSUM,
					  "post-apply checksum %016llx differs from the result %016llx",
					  (unsigned long long)post,
					  (unsigned long long)result);
			goto out;
		}
	}

	/* Pass 2: the file is valid and continues the database; write. */
	if (ltx_header_is_snapshot(&h) && ftruncate(db_fd, 0) < 0) {
		rc = ltfs_err_set(err, -errno, "truncate database: %s",
				  strerror(errno));
		goto out;
	}
	rc = ltx_decoder_open_fd(&dec, &ltx_fd, 0, err);
	if (rc < 0)
		goto out;
	while ((rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1) {
		rc = ltx_page_run_add(&run, db_fd, page, h.page_size,
				      (uint64_t)(pgno - 1) * h.page_size, err);
		if (rc < 0)
			goto out;
	}
	if (rc == 0)
		rc = ltx_page_run_flush(&run, db_fd, err);
	if (rc == 0)
		rc = ltx_decoder_finish(dec, NULL, err);
	if (rc < 0)
		goto out;
	if (ftruncate(db_fd, (off_t)h.commit * h.page_size) < 0) {
		rc = ltfs_err_set(err, -errno, "truncate database: %s",
				  strerror(errno));
		goto out;
	}
	*db_checksum = result;
	if (out_header)
		*out_header = h;
out:
	ltx_decoder_free(dec);
	ltx_page_run_release(&run);
	free(scratch);
	return rc;
}

/* ---- building a new database from a stream ------------------------------- */

void ltx_build_init(struct ltx_build *b)
{
	memset(b, 0, sizeof(*b));
	b->checksum = LTX_CHECKSUM_FLAG;
}

void ltx_build_release(struct ltx_build *b)
{
	ltx_wb_close(b->wb);
	free(b->cksums);
	memset(b, 0, sizeof(*b));
}

int ltx_build_write_behind(struct ltx_build *b, int fd, int direct_fd, struct ltfs_err *err)
{
	if (b->wb)
		return ltfs_err_set(err, LTFS_E_USAGE, "write-behind already on");
	return ltx_wb_open(&b->wb, fd, direct_fd, err);
}

static int build_reserve(struct ltx_build *b, uint32_t pages)
{
	uint64_t *v;
	uint32_t cap;

	if (pages <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 1024;
	while (cap < pages)
		cap = cap > UINT32_MAX / 2 ? pages : cap * 2;
	v = realloc(b->cksums, (size_t)cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	memset(v + b->cap, 0, (size_t)(cap - b->cap) * sizeof(*v));
	b->cksums = v;
	b->cap = cap;
	return 0;
}

int ltx_page_run_flush(struct ltx_page_run *w, int fd, struct ltfs_err *err)
{
	int rc = w->len ? ltx_pwrite_full(fd, w->data, w->len, w->off) : 0;

	if (rc < 0)
		ltfs_err_set(err, rc, "write database at offset %llu: %s",
			     (unsigned long long)w->off, ltfs_strerror(rc));
	w->len = 0;
	return rc;
}

int ltx_page_run_add(struct ltx_page_run *w, int fd, const uint8_t *page, uint32_t page_size,
		     uint64_t off, struct ltfs_err *err)
{
	if (page_size > LTX_PAGE_RUN_MAX)
		return ltfs_err_set(err, LTFS_E_USAGE, "page size %u", page_size);
	if (!w->data && !(w->data = malloc(LTX_PAGE_RUN_MAX)))
		return ltfs_err_set(err, -ENOMEM, NULL);
	if (w->len && (off != w->off + w->len || w->len + page_size > LTX_PAGE_RUN_MAX)) {
		int rc = ltx_page_run_flush(w, fd, err);

		if (rc < 0)
			return rc;
	}
	if (w->len == 0)
		w->off = off;
	memcpy(w->data + w->len, page, page_size);
	w->len += page_size;
	return 0;
}

void ltx_page_run_release(struct ltx_page_run *w)
{
	free(w->data);
	memset(w, 0, sizeof(*w));
}

int ltx_build_apply(struct ltx_build *b, int db_fd, ltx_read_fn read, void *ctx, unsigned flags,
		    struct ltx_header *out_header, struct ltfs_err *err)
{
	struct ltx_page_run w = { 0 };
	struct ltx_decoder *dec = NULL;
	struct ltx_frame_info fi;
	struct ltx_trailer t;
	const struct ltx_header *h;
	const uint8_t *page;
	uint64_t sum = b->checksum & ~LTX_CHECKSUM_FLAG;
	uint32_t pgno;
	int rc = ltx_decoder_open(&dec, read, ctx, NULL, err);

	if (rc < 0)
		return rc;
	h = ltx_decoder_header(dec);
	if (b->pages && h->page_size != b->page_size) {
		rc = ltfs_err_set(err, LTFS_E_USAGE, "page size %u differs from the database's %u",
				  h->page_size, b->page_size);
		goto out;
	}
	if (ltx_header_is_snapshot(h)) {
		if (b->cksums)
			memset(b->cksums, 0, (size_t)b->cap * sizeof(*b->cksums));
		b->pages = 0;
		sum = 0;
	} else if (ltx_header_has_checksums(h) && !(flags & LTX_APPLY_OVERLAP) &&
		   h->pre_apply_checksum != b->checksum) {
		rc = ltfs_err_set(err, LTFS_E_CHECKSUM,
				  "does not continue the database: pre-apply checksum %016llx, database is %016llx",
				  (unsigned long long)h->pre_apply_checksum,
				  (unsigned long long)b->checksum);
		goto out;
	}
	b->page_size = h->page_size;
	rc = build_reserve(b, h->commit > b->pages ? h->commit : b->pages);
	if (rc < 0) {
		rc = ltfs_err_set(err, -ENOMEM, NULL);
		goto out;
	}
	while ((rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1) {
		uint64_t off = (uint64_t)(pgno - 1) * h->page_size;

		ltx_decoder_frame_info(dec, &fi);
		rc = b->wb ? ltx_wb_add(b->wb, page, h->page_size, off, err) :
			     ltx_page_run_add(&w, db_fd, page, h->page_size, off, err);
		if (rc < 0)
			goto out;
		sum ^= (b->cksums[pgno - 1] ^ fi.checksum) & ~LTX_CHECKSUM_FLAG;
		b->cksums[pgno - 1] = fi.checksum;
	}
	if (rc == 0)
		rc = b->wb ? ltx_wb_wait(b->wb, err) : ltx_page_run_flush(&w, db_fd, err);
	if (rc < 0)
		goto out;
	rc = ltx_decoder_finish(dec, &t, err);
	if (rc < 0)
		goto out;
	for (uint32_t i = h->commit; i < b->pages; i++) { /* cut off by a smaller commit */
		sum ^= b->cksums[i] & ~LTX_CHECKSUM_FLAG;
		b->cksums[i] = 0;
	}
	if (ftruncate(db_fd, (off_t)h->commit * h->page_size) < 0) {
		rc = ltfs_err_set(err, -errno, "truncate database: %s", strerror(errno));
		goto out;
	}
	b->pages = h->commit;
	b->checksum = LTX_CHECKSUM_FLAG | sum;
	if (ltx_header_has_checksums(h) && t.post_apply_checksum != b->checksum) {
		rc = ltfs_err_set(err, LTFS_E_CHECKSUM,
				  "post-apply checksum %016llx differs from the result %016llx",
				  (unsigned long long)t.post_apply_checksum,
				  (unsigned long long)b->checksum);
		goto out;
	}
	if (out_header)
		*out_header = *h;
out:
	ltx_page_run_release(&w);
	ltx_decoder_free(dec);
	return rc;
}
