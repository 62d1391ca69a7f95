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
	bool hold_unshipped;    /* a backup ships the history: never fold a
				 * file past the TXID fs_set_shipped() gave */
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
/* Ask fs_run() to return, from a signal handler or another thread (which
 * may have to ask again: a wake-up can slip in just before the loop
 * waits; calling it until fs_run() returned is safe). */
void fs_stop(struct fs *fs);
void fs_close(struct fs *fs);

void fs_set_commit_hook(struct fs *fs, fs_commit_fn fn, void *ctx);

/*
 * Synchronous mode: the FUSE request that made a commit (the journal's
 * finalize, the write of the WAL's commit frame, the sync of a database
 * written without a journal) answers only once fn returns, with -EIO if
 * it fails, which SQLite reports as the COMMIT failing.
 */
typedef int (*fs_commit_wait_fn)(void *ctx, const char *db, uint64_t txid);
void fs_set_commit_wait(struct fs *fs, fs_commit_wait_fn fn, void *ctx);
void fs_set_role(struct fs *fs, enum fs_role role, const char *primary_url);
bool fs_is_primary(struct fs *fs);
/* A primary holding a lease takes writes only until this CLOCK_MONOTONIC
 * moment (ms; 0 = no limit, 1 = closed): past it, database writes fail
 * with EACCES even before the lease thread has demoted the node. A commit
 * recorded before it but answered after it is reported as failed: the
 * node may have lost the lease without handing the commit on. */
void fs_set_write_deadline(struct fs *fs, int64_t mono_ms);
/* Close writes for a handoff, whose caller then drains the history and
 * ships it. On return every commit that passed the write check has been
 * recorded (fs_history_drain then writes it). Commits recorded before the
 * fence are still answered as done until the acknowledgement deadline:
 * the lease's end while the handoff runs, none (0) once it shipped them. */
void fs_fence_writes(struct fs *fs);
void fs_set_ack_deadline(struct fs *fs, int64_t mono_ms);
/* The primary role and, with a deadline, still inside it. */
bool fs_write_allowed(struct fs *fs);
/* Wait until every WAL commit so far is in the local history (the LTX
 * writer lags the commits by a few ms): 0, or -EIO after some seconds. */
int fs_history_drain(struct fs *fs);

/* Position of a database: 0 and TXID/checksum, or -ENOENT. */
int fs_db_position(struct fs *fs, const char *db, uint64_t *txid,
		   uint64_t *checksum);

/* One database as the cluster layer sees it. */
struct fs_db_info {
	const char *name;        /* path in the mount */
	uint64_t txid, checksum; /* position: what readers see */
	uint64_t hist_txid;      /* newest TXID in the local history */
	int64_t timestamp;       /* of the newest LTX, ms since the epoch */
	uint32_t page_size, pages;
	uint64_t commits;        /* LTX files recorded or applied since start */
	uint64_t ltx_bytes;      /* their bytes */
	bool exists;             /* false once deleted (or never written) */
	bool broken;             /* failed verification: not served */
};
typedef void (*fs_db_fn)(void *ctx, const struct fs_db_info *info);

/* Call fn for every database known to the store, with the store locked:
 * fn must copy what it needs and must not call back into fs. */
void fs_db_foreach(struct fs *fs, fs_db_fn fn, void *ctx);

/*
 * Open the file of the local history that starts at `min_txid` (the one
 * reaching furthest if several do) and decode its header. -ENOENT if there
 * is none. The caller reads and closes the descriptor; the file may be
 * folded away meanwhile, the open descriptor stays valid.
 */
int fs_history_open(struct fs *fs, const char *db, uint64_t min_txid,
		    int *fd, struct ltx_header *h, struct ltfs_err *err);

/*
 * Replica side. A received LTX file is written to a staging file first
 * (fs_stage_create: DATA/staging/NAME, returns the descriptor), then
 * fs_apply_ltx() checks it, records it in the history and applies it to
 * the database atomically for readers: SQLite's locks are taken inside the
 * daemon (waiting for open read transactions), the pages written, the
 * WAL index reset, the kernel caches invalidated. The file must continue
 * the database (TXID and pre-apply checksum) or be a snapshot; anything
 * else, or a file that does not verify, is refused with LTFS_E_TXID,
 * LTFS_E_CHECKSUM or LTFS_E_CORRUPT and nothing changes. The staging file
 * is consumed (moved or removed) either way; the descriptor stays the
 * caller's.
 */
struct fs_prebuilt;
int fs_stage_create(struct fs *fs, char name[64], struct ltfs_err *err);
int fs_apply_ltx(struct fs *fs, const char *db, int fd, const char *stage_name,
		 struct fs_prebuilt *pb, struct ltx_header *out, struct ltfs_err *err);
/*
 * A new replica's catch-up without a second pass: while a big file is
 * still being staged, fs_prebuild_ltx() reads it through `read` (which
 * waits for the bytes still to come) and, if it is a snapshot of a
 * database this node does not have, writes and checks the database beside
 * it in DATA/staging. 0 with *out (NULL: not such a file, nothing done),
 * or an error (the file is bad: the apply names it again). fs_apply_ltx()
 * takes *out (or NULL) and consumes it; fs_prebuilt_free() drops one that
 * is not applied.
 */
int fs_prebuild_ltx(struct fs *fs, const char *db, const char *stage_name, ltx_read_fn read,
		    void *ctx, struct fs_prebuilt **out, struct ltfs_err *err);
void fs_prebuilt_free(struct fs *fs, struct fs_prebuilt *pb);
void fs_stage_discard(struct fs *fs, const char *stage_name);
/* Forget a database the primary does not have: its files and history go. */
int fs_db_forget(struct fs *fs, const char *db, struct ltfs_err *err);
/* A database name as replication accepts it: relative, no "." or ".."
 * components, no companion suffix. 0 or LTFS_E_USAGE with the reason. */
int fs_db_name_check(const char *db, struct ltfs_err *err);

/* The primary's clock as last heard of (ms since the epoch), for `.lag`;
 * 0 = not caught up yet. Lag in ms, INT32_MAX before the first catch-up. */
void fs_set_primary_time(struct fs *fs, int64_t ms);
int64_t fs_lag_ms(struct fs *fs);

/* The history of db up to txid is safe elsewhere (the bucket): with
 * hold_unshipped, folding may now take it. */
void fs_set_shipped(struct fs *fs, const char *db, uint64_t txid);

/*
 * Before fs_open(): make db_file (a SQLite file on the data dir's
 * filesystem; moved, not copied) database NAME of data_dir at TXID txid,
 * its history one snapshot 1-txid. LTFS_E_STATE if NAME is there already.
 */
int fs_seed_db(const char *data_dir, const char *name, const char *db_file, uint64_t txid,
	       int64_t timestamp_ms, struct ltfs_err *err);
/* True if data_dir holds any database (a node that has been running). */
bool fs_data_dir_has_dbs(const char *data_dir);

/* The mount point as configured. */
const char *fs_mountpoint(struct fs *fs);

/* Node id (random, kept in DATA/node). */
uint64_t fs_node_id(struct fs *fs);

/* Default data dir for a mount point ("MOUNT.ltfs"); out >= 4096 bytes. */
void fs_default_data_dir(const char *mountpoint, char *out, size_t n);

#endif /* LTFS_FS_H */
