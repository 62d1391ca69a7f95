/*
 * seed.c - put a database into a data dir before the filesystem opens it,
 * as a node bootstrapping from the bucket does: the file becomes
 * DATA/dbs/NAME/database and its history one snapshot 1-TXID, so that
 * start-up verification accepts it and the next commit continues the
 * chain at TXID + 1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/fs_int.h"

static int mkdir_at(int dirfd, const char *name, bool must_be_new, struct ltfs_err *err,
		    const char *what)
{
	if (mkdirat(dirfd, name, 0755) == 0 || (!must_be_new && errno == EEXIST))
		return 0;
	return ltfs_err_set(err, errno == EEXIST ? LTFS_E_STATE : -errno, "%s: %s", what,
			    errno == EEXIST ? "exists already" : strerror(errno));
}

/* The directories above a database in a subdirectory of the mount:
 * DATA/tree/A/B for "A/B/app.db". */
static int make_parents(int data, const char *name, struct ltfs_err *err)
{
	char path[FS_PATH_MAX];
	int rc = mkdir_at(data, "tree", false, err, "tree");

	snprintf(path, sizeof(path), "tree/%s", name);
	for (char *p = path + 5; rc == 0 && (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		rc = mkdir_at(data, path, false, err, path);
		*p = '/';
	}
	return rc;
}

bool fs_data_dir_has_dbs(const char *data_dir)
{
	char path[FS_PATH_MAX + 8];
	struct dirent *e;
	bool found = false;
	DIR *d;

	snprintf(path, sizeof(path), "%s/dbs", data_dir);
	d = opendir(path);
	if (!d)
		return false;
	while (!found && (e = readdir(d)) != NULL)
		found = e->d_name[0] != '.';
	closedir(d);
	return found;
}

int fs_seed_db(const char *data_dir, const char *name, const char *db_file, uint64_t txid,
	       int64_t timestamp_ms, struct ltfs_err *err)
{
	char esc[FS_PATH_MAX], path[FS_PATH_MAX * 2], lname[LTX_FILENAME_SIZE];
	struct ltx_header h = { .min_txid = 1, .max_txid = txid, .timestamp = timestamp_ms };
	uint8_t first[LTX_SQLITE_HEADER_SIZE];
	struct ltx_db_header dbh;
	struct ltx_trailer tr;
	struct stat st;
	int data = -1, dbs = -1, dir = -1, ltx = -1, fd = -1, out = -1, rc;

	rc = fs_db_name_check(name, err);
	if (rc < 0)
		return rc;
	fs_escape_name(name, esc, sizeof(esc));
	fd = open(db_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return ltfs_err_set(err, -errno, "'%s': %s", db_file, strerror(errno));
	rc = ltx_pread_full(fd, first, sizeof(first), 0);
	if (rc == 0)
		rc = ltx_db_header_parse(first, sizeof(first), &dbh, err);
	if (rc == 0 && (fstat(fd, &st) < 0 || st.st_size % dbh.page_size != 0))
		rc = ltfs_err_set(err, LTFS_E_CORRUPT, "'%s': size is not a whole number of pages",
				  db_file);
	if (rc < 0)
		goto out;
	h.page_size = dbh.page_size;
	h.commit = (uint32_t)(st.st_size / dbh.page_size);

	if (mkdir(data_dir, 0755) < 0 && errno != EEXIST) {
		rc = ltfs_err_set(err, -errno, "data dir '%s': %s", data_dir, strerror(errno));
		goto out;
	}
	data = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (data < 0 || (rc = mkdir_at(data, "dbs", false, err, "dbs")) < 0 ||
	    (rc = make_parents(data, name, err)) < 0 ||
	    (dbs = openat(data, "dbs", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (rc = mkdir_at(dbs, esc, true, err, name)) < 0 ||
	    (dir = openat(dbs, esc, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
	    (rc = mkdir_at(dir, "ltx", false, err, "ltx")) < 0 ||
	    (ltx = openat(dir, "ltx", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		if (rc == 0)
			rc = ltfs_err_set(err, -errno, "'%s/dbs/%s': %s", data_dir, esc, strerror(errno));
		goto out;
	}
	ltx_format_filename(1, txid, lname);
	out = openat(ltx, "seed.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		rc = ltfs_err_set(err, -errno, "'%s/dbs/%s/ltx': %s", data_dir, esc, strerror(errno));
		goto out;
	}
	rc = ltx_encode_db_fd(fd, &h, NULL, ltx_write_fd, &out, &tr, err);
	if (rc == 0 && fsync(out) < 0)
		rc = ltfs_err_set(err, -errno, "fsync: %s", strerror(errno));
	if (rc == 0 && renameat(ltx, "seed.tmp", ltx, lname) < 0)
		rc = ltfs_err_set(err, -errno, "rename: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s/dbs/%s/database", data_dir, esc);
	if (rc == 0 && rename(db_file, path) < 0)
		rc = ltfs_err_set(err, -errno, "'%s' to '%s': %s", db_file, path, strerror(errno));
	if (rc == 0 && (fsync(ltx) < 0 || fsync(dir) < 0 || fsync(dbs) < 0))
		rc = ltfs_err_set(err, -errno, "fsync '%s': %s", path, strerror(errno));
	if (rc < 0)
		unlinkat(ltx, "seed.tmp", 0);
out:
	if (rc < 0)
		ltfs_err_prefix(err, "seed '%s'", name);
	{
		int fds[] = { fd, out, ltx, dir, dbs, data };

		for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
			if (fds[i] >= 0)
				close(fds[i]);
	}
	return rc;
}
