/*
 * test_sqlite.c - the SQLite file-format helpers (ltx/sqlite.c) against
 * files written by the real SQLite: the sqlite3 CLI for plain databases,
 * the C API where a WAL or a journal has to be caught before SQLite
 * cleans it up.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t.h"

#define PATH_MAX_T 4096

/* ------------------------------------------------------------------------
 * Helpers
 */
static void tmp_path(char *out, size_t n, const char *name)
{
	if ((size_t)snprintf(out, n, "%s/%s", t_tmpdir(), name) >= n)
		t_fail(__FILE__, __LINE__, "path too long: %s", name);
}

/* base + suffix, e.g. the "-wal" next to a database. */
static void sibling_path(char *out, size_t n, const char *base,
			 const char *suffix)
{
	if (strlen(base) + strlen(suffix) >= n)
		t_fail(__FILE__, __LINE__, "path too long: %s", base);
	strcpy(out, base);
	strcat(out, suffix);
}

static void sh(const char *fmt, ...) LTFS_PRINTF(1, 2);
static void sh(const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		t_fail(__FILE__, __LINE__, "command too long");
	rc = system(cmd);
	if (rc != 0)
		t_fail(__FILE__, __LINE__, "'%s' exited with %d", cmd, rc);
}

/* One integer printed by the sqlite3 CLI. */
static uint32_t cli_u32(const char *db, const char *sql)
{
	char cmd[8192], line[128];
	unsigned long v;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "sqlite3 '%s' '%s'", db, sql);
	f = popen(cmd, "r");
	if (!f)
		t_fail(__FILE__, __LINE__, "popen: %s", strerror(errno));
	if (!fgets(line, sizeof(line), f))
		t_fail(__FILE__, __LINE__, "'%s' printed nothing", cmd);
	if (pclose(f) != 0)
		t_fail(__FILE__, __LINE__, "'%s' failed", cmd);
	v = strtoul(line, NULL, 10);
	return (uint32_t)v;
}

static off_t file_size(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		t_fail(__FILE__, __LINE__, "stat '%s': %s", path,
		       strerror(errno));
	return st.st_size;
}

/*
 * A database made by the CLI: `rows` rows of 200 random bytes, enough to
 * span many pages at every page size.
 */
static void cli_make_db(const char *path, uint32_t page_size,
			const char *journal_mode, int rows)
{
	sh("sqlite3 '%s' 'PRAGMA page_size=%u; PRAGMA journal_mode=%s; "
	   "CREATE TABLE t(i INTEGER PRIMARY KEY, v BLOB); "
	   "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c "
	   "WHERE i < %d) INSERT INTO t SELECT i, randomblob(200) FROM c;' "
	   ">/dev/null",
	   path, page_size, journal_mode, rows);
}

static sqlite3 *db_open(const char *path)
{
	sqlite3 *db = NULL;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		t_fail(__FILE__, __LINE__, "sqlite3_open '%s': %s", path,
		       db ? sqlite3_errmsg(db) : "out of memory");
	return db;
}

static void db_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		t_fail(__FILE__, __LINE__, "'%s': %s", sql, msg ? msg : "?");
}

static uint32_t db_u32(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	uint32_t v;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW)
		t_fail(__FILE__, __LINE__, "'%s': %s", sql, sqlite3_errmsg(db));
	v = (uint32_t)sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/*
 * Keep the WAL on close: no checkpoint (so the database file stays stale
 * and the WAL is the only copy of the data) and no delete.
 */
static void db_keep_wal(sqlite3 *db)
{
	int one = 1, got = 0;

	if (sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, &got) !=
		    SQLITE_OK ||
	    got != 1)
		t_fail(__FILE__, __LINE__, "SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE");
	if (sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &one) !=
	    SQLITE_OK)
		t_fail(__FILE__, __LINE__, "SQLITE_FCNTL_PERSIST_WAL");
}

static bool host_is_big_endian(void)
{
	const uint16_t one = 1;

	return *(const uint8_t *)&one == 0;
}

/* Recompute the WAL header checksum after editing a field. */
static void wal_reseal(uint8_t *hdr)
{
	uint32_t s[2] = { 0, 0 };

	ltx_wal_checksum((ltx_get_be32(hdr) & 1) != 0, hdr, 24, s);
	ltx_put_be32(hdr + 24, s[0]);
	ltx_put_be32(hdr + 28, s[1]);
}

struct wal_walk {
	uint32_t frames;      /* valid frames */
	uint32_t commits;     /* commit frames among them */
	uint32_t last_commit; /* db size of the last commit, 0 if none */
	size_t page1_off;     /* offset of the newest committed page 1, or 0 */
	int rc;               /* result of the first failing frame, or 0 */
	struct ltfs_err err;
};

#define CHECK_WALK_OK(w)                                                      \
	do {                                                                  \
		if ((w).rc != 0)                                              \
			t_fail(__FILE__, __LINE__,                            \
			       "wal walk stopped after %u frames: %s",        \
			       (w).frames, (w).err.msg);                      \
	} while (0)

/*
 * Walk frames the way a reader must: stop at the first frame that fails.
 * Checks that no page in a transaction lies beyond its commit size.
 */
static void wal_walk(const uint8_t *wal, size_t len, struct wal_walk *w)
{
	struct ltx_wal_header wh;
	struct ltfs_err err, *ep = &err;
	uint32_t running[2], txn_max = 0;
	size_t frame_size, off, txn_page1 = 0;

	memset(w, 0, sizeof(*w));
	CHECK_OK(ltx_wal_header_parse(wal, len, &wh, &err), ep);
	running[0] = wh.cksum1;
	running[1] = wh.cksum2;
	frame_size = LTX_WAL_FRAME_HEADER_SIZE + (size_t)wh.page_size;
	for (off = LTX_WAL_HEADER_SIZE; off + frame_size <= len;
	     off += frame_size) {
		struct ltx_wal_frame_header fh;

		w->rc = ltx_wal_frame_check(&wh, running, wal + off,
					    frame_size, &fh, &w->err);
		if (w->rc != 0)
			return;
		w->frames++;
		if (fh.pgno > txn_max)
			txn_max = fh.pgno;
		if (fh.pgno == 1)
			txn_page1 = off + LTX_WAL_FRAME_HEADER_SIZE;
		if (fh.commit != 0) {
			CHECK(txn_max <= fh.commit);
			w->commits++;
			w->last_commit = fh.commit;
			if (txn_page1)
				w->page1_off = txn_page1;
			txn_max = 0;
			txn_page1 = 0;
		}
	}
	/* SQLite writes whole frames; a torn tail would be a bug here. */
	CHECK_EQ(off, len);
}

/* ------------------------------------------------------------------------
 * Database header
 */
static void check_cli_db(uint32_t page_size, bool wal)
{
	struct ltx_db_header h;
	struct ltfs_err err, *ep = &err;
	char path[PATH_MAX_T];
	uint8_t *p;
	size_t len;

	snprintf(path, sizeof(path), "%s/db-%u-%s", t_tmpdir(), page_size,
		 wal ? "wal" : "delete");
	cli_make_db(path, page_size, wal ? "WAL" : "DELETE", 2000);
	p = t_read_file(path, &len);
	CHECK(ltx_db_header_is_sqlite(p, len));
	CHECK_OK(ltx_db_header_parse(p, len, &h, &err), ep);

	CHECK_EQ(h.page_size, page_size);
	/* Two bytes cannot hold 65536: the file must say 1. */
	CHECK_EQ(ltx_get_be16(p + 16), page_size == 65536 ? 1 : page_size);
	CHECK_EQ(h.write_version, wal ? 2 : 1);
	CHECK_EQ(h.read_version, wal ? 2 : 1);
	CHECK_EQ(ltx_db_header_is_wal(&h), wal);
	CHECK_EQ(h.reserved_space, 0);
	CHECK(h.page_count > 1);
	CHECK_EQ((uint64_t)h.page_count * page_size, len);
	CHECK_EQ(h.page_count, cli_u32(path, "PRAGMA page_count"));
	/* The in-header size is only trusted when these two agree. */
	CHECK_EQ(h.version_valid_for, h.change_counter);
	CHECK_EQ(h.schema_cookie, cli_u32(path, "PRAGMA schema_version"));
	CHECK_EQ(h.schema_format, 4);
	CHECK_EQ(h.text_encoding, 1); /* UTF-8 */
	CHECK_EQ(h.freelist_count, 0);
	CHECK_EQ(h.freelist_trunk, 0);
	CHECK_EQ(h.sqlite_version, (uint32_t)sqlite3_libversion_number());
	free(p);
}

TEST(sqlite_header_rollback_page_sizes)
{
	check_cli_db(512, false);
	check_cli_db(4096, false);
	check_cli_db(65536, false);
}

TEST(sqlite_header_wal_page_sizes)
{
	check_cli_db(512, true);
	check_cli_db(4096, true);
	check_cli_db(65536, true);
}

TEST(sqlite_header_freelist_and_counter)
{
	struct ltx_db_header before, after;
	struct ltfs_err err, *ep = &err;
	char path[PATH_MAX_T];
	uint8_t *p;
	size_t len;

	tmp_path(path, sizeof(path), "free.db");
	cli_make_db(path, 4096, "DELETE", 3000);
	p = t_read_file(path, &len);
	CHECK_OK(ltx_db_header_parse(p, len, &before, &err), ep);
	free(p);

	/* Dropping a table frees its pages without shrinking the file. */
	sh("sqlite3 '%s' 'DROP TABLE t; CREATE TABLE u(x);'", path);
	p = t_read_file(path, &len);
	CHECK_OK(ltx_db_header_parse(p, len, &after, &err), ep);
	free(p);

	CHECK_EQ(after.page_count, before.page_count);
	CHECK(after.freelist_count > 100);
	CHECK_EQ(after.freelist_count, cli_u32(path, "PRAGMA freelist_count"));
	CHECK(after.freelist_trunk >= 2);
	CHECK(after.freelist_trunk <= after.page_count);
	/* Two write transactions, two increments. */
	CHECK_EQ(after.change_counter, before.change_counter + 2);
	CHECK_EQ(after.schema_cookie, before.schema_cookie + 2);
}

/* A minimal valid header to break one field at a time. */
static void db_header_template(uint8_t *p)
{
	memset(p, 0, LTX_SQLITE_HEADER_SIZE);
	memcpy(p, "SQLite format 3", 16);
	ltx_put_be16(p + 16, 4096);
	p[18] = 1;
	p[19] = 1;
	p[21] = 64;
	p[22] = 32;
	p[23] = 32;
	ltx_put_be32(p + 24, 7);
	ltx_put_be32(p + 28, 3);
	ltx_put_be32(p + 44, 4);
	ltx_put_be32(p + 56, 1);
	ltx_put_be32(p + 92, 7);
	ltx_put_be32(p + 96, 3040001);
}

TEST(sqlite_header_errors)
{
	static const uint16_t bad_sizes[] = { 0, 2, 256, 1000, 4095, 4097,
					      0x8001, 0xffff };
	uint8_t p[LTX_SQLITE_HEADER_SIZE + 1];
	struct ltx_db_header h;
	struct ltfs_err err, *ep = &err;

	db_header_template(p);
	CHECK_OK(ltx_db_header_parse(p, LTX_SQLITE_HEADER_SIZE, &h, &err),
		 ep);
	CHECK_EQ(h.page_size, 4096);
	CHECK_EQ(h.page_count, 3);
	CHECK_EQ(h.sqlite_version, 3040001);
	CHECK_OK(ltx_db_header_parse(p, LTX_SQLITE_HEADER_SIZE, NULL, NULL),
		 NULL);

	/* Short buffers, including one that still holds the magic. */
	CHECK_RC(ltx_db_header_parse(p, 99, &h, &err), LTFS_E_TRUNCATED);
	CHECK(strstr(err.msg, "99 bytes") != NULL);
	CHECK_RC(ltx_db_header_parse(p, 0, &h, NULL), LTFS_E_TRUNCATED);
	CHECK_RC(ltx_db_header_parse(NULL, 100, &h, NULL), LTFS_E_TRUNCATED);
	CHECK(ltx_db_header_is_sqlite(p, 16));
	CHECK(!ltx_db_header_is_sqlite(p, 15));
	CHECK(!ltx_db_header_is_sqlite(NULL, 100));

	/* The NUL is part of the magic. */
	p[15] = ' ';
	CHECK(!ltx_db_header_is_sqlite(p, sizeof(p)));
	CHECK_RC(ltx_db_header_parse(p, sizeof(p), &h, &err), LTFS_E_FORMAT);
	CHECK(strstr(err.msg, "magic") != NULL);
	db_header_template(p);
	p[0] = 's';
	CHECK_RC(ltx_db_header_parse(p, sizeof(p), &h, NULL), LTFS_E_FORMAT);

	/* 1 is 65536; 32768 is the largest literal value. */
	db_header_template(p);
	ltx_put_be16(p + 16, 1);
	CHECK_OK(ltx_db_header_parse(p, sizeof(p), &h, &err), ep);
	CHECK_EQ(h.page_size, 65536);
	ltx_put_be16(p + 16, 32768);
	CHECK_OK(ltx_db_header_parse(p, sizeof(p), &h, &err), ep);
	CHECK_EQ(h.page_size, 32768);
	ltx_put_be16(p + 16, 512);
	CHECK_OK(ltx_db_header_parse(p, sizeof(p), &h, &err), ep);
	CHECK_EQ(h.page_size, 512);
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		char want[32];

		ltx_put_be16(p + 16, bad_sizes[i]);
		h.page_size = 12345;
		CHECK_RC(ltx_db_header_parse(p, sizeof(p), &h, &err),
			 LTFS_E_CORRUPT);
		snprintf(want, sizeof(want), "page size %u at offset 16",
			 bad_sizes[i]);
		CHECK(strstr(err.msg, want) != NULL);
		/* Nothing is written on failure. */
		CHECK_EQ(h.page_size, 12345);
	}

	/* Versions: 1 and 2 only, in either byte. */
	db_header_template(p);
	p[18] = 2;
	p[19] = 1;
	CHECK_OK(ltx_db_header_parse(p, sizeof(p), &h, &err), ep);
	CHECK(!ltx_db_header_is_wal(&h));
	p[18] = 0;
	CHECK_RC(ltx_db_header_parse(p, sizeof(p), &h, &err), LTFS_E_FORMAT);
	CHECK(strstr(err.msg, "write version 0 at offset 18") != NULL);
	p[18] = 3;
	CHECK_RC(ltx_db_header_parse(p, sizeof(p), &h, NULL), LTFS_E_FORMAT);
	p[18] = 2;
	p[19] = 3;
	CHECK_RC(ltx_db_header_parse(p, sizeof(p), &h, &err), LTFS_E_FORMAT);
	CHECK(strstr(err.msg, "read version 3 at offset 19") != NULL);
	p[19] = 0xff;
	CHECK_RC(ltx_db_header_parse(p, sizeof(p), &h, NULL), LTFS_E_FORMAT);

	/* Reserved space may not leave less than 480 usable bytes. */
	db_header_template(p);
	ltx_put_be16(p + 16, 512);
	p[20] = 32;
	CHECK_OK(ltx_db_header_parse(p, sizeof(p), &h, &err), ep);
	CHECK_EQ(h.reserved_space, 32);
	p[20] = 33;
	CHECK_RC(ltx_db_header_parse(p, sizeof(p), &h, &err), LTFS_E_CORRUPT);
	CHECK(strstr(err.msg, "offset 20") != NULL);
	ltx_put_be16(p + 16, 1024);
	p[20] = 255;
	CHECK_OK(ltx_db_header_parse(p, sizeof(p), &h, &err), ep);
}

/* ------------------------------------------------------------------------
 * WAL checksum
 */
TEST(wal_checksum_vectors)
{
	static const uint8_t words[16] = { 0, 0, 0, 1, 0, 0, 0, 2,
					   0, 0, 0, 3, 0, 0, 0, 4 };
	static const uint8_t ones[8] = { 0xff, 0xff, 0xff, 0xff,
					 0xff, 0xff, 0xff, 0xff };
	uint32_t s[2];

	/* Big-endian words 1, 2, 3, 4, worked by hand. */
	s[0] = s[1] = 0;
	ltx_wal_checksum(true, words, 8, s);
	CHECK_EQ(s[0], 1);      /* 0 + 1 + 0 */
	CHECK_EQ(s[1], 3);      /* 0 + 2 + 1 */
	ltx_wal_checksum(true, words + 8, 8, s);
	CHECK_EQ(s[0], 7);      /* 1 + 3 + 3 */
	CHECK_EQ(s[1], 14);     /* 3 + 4 + 7 */

	/* The same bytes as little-endian words. */
	s[0] = s[1] = 0;
	ltx_wal_checksum(false, words, 16, s);
	CHECK_EQ(s[0], 0x07000000);
	CHECK_EQ(s[1], 0x0e000000);

	/* Sums wrap at 32 bits. */
	s[0] = 1;
	s[1] = 0;
	ltx_wal_checksum(true, ones, 8, s);
	CHECK_EQ(s[0], 0);          /* 1 + 0xffffffff + 0 */
	CHECK_EQ(s[1], 0xffffffff); /* 0 + 0xffffffff + 0 */

	/* Nothing to sum leaves the state alone. */
	s[0] = 5;
	s[1] = 6;
	ltx_wal_checksum(false, words, 0, s);
	CHECK_EQ(s[0], 5);
	CHECK_EQ(s[1], 6);
}

TEST(wal_checksum_continues)
{
	uint8_t buf[4096];
	uint32_t whole[2] = { 0x1234, 0x5678 }, split[2] = { 0x1234, 0x5678 };

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	for (int be = 0; be <= 1; be++) {
		whole[0] = split[0] = 0x1234;
		whole[1] = split[1] = 0x5678;
		ltx_wal_checksum(be, buf, sizeof(buf), whole);
		ltx_wal_checksum(be, buf, 8, split);
		ltx_wal_checksum(be, buf + 8, 2040, split);
		ltx_wal_checksum(be, buf + 2048, 2048, split);
		CHECK_EQ(whole[0], split[0]);
		CHECK_EQ(whole[1], split[1]);
	}
}

/* ------------------------------------------------------------------------
 * WAL files written by SQLite
 */

/*
 * A WAL db with `txns` insert transactions after the CREATE TABLE, closed
 * without a checkpoint. Returns the page count SQLite reported.
 */
static uint32_t make_wal_db(const char *path, uint32_t page_size, int txns)
{
	char sql[512];
	uint32_t pages;
	sqlite3 *db;

	db = db_open(path);
	snprintf(sql, sizeof(sql), "PRAGMA page_size=%u", page_size);
	db_exec(db, sql);
	db_exec(db, "PRAGMA journal_mode=WAL");
	db_exec(db, "PRAGMA wal_autocheckpoint=0");
	db_keep_wal(db);
	db_exec(db, "CREATE TABLE t(i INTEGER PRIMARY KEY, v BLOB)");
	for (int k = 0; k < txns; k++) {
		snprintf(sql, sizeof(sql),
			 "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL "
			 "SELECT i + 1 FROM c WHERE i < %d) "
			 "INSERT INTO t(v) SELECT randomblob(300) FROM c",
			 10 + k * 20);
		db_exec(db, sql);
	}
	pages = db_u32(db, "PRAGMA page_count");
	if (sqlite3_close(db) != SQLITE_OK)
		t_fail(__FILE__, __LINE__, "sqlite3_close");
	return pages;
}

static void check_real_wal(uint32_t page_size)
{
	char db[PATH_MAX_T], walp[PATH_MAX_T];
	struct ltx_wal_header wh;
	struct ltx_db_header dh;
	struct wal_walk w;
	struct ltfs_err err, *ep = &err;
	uint32_t pages;
	uint8_t *wal;
	size_t len;

	snprintf(db, sizeof(db), "%s/w%u.db", t_tmpdir(), page_size);
	sibling_path(walp, sizeof(walp), db, "-wal");
	pages = make_wal_db(db, page_size, 6);
	wal = t_read_file(walp, &len);

	CHECK_OK(ltx_wal_header_parse(wal, len, &wh, &err), ep);
	/* The WAL has four bytes for the size: 65536 is stored as is. */
	CHECK_EQ(ltx_get_be32(wal + 8), page_size);
	CHECK_EQ(wh.page_size, page_size);
	CHECK_EQ(wh.version, LTX_WAL_VERSION);
	/* SQLite picks the word order of the machine that wrote it. */
	CHECK_EQ(wh.big_endian, host_is_big_endian());
	CHECK_EQ(wh.magic, host_is_big_endian() ? LTX_WAL_MAGIC_BE
						: LTX_WAL_MAGIC_LE);
	CHECK_EQ(wh.checkpoint_seq, 0);

	wal_walk(wal, len, &w);
	CHECK_WALK_OK(w);
	CHECK_EQ((uint64_t)w.frames * (24 + page_size) + 32, len);
	/* CREATE TABLE plus six inserts, each its own transaction. */
	CHECK_EQ(w.commits, 7);
	CHECK_EQ(w.last_commit, pages);
	CHECK(pages > 2);

	/*
	 * The database file was never checkpointed, so only the WAL's copy
	 * of page 1 knows the current size.
	 */
	CHECK(w.page1_off != 0);
	CHECK_OK(ltx_db_header_parse(wal + w.page1_off, page_size, &dh, &err),
		 ep);
	CHECK_EQ(dh.page_count, pages);
	CHECK_EQ(dh.page_size, page_size);
	CHECK(ltx_db_header_is_wal(&dh));
	CHECK((uint64_t)file_size(db) < (uint64_t)pages * page_size);
	free(wal);
}

TEST(wal_real_512)
{
	check_real_wal(512);
}

TEST(wal_real_4096)
{
	check_real_wal(4096);
}

TEST(wal_real_65536)
{
	check_real_wal(65536);
}

TEST(wal_frame_corruption)
{
	struct ltx_wal_frame_header fh, untouched;
	char db[PATH_MAX_T], walp[PATH_MAX_T];
	struct ltx_wal_header wh;
	struct ltfs_err err, *ep = &err;
	uint32_t running[2], saved[2];
	size_t len, fsz;
	uint8_t *wal, *f2, orig[LTX_WAL_FRAME_HEADER_SIZE + 4096];

	tmp_path(db, sizeof(db), "c.db");
	sibling_path(walp, sizeof(walp), db, "-wal");
	make_wal_db(db, 4096, 3);
	wal = t_read_file(walp, &len);
	CHECK_OK(ltx_wal_header_parse(wal, len, &wh, &err), ep);
	fsz = LTX_WAL_FRAME_HEADER_SIZE + 4096;
	CHECK(len >= 32 + 3 * fsz);

	/* Advance over frames 0 and 1; frame 2 is the victim. */
	running[0] = wh.cksum1;
	running[1] = wh.cksum2;
	CHECK_OK(ltx_wal_frame_check(&wh, running, wal + 32, fsz, &fh, &err),
		 ep);
	CHECK_OK(ltx_wal_frame_check(&wh, running, wal + 32 + fsz, fsz, NULL,
				     &err),
		 ep);
	saved[0] = running[0];
	saved[1] = running[1];
	f2 = wal + 32 + 2 * fsz;
	memcpy(orig, f2, fsz);
	memset(&untouched, 0xa5, sizeof(untouched));

#define EXPECT_FAIL(code, needle)                                             \
	do {                                                                  \
		fh = untouched;                                               \
		CHECK_RC(ltx_wal_frame_check(&wh, running, f2, fsz, &fh,      \
					     &err),                           \
			 (code));                                             \
		CHECK(strstr(err.msg, (needle)) != NULL);                     \
		CHECK_EQ(running[0], saved[0]);                               \
		CHECK_EQ(running[1], saved[1]);                               \
		CHECK_MEM(&fh, &untouched, sizeof(fh));                       \
		memcpy(f2, orig, fsz);                                        \
	} while (0)

	/* One bit in the page data, first and last byte. */
	f2[LTX_WAL_FRAME_HEADER_SIZE + 100] ^= 0x01;
	EXPECT_FAIL(LTFS_E_CHECKSUM, "checksum");
	f2[fsz - 1] ^= 0x80;
	EXPECT_FAIL(LTFS_E_CHECKSUM, "offset 16");
	/* Header bytes 0..8 are covered too: the commit field... */
	f2[7] ^= 0x01;
	EXPECT_FAIL(LTFS_E_CHECKSUM, "checksum");
	/* ...and so is the stored checksum, trivially. */
	f2[23] ^= 0x01;
	EXPECT_FAIL(LTFS_E_CHECKSUM, "checksum");
	f2[16] ^= 0x01;
	EXPECT_FAIL(LTFS_E_CHECKSUM, "checksum");
	/* Salts: a frame from another WAL generation. */
	f2[8] ^= 0x01;
	EXPECT_FAIL(LTFS_E_CHECKSUM, "salt1");
	f2[15] ^= 0x01;
	EXPECT_FAIL(LTFS_E_CHECKSUM, "salt2");
	CHECK(strstr(err.msg, "salt mismatch") != NULL);
	/* Page 0 does not exist. */
	ltx_put_be32(f2, 0);
	EXPECT_FAIL(LTFS_E_CORRUPT, "page number 0");
	/* The caller must pass exactly one frame. */
	fh = untouched;
	CHECK_RC(ltx_wal_frame_check(&wh, running, f2, fsz - 1, &fh, &err),
		 LTFS_E_USAGE);
	CHECK_RC(ltx_wal_frame_check(&wh, running, f2, fsz + 1, &fh, NULL),
		 LTFS_E_USAGE);
	CHECK_RC(ltx_wal_frame_check(&wh, running, f2, 0, &fh, NULL),
		 LTFS_E_USAGE);
	CHECK_EQ(running[0], saved[0]);
	CHECK_MEM(&fh, &untouched, sizeof(fh));
#undef EXPECT_FAIL

	/* Untouched, it passes and moves the running checksum on. */
	CHECK_OK(ltx_wal_frame_check(&wh, running, f2, fsz, &fh, &err), ep);
	CHECK_EQ(running[0], fh.cksum1);
	CHECK_EQ(running[1], fh.cksum2);
	CHECK(running[0] != saved[0] || running[1] != saved[1]);
	CHECK_EQ(fh.salt1, wh.salt1);
	CHECK_EQ(fh.salt2, wh.salt2);

	/* A frame checked out of order fails: the chain is the point. */
	running[0] = saved[0];
	running[1] = saved[1];
	CHECK_RC(ltx_wal_frame_check(&wh, running, wal + 32, fsz, NULL, &err),
		 LTFS_E_CHECKSUM);

	/* A corrupted page stops a full walk right there. */
	{
		struct wal_walk w;

		f2[LTX_WAL_FRAME_HEADER_SIZE + 4000] ^= 0x40;
		wal_walk(wal, len, &w);
		CHECK_RC(w.rc, LTFS_E_CHECKSUM);
		CHECK_EQ(w.frames, 2);
	}
	free(wal);
}

TEST(wal_header_errors)
{
	char db[PATH_MAX_T], walp[PATH_MAX_T];
	struct ltx_wal_header wh;
	struct ltfs_err err, *ep = &err;
	uint8_t orig[LTX_WAL_HEADER_SIZE], h[LTX_WAL_HEADER_SIZE];
	uint8_t *wal;
	size_t len;

	tmp_path(db, sizeof(db), "h.db");
	sibling_path(walp, sizeof(walp), db, "-wal");
	make_wal_db(db, 1024, 1);
	wal = t_read_file(walp, &len);
	memcpy(orig, wal, sizeof(orig));
	free(wal);

	memcpy(h, orig, sizeof(h));
	CHECK_OK(ltx_wal_header_parse(h, sizeof(h), &wh, &err), ep);
	CHECK_OK(ltx_wal_header_parse(h, sizeof(h), NULL, NULL), NULL);
	CHECK_EQ(wh.salt1, ltx_get_be32(h + 16));
	CHECK_EQ(wh.salt2, ltx_get_be32(h + 20));
	CHECK_EQ(wh.cksum1, ltx_get_be32(h + 24));
	CHECK_EQ(wh.cksum2, ltx_get_be32(h + 28));

	CHECK_RC(ltx_wal_header_parse(h, 31, &wh, &err), LTFS_E_TRUNCATED);
	CHECK(strstr(err.msg, "31 bytes") != NULL);
	CHECK_RC(ltx_wal_header_parse(h, 0, &wh, NULL), LTFS_E_TRUNCATED);
	CHECK_RC(ltx_wal_header_parse(NULL, 32, &wh, NULL), LTFS_E_TRUNCATED);

	/* Every covered byte matters, and so does the stored sum. */
	for (size_t i = 0; i < sizeof(h); i++) {
		int rc;

		memcpy(h, orig, sizeof(h));
		h[i] ^= 0x10;
		rc = ltx_wal_header_parse(h, sizeof(h), &wh, &err);
		CHECK(rc < 0);
		if (i >= 12) {
			CHECK_RC(rc, LTFS_E_CHECKSUM);
			CHECK(strstr(err.msg, "offset 24") != NULL);
		}
	}

	/* Field checks, with the checksum made valid again. */
	memcpy(h, orig, sizeof(h));
	ltx_put_be32(h, 0x377f0684);
	wal_reseal(h);
	CHECK_RC(ltx_wal_header_parse(h, sizeof(h), &wh, &err), LTFS_E_FORMAT);
	CHECK(strstr(err.msg, "magic 0x377f0684 at offset 0") != NULL);

	memcpy(h, orig, sizeof(h));
	ltx_put_be32(h + 4, 3007001);
	wal_reseal(h);
	CHECK_RC(ltx_wal_header_parse(h, sizeof(h), &wh, &err), LTFS_E_FORMAT);
	CHECK(strstr(err.msg, "version 3007001 at offset 4") != NULL);

	{
		static const uint32_t bad[] = { 0, 1, 256, 1000, 131072,
						0x80000000u, 0xffffffffu };

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			char want[48];

			memcpy(h, orig, sizeof(h));
			ltx_put_be32(h + 8, bad[i]);
			wal_reseal(h);
			CHECK_RC(ltx_wal_header_parse(h, sizeof(h), &wh, &err),
				 LTFS_E_CORRUPT);
			snprintf(want, sizeof(want), "page size %u at offset 8",
				 bad[i]);
			CHECK(strstr(err.msg, want) != NULL);
		}
	}
	memcpy(h, orig, sizeof(h));
	ltx_put_be32(h + 8, 65536);
	wal_reseal(h);
	CHECK_OK(ltx_wal_header_parse(h, sizeof(h), &wh, &err), ep);
	CHECK_EQ(wh.page_size, 65536);

	/* The same header with the other word order must be resealed. */
	memcpy(h, orig, sizeof(h));
	ltx_put_be32(h, ltx_get_be32(h) ^ 1);
	CHECK_RC(ltx_wal_header_parse(h, sizeof(h), &wh, NULL),
		 LTFS_E_CHECKSUM);
	wal_reseal(h);
	CHECK_OK(ltx_wal_header_parse(h, sizeof(h), &wh, &err), ep);
	CHECK_EQ(wh.big_endian, !host_is_big_endian());
}

/*
 * Rewrite a real WAL in the other word order and check the walk follows
 * the magic: SQLite on a machine of the other endianness would have
 * written exactly these bytes.
 */
TEST(wal_other_byte_order)
{
	char db[PATH_MAX_T], walp[PATH_MAX_T];
	struct ltx_wal_header wh, other;
	struct wal_walk before, after;
	struct ltfs_err err, *ep = &err;
	uint32_t s[2];
	uint8_t *wal, *copy;
	size_t len, fsz;

	tmp_path(db, sizeof(db), "e.db");
	sibling_path(walp, sizeof(walp), db, "-wal");
	make_wal_db(db, 512, 4);
	wal = t_read_file(walp, &len);
	CHECK_OK(ltx_wal_header_parse(wal, len, &wh, &err), ep);
	wal_walk(wal, len, &before);
	CHECK_WALK_OK(before);

	copy = malloc(len);
	CHECK(copy != NULL);
	memcpy(copy, wal, len);
	ltx_put_be32(copy, wh.magic ^ 1);
	wal_reseal(copy);
	CHECK_OK(ltx_wal_header_parse(copy, len, &other, &err), ep);
	CHECK_EQ(other.big_endian, !wh.big_endian);

	fsz = LTX_WAL_FRAME_HEADER_SIZE + 512;
	s[0] = other.cksum1;
	s[1] = other.cksum2;
	for (size_t off = 32; off + fsz <= len; off += fsz) {
		uint8_t *f = copy + off;

		ltx_wal_checksum(other.big_endian, f, 8, s);
		ltx_wal_checksum(other.big_endian, f + 24, 512, s);
		ltx_put_be32(f + 16, s[0]);
		ltx_put_be32(f + 20, s[1]);
	}
	wal_walk(copy, len, &after);
	CHECK_WALK_OK(after);
	CHECK_EQ(after.frames, before.frames);
	CHECK_EQ(after.commits, before.commits);
	CHECK_EQ(after.last_commit, before.last_commit);

	/* The frames' sums really differ between the two orders. */
	CHECK(ltx_get_be32(copy + 32 + 16) != ltx_get_be32(wal + 32 + 16));

	/* Old frames under the new header: the first one already fails. */
	memcpy(copy + 32, wal + 32, len - 32);
	wal_walk(copy, len, &after);
	CHECK_RC(after.rc, LTFS_E_CHECKSUM);
	CHECK_EQ(after.frames, 0);
	free(copy);
	free(wal);
}

/*
 * After a RESTART checkpoint the next writer starts the WAL over with new
 * salts; frames past the new end are left from the old generation and
 * must stop the walk with a salt mismatch.
 */
TEST(wal_restart_leaves_stale_frames)
{
	char db[PATH_MAX_T], walp[PATH_MAX_T];
	struct ltx_wal_header wh;
	struct wal_walk w;
	struct ltfs_err err, *ep = &err;
	uint32_t old_salt1, pages;
	sqlite3 *h;
	uint8_t *wal;
	size_t len, fsz;

	tmp_path(db, sizeof(db), "r.db");
	sibling_path(walp, sizeof(walp), db, "-wal");
	h = db_open(db);
	db_exec(h, "PRAGMA page_size=1024");
	db_exec(h, "PRAGMA journal_mode=WAL");
	db_exec(h, "PRAGMA wal_autocheckpoint=0");
	db_keep_wal(h);
	db_exec(h, "CREATE TABLE t(v)");
	db_exec(h, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
		   "FROM c WHERE i < 500) "
		   "INSERT INTO t SELECT randomblob(200) FROM c");
	wal = t_read_file(walp, &len);
	CHECK_OK(ltx_wal_header_parse(wal, len, &wh, &err), ep);
	old_salt1 = wh.salt1;
	free(wal);

	db_exec(h, "PRAGMA wal_checkpoint(RESTART)");
	db_exec(h, "INSERT INTO t VALUES (1)");
	pages = db_u32(h, "PRAGMA page_count");
	if (sqlite3_close(h) != SQLITE_OK)
		t_fail(__FILE__, __LINE__, "sqlite3_close");

	wal = t_read_file(walp, &len);
	CHECK_OK(ltx_wal_header_parse(wal, len, &wh, &err), ep);
	CHECK_EQ(wh.checkpoint_seq, 1);
	CHECK_EQ(wh.salt1, old_salt1 + 1);
	fsz = LTX_WAL_FRAME_HEADER_SIZE + 1024;
	wal_walk(wal, len, &w);
	CHECK_RC(w.rc, LTFS_E_CHECKSUM);
	CHECK(strstr(w.err.msg, "salt mismatch") != NULL);
	CHECK_EQ(w.commits, 1);
	CHECK_EQ(w.last_commit, pages);
	/* The stale frame carries the previous generation's salt. */
	CHECK_EQ(ltx_get_be32(wal + 32 + w.frames * fsz + 8), old_salt1);
	free(wal);
}

/* ------------------------------------------------------------------------
 * Rollback journal
 */
TEST(journal_persist_is_zeroed)
{
	char db[PATH_MAX_T], jp[PATH_MAX_T];
	static const uint8_t zero[LTX_JOURNAL_HEADER_SIZE];
	struct ltx_journal_header jh;
	struct ltfs_err err;
	uint8_t *j;
	size_t len;
	sqlite3 *h;

	tmp_path(db, sizeof(db), "p.db");
	sibling_path(jp, sizeof(jp), db, "-journal");
	h = db_open(db);
	db_exec(h, "PRAGMA journal_mode=PERSIST");
	db_exec(h, "CREATE TABLE t(v)");
	db_exec(h, "INSERT INTO t VALUES (randomblob(5000))");
	if (sqlite3_close(h) != SQLITE_OK)
		t_fail(__FILE__, __LINE__, "sqlite3_close");

	/* Committed: SQLite zeroed the header but kept the file. */
	j = t_read_file(jp, &len);
	CHECK(len > LTX_JOURNAL_HEADER_SIZE);
	CHECK_MEM(j, zero, LTX_JOURNAL_HEADER_SIZE);
	memset(&jh, 0x5a, sizeof(jh));
	CHECK_RC(ltx_journal_header_parse(j, len, &jh, &err), LTFS_E_STATE);
	CHECK(strstr(err.msg, "magic") != NULL);
	CHECK_EQ(jh.page_size, 0x5a5a5a5a);
	free(j);
}

/*
 * A real hot journal: a child spills a big update to the database file
 * (cache_size=1 forces it, and SQLite must sync the journal header first)
 * and dies without committing. The CREATE TABLE comes first so that page 1
 * is among the records the first header counts.
 */
TEST(journal_hot)
{
	char db[PATH_MAX_T], jp[PATH_MAX_T];
	struct ltx_journal_header jh;
	struct ltx_db_header dh;
	struct ltfs_err err, *ep = &err;
	uint32_t pages_before, records = 0;
	bool saw_page1 = false;
	int status = 0;
	uint8_t *j;
	size_t len, off, rsz;
	pid_t pid;

	tmp_path(db, sizeof(db), "hot.db");
	sibling_path(jp, sizeof(jp), db, "-journal");
	cli_make_db(db, 4096, "DELETE", 2000);
	pages_before = (uint32_t)(file_size(db) / 4096);

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		sqlite3 *h = NULL;

		if (sqlite3_open(db, &h) != SQLITE_OK ||
		    sqlite3_exec(h,
				 "PRAGMA cache_size=1; BEGIN; "
				 "CREATE TABLE u(x); "
				 "UPDATE t SET v = randomblob(200); "
				 "INSERT INTO t(v) SELECT v FROM t;",
				 NULL, NULL, NULL) != SQLITE_OK)
			_exit(2);
		_exit(0); /* no COMMIT, no close: a crash */
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	j = t_read_file(jp, &len);
	CHECK_OK(ltx_journal_header_parse(j, len, &jh, &err), ep);
	CHECK_EQ(jh.page_size, 4096);
	CHECK_EQ(jh.db_pages, pages_before);
	CHECK(jh.sector_size >= 512 && jh.sector_size <= 65536);
	CHECK_EQ(jh.sector_size & (jh.sector_size - 1), 0);
	/* synchronous=FULL: a real count, not "until end of file". */
	CHECK(jh.nrec > 0 && jh.nrec != 0xffffffffu);
	/* The spill grew the database: SQLite did write to it. */
	CHECK((uint64_t)file_size(db) > (uint64_t)pages_before * 4096);

	/*
	 * Records follow the header's sector: pgno, page, checksum seeded by
	 * the nonce. Verifying them proves nonce, sector and page size.
	 */
	rsz = 4 + 4096 + 4;
	CHECK(len >= jh.sector_size + (size_t)jh.nrec * rsz);
	for (off = jh.sector_size; records < jh.nrec; off += rsz, records++) {
		uint32_t pgno = ltx_get_be32(j + off), sum = jh.nonce;
		const uint8_t *page = j + off + 4;

		CHECK(pgno >= 1 && pgno <= jh.db_pages);
		for (int i = 4096 - 200; i > 0; i -= 200)
			sum += page[i];
		CHECK_EQ(ltx_get_be32(page + 4096), sum);
		if (pgno == 1) {
			CHECK_OK(ltx_db_header_parse(page, 4096, &dh, &err),
				 ep);
			CHECK_EQ(dh.page_count, pages_before);
			saw_page1 = true;
		}
	}
	CHECK(saw_page1);
	free(j);

	/* SQLite agrees it was hot: it rolls back and removes it. */
	CHECK_EQ(cli_u32(db, "SELECT count(*) FROM t"), 2000);
	CHECK(access(jp, F_OK) != 0 && errno == ENOENT);
	CHECK_EQ(file_size(db), (off_t)pages_before * 4096);
}

static void journal_template(uint8_t *p)
{
	memset(p, 0, 512);
	memcpy(p, ltx_journal_magic, 8);
	ltx_put_be32(p + 8, 5);
	ltx_put_be32(p + 12, 0xdeadbeef);
	ltx_put_be32(p + 16, 42);
	ltx_put_be32(p + 20, 512);
	ltx_put_be32(p + 24, 4096);
}

TEST(journal_header_errors)
{
	static const uint8_t magic[8] = { 0xd9, 0xd5, 0x05, 0xf9,
					  0x20, 0xa1, 0x63, 0xd7 };
	static const uint32_t bad_sector[] = { 0, 1, 16, 31, 48, 100, 513,
					       131072, 0xffffffffu };
	static const uint32_t bad_page[] = { 0, 1, 256, 511, 1000, 4097,
					     131072, 0x80000000u };
	struct ltx_journal_header jh;
	struct ltfs_err err, *ep = &err;
	uint8_t p[512];

	CHECK_MEM(ltx_journal_magic, magic, 8);

	journal_template(p);
	CHECK_OK(ltx_journal_header_parse(p, 28, &jh, &err), ep);
	CHECK_EQ(jh.nrec, 5);
	CHECK_EQ(jh.nonce, 0xdeadbeef);
	CHECK_EQ(jh.db_pages, 42);
	CHECK_EQ(jh.sector_size, 512);
	CHECK_EQ(jh.page_size, 4096);
	CHECK_OK(ltx_journal_header_parse(p, sizeof(p), NULL, NULL), NULL);

	/* synchronous=OFF journals say "read until end of file". */
	ltx_put_be32(p + 8, 0xffffffffu);
	CHECK_OK(ltx_journal_header_parse(p, sizeof(p), &jh, &err), ep);
	CHECK_EQ(jh.nrec, 0xffffffffu);

	/* Short input is truncated even when it would have been zeroed. */
	CHECK_RC(ltx_journal_header_parse(p, 27, &jh, &err), LTFS_E_TRUNCATED);
	CHECK(strstr(err.msg, "27 bytes") != NULL);
	CHECK_RC(ltx_journal_header_parse(p, 8, &jh, NULL), LTFS_E_TRUNCATED);
	CHECK_RC(ltx_journal_header_parse(NULL, 28, &jh, NULL),
		 LTFS_E_TRUNCATED);
	memset(p, 0, sizeof(p));
	CHECK_RC(ltx_journal_header_parse(p, 0, &jh, NULL), LTFS_E_TRUNCATED);

	/* No magic: zeroed, or one byte off. */
	CHECK_RC(ltx_journal_header_parse(p, sizeof(p), &jh, &err),
		 LTFS_E_STATE);
	journal_template(p);
	p[7] ^= 1;
	CHECK_RC(ltx_journal_header_parse(p, sizeof(p), &jh, NULL),
		 LTFS_E_STATE);
	/* SQLite's initial header: magic and nRec zero, sizes present. */
	journal_template(p);
	memset(p, 0, 12);
	CHECK_RC(ltx_journal_header_parse(p, sizeof(p), &jh, NULL),
		 LTFS_E_STATE);

	for (size_t i = 0; i < sizeof(bad_sector) / sizeof(bad_sector[0]);
	     i++) {
		char want[48];

		journal_template(p);
		ltx_put_be32(p + 20, bad_sector[i]);
		CHECK_RC(ltx_journal_header_parse(p, sizeof(p), &jh, &err),
			 LTFS_E_CORRUPT);
		snprintf(want, sizeof(want), "sector size %u at offset 20",
			 bad_sector[i]);
		CHECK(strstr(err.msg, want) != NULL);
	}
	for (size_t i = 0; i < sizeof(bad_page) / sizeof(bad_page[0]); i++) {
		char want[48];

		journal_template(p);
		ltx_put_be32(p + 24, bad_page[i]);
		CHECK_RC(ltx_journal_header_parse(p, sizeof(p), &jh, &err),
			 LTFS_E_CORRUPT);
		snprintf(want, sizeof(want), "page size %u at offset 24",
			 bad_page[i]);
		CHECK(strstr(err.msg, want) != NULL);
	}

	/* The edges of both ranges are fine. */
	journal_template(p);
	ltx_put_be32(p + 20, 32);
	ltx_put_be32(p + 24, 512);
	CHECK_OK(ltx_journal_header_parse(p, sizeof(p), &jh, &err), ep);
	ltx_put_be32(p + 20, 65536);
	ltx_put_be32(p + 24, 65536);
	CHECK_OK(ltx_journal_header_parse(p, sizeof(p), &jh, &err), ep);
	CHECK_EQ(jh.sector_size, 65536);
	CHECK_EQ(jh.page_size, 65536);
}
