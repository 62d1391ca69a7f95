/*
 * sqlite.c - parsers for the SQLite files ltfs watches: the database
 * header, the WAL (header, frames, checksum) and the rollback journal header.
 *
 * Every function reads only the `n` bytes it is given and trusts nothing in
 * them; they run on files that another process may be writing right now.
 */
#include <assert.h>
#include <string.h>

#include "ltx/ltx.h"

const uint8_t ltx_journal_magic[8] = {
	0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7,
};

/* The terminating NUL is part of the 16-byte magic. */
#define SQLITE_MAGIC "SQLite format 3"

/* SQLite refuses pages whose usable part is smaller than this. */
#define SQLITE_MIN_USABLE_SIZE 480

/* The smallest and largest sector sizes SQLite writes in a journal. */
#define JOURNAL_MIN_SECTOR_SIZE 32
#define JOURNAL_MAX_SECTOR_SIZE 65536

static bool pow2_between(uint32_t v, uint32_t lo, uint32_t hi)
{
	return v >= lo && v <= hi && (v & (v - 1)) == 0;
}

/* `what` names the file and field, e.g. "wal header: page size". */
static int bad_pow2(struct ltfs_err *err, int code, const char *what,
		    uint32_t v, int off, uint32_t lo, uint32_t hi)
{
	return ltfs_err_set(err, code,
			    "%s %u at offset %d is not a power of two between %u and %u",
			    what, v, off, lo, hi);
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* ------------------------------------------------------------------------
 * Database header
 */
bool ltx_db_header_is_sqlite(const uint8_t *p, size_t n)
{
	return p != NULL && n >= sizeof(SQLITE_MAGIC) &&
	       memcmp(p, SQLITE_MAGIC, sizeof(SQLITE_MAGIC)) == 0;
}

int ltx_db_header_parse(const uint8_t *p, size_t n, struct ltx_db_header *out,
			struct ltfs_err *err)
{
	struct ltx_db_header h;
	uint16_t raw_page_size;

	if (p == NULL || n < LTX_SQLITE_HEADER_SIZE)
		return ltfs_err_set(err, LTFS_E_TRUNCATED,
				    "sqlite header: %zu bytes, need %d",
				    p ? n : 0, LTX_SQLITE_HEADER_SIZE);
	if (!ltx_db_header_is_sqlite(p, n))
		return ltfs_err_set(err, LTFS_E_FORMAT,
				    "sqlite header: magic at offset 0 is not \"SQLite format 3\"");

	memset(&h, 0, sizeof(h));

	/* Two bytes cannot hold 65536, so SQLite stores it as 1. */
	raw_page_size = ltx_get_be16(p + 16);
	h.page_size = raw_page_size == 1 ? 65536 : raw_page_size;
	if (!pow2_between(h.page_size, LTX_MIN_PAGE_SIZE, LTX_MAX_PAGE_SIZE))
		return bad_pow2(err, LTFS_E_CORRUPT, "sqlite header: page size",
				raw_page_size, 16, LTX_MIN_PAGE_SIZE,
				LTX_MAX_PAGE_SIZE);

	/*
	 * A version above 2 is a format this code has never seen; guessing at
	 * it would risk replicating a file SQLite itself would refuse.
	 */
	h.write_version = p[18];
	if (h.write_version != 1 && h.write_version != 2)
		return ltfs_err_set(err, LTFS_E_FORMAT,
				    "sqlite header: write version %u at offset 18 is not 1 (rollback) or 2 (wal)",
				    h.write_version);
	h.read_version = p[19];
	if (h.read_version != 1 && h.read_version != 2)
		return ltfs_err_set(err, LTFS_E_FORMAT,
				    "sqlite header: read version %u at offset 19 is not 1 (rollback) or 2 (wal)",
				    h.read_version);

	h.reserved_space = p[20];
	if (h.page_size - h.reserved_space < SQLITE_MIN_USABLE_SIZE)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "sqlite header: reserved space %u at offset 20 leaves fewer than %d usable bytes in a %u-byte page",
				    h.reserved_space, SQLITE_MIN_USABLE_SIZE,
				    h.page_size);

	h.change_counter = ltx_get_be32(p + 24);
	h.page_count = ltx_get_be32(p + 28);
	h.freelist_trunk = ltx_get_be32(p + 32);
	h.freelist_count = ltx_get_be32(p + 36);
	h.schema_cookie = ltx_get_be32(p + 40);
	h.schema_format = ltx_get_be32(p + 44);
	h.text_encoding = ltx_get_be32(p + 56);
	h.version_valid_for = ltx_get_be32(p + 92);
	h.sqlite_version = ltx_get_be32(p + 96);

	if (out)
		*out = h;
	return 0;
}

/* ------------------------------------------------------------------------
 * WAL
 */
void ltx_wal_checksum(bool big_endian, const uint8_t *p, size_t n,
		      uint32_t s[2])
{
	uint32_t s0 = s[0], s1 = s[1];
	const uint8_t *end;

	assert(n % 8 == 0);
	/* Without asserts, a ragged tail is ignored rather than over-read. */
	end = p + (n & ~(size_t)7);

	/*
	 * The magic names the byte order of the words, not the host's, so the
	 * words are assembled explicitly and the result is the same anywhere.
	 */
	for (; p < end; p += 8) {
		uint32_t x0, x1;

		if (big_endian) {
			x0 = ltx_get_be32(p);
			x1 = ltx_get_be32(p + 4);
		} else {
			x0 = get_le32(p);
			x1 = get_le32(p + 4);
		}
		s0 += x0 + s1;
		s1 += x1 + s0;
	}
	s[0] = s0;
	s[1] = s1;
}

int ltx_wal_header_parse(const uint8_t *p, size_t n, struct ltx_wal_header *out,
			 struct ltfs_err *err)
{
	struct ltx_wal_header h;
	uint32_t s[2] = { 0, 0 };

	if (p == NULL || n < LTX_WAL_HEADER_SIZE)
		return ltfs_err_set(err, LTFS_E_TRUNCATED,
				    "wal header: %zu bytes, need %d", p ? n : 0,
				    LTX_WAL_HEADER_SIZE);

	memset(&h, 0, sizeof(h));
	h.magic = ltx_get_be32(p);
	if (h.magic != LTX_WAL_MAGIC_LE && h.magic != LTX_WAL_MAGIC_BE)
		return ltfs_err_set(err, LTFS_E_FORMAT,
				    "wal header: magic 0x%08x at offset 0 is not 0x%08x or 0x%08x",
				    h.magic, LTX_WAL_MAGIC_LE,
				    LTX_WAL_MAGIC_BE);
	h.big_endian = (h.magic & 1) != 0;

	/*
	 * Unlike the database header, the WAL header has four bytes for the
	 * page size, so 65536 is stored as is and 1 is invalid.
	 */
	h.page_size = ltx_get_be32(p + 8);
	if (!pow2_between(h.page_size, LTX_MIN_PAGE_SIZE, LTX_MAX_PAGE_SIZE))
		return bad_pow2(err, LTFS_E_CORRUPT, "wal header: page size",
				h.page_size, 8, LTX_MIN_PAGE_SIZE,
				LTX_MAX_PAGE_SIZE);

	h.version = ltx_get_be32(p + 4);
	if (h.version != LTX_WAL_VERSION)
		return ltfs_err_set(err, LTFS_E_FORMAT,
				    "wal header: file format version %u at offset 4 is not %u",
				    h.version, LTX_WAL_VERSION);

	h.checkpoint_seq = ltx_get_be32(p + 12);
	h.salt1 = ltx_get_be32(p + 16);
	h.salt2 = ltx_get_be32(p + 20);
	h.cksum1 = ltx_get_be32(p + 24);
	h.cksum2 = ltx_get_be32(p + 28);

	ltx_wal_checksum(h.big_endian, p, 24, s);
	if (s[0] != h.cksum1 || s[1] != h.cksum2)
		return ltfs_err_set(err, LTFS_E_CHECKSUM,
				    "wal header: checksum 0x%08x 0x%08x at offset 24 does not match 0x%08x 0x%08x computed over bytes 0-23",
				    h.cksum1, h.cksum2, s[0], s[1]);

	if (out)
		*out = h;
	return 0;
}

int ltx_wal_frame_check(const struct ltx_wal_header *wh, uint32_t running[2],
			const uint8_t *frame, size_t n,
			struct ltx_wal_frame_header *out, struct ltfs_err *err)
{
	struct ltx_wal_frame_header fh;
	size_t frame_size;
	uint32_t s[2];

	if (wh == NULL || running == NULL || frame == NULL)
		return ltfs_err_set(err, LTFS_E_USAGE,
				    "wal frame: missing wal header, checksum or frame");
	/*
	 * The page size comes from the caller's struct; a bad one would make
	 * the checksum loop below read a ragged tail.
	 */
	if (!pow2_between(wh->page_size, LTX_MIN_PAGE_SIZE, LTX_MAX_PAGE_SIZE))
		return ltfs_err_set(err, LTFS_E_USAGE,
				    "wal frame: wal header page size %u is not a power of two between 512 and 65536",
				    wh->page_size);
	frame_size = LTX_WAL_FRAME_HEADER_SIZE + (size_t)wh->page_size;
	if (n != frame_size)
		return ltfs_err_set(err, LTFS_E_USAGE,
				    "wal frame: %zu bytes, need %zu (24-byte header and a %u-byte page)",
				    n, frame_size, wh->page_size);

	fh.pgno = ltx_get_be32(frame);
	fh.commit = ltx_get_be32(frame + 4);
	fh.salt1 = ltx_get_be32(frame + 8);
	fh.salt2 = ltx_get_be32(frame + 12);
	fh.cksum1 = ltx_get_be32(frame + 16);
	fh.cksum2 = ltx_get_be32(frame + 20);

	/*
	 * A salt from an earlier WAL generation is what SQLite leaves behind
	 * after a restart: the frame is stale, not damaged, but either way it
	 * ends the valid part of the log.
	 */
	if (fh.salt1 != wh->salt1)
		return ltfs_err_set(err, LTFS_E_CHECKSUM,
				    "wal frame: salt mismatch: salt1 0x%08x at offset 8 is not the wal header's 0x%08x",
				    fh.salt1, wh->salt1);
	if (fh.salt2 != wh->salt2)
		return ltfs_err_set(err, LTFS_E_CHECKSUM,
				    "wal frame: salt mismatch: salt2 0x%08x at offset 12 is not the wal header's 0x%08x",
				    fh.salt2, wh->salt2);
	if (fh.pgno == 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "wal frame: page number 0 at offset 0");

	/* The stored checksum and the salts themselves are not covered. */
	s[0] = running[0];
	s[1] = running[1];
	ltx_wal_checksum(wh->big_endian, frame, 8, s);
	ltx_wal_checksum(wh->big_endian, frame + LTX_WAL_FRAME_HEADER_SIZE,
			 wh->page_size, s);
	if (s[0] != fh.cksum1 || s[1] != fh.cksum2)
		return ltfs_err_set(err, LTFS_E_CHECKSUM,
				    "wal frame: page %u: checksum 0x%08x 0x%08x at offset 16 does not match 0x%08x 0x%08x computed",
				    fh.pgno, fh.cksum1, fh.cksum2, s[0], s[1]);

	/* Only a valid frame may seed the next one's checksum. */
	running[0] = s[0];
	running[1] = s[1];
	if (out)
		*out = fh;
	return 0;
}

/* ------------------------------------------------------------------------
 * Rollback journal
 */
int ltx_journal_header_parse(const uint8_t *p, size_t n,
			     struct ltx_journal_header *out,
			     struct ltfs_err *err)
{
	struct ltx_journal_header h;

	if (p == NULL || n < LTX_JOURNAL_HEADER_SIZE)
		return ltfs_err_set(err, LTFS_E_TRUNCATED,
				    "journal header: %zu bytes, need %d",
				    p ? n : 0, LTX_JOURNAL_HEADER_SIZE);

	/*
	 * SQLite writes the magic only once the journal is synced, just before
	 * the first database write, and zeroes it again to commit (PERSIST
	 * mode). Without it the database file is still authoritative.
	 */
	if (memcmp(p, ltx_journal_magic, sizeof(ltx_journal_magic)) != 0)
		return ltfs_err_set(err, LTFS_E_STATE,
				    "journal header: no magic at offset 0 (journal not yet synced or already committed)");

	h.nrec = ltx_get_be32(p + 8);
	h.nonce = ltx_get_be32(p + 12);
	h.db_pages = ltx_get_be32(p + 16);
	h.sector_size = ltx_get_be32(p + 20);
	h.page_size = ltx_get_be32(p + 24);

	if (!pow2_between(h.sector_size, JOURNAL_MIN_SECTOR_SIZE,
			  JOURNAL_MAX_SECTOR_SIZE))
		return bad_pow2(err, LTFS_E_CORRUPT,
				"journal header: sector size", h.sector_size,
				20, JOURNAL_MIN_SECTOR_SIZE,
				JOURNAL_MAX_SECTOR_SIZE);
	if (!pow2_between(h.page_size, LTX_MIN_PAGE_SIZE, LTX_MAX_PAGE_SIZE))
		return bad_pow2(err, LTFS_E_CORRUPT, "journal header: page size",
				h.page_size, 24, LTX_MIN_PAGE_SIZE,
				LTX_MAX_PAGE_SIZE);

	if (out)
		*out = h;
	return 0;
}
