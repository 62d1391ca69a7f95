/*
 * The replication stream's frame parser (cluster/frame.c) and the token
 * comparison. The parser reads bytes straight off a socket from another
 * node, so each refusal is checked for its code, the field it names and
 * the stream offset, and every result must not depend on how the bytes
 * were split.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>

#include "cluster/cluster.h"

#include "t.h"

#define STREAM_MAX 8192
#define LOG_MAX 16384

/* A stream being built by a test. */
struct stream {
	uint8_t b[STREAM_MAX];
	size_t len;
};

static void put_frame(struct stream *s, unsigned type, const char *name,
		      const uint8_t *payload, size_t plen)
{
	size_t nl = name ? strlen(name) : 0;

	if (s->len + FRAME_HEADER_SIZE + nl + plen > sizeof(s->b))
		t_fail(__FILE__, __LINE__, "test stream too small");
	frame_header_encode(s->b + s->len, (enum frame_type)type, nl, plen);
	s->len += FRAME_HEADER_SIZE;
	if (nl)
		memcpy(s->b + s->len, name, nl);
	s->len += nl;
	if (plen)
		memcpy(s->b + s->len, payload, plen);
	s->len += plen;
}

/* A raw header, for the values frame_header_encode cannot express. */
static void put_header(struct stream *s, uint8_t type, uint8_t flags,
		       uint16_t name_len, uint64_t payload_len)
{
	uint8_t *h = s->b + s->len;

	h[0] = type;
	h[1] = flags;
	ltx_put_be16(h + 2, name_len);
	ltx_put_be64(h + 4, payload_len);
	s->len += FRAME_HEADER_SIZE;
}

static void put_bytes(struct stream *s, const void *p, size_t n)
{
	memcpy(s->b + s->len, p, n);
	s->len += n;
}

/*
 * What the handlers saw, as text: "[TYPE NAME LEN|HEXPAYLOAD]" per frame,
 * so a stream fed in pieces must produce the very same log.
 */
struct rec {
	struct frame_parser *fp;
	char log[LOG_MAX];
	size_t len;
	bool open;             /* begin seen, end not yet */
	uint64_t announced, got;
	unsigned begins, ends, payloads;
	bool idle_in_frame;    /* frame_parser_idle() was true inside a frame */
	/* make a handler fail at its Nth call (1-based; 0 = never); kept by feed() */
	unsigned fail_begin, fail_payload, fail_end;
};

static void rec_add(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_add(struct rec *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(r->log) - r->len)
		t_fail(__FILE__, __LINE__, "handler log full");
	r->len += (size_t)n;
}

static int rec_begin(void *ctx, enum frame_type type, const char *name,
		     uint64_t payload_len, struct ltfs_err *err)
{
	struct rec *r = ctx;

	if (r->open)
		t_fail(__FILE__, __LINE__, "begin inside a frame");
	if (frame_parser_idle(r->fp))
		r->idle_in_frame = true;
	if (++r->begins == r->fail_begin)
		return ltfs_err_set(err, LTFS_E_STATE, "begin handler refuses '%s'", name);
	r->open = true;
	r->announced = payload_len;
	r->got = 0;
	rec_add(r, "[%u %s %llu|", (unsigned)type, name, (unsigned long long)payload_len);
	return 0;
}

static int rec_payload(void *ctx, const uint8_t *p, size_t n, struct ltfs_err *err)
{
	struct rec *r = ctx;

	if (!r->open)
		t_fail(__FILE__, __LINE__, "payload outside a frame");
	if (n == 0)
		t_fail(__FILE__, __LINE__, "empty payload call");
	if (frame_parser_idle(r->fp))
		r->idle_in_frame = true;
	if (++r->payloads == r->fail_payload)
		return ltfs_err_set(err, -EIO, "payload handler: disk full");
	r->got += n;
	if (r->got > r->announced)
		t_fail(__FILE__, __LINE__, "more payload than announced");
	for (size_t i = 0; i < n; i++)
		rec_add(r, "%02x", p[i]);
	return 0;
}

static int rec_end(void *ctx, struct ltfs_err *err)
{
	struct rec *r = ctx;

	if (!r->open)
		t_fail(__FILE__, __LINE__, "end outside a frame");
	if (r->got != r->announced)
		t_fail(__FILE__, __LINE__, "end after %llu of %llu payload bytes",
		       (unsigned long long)r->got, (unsigned long long)r->announced);
	r->open = false;
	if (++r->ends == r->fail_end)
		return ltfs_err_set(err, LTFS_E_TXID, "end handler: apply failed");
	rec_add(r, "]");
	return 0;
}

static const struct frame_handlers rec_handlers = {
	.begin = rec_begin,
	.payload = rec_payload,
	.end = rec_end,
};

/*
 * Feed s in pieces of `step` bytes (0 = all at once) until an error;
 * returns the rc and leaves the error in *err.
 */
static int feed(struct frame_parser *fp, struct rec *r, const struct stream *s,
		size_t step, struct ltfs_err *err)
{
	size_t off = 0;
	int rc = 0;

	frame_parser_init(fp);
	memset(r, 0, offsetof(struct rec, fail_begin));
	r->fp = fp;
	ltfs_err_clear(err);
	if (step == 0)
		return frame_parser_feed(fp, s->b, s->len, &rec_handlers, r, err);
	while (off < s->len && rc == 0) {
		size_t n = s->len - off < step ? s->len - off : step;

		rc = frame_parser_feed(fp, s->b + off, n, &rec_handlers, r, err);
		off += n;
	}
	return rc;
}

/* One frame of each type, with payloads that mark their bytes. */
static void every_type(struct stream *s, uint8_t *ltx, size_t ltx_len)
{
	uint8_t clock[8];

	for (size_t i = 0; i < ltx_len; i++)
		ltx[i] = (uint8_t)(i * 7 + 1);
	ltx_put_be64(clock, 0x0000019a2b3c4d5eull);
	put_frame(s, FRAME_LTX, "app.db", ltx, ltx_len);
	put_frame(s, FRAME_READY, NULL, clock, 8);
	put_frame(s, FRAME_HEARTBEAT, NULL, clock, 8);
	put_frame(s, FRAME_DROP, "sub/dir/old.db", NULL, 0);
	put_frame(s, FRAME_LTX, "b.db", ltx, LTX_HEADER_SIZE + LTX_TRAILER_SIZE);
	put_frame(s, FRAME_END, NULL, NULL, 0);
}

TEST(frame_header_encode_layout)
{
	uint8_t h[FRAME_HEADER_SIZE];
	static const uint8_t want[FRAME_HEADER_SIZE] = {
		1, 0, 0x0f, 0xbf, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
	};
	static const uint8_t end[FRAME_HEADER_SIZE] = { 5 };

	frame_header_encode(h, FRAME_LTX, FRAME_NAME_MAX, 0x0102030405060708ull);
	CHECK_MEM(h, want, sizeof(h));
	frame_header_encode(h, FRAME_END, 0, 0);
	CHECK_MEM(h, end, sizeof(h));
}

TEST(frame_parse_every_type_any_split)
{
	static struct stream s;
	static struct rec whole, piece;
	struct frame_parser fp;
	struct ltfs_err err;
	uint8_t ltx[300];
	char want[LOG_MAX];
	size_t n = 0;

	every_type(&s, ltx, sizeof(ltx));
	CHECK_OK(feed(&fp, &whole, &s, 0, &err), &err);
	CHECK_EQ(fp.frames, 6);
	CHECK_EQ(fp.offset, s.len);
	CHECK(frame_parser_idle(&fp));
	CHECK(!whole.open && !whole.idle_in_frame);
	CHECK_EQ(whole.begins, 6);
	CHECK_EQ(whole.ends, 6);

	/* what the handlers must have seen, spelled out */
	n += (size_t)snprintf(want + n, sizeof(want) - n, "[1 app.db 300|");
	for (size_t i = 0; i < sizeof(ltx); i++)
		n += (size_t)snprintf(want + n, sizeof(want) - n, "%02x", ltx[i]);
	n += (size_t)snprintf(want + n, sizeof(want) - n,
			      "][2  8|0000019a2b3c4d5e][3  8|0000019a2b3c4d5e]"
			      "[4 sub/dir/old.db 0|][1 b.db 116|");
	for (size_t i = 0; i < LTX_HEADER_SIZE + LTX_TRAILER_SIZE; i++)
		n += (size_t)snprintf(want + n, sizeof(want) - n, "%02x", ltx[i]);
	snprintf(want + n, sizeof(want) - n, "][5  0|]");
	CHECK_STR(whole.log, want);

	/* byte by byte, and in pieces that straddle every boundary */
	static const size_t steps[] = { 1, 2, 3, 5, 11, 12, 13, 64, 117 };
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		CHECK_OK(feed(&fp, &piece, &s, steps[i], &err), &err);
		CHECK_STR(piece.log, whole.log);
		CHECK_EQ(fp.frames, 6);
		CHECK_EQ(fp.offset, s.len);
		CHECK(!piece.idle_in_frame);
	}
	/* byte by byte, the payload arrives one byte per call */
	CHECK_OK(feed(&fp, &piece, &s, 1, &err), &err);
	CHECK_EQ(piece.payloads, sizeof(ltx) + 8 + 8 + LTX_HEADER_SIZE + LTX_TRAILER_SIZE);
}

TEST(frame_empty_feeds_change_nothing)
{
	static struct stream s;
	static struct rec r;
	struct frame_parser fp;
	struct ltfs_err err;
	uint8_t ltx[200];
	size_t half;

	every_type(&s, ltx, sizeof(ltx));
	half = 40; /* inside the first frame's payload */
	frame_parser_init(&fp);
	memset(&r, 0, sizeof(r));
	r.fp = &fp;
	CHECK_OK(frame_parser_feed(&fp, s.b, 0, &rec_handlers, &r, &err), &err);
	CHECK(frame_parser_idle(&fp));
	CHECK_EQ(r.len, 0);
	CHECK_OK(frame_parser_feed(&fp, s.b, half, &rec_handlers, &r, &err), &err);
	CHECK_OK(frame_parser_feed(&fp, s.b + half, 0, &rec_handlers, &r, &err), &err);
	CHECK_OK(frame_parser_feed(&fp, s.b + half, s.len - half, &rec_handlers, &r, &err), &err);
	CHECK_EQ(fp.frames, 6);
	CHECK(r.open == false && r.ends == 6);
}

TEST(frame_idle_only_between_frames)
{
	static struct stream s;
	static struct rec r;
	struct frame_parser fp;
	struct ltfs_err err;
	uint8_t ltx[150];
	size_t bounds[8], nb = 0, at = 0;

	/* frame boundaries of the stream, computed as it is built */
	every_type(&s, ltx, sizeof(ltx));
	{
		size_t sizes[] = {
			FRAME_HEADER_SIZE + 6 + sizeof(ltx), FRAME_HEADER_SIZE + 8,
			FRAME_HEADER_SIZE + 8, FRAME_HEADER_SIZE + 14,
			FRAME_HEADER_SIZE + 4 + LTX_HEADER_SIZE + LTX_TRAILER_SIZE,
			FRAME_HEADER_SIZE,
		};
		bounds[nb++] = 0;
		for (size_t i = 0; i < 6; i++) {
			at += sizes[i];
			bounds[nb++] = at;
		}
	}
	CHECK_EQ(at, s.len);
	frame_parser_init(&fp);
	memset(&r, 0, sizeof(r));
	r.fp = &fp;
	CHECK(frame_parser_idle(&fp));
	for (size_t off = 0, b = 1; off < s.len; off++) {
		bool boundary;

		CHECK_OK(frame_parser_feed(&fp, s.b + off, 1, &rec_handlers, &r, &err), &err);
		boundary = off + 1 == bounds[b];
		if (boundary)
			b++;
		if (frame_parser_idle(&fp) != boundary)
			t_fail(__FILE__, __LINE__, "after %zu bytes: idle %d, want %d", off + 1,
			       frame_parser_idle(&fp), boundary);
		/* the handlers' view agrees: a frame is open exactly when not idle */
		CHECK_EQ(r.open || fp.hdr_have > 0, !boundary);
	}
	CHECK(!r.idle_in_frame);
}

/* Parse s whole and byte by byte: the same error, at the same place. */
static int parse_error(const struct stream *s, struct ltfs_err *err,
		       unsigned *frames_ok)
{
	struct frame_parser fp;
	static struct rec whole, bytes;
	struct ltfs_err err1;
	int rc = feed(&fp, &whole, s, 0, err), rc1;

	*frames_ok = whole.ends;
	rc1 = feed(&fp, &bytes, s, 1, &err1);
	CHECK_EQ(rc1, rc);
	CHECK_STR(err1.msg, err->msg);
	CHECK_STR(bytes.log, whole.log);
	CHECK(!whole.open); /* refused before its begin() */
	return rc;
}

/* A refusal of the frame after a READY frame (20 bytes): its code, and
 * its message with the field and the stream offset. */
static void refuse(const struct stream *s, int code, const char *field,
		   const char *offset)
{
	struct ltfs_err err;
	unsigned ok;
	int rc = parse_error(s, &err, &ok);

	if (rc != code)
		t_fail(__FILE__, __LINE__, "rc %d (%s), want %d (%s): %s", rc, ltfs_strerror(rc),
		       code, ltfs_strerror(code), err.msg);
	CHECK_EQ(err.code, code);
	CHECK_EQ(ok, 1);
	if (!strstr(err.msg, field) || !strstr(err.msg, offset))
		t_fail(__FILE__, __LINE__, "message '%s' lacks '%s' or '%s'", err.msg, field,
		       offset);
}

static void after_ready(struct stream *s)
{
	uint8_t clock[8] = { 0 };

	s->len = 0;
	put_frame(s, FRAME_READY, NULL, clock, 8);
}

TEST(frame_refuses_bad_type_and_flags)
{
	static struct stream s;

	after_ready(&s);
	put_header(&s, 6, 0, 0, 0);
	refuse(&s, LTFS_E_CORRUPT, "frame type 6 is unknown", "stream offset 20:");
	after_ready(&s);
	put_header(&s, 0, 0, 0, 0);
	refuse(&s, LTFS_E_CORRUPT, "frame type 0 is unknown", "stream offset 20:");
	after_ready(&s);
	put_header(&s, 255, 0, 3, 8);
	refuse(&s, LTFS_E_CORRUPT, "frame type 255", "stream offset 20:");
	after_ready(&s);
	put_header(&s, FRAME_END, 0x80, 0, 0);
	refuse(&s, LTFS_E_CORRUPT, "end frame flags 128, want 0", "stream offset 21:");
	after_ready(&s);
	put_header(&s, FRAME_LTX, 1, 6, 200);
	refuse(&s, LTFS_E_CORRUPT, "ltx frame flags 1", "stream offset 21:");
}

TEST(frame_refuses_bad_name_length)
{
	static struct stream s;

	after_ready(&s);
	put_header(&s, FRAME_LTX, 0, 0, 200);
	refuse(&s, LTFS_E_CORRUPT, "ltx frame name length 0, want 1..4031", "stream offset 22:");
	after_ready(&s);
	put_header(&s, FRAME_DROP, 0, 0, 0);
	refuse(&s, LTFS_E_CORRUPT, "drop frame name length 0", "stream offset 22:");
	after_ready(&s);
	put_header(&s, FRAME_READY, 0, 3, 8);
	put_bytes(&s, "abc", 3);
	refuse(&s, LTFS_E_CORRUPT, "ready frame name length 3, want 0", "stream offset 22:");
	after_ready(&s);
	put_header(&s, FRAME_HEARTBEAT, 0, 1, 8);
	refuse(&s, LTFS_E_CORRUPT, "heartbeat frame name length 1, want 0", "stream offset 22:");
	after_ready(&s);
	put_header(&s, FRAME_END, 0, 1, 0);
	refuse(&s, LTFS_E_CORRUPT, "end frame name length 1, want 0", "stream offset 22:");
	/* over the maximum: refused from the header, before any name byte */
	after_ready(&s);
	put_header(&s, FRAME_LTX, 0, FRAME_NAME_MAX + 1, 200);
	refuse(&s, LTFS_E_CORRUPT, "ltx frame name length 4032, want 1..4031",
	       "stream offset 22:");
	after_ready(&s);
	put_header(&s, FRAME_DROP, 0, 0xffff, 0);
	refuse(&s, LTFS_E_CORRUPT, "drop frame name length 65535", "stream offset 22:");
}

TEST(frame_name_at_the_maximum)
{
	static struct stream s;
	static struct rec r;
	static char name[FRAME_NAME_MAX + 1];
	struct frame_parser fp;
	struct ltfs_err err;

	memset(name, 'n', FRAME_NAME_MAX);
	put_frame(&s, FRAME_DROP, name, NULL, 0);
	CHECK_OK(feed(&fp, &r, &s, 0, &err), &err);
	CHECK_EQ(r.ends, 1);
	CHECK_EQ(strlen(r.log), FRAME_NAME_MAX + 7); /* "[4 NAME 0|]" */
	CHECK_OK(feed(&fp, &r, &s, 1, &err), &err);
	CHECK_EQ(r.ends, 1);
}

TEST(frame_refuses_bad_payload_length)
{
	static struct stream s;

	after_ready(&s);
	put_header(&s, FRAME_READY, 0, 0, 7);
	refuse(&s, LTFS_E_CORRUPT, "ready frame payload length 7, want 8..8", "stream offset 24:");
	after_ready(&s);
	put_header(&s, FRAME_READY, 0, 0, 9);
	refuse(&s, LTFS_E_CORRUPT, "ready frame payload length 9", "stream offset 24:");
	after_ready(&s);
	put_header(&s, FRAME_HEARTBEAT, 0, 0, 0);
	refuse(&s, LTFS_E_CORRUPT, "heartbeat frame payload length 0, want 8..8",
	       "stream offset 24:");
	after_ready(&s);
	put_header(&s, FRAME_DROP, 0, 1, 1);
	refuse(&s, LTFS_E_CORRUPT, "drop frame payload length 1, want 0..0", "stream offset 24:");
	after_ready(&s);
	put_header(&s, FRAME_END, 0, 0, 8);
	refuse(&s, LTFS_E_CORRUPT, "end frame payload length 8, want 0..0", "stream offset 24:");
	/* an LTX file has at least a header and a trailer */
	after_ready(&s);
	put_header(&s, FRAME_LTX, 0, 6, LTX_HEADER_SIZE + LTX_TRAILER_SIZE - 1);
	refuse(&s, LTFS_E_CORRUPT, "ltx frame payload length 115, want 116..1099511627776",
	       "stream offset 24:");
	after_ready(&s);
	put_header(&s, FRAME_LTX, 0, 6, 0);
	refuse(&s, LTFS_E_CORRUPT, "ltx frame payload length 0", "stream offset 24:");
	/* and at most FRAME_LTX_MAX bytes: a limit, not corruption */
	after_ready(&s);
	put_header(&s, FRAME_LTX, 0, 6, FRAME_LTX_MAX + 1);
	refuse(&s, LTFS_E_LIMIT, "ltx frame payload length 1099511627777", "stream offset 24:");
	after_ready(&s);
	put_header(&s, FRAME_LTX, 0, 6, UINT64_MAX);
	refuse(&s, LTFS_E_LIMIT, "ltx frame payload length 18446744073709551615",
	       "stream offset 24:");
}

TEST(frame_ltx_at_the_maximum_is_accepted)
{
	static struct stream s;
	static struct rec r;
	struct frame_parser fp;
	struct ltfs_err err;
	uint8_t some[64] = { 0 };

	put_header(&s, FRAME_LTX, 0, 6, FRAME_LTX_MAX);
	put_bytes(&s, "app.db", 6);
	put_bytes(&s, some, sizeof(some));
	CHECK_OK(feed(&fp, &r, &s, 7, &err), &err);
	CHECK_EQ(r.begins, 1);
	CHECK_EQ(r.announced, FRAME_LTX_MAX);
	CHECK_EQ(r.got, sizeof(some));
	CHECK(r.open && r.ends == 0);
	CHECK(!frame_parser_idle(&fp));
}

TEST(frame_refuses_nul_in_name)
{
	static struct stream s;
	struct ltfs_err err;
	unsigned ok;

	after_ready(&s);
	put_header(&s, FRAME_LTX, 0, 7, LTX_HEADER_SIZE + LTX_TRAILER_SIZE);
	put_bytes(&s, "app\0.db", 7);
	/* the payload never reaches a handler */
	memset(s.b + s.len, 0xaa, LTX_HEADER_SIZE + LTX_TRAILER_SIZE);
	s.len += LTX_HEADER_SIZE + LTX_TRAILER_SIZE;
	refuse(&s, LTFS_E_CORRUPT, "frame name has a NUL byte", "stream offset 32:");

	/* a name that is all NUL, and a trailing NUL */
	after_ready(&s);
	put_header(&s, FRAME_DROP, 0, 1, 0);
	put_bytes(&s, "", 1);
	CHECK_RC(parse_error(&s, &err, &ok), LTFS_E_CORRUPT);
	CHECK(strstr(err.msg, "stream offset 32: frame name has a NUL byte") != NULL);
	after_ready(&s);
	put_header(&s, FRAME_DROP, 0, 3, 0);
	put_bytes(&s, "ab", 3);
	CHECK_RC(parse_error(&s, &err, &ok), LTFS_E_CORRUPT);
	CHECK(strstr(err.msg, "NUL") != NULL);
}

/* A handler's error stops the parse where it happened and comes back as is. */
TEST(frame_handler_error_stops_parsing)
{
	static struct stream s;
	static struct rec r;
	struct frame_parser fp;
	struct ltfs_err err;
	uint8_t ltx[200];
	static const size_t steps[] = { 0, 1, 9 };

	every_type(&s, ltx, sizeof(ltx));
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		/* the second begin: READY; nothing of it or after it is seen */
		memset(&r, 0, sizeof(r));
		r.fail_begin = 2;
		CHECK_RC(feed(&fp, &r, &s, steps[i], &err), LTFS_E_STATE);
		CHECK_EQ(err.code, LTFS_E_STATE);
		CHECK_STR(err.msg, "begin handler refuses ''");
		CHECK_EQ(r.begins, 2);
		CHECK_EQ(r.ends, 1);
		CHECK_EQ(r.payloads, steps[i] == 1 ? sizeof(ltx) : steps[i] == 0 ? 1 : 23);
		CHECK_EQ(fp.frames, 1);
		CHECK(!frame_parser_idle(&fp));

		/* the first payload call */
		memset(&r, 0, sizeof(r));
		r.fail_payload = 1;
		CHECK_RC(feed(&fp, &r, &s, steps[i], &err), -EIO);
		CHECK_STR(err.msg, "payload handler: disk full");
		CHECK_EQ(r.begins, 1);
		CHECK_EQ(r.payloads, 1);
		CHECK_EQ(r.got, 0);
		CHECK_EQ(r.ends, 0);
		CHECK_EQ(fp.frames, 0);

		/* the fourth end: DROP; the LTX and END after it never begin */
		memset(&r, 0, sizeof(r));
		r.fail_end = 4;
		CHECK_RC(feed(&fp, &r, &s, steps[i], &err), LTFS_E_TXID);
		CHECK_STR(err.msg, "end handler: apply failed");
		CHECK_EQ(r.begins, 4);
		CHECK_EQ(r.ends, 4);
		CHECK(strstr(r.log, "b.db") == NULL);
	}
}

TEST(frame_token_equal)
{
	CHECK(cluster_token_equal("secret", "secret"));
	CHECK(cluster_token_equal("s", "s"));
	CHECK(!cluster_token_equal("secreT", "secret"));
	CHECK(!cluster_token_equal("xecret", "secret"));
	/* a prefix either way */
	CHECK(!cluster_token_equal("secre", "secret"));
	CHECK(!cluster_token_equal("secretsecret", "secret"));
	CHECK(!cluster_token_equal("secret ", "secret"));
	CHECK(!cluster_token_equal("", "secret"));
	/* no configured token matches nothing, not even nothing */
	CHECK(!cluster_token_equal("", ""));
	CHECK(!cluster_token_equal("secret", ""));
}
