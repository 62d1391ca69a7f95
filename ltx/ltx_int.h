/*
 * ltx_int.h - internals shared by the files of ltx/ (not part of the API).
 */
#ifndef LTFS_LTX_INT_H
#define LTFS_LTX_INT_H

#include "ltx/ltx.h"

#define LTX_V3_PAGE_HEADER_SIZE 6
#define LTX_V3_SIZE_FIELD 4
#define LTX_V1_PAGE_HEADER_SIZE 4
#define LTX_INDEX_SIZE_FIELD 8
#define LTX_UVARINT_MAX 10

/* Go's binary.AppendUvarint: 7 bits per byte, low group first. */
static inline size_t ltx_uvarint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/*
 * Parse a uvarint from p[0..n): bytes used (> 0), 0 if more bytes are
 * needed, -1 if it overflows 64 bits or is longer than 10 bytes.
 */
static inline int ltx_uvarint_get(const uint8_t *p, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	unsigned shift = 0;

	for (size_t i = 0; i < n; i++) {
		if (i == LTX_UVARINT_MAX)
			return -1;
		if (p[i] < 0x80) {
			if (i == LTX_UVARINT_MAX - 1 && p[i] > 1)
				return -1;
			*out = v | (uint64_t)p[i] << shift;
			return (int)i + 1;
		}
		v |= (uint64_t)(p[i] & 0x7f) << shift;
		shift += 7;
	}
	return n >= LTX_UVARINT_MAX ? -1 : 0;
}

/* Encoded size of one index entry. */
static inline size_t ltx_index_entry_put(uint8_t *p, uint32_t pgno,
					 uint64_t offset, uint64_t size)
{
	size_t n = ltx_uvarint_put(p, pgno);

	n += ltx_uvarint_put(p + n, offset);
	n += ltx_uvarint_put(p + n, size);
	return n;
}

/* The next page a snapshot must hold after `prev` (skips the lock page). */
static inline uint32_t ltx_snapshot_next(uint32_t prev, uint32_t lock_pgno)
{
	return prev + 1 == lock_pgno ? prev + 2 : prev + 1;
}

/* A snapshot ending at `last` is complete for `commit` pages. */
static inline bool ltx_snapshot_complete(uint32_t last, uint32_t commit,
					 uint32_t lock_pgno)
{
	return last == commit || (commit == lock_pgno && last == commit - 1);
}

#endif /* LTFS_LTX_INT_H */
