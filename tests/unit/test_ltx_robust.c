/*
 * Robustness of the streaming LTX decoder against damaged input.
 *
 * Every valid fixture under tests/data is cut at every length, has single
 * bits flipped, gets bytes appended, is read through short-reading and
 * failing sources, and random garbage behind a valid header is fed in. Each
 * damaged input must be refused with a negative code and a message, and
 * nothing may crash: these tests also run under ASan and UBSan, which turn
 * any out-of-bounds access into a failure. The only damage allowed to pass
 * is described at flip_may_pass().
 *
 * Everything random comes from a seeded PRNG, so a failure reproduces.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <unistd.h>

#include "t.h"

#define FIX_MAX 64
#define FRAME_MAX 64  /* frames remembered per decode; fixtures have <= 9 */
#define FIX_MIN 23    /* valid fixtures the README lists */

/* Fixture directories and the format each holds (v1 cannot be detected
 * from a stream, so the memory decodes are told). */
static const struct {
	const char *dir;
	enum ltx_version version;
} fix_dirs[] = {
	{ "v3-block/chain-checksum", LTX_VERSION_3 },
	{ "v3-block/chain-checksum/compacted", LTX_VERSION_3 },
	{ "v3-block/chain-nochecksum", LTX_VERSION_3 },
	{ "v3-block/chain-nochecksum/compacted", LTX_VERSION_3 },
	{ "v3-block/edge", LTX_VERSION_3 },
	{ "v3-block/handmade", LTX_VERSION_3 },
	{ "v3-frame", LTX_VERSION_3 },
	{ "v1/lz4", LTX_VERSION_1 },
	{ "v1/uncompressed", LTX_VERSION_1 },
};

/* What one decode produced: enough to tell "same database content". */
struct dec_out {
	int rc;
	struct ltfs_err err;
	uint8_t header[LTX_HEADER_SIZE]; /* re-encoded from the parsed header */
	struct ltx_trailer trailer;
	uint32_t npages;
	uint64_t digest; /* CRC-64 over be32(pgno) ‖ page, for every page */
	uint64_t index_off;
	uint32_t nframes;
	struct ltx_frame_info frames[FRAME_MAX];
};

struct fixture {
	char rel[256];
	enum ltx_version version;
	uint8_t *data;
	size_t len;
	struct dec_out clean; /* the undamaged decode, for comparisons */
};

static uint64_t rnd_next(uint64_t *s)
{
	/* splitmix64: tiny, and good enough to spread test cases. */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static size_t rnd_below(uint64_t *s, size_t n)
{
	return n ? (size_t)(rnd_next(s) % n) : 0;
}

static void rnd_fill(uint64_t *s, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd_next(s);
}

static void failf(int line, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

static void failf(int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	t_fail(__FILE__, line, "%s", msg);
}

/* Decode a whole stream: open, every page, finish. */
static int decode_src(ltx_read_fn rd, void *ctx, enum ltx_version version,
		      struct dec_out *out)
{
	struct ltx_decoder_opts opts = { .version = version };
	struct ltx_decoder *dec;
	const uint8_t *page;
	uint32_t pgno, page_size;
	uint8_t be[4];
	int rc;

	memset(out, 0, sizeof(*out));
	rc = ltx_decoder_open(&dec, rd, ctx, &opts, &out->err);
	if (rc < 0)
		return out->rc = rc;
	CHECK(dec != NULL);
	ltx_header_encode(ltx_decoder_header(dec), out->header);
	page_size = ltx_decoder_header(dec)->page_size;
	while ((rc = ltx_decoder_next(dec, &pgno, &page, &out->err)) == 1) {
		ltx_put_be32(be, pgno);
		out->digest = ltx_crc64(out->digest, be, 4);
		out->digest = ltx_crc64(out->digest, page, page_size);
		if (out->nframes < FRAME_MAX)
			ltx_decoder_frame_info(dec, &out->frames[out->nframes++]);
		out->npages++;
	}
	if (rc == 0)
		rc = ltx_decoder_finish(dec, &out->trailer, &out->err);
	if (rc == 0)
		out->index_off = ltx_decoder_index_offset(dec);
	ltx_decoder_free(dec);
	return out->rc = rc;
}

static int decode_mem(const uint8_t *p, size_t n, enum ltx_version version,
		      struct dec_out *out)
{
	struct ltx_mem_source src = { .data = p, .len = n, .pos = 0 };

	return decode_src(ltx_read_mem, &src, version, out);
}

/* ltx_verify_fd() detects the format itself, as callers on disk do. */
static int decode_fd(int fd, struct dec_out *out)
{
	struct ltx_header h;

	memset(out, 0, sizeof(*out));
	out->rc = ltx_verify_fd(fd, &h, &out->trailer, &out->err);
	if (out->rc == 0)
		ltx_header_encode(&h, out->header);
	return out->rc;
}

static bool known_code(int rc)
{
	return rc == LTFS_E_CORRUPT || rc == LTFS_E_CHECKSUM ||
	       rc == LTFS_E_TRUNCATED || rc == LTFS_E_FORMAT;
}

/*
 * A refusal must be a format error (not ENOMEM, not a usage error), carry
 * the same code in err, and say something: operators only see the message.
 */
static void expect_rejected(const struct dec_out *o, int line,
			    const char *fmt, ...) LTFS_PRINTF(3, 4);

static void expect_rejected(const struct dec_out *o, int line,
			    const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (o->rc >= 0)
		failf(line, "%s: decoded without error (rc %d)", what, o->rc);
	if (!known_code(o->rc))
		failf(line, "%s: unexpected code %d (%s): %s", what, o->rc,
		      ltfs_strerror(o->rc), o->err.msg);
	if (o->err.msg[0] == '\0')
		failf(line, "%s: code %d (%s) without a message", what, o->rc,
		      ltfs_strerror(o->rc));
	if (o->err.code != o->rc)
		failf(line, "%s: returned %d but err.code is %d (%s)", what,
		      o->rc, o->err.code, o->err.msg);
}

static bool same_content(const struct dec_out *a, const struct dec_out *b)
{
	return a->npages == b->npages && a->digest == b->digest &&
	       memcmp(a->header, b->header, LTX_HEADER_SIZE) == 0 &&
	       a->trailer.post_apply_checksum == b->trailer.post_apply_checksum &&
	       a->trailer.file_checksum == b->trailer.file_checksum;
}

static bool v1_lz4_body(const struct fixture *fx)
{
	return fx->version == LTX_VERSION_1 &&
	       (ltx_get_be32(fx->data + 4) & LTX_HEADER_FLAG_COMPRESS_LZ4);
}

/* Bytes of a format-3 page header: pgno, flags and, for blocks, the size. */
static uint64_t frame_hdr_len(const struct ltx_frame_info *fi)
{
	return (fi->flags & LTX_PAGE_FLAG_SIZE) ? 10 : 6;
}

/* True if [from, to) lies inside one LZ4 payload of the fixture. */
static bool in_payload(const struct fixture *fx, size_t from, size_t to)
{
	if (v1_lz4_body(fx))
		return from >= LTX_HEADER_SIZE && to <= fx->len - LTX_TRAILER_SIZE;
	if (fx->version != LTX_VERSION_3)
		return false;
	for (uint32_t i = 0; i < fx->clean.nframes; i++) {
		const struct ltx_frame_info *fi = &fx->clean.frames[i];

		if (from >= fi->offset + frame_hdr_len(fi) &&
		    to <= fi->offset + fi->size)
			return true;
	}
	return false;
}

/*
 * Damage to [from, to) that still decodes is acceptable only where the
 * format cannot see it, and only if it changes nothing.
 *
 * Every byte of an LTX file is hashed into the file checksum, or compared
 * with what the decoder computed (index, file checksum), except the LZ4
 * payloads: the checksum covers the decoded page instead, as the reference
 * implementation does. So a change inside a payload that decodes to the
 * same page bytes is invisible, and harmless, since the database it yields
 * is identical. The fixtures have two kinds of such single-bit flips:
 *   - a match offset that now points at other, identical bytes (SQLite
 *     pages are full of zero and 0xff runs, where offset 1 and 2 copy the
 *     same thing), and
 *   - the match-length nibble of a block's last token: the last sequence
 *     holds literals only, so LZ4 never reads that nibble.
 * An LZ4 frame's header (magic, FLG, BD, HC) is part of the payload too,
 * but its 8-bit header checksum makes an accepted flip there a 1-in-256
 * event that must still give the same pages.
 *
 * Anything else that decodes, or any payload change that alters a page,
 * is a decoder bug.
 */
static void flip_may_pass(const struct fixture *fx, const struct dec_out *o,
			  size_t from, size_t to, int line, const char *what)
{
	if (!in_payload(fx, from, to))
		failf(line, "%s: %s at [%zu, %zu) decoded without error, outside any LZ4 payload",
		      fx->rel, what, from, to);
	if (!same_content(o, &fx->clean))
		failf(line, "%s: %s at [%zu, %zu) decoded without error to different content (pages %u vs %u)",
		      fx->rel, what, from, to, o->npages, fx->clean.npages);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Load one directory's *.ltx files, sorted, so runs are reproducible. */
static void load_dir(struct fixture *fx, int *n, const char *dir,
		     enum ltx_version version)
{
	char path[4096], *names[FIX_MAX];
	struct dirent *de;
	int count = 0;
	DIR *d;

	d = opendir(t_data_path(path, sizeof(path), dir));
	if (!d)
		failf(__LINE__, "opendir '%s': %s", path, strerror(errno));
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);

		if (l < 5 || strcmp(de->d_name + l - 4, ".ltx") != 0)
			continue;
		CHECK(count < FIX_MAX);
		names[count] = strdup(de->d_name);
		CHECK(names[count] != NULL);
		count++;
	}
	closedir(d);
	if (count == 0)
		failf(__LINE__, "no .ltx fixtures in '%s'", path);
	qsort(names, (size_t)count, sizeof(names[0]), cmp_str);
	for (int i = 0; i < count; i++) {
		struct fixture *f;

		CHECK(*n < FIX_MAX);
		f = &fx[(*n)++];
		snprintf(f->rel, sizeof(f->rel), "%s/%s", dir, names[i]);
		f->version = version;
		f->data = t_read_file(t_data_path(path, sizeof(path), f->rel),
				      &f->len);
		free(names[i]);
	}
}

/*
 * Every valid fixture, each decoded once cleanly from memory: every test
 * starts from "this decodes", so a damaged-input failure is never a
 * damaged fixture.
 */
static struct fixture *load_fixtures(int *n)
{
	struct fixture *fx = calloc(FIX_MAX, sizeof(*fx));

	CHECK(fx != NULL);
	*n = 0;
	for (size_t i = 0; i < sizeof(fix_dirs) / sizeof(fix_dirs[0]); i++)
		load_dir(fx, n, fix_dirs[i].dir, fix_dirs[i].version);
	CHECK(*n >= FIX_MIN);
	for (int i = 0; i < *n; i++) {
		struct dec_out *o = &fx[i].clean;

		if (decode_mem(fx[i].data, fx[i].len, fx[i].version, o) < 0)
			failf(__LINE__, "%s: clean decode: %d (%s): %s",
			      fx[i].rel, o->rc, ltfs_strerror(o->rc), o->err.msg);
		CHECK(o->nframes < FRAME_MAX);
	}
	return fx;
}

static void free_fixtures(struct fixture *fx, int n)
{
	for (int i = 0; i < n; i++)
		free(fx[i].data);
	free(fx);
}

/* A private copy of a fixture on disk, for the fd entry points. */
static int open_copy(const struct fixture *fx)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/copy.ltx", t_tmpdir());
	t_write_file(path, fx->data, fx->len);
	fd = open(path, O_RDWR);
	if (fd < 0)
		failf(__LINE__, "open '%s': %s", path, strerror(errno));
	return fd;
}

static void pwrite_byte(int fd, size_t off, uint8_t b)
{
	if (pwrite(fd, &b, 1, (off_t)off) != 1)
		failf(__LINE__, "pwrite at %zu: %s", off, strerror(errno));
}

/*
 * Bytes whose damage is checked with every bit: the header, each page
 * header with the first and last bytes of its payload, the end marker,
 * the index and the trailer. The rest is page content, where one bit per
 * byte already walks every LZ4 token, offset and literal.
 */
static uint8_t *structure_map(const struct fixture *fx)
{
	const struct dec_out *c = &fx->clean;
	uint8_t *map = calloc(1, fx->len);
	size_t len = fx->len;

#define MARK(from, to)                                                        \
	do {                                                                  \
		size_t f_ = (from), t_ = (to);                                \
		for (size_t k_ = f_; k_ < t_ && k_ < len; k_++)               \
			map[k_] = 1;                                          \
	} while (0)

	CHECK(map != NULL);
	MARK(0, LTX_HEADER_SIZE);
	MARK(len - LTX_TRAILER_SIZE, len);
	if (fx->version == LTX_VERSION_3) {
		for (uint32_t i = 0; i < c->nframes; i++) {
			const struct ltx_frame_info *fi = &c->frames[i];
			size_t end = (size_t)(fi->offset + fi->size);

			MARK(fi->offset, fi->offset + frame_hdr_len(fi) + 32);
			MARK(end > 32 ? end - 32 : 0, end);
		}
		/* End marker (6 zero bytes), index, its size field. */
		MARK(c->index_off - 6, len);
	} else if (v1_lz4_body(fx)) {
		/* LZ4 frame header and first block header; end mark and
		 * content checksum. */
		MARK(LTX_HEADER_SIZE, LTX_HEADER_SIZE + 32);
		MARK(len - LTX_TRAILER_SIZE - 64, len);
	} else {
		uint32_t ps = ltx_get_be32(fx->data + 8);

		for (uint32_t i = 0; i < c->nframes; i++) {
			size_t off = (size_t)c->frames[i].offset;

			MARK(off, off + 4 + 32);
			MARK(off + 4 + ps - 32, off + 4 + ps);
		}
		MARK(len - LTX_TRAILER_SIZE - 4, len);
	}
#undef MARK
	return map;
}

/*
 * Whether to try offset `off`: all of a small file and all of the
 * structure, every stride-th byte of page content in large files (the
 * stride is odd, so the rotating bit index still visits all eight bits).
 * This keeps the run short under ASan, where each decode costs more.
 */
static bool try_offset(const struct fixture *fx, const uint8_t *map,
		       size_t off, unsigned stride)
{
	return fx->len <= 4096 || map[off] || off % stride == 0;
}

/* ------------------------------------------------------------------------
 * Clean decodes: memory source, verify_fd, detection
 */

TEST(robust_fixtures_decode)
{
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];
		struct dec_out o;
		enum ltx_version v = LTX_VERSION_AUTO;
		struct ltfs_err err = { 0 };
		char path[4096];
		int fd;

		/* Page count matches the frames; the deletion file has none. */
		CHECK_EQ(f->clean.npages, f->clean.nframes);
		CHECK(f->clean.npages > 0 ||
		      ltx_get_be32(f->data + 12) == 0);
		if (f->version == LTX_VERSION_3) {
			for (uint32_t k = 0; k < f->clean.nframes; k++) {
				const struct ltx_frame_info *fi = &f->clean.frames[k];

				CHECK_EQ(fi->size, frame_hdr_len(fi) + fi->payload);
			}
		}

		/* Format 3 and LZ4 format 1 announce themselves in the
		 * header; an uncompressed format-1 file cannot. */
		if (f->version == LTX_VERSION_3 || v1_lz4_body(f)) {
			decode_mem(f->data, f->len, LTX_VERSION_AUTO, &o);
			if (o.rc < 0)
				failf(__LINE__, "%s: auto: %s", f->rel, o.err.msg);
			CHECK(same_content(&o, &f->clean));
		}

		fd = open(t_data_path(path, sizeof(path), f->rel), O_RDONLY);
		CHECK(fd >= 0);
		CHECK_OK(ltx_detect_version_fd(fd, &v, &err), &err);
		if (v != f->version)
			failf(__LINE__, "%s: detected version %d, want %d",
			      f->rel, v, f->version);
		if (decode_fd(fd, &o) < 0)
			failf(__LINE__, "%s: ltx_verify_fd: %d (%s): %s", f->rel,
			      o.rc, ltfs_strerror(o.rc), o.err.msg);
		CHECK_MEM(o.header, f->clean.header, LTX_HEADER_SIZE);
		CHECK_EQ(o.trailer.post_apply_checksum,
			 f->clean.trailer.post_apply_checksum);
		CHECK_EQ(o.trailer.file_checksum, f->clean.trailer.file_checksum);
		close(fd);
	}
	free_fixtures(fx, n);
}

/* ------------------------------------------------------------------------
 * Truncation: every proper prefix must fail
 */

TEST(robust_truncate_mem)
{
	char bad[1024] = "";
	int n, nbad = 0;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];

		for (size_t len = 0; len < f->len; len++) {
			/* An exact-size heap copy, so ASan sees any read
			 * past the prefix. */
			uint8_t *p = malloc(len ? len : 1);
			struct dec_out o;

			CHECK(p != NULL);
			memcpy(p, f->data, len);
			decode_mem(p, len, f->version, &o);
			expect_rejected(&o, __LINE__, "%s cut to %zu of %zu bytes",
					f->rel, len, f->len);
			/* The format is known here, so a short file must be
			 * called short: callers retry an incomplete download
			 * but quarantine a corrupt one. Counted, not fatal at
			 * once, so the crash checks still see every input. */
			if (o.rc != LTFS_E_TRUNCATED && nbad++ == 0)
				snprintf(bad, sizeof(bad), "%s cut to %zu of %zu bytes: code %d (%s): %s",
					 f->rel, len, f->len, o.rc,
					 ltfs_strerror(o.rc), o.err.msg);
			free(p);
		}
	}
	free_fixtures(fx, n);
	if (nbad)
		failf(__LINE__, "%d truncations not reported as %s; first: %s",
		      nbad, ltfs_strerror(LTFS_E_TRUNCATED), bad);
}

TEST(robust_truncate_fd)
{
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];
		uint8_t *map = structure_map(f);
		int fd = open_copy(f);

		/* Downwards, so each step is one ftruncate. Every length
		 * was tried from memory above; here detection matters, and
		 * it looks at the header and the tail. */
		for (size_t len = f->len; len-- > 0;) {
			enum ltx_version v = LTX_VERSION_AUTO;
			struct ltfs_err err = { 0 };
			struct dec_out o;
			int rc;

			if (!try_offset(f, map, len, 7))
				continue;
			if (ftruncate(fd, (off_t)len) != 0)
				failf(__LINE__, "ftruncate: %s", strerror(errno));
			/* Detection on a damaged file may fail or guess,
			 * but must say why when it fails. */
			rc = ltx_detect_version_fd(fd, &v, &err);
			if (rc < 0)
				CHECK(err.msg[0] != '\0');
			else
				CHECK(v == LTX_VERSION_1 || v == LTX_VERSION_3);
			decode_fd(fd, &o);
			expect_rejected(&o, __LINE__, "%s (fd) cut to %zu of %zu bytes",
					f->rel, len, f->len);
		}
		close(fd);
		free(map);
	}
	free_fixtures(fx, n);
}

/* ------------------------------------------------------------------------
 * Single-bit flips
 */

TEST(robust_bitflip_mem)
{
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];
		uint8_t *map = structure_map(f);
		uint8_t *buf = malloc(f->len);

		CHECK(buf != NULL);
		memcpy(buf, f->data, f->len);
		for (size_t off = 0; off < f->len; off++) {
			/* One bit per byte, rotating; all eight where the
			 * structure lives. Large files: page content with a
			 * stride. */
			unsigned first = map[off] ? 0 : (unsigned)(off % 8);
			unsigned last = map[off] ? 7 : first;

			if (!try_offset(f, map, off, 3))
				continue;
			for (unsigned bit = first; bit <= last; bit++) {
				struct dec_out o;

				buf[off] ^= (uint8_t)(1u << bit);
				decode_mem(buf, f->len, f->version, &o);
				buf[off] ^= (uint8_t)(1u << bit);
				if (o.rc >= 0) {
					flip_may_pass(f, &o, off, off + 1,
						      __LINE__, "bit flip");
					continue;
				}
				expect_rejected(&o, __LINE__, "%s: bit %u of byte %zu flipped",
						f->rel, bit, off);
			}
		}
		CHECK_MEM(buf, f->data, f->len);
		free(buf);
		free(map);
	}
	free_fixtures(fx, n);
}

/*
 * The same through ltx_verify_fd(), which also runs format detection on
 * the damaged file: structure fully, page content with a wider stride.
 */
TEST(robust_bitflip_fd)
{
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];
		uint8_t *map = structure_map(f);
		int fd = open_copy(f);

		for (size_t off = 0; off < f->len; off++) {
			unsigned bit = (unsigned)((off * 3) % 8);
			uint8_t b = f->data[off];
			struct dec_out o;

			if (!try_offset(f, map, off, 11))
				continue;
			pwrite_byte(fd, off, (uint8_t)(b ^ (1u << bit)));
			decode_fd(fd, &o);
			pwrite_byte(fd, off, b);
			if (o.rc >= 0) {
				uint8_t *buf = malloc(f->len);
				struct dec_out m;

				/* verify_fd gives no pages: judge the
				 * same damage through memory. */
				CHECK(buf != NULL);
				memcpy(buf, f->data, f->len);
				buf[off] ^= (uint8_t)(1u << bit);
				decode_mem(buf, f->len, f->version, &m);
				free(buf);
				if (m.rc < 0)
					failf(__LINE__, "%s: bit %u of byte %zu: verify_fd accepts, memory decode refuses: %s",
					      f->rel, bit, off, m.err.msg);
				flip_may_pass(f, &m, off, off + 1, __LINE__,
					      "bit flip (fd)");
				CHECK_MEM(o.header, m.header, LTX_HEADER_SIZE);
				CHECK_EQ(o.trailer.file_checksum,
					 m.trailer.file_checksum);
				continue;
			}
			expect_rejected(&o, __LINE__, "%s (fd): bit %u of byte %zu flipped",
					f->rel, bit, off);
		}
		close(fd);
		free(map);
	}
	free_fixtures(fx, n);
}

/* ------------------------------------------------------------------------
 * Bytes after the trailer
 */

TEST(robust_append_garbage)
{
	static const uint8_t fills[] = { 0x00, 0xff, 0x5a };
	uint64_t seed = 0xa99e4d;
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];
		uint8_t *buf = malloc(f->len + 3);

		CHECK(buf != NULL);
		memcpy(buf, f->data, f->len);
		for (size_t extra = 1; extra <= 3; extra++) {
			for (size_t k = 0; k <= sizeof(fills); k++) {
				char path[4096];
				struct dec_out o;
				int fd;

				/* Constant bytes (zeros look like padding),
				 * then random ones. */
				if (k < sizeof(fills))
					memset(buf + f->len, fills[k], extra);
				else
					rnd_fill(&seed, buf + f->len, extra);
				decode_mem(buf, f->len + extra, f->version, &o);
				expect_rejected(&o, __LINE__, "%s + %zu bytes 0x%02x",
						f->rel, extra, buf[f->len]);
				if (!strstr(o.err.msg, "after the trailer"))
					failf(__LINE__, "%s + %zu bytes: message does not say \"after the trailer\": %s",
					      f->rel, extra, o.err.msg);

				snprintf(path, sizeof(path), "%s/long.ltx",
					 t_tmpdir());
				t_write_file(path, buf, f->len + extra);
				fd = open(path, O_RDONLY);
				CHECK(fd >= 0);
				decode_fd(fd, &o);
				close(fd);
				expect_rejected(&o, __LINE__, "%s (fd) + %zu bytes 0x%02x",
						f->rel, extra, buf[f->len]);
			}
		}
		free(buf);
	}
	free_fixtures(fx, n);
}

/* ------------------------------------------------------------------------
 * Random garbage behind a valid header
 */

/*
 * Four shapes, all starting with a fixture's valid header so the decoder
 * gets past open():
 *   0: header + random bytes;
 *   1: header + a plausible page header (page in range, flag 0 or 1, small
 *      size) + random bytes, to reach the LZ4 decoders;
 *   2: a random prefix of the fixture + random bytes;
 *   3: the whole fixture with a random run of 1..16 bytes overwritten.
 * Shape 3 may pass under the rules of flip_may_pass(); the others never can
 * short of a CRC-64 collision.
 */
TEST(robust_random_garbage)
{
	enum { ROUNDS = 8000, TAIL_MAX = 1024 };
	uint64_t seed = 0x1f2e3d4c5b6a7988ull;
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int r = 0; r < ROUNDS; r++) {
		const struct fixture *f = &fx[rnd_below(&seed, (size_t)n)];
		int shape = (int)rnd_below(&seed, 4);
		size_t len, pre, tail = 1 + rnd_below(&seed, TAIL_MAX);
		size_t from = 0, to = 0;
		uint8_t *buf;

		if (shape == 3) {
			size_t run = 1 + rnd_below(&seed, 16);

			len = f->len;
			buf = malloc(len);
			CHECK(buf != NULL);
			memcpy(buf, f->data, len);
			if (run > len)
				run = len;
			from = rnd_below(&seed, len - run + 1);
			rnd_fill(&seed, buf + from, run);
			/* Only the bytes that really changed count. */
			to = from + run;
			while (from < to && buf[from] == f->data[from])
				from++;
			while (to > from && buf[to - 1] == f->data[to - 1])
				to--;
			if (from == to) {
				buf[from] ^= 1;
				to = from + 1;
			}
		} else {
			pre = LTX_HEADER_SIZE;
			if (shape == 2)
				pre += rnd_below(&seed, f->len - LTX_HEADER_SIZE);
			len = pre + tail + (shape == 1 ? 10 : 0);
			buf = malloc(len);
			CHECK(buf != NULL);
			memcpy(buf, f->data, pre);
			rnd_fill(&seed, buf + pre, len - pre);
			if (shape == 1) {
				uint32_t commit = ltx_get_be32(f->data + 12);

				ltx_put_be32(buf + pre, commit
					     ? 1 + (uint32_t)rnd_below(&seed, commit)
					     : 1);
				ltx_put_be16(buf + pre + 4,
					     (uint16_t)rnd_below(&seed, 2));
				ltx_put_be32(buf + pre + 6,
					     1 + (uint32_t)rnd_below(&seed, tail));
			}
		}
		for (int k = 0; k < 2; k++) {
			enum ltx_version v = k ? LTX_VERSION_1 : LTX_VERSION_3;
			struct dec_out o;

			decode_mem(buf, len, v, &o);
			if (o.rc >= 0 && shape == 3 && v == f->version) {
				flip_may_pass(f, &o, from, to, __LINE__,
					      "random overwrite");
				continue;
			}
			expect_rejected(&o, __LINE__, "round %d (shape %d, %s, %zu bytes) as format %d",
					r, shape, f->rel, len, v);
		}
		free(buf);
	}
	free_fixtures(fx, n);
}

/* ------------------------------------------------------------------------
 * Hostile sources: short reads, read errors, a source that lies
 */

struct chunk_source {
	struct ltx_mem_source mem;
	size_t chunk;   /* 0: a random size per read */
	uint64_t seed;
	size_t fail_at; /* reads at or past this offset fail with -EIO */
	bool overrun;   /* claim one byte more than asked */
};

static ssize_t chunk_read(void *ctx, void *p, size_t n)
{
	struct chunk_source *s = ctx;
	size_t want = s->chunk ? s->chunk : 1 + rnd_below(&s->seed, 300);
	size_t asked = n;

	if (s->mem.pos >= s->fail_at)
		return -EIO;
	if (n > want)
		n = want;
	if (n > s->fail_at - s->mem.pos)
		n = s->fail_at - s->mem.pos;
	if (s->overrun) {
		(void)ltx_read_mem(&s->mem, p, n);
		return (ssize_t)(asked + 1);
	}
	return ltx_read_mem(&s->mem, p, n);
}

/* A source may return fewer bytes than asked: the result must not change. */
TEST(robust_short_reads)
{
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];

		for (size_t chunk = 0; chunk <= 7; chunk++) {
			struct chunk_source s = {
				.mem = { .data = f->data, .len = f->len },
				.chunk = chunk,
				.seed = chunk + 77,
				.fail_at = SIZE_MAX,
			};
			struct dec_out o;

			if (chunk > 3 && chunk != 7)
				continue; /* 0 (random), 1, 2, 3, 7 */
			if (decode_src(chunk_read, &s, f->version, &o) < 0)
				failf(__LINE__, "%s: %zu-byte reads: %s", f->rel,
				      chunk, o.err.msg);
			if (!same_content(&o, &f->clean))
				failf(__LINE__, "%s: %zu-byte reads change the content",
				      f->rel, chunk);
			CHECK_EQ(o.index_off, f->clean.index_off);
			for (uint32_t k = 0; k < o.nframes; k++) {
				CHECK_EQ(o.frames[k].offset, f->clean.frames[k].offset);
				CHECK_EQ(o.frames[k].size, f->clean.frames[k].size);
				CHECK_EQ(o.frames[k].checksum,
					 f->clean.frames[k].checksum);
			}
		}
	}
	free_fixtures(fx, n);
}

/*
 * A read error at any offset must come back as that error, with a message:
 * never success (the decoder must read to the end to see there is nothing
 * after the trailer) and never a format error, which would blame the file
 * for a failing disk or network.
 */
TEST(robust_read_errors)
{
	char bad[1024] = "";
	int n, nbad = 0;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];

		for (size_t at = 0; at <= f->len; at++) {
			struct chunk_source s = {
				.mem = { .data = f->data, .len = f->len },
				.chunk = 64,
				.fail_at = at,
			};
			struct dec_out o;

			/* Every offset near the structure, a stride in
			 * large page content. */
			if (at > 512 && f->len - at > 512 && at % 29 != 0)
				continue;
			decode_src(chunk_read, &s, f->version, &o);
			if (o.rc >= 0)
				failf(__LINE__, "%s: read error at %zu ignored",
				      f->rel, at);
			CHECK(o.err.msg[0] != '\0');
			/* Counted, so every offset is still tried. */
			if (o.rc != -EIO && nbad++ == 0)
				snprintf(bad, sizeof(bad), "%s: read error at %zu: got %d (%s): %s",
					 f->rel, at, o.rc, ltfs_strerror(o.rc),
					 o.err.msg);
		}
	}
	free_fixtures(fx, n);
	if (nbad)
		failf(__LINE__, "%d read errors not reported as -EIO; first: %s",
		      nbad, bad);
}

/* A source that claims more bytes than it was given room for is broken;
 * the decoder must not trust the count. */
TEST(robust_lying_source)
{
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		struct chunk_source s = {
			.mem = { .data = fx[i].data, .len = fx[i].len },
			.chunk = SIZE_MAX,
			.fail_at = SIZE_MAX,
			.overrun = true,
		};
		struct dec_out o;

		decode_src(chunk_read, &s, fx[i].version, &o);
		if (o.rc >= 0)
			failf(__LINE__, "%s: overrunning source accepted",
			      fx[i].rel);
		CHECK(o.err.msg[0] != '\0');
	}
	free_fixtures(fx, n);
}

/* ------------------------------------------------------------------------
 * The decoder after an error
 */

TEST(robust_state_after_error)
{
	int n;
	struct fixture *fx = load_fixtures(&n);

	for (int i = 0; i < n; i++) {
		const struct fixture *f = &fx[i];
		struct ltx_decoder_opts opts = { .version = f->version };
		struct ltx_mem_source src = { .data = f->data, .len = f->len - 1 };
		struct ltfs_err err = { 0 };
		struct ltx_decoder *dec;
		struct ltx_trailer t;
		const uint8_t *page;
		uint32_t pgno;
		int rc;

		/* One byte short: open works, the end fails. */
		CHECK_OK(ltx_decoder_open(&dec, ltx_read_mem, &src, &opts, &err),
			 &err);
		while ((rc = ltx_decoder_next(dec, &pgno, &page, &err)) == 1)
			;
		if (rc == 0)
			rc = ltx_decoder_finish(dec, &t, &err);
		CHECK(rc < 0);
		CHECK(err.msg[0] != '\0');
		ltfs_err_clear(&err);
		CHECK_RC(ltx_decoder_next(dec, &pgno, &page, &err), LTFS_E_STATE);
		CHECK(err.msg[0] != '\0');
		ltfs_err_clear(&err);
		CHECK_RC(ltx_decoder_finish(dec, &t, &err), LTFS_E_STATE);
		CHECK(err.msg[0] != '\0');
		ltx_decoder_free(dec);

		/* A finished decoder cannot be finished twice. */
		src.len = f->len;
		src.pos = 0;
		CHECK_OK(ltx_decoder_open(&dec, ltx_read_mem, &src, &opts, &err),
			 &err);
		CHECK_OK(ltx_decoder_finish(dec, &t, &err), &err);
		ltfs_err_clear(&err);
		CHECK_RC(ltx_decoder_finish(dec, &t, &err), LTFS_E_STATE);
		CHECK(err.msg[0] != '\0');
		ltx_decoder_free(dec);
	}
	ltx_decoder_free(NULL);
	free_fixtures(fx, n);
}
