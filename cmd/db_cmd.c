/*
 * db_cmd.c - "ltfs export" and "ltfs import": a database out of a node as
 * a plain SQLite file, and a plain SQLite file into the primary as one
 * new transaction that replicates like any other.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "cluster/cluster.h"
#include "cmd/cmd.h"
#include "fs/fs.h"

#define DEFAULT_NODE "http://127.0.0.1:20202"
#define IMPORT_BUSY_MS 30000

static const char export_usage[] =
	"usage: ltfs export [--url URL] [-f] NAME OUT\n"
	"\n"
	"Writes database NAME of the node at URL (primary or replica) to OUT as a\n"
	"plain SQLite file, at the node's newest TXID: a consistent snapshot taken\n"
	"from the node's LTX history, checked against its checksum, written as\n"
	"OUT.tmp, synced and renamed.\n"
	"\n"
	"  --url URL    the node (default " DEFAULT_NODE ")\n"
	"  -f, --force  replace OUT (and remove its -wal, -shm, -journal)\n"
	"\n"
	"The bearer token, when the node has one, is read from LTFS_TOKEN.\n"
	"Exit status: 0 written, 1 error (nothing written), 2 usage.\n";

static const char import_usage[] =
	"usage: ltfs import [--url URL] NAME IN\n"
	"\n"
	"Replaces database NAME on the primary with the SQLite file IN (or creates\n"
	"it), as one new transaction: it is recorded, replicated and backed up\n"
	"like any commit, and apps with the database open see the new content at\n"
	"their next transaction. Runs on the primary's machine: the node at URL\n"
	"must be the primary, and IN is copied through its mount with SQLite's\n"
	"backup API (holding the database's write lock, waiting up to 30 s for it).\n"
	"IN is checked with PRAGMA quick_check first. A database in WAL mode keeps\n"
	"WAL mode, and its page size cannot change: IN must have the same one.\n"
	"\n"
	"  --url URL    the local node (default " DEFAULT_NODE ")\n"
	"\n"
	"Copying a file over an existing database with cp is refused (EPERM);\n"
	"cp to a new name in the mount creates that database as its TXID 1.\n"
	"The bearer token, when the node has one, is read from LTFS_TOKEN.\n"
	"Exit status: 0 imported, 1 error (the database is unchanged), 2 usage.\n";

/* --url and -f, then exactly two arguments. */
static int parse_args(const char *cmd, const char *usage, int argc, char **argv,
		      const char **url, bool *force)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "force", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*url = DEFAULT_NODE;
	while ((c = getopt_long(argc, argv, "+fh", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			*url = optarg;
			break;
		case 'f':
			if (!force)
				return cmd_usage_error(cmd, "unknown option '-f' (see --help)");
			*force = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2)
		return cmd_usage_error(cmd, "expected NAME and a file (see --help)");
	return -1; /* go on */
}

int cmd_export(struct cmd_ctx *ctx, int argc, char **argv)
{
	struct cluster_export_opts o = { .token = getenv("LTFS_TOKEN") };
	struct cluster_restore_result res;
	struct ltfs_err err = { 0 };
	char base[2048];
	int rc;

	(void)ctx;
	rc = parse_args("export", export_usage, argc, argv, &o.url, &o.force);
	if (rc >= 0)
		return rc;
	cmd_node_url(o.url, "", base, sizeof(base));
	o.url = base;
	o.db = argv[optind];
	o.out = argv[optind + 1];
	if (cluster_export(&o, &res, &err) < 0)
		return cmd_fail("export", "'%s': %s", o.db, err.msg);
	printf("%s: '%s' at TXID %llu, %u pages of %u bytes, checksum %016llx\n", o.out, o.db,
	       (unsigned long long)res.txid, res.pages, res.page_size,
	       (unsigned long long)res.checksum);
	return EXIT_OK;
}

/* The node's mount dir, if it is the primary. */
static int primary_mount(const char *base, char *out, size_t n)
{
	json_t *info;
	const char *role, *mount, *primary;
	int rc = cmd_node_info("import", base, &info);

	if (rc != EXIT_OK)
		return rc;
	role = json_string_value(json_object_get(info, "role"));
	mount = json_string_value(json_object_get(info, "mount"));
	primary = json_string_value(json_object_get(info, "primary"));
	if (!role || !mount)
		rc = cmd_fail("import", "%s: the answer names no role or mount", base);
	else if (strcmp(role, "primary") != 0)
		rc = cmd_fail("import", "the node at %s is a replica: import on the primary's machine (%s)",
			      base, primary ? primary : "not known yet");
	else
		snprintf(out, n, "%s", mount);
	json_decref(info);
	return rc;
}

static int sql_fail(sqlite3 *db, const char *what, const char *path)
{
	return cmd_fail("import", "%s '%s': %s", what, path, db ? sqlite3_errmsg(db) : "out of memory");
}

/* PRAGMA quick_check on IN: "ok", or the first problem. */
static int check_source(sqlite3 *src, const char *path, int *page_size)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(src, "PRAGMA quick_check", -1, &st, NULL);
	const char *row;

	if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
		row = (const char *)sqlite3_column_text(st, 0);
		if (!row || strcmp(row, "ok") != 0) {
			rc = cmd_fail("import", "'%s' fails PRAGMA quick_check: %s", path,
				      row ? row : "(no answer)");
			sqlite3_finalize(st);
			return rc;
		}
	} else {
		sqlite3_finalize(st);
		return sql_fail(src, "cannot read", path);
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_prepare_v2(src, "PRAGMA page_size", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		sqlite3_finalize(st);
		return sql_fail(src, "cannot read", path);
	}
	*page_size = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return EXIT_OK;
}

static void print_pos(const char *path, const char *label)
{
	char pos[64] = "";
	FILE *f = fopen(path, "r");

	if (f) {
		if (!fgets(pos, sizeof(pos), f))
			pos[0] = '\0';
		fclose(f);
	}
	pos[strcspn(pos, "\n")] = '\0';
	printf("%s %s\n", label, pos[0] ? pos : "(none)");
}

int cmd_import(struct cmd_ctx *ctx, int argc, char **argv)
{
	const char *url, *name, *in;
	char mount[4096], path[8192], pos[8200];
	sqlite3 *src = NULL, *dst = NULL;
	sqlite3_backup *b;
	int rc, page_size = 0;

	(void)ctx;
	rc = parse_args("import", import_usage, argc, argv, &url, NULL);
	if (rc >= 0)
		return rc;
	name = argv[optind];
	in = argv[optind + 1];
	{
		struct ltfs_err err = { 0 };

		if (fs_db_name_check(name, &err) < 0)
			return cmd_usage_error("import", "NAME '%s': %s", name, err.msg);
	}
	rc = primary_mount(url, mount, sizeof(mount));
	if (rc != EXIT_OK)
		return rc;
	snprintf(path, sizeof(path), "%s/%s", mount, name);
	snprintf(pos, sizeof(pos), "%s-pos", path);
	if (sqlite3_open_v2(in, &src, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		rc = sql_fail(src, "cannot open", in);
		goto out;
	}
	rc = check_source(src, in, &page_size);
	if (rc != EXIT_OK)
		goto out;
	if (sqlite3_open_v2(path, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
		rc = sql_fail(dst, "cannot open", path);
		goto out;
	}
	sqlite3_busy_timeout(dst, IMPORT_BUSY_MS);
	print_pos(pos, "before:");
	b = sqlite3_backup_init(dst, "main", src, "main");
	if (!b) {
		rc = sql_fail(dst, "cannot start the copy into", path);
		goto out;
	}
	/* one step: the whole copy is one transaction, so one LTX file */
	rc = sqlite3_backup_step(b, -1);
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE) {
		rc = rc == SQLITE_READONLY
			     ? cmd_fail("import", "'%s' cannot take '%s': %s (a WAL database keeps its "
						  "page size; '%s' has %d)",
					path, in, sqlite3_errmsg(dst), in, page_size)
			     : sql_fail(dst, "copy into", path);
		goto out;
	}
	print_pos(pos, "after: ");
	rc = EXIT_OK;
out:
	sqlite3_close(dst);
	sqlite3_close(src);
	return rc;
}
