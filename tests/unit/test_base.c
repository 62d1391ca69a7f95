/* The base layer: error codes and context, bounded buffers, logging. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "t.h"

TEST(base_strerror)
{
	CHECK_STR(ltfs_strerror(0), "success");
	CHECK_STR(ltfs_strerror(LTFS_E_CHECKSUM), "checksum mismatch");
	CHECK_STR(ltfs_strerror(-ENOENT), strerror(ENOENT));
	CHECK_STR(ltfs_strerror(-99999), "unknown error");
}

TEST(base_err_context)
{
	struct ltfs_err err = { 0 };

	CHECK_EQ(ltfs_err_set(&err, LTFS_E_CORRUPT, "page %u: bad", 7u), LTFS_E_CORRUPT);
	CHECK_STR(err.msg, "page 7: bad");
	ltfs_err_prefix(&err, "'%s'", "a.ltx");
	CHECK_STR(err.msg, "'a.ltx': page 7: bad");
	CHECK_EQ(ltfs_err_set(NULL, LTFS_E_TXID, "ignored"), LTFS_E_TXID);
	ltfs_err_set(&err, LTFS_E_LIMIT, NULL);
	CHECK_STR(err.msg, "size limit exceeded");
	ltfs_err_clear(&err);
	CHECK_EQ(err.code, 0);
	CHECK_STR(err.msg, "");
}

TEST(base_buf_cap)
{
	struct ltfs_buf b;
	uint8_t *p;

	ltfs_buf_init(&b, 10);
	CHECK_OK(ltfs_buf_append(&b, "hello", 5), NULL);
	CHECK_OK(ltfs_buf_printf(&b, "%d", 1234), NULL);
	CHECK_EQ(b.len, 9);
	CHECK_STR((char *)b.data, "hello1234");
	/* past the cap: error, and the buffer released itself */
	CHECK_RC(ltfs_buf_append(&b, "xy", 2), LTFS_E_LIMIT);
	CHECK(b.data == NULL);
	CHECK_EQ(b.len, 0);
	CHECK_OK(ltfs_buf_reserve(&b, 10, &p), NULL);
	CHECK_RC(ltfs_buf_reserve(&b, 11, &p), LTFS_E_LIMIT);
	CHECK_RC(ltfs_buf_append(&b, "x", SIZE_MAX), LTFS_E_LIMIT);
	ltfs_buf_release(&b);
}

static char *log_line(enum ltfs_log_format fmt, enum ltfs_log_level lvl,
		      const char *msg)
{
	static char buf[4096];
	struct ltfs_log log;
	char path[4096];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/log", t_tmpdir());
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ltfs_log_init(&log, LTFS_LOG_INFO, fmt, fd);
	ltfs_logf(&log, lvl, "fs", "%s", msg);
	ltfs_debug(&log, "fs", "never %s", "shown");
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

TEST(base_log_text)
{
	char *l = log_line(LTFS_LOG_TEXT, LTFS_LOG_WARN, "disk 'x' is full");

	/* 2026-11-21T10:14:24.123Z WARN  fs: disk 'x' is full */
	CHECK(strlen(l) > 25 && l[4] == '-' && l[10] == 'T' && l[23] == 'Z');
	CHECK(strstr(l, " WARN  fs: disk 'x' is full\n") != NULL);
	CHECK(strchr(l, '\n') == l + strlen(l) - 1);
	CHECK_STR(log_line(LTFS_LOG_TEXT, LTFS_LOG_DEBUG, "hidden"), "");
}

TEST(base_log_json)
{
	char *l = log_line(LTFS_LOG_JSON, LTFS_LOG_ERROR, "bad \"name\"\n\ttab");

	CHECK(strncmp(l, "{\"time\":\"", 9) == 0);
	CHECK(strstr(l, "\"level\":\"error\",\"subsys\":\"fs\","
			"\"msg\":\"bad \\\"name\\\"\\n\\u0009tab\"}\n") != NULL);
}

TEST(base_log_journal)
{
	CHECK_STR(log_line(LTFS_LOG_JOURNAL, LTFS_LOG_WARN, "disk 'x' is full"),
		  "<4>fs: disk 'x' is full\n");
	CHECK_STR(log_line(LTFS_LOG_JOURNAL, LTFS_LOG_ERROR, "gone"), "<3>fs: gone\n");
	CHECK_STR(log_line(LTFS_LOG_JOURNAL, LTFS_LOG_INFO, "ok"), "<6>fs: ok\n");
}

TEST(base_log_parse)
{
	enum ltfs_log_level lvl;
	enum ltfs_log_format fmt;

	CHECK_OK(ltfs_log_parse_level("debug", &lvl), NULL);
	CHECK_EQ(lvl, LTFS_LOG_DEBUG);
	CHECK_RC(ltfs_log_parse_level("loud", &lvl), LTFS_E_USAGE);
	CHECK_OK(ltfs_log_parse_format("json", &fmt), NULL);
	CHECK_EQ(fmt, LTFS_LOG_JSON);
	CHECK_OK(ltfs_log_parse_format("journal", &fmt), NULL);
	CHECK_EQ(fmt, LTFS_LOG_JOURNAL);
	CHECK_RC(ltfs_log_parse_format("xml", &fmt), LTFS_E_USAGE);
}

TEST(base_filenames)
{
	char name[LTX_FILENAME_SIZE];
	uint64_t a, b;

	ltx_format_filename(0x65, 0xc8, name);
	CHECK_STR(name, "0000000000000065-00000000000000c8.ltx");
	CHECK_OK(ltx_parse_filename(name, &a, &b), NULL);
	CHECK_EQ(a, 0x65);
	CHECK_EQ(b, 0xc8);
	CHECK_RC(ltx_parse_filename("0000000000000065-00000000000000C8.ltx", &a, &b),
		 LTFS_E_USAGE);
	CHECK_RC(ltx_parse_filename("65-c8.ltx", &a, &b), LTFS_E_USAGE);
	CHECK_RC(ltx_parse_filename("0000000000000065-00000000000000c8.ltx.tmp", &a, &b),
		 LTFS_E_USAGE);
}

TEST(base_timestamp)
{
	char ts[40];

	ltx_format_timestamp(1735689601000, ts, sizeof(ts));
	CHECK_STR(ts, "2025-01-01T00:00:01.000Z");
	ltx_format_timestamp(1735689600123, ts, sizeof(ts));
	CHECK_STR(ts, "2025-01-01T00:00:00.123Z");
}
