/*
 * mount.c - open the data dir, mount, serve, unmount.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "fs/fs_int.h"

void fs_default_data_dir(const char *mountpoint, char *out, size_t n)
{
	size_t len = strlen(mountpoint);

	while (len > 1 && mountpoint[len - 1] == '/')
		len--;
	snprintf(out, n, "%.*s.ltfs", (int)len, mountpoint);
}

/* a == b, or one inside the other */
static bool nested(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t l = la < lb ? la : lb;

	if (strncmp(a, b, l) != 0)
		return false;
	if (la == lb)
		return true;
	return (la > lb ? a[l] : b[l]) == '/' || l == 1;
}

static int mkdir_p(const char *path)
{
	char tmp[FS_PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int load_node_id(struct fs *fs, struct ltfs_err *err)
{
	char buf[64] = { 0 };
	int fd = openat(fs->data_fd, "node", O_RDONLY | O_CLOEXEC);

	if (fd >= 0) {
		ssize_t r = read(fd, buf, sizeof(buf) - 1);

		close(fd);
		if (r > 0 && sscanf(buf, "%16llx", (unsigned long long *)&fs->node_id) == 1 &&
		    fs->node_id)
			return 0;
	}
	if (getrandom(&fs->node_id, sizeof(fs->node_id), 0) != sizeof(fs->node_id))
		return ltfs_err_set(err, -EIO, "getrandom failed");
	fs->node_id |= 1; /* never 0, which means "unset" in LTX */
	snprintf(buf, sizeof(buf), "%016llx\n", (unsigned long long)fs->node_id);
	fd = openat(fs->data_fd, "node.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, buf, strlen(buf)) != (ssize_t)strlen(buf) ||
	    fsync(fd) < 0 || renameat(fs->data_fd, "node.tmp", fs->data_fd, "node") < 0) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		return ltfs_err_set(err, -e, "'%s/node': %s", fs->data_dir, strerror(e));
	}
	close(fd);
	return 0;
}

/* Databases are recovered and verified on a few threads at once. */
struct loader {
	struct fs *fs;
	char **names;
	struct fs_db **dbs;
	int *rcs;
	struct ltfs_err *errs;
	size_t n;
	size_t next; /* atomic */
};

static void *load_worker(void *arg)
{
	struct loader *l = arg;
	size_t i;

	while ((i = __atomic_fetch_add(&l->next, 1, __ATOMIC_SEQ_CST)) < l->n)
		l->rcs[i] = fs_db_load(l->fs, l->names[i], &l->dbs[i], &l->errs[i]);
	return NULL;
}

static int load_databases(struct fs *fs, struct ltfs_err *err)
{
	struct loader l = { .fs = fs };
	pthread_t threads[8];
	size_t cap = 0, nthreads = 0;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	struct dirent *de;
	DIR *d = fs_opendir_at(fs->dbs_fd);
	int rc = 0;

	if (!d)
		return ltfs_err_set(err, -errno, "'%s/dbs': %s", fs->data_dir, strerror(errno));
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (l.n >= FS_MAX_DBS) {
			rc = ltfs_err_set(err, LTFS_E_LIMIT, "more than %d databases in '%s/dbs'",
					  FS_MAX_DBS, fs->data_dir);
			break;
		}
		if (l.n == cap) {
			char **p;

			cap = cap ? cap * 2 : 16;
			p = realloc(l.names, cap * sizeof(*p));
			if (!p) {
				rc = ltfs_err_set(err, -ENOMEM, NULL);
				break;
			}
			l.names = p;
		}
		if (!(l.names[l.n] = strdup(de->d_name)))
			rc = ltfs_err_set(err, -ENOMEM, NULL);
		else
			l.n++;
	}
	closedir(d);
	if (rc == 0 && l.n > 0) {
		l.dbs = calloc(l.n, sizeof(*l.dbs));
		l.rcs = calloc(l.n, sizeof(*l.rcs));
		l.errs = calloc(l.n, sizeof(*l.errs));
		fs->dbs = calloc(l.n, sizeof(*fs->dbs));
		if (!l.dbs || !l.rcs || !l.errs || !fs->dbs)
			rc = ltfs_err_set(err, -ENOMEM, NULL);
	}
	if (rc == 0 && l.n > 0) {
		size_t want = cpus > 1 ? (size_t)cpus : 1;

		if (want > l.n)
			want = l.n;
		if (want > sizeof(threads) / sizeof(threads[0]))
			want = sizeof(threads) / sizeof(threads[0]);
		for (; nthreads < want; nthreads++)
			if (pthread_create(&threads[nthreads], NULL, load_worker, &l) != 0)
				break;
		load_worker(&l); /* this thread helps too */
		for (size_t i = 0; i < nthreads; i++)
			pthread_join(threads[i], NULL);
	}
	for (size_t i = 0; i < l.n; i++) {
		struct fs_db *db = l.dbs ? l.dbs[i] : NULL;

		if (rc == 0 && l.rcs[i] < 0) {
			rc = l.rcs[i];
			*err = l.errs[i];
		}
		if (!db)
			continue;
		if (rc < 0) {
			fs_db_free(db);
			continue;
		}
		fs->dbs[fs->ndbs++] = db;
		db->hist_txid = db->txid; /* recovery recorded everything */
		if (db->db_fd >= 0) {
			db->node = fs_node_new(fs, db->name, FS_DB, db);
			if (!db->node)
				rc = ltfs_err_set(err, -ENOMEM, NULL);
		}
		ltfs_info(fs->log, "fs", "'%s': txid %llu, %u pages, checksum %016llx%s",
			  db->name, (unsigned long long)db->txid, db->commit,
			  (unsigned long long)db->checksum,
			  db->broken ? " (NOT SERVED: see above)" : db->db_fd < 0 ? " (deleted)" : "");
	}
	for (size_t i = 0; i < l.n; i++)
		free(l.names[i]);
	free(l.names);
	free(l.dbs);
	free(l.rcs);
	free(l.errs);
	return rc;
}

/* Files half received when the last run ended are of no use; spares are. */
static void clear_staging(struct fs *fs)
{
	DIR *d = fs_opendir_at(fs->staging_fd);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' && !fs_spare_adopt(fs, de->d_name))
			unlinkat(fs->staging_fd, de->d_name, 0);
	closedir(d);
}

/*
 * A mount left by a crashed run answers ENOTCONN: detach it. statfs always
 * reaches the daemon (stat may be answered from the kernel's cache).
 */
static int clean_stale_mount(const char *mountpoint, struct ltfs_log *log,
			     struct ltfs_err *err)
{
	struct statvfs sv;

	if (statvfs(mountpoint, &sv) == 0 || errno != ENOTCONN)
		return 0;
	ltfs_warn(log, "fs", "'%s' is a stale mount of a crashed run: unmounting it", mountpoint);
	if (umount2(mountpoint, MNT_DETACH) < 0)
		return ltfs_err_set(err, -errno, "unmount stale '%s': %s", mountpoint,
				    strerror(errno));
	return 0;
}

int fs_open(struct fs **out, const struct fs_config *cfg, struct ltfs_err *err)
{
	char mnt[FS_PATH_MAX], data[FS_PATH_MAX];
	struct fs *fs;
	int rc;

	*out = NULL;
	rc = clean_stale_mount(cfg->mountpoint, cfg->log, err);
	if (rc < 0)
		return rc;
	if (!realpath(cfg->mountpoint, mnt))
		return ltfs_err_set(err, -errno, "mount dir '%s': %s", cfg->mountpoint,
				    errno == ENOTCONN ? "stale mount (run 'ltfs mount' again to clean it up)"
						      : strerror(errno));
	rc = mkdir_p(cfg->data_dir);
	if (rc < 0)
		return ltfs_err_set(err, rc, "data dir '%s': %s", cfg->data_dir, strerror(-rc));
	if (!realpath(cfg->data_dir, data))
		return ltfs_err_set(err, -errno, "data dir '%s': %s", cfg->data_dir, strerror(errno));
	if (nested(mnt, data))
		return ltfs_err_set(err, LTFS_E_CONFIG,
				    "data dir '%s' and mount dir '%s' must be separate (not the same, not one inside the other)",
				    data, mnt);
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return ltfs_err_set(err, -ENOMEM, NULL);
	fs->cfg = *cfg;
	fs->log = cfg->log;
	fs->data_fd = fs->tree_fd = fs->dbs_fd = fs->staging_fd = -1;
	snprintf(fs->mountpoint, sizeof(fs->mountpoint), "%s", mnt);
	snprintf(fs->data_dir, sizeof(fs->data_dir), "%s", data);
	pthread_mutex_init(&fs->lock, NULL);
	pthread_cond_init(&fs->apply_cv, NULL);
	pthread_mutex_init(&fs->opener_mu, NULL);
	fs->opener_sock = -1;
	fs_spares_init(&fs->spares);
#ifdef LTFS_FAULTS
	{
		const char *f = getenv("LTFS_FAULT");
		char *colon;

		snprintf(fs->fault, sizeof(fs->fault), "%s", f ? f : "");
		fs->fault_always = true;
		if ((colon = strchr(fs->fault, ':')) != NULL) {
			*colon = '\0';
			fs->fault_left = (int)strtol(colon + 1, NULL, 10);
			fs->fault_always = false;
		}
		if (fs->fault[0])
			ltfs_warn(fs->log, "fs", "fault injection: '%s' fails %s", fs->fault,
				  fs->fault_always ? "always" : colon + 1);
	}
#endif
	fs->data_fd = open(data, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fs->data_fd < 0 ||
	    (mkdirat(fs->data_fd, "tree", 0755) < 0 && errno != EEXIST) ||
	    (mkdirat(fs->data_fd, "dbs", 0755) < 0 && errno != EEXIST) ||
	    (fs->tree_fd = openat(fs->data_fd, "tree", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (fs->dbs_fd = openat(fs->data_fd, "dbs", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (mkdirat(fs->data_fd, "staging", 0755) < 0 && errno != EEXIST) ||
	    (fs->staging_fd = openat(fs->data_fd, "staging", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = ltfs_err_set(err, -errno, "data dir '%s': %s", data, strerror(errno));
		goto fail;
	}
	clear_staging(fs);
	rc = load_node_id(fs, err);
	if (rc == 0)
		rc = fs_nodes_init(fs) < 0 ? ltfs_err_set(err, -ENOMEM, NULL) : 0;
	if (rc == 0)
		rc = fs_writer_start(fs) < 0 ? ltfs_err_set(err, -EAGAIN, "cannot start the writer thread") : 0;
	if (rc == 0)
		rc = load_databases(fs, err);
	if (rc < 0)
		goto fail;
	*out = fs;
	return 0;
fail:
	fs_close(fs);
	return rc;
}

/*
 * A live FUSE mount at the same place is somebody else's: refuse. Any other
 * file system there (a bind mount, a container volume, an emptyDir shared
 * with a sidecar) is what ltfs mounts over. The last line naming the place
 * is the mount on top.
 */
static int refuse_live_mount(struct fs *fs, struct ltfs_err *err)
{
	char line[8192];
	bool mounted = false;
	FILE *f = fopen("/proc/self/mountinfo", "r");

	while (f && fgets(line, sizeof(line), f)) {
		char mp[FS_PATH_MAX], type[64];
		const char *sep = strstr(line, " - ");

		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 &&
		    strcmp(mp, fs->mountpoint) == 0)
			mounted = sep && sscanf(sep + 3, "%63s", type) == 1 &&
				  strncmp(type, "fuse", 4) == 0;
	}
	if (f)
		fclose(f);
	if (mounted)
		return ltfs_err_set(err, -EBUSY, "'%s' is already mounted", fs->mountpoint);
	return 0;
}

int fs_mount(struct fs *fs, struct ltfs_err *err)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	char opts[256];
	int rc;

	rc = refuse_live_mount(fs, err);
	if (rc < 0)
		return rc;
	snprintf(opts, sizeof(opts), "fsname=ltfs,subtype=ltfs%s",
		 fs->cfg.allow_other ? ",allow_other" : "");
	if (fuse_opt_add_arg(&args, "ltfs") != 0 || fuse_opt_add_arg(&args, "-o") != 0 ||
	    fuse_opt_add_arg(&args, opts) != 0 ||
	    (fs->cfg.debug && fuse_opt_add_arg(&args, "-d") != 0)) {
		fuse_opt_free_args(&args);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	fs->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	fuse_opt_free_args(&args);
	if (!fs->se)
		return ltfs_err_set(err, -EIO, "cannot create the FUSE session (is /dev/fuse available?)");
	if (fuse_session_mount(fs->se, fs->mountpoint) != 0) {
		fuse_session_destroy(fs->se);
		fs->se = NULL;
		return ltfs_err_set(err, -EIO, "cannot mount '%s' (see the message above; /dev/fuse and CAP_SYS_ADMIN are needed)",
				    fs->mountpoint);
	}
	__atomic_store_n(&fs->mounted, true, __ATOMIC_SEQ_CST);
	return 0;
}

/* fs_stop() from another thread: only a signal gets the loop's waiting
 * thread out of its wait (the flag alone is read once it wakes). */
#define FS_WAKE_SIGNAL SIGUSR2

static void on_wake(int sig)
{
	(void)sig;
}

int fs_run(struct fs *fs, struct ltfs_err *err)
{
	struct fuse_loop_config *cfg;
	struct sigaction sa = { .sa_handler = on_wake };
	int rc;

	sigemptyset(&sa.sa_mask);
	if (fuse_set_signal_handlers(fs->se) != 0 || sigaction(FS_WAKE_SIGNAL, &sa, NULL) != 0)
		return ltfs_err_set(err, -EIO, "cannot install signal handlers");
	fs->run_thread = pthread_self();
	__atomic_store_n(&fs->running, true, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&fs->stopping, __ATOMIC_SEQ_CST))
		fuse_session_exit(fs->se); /* asked before the loop began */
	cfg = fuse_loop_cfg_create();
	if (!cfg) {
		fuse_remove_signal_handlers(fs->se);
		return ltfs_err_set(err, -ENOMEM, NULL);
	}
	fuse_loop_cfg_set_max_threads(cfg, fs->cfg.max_threads ? fs->cfg.max_threads : 16);
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	rc = fuse_session_loop_mt(fs->se, cfg);
	__atomic_store_n(&fs->running, false, __ATOMIC_SEQ_CST);
	/* Nobody answers requests now: unmount at once, which also fails
	 * those still waiting (an app's, or a replica apply's own open of a
	 * file in the mount), rather than at fs_close(), after the threads
	 * that may be waiting are joined. */
	if (__atomic_exchange_n(&fs->mounted, false, __ATOMIC_SEQ_CST))
		fuse_session_unmount(fs->se);
	fuse_loop_cfg_destroy(cfg);
	fuse_remove_signal_handlers(fs->se);
	if (rc < 0)
		return ltfs_err_set(err, rc, "fuse loop: %s", strerror(-rc));
	return 0;
}

const char *fs_mountpoint(struct fs *fs)
{
	return fs->mountpoint;
}

void fs_stop(struct fs *fs)
{
	__atomic_store_n(&fs->stopping, true, __ATOMIC_SEQ_CST);
	if (fs->se)
		fuse_session_exit(fs->se);
	if (__atomic_load_n(&fs->running, __ATOMIC_SEQ_CST) &&
	    !pthread_equal(pthread_self(), fs->run_thread))
		pthread_kill(fs->run_thread, FS_WAKE_SIGNAL);
}

void fs_close(struct fs *fs)
{
	if (!fs)
		return;
	if (fs->se) {
		if (__atomic_load_n(&fs->mounted, __ATOMIC_SEQ_CST))
			fuse_session_unmount(fs->se);
		fuse_session_destroy(fs->se);
	}
	fs_opener_stop(fs); /* after the session: an open it waits on has failed */
	fs_writer_stop(fs); /* writes what is queued */
	for (size_t i = 0; i < fs->ndbs; i++)
		fs_db_free(fs->dbs[i]); /* syncs what is pending */
	free(fs->dbs);
	fs_nodes_free(fs);
	if (fs->tree_fd >= 0)
		close(fs->tree_fd);
	if (fs->dbs_fd >= 0)
		close(fs->dbs_fd);
	if (fs->staging_fd >= 0)
		close(fs->staging_fd);
	if (fs->data_fd >= 0)
		close(fs->data_fd);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->opener_mu);
	pthread_cond_destroy(&fs->apply_cv);
	fs_spares_destroy(&fs->spares);
	free(fs);
}

void fs_set_commit_hook(struct fs *fs, fs_commit_fn fn, void *ctx)
{
	pthread_mutex_lock(&fs->lock);
	fs->on_commit = fn;
	fs->on_commit_ctx = ctx;
	pthread_mutex_unlock(&fs->lock);
}

void fs_set_commit_wait(struct fs *fs, fs_commit_wait_fn fn, void *ctx)
{
	pthread_mutex_lock(&fs->lock);
	fs->commit_wait = fn;
	fs->commit_wait_ctx = ctx;
	pthread_mutex_unlock(&fs->lock);
}

void fs_set_role(struct fs *fs, enum fs_role role, const char *primary_url)
{
	pthread_mutex_lock(&fs->lock);
	fs->role = role;
	snprintf(fs->primary_url, sizeof(fs->primary_url), "%s",
		 primary_url ? primary_url : "");
	pthread_mutex_unlock(&fs->lock);
}

int fs_db_position(struct fs *fs, const char *name, uint64_t *txid,
		   uint64_t *checksum)
{
	struct fs_db *db;

	pthread_mutex_lock(&fs->lock);
	db = fs_db_find(fs, name, false);
	if (db) {
		pthread_mutex_lock(&db->mu);
		*txid = db->txid;
		*checksum = db->checksum;
		pthread_mutex_unlock(&db->mu);
	}
	pthread_mutex_unlock(&fs->lock);
	return db ? 0 : -ENOENT;
}

void fs_set_shipped(struct fs *fs, const char *name, uint64_t txid)
{
	struct fs_db *db;

	pthread_mutex_lock(&fs->lock);
	db = fs_db_find(fs, name, false);
	if (db) {
		pthread_mutex_lock(&db->hist_mu);
		if (txid > db->shipped_txid)
			db->shipped_txid = txid;
		pthread_mutex_unlock(&db->hist_mu);
	}
	pthread_mutex_unlock(&fs->lock);
}
