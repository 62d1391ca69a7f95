/*
 * compact.c - merge a contiguous TXID run of LTX files into one.
 *
 * A k-way merge by page number over streaming decoders: memory is one page
 * per input whatever the file sizes. For each page number the newest input
 * wins. All inputs are verified to their trailers before the output's
 * trailer is written, so a bad input never yields a complete output.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx_int.h"

struct cursor {
	struct ltx_decoder *dec;
	uint32_t pgno;       /* current page, valid while !done */
	const uint8_t *page;
	bool done;
};

static int advance(struct cursor *c, size_t i, struct ltfs_err *err)
{
	int rc = ltx_decoder_next(c->dec, &c->pgno, &c->page, err);

	if (rc < 0) {
		ltfs_err_prefix(err, "input %zu", i + 1);
		return rc;
	}
	c->done = rc == 0;
	return 0;
}

static int check_inputs(struct ltx_decoder **inputs, size_t n,
			struct ltfs_err *err)
{
	const struct ltx_header *first = ltx_decoder_header(inputs[0]);
	uint64_t prev_max = first->max_txid;

	for (size_t i = 1; i < n; i++) {
		const struct ltx_header *h = ltx_decoder_header(inputs[i]);

		if (h->page_size != first->page_size)
			return ltfs_err_set(err, LTFS_E_USAGE,
					    "input %zu: page size %u differs from input 1's %u",
					    i + 1, h->page_size, first->page_size);
		if (ltx_header_has_checksums(h) != ltx_header_has_checksums(first))
			return ltfs_err_set(err, LTFS_E_USAGE,
					    "input %zu: checksum mode (%s) differs from input 1's",
					    i + 1,
					    ltx_header_has_checksums(h) ? "checksums" : "NoChecksum");
		if (h->min_txid > prev_max + 1 || h->max_txid <= prev_max)
			return ltfs_err_set(err, LTFS_E_TXID,
					    "input %zu: TXIDs %llu-%llu do not continue %llu",
					    i + 1, (unsigned long long)h->min_txid,
					    (unsigned long long)h->max_txid,
					    (unsigned long long)prev_max);
		prev_max = h->max_txid;
	}
	return 0;
}

int ltx_compact(struct ltx_decoder **inputs, size_t n,
		const struct ltx_compact_opts *opts, ltx_write_fn write,
		void *ctx, struct ltx_header *out_header,
		struct ltx_trailer *out_trailer, struct ltfs_err *err)
{
	const struct ltx_header *first, *last;
	struct ltx_encoder *enc = NULL;
	struct ltx_trailer t;
	struct ltx_header h;
	struct cursor *cur;
	int rc;

	if (n == 0)
		return ltfs_err_set(err, LTFS_E_USAGE, "nothing to compact");
	rc = check_inputs(inputs, n, err);
	if (rc < 0)
		return rc;
	first = ltx_decoder_header(inputs[0]);
	last = ltx_decoder_header(inputs[n - 1]);
	memset(&h, 0, sizeof(h));
	h.flags = first->flags & LTX_HEADER_FLAG_NO_CHECKSUM;
	h.page_size = first->page_size;
	h.commit = last->commit;
	h.min_txid = first->min_txid;
	h.max_txid = last->max_txid;
	h.timestamp = last->timestamp;
	h.pre_apply_checksum = first->pre_apply_checksum;
	if (opts && opts->keep_node_id)
		h.node_id = last->node_id;

	cur = calloc(n, sizeof(*cur));
	if (!cur)
		return ltfs_err_set(err, -ENOMEM, NULL);
	for (size_t i = 0; i < n && rc == 0; i++) {
		cur[i].dec = inputs[i];
		rc = advance(&cur[i], i, err);
	}
	if (rc == 0)
		rc = ltx_encoder_open(&enc, &h, opts ? &opts->enc : NULL, write,
				      ctx, err);
	while (rc == 0) {
		uint32_t min = 0;
		size_t win = 0;
		bool any = false;

		for (size_t i = 0; i < n; i++) {
			if (cur[i].done)
				continue;
			if (!any || cur[i].pgno < min) {
				min = cur[i].pgno;
				win = i;
				any = true;
			} else if (cur[i].pgno == min) {
				win = i; /* later input = newer page */
			}
		}
		if (!any)
			break;
		if (min <= h.commit)
			rc = ltx_encoder_add_page(enc, min, cur[win].page, NULL,
						  err);
		for (size_t i = 0; i < n && rc == 0; i++) {
			if (!cur[i].done && cur[i].pgno == min)
				rc = advance(&cur[i], i, err);
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		rc = ltx_decoder_finish(inputs[i], &t, err);
		if (rc < 0)
			ltfs_err_prefix(err, "input %zu", i + 1);
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, t.post_apply_checksum, out_trailer,
					err);
	if (rc == 0 && out_header)
		*out_header = h;
	ltx_encoder_free(enc);
	free(cur);
	return rc;
}
