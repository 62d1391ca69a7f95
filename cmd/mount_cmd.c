/*
 * mount_cmd.c - "ltfs mount": parse the flags, open the data dir, mount and
 * serve in the foreground until unmounted or signalled.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cmd/cmd.h"
#include "fs/fs.h"

static const char mount_usage[] =
	"usage: ltfs mount [OPTIONS] MOUNTDIR [-- CMD [ARGS...]]\n"
	"       ltfs mount --config FILE [OPTIONS] [MOUNTDIR] [-- CMD [ARGS...]]\n"
	"\n"
	"Mounts MOUNTDIR in the foreground. SQLite databases created or opened\n"
	"under it work unchanged; every committed transaction is recorded as an\n"
	"LTX file in the data dir. Other files are stored in the data dir too but\n"
	"are not replicated. Stop with Ctrl-C, SIGTERM or 'umount MOUNTDIR'.\n"
	"\n"
	"  -c, --config FILE YAML config (keys: docs/ltfs.example.yml); flags win\n"
	"  --data DIR        data dir (default: MOUNTDIR.ltfs beside the mount);\n"
	"                    must not be MOUNTDIR or inside it, or contain it\n"
	"  -d, --debug       log every FUSE request (implies --log-level debug)\n"
	"  --allow-other     let other users (e.g. an app user) use the mount\n"
	"  --threads N       FUSE worker threads (default 16)\n"
	"  --history-keep N  newest LTX files kept as they are (default 1000); older\n"
	"                    ones are folded into one snapshot when that pays\n"
	"  --http ADDR       HTTP server address (default 127.0.0.1:20202): the\n"
	"                    replication stream, /v1/info, /metrics, /healthz;\n"
	"                    'off' for none (a primary then has no replicas).\n"
	"                    A non-loopback address needs a token (http.token in\n"
	"                    the config, or LTFS_TOKEN in the environment)\n"
	"  --replica-of URL  run as a read-only replica of the primary at URL\n"
	"                    (e.g. http://10.0.0.1:20202); without it, this node\n"
	"                    is the primary\n"
	"  --s3 URL          back up every database to s3://BUCKET/PREFIX (the\n"
	"                    primary uploads; see s3.* in the config for the\n"
	"                    endpoint and credentials, else AWS_ENDPOINT_URL_S3,\n"
	"                    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).\n"
	"                    A primary whose data dir holds no database first\n"
	"                    restores every database under the prefix\n"
	"  --upload-interval DURATION\n"
	"                    gather commits this long into one upload (default\n"
	"                    1s; 0 uploads at once, what piled up meanwhile in\n"
	"                    one object)\n"
	"\n"
	"Election (all nodes run the same flags; see docs/operations.md):\n"
	"  --lease s3        elect the primary through PREFIX/.ltfs/lease.json in\n"
	"                    the --s3 bucket instead of a static --replica-of\n"
	"  --lease-ttl DURATION\n"
	"                    how long a lease lasts without renewal (default 10s,\n"
	"                    at least 2s); failover takes about this long\n"
	"  --advertise-url URL\n"
	"                    how the other nodes reach this node's HTTP server\n"
	"                    (default http://ADDR of --http)\n"
	"  --no-candidate    never become the primary (a read-only replica)\n"
	"  --sync s3         a commit returns only once it is in the bucket: no\n"
	"                    acknowledged commit is lost in a failover (default\n"
	"                    none: commits never wait for the bucket)\n"
	"  --sync replicas=N a commit returns only once N replicas applied it\n"
	"\n"
	"Running the app (see exec: in docs/ltfs.example.yml):\n"
	"  -- CMD [ARGS...]  once the node serves (the primary with writes open, or\n"
	"                    a replica caught up), run CMD; SIGINT, SIGTERM and\n"
	"                    SIGHUP go to it; when it exits, unmount, release the\n"
	"                    lease and exit with its code. Replaces exec: in the\n"
	"                    config. CMD cannot be found: exit 127\n"
	"  --skip-sync       start CMD at once, before the node serves\n"
	"  --allow-run       run commands sent by 'ltfs run --on-primary' from other\n"
	"                    nodes while primary (needs a token: whoever holds it\n"
	"                    runs commands as this daemon's user)\n"
	"\n"
	"Write-forwarding proxy in front of the app (proxy.* in the config):\n"
	"  --proxy-addr ADDR   listen for the app's clients on ADDR (e.g.\n"
	"                      127.0.0.1:8080): reads go to the local app, writes\n"
	"                      to the primary's proxy; GET /ltfs/health\n"
	"  --proxy-target ADDR the app (e.g. 127.0.0.1:8081)\n"
	"  --proxy-db NAME     the database the read-your-writes cookie tracks\n"
	"\n"
	"Data dir layout: DATA/dbs/NAME/database (the SQLite file), .../ltx/ (the\n"
	"LTX history, inspect with 'ltfs ltx dump'), DATA/tree (other files).\n";

/* Descriptor table slots made at start-up (fewer if the limit is lower). */
#define FD_TABLE_START 4096

/*
 * The daemon holds a descriptor per open file of every app, per backing
 * file, per history file waiting for its sync, and per file a history fold
 * reads (up to 1024 at once): the usual soft limit of 1024 is soon reached
 * under load. Raise it to the hard limit.
 *
 * Then grow the descriptor table to FD_TABLE_START slots while the process
 * has a single thread. The kernel grows it on demand, doubling it, but in
 * a process with several threads each growth waits for an RCU grace
 * period, and every thread that opens a file meanwhile waits too: the
 * first history fold, going from tens to a thousand descriptors, stopped
 * the writer and the replication streams for 10 to 15 ms per doubling.
 */
static void prepare_fds(struct cmd_ctx *ctx)
{
	struct rlimit rl;
	int top, fd;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			ltfs_warn(&ctx->log, "mount", "cannot raise the open-file limit: %s",
				  strerror(errno));
			getrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	top = rl.rlim_cur < FD_TABLE_START ? (int)rl.rlim_cur - 1 : FD_TABLE_START - 1;
	fd = top > 2 ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
	if (fd >= 0) {
		if (dup2(fd, top) == top)
			close(top);
		close(fd);
	}
}

/*
 * A primary whose data dir holds no database yet starts from the bucket, so
 * that it continues the chain there instead of forking it at TXID 1. A
 * marker file makes an interrupted bootstrap resume on the next start.
 */
static int bootstrap(struct cmd_ctx *ctx, struct s3 *s3, const char *data_dir,
		     struct ltfs_err *err)
{
	char marker[4200];
	size_t n = 0;
	int fd, rc;

	snprintf(marker, sizeof(marker), "%s/bootstrap.pending", data_dir);
	if (fs_data_dir_has_dbs(data_dir) && access(marker, F_OK) != 0)
		return 0;
	if ((mkdir(data_dir, 0755) < 0 && errno != EEXIST) ||
	    (fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) < 0)
		return ltfs_err_set(err, -errno, "'%s': %s", marker, strerror(errno));
	close(fd);
	ltfs_info(&ctx->log, "bootstrap", "empty data dir '%s': restoring from s3://%s/%s", data_dir,
		  s3_bucket(s3), s3_prefix(s3));
	rc = cluster_bootstrap(s3, data_dir, &ctx->log, &n, err);
	if (rc < 0 && n == 0)
		unlink(marker); /* nothing seeded: the data dir is as empty as before */
	if (rc < 0) {
		ltfs_err_prefix(err, "bootstrap from the bucket (the node does not start empty while "
				     "the bucket may hold its databases)");
		return rc;
	}
	unlink(marker);
	ltfs_info(&ctx->log, "bootstrap", "%zu databases restored", n);
	return 0;
}

int cmd_mount(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "data", required_argument, NULL, 'D' },
		{ "debug", no_argument, NULL, 'd' },
		{ "allow-other", no_argument, NULL, 'a' },
		{ "threads", required_argument, NULL, 't' },
		{ "history-keep", required_argument, NULL, 'k' },
		{ "http", required_argument, NULL, 'H' },
		{ "replica-of", required_argument, NULL, 'R' },
		{ "s3", required_argument, NULL, 'S' },
		{ "upload-interval", required_argument, NULL, 'U' },
		{ "lease", required_argument, NULL, 'L' },
		{ "lease-ttl", required_argument, NULL, 'T' },
		{ "advertise-url", required_argument, NULL, 'A' },
		{ "no-candidate", no_argument, NULL, 'N' },
		{ "sync", required_argument, NULL, 'Y' },
		{ "skip-sync", no_argument, NULL, 'K' },
		{ "allow-run", no_argument, NULL, 'X' },
		{ "proxy-addr", required_argument, NULL, 1001 },
		{ "proxy-target", required_argument, NULL, 1002 },
		{ "proxy-db", required_argument, NULL, 1003 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cmd_config conf;
	struct fs_config cfg = { 0 };
	char data[4096];
	struct ltfs_err err = { 0 };
	struct fs *fs = NULL;
	const char *data_dir = NULL, *config = NULL, *http = NULL, *replica_of = NULL;
	const char *s3_url = NULL;
	struct s3 *s3 = NULL;
	int upload_ms = -1;
	struct cluster_config ccfg = { 0 };
	struct cluster_backup_opts bopts = { 0 };
	struct cluster_lease_opts lopts = { 0 };
	struct cluster_proxy_opts popts = { 0 };
	const char *proxy_addr = NULL, *proxy_target = NULL, *proxy_db = NULL;
	const char *lease = NULL, *advertise = NULL, *sync = NULL;
	char advertise_buf[300];
	unsigned lease_ttl = 0;
	int sync_mode = 0;
	bool no_candidate = false;
	struct cluster *cl = NULL;
	bool debug = false, allow_other = false, skip_sync = false, allow_run = false;
	unsigned threads = 0, keep = 0, ms;
	struct cmd_exec_plan plan = { 0 };
	struct supervisor *sup = NULL;
	sigset_t child_mask;
	int c, rc, code = EXIT_OK;

	/* "-- CMD ARGS": the app; what comes before is ours */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			if (i + 1 == argc)
				return cmd_usage_error("mount", "'--' must be followed by the command to run");
			plan.argv = argv + i + 1;
			argc = i;
			break;
		}
	}
	cmd_config_init(&conf, ctx);
	while ((c = getopt_long(argc, argv, "+c:dh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'D':
			data_dir = optarg;
			break;
		case 'd':
			debug = true;
			break;
		case 'a':
			allow_other = true;
			break;
		case 't':
			if (cmd_parse_uint(optarg, 1, 256, &threads) < 0)
				return cmd_usage_error("mount", "--threads: '%s' is not a number in 1..256", optarg);
			break;
		case 'k':
			if (cmd_parse_uint(optarg, 1, 10000000, &keep) < 0)
				return cmd_usage_error("mount", "--history-keep: '%s' is not a number in 1..10000000", optarg);
			break;
		case 'H':
			http = optarg;
			break;
		case 'R':
			replica_of = optarg;
			break;
		case 'S':
			s3_url = optarg;
			break;
		case 'U':
			if (cmd_parse_duration_ms(optarg, 3600000, &ms) < 0)
				return cmd_usage_error("mount", "--upload-interval: '%s' is not a duration up to 1h (e.g. 1s, 250ms, 0)", optarg);
			upload_ms = (int)ms;
			break;
		case 'L':
			if (strcmp(optarg, "s3") != 0 && strcmp(optarg, "none") != 0)
				return cmd_usage_error("mount", "--lease: '%s': want s3 or none", optarg);
			lease = optarg;
			break;
		case 'T':
			if (cmd_parse_duration_ms(optarg, 3600000, &lease_ttl) < 0 || lease_ttl < 2000)
				return cmd_usage_error("mount", "--lease-ttl: '%s' is not a duration from 2s to 1h", optarg);
			break;
		case 'A':
			advertise = optarg;
			break;
		case 'N':
			no_candidate = true;
			break;
		case 'Y':
			if (cmd_parse_sync(optarg, NULL, NULL) < 0)
				return cmd_usage_error("mount", "--sync: '%s': want none, s3 or replicas=N (N 1..16)", optarg);
			sync = optarg;
			break;
		case 'K':
			skip_sync = true;
			break;
		case 'X':
			allow_run = true;
			break;
		case 1001:
			proxy_addr = optarg;
			break;
		case 1002:
			proxy_target = optarg;
			break;
		case 1003:
			proxy_db = optarg;
			break;
		case 'h':
			fputs(mount_usage, stdout);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (config && cmd_config_load(config, &conf, &err) < 0) {
		cmd_config_release(&conf);
		return cmd_usage_error("mount", "%s", err.msg);
	}
	if (argc - optind > 1 || (argc - optind == 0 && !conf.mount_dir)) {
		cmd_config_release(&conf);
		return cmd_usage_error("mount", "expected exactly one MOUNTDIR (or mount-dir in --config; see --help)");
	}
	cfg.mountpoint = argc - optind == 1 ? argv[optind] : conf.mount_dir;
	if (!data_dir)
		data_dir = conf.data_dir;
	if (!data_dir) {
		fs_default_data_dir(cfg.mountpoint, data, sizeof(data));
		data_dir = data;
	}
	cfg.data_dir = data_dir;
	cfg.debug = debug || conf.debug;
	cfg.allow_other = allow_other || conf.allow_other;
	cfg.max_threads = threads ? threads : conf.threads;
	cfg.history_keep = keep ? keep : conf.history_keep;
	if (!ctx->log_level_set)
		ctx->log.level = conf.log_level;
	if (!ctx->log_format_set)
		ctx->log.format = conf.log_format;
	if (cfg.debug)
		ctx->log.level = LTFS_LOG_DEBUG;
	cfg.log = &ctx->log;

	ccfg.log = &ctx->log;
	ccfg.http_addr = http ? http : conf.http_addr;
	ccfg.token = conf.http_token ? conf.http_token : getenv("LTFS_TOKEN");
	ccfg.replica_of = replica_of ? replica_of : conf.replica_of;
	ccfg.allow_run = allow_run || conf.allow_run;

	if (!s3_url)
		s3_url = conf.s3_url;
	if (!sync)
		sync = conf.sync;
	if (sync)
		cmd_parse_sync(sync, &sync_mode, &ccfg.sync_replicas); /* checked already */
	if (upload_ms < 0) /* commits that wait for the bucket upload at once */
		upload_ms = conf.upload_interval_ms >= 0 ? conf.upload_interval_ms
			  : sync_mode == 1 ? 0 : 1000;
	if (s3_url && cmd_s3_open(&conf, s3_url, &s3, &err) < 0) {
		cmd_config_release(&conf);
		return cmd_usage_error("mount", "%s", err.msg);
	}
	ccfg.s3 = s3;
	bopts.interval_ms = upload_ms;
	memcpy(bopts.levels_ms, conf.levels_ms, sizeof(conf.levels_ms));
	bopts.nlevels = conf.nlevels;
	bopts.snapshot_ms = conf.snapshot_ms;
	bopts.retention_ms = conf.retention_ms;
	bopts.l0_retention_ms = conf.l0_retention_ms;
	ccfg.backup = &bopts;
	/* a static replica never ships its history: nothing to hold for */
	cfg.hold_unshipped = s3 != NULL && !(ccfg.replica_of && ccfg.replica_of[0]);

	if (!lease)
		lease = conf.lease;
	lopts.enabled = lease && strcmp(lease, "s3") == 0;
	lopts.ttl_ms = lease_ttl ? lease_ttl : conf.lease_ttl_ms;
	lopts.renew_ms = conf.lease_renew_ms;
	lopts.candidate = !no_candidate && conf.candidate != 0;
	if (!advertise)
		advertise = conf.advertise_url;
	if (!advertise && lopts.enabled) {
		/* the listen address, when it names this host */
		const char *addr = ccfg.http_addr ? ccfg.http_addr : CLUSTER_DEFAULT_ADDR;

		if (strncmp(addr, "0.0.0.0:", 8) == 0 || strncmp(addr, "[::]:", 5) == 0) {
			s3_free(s3);
			cmd_config_release(&conf);
			return cmd_usage_error("mount", "--lease s3 with http.addr %s needs --advertise-url "
							"(the address the other nodes reach this one at)", addr);
		}
		snprintf(advertise_buf, sizeof(advertise_buf), "http://%s", addr);
		advertise = advertise_buf;
	}
	lopts.advertise_url = advertise;
	if (lopts.enabled && (!s3 || (ccfg.replica_of && ccfg.replica_of[0]))) {
		s3_free(s3);
		cmd_config_release(&conf);
		return cmd_usage_error("mount", "--lease s3 %s", !s3 ? "needs a bucket (--s3 or s3.url)"
					   : "and --replica-of exclude each other: the lease names the primary");
	}
	ccfg.lease = &lopts;
	ccfg.sync = sync_mode == 1 ? CLUSTER_SYNC_S3 : sync_mode == 2 ? CLUSTER_SYNC_REPLICAS
									 : CLUSTER_SYNC_NONE;
	if (ccfg.sync == CLUSTER_SYNC_S3 && !s3) {
		cmd_config_release(&conf);
		return cmd_usage_error("mount", "--sync s3 needs a bucket (--s3 or s3.url)");
	}

	popts.addr = proxy_addr ? proxy_addr : conf.proxy.addr;
	popts.target = proxy_target ? proxy_target : conf.proxy.target;
	popts.db = proxy_db ? proxy_db : conf.proxy.db;
	popts.advertise_url = conf.proxy.advertise_url;
	popts.max_lag_ms = conf.proxy.max_lag_ms;
	popts.timeout_ms = conf.proxy.timeout_ms;
	popts.wait_ms = conf.proxy.wait_ms;
	popts.max_body = conf.proxy.max_body;
	popts.always_forward = (const char *const *)conf.proxy.always_forward;
	popts.n_always_forward = conf.proxy.n_always_forward;
	popts.passthrough = (const char *const *)conf.proxy.passthrough;
	popts.n_passthrough = conf.proxy.n_passthrough;
	if (popts.addr && !popts.target) {
		s3_free(s3);
		cmd_config_release(&conf);
		return cmd_usage_error("mount", "--proxy-addr needs --proxy-target (the app's HOST:PORT)");
	}
	ccfg.proxy = &popts;

	plan.cmds = conf.exec;
	plan.n = conf.nexec;
	plan.skip_sync = skip_sync || conf.skip_sync;
	/* before any thread starts, so that none of them takes these signals */
	if ((plan.argv || plan.n) && cmd_sup_block_signals(&child_mask) < 0) {
		s3_free(s3);
		cmd_config_release(&conf);
		return cmd_fail("mount", "cannot block signals for the exec supervisor");
	}

	prepare_fds(ctx);
	/* with a lease every node may become the primary: all start from the bucket */
	rc = s3 && !(ccfg.replica_of && ccfg.replica_of[0]) ? bootstrap(ctx, s3, data_dir, &err) : 0;
	if (rc == 0)
		rc = fs_open(&fs, &cfg, &err);
	if (rc == 0 && ((ccfg.replica_of && ccfg.replica_of[0]) || lopts.enabled))
		fs_set_role(fs, FS_ROLE_REPLICA, NULL); /* before any request */
	if (rc == 0)
		rc = fs_mount(fs, &err);
	if (rc == 0) {
		/* requests wait in the kernel until fs_run() */
		ccfg.fs = fs;
		rc = cluster_start(&cl, &ccfg, &err);
	}
	if (rc == 0 && (plan.argv || plan.n))
		rc = cmd_sup_start(&sup, &plan, &child_mask, fs, cl, &ctx->log, &err);
	if (rc == 0)
		rc = fs_run(fs, &err);
	if (sup)
		code = cmd_sup_finish(sup);
	cluster_stop(cl);
	fs_close(fs);
	s3_free(s3);
	if (rc < 0) {
		ltfs_error(&ctx->log, "mount", "%s", err.msg);
		cmd_config_release(&conf);
		return rc == LTFS_E_CONFIG ? EXIT_USAGE : EXIT_FAIL;
	}
	ltfs_info(&ctx->log, "mount", "unmounted '%s'", cfg.mountpoint);
	cmd_config_release(&conf);
	return code;
}
