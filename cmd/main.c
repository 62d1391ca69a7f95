/*
 * main.c - ltfs entry point: global options, then one subcommand.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd/cmd.h"

#ifndef LTFS_VERSION
#define LTFS_VERSION "0.1.0-dev"
#endif

static const char usage_text[] =
	"usage: ltfs [--log-level LEVEL] [--log-format text|json|journal] COMMAND [ARGS]\n"
	"\n"
	"ltfs makes a SQLite database replicated and recoverable without\n"
	"changing the application: it mounts a FUSE filesystem, turns every\n"
	"commit into an LTX file and ships it to replicas and object storage.\n"
	"\n"
	"commands:\n"
	"  mount MOUNTDIR     mount the filesystem and record every commit\n"
	"  status             role, primary and database positions of a node\n"
	"  promote            make a node the primary now (lease mode)\n"
	"  run -- CMD         run a command on the primary from any node\n"
	"  export NAME OUT    write a node's database to a plain SQLite file\n"
	"  import NAME IN     replace a database on the primary, as one transaction\n"
	"  restore URL|NAME   bring a database back from the bucket, at any TXID\n"
	"                     or moment\n"
	"  ltx SUBCOMMAND     inspect, verify, apply and compact LTX files\n"
	"  version            print the version\n"
	"  help [COMMAND]     this text, or a command's help\n"
	"\n"
	"global options:\n"
	"  --log-level LEVEL    error, warn, info (default) or debug\n"
	"  --log-format FMT     text (default), json (one object per line) or\n"
	"                       journal (<N> priority prefixes, no time; the\n"
	"                       default when stderr is the systemd journal)\n"
	"\n"
	"Exit status: 0 success, 1 runtime error or invalid data, 2 usage error.\n";

static int vreport(const char *cmd, const char *fmt, va_list ap)
{
	fprintf(stderr, "ltfs%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	return 0;
}

int cmd_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(cmd, fmt, ap);
	va_end(ap);
	return EXIT_USAGE;
}

int cmd_fail(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(cmd, fmt, ap);
	va_end(ap);
	return EXIT_FAIL;
}

int cmd_parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
		return -1;
	*out = (unsigned)v;
	return 0;
}

int cmd_parse_sync(const char *s, int *mode, unsigned *n)
{
	unsigned k = 0;
	int m;

	if (strcmp(s, "none") == 0)
		m = 0;
	else if (strcmp(s, "s3") == 0)
		m = 1;
	else if (strncmp(s, "replicas=", 9) == 0 && cmd_parse_uint(s + 9, 1, 16, &k) == 0)
		m = 2;
	else
		return -1;
	if (mode)
		*mode = m;
	if (n)
		*n = k;
	return 0;
}

int cmd_parse_duration_ms(const char *s, unsigned hi_ms, unsigned *out)
{
	static const struct { const char *unit; unsigned ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || s[0] == '-' || s[0] == '+' || v < 0)
		return -1;
	if (*end == '\0') {
		if (v != 0)
			return -1; /* a bare number is ambiguous; only 0 needs no unit */
		*out = 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			double ms = v * units[i].ms;

			if (ms > hi_ms || ms != (double)(unsigned)ms)
				return -1;
			*out = (unsigned)ms;
			return 0;
		}
	}
	return -1;
}

void cmd_node_url(const char *base, const char *path, char *out, size_t n)
{
	size_t len = strlen(base);

	while (len && base[len - 1] == '/')
		len--;
	snprintf(out, n, "%.*s%s", (int)len, base, path);
}

bool cmd_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return true;
	}
	return false;
}

/* systemd sets JOURNAL_STREAM=DEV:INO when stderr goes to the journal. */
static bool under_journald(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	return js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
	       (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static const struct {
	const char *name;
	int (*fn)(struct cmd_ctx *, int, char **);
} commands[] = {
	{ "mount", cmd_mount },
	{ "status", cmd_status },
	{ "restore", cmd_restore },
	{ "promote", cmd_promote },
	{ "run", cmd_run },
	{ "export", cmd_export },
	{ "import", cmd_import },
	{ "ltx", cmd_ltx },
};

static int run_command(struct cmd_ctx *ctx, int argc, char **argv)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[0], commands[i].name) == 0)
			return commands[i].fn(ctx, argc, argv);
	}
	return cmd_usage_error(NULL, "unknown command '%s' (see 'ltfs help')", argv[0]);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "log-level", required_argument, NULL, 'l' },
		{ "log-format", required_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	enum ltfs_log_level level = LTFS_LOG_INFO;
	enum ltfs_log_format format = LTFS_LOG_TEXT;
	struct cmd_ctx ctx = { .prog = "ltfs" };
	int c;

	/* '+': stop at the first non-option, the subcommand. */
	while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
		switch (c) {
		case 'l':
			if (ltfs_log_parse_level(optarg, &level) < 0)
				return cmd_usage_error(NULL, "--log-level: '%s' is not one of error, warn, info, debug",
						       optarg);
			ctx.log_level_set = true;
			break;
		case 'f':
			if (ltfs_log_parse_format(optarg, &format) < 0)
				return cmd_usage_error(NULL, "--log-format: '%s' is not one of text, json, journal",
						       optarg);
			ctx.log_format_set = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return EXIT_OK;
		case 'V':
			printf("ltfs %s\n", LTFS_VERSION);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (!ctx.log_format_set && under_journald())
		format = LTFS_LOG_JOURNAL;
	ltfs_log_init(&ctx.log, level, format, 2);
	argc -= optind;
	argv += optind;
	if (argc == 0) {
		fputs(usage_text, stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[0], "version") == 0) {
		printf("ltfs %s\n", LTFS_VERSION);
		return EXIT_OK;
	}
	if (strcmp(argv[0], "help") == 0) {
		char *help_argv[] = { argv[1], (char *)"--help", NULL };

		if (argc < 2) {
			fputs(usage_text, stdout);
			return EXIT_OK;
		}
		return run_command(&ctx, 2, help_argv);
	}
	optind = 0; /* glibc: 0 also resets the scan order the "+" of the first parse set */
	return run_command(&ctx, argc, argv);
}
