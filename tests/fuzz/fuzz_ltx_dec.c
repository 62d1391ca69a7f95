/*
 * fuzz_ltx_dec.c - libFuzzer target for the streaming LTX decoder.
 *
 * The decoder is the front door for bytes from disk, peers and the bucket,
 * so any input must end in a clean error or a clean success. Each input is
 * decoded as format 3 and as format 1 (a format-1 file without the LZ4 flag
 * looks like format 3 from its header, so both paths see every input),
 * through a memory source: open, every page, finish, free.
 *
 * Besides crashes and sanitizer reports, the target aborts when the error
 * contract breaks: a failure without a message, a code that differs from
 * err.code or is not a decoder code, or a failed decoder that does not
 * refuse further calls.
 *
 *   make fuzz FUZZ_TIME=120
 *   build-fuzz/fuzz-ltx-dec CRASH_FILE     replay one input
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The codes a decoder over memory may return. */
static int known_code(int rc)
{
	return rc == LTFS_E_CORRUPT || rc == LTFS_E_CHECKSUM ||
	       rc == LTFS_E_TRUNCATED || rc == LTFS_E_FORMAT ||
	       rc == -ENOMEM;
}

static void check_error(int rc, const struct ltfs_err *err)
{
	if (!known_code(rc) || err->code != rc || err->msg[0] == '\0')
		abort();
}

static void decode(const uint8_t *data, size_t size, enum ltx_version version)
{
	struct ltx_mem_source src = { .data = data, .len = size, .pos = 0 };
	struct ltx_decoder_opts opts = { .version = version };
	struct ltx_decoder *dec = NULL;
	struct ltx_trailer trailer;
	struct ltfs_err err;
	const uint8_t *page;
	uint32_t pgno, page_size, npages = 0;
	volatile uint8_t sink = 0;
	int rc;

	ltfs_err_clear(&err);
	rc = ltx_decoder_open(&dec, ltx_read_mem, &src, &opts, &err);
	if (rc < 0) {
		check_error(rc, &err);
		if (dec != NULL)
			abort();
		return;
	}
	page_size = ltx_decoder_header(dec)->page_size;
	while ((rc = ltx_decoder_next(dec, &pgno, &page, &err)) == 1) {
		/* Touch both ends, so ASan sees a short page buffer. */
		sink ^= page[0] ^ page[page_size - 1];
		if (pgno == 0)
			abort();
		npages++;
	}
	if (rc == 0) {
		rc = ltx_decoder_finish(dec, &trailer, &err);
		if (rc == 0 && ltx_decoder_page_count(dec) != npages)
			abort();
	}
	if (rc > 0)
		abort();
	if (rc < 0) {
		check_error(rc, &err);
		/* A failed decoder must refuse to go on. */
		ltfs_err_clear(&err);
		if (ltx_decoder_next(dec, &pgno, &page, &err) != LTFS_E_STATE ||
		    err.msg[0] == '\0')
			abort();
		if (ltx_decoder_finish(dec, &trailer, &err) != LTFS_E_STATE)
			abort();
	}
	ltx_decoder_free(dec);
	(void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	decode(data, size, LTX_VERSION_3);
	decode(data, size, LTX_VERSION_1);
	return 0;
}
