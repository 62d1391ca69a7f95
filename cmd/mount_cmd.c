/*
 * mount_cmd.c - "ltfs mount": parse the flags, open the data dir, mount and
 * serve in the foreground until unmounted or signalled.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cmd.h"
#include "fs/fs.h"

static const char mount_usage[] =
	"usage: ltfs mount [OPTIONS] MOUNTDIR\n"
	"\n"
	"Mounts MOUNTDIR in the foreground. SQLite databases created or opened\n"
	"under it work unchanged; every committed transaction is recorded as an\n"
	"LTX file in the data dir. Other files are stored in the data dir too but\n"
	"are not replicated. Stop with Ctrl-C, SIGTERM or 'umount MOUNTDIR'.\n"
	"\n"
	"  --data DIR        data dir (default: MOUNTDIR.ltfs beside the mount);\n"
	"                    must not be MOUNTDIR or inside it, or contain it\n"
	"  -d, --debug       log every FUSE request (implies --log-level debug)\n"
	"  --allow-other     let other users (e.g. an app user) use the mount\n"
	"  --threads N       FUSE worker threads (default 16)\n"
	"\n"
	"Data dir layout: DATA/dbs/NAME/database (the SQLite file), .../ltx/ (the\n"
	"LTX history, inspect with 'ltfs ltx dump'), DATA/tree (other files).\n";

int cmd_mount(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data", required_argument, NULL, 'D' },
		{ "debug", no_argument, NULL, 'd' },
		{ "allow-other", no_argument, NULL, 'a' },
		{ "threads", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct fs_config cfg = { 0 };
	char data[4096];
	struct ltfs_err err = { 0 };
	struct fs *fs = NULL;
	const char *data_dir = NULL;
	int c, rc;

	while ((c = getopt_long(argc, argv, "+dh", opts, NULL)) != -1) {
		switch (c) {
		case 'D':
			data_dir = optarg;
			break;
		case 'd':
			cfg.debug = true;
			ctx->log.level = LTFS_LOG_DEBUG;
			break;
		case 'a':
			cfg.allow_other = true;
			break;
		case 't': {
			char *end;
			long n = strtol(optarg, &end, 10);

			if (*end || n < 1 || n > 256)
				return cmd_usage_error("mount", "--threads: '%s' is not a number in 1..256", optarg);
			cfg.max_threads = (unsigned)n;
			break;
		}
		case 'h':
			fputs(mount_usage, stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1)
		return cmd_usage_error("mount", "expected exactly one MOUNTDIR (see --help)");
	cfg.mountpoint = argv[optind];
	if (!data_dir) {
		fs_default_data_dir(cfg.mountpoint, data, sizeof(data));
		data_dir = data;
	}
	cfg.data_dir = data_dir;
	cfg.log = &ctx->log;

	rc = fs_open(&fs, &cfg, &err);
	if (rc == 0)
		rc = fs_mount(fs, &err);
	if (rc == 0)
		rc = fs_run(fs, &err);
	fs_close(fs);
	if (rc < 0) {
		ltfs_error(&ctx->log, "mount", "%s", err.msg);
		return rc == LTFS_E_CONFIG ? EXIT_USAGE : EXIT_FAIL;
	}
	ltfs_info(&ctx->log, "mount", "unmounted '%s'", cfg.mountpoint);
	return EXIT_OK;
}
