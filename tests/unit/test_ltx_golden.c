/*
 * Golden tests: files written by the reference implementation
 * (tests/data, see its README) must decode to exactly the values in their
 * JSON sidecars; chains must apply to the source databases; compacting the
 * chains must give what the reference compactor gave.
 */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <sys/stat.h>
#include <unistd.h>

#include "t.h"

static uint64_t hex64(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_string(v))
		t_fail(__FILE__, __LINE__, "sidecar: '%s' missing", key);
	return strtoull(json_string_value(v), NULL, 16);
}

static uint64_t num(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		t_fail(__FILE__, __LINE__, "sidecar: '%s' missing", key);
	return (uint64_t)json_integer_value(v);
}

static void hex_of(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

static struct ltx_decoder *open_mem(struct ltx_mem_source *src, uint8_t *data,
				    size_t len, enum ltx_version v,
				    struct ltfs_err *err)
{
	struct ltx_decoder_opts opts = { .version = v };
	struct ltx_decoder *dec = NULL;

	src->data = data;
	src->len = len;
	src->pos = 0;
	CHECK_OK(ltx_decoder_open(&dec, ltx_read_mem, src, &opts, err), err);
	return dec;
}

/* Decode one fixture and compare every value its sidecar records. */
static void check_against_sidecar(const char *rel, enum ltx_version v)
{
	char path[4096], jpath[4096], hex[40];
	struct ltx_mem_source src;
	struct ltx_decoder *dec;
	struct ltx_frame_info fi;
	struct ltx_trailer tr;
	struct ltfs_err err = { 0 };
	const struct ltx_header *h;
	json_error_t jerr;
	json_t *js, *jh, *pages;
	const uint8_t *page;
	uint32_t pgno;
	size_t len, i = 0;
	uint8_t *data;
	int rc;

	t_data_path(path, sizeof(path), rel);
	snprintf(jpath, sizeof(jpath), "%.*s.json", (int)(strlen(path) - 4), path);
	js = json_load_file(jpath, 0, &jerr);
	if (!js)
		t_fail(__FILE__, __LINE__, "%s: %s", jpath, jerr.text);
	data = t_read_file(path, &len);
	CHECK_EQ(len, num(js, "size"));
	dec = open_mem(&src, data, len, v, &err);
	h = ltx_decoder_header(dec);
	jh = json_object_get(js, "header");
	CHECK_EQ(h->commit, num(jh, "commit"));
	CHECK_EQ(h->flags, hex64(jh, "flags"));
	CHECK_EQ(h->page_size, num(jh, "page_size"));
	CHECK_EQ(h->min_txid, hex64(jh, "min_txid"));
	CHECK_EQ(h->max_txid, hex64(jh, "max_txid"));
	CHECK_EQ(h->timestamp, num(jh, "timestamp_ms"));
	CHECK_EQ(h->pre_apply_checksum, hex64(jh, "pre_apply_checksum"));
	CHECK_EQ(h->wal_offset, num(jh, "wal_offset"));
	CHECK_EQ(h->wal_size, num(jh, "wal_size"));
	CHECK_EQ(h->wal_salt1, hex64(jh, "wal_salt1"));
	CHECK_EQ(h->wal_salt2, hex64(jh, "wal_salt2"));
	CHECK_EQ(h->node_id, hex64(jh, "node_id"));
	CHECK_EQ(ltx_decoder_version(dec), v);

	pages = json_object_get(js, "pages");
	while ((rc = ltx_decoder_next(dec, &pgno, &page, &err)) == 1) {
		json_t *jp = json_array_get(pages, i++);

		CHECK(jp != NULL);
		ltx_decoder_frame_info(dec, &fi);
		CHECK_EQ(pgno, num(jp, "pgno"));
		CHECK_EQ(fi.checksum, hex64(jp, "page_checksum"));
		CHECK_EQ(fi.checksum, ltx_page_checksum(pgno, page, h->page_size));
		hex_of(page, 16, hex);
		CHECK_STR(hex, json_string_value(json_object_get(jp, "data_first16_hex")));
		if (v == LTX_VERSION_3) {
			CHECK_EQ(fi.offset, num(jp, "frame_offset"));
			CHECK_EQ(fi.size, num(jp, "frame_size"));
			CHECK_EQ(fi.flags, num(jp, "page_flags"));
			CHECK_EQ(fi.payload, num(jp, "payload_size"));
			CHECK_EQ(ltx_crc64(0, page, h->page_size),
				 hex64(jp, "data_crc64_iso"));
		}
	}
	CHECK_OK(rc, &err);
	CHECK_EQ(i, json_array_size(pages));
	CHECK_OK(ltx_decoder_finish(dec, &tr, &err), &err);
	jh = json_object_get(js, "trailer");
	CHECK_EQ(tr.post_apply_checksum, hex64(jh, "post_apply_checksum"));
	CHECK_EQ(tr.file_checksum, hex64(jh, "file_checksum"));
	if (v == LTX_VERSION_3) {
		CHECK_EQ(ltx_decoder_index_offset(dec), num(js, "page_index_offset"));
		CHECK_EQ(ltx_decoder_index_size(dec), num(js, "page_index_size_field"));
	}
	ltx_decoder_free(dec);
	free(data);
	json_decref(js);
}

/* Every .ltx in a fixture directory that has a sidecar. */
static int each_fixture(const char *dir, enum ltx_version v)
{
	char path[4096], rel[4096];
	struct dirent *de;
	DIR *d;
	int n = 0;

	d = opendir(t_data_path(path, sizeof(path), dir));
	CHECK(d != NULL);
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);

		if (l < 5 || strcmp(de->d_name + l - 4, ".ltx") != 0)
			continue;
		snprintf(rel, sizeof(rel), "%s/%s", dir, de->d_name);
		check_against_sidecar(rel, v);
		n++;
	}
	closedir(d);
	return n;
}

TEST(golden_v3_block_checksum)
{
	CHECK_EQ(each_fixture("v3-block/chain-checksum", LTX_VERSION_3), 5);
	CHECK_EQ(each_fixture("v3-block/chain-checksum/compacted", LTX_VERSION_3), 2);
}

TEST(golden_v3_block_nochecksum)
{
	CHECK_EQ(each_fixture("v3-block/chain-nochecksum", LTX_VERSION_3), 3);
	CHECK_EQ(each_fixture("v3-block/chain-nochecksum/compacted", LTX_VERSION_3), 1);
}

TEST(golden_v3_edge_and_handmade)
{
	CHECK_EQ(each_fixture("v3-block/edge", LTX_VERSION_3), 2);
	CHECK_EQ(each_fixture("v3-block/handmade", LTX_VERSION_3), 1);
}

TEST(golden_v3_frame)
{
	CHECK_EQ(each_fixture("v3-frame", LTX_VERSION_3), 3);
}

TEST(golden_v1)
{
	CHECK_EQ(each_fixture("v1/uncompressed", LTX_VERSION_1), 3);
	CHECK_EQ(each_fixture("v1/lz4", LTX_VERSION_1), 3);
}

/* Format detection from the file alone must agree with the directory. */
TEST(golden_detect_version)
{
	static const struct {
		const char *rel;
		enum ltx_version v;
	} cases[] = {
		{ "v1/uncompressed/0000000000000001-0000000000000001.ltx", LTX_VERSION_1 },
		{ "v1/uncompressed/0000000000000003-0000000000000003.ltx", LTX_VERSION_1 },
		{ "v1/lz4/0000000000000002-0000000000000002.ltx", LTX_VERSION_1 },
		{ "v3-block/chain-checksum/0000000000000003-0000000000000003.ltx", LTX_VERSION_3 },
		{ "v3-block/edge/0000000000000006-0000000000000006.ltx", LTX_VERSION_3 },
		{ "v3-frame/0000000000000002-0000000000000002.ltx", LTX_VERSION_3 },
	};
	char path[4096];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum ltx_version v = LTX_VERSION_AUTO;
		struct ltfs_err err;
		int fd = open(t_data_path(path, sizeof(path), cases[i].rel), O_RDONLY);

		CHECK(fd >= 0);
		CHECK_OK(ltx_detect_version_fd(fd, &v, &err), &err);
		CHECK_EQ(v, cases[i].v);
		CHECK_OK(ltx_verify_fd(fd, NULL, NULL, &err), &err);
		close(fd);
	}
}

TEST(golden_invalid_rejected)
{
	static const struct {
		const char *name;
		int code;
		const char *words;
	} cases[] = {
		{ "bad-file-checksum.ltx", LTFS_E_CHECKSUM, "file checksum mismatch" },
		{ "bad-page-flag.ltx", LTFS_E_CORRUPT, "invalid page header flags 0x0003" },
		{ "bad-header-flag.ltx", LTFS_E_CORRUPT, "invalid flags 0x00000001" },
		{ "truncated.ltx", LTFS_E_TRUNCATED, "file ends early" },
		{ "bad-payload-byte.ltx", LTFS_E_CHECKSUM, "file checksum mismatch" },
	};
	char path[4096], rel[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ltfs_err err = { 0 };
		int fd;

		snprintf(rel, sizeof(rel), "v3-block/invalid/%s", cases[i].name);
		fd = open(t_data_path(path, sizeof(path), rel), O_RDONLY);
		CHECK(fd >= 0);
		CHECK_RC(ltx_verify_fd(fd, NULL, NULL, &err), cases[i].code);
		if (!strstr(err.msg, cases[i].words))
			t_fail(__FILE__, __LINE__, "%s: message '%s' lacks '%s'",
			       cases[i].name, err.msg, cases[i].words);
		close(fd);
	}
}

/* Apply files in order onto an empty database; compare with `want_db`. */
static void apply_chain(const char **files, size_t n, const char *want_db)
{
	char path[4096], db[4096];
	uint64_t sum = LTX_CHECKSUM_FLAG, want_sum;
	struct ltfs_err err = { 0 };
	size_t got_len, want_len;
	uint8_t *got, *want;
	int dbfd;

	snprintf(db, sizeof(db), "%s/out.db", t_tmpdir());
	unlink(db);
	dbfd = open(db, O_RDWR | O_CREAT, 0644);
	CHECK(dbfd >= 0);
	for (size_t i = 0; i < n; i++) {
		int fd = open(t_data_path(path, sizeof(path), files[i]), O_RDONLY);

		CHECK(fd >= 0);
		CHECK_OK(ltx_apply_fd(dbfd, fd, &sum, NULL, &err), &err);
		close(fd);
	}
	close(dbfd);
	got = t_read_file(db, &got_len);
	want = t_read_file(t_data_path(path, sizeof(path), want_db), &want_len);
	CHECK_EQ(got_len, want_len);
	CHECK_MEM(got, want, got_len);
	dbfd = open(db, O_RDONLY);
	CHECK_OK(ltx_db_checksum_fd(dbfd, 4096, (uint32_t)(got_len / 4096),
				    &want_sum, &err), &err);
	CHECK_EQ(sum, want_sum);
	close(dbfd);
	free(got);
	free(want);
}

#define CK "v3-block/chain-checksum/"
#define NC "v3-block/chain-nochecksum/"
#define F(n) "000000000000000" #n "-000000000000000" #n ".ltx"

TEST(golden_apply_chains)
{
	const char *full[] = { CK F(1), CK F(2), CK F(3), CK F(4), CK F(5) };
	const char *comp15[] = { CK "compacted/0000000000000001-0000000000000005.ltx" };
	const char *comp24[] = { CK F(1), CK "compacted/0000000000000002-0000000000000004.ltx" };
	const char *nochk[] = { NC F(1), NC F(2), NC F(3) };
	const char *nocomp[] = { NC "compacted/0000000000000001-0000000000000003.ltx" };
	const char *frame[] = { "v3-frame/" F(1), "v3-frame/" F(2), "v3-frame/" F(3) };
	const char *v1u[] = { "v1/uncompressed/" F(1), "v1/uncompressed/" F(2),
			      "v1/uncompressed/" F(3) };
	const char *v1z[] = { "v1/lz4/" F(1), "v1/lz4/" F(2), "v1/lz4/" F(3) };

	apply_chain(full, 5, "src/db-v5.sqlite");
	apply_chain(full, 3, "src/db-v3.sqlite"); /* grows 2 -> 9 pages */
	apply_chain(comp15, 1, "src/db-v5.sqlite");
	apply_chain(comp24, 2, "src/db-v4.sqlite");
	apply_chain(nochk, 3, "src/db-v3.sqlite");
	apply_chain(nocomp, 1, "src/db-v3.sqlite");
	apply_chain(frame, 3, "src/db-v3.sqlite");
	apply_chain(v1u, 3, "src/db-v3.sqlite");
	apply_chain(v1z, 3, "src/db-v3.sqlite");
}

/* The deletion file applies on top of the chain (the reference CLI fails
 * here because it computes an empty database's checksum as 0). */
TEST(golden_apply_deletion)
{
	const char *files[] = { CK F(1), CK F(2), CK F(3), CK F(4), CK F(5),
				"v3-block/edge/" F(6) };
	char path[4096], db[4096];
	uint64_t sum = LTX_CHECKSUM_FLAG;
	struct ltfs_err err;
	struct stat st;
	int dbfd;

	snprintf(db, sizeof(db), "%s/del.db", t_tmpdir());
	dbfd = open(db, O_RDWR | O_CREAT, 0644);
	for (size_t i = 0; i < 6; i++) {
		int fd = open(t_data_path(path, sizeof(path), files[i]), O_RDONLY);

		CHECK_OK(ltx_apply_fd(dbfd, fd, &sum, NULL, &err), &err);
		close(fd);
	}
	CHECK(fstat(dbfd, &st) == 0);
	CHECK_EQ(st.st_size, 0);
	CHECK_EQ(sum, LTX_CHECKSUM_FLAG);
	close(dbfd);
}

/* A file that does not continue the database is refused, and the
 * database is left byte for byte as it was. */
TEST(golden_apply_refuses_gap)
{
	char path[4096], db[4096];
	uint64_t sum = LTX_CHECKSUM_FLAG;
	struct ltfs_err err = { 0 };
	size_t before_len, after_len;
	uint8_t *before, *after;
	int dbfd, fd;

	snprintf(db, sizeof(db), "%s/gap.db", t_tmpdir());
	dbfd = open(db, O_RDWR | O_CREAT, 0644);
	fd = open(t_data_path(path, sizeof(path), CK F(1)), O_RDONLY);
	CHECK_OK(ltx_apply_fd(dbfd, fd, &sum, NULL, &err), &err);
	close(fd);
	before = t_read_file(db, &before_len);
	fd = open(t_data_path(path, sizeof(path), CK F(3)), O_RDONLY);
	CHECK_RC(ltx_apply_fd(dbfd, fd, &sum, NULL, &err), LTFS_E_CHECKSUM);
	CHECK(strstr(err.msg, "does not continue") != NULL);
	close(fd);
	/* A corrupt file is refused before any page is written. */
	fd = open(t_data_path(path, sizeof(path), "v3-block/invalid/bad-payload-byte.ltx"),
		  O_RDONLY);
	CHECK_RC(ltx_apply_fd(dbfd, fd, &sum, NULL, &err), LTFS_E_CHECKSUM);
	close(fd);
	close(dbfd);
	after = t_read_file(db, &after_len);
	CHECK_EQ(before_len, after_len);
	CHECK_MEM(before, after, before_len);
	CHECK_EQ(sum, 0xb88bf19c3d0df0d4ull);
	free(before);
	free(after);
}

/* Compact `files` and compare with the reference output `want`. */
static void compact_like_reference(const char **files, size_t n,
				   const char *want, enum ltx_page_encoding enc)
{
	struct ltx_compact_opts opts = { .enc = { .encoding = enc } };
	struct ltx_decoder *in[8], *a, *b;
	struct ltx_mem_source srcs[8], sa, sb;
	uint8_t *datas[8], *wdata;
	struct ltfs_buf out;
	struct ltx_header oh;
	struct ltx_trailer ot, wt, at;
	struct ltfs_err err = { 0 };
	char path[4096];
	const uint8_t *pa, *pb;
	uint32_t ga, gb;
	size_t len;
	int ra, rb;

	for (size_t i = 0; i < n; i++) {
		datas[i] = t_read_file(t_data_path(path, sizeof(path), files[i]), &len);
		in[i] = open_mem(&srcs[i], datas[i], len, LTX_VERSION_3, &err);
	}
	ltfs_buf_init(&out, 1 << 24);
	CHECK_OK(ltx_compact(in, n, &opts, ltx_write_buf, &out, &oh, &ot, &err), &err);

	wdata = t_read_file(t_data_path(path, sizeof(path), want), &len);
	b = open_mem(&sb, wdata, len, LTX_VERSION_3, &err);
	a = open_mem(&sa, out.data, out.len, LTX_VERSION_3, &err);
	CHECK_EQ(ltx_decoder_header(a)->commit, ltx_decoder_header(b)->commit);
	CHECK_EQ(ltx_decoder_header(a)->min_txid, ltx_decoder_header(b)->min_txid);
	CHECK_EQ(ltx_decoder_header(a)->max_txid, ltx_decoder_header(b)->max_txid);
	CHECK_EQ(ltx_decoder_header(a)->timestamp, ltx_decoder_header(b)->timestamp);
	CHECK_EQ(ltx_decoder_header(a)->flags, ltx_decoder_header(b)->flags);
	CHECK_EQ(ltx_decoder_header(a)->node_id, ltx_decoder_header(b)->node_id);
	CHECK_EQ(ltx_decoder_header(a)->pre_apply_checksum,
		 ltx_decoder_header(b)->pre_apply_checksum);
	do {
		ra = ltx_decoder_next(a, &ga, &pa, &err);
		CHECK_OK(ra, &err);
		rb = ltx_decoder_next(b, &gb, &pb, &err);
		CHECK_OK(rb, &err);
		CHECK_EQ(ra, rb);
		if (ra == 1) {
			CHECK_EQ(ga, gb);
			CHECK_MEM(pa, pb, ltx_decoder_header(a)->page_size);
		}
	} while (ra == 1);
	CHECK_OK(ltx_decoder_finish(a, &at, &err), &err);
	CHECK_OK(ltx_decoder_finish(b, &wt, &err), &err);
	CHECK_EQ(at.post_apply_checksum, wt.post_apply_checksum);
	CHECK_EQ(ot.post_apply_checksum, wt.post_apply_checksum);
	CHECK_EQ(ot.file_checksum, at.file_checksum);
	ltx_decoder_free(a);
	ltx_decoder_free(b);
	for (size_t i = 0; i < n; i++) {
		ltx_decoder_free(in[i]);
		free(datas[i]);
	}
	free(wdata);
	ltfs_buf_release(&out);
}

TEST(golden_compact_like_reference)
{
	const char *full[] = { CK F(1), CK F(2), CK F(3), CK F(4), CK F(5) };
	const char *mid[] = { CK F(2), CK F(3), CK F(4) };
	const char *nochk[] = { NC F(1), NC F(2), NC F(3) };

	compact_like_reference(full, 5, CK "compacted/0000000000000001-0000000000000005.ltx",
			       LTX_ENC_BLOCK);
	compact_like_reference(mid, 3, CK "compacted/0000000000000002-0000000000000004.ltx",
			       LTX_ENC_BLOCK);
	compact_like_reference(nochk, 3, NC "compacted/0000000000000001-0000000000000003.ltx",
			       LTX_ENC_FRAME);
}

TEST(golden_compact_refuses_gaps_and_mixed_modes)
{
	const char *gap[] = { CK F(1), CK F(3) };
	const char *mixed[] = { CK F(1), NC F(2) };
	const char **sets[] = { gap, mixed };
	int want[] = { LTFS_E_TXID, LTFS_E_USAGE };
	char path[4096];

	for (int s = 0; s < 2; s++) {
		struct ltx_decoder *in[2];
		struct ltx_mem_source src[2];
		uint8_t *data[2];
		struct ltfs_buf out;
		struct ltfs_err err;
		size_t len;

		for (int i = 0; i < 2; i++) {
			data[i] = t_read_file(t_data_path(path, sizeof(path), sets[s][i]), &len);
			in[i] = open_mem(&src[i], data[i], len, LTX_VERSION_3, &err);
		}
		ltfs_buf_init(&out, 1 << 20);
		CHECK_RC(ltx_compact(in, 2, NULL, ltx_write_buf, &out, NULL, NULL, &err),
			 want[s]);
		CHECK_EQ(out.len, 0);
		for (int i = 0; i < 2; i++) {
			ltx_decoder_free(in[i]);
			free(data[i]);
		}
		ltfs_buf_release(&out);
	}
}

/*
 * Rebuild the hand-made file byte for byte from the written spec, with our
 * header encoder, CRC and varints; only the literal-only LZ4 block is built
 * by hand, since a compressor would find matches in this page.
 */
TEST(golden_handmade_rebuilt)
{
	struct ltx_header h = {
		.page_size = 512, .commit = 1, .min_txid = 1, .max_txid = 1,
		.timestamp = 1735689600000,
	};
	uint8_t file[660], page[512];
	size_t pos = 0, len;
	uint64_t file_crc;
	uint8_t *want;
	char path[4096];

	for (int i = 0; i < 512; i++)
		page[i] = (uint8_t)((7 * i + 3) % 256);
	ltx_header_encode(&h, file);
	pos = LTX_HEADER_SIZE;
	ltx_put_be32(file + pos, 1);
	ltx_put_be16(file + pos + 4, LTX_PAGE_FLAG_SIZE);
	ltx_put_be32(file + pos + 6, 515);
	file_crc = ltx_crc64(ltx_crc64(0, file, pos + 10), page, 512);
	file[pos + 10] = 0xf0; /* 15+ literals, no match */
	file[pos + 11] = 0xff; /* 15 + 255 + 242 = 512 */
	file[pos + 12] = 0xf2;
	memcpy(file + pos + 13, page, 512);
	pos += 525;
	memset(file + pos, 0, 6);
	memcpy(file + pos + 6, "\x01\x64\x8d\x04\x00", 5);
	ltx_put_be64(file + pos + 11, 5);
	ltx_put_be64(file + pos + 19, ltx_page_checksum(1, page, 512));
	file_crc = ltx_crc64(file_crc, file + pos, 27);
	ltx_put_be64(file + pos + 27, LTX_CHECKSUM_FLAG | file_crc);
	pos += 35;
	CHECK_EQ(pos, 660);
	CHECK_EQ(ltx_page_checksum(1, page, 512), 0x8a82830896681cd2ull);
	CHECK_EQ(LTX_CHECKSUM_FLAG | file_crc, 0x91a2917a4737beefull);
	want = t_read_file(t_data_path(path, sizeof(path),
				       "v3-block/handmade/0000000000000001-0000000000000001.ltx"),
			   &len);
	CHECK_EQ(len, sizeof(file));
	CHECK_MEM(file, want, len);
	free(want);
}
