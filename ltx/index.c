/*
 * index.c - random access to a format-3 file through its page index.
 *
 * Reads the header, trailer and index with pread(2) and serves single pages
 * without decoding the rest (how a remote reader fetches one page with a
 * ranged GET). The index is checked for internal consistency; the file
 * checksum needs a full pass and stays the decoder's job.
 */
#include <errno.h>
#include <lz4.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ltx/ltx_int.h"

int ltx_index_read(int fd, struct ltx_index *idx, struct ltfs_err *err)
{
	uint8_t hdr[LTX_HEADER_SIZE], tail[LTX_INDEX_SIZE_FIELD + LTX_TRAILER_SIZE];
	uint64_t size, start, end_marker, prev_end;
	uint8_t *raw = NULL;
	struct stat st;
	size_t pos = 0, cap;
	int rc;

	memset(idx, 0, sizeof(*idx));
	if (fstat(fd, &st) < 0)
		return ltfs_err_set(err, -errno, "stat: %s", strerror(errno));
	idx->file_size = (uint64_t)st.st_size;
	if (idx->file_size < LTX_HEADER_SIZE + LTX_V3_PAGE_HEADER_SIZE + 1 +
				     sizeof(tail))
		return ltfs_err_set(err, LTFS_E_TRUNCATED,
				    "file is %llu bytes, too short for a format-3 file",
				    (unsigned long long)idx->file_size);
	rc = ltx_pread_full(fd, hdr, sizeof(hdr), 0);
	if (rc == 0)
		rc = ltx_pread_full(fd, tail, sizeof(tail),
				idx->file_size - sizeof(tail));
	if (rc < 0)
		return ltfs_err_set(err, rc, "read: %s", ltfs_strerror(rc));
	rc = ltx_header_decode(hdr, &idx->header, err);
	if (rc == 0)
		rc = ltx_header_validate(&idx->header, LTX_VERSION_3, err);
	if (rc < 0)
		return rc;
	idx->trailer.post_apply_checksum = ltx_get_be64(tail + 8);
	idx->trailer.file_checksum = ltx_get_be64(tail + 16);
	rc = ltx_trailer_validate(&idx->header, &idx->trailer, err);
	if (rc < 0)
		return rc;

	size = ltx_get_be64(tail);
	end_marker = LTX_HEADER_SIZE; /* smallest possible end-marker offset */
	if (size < 1 || size > idx->file_size - sizeof(tail) - end_marker -
					LTX_V3_PAGE_HEADER_SIZE)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "page index size %llu at offset %llu does not fit the file",
				    (unsigned long long)size,
				    (unsigned long long)(idx->file_size - sizeof(tail)));
	start = idx->file_size - sizeof(tail) - size;
	raw = malloc(size);
	if (!raw)
		return ltfs_err_set(err, -ENOMEM, NULL);
	rc = ltx_pread_full(fd, raw, size, start);
	if (rc < 0) {
		ltfs_err_set(err, rc, "read page index: %s", ltfs_strerror(rc));
		goto fail;
	}
	/* Every entry takes at least 3 bytes: this bounds the allocation. */
	cap = size / 3 + 1;
	idx->entries = calloc(cap, sizeof(*idx->entries));
	if (!idx->entries) {
		rc = ltfs_err_set(err, -ENOMEM, NULL);
		goto fail;
	}
	prev_end = LTX_HEADER_SIZE;
	for (;;) {
		uint64_t v[3];
		int k, n;

		for (k = 0; k < 3; k++) {
			n = ltx_uvarint_get(raw + pos, size - pos, &v[k]);
			if (n <= 0) {
				rc = ltfs_err_set(err, LTFS_E_CORRUPT,
						  "page index at offset %llu: %s",
						  (unsigned long long)(start + pos),
						  n == 0 ? "ends inside a varint"
							 : "malformed varint");
				goto fail;
			}
			pos += (size_t)n;
			if (k == 0 && v[0] == 0)
				break;
		}
		if (v[0] == 0)
			break;
		if ((idx->count > 0 && v[0] <= idx->entries[idx->count - 1].pgno) ||
		    v[0] > idx->header.commit || v[1] != prev_end ||
		    v[2] < LTX_V3_PAGE_HEADER_SIZE + 1 ||
		    v[2] > start - LTX_V3_PAGE_HEADER_SIZE - v[1] ||
		    idx->count >= cap) {
			rc = ltfs_err_set(err, LTFS_E_CORRUPT,
					  "page index entry %u (page %llu, offset %llu, size %llu) is not consistent with the file",
					  idx->count + 1, (unsigned long long)v[0],
					  (unsigned long long)v[1],
					  (unsigned long long)v[2]);
			goto fail;
		}
		idx->entries[idx->count].pgno = (uint32_t)v[0];
		idx->entries[idx->count].offset = v[1];
		idx->entries[idx->count].size = v[2];
		idx->count++;
		prev_end = v[1] + v[2];
	}
	if (pos != size || prev_end + LTX_V3_PAGE_HEADER_SIZE != start) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT,
				  "page index at offset %llu: %s",
				  (unsigned long long)start,
				  pos != size ? "bytes after the terminator"
					      : "frames do not end at the end marker");
		goto fail;
	}
	free(raw);
	return 0;
fail:
	free(raw);
	ltx_index_release(idx);
	return rc;
}

void ltx_index_release(struct ltx_index *idx)
{
	free(idx->entries);
	idx->entries = NULL;
	idx->count = 0;
}

int ltx_index_read_page(int fd, const struct ltx_index *idx, uint32_t pgno,
			uint8_t *page, struct ltfs_err *err)
{
	uint32_t lo = 0, hi = idx->count, ps = idx->header.page_size;
	const struct ltx_index_entry *e = NULL;
	uint8_t *frame;
	uint16_t flags;
	int rc, n = -1;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (idx->entries[mid].pgno == pgno) {
			e = &idx->entries[mid];
			break;
		}
		if (idx->entries[mid].pgno < pgno)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!e)
		return 0;
	if (e->size > LTX_V3_PAGE_HEADER_SIZE + LZ4F_compressFrameBound(ps, NULL) + 64)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "page %u: frame size %llu is larger than any page needs",
				    pgno, (unsigned long long)e->size);
	frame = malloc(e->size);
	if (!frame)
		return ltfs_err_set(err, -ENOMEM, NULL);
	rc = ltx_pread_full(fd, frame, e->size, e->offset);
	if (rc < 0) {
		ltfs_err_set(err, rc, "page %u: read: %s", pgno, ltfs_strerror(rc));
		goto out;
	}
	flags = ltx_get_be16(frame + 4);
	if (ltx_get_be32(frame) != pgno || (flags & ~LTX_PAGE_FLAG_SIZE)) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT,
				  "page %u: frame at offset %llu has page %u, flags 0x%04x",
				  pgno, (unsigned long long)e->offset,
				  ltx_get_be32(frame), flags);
		goto out;
	}
	if (flags & LTX_PAGE_FLAG_SIZE) {
		uint32_t csize = e->size >= 10 ? ltx_get_be32(frame + 6) : 0;

		if (csize + 10ull == e->size)
			n = LZ4_decompress_safe((const char *)frame + 10,
						(char *)page, (int)csize, (int)ps);
	} else {
		LZ4F_dctx *dctx;
		size_t dst = ps, src = e->size - LTX_V3_PAGE_HEADER_SIZE, hint;

		if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx,
								 LZ4F_VERSION))) {
			rc = ltfs_err_set(err, -ENOMEM, NULL);
			goto out;
		}
		hint = LZ4F_decompress(dctx, page, &dst,
				       frame + LTX_V3_PAGE_HEADER_SIZE, &src, NULL);
		if (!LZ4F_isError(hint) && hint == 0 &&
		    src == e->size - LTX_V3_PAGE_HEADER_SIZE)
			n = (int)dst;
		LZ4F_freeDecompressionContext(dctx);
	}
	if (n != (int)ps) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT,
				  "page %u: frame at offset %llu does not decompress to one page",
				  pgno, (unsigned long long)e->offset);
		goto out;
	}
	rc = 1;
out:
	free(frame);
	return rc;
}
