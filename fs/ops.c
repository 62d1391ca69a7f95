/*
 * ops.c - the FUSE low-level operations.
 *
 * Every operation replies exactly once, at its end, through reply_err() or
 * one fuse_reply_* call; helpers return 0 or a negative code. The inode
 * number is the struct fs_node pointer. Each open file gets its own
 * descriptor (a dup of the database's backing fd, or an open of the tree
 * file), so reads run without locks and a journal unlinked under an open
 * handle behaves as on any filesystem.
 *
 * Writes to a database and its journal and WAL go through db->mu, where the
 * commit logic of db.c watches them.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "fs/fs_int.h"

#define ATTR_TIMEOUT 1.0

struct dir_ent {
	char name[FS_NAME_MAX + 1];
	mode_t mode;
};

struct fs_handle {
	struct fs_node *node;
	int fd;                 /* own descriptor, -1 for synthetic files */
	struct dir_ent *ents;   /* directory listing */
	size_t nents;
	/* NAME-pos: the db's pos_seq at the last read (atomic), and a poll()
	 * waiting for the next position, listed in db->pollers (poll_mu) */
	uint64_t seen_seq;
	struct fuse_pollhandle *ph;
	struct fs_handle *poll_next;
};

static struct fs *req_fs(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct fs_node *ino_node(struct fs *fs, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? fs->root : (struct fs_node *)(uintptr_t)ino;
}

uint64_t fs_node_ino(struct fs *fs, struct fs_node *n)
{
	return n == fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

int fs_errno(int rc)
{
	if (rc >= 0)
		return 0;
	if (rc > -4096)
		return -rc;
	switch (rc) {
	case LTFS_E_NOT_PRIMARY:
		return EACCES;
	case LTFS_E_USAGE:
		return EINVAL;
	case LTFS_E_LIMIT:
		return EFBIG;
	default:
		return EIO;
	}
}

static void reply_err(fuse_req_t req, int rc)
{
	fuse_reply_err(req, fs_errno(rc));
}

bool fs_fault_hit(struct fs *fs, const char *op)
{
#ifdef LTFS_FAULTS
	int left;

	if (!fs->fault[0] || strcmp(fs->fault, op) != 0)
		return false;
	if (fs->fault_always)
		return true;
	left = __atomic_load_n(&fs->fault_left, __ATOMIC_SEQ_CST);
	while (left > 0 && !__atomic_compare_exchange_n(&fs->fault_left, &left, left - 1,
							false, __ATOMIC_SEQ_CST,
							__ATOMIC_SEQ_CST))
		;
	return left > 0;
#else
	(void)fs;
	(void)op;
	return false;
#endif
}

void fs_fault_stall(struct fs *fs, const char *op, long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (!fs_fault_hit(fs, op))
		return;
	ltfs_warn(fs->log, "fs", "injected stall: '%s' for %ld ms", op, ms);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

double fs_elapsed_s(const struct timespec *since)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - since->tv_sec) + (double)(now.tv_nsec - since->tv_nsec) / 1e9;
}

static const char *rel(const struct fs_node *n)
{
	return n->path[0] ? n->path : ".";
}

static bool is_db_kind(enum fs_kind k)
{
	return k == FS_DB || k == FS_JOURNAL || k == FS_WAL || k == FS_SHM;
}

/* Writes to database files are refused on a replica and on a database
 * that failed verification. */
static int check_writable(struct fs *fs, struct fs_db *db)
{
	if (!db)
		return 0;
	if (db->broken) {
		ltfs_error(fs->log, "fs", "'%s': refusing access: %s", db->name,
			   db->broken_msg);
		return -EIO;
	}
	if (!fs_write_allowed(fs))
		return -EACCES;
	return 0;
}

static void special_text(struct fs *fs, struct fs_node *n, char *out, size_t cap)
{
	switch (n->kind) {
	case FS_POS:
		pthread_mutex_lock(&n->db->mu);
		fs_db_pos_text(n->db, out);
		pthread_mutex_unlock(&n->db->mu);
		break;
	case FS_PRIMARY:
		snprintf(out, cap, "%s\n", fs->primary_url);
		break;
	case FS_LAG:
		snprintf(out, cap, "%+010lld\n", (long long)fs_lag_ms(fs));
		break;
	default:
		out[0] = '\0';
	}
}

static int node_stat(struct fs *fs, struct fs_node *n, struct stat *st)
{
	int rc = 0;

	memset(st, 0, sizeof(*st));
	switch (n->kind) {
	case FS_DIR:
	case FS_FILE:
		rc = fstatat(fs->tree_fd, rel(n), st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
		break;
	case FS_DB:
		rc = n->db->db_fd < 0 ? -ENOENT : fstat(n->db->db_fd, st) < 0 ? -errno : 0;
		break;
	case FS_JOURNAL:
	case FS_WAL:
	case FS_SHM:
		rc = fstatat(n->db->dirfd, fs_db_aux_name(n->kind), st, 0) < 0 ? -errno : 0;
		break;
	case FS_POS:
	case FS_PRIMARY:
	case FS_LAG: {
		char text[1100];
		struct timespec ts;

		special_text(fs, n, text, sizeof(text));
		clock_gettime(CLOCK_REALTIME, &ts);
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)strlen(text);
		st->st_mtim = ts;
		if (n->kind == FS_POS) {
			st->st_mtim.tv_sec = (time_t)(n->db->timestamp / 1000);
			st->st_mtim.tv_nsec = (long)(n->db->timestamp % 1000) * 1000000;
		}
		st->st_atim = st->st_ctim = st->st_mtim;
		break;
	}
	}
	st->st_ino = fs_node_ino(fs, n);
	return rc;
}

/* ---- name resolution -------------------------------------------------- */

static bool aux_exists(struct fs_db *db, enum fs_kind kind)
{
	return faccessat(db->dirfd, fs_db_aux_name(kind), F_OK, 0) == 0;
}

/*
 * Find or make the node for `path` (in directory `dir`, last component
 * `name`); fs->lock held. -ENOENT if nothing is there.
 */
static int resolve(struct fs *fs, struct fs_node *dir, const char *name,
		   const char *path, struct fs_node **out)
{
	struct fs_node *n = fs_node_find(fs, path);
	enum fs_kind kind;
	struct stat st;
	size_t blen;

	if (n) {
		/* a cached name for a tree entry may have gone from the data dir */
		if ((n->kind == FS_FILE || n->kind == FS_DIR) &&
		    fstatat(fs->tree_fd, rel(n), &st, AT_SYMLINK_NOFOLLOW) < 0) {
			fs_node_unhash(fs, n);
			fs_node_maybe_free(fs, n);
			return -ENOENT;
		}
		if ((n->kind == FS_JOURNAL || n->kind == FS_WAL || n->kind == FS_SHM ||
		     n->kind == FS_POS) &&
		    (n->db->db_fd < 0 || (n->kind != FS_POS && !aux_exists(n->db, n->kind))))
			return -ENOENT;
		*out = n;
		return 0;
	}
	if (dir == fs->root && strcmp(name, ".lag") == 0)
		kind = FS_LAG;
	else if (dir == fs->root && strcmp(name, ".primary") == 0)
		kind = fs->role == FS_ROLE_REPLICA && fs->primary_url[0] ? FS_PRIMARY : FS_FILE;
	else
		kind = fs_suffix_kind(name, &blen);

	if (kind == FS_LAG || kind == FS_PRIMARY) {
		n = fs_node_new(fs, path, kind, NULL);
		return n ? (*out = n, 0) : -ENOMEM;
	}
	if (kind != FS_FILE) {
		char base[FS_PATH_MAX];
		struct fs_db *db;

		snprintf(base, sizeof(base), "%.*s", (int)(strlen(path) - (strlen(name) - blen)), path);
		db = fs_db_find(fs, base, true);
		if (db && (kind == FS_POS || aux_exists(db, kind))) {
			n = fs_node_new(fs, path, kind, db);
			return n ? (*out = n, 0) : -ENOMEM;
		}
		if (db)
			return -ENOENT;
	}
	if (fstatat(fs->tree_fd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	n = fs_node_new(fs, path, S_ISDIR(st.st_mode) ? FS_DIR : FS_FILE, NULL);
	return n ? (*out = n, 0) : -ENOMEM;
}

static int make_path(struct fs_node *parent, const char *name, char *out)
{
	if (strlen(name) > FS_NAME_MAX)
		return -ENAMETOOLONG;
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	return fs_join_path(out, FS_PATH_MAX, parent->path, name);
}

static void fill_entry(struct fs *fs, struct fs_node *n, const struct stat *st,
		       struct fuse_entry_param *e)
{
	bool synthetic = n->kind == FS_POS || n->kind == FS_LAG || n->kind == FS_PRIMARY;

	memset(e, 0, sizeof(*e));
	e->ino = fs_node_ino(fs, n);
	e->generation = n->generation;
	e->attr = *st;
	e->attr_timeout = synthetic ? 0 : ATTR_TIMEOUT;
	e->entry_timeout = synthetic ? 0 : ATTR_TIMEOUT;
}

/* Resolve a name and fill its entry, counting the kernel's new lookup;
 * fs->lock held. */
static int entry_of(struct fs *fs, struct fs_node *dir, const char *name,
		    const char *path, struct fuse_entry_param *e)
{
	struct fs_node *n = NULL;
	struct stat st;
	int rc = resolve(fs, dir, name, path, &n);

	if (rc == 0)
		rc = node_stat(fs, n, &st);
	if (rc == 0) {
		n->nlookup++;
		fill_entry(fs, n, &st, e);
	}
	return rc;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	struct fs_node *dir = ino_node(fs, parent);
	char path[FS_PATH_MAX];
	struct fuse_entry_param e;
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = make_path(dir, name, path);
	if (rc == 0)
		rc = entry_of(fs, dir, name, path, &e);
	pthread_mutex_unlock(&fs->lock);
	if (rc < 0)
		reply_err(req, rc);
	else
		fuse_reply_entry(req, &e);
}

static void forget_one(struct fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs_node *n = ino_node(fs, ino);

	if (n == fs->root)
		return;
	n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
	fs_node_maybe_free(fs, n);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs *fs = req_fs(req);

	pthread_mutex_lock(&fs->lock);
	forget_one(fs, ino, nlookup);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	struct fs *fs = req_fs(req);

	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < count; i++)
		forget_one(fs, forgets[i].ino, forgets[i].nlookup);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = ino_node(fs, ino);
	struct stat st;
	int rc;

	(void)fi;
	pthread_mutex_lock(&fs->lock);
	rc = node_stat(fs, n, &st);
	pthread_mutex_unlock(&fs->lock);
	if (rc < 0)
		reply_err(req, rc);
	else
		fuse_reply_attr(req, &st, n->kind >= FS_POS ? 0 : ATTR_TIMEOUT);
}

/* ---- databases appearing ---------------------------------------------- */

/*
 * An empty tree file that SQLite starts using (page 1 written, or its
 * -journal/-wal created) becomes a database: its file moves to
 * DATA/dbs/NAME/database. fs->lock held.
 */
static int make_database(struct fs *fs, struct fs_node *n, struct ltfs_err *err)
{
	struct fs_db *db = fs_db_find(fs, n->path, false);
	bool fresh = db == NULL;
	int rc;

	if (fresh) {
		if (fs->ndbs >= FS_MAX_DBS)
			return ltfs_err_set(err, LTFS_E_LIMIT, "more than %d databases", FS_MAX_DBS);
		rc = fs_db_create(fs, n->path, &db, err);
		if (rc < 0)
			return rc;
	}
	if (renameat(fs->tree_fd, n->path, db->dirfd, "database") < 0) {
		rc = ltfs_err_set(err, -errno, "move '%s' into '%s': %s", n->path,
				  db->dir, strerror(errno));
		goto fail;
	}
	db->db_fd = openat(db->dirfd, "database", O_RDWR | O_CLOEXEC);
	if (db->db_fd < 0) {
		rc = ltfs_err_set(err, -errno, "open '%s/database': %s", db->dir,
				  strerror(errno));
		goto fail;
	}
	if (fresh && (rc = fs_db_register(fs, db, err)) < 0)
		goto fail;
	if (db->node && db->node != n) {
		struct fs_node *old = db->node;

		db->node = NULL;
		fs_node_maybe_free(fs, old);
	}
	n->kind = FS_DB;
	n->db = db;
	db->node = n;
	ltfs_info(fs->log, "fs", "'%s' is a database now", n->path);
	return 0;
fail:
	if (fresh)
		fs_db_free(db);
	return rc;
}

static bool file_empty(struct fs *fs, const char *path)
{
	struct stat st;

	return fstatat(fs->tree_fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       S_ISREG(st.st_mode) && st.st_size == 0;
}

/* The database a -journal/-wal/-shm name belongs to, converting an empty
 * tree file of the base name. fs->lock held. */
static struct fs_db *aux_owner(struct fs *fs, const char *path, const char *name,
			       size_t blen, struct ltfs_err *err)
{
	char base[FS_PATH_MAX];
	struct fs_db *db;
	struct fs_node *bn;

	snprintf(base, sizeof(base), "%.*s", (int)(strlen(path) - (strlen(name) - blen)), path);
	db = fs_db_find(fs, base, true);
	if (db)
		return db;
	if (!file_empty(fs, base))
		return NULL;
	bn = fs_node_find(fs, base);
	if (!bn) {
		bn = fs_node_new(fs, base, FS_FILE, NULL);
		if (!bn)
			return NULL;
	}
	if (make_database(fs, bn, err) < 0)
		return NULL;
	return bn->db;
}

/* ---- open, create, read, write ----------------------------------------- */

static int handle_new(struct fs_node *n, int fd, struct fs_handle **out)
{
	struct fs_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	h->node = n;
	h->fd = fd;
	*out = h;
	return 0;
}

static int open_node(struct fs *fs, struct fs_node *n, int flags,
		     struct fs_handle **out)
{
	int fd = -1, rc;

	/* a replica applying to a database no app had open holds no
	 * locks (replica.c): nobody may open it until the apply is done */
	while (is_db_kind(n->kind) && n->db && n->db->applying)
		pthread_cond_wait(&fs->apply_cv, &fs->lock);
	switch (n->kind) {
	case FS_DIR:
		return -EISDIR;
	case FS_FILE:
		fd = openat(fs->tree_fd, n->path, (flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW)) | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		break;
	case FS_DB:
	case FS_JOURNAL:
	case FS_WAL:
	case FS_SHM:
		if (n->db->broken) {
			ltfs_error(fs->log, "fs", "'%s': refusing access: %s",
				   n->db->name, n->db->broken_msg);
			return -EIO;
		}
		/* The kernel may still hold the name of a companion file that a
		 * dropped and recreated database lost: it opens without O_CREAT.
		 * Opening it for writing makes it again, empty, as SQLite
		 * would have. */
		pthread_mutex_lock(&n->db->mu);
		rc = n->kind == FS_DB ? (n->db->db_fd < 0 ? -ENOENT : 0)
				      : fs_db_open_aux(n->db, n->kind,
						       (flags & O_ACCMODE) != O_RDONLY &&
						       fs_write_allowed(fs));
		if (rc == 0) {
			fd = dup(fs_db_aux_fd(n->db, n->kind));
			rc = fd < 0 ? -errno : 0;
		}
		pthread_mutex_unlock(&n->db->mu);
		if (rc < 0)
			return rc;
		break;
	default:
		if ((flags & O_ACCMODE) != O_RDONLY)
			return -EACCES;
		break;
	}
	if ((flags & O_TRUNC) && n->kind != FS_FILE) {
		/* SQLite never opens its files with O_TRUNC: this is cp or a
		 * shell redirection replacing a live database behind SQLite */
		if (fd >= 0)
			close(fd);
		ltfs_warn(fs->log, "fs", "'%s' is a database: refusing to truncate it on open "
					 "(cp over it?); use 'ltfs import %s FILE' to replace it",
			  n->path, n->db ? n->db->name : n->path);
		return -EPERM;
	}
	rc = handle_new(n, fd, out);
	if (rc < 0) {
		if (fd >= 0)
			close(fd);
		return rc;
	}
	n->nopen++;
	return 0;
}

/* Undo open_node() (fs->lock held). */
static void close_node(struct fs_node *n, struct fs_handle *h)
{
	n->nopen--;
	if (h->fd >= 0)
		close(h->fd);
	free(h);
}

static void set_open_flags(struct fs_node *n, struct fs_handle *h,
			   struct fuse_file_info *fi)
{
	fi->fh = (uint64_t)(uintptr_t)h;
	/* Every write comes through us, so cached pages stay valid across
	 * opens; synthetic files change under the reader and are not cached. */
	if (h->fd >= 0)
		fi->keep_cache = 1;
	else
		fi->direct_io = 1;
	/* close(2) waits for no answer from us (there is nothing to flush,
	 * and the apply's own handles must not wait: opener.c) */
	fi->noflush = 1;
	(void)n;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = ino_node(fs, ino);
	struct fs_handle *h = NULL;
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = open_node(fs, n, fi->flags, &h);
	pthread_mutex_unlock(&fs->lock);
	if (rc < 0) {
		reply_err(req, rc);
		return;
	}
	set_open_flags(n, h, fi);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* the opener went away: undo */
		pthread_mutex_lock(&fs->lock);
		close_node(n, h);
		pthread_mutex_unlock(&fs->lock);
	}
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *dir = ino_node(fs, parent), *n = NULL;
	struct ltfs_err err = { 0 };
	struct fuse_entry_param e;
	struct fs_handle *h = NULL;
	char path[FS_PATH_MAX];
	enum fs_kind kind;
	struct stat st;
	size_t blen;
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = make_path(dir, name, path);
	if (rc < 0)
		goto out;
	kind = fs_suffix_kind(name, &blen);
	if (kind == FS_JOURNAL || kind == FS_WAL || kind == FS_SHM) {
		struct fs_db *db = aux_owner(fs, path, name, blen, &err);

		if (err.code < 0) {
			rc = err.code;
			ltfs_error(fs->log, "fs", "create '%s': %s", path, err.msg);
			goto out;
		}
		if (db) {
			/* a replica's readers create an (empty) WAL */
			if ((kind == FS_JOURNAL || db->broken) &&
			    (rc = check_writable(fs, db)) < 0)
				goto out;
			pthread_mutex_lock(&db->mu);
			rc = fs_db_open_aux(db, kind, true);
			pthread_mutex_unlock(&db->mu);
			if (rc < 0)
				goto out;
			n = fs_node_find(fs, path);
			if (!n && !(n = fs_node_new(fs, path, kind, db))) {
				rc = -ENOMEM;
				goto out;
			}
		}
	} else if (kind == FS_POS) {
		char base[FS_PATH_MAX];

		snprintf(base, sizeof(base), "%.*s", (int)(strlen(path) - 4), path);
		if (fs_db_find(fs, base, true)) {
			rc = -EACCES;
			goto out;
		}
	}
	if (!n) {
		struct fs_db *db = fs_db_find(fs, path, false);

		if (db && db->db_fd >= 0) {
			n = db->node; /* exists: plain open */
		} else if (db) {
			/* a dropped database comes back under the same name */
			if ((rc = check_writable(fs, db)) < 0)
				goto out;
			db->db_fd = openat(db->dirfd, "database",
					   O_RDWR | O_CREAT | O_CLOEXEC, 0644);
			if (db->db_fd < 0) {
				rc = -errno;
				goto out;
			}
			n = db->node;
			if (!n || !n->hashed) {
				n = fs_node_new(fs, path, FS_DB, db);
				if (!n) {
					rc = -ENOMEM;
					goto out;
				}
				db->node = n;
			}
		} else {
			int fd = openat(fs->tree_fd, path,
					(fi->flags | O_CREAT | O_CLOEXEC) & ~O_NOFOLLOW,
					mode);

			if (fd < 0) {
				rc = -errno;
				goto out;
			}
			close(fd);
			n = fs_node_find(fs, path);
			if (!n && !(n = fs_node_new(fs, path, FS_FILE, NULL))) {
				rc = -ENOMEM;
				goto out;
			}
		}
	}
	rc = open_node(fs, n, fi->flags & ~O_TRUNC, &h);
	if (rc == 0 && (rc = node_stat(fs, n, &st)) < 0)
		close_node(n, h);
	if (rc == 0) {
		n->nlookup++;
		fill_entry(fs, n, &st, &e);
	}
out:
	pthread_mutex_unlock(&fs->lock);
	if (rc < 0) {
		reply_err(req, rc);
		return;
	}
	set_open_flags(n, h, fi);
	fuse_reply_create(req, &e, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	if (h->fd < 0) {
		/* synthetic files are made afresh for every read, so a re-read
		 * sees the current value; concurrent reads of one handle only
		 * share seen_seq, an atomic read before the text (a change in
		 * between makes poll() answer at once, never wait for nothing) */
		struct fs *fs = req_fs(req);
		struct fs_node *n = ino_node(fs, ino);
		char text[1100];
		size_t len, o;

		if (n->kind == FS_POS)
			__atomic_store_n(&h->seen_seq,
					 __atomic_load_n(&n->db->pos_seq, __ATOMIC_ACQUIRE),
					 __ATOMIC_RELAXED);
		special_text(fs, n, text, sizeof(text));
		len = strlen(text);
		o = (size_t)off < len ? (size_t)off : len;
		fuse_reply_buf(req, text + o, len - o < size ? len - o : size);
		return;
	}
	(void)ino;
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = h->fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static int pwrite_all(int fd, const char *buf, size_t n, off_t off)
{
	return ltx_pwrite_full(fd, buf, n, (uint64_t)off);
}

static bool all_zero(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * A request that committed answers only once the commit is safe elsewhere
 * (synchronous mode; fs->commit_wait is set before any request and never
 * changed after), and only if the node may still write. The lease was
 * checked as the request began, but a node paused past its lease (SIGSTOP,
 * a long stall) wakes to a new primary: its answer must not acknowledge a
 * commit the new primary never saw. The commit stays in the local history;
 * the node, now a replica, finds it diverged and takes a snapshot.
 */
static int commit_wait(struct fs *fs, struct fs_db *db, uint64_t before, uint64_t after)
{
	if (after <= before)
		return 0;
	if (fs->commit_wait && fs->commit_wait(fs->commit_wait_ctx, db->name, after) < 0)
		return -EIO;
	if (!fs_ack_allowed(fs)) {
		ltfs_warn(fs->log, "fs", "'%s': txid %llu was recorded as this node's "
					 "right to write ended: the commit is reported as failed",
			  db->name, (unsigned long long)after);
		return -EIO;
	}
	return 0;
}

/*
 * A rollback-mode commit in synchronous mode: the journal was just
 * recorded as committed (db->mu held), but is finalized on disk only once
 * the commit is safe elsewhere. If it cannot be, the journal stays hot,
 * SQLite reports the COMMIT as failed and the next reader rolls it back.
 * db->mu is let go meanwhile; the committing connection holds SQLite's
 * exclusive lock, so no other touches the files.
 */
static int finalize_wait(struct fs *fs, struct fs_db *db, uint64_t before)
{
	uint64_t after = db->txid;
	int rc;

	if (!fs->commit_wait)
		return commit_wait(fs, db, before, after);
	if (after <= before)
		return 0;
	pthread_mutex_unlock(&db->mu);
	rc = commit_wait(fs, db, before, after);
	pthread_mutex_lock(&db->mu);
	return rc;
}

/* A write to a database file or one of its companions. */
static int write_db(struct fs *fs, struct fs_node *n, struct fs_handle *h,
		    const char *buf, size_t size, off_t off)
{
	struct fs_db *db = n->db;
	struct ltfs_err err = { 0 };
	uint64_t before, after;
	int rc;

	pthread_mutex_lock(&db->mu);
	before = db->txid;
	/* under the lock: a write that waited for it may have outlived the
	 * node's lease meanwhile, and a fence waits for it (fs_fence_writes) */
	if (n->kind != FS_SHM && (rc = check_writable(fs, n->db)) < 0) {
		pthread_mutex_unlock(&db->mu);
		return rc;
	}
	switch (n->kind) {
	case FS_DB:
		rc = fs_db_note_db_write(db, buf, size, (uint64_t)off, &err);
		if (rc == 0)
			rc = pwrite_all(h->fd, buf, size, off);
		break;
	case FS_JOURNAL:
		/* PERSIST mode ends a transaction by zeroing the header. */
		rc = 0;
		if (off == 0 && size >= LTX_JOURNAL_HEADER_SIZE && all_zero(buf, LTX_JOURNAL_HEADER_SIZE))
			rc = fs_db_journal_finalize(db, &err);
		if (rc == 0)
			rc = finalize_wait(fs, db, before);
		if (rc == 0)
			rc = pwrite_all(h->fd, buf, size, off);
		break;
	case FS_WAL:
		if (off < (off_t)db->wal.end && off != 0 && db->wal.active) {
			rc = ltfs_err_set(&err, -EINVAL,
					  "wal of '%s': write at offset %lld overwrites committed frames",
					  db->name, (long long)off);
			break;
		}
		rc = pwrite_all(h->fd, buf, size, off);
		if (rc == 0 && fs_db_wal_write(db, buf, size, (uint64_t)off, &err) < 0) {
			/* The frames are in the WAL: SQLite's commit stands.
			 * The LTX is retried at the next commit or restart. */
			ltfs_error(fs->log, "fs", "%s (will retry)", err.msg);
		}
		break;
	default:
		/* a replica's apply is rewriting the WAL index: what the page
		 * cache writes back now is stale */
		rc = db->shm_resetting ? 0 : pwrite_all(h->fd, buf, size, off);
		break;
	}
	after = db->txid;
	pthread_mutex_unlock(&db->mu);
	if (rc < 0 && err.code < 0)
		ltfs_error(fs->log, "fs", "%s", err.msg);
	/* a WAL commit is recorded as its commit frame lands: a failed wait
	 * fails the write, and SQLite the COMMIT */
	if (rc == 0 && n->kind == FS_WAL && after > before) {
		fs_fault_stall(fs, "answer-stall", 1500);
		rc = commit_wait(fs, db, before, after);
	}
	return rc;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = ino_node(fs, ino);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	int rc;

	if (n->kind == FS_FILE && off == 0 && size >= LTX_SQLITE_HEADER_SIZE &&
	    ltx_db_header_is_sqlite((const uint8_t *)buf, size)) {
		struct ltfs_err err = { 0 };

		pthread_mutex_lock(&fs->lock);
		if (n->kind == FS_FILE && file_empty(fs, n->path) &&
		    make_database(fs, n, &err) < 0)
			ltfs_error(fs->log, "fs", "'%s': %s", n->path, err.msg);
		pthread_mutex_unlock(&fs->lock);
	}
	if (is_db_kind(n->kind))
		rc = write_db(fs, n, h, buf, size, off);
	else if (h->fd < 0)
		rc = -EACCES;
	else
		rc = pwrite_all(h->fd, buf, size, off);
	if (rc < 0)
		reply_err(req, rc);
	else
		fuse_reply_write(req, size);
}

/* ---- poll() on NAME-pos ---------------------------------------------------
 *
 * A NAME-pos handle is ready once the position changed since the handle
 * last read it: a reader waits for the next transaction in poll() instead
 * of reading in a loop. Every other file is always ready, as on a disk.
 */

void fs_pos_changed(struct fs_db *db)
{
	struct fs_handle *h;

	__atomic_add_fetch(&db->pos_seq, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&db->poll_mu);
	h = db->pollers;
	db->pollers = NULL;
	for (; h; h = h->poll_next) {
		fuse_lowlevel_notify_poll(h->ph);
		fuse_pollhandle_destroy(h->ph);
		h->ph = NULL;
	}
	pthread_mutex_unlock(&db->poll_mu);
}

static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    struct fuse_pollhandle *ph)
{
	struct fs_node *n = ino_node(req_fs(req), ino);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	unsigned revents = POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM;

	if (n->kind == FS_POS) {
		struct fs_db *db = n->db;

		revents = POLLIN | POLLRDNORM;
		pthread_mutex_lock(&db->poll_mu);
		/* under poll_mu: fs_pos_changed either saw this handle listed
		 * or bumped pos_seq before this load */
		if (__atomic_load_n(&db->pos_seq, __ATOMIC_ACQUIRE) ==
		    __atomic_load_n(&h->seen_seq, __ATOMIC_RELAXED)) {
			revents = 0;
			if (ph) {
				if (h->ph) { /* listed already: the newer handle serves */
					fuse_pollhandle_destroy(h->ph);
				} else {
					h->poll_next = db->pollers;
					db->pollers = h;
				}
				h->ph = ph;
				ph = NULL;
			}
		}
		pthread_mutex_unlock(&db->poll_mu);
	}
	if (ph)
		fuse_pollhandle_destroy(ph);
	fuse_reply_poll(req, revents);
}

/* A closing NAME-pos handle leaves the pollers. */
static void pos_unpoll(struct fs_db *db, struct fs_handle *h)
{
	pthread_mutex_lock(&db->poll_mu);
	if (h->ph) {
		struct fs_handle **pp = &db->pollers;

		while (*pp != h)
			pp = &(*pp)->poll_next;
		*pp = h->poll_next;
		fuse_pollhandle_destroy(h->ph);
		h->ph = NULL;
	}
	pthread_mutex_unlock(&db->poll_mu);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = ino_node(fs, ino);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;

	if (n->kind == FS_POS)
		pos_unpoll(n->db, h);
	if (h->fd >= 0)
		close(h->fd);
	free(h);
	pthread_mutex_lock(&fs->lock);
	n->nopen--;
	if (n->kind == FS_DB && n->nopen == 0) {
		/* a database written without a journal (e.g. copied in) */
		struct ltfs_err err = { 0 };

		pthread_mutex_lock(&n->db->mu);
		if (fs_db_commit_unjournaled(n->db, &err) < 0)
			ltfs_error(fs->log, "fs", "%s", err.msg);
		pthread_mutex_unlock(&n->db->mu);
	}
	fs_node_maybe_free(fs, n);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = ino_node(fs, ino);
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	int rc = 0;

	if (h->fd >= 0 && (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0)
		rc = -errno;
	if (rc == 0 && n->db && (n->kind == FS_DB || n->kind == FS_JOURNAL)) {
		struct fs_db *db = n->db;
		struct ltfs_err err = { 0 };
		uint64_t before, after;
		bool open;

		pthread_mutex_lock(&db->mu);
		db->synced = true;
		before = db->txid;
		open = fs_write_allowed(fs);
		/* Without a journal, SQLite's sync of the database ends its
		 * commit (any synchronous but OFF); with one, the journal is
		 * still hot here and this records nothing. */
		if (n->kind == FS_DB)
			rc = fs_db_commit_unjournaled(db, &err);
		after = db->txid;
		pthread_mutex_unlock(&db->mu);
		if (rc < 0)
			ltfs_error(fs->log, "fs", "%s", err.msg);
		else if (!open && after > before)
			rc = -EIO; /* recorded past a fence: a handoff may not carry it */
		else
			rc = commit_wait(fs, db, before, after);
	}
	reply_err(req, rc);
}

/* ---- attributes ------------------------------------------------------- */

static int truncate_node(struct fs *fs, struct fs_node *n, off_t size,
			 struct fs_handle *h)
{
	struct ltfs_err err = { 0 };
	uint64_t before;
	int fd, rc = 0;

	if (n->kind == FS_FILE) {
		if (h && h->fd >= 0)
			return ftruncate(h->fd, size) < 0 ? -errno : 0;
		fd = openat(fs->tree_fd, n->path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		rc = ftruncate(fd, size) < 0 ? -errno : 0;
		close(fd);
		return rc;
	}
	if (!is_db_kind(n->kind))
		return -EACCES;
	/* checked under the lock that the commit is recorded under: see
	 * fs_fence_writes */
	pthread_mutex_lock(&n->db->mu);
	if (n->kind != FS_SHM && (rc = check_writable(fs, n->db)) < 0) {
		pthread_mutex_unlock(&n->db->mu);
		return rc;
	}
	before = n->db->txid;
	switch (n->kind) {
	case FS_DB:
		rc = fs_db_truncate(n->db, (uint64_t)size, &err);
		break;
	case FS_JOURNAL:
		if (size == 0)
			rc = fs_db_journal_finalize(n->db, &err);
		if (rc == 0)
			rc = finalize_wait(fs, n->db, before);
		break;
	case FS_WAL:
		rc = fs_db_wal_truncate(n->db, (uint64_t)size, &err);
		break;
	default:
		break;
	}
	if (rc == 0) {
		fd = fs_db_aux_fd(n->db, n->kind);
		if (fd < 0 && n->kind != FS_DB && fs_db_open_aux(n->db, n->kind, false) == 0)
			fd = fs_db_aux_fd(n->db, n->kind);
		rc = fd < 0 ? -ENOENT : ftruncate(fd, size) < 0 ? -errno : 0;
	}
	pthread_mutex_unlock(&n->db->mu);
	if (err.code < 0)
		ltfs_error(fs->log, "fs", "%s", err.msg);
	return rc;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = ino_node(fs, ino);
	struct fs_handle *h = fi ? (struct fs_handle *)(uintptr_t)fi->fh : NULL;
	struct stat st;
	int rc = 0;

	if (to_set & FUSE_SET_ATTR_SIZE)
		rc = truncate_node(fs, n, attr->st_size, h);
	pthread_mutex_lock(&fs->lock);
	if (rc == 0 && (n->kind == FS_DIR || n->kind == FS_FILE)) {
		if ((to_set & FUSE_SET_ATTR_MODE) &&
		    fchmodat(fs->tree_fd, rel(n), attr->st_mode & 07777, 0) < 0)
			rc = -errno;
		if (rc == 0 && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) &&
		    fchownat(fs->tree_fd, rel(n),
			     (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1,
			     (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1,
			     AT_SYMLINK_NOFOLLOW) < 0)
			rc = -errno;
		if (rc == 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
			struct timespec ts[2] = { { 0, UTIME_OMIT }, { 0, UTIME_OMIT } };

			if (to_set & FUSE_SET_ATTR_ATIME_NOW)
				ts[0].tv_nsec = UTIME_NOW;
			else if (to_set & FUSE_SET_ATTR_ATIME)
				ts[0] = attr->st_atim;
			if (to_set & FUSE_SET_ATTR_MTIME_NOW)
				ts[1].tv_nsec = UTIME_NOW;
			else if (to_set & FUSE_SET_ATTR_MTIME)
				ts[1] = attr->st_mtim;
			if (utimensat(fs->tree_fd, rel(n), ts, AT_SYMLINK_NOFOLLOW) < 0)
				rc = -errno;
		}
	}
	if (rc == 0)
		rc = node_stat(fs, n, &st);
	pthread_mutex_unlock(&fs->lock);
	if (rc < 0)
		reply_err(req, rc);
	else
		fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* ---- directories ------------------------------------------------------ */

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fs *fs = req_fs(req);
	struct fs_node *dir = ino_node(fs, parent);
	struct fuse_entry_param e;
	char path[FS_PATH_MAX];
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = make_path(dir, name, path);
	if (rc == 0 && fs_db_find(fs, path, true))
		rc = -EEXIST;
	if (rc == 0 && mkdirat(fs->tree_fd, path, mode) < 0)
		rc = -errno;
	if (rc == 0)
		rc = entry_of(fs, dir, name, path, &e);
	pthread_mutex_unlock(&fs->lock);
	if (rc < 0)
		reply_err(req, rc);
	else
		fuse_reply_entry(req, &e);
}

/* True if a live database sits at or below `path`. */
static bool has_db_below(struct fs *fs, const char *path)
{
	size_t len = strlen(path);

	for (size_t i = 0; i < fs->ndbs; i++) {
		const char *nm = fs->dbs[i]->name;

		if (fs->dbs[i]->db_fd >= 0 && strncmp(nm, path, len) == 0 &&
		    nm[len] == '/')
			return true;
	}
	return false;
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	struct fs_node *dir = ino_node(fs, parent), *n;
	char path[FS_PATH_MAX];
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = make_path(dir, name, path);
	if (rc == 0 && has_db_below(fs, path))
		rc = -ENOTEMPTY;
	if (rc == 0 && unlinkat(fs->tree_fd, path, AT_REMOVEDIR) < 0)
		rc = -errno;
	if (rc == 0 && (n = fs_node_find(fs, path)) != NULL) {
		fs_node_unhash(fs, n);
		fs_node_maybe_free(fs, n);
	}
	pthread_mutex_unlock(&fs->lock);
	reply_err(req, rc);
}

/* fs->lock held; *before and *after: the database's TXID around it. */
static int unlink_db_file(struct fs *fs, struct fs_node *n, uint64_t *before, uint64_t *after)
{
	struct fs_db *db = n->db;
	struct ltfs_err err = { 0 };
	int rc = 0;

	pthread_mutex_lock(&db->mu);
	if (n->kind != FS_SHM && (rc = check_writable(fs, n->db)) < 0) {
		pthread_mutex_unlock(&db->mu);
		return rc;
	}
	*before = db->txid;
	switch (n->kind) {
	case FS_DB:
		rc = fs_db_drop(db, &err);
		if (rc == 0)
			ltfs_info(fs->log, "fs", "'%s' deleted (txid %llu records it)",
				  db->name, (unsigned long long)db->txid);
		break;
	case FS_JOURNAL:
		rc = fs_db_journal_finalize(db, &err);
		if (rc == 0)
			rc = fs_db_remove_aux(db, FS_JOURNAL);
		break;
	case FS_WAL:
		rc = fs_db_wal_commit_pending(db, &err);
		if (rc == 0)
			rc = fs_db_wal_truncate(db, 0, &err);
		if (rc == 0)
			rc = fs_db_remove_aux(db, FS_WAL);
		break;
	case FS_SHM:
		rc = fs_db_remove_aux(db, FS_SHM);
		break;
	default:
		rc = -EACCES;
	}
	*after = db->txid;
	pthread_mutex_unlock(&db->mu);
	if (err.code < 0)
		ltfs_error(fs->log, "fs", "%s", err.msg);
	return rc;
}

/* Synchronous mode, DELETE journal mode: record the commit and wait for it
 * before the journal goes (fs->lock not held: the wait may be long). */
static int journal_commit_sync(struct fs *fs, struct fs_db *db)
{
	struct ltfs_err err = { 0 };
	uint64_t before;
	int rc;

	pthread_mutex_lock(&db->mu);
	if (check_writable(fs, db) < 0) {
		pthread_mutex_unlock(&db->mu);
		return 0; /* the unlink says so */
	}
	before = db->txid;
	rc = fs_db_journal_finalize(db, &err);
	if (rc == 0)
		rc = finalize_wait(fs, db, before);
	pthread_mutex_unlock(&db->mu);
	if (err.code < 0)
		ltfs_error(fs->log, "fs", "%s", err.msg);
	return rc;
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = req_fs(req);
	struct fs_node *dir = ino_node(fs, parent), *n = NULL;
	char path[FS_PATH_MAX];
	int rc;

	uint64_t before = 0, after = 0;
	struct fs_db *db = NULL;

	pthread_mutex_lock(&fs->lock);
	rc = make_path(dir, name, path);
	if (rc == 0)
		rc = resolve(fs, dir, name, path, &n);
	if (rc == 0 && n->kind == FS_JOURNAL && fs->commit_wait) {
		n->nopen++; /* pinned while fs->lock is let go */
		pthread_mutex_unlock(&fs->lock);
		rc = journal_commit_sync(fs, n->db);
		pthread_mutex_lock(&fs->lock);
		n->nopen--;
		if (rc < 0)
			fs_node_maybe_free(fs, n);
	}
	if (rc == 0) {
		db = n->db;
		if (is_db_kind(n->kind))
			rc = unlink_db_file(fs, n, &before, &after);
		else if (n->kind == FS_FILE)
			rc = unlinkat(fs->tree_fd, path, 0) < 0 ? -errno : 0;
		else
			rc = n->kind == FS_DIR ? -EISDIR : -EACCES;
	}
	if (rc == 0) {
		fs_node_unhash(fs, n);
		if (n->kind == FS_DB) {
			/* the database keeps its history; the name is free */
			n->db->node = NULL;
		}
		fs_node_maybe_free(fs, n);
	}
	pthread_mutex_unlock(&fs->lock);
	/* a deletion, or WAL commits the last close left behind (the
	 * database outlives its name: it keeps its history) */
	if (rc == 0 && db)
		rc = commit_wait(fs, db, before, after);
	reply_err(req, rc);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct fs *fs = req_fs(req);
	struct fs_node *dir = ino_node(fs, parent), *ndir = ino_node(fs, newparent);
	struct fs_node *n = NULL, *target;
	char from[FS_PATH_MAX], to[FS_PATH_MAX];
	size_t blen;
	int rc;

	pthread_mutex_lock(&fs->lock);
	rc = make_path(dir, name, from);
	if (rc == 0)
		rc = make_path(ndir, newname, to);
	if (rc == 0)
		rc = resolve(fs, dir, name, from, &n);
	/* Databases move by copy (mv falls back on EXDEV), which records the
	 * new one as a transaction and the old one as a deletion. */
	if (rc == 0 && (n->kind != FS_FILE && n->kind != FS_DIR))
		rc = -EXDEV;
	if (rc == 0 && (fs_db_find(fs, to, true) || has_db_below(fs, from) ||
			fs_suffix_kind(newname, &blen) != FS_FILE))
		rc = -EXDEV;
	if (rc == 0 && renameat2(fs->tree_fd, from, fs->tree_fd, to, flags) < 0)
		rc = -errno;
	if (rc == 0) {
		char *p = strdup(to);

		if ((target = fs_node_find(fs, to)) != NULL && target != n) {
			fs_node_unhash(fs, target);
			fs_node_maybe_free(fs, target);
		}
		if (p)
			fs_node_rehash(fs, n, p);
		else
			fs_node_unhash(fs, n); /* found again by a later lookup */
		if (n->kind == FS_DIR) {
			/* cached descendants keep old paths: drop them */
			size_t len = strlen(from);

			for (size_t i = 0; i < fs->table_size; i++) {
				struct fs_node *c = fs->table[i], *next;

				for (; c; c = next) {
					next = c->hnext;
					if (strncmp(c->path, from, len) == 0 &&
					    c->path[len] == '/') {
						fs_node_unhash(fs, c);
						fs_node_maybe_free(fs, c);
					}
				}
			}
		}
	}
	pthread_mutex_unlock(&fs->lock);
	reply_err(req, rc);
}

static int add_ent(struct fs_handle *h, size_t *cap, const char *name, mode_t mode)
{
	if (h->nents == *cap) {
		size_t c = *cap ? *cap * 2 : 32;
		struct dir_ent *e = realloc(h->ents, c * sizeof(*e));

		if (!e)
			return -ENOMEM;
		h->ents = e;
		*cap = c;
	}
	snprintf(h->ents[h->nents].name, sizeof(h->ents[0].name), "%s", name);
	h->ents[h->nents].mode = mode;
	h->nents++;
	return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = ino_node(fs, ino);
	struct fs_handle *h = NULL;
	size_t cap = 0, plen;
	struct dirent *de;
	DIR *d;
	int fd, rc;

	pthread_mutex_lock(&fs->lock);
	rc = n->kind == FS_DIR ? handle_new(n, -1, &h) : -ENOTDIR;
	if (rc < 0)
		goto out;
	fd = openat(fs->tree_fd, rel(n), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		rc = -errno;
		if (fd >= 0)
			close(fd);
		goto out;
	}
	while (rc == 0 && (de = readdir(d)) != NULL)
		rc = add_ent(h, &cap, de->d_name, (mode_t)DTTOIF(de->d_type));
	closedir(d);
	plen = strlen(n->path);
	for (size_t i = 0; rc == 0 && i < fs->ndbs; i++) {
		struct fs_db *db = fs->dbs[i];
		const char *base = db->name + (plen ? plen + 1 : 0);
		char name[FS_NAME_MAX + 16];

		if (db->db_fd < 0 || strncmp(db->name, n->path, plen) != 0 ||
		    (plen && db->name[plen] != '/') || strchr(base, '/'))
			continue;
		rc = add_ent(h, &cap, base, S_IFREG);
		snprintf(name, sizeof(name), "%s-pos", base);
		if (rc == 0)
			rc = add_ent(h, &cap, name, S_IFREG);
		for (enum fs_kind k = FS_JOURNAL; rc == 0 && k <= FS_SHM; k++) {
			if (!aux_exists(db, k))
				continue;
			snprintf(name, sizeof(name), "%s%s", base,
				 k == FS_JOURNAL ? "-journal" : k == FS_WAL ? "-wal" : "-shm");
			rc = add_ent(h, &cap, name, S_IFREG);
		}
	}
	if (rc == 0 && n == fs->root) {
		rc = add_ent(h, &cap, ".lag", S_IFREG);
		if (rc == 0 && fs->role == FS_ROLE_REPLICA && fs->primary_url[0])
			rc = add_ent(h, &cap, ".primary", S_IFREG);
	}
out:
	pthread_mutex_unlock(&fs->lock);
	if (rc < 0) {
		if (h) {
			free(h->ents);
			free(h);
		}
		reply_err(req, rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	char *buf = malloc(size);
	size_t used = 0;

	(void)ino;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	for (size_t i = (size_t)off; i < h->nents; i++) {
		/* readdir(3) hides entries with inode 0; the real numbers come
		 * from lookup, so any non-zero value will do here */
		struct stat st = { .st_mode = h->ents[i].mode, .st_ino = i + 2 };
		size_t len = fuse_add_direntry(req, buf + used, size - used,
					       h->ents[i].name, &st, (off_t)(i + 1));

		if (len > size - used)
			break;
		used += len;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;

	(void)ino;
	free(h->ents);
	free(h);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	struct fs *fs = req_fs(req);
	struct fs_node *n = ino_node(fs, ino);
	size_t plen = strlen(n->path);
	int fd, rc = 0;

	(void)datasync;
	(void)fi;
	fd = openat(fs->tree_fd, rel(n), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		if (fsync(fd) < 0)
			rc = -errno;
		close(fd);
	}
	/* SQLite syncs the directory after deleting a journal: that is when
	 * the databases' own directories (journal name, LTX renames) must be
	 * durable too. */
	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; rc == 0 && i < fs->ndbs; i++) {
		struct fs_db *db = fs->dbs[i];

		if (strncmp(db->name, n->path, plen) != 0 || strchr(db->name + plen + (plen ? 1 : 0), '/'))
			continue;
		/* history names first: a durable journal unlink must never
		 * be found without the LTX file that recorded the commit */
		if (fsync(db->ltxfd) < 0 || fsync(db->dirfd) < 0)
			rc = -errno;
	}
	pthread_mutex_unlock(&fs->lock);
	reply_err(req, rc);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = req_fs(req);
	struct statvfs sv;

	(void)ino;
	if (fstatvfs(fs->data_fd, &sv) < 0)
		reply_err(req, -errno);
	else
		fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

	/* Writes must reach us one by one: no writeback cache. Cached pages
	 * are dropped only when we say so, not on every mtime change. No
	 * getlk/setlk: SQLite's locks stay the kernel's (see replica.c,
	 * hold_locks, for how an apply holds readers). */
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
	if (conn->capable & FUSE_CAP_EXPLICIT_INVAL_DATA)
		conn->want |= FUSE_CAP_EXPLICIT_INVAL_DATA;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_SPLICE_MOVE)
		conn->want |= FUSE_CAP_SPLICE_MOVE;
	ltfs_info(fs->log, "fs", "mounted '%s' (data '%s', %zu databases)",
		  fs->mountpoint, fs->data_dir, fs->ndbs);
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.open = op_open,
	.create = op_create,
	.read = op_read,
	.write = op_write,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.poll = op_poll,
};
