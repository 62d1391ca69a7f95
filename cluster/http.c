/*
 * http.c - the node's HTTP server (libmicrohttpd, one thread per
 * connection) and its endpoints; docs/protocol.md describes them.
 *
 *   POST /v1/stream            replication stream (primary only)
 *   GET  /v1/info              node, role, databases (JSON)
 *   GET  /v1/db/NAME/ltx       local history as one compacted LTX file
 *   GET  /metrics              Prometheus text
 *   GET  /healthz              200 when serving, 503 while catching up
 *
 * Every endpoint but /healthz requires the bearer token when one is set.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "cluster/cluster_int.h"

#define CONN_MEMORY (256u * 1024)  /* per connection: headers and buffers */
#define STREAM_BLOCK (128u * 1024) /* bytes per content-reader call */
#define MAX_CONNECTIONS 256
#define IDLE_TIMEOUT_S 60

/* One request: its body as it arrives. */
struct req {
	struct ltfs_buf body;
	bool too_big;
};

bool cluster_token_equal(const char *given, const char *want)
{
	size_t gl = strlen(given), wl = strlen(want);
	unsigned char diff = gl != wl;

	/* time depends on the presented length only, not on where they differ */
	for (size_t i = 0; i < gl; i++)
		diff |= (unsigned char)(given[i] ^ want[wl ? i % wl : 0]);
	return diff == 0 && wl > 0;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
			     const char *type, const char *body, size_t len)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body,
								 MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn, unsigned status,
				  const char *text)
{
	return reply(conn, status, "text/plain; charset=utf-8", text, strlen(text));
}

static enum MHD_Result reply_error(struct MHD_Connection *conn, unsigned status,
				   const char *msg)
{
	json_t *o = json_pack("{s:s}", "error", msg);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	enum MHD_Result ret;

	json_decref(o);
	if (!s)
		return reply_text(conn, status, msg);
	ret = reply(conn, status, "application/json", s, strlen(s));
	free(s);
	return ret;
}

static void peer_name(struct MHD_Connection *conn, char *out, size_t n)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	char host[INET6_ADDRSTRLEN] = "?";

	if (ci && ci->client_addr)
		getnameinfo(ci->client_addr, ci->client_addr->sa_family == AF_INET6
						     ? sizeof(struct sockaddr_in6)
						     : sizeof(struct sockaddr_in),
			    host, sizeof(host), NULL, 0, NI_NUMERICHOST);
	snprintf(out, n, "%s", host);
}

static bool authorized(struct cluster *c, struct MHD_Connection *conn)
{
	const char *h;

	if (!c->token[0])
		return true;
	h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	return h && strncasecmp(h, "Bearer ", 7) == 0 && cluster_token_equal(h + 7, c->token);
}

/* ---- /v1/info and /healthz ------------------------------------------------ */

void cl_hex16(uint64_t v, char out[17])
{
	snprintf(out, 17, "%016llx", (unsigned long long)v);
}

struct db_json {
	struct cluster *c;
	json_t *arr;
	int64_t lag;
};

/* Replication is per node: a database's lag is the node's. */
static void add_db_json(void *ctx, const struct fs_db_info *info)
{
	struct db_json *dj = ctx;
	json_t *o;
	char txid[17], sum[17], ts[40] = "";

	cl_hex16(info->txid, txid);
	cl_hex16(info->checksum, sum);
	if (info->timestamp)
		ltx_format_timestamp(info->timestamp, ts, sizeof(ts));
	o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:b, s:b, s:I, s:I, s:I}",
		      "name", info->name, "txid", txid, "checksum", sum,
		      "pages", (json_int_t)info->pages, "page_size", (json_int_t)info->page_size,
		      "timestamp", ts, "exists", info->exists, "broken", info->broken,
		      "commits", (json_int_t)info->commits,
		      "ltx_bytes", (json_int_t)info->ltx_bytes, "lag_ms", (json_int_t)dj->lag);
	if (o && dj->c->backup) {
		bool stuck;
		uint64_t remote;

		pthread_mutex_lock(&dj->c->mu);
		remote = cl_backup_remote_txid(dj->c, info->name, &stuck);
		pthread_mutex_unlock(&dj->c->mu);

		cl_hex16(remote, txid);
		json_object_set_new(o, "backup_txid", json_string(txid));
		json_object_set_new(o, "backup_stuck", json_boolean(stuck));
	}
	if (o)
		json_array_append_new(dj->arr, o);
}

/* The "backup" object of /v1/info (c->mu held); NULL without a bucket. */
static json_t *backup_json(struct cluster *c)
{
	struct cl_backup_stats st;
	char ts[40] = "";

	if (cl_backup_stats(c, &st) < 0)
		return NULL;
	if (st.last_ok_ms)
		ltx_format_timestamp(st.last_ok_ms, ts, sizeof(ts));
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:s?, s:s?}", "url", st.url,
			 "uploads", (json_int_t)st.uploads, "upload_bytes", (json_int_t)st.upload_bytes,
			 "failures", (json_int_t)st.failures, "backlog_txids", (json_int_t)st.backlog,
			 "last_upload", ts[0] ? ts : NULL,
			 "last_error", st.last_error[0] ? st.last_error : NULL);
}

static enum MHD_Result serve_info(struct cluster *c, struct MHD_Connection *conn)
{
	struct db_json dj = { .c = c, .arr = json_array(), .lag = fs_lag_ms(c->fs) };
	json_t *o, *backup;
	char node[17], *s;
	bool primary = cl_is_primary(c), connected, ready;
	char last_error[sizeof(c->last_error)], primary_url[URL_MAX];
	json_t *lease = NULL;
	unsigned streams;
	enum MHD_Result ret;

	pthread_mutex_lock(&c->mu);
	connected = c->connected;
	ready = c->ready;
	streams = c->streams;
	snprintf(primary_url, sizeof(primary_url), "%s", c->replica_of);
	if (c->lease)
		lease = json_pack("{s:I, s:I, s:b, s:b, s:I, s:I, s:I}", "epoch", (json_int_t)c->epoch,
				  "max_epoch", (json_int_t)c->max_epoch, "promoting", c->promoting,
				  "candidate", c->lease->candidate, "promotions",
				  (json_int_t)c->promotions, "demotions", (json_int_t)c->demotions,
				  "unpublished_txids", (json_int_t)c->unpublished_txids);
	memcpy(last_error, c->last_error, sizeof(last_error));
	backup = backup_json(c);
	pthread_mutex_unlock(&c->mu);
	if (dj.arr)
		fs_db_foreach(c->fs, add_db_json, &dj);
	cl_hex16(fs_node_id(c->fs), node);
	o = json_pack("{s:s, s:s, s:s?, s:s?, s:b, s:b, s:I, s:I, s:o}", "node", node,
		      "role", primary ? "primary" : "replica",
		      "primary", primary || !primary_url[0] ? NULL : primary_url,
		      "last_error", last_error[0] ? last_error : NULL,
		      "connected", primary || connected, "ready", primary || ready,
		      "lag_ms", (json_int_t)dj.lag, "streams", (json_int_t)streams,
		      "databases", dj.arr);
	if (o)
		json_object_set_new(o, "mount", json_string(fs_mountpoint(c->fs)));
	if (o && c->proxy_url[0])
		json_object_set_new(o, "proxy_url", json_string(c->proxy_url));
	if (o && backup)
		json_object_set_new(o, "backup", backup);
	else
		json_decref(backup);
	if (o && lease)
		json_object_set_new(o, "lease", lease);
	else
		json_decref(lease);
	s = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
	json_decref(o);
	if (!s)
		return reply_error(conn, 500, "out of memory");
	ret = reply(conn, 200, "application/json", s, strlen(s));
	free(s);
	return ret;
}

static enum MHD_Result serve_health(struct cluster *c, struct MHD_Connection *conn)
{
	bool primary;

	if (!cluster_ready(c, &primary))
		return reply_text(conn, 503, "not ready: replica not caught up with the primary\n");
	return reply_text(conn, 200, primary ? "ok: primary\n" : "ok: replica in sync\n");
}

/* ---- /metrics ------------------------------------------------------------- */

struct metrics {
	struct ltfs_buf *b;
	int rc;
};

/* A label value with \, " and newline escaped. */
static void label(struct ltfs_buf *b, const char *s, int *rc)
{
	for (; *s && *rc == 0; s++) {
		if (*s == '\\' || *s == '"')
			*rc = ltfs_buf_printf(b, "\\%c", *s);
		else if (*s == '\n')
			*rc = ltfs_buf_printf(b, "\\n");
		else
			*rc = ltfs_buf_append(b, s, 1);
	}
}

static void metric_db(void *ctx, const struct fs_db_info *info)
{
	static const char *const names[] = {
		"ltfs_db_txid", "ltfs_db_pages", "ltfs_db_commits_total", "ltfs_db_ltx_bytes_total",
	};
	struct metrics *m = ctx;
	uint64_t v[] = { info->txid, info->pages, info->commits, info->ltx_bytes };

	for (size_t i = 0; i < 4 && m->rc == 0; i++) {
		m->rc = ltfs_buf_printf(m->b, "%s{db=\"", names[i]);
		label(m->b, info->name, &m->rc);
		if (m->rc == 0)
			m->rc = ltfs_buf_printf(m->b, "\"} %llu\n", (unsigned long long)v[i]);
	}
}

static enum MHD_Result serve_metrics(struct cluster *c, struct MHD_Connection *conn)
{
	struct ltfs_buf b;
	struct metrics m = { .b = &b };
	bool primary = cl_is_primary(c);
	uint64_t epoch, promotions, demotions, unpublished, publishes;
	unsigned streams;
	uint64_t total, reconnects;
	bool connected, ready, have_backup;
	struct cl_backup_stats st;
	enum MHD_Result ret;

	ltfs_buf_init(&b, 64u << 20);
	pthread_mutex_lock(&c->mu);
	streams = c->streams;
	total = c->streams_total;
	reconnects = c->reconnects;
	connected = c->connected;
	ready = c->ready;
	have_backup = cl_backup_stats(c, &st) == 0;
	epoch = c->max_epoch;
	promotions = c->promotions;
	demotions = c->demotions;
	unpublished = c->unpublished_txids;
	publishes = c->publishes;
	pthread_mutex_unlock(&c->mu);
	m.rc = ltfs_buf_printf(&b,
		"# HELP ltfs_db_txid Newest transaction of the database.\n"
		"# TYPE ltfs_db_txid gauge\n"
		"# HELP ltfs_db_pages Pages in the database.\n"
		"# TYPE ltfs_db_pages gauge\n"
		"# HELP ltfs_db_commits_total LTX files recorded or applied since start.\n"
		"# TYPE ltfs_db_commits_total counter\n"
		"# HELP ltfs_db_ltx_bytes_total Bytes of those LTX files.\n"
		"# TYPE ltfs_db_ltx_bytes_total counter\n");
	if (m.rc == 0)
		fs_db_foreach(c->fs, metric_db, &m);
	if (m.rc == 0)
		m.rc = ltfs_buf_printf(&b,
			"# HELP ltfs_primary 1 if this node is the primary.\n"
			"# TYPE ltfs_primary gauge\n"
			"ltfs_primary %d\n"
			"# HELP ltfs_replica_lag_seconds Time since the replica last heard the primary was ahead of it by nothing.\n"
			"# TYPE ltfs_replica_lag_seconds gauge\n"
			"ltfs_replica_lag_seconds %.3f\n"
			"# HELP ltfs_replica_connected 1 while the replica's stream is open.\n"
			"# TYPE ltfs_replica_connected gauge\n"
			"ltfs_replica_connected %d\n"
			"# HELP ltfs_replica_ready 1 once the replica caught up on this stream.\n"
			"# TYPE ltfs_replica_ready gauge\n"
			"ltfs_replica_ready %d\n"
			"# HELP ltfs_replica_reconnects_total Streams the replica had to open again.\n"
			"# TYPE ltfs_replica_reconnects_total counter\n"
			"ltfs_replica_reconnects_total %llu\n"
			"# HELP ltfs_streams Open replication streams (primary).\n"
			"# TYPE ltfs_streams gauge\n"
			"ltfs_streams %u\n"
			"# HELP ltfs_streams_total Replication streams opened (primary).\n"
			"# TYPE ltfs_streams_total counter\n"
			"ltfs_streams_total %llu\n",
			primary, (double)fs_lag_ms(c->fs) / 1000.0, !primary && connected,
			!primary && ready, (unsigned long long)reconnects, streams,
			(unsigned long long)total);
	if (m.rc == 0 && c->lease)
		m.rc = ltfs_buf_printf(&b,
			"# HELP ltfs_lease_epoch Highest lease epoch this node has seen.\n"
			"# TYPE ltfs_lease_epoch gauge\n"
			"ltfs_lease_epoch %llu\n"
			"# HELP ltfs_lease_promotions_total Times this node took the lease.\n"
			"# TYPE ltfs_lease_promotions_total counter\n"
			"ltfs_lease_promotions_total %llu\n"
			"# HELP ltfs_lease_demotions_total Times this node lost or gave up the lease.\n"
			"# TYPE ltfs_lease_demotions_total counter\n"
			"ltfs_lease_demotions_total %llu\n"
			"# HELP ltfs_lease_unpublished_txids_total Transactions committed here but never published, at demotions.\n"
			"# TYPE ltfs_lease_unpublished_txids_total counter\n"
			"ltfs_lease_unpublished_txids_total %llu\n"
			"# HELP ltfs_lease_publishes_total Lease writes that published uploads (one per upload round).\n"
			"# TYPE ltfs_lease_publishes_total counter\n"
			"ltfs_lease_publishes_total %llu\n",
			(unsigned long long)epoch, (unsigned long long)promotions,
			(unsigned long long)demotions, (unsigned long long)unpublished,
			(unsigned long long)publishes);
	if (m.rc == 0 && have_backup)
		m.rc = ltfs_buf_printf(&b,
			"# HELP ltfs_backup_uploads_total Objects uploaded to the bucket.\n"
			"# TYPE ltfs_backup_uploads_total counter\n"
			"ltfs_backup_uploads_total %llu\n"
			"# HELP ltfs_backup_upload_bytes_total Bytes uploaded to the bucket.\n"
			"# TYPE ltfs_backup_upload_bytes_total counter\n"
			"ltfs_backup_upload_bytes_total %llu\n"
			"# HELP ltfs_backup_failures_total Upload rounds that failed (retried).\n"
			"# TYPE ltfs_backup_failures_total counter\n"
			"ltfs_backup_failures_total %llu\n"
			"# HELP ltfs_backup_backlog_txids Transactions recorded locally, not yet in the bucket.\n"
			"# TYPE ltfs_backup_backlog_txids gauge\n"
			"ltfs_backup_backlog_txids %llu\n"
			"# HELP ltfs_backup_last_upload_seconds Time of the last successful upload (Unix).\n"
			"# TYPE ltfs_backup_last_upload_seconds gauge\n"
			"ltfs_backup_last_upload_seconds %.3f\n",
			(unsigned long long)st.uploads, (unsigned long long)st.upload_bytes,
			(unsigned long long)st.failures, (unsigned long long)st.backlog,
			(double)st.last_ok_ms / 1000.0);
	if (m.rc == 0)
		m.rc = cl_proxy_metrics(c, &b);
	if (m.rc < 0) {
		ltfs_buf_release(&b);
		return reply_error(conn, 500, ltfs_strerror(m.rc));
	}
	ret = reply(conn, 200, "text/plain; version=0.0.4", (const char *)b.data, b.len);
	ltfs_buf_release(&b);
	return ret;
}

/* ---- /v1/db/NAME/ltx ------------------------------------------------------ */

static int parse_txid_arg(struct MHD_Connection *conn, const char *key,
			  uint64_t *out)
{
	const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, key);
	char *end;

	if (!v)
		return 0;
	errno = 0;
	*out = strtoull(v, &end, 10);
	return errno || end == v || *end || *out == 0 ? -1 : 0;
}

/* GET /v1/db/NAME/ltx?from=&to=: the local history as one LTX file. */
static enum MHD_Result serve_ltx(struct cluster *c, struct MHD_Connection *conn,
				 const char *name)
{
	uint64_t from = 1, to = UINT64_MAX;
	struct ltfs_err err = { 0 };
	struct ltx_header oh;
	int out, rc;

	if (fs_db_name_check(name, &err) < 0)
		return reply_error(conn, 400, err.msg);
	if (parse_txid_arg(conn, "from", &from) < 0 || parse_txid_arg(conn, "to", &to) < 0 ||
	    to < from)
		return reply_error(conn, 400, "from and to must be TXIDs (decimal, >= 1), from <= to");
	rc = cl_history_compact(c, name, from, to, &out, &oh, &err);
	if (rc < 0)
		return reply_error(conn, rc == -ENOENT ? 404 : 500, err.msg);
	{
		off_t size = lseek(out, 0, SEEK_END);
		struct MHD_Response *r = size > 0 ? MHD_create_response_from_fd((uint64_t)size, out) : NULL;
		char fname[LTX_FILENAME_SIZE], disp[LTX_FILENAME_SIZE + 32];
		enum MHD_Result ret;

		if (!r) {
			close(out);
			return reply_error(conn, 500, "cannot build the response");
		}
		ltx_format_filename(oh.min_txid, oh.max_txid, fname);
		snprintf(disp, sizeof(disp), "attachment; filename=\"%s\"", fname);
		MHD_add_response_header(r, "Content-Type", "application/octet-stream");
		MHD_add_response_header(r, "Content-Disposition", disp);
		ret = MHD_queue_response(conn, 200, r);
		MHD_destroy_response(r);
		return ret;
	}
}

/* ---- /v1/stream ----------------------------------------------------------- */

static enum MHD_Result serve_stream(struct cluster *c, struct MHD_Connection *conn,
				    struct req *r, const char *peer)
{
	struct ltfs_err err = { 0 };
	struct cl_stream *s;
	struct MHD_Response *resp;
	const char *node = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Ltfs-Node");
	char who[96];
	enum MHD_Result ret;

	const char *their = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Ltfs-Epoch");
	uint64_t epoch, seen = their ? strtoull(their, NULL, 10) : 0;
	char epoch_text[24];

	if (!cl_is_primary(c))
		return reply_error(conn, 503, "this node is not the primary");
	pthread_mutex_lock(&c->mu);
	epoch = c->epoch;
	if (seen > c->max_epoch)
		c->max_epoch = seen;
	pthread_mutex_unlock(&c->mu);
	if (c->lease && seen > epoch) {
		/* the replica knows a newer primary than us: we are deposed */
		ltfs_warn(c->log, "http", "a replica has seen epoch %llu, this primary holds %llu: "
					  "checking the lease", (unsigned long long)seen,
			  (unsigned long long)epoch);
		cl_lease_poke(c);
		return reply_error(conn, 409, "this primary's epoch is older than one the replica has seen");
	}
	if (r->too_big)
		return reply_error(conn, 413, "request body over 1 MiB");
	snprintf(who, sizeof(who), "%.16s@%s", node ? node : "?", peer);
	if (cl_stream_open(c, (const char *)r->body.data, r->body.len, who, &s, &err) < 0) {
		ltfs_warn(c->log, "http", "stream from %s refused: %s", who, err.msg);
		return reply_error(conn, err.code == -ENOMEM ? 500 : 400, err.msg);
	}
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK,
						 cl_stream_read, s, cl_stream_free);
	if (!resp) {
		cl_stream_free(s);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/x-ltfs-stream");
	snprintf(epoch_text, sizeof(epoch_text), "%llu", (unsigned long long)epoch);
	MHD_add_response_header(resp, "Ltfs-Epoch", epoch_text);
	if (c->sync_replicas)
		MHD_add_response_header(resp, "Ltfs-Ack", "1"); /* POST /v1/ack after applies */
	ret = MHD_queue_response(conn, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- /v1/handoff and /v1/promote ------------------------------------------ */

/* On the primary: {"node": "HEX"} takes the lease over at once. */
static enum MHD_Result serve_handoff(struct cluster *c, struct MHD_Connection *conn,
				     struct req *r, const char *peer)
{
	struct ltfs_err err = { 0 };
	json_error_t jerr;
	json_t *o = r->too_big ? NULL : json_loadb((const char *)r->body.data, r->body.len, 0, &jerr);
	const char *node = o ? json_string_value(json_object_get(o, "node")) : NULL;
	char to[17];
	int rc;

	if (!node || strlen(node) != 16 || strspn(node, "0123456789abcdef") != 16) {
		json_decref(o);
		return reply_error(conn, 400, "want {\"node\": \"16 hex digits\"}");
	}
	snprintf(to, sizeof(to), "%s", node);
	json_decref(o);
	ltfs_info(c->log, "http", "%s asks to hand the lease to node %s", peer, to);
	rc = cl_lease_handoff(c, to, &err);
	if (rc < 0)
		return reply_error(conn, rc == LTFS_E_NOT_PRIMARY ? 409 : rc == LTFS_E_STATE ? 400 : 503,
				   err.msg);
	return reply_text(conn, 200, "handed over\n");
}

/* On any node: make this node the primary (asks the primary to hand over). */
static enum MHD_Result serve_promote(struct cluster *c, struct MHD_Connection *conn,
				     const char *peer)
{
	struct ltfs_err err = { 0 };
	int rc = cl_promote_self(c, &err);

	ltfs_info(c->log, "http", "promote requested by %s: %s", peer, rc < 0 ? err.msg : "done");
	if (rc < 0)
		return reply_error(conn, rc == LTFS_E_STATE || rc == LTFS_E_USAGE ? 409 : 503, err.msg);
	return reply_text(conn, 200, "this node is the primary\n");
}

/* ---- /v1/run -------------------------------------------------------------- */

static enum MHD_Result serve_run(struct cluster *c, struct MHD_Connection *conn, struct req *r,
				 const char *peer)
{
	struct ltfs_err err = { 0 };
	struct MHD_Response *resp;
	struct cl_run *run;
	enum MHD_Result ret;

	if (r->too_big)
		return reply_error(conn, 413, "request body over 1 MiB");
	if (cl_run_open(c, (const char *)r->body.data, r->body.len, peer, &run, &err) < 0) {
		ltfs_warn(c->log, "http", "run for %s refused: %s", peer, err.msg);
		return reply_error(conn, err.code == LTFS_E_NOT_PRIMARY ? 409
					 : err.code == LTFS_E_STATE   ? 403
					 : err.code == LTFS_E_USAGE   ? 400
								      : 500,
				   err.msg);
	}
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, cl_run_read, run,
						 cl_run_free);
	if (!resp) {
		cl_run_free(run);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/x-ltfs-run");
	ret = MHD_queue_response(conn, 200, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- dispatch ------------------------------------------------------------- */

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version,
			      const char *upload_data, size_t *upload_size, void **con_cls)
{
	struct cluster *c = cls;
	struct req *r = *con_cls;
	bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	char peer[INET6_ADDRSTRLEN + 2];

	(void)version;
	if (!r) {
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		ltfs_buf_init(&r->body, STREAM_BODY_MAX);
		*con_cls = r;
		return MHD_YES;
	}
	if (*upload_size) {
		if (!r->too_big && ltfs_buf_append(&r->body, upload_data, *upload_size) < 0)
			r->too_big = true;
		*upload_size = 0;
		return MHD_YES;
	}
	peer_name(conn, peer, sizeof(peer));
	if (strcmp(url, "/healthz") == 0)
		return get ? serve_health(c, conn) : reply_error(conn, 405, "use GET");
	if (!authorized(c, conn)) {
		ltfs_warn(c->log, "http", "401 for %s %s from %s: missing or wrong bearer token",
			  method, url, peer);
		return reply_error(conn, 401, "unauthorized");
	}
	if (strcmp(url, "/v1/stream") == 0)
		return strcmp(method, "POST") == 0 ? serve_stream(c, conn, r, peer)
						   : reply_error(conn, 405, "use POST");
	if (strcmp(url, "/v1/ack") == 0) {
		struct ltfs_err err = { 0 };

		if (strcmp(method, "POST") != 0)
			return reply_error(conn, 405, "use POST");
		if (r->too_big)
			return reply_error(conn, 413, "request body over 1 MiB");
		if (cl_ack_record(c, (const char *)r->body.data, r->body.len, &err) < 0)
			return reply_error(conn, err.code == LTFS_E_STATE ? 409 : 400, err.msg);
		return reply_text(conn, 200, "ok\n");
	}
	if (strcmp(url, "/v1/run") == 0)
		return strcmp(method, "POST") == 0 ? serve_run(c, conn, r, peer)
						   : reply_error(conn, 405, "use POST");
	if (strcmp(url, "/v1/handoff") == 0 || strcmp(url, "/v1/promote") == 0) {
		if (strcmp(method, "POST") != 0)
			return reply_error(conn, 405, "use POST");
		return url[4] == 'h' ? serve_handoff(c, conn, r, peer) : serve_promote(c, conn, peer);
	}
	if (!get)
		return reply_error(conn, 405, "use GET");
	if (strcmp(url, "/v1/info") == 0)
		return serve_info(c, conn);
	if (strcmp(url, "/metrics") == 0)
		return serve_metrics(c, conn);
	if (strncmp(url, "/v1/db/", 7) == 0) {
		size_t len = strlen(url);

		if (len > 11 && strcmp(url + len - 4, "/ltx") == 0) {
			char name[FRAME_NAME_MAX + 1];

			snprintf(name, sizeof(name), "%.*s", (int)(len - 11), url + 7);
			return serve_ltx(c, conn, name);
		}
	}
	return reply_error(conn, 404, "no such endpoint");
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	struct req *r = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (r) {
		ltfs_buf_release(&r->body);
		free(r);
		*con_cls = NULL;
	}
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct cluster *c = cls;
	char msg[512];
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	ltfs_warn(c->log, "http", "%s", msg);
}

/* Parse HOST:PORT, [V6]:PORT or :PORT (all interfaces). */
static int parse_addr(const char *addr, struct sockaddr_storage *ss,
		      bool *loopback, struct ltfs_err *err)
{
	char host[256];
	const char *colon = strrchr(addr, ':'), *port;
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai = NULL;
	char *end;
	long p;
	int rc;

	if (!colon)
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "http.addr '%s': want HOST:PORT, [IPV6]:PORT or :PORT", addr);
	port = colon + 1;
	p = strtol(port, &end, 10);
	if (!*port || *end || p < 0 || p > 65535)
		return ltfs_err_set(err, LTFS_E_CONFIG, "http.addr '%s': port '%s' is not 0..65535",
				    addr, port);
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (rc != 0 || !ai)
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "http.addr '%s': '%s' is not a numeric IP address", addr, host);
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

		*loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

		*loopback = memcmp(&in6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback)) == 0;
	}
	return 0;
}

int cl_http_start(struct cluster *c, struct ltfs_err *err)
{
	struct sockaddr_storage ss;
	bool loopback = false;
	/* poll, not select: a busy primary holds more than FD_SETSIZE (1024)
	 * descriptors (history files waiting for their sync), and select
	 * cannot take a connection numbered above that */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
			 MHD_USE_POLL | MHD_USE_ERROR_LOG;
	int rc = parse_addr(c->addr, &ss, &loopback, err);

	if (rc < 0)
		return rc;
	if (!loopback && !c->token[0])
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "http.addr '%s' is not a loopback address: set http.token (or LTFS_TOKEN) so that only nodes with the token can replicate",
				    c->addr);
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	c->mhd = MHD_start_daemon(flags, 0, NULL, NULL, handle, c,
				  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, c,
				  MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
				  MHD_OPTION_NOTIFY_COMPLETED, completed, c,
				  MHD_OPTION_END);
	if (!c->mhd)
		return ltfs_err_set(err, -EADDRINUSE,
				    "http: cannot listen on '%s' (address in use, or not this host's?)",
				    c->addr);
	ltfs_info(c->log, "http", "listening on %s%s", c->addr,
		  c->token[0] ? " (bearer token required)" : "");
	return 0;
}

void cl_http_stop(struct cluster *c)
{
	if (c->mhd) {
		MHD_stop_daemon(c->mhd);
		c->mhd = NULL;
	}
}
