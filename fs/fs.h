/*
 * fs.h - the ltfs filesystem: a FUSE passthrough (libfuse3 low-level API)
 * that records every SQLite commit made through it as an LTX file.
 *
 * Life cycle, all from one thread:
 *   fs_open()    open the data dir, recover and verify every database
 *   fs_mount()   mount MOUNTDIR (cleans up a stale mount of a crashed run)
 *   fs_run()     serve requests on a worker pool until unmounted or signalled
 *   fs_close()   unmount and free
 *
 * fs/ never calls cluster/: commits leave through the hook set with
 * fs_set_commit_hook(), and the node's role comes in through fs_set_role().
 *
 * Data dir layout (docs/datadir.md):
 *   DATA/node                     node id (16 hex digits)
 *   DATA/tree/...                 directories and non-database files
 *   DATA/dbs/NAME/database        the SQLite file; NAME is the path in the
 *                                 mount with '%' and '/' escaped as %25, %2f
 *   DATA/dbs/NAME/journal|wal|shm backing files of NAME-journal, -wal, -shm
 *   DATA/dbs/NAME/ltx/MIN-MAX.ltx local LTX history
 */
#ifndef LTFS_FS_H
#define LTFS_FS_H

#include <stdbool.h>
#include <stdint.h>

#include "ltx/ltx.h"

struct fs;

enum fs_role {
	FS_ROLE_PRIMARY = 0, /* accepts writes */
	FS_ROLE_REPLICA = 1, /* refuses writes (EACCES / EROFS) */
};

struct fs_config {
	const char *mountpoint; /* required */
	const char *data_dir;   /* required; must not contain or be inside mountpoint */
	struct ltfs_log *log;   /* required; borrowed for the life of the fs */
	bool debug;             /* log every FUSE request at debug level */
	bool allow_other;       /* let other users see the mount */
	unsigned max_threads;   /* FUSE worker threads; 0 = default (16) */
	uint32_t history_keep;  /* newest LTX files never folded; 0 = 1000 */
};

/* Called after each commit's LTX file is in the local history. */
struct fs_commit_info {
	const char *db;           /* database path in the mount */
	const char *ltx_path;     /* the file in the data dir */
	struct ltx_header header;
	uint64_t post_apply_checksum;
};
typedef void (*fs_commit_fn)(void *ctx, const struct fs_commit_info *info);

int fs_open(struct fs **out, const struct fs_config *cfg, struct ltfs_err *err);
int fs_mount(struct fs *fs, struct ltfs_err *err);
/* Returns 0 after a clean unmount or a SIGINT/SIGTERM, < 0 on error. */
int fs_run(struct fs *fs, struct ltfs_err *err);
/* Ask fs_run() to return (async-signal-safe). */
void fs_stop(struct fs *fs);
void fs_close(struct fs *fs);

void fs_set_commit_hook(struct fs *fs, fs_commit_fn fn, void *ctx);
void fs_set_role(struct fs *fs, enum fs_role role, const char *primary_url);

/* Position of a database: 0 and TXID/checksum, or -ENOENT. */
int fs_db_position(struct fs *fs, const char *db, uint64_t *txid,
		   uint64_t *checksum);

/* Default data dir for a mount point ("MOUNT.ltfs"); out >= 4096 bytes. */
void fs_default_data_dir(const char *mountpoint, char *out, size_t n);

#endif /* LTFS_FS_H */
