/*
 * spare.c - history files are reused instead of freed.
 *
 * A busy database makes hundreds of LTX files a second, on the primary and
 * on every replica, and folding drops as many. Each new file costs the
 * file system an inode, and ext4 without a journal looks past every inode
 * freed in the last half minute before it hands one out (find_inode_bit,
 * recently_deleted): on such a disk that scan was most of a replica's CPU.
 * So a small file leaving the history is renamed to DATA/staging/spare-N,
 * and the next new history or staging file is such a spare, emptied and
 * renamed into place. Spares are reused oldest first. Start-up clears the
 * staging dir but keeps the spares in it: deleting a thousand of them
 * would make every new file of the next half minute scan past their
 * inodes.
 *
 * A spare may still be open: a replication stream, an upload or an
 * operator's `ltfs ltx dump` that opened it while it was in the history
 * must go on reading what it opened. Before a spare is emptied, it gets a
 * write lease (F_SETLEASE), which the kernel grants only when no other
 * open file description of the file exists; one that is still open stays
 * a spare for later. A file system without leases turns spares off.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/fs_int.h"

#define SPARE_FILE_MAX (1u << 20)   /* bigger files are unlinked */
#define SPARE_BYTES_MAX (64u << 20) /* disk kept by spares at most */
#define SPARE_TRIES 4               /* spares looked at per new file */

static void spare_name(char *buf, size_t n, uint64_t id)
{
	snprintf(buf, n, "spare-%llu", (unsigned long long)id);
}

/* The oldest spare, taken out of the ring; false when there is none. */
static bool spare_pop(struct fs_spares *s, struct fs_spare *out)
{
	bool got;

	pthread_mutex_lock(&s->mu);
	got = !s->off && s->n > 0;
	if (got) {
		*out = s->ring[s->head];
		s->head = (s->head + 1) % FS_SPARE_MAX;
		s->n--;
		s->bytes -= out->size;
	}
	pthread_mutex_unlock(&s->mu);
	return got;
}

static bool fits_locked(const struct fs_spares *s, uint64_t size)
{
	return !s->off && s->n < FS_SPARE_MAX && s->bytes + size <= SPARE_BYTES_MAX;
}

/* Put a spare at the young end; false when it does not fit any more. */
static bool spare_push(struct fs_spares *s, struct fs_spare sp)
{
	bool fits;

	pthread_mutex_lock(&s->mu);
	fits = fits_locked(s, sp.size);
	if (fits) {
		s->ring[(s->head + s->n) % FS_SPARE_MAX] = sp;
		s->n++;
		s->bytes += sp.size;
	}
	pthread_mutex_unlock(&s->mu);
	return fits;
}

/* Whether a spare of `size` bytes would fit now. */
static bool spare_room(struct fs_spares *s, uint64_t size)
{
	bool room;

	pthread_mutex_lock(&s->mu);
	room = fits_locked(s, size);
	pthread_mutex_unlock(&s->mu);
	return room;
}

/*
 * 0 when fd is the file's only open file description (leased and let go
 * at once), -EAGAIN when another exists, another error when the file
 * system grants no leases. A lease break (someone opening the spare in
 * the meantime) signals SIGURG, ignored unless handled, not SIGIO, whose
 * default ends the process.
 */
static int sole_opener(int fd)
{
	if (fcntl(fd, F_SETSIG, SIGURG) < 0)
		return -errno;
	if (fcntl(fd, F_SETLEASE, F_WRLCK) < 0)
		return errno == EAGAIN || errno == EBUSY ? -EAGAIN : -errno;
	fcntl(fd, F_SETLEASE, F_UNLCK);
	return 0;
}

void fs_spares_init(struct fs_spares *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
}

void fs_spares_destroy(struct fs_spares *s)
{
	pthread_mutex_destroy(&s->mu);
}

/* Spares go; none are kept from now on. */
static void spares_off(struct fs *fs)
{
	struct fs_spare sp;
	char sname[32];

	while (spare_pop(&fs->spares, &sp)) {
		spare_name(sname, sizeof(sname), sp.id);
		unlinkat(fs->staging_fd, sname, 0);
	}
	pthread_mutex_lock(&fs->spares.mu);
	fs->spares.off = true;
	pthread_mutex_unlock(&fs->spares.mu);
}

/* A spare, emptied and named `name` in dirfd; -ENOENT when none could be had. */
static int take_spare(struct fs *fs, int dirfd, const char *name, bool excl)
{
	for (int tries = 0; tries < SPARE_TRIES; tries++) {
		struct fs_spare sp;
		struct stat st;
		char sname[32];
		int fd, rc;

		if (!spare_pop(&fs->spares, &sp))
			break;
		spare_name(sname, sizeof(sname), sp.id);
		fd = openat(fs->staging_fd, sname, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		rc = sole_opener(fd);
		if (rc == -EAGAIN) {
			close(fd);
			if (!spare_push(&fs->spares, sp))
				unlinkat(fs->staging_fd, sname, 0);
			continue;
		}
		if (rc < 0) {
			close(fd);
			ltfs_warn(fs->log, "spare", "'%s/staging': no leases (%s): history files are no longer reused",
				  fs->data_dir, strerror(-rc));
			spares_off(fs);
			unlinkat(fs->staging_fd, sname, 0);
			break;
		}
		/*
		 * Another link would be another name's content. Emptied to one
		 * byte, not zero: ext4 takes a truncation to zero followed by
		 * writes for a file being replaced and writes it to the disk at
		 * close (auto_da_alloc), a device write per history file that
		 * cost a busy replica a fifth of its time. The writer writes
		 * from offset 0 over that byte.
		 */
		errno = 0;
		if (fstat(fd, &st) == 0 && st.st_nlink == 1 && ftruncate(fd, 1) == 0 &&
		    renameat2(fs->staging_fd, sname, dirfd, name, excl ? RENAME_NOREPLACE : 0) == 0)
			return fd;
		rc = -errno;
		close(fd);
		unlinkat(fs->staging_fd, sname, 0);
		if (rc == -EEXIST)
			return rc;
	}
	return -ENOENT;
}

int fs_spare_create(struct fs *fs, int dirfd, const char *name, bool excl)
{
	int fd = take_spare(fs, dirfd, name, excl);

	if (fd >= 0 || fd == -EEXIST)
		return fd;
	fd = openat(dirfd, name, O_RDWR | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), 0644);
	return fd < 0 ? -errno : fd;
}

/* Whether `name` in dirfd may be a spare (a regular file, its only link,
 * small), with its size. */
static bool spare_candidate(int dirfd, const char *name, uint32_t *size)
{
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_nlink != 1 || st.st_size > SPARE_FILE_MAX)
		return false;
	*size = (uint32_t)st.st_size;
	return true;
}

bool fs_spare_adopt(struct fs *fs, const char *name)
{
	struct fs_spare sp = { 0 };
	unsigned long long id;
	char sname[32];
	int end = 0;

	if (sscanf(name, "spare-%llu%n", &id, &end) != 1 || name[end] != '\0' || id == 0)
		return false;
	spare_name(sname, sizeof(sname), id);
	if (strcmp(sname, name) != 0 || /* one spelling per id: no "spare-01" */
	    !spare_candidate(fs->staging_fd, name, &sp.size))
		return false;
	sp.id = id;
	if (!spare_push(&fs->spares, sp))
		return false;
	if (id > fs->spares.next_id) /* start-up: no other thread yet */
		fs->spares.next_id = id;
	return true;
}

int fs_spare_retire(struct fs *fs, int dirfd, const char *name)
{
	struct fs_spare sp = { 0 };
	char sname[32];

	if (spare_candidate(dirfd, name, &sp.size) && spare_room(&fs->spares, sp.size)) {
		sp.id = __atomic_add_fetch(&fs->spares.next_id, 1, __ATOMIC_RELAXED);
		spare_name(sname, sizeof(sname), sp.id);
		if (renameat(dirfd, name, fs->staging_fd, sname) == 0) {
			if (!spare_push(&fs->spares, sp))
				unlinkat(fs->staging_fd, sname, 0);
			return 0;
		}
	}
	return unlinkat(dirfd, name, 0) < 0 ? -errno : 0;
}
