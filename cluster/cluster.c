/*
 * cluster.c - start and stop a node's cluster side, and the commit hook
 * that wakes the replication streams.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cluster/cluster_int.h"

/* Every commit (fs calls this with the database locked: only a counter). */
static void on_commit(void *ctx, const struct fs_commit_info *info)
{
	struct cluster *c = ctx;

	(void)info;
	pthread_mutex_lock(&c->mu);
	c->gen++;
	pthread_cond_broadcast(&c->commit_cv);
	pthread_mutex_unlock(&c->mu);
}

/*
 * sync: s3. A commit's request waits until the bucket holds its TXID (and,
 * with a lease, the lease publishes it). sync: replicas=N: until N replicas
 * have applied it (their acks, POST /v1/ack). A node that stops being the
 * primary, or whose uploads are stuck, can no longer make it safe: the
 * request fails, and SQLite reports the COMMIT as failed, so that no commit
 * is acknowledged that a failover may lose.
 */
static int on_commit_wait(void *ctx, const char *db, uint64_t txid)
{
	struct cluster *c = ctx;
	bool stuck = false;
	int rc = 0;

	pthread_mutex_lock(&c->mu);
	while (c->sync_replicas ? cl_acks_at(c, db, txid) < c->sync_replicas
				: cl_backup_remote_txid(c, db, &stuck) < txid) {
		bool lost = c->lease ? !c->serving : !fs_is_primary(c->fs);

		if (c->stopping) {
			rc = -ECANCELED;
			break;
		}
		if (lost || stuck) {
			rc = LTFS_E_NOT_PRIMARY;
			break;
		}
		cl_wait(c, 100);
	}
	pthread_mutex_unlock(&c->mu);
	if (rc < 0 && rc != -ECANCELED)
		ltfs_warn(c->log, "sync", "'%s': TXID %llu is not safe yet and this node is no "
					  "longer the primary: its COMMIT fails", db,
			  (unsigned long long)txid);
	return rc;
}

static int copy_setting(char *dst, size_t n, const char *src, const char *key,
			struct ltfs_err *err)
{
	if ((size_t)snprintf(dst, n, "%s", src ? src : "") >= n)
		return ltfs_err_set(err, LTFS_E_CONFIG, "%s is longer than %zu bytes", key, n - 1);
	return 0;
}

bool cl_is_primary(struct cluster *c)
{
	bool serving;

	if (!c->lease)
		return fs_is_primary(c->fs);
	pthread_mutex_lock(&c->mu);
	serving = c->serving;
	pthread_mutex_unlock(&c->mu);
	return serving && cl_lease_valid(c);
}

bool cluster_ready(struct cluster *c, bool *primary)
{
	bool p = cl_is_primary(c), ready;

	if (primary)
		*primary = p;
	pthread_mutex_lock(&c->mu);
	ready = p || c->ready;
	pthread_mutex_unlock(&c->mu);
	return ready;
}

bool cluster_is_candidate(struct cluster *c)
{
	return c->lease ? c->lease->candidate : !c->replica_of[0];
}

/* The proxy, and the URL /v1/info gives the other nodes' proxies. */
static int proxy_start(struct cluster *c, const struct cluster_proxy_opts *o,
		       struct ltfs_err *err)
{
	const char *a = o->addr;

	if (o->advertise_url && o->advertise_url[0]) {
		if (strncmp(o->advertise_url, "http://", 7) != 0)
			return ltfs_err_set(err, LTFS_E_CONFIG,
					    "proxy.advertise-url '%s': want http://HOST:PORT",
					    o->advertise_url);
		if (copy_setting(c->proxy_url, sizeof(c->proxy_url), o->advertise_url,
				 "proxy.advertise-url", err) < 0)
			return LTFS_E_CONFIG;
	} else if (strncmp(a, "0.0.0.0:", 8) == 0 || strncmp(a, "[::]:", 5) == 0 || a[0] == ':') {
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "proxy.addr %s needs proxy.advertise-url (how the other nodes "
				    "reach this proxy)", a);
	} else if ((size_t)snprintf(c->proxy_url, sizeof(c->proxy_url), "http://%s", a) >=
		   sizeof(c->proxy_url)) {
		return ltfs_err_set(err, LTFS_E_CONFIG, "proxy.addr is too long");
	}
	return cl_proxy_start(c, o, err);
}

int cluster_start(struct cluster **out, const struct cluster_config *cfg,
		  struct ltfs_err *err)
{
	struct cluster *c = calloc(1, sizeof(*c));
	bool lease = cfg->lease && cfg->lease->enabled;
	int rc;

	*out = NULL;
	if (!c)
		return ltfs_err_set(err, -ENOMEM, NULL);
	c->fs = cfg->fs;
	c->log = cfg->log;
	c->allow_run = cfg->allow_run;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	pthread_cond_init(&c->commit_cv, NULL);
	rc = copy_setting(c->addr, sizeof(c->addr),
			  cfg->http_addr ? cfg->http_addr : CLUSTER_DEFAULT_ADDR, "http.addr", err);
	if (rc == 0)
		rc = copy_setting(c->token, sizeof(c->token), cfg->token, "http.token", err);
	if (rc == 0)
		rc = copy_setting(c->replica_of, sizeof(c->replica_of), cfg->replica_of,
				  "replica-of", err);
	if (rc == 0 && c->replica_of[0] && strncmp(c->replica_of, "http://", 7) != 0 &&
	    strncmp(c->replica_of, "https://", 8) != 0)
		rc = ltfs_err_set(err, LTFS_E_CONFIG,
				  "replica-of '%s': want the primary's URL, http://HOST:PORT",
				  c->replica_of);
	if (rc == 0) {
		size_t n = strlen(c->replica_of);

		while (n && c->replica_of[n - 1] == '/')
			c->replica_of[--n] = '\0';
	}
	if (rc == 0 && c->allow_run && !c->token[0])
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "allow-run needs a token (http.token or LTFS_TOKEN): "
						      "whoever reaches the port could run commands");
	if (rc == 0 && cfg->sync == CLUSTER_SYNC_REPLICAS && cfg->sync_replicas == 0)
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "sync: replicas=N needs N >= 1");
	if (rc == 0 && cfg->sync == CLUSTER_SYNC_S3 && !cfg->s3)
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "sync: s3 needs a bucket (--s3 or s3.url)");
	if (rc == 0 && lease && (!cfg->s3 || c->replica_of[0] || strcmp(c->addr, "off") == 0))
		rc = ltfs_err_set(err, LTFS_E_CONFIG, "lease: s3 %s",
				  !cfg->s3 ? "needs a bucket (--s3 or s3.url)"
				  : c->replica_of[0] ? "and replica-of exclude each other: the lease "
						       "names the primary"
						     : "needs the HTTP server (http.addr is off)");
	if (rc == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		rc = ltfs_err_set(err, -ENOMEM, "curl_global_init failed");
	if (rc == 0) {
		fs_set_commit_hook(c->fs, on_commit, c);
		c->sync_replicas = cfg->sync == CLUSTER_SYNC_REPLICAS ? cfg->sync_replicas : 0;
		if (cfg->sync != CLUSTER_SYNC_NONE)
			fs_set_commit_wait(c->fs, on_commit_wait, c);
		if (!c->replica_of[0] && !lease)
			fs_set_role(c->fs, FS_ROLE_PRIMARY, NULL);
		rc = strcmp(c->addr, "off") == 0 ? 0 : cl_http_start(c, err);
	}
	if (rc == 0 && lease)
		rc = cl_lease_start(c, cfg->s3, cfg->lease, err);
	if (rc == 0 && (c->replica_of[0] || lease))
		rc = cl_client_start(c, err);
	if (rc == 0 && cfg->s3) {
		struct cluster_backup_opts o = { .interval_ms = -1 };

		rc = cl_backup_start(c, cfg->s3, cfg->backup ? cfg->backup : &o, err);
	}
	if (rc == 0 && cfg->proxy && cfg->proxy->addr && cfg->proxy->addr[0])
		rc = proxy_start(c, cfg->proxy, err);
	if (rc < 0) {
		cluster_stop(c);
		return rc;
	}
	*out = c;
	return 0;
}

void cluster_stop(struct cluster *c)
{
	if (!c)
		return;
	cl_proxy_stop(c);    /* no request may wait on what stops below */
	pthread_mutex_lock(&c->mu);
	c->stopping = true;
	cl_wake(c);
	/* let the streams send END before the server closes their sockets */
	for (int i = 0; i < 100 && c->streams > 0; i++)
		cl_wait(c, 10);
	pthread_mutex_unlock(&c->mu);
	cl_lease_stop_thread(c);
	cl_client_stop(c);
	fs_history_drain(c->fs); /* the last commits into the history it reads */
	cl_backup_stop(c);   /* ships and publishes what is left */
	cl_lease_stop(c);    /* then releases the lease */
	cl_http_stop(c);
	fs_set_commit_hook(c->fs, NULL, NULL);
	fs_set_commit_wait(c->fs, NULL, NULL);
	cl_acks_clear(c);
	pthread_cond_destroy(&c->cv);
	pthread_cond_destroy(&c->commit_cv);
	pthread_mutex_destroy(&c->mu);
	free(c);
}
