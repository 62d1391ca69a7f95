/*
 * promote.c - what a node does between winning the lease and taking
 * writes: catch every database up to the heads the lease publishes (from
 * the bucket), then to the newest position any reachable node reports (a
 * replica may have received more of the old primary's stream than this
 * node), and only then open for writes. The client thread runs it; the
 * lease thread keeps renewing meanwhile.
 *
 * Nodes find each other through PREFIX/.ltfs/nodes/NODE.json, written by
 * each node at start and removed at a clean stop. An entry of a node that
 * died is only a URL that does not answer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cluster/cluster_int.h"

#define NODE_DOC_MAX 4096
#define PEERS_MAX 64
#define PEER_LTX_MAX (1ull << 30)   /* one catch-up file from a peer */
#define PEER_INFO_MS 1000           /* a peer that does not answer is skipped */

static int node_key(struct cl_lease *l, char key[S3_KEY_MAX])
{
	return s3_key(l->s3, key, ".ltfs/nodes/%s.json", l->node);
}

int cl_node_register(struct cl_lease *l, struct ltfs_err *err)
{
	struct s3_put_opts o = { .content_type = "application/json" };
	char key[S3_KEY_MAX], *body;
	json_t *doc;
	int rc;

	if (node_key(l, key) < 0)
		return ltfs_err_set(err, LTFS_E_LIMIT, "node key too long");
	doc = json_pack("{s:s, s:s, s:b}", "node", l->node, "url", l->url, "candidate", l->candidate);
	body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (!body)
		return ltfs_err_set(err, -ENOMEM, NULL);
	rc = s3_put(l->conn, key, body, strlen(body), &o, NULL, err);
	free(body);
	return rc;
}

void cl_node_unregister(struct cl_lease *l)
{
	char key[S3_KEY_MAX];

	if (node_key(l, key) == 0)
		s3_delete(l->conn, key, NULL);
}

/* ---- the other nodes' positions -------------------------------------------- */

struct peers {
	struct cl_lease *l;
	char key[PEERS_MAX][S3_KEY_MAX];
	size_t n;
};

static int on_node(void *ctx, const struct s3_object *o)
{
	struct peers *p = ctx;
	size_t len = strlen(o->key);

	if (p->n < PEERS_MAX && len > 5 && strcmp(o->key + len - 5, ".json") == 0 &&
	    !strstr(o->key, p->l->node))
		snprintf(p->key[p->n++], S3_KEY_MAX, "%s", o->key);
	return 0;
}

/* A peer's URL from its registry entry; 0 or < 0. */
static int peer_url(struct s3_conn *conn, const char *key, char url[URL_MAX])
{
	struct ltfs_err err = { 0 };
	struct ltfs_buf b;
	json_t *doc;
	const char *u;
	int rc;

	ltfs_buf_init(&b, NODE_DOC_MAX);
	rc = s3_get(conn, key, 0, 0, &b, NULL, &err);
	doc = rc == 0 ? json_loadb(b.data ? (const char *)b.data : "", b.len, 0, NULL) : NULL;
	u = json_string_value(json_object_get(doc, "url"));
	rc = u && strlen(u) < URL_MAX && (strncmp(u, "http://", 7) == 0 ||
					   strncmp(u, "https://", 8) == 0) ? 0 : -EINVAL;
	if (rc == 0)
		snprintf(url, URL_MAX, "%s", u);
	json_decref(doc);
	ltfs_buf_release(&b);
	return rc;
}

/* Fetch what a peer has of db past our position, and apply it. */
static int fetch_from_peer(struct cluster *c, const char *url, const char *db, uint64_t from,
			   uint64_t to, struct ltfs_err *err)
{
	char req[URL_MAX + FRAME_NAME_MAX * 3 + 64], stage[64];
	struct ltfs_buf b, esc;
	long status;
	int fd, rc;

	ltfs_buf_init(&esc, FRAME_NAME_MAX * 3 + 1);
	if (cl_url_encode(&esc, db, true) < 0 || ltfs_buf_append(&esc, "", 1) < 0)
		return ltfs_err_set(err, -ENOMEM, NULL);
	snprintf(req, sizeof(req), "%s/v1/db/%s/ltx?from=%llu&to=%llu", url, (char *)esc.data,
		 (unsigned long long)from, (unsigned long long)to);
	ltfs_buf_release(&esc);
	ltfs_buf_init(&b, PEER_LTX_MAX);
	rc = cluster_http_get(req, c->token, &b, &status, err);
	if (rc == 0 && status != 200)
		rc = ltfs_err_set(err, -EIO, "%s answered %ld", req, status);
	fd = rc == 0 ? fs_stage_create(c->fs, stage, err) : -1;
	if (rc == 0 && fd < 0)
		rc = fd;
	if (rc == 0) {
		rc = ltx_pwrite_full(fd, b.data, b.len, 0);
		if (rc < 0) {
			ltfs_err_set(err, rc, "staging '%s': %s", stage, ltfs_strerror(rc));
			fs_stage_discard(c->fs, stage);
		} else {
			rc = fs_apply_ltx(c->fs, db, fd, stage, NULL, NULL, err);
		}
	}
	if (fd >= 0)
		close(fd);
	ltfs_buf_release(&b);
	return rc;
}

/* Ask one peer for its positions; take what it has ahead of us. */
static void catch_up_from(struct cluster *c, const char *url)
{
	struct ltfs_err err = { 0 };
	char req[URL_MAX + 16];
	struct ltfs_buf b;
	json_t *info, *dbs, *d;
	long status;
	size_t i;

	snprintf(req, sizeof(req), "%s/v1/info", url);
	ltfs_buf_init(&b, 64u << 20);
	/* briefly: a paused or cut-off node must not delay the failover */
	if (cl_http_get_within(req, c->token, &b, &status, PEER_INFO_MS, &err) < 0 ||
	    status != 200) {
		/* gone, or not answering: nothing to take from it */
		if (err.code < 0)
			ltfs_info(c->log, "lease", "not catching up from %s: %s", url, err.msg);
		else
			ltfs_info(c->log, "lease", "not catching up from %s: it answered %ld", url,
				  status);
		ltfs_buf_release(&b);
		return;
	}
	info = json_loadb(b.data ? (const char *)b.data : "", b.len, 0, NULL);
	ltfs_buf_release(&b);
	dbs = json_object_get(info, "databases");
	json_array_foreach(dbs, i, d) {
		const char *name = json_string_value(json_object_get(d, "name"));
		uint64_t theirs, their_sum = 0, ours = 0, sum = 0;

		if (!name || cl_parse_hex64(json_string_value(json_object_get(d, "txid")), &theirs) < 0 ||
		    !json_is_true(json_object_get(d, "exists")) || fs_db_name_check(name, &err) < 0)
			continue;
		if (fs_db_position(c->fs, name, &ours, &sum) < 0)
			ours = 0;
		cl_parse_hex64(json_string_value(json_object_get(d, "checksum")), &their_sum);
		if (theirs == ours && ours > 0 && their_sum != sum)
			ltfs_warn(c->log, "lease", "'%s': %s is at TXID %llu too, with checksum %016llx "
						   "where this node has %016llx: keeping this node's",
				  name, url, (unsigned long long)ours, (unsigned long long)their_sum,
				  (unsigned long long)sum);
		if (theirs <= ours)
			continue;
		if (fetch_from_peer(c, url, name, ours + 1, theirs, &err) == 0)
			ltfs_info(c->log, "lease", "'%s': took TXIDs %llu..%llu from %s", name,
				  (unsigned long long)ours + 1, (unsigned long long)theirs, url);
		else
			ltfs_warn(c->log, "lease", "'%s': %s is ahead (TXID %llu) but its files do not "
						   "continue this node's: %s", name, url,
				  (unsigned long long)theirs, err.msg);
	}
	json_decref(info);
}

static void catch_up_peers(struct cluster *c, struct s3_conn *conn)
{
	struct ltfs_err err = { 0 };
	struct peers *p = calloc(1, sizeof(*p));
	char prefix[S3_KEY_MAX];

	if (!p)
		return;
	p->l = c->lease;
	if (s3_key(c->lease->s3, prefix, ".ltfs/nodes/") == 0 &&
	    s3_list(conn, prefix, on_node, p, &err) == 0) {
		for (size_t i = 0; i < p->n; i++) {
			char url[URL_MAX];

			if (peer_url(conn, p->key[i], url) == 0 && strcmp(url, c->lease->url) != 0)
				catch_up_from(c, url);
		}
	} else if (err.code < 0) {
		ltfs_warn(c->log, "lease", "listing the other nodes: %s", err.msg);
	}
	free(p);
}

/* ---- the promotion ------------------------------------------------------------ */

void cl_promote(struct cluster *c)
{
	struct ltfs_err err = { 0 };
	struct lease_doc d = { 0 };
	struct s3_conn *conn = NULL;
	uint64_t epoch = 0;
	int rc = cl_lease_heads(c, &d, &epoch);

	if (rc == 0)
		rc = s3_conn_open(c->lease->s3, &conn, &err);
	for (size_t i = 0; rc == 0 && i < d.nheads; i++)
		if (d.heads[i].txid)
			rc = cl_catch_up_db(c, conn, d.heads[i].name, d.heads[i].txid,
					    d.heads[i].checksum, &err);
	if (rc == 0)
		catch_up_peers(c, conn);
	s3_conn_free(conn);
	cl_lease_doc_free(&d);
	if (rc == 0)
		rc = cl_lease_open_writes(c, epoch);
	if (rc == LTFS_E_NOT_PRIMARY)
		return; /* lost meanwhile: the lease thread has said so */
	if (rc < 0) {
		ltfs_error(c->log, "lease", "cannot catch up with the bucket: %s; giving the lease "
					   "back", err.msg);
		cl_lease_resign(c, "the catch-up failed");
	}
}
