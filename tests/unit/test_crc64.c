/* CRC-64/GO-ISO vectors, both engines, combine, page and db checksums. */
#include <fcntl.h>
#include <unistd.h>

#include "t.h"

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = (uint8_t)(seed >> 56);
	}
}

TEST(crc64_vectors)
{
	CHECK_EQ(ltx_crc64(0, "", 0), 0);
	CHECK_EQ(ltx_crc64(0, "123456789", 9), 0xb90956c775a41001ull);
	CHECK_EQ(ltx_crc64_portable(0, "123456789", 9), 0xb90956c775a41001ull);
	/* Continuing in pieces gives the same value (Go crc64.Update). */
	CHECK_EQ(ltx_crc64(ltx_crc64(0, "1234", 4), "56789", 5),
		 0xb90956c775a41001ull);
}

TEST(crc64_page_vectors)
{
	static uint8_t zero[4096];
	uint64_t a = ltx_page_checksum(1, zero, 4096);
	uint64_t b = ltx_page_checksum(2, zero, 4096);

	CHECK_EQ(a, 0xd9328f592d9e733dull);
	CHECK_EQ(b, 0xf7901e47304ca33full);
	CHECK_EQ(LTX_CHECKSUM_FLAG | (a ^ b), 0xaea2911e1dd2d002ull);
}

/* The multiply engine must equal the table engine for every length,
 * alignment and starting value, including the 16/64/128-byte edges. */
TEST(crc64_engines_agree)
{
	static uint8_t buf[70000];

	fill_random(buf, sizeof(buf), 1);
	for (size_t n = 0; n < 600; n++) {
		for (size_t off = 0; off < 3; off++) {
			uint64_t seed = n * 31 + off;

			CHECK_EQ(ltx_crc64(seed, buf + off, n),
				 ltx_crc64_portable(seed, buf + off, n));
		}
	}
	CHECK_EQ(ltx_crc64(0, buf, 65536), ltx_crc64_portable(0, buf, 65536));
	CHECK_EQ(ltx_crc64(7, buf + 1, 69999),
		 ltx_crc64_portable(7, buf + 1, 69999));
}

TEST(crc64_combine)
{
	static uint8_t buf[65536 + 100];
	const size_t n = 9000;
	struct ltx_crc64_shift sh;

	fill_random(buf, sizeof(buf), 2);
	for (size_t split = 0; split < n; split += 997) {
		uint64_t whole = ltx_crc64(0, buf, n);
		uint64_t a = ltx_crc64(0, buf, split);
		uint64_t b = ltx_crc64(0, buf + split, n - split);

		CHECK_EQ(ltx_crc64_combine(a, b, n - split), whole);
		ltx_crc64_shift_init(&sh, n - split);
		CHECK_EQ(ltx_crc64_shift_combine(&sh, a, b), whole);
	}
	/* the page sizes, whose operators come from a generated table */
	for (uint32_t ps = 512; ps <= 65536; ps *= 2) {
		uint64_t a = ltx_crc64(0, buf, 100);
		uint64_t b = ltx_crc64(0, buf + 100, ps);

		ltx_crc64_shift_init(&sh, ps);
		/* combine(x^0, 0, len) is the plain operator x^(8 len) itself */
		CHECK_EQ(sh.op, ltx_crc64_combine(UINT64_C(1) << 63, 0, ps));
		CHECK_EQ(ltx_crc64_shift_combine(&sh, a, b), ltx_crc64(0, buf, 100 + ps));
		CHECK_EQ(ltx_page_checksum_from_crc(77, b, &sh),
			 ltx_page_checksum(77, buf + 100, ps));
	}
}

TEST(crc64_lock_page)
{
	CHECK_EQ(ltx_lock_pgno(4096), 262145);
	CHECK_EQ(ltx_lock_pgno(512), 2097153);
	CHECK_EQ(ltx_lock_pgno(65536), 16385);
}

TEST(crc64_db_checksum_fixtures)
{
	static const struct {
		const char *name;
		uint32_t pages;
		uint64_t want;
	} dbs[] = {
		{ "src/db-v1.sqlite", 2, 0xb88bf19c3d0df0d4ull },
		{ "src/db-v2.sqlite", 2, 0x884f51c4d0016de8ull },
		{ "src/db-v3.sqlite", 9, 0xbf94c1b8cd5451bbull },
		{ "src/db-v4.sqlite", 9, 0x9987a85aac301d20ull },
		{ "src/db-v5.sqlite", 2, 0xf1e0f61723c2a504ull },
	};
	char path[4096];
	struct ltfs_err err;

	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		int fd = open(t_data_path(path, sizeof(path), dbs[i].name), O_RDONLY);
		uint64_t sum = 0;

		CHECK(fd >= 0);
		CHECK_OK(ltx_db_checksum_fd(fd, 4096, dbs[i].pages, &sum, &err), &err);
		CHECK_EQ(sum, dbs[i].want);
		/* Claiming more pages than the file has is an error. */
		CHECK_RC(ltx_db_checksum_fd(fd, 4096, dbs[i].pages + 1, &sum, &err),
			 LTFS_E_TRUNCATED);
		close(fd);
	}
}

TEST(crc64_db_checksum_empty)
{
	uint64_t sum = 0;

	CHECK_OK(ltx_db_checksum_fd(-1, 4096, 0, &sum, NULL), NULL);
	CHECK_EQ(sum, LTX_CHECKSUM_FLAG);
}
