/*
 * opener.c - files of our own mount, opened by a helper process.
 *
 * A replica's apply holds SQLite's readers off with the kernel's locks on
 * the mount's files (replica.c, hold_locks), so it needs those files open
 * through the mount. No thread of the daemon may make that request
 * itself: if the daemon is killed while one of its workers holds the
 * request, the thread that made it waits for an answer that can no longer
 * come, the process never finishes exiting, and the /dev/fuse connection
 * it holds never closes: the mount hangs for good. So a child process that
 * holds nothing but its socket makes the opens and passes each open file
 * back (SCM_RIGHTS). The daemon then only takes locks on it, which the
 * kernel answers alone, and closes it, which sends no request the daemon
 * waits for (no flush; the release goes in the background).
 *
 * The child is started at the first use and again after it died; it ends
 * when its socket closes, which the daemon's exit does too.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs/fs_int.h"

struct open_req {
	int flags;
	char path[FS_PATH_MAX];
};

/* The child: only system calls, as after fork() in a threaded process. */
static void opener_child(int sock)
{
	static const int quiet[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGUSR1, SIGUSR2 };
	struct open_req rq;

	/* a Ctrl-C meant for the daemon must not take the apply's locks away */
	for (size_t i = 0; i < sizeof(quiet) / sizeof(quiet[0]); i++)
		signal(quiet[i], SIG_IGN);
	/* /dev/fuse above all: holding it would keep a dead daemon's mount */
	if (sock > 0)
		close_range(0, (unsigned)sock - 1, 0);
	close_range((unsigned)sock + 1, ~0u, 0);
	if (chdir("/") < 0)
		_exit(1);
	for (;;) {
		ssize_t n = recv(sock, &rq, sizeof(rq), 0);
		char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
		struct iovec iov;
		struct msghdr mh = { 0 };
		int err = 0, fd;

		if (n <= 0)
			_exit(0);
		if ((size_t)n < sizeof(rq.flags) + 1 || rq.path[(size_t)n - sizeof(rq.flags) - 1]) {
			err = EINVAL;
			fd = -1;
		} else {
			fd = open(rq.path, rq.flags | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
			err = fd < 0 ? errno : 0;
		}
		iov.iov_base = &err;
		iov.iov_len = sizeof(err);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		if (fd >= 0) {
			struct cmsghdr *c;

			mh.msg_control = cbuf;
			mh.msg_controllen = sizeof(cbuf);
			c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(c), &fd, sizeof(int));
		}
		n = sendmsg(sock, &mh, MSG_NOSIGNAL);
		if (fd >= 0)
			close(fd);
		if (n < 0)
			_exit(0);
	}
}

static void opener_reap(struct fs *fs)
{
	if (fs->opener_sock >= 0)
		close(fs->opener_sock);
	if (fs->opener_pid > 0) {
		kill(fs->opener_pid, SIGKILL);
		waitpid(fs->opener_pid, NULL, 0);
	}
	fs->opener_sock = -1;
	fs->opener_pid = 0;
}

static int opener_start(struct fs *fs)
{
	pid_t pid;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int rc = -errno;

		close(sv[0]);
		close(sv[1]);
		return rc;
	}
	if (pid == 0)
		opener_child(sv[1]);
	close(sv[1]);
	fs->opener_sock = sv[0];
	fs->opener_pid = pid;
	return 0;
}

/* One exchange with the child: -errno of its open, or of the exchange. */
static int opener_call(struct fs *fs, const struct open_req *rq, size_t len, int *fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov;
	struct msghdr mh = { 0 };
	struct cmsghdr *c;
	int err = 0;
	ssize_t n;

	if (send(fs->opener_sock, rq, len, MSG_NOSIGNAL) != (ssize_t)len)
		return -EPIPE;
	iov.iov_base = &err;
	iov.iov_len = sizeof(err);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	do
		n = recvmsg(fs->opener_sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(err))
		return -EPIPE;
	c = CMSG_FIRSTHDR(&mh);
	if (err == 0 && c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
		memcpy(fd, CMSG_DATA(c), sizeof(int));
		return 0;
	}
	return err > 0 ? -err : -EPROTO;
}

int fs_open_in_mount(struct fs *fs, const char *path, int flags, int *fd)
{
	struct open_req rq;
	size_t len = strlen(path);
	int rc;

	*fd = -1;
	if (len >= sizeof(rq.path))
		return -ENAMETOOLONG;
	rq.flags = flags;
	memcpy(rq.path, path, len + 1);
	pthread_mutex_lock(&fs->opener_mu);
	for (int tries = 0; tries < 2; tries++) {
		rc = fs->opener_sock < 0 ? opener_start(fs) : 0;
		if (rc == 0)
			rc = opener_call(fs, &rq, sizeof(rq.flags) + len + 1, fd);
		if (rc != -EPIPE)
			break;
		/* the child died (killed with the daemon's process group?): another */
		opener_reap(fs);
		rc = -EIO;
	}
	pthread_mutex_unlock(&fs->opener_mu);
	return rc;
}

void fs_opener_stop(struct fs *fs)
{
	pthread_mutex_lock(&fs->opener_mu);
	opener_reap(fs);
	pthread_mutex_unlock(&fs->opener_mu);
}
