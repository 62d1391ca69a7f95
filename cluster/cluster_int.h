/*
 * cluster_int.h - internals shared by the files of cluster/.
 *
 * Threads: libmicrohttpd runs one thread per connection (a replication
 * stream blocks in its content callback until there is something to
 * send); a replica runs one client thread. c->mu guards the fields marked
 * below; the fs commit hook only bumps c->gen under it, so it never waits
 * on anything slow.
 */
#ifndef LTFS_CLUSTER_INT_H
#define LTFS_CLUSTER_INT_H

#include <pthread.h>

#include "cluster/cluster.h"

#define HEARTBEAT_MS 1000      /* idle streams send the primary's clock */
#define STREAM_IDLE_MS 5000    /* a replica gives up on a silent stream */
#define STREAM_BODY_MAX (1u << 20)
#define TOKEN_MAX 1024
#define URL_MAX 1024

struct MHD_Daemon;

struct cluster {
	struct fs *fs;
	struct ltfs_log *log;
	char addr[256];           /* listen address as configured */
	char token[TOKEN_MAX];    /* "" = none */
	char replica_of[URL_MAX]; /* "" = this node is the primary */
	struct MHD_Daemon *mhd;

	pthread_mutex_t mu;
	pthread_cond_t cv;        /* a commit, or stop */
	uint64_t gen;             /* mu: bumped by every commit */
	bool stopping;            /* mu */
	unsigned streams;         /* mu: open replication streams */
	uint64_t streams_total;   /* mu */

	/* replica client */
	pthread_t client;
	bool client_started;
	bool connected, ready;    /* mu */
	uint64_t reconnects;      /* mu */
	char last_error[256];     /* mu */

	struct cl_backup *backup; /* NULL without a bucket */
};

int64_t cl_now_ms(void);      /* wall clock, ms since the epoch */
int64_t cl_mono_ms(void);     /* monotonic, ms */
/* Wait on cv (mu held) for at most ms milliseconds. */
void cl_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);
/* Wait on c->cv (c->mu held) for at most ms milliseconds. */
void cl_wait(struct cluster *c, int64_t ms);

/* http.c */
int cl_http_start(struct cluster *c, struct ltfs_err *err);
void cl_http_stop(struct cluster *c);

/* stream.c: the primary's side of one replication stream */
struct cl_stream;
int cl_stream_open(struct cluster *c, const char *body, size_t len,
		   const char *peer, struct cl_stream **out, struct ltfs_err *err);
/* libmicrohttpd content reader and its free callback. */
ssize_t cl_stream_read(void *cls, uint64_t pos, char *buf, size_t max);
void cl_stream_free(void *cls);

/* client.c: the replica's side */
int cl_client_start(struct cluster *c, struct ltfs_err *err);
void cl_client_stop(struct cluster *c);

/* compact.c: the local history from `from` (a file boundary) to the first
 * boundary at or after `to` (UINT64_MAX: the head) as one LTX file, in an
 * unlinked staging file whose descriptor is returned. */
int cl_history_compact(struct cluster *c, const char *name, uint64_t from, uint64_t to,
		       int *out_fd, struct ltx_header *oh, struct ltfs_err *err);

/* backup.c: the primary ships its history to the bucket; compact.c keeps
 * it small. What the bucket holds is kept in memory, per database and
 * level, sorted by min TXID. */
#define BUCKET_LEVELS 10      /* 0 uploads, 1..8 compaction, 9 snapshots */
#define SNAPSHOT_LEVEL 9

struct bfile {
	uint64_t min, max, size;
	int64_t ts_ms;            /* when it reached the bucket */
};

struct blevel {
	struct bfile *v;
	size_t n, cap;
};

struct bdb {
	char *name;
	uint64_t remote_txid;     /* newest TXID in the bucket */
	int64_t remote_ms;        /* its commit time */
	bool stuck;               /* bucket and history disagree: needs an operator */
	struct blevel lv[BUCKET_LEVELS];
};

struct cl_backup {
	struct cluster *c;
	struct s3 *s3;
	struct s3_conn *conn;     /* upload thread */
	struct s3_conn *cconn;    /* compaction thread */
	struct cluster_backup_opts opts;
	unsigned interval_ms;
	pthread_t thread, compactor;
	bool started, compactor_started;
	bool listed;              /* the bucket was listed (upload thread) */

	/* c->mu */
	struct bdb *dbs;
	size_t ndbs;
	uint64_t uploads, upload_bytes, failures;
	uint64_t compactions, deletions;
	int64_t last_ok_ms;
	char last_error[LTFS_ERR_MSG_MAX];
	uint64_t backlog;         /* TXIDs in local histories not yet shipped */
};

/* With c->mu held. */
struct bdb *cl_bdb_find(struct cl_backup *b, const char *name, bool create);
int cl_level_add(struct blevel *lv, uint64_t min, uint64_t max, uint64_t size, int64_t ts_ms);
void *cl_compact_main(void *arg);

int cl_backup_start(struct cluster *c, struct s3 *s3, const struct cluster_backup_opts *opts,
		    struct ltfs_err *err);
void cl_backup_stop(struct cluster *c);   /* after c->stopping is set */

struct cl_backup_stats {
	char url[S3_KEY_MAX + 80];
	uint64_t uploads, upload_bytes, failures;
	int64_t last_ok_ms;       /* wall clock; 0 = none yet */
	uint64_t backlog;         /* TXIDs waiting in local histories */
	char last_error[LTFS_ERR_MSG_MAX];
};
/* With c->mu held: -ENOENT when the node has no bucket. */
int cl_backup_stats(struct cluster *c, struct cl_backup_stats *out);
/* With c->mu held: the bucket's newest TXID of a database (0 = none). */
uint64_t cl_backup_remote_txid(struct cluster *c, const char *name, bool *stuck);

#endif /* LTFS_CLUSTER_INT_H */
