/*
 * client.c - the replica's side: one thread keeps a stream open to the
 * primary and applies what arrives.
 *
 * Each connection starts from the replica's own positions (so a restart
 * resumes where it stopped), and every LTX frame is staged to a file and
 * applied before the next byte is read: TCP's flow control is the only
 * queue. The staging file is written in whole STAGE_CHUNKs: curl hands
 * over what each recv() returned, and appending those odd sizes to the
 * page cache cost about a fifth of a snapshot's receiving time.
 *
 * Any error (a frame that does not parse, a file that does not verify or
 * continue the database, a silent primary) closes the stream; the next
 * connection starts from the positions the replica really has, and the
 * primary answers with a snapshot where needed. Reconnects back off from
 * 100 ms to 5 s.
 *
 * A big LTX frame is also followed while it is staged: its chunks are
 * assembled in a ring that a thread reads, up to the bytes staged so far,
 * for fs_prebuild_ltx(), which writes out a new database's snapshot as it
 * arrives. Reading the ring instead of the staging file saves copying the
 * frame back out of the page cache. The receiving side waits for that
 * thread only when the ring is full, and at the frame's end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "cluster/cluster_int.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 5000
#define ERROR_BODY_MAX 4096
#define STREAM_RECV_BUFFER (512L * 1024) /* CURLOPT_BUFFERSIZE: its maximum in curl 7.88 */
#define PREBUILD_MIN (1u << 20)          /* LTX frames from this size are followed */
#define STAGE_CHUNK (1u << 20)           /* staging writes, and a ring slot */
#define FOLLOW_RING (8u * STAGE_CHUNK)

int64_t cl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cl_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cl_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(cv, mu, &ts);
}

void cl_wake(struct cluster *c)
{
	pthread_cond_broadcast(&c->cv);
	pthread_cond_broadcast(&c->commit_cv);
}

void cl_wait(struct cluster *c, int64_t ms)
{
	cl_cond_wait_ms(&c->cv, &c->mu, ms);
}

void cl_wait_commit(struct cluster *c, int64_t ms)
{
	cl_cond_wait_ms(&c->commit_cv, &c->mu, ms);
}

/* A big LTX frame followed while it is staged (the prebuild thread). */
struct follow {
	struct fs *fs;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *ring;           /* FOLLOW_RING bytes: byte i of the frame at i % FOLLOW_RING */
	uint64_t off;            /* mu: read so far */
	uint64_t written;        /* mu: staged so far */
	bool ended, abandoned;   /* mu: the frame is whole; or given up */
	bool done;               /* mu: the thread reads no more */
	char name[FRAME_NAME_MAX + 1], stage[64];
	struct fs_prebuilt *pb;  /* the result, once joined */
};

/* One connection's receiving state. */
struct recv {
	struct cluster *c;
	const char *url;         /* the primary's */
	uint64_t gen;            /* c->follow_gen when the stream opened */
	uint64_t epoch;          /* Ltfs-Epoch of the answer; 0 = none */
	bool want_ack;           /* Ltfs-Ack: the primary waits for our applies */
	CURL *curl;
	struct frame_parser fp;
	enum frame_type type;
	char name[FRAME_NAME_MAX + 1];
	char stage[64];
	int fd;                  /* staging file of the LTX frame */
	uint8_t *chunk;          /* the bytes of the frame not staged yet */
	size_t chunk_len;
	uint8_t *own_chunk;      /* STAGE_CHUNK bytes: the chunk of a frame not followed */
	struct follow *follow;   /* NULL: the frame is not followed */
	uint8_t clock[8];
	size_t clock_have;
	long status;             /* HTTP status, once known */
	struct ltfs_buf error;   /* body of a non-200 answer */
	int64_t last_rx;         /* monotonic ms */
	bool ended, ready;
	uint64_t applied;
	struct ltfs_err err;
};

static bool stopping(struct cluster *c)
{
	bool s;

	pthread_mutex_lock(&c->mu);
	s = c->stopping;
	pthread_mutex_unlock(&c->mu);
	return s;
}

/* ---- frames --------------------------------------------------------------- */

/* The ring as a source for the decoder: waits for bytes not yet staged;
 * 0 once the frame is whole and read. */
static ssize_t follow_read(void *ctx, void *p, size_t n)
{
	struct follow *f = ctx;
	uint64_t have, off;
	size_t at;

	pthread_mutex_lock(&f->mu);
	while (f->written == f->off && !f->ended && !f->abandoned)
		pthread_cond_wait(&f->cv, &f->mu);
	if (f->abandoned) {
		pthread_mutex_unlock(&f->mu);
		return -ECANCELED;
	}
	have = f->written - f->off;
	off = f->off;
	pthread_mutex_unlock(&f->mu);
	at = (size_t)(off % FOLLOW_RING);
	if (n > have)
		n = (size_t)have;
	if (n > FOLLOW_RING - at)
		n = FOLLOW_RING - at;
	if (n == 0)
		return 0;
	/* staged bytes stay in the ring until off passes them */
	memcpy(p, f->ring + at, n);
	pthread_mutex_lock(&f->mu);
	f->off += n;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return (ssize_t)n;
}

static void *follow_main(void *arg)
{
	struct follow *f = arg;
	struct ltfs_err err = { 0 };

	pthread_setname_np(pthread_self(), "snap-writeout");
	/* a file that fails here fails its apply as well, which names it */
	if (fs_prebuild_ltx(f->fs, f->name, f->stage, follow_read, f, &f->pb, &err) < 0)
		f->pb = NULL;
	pthread_mutex_lock(&f->mu);
	f->done = true;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static void follow_start(struct recv *r)
{
	struct follow *f = calloc(1, sizeof(*f));

	if (!f)
		return; /* the frame is applied the plain way */
	f->ring = malloc(FOLLOW_RING);
	if (!f->ring) {
		free(f);
		return;
	}
	f->fs = r->c->fs;
	snprintf(f->name, sizeof(f->name), "%s", r->name);
	snprintf(f->stage, sizeof(f->stage), "%s", r->stage);
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	if (pthread_create(&f->thread, NULL, follow_main, f) != 0) {
		pthread_cond_destroy(&f->cv);
		pthread_mutex_destroy(&f->mu);
		free(f->ring);
		free(f);
		return;
	}
	r->follow = f;
}

/* The frame is whole (or, abandon, given up): join the thread and take its
 * prebuilt database, if any. */
static struct fs_prebuilt *follow_end(struct recv *r, bool abandon)
{
	struct follow *f = r->follow;
	struct fs_prebuilt *pb;

	if (!f)
		return NULL;
	pthread_mutex_lock(&f->mu);
	f->ended = true;
	f->abandoned = abandon;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	pthread_join(f->thread, NULL);
	pb = f->pb;
	if (abandon) {
		fs_prebuilt_free(f->fs, pb);
		pb = NULL;
	}
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mu);
	free(f->ring);
	free(f);
	r->follow = NULL;
	return pb;
}

/* Where the next chunk of the frame is assembled: the ring slot after the
 * bytes staged so far, once the thread has read what was there. */
static uint8_t *next_chunk(struct recv *r)
{
	struct follow *f = r->follow;
	uint8_t *p;

	if (!f)
		return r->own_chunk;
	pthread_mutex_lock(&f->mu);
	while (f->written + STAGE_CHUNK - f->off > FOLLOW_RING && !f->done)
		pthread_cond_wait(&f->cv, &f->mu);
	p = f->ring + f->written % FOLLOW_RING;
	pthread_mutex_unlock(&f->mu);
	return p;
}

/* Write the chunk to the staging file, and hand it to the thread. */
static int stage_chunk(struct recv *r, struct ltfs_err *err)
{
	int rc;

	if (r->chunk_len == 0)
		return 0;
	rc = ltx_write_fd(&r->fd, r->chunk, r->chunk_len);
	if (rc < 0)
		return ltfs_err_set(err, rc, "staging '%s': %s", r->stage, ltfs_strerror(rc));
	if (r->follow) {
		pthread_mutex_lock(&r->follow->mu);
		r->follow->written += r->chunk_len;
		pthread_cond_broadcast(&r->follow->cv);
		pthread_mutex_unlock(&r->follow->mu);
	}
	r->chunk = NULL;
	r->chunk_len = 0;
	return 0;
}

static int on_begin(void *ctx, enum frame_type type, const char *name,
		    uint64_t payload_len, struct ltfs_err *err)
{
	struct recv *r = ctx;
	int rc;

	r->type = type;
	r->clock_have = 0;
	snprintf(r->name, sizeof(r->name), "%s", name);
	if (type != FRAME_LTX && type != FRAME_DROP)
		return 0;
	rc = fs_db_name_check(name, err);
	if (rc < 0)
		return rc;
	if (type == FRAME_LTX) {
		r->chunk = NULL;
		r->chunk_len = 0;
		r->fd = fs_stage_create(r->c->fs, r->stage, err);
		if (r->fd < 0)
			return r->fd;
		if (payload_len >= PREBUILD_MIN)
			follow_start(r);
	}
	return 0;
}

static int on_payload(void *ctx, const uint8_t *p, size_t n, struct ltfs_err *err)
{
	struct recv *r = ctx;

	if (r->type == FRAME_LTX) {
		while (n > 0) {
			size_t k = STAGE_CHUNK - r->chunk_len;
			int rc;

			if (!r->chunk)
				r->chunk = next_chunk(r);
			k = k < n ? k : n;
			memcpy(r->chunk + r->chunk_len, p, k);
			r->chunk_len += k;
			p += k;
			n -= k;
			if (r->chunk_len == STAGE_CHUNK && (rc = stage_chunk(r, err)) < 0)
				return rc;
		}
		return 0;
	}
	/* READY, HEARTBEAT: 8 bytes of clock (the parser checked the size) */
	memcpy(r->clock + r->clock_have, p, n);
	r->clock_have += n;
	return 0;
}

static void set_connected(struct cluster *c, const char *url, bool connected, bool ready)
{
	bool replica;

	pthread_mutex_lock(&c->mu);
	c->connected = connected;
	c->ready = ready;
	replica = !c->serving && !c->promoting;
	pthread_mutex_unlock(&c->mu);
	if (replica)
		fs_set_role(c->fs, FS_ROLE_REPLICA, connected ? url : "");
}

/* sync: replicas=N on the primary: have the ack thread report our positions. */
static void want_ack(struct recv *r)
{
	struct cluster *c = r->c;

	if (!r->want_ack)
		return;
	pthread_mutex_lock(&c->mu);
	c->ack_gen++;
	c->ack_epoch = r->epoch;
	snprintf(c->ack_url, sizeof(c->ack_url), "%s", r->url);
	cl_wake(c);
	pthread_mutex_unlock(&c->mu);
}

static int on_end(void *ctx, struct ltfs_err *err)
{
	struct recv *r = ctx;
	struct cluster *c = r->c;
	struct ltx_header h;
	int64_t t;
	int rc;

	switch (r->type) {
	case FRAME_LTX:
		rc = stage_chunk(r, err);
		if (rc < 0)
			return rc;
		rc = fs_apply_ltx(c->fs, r->name, r->fd, r->stage, follow_end(r, false), &h, err);
		close(r->fd);
		r->fd = -1;
		if (rc < 0)
			return rc;
		r->applied++;
		if (r->ready)
			fs_set_primary_time(c->fs, h.timestamp);
		want_ack(r);
		return 0;
	case FRAME_READY:
	case FRAME_HEARTBEAT:
		t = (int64_t)ltx_get_be64(r->clock);
		if (r->type == FRAME_READY && !r->ready) {
			r->ready = true;
			want_ack(r); /* a replica caught up already holds what waits */
			set_connected(c, r->url, true, true);
			ltfs_info(c->log, "replica", "caught up with %s (%llu files applied)",
				  r->url, (unsigned long long)r->applied);
		}
		if (r->ready)
			fs_set_primary_time(c->fs, t);
		return 0;
	case FRAME_DROP:
		return fs_db_forget(c->fs, r->name, err);
	case FRAME_END:
		r->ended = true;
		return 0;
	}
	return 0;
}

static const struct frame_handlers handlers = {
	.begin = on_begin,
	.payload = on_payload,
	.end = on_end,
};

/* ---- curl callbacks ------------------------------------------------------- */

/* Ltfs-Epoch of the answer: a primary of an epoch older than one this node
 * has seen is deposed, whatever it still believes. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ctx)
{
	struct recv *r = ctx;
	size_t n = size * nmemb;

	if (n > 11 && strncasecmp(p, "Ltfs-Epoch:", 11) == 0)
		r->epoch = strtoull(p + 11, NULL, 10);
	else if (n > 9 && strncasecmp(p, "Ltfs-Ack:", 9) == 0)
		r->want_ack = strtoul(p + 9, NULL, 10) == 1;
	return n;
}

static int check_epoch(struct recv *r)
{
	struct cluster *c = r->c;
	uint64_t top;

	pthread_mutex_lock(&c->mu);
	top = c->max_epoch;
	if (r->epoch > c->max_epoch)
		c->max_epoch = r->epoch;
	pthread_mutex_unlock(&c->mu);
	if (c->lease && r->epoch < top)
		return ltfs_err_set(&r->err, LTFS_E_NOT_PRIMARY,
				    "%s serves epoch %llu, but epoch %llu has begun: refusing its "
				    "stream", r->url, (unsigned long long)r->epoch,
				    (unsigned long long)top);
	return 0;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ctx)
{
	struct recv *r = ctx;
	size_t n = size * nmemb;
	int rc;

	if (r->status == 0) {
		curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &r->status);
		if (r->status == 200 && (rc = check_epoch(r)) < 0)
			return CURL_WRITEFUNC_ERROR;
		if (r->status == 200) {
			set_connected(r->c, r->url, true, false);
			ltfs_info(r->c->log, "replica", "streaming from %s", r->url);
		}
	}
	if (r->status != 200) {
		ltfs_buf_append(&r->error, p, n < ERROR_BODY_MAX ? n : ERROR_BODY_MAX);
		return n;
	}
	rc = frame_parser_feed(&r->fp, (const uint8_t *)p, n, &handlers, r, &r->err);
	r->last_rx = cl_mono_ms(); /* after the apply: it may take a while */
	return rc < 0 ? CURL_WRITEFUNC_ERROR : n;
}

static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow,
		       curl_off_t ultotal, curl_off_t ulnow)
{
	struct recv *r = ctx;
	bool moved;

	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	if (stopping(r->c))
		return 1;
	pthread_mutex_lock(&r->c->mu);
	moved = r->c->follow_gen != r->gen || (r->epoch && r->c->max_epoch > r->epoch);
	pthread_mutex_unlock(&r->c->mu);
	if (moved) {
		ltfs_err_set(&r->err, LTFS_E_NOT_PRIMARY, "%s is no longer the primary", r->url);
		return 1;
	}
	if (cl_mono_ms() - r->last_rx > STREAM_IDLE_MS) {
		ltfs_err_set(&r->err, -ETIMEDOUT, "nothing from the primary for %d ms",
			     STREAM_IDLE_MS);
		return 1;
	}
	return 0;
}

/* ---- one connection ------------------------------------------------------- */

struct body {
	json_t *dbs;
};

static void add_position(void *ctx, const struct fs_db_info *info)
{
	struct body *b = ctx;
	char txid[17], sum[17];
	uint64_t t = info->broken ? 0 : info->txid; /* broken: ask for a snapshot */

	if (t == 0 && !info->exists)
		return;
	snprintf(txid, sizeof(txid), "%016llx", (unsigned long long)t);
	snprintf(sum, sizeof(sum), "%016llx", (unsigned long long)(t ? info->checksum : 0));
	json_array_append_new(b->dbs, json_pack("{s:s, s:s, s:s}", "name", info->name,
						"txid", txid, "checksum", sum));
}

/* {"node", "dbs": positions} (with "epoch" for an ack). */
static char *request_body(struct cluster *c, uint64_t epoch)
{
	struct body b = { .dbs = json_array() };
	char node[17], *s = NULL;
	json_t *o;

	if (!b.dbs)
		return NULL;
	fs_db_foreach(c->fs, add_position, &b);
	snprintf(node, sizeof(node), "%016llx", (unsigned long long)fs_node_id(c->fs));
	o = json_pack("{s:s, s:o}", "node", node, "dbs", b.dbs);
	if (o && epoch)
		json_object_set_new(o, "epoch", json_integer((json_int_t)epoch));
	if (o)
		s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static void add_auth(struct curl_slist **h, const char *token)
{
	char auth[TOKEN_MAX + 32];

	if (!token || !token[0])
		return;
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	*h = curl_slist_append(*h, auth);
}

/* Open a stream and follow it until it ends; 0 if it ended cleanly. */
static int stream_once(struct cluster *c, const char *primary, uint64_t gen, bool *was_ready,
		       struct ltfs_err *err)
{
	struct recv r = { .c = c, .url = primary, .gen = gen, .fd = -1 };
	struct curl_slist *hdrs = NULL;
	char url[URL_MAX + 16], node[64], epoch[64], curl_err[CURL_ERROR_SIZE] = "";
	char *body = request_body(c, 0);
	CURLcode cc;
	int rc = 0;

	*was_ready = false;
	r.own_chunk = malloc(STAGE_CHUNK);
	if (!body || !r.own_chunk) {
		free(body);
		free(r.own_chunk);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	r.curl = curl_easy_init();
	if (!r.curl) {
		free(body);
		free(r.own_chunk);
		return ltfs_err_set(err, -ENOMEM, "curl_easy_init failed");
	}
	frame_parser_init(&r.fp);
	ltfs_buf_init(&r.error, ERROR_BODY_MAX);
	snprintf(url, sizeof(url), "%s/v1/stream", primary);
	snprintf(node, sizeof(node), "Ltfs-Node: %016llx", (unsigned long long)fs_node_id(c->fs));
	pthread_mutex_lock(&c->mu);
	snprintf(epoch, sizeof(epoch), "Ltfs-Epoch: %llu", (unsigned long long)c->max_epoch);
	pthread_mutex_unlock(&c->mu);
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, node);
	hdrs = curl_slist_append(hdrs, epoch);
	add_auth(&hdrs, c->token);
	r.last_rx = cl_mono_ms();
	curl_easy_setopt(r.curl, CURLOPT_URL, url);
	curl_easy_setopt(r.curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(r.curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(r.curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(r.curl, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(r.curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(r.curl, CURLOPT_HEADERDATA, &r);
	curl_easy_setopt(r.curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(r.curl, CURLOPT_XFERINFODATA, &r);
	curl_easy_setopt(r.curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(r.curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r.curl, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
	curl_easy_setopt(r.curl, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(r.curl, CURLOPT_TCP_NODELAY, 1L);
	/* a snapshot is a gigabyte in 16 KiB callbacks otherwise */
	curl_easy_setopt(r.curl, CURLOPT_BUFFERSIZE, STREAM_RECV_BUFFER);
	cc = curl_easy_perform(r.curl);
	if (r.status == 0)
		curl_easy_getinfo(r.curl, CURLINFO_RESPONSE_CODE, &r.status);
	if (r.err.code < 0) {
		*err = r.err;
		rc = r.err.code;
	} else if (r.status != 0 && r.status != 200) {
		rc = ltfs_err_set(err, r.status == 401 ? -EACCES : -EPROTO, "%s answered %ld: %.*s",
				  url, r.status, (int)r.error.len, r.error.data ? (char *)r.error.data : "");
	} else if (cc != CURLE_OK) {
		rc = ltfs_err_set(err, -EIO, "%s: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(cc));
	} else if (!r.ended) {
		rc = ltfs_err_set(err, -EPIPE, "%s: stream ended without an END frame%s", url,
				  frame_parser_idle(&r.fp) ? "" : " (in the middle of a frame)");
	}
	follow_end(&r, true); /* a frame cut off in the middle */
	if (r.fd >= 0) {
		close(r.fd);
		fs_stage_discard(c->fs, r.stage);
	}
	*was_ready = r.ready;
	free(r.own_chunk);
	ltfs_buf_release(&r.error);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(r.curl);
	free(body);
	return rc;
}

static void *client_main(void *arg)
{
	struct cluster *c = arg;
	int64_t backoff = BACKOFF_MIN_MS;

	pthread_setname_np(pthread_self(), "replica");
	while (!stopping(c)) {
		struct ltfs_err err = { 0 };
		char primary[URL_MAX];
		bool was_ready, promoting, serving;
		int64_t t0 = cl_mono_ms();
		uint64_t gen;
		int rc;

		pthread_mutex_lock(&c->mu);
		snprintf(primary, sizeof(primary), "%s", c->replica_of);
		gen = c->follow_gen;
		promoting = c->promoting;
		serving = c->serving;
		if (!promoting && (serving || !primary[0])) {
			/* the primary, or nobody to follow yet */
			c->connected = c->ready = false;
			cl_wait(c, 1000);
			pthread_mutex_unlock(&c->mu);
			continue;
		}
		pthread_mutex_unlock(&c->mu);
		if (promoting) {
			cl_promote(c);
			continue;
		}
		rc = stream_once(c, primary, gen, &was_ready, &err);
		set_connected(c, primary, false, false);
		if (stopping(c))
			break;
		pthread_mutex_lock(&c->mu);
		if (c->follow_gen != gen) {
			/* the lease names another primary: go there at once */
			pthread_mutex_unlock(&c->mu);
			backoff = BACKOFF_MIN_MS;
			continue;
		}
		pthread_mutex_unlock(&c->mu);
		if (rc == LTFS_E_NOT_PRIMARY)
			cl_lease_poke(c);
		/* a stream that caught up and then lasted resets the backoff; one
		 * that fails right after its catch-up must not spin */
		if (was_ready && cl_mono_ms() - t0 > 10 * BACKOFF_MAX_MS)
			backoff = BACKOFF_MIN_MS;
		pthread_mutex_lock(&c->mu);
		c->reconnects++;
		snprintf(c->last_error, sizeof(c->last_error), "%s",
			 rc < 0 ? err.msg : "primary stopped");
		pthread_mutex_unlock(&c->mu);
		if (rc < 0)
			ltfs_warn(c->log, "replica", "stream: %s; reconnecting in %lld ms", err.msg,
				  (long long)backoff);
		else
			ltfs_info(c->log, "replica", "the primary closed the stream; reconnecting in %lld ms",
				  (long long)backoff);
		pthread_mutex_lock(&c->mu);
		if (!c->stopping && c->follow_gen == gen)
			cl_wait(c, backoff);
		pthread_mutex_unlock(&c->mu);
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

/*
 * sync: replicas=N on the primary: after applies, tell it our positions
 * (POST /v1/ack). One request at a time; applies meanwhile are coalesced
 * into the next.
 */
static void *acker_main(void *arg)
{
	struct cluster *c = arg;

	pthread_setname_np(pthread_self(), "replica-ack");
	pthread_mutex_lock(&c->mu);
	while (!c->stopping) {
		struct ltfs_err err = { 0 };
		char url[URL_MAX + 16], *body;
		uint64_t gen = c->ack_gen, epoch = c->ack_epoch;
		struct ltfs_buf answer;
		long status = 0;
		int rc;

		if (gen == c->ack_sent) {
			cl_wait(c, 1000);
			continue;
		}
		snprintf(url, sizeof(url), "%s/v1/ack", c->ack_url);
		pthread_mutex_unlock(&c->mu);
		body = request_body(c, epoch);
		ltfs_buf_init(&answer, 4096);
		rc = body ? cluster_http_post(url, c->token, body, &answer, &status, &err) : -ENOMEM;
		ltfs_buf_release(&answer);
		free(body);
		pthread_mutex_lock(&c->mu);
		if (rc == 0 && status == 200)
			c->ack_sent = gen;
		else if (!c->stopping)
			cl_wait(c, 100); /* the primary is away: the stream notices too */
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

int cl_client_start(struct cluster *c, struct ltfs_err *err)
{
	fs_set_role(c->fs, FS_ROLE_REPLICA, "");
	if (pthread_create(&c->client, NULL, client_main, c) != 0)
		return ltfs_err_set(err, -EAGAIN, "cannot start the replica thread");
	c->client_started = true;
	if (pthread_create(&c->acker, NULL, acker_main, c) != 0)
		return ltfs_err_set(err, -EAGAIN, "cannot start the replica's ack thread");
	c->acker_started = true;
	return 0;
}

void cl_client_stop(struct cluster *c)
{
	if (c->client_started) {
		pthread_join(c->client, NULL);
		c->client_started = false;
	}
	if (c->acker_started) {
		pthread_join(c->acker, NULL);
		c->acker_started = false;
	}
}

/* ---- a plain GET, for commands ---------------------------------------------- */

static size_t on_get_data(char *p, size_t size, size_t nmemb, void *ctx)
{
	struct ltfs_buf *b = ctx;

	return ltfs_buf_append(b, p, size * nmemb) < 0 ? CURL_WRITEFUNC_ERROR : size * nmemb;
}

int cl_http_request(const char *url, const char *token, const char *body, cl_http_sink_fn sink,
		    void *ctx, long *status, long timeout_ms, struct ltfs_err *err)
{
	CURL *curl = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	char curl_err[CURL_ERROR_SIZE] = "";
	CURLcode cc;

	*status = 0;
	if (!curl)
		return ltfs_err_set(err, -ENOMEM, "curl_easy_init failed");
	add_auth(&hdrs, token);
	if (body) {
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	}
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, ctx);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
			 timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms : (long)CONNECT_TIMEOUT_MS);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err);
	cc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(curl);
	if (cc != CURLE_OK)
		return ltfs_err_set(err, -EIO, "%s: %s", url,
				    curl_err[0] ? curl_err : curl_easy_strerror(cc));
	return 0;
}

static int http_request(const char *url, const char *token, const char *body,
			struct ltfs_buf *out, long *status, long timeout_ms, struct ltfs_err *err)
{
	return cl_http_request(url, token, body, on_get_data, out, status, timeout_ms, err);
}

int cluster_http_get(const char *url, const char *token, struct ltfs_buf *out,
		     long *status, struct ltfs_err *err)
{
	return http_request(url, token, NULL, out, status, 30000, err);
}

int cl_http_get_within(const char *url, const char *token, struct ltfs_buf *out, long *status,
		       long timeout_ms, struct ltfs_err *err)
{
	return http_request(url, token, NULL, out, status, timeout_ms, err);
}

struct fd_sink {
	int fd;
	uint64_t bytes;
};

static size_t on_fd_data(char *p, size_t size, size_t nmemb, void *ctx)
{
	struct fd_sink *f = ctx;
	size_t n = size * nmemb, done = 0;

	while (done < n) {
		ssize_t w = write(f->fd, p + done, n - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return 0; /* curl reports a write error */
		done += (size_t)w;
	}
	f->bytes += n;
	return n;
}

int cluster_http_get_fd(const char *url, const char *token, int fd, uint64_t *bytes,
			long *status, long timeout_ms, struct ltfs_err *err)
{
	struct fd_sink f = { .fd = fd };
	int rc = cl_http_request(url, token, NULL, on_fd_data, &f, status, timeout_ms, err);

	*bytes = f.bytes;
	return rc;
}

int cluster_http_post(const char *url, const char *token, const char *body,
		      struct ltfs_buf *out, long *status, struct ltfs_err *err)
{
	return http_request(url, token, body ? body : "", out, status, 60000, err);
}
