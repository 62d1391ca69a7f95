/*
 * fs_int.h - internals shared by the files of fs/.
 *
 * Lock order: fs->lock (node table, registry) before db->mu (one database).
 * Never hold either across fuse_reply_*() or across a call into the mount
 * itself (the apply's locks, replica.c): those need a FUSE worker.
 */
#ifndef LTFS_FS_INT_H
#define LTFS_FS_INT_H

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>

#include "fs/fs.h"

#define FS_PATH_MAX 4096
#define FS_NAME_MAX 255
#define FS_MAX_DBS 4096

/* SQLite's lock bytes (os_unix.c) and where the WAL index keeps its read
 * marks (wal.c: WalCkptInfo.aReadMark, u32 in native byte order). */
#define FS_DB_PENDING_BYTE 0x40000000ull
#define FS_DB_RESERVED_BYTE 0x40000001ull
#define FS_DB_SHARED_FIRST 0x40000002ull
#define FS_DB_SHARED_SIZE 510
#define FS_SHM_WRITE_BYTE 120ull
#define FS_SHM_CKPT_BYTE 121ull
#define FS_SHM_RECOVER_BYTE 122ull
#define FS_SHM_READ_BYTE(i) (123ull + (i)) /* read-mark slot i, 0..4 */
#define FS_SHM_READ_MARK_OFF(i) (100 + 4 * (i))

enum fs_kind {
	FS_DIR,     /* directory, backed by DATA/tree/PATH */
	FS_FILE,    /* regular file that is not (yet) a database */
	FS_DB,      /* SQLite main file */
	FS_JOURNAL, /* NAME-journal */
	FS_WAL,     /* NAME-wal */
	FS_SHM,     /* NAME-shm */
	FS_POS,     /* NAME-pos: "TXID/CHECKSUM\n" */
	FS_PRIMARY, /* .primary */
	FS_LAG,     /* .lag */
};

struct fs_db;

/*
 * A node is what a FUSE inode number points at (the number is the pointer).
 * It lives while the kernel holds lookups or handles, or while a database
 * refers to it.
 */
struct fs_node {
	uint64_t nlookup;        /* kernel lookups; fs->lock */
	uint32_t nopen;          /* open handles; fs->lock */
	enum fs_kind kind;       /* fs->lock (a FILE may become a DB) */
	char *path;              /* path in the mount, "" for the root; fs->lock */
	struct fs_db *db;        /* DB, JOURNAL, WAL, SHM, POS; fs->lock */
	struct fs_node *hnext;   /* hash chain by path; fs->lock */
	bool hashed;             /* reachable by path; fs->lock */
	uint64_t generation;
};

/* WAL state of a database: where committed frames end. */
struct fs_wal {
	bool active;        /* a WAL header was seen (or recovered) */
	bool big_endian;
	uint32_t salt1, salt2;
	uint32_t cksum[2];  /* running checksum at `end` */
	uint64_t end;       /* offset after the last committed frame */
	uint64_t start;     /* offset where the next transaction starts */
};

/* A page of a queued WAL commit: its frame's data offset in the WAL, or
 * FS_FROM_DB for a page read from the database file (first commit). */
#define FS_FROM_DB UINT64_MAX
struct fs_page_ref {
	uint32_t pgno;
	uint64_t off;
};

/* One WAL-mode commit waiting for the writer thread. It reads the pages
 * through db->wal_fd and db->db_fd: whatever closes those drains the
 * queue first (fs_db_sync_history). */
struct fs_job {
	struct fs_job *next;
	struct fs_db *db;
	int64_t due_ns;          /* written no later (CLOCK_MONOTONIC) */
	struct ltx_header h;
	uint64_t post;
	uint32_t n;
	struct fs_page_ref refs[];
};

struct fs_writer {
	pthread_t thread;
	pthread_t folder;        /* folds histories, beside the writer */
	pthread_mutex_t mu;      /* protects everything below and each db->queue */
	pthread_cond_t cv;       /* work arrived / hurry / stop; CLOCK_MONOTONIC */
	pthread_cond_t done;     /* a job finished */
	pthread_cond_t fold_cv;  /* stop (the folder otherwise wakes on a timer) */
	struct fs_db *busy, *busy_tail; /* databases with queued jobs, in turn */
	uint32_t depth;          /* jobs queued, all databases */
	uint32_t hurry;          /* drains waiting: write without pacing */
	bool stop, running;
};

/* Small files that left the history, kept for reuse (spare.c). */
#define FS_SPARE_MAX 4096
struct fs_spare {
	uint64_t id;             /* DATA/staging/spare-ID */
	uint32_t size;           /* bytes when it was retired */
};
struct fs_spares {
	pthread_mutex_t mu;      /* protects everything below but next_id */
	struct fs_spare ring[FS_SPARE_MAX]; /* oldest at head */
	size_t head, n;
	uint64_t bytes;
	uint64_t next_id;        /* atomic */
	bool off;                /* the file system grants no leases */
};
void fs_spares_init(struct fs_spares *s);
void fs_spares_destroy(struct fs_spares *s);

struct fs_db {
	pthread_mutex_t mu;      /* protects everything below */
	struct fs *fs;
	char *name;              /* path in the mount */
	char *dir;               /* DATA/dbs/ESCAPED */
	int dirfd, ltxfd;        /* DATA/dbs/ESCAPED and its ltx/ */
	int db_fd;               /* backing fds, -1 when absent */
	int journal_fd, wal_fd, shm_fd;
	struct fs_node *node;    /* the FS_DB node (holds a reference) */

	uint32_t page_size;      /* 0 until the first page-1 write */
	uint32_t commit;         /* pages in the committed database */
	uint64_t txid;
	uint64_t checksum;       /* post-apply of txid; FLAG when empty */
	int64_t timestamp;       /* of the last LTX, ms */
	uint64_t *page_cksums;   /* [0..commit), lock page 0 */
	uint32_t cksum_cap;

	uint8_t *dirty;          /* bitmap of pages written since the last commit */
	uint32_t dirty_cap;      /* bits */
	uint32_t ndirty;
	bool synced;             /* SQLite fsynced during this transaction */

	struct fs_wal wal;
	pthread_mutex_t hist_mu; /* the next three fields and nltx */
	uint32_t ltx_unsynced;   /* LTX files not yet fsynced (WAL mode) */
	int *unsynced_fds;       /* their descriptors, kept open until synced */
	uint32_t unsynced_cap;
	struct {                 /* fs->writer.mu: WAL commits for the writer */
		struct fs_job *head, *tail;
		uint32_t n;
		struct fs_db *next_busy; /* in fs->writer.busy while n > 0 */
	} queue;
	struct {                 /* fs->writer.mu: the pace of its files */
		int64_t last_ns;     /* CLOCK_MONOTONIC start of the last one */
		int64_t next_ns;     /* none sooner than this */
		double rate;         /* commits per second, smoothed */
	} pace;
	uint32_t nltx;           /* files in the local history */
	uint64_t hist_txid;      /* newest TXID in the history; hist_mu */
	uint64_t n_commits;      /* files recorded or applied since start; hist_mu */
	uint64_t ltx_bytes;      /* their bytes; hist_mu */
	uint32_t fold_at;        /* next nltx worth a folding check; folder only */
	uint64_t shipped_txid;   /* hist_mu: history up to here is in the bucket */
	struct {                 /* hist_mu: the history's file names, as last read */
		uint64_t *mins, *maxs;
		size_t n, cap;
		struct timespec mtime; /* of the ltx dir when read */
		bool valid;
	} hcache;

	bool shm_resetting;      /* replica apply rewrites the WAL index: drop
				  * the page cache's stale write-backs */
	bool broken;             /* checksum mismatch: refuse service */
	bool applying;           /* an apply with no app's file open: opens wait; fs->lock */
	char broken_msg[LTFS_ERR_MSG_MAX];

	/* NAME-pos open handles waiting in poll() for the next position
	 * (ops.c); pos_seq counts the changes of position (atomic) */
	pthread_mutex_t poll_mu;
	struct fs_handle *pollers; /* poll_mu */
	uint64_t pos_seq;
};

struct fs {
	struct fs_config cfg;
	struct ltfs_log *log;
	char mountpoint[FS_PATH_MAX];
	char data_dir[FS_PATH_MAX];
	int data_fd, tree_fd, dbs_fd;
	uint64_t node_id;
	struct fuse_session *se;
	bool mounted;

	pthread_mutex_t lock;      /* node table, registry, role */
	pthread_cond_t apply_cv;   /* a database's `applying` ended; with lock */
	struct fs_node *root;
	struct fs_node **table;    /* hash by path */
	size_t table_size, nnodes;
	struct fs_db **dbs;
	size_t ndbs;
	uint64_t generation;

	enum fs_role role;
	char primary_url[1024];
	int64_t write_deadline;    /* CLOCK_MONOTONIC ms; 0 = none (atomic) */
	int64_t ack_deadline;      /* same, for answering recorded commits */
	fs_commit_fn on_commit;
	void *on_commit_ctx;
	fs_commit_wait_fn commit_wait;
	void *commit_wait_ctx;
	struct fs_writer writer;
	int staging_fd;            /* DATA/staging: received LTX files, spares */
	uint64_t stage_seq;
	struct fs_spares spares;
	int64_t primary_time;      /* ms, for .lag; 0 = not caught up */
	bool stopping;
	pthread_t run_thread;      /* in fs_run(), which fs_stop() wakes */
	bool running;              /* atomic */
	pthread_mutex_t opener_mu; /* opener.c: the helper process */
	int opener_sock;
	pid_t opener_pid;
	char fault[64];            /* LTFS_FAULT=OP[:N], test builds only */
	int fault_left;            /* failures still to inject */
	bool fault_always;
};

/* opener.c: open a file of our mount (PATH in it) without a request from
 * this process (see there); -errno, or 0 and *fd. */
int fs_open_in_mount(struct fs *fs, const char *path, int flags, int *fd);
void fs_opener_stop(struct fs *fs);

/* node.c */
int fs_nodes_init(struct fs *fs);
void fs_nodes_free(struct fs *fs);
struct fs_node *fs_node_find(struct fs *fs, const char *path);
struct fs_node *fs_node_new(struct fs *fs, const char *path, enum fs_kind kind,
			    struct fs_db *db);
void fs_node_unhash(struct fs *fs, struct fs_node *n);
void fs_node_rehash(struct fs *fs, struct fs_node *n, char *new_path);
void fs_node_maybe_free(struct fs *fs, struct fs_node *n);
int fs_join_path(char *out, size_t n, const char *dir, const char *name);
void fs_escape_name(const char *path, char *out, size_t n);
int fs_unescape_name(const char *esc, char *out, size_t n);
/* "-journal" etc.: the kind for a suffix, and the base name length. */
enum fs_kind fs_suffix_kind(const char *name, size_t *base_len);
/* A directory stream of its own over an open directory fd (which stays
 * open), safe beside other listings; NULL with errno set. Close with
 * closedir(). */
DIR *fs_opendir_at(int dirfd);

/* The inode number the kernel knows a node by. */
uint64_t fs_node_ino(struct fs *fs, struct fs_node *n);

/* db.c */
/* The database registered under a mount path (fs->lock held); `live`
 * skips deleted ones. */
struct fs_db *fs_db_find(struct fs *fs, const char *name, bool live);
int fs_db_register(struct fs *fs, struct fs_db *db, struct ltfs_err *err);
int fs_db_cksums_reserve(struct fs_db *db, uint32_t npages);
/* Remove the database file and its companions (a deletion). */
void fs_db_remove_files(struct fs_db *db);
/* A file joined the history: count it and tell the commit hook. */
void fs_db_published(struct fs_db *db, const struct ltx_header *h,
		     uint64_t post, const char *name, uint64_t bytes);
int fs_db_create(struct fs *fs, const char *name, struct fs_db **out,
		 struct ltfs_err *err);
int fs_db_settle(struct fs_db *db, bool wal_mode, struct ltfs_err *err);
int fs_db_load(struct fs *fs, const char *escaped, struct fs_db **out,
	       struct ltfs_err *err);
void fs_db_free(struct fs_db *db);
int fs_db_open_aux(struct fs_db *db, enum fs_kind kind, bool create);
int fs_db_aux_fd(struct fs_db *db, enum fs_kind kind);
int fs_db_remove_aux(struct fs_db *db, enum fs_kind kind);
/* Backing file name in DATA/dbs/NAME/ of a kind: database, journal, wal, shm. */
const char *fs_db_aux_name(enum fs_kind kind);
int fs_db_note_db_write(struct fs_db *db, const void *buf, size_t n,
			uint64_t off, struct ltfs_err *err);
int fs_db_truncate(struct fs_db *db, uint64_t size, struct ltfs_err *err);
int fs_db_journal_finalize(struct fs_db *db, struct ltfs_err *err);
int fs_db_wal_write(struct fs_db *db, const void *buf, size_t n, uint64_t off,
		    struct ltfs_err *err);
int fs_db_wal_truncate(struct fs_db *db, uint64_t size, struct ltfs_err *err);
int fs_db_wal_commit_pending(struct fs_db *db, struct ltfs_err *err);
int fs_db_commit_unjournaled(struct fs_db *db, struct ltfs_err *err);
int fs_db_sync_history(struct fs_db *db);

/*
 * New history and staging files, and history files that go (spare.c):
 * fs_spare_create returns a read-write descriptor of an empty file `name`
 * in dirfd (`excl`: -EEXIST when the name exists; else it is replaced), or
 * -errno. fs_spare_retire removes `name` from dirfd, keeping the file for
 * reuse when it is small; 0 or -errno. At start-up, fs_spare_adopt takes
 * DATA/staging/`name` back as a spare when it is one that still fits.
 */
int fs_spare_create(struct fs *fs, int dirfd, const char *name, bool excl);
int fs_spare_retire(struct fs *fs, int dirfd, const char *name);
bool fs_spare_adopt(struct fs *fs, const char *name);

/*
 * Files of the history are written as ltx/MIN-MAX.ltx.tmp and then put in
 * place. fs_ltx_create returns the temp file's descriptor (fills `name`
 * and `tmp`); fs_ltx_publish renames it without replacing any file, first
 * syncing it and afterwards the directory if `durable`. A failed rename
 * removes the temp file; the descriptor stays the caller's.
 */
int fs_ltx_create(struct fs_db *db, uint64_t min_txid, uint64_t max_txid,
		  char name[LTX_FILENAME_SIZE], char tmp[LTX_FILENAME_SIZE + 8],
		  struct ltfs_err *err);
int fs_ltx_publish(struct fs_db *db, int fd, const char *tmp, const char *name,
		   bool durable, struct ltfs_err *err);
int fs_db_defer_sync(struct fs_db *db, int fd);

/* ops.c: the position of `db` changed; wake its -pos pollers (any lock
 * but poll_mu may be held). */
void fs_pos_changed(struct fs_db *db);

/* history.c */
int fs_history_drop_covered(struct fs_db *db);
void fs_history_added(struct fs_db *db, const char *name);
/* Files ending after `limit` are never folded (not yet shipped). */
int fs_history_fold(struct fs_db *db, uint32_t keep, uint64_t limit,
		    struct ltfs_err *err);
/* Remove every history file but `keep` (after a snapshot). */
int fs_history_remove_except(struct fs_db *db, const char *keep);
/* Name of the file that starts at min_txid and reaches furthest. */
int fs_history_find(struct fs_db *db, uint64_t min_txid, bool fresh,
		    char name[LTX_FILENAME_SIZE]);

/* writer.c */
int fs_writer_start(struct fs *fs);
void fs_writer_stop(struct fs *fs);
void fs_writer_queue(struct fs *fs, struct fs_job *job);
int fs_writer_drain(struct fs *fs, struct fs_db *db);
int fs_db_drop(struct fs_db *db, struct ltfs_err *err);
void fs_db_pos_text(struct fs_db *db, char out[34]);

/* replica.c: a commit recorded may be answered as done (fs_fence_writes) */
bool fs_ack_allowed(struct fs *fs);

/* ops.c */
extern const struct fuse_lowlevel_ops fs_ops;
int fs_errno(int rc); /* project codes to a positive errno for FUSE */

/* Fault injection: true if `op` should fail (test builds only). */
bool fs_fault_hit(struct fs *fs, const char *op);
/* Test builds: sleep ms where fault OP hits (a stalled disk, a slow
 * writer), so that a pause or a failover lands inside the stall. */
void fs_fault_stall(struct fs *fs, const char *op, long ms);
/* Seconds since `since` (CLOCK_MONOTONIC), for the log. */
double fs_elapsed_s(const struct timespec *since);

#endif /* LTFS_FS_INT_H */
