/*
 * passthrough.c - the FUSE floor for benchmarks: a bare low-level libfuse
 * passthrough of one directory, with the same cache settings as ltfs
 * (keep_cache, no writeback cache) and no work of its own. POSIX locks are
 * left to the kernel. Not for use outside the benchmark.
 *
 *   bench-passthrough SRC MOUNTDIR      (foreground; unmount to stop)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

struct pt_inode {
	int fd;          /* O_PATH */
	uint64_t nlookup;
	struct pt_inode *next;
	dev_t dev;
	ino_t ino;
};

struct pt {
	pthread_mutex_t mu;
	struct pt_inode root;
	struct pt_inode *list;
};

static struct pt *pt_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct pt_inode *inode_of(fuse_req_t req, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &pt_of(req)->root : (struct pt_inode *)(uintptr_t)ino;
}

static void pt_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct pt *pt = pt_of(req);
	struct fuse_entry_param e = { .attr_timeout = 1.0, .entry_timeout = 1.0 };
	struct pt_inode *in;
	int fd = openat(inode_of(req, parent)->fd, name, O_PATH | O_NOFOLLOW);

	if (fd < 0 || fstatat(fd, "", &e.attr, AT_EMPTY_PATH) < 0) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, err);
		return;
	}
	pthread_mutex_lock(&pt->mu);
	for (in = pt->list; in; in = in->next)
		if (in->ino == e.attr.st_ino && in->dev == e.attr.st_dev)
			break;
	if (in) {
		close(fd);
	} else {
		in = calloc(1, sizeof(*in));
		if (!in) {
			pthread_mutex_unlock(&pt->mu);
			close(fd);
			fuse_reply_err(req, ENOMEM);
			return;
		}
		in->fd = fd;
		in->ino = e.attr.st_ino;
		in->dev = e.attr.st_dev;
		in->next = pt->list;
		pt->list = in;
	}
	in->nlookup++;
	pthread_mutex_unlock(&pt->mu);
	e.ino = (fuse_ino_t)(uintptr_t)in;
	fuse_reply_entry(req, &e);
}

static void pt_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	struct pt *pt = pt_of(req);
	struct pt_inode *in = inode_of(req, ino), **pp;

	pthread_mutex_lock(&pt->mu);
	if (in != &pt->root && (in->nlookup -= n) == 0) {
		for (pp = &pt->list; *pp; pp = &(*pp)->next) {
			if (*pp == in) {
				*pp = in->next;
				close(in->fd);
				free(in);
				break;
			}
		}
	}
	pthread_mutex_unlock(&pt->mu);
	fuse_reply_none(req);
}

static void pt_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (fstatat(inode_of(req, ino)->fd, "", &st, AT_EMPTY_PATH) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_attr(req, &st, 1.0);
}

static int reopen(fuse_req_t req, fuse_ino_t ino, int flags)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", inode_of(req, ino)->fd);
	return open(path, flags & ~O_NOFOLLOW);
}

static void pt_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	int fd = fi ? (int)fi->fh : reopen(req, ino, O_WRONLY);

	if ((to_set & FUSE_SET_ATTR_SIZE) && (fd < 0 || ftruncate(fd, attr->st_size) < 0)) {
		fuse_reply_err(req, errno);
	} else {
		pt_getattr(req, ino, NULL);
	}
	if (!fi && fd >= 0)
		close(fd);
}

static void pt_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int fd = reopen(req, ino, fi->flags);

	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void pt_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	int fd = openat(inode_of(req, parent)->fd, name, (fi->flags | O_CREAT) & ~O_NOFOLLOW, mode);

	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	close(fd);
	/* the entry reply is the lookup's; then open as usual */
	{
		struct fuse_entry_param e = { .attr_timeout = 1.0, .entry_timeout = 1.0 };
		struct pt *pt = pt_of(req);
		struct pt_inode *in;
		int pfd = openat(inode_of(req, parent)->fd, name, O_PATH | O_NOFOLLOW);

		if (pfd < 0 || fstatat(pfd, "", &e.attr, AT_EMPTY_PATH) < 0) {
			fuse_reply_err(req, errno);
			return;
		}
		pthread_mutex_lock(&pt->mu);
		for (in = pt->list; in; in = in->next)
			if (in->ino == e.attr.st_ino && in->dev == e.attr.st_dev)
				break;
		if (!in) {
			in = calloc(1, sizeof(*in));
			in->fd = pfd;
			in->ino = e.attr.st_ino;
			in->dev = e.attr.st_dev;
			in->next = pt->list;
			pt->list = in;
		} else {
			close(pfd);
		}
		in->nlookup++;
		pthread_mutex_unlock(&pt->mu);
		e.ino = (fuse_ino_t)(uintptr_t)in;
		fd = reopen(req, e.ino, fi->flags & ~(O_CREAT | O_EXCL | O_TRUNC));
		if (fd < 0) {
			fuse_reply_err(req, errno);
			return;
		}
		fi->fh = (uint64_t)fd;
		fi->keep_cache = 1;
		fuse_reply_create(req, &e, fi);
	}
}

static void pt_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	(void)ino;
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = (int)fi->fh;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void pt_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	ssize_t n = pwrite((int)fi->fh, buf, size, off);

	(void)ino;
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)n);
}

static void pt_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void pt_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	close((int)fi->fh);
	fuse_reply_err(req, 0);
}

static void pt_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	int rc = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);

	(void)ino;
	fuse_reply_err(req, rc < 0 ? errno : 0);
}

static void pt_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	int rc = unlinkat(inode_of(req, parent)->fd, name, 0);

	fuse_reply_err(req, rc < 0 ? errno : 0);
}

static void pt_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	int fd = reopen(req, ino, O_RDONLY | O_DIRECTORY), rc = 0;

	(void)datasync;
	(void)fi;
	if (fd < 0 || fsync(fd) < 0)
		rc = errno;
	if (fd >= 0)
		close(fd);
	fuse_reply_err(req, rc);
}

static void pt_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (fstatvfs(inode_of(req, ino)->fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

static void pt_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	conn->want &= ~(unsigned)FUSE_CAP_AUTO_INVAL_DATA;
}

static const struct fuse_lowlevel_ops pt_ops = {
	.init = pt_init,
	.lookup = pt_lookup,
	.forget = pt_forget,
	.getattr = pt_getattr,
	.setattr = pt_setattr,
	.open = pt_open,
	.create = pt_create,
	.read = pt_read,
	.write = pt_write,
	.flush = pt_flush,
	.release = pt_release,
	.fsync = pt_fsync,
	.unlink = pt_unlink,
	.fsyncdir = pt_fsyncdir,
	.statfs = pt_statfs,
};

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *cfg;
	struct fuse_session *se;
	struct pt pt = { .mu = PTHREAD_MUTEX_INITIALIZER };
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: bench-passthrough SRC MOUNTDIR\n");
		return 2;
	}
	pt.root.fd = open(argv[1], O_PATH);
	pt.root.nlookup = 2;
	if (pt.root.fd < 0) {
		perror(argv[1]);
		return 1;
	}
	fuse_opt_add_arg(&args, "bench-passthrough");
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, "fsname=passthrough");
	se = fuse_session_new(&args, &pt_ops, sizeof(pt_ops), &pt);
	fuse_opt_free_args(&args);
	if (!se || fuse_session_mount(se, argv[2]) != 0)
		return 1;
	fuse_set_signal_handlers(se);
	cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(cfg, 16);
	rc = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	fuse_remove_signal_handlers(se);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	return rc < 0 ? 1 : 0;
}
