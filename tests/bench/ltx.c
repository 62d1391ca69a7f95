/*
 * bench_ltx - LTX throughput next to its baselines, in one run:
 *   database checksum  vs  memcpy of the same bytes
 *   snapshot encode    vs  the lz4 command-line tool (lz4 -1)
 * on a database file that is already in the page cache. Each figure is the
 * median of RUNS runs. Reports only; never fails on a slow result.
 *
 *   bench-ltx DB [RUNS]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ltx/ltx.h"
#include "tests/bench/bench.h"

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return v[n / 2];
}

/* A sink that only counts: the encoder's cost without the disk's. */
static int count_sink(void *ctx, const void *p, size_t n)
{
	(void)p;
	*(uint64_t *)ctx += n;
	return 0;
}

static int encode_snapshot(int fd, uint32_t ps, uint32_t npages,
			   uint64_t *out_bytes)
{
	struct ltx_header h = { .page_size = ps, .commit = npages,
				.min_txid = 1, .max_txid = 1 };
	struct ltx_encoder *enc;
	struct ltfs_err err;
	uint32_t lock = ltx_lock_pgno(ps), chunk_pages = (1u << 20) / ps;
	uint8_t *buf = malloc(1u << 20);
	int rc;

	*out_bytes = 0;
	rc = ltx_encoder_open(&enc, &h, NULL, count_sink, out_bytes, &err);
	for (uint32_t p = 1; rc == 0 && p <= npages; p += chunk_pages) {
		uint32_t n = npages - p + 1 < chunk_pages ? npages - p + 1 : chunk_pages;

		if (pread(fd, buf, (size_t)n * ps, (off_t)(p - 1) * ps) != (ssize_t)((size_t)n * ps)) {
			rc = -1;
			break;
		}
		for (uint32_t i = 0; rc == 0 && i < n; i++)
			if (p + i != lock)
				rc = ltx_encoder_add_page(enc, p + i, buf + (size_t)i * ps,
							  NULL, &err);
	}
	if (rc == 0)
		rc = ltx_encoder_finish(enc, 0, NULL, &err);
	if (rc < 0)
		fprintf(stderr, "encode: %s\n", err.msg);
	ltx_encoder_free(enc);
	free(buf);
	return rc;
}

int main(int argc, char **argv)
{
	enum { MAXRUNS = 15 };
	double t_ck[MAXRUNS], t_mc[MAXRUNS], t_enc[MAXRUNS], t_lz4[MAXRUNS];
	int runs = argc > 2 ? atoi(argv[2]) : 5;
	uint8_t hdr[100];
	struct ltx_db_header dbh;
	struct ltfs_err err;
	struct stat st;
	uint64_t sum = 0, ltx_bytes = 0, lz4_bytes = 0;
	char cmd[8192];
	uint8_t *a, *b;
	double gb;
	int fd;

	if (argc < 2) {
		fprintf(stderr, "usage: bench-ltx DB [RUNS]\n");
		return 2;
	}
	if (runs < 1 || runs > MAXRUNS)
		runs = 5;
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0 || pread(fd, hdr, 100, 0) != 100 ||
	    ltx_db_header_parse(hdr, 100, &dbh, &err) < 0) {
		fprintf(stderr, "bench-ltx: cannot read '%s'\n", argv[1]);
		return 1;
	}
	gb = (double)st.st_size / 1e9;
	a = malloc((size_t)st.st_size);
	b = malloc((size_t)st.st_size);
	if (!a || !b)
		return 1;
	/* warm the page cache and the buffers */
	if (pread(fd, a, (size_t)st.st_size, 0) != st.st_size)
		return 1;
	memcpy(b, a, (size_t)st.st_size);

	for (int r = 0; r < runs; r++) {
		uint32_t npages = (uint32_t)(st.st_size / dbh.page_size);
		double t0 = now();

		ltx_db_checksum_fd(fd, dbh.page_size, npages, &sum, &err);
		t_ck[r] = now() - t0;
		t0 = now();
		memcpy(b, a, (size_t)st.st_size);
		t_mc[r] = now() - t0;
		t0 = now();
		encode_snapshot(fd, dbh.page_size, npages, &ltx_bytes);
		t_enc[r] = now() - t0;
		/* the CLI writes to /dev/null: no pipe in the timing */
		snprintf(cmd, sizeof(cmd), "lz4 -1 -q -c '%s' > /dev/null", argv[1]);
		t0 = now();
		if (system(cmd) != 0)
			fprintf(stderr, "bench-ltx: '%s' failed\n", cmd);
		t_lz4[r] = now() - t0;
	}
	{
		FILE *p;

		snprintf(cmd, sizeof(cmd), "lz4 -1 -q -c '%s' | wc -c", argv[1]);
		p = popen(cmd, "r");
		if (!p || fscanf(p, "%lu", (unsigned long *)&lz4_bytes) != 1)
			lz4_bytes = 0;
		if (p)
			pclose(p);
	}
	{
		double ck = gb / median(t_ck, runs), mc = gb / median(t_mc, runs);
		double en = gb / median(t_enc, runs), lz = gb / median(t_lz4, runs);

		printf("ltx benchmark: %s, %.2f GB, page size %u, %d runs (medians)\n",
		       argv[1], gb, dbh.page_size, runs);
		printf("  %-34s %8.2f GB/s  (target >= 2 GB/s)\n",
		       "database checksum (read + crc64)", ck);
		printf("  %-34s %8.2f GB/s\n", "memcpy of the same bytes", mc);
		printf("  %-34s %8.2f\n", "ratio checksum / memcpy", ck / mc);
		printf("  %-34s %8.2f GB/s  (%.1f%% of input)\n",
		       "snapshot encode (ltx, lz4 block)", en,
		       100.0 * (double)ltx_bytes / (double)st.st_size);
		printf("  %-34s %8.2f GB/s  (%.1f%% of input)\n", "lz4 -1 command-line tool",
		       lz, 100.0 * (double)lz4_bytes / (double)st.st_size);
		printf("  %-34s %8.2f   (target >= 0.8)\n", "ratio encode / lz4 -1", en / lz);
	}
	free(a);
	free(b);
	close(fd);
	return 0;
}
