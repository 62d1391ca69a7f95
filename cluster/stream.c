/*
 * stream.c - the primary's side of one replication stream.
 *
 * A replica opens the stream with its position for each database. The
 * stream then sends, database by database, whatever takes the replica to
 * the primary's history head: the file that starts right after its
 * position when it exists and continues its checksum, otherwise the
 * history's base snapshot (TXID 1..N) and what follows it. A replica that
 * is new, too far behind, ahead, or diverged thus gets a snapshot. After
 * the first pass with nothing left to send comes READY; when idle,
 * a HEARTBEAT every HEARTBEAT_MS carries the primary's clock.
 *
 * Nothing is queued per replica: the stream reads the history files when
 * it has room to send, so a slow replica only falls behind, and commits
 * never wait for it. Its connection thread sleeps on c->commit_cv between
 * commits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "cluster/cluster_int.h"

/* What the stream believes the replica holds. */
struct rdb {
	char *name;
	uint64_t txid, checksum;
	bool skip;   /* cannot be served (logged once) */
};

struct cl_stream {
	struct cluster *c;
	char peer[96];
	struct rdb *dbs;          /* sorted by name */
	size_t n, cap;
	uint8_t head[FRAME_HEADER_SIZE + FRAME_NAME_MAX + 8];
	size_t head_len, head_off;
	int fd;                   /* LTX file being sent */
	uint64_t left;
	bool ready_sent, end_sent;
	bool counted;             /* in c->streams */
	int64_t last_frame;       /* monotonic ms */
	uint64_t gen;
	uint64_t files, bytes;
};

static int cmp_rdb(const void *a, const void *b)
{
	return strcmp(((const struct rdb *)a)->name, ((const struct rdb *)b)->name);
}

static struct rdb *find_rdb(struct cl_stream *s, const char *name)
{
	struct rdb key = { .name = (char *)name };

	return s->n ? bsearch(&key, s->dbs, s->n, sizeof(*s->dbs), cmp_rdb) : NULL;
}

static int add_rdb(struct cl_stream *s, const char *name, uint64_t txid,
		   uint64_t checksum)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct rdb *v = realloc(s->dbs, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->dbs = v;
		s->cap = cap;
	}
	s->dbs[s->n].name = strdup(name);
	if (!s->dbs[s->n].name)
		return -ENOMEM;
	s->dbs[s->n].txid = txid;
	s->dbs[s->n].checksum = checksum;
	s->dbs[s->n].skip = false;
	s->n++;
	return 0;
}

int cl_parse_hex64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (!s || !*s)
		return -1;
	for (i = 0; s[i]; i++) {
		char ch = s[i];
		unsigned d = ch >= '0' && ch <= '9' ? (unsigned)(ch - '0')
			   : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
			   : ch >= 'A' && ch <= 'F' ? (unsigned)(ch - 'A' + 10) : 16;

		if (d > 15 || i >= 16)
			return -1;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

/* The request body: {"node":"HEX","dbs":[{"name":..,"txid":HEX,"checksum":HEX}]} */
static int parse_request(struct cl_stream *s, const char *body, size_t len,
			 struct ltfs_err *err)
{
	json_error_t jerr;
	json_t *root, *dbs, *d;
	size_t i;
	int rc = 0;

	if (len == 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT, "request body is empty: want the replica's positions as JSON");
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return ltfs_err_set(err, LTFS_E_CORRUPT, "request body: %s at line %d column %d",
				    jerr.text, jerr.line, jerr.column);
	dbs = json_object_get(root, "dbs");
	if (!json_is_object(root) || (dbs && !json_is_array(dbs))) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT,
				  "request body: want an object with a \"dbs\" array");
		goto out;
	}
	json_array_foreach(dbs, i, d) {
		const char *name = json_string_value(json_object_get(d, "name"));
		uint64_t txid, cksum;

		if (!name || cl_parse_hex64(json_string_value(json_object_get(d, "txid")), &txid) < 0 ||
		    cl_parse_hex64(json_string_value(json_object_get(d, "checksum")), &cksum) < 0) {
			rc = ltfs_err_set(err, LTFS_E_CORRUPT,
					  "request body: dbs[%zu] needs \"name\", and \"txid\" and \"checksum\" as 1..16 hex digits",
					  i);
			goto out;
		}
		rc = fs_db_name_check(name, err);
		if (rc < 0) {
			ltfs_err_prefix(err, "request body: dbs[%zu]", i);
			goto out;
		}
		if (add_rdb(s, name, txid, txid ? cksum : 0) < 0) {
			rc = ltfs_err_set(err, -ENOMEM, NULL);
			goto out;
		}
	}
	if (s->n > 1)
		qsort(s->dbs, s->n, sizeof(*s->dbs), cmp_rdb);
	for (i = 1; i < s->n; i++) {
		if (strcmp(s->dbs[i - 1].name, s->dbs[i].name) == 0) {
			rc = ltfs_err_set(err, LTFS_E_CORRUPT, "request body: database '%s' twice",
					  s->dbs[i].name);
			goto out;
		}
	}
out:
	json_decref(root);
	return rc;
}

int cl_stream_open(struct cluster *c, const char *body, size_t len,
		   const char *peer, struct cl_stream **out, struct ltfs_err *err)
{
	struct cl_stream *s = calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return ltfs_err_set(err, -ENOMEM, NULL);
	s->c = c;
	s->fd = -1;
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	rc = parse_request(s, body, len, err);
	if (rc < 0) {
		cl_stream_free(s);
		return rc;
	}
	s->last_frame = cl_mono_ms();
	s->counted = true;
	pthread_mutex_lock(&c->mu);
	c->streams++;
	c->streams_total++;
	pthread_mutex_unlock(&c->mu);
	ltfs_info(c->log, "stream", "replica %s connected with %zu databases", s->peer, s->n);
	*out = s;
	return 0;
}

void cl_stream_free(void *cls)
{
	struct cl_stream *s = cls;

	if (!s)
		return;
	if (s->counted) {
		pthread_mutex_lock(&s->c->mu);
		s->c->streams--;
		cl_wake(s->c);
		pthread_mutex_unlock(&s->c->mu);
		ltfs_info(s->c->log, "stream", "replica %s disconnected after %llu files, %llu bytes",
			  s->peer, (unsigned long long)s->files, (unsigned long long)s->bytes);
	}
	if (s->fd >= 0)
		close(s->fd);
	for (size_t i = 0; i < s->n; i++)
		free(s->dbs[i].name);
	free(s->dbs);
	free(s);
}

/* ---- choosing the next frame ------------------------------------------ */

static void set_head(struct cl_stream *s, enum frame_type type, const char *name,
		     uint64_t payload_len)
{
	size_t nl = name ? strlen(name) : 0;

	frame_header_encode(s->head, type, nl, payload_len);
	if (nl)
		memcpy(s->head + FRAME_HEADER_SIZE, name, nl);
	s->head_len = FRAME_HEADER_SIZE + nl;
	s->head_off = 0;
	s->last_frame = cl_mono_ms();
}

static void set_clock_frame(struct cl_stream *s, enum frame_type type)
{
	set_head(s, type, NULL, 8);
	ltx_put_be64(s->head + s->head_len, (uint64_t)cl_now_ms());
	s->head_len += 8;
}

/* Start sending history file `fd` (header h) of database r. */
static int start_file(struct cl_stream *s, struct rdb *r, int fd,
		      const struct ltx_header *h)
{
	struct stat st;
	uint8_t tr[LTX_TRAILER_SIZE];

	if (fstat(fd, &st) < 0 || st.st_size < LTX_HEADER_SIZE + LTX_TRAILER_SIZE ||
	    pread(fd, tr, sizeof(tr), st.st_size - LTX_TRAILER_SIZE) != (ssize_t)sizeof(tr)) {
		close(fd);
		return -EIO;
	}
	s->fd = fd;
	s->left = (uint64_t)st.st_size;
	set_head(s, FRAME_LTX, r->name, s->left);
	r->txid = h->max_txid;
	r->checksum = ltx_get_be64(tr); /* post-apply */
	s->files++;
	ltfs_debug(s->c->log, "stream", "replica %s: '%s' txid %llu..%llu (%llu bytes)",
		   s->peer, r->name, (unsigned long long)h->min_txid,
		   (unsigned long long)h->max_txid, (unsigned long long)s->left);
	return 0;
}

/* Is there something to send for this database? 1 = a frame was set up. */
static int next_for_db(struct cl_stream *s, const struct fs_db_info *info)
{
	struct rdb *r = find_rdb(s, info->name);
	struct ltfs_err err = { 0 };
	struct ltx_header h;
	const char *why;
	bool missing = false; /* no file after the replica's position */
	int fd, rc;

	if (!r) {
		if (info->hist_txid == 0)
			return 0;
		if (add_rdb(s, info->name, 0, 0) < 0)
			return -ENOMEM;
		if (s->n > 1)
			qsort(s->dbs, s->n, sizeof(*s->dbs), cmp_rdb);
		r = find_rdb(s, info->name);
	}
	if (r->skip || info->hist_txid == 0)
		return 0;
	if (r->txid == info->hist_txid) {
		/* the checksum is known only when the history is not behind */
		if (info->txid != info->hist_txid || r->checksum == info->checksum)
			return 0;
		why = "diverged: same txid, different checksum";
	} else if (r->txid > info->hist_txid) {
		why = "ahead of the primary";
	} else {
		rc = fs_history_open(s->c->fs, r->name, r->txid + 1, &fd, &h, &err);
		if (rc == 0 && (r->txid == 0 || h.pre_apply_checksum == r->checksum))
			return start_file(s, r, fd, &h) < 0 ? -EIO : 1;
		if (rc == 0)
			close(fd);
		missing = rc != 0 && r->txid > 0;
		why = r->txid == 0 ? "new" : rc == 0 ? "diverged: checksum does not continue"
						      : "behind the history";
	}
	rc = fs_history_open(s->c->fs, r->name, 1, &fd, &h, &err);
	if (rc == 0 && missing && h.max_txid <= r->txid) {
		/* The file after the replica's position must exist when the
		 * base snapshot does not reach past it: it is being folded
		 * right now. Never take a replica back in time; try again. */
		close(fd);
		return 0;
	}
	if (rc == 0)
		ltfs_info(s->c->log, "stream", "replica %s: '%s' at txid %llu is %s: sending a snapshot",
			  s->peer, r->name, (unsigned long long)r->txid, why);
	if (rc < 0) {
		ltfs_error(s->c->log, "stream", "replica %s: '%s': no snapshot in the history (%s); not replicated on this stream",
			   s->peer, r->name, err.code ? err.msg : ltfs_strerror(rc));
		r->skip = true;
		return 0;
	}
	return start_file(s, r, fd, &h) < 0 ? -EIO : 1;
}

struct db_list {
	struct fs_db_info *v;
	char **names;
	size_t n, cap;
	bool oom;
};

static void collect(void *ctx, const struct fs_db_info *info)
{
	struct db_list *l = ctx;

	if (l->oom)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct fs_db_info *v = realloc(l->v, cap * sizeof(*v));
		char **names = realloc(l->names, cap * sizeof(*names));

		if (v)
			l->v = v;
		if (names)
			l->names = names;
		if (!v || !names) {
			l->oom = true;
			return;
		}
		l->cap = cap;
	}
	l->v[l->n] = *info;
	l->names[l->n] = strdup(info->name);
	if (!l->names[l->n]) {
		l->oom = true;
		return;
	}
	l->v[l->n].name = l->names[l->n];
	l->n++;
}

static int cmp_info(const void *a, const void *b)
{
	return strcmp(((const struct fs_db_info *)a)->name,
		      ((const struct fs_db_info *)b)->name);
}

static void db_list_free(struct db_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->names[i]);
	free(l->names);
	free(l->v);
}

/* Set up the next frame: 1 if there is one, 0 if nothing to send. */
static int next_frame(struct cl_stream *s)
{
	struct db_list l = { 0 };
	int rc = 0;

	fs_db_foreach(s->c->fs, collect, &l);
	if (l.oom) {
		db_list_free(&l);
		return -ENOMEM;
	}
	for (size_t i = 0; i < l.n && rc == 0; i++)
		rc = next_for_db(s, &l.v[i]);
	if (l.n)
		qsort(l.v, l.n, sizeof(*l.v), cmp_info);
	/* databases the primary has never heard of: the replica drops them */
	for (size_t i = 0; rc == 0 && i < s->n; i++) {
		struct fs_db_info key = { .name = s->dbs[i].name };

		if (s->dbs[i].txid == 0 ||
		    (l.n && bsearch(&key, l.v, l.n, sizeof(*l.v), cmp_info)))
			continue;
		set_head(s, FRAME_DROP, s->dbs[i].name, 0);
		ltfs_info(s->c->log, "stream", "replica %s: '%s' is not on the primary: dropping it",
			  s->peer, s->dbs[i].name);
		s->dbs[i].txid = 0;
		s->dbs[i].checksum = 0;
		rc = 1;
	}
	db_list_free(&l);
	if (rc == 0 && !s->ready_sent) {
		set_clock_frame(s, FRAME_READY);
		s->ready_sent = true;
		rc = 1;
	}
	return rc;
}

/* ---- the content reader ------------------------------------------------- */

/*
 * MHD sends what one call returns as one chunk, in one send(): the buffer
 * is filled with every frame ready now (a busy primary has several per
 * wake-up), and the call sleeps only when it has nothing at all.
 */
ssize_t cl_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct cl_stream *s = cls;
	struct cluster *c = s->c;
	size_t have = 0;

	(void)pos;
	for (;;) {
		uint64_t gen;
		bool stopping;
		int rc;

		if (have == max)
			return (ssize_t)have;
		if (s->head_off < s->head_len) {
			size_t n = s->head_len - s->head_off;

			n = n < max - have ? n : max - have;
			memcpy(buf + have, s->head + s->head_off, n);
			s->head_off += n;
			s->bytes += n;
			have += n;
			continue;
		}
		if (s->fd >= 0) {
			size_t want = s->left < max - have ? (size_t)s->left : max - have;
			ssize_t n = read(s->fd, buf + have, want);

			if (n <= 0) {
				ltfs_error(c->log, "stream", "replica %s: reading the history: %s",
					   s->peer, n < 0 ? strerror(errno) : "file shrank");
				return MHD_CONTENT_READER_END_WITH_ERROR;
			}
			s->left -= (uint64_t)n;
			s->bytes += (uint64_t)n;
			have += (size_t)n;
			if (s->left == 0) {
				close(s->fd);
				s->fd = -1;
			}
			continue;
		}
		if (s->end_sent)
			return have ? (ssize_t)have : MHD_CONTENT_READER_END_OF_STREAM;

		pthread_mutex_lock(&c->mu);
		gen = c->gen;
		stopping = c->stopping;
		pthread_mutex_unlock(&c->mu);
		if (stopping) {
			set_head(s, FRAME_END, NULL, 0);
			s->end_sent = true;
			continue;
		}
		if (!cl_is_primary(c)) {
			/* this node is no longer the primary */
			set_head(s, FRAME_END, NULL, 0);
			s->end_sent = true;
			continue;
		}
		rc = next_frame(s);
		if (rc < 0) {
			ltfs_error(c->log, "stream", "replica %s: %s", s->peer, ltfs_strerror(rc));
			return MHD_CONTENT_READER_END_WITH_ERROR;
		}
		if (rc > 0)
			continue;
		if (cl_mono_ms() - s->last_frame >= HEARTBEAT_MS) {
			set_clock_frame(s, FRAME_HEARTBEAT);
			continue;
		}
		if (have)
			return (ssize_t)have;
		/* nothing to send: sleep until a commit, a stop or the heartbeat */
		pthread_mutex_lock(&c->mu);
		if (c->gen == gen && !c->stopping)
			cl_wait_commit(c, HEARTBEAT_MS - (cl_mono_ms() - s->last_frame));
		pthread_mutex_unlock(&c->mu);
	}
}

/* ---- acknowledgements (sync: replicas=N) ---------------------------------- */

/* Record a replica's applied positions (POST /v1/ack: a stream request's
 * body with the "epoch" of the stream that brought them). */
int cl_ack_record(struct cluster *c, const char *body, size_t len, struct ltfs_err *err)
{
	struct cl_stream tmp = { .c = c, .fd = -1 };
	json_t *root = json_loadb(body, len, 0, NULL);
	uint64_t node = 0, epoch = (uint64_t)json_integer_value(json_object_get(root, "epoch"));
	int rc = cl_parse_hex64(json_string_value(json_object_get(root, "node")), &node) < 0
			 ? ltfs_err_set(err, LTFS_E_CORRUPT, "request body: want \"node\" as 16 hex digits")
			 : parse_request(&tmp, body, len, err);

	json_decref(root);
	pthread_mutex_lock(&c->mu);
	/* acks of another epoch's stream say nothing about this primary's commits */
	if (rc == 0 && epoch != c->epoch)
		rc = ltfs_err_set(err, LTFS_E_STATE, "ack for epoch %llu, this primary holds %llu",
				  (unsigned long long)epoch, (unsigned long long)c->epoch);
	for (size_t i = 0; rc == 0 && i < tmp.n; i++) {
		struct cl_ack *a = NULL;

		for (size_t k = 0; k < c->nacks && !a; k++)
			if (c->acks[k].node == node && strcmp(c->acks[k].name, tmp.dbs[i].name) == 0)
				a = &c->acks[k];
		if (!a) {
			struct cl_ack *v = realloc(c->acks, (c->nacks + 1) * sizeof(*v));

			if (!v) {
				rc = ltfs_err_set(err, -ENOMEM, NULL);
				break;
			}
			c->acks = v;
			a = &c->acks[c->nacks];
			a->node = node;
			a->txid = 0;
			a->name = strdup(tmp.dbs[i].name);
			if (!a->name) {
				rc = ltfs_err_set(err, -ENOMEM, NULL);
				break;
			}
			c->nacks++;
		}
		if (tmp.dbs[i].txid > a->txid)
			a->txid = tmp.dbs[i].txid;
	}
	cl_wake(c);
	pthread_mutex_unlock(&c->mu);
	for (size_t i = 0; i < tmp.n; i++)
		free(tmp.dbs[i].name);
	free(tmp.dbs);
	return rc;
}

size_t cl_acks_at(struct cluster *c, const char *db, uint64_t txid)
{
	size_t n = 0;

	for (size_t k = 0; k < c->nacks; k++)
		n += strcmp(c->acks[k].name, db) == 0 && c->acks[k].txid >= txid;
	return n;
}

void cl_acks_clear(struct cluster *c)
{
	for (size_t k = 0; k < c->nacks; k++)
		free(c->acks[k].name);
	free(c->acks);
	c->acks = NULL;
	c->nacks = 0;
}
