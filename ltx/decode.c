/*
 * decode.c - streaming LTX reader (format 3, both page encodings; format 1).
 *
 * This is the front door for untrusted bytes, from disk, peers and the
 * bucket. Every length is checked before it is used, memory is bounded by
 * the page size (plus liblz4's frame buffers), and each rule has its own
 * error naming the rule and the byte offset. Beyond the reference decoder it
 * also rejects: pages out of order, beyond commit, or on the lock page;
 * incomplete snapshots; blocks that do not decompress to exactly one page;
 * an index that differs from the frames read or whose size field is wrong;
 * trailer rule violations; non-zero reserved header bytes; trailing bytes.
 *
 * The index is checked without storing it: while reading frames we hash
 * the index the encoder should have written, and compare that hash and
 * length with the index found at the end.
 *
 * Stream shape by format:
 *   3: header | (pgno u32, flags u16, [csize u32], lz4) ... | 6 zero bytes |
 *      index uvarints, 0 | u64 index size | trailer
 *   1: header | body | trailer, body = (pgno u32, page) ... | 4 zero bytes;
 *      with header flag 0x1 the body is one LZ4 frame.
 */
#include <errno.h>
#include <lz4.h>
#include <lz4frame.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ltx/ltx_int.h"

enum dec_state {
	DEC_PAGES,    /* reading page frames */
	DEC_END,      /* end marker read */
	DEC_FINISHED, /* trailer verified */
	DEC_FAILED,
};

struct ltx_decoder {
	ltx_read_fn read;
	void *ctx;
	enum ltx_version version;
	bool lz4_body; /* format 1 with an LZ4-compressed body */
	struct ltx_header h;
	enum dec_state state;

	uint8_t *in; /* raw input buffer, in_cap bytes */
	size_t in_cap;
	size_t in_len, in_pos;
	uint64_t in_off; /* file offset of in[in_pos] */
	bool eof;

	LZ4F_dctx *dctx; /* LZ4 frames: format-3 flag 0, or a format-1 body */
	uint64_t body_off; /* format 1: offset within the (decompressed) body */
	bool body_ended;   /* format 1: the LZ4 body frame has ended */

	uint8_t *page;  /* page_size bytes */
	uint8_t *cbuf;  /* compressed block */
	int cbuf_cap;

	uint64_t file_crc;
	uint64_t pages_xor;
	uint32_t last_pgno, npages, lock_pgno;
	uint64_t want_index_crc, want_index_len;
	uint64_t index_off, index_size;
	struct ltx_crc64_shift page_shift;
	struct ltx_frame_info fi;
};

static int dec_fail(struct ltx_decoder *dec, struct ltfs_err *err, int code,
		    const char *fmt, ...) LTFS_PRINTF(4, 5);

static int dec_fail(struct ltx_decoder *dec, struct ltfs_err *err, int code,
		    const char *fmt, ...)
{
	va_list ap;

	dec->state = DEC_FAILED;
	if (err) {
		err->code = code;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

/* Make at least n bytes available in the input buffer (n <= in_cap).
 * Returns 0, LTFS_E_TRUNCATED at end of input, or a read error. */
static int fill(struct ltx_decoder *dec, size_t n)
{
	while (dec->in_len - dec->in_pos < n) {
		ssize_t r;

		if (dec->in_pos > 0) {
			memmove(dec->in, dec->in + dec->in_pos,
				dec->in_len - dec->in_pos);
			dec->in_len -= dec->in_pos;
			dec->in_pos = 0;
		}
		if (dec->eof)
			return LTFS_E_TRUNCATED;
		r = dec->read(dec->ctx, dec->in + dec->in_len,
			      dec->in_cap - dec->in_len);
		if (r < 0)
			return (int)r;
		if (r == 0)
			dec->eof = true;
		else if ((size_t)r > dec->in_cap - dec->in_len)
			return -EIO; /* a broken source; never trust it */
		dec->in_len += (size_t)r;
	}
	return 0;
}

static void consume(struct ltx_decoder *dec, size_t n)
{
	dec->in_pos += n;
	dec->in_off += n;
}

/* Copy exactly n raw bytes (any n) and hash them if asked. */
static int read_raw(struct ltx_decoder *dec, void *dst, size_t n, bool hash)
{
	uint8_t *d = dst;

	while (n > 0) {
		size_t k = n < dec->in_cap ? n : dec->in_cap;
		int rc = fill(dec, 1);

		if (rc < 0)
			return rc;
		if (k > dec->in_len - dec->in_pos)
			k = dec->in_len - dec->in_pos;
		memcpy(d, dec->in + dec->in_pos, k);
		if (hash)
			dec->file_crc = ltx_crc64(dec->file_crc, d, k);
		consume(dec, k);
		d += k;
		n -= k;
	}
	return 0;
}

static const char *read_error(int rc)
{
	return rc == LTFS_E_TRUNCATED ? "file ends early" : ltfs_strerror(rc);
}

/*
 * Run an LZ4 frame from the input through the frame decoder into dst until
 * `want` bytes came out (stop_at_want) or the frame ends (exactly `want`
 * bytes must then have come out). Returns 1 if the frame ended, 0 if it
 * stopped at `want` mid-frame. `*used` gets the compressed bytes consumed;
 * `limit` bounds them, so a hostile frame cannot make us read forever.
 */
static int lz4_frame_exact(struct ltx_decoder *dec, uint8_t *dst, size_t want,
			   bool stop_at_want, uint64_t limit, uint64_t *used,
			   const char **why)
{
	size_t got = 0;
	uint8_t scratch[64];

	*used = 0;
	for (;;) {
		size_t src_n, dst_n, hint;
		uint8_t *out;
		int rc = fill(dec, 1);

		if (rc < 0) {
			*why = rc == LTFS_E_TRUNCATED ? "lz4 frame truncated"
						      : ltfs_strerror(rc);
			return rc;
		}
		src_n = dec->in_len - dec->in_pos;
		if (src_n > limit - *used)
			src_n = (size_t)(limit - *used);
		if (got < want) {
			out = dst + got;
			dst_n = want - got;
		} else {
			/* Anything decoded past `want` is an overlong frame. */
			out = scratch;
			dst_n = sizeof(scratch);
		}
		hint = LZ4F_decompress(dec->dctx, out, &dst_n,
				       dec->in + dec->in_pos, &src_n, NULL);
		if (LZ4F_isError(hint)) {
			*why = LZ4F_getErrorName(hint);
			return LTFS_E_CORRUPT;
		}
		consume(dec, src_n);
		*used += src_n;
		if (out == scratch && dst_n > 0) {
			*why = "lz4 frame decompresses to more than expected";
			return LTFS_E_CORRUPT;
		}
		if (out != scratch)
			got += dst_n;
		if (hint == 0)
			break;
		if (stop_at_want && got == want)
			return 0;
		if (*used >= limit) {
			*why = "lz4 frame longer than any page can need";
			return LTFS_E_CORRUPT;
		}
	}
	if (got != want) {
		*why = "lz4 frame decompresses to less than expected";
		return LTFS_E_CORRUPT;
	}
	return 1;
}

/* Format 1 body: exactly n bytes, from the input or through LZ4. */
static int read_body(struct ltx_decoder *dec, void *dst, size_t n, bool hash,
		     struct ltfs_err *err)
{
	uint64_t used;
	const char *why = "compressed body ended";
	int rc;

	if (!dec->lz4_body) {
		rc = read_raw(dec, dst, n, hash);
		if (rc < 0)
			return dec_fail(dec, err, rc, "body at offset %llu: %s",
					(unsigned long long)dec->in_off,
					read_error(rc));
	} else {
		rc = dec->body_ended ? LTFS_E_TRUNCATED
				     : lz4_frame_exact(dec, dst, n, true,
						       UINT64_MAX, &used, &why);
		if (rc < 0)
			return dec_fail(dec, err, rc,
					"compressed body near offset %llu (body offset %llu): %s",
					(unsigned long long)dec->in_off,
					(unsigned long long)dec->body_off, why);
		dec->body_ended = rc == 1;
		if (hash)
			dec->file_crc = ltx_crc64(dec->file_crc, dst, n);
	}
	dec->body_off += n;
	return 0;
}

int ltx_decoder_open(struct ltx_decoder **out, ltx_read_fn read, void *ctx,
		     const struct ltx_decoder_opts *opts, struct ltfs_err *err)
{
	struct ltx_decoder *dec;
	uint8_t hdr[LTX_HEADER_SIZE];
	int rc;

	*out = NULL;
	if (opts && opts->version != LTX_VERSION_AUTO &&
	    opts->version != LTX_VERSION_1 && opts->version != LTX_VERSION_3)
		return ltfs_err_set(err, LTFS_E_USAGE, "format version %d is not read",
				    (int)opts->version);
	dec = calloc(1, sizeof(*dec));
	if (!dec)
		return ltfs_err_set(err, -ENOMEM, NULL);
	dec->read = read;
	dec->ctx = ctx;
	dec->in_cap = opts && opts->in_cap ? opts->in_cap : LTX_DEC_IN_DEFAULT;
	if (dec->in_cap < LTX_DEC_IN_MIN)
		dec->in_cap = LTX_DEC_IN_MIN;
	dec->in = malloc(dec->in_cap);
	if (!dec->in) {
		rc = ltfs_err_set(err, -ENOMEM, NULL);
		goto fail;
	}
	rc = read_raw(dec, hdr, sizeof(hdr), true);
	if (rc < 0) {
		rc = ltfs_err_set(err, rc == LTFS_E_TRUNCATED ? LTFS_E_TRUNCATED : rc,
				  "header: %s (%llu of 100 bytes)",
				  rc == LTFS_E_TRUNCATED ? "file shorter than the header"
							 : ltfs_strerror(rc),
				  (unsigned long long)(dec->in_len - dec->in_pos));
		goto fail;
	}
	rc = ltx_header_decode(hdr, &dec->h, err);
	if (rc < 0)
		goto fail;
	dec->version = opts ? opts->version : LTX_VERSION_AUTO;
	if (dec->version == LTX_VERSION_AUTO)
		dec->version = (dec->h.flags & LTX_HEADER_FLAG_COMPRESS_LZ4)
				       ? LTX_VERSION_1 : LTX_VERSION_3;
	rc = ltx_header_validate(&dec->h, dec->version, err);
	if (rc < 0)
		goto fail;
	dec->lz4_body = dec->version == LTX_VERSION_1 &&
			(dec->h.flags & LTX_HEADER_FLAG_COMPRESS_LZ4);
	/* Flag 0x1 means an LZ4 body in format 1 and is invalid in format 3:
	 * without the LZ4 frame magic, say it the format-3 way. */
	if (dec->lz4_body && (rc = fill(dec, 4)) < 0) {
		rc = ltfs_err_set(err, rc, "body at offset 100: %s",
				  read_error(rc));
		goto fail;
	}
	if (dec->lz4_body &&
	    memcmp(dec->in + dec->in_pos, "\x04\x22\x4d\x18", 4) != 0) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT,
				  "header: invalid flags 0x%08x at offset 4 (0x1 is the format-1 LZ4 flag, but no LZ4 body follows)",
				  dec->h.flags);
		goto fail;
	}
	dec->lock_pgno = ltx_lock_pgno(dec->h.page_size);
	dec->cbuf_cap = LZ4_compressBound((int)dec->h.page_size);
	dec->page = malloc(dec->h.page_size);
	dec->cbuf = malloc((size_t)dec->cbuf_cap);
	if (!dec->page || !dec->cbuf ||
	    LZ4F_isError(LZ4F_createDecompressionContext(&dec->dctx, LZ4F_VERSION))) {
		rc = ltfs_err_set(err, -ENOMEM, NULL);
		goto fail;
	}
	ltx_crc64_shift_init(&dec->page_shift, dec->h.page_size);
	dec->state = DEC_PAGES;
	*out = dec;
	return 0;
fail:
	ltx_decoder_free(dec);
	return rc;
}

const struct ltx_header *ltx_decoder_header(const struct ltx_decoder *dec)
{
	return &dec->h;
}

enum ltx_version ltx_decoder_version(const struct ltx_decoder *dec)
{
	return dec->version;
}

/* Order, range, lock-page and snapshot-sequence rules for one page. */
static int check_pgno(struct ltx_decoder *dec, uint32_t pgno, uint64_t off,
		      struct ltfs_err *err)
{
	if (pgno > dec->h.commit)
		return dec_fail(dec, err, LTFS_E_CORRUPT,
				"page %u at offset %llu: beyond commit %u",
				pgno, (unsigned long long)off, dec->h.commit);
	if (pgno == dec->lock_pgno)
		return dec_fail(dec, err, LTFS_E_CORRUPT,
				"page %u at offset %llu: the lock page must not be stored",
				pgno, (unsigned long long)off);
	if (ltx_header_is_snapshot(&dec->h)) {
		uint32_t want = dec->npages == 0
					? 1 : ltx_snapshot_next(dec->last_pgno,
								dec->lock_pgno);
		if (pgno != want)
			return dec_fail(dec, err, LTFS_E_CORRUPT,
					"page %u at offset %llu: snapshot must hold every page in order, want page %u",
					pgno, (unsigned long long)off, want);
	} else if (dec->npages > 0 && pgno <= dec->last_pgno) {
		return dec_fail(dec, err, LTFS_E_CORRUPT,
				"page %u at offset %llu: not after previous page %u (pages must ascend)",
				pgno, (unsigned long long)off, dec->last_pgno);
	}
	return 0;
}

/* Hash the page into the file checksum and compute its page checksum. */
static void account_page(struct ltx_decoder *dec, uint32_t pgno)
{
	uint64_t data_crc = ltx_crc64(0, dec->page, dec->h.page_size);
	uint8_t be[4];

	dec->file_crc = ltx_crc64_shift_combine(&dec->page_shift, dec->file_crc,
						data_crc);
	ltx_put_be32(be, pgno);
	dec->fi.checksum = LTX_CHECKSUM_FLAG |
			   ltx_crc64_shift_combine(&dec->page_shift,
						   ltx_crc64(0, be, 4), data_crc);
	dec->pages_xor ^= dec->fi.checksum;
	dec->last_pgno = pgno;
	dec->npages++;
}

static int next_v3(struct ltx_decoder *dec, uint32_t *pgno_out,
		   struct ltfs_err *err)
{
	uint64_t off = dec->in_off, used, limit;
	uint8_t hdr[LTX_V3_PAGE_HEADER_SIZE + LTX_V3_SIZE_FIELD];
	uint8_t ent[3 * LTX_UVARINT_MAX];
	const char *why = NULL;
	uint32_t pgno, csize = 0;
	uint16_t flags;
	int rc, n;

	rc = read_raw(dec, hdr, LTX_V3_PAGE_HEADER_SIZE, true);
	if (rc < 0)
		return dec_fail(dec, err, rc,
				"page header at offset %llu: %s",
				(unsigned long long)off, read_error(rc));
	pgno = ltx_get_be32(hdr);
	flags = ltx_get_be16(hdr + 4);
	if (pgno == 0 && flags == 0) {
		dec->state = DEC_END;
		return 0;
	}
	if (pgno == 0)
		return dec_fail(dec, err, LTFS_E_CORRUPT,
				"page header at offset %llu: page number 0 with flags 0x%04x",
				(unsigned long long)off, flags);
	if (flags & ~LTX_PAGE_FLAG_SIZE)
		return dec_fail(dec, err, LTFS_E_CORRUPT,
				"page %u at offset %llu: invalid page header flags 0x%04x",
				pgno, (unsigned long long)off, flags);
	rc = check_pgno(dec, pgno, off, err);
	if (rc < 0)
		return rc;

	if (flags & LTX_PAGE_FLAG_SIZE) {
		rc = read_raw(dec, hdr + 6, LTX_V3_SIZE_FIELD, true);
		if (rc < 0)
			return dec_fail(dec, err, rc,
					"page %u at offset %llu: size field: %s",
					pgno, (unsigned long long)off, read_error(rc));
		csize = ltx_get_be32(hdr + 6);
		if (csize == 0 || csize > (uint32_t)dec->cbuf_cap)
			return dec_fail(dec, err, LTFS_E_CORRUPT,
					"page %u at offset %llu: compressed size %u outside 1..%d",
					pgno, (unsigned long long)off, csize,
					dec->cbuf_cap);
		rc = read_raw(dec, dec->cbuf, csize, false);
		if (rc < 0)
			return dec_fail(dec, err, rc,
					"page %u at offset %llu: lz4 block: %s",
					pgno, (unsigned long long)off, read_error(rc));
		n = LZ4_decompress_safe((const char *)dec->cbuf,
					(char *)dec->page, (int)csize,
					(int)dec->h.page_size);
		if (n != (int)dec->h.page_size)
			return dec_fail(dec, err, LTFS_E_CORRUPT,
					"page %u at offset %llu: lz4 block %s (page size %u)",
					pgno, (unsigned long long)off,
					n < 0 ? "is malformed or decompresses past the page size"
					      : "decompresses to fewer bytes than the page size",
					dec->h.page_size);
		used = csize;
	} else {
		limit = LZ4F_compressFrameBound(dec->h.page_size, NULL) + 64;
		rc = lz4_frame_exact(dec, dec->page, dec->h.page_size, false,
				     limit, &used, &why);
		if (rc < 0)
			return dec_fail(dec, err, rc, "page %u at offset %llu: %s",
					pgno, (unsigned long long)off, why);
	}
	account_page(dec, pgno);
	dec->fi.offset = off;
	dec->fi.size = dec->in_off - off;
	dec->fi.flags = flags;
	dec->fi.payload = (uint32_t)used;
	n = (int)ltx_index_entry_put(ent, pgno, off, dec->fi.size);
	dec->want_index_crc = ltx_crc64(dec->want_index_crc, ent, (size_t)n);
	dec->want_index_len += (uint64_t)n;
	*pgno_out = pgno;
	return 1;
}

static int next_v1(struct ltx_decoder *dec, uint32_t *pgno_out,
		   struct ltfs_err *err)
{
	uint64_t off = dec->lz4_body ? dec->body_off + LTX_HEADER_SIZE
				     : dec->in_off;
	uint8_t hdr[LTX_V1_PAGE_HEADER_SIZE];
	uint32_t pgno;
	int rc;

	rc = read_body(dec, hdr, sizeof(hdr), true, err);
	if (rc < 0)
		return rc;
	pgno = ltx_get_be32(hdr);
	if (pgno == 0) {
		dec->state = DEC_END;
		return 0;
	}
	rc = check_pgno(dec, pgno, off, err);
	if (rc < 0)
		return rc;
	rc = read_body(dec, dec->page, dec->h.page_size, false, err);
	if (rc < 0)
		return rc;
	account_page(dec, pgno);
	dec->fi.offset = off;
	dec->fi.size = 0;
	dec->fi.flags = 0;
	dec->fi.payload = 0;
	*pgno_out = pgno;
	return 1;
}

int ltx_decoder_next(struct ltx_decoder *dec, uint32_t *pgno,
		     const uint8_t **page, struct ltfs_err *err)
{
	int rc;

	if (dec->state == DEC_FAILED)
		return ltfs_err_set(err, LTFS_E_STATE, "decoder failed earlier");
	if (dec->state != DEC_PAGES)
		return 0;
	if (dec->version == LTX_VERSION_3)
		rc = next_v3(dec, pgno, err);
	else
		rc = next_v1(dec, pgno, err);
	if (rc == 1)
		*page = dec->page;
	return rc;
}

void ltx_decoder_frame_info(const struct ltx_decoder *dec,
			    struct ltx_frame_info *out)
{
	*out = dec->fi;
}

/* Format 3 after the end marker: the page index and its size field. */
static int finish_index(struct ltx_decoder *dec, struct ltfs_err *err)
{
	uint64_t got_crc = 0, got_len = 0, size_field, prev_pgno = 0;
	uint8_t sz[LTX_INDEX_SIZE_FIELD];
	int rc;

	dec->index_off = dec->in_off;
	for (;;) {
		uint64_t v[3];
		uint64_t entry_off = dec->in_off;
		int k;

		for (k = 0; k < 3; k++) {
			int n;

			/* a varint may straddle the buffer; the file may also
			 * end within 10 bytes, which is fine here */
			rc = fill(dec, LTX_UVARINT_MAX);
			if (rc == LTFS_E_TRUNCATED && dec->in_len > dec->in_pos)
				rc = 0;
			if (rc < 0)
				return dec_fail(dec, err, rc,
						"page index at offset %llu: %s",
						(unsigned long long)dec->in_off,
						read_error(rc));
			n = ltx_uvarint_get(dec->in + dec->in_pos,
					    dec->in_len - dec->in_pos, &v[k]);
			if (n <= 0)
				return dec_fail(dec, err,
						n == 0 ? LTFS_E_TRUNCATED : LTFS_E_CORRUPT,
						"page index at offset %llu: %s",
						(unsigned long long)dec->in_off,
						n == 0 ? "file ends inside a varint"
						       : "malformed varint");
			got_crc = ltx_crc64(got_crc, dec->in + dec->in_pos,
					    (size_t)n);
			dec->file_crc = ltx_crc64(dec->file_crc,
						  dec->in + dec->in_pos,
						  (size_t)n);
			got_len += (uint64_t)n;
			consume(dec, (size_t)n);
			if (k == 0 && v[0] == 0)
				break;
		}
		if (v[0] == 0)
			break;
		if (v[0] <= prev_pgno || v[0] > dec->h.commit ||
		    v[1] < LTX_HEADER_SIZE || v[1] >= dec->index_off ||
		    v[2] > dec->index_off - v[1])
			return dec_fail(dec, err, LTFS_E_CORRUPT,
					"page index entry at offset %llu: (page %llu, offset %llu, size %llu) is impossible",
					(unsigned long long)entry_off,
					(unsigned long long)v[0],
					(unsigned long long)v[1],
					(unsigned long long)v[2]);
		prev_pgno = v[0];
		if (got_len > dec->want_index_len)
			break; /* reported below */
	}
	if (got_len - 1 != dec->want_index_len ||
	    got_crc != ltx_crc64(dec->want_index_crc, "", 1))
		return dec_fail(dec, err, LTFS_E_CORRUPT,
				"page index at offset %llu: entries do not match the %u frames read",
				(unsigned long long)dec->index_off, dec->npages);
	rc = read_raw(dec, sz, sizeof(sz), true);
	if (rc < 0)
		return dec_fail(dec, err, rc,
				"page index size at offset %llu: %s",
				(unsigned long long)dec->in_off, read_error(rc));
	size_field = ltx_get_be64(sz);
	if (size_field != got_len)
		return dec_fail(dec, err, LTFS_E_CORRUPT,
				"page index size field at offset %llu is %llu, index is %llu bytes",
				(unsigned long long)(dec->in_off - 8),
				(unsigned long long)size_field,
				(unsigned long long)got_len);
	dec->index_size = got_len;
	return 0;
}

/* Format 1 with an LZ4 body: the frame must end right after the marker. */
static int finish_lz4_body(struct ltx_decoder *dec, struct ltfs_err *err)
{
	uint64_t used;
	const char *why = NULL;
	int rc;

	if (dec->body_ended)
		return 0;
	rc = lz4_frame_exact(dec, NULL, 0, false, UINT64_MAX, &used, &why);
	if (rc < 0)
		return dec_fail(dec, err, rc,
				"compressed body near offset %llu: %s after the end marker",
				(unsigned long long)dec->in_off, why);
	return 0;
}

int ltx_decoder_finish(struct ltx_decoder *dec, struct ltx_trailer *out,
		       struct ltfs_err *err)
{
	uint8_t tr[LTX_TRAILER_SIZE];
	struct ltx_trailer t;
	uint64_t file_crc = 0, off;
	uint32_t pgno;
	const uint8_t *page;
	int rc;

	if (dec->state == DEC_FAILED)
		return ltfs_err_set(err, LTFS_E_STATE, "decoder failed earlier");
	if (dec->state == DEC_FINISHED)
		return ltfs_err_set(err, LTFS_E_STATE, "decoder already finished");
	while ((rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1)
		;
	if (rc < 0)
		return rc;
	if (ltx_header_is_snapshot(&dec->h) && dec->h.commit > 0 &&
	    !(dec->npages > 0 && ltx_snapshot_complete(dec->last_pgno,
						       dec->h.commit,
						       dec->lock_pgno)))
		return dec_fail(dec, err, LTFS_E_CORRUPT,
				"snapshot incomplete: last page %u, commit %u",
				dec->last_pgno, dec->h.commit);
	if (dec->version == LTX_VERSION_3)
		rc = finish_index(dec, err);
	else if (dec->lz4_body)
		rc = finish_lz4_body(dec, err);
	if (rc < 0)
		return rc;

	off = dec->in_off;
	rc = read_raw(dec, tr, 8, true);
	if (rc == 0) {
		file_crc = dec->file_crc;
		rc = read_raw(dec, tr + 8, 8, false);
	}
	if (rc < 0)
		return dec_fail(dec, err, rc, "trailer at offset %llu: %s",
				(unsigned long long)off, read_error(rc));
	t.post_apply_checksum = ltx_get_be64(tr);
	t.file_checksum = ltx_get_be64(tr + 8);
	rc = ltx_trailer_validate(&dec->h, &t, err);
	if (rc < 0) {
		dec->state = DEC_FAILED;
		ltfs_err_prefix(err, "offset %llu", (unsigned long long)off);
		return rc;
	}
	if (t.file_checksum != (LTX_CHECKSUM_FLAG | file_crc))
		return dec_fail(dec, err, LTFS_E_CHECKSUM,
				"file checksum mismatch: trailer at offset %llu says %016llx, content gives %016llx",
				(unsigned long long)(off + 8),
				(unsigned long long)t.file_checksum,
				(unsigned long long)(LTX_CHECKSUM_FLAG | file_crc));
	if (ltx_header_has_checksums(&dec->h) && ltx_header_is_snapshot(&dec->h) &&
	    t.post_apply_checksum != (LTX_CHECKSUM_FLAG | dec->pages_xor))
		return dec_fail(dec, err, LTFS_E_CHECKSUM,
				"snapshot post-apply checksum %016llx differs from its pages' checksum %016llx",
				(unsigned long long)t.post_apply_checksum,
				(unsigned long long)(LTX_CHECKSUM_FLAG | dec->pages_xor));
	rc = fill(dec, 1);
	if (rc != LTFS_E_TRUNCATED)
		return dec_fail(dec, err, rc < 0 ? rc : LTFS_E_CORRUPT,
				"%s after the trailer at offset %llu",
				rc < 0 ? ltfs_strerror(rc) : "unexpected bytes",
				(unsigned long long)dec->in_off);
	dec->state = DEC_FINISHED;
	if (out)
		*out = t;
	return 0;
}

uint64_t ltx_decoder_index_offset(const struct ltx_decoder *dec)
{
	return dec->index_off;
}

uint64_t ltx_decoder_index_size(const struct ltx_decoder *dec)
{
	return dec->index_size;
}

uint32_t ltx_decoder_page_count(const struct ltx_decoder *dec)
{
	return dec->npages;
}

void ltx_decoder_free(struct ltx_decoder *dec)
{
	if (!dec)
		return;
	if (dec->dctx)
		LZ4F_freeDecompressionContext(dec->dctx);
	free(dec->in);
	free(dec->page);
	free(dec->cbuf);
	free(dec);
}

int ltx_detect_version_fd(int fd, enum ltx_version *out, struct ltfs_err *err)
{
	uint8_t hdr[LTX_HEADER_SIZE], tail[LTX_INDEX_SIZE_FIELD + 1];
	off_t len = lseek(fd, 0, SEEK_END);
	uint64_t size;

	if (len < 0)
		return ltfs_err_set(err, -errno, "seek: %s", strerror(errno));
	if (len < LTX_HEADER_SIZE)
		return ltfs_err_set(err, LTFS_E_TRUNCATED,
				    "header: file is %lld bytes, shorter than the header",
				    (long long)len);
	if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		return ltfs_err_set(err, -EIO, "read header failed");
	if (ltx_get_be32(hdr + 4) & LTX_HEADER_FLAG_COMPRESS_LZ4) {
		*out = LTX_VERSION_1;
		return 0;
	}
	*out = LTX_VERSION_3;
	if (len < LTX_HEADER_SIZE + LTX_V3_PAGE_HEADER_SIZE + 1 +
			  LTX_INDEX_SIZE_FIELD + LTX_TRAILER_SIZE)
		return 0; /* too short for either; format 3 reports it */
	if (pread(fd, tail, sizeof(tail), len - LTX_TRAILER_SIZE - 9) !=
	    (ssize_t)sizeof(tail))
		return ltfs_err_set(err, -EIO, "read page index size failed");
	/*
	 * Format 3: tail = index terminator (0) + size field. In format 1 the
	 * same bytes are the last page's final bytes and a 4-byte zero end
	 * marker, which gives a size of 0 or >= 2^32: never a valid index.
	 */
	size = ltx_get_be64(tail + 1);
	if (!(tail[0] == 0 && size >= 1 &&
	      size <= (uint64_t)len - LTX_TRAILER_SIZE - LTX_INDEX_SIZE_FIELD -
			      LTX_HEADER_SIZE - LTX_V3_PAGE_HEADER_SIZE))
		*out = LTX_VERSION_1;
	return 0;
}

int ltx_decoder_open_fd(struct ltx_decoder **out, int *fd, size_t in_cap,
			struct ltfs_err *err)
{
	struct ltx_decoder_opts opts = { .version = LTX_VERSION_AUTO, .in_cap = in_cap };
	int rc = ltx_detect_version_fd(*fd, &opts.version, err);

	*out = NULL;
	if (rc < 0)
		return rc;
	if (lseek(*fd, 0, SEEK_SET) < 0)
		return ltfs_err_set(err, -errno, "seek: %s", strerror(errno));
	return ltx_decoder_open(out, ltx_read_fd, fd, &opts, err);
}

int ltx_verify_fd(int fd, struct ltx_header *h, struct ltx_trailer *t,
		  struct ltfs_err *err)
{
	struct ltx_decoder *dec;
	int rc = ltx_decoder_open_fd(&dec, &fd, 0, err);

	if (rc < 0)
		return rc;
	rc = ltx_decoder_finish(dec, t, err);
	if (rc == 0 && h)
		*h = dec->h;
	ltx_decoder_free(dec);
	return rc;
}
