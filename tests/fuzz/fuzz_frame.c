/*
 * fuzz_frame.c - libFuzzer target for the replication stream's frame
 * parser (cluster/frame.c).
 *
 * A replica feeds the parser whatever the network delivers, split wherever
 * TCP split it. So each input is parsed three times: in one call, byte by
 * byte, and in pieces whose sizes come from a generator seeded by the
 * input. The handlers check the parser's contract as it runs (begin before
 * payload, payload only inside a frame and never past the announced
 * length, end only when all of it arrived, fields within their bounds) and
 * record a digest of everything they saw; the three digests, results and
 * messages must be equal, since a parse must not depend on the split.
 *
 * Handlers refuse names starting with '!' (in begin) and '?' (in end),
 * so the "a handler's error stops the parse" path is fuzzed too.
 *
 *   make fuzz FUZZ_TIME=120
 *   build-fuzz/fuzz-frame CRASH_FILE     replay one input
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

struct run {
	struct frame_parser fp;
	uint64_t digest;
	bool open;                 /* begin seen, end not yet */
	bool failed;               /* a handler returned an error */
	enum frame_type type;
	uint64_t announced, got;
	uint64_t begins, ends;
	char first;                /* of the current frame's name */
	struct ltfs_err err;
	int rc;
};

static void mix(struct run *r, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		r->digest = (r->digest ^ b[i]) * FNV_PRIME;
}

static int on_begin(void *ctx, enum frame_type type, const char *name,
		    uint64_t payload_len, struct ltfs_err *err)
{
	struct run *r = ctx;
	size_t nl = strlen(name);
	bool named = type == FRAME_LTX || type == FRAME_DROP;

	if (r->open || r->failed || frame_parser_idle(&r->fp))
		abort();
	if (type < FRAME_LTX || type > FRAME_END)
		abort();
	if (named ? nl == 0 || nl > FRAME_NAME_MAX : nl != 0)
		abort();
	/* the name is all the parser read: no NUL was let through */
	if (nl != r->fp.name_len)
		abort();
	if (type == FRAME_LTX &&
	    (payload_len < LTX_HEADER_SIZE + LTX_TRAILER_SIZE || payload_len > FRAME_LTX_MAX))
		abort();
	if ((type == FRAME_READY || type == FRAME_HEARTBEAT) && payload_len != 8)
		abort();
	if ((type == FRAME_DROP || type == FRAME_END) && payload_len != 0)
		abort();
	mix(r, "B", 1);
	mix(r, &type, sizeof(type));
	mix(r, name, nl + 1);
	mix(r, &payload_len, sizeof(payload_len));
	r->begins++;
	if (name[0] == '!') {
		r->failed = true;
		return ltfs_err_set(err, LTFS_E_STATE, "begin refuses '%s'", name);
	}
	r->open = true;
	r->type = type;
	r->announced = payload_len;
	r->got = 0;
	r->first = name[0];
	return 0;
}

static int on_payload(void *ctx, const uint8_t *p, size_t n, struct ltfs_err *err)
{
	struct run *r = ctx;

	(void)err;
	if (!r->open || r->failed || n == 0 || frame_parser_idle(&r->fp))
		abort();
	if (n > r->announced - r->got)
		abort();
	r->got += n;
	mix(r, p, n);
	return 0;
}

static int on_end(void *ctx, struct ltfs_err *err)
{
	struct run *r = ctx;

	if (!r->open || r->failed || r->got != r->announced)
		abort();
	r->open = false;
	r->ends++;
	mix(r, "E", 1);
	if (r->first == '?') {
		r->failed = true;
		return ltfs_err_set(err, -EIO, "end refuses a '?' name");
	}
	return 0;
}

static const struct frame_handlers handlers = {
	.begin = on_begin,
	.payload = on_payload,
	.end = on_end,
};

/* splitmix64: piece sizes that follow from the input alone */
static uint64_t next_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The offset a parser error names must lie within what was fed. */
static void check_error(const struct run *r, size_t fed)
{
	const char *at = strstr(r->err.msg, "stream offset ");
	unsigned long long off;

	if (r->err.code != r->rc || r->err.msg[0] == '\0')
		abort();
	if (r->failed) {
		if (r->rc != LTFS_E_STATE && r->rc != -EIO)
			abort();
		return;
	}
	if (r->rc != LTFS_E_CORRUPT && r->rc != LTFS_E_LIMIT)
		abort();
	if (!at || sscanf(at, "stream offset %llu:", &off) != 1 || off >= fed)
		abort();
}

/* step: 0 = one call, 1 = byte by byte, else random pieces seeded by step */
static void parse(struct run *r, const uint8_t *data, size_t size, uint64_t step)
{
	size_t off = 0, calls = 0;
	uint64_t seed = step;

	memset(r, 0, sizeof(*r));
	r->digest = FNV_OFFSET;
	frame_parser_init(&r->fp);
	if (!frame_parser_idle(&r->fp))
		abort();
	while (off < size || (off == 0 && size == 0)) {
		size_t n = size - off;

		if (step == 1)
			n = n ? 1 : 0;
		else if (step > 1) {
			uint64_t x = next_rand(&seed);

			/* mostly small pieces, some empty, some large */
			n = x % 8 == 0 ? 0 : x % 8 == 1 ? (size_t)(x >> 8) % 4096 : (size_t)(x >> 8) % 17;
			n = n < size - off ? n : size - off;
			/* empty pieces must not stall the run */
			if (++calls > 2 * size + 16)
				n = size - off;
		}
		r->rc = frame_parser_feed(&r->fp, data + off, n, &handlers, r, &r->err);
		off += n;
		if (r->rc < 0) {
			check_error(r, off);
			break;
		}
		if (r->rc != 0)
			abort();
		/* between calls, the parser and the handlers agree on "in a frame" */
		if (r->open && frame_parser_idle(&r->fp))
			abort();
		if (r->fp.offset != off || r->fp.frames != r->ends)
			abort();
		if (size == 0)
			break;
	}
	if (r->rc == 0 && r->failed)
		abort();
	mix(r, &r->rc, sizeof(r->rc));
	mix(r, r->err.msg, strlen(r->err.msg));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run whole, bytes, pieces;
	uint64_t seed = FNV_OFFSET;

	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * FNV_PRIME;
	parse(&whole, data, size, 0);
	parse(&bytes, data, size, 1);
	parse(&pieces, data, size, seed | 2);
	if (whole.digest != bytes.digest || whole.digest != pieces.digest ||
	    whole.rc != bytes.rc || whole.rc != pieces.rc ||
	    whole.begins != pieces.begins || whole.ends != bytes.ends ||
	    frame_parser_idle(&whole.fp) != frame_parser_idle(&bytes.fp) ||
	    frame_parser_idle(&whole.fp) != frame_parser_idle(&pieces.fp) ||
	    strcmp(whole.err.msg, bytes.err.msg) != 0)
		abort();
	return 0;
}
