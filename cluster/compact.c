/*
 * compact.c - keep the bucket small and fast to restore from.
 *
 *   levels 1..N  every interval of level L, the files of level L-1 past
 *                level L's head are merged into one file at level L
 *                (defaults: 30 s, 5 min, 1 h);
 *   level 9      every snapshot interval (default 24 h), a snapshot
 *                1-HEAD built from the local history;
 *   retention    snapshots older than the retention (default 24 h) go,
 *                always keeping the newest; files of levels 1..N that end
 *                before the oldest snapshot kept go; level-0 files go once
 *                level 1 covers them and they are older than the level-0
 *                retention (default 5 min). A restore to any moment within
 *                the retention thus always finds a chain.
 *
 * One thread, with its own connection, beside the upload thread; it works
 * from the bucket's contents as the upload thread keeps them in memory
 * (listed once at start), so no LIST runs on a schedule. Objects are
 * created with If-None-Match: *; a crash between steps leaves either the
 * old or the new files, and both restore.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster_int.h"

#define MERGE_FILES_MAX 1024
#define MERGE_BYTES_MAX (256u << 20)

/* ---- the local history as one file --------------------------------------- */

int cl_history_compact(struct cluster *c, const char *name, uint64_t from, uint64_t to,
		       int *out_fd, struct ltx_header *oh, struct ltfs_err *err)
{
	struct ltx_decoder **decs = NULL;
	struct ltx_trailer ot;
	int *fds = NULL, out = -1, rc = 0;
	size_t n = 0, cap = 0;
	uint64_t next;
	char stage[64];

	*out_fd = -1;
	for (next = from; next <= to;) {
		struct ltx_header h;
		int fd;

		rc = fs_history_open(c->fs, name, next, &fd, &h, err);
		if (rc == -ENOENT && n > 0 && to == UINT64_MAX) {
			rc = 0;
			break; /* the head */
		}
		if (rc < 0) {
			if (rc == -ENOENT)
				ltfs_err_set(err, rc, "'%s': no history file starts at txid %llu", name,
					     (unsigned long long)next);
			goto out;
		}
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct ltx_decoder **d = realloc(decs, ncap * sizeof(*d));
			int *f = d ? realloc(fds, ncap * sizeof(*f)) : NULL;

			if (d)
				decs = d;
			if (!d || !f) {
				close(fd);
				rc = ltfs_err_set(err, -ENOMEM, NULL);
				goto out;
			}
			fds = f;
			cap = ncap;
		}
		fds[n] = fd;
		decs[n] = NULL;
		n++;
		rc = ltx_decoder_open_fd(&decs[n - 1], &fds[n - 1], err);
		if (rc < 0) {
			ltfs_err_prefix(err, "'%s'", name);
			goto out;
		}
		next = h.max_txid + 1;
		if (h.max_txid >= to)
			break;
	}
	out = fs_stage_create(c->fs, stage, err);
	if (out < 0) {
		rc = out;
		goto out;
	}
	fs_stage_discard(c->fs, stage); /* used through the descriptor only */
	rc = ltx_compact(decs, n, NULL, ltx_write_fd, &out, oh, &ot, err);
	if (rc < 0)
		ltfs_err_prefix(err, "'%s': compact", name);
out:
	for (size_t i = 0; i < n; i++) {
		ltx_decoder_free(decs[i]);
		close(fds[i]);
	}
	free(decs);
	free(fds);
	if (rc < 0) {
		if (out >= 0)
			close(out);
		return rc;
	}
	*out_fd = out;
	return 0;
}
