/*
 * encode.c - streaming LTX writer (format 3).
 *
 * Each page is LZ4-compressed on its own, straight into a 128 KiB output
 * buffer that is handed to the sink when full. The page's bytes are read
 * once for checksums: crc64(page) is combined with the page number for the
 * page checksum and with the page header for the file checksum (CRC
 * linearity, see crc64.c), so checksums cost one pass, not two.
 */
#include <errno.h>
#include <lz4.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx_int.h"

#define ENC_OUT_CAP (128u * 1024)

struct ltx_encoder {
	struct ltx_header h;
	struct ltx_encoder_opts opts;
	ltx_write_fn write;
	void *ctx;
	uint8_t *out; /* ENC_OUT_CAP bytes of pending output */
	size_t out_len;
	uint64_t offset;   /* file offset of the next byte produced */
	uint64_t file_crc; /* CRC of everything hashed so far */
	uint64_t pages_xor;
	uint32_t last_pgno;
	uint32_t npages;
	uint32_t lock_pgno;
	struct ltfs_buf index; /* encoded index entries */
	struct ltx_crc64_shift page_shift;
	void *lz4_state;           /* block mode */
	LZ4F_cctx *cctx;           /* frame mode */
	LZ4F_preferences_t prefs;  /* frame mode */
	bool failed;
	bool finished;
};

static int flush_out(struct ltx_encoder *enc)
{
	int rc;

	if (enc->out_len == 0)
		return 0;
	rc = enc->write(enc->ctx, enc->out, enc->out_len);
	enc->out_len = 0;
	return rc;
}

/* Append bytes that go into the file as-is (and into the file checksum). */
static int emit(struct ltx_encoder *enc, const void *p, size_t n, bool hash)
{
	if (hash)
		enc->file_crc = ltx_crc64(enc->file_crc, p, n);
	enc->offset += n;
	while (n > 0) {
		size_t room = ENC_OUT_CAP - enc->out_len;
		size_t k = n < room ? n : room;
		int rc;

		memcpy(enc->out + enc->out_len, p, k);
		enc->out_len += k;
		p = (const uint8_t *)p + k;
		n -= k;
		if (enc->out_len == ENC_OUT_CAP && (rc = flush_out(enc)) < 0)
			return rc;
	}
	return 0;
}

static int fail(struct ltx_encoder *enc, struct ltfs_err *err, int rc,
		const char *what)
{
	enc->failed = true;
	if (what)
		return ltfs_err_set(err, rc, "%s: %s", what, ltfs_strerror(rc));
	return rc;
}

int ltx_encoder_open(struct ltx_encoder **out, const struct ltx_header *h,
		     const struct ltx_encoder_opts *opts, ltx_write_fn write,
		     void *ctx, struct ltfs_err *err)
{
	struct ltx_encoder *enc;
	uint8_t hdr[LTX_HEADER_SIZE];
	int rc;

	*out = NULL;
	rc = ltx_header_validate(h, LTX_VERSION_3, err);
	if (rc < 0)
		return rc;
	enc = calloc(1, sizeof(*enc));
	if (!enc)
		return ltfs_err_set(err, -ENOMEM, NULL);
	enc->h = *h;
	enc->opts.encoding = LTX_ENC_BLOCK;
	enc->opts.lz4_acceleration = 1;
	if (opts) {
		enc->opts = *opts;
		if (enc->opts.lz4_acceleration < 1)
			enc->opts.lz4_acceleration = 1;
	}
	enc->write = write;
	enc->ctx = ctx;
	enc->lock_pgno = ltx_lock_pgno(h->page_size);
	/* An index entry is at most 5 + 10 + 5 bytes. */
	ltfs_buf_init(&enc->index, ((size_t)h->commit + 1) * 20 + 16);
	ltx_crc64_shift_init(&enc->page_shift, h->page_size);
	enc->out = malloc(ENC_OUT_CAP);
	if (!enc->out)
		goto nomem;
	if (enc->opts.encoding == LTX_ENC_BLOCK) {
		enc->lz4_state = malloc((size_t)LZ4_sizeofState());
		if (!enc->lz4_state)
			goto nomem;
	} else {
		if (LZ4F_isError(LZ4F_createCompressionContext(&enc->cctx,
							       LZ4F_VERSION)))
			goto nomem;
		/* The profile older readers expect: one 64 KiB block, content
		 * checksum on, block checksum off (docs/ltx.md). */
		memset(&enc->prefs, 0, sizeof(enc->prefs));
		enc->prefs.frameInfo.blockSizeID = LZ4F_max64KB;
		enc->prefs.frameInfo.blockMode = LZ4F_blockIndependent;
		enc->prefs.frameInfo.contentChecksumFlag =
			LZ4F_contentChecksumEnabled;
		enc->prefs.compressionLevel = 0;
	}
	ltx_header_encode(h, hdr);
	rc = emit(enc, hdr, sizeof(hdr), true);
	if (rc < 0) {
		ltx_encoder_free(enc);
		return ltfs_err_set(err, rc, "write header: %s", ltfs_strerror(rc));
	}
	*out = enc;
	return 0;
nomem:
	ltx_encoder_free(enc);
	return ltfs_err_set(err, -ENOMEM, NULL);
}

static int check_pgno(struct ltx_encoder *enc, uint32_t pgno,
		      struct ltfs_err *err)
{
	if (pgno == 0 || pgno > enc->h.commit)
		return ltfs_err_set(err, LTFS_E_USAGE,
				    "page %u outside 1..commit (%u)", pgno,
				    enc->h.commit);
	if (pgno == enc->lock_pgno)
		return ltfs_err_set(err, LTFS_E_USAGE,
				    "page %u is the lock page and cannot be stored",
				    pgno);
	if (ltx_header_is_snapshot(&enc->h)) {
		uint32_t want = enc->npages == 0
					? 1
					: ltx_snapshot_next(enc->last_pgno,
							    enc->lock_pgno);
		if (pgno != want)
			return ltfs_err_set(err, LTFS_E_USAGE,
					    "snapshot page %u out of sequence, want %u",
					    pgno, want);
	} else if (enc->npages > 0 && pgno <= enc->last_pgno) {
		return ltfs_err_set(err, LTFS_E_USAGE,
				    "page %u not after previous page %u", pgno,
				    enc->last_pgno);
	}
	return 0;
}

/* Compress one page into the output buffer after a reserved page header;
 * returns the payload size or a negative code. */
static int compress_page(struct ltx_encoder *enc, const void *data,
			 size_t hdr_len, struct ltfs_err *err)
{
	uint8_t *dst = enc->out + enc->out_len + hdr_len;
	int cap = (int)(ENC_OUT_CAP - enc->out_len - hdr_len);
	int ps = (int)enc->h.page_size;

	if (enc->opts.encoding == LTX_ENC_BLOCK) {
		int n = LZ4_compress_fast_extState(enc->lz4_state, data,
						   (char *)dst, ps, cap,
						   enc->opts.lz4_acceleration);
		if (n <= 0)
			return ltfs_err_set(err, LTFS_E_STATE,
					    "lz4 block compression failed");
		return n;
	} else {
		size_t n = 0, r;

		r = LZ4F_compressBegin(enc->cctx, dst, (size_t)cap, &enc->prefs);
		if (LZ4F_isError(r))
			goto lz4f_fail;
		n += r;
		r = LZ4F_compressUpdate(enc->cctx, dst + n, (size_t)cap - n,
					data, (size_t)ps, NULL);
		if (LZ4F_isError(r))
			goto lz4f_fail;
		n += r;
		r = LZ4F_compressEnd(enc->cctx, dst + n, (size_t)cap - n, NULL);
		if (LZ4F_isError(r))
			goto lz4f_fail;
		n += r;
		return (int)n;
lz4f_fail:
		return ltfs_err_set(err, LTFS_E_STATE,
				    "lz4 frame compression failed: %s",
				    LZ4F_getErrorName(r));
	}
}

int ltx_encoder_add_page(struct ltx_encoder *enc, uint32_t pgno,
			 const void *data, uint64_t *page_checksum,
			 struct ltfs_err *err)
{
	size_t hdr_len = enc->opts.encoding == LTX_ENC_BLOCK
				 ? LTX_V3_PAGE_HEADER_SIZE + LTX_V3_SIZE_FIELD
				 : LTX_V3_PAGE_HEADER_SIZE;
	size_t worst = hdr_len + (enc->opts.encoding == LTX_ENC_BLOCK
		       ? (size_t)LZ4_compressBound((int)enc->h.page_size)
		       : LZ4F_compressFrameBound(enc->h.page_size, &enc->prefs));
	uint8_t ent[3 * LTX_UVARINT_MAX], *hdr;
	uint64_t data_crc, cksum, frame_off = enc->offset;
	uint8_t be[4];
	int rc, payload;

	if (enc->failed || enc->finished)
		return ltfs_err_set(err, LTFS_E_STATE, "encoder is %s",
				    enc->failed ? "failed" : "finished");
	rc = check_pgno(enc, pgno, err);
	if (rc < 0)
		return rc;
	if (ENC_OUT_CAP - enc->out_len < worst && (rc = flush_out(enc)) < 0)
		return fail(enc, err, rc, "write");
	payload = compress_page(enc, data, hdr_len, err);
	if (payload < 0)
		return fail(enc, err, payload, NULL);

	hdr = enc->out + enc->out_len;
	ltx_put_be32(hdr, pgno);
	ltx_put_be16(hdr + 4, enc->opts.encoding == LTX_ENC_BLOCK
				      ? LTX_PAGE_FLAG_SIZE : 0);
	if (enc->opts.encoding == LTX_ENC_BLOCK)
		ltx_put_be32(hdr + 6, (uint32_t)payload);

	/* The file checksum hashes the page header and the uncompressed page. */
	data_crc = ltx_crc64(0, data, enc->h.page_size);
	enc->file_crc = ltx_crc64_shift_combine(
		&enc->page_shift, ltx_crc64(enc->file_crc, hdr, hdr_len),
		data_crc);
	ltx_put_be32(be, pgno);
	cksum = LTX_CHECKSUM_FLAG |
		ltx_crc64_shift_combine(&enc->page_shift, ltx_crc64(0, be, 4),
					data_crc);
	enc->pages_xor ^= cksum;

	enc->out_len += hdr_len + (size_t)payload;
	enc->offset += hdr_len + (size_t)payload;
	rc = ltfs_buf_append(&enc->index, ent,
			     ltx_index_entry_put(ent, pgno, frame_off,
						 hdr_len + (size_t)payload));
	if (rc < 0)
		return fail(enc, err, rc, "page index");
	enc->last_pgno = pgno;
	enc->npages++;
	if (page_checksum)
		*page_checksum = cksum;
	return 0;
}

int ltx_encoder_finish(struct ltx_encoder *enc, uint64_t post_apply,
		       struct ltx_trailer *out, struct ltfs_err *err)
{
	static const uint8_t end_marker[LTX_V3_PAGE_HEADER_SIZE];
	uint8_t tail[LTX_INDEX_SIZE_FIELD], zero = 0;
	struct ltx_trailer t;
	uint64_t snap = LTX_CHECKSUM_FLAG | enc->pages_xor;
	int rc;

	if (enc->failed || enc->finished)
		return ltfs_err_set(err, LTFS_E_STATE, "encoder is %s",
				    enc->failed ? "failed" : "finished");
	if (ltx_header_is_snapshot(&enc->h) && enc->h.commit > 0 &&
	    !(enc->npages > 0 && ltx_snapshot_complete(enc->last_pgno,
						       enc->h.commit,
						       enc->lock_pgno)))
		return ltfs_err_set(err, LTFS_E_USAGE,
				    "snapshot incomplete: ends at page %u, commit is %u",
				    enc->last_pgno, enc->h.commit);
	if (ltx_header_has_checksums(&enc->h) && ltx_header_is_snapshot(&enc->h)) {
		if (post_apply == 0)
			post_apply = snap;
		else if (post_apply != snap)
			return ltfs_err_set(err, LTFS_E_CHECKSUM,
					    "snapshot post-apply %016llx differs from its pages' checksum %016llx",
					    (unsigned long long)post_apply,
					    (unsigned long long)snap);
	}
	t.post_apply_checksum = post_apply;
	t.file_checksum = LTX_CHECKSUM_FLAG; /* validated below, set later */
	rc = ltx_trailer_validate(&enc->h, &t, err);
	if (rc < 0)
		return rc;

	rc = emit(enc, end_marker, sizeof(end_marker), true);
	if (rc == 0 && enc->index.len)
		rc = emit(enc, enc->index.data, enc->index.len, true);
	if (rc == 0)
		rc = emit(enc, &zero, 1, true);
	ltx_put_be64(tail, enc->index.len + 1);
	if (rc == 0)
		rc = emit(enc, tail, sizeof(tail), true);
	ltx_put_be64(tail, post_apply);
	if (rc == 0)
		rc = emit(enc, tail, sizeof(tail), true);
	t.file_checksum = LTX_CHECKSUM_FLAG | enc->file_crc;
	ltx_put_be64(tail, t.file_checksum);
	if (rc == 0)
		rc = emit(enc, tail, sizeof(tail), false);
	if (rc == 0)
		rc = flush_out(enc);
	if (rc < 0)
		return fail(enc, err, rc, "write");
	enc->finished = true;
	if (out)
		*out = t;
	return 0;
}

uint64_t ltx_encoder_pages_xor(const struct ltx_encoder *enc)
{
	return enc->pages_xor & ~LTX_CHECKSUM_FLAG;
}

uint64_t ltx_encoder_bytes_written(const struct ltx_encoder *enc)
{
	return enc->offset;
}

void ltx_encoder_free(struct ltx_encoder *enc)
{
	if (!enc)
		return;
	free(enc->out);
	free(enc->lz4_state);
	if (enc->cctx)
		LZ4F_freeCompressionContext(enc->cctx);
	ltfs_buf_release(&enc->index);
	free(enc);
}

int ltx_encode_db_fd(int db_fd, const struct ltx_header *h, const struct ltx_encoder_opts *opts,
		     ltx_write_fn write, void *ctx, struct ltx_trailer *out, struct ltfs_err *err)
{
	struct ltx_encoder *enc = NULL;
	uint32_t lock = ltx_lock_pgno(h->page_size);
	uint8_t *page = malloc(h->page_size);
	int rc;

	if (!page)
		return ltfs_err_set(err, -ENOMEM, NULL);
	rc = ltx_encoder_open(&enc, h, opts, write, ctx, err);
	for (uint32_t pgno = 1; rc == 0 && pgno <= h->commit; pgno++) {
		if (pgno == lock)
			continue;
		rc = ltx_pread_full(db_fd, page, h->page_size, (uint64_t)(pgno - 1) * h->page_size);
		if (rc < 0) {
			ltfs_err_set(err, rc, "database page %u: %s", pgno, ltfs_strerror(rc));
			break;
		}
		rc = ltx_encoder_add_page(enc, pgno, page, NULL, err);
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, 0, out, err);
	ltx_encoder_free(enc);
	free(page);
	return rc;
}
