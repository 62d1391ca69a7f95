/*
 * status_cmd.c - "ltfs status": ask a node's /v1/info and print it as a
 * table (or the JSON as it came).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cluster/cluster.h"
#include "cmd/cmd.h"

static const char status_usage[] =
	"usage: ltfs status [--url URL] [--json]\n"
	"\n"
	"Shows a node's role, its primary, and for each database the position\n"
	"(TXID, checksum), size and age, from the node's HTTP API.\n"
	"\n"
	"  --url URL   the node (default http://127.0.0.1:20202)\n"
	"  --json      print the node's /v1/info answer as it is\n"
	"\n"
	"The bearer token, when the node has one, is read from LTFS_TOKEN.\n"
	"Exit status: 0 answered, 1 node unreachable or refusing, 2 usage.\n";

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static void human_size(double bytes, char *out, size_t n)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	int i = 0;

	while (bytes >= 1024 && i < 4) {
		bytes /= 1024;
		i++;
	}
	snprintf(out, n, i ? "%.1f %s" : "%.0f %s", bytes, unit[i]);
}

static void print_table(json_t *info)
{
	json_t *dbs = json_object_get(info, "databases"), *d;
	bool primary = strcmp(str(info, "role"), "primary") == 0;
	long long lag = (long long)json_integer_value(json_object_get(info, "lag_ms"));
	size_t i;

	json_t *lease = json_object_get(info, "lease");

	printf("node    %s\n", str(info, "node"));
	if (lease)
		printf("lease   epoch %lld%s%s\n",
		       (long long)json_integer_value(json_object_get(lease, "max_epoch")),
		       json_is_true(json_object_get(lease, "candidate")) ? "" : ", never a candidate",
		       json_is_true(json_object_get(lease, "promoting")) ? ", catching up to take writes" : "");
	if (primary) {
		printf("role    primary (%lld replication streams)\n",
		       (long long)json_integer_value(json_object_get(info, "streams")));
	} else {
		printf("role    replica of %s, %s\n", str(info, "primary"),
		       json_is_true(json_object_get(info, "ready")) ? "in sync"
		       : json_is_true(json_object_get(info, "connected")) ? "catching up"
									 : "not connected");
		if (json_string_value(json_object_get(info, "last_error")))
			printf("error   %s (last stream)\n", str(info, "last_error"));
		if (lag >= 2147483647LL)
			printf("lag     unknown (not caught up yet)\n");
		else
			printf("lag     %lld ms\n", lag);
	}
	{
		json_t *b = json_object_get(info, "backup");

		if (b) {
			printf("backup  %s: %lld uploads, %lld TXIDs waiting, last upload %s\n",
			       str(b, "url"), (long long)json_integer_value(json_object_get(b, "uploads")),
			       (long long)json_integer_value(json_object_get(b, "backlog_txids")),
			       str(b, "last_upload")[0] ? str(b, "last_upload") : "never");
			if (str(b, "last_error")[0])
				printf("error   %s (backup)\n", str(b, "last_error"));
		}
	}
	printf("\n%-32s %10s  %-16s  %10s  %s\n", "DATABASE", "TXID", "CHECKSUM", "SIZE",
	       "LAST COMMIT");
	json_array_foreach(dbs, i, d) {
		char size[32];
		unsigned long long txid = strtoull(str(d, "txid"), NULL, 16);
		double bytes = (double)json_integer_value(json_object_get(d, "pages")) *
			       (double)json_integer_value(json_object_get(d, "page_size"));

		human_size(bytes, size, sizeof(size));
		const char *bt = str(d, "backup_txid");
		char shipped[64] = "";

		if (bt[0])
			snprintf(shipped, sizeof(shipped), "  bucket at %llu%s", strtoull(bt, NULL, 16),
				 json_is_true(json_object_get(d, "backup_stuck")) ? " (STUCK: see the log)" : "");
		printf("%-32s %10llu  %-16s  %10s  %s%s%s\n", str(d, "name"), txid,
		       str(d, "checksum"),
		       json_is_true(json_object_get(d, "exists")) ? size : "deleted",
		       str(d, "timestamp"),
		       json_is_true(json_object_get(d, "broken")) ? "  NOT SERVED (failed verification)" : "",
		       shipped);
	}
	if (json_array_size(dbs) == 0)
		printf("(no databases)\n");
}

/* URL without trailing slashes, then path. */
int cmd_node_info(const char *cmd, const char *base, json_t **out)
{
	char url[2048];
	struct ltfs_buf body;
	struct ltfs_err err = { 0 };
	json_error_t jerr;
	long status;
	int rc;

	*out = NULL;
	cmd_node_url(base, "/v1/info", url, sizeof(url));
	ltfs_buf_init(&body, 64u << 20);
	rc = cluster_http_get(url, getenv("LTFS_TOKEN"), &body, &status, &err);
	if (rc < 0)
		rc = cmd_fail(cmd, "%s", err.msg);
	else if (status != 200)
		rc = cmd_fail(cmd, "%s answered %ld%s: %.*s", url, status,
			      status == 401 ? " (set LTFS_TOKEN to the node's token)" : "",
			      (int)body.len, body.data ? (const char *)body.data : "");
	else if (!(*out = json_loadb((const char *)body.data, body.len, 0, &jerr)))
		rc = cmd_fail(cmd, "%s: answer is not JSON: %s", url, jerr.text);
	else
		rc = EXIT_OK;
	ltfs_buf_release(&body);
	return rc;
}

int cmd_status(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *base = "http://127.0.0.1:20202";
	json_t *info;
	bool as_json = false;
	int c, rc;

	(void)ctx;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			base = optarg;
			break;
		case 'j':
			as_json = true;
			break;
		case 'h':
			fputs(status_usage, stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage_error("status", "unexpected argument '%s' (see --help)", argv[optind]);
	rc = cmd_node_info("status", base, &info);
	if (rc != EXIT_OK)
		return rc;
	if (as_json) {
		char *s = json_dumps(info, JSON_INDENT(2));

		if (s)
			puts(s);
		free(s);
		json_decref(info);
		return s ? EXIT_OK : cmd_fail("status", "out of memory");
	}
	print_table(info);
	json_decref(info);
	return EXIT_OK;
}

static const char promote_usage[] =
	"usage: ltfs promote [--url URL]\n"
	"\n"
	"Makes the node at URL the primary, without waiting for a TTL: the\n"
	"current primary stops taking writes, ships its last commits to the\n"
	"bucket and hands the lease over; the node catches up and opens for\n"
	"writes. Needs lease mode (--lease s3) and a candidate node. Returns\n"
	"once the node takes writes.\n"
	"\n"
	"  --url URL   the node to promote (default http://127.0.0.1:20202)\n"
	"\n"
	"The bearer token, when the nodes have one, is read from LTFS_TOKEN.\n"
	"Exit status: 0 the node is the primary, 1 it is not, 2 usage.\n";

int cmd_promote(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *base = "http://127.0.0.1:20202";
	char url[2048];
	struct ltfs_buf body;
	struct ltfs_err err = { 0 };
	long status;
	int c, rc;

	(void)ctx;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			base = optarg;
			break;
		case 'h':
			fputs(promote_usage, stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind != argc)
		return cmd_usage_error("promote", "unexpected argument '%s' (see --help)", argv[optind]);
	cmd_node_url(base, "/v1/promote", url, sizeof(url));
	ltfs_buf_init(&body, 1u << 20);
	rc = cluster_http_post(url, getenv("LTFS_TOKEN"), NULL, &body, &status, &err);
	if (rc == 0 && status != 200)
		rc = cmd_fail("promote", "%s answered %ld: %.*s", url, status, (int)body.len,
			      body.data ? (const char *)body.data : "");
	else if (rc < 0)
		rc = cmd_fail("promote", "%s", err.msg);
	else
		printf("%s is the primary\n", base);
	ltfs_buf_release(&body);
	return rc < 0 ? EXIT_FAIL : rc;
}
