/*
 * lock.c - POSIX byte-range locks kept inside the daemon.
 *
 * SQLite's locks (database bytes at 1 GiB, the WAL-index bytes 120..128)
 * are served here rather than by the kernel, so ltfs sees the WAL write
 * lock come and go and can later hold readers while it applies pages.
 * Semantics follow fcntl(2) for one file: locks belong to an owner (the
 * kernel's lock_owner: one per process), a new lock replaces the owner's
 * locks in its range, conflicts with other owners fail with EAGAIN.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include "fs/fs_int.h"

static void range_of(const struct flock *fl, uint64_t *start, uint64_t *end)
{
	*start = (uint64_t)fl->l_start;
	*end = fl->l_len == 0 ? UINT64_MAX
			      : (uint64_t)fl->l_start + (uint64_t)fl->l_len - 1;
}

static bool overlaps(const struct fs_lock *l, uint64_t s, uint64_t e)
{
	return l->start <= e && s <= l->end;
}

static const struct fs_lock *conflict(const struct fs_node *n, uint64_t owner,
				      uint64_t s, uint64_t e, short type)
{
	for (const struct fs_lock *l = n->locks; l; l = l->next) {
		if (l->owner == owner || !overlaps(l, s, e))
			continue;
		if (type == F_WRLCK || l->type == F_WRLCK)
			return l;
	}
	return NULL;
}

/* Remove the owner's locks in [s, e], splitting those that straddle it. */
static int cut(struct fs_node *n, uint64_t owner, uint64_t s, uint64_t e)
{
	struct fs_lock **pp = &n->locks;

	while (*pp) {
		struct fs_lock *l = *pp;

		if (l->owner != owner || !overlaps(l, s, e)) {
			pp = &l->next;
			continue;
		}
		if (l->start < s && l->end > e) {
			struct fs_lock *tail = malloc(sizeof(*tail));

			if (!tail)
				return -ENOMEM;
			*tail = *l;
			tail->start = e + 1;
			l->end = s - 1;
			tail->next = l->next;
			l->next = tail;
			pp = &tail->next;
		} else if (l->start < s) {
			l->end = s - 1;
			pp = &l->next;
		} else if (l->end > e) {
			l->start = e + 1;
			pp = &l->next;
		} else {
			*pp = l->next;
			free(l);
		}
	}
	return 0;
}

int fs_lock_get(struct fs_node *n, uint64_t owner, struct flock *fl)
{
	const struct fs_lock *l;
	uint64_t s, e;

	range_of(fl, &s, &e);
	pthread_mutex_lock(&n->lock_mu);
	l = conflict(n, owner, s, e, fl->l_type);
	if (l) {
		fl->l_type = l->type;
		fl->l_whence = SEEK_SET;
		fl->l_start = (off_t)l->start;
		fl->l_len = l->end == UINT64_MAX ? 0 : (off_t)(l->end - l->start + 1);
		fl->l_pid = 0; /* owners are not processes we can name */
	} else {
		fl->l_type = F_UNLCK;
	}
	pthread_mutex_unlock(&n->lock_mu);
	return 0;
}

int fs_lock_set(struct fs_node *n, uint64_t owner, const struct flock *fl)
{
	struct fs_lock *l;
	uint64_t s, e;
	int rc;

	if (fl->l_start < 0 || fl->l_len < 0)
		return -EINVAL;
	range_of(fl, &s, &e);
	pthread_mutex_lock(&n->lock_mu);
	if (fl->l_type != F_UNLCK && conflict(n, owner, s, e, fl->l_type)) {
		pthread_mutex_unlock(&n->lock_mu);
		return -EAGAIN;
	}
	rc = cut(n, owner, s, e);
	if (rc == 0 && fl->l_type != F_UNLCK) {
		l = malloc(sizeof(*l));
		if (!l) {
			rc = -ENOMEM;
		} else {
			l->owner = owner;
			l->start = s;
			l->end = e;
			l->type = fl->l_type;
			l->next = n->locks;
			n->locks = l;
		}
	}
	pthread_cond_broadcast(&n->lock_cv);
	pthread_mutex_unlock(&n->lock_mu);
	return rc;
}

void fs_lock_release_owner(struct fs_node *n, uint64_t owner)
{
	pthread_mutex_lock(&n->lock_mu);
	cut(n, owner, 0, UINT64_MAX); /* never splits: cannot fail */
	pthread_cond_broadcast(&n->lock_cv);
	pthread_mutex_unlock(&n->lock_mu);
}

bool fs_lock_held(struct fs_node *n, uint64_t owner, uint64_t byte, short type)
{
	bool held = false;

	pthread_mutex_lock(&n->lock_mu);
	for (const struct fs_lock *l = n->locks; l && !held; l = l->next)
		held = l->owner == owner && l->start <= byte && byte <= l->end &&
		       (type == F_RDLCK || l->type == F_WRLCK);
	pthread_mutex_unlock(&n->lock_mu);
	return held;
}

int fs_lock_with_free_byte(struct fs_node *n, uint64_t first, uint64_t last,
			   int (*fn)(void *ctx, uint64_t byte), void *ctx)
{
	int rc = -EAGAIN;

	pthread_mutex_lock(&n->lock_mu);
	for (uint64_t b = first; b <= last && rc == -EAGAIN; b++) {
		const struct fs_lock *l = n->locks;

		while (l && !overlaps(l, b, b))
			l = l->next;
		if (!l)
			rc = fn(ctx, b);
	}
	pthread_mutex_unlock(&n->lock_mu);
	return rc;
}

void fs_lock_free_all(struct fs_node *n)
{
	while (n->locks) {
		struct fs_lock *l = n->locks;

		n->locks = l->next;
		free(l);
	}
}
