/*
 * restore_cmd.c - "ltfs restore": a database from the bucket into a file,
 * and the S3 settings every command that talks to the bucket shares.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "cluster/cluster.h"
#include "cmd/cmd.h"

static const char restore_usage[] =
	"usage: ltfs restore [OPTIONS] s3://BUCKET/PREFIX/NAME\n"
	"       ltfs restore --config FILE [OPTIONS] NAME\n"
	"\n"
	"Restores database NAME from the bucket into a file (default: ./NAME's\n"
	"last path component). It picks the fewest files (a snapshot, compacted\n"
	"levels, then the newest uploads), downloads them in parallel, applies\n"
	"them in order verifying every file and checksum, and writes OUT\n"
	"atomically (OUT.tmp, fsync, rename). A bad object stops the restore with\n"
	"its key named; OUT is then not written.\n"
	"\n"
	"  -o, --output OUT     the file to write\n"
	"  --txid N             the state right after transaction N (decimal, or\n"
	"                       16 hex digits as in LTX file names)\n"
	"  --timestamp TIME     the newest state committed before TIME (RFC 3339,\n"
	"                       e.g. 2026-11-21T10:14:24Z)\n"
	"  -f, --force          replace OUT and remove its -wal, -shm, -journal\n"
	"  --integrity-check    run SQLite's PRAGMA integrity_check on the result\n"
	"                       (a failed check removes OUT and exits 1)\n"
	"  --parallel N         downloads at once (default 8)\n"
	"  --dry-run            print the plan's size, write nothing\n"
	"  --json               a JSON summary on stdout instead of text\n"
	"  -c, --config FILE    take the bucket from s3.url (then give NAME)\n"
	"\n"
	"Endpoint and credentials: s3.* in the config, else AWS_ENDPOINT_URL_S3\n"
	"(or AWS_ENDPOINT_URL), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,\n"
	"AWS_SESSION_TOKEN, AWS_REGION. A database in a subdirectory of the\n"
	"mount (NAME with '/') needs the --config form.\n"
	"Exit status: 0 restored, 1 failed (nothing written), 2 usage.\n";

int cmd_s3_open(const struct cmd_config *c, const char *url, struct s3 **out,
		struct ltfs_err *err)
{
	struct s3_config cfg = {
		.url = url,
		.endpoint = c->s3_endpoint,
		.region = c->s3_region,
		.access_key = c->s3_access_key,
		.secret_key = c->s3_secret_key,
		.path_style = c->s3_path_style,
		.part_size = c->s3_part_size,
	};

	return s3_open(out, &cfg, err);
}

struct progress {
	bool tty;
	int last;
};

static void show_progress(void *ctx, uint64_t bytes, uint64_t total, size_t files, size_t nfiles)
{
	struct progress *p = ctx;
	int pct = total ? (int)(bytes * 100 / total) : 100;
	int bar = pct / 5;

	if (!p->tty || (pct == p->last && files != nfiles))
		return;
	p->last = pct;
	fprintf(stderr, "\r[%.*s%*s] %3d%%  %zu/%zu files  %.1f/%.1f MiB", bar,
		"####################", 20 - bar, "", pct, files, nfiles, (double)bytes / 1048576.0,
		(double)total / 1048576.0);
	if (files == nfiles)
		fputc('\n', stderr);
}

static int integrity_check(const char *path, char *msg, size_t n)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char uri[3 * 4096 + 32] = "file:";
	size_t u = 5;
	int rc;

	/* immutable: no locks and no -wal or -shm beside the file we made;
	 * the characters a URI gives meaning to are escaped */
	for (const char *p = path; *p && u + 4 < sizeof(uri) - 16; p++) {
		if (*p == '%' || *p == '?' || *p == '#')
			u += (size_t)snprintf(uri + u, 4, "%%%02x", (unsigned char)*p);
		else
			uri[u++] = *p;
	}
	snprintf(uri + u, sizeof(uri) - u, "?immutable=1");
	rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);

	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
		const char *r = (const char *)sqlite3_column_text(st, 0);

		snprintf(msg, n, "%s", r ? r : "");
		rc = r && strcmp(r, "ok") == 0 ? 0 : -1;
	} else {
		snprintf(msg, n, "%s", db ? sqlite3_errmsg(db) : "cannot open");
		rc = -1;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
	return rc;
}

/* s3://BUCKET/PREFIX/NAME into a bucket URL and NAME (its last part). */
static int split_url(const char *url, char *bucket_url, size_t n, const char **name)
{
	const char *slash = strrchr(url + 5, '/');

	if (!slash || slash == url + 5 || !slash[1])
		return -1;
	if ((size_t)(slash - url) >= n)
		return -1;
	memcpy(bucket_url, url, (size_t)(slash - url));
	bucket_url[slash - url] = '\0';
	*name = slash + 1;
	return 0;
}

int cmd_restore(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "txid", required_argument, NULL, 'T' },
		{ "timestamp", required_argument, NULL, 't' },
		{ "force", no_argument, NULL, 'f' },
		{ "integrity-check", no_argument, NULL, 'I' },
		{ "parallel", required_argument, NULL, 'P' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cluster_restore_opts o = { 0 };
	struct cluster_restore_result res;
	struct cmd_config conf;
	struct ltfs_err err = { 0 };
	struct progress prog = { .last = -1 };
	char bucket_url[S3_KEY_MAX + 80], msg[512];
	const char *config = NULL, *arg, *name;
	struct s3 *s3 = NULL;
	bool json = false, check = false;
	unsigned parallel = 0;
	int c, rc;

	cmd_config_init(&conf, ctx);
	while ((c = getopt_long(argc, argv, "+o:fc:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			o.out = optarg;
			break;
		case 'T': {
			char *end;
			bool hex = strlen(optarg) == 16;
			unsigned long long v = strtoull(optarg, &end, hex ? 16 : 10);

			if (*end || end == optarg || v == 0 || optarg[0] == '-')
				return cmd_usage_error("restore", "--txid: '%s' is not a TXID (decimal, or 16 hex digits)", optarg);
			o.txid = v;
			break;
		}
		case 't':
			o.before_ms = s3_parse_time(optarg);
			if (o.before_ms <= 0)
				return cmd_usage_error("restore", "--timestamp: '%s' is not an RFC 3339 time such as 2026-11-21T10:14:24Z", optarg);
			break;
		case 'f':
			o.force = true;
			break;
		case 'I':
			check = true;
			break;
		case 'P':
			if (cmd_parse_uint(optarg, 1, 64, &parallel) < 0)
				return cmd_usage_error("restore", "--parallel: '%s' is not a number in 1..64", optarg);
			break;
		case 'n':
			o.dry_run = true;
			break;
		case 'j':
			json = true;
			break;
		case 'c':
			config = optarg;
			break;
		case 'h':
			fputs(restore_usage, stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (o.txid && o.before_ms)
		return cmd_usage_error("restore", "--txid and --timestamp exclude each other");
	if (argc - optind != 1)
		return cmd_usage_error("restore", "expected one s3://BUCKET/PREFIX/NAME or NAME (see --help)");
	arg = argv[optind];
	if (config && cmd_config_load(config, &conf, &err) < 0) {
		cmd_config_release(&conf);
		return cmd_usage_error("restore", "%s", err.msg);
	}
	if (strncmp(arg, "s3://", 5) == 0) {
		if (split_url(arg, bucket_url, sizeof(bucket_url), &name) < 0) {
			cmd_config_release(&conf);
			return cmd_usage_error("restore", "'%s': want s3://BUCKET/PREFIX/NAME", arg);
		}
	} else if (conf.s3_url) {
		snprintf(bucket_url, sizeof(bucket_url), "%s", conf.s3_url);
		name = arg;
	} else {
		cmd_config_release(&conf);
		return cmd_usage_error("restore", "'%s': give s3://BUCKET/PREFIX/NAME, or NAME with a --config that has s3.url", arg);
	}
	if (!o.out) {
		const char *base = strrchr(name, '/');

		o.out = base ? base + 1 : name;
	}
	rc = cmd_s3_open(&conf, bucket_url, &s3, &err);
	if (rc < 0) {
		cmd_config_release(&conf);
		return cmd_usage_error("restore", "%s", err.msg);
	}
	prog.tty = !json && isatty(2);
	o.s3 = s3;
	o.db = name;
	o.parallel = parallel;
	o.log = json ? NULL : &ctx->log;
	o.progress = show_progress;
	o.progress_ctx = &prog;
	rc = cluster_restore(&o, &res, &err);
	msg[0] = '\0';
	if (rc == 0 && check && !o.dry_run && integrity_check(o.out, msg, sizeof(msg)) < 0) {
		unlink(o.out);
		rc = ltfs_err_set(&err, LTFS_E_CORRUPT, "'%s': integrity_check failed: %s (removed)",
				  o.out, msg);
	}
	if (json) {
		json_t *j = json_pack("{s:b, s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:f, s:s?, s:s?}",
				      "ok", rc == 0, "database", name, "output", o.out,
				      "txid", (json_int_t)res.txid, "checksum", "",
				      "files", (json_int_t)res.files, "bytes", (json_int_t)res.bytes,
				      "pages", (json_int_t)res.pages, "seconds", res.secs,
				      "integrity", check && rc == 0 ? msg : NULL,
				      "error", rc < 0 ? err.msg : NULL);
		char sum[17], *s;

		snprintf(sum, sizeof(sum), "%016llx", (unsigned long long)res.checksum);
		if (j)
			json_object_set_new(j, "checksum", json_string(sum));
		s = j ? json_dumps(j, JSON_COMPACT) : NULL;
		if (s)
			puts(s);
		free(s);
		json_decref(j);
	} else if (rc == 0 && o.dry_run) {
		printf("%s: would restore TXID %llu from %zu files (%llu bytes)\n", name,
		       (unsigned long long)res.txid, res.files, (unsigned long long)res.bytes);
	} else if (rc == 0) {
		printf("%s: restored TXID %llu, %u pages, checksum %016llx, from %zu files "
		       "(%.1f MiB) in %.2f s%s%s\n",
		       o.out, (unsigned long long)res.txid, res.pages, (unsigned long long)res.checksum,
		       res.files, (double)res.bytes / 1048576.0, res.secs,
		       check ? ", integrity_check " : "", check ? msg : "");
	}
	if (rc < 0 && !json)
		cmd_fail("restore", "%s", err.msg);
	s3_free(s3);
	cmd_config_release(&conf);
	if (rc == LTFS_E_USAGE)
		return EXIT_USAGE;
	return rc < 0 ? EXIT_FAIL : EXIT_OK;
}
