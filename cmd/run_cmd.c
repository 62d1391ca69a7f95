/*
 * run_cmd.c - "ltfs run --on-primary -- CMD": run a command on the
 * primary, asked from any node (a migration from a replica's container).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cluster/cluster.h"
#include "cmd/cmd.h"

static const char run_usage[] =
	"usage: ltfs run [--url URL] [--timeout DURATION] [--on-primary] -- CMD [ARGS...]\n"
	"\n"
	"Runs CMD on the cluster's primary, whichever node is asked: the node at\n"
	"URL names its primary, which runs CMD in its mount dir (relative paths\n"
	"name files in the mount) with stdin from /dev/null. CMD's output, stdout\n"
	"and stderr together, is printed here as it comes, and ltfs run exits with\n"
	"CMD's exit code. Meant for schema migrations from any node.\n"
	"\n"
	"  --url URL          the node to ask (default http://127.0.0.1:20202)\n"
	"  --timeout DURATION kill CMD and everything it started after this long\n"
	"                     (default 10m, at most 24h); exit 124\n"
	"  --on-primary       where CMD runs (the only mode; say it for clarity)\n"
	"\n"
	"The primary must run with --allow-run (http.allow-run) and a token; the\n"
	"token is read from LTFS_TOKEN. CMD is not run through a shell: write\n"
	"sh -c '...' for pipes and variables.\n"
	"Exit status: CMD's, 124 at the timeout, 1 when it could not be run, 2 usage.\n";

/* The primary's URL as the node at base knows it. */
static int find_primary(const char *base, char *out, size_t n)
{
	json_t *info;
	const char *role, *primary;
	int rc = cmd_node_info("run", base, &info);

	if (rc != EXIT_OK)
		return rc;
	role = json_string_value(json_object_get(info, "role"));
	primary = json_string_value(json_object_get(info, "primary"));
	if (role && strcmp(role, "primary") == 0)
		cmd_node_url(base, "", out, n);
	else if (primary && primary[0])
		snprintf(out, n, "%s", primary);
	else
		rc = cmd_fail("run", "the node at %s knows no primary yet (is it connected?)", base);
	json_decref(info);
	return rc;
}

int cmd_run(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "timeout", required_argument, NULL, 't' },
		{ "on-primary", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cluster_run_opts o = { .url = NULL, .out_fd = 1 };
	const char *base = "http://127.0.0.1:20202";
	char primary[2048];
	struct ltfs_err err = { 0 };
	int c, code = -1, rc;

	(void)ctx;
	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (c) {
		case 'u':
			base = optarg;
			break;
		case 't':
			if (cmd_parse_duration_ms(optarg, 24 * 3600000u, &o.timeout_ms) < 0 ||
			    o.timeout_ms == 0)
				return cmd_usage_error("run", "--timeout: '%s' is not a duration up to 24h (e.g. 30s, 10m)",
						       optarg);
			break;
		case 'p':
			break;
		case 'h':
			fputs(run_usage, stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return cmd_usage_error("run", "expected -- CMD [ARGS...] (see --help)");
	if (optind < 1 || strcmp(argv[optind - 1], "--") != 0)
		return cmd_usage_error("run", "put '--' before the command: ltfs run --on-primary -- %s",
				       argv[optind]);
	o.argv = argv + optind;
	o.token = getenv("LTFS_TOKEN");
	/* one more try if the primary moved between asking and running */
	for (int attempt = 0; attempt < 2; attempt++) {
		rc = find_primary(base, primary, sizeof(primary));
		if (rc != EXIT_OK)
			return rc;
		o.url = primary;
		rc = cluster_run(&o, &code, &err);
		if (rc != LTFS_E_NOT_PRIMARY)
			break;
	}
	if (rc < 0)
		return cmd_fail("run", "%s", err.msg);
	return code;
}
