/*
 * The write-behind (ltx/writebehind.c): pages added in any order of
 * offsets land as the last one added says, whether a run goes through
 * O_DIRECT or the page cache, across waits; a failed write comes back
 * with its offset, from add or from wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "t.h"

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A file of `pages` pages written by random runs, long (past the direct
 * threshold and across buffers) and short, overlapping earlier ones, with
 * a wait now and then; the file must equal a model kept in memory. */
static void random_runs(uint32_t ps, uint32_t pages, bool direct, uint64_t seed)
{
	struct ltfs_err err = { 0 };
	struct ltx_wb *wb;
	char path[4096];
	uint8_t *model = calloc(pages, ps), *page = malloc(ps), *got = malloc(ps);
	uint64_t s = seed;
	int fd, dfd = -1;

	CHECK(model && page && got);
	snprintf(path, sizeof(path), "%s/wb-%u.db", t_tmpdir(), ps);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	if (direct) {
		dfd = open(path, O_WRONLY | O_DIRECT);
		CHECK(dfd >= 0);
	}
	CHECK_OK(ltx_wb_open(&wb, fd, dfd, &err), &err);
	/* every page once, in order, so that the file has its full size */
	for (uint32_t p = 0; p < pages; p++) {
		memset(page, (int)(p % 251), ps);
		memcpy(model + (size_t)p * ps, page, ps);
		CHECK_OK(ltx_wb_add(wb, page, ps, (uint64_t)p * ps, &err), &err);
	}
	for (int round = 0; round < 200; round++) {
		uint32_t first = (uint32_t)(next(&s) % pages);
		uint32_t len = next(&s) % 4 ? 1 + (uint32_t)(next(&s) % 4) : (uint32_t)(next(&s) % pages);

		for (uint32_t p = first; p < first + len && p < pages; p++) {
			for (uint32_t i = 0; i < ps; i += 8)
				memcpy(page + i, &(uint64_t){ next(&s) }, 8);
			memcpy(model + (size_t)p * ps, page, ps);
			CHECK_OK(ltx_wb_add(wb, page, ps, (uint64_t)p * ps, &err), &err);
		}
		if (round % 17 == 0)
			CHECK_OK(ltx_wb_wait(wb, &err), &err);
	}
	CHECK_OK(ltx_wb_wait(wb, &err), &err);
	ltx_wb_close(wb);
	for (uint32_t p = 0; p < pages; p++) {
		CHECK(pread(fd, got, ps, (off_t)p * ps) == (ssize_t)ps);
		if (memcmp(got, model + (size_t)p * ps, ps) != 0)
			t_fail(__FILE__, __LINE__, "page %u of %u (size %u, direct %d) differs", p + 1,
			       pages, ps, direct);
	}
	if (dfd >= 0)
		close(dfd);
	close(fd);
	free(model);
	free(page);
	free(got);
}

TEST(writebehind_last_add_wins)
{
	random_runs(4096, 3000, true, 0x9e3779b97f4a7c15ull);
	random_runs(512, 20000, true, 77);
	random_runs(65536, 200, true, 5);
	random_runs(4096, 3000, false, 11);
}

TEST(writebehind_error_names_offset)
{
	struct ltfs_err err = { 0 };
	struct ltx_wb *wb;
	char path[4096];
	uint8_t page[4096] = { 1 };
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/ro.db", t_tmpdir());
	t_write_file(path, "", 0);
	fd = open(path, O_RDONLY); /* every write fails with EBADF */
	CHECK(fd >= 0);
	CHECK_OK(ltx_wb_open(&wb, fd, -1, &err), &err);
	/* runs broken by a gap go to the writer one by one: an add sees the
	 * failure once the writer met it, or else wait does */
	for (uint32_t p = 0; p < 64 && rc == 0; p++)
		rc = ltx_wb_add(wb, page, sizeof(page), (uint64_t)(3 + 2 * p) * sizeof(page), &err);
	if (rc == 0)
		rc = ltx_wb_wait(wb, &err);
	CHECK_EQ(rc, -EBADF);
	CHECK(strstr(err.msg, "write database at offset 12288") != NULL);
	CHECK_EQ(ltx_wb_wait(wb, &err), -EBADF);
	ltx_wb_close(wb);
	close(fd);
}
