/*
 * lease.c - primary election through one object in the bucket,
 * PREFIX/.ltfs/lease.json, written only with conditional PUTs.
 *
 * The object names the holder (node id, advertise URL), an epoch that
 * every change of holder raises, the holder's TTL, and the position of
 * every database the holder has published: a level-0 upload counts only
 * once the lease that names its TXID has been written over the previous
 * version (If-Match). A deposed primary can still put objects in the
 * bucket, but never that compare-and-swap, so nothing it writes after
 * losing the lease is part of any restore or catch-up.
 *
 * Timing. The holder renews every renew interval; it counts its lease
 * from the moment a renewal was *sent* (monotonic clock), minus a safety
 * margin, and the fs refuses writes past that deadline even if this
 * thread is stuck. Other nodes count from the moment they first *saw* a
 * version of the object and take over only once it stayed unchanged for
 * a whole TTL: no clock is compared between machines. A released lease
 * (clean shutdown, handoff) is taken at once.
 *
 * Locks: l->mu serializes every request on the object (renewals from this
 * thread, publishes from the backup thread, release, handoff) and guards
 * the lease fields; c->mu is taken inside it, never the other way round.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cluster/cluster_int.h"

#define LEASE_VERSION 1
#define LEASE_DOC_MAX (4u << 20)
#define LEASE_TTL_DEFAULT 10000
#define LEASE_TTL_MIN 2000

/* ---- the object -------------------------------------------------------------- */

static void doc_clear(struct lease_doc *d)
{
	for (size_t i = 0; i < d->nheads; i++)
		free(d->heads[i].name);
	free(d->heads);
	memset(d, 0, sizeof(*d));
}

static int cmp_head(const void *a, const void *b)
{
	return strcmp(((const struct lease_head *)a)->name, ((const struct lease_head *)b)->name);
}

static struct lease_head *head_find(const struct lease_doc *d, const char *name)
{
	struct lease_head key = { .name = (char *)name };

	return d->nheads ? bsearch(&key, d->heads, d->nheads, sizeof(*d->heads), cmp_head) : NULL;
}

/* Set a database's published position (kept sorted). */
static int head_set(struct lease_doc *d, const char *name, uint64_t txid, uint64_t checksum)
{
	struct lease_head *h = head_find(d, name);

	if (!h) {
		if (d->nheads == d->cap) {
			size_t cap = d->cap ? 2 * d->cap : 8;
			struct lease_head *v = realloc(d->heads, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			d->heads = v;
			d->cap = cap;
		}
		h = &d->heads[d->nheads];
		h->name = strdup(name);
		if (!h->name)
			return -ENOMEM;
		d->nheads++;
		h->txid = txid;
		h->checksum = checksum;
		qsort(d->heads, d->nheads, sizeof(*d->heads), cmp_head);
		return 0;
	}
	h->txid = txid;
	h->checksum = checksum;
	return 0;
}

static int doc_copy(struct lease_doc *dst, const struct lease_doc *src)
{
	struct lease_doc d = *src;

	d.heads = NULL;
	d.nheads = d.cap = 0;
	for (size_t i = 0; i < src->nheads; i++)
		if (head_set(&d, src->heads[i].name, src->heads[i].txid, src->heads[i].checksum) < 0) {
			doc_clear(&d);
			return -ENOMEM;
		}
	*dst = d;
	return 0;
}

static char *doc_encode(const struct lease_doc *d)
{
	json_t *o, *dbs = json_object();
	char epoch[17], at[40], *s = NULL;

	if (!dbs)
		return NULL;
	for (size_t i = 0; i < d->nheads; i++) {
		char txid[17], sum[17];

		cl_hex16(d->heads[i].txid, txid);
		cl_hex16(d->heads[i].checksum, sum);
		json_object_set_new(dbs, d->heads[i].name,
				    json_pack("{s:s, s:s}", "txid", txid, "checksum", sum));
	}
	cl_hex16(d->epoch, epoch);
	ltx_format_timestamp(cl_now_ms(), at, sizeof(at));
	/* "written" is for people reading the object: nodes never compare it
	 * with their clocks */
	o = json_pack("{s:i, s:s, s:s, s:s, s:I, s:b, s:s, s:o}", "version", LEASE_VERSION,
		      "node", d->node, "url", d->url, "epoch", epoch, "ttl_ms",
		      (json_int_t)d->ttl_ms, "released", d->released, "written", at, "dbs", dbs);
	if (o && d->handoff[0])
		json_object_set_new(o, "handoff", json_string(d->handoff));
	if (o)
		s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return s;
}

/* Parse the object; LTFS_E_CORRUPT naming the key and field. */
static int doc_decode(const char *key, const void *p, size_t n, struct lease_doc *d,
		      struct ltfs_err *err)
{
	json_error_t jerr;
	json_t *o = json_loadb(p, n, JSON_REJECT_DUPLICATES, &jerr), *dbs, *v;
	const char *node = NULL, *url = NULL, *epoch = NULL, *handoff = NULL, *name;
	json_int_t version = 0, ttl = 0;
	int released = 0, rc = 0;

	memset(d, 0, sizeof(*d));
	if (!o)
		return ltfs_err_set(err, LTFS_E_CORRUPT, "%s: not JSON (line %d: %s)", key, jerr.line,
				    jerr.text);
	if (json_unpack_ex(o, &jerr, 0, "{s:I, s:s, s:s, s:s, s:I, s:b, s?s, s:o}", "version",
			   &version, "node", &node, "url", &url, "epoch", &epoch, "ttl_ms", &ttl,
			   "released", &released, "handoff", &handoff, "dbs", &dbs) < 0) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT, "%s: %s", key, jerr.text);
	} else if (version != LEASE_VERSION) {
		rc = ltfs_err_set(err, LTFS_E_FORMAT, "%s: field 'version' is %lld, this ltfs reads %d",
				  key, (long long)version, LEASE_VERSION);
	} else if (strlen(node) != 16 || strlen(url) >= sizeof(d->url) ||
		   (handoff && strlen(handoff) != 16)) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT, "%s: field '%s' has the wrong length", key,
				  strlen(node) != 16 ? "node" : strlen(url) >= sizeof(d->url) ? "url"
										: "handoff");
	} else if (cl_parse_hex64(epoch, &d->epoch) < 0 || d->epoch == 0) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT, "%s: field 'epoch' is not a hex number > 0", key);
	} else if (ttl < 1 || ttl > 3600000) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT, "%s: field 'ttl_ms' is out of range", key);
	} else if (!json_is_object(dbs)) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT, "%s: field 'dbs' is not an object", key);
	}
	if (rc == 0) {
		memcpy(d->node, node, 17);
		snprintf(d->url, sizeof(d->url), "%s", url);
		snprintf(d->handoff, sizeof(d->handoff), "%s", handoff ? handoff : "");
		d->ttl_ms = ttl;
		d->released = released;
		json_object_foreach(dbs, name, v) {
			uint64_t txid, sum;

			if (cl_parse_hex64(json_string_value(json_object_get(v, "txid")), &txid) < 0 ||
			    cl_parse_hex64(json_string_value(json_object_get(v, "checksum")), &sum) < 0) {
				rc = ltfs_err_set(err, LTFS_E_CORRUPT,
						  "%s: dbs.'%s': want txid and checksum as hex", key, name);
				break;
			}
			if (head_set(d, name, txid, sum) < 0) {
				rc = ltfs_err_set(err, -ENOMEM, NULL);
				break;
			}
		}
	}
	json_decref(o);
	if (rc < 0)
		doc_clear(d);
	return rc;
}

/* GET and parse the object: 0, -ENOENT, LTFS_E_CORRUPT, or an S3 error. */
static int lease_get(struct s3_conn *conn, const char *key, struct lease_doc *d,
		     char etag[S3_ETAG_MAX], struct ltfs_err *err)
{
	struct ltfs_buf b;
	int rc;

	ltfs_buf_init(&b, LEASE_DOC_MAX);
	rc = s3_get(conn, key, 0, 0, &b, etag, err);
	if (rc == 0)
		rc = doc_decode(key, b.data ? (const char *)b.data : "", b.len, d, err);
	ltfs_buf_release(&b);
	return rc;
}

int cl_lease_read_head(struct s3 *s3, const char *db, uint64_t *txid, uint64_t *checksum,
		       struct ltfs_err *err)
{
	struct s3_conn *conn;
	struct lease_doc d;
	char key[S3_KEY_MAX], etag[S3_ETAG_MAX];
	struct lease_head *h;
	int rc;

	if (s3_key(s3, key, LEASE_KEY) < 0)
		return ltfs_err_set(err, LTFS_E_LIMIT, "lease key too long");
	rc = s3_conn_open(s3, &conn, err);
	if (rc < 0)
		return rc;
	rc = lease_get(conn, key, &d, etag, err);
	s3_conn_free(conn);
	if (rc < 0)
		return rc;
	h = head_find(&d, db);
	if (h) {
		*txid = h->txid;
		*checksum = h->checksum;
	}
	doc_clear(&d);
	return h ? 0 : -ENOENT;
}

/* ---- writing it ---------------------------------------------------------------- */

/* Put d over the version we know (or create it); l->mu held. On success
 * the etag moves and, for a lease we keep, so does its deadline. */
static int lease_put(struct cl_lease *l, const struct lease_doc *d, bool create,
		     struct ltfs_err *err)
{
	struct cluster *c = l->c;
	struct s3_put_opts o = { .content_type = "application/json" };
	char etag[S3_ETAG_MAX] = "", *body = doc_encode(d);
	int64_t sent = cl_mono_ms();
	int rc;

	if (!body)
		return ltfs_err_set(err, -ENOMEM, NULL);
	if (create)
		o.if_none_match = true;
	else
		o.if_match = l->etag;
	/* a renewal that cannot land before the lease ends is worthless;
	 * an acquisition gets a third of a TTL */
	s3_conn_set_deadline(l->conn, l->held ? l->valid_until : sent + l->ttl_ms / 3);
	rc = s3_put(l->conn, l->key, body, strlen(body), &o, etag, err);
	s3_conn_set_deadline(l->conn, 0);
	free(body);
	if (rc < 0)
		return rc;
	snprintf(l->etag, sizeof(l->etag), "%s", etag);
	if (!d->released) {
		l->sent_at = sent;
		__atomic_store_n(&l->valid_until, sent + l->ttl_ms - l->margin_ms, __ATOMIC_SEQ_CST);
		pthread_mutex_lock(&c->mu);
		/* a handoff keeps writes stopped; what it fenced in is
		 * answered while the lease lasts */
		if (c->serving && !c->handing_off)
			fs_set_write_deadline(c->fs, l->valid_until);
		else if (c->serving)
			fs_set_ack_deadline(c->fs, l->valid_until);
		pthread_mutex_unlock(&c->mu);
	}
	return 0;
}

/* We no longer hold the lease (l->mu held): refuse writes at once, stop
 * serving streams, and say what was never published. */
static void step_down(struct cl_lease *l, const char *why, bool handed_over)
{
	struct cluster *c = l->c;

	if (!l->held)
		return;
	__atomic_store_n(&l->held, false, __ATOMIC_SEQ_CST);
	/* a handoff has fenced writes and shipped what was recorded before:
	 * those commits may still be answered as done */
	if (handed_over)
		fs_set_ack_deadline(c->fs, 0);
	else
		fs_set_write_deadline(c->fs, 1); /* long past */
	fs_set_role(c->fs, FS_ROLE_REPLICA, "");
	pthread_mutex_lock(&c->mu);
	c->serving = false;
	c->promoting = false;
	c->epoch = 0;
	c->demotions++;
	cl_wake(c);
	pthread_mutex_unlock(&c->mu);
	ltfs_warn(c->log, "lease", "lost the lease of epoch %llu: %s; writes are refused from now on",
		  (unsigned long long)l->doc.epoch, why);
	cl_note_unpublished(c, &l->doc);
}

static void lose(struct cl_lease *l, const char *why)
{
	step_down(l, why, false);
}

/* The object as it is now, after a write of ours failed: still ours (the
 * answer was lost, or the store said no to a write that landed)? */
static void recheck(struct cl_lease *l)
{
	struct ltfs_err err = { 0 };
	struct lease_doc d;
	char etag[S3_ETAG_MAX];
	int rc;

	s3_conn_set_deadline(l->conn, l->valid_until);
	rc = lease_get(l->conn, l->key, &d, etag, &err);
	s3_conn_set_deadline(l->conn, 0);
	if (rc == -ENOENT) {
		lose(l, "the lease object was deleted");
	} else if (rc == 0 && strcmp(d.node, l->node) == 0 && d.epoch == l->doc.epoch &&
		   !d.released) {
		snprintf(l->etag, sizeof(l->etag), "%s", etag); /* ours: carry on */
	} else if (rc == 0) {
		char why[128];

		snprintf(why, sizeof(why), "node %s holds it at epoch %llu", d.node,
			 (unsigned long long)d.epoch);
		lose(l, why);
	} else {
		ltfs_warn(l->c->log, "lease", "reading the lease back: %s", err.msg);
	}
	if (rc == 0)
		doc_clear(&d);
}

/* Write our lease again (l->mu held); a failure re-reads it. */
static int renew(struct cl_lease *l, struct ltfs_err *err)
{
	int rc = lease_put(l, &l->doc, false, err);

	if (rc < 0 && l->held) {
		ltfs_warn(l->c->log, "lease", "renewal failed: %s", err->msg);
		recheck(l);
	}
	return rc;
}

int cl_lease_publish(struct cluster *c, const struct lease_head *heads, size_t n,
		     struct ltfs_err *err)
{
	struct cl_lease *l = c->lease;
	struct lease_head *old = NULL;
	size_t moved = 0;
	int rc = 0;

	pthread_mutex_lock(&l->mu);
	if (!l->held || cl_mono_ms() >= l->valid_until) {
		rc = ltfs_err_set(err, LTFS_E_NOT_PRIMARY,
				  "not published: this node no longer holds the lease");
		goto out;
	}
	old = calloc(n ? n : 1, sizeof(*old));
	if (!old) {
		rc = ltfs_err_set(err, -ENOMEM, NULL);
		goto out;
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct lease_head *h = head_find(&l->doc, heads[i].name);

		if (h && h->txid >= heads[i].txid)
			continue;
		old[moved] = h ? *h : (struct lease_head){ 0 };
		old[moved].name = heads[i].name;
		rc = head_set(&l->doc, heads[i].name, heads[i].txid, heads[i].checksum);
		if (rc == 0)
			moved++;
	}
	if (rc < 0)
		ltfs_err_set(err, rc, NULL);
	/* one conditional write for every database of the round */
	for (int tries = 0; rc == 0 && moved && tries < 2; tries++) {
		rc = renew(l, err);
		if (rc == 0 || !l->held)
			break;
	}
	if (rc == 0 && moved) {
		pthread_mutex_lock(&c->mu);
		c->publishes++;
		pthread_mutex_unlock(&c->mu);
	}
	if (rc < 0) {
		/* not published: the heads stay where the bucket's lease has them */
		for (size_t i = 0; i < moved; i++)
			head_set(&l->doc, old[i].name, old[i].txid, old[i].checksum);
		if (!l->held)
			rc = ltfs_err_set(err, LTFS_E_NOT_PRIMARY,
					  "%zu database heads not published: the lease was lost", moved);
	}
out:
	pthread_mutex_unlock(&l->mu);
	free(old);
	return rc;
}

bool cl_lease_valid(struct cluster *c)
{
	struct cl_lease *l = c->lease;

	/* without l->mu, which a slow renewal may hold for seconds */
	return !l || (__atomic_load_n(&l->held, __ATOMIC_SEQ_CST) &&
		      cl_mono_ms() < __atomic_load_n(&l->valid_until, __ATOMIC_SEQ_CST));
}

uint64_t cl_lease_head(struct cluster *c, const char *db, uint64_t *checksum)
{
	struct cl_lease *l = c->lease;
	struct lease_head *h;
	uint64_t txid = 0;

	pthread_mutex_lock(&l->mu);
	h = head_find(&l->doc, db);
	if (h) {
		txid = h->txid;
		if (checksum)
			*checksum = h->checksum;
	}
	pthread_mutex_unlock(&l->mu);
	return txid;
}

int cl_lease_heads(struct cluster *c, struct lease_doc *out, uint64_t *epoch)
{
	struct cl_lease *l = c->lease;
	int rc;

	pthread_mutex_lock(&l->mu);
	rc = l->held ? doc_copy(out, &l->doc) : LTFS_E_NOT_PRIMARY;
	*epoch = l->doc.epoch;
	pthread_mutex_unlock(&l->mu);
	return rc;
}

void cl_lease_doc_free(struct lease_doc *d)
{
	doc_clear(d);
}

/* ---- taking it ----------------------------------------------------------------- */

/* Try to become the holder over `cur` (NULL: the object is absent). */
static void take(struct cl_lease *l, const struct lease_doc *cur, const char *why)
{
	struct cluster *c = l->c;
	struct ltfs_err err = { 0 };
	struct lease_doc d = { 0 };
	uint64_t top;
	int rc;

	if (cur && doc_copy(&d, cur) < 0)
		return;
	pthread_mutex_lock(&c->mu);
	top = c->max_epoch;
	pthread_mutex_unlock(&c->mu);
	if (cur && cur->epoch > top)
		top = cur->epoch;
	memcpy(d.node, l->node, sizeof(d.node));
	snprintf(d.url, sizeof(d.url), "%s", l->url);
	d.epoch = top + 1;
	d.ttl_ms = l->ttl_ms;
	d.released = false;
	d.handoff[0] = '\0';
	rc = lease_put(l, &d, cur == NULL, &err);
	if (rc < 0) {
		/* any refusal means "not acquired": read it again */
		ltfs_debug(c->log, "lease", "taking the lease (%s) failed: %s", why, err.msg);
		doc_clear(&d);
		return;
	}
	doc_clear(&l->doc);
	l->doc = d;
	__atomic_store_n(&l->held, true, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&c->mu);
	c->epoch = c->max_epoch = d.epoch;
	c->replica_of[0] = '\0';
	c->follow_gen++;
	c->promoting = true;
	c->promotions++;
	cl_wake(c);
	pthread_mutex_unlock(&c->mu);
	ltfs_info(c->log, "lease", "took the lease at epoch %llu (%s); catching up before taking writes",
		  (unsigned long long)d.epoch, why);
}

/* Point the replica client at the holder. */
static void follow(struct cl_lease *l, const struct lease_doc *d)
{
	struct cluster *c = l->c;

	pthread_mutex_lock(&c->mu);
	if (d->epoch > c->max_epoch)
		c->max_epoch = d->epoch;
	if (strcmp(c->replica_of, d->url) != 0 || c->follow_epoch != d->epoch) {
		snprintf(c->replica_of, sizeof(c->replica_of), "%s", d->url);
		c->follow_epoch = d->epoch;
		c->follow_gen++;
		cl_wake(c);
		ltfs_info(c->log, "lease", "primary is node %s at %s (epoch %llu)", d->node, d->url,
			  (unsigned long long)d->epoch);
	}
	pthread_mutex_unlock(&c->mu);
}

/* One look at the object while we do not hold it (l->mu held). */
static void observe(struct cl_lease *l)
{
	struct cluster *c = l->c;
	struct ltfs_err err = { 0 };
	struct lease_doc d;
	char etag[S3_ETAG_MAX];
	int64_t now;
	int rc;

	s3_conn_set_deadline(l->conn, cl_mono_ms() + l->ttl_ms / 2);
	rc = lease_get(l->conn, l->key, &d, etag, &err);
	s3_conn_set_deadline(l->conn, 0);
	now = cl_mono_ms();
	if (rc == -ENOENT) {
		l->etag[0] = '\0';
		if (l->candidate && now >= l->no_take_until)
			take(l, NULL, "no lease in the bucket");
		return;
	}
	if (rc < 0 && rc != LTFS_E_CORRUPT && rc != LTFS_E_FORMAT) {
		if (now - l->warned_at > 10000) {
			ltfs_warn(c->log, "lease", "reading the lease: %s", err.msg);
			l->warned_at = now;
		}
		return;
	}
	if (strcmp(etag, l->seen_etag) != 0) {
		snprintf(l->seen_etag, sizeof(l->seen_etag), "%s", etag);
		l->seen_at = now;
	}
	snprintf(l->etag, sizeof(l->etag), "%s", etag);
	if (rc < 0) {
		/* unreadable: a TTL of stillness makes it free, as for any holder */
		if (now - l->warned_at > 10000) {
			ltfs_error(c->log, "lease", "%s", err.msg);
			l->warned_at = now;
		}
		if (l->candidate && now >= l->no_take_until && now - l->seen_at >= l->ttl_ms) {
			struct lease_doc blank = { .epoch = 0 };

			pthread_mutex_lock(&c->mu);
			blank.epoch = c->max_epoch;
			pthread_mutex_unlock(&c->mu);
			take(l, &blank, "the lease object was unreadable for a whole TTL");
		}
		return;
	}
	/* what the bucket holds, a replica may fold, as the primary does */
	for (size_t i = 0; i < d.nheads; i++)
		fs_set_shipped(c->fs, d.heads[i].name, d.heads[i].txid);
	if (!d.released && strcmp(d.node, l->node) != 0)
		follow(l, &d);
	else {
		pthread_mutex_lock(&c->mu);
		if (d.epoch > c->max_epoch)
			c->max_epoch = d.epoch;
		pthread_mutex_unlock(&c->mu);
	}
	if (l->candidate && now >= l->no_take_until) {
		/* a lease naming this node is waited out like any other: the
		 * process holding it may be a copy of this data dir */
		if (d.released && (!d.handoff[0] || strcmp(d.handoff, l->node) == 0))
			take(l, &d, d.handoff[0] ? "handed over to this node" : "released");
		else if (now - l->seen_at >= d.ttl_ms)
			take(l, &d, "expired: unchanged for a whole TTL");
	}
	doc_clear(&d);
}

/* ---- the thread ---------------------------------------------------------------- */

static void *lease_main(void *arg)
{
	struct cl_lease *l = arg;
	struct cluster *c = l->c;

	bool poked = false;

	pthread_setname_np(pthread_self(), "lease");
	for (;;) {
		struct ltfs_err err = { 0 };
		int64_t wait;

		pthread_mutex_lock(&l->mu);
		if (l->held) {
			/* poked: someone saw a newer epoch; a write finds out at once */
			if (poked || cl_mono_ms() - l->sent_at >= l->renew_ms)
				renew(l, &err);
			if (l->held && cl_mono_ms() >= l->valid_until)
				lose(l, "no renewal succeeded within the TTL");
		} else {
			observe(l);
		}
		wait = l->held ? l->sent_at + l->renew_ms - cl_mono_ms() : l->poll_ms;
		if (l->held && cl_mono_ms() - l->sent_at >= l->renew_ms)
			wait = 100; /* a failed renewal: try again soon */
		pthread_mutex_unlock(&l->mu);
		pthread_mutex_lock(&c->mu);
		if (!c->stopping && !l->poked && wait > 0)
			cl_cond_wait_ms(&l->cv, &c->mu, wait);
		poked = l->poked;
		l->poked = false;
		if (c->stopping) {
			pthread_mutex_unlock(&c->mu);
			break;
		}
		pthread_mutex_unlock(&c->mu);
	}
	return NULL;
}

void cl_lease_poke(struct cluster *c)
{
	if (!c->lease)
		return;
	pthread_mutex_lock(&c->mu);
	c->lease->poked = true;
	pthread_cond_broadcast(&c->lease->cv);
	pthread_mutex_unlock(&c->mu);
}

/* ---- promotion: the client thread's part --------------------------------------- */

int cl_lease_open_writes(struct cluster *c, uint64_t epoch)
{
	struct cl_lease *l = c->lease;
	int rc = 0;

	pthread_mutex_lock(&l->mu);
	if (!l->held || l->doc.epoch != epoch || cl_mono_ms() >= l->valid_until) {
		rc = LTFS_E_NOT_PRIMARY;
	} else {
		fs_set_write_deadline(c->fs, l->valid_until);
		fs_set_role(c->fs, FS_ROLE_PRIMARY, NULL);
		pthread_mutex_lock(&c->mu);
		cl_acks_clear(c); /* acks of an earlier epoch of ours count no more */
		c->serving = true;
		c->promoting = false;
		c->handing_off = false;
		cl_wake(c);
		pthread_mutex_unlock(&c->mu);
	}
	pthread_mutex_unlock(&l->mu);
	if (rc == 0)
		ltfs_info(c->log, "lease", "primary at epoch %llu: writes open",
			  (unsigned long long)epoch);
	return rc;
}

void cl_lease_resign(struct cluster *c, const char *why)
{
	struct cl_lease *l = c->lease;
	struct ltfs_err err = { 0 };

	pthread_mutex_lock(&l->mu);
	if (l->held) {
		l->doc.released = true;
		if (lease_put(l, &l->doc, false, &err) < 0)
			ltfs_warn(c->log, "lease", "releasing the lease: %s", err.msg);
		lose(l, why);
	}
	/* give the others a chance before this node tries again */
	l->no_take_until = cl_mono_ms() + 2 * l->ttl_ms;
	pthread_mutex_unlock(&l->mu);
}

/* ---- handoff (ltfs promote) ---------------------------------------------------- */

int cl_lease_handoff(struct cluster *c, const char *to, struct ltfs_err *err)
{
	struct cl_lease *l = c->lease;
	int rc;

	if (!l)
		return ltfs_err_set(err, LTFS_E_STATE, "this node does not use a lease");
	pthread_mutex_lock(&c->mu);
	rc = c->serving ? 0 : LTFS_E_NOT_PRIMARY;
	if (rc == 0)
		c->handing_off = true;
	pthread_mutex_unlock(&c->mu);
	if (rc < 0)
		return ltfs_err_set(err, rc, "this node is not the primary");
	/* no new commit from here on; what is committed goes to the bucket,
	 * once it is in the history that the uploads read */
	fs_fence_writes(c->fs);
	rc = fs_history_drain(c->fs);
	if (rc < 0)
		ltfs_err_set(err, rc, "the local history did not take the last commits");
	if (rc == 0 && c->backup)
		rc = cl_backup_flush(c, l->ttl_ms / 2, err);
	pthread_mutex_lock(&l->mu);
	if (rc == 0 && !l->held)
		rc = ltfs_err_set(err, LTFS_E_NOT_PRIMARY, "the lease was lost meanwhile");
	if (rc == 0) {
		struct lease_doc d;

		rc = doc_copy(&d, &l->doc);
		if (rc == 0) {
			d.released = true;
			snprintf(d.handoff, sizeof(d.handoff), "%s", to);
			rc = lease_put(l, &d, false, err);
			if (rc == 0) {
				doc_clear(&l->doc);
				l->doc = d;
			} else {
				doc_clear(&d);
			}
		} else {
			ltfs_err_set(err, rc, NULL);
		}
		if (rc == 0) {
			l->seen_etag[0] = '\0';
			step_down(l, "handed over", true);
		}
	}
	if (rc < 0 && l->held) {
		/* stay the primary */
		fs_set_write_deadline(c->fs, l->valid_until);
		pthread_mutex_lock(&c->mu);
		c->handing_off = false;
		pthread_mutex_unlock(&c->mu);
	}
	pthread_mutex_unlock(&l->mu);
	if (rc == 0)
		ltfs_info(c->log, "lease", "handed the lease to node %s", to);
	cl_lease_poke(c);
	return rc;
}

/* ---- start and stop ------------------------------------------------------------ */

/*
 * Does the store really honor conditional writes? A create-only PUT of a
 * fresh key must succeed once and fail the second time, and a PUT with a
 * stale If-Match must fail. Some S3-compatible servers ignore the headers;
 * a lease on them would elect several primaries.
 */
static int probe(struct cl_lease *l, struct ltfs_err *err)
{
	struct s3_put_opts create = { .if_none_match = true };
	struct s3_put_opts stale = { .if_match = "00000000000000000000000000000000" };
	char key[S3_KEY_MAX];
	int rc;

	if (s3_key(l->s3, key, ".ltfs/probe-%s", l->node) < 0)
		return ltfs_err_set(err, LTFS_E_LIMIT, "probe key too long");
	s3_delete(l->conn, key, err); /* from an earlier run */
	rc = s3_put(l->conn, key, "1", 1, &create, NULL, err);
	if (rc == 0) {
		rc = s3_put(l->conn, key, "2", 1, &create, NULL, err);
		if (rc == 0)
			rc = ltfs_err_set(err, LTFS_E_CONFIG,
					  "%s: the store accepted a second If-None-Match: * PUT", key);
		else if (rc == LTFS_E_CONFLICT)
			rc = s3_put(l->conn, key, "3", 1, &stale, NULL, err);
		if (rc == 0)
			rc = ltfs_err_set(err, LTFS_E_CONFIG,
					  "%s: the store accepted a PUT with a stale If-Match", key);
		else if (rc == LTFS_E_CONFLICT)
			rc = 0;
	}
	s3_delete(l->conn, key, NULL);
	if (rc == LTFS_E_CONFIG)
		ltfs_err_prefix(err, "lease: the bucket's store does not honor conditional writes, "
				     "so it cannot elect a primary safely (use a static primary "
				     "with replica-of instead)");
	else if (rc < 0)
		ltfs_err_prefix(err, "lease: probing conditional writes");
	return rc;
}

void cluster_lease_defaults(struct cluster_lease_opts *o)
{
	if (!o->ttl_ms)
		o->ttl_ms = LEASE_TTL_DEFAULT;
	if (!o->renew_ms)
		o->renew_ms = o->ttl_ms / 3;
}

int cl_lease_start(struct cluster *c, struct s3 *s3, const struct cluster_lease_opts *opts,
		   struct ltfs_err *err)
{
	struct cluster_lease_opts o = *opts;
	struct cl_lease *l;
	int rc;

	cluster_lease_defaults(&o);
	if (o.ttl_ms < LEASE_TTL_MIN || o.ttl_ms > 3600000)
		return ltfs_err_set(err, LTFS_E_CONFIG, "lease.ttl: %u ms is outside 2s..1h", o.ttl_ms);
	if (o.renew_ms < 100 || o.renew_ms > o.ttl_ms / 2)
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "lease.renew-interval: %u ms must be at least 100ms and at most "
				    "half the TTL (%u ms)", o.renew_ms, o.ttl_ms);
	if (!o.advertise_url || (strncmp(o.advertise_url, "http://", 7) != 0 &&
				 strncmp(o.advertise_url, "https://", 8) != 0))
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "lease: advertise-url '%s': want this node's URL as the others "
				    "reach it, http://HOST:PORT",
				    o.advertise_url ? o.advertise_url : "");
	if (strlen(o.advertise_url) >= URL_MAX)
		return ltfs_err_set(err, LTFS_E_CONFIG, "advertise-url is too long");
	l = calloc(1, sizeof(*l));
	if (!l)
		return ltfs_err_set(err, -ENOMEM, NULL);
	l->c = c;
	l->s3 = s3;
	l->ttl_ms = o.ttl_ms;
	l->renew_ms = o.renew_ms;
	/* the holder stops this much before its TTL; others poll this often */
	l->margin_ms = o.ttl_ms / 10 < 100 ? 100 : o.ttl_ms / 10 > 500 ? 500 : o.ttl_ms / 10;
	l->poll_ms = l->margin_ms;
	l->candidate = o.candidate;
	cl_hex16(fs_node_id(c->fs), l->node);
	snprintf(l->url, sizeof(l->url), "%s", o.advertise_url);
	while (strlen(l->url) && l->url[strlen(l->url) - 1] == '/')
		l->url[strlen(l->url) - 1] = '\0';
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	c->lease = l;
	rc = s3_key(s3, l->key, LEASE_KEY) < 0 ? ltfs_err_set(err, LTFS_E_LIMIT, "lease key too long")
					      : s3_conn_open(s3, &l->conn, err);
	if (rc == 0)
		rc = probe(l, err);
	if (rc == 0)
		rc = cl_node_register(l, err);
	if (rc == 0 && pthread_create(&l->thread, NULL, lease_main, l) != 0)
		rc = ltfs_err_set(err, -EAGAIN, "cannot start the lease thread");
	if (rc == 0) {
		l->started = true;
		ltfs_info(c->log, "lease", "s3://%s/%s: node %s, %s, TTL %lld ms", s3_bucket(s3),
			  l->key, l->node, l->candidate ? "candidate" : "never a candidate",
			  (long long)l->ttl_ms);
	}
	return rc;
}

void cl_lease_stop_thread(struct cluster *c)
{
	struct cl_lease *l = c->lease;

	if (!l || !l->started)
		return;
	pthread_mutex_lock(&c->mu);
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&c->mu);
	pthread_join(l->thread, NULL);
	l->started = false;
}

void cl_lease_stop(struct cluster *c)
{
	struct cl_lease *l = c->lease;
	struct ltfs_err err = { 0 };

	if (!l)
		return;
	cl_lease_stop_thread(c);
	pthread_mutex_lock(&l->mu);
	if (l->held) {
		/* marked released rather than deleted: some stores ignore a
		 * conditional DELETE, and the epoch must survive */
		l->doc.released = true;
		l->doc.handoff[0] = '\0';
		if (l->valid_until > cl_mono_ms() && lease_put(l, &l->doc, false, &err) == 0)
			ltfs_info(c->log, "lease", "released the lease of epoch %llu",
				  (unsigned long long)l->doc.epoch);
		else if (err.code < 0)
			ltfs_warn(c->log, "lease", "releasing the lease: %s (others wait for its TTL)",
				  err.msg);
		l->held = false;
	}
	if (l->conn)
		cl_node_unregister(l);
	pthread_mutex_unlock(&l->mu);
	doc_clear(&l->doc);
	s3_conn_free(l->conn);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	free(l);
	c->lease = NULL;
}

/* ---- what a demoted primary leaves behind --------------------------------------- */

struct unpublished {
	struct cluster *c;
	const struct lease_doc *d;
	uint64_t total;
};

static void note_db(void *ctx, const struct fs_db_info *info)
{
	struct unpublished *u = ctx;
	struct lease_head *h = head_find(u->d, info->name);
	uint64_t head = h ? h->txid : 0;

	if (info->txid <= head)
		return;
	u->total += info->txid - head;
	ltfs_warn(u->c->log, "lease",
		  "'%s': TXIDs %llu..%llu were committed here but never published to the bucket; "
		  "they survive only if the new primary received them",
		  info->name, (unsigned long long)head + 1, (unsigned long long)info->txid);
}

void cl_note_unpublished(struct cluster *c, const struct lease_doc *d)
{
	struct unpublished u = { .c = c, .d = d };

	fs_db_foreach(c->fs, note_db, &u);
	pthread_mutex_lock(&c->mu);
	c->unpublished_txids += u.total;
	pthread_mutex_unlock(&c->mu);
}

/* ---- ltfs promote: the local node's part ----------------------------------------- */

int cl_promote_self(struct cluster *c, struct ltfs_err *err)
{
	struct cl_lease *l = c->lease;
	char url[URL_MAX + 16], body[64];
	struct ltfs_buf answer;
	int64_t until;
	long status;
	bool serving;
	int rc;

	if (!l)
		return ltfs_err_set(err, LTFS_E_STATE, "this node does not use a lease (lease: s3)");
	if (!l->candidate)
		return ltfs_err_set(err, LTFS_E_STATE, "this node is not a candidate (candidate: false)");
	pthread_mutex_lock(&c->mu);
	serving = c->serving;
	snprintf(url, sizeof(url), "%s/v1/handoff", c->replica_of);
	rc = c->replica_of[0] ? 0 : -EAGAIN;
	pthread_mutex_unlock(&c->mu);
	if (serving)
		return 0;
	if (rc < 0)
		return ltfs_err_set(err, -EAGAIN, "no primary is known yet");
	snprintf(body, sizeof(body), "{\"node\":\"%s\"}", l->node);
	ltfs_buf_init(&answer, 4096);
	rc = cluster_http_post(url, c->token, body, &answer, &status, err);
	if (rc == 0 && status != 200)
		rc = ltfs_err_set(err, -EIO, "%s answered %ld: %.*s", url, status, (int)answer.len,
				  answer.data ? (const char *)answer.data : "");
	ltfs_buf_release(&answer);
	if (rc < 0)
		return rc;
	cl_lease_poke(c);
	until = cl_mono_ms() + l->ttl_ms;
	pthread_mutex_lock(&c->mu);
	while (!c->serving && !c->stopping && cl_mono_ms() < until)
		cl_wait(c, 50);
	serving = c->serving;
	pthread_mutex_unlock(&c->mu);
	if (!serving)
		return ltfs_err_set(err, -ETIMEDOUT, "the primary handed over, but this node did not "
						     "open for writes within a TTL");
	return 0;
}
