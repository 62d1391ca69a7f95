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

struct cluster_config {
	struct fs *fs;          /* required; borrowed */
	struct ltfs_log *log;   /* required; borrowed */
	const char *http_addr;  /* listen address; NULL = CLUSTER_DEFAULT_ADDR,
				 * "off" = no server */
	const char *token;      /* shared bearer token; NULL or "" = none */
	const char *replica_of; /* the primary's URL; NULL or "" = primary */
};

/*
 * Start the HTTP server and, on a replica, the stream client (which sets
 * the fs role). Without a token the server refuses a non-loopback address.
 */
int cluster_start(struct cluster **out, const struct cluster_config *cfg,
		  struct ltfs_err *err);
/* Stop the client and the server (streams get an END frame); frees. */
void cluster_stop(struct cluster *c);

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

/* ---- client helpers for commands ----------------------------------------- */

/* GET url into out (bounded); *status = HTTP status. Token may be NULL. */
int cluster_http_get(const char *url, const char *token, struct ltfs_buf *out,
		     long *status, struct ltfs_err *err);

/* Constant-time comparison of a presented token with the configured one. */
bool cluster_token_equal(const char *given, const char *want);

#endif /* LTFS_CLUSTER_H */
