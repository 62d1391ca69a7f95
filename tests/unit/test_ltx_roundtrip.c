/*
 * Round trips through our own encoder, decoder, index reader, compactor
 * and apply: random page sets, every page size, both encodings, both
 * checksum modes, the lock page, and the encoder's refusals.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "t.h"

struct rng {
	uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
	r->s ^= r->s << 13;
	r->s ^= r->s >> 7;
	r->s ^= r->s << 17;
	return r->s;
}

/* Page content: compressible with a random tail, seeded by pgno
 * and version, so any page can be regenerated for comparison. */
static void make_page(uint8_t *p, uint32_t ps, uint32_t pgno, uint32_t ver)
{
	struct rng r = { .s = ((uint64_t)pgno << 32 | ver) * 0x9e3779b97f4a7c15ull + 1 };
	/* a random tail of up to 512 bytes keeps big tests fast */
	uint32_t split = ps - (uint32_t)(rnd(&r) % (ps < 512 ? ps : 512));

	for (uint32_t i = 0; i < split; i++)
		p[i] = (uint8_t)(i / 64 + pgno);
	for (uint32_t i = split; i < ps; i++)
		p[i] = (uint8_t)rnd(&r);
}

static struct ltx_decoder *open_buf(struct ltx_mem_source *src,
				    const struct ltfs_buf *b,
				    struct ltfs_err *err)
{
	struct ltx_decoder *dec = NULL;

	src->data = b->data;
	src->len = b->len;
	src->pos = 0;
	CHECK_OK(ltx_decoder_open(&dec, ltx_read_mem, src, NULL, err), err);
	return dec;
}

/* Encode the given pages (version `ver` content), decode, compare. */
static void roundtrip(uint32_t ps, const uint32_t *pgnos, uint32_t n,
		      uint32_t commit, bool snapshot, bool nochecksum,
		      enum ltx_page_encoding encoding)
{
	struct ltx_encoder_opts eo = { .encoding = encoding };
	struct ltx_header h = {
		.page_size = ps, .commit = commit,
		.min_txid = snapshot ? 1 : 7, .max_txid = snapshot ? 1 : 9,
		.timestamp = 1700000000123,
		.pre_apply_checksum = snapshot || nochecksum ? 0 : LTX_CHECKSUM_FLAG | 42,
		.flags = nochecksum ? LTX_HEADER_FLAG_NO_CHECKSUM : 0,
	};
	struct ltx_encoder *enc;
	struct ltx_decoder *dec;
	struct ltx_mem_source src;
	struct ltx_frame_info fi;
	struct ltx_trailer et, dt;
	struct ltfs_err err = { 0 };
	struct ltfs_buf out;
	uint8_t *page = malloc(ps);
	const uint8_t *got;
	uint64_t xor = 0, ck;
	uint32_t pgno, i = 0;
	int rc;

	CHECK(page != NULL);
	ltfs_buf_init(&out, (size_t)1 << 30);
	CHECK_OK(ltx_encoder_open(&enc, &h, &eo, ltx_write_buf, &out, &err), &err);
	for (uint32_t k = 0; k < n; k++) {
		make_page(page, ps, pgnos[k], 1);
		CHECK_OK(ltx_encoder_add_page(enc, pgnos[k], page, &ck, &err), &err);
		CHECK_EQ(ck, ltx_page_checksum(pgnos[k], page, ps));
		xor ^= ck;
	}
	CHECK_OK(ltx_encoder_finish(enc, nochecksum ? 0 : (snapshot ? 0 : LTX_CHECKSUM_FLAG | 99),
				    &et, &err), &err);
	CHECK_EQ(ltx_encoder_bytes_written(enc), out.len);
	ltx_encoder_free(enc);
	if (snapshot && !nochecksum)
		CHECK_EQ(et.post_apply_checksum, LTX_CHECKSUM_FLAG | xor);

	dec = open_buf(&src, &out, &err);
	CHECK_EQ(ltx_decoder_header(dec)->commit, commit);
	CHECK_EQ(ltx_decoder_header(dec)->timestamp, 1700000000123);
	while ((rc = ltx_decoder_next(dec, &pgno, &got, &err)) == 1) {
		CHECK(i < n);
		CHECK_EQ(pgno, pgnos[i]);
		make_page(page, ps, pgno, 1);
		CHECK_MEM(got, page, ps);
		ltx_decoder_frame_info(dec, &fi);
		CHECK_EQ(fi.flags, encoding == LTX_ENC_BLOCK ? 1 : 0);
		i++;
	}
	CHECK_OK(rc, &err);
	CHECK_EQ(i, n);
	CHECK_OK(ltx_decoder_finish(dec, &dt, &err), &err);
	CHECK_EQ(dt.file_checksum, et.file_checksum);
	CHECK_EQ(dt.post_apply_checksum, et.post_apply_checksum);
	ltx_decoder_free(dec);
	ltfs_buf_release(&out);
	free(page);
}

TEST(roundtrip_page_sizes_and_modes)
{
	struct rng r = { .s = 12345 };

	for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
		uint32_t pgnos[64], n = 0, commit = 300;

		/* a random ascending subset of 1..300 */
		for (uint32_t p = 1; p <= commit && n < 64; p++)
			if (rnd(&r) % 5 == 0)
				pgnos[n++] = p;
		for (int enc = 0; enc < 2; enc++) {
			roundtrip(ps, pgnos, n, commit, false, false, (enum ltx_page_encoding)enc);
			roundtrip(ps, pgnos, n, commit, false, true, (enum ltx_page_encoding)enc);
		}
		{
			uint32_t all[40];

			for (uint32_t p = 0; p < 40; p++)
				all[p] = p + 1;
			roundtrip(ps, all, 40, 40, true, false, LTX_ENC_BLOCK);
			roundtrip(ps, all, 40, 40, true, true, LTX_ENC_FRAME);
		}
	}
}

/* Sparse pages around the 1 GiB lock page, with 512-byte pages: large page
 * numbers, multi-byte varints, and a snapshot-free file crossing it. */
TEST(roundtrip_lock_page)
{
	uint32_t lock = ltx_lock_pgno(512);
	uint32_t pgnos[] = { 1, 2, lock - 1, lock + 1, lock + 7 };
	struct ltx_header h = {
		.page_size = 512, .commit = lock + 7, .min_txid = 2, .max_txid = 2,
		.pre_apply_checksum = LTX_CHECKSUM_FLAG,
	};
	struct ltx_encoder *enc;
	struct ltfs_buf out;
	struct ltfs_err err;
	uint8_t page[512] = { 1 };

	CHECK_EQ(lock, 2097153);
	roundtrip(512, pgnos, 5, lock + 7, false, false, LTX_ENC_BLOCK);
	ltfs_buf_init(&out, 1 << 20);
	CHECK_OK(ltx_encoder_open(&enc, &h, NULL, ltx_write_buf, &out, &err), &err);
	CHECK_RC(ltx_encoder_add_page(enc, lock, page, NULL, &err), LTFS_E_USAGE);
	CHECK(strstr(err.msg, "lock page") != NULL);
	ltx_encoder_free(enc);
	ltfs_buf_release(&out);
}

/* A snapshot of a database larger than 1 GiB skips exactly the lock page;
 * 64 KiB pages keep it small (lock page 16385). */
TEST(roundtrip_snapshot_across_lock_page)
{
	uint32_t lock = ltx_lock_pgno(65536), n = 0;
	uint32_t *pgnos = malloc(sizeof(uint32_t) * (lock + 3));

	for (uint32_t p = 1; p <= lock + 2; p++)
		if (p != lock)
			pgnos[n++] = p;
	roundtrip(65536, pgnos, n, lock + 2, true, false, LTX_ENC_BLOCK);
	free(pgnos);
}

static void expect_add_fails(struct ltx_header *h, const uint32_t *ok, int nok,
			     uint32_t bad, const char *words)
{
	struct ltx_encoder *enc;
	struct ltfs_buf out;
	struct ltfs_err err = { 0 };
	uint8_t page[512] = { 0 };

	ltfs_buf_init(&out, 1 << 20);
	CHECK_OK(ltx_encoder_open(&enc, h, NULL, ltx_write_buf, &out, &err), &err);
	for (int i = 0; i < nok; i++)
		CHECK_OK(ltx_encoder_add_page(enc, ok[i], page, NULL, &err), &err);
	CHECK_RC(ltx_encoder_add_page(enc, bad, page, NULL, &err), LTFS_E_USAGE);
	if (!strstr(err.msg, words))
		t_fail(__FILE__, __LINE__, "'%s' lacks '%s'", err.msg, words);
	ltx_encoder_free(enc);
	ltfs_buf_release(&out);
}

TEST(encoder_refusals)
{
	struct ltx_header inc = { .page_size = 512, .commit = 10, .min_txid = 5,
				  .max_txid = 5, .pre_apply_checksum = LTX_CHECKSUM_FLAG | 1 };
	struct ltx_header snap = { .page_size = 512, .commit = 10, .min_txid = 1,
				   .max_txid = 3 };
	uint32_t p3[] = { 3 }, p12[] = { 1, 2 };
	struct ltx_encoder *enc;
	struct ltfs_buf out;
	struct ltfs_err err = { 0 };
	uint8_t page[512] = { 0 };

	expect_add_fails(&inc, NULL, 0, 0, "outside 1..commit");
	expect_add_fails(&inc, NULL, 0, 11, "outside 1..commit");
	expect_add_fails(&inc, p3, 1, 3, "not after previous page 3");
	expect_add_fails(&inc, p3, 1, 2, "not after previous page 3");
	expect_add_fails(&snap, NULL, 0, 2, "want 1");
	expect_add_fails(&snap, p12, 2, 4, "want 3");

	/* Header rules are checked before anything is written. */
	inc.pre_apply_checksum = 5; /* no bit 63 */
	ltfs_buf_init(&out, 1 << 20);
	CHECK_RC(ltx_encoder_open(&enc, &inc, NULL, ltx_write_buf, &out, &err),
		 LTFS_E_CORRUPT);
	CHECK_EQ(out.len, 0);
	inc.pre_apply_checksum = LTX_CHECKSUM_FLAG;
	inc.page_size = 1000;
	CHECK_RC(ltx_encoder_open(&enc, &inc, NULL, ltx_write_buf, &out, &err),
		 LTFS_E_CORRUPT);
	inc.page_size = 512;

	/* An incomplete snapshot, and a snapshot whose post-apply lies. */
	CHECK_OK(ltx_encoder_open(&enc, &snap, NULL, ltx_write_buf, &out, &err), &err);
	CHECK_OK(ltx_encoder_add_page(enc, 1, page, NULL, &err), &err);
	CHECK_RC(ltx_encoder_finish(enc, 0, NULL, &err), LTFS_E_USAGE);
	CHECK(strstr(err.msg, "snapshot incomplete") != NULL);
	ltx_encoder_free(enc);
	ltfs_buf_reset(&out);
	snap.commit = 1;
	CHECK_OK(ltx_encoder_open(&enc, &snap, NULL, ltx_write_buf, &out, &err), &err);
	CHECK_OK(ltx_encoder_add_page(enc, 1, page, NULL, &err), &err);
	CHECK_RC(ltx_encoder_finish(enc, LTX_CHECKSUM_FLAG | 77, NULL, &err),
		 LTFS_E_CHECKSUM);
	ltx_encoder_free(enc);

	/* NoChecksum forbids a post-apply value; checksums require bit 63. */
	ltfs_buf_reset(&out);
	inc.flags = LTX_HEADER_FLAG_NO_CHECKSUM;
	inc.pre_apply_checksum = 0;
	CHECK_OK(ltx_encoder_open(&enc, &inc, NULL, ltx_write_buf, &out, &err), &err);
	CHECK_RC(ltx_encoder_finish(enc, LTX_CHECKSUM_FLAG | 1, NULL, &err),
		 LTFS_E_CORRUPT);
	ltx_encoder_free(enc);

	/* A deletion file (commit 0) must end at exactly FLAG. */
	ltfs_buf_reset(&out);
	inc.flags = 0;
	inc.commit = 0;
	inc.pre_apply_checksum = LTX_CHECKSUM_FLAG | 3;
	CHECK_OK(ltx_encoder_open(&enc, &inc, NULL, ltx_write_buf, &out, &err), &err);
	CHECK_RC(ltx_encoder_finish(enc, LTX_CHECKSUM_FLAG | 1, NULL, &err),
		 LTFS_E_CORRUPT);
	ltx_encoder_free(enc);
	ltfs_buf_reset(&out);
	CHECK_OK(ltx_encoder_open(&enc, &inc, NULL, ltx_write_buf, &out, &err), &err);
	CHECK_OK(ltx_encoder_finish(enc, LTX_CHECKSUM_FLAG, NULL, &err), &err);
	ltx_encoder_free(enc);
	ltfs_buf_release(&out);
}

/* Random access through the page index on a file on disk. */
TEST(index_random_access)
{
	char path[4096];
	uint32_t pgnos[200], n = 0;
	struct rng r = { .s = 99 };

	for (uint32_t p = 1; p <= 2000 && n < 200; p++)
		if (rnd(&r) % 7 == 0)
			pgnos[n++] = p;
	for (int e = 0; e < 2; e++) {
		struct ltx_encoder_opts eo = { .encoding = (enum ltx_page_encoding)e };
		struct ltx_header h = { .page_size = 4096, .commit = 2000,
					.min_txid = 3, .max_txid = 3,
					.pre_apply_checksum = LTX_CHECKSUM_FLAG };
		struct ltx_encoder *enc;
		struct ltx_index idx;
		struct ltfs_err err = { 0 };
		uint8_t page[4096], got[4096];
		int fd;

		snprintf(path, sizeof(path), "%s/i%d.ltx", t_tmpdir(), e);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		CHECK(fd >= 0);
		CHECK_OK(ltx_encoder_open(&enc, &h, &eo, ltx_write_fd, &fd, &err), &err);
		for (uint32_t i = 0; i < n; i++) {
			make_page(page, 4096, pgnos[i], 1);
			CHECK_OK(ltx_encoder_add_page(enc, pgnos[i], page, NULL, &err), &err);
		}
		CHECK_OK(ltx_encoder_finish(enc, LTX_CHECKSUM_FLAG | 5, NULL, &err), &err);
		ltx_encoder_free(enc);

		CHECK_OK(ltx_index_read(fd, &idx, &err), &err);
		CHECK_EQ(idx.count, n);
		CHECK_EQ(idx.header.commit, 2000);
		CHECK_EQ(idx.trailer.post_apply_checksum, LTX_CHECKSUM_FLAG | 5);
		for (uint32_t i = 0; i < n; i += 3) {
			CHECK_EQ(ltx_index_read_page(fd, &idx, pgnos[i], got, &err), 1);
			make_page(page, 4096, pgnos[i], 1);
			CHECK_MEM(got, page, 4096);
		}
		/* a page the file does not hold */
		CHECK_EQ(ltx_index_read_page(fd, &idx, pgnos[0] + 1 == pgnos[1] ? 2001 : pgnos[0] + 1,
					     got, &err), 0);
		ltx_index_release(&idx);
		close(fd);
	}
}

/*
 * A random history on a model database: each transaction rewrites random
 * pages and may grow or shrink the database. Applying the files one by one
 * and applying their compaction must both give the model's bytes, and the
 * checksums must chain.
 */
TEST(compact_and_apply_random_history)
{
	enum { PS = 4096, MAXP = 120, NTX = 12 };
	static uint32_t ver[MAXP + 1];
	struct ltx_decoder *decs[NTX];
	int fds[NTX];
	char path[4096], dbpath[4096];
	uint64_t sum = LTX_CHECKSUM_FLAG, model_sum;
	uint32_t commit = 0;
	struct ltfs_err err = { 0 };
	struct rng r = { .s = 4242 };
	uint8_t page[PS];
	int dbfd;

	for (int tx = 0; tx < NTX; tx++) {
		uint32_t new_commit = tx == 0 ? 60 : (uint32_t)(20 + rnd(&r) % (MAXP - 20));
		struct ltx_header h = { .page_size = PS, .commit = new_commit,
					.min_txid = (uint64_t)tx + 1,
					.max_txid = (uint64_t)tx + 1, .timestamp = tx };
		struct ltx_encoder *enc;
		uint64_t post = 0;
		int fd;

		h.pre_apply_checksum = tx == 0 ? 0 : sum;
		snprintf(path, sizeof(path), "%s/%02d.ltx", t_tmpdir(), tx);
		fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		CHECK_OK(ltx_encoder_open(&enc, &h, NULL, ltx_write_fd, &fd, &err), &err);
		for (uint32_t p = 1; p <= new_commit; p++) {
			/* growth pages must be written; others at random */
			if (tx == 0 || p > commit || rnd(&r) % 4 == 0) {
				ver[p] = (uint32_t)tx + 1;
				make_page(page, PS, p, ver[p]);
				CHECK_OK(ltx_encoder_add_page(enc, p, page, NULL, &err), &err);
			}
		}
		/* model checksum of the new state */
		post = 0;
		for (uint32_t p = 1; p <= new_commit; p++) {
			make_page(page, PS, p, ver[p]);
			post ^= ltx_page_checksum(p, page, PS);
		}
		post |= LTX_CHECKSUM_FLAG;
		CHECK_OK(ltx_encoder_finish(enc, post, NULL, &err), &err);
		ltx_encoder_free(enc);
		close(fd);
		sum = post;
		commit = new_commit;
	}
	model_sum = sum;

	/* one by one */
	snprintf(dbpath, sizeof(dbpath), "%s/a.db", t_tmpdir());
	dbfd = open(dbpath, O_RDWR | O_CREAT, 0644);
	sum = LTX_CHECKSUM_FLAG;
	for (int tx = 0; tx < NTX; tx++) {
		int fd;

		snprintf(path, sizeof(path), "%s/%02d.ltx", t_tmpdir(), tx);
		fd = open(path, O_RDONLY);
		CHECK_OK(ltx_apply_fd(dbfd, fd, &sum, NULL, &err), &err);
		close(fd);
	}
	CHECK_EQ(sum, model_sum);
	for (uint32_t p = 1; p <= commit; p++) {
		uint8_t got[PS];

		CHECK(pread(dbfd, got, PS, (off_t)(p - 1) * PS) == PS);
		make_page(page, PS, p, ver[p]);
		CHECK_MEM(got, page, PS);
	}
	close(dbfd);

	/* built from streams, one pass each: the same bytes and checksum; a
	 * file out of order is refused by its pre-apply checksum */
	{
		struct ltx_build b;
		char bpath[4096];
		int bfd;

		snprintf(bpath, sizeof(bpath), "%s/s.db", t_tmpdir());
		bfd = open(bpath, O_RDWR | O_CREAT, 0644);
		ltx_build_init(&b);
		for (int tx = 0; tx < NTX; tx++) {
			int fd;

			snprintf(path, sizeof(path), "%s/%02d.ltx", t_tmpdir(), tx);
			fd = open(path, O_RDONLY);
			CHECK_OK(ltx_build_apply(&b, bfd, ltx_read_fd, &fd, 0, NULL, &err), &err);
			close(fd);
			if (tx == 0) { /* TXID 3 right after 1 does not continue */
				char spath[4096];
				struct ltx_build b2;
				int skip, ro = open(bpath, O_RDONLY); /* refused before a write */

				snprintf(spath, sizeof(spath), "%s/%02d.ltx", t_tmpdir(), 2);
				skip = open(spath, O_RDONLY);
				b2 = b;
				b2.cksums = malloc((size_t)b.cap * sizeof(*b.cksums));
				memcpy(b2.cksums, b.cksums, (size_t)b.cap * sizeof(*b.cksums));
				CHECK_EQ(ltx_build_apply(&b2, ro, ltx_read_fd, &skip, 0, NULL, &err),
					 LTFS_E_CHECKSUM);
				CHECK(strstr(err.msg, "does not continue") != NULL);
				ltx_build_release(&b2);
				close(skip);
				close(ro);
			}
		}
		CHECK_EQ(b.checksum, model_sum);
		CHECK_EQ(b.pages, commit);
		{
			uint64_t again;

			CHECK_OK(ltx_db_checksum_fd(bfd, PS, commit, &again, &err), &err);
			CHECK_EQ(again, model_sum);
		}
		for (uint32_t p = 1; p <= commit; p++) {
			uint8_t got[PS];

			CHECK(pread(bfd, got, PS, (off_t)(p - 1) * PS) == PS);
			make_page(page, PS, p, ver[p]);
			CHECK_MEM(got, page, PS);
		}
		ltx_build_release(&b);
		close(bfd);
	}

	/* compacted (a snapshot, since the first input is one) */
	for (int tx = 0; tx < NTX; tx++) {
		snprintf(path, sizeof(path), "%s/%02d.ltx", t_tmpdir(), tx);
		fds[tx] = open(path, O_RDONLY);
		CHECK_OK(ltx_decoder_open(&decs[tx], ltx_read_fd, &fds[tx], NULL, &err), &err);
	}
	snprintf(path, sizeof(path), "%s/all.ltx", t_tmpdir());
	{
		int out = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		struct ltx_header oh;
		struct ltx_trailer ot;

		CHECK_OK(ltx_compact(decs, NTX, NULL, ltx_write_fd, &out, &oh, &ot, &err), &err);
		CHECK_EQ(oh.min_txid, 1);
		CHECK_EQ(oh.max_txid, NTX);
		CHECK_EQ(oh.commit, commit);
		CHECK_EQ(ot.post_apply_checksum, model_sum);
		close(out);
	}
	for (int tx = 0; tx < NTX; tx++) {
		ltx_decoder_free(decs[tx]);
		close(fds[tx]);
	}
	snprintf(dbpath, sizeof(dbpath), "%s/b.db", t_tmpdir());
	dbfd = open(dbpath, O_RDWR | O_CREAT, 0644);
	{
		int fd = open(path, O_RDONLY);
		struct stat st;

		sum = LTX_CHECKSUM_FLAG;
		CHECK_OK(ltx_apply_fd(dbfd, fd, &sum, NULL, &err), &err);
		CHECK_EQ(sum, model_sum);
		CHECK(fstat(dbfd, &st) == 0);
		CHECK_EQ(st.st_size, (uint64_t)commit * PS);
		close(fd);
	}
	close(dbfd);
}

TEST(decoder_refuses_unknown_version)
{
	struct ltx_decoder_opts opts = { .version = (enum ltx_version)2 };
	struct ltx_mem_source src = { .data = (const uint8_t *)"LTX1", .len = 4 };
	struct ltx_decoder *dec = NULL;
	struct ltfs_err err;

	CHECK_RC(ltx_decoder_open(&dec, ltx_read_mem, &src, &opts, &err), LTFS_E_USAGE);
	CHECK(dec == NULL);
}
