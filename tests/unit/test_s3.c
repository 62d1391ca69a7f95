/*
 * The pieces of the S3 client that need no server: SHA-256 against the
 * FIPS 180-4 examples (and streaming in odd splits), RFC 3339 times as S3
 * and Litestream write them, and the settings s3_open() accepts or refuses
 * with the field named. Requests themselves are tested against a real
 * server in tests/cluster/s3.sh.
 */
#include <errno.h>

#include "cluster/cluster.h"

#include "t.h"

TEST(s3_sha256_vectors)
{
	static const struct { const char *in; const char *hex; } v[] = {
		{ "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
		{ "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
		{ "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
		  "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1" },
	};
	char out[65];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		s3_sha256_hex(v[i].in, strlen(v[i].in), out);
		CHECK_STR(out, v[i].hex);
	}
}

TEST(s3_sha256_streaming)
{
	/* one million 'a' (FIPS 180-4), fed in uneven pieces */
	static char a[1000];
	struct s3_sha256 s;
	char out[65];
	size_t fed = 0, step = 1;

	memset(a, 'a', sizeof(a));
	s3_sha256_init(&s);
	while (fed < 1000000) {
		size_t n = step % 997 + 1;

		if (n > 1000000 - fed)
			n = 1000000 - fed;
		s3_sha256_update(&s, a, n);
		fed += n;
		step = step * 31 + 7;
	}
	s3_sha256_final(&s, out);
	CHECK_STR(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	/* every length around the padding boundaries equals the one-shot digest */
	for (size_t len = 50; len < 140; len++) {
		char one[65];

		s3_sha256_hex(a, len, one);
		s3_sha256_init(&s);
		s3_sha256_update(&s, a, len / 3);
		s3_sha256_update(&s, a, len - len / 3);
		s3_sha256_final(&s, out);
		CHECK_STR(out, one);
	}
}

TEST(s3_parse_time)
{
	CHECK_EQ(s3_parse_time("1970-01-01T00:00:00Z"), 0);
	CHECK_EQ(s3_parse_time("2026-11-21T10:14:24.123Z"), 1795256064123ll);
	CHECK_EQ(s3_parse_time("2026-11-21T10:14:24.123456789Z"), 1795256064123ll);
	CHECK_EQ(s3_parse_time("2026-11-21T10:14:24Z"), 1795256064000ll);
	CHECK_EQ(s3_parse_time("2026-11-21T12:14:24.5+02:00"), 1795256064500ll);
	CHECK_EQ(s3_parse_time("2026-11-21T09:14:24-01:00"), 1795256064000ll);
	CHECK_EQ(s3_parse_time("yesterday"), 0);
	CHECK_EQ(s3_parse_time("2026-11-21T10:14:24"), 0); /* no zone */
}

static int open_with(const char *url, const char *endpoint, struct s3 **out,
		     struct ltfs_err *err)
{
	struct s3_config cfg = { .url = url, .endpoint = endpoint, .path_style = -1,
				 .access_key = "AKID", .secret_key = "SECRET" };

	return s3_open(out, &cfg, err);
}

TEST(s3_open_settings)
{
	struct ltfs_err err = { 0 };
	struct s3 *s3;
	char key[S3_KEY_MAX];

	CHECK_OK(open_with("s3://my-bucket/a/b/", "http://127.0.0.1:9000/", &s3, &err), &err);
	CHECK_STR(s3_bucket(s3), "my-bucket");
	CHECK_STR(s3_prefix(s3), "a/b");
	CHECK_STR(s3_endpoint(s3), "http://127.0.0.1:9000");
	CHECK_OK(s3_key(s3, key, "%s/%04x/x.ltx", "app.db", 9), &err);
	CHECK_STR(key, "a/b/app.db/0009/x.ltx");
	s3_free(s3);

	CHECK_OK(open_with("s3://bkt", "http://h:1", &s3, &err), &err);
	CHECK_STR(s3_prefix(s3), "");
	CHECK_OK(s3_key(s3, key, "db"), &err);
	CHECK_STR(key, "db");
	s3_free(s3);

	CHECK_EQ(open_with("http://bkt/x", "http://h:1", &s3, &err), LTFS_E_CONFIG);
	CHECK(strstr(err.msg, "s3://BUCKET") != NULL);
	CHECK_EQ(open_with("s3://ab/x", "http://h:1", &s3, &err), LTFS_E_CONFIG);
	CHECK(strstr(err.msg, "3 to 63") != NULL);
	CHECK_EQ(open_with("s3://Upper/x", "http://h:1", &s3, &err), LTFS_E_CONFIG);
	CHECK_EQ(open_with("s3://bkt/x", "ftp://h", &s3, &err), LTFS_E_CONFIG);
	CHECK(strstr(err.msg, "ftp://h") != NULL);
	CHECK_EQ(open_with("s3://bkt/x", "http://h/path", &s3, &err), LTFS_E_CONFIG);
}

TEST(s3_open_part_size)
{
	struct s3_config cfg = { .url = "s3://bkt/p", .endpoint = "http://127.0.0.1:1",
				 .access_key = "AKID", .secret_key = "SECRET" };
	struct ltfs_err err = { 0 };
	struct s3 *s3;

	cfg.part_size = 5ull << 20;
	CHECK_OK(s3_open(&s3, &cfg, &err), &err);
	s3_free(s3);
	cfg.part_size = 5ull << 30;
	CHECK_OK(s3_open(&s3, &cfg, &err), &err);
	s3_free(s3);
	cfg.part_size = (5ull << 20) - 1; /* S3 refuses smaller parts */
	CHECK_EQ(s3_open(&s3, &cfg, &err), LTFS_E_CONFIG);
	CHECK(strstr(err.msg, "5MiB to 5GiB") != NULL);
	cfg.part_size = (5ull << 30) + 1;
	CHECK_EQ(s3_open(&s3, &cfg, &err), LTFS_E_CONFIG);
}

TEST(s3_ltx_key_round_trip)
{
	static const char *const names[] = { "a", "a.db", "app.db", "dir/sub/x.db" };
	struct ltfs_err err = { 0 };
	char key[S3_KEY_MAX], name[256];
	unsigned level;
	uint64_t min, max;
	struct s3 *s3;

	CHECK_OK(open_with("s3://bkt/pre/fix", "http://h:1", &s3, &err), &err);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		CHECK_EQ(s3_ltx_key(s3, key, names[i], 9, 1, 0x2716), 0);
		CHECK_EQ(s3_ltx_key_parse("pre/fix", key, name, sizeof(name), &level, &min, &max), 0);
		CHECK_STR(name, names[i]);
		CHECK_EQ(level, 9u);
		CHECK_EQ(min, 1u);
		CHECK_EQ(max, 0x2716u);
	}
	s3_free(s3);
	CHECK_EQ(s3_ltx_key_parse("pre/fix", "pre/fix/0000/0000000000000001-0000000000000001.ltx",
				  name, sizeof(name), &level, &min, &max), -1); /* no name */
	CHECK_EQ(s3_ltx_key_parse("pre/fix", "pre/fix/a/0000/0000000000000001-000000000000001.ltx",
				  name, sizeof(name), &level, &min, &max), -1);
	CHECK_EQ(s3_ltx_key_parse("pre", "pre/fix/a/0000/0000000000000002-0000000000000001.ltx",
				  name, sizeof(name), &level, &min, &max), -1); /* max < min */
}

TEST(s3_open_needs_credentials)
{
	struct s3_config cfg = { .url = "s3://bkt/p", .endpoint = "http://127.0.0.1:1" };
	struct ltfs_err err = { 0 };
	struct s3 *s3;

	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	CHECK_EQ(s3_open(&s3, &cfg, &err), LTFS_E_CONFIG);
	CHECK(strstr(err.msg, "AWS_ACCESS_KEY_ID") != NULL);
	CHECK(strstr(err.msg, "http://127.0.0.1:1") != NULL);
	setenv("AWS_ACCESS_KEY_ID", "k", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "s", 1);
	CHECK_OK(s3_open(&s3, &cfg, &err), &err);
	s3_free(s3);
}

TEST(s3_unreachable_endpoint_names_it)
{
	struct s3_config cfg = { .url = "s3://bkt/p", .endpoint = "http://127.0.0.1:1",
				 .access_key = "k", .secret_key = "very-secret-value",
				 .attempts = 2, .timeout_ms = 2000, .path_style = -1 };
	struct ltfs_err err = { 0 };
	struct s3_conn *c;
	struct s3 *s3;
	struct ltfs_buf b;

	CHECK_OK(s3_open(&s3, &cfg, &err), &err);
	CHECK_OK(s3_conn_open(s3, &c, &err), &err);
	ltfs_buf_init(&b, 1024);
	CHECK_EQ(s3_get(c, "p/x", 0, 0, &b, NULL, &err), -EIO);
	CHECK(strstr(err.msg, "http://127.0.0.1:1/bkt/p/x") != NULL);
	CHECK(strstr(err.msg, "very-secret-value") == NULL);
	{
		uint64_t req, retries;

		s3_conn_counts(c, &req, &retries);
		CHECK_EQ(req, 2);
		CHECK_EQ(retries, 1);
	}
	ltfs_buf_release(&b);
	s3_conn_free(c);
	s3_free(s3);
}
