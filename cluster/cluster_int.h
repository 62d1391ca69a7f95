/*
 * cluster_int.h - internals shared by the files of cluster/.
 *
 * Threads: libmicrohttpd runs one thread per connection (a replication
 * stream blocks in its content callback until there is something to
 * send); a replica runs one client thread. c->mu guards the fields marked
 * below; the fs commit hook only bumps c->gen under it, so it never waits
 * on anything slow.
 *
 * Lock order: the lease's l->mu, then fs's locks (fs->lock, a database's
 * mu), then c->mu. A commit holds fs's locks as it calls the hook, so no
 * call into fs that locks may be made with c->mu held.
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
	bool allow_run;           /* POST /v1/run (ltfs run --on-primary) */
	struct MHD_Daemon *mhd;

	pthread_mutex_t mu;
	pthread_cond_t cv;        /* with mu: any change of state (cl_wake) */
	pthread_cond_t commit_cv; /* with mu: the same, and every commit */
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

	/* lease mode (lease.c): roles change at run time; c->mu */
	struct cl_lease *lease;   /* NULL: static roles */
	uint64_t epoch;           /* ours while we hold the lease, else 0 */
	uint64_t max_epoch;       /* the highest seen anywhere */
	uint64_t follow_epoch;    /* epoch of the primary replica_of names */
	uint64_t follow_gen;      /* bumped when replica_of changes */
	bool promoting;           /* lease won: catch up, then open writes */
	bool serving;             /* primary with writes open */
	bool handing_off;         /* ltfs promote: writes stopped, shipping */
	uint64_t promotions, demotions;
	uint64_t unpublished_txids; /* committed here, never published, at demotions */
	uint64_t publishes;       /* lease writes that published new heads */

	/* sync: replicas=N (c->mu) */
	unsigned sync_replicas;   /* 0 = not that mode */
	struct cl_ack *acks;      /* primary: what each replica applied */
	size_t nacks;
	uint64_t ack_gen, ack_sent; /* replica: applies since, and as of, the last ack */
	uint64_t ack_epoch;       /* replica: epoch of the stream that applied them */
	char ack_url[URL_MAX];    /* replica: the primary that wants them */
	pthread_t acker;
	bool acker_started;

	struct cl_proxy *proxy;   /* NULL: no proxy */
	char proxy_url[URL_MAX];  /* advertised in /v1/info; "" = none */
};

struct cl_ack {
	uint64_t node;
	char *name;
	uint64_t txid;
};

/* The primary: serves streams and ships to the bucket. */
bool cl_is_primary(struct cluster *c);

int64_t cl_now_ms(void);      /* wall clock, ms since the epoch */
/* 1..16 hex digits into *out: 0, or -1 for anything else (stream.c). */
int cl_parse_hex64(const char *s, uint64_t *out);
/* v as 16 lowercase hex digits, as the protocol and the lease write them
 * (http.c). */
void cl_hex16(uint64_t v, char out[17]);
/* Percent-encode s into b as SigV4 and URL paths want it: everything but
 * unreserved characters (and '/' when keep_slash). */
int cl_url_encode(struct ltfs_buf *b, const char *s, bool keep_slash);
int64_t cl_mono_ms(void);     /* monotonic, ms */
/* Wait on cv (mu held) for at most ms milliseconds. */
void cl_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);
/*
 * Commits come by the thousand a second and only the streams and the
 * backup's idle wait care: they wake only the threads that wait with
 * cl_wait_commit(). Every other change is announced with cl_wake() (c->mu
 * held), which wakes all. Both waits: at most ms milliseconds, c->mu held.
 */
void cl_wake(struct cluster *c);
void cl_wait(struct cluster *c, int64_t ms);
void cl_wait_commit(struct cluster *c, int64_t ms);

/* client.c: one request (POST when body is not NULL), the answer's bytes
 * to sink as curl hands them over (which returns n, or less to stop). */
typedef size_t (*cl_http_sink_fn)(char *p, size_t size, size_t nmemb, void *ctx);
int cl_http_request(const char *url, const char *token, const char *body, cl_http_sink_fn sink,
		    void *ctx, long *status, long timeout_ms, struct ltfs_err *err);
/* client.c: cluster_http_get with a total timeout. */
int cl_http_get_within(const char *url, const char *token, struct ltfs_buf *out, long *status,
		       long timeout_ms, struct ltfs_err *err);

/* run.c: POST /v1/run, a command run on the primary for ltfs run */
struct cl_run;
int cl_run_open(struct cluster *c, const char *body, size_t len, const char *peer,
		struct cl_run **out, struct ltfs_err *err);
ssize_t cl_run_read(void *cls, uint64_t pos, char *buf, size_t max);
void cl_run_free(void *cls);

/* http.c */
int cl_http_start(struct cluster *c, struct ltfs_err *err);
void cl_http_stop(struct cluster *c);

/* proxy.c: the write-forwarding proxy; started last, stopped first */
struct cl_proxy;
int cl_proxy_start(struct cluster *c, const struct cluster_proxy_opts *o, struct ltfs_err *err);
void cl_proxy_stop(struct cluster *c);
/* The proxy's counters in Prometheus text (nothing without a proxy). */
int cl_proxy_metrics(struct cluster *c, struct ltfs_buf *b);

/* stream.c: the primary's side of one replication stream */
struct cl_stream;
int cl_stream_open(struct cluster *c, const char *body, size_t len,
		   const char *peer, struct cl_stream **out, struct ltfs_err *err);
/* POST /v1/ack: a replica's applied positions for sync: replicas=N. */
int cl_ack_record(struct cluster *c, const char *body, size_t len, struct ltfs_err *err);
/* With c->mu held: how many replicas have applied db up to txid. */
size_t cl_acks_at(struct cluster *c, const char *db, uint64_t txid);
void cl_acks_clear(struct cluster *c);    /* c->mu held */
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

/* An object of this round: in the bucket, not yet published. */
struct bsent {
	struct bfile f;
	unsigned level;
	uint64_t checksum;        /* database checksum after it */
};

struct bdb {
	char *name;
	uint64_t remote_txid;     /* newest TXID in the bucket (published, with a lease) */
	int64_t remote_ms;        /* its commit time */
	bool stuck;               /* bucket and history disagree: needs an operator */
	struct blevel lv[BUCKET_LEVELS];
	/* uploaded past remote_txid, counted once the round publishes them
	 * (at once without a lease); in TXID order */
	struct bsent *sent;
	size_t nsent, capsent;
	/* level-0 objects past the published head at the last listing: a
	 * deposed primary's, to be covered by ours (backup.c) */
	struct blevel orphans;
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
	uint64_t listed_epoch;    /* c->mu: lease epoch of that listing */
	uint64_t flush_req, flush_done; /* c->mu: cl_backup_flush() rounds */

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

/* Ship everything committed and wait for it (ltfs promote); 0 or an error. */
int cl_backup_flush(struct cluster *c, int64_t timeout_ms, struct ltfs_err *err);

/* lease.c: election through PREFIX/.ltfs/lease.json */
#define LEASE_KEY ".ltfs/lease.json"

struct lease_head {
	char *name;
	uint64_t txid, checksum;  /* published position */
};

struct lease_doc {
	char node[17];
	char url[URL_MAX];
	uint64_t epoch;
	int64_t ttl_ms;
	bool released;
	char handoff[17];         /* released for this node only; "" = anyone */
	struct lease_head *heads; /* sorted by name */
	size_t nheads, cap;
};

struct cl_lease {
	struct cluster *c;
	struct s3 *s3;
	char key[S3_KEY_MAX];
	char node[17], url[URL_MAX];
	int64_t ttl_ms, renew_ms, margin_ms, poll_ms;
	bool candidate;
	pthread_t thread;
	bool started;
	pthread_cond_t cv;        /* with c->mu: wake the thread */
	bool poked;               /* c->mu */

	pthread_mutex_t mu;       /* everything below; every request on the object */
	struct s3_conn *conn;
	struct lease_doc doc;     /* ours while held */
	char etag[S3_ETAG_MAX];   /* of the version we know; "" = absent */
	bool held;
	int64_t sent_at;          /* monotonic ms of the last renewal sent */
	int64_t valid_until;      /* writes stop here */
	char seen_etag[S3_ETAG_MAX];
	int64_t seen_at;          /* when seen_etag was first seen */
	int64_t no_take_until;    /* after a resignation */
	int64_t warned_at;
};

int cl_lease_start(struct cluster *c, struct s3 *s3, const struct cluster_lease_opts *o,
		   struct ltfs_err *err);
void cl_lease_stop_thread(struct cluster *c);
void cl_lease_stop(struct cluster *c);   /* releases a held lease; frees */
void cl_lease_poke(struct cluster *c);   /* look at the object again now */
bool cl_lease_valid(struct cluster *c);  /* held and inside its deadline */
/* Make the n positions of heads[] (names borrowed) part of the published
 * state, all in one conditional PUT of the lease: 0, or LTFS_E_NOT_PRIMARY
 * once the lease is lost. Heads at or behind the published ones are left
 * alone; when none moves, nothing is written. */
int cl_lease_publish(struct cluster *c, const struct lease_head *heads, size_t n,
		     struct ltfs_err *err);
/* The published TXID of db (0 = none) and its checksum. */
uint64_t cl_lease_head(struct cluster *c, const char *db, uint64_t *checksum);
/* A copy of the held lease (its heads) and its epoch, for the catch-up. */
int cl_lease_heads(struct cluster *c, struct lease_doc *out, uint64_t *epoch);
void cl_lease_doc_free(struct lease_doc *d);
/* Caught up: writes open, if the lease of `epoch` is still ours. */
int cl_lease_open_writes(struct cluster *c, uint64_t epoch);
/* Give the lease up (a promotion that cannot catch up). */
void cl_lease_resign(struct cluster *c, const char *why);
/* The primary hands the lease to node `to` (16 hex digits). */
int cl_lease_handoff(struct cluster *c, const char *to, struct ltfs_err *err);
/* ltfs promote on this node: ask the primary to hand over, wait for writes. */
int cl_promote_self(struct cluster *c, struct ltfs_err *err);
/* The published head of db in the bucket's lease object: 0, -ENOENT
 * (no lease, or nothing published for db), or an S3 / parse error. */
int cl_lease_read_head(struct s3 *s3, const char *db, uint64_t *txid, uint64_t *checksum,
		       struct ltfs_err *err);
/* At a demotion: log and count what this node committed past the heads. */
void cl_note_unpublished(struct cluster *c, const struct lease_doc *d);

/* promote.c: the lease won, catch up (bucket, then the other nodes) and
 * open writes; the registry of nodes in the bucket. */
void cl_promote(struct cluster *c);
int cl_node_register(struct cl_lease *l, struct ltfs_err *err);
void cl_node_unregister(struct cl_lease *l);

/* restore.c: bring one local database to the bucket's TXID `txid`
 * (published checksum `checksum`) through fs_apply_ltx. */
int cl_catch_up_db(struct cluster *c, struct s3_conn *conn, const char *db, uint64_t txid,
		   uint64_t checksum, struct ltfs_err *err);

#endif /* LTFS_CLUSTER_INT_H */
