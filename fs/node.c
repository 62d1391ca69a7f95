/*
 * node.c - the node table (FUSE inodes by path) and name helpers.
 *
 * Nodes are found by their path in the mount through a hash table; the
 * kernel refers to them by pointer. A node leaves the table when its name
 * goes away (unlink, rename) and is freed once the kernel forgot it and no
 * handle or database refers to it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/fs_int.h"

static uint64_t hash_path(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h;
}

int fs_nodes_init(struct fs *fs)
{
	fs->table_size = 1024;
	fs->table = calloc(fs->table_size, sizeof(*fs->table));
	if (!fs->table)
		return -ENOMEM;
	fs->root = fs_node_new(fs, "", FS_DIR, NULL);
	if (!fs->root)
		return -ENOMEM;
	fs->root->nlookup = 1; /* the kernel never forgets the root */
	return 0;
}

static void node_destroy(struct fs_node *n)
{
	free(n->path);
	free(n);
}

void fs_nodes_free(struct fs *fs)
{
	for (size_t i = 0; fs->table && i < fs->table_size; i++) {
		struct fs_node *n = fs->table[i], *next;

		for (; n; n = next) {
			next = n->hnext;
			node_destroy(n);
		}
	}
	free(fs->table);
	fs->table = NULL;
}

static int grow_table(struct fs *fs)
{
	size_t size = fs->table_size * 2;
	struct fs_node **t = calloc(size, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < fs->table_size; i++) {
		struct fs_node *n = fs->table[i], *next;

		for (; n; n = next) {
			size_t b = hash_path(n->path) & (size - 1);

			next = n->hnext;
			n->hnext = t[b];
			t[b] = n;
		}
	}
	free(fs->table);
	fs->table = t;
	fs->table_size = size;
	return 0;
}

struct fs_node *fs_node_find(struct fs *fs, const char *path)
{
	struct fs_node *n = fs->table[hash_path(path) & (fs->table_size - 1)];

	for (; n; n = n->hnext)
		if (strcmp(n->path, path) == 0)
			return n;
	return NULL;
}

static void hash_insert(struct fs *fs, struct fs_node *n)
{
	size_t b = hash_path(n->path) & (fs->table_size - 1);

	n->hnext = fs->table[b];
	fs->table[b] = n;
	n->hashed = true;
	fs->nnodes++;
}

struct fs_node *fs_node_new(struct fs *fs, const char *path, enum fs_kind kind,
			    struct fs_db *db)
{
	struct fs_node *n;

	if (fs->nnodes >= fs->table_size && grow_table(fs) < 0)
		return NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->path = strdup(path);
	if (!n->path) {
		free(n);
		return NULL;
	}
	n->kind = kind;
	n->db = db;
	n->generation = ++fs->generation;
	hash_insert(fs, n);
	return n;
}

void fs_node_unhash(struct fs *fs, struct fs_node *n)
{
	struct fs_node **pp;

	if (!n->hashed)
		return;
	pp = &fs->table[hash_path(n->path) & (fs->table_size - 1)];
	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	}
	n->hnext = NULL;
	n->hashed = false;
	fs->nnodes--;
}

/* Give a node a new path (rename); consumes new_path. */
void fs_node_rehash(struct fs *fs, struct fs_node *n, char *new_path)
{
	fs_node_unhash(fs, n);
	free(n->path);
	n->path = new_path;
	hash_insert(fs, n);
}

void fs_node_maybe_free(struct fs *fs, struct fs_node *n)
{
	if (n == fs->root || n->nlookup > 0 || n->nopen > 0)
		return;
	/* A database's main node lives as long as the database. */
	if (n->kind == FS_DB && n->db && n->db->node == n)
		return;
	fs_node_unhash(fs, n);
	node_destroy(n);
}

int fs_join_path(char *out, size_t n, const char *dir, const char *name)
{
	int len;

	if (dir[0] == '\0')
		len = snprintf(out, n, "%s", name);
	else
		len = snprintf(out, n, "%s/%s", dir, name);
	return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}

/* Database directory names are the mount path with '%' and '/' escaped, so
 * every database sits flat under DATA/dbs whatever its depth. */
void fs_escape_name(const char *path, char *out, size_t n)
{
	size_t o = 0;

	for (; *path && o + 4 < n; path++) {
		if (*path == '%' || *path == '/') {
			o += (size_t)snprintf(out + o, n - o, "%%%02x",
					      (unsigned char)*path);
		} else {
			out[o++] = *path;
		}
	}
	out[o] = '\0';
}

int fs_unescape_name(const char *esc, char *out, size_t n)
{
	size_t o = 0;

	for (; *esc; esc++) {
		if (o + 1 >= n)
			return -ENAMETOOLONG;
		if (*esc == '%') {
			if (strncmp(esc, "%25", 3) == 0)
				out[o++] = '%';
			else if (strncmp(esc, "%2f", 3) == 0)
				out[o++] = '/';
			else
				return -EINVAL;
			esc += 2;
		} else {
			out[o++] = *esc;
		}
	}
	out[o] = '\0';
	return 0;
}

enum fs_kind fs_suffix_kind(const char *name, size_t *base_len)
{
	static const struct {
		const char *suffix;
		enum fs_kind kind;
	} sfx[] = {
		{ "-journal", FS_JOURNAL },
		{ "-wal", FS_WAL },
		{ "-shm", FS_SHM },
		{ "-pos", FS_POS },
	};
	size_t len = strlen(name);

	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		size_t sl = strlen(sfx[i].suffix);

		if (len > sl && strcmp(name + len - sl, sfx[i].suffix) == 0) {
			*base_len = len - sl;
			return sfx[i].kind;
		}
	}
	*base_len = len;
	return FS_FILE;
}

DIR *fs_opendir_at(int dirfd)
{
	/* A new open file description, not a dup: a dup would share the
	 * read position with every other listing of the same directory. */
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0)
		return NULL;
	d = fdopendir(fd);
	if (!d) {
		int e = errno;

		close(fd);
		errno = e;
	}
	return d;
}
