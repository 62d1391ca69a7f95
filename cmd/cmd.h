/*
 * cmd.h - the ltfs command line: subcommand entry points and the helpers
 * they share. Exit codes: 0 ok, 1 runtime error or invalid data, 2 usage.
 */
#ifndef LTFS_CMD_H
#define LTFS_CMD_H

#include <signal.h>
#include <stdbool.h>

#include "ltx/ltx.h"

enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,
	EXIT_USAGE = 2,
};

/* Options every subcommand accepts before its own. */
struct cmd_ctx {
	struct ltfs_log log;
	const char *prog;     /* "ltfs" */
	bool log_level_set;   /* given on the command line: wins over config */
	bool log_format_set;
};

/* One command of `exec:` in the config. */
struct cmd_exec {
	char *cmd;            /* split into words when run; no shell */
	bool if_candidate;    /* run only on a node that may become the primary */
	bool if_primary;      /* run only on the primary */
};

/* proxy: the write-forwarding proxy (docs/operations.md). */
#define CMD_PROXY_PATTERNS_MAX 64
struct cmd_proxy_config {
	char *addr, *target, *db, *advertise_url;
	unsigned max_lag_ms, timeout_ms, wait_ms; /* 0 = default */
	unsigned long long max_body;              /* 0 = default */
	char *always_forward[CMD_PROXY_PATTERNS_MAX];
	unsigned n_always_forward;
	char *passthrough[CMD_PROXY_PATTERNS_MAX];
	unsigned n_passthrough;
};

/* Settings from the YAML config file (docs/ltfs.example.yml). Flags given
 * on the command line win over these. */
struct cmd_config {
	char *mount_dir;
	char *data_dir;
	bool debug;
	bool allow_other;
	unsigned threads;
	unsigned history_keep;
	char *http_addr;      /* http.addr */
	char *http_token;     /* http.token */
	bool allow_run;       /* http.allow-run */
	char *replica_of;     /* the primary's URL; none = this node is it */
	char *s3_url;         /* s3.url: s3://BUCKET/PREFIX */
	char *s3_endpoint;    /* s3.endpoint */
	char *s3_region;      /* s3.region */
	char *s3_access_key;  /* s3.access-key-id */
	char *s3_secret_key;  /* s3.secret-access-key */
	int s3_path_style;    /* s3.path-style: -1 auto */
	unsigned long long s3_part_size; /* s3.part-size; 0 = the default */
	int upload_interval_ms; /* s3.upload-interval: -1 = default */
	unsigned levels_ms[8];  /* s3.levels: compaction intervals */
	unsigned nlevels;
	unsigned snapshot_ms;   /* s3.snapshot-interval; 0 = default */
	unsigned retention_ms;  /* s3.retention */
	unsigned l0_retention_ms; /* s3.l0-retention */
	char *lease;            /* "s3" or "none" */
	unsigned lease_ttl_ms;  /* 0 = default */
	unsigned lease_renew_ms;
	int candidate;          /* -1 = default (true) */
	char *advertise_url;
	char *sync;             /* "none" or "s3" */
	enum ltfs_log_level log_level;
	enum ltfs_log_format log_format;
	struct cmd_exec *exec;  /* exec: migrations first, the app last */
	size_t nexec;
	bool skip_sync;         /* start exec before the node is ready */
	struct cmd_proxy_config proxy;
};

/* Read FILE into `c` (which holds defaults); LTFS_E_CONFIG naming the key
 * and line on any unknown key or bad value. */
int cmd_config_load(const char *path, struct cmd_config *c, struct ltfs_err *err);
void cmd_config_release(struct cmd_config *c);

int cmd_ltx(struct cmd_ctx *ctx, int argc, char **argv);
int cmd_mount(struct cmd_ctx *ctx, int argc, char **argv);
int cmd_status(struct cmd_ctx *ctx, int argc, char **argv);
int cmd_restore(struct cmd_ctx *ctx, int argc, char **argv);
int cmd_promote(struct cmd_ctx *ctx, int argc, char **argv);
int cmd_run(struct cmd_ctx *ctx, int argc, char **argv);
int cmd_export(struct cmd_ctx *ctx, int argc, char **argv);
int cmd_import(struct cmd_ctx *ctx, int argc, char **argv);

/* ---- exec.c: the app supervisor of "ltfs mount DIR -- CMD" ---- */

struct fs;
struct cluster;
struct supervisor;

struct cmd_exec_plan {
	const struct cmd_exec *cmds; /* exec: from the config */
	size_t n;
	char **argv;                 /* "-- CMD ARGS": replaces cmds */
	bool skip_sync;              /* start before the node serves */
};

/* Block SIGINT, SIGTERM, SIGHUP and SIGCHLD in the calling thread and the
 * threads it starts from now on (the supervisor takes them); *old = the
 * mask before, which the commands get back. 0 or a negative errno. */
int cmd_sup_block_signals(sigset_t *old);
/* Start the supervisor thread: it waits until the node serves, runs the
 * commands, forwards signals, and stops fs when the app exits. */
int cmd_sup_start(struct supervisor **out, const struct cmd_exec_plan *plan,
		  const sigset_t *child_mask, struct fs *fs, struct cluster *cl,
		  struct ltfs_log *log, struct ltfs_err *err);
/* After fs_run() returned: stop a command still running (SIGTERM, then
 * SIGKILL after 10 s), join, free; the code "ltfs mount" exits with. */
int cmd_sup_finish(struct supervisor *s);
/* A command line into words (quotes and backslashes as in a shell; no
 * expansion). *out is freed by free((*out)[0]) then free(*out). */
int cmd_split_words(const char *s, char ***out, struct ltfs_err *err);

/* The bucket at url (s3://BUCKET/PREFIX) with the config's s3.* settings
 * (the AWS_* variables fill what the config leaves out). */
struct s3;
int cmd_s3_open(const struct cmd_config *c, const char *url, struct s3 **out,
		struct ltfs_err *err);

/* Defaults of a config not yet loaded (flags not given). */
void cmd_config_init(struct cmd_config *c, const struct cmd_ctx *ctx);

/* Print "ltfs CMD: MESSAGE" to stderr and return EXIT_USAGE. */
int cmd_usage_error(const char *cmd, const char *fmt, ...) LTFS_PRINTF(2, 3);
/* Print "ltfs CMD: MESSAGE" to stderr and return EXIT_FAIL. */
int cmd_fail(const char *cmd, const char *fmt, ...) LTFS_PRINTF(2, 3);
/* A decimal number in lo..hi into *out: 0, or -1 for anything else. */
int cmd_parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out);
/* A duration ("500ms", "1s", "2.5m", "1h", or "0") up to hi_ms, in ms:
 * 0, or -1 for anything else (a bare non-zero number has no unit). */
int cmd_parse_duration_ms(const char *s, unsigned hi_ms, unsigned *out);
/* "none" (0), "s3" (1) or "replicas=N" (2, *n = N in 1..16): 0, or -1.
 * mode and n may be NULL. */
int cmd_parse_sync(const char *s, int *mode, unsigned *n);
/* GET BASE/v1/info (token from LTFS_TOKEN) into *out: EXIT_OK, or the
 * exit code after "ltfs CMD: why" on stderr. */
struct json_t;
int cmd_node_info(const char *cmd, const char *base, struct json_t **out);
/* A node's base URL (trailing slashes dropped) joined with path. */
void cmd_node_url(const char *base, const char *path, char *out, size_t n);
/* True if argv holds -h or --help before any "--". */
bool cmd_wants_help(int argc, char **argv);

#endif /* LTFS_CMD_H */
