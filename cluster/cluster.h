/*
 * cluster.h - what makes one ltfs node part of a cluster: the HTTP server
 * (replication stream, info, health, metrics), the replica's stream
 * client, and the small HTTP client `ltfs status` uses.
 *
 * The wire protocol is documented in docs/protocol.md.
 */
#ifndef LTFS_CLUSTER_H
#define LTFS_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fs/fs.h"

#define CLUSTER_DEFAULT_ADDR "127.0.0.1:20202"

struct cluster;

/* Backup schedule (docs/datadir.md, "Bucket"); 0 fields take defaults. */
#define CLUSTER_LEVELS_MAX 8
struct cluster_backup_opts {
	int interval_ms;        /* gather commits this long per upload; 0 = each
				 * commit at once; < 0 = default 1 s */
	unsigned levels_ms[CLUSTER_LEVELS_MAX]; /* compaction interval of level
				 * 1, 2, ...; default 30 s, 5 min, 1 h */
	unsigned nlevels;
	int64_t snapshot_ms;    /* level-9 snapshot interval; default 24 h */
	int64_t retention_ms;   /* restorable window; default 24 h */
	int64_t l0_retention_ms; /* level-0 files kept once compacted; default 5 min */
};
void cluster_backup_defaults(struct cluster_backup_opts *o);

/* Election through a lease object in the bucket (docs/operations.md). */
struct cluster_lease_opts {
	bool enabled;            /* lease: s3 */
	unsigned ttl_ms;         /* default 10 s, at least 2 s */
	unsigned renew_ms;       /* default ttl / 3 */
	bool candidate;          /* may become the primary */
	const char *advertise_url; /* how the others reach this node's HTTP server */
};
void cluster_lease_defaults(struct cluster_lease_opts *o);

/*
 * The write-forwarding HTTP proxy in front of the app (cluster/proxy.c,
 * docs/operations.md). Strings are copied; 0 fields take defaults.
 */
struct cluster_proxy_opts {
	const char *addr;          /* listen HOST:PORT; NULL or "" = no proxy */
	const char *target;        /* the app, HOST:PORT; required with addr */
	const char *db;            /* database the __txid cookie tracks; NULL = none */
	const char *advertise_url; /* how other nodes reach this proxy; NULL =
				    * http://ADDR (which must then name this host) */
	unsigned max_lag_ms;       /* /ltfs/health bound; default 10 s */
	unsigned timeout_ms;       /* silence of the app or the primary; default 30 s */
	unsigned wait_ms;          /* read-your-writes wait; default 5 s */
	uint64_t max_body;         /* request body bound; default 64 MiB */
	const char *const *always_forward; /* path patterns ('*' = any run) */
	size_t n_always_forward;
	const char *const *passthrough;
	size_t n_passthrough;
};

enum cluster_sync {
	CLUSTER_SYNC_NONE = 0,   /* commits never wait (default) */
	CLUSTER_SYNC_S3 = 1,     /* a commit returns once published in the bucket */
	CLUSTER_SYNC_REPLICAS = 2, /* ... once sync_replicas replicas applied it */
};

struct cluster_config {
	struct fs *fs;          /* required; borrowed */
	struct ltfs_log *log;   /* required; borrowed */
	const char *http_addr;  /* listen address; NULL = CLUSTER_DEFAULT_ADDR,
				 * "off" = no server */
	const char *token;      /* shared bearer token; NULL or "" = none */
	const char *replica_of; /* the primary's URL; NULL or "" = primary */
	struct s3 *s3;          /* the bucket to ship to; NULL = none; borrowed */
	const struct cluster_backup_opts *backup; /* NULL = defaults */
	const struct cluster_lease_opts *lease;   /* NULL or !enabled = static roles */
	enum cluster_sync sync;
	unsigned sync_replicas;  /* CLUSTER_SYNC_REPLICAS: how many */
	bool allow_run;          /* run commands for ltfs run (needs a token) */
	const struct cluster_proxy_opts *proxy;  /* NULL or no addr = no proxy */
};

/*
 * Start the HTTP server and, on a replica, the stream client (which sets
 * the fs role). Without a token the server refuses a non-loopback address.
 */
int cluster_start(struct cluster **out, const struct cluster_config *cfg,
		  struct ltfs_err *err);
/* Stop the client and the server (streams get an END frame); frees. */
void cluster_stop(struct cluster *c);

/*
 * Whether the node serves yet: the primary with writes open, or a replica
 * that caught up with its primary (what /healthz reports). *primary says
 * which; may be NULL.
 */
bool cluster_ready(struct cluster *c, bool *primary);
/* May this node become the primary (a static primary, or a lease candidate)? */
bool cluster_is_candidate(struct cluster *c);

/* ---- ltfs run --on-primary (cluster/run.c) ------------------------------ */

struct cluster_run_opts {
	const char *url;         /* the primary's HTTP URL */
	const char *token;       /* required by the primary */
	char *const *argv;       /* NULL-terminated */
	unsigned timeout_ms;     /* the command's; 0 = 10 min */
	int out_fd;              /* its output (stdout and stderr) goes here */
};

/* Run argv on the primary, in its mount dir: 0 with *code its exit code
 * (124 killed at the timeout), LTFS_E_NOT_PRIMARY if url is no longer the
 * primary, or another error naming the URL and the node's message. */
int cluster_run(const struct cluster_run_opts *o, int *code, struct ltfs_err *err);

/* ---- stream frames (docs/protocol.md), shared with tests and fuzzing --- */

enum frame_type {
	FRAME_LTX = 1,       /* name = database, payload = one LTX file */
	FRAME_READY = 2,     /* payload = primary's clock, i64 ms */
	FRAME_HEARTBEAT = 3, /* payload = primary's clock, i64 ms */
	FRAME_DROP = 4,      /* name = database the primary does not have */
	FRAME_END = 5,       /* the primary is stopping */
};

#define FRAME_HEADER_SIZE 12
#define FRAME_NAME_MAX 4031           /* a database name, like fs names */
#define FRAME_LTX_MAX (1ull << 40)    /* bytes in one LTX frame */

/* Header of a frame into out[FRAME_HEADER_SIZE]. */
void frame_header_encode(uint8_t *out, enum frame_type type, size_t name_len,
			 uint64_t payload_len);

struct frame_handlers {
	/* a frame starts: its type, name (NUL-terminated) and payload size */
	int (*begin)(void *ctx, enum frame_type type, const char *name,
		     uint64_t payload_len, struct ltfs_err *err);
	/* payload bytes, in order, possibly in several pieces */
	int (*payload)(void *ctx, const uint8_t *p, size_t n, struct ltfs_err *err);
	/* the frame is complete */
	int (*end)(void *ctx, struct ltfs_err *err);
};

struct frame_parser {
	uint8_t hdr[FRAME_HEADER_SIZE];
	size_t hdr_have;
	enum frame_type type;
	size_t name_len, name_have;
	char name[FRAME_NAME_MAX + 1];
	uint64_t payload_len, payload_have;
	bool in_frame;          /* header complete, frame not yet ended */
	bool started;           /* begin() called for this frame */
	uint64_t frames;        /* complete frames so far */
	uint64_t offset;        /* stream bytes consumed, for messages */
};

void frame_parser_init(struct frame_parser *fp);
/* Feed stream bytes; 0 or the first error (from a handler, or
 * LTFS_E_CORRUPT / LTFS_E_LIMIT naming the field and stream offset). */
int frame_parser_feed(struct frame_parser *fp, const uint8_t *p, size_t n,
		      const struct frame_handlers *h, void *ctx,
		      struct ltfs_err *err);
/* True between frames (a clean place for the stream to end). */
bool frame_parser_idle(const struct frame_parser *fp);

/* ---- HTTP/1.1 heads (cluster/http1.c), shared with tests and fuzzing ----- */

#define HTTP1_HEAD_MAX (64u * 1024)   /* request or response head, bytes */
#define HTTP1_HEADERS_MAX 128         /* header lines in one head */

struct http1_header {
	char *name, *val;               /* inside the message's raw copy */
};

/* A parsed head; its strings point into `raw`, a private copy. */
struct http1_msg {
	char raw[HTTP1_HEAD_MAX + 1];
	char *method, *target, *version; /* request; version also for responses */
	int status;                      /* response */
	char *reason;
	struct http1_header h[HTTP1_HEADERS_MAX];
	size_t nh;
	bool http10;                     /* HTTP/1.0 */
	bool chunked;                    /* Transfer-Encoding: chunked */
	bool has_len;                    /* Content-Length, in len */
	uint64_t len;
	bool conn_close, conn_upgrade;   /* Connection: close / upgrade (with Upgrade:) */
};

/* Offset just past the blank line ending a head in d[0..len), or 0 if
 * the head is not complete. Lines end in CRLF or a bare LF. The scan
 * starts at `from`: a caller that read more passes where the last scan
 * stopped less 2, so that a head dribbling in costs linear time. */
size_t http1_head_end(const uint8_t *d, size_t len, size_t from);
/*
 * Parse the head in m->raw[0..len) (len <= HTTP1_HEAD_MAX; the bytes are
 * split in place) and work out how its body is framed. 0, or the status a
 * proxy answers with *why set: for a request 400, 431 (too many lines),
 * 501 (a transfer coding other than chunked) or 505; for a response
 * (is_resp) 502.
 */
int http1_parse_head(struct http1_msg *m, size_t len, bool is_resp, const char **why);
/* The first header named name (any case), or NULL. */
const char *http1_get(const struct http1_msg *m, const char *name);
/* Does the comma-separated list v hold token t (any case)? v may be NULL. */
bool http1_list_has(const char *v, const char *t);
/* A hop-by-hop header of m: about one connection, never passed on. */
bool http1_hop_header(const struct http1_msg *m, const char *name);
/* Full match of s against pat, '*' matching any run of bytes. */
bool http1_glob_match(const char *pat, const char *s);
/* The __txid cookie (16 hex digits) of a request; 0 if absent or malformed. */
uint64_t http1_cookie_txid(const struct http1_msg *m);

/* ---- client helpers for commands ----------------------------------------- */

/* GET url into out (bounded); *status = HTTP status. Token may be NULL. */
int cluster_http_get(const char *url, const char *token, struct ltfs_buf *out,
		     long *status, struct ltfs_err *err);

/* GET url, the answer's body written to fd (unbounded: the caller's file
 * holds it); *bytes = how many. */
int cluster_http_get_fd(const char *url, const char *token, int fd, uint64_t *bytes,
			long *status, long timeout_ms, struct ltfs_err *err);

/* POST body (JSON, may be NULL) to url; the answer as cluster_http_get. */
int cluster_http_post(const char *url, const char *token, const char *body,
		      struct ltfs_buf *out, long *status, struct ltfs_err *err);

/* Constant-time comparison of a presented token with the configured one. */
bool cluster_token_equal(const char *given, const char *want);


/* ---- S3 client (cluster/s3.c) --------------------------------------------
 *
 * Requests are signed by libcurl (CURLOPT_AWS_SIGV4); every request carries
 * x-amz-content-sha256 with the body's real digest. Keys are full object
 * keys (s3_key() joins the prefix). Server errors are retried with jittered
 * backoff (5xx, 429, network errors) within the configured attempts; the
 * message of a final failure names the method, endpoint, key and the S3
 * error code, never a credential. Codes: -ENOENT (404), LTFS_E_CONFLICT
 * (412: a conditional write lost), -EACCES (403), -EIO otherwise.
 */

#define S3_KEY_MAX 1024
#define S3_ETAG_MAX 128

struct s3_config {
	const char *url;           /* s3://BUCKET[/PREFIX]; required */
	const char *endpoint;      /* http(s)://HOST[:PORT]; NULL = the
				    * AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL
				    * variable, else AWS for the region */
	const char *region;        /* NULL = AWS_REGION, AWS_DEFAULT_REGION,
				    * else us-east-1 */
	const char *access_key;    /* NULL = AWS_ACCESS_KEY_ID */
	const char *secret_key;    /* NULL = AWS_SECRET_ACCESS_KEY */
	const char *session_token; /* NULL = AWS_SESSION_TOKEN (may be unset) */
	int path_style;            /* 1 path-style, 0 virtual-hosted, -1 auto:
				    * path-style for a custom endpoint */
	unsigned timeout_ms;       /* one request; 0 = 30000 */
	unsigned attempts;         /* tries per request; 0 = 5 */
	uint64_t part_size;        /* a bigger object goes up as a multipart
				    * upload in parts of this size (5 MiB to
				    * 5 GiB); 0 = 4 GiB */
};

struct s3;      /* settings, shared by threads, immutable once open */
struct s3_conn; /* one connection, used by one thread at a time */

struct s3_object {
	char key[S3_KEY_MAX];
	uint64_t size;
	char etag[S3_ETAG_MAX]; /* without quotes */
	int64_t mtime_ms;       /* LastModified */
	int64_t meta_ms;        /* x-amz-meta-litestream-timestamp (HEAD only);
				 * 0 = absent */
	uint64_t meta_epoch;    /* x-amz-meta-ltfs-epoch (HEAD only); 0 = absent */
};

struct s3_put_opts {
	bool if_none_match;     /* create only (If-None-Match: *) */
	const char *if_match;   /* replace only this ETag (quotes stripped) */
	int64_t timestamp_ms;   /* > 0: x-amz-meta-litestream-timestamp */
	const char *content_type; /* NULL = application/octet-stream */
	uint64_t epoch;         /* > 0: x-amz-meta-ltfs-epoch (lease fencing) */
};

int s3_open(struct s3 **out, const struct s3_config *cfg, struct ltfs_err *err);
void s3_free(struct s3 *s3);
const char *s3_bucket(const struct s3 *s3);
const char *s3_prefix(const struct s3 *s3); /* "" or "a/b" (no slashes at ends) */
const char *s3_endpoint(const struct s3 *s3);
/* "PREFIX/REST" (or REST when the prefix is empty) into out[S3_KEY_MAX]. */
int s3_key(const struct s3 *s3, char *out, const char *fmt, ...) LTFS_PRINTF(3, 4);

int s3_conn_open(struct s3 *s3, struct s3_conn **out, struct ltfs_err *err);
void s3_conn_free(struct s3_conn *c);
/* Requests on c, retries included, end by this CLOCK_MONOTONIC moment
 * (ms; 0 = no deadline): a lease renewal must not outlive its TTL. */
void s3_conn_set_deadline(struct s3_conn *c, int64_t mono_deadline_ms);

int s3_put(struct s3_conn *c, const char *key, const void *data, size_t len,
	   const struct s3_put_opts *opts, char etag[S3_ETAG_MAX],
	   struct ltfs_err *err);
/* The same from bytes [0, len) of a file; above the part size, as a
 * multipart upload (metadata at its creation, conditions at its end). */
int s3_put_fd(struct s3_conn *c, const char *key, int fd, uint64_t len,
	      const struct s3_put_opts *opts, char etag[S3_ETAG_MAX],
	      struct ltfs_err *err);
/* Bytes [off, off + len) of an object (len 0 = to the end) into out, which
 * bounds the size. etag may be NULL. */
int s3_get(struct s3_conn *c, const char *key, uint64_t off, uint64_t len,
	   struct ltfs_buf *out, char etag[S3_ETAG_MAX], struct ltfs_err *err);
/* A whole object, in order, to sink (which returns 0 or < 0 to stop);
 * a broken transfer is resumed with a range from where it stopped, so
 * the sink sees every byte once. *size = bytes delivered. */
typedef int (*s3_sink_fn)(void *ctx, const void *p, size_t n);
int s3_get_sink(struct s3_conn *c, const char *key, s3_sink_fn sink, void *ctx, uint64_t *size,
		struct ltfs_err *err);
/* The same, read at the caller's pace on its own thread: s3_reader_read
 * has the shape of an ltx_read_fn (bytes, 0 at the end, < 0 on error).
 * Close tells whether the download failed (err names the URL and the S3
 * error) and how many bytes it delivered; it also ends one not read to
 * the end. */
struct s3_reader;
int s3_reader_open(struct s3_conn *c, const char *key, struct s3_reader **out,
		   struct ltfs_err *err);
ssize_t s3_reader_read(void *reader, void *p, size_t n);
int s3_reader_close(struct s3_reader *reader, uint64_t *size, struct ltfs_err *err);
/* The same into fd from offset 0. */
int s3_get_fd(struct s3_conn *c, const char *key, int fd, uint64_t *size,
	      struct ltfs_err *err);
int s3_head(struct s3_conn *c, const char *key, struct s3_object *out,
	    struct ltfs_err *err);
/* Every object under prefix, in key order, page by page; fn returning
 * non-zero stops the listing and is returned. */
int s3_list(struct s3_conn *c, const char *prefix,
	    int (*fn)(void *ctx, const struct s3_object *o), void *ctx,
	    struct ltfs_err *err);
/* Delete one object (a missing one is not an error). */
int s3_delete(struct s3_conn *c, const char *key, struct ltfs_err *err);

/* Requests made and retried by this connection (for metrics). */
void s3_conn_counts(const struct s3_conn *c, uint64_t *requests, uint64_t *retries);
/* HTTP status and S3 error code ("" if none) of the last request. */
long s3_conn_status(const struct s3_conn *c, const char **code);

/* ---- restore (cluster/restore.c) ---------------------------------------- */

struct cluster_restore_opts {
	struct s3 *s3;          /* required; borrowed */
	const char *db;         /* database name under the prefix */
	const char *out;        /* output file */
	uint64_t txid;          /* 0 = newest */
	int64_t before_ms;      /* > 0: the newest state committed before this */
	bool force;             /* replace out (and remove its -wal, -shm, -journal) */
	bool dry_run;           /* plan only */
	unsigned parallel;      /* downloads at once; 0 = 8 */
	struct ltfs_log *log;   /* may be NULL */
	void (*progress)(void *ctx, uint64_t bytes, uint64_t total, size_t files,
			 size_t nfiles);
	void *progress_ctx;
};

struct cluster_restore_result {
	uint64_t txid, checksum;
	uint32_t page_size, pages;
	int64_t timestamp_ms;   /* of the last transaction restored */
	size_t files;           /* in the plan */
	uint64_t bytes;         /* downloaded */
	double secs;
};

/* Restore o->db into o->out (written as OUT.tmp, verified, synced, renamed). */
int cluster_restore(const struct cluster_restore_opts *o, struct cluster_restore_result *res,
		    struct ltfs_err *err);

/* ltfs export: a node's database at its newest TXID, from its HTTP API. */
struct cluster_export_opts {
	const char *url;        /* the node */
	const char *token;      /* may be NULL */
	const char *db;         /* database name in the mount */
	const char *out;        /* written as OUT.tmp, verified, synced, renamed */
	bool force;             /* replace out (and remove its -wal, -shm, -journal) */
};
int cluster_export(const struct cluster_export_opts *o, struct cluster_restore_result *res,
		   struct ltfs_err *err);

/*
 * A node with an empty data dir: restore every database under the bucket's
 * prefix into data_dir (fs_seed_db), before fs_open(). Deleted databases
 * are skipped; *count = databases restored.
 */
int cluster_bootstrap(struct s3 *s3, const char *data_dir, struct ltfs_log *log, size_t *count,
		      struct ltfs_err *err);

/* An LTX object's key, PREFIX/NAME/LLLL/MIN-MAX.ltx (LLLL the level in
 * four hex digits, MIN and MAX 16). s3_ltx_key makes one into out
 * (S3_KEY_MAX bytes): 0, or -1 if too long. s3_ltx_key_parse: 0 with its
 * parts, -1 for any other key. */
int s3_ltx_key(const struct s3 *s3, char *out, const char *name, unsigned level, uint64_t min,
	       uint64_t max);
int s3_ltx_key_parse(const char *prefix, const char *key, char *name, size_t n,
		     unsigned *level, uint64_t *min, uint64_t *max);

/* RFC 3339 time ("2026-11-21T10:14:24.123Z", any fraction, Z or +hh:mm)
 * to ms since the epoch; 0 if it does not parse. */
int64_t s3_parse_time(const char *s);

/* SHA-256, streaming or of one buffer; digests as lowercase hex. */
struct s3_sha256 {
	uint32_t h[8];
	uint8_t buf[64];
	size_t n;
	uint64_t total;
};
void s3_sha256_init(struct s3_sha256 *s);
void s3_sha256_update(struct s3_sha256 *s, const void *data, size_t len);
void s3_sha256_final(struct s3_sha256 *s, char out[65]);
void s3_sha256_hex(const void *data, size_t len, char out[65]);

#endif /* LTFS_CLUSTER_H */
