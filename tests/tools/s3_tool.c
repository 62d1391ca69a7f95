/*
 * s3_tool.c - drives the project's S3 client (cluster/s3.c) from shell
 * tests against a real server. Settings come from the same AWS_*
 * variables ltfs reads.
 *
 *   s3-tool URL put KEY FILE [--if-none-match | --if-match ETAG | --epoch N |
 *                             --len N]
 *                                     prints the ETag; --epoch sets the
 *                                     x-amz-meta-ltfs-epoch a primary puts;
 *                                     --len claims N bytes (a file that
 *                                     shrank while it was uploaded)
 *   s3-tool URL get KEY [OFF LEN]     object (or a range) to stdout
 *   s3-tool URL getfd KEY OUT         whole object into file OUT
 *   s3-tool URL head KEY              "size etag"
 *   s3-tool URL list PREFIX           "key size etag" per object
 *   s3-tool URL delete KEY
 *
 * URL is s3://BUCKET[/PREFIX]; KEY and PREFIX are full keys. A put above
 * LTFS_S3_PART_SIZE bytes (when set) is a multipart upload. Exit status:
 * 0 ok, 3 not found, 4 precondition failed, 5 access denied, 1 other.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/cluster.h"

static int print_obj(void *ctx, const struct s3_object *o)
{
	(void)ctx;
	printf("%s %llu %s\n", o->key, (unsigned long long)o->size, o->etag);
	return 0;
}

static int exit_code(int rc)
{
	return rc == 0 ? 0 : rc == -ENOENT ? 3 : rc == LTFS_E_CONFLICT ? 4 : rc == -EACCES ? 5 : 1;
}

int main(int argc, char **argv)
{
	struct s3_config cfg = { .path_style = -1 };
	struct ltfs_err err = { 0 };
	struct s3_conn *c = NULL;
	struct s3 *s3 = NULL;
	const char *op;
	int rc;

	if (argc < 4) {
		fprintf(stderr, "usage: see tests/tools/s3_tool.c\n");
		return 2;
	}
	cfg.url = argv[1];
	op = argv[2];
	if (getenv("LTFS_S3_PART_SIZE"))
		cfg.part_size = strtoull(getenv("LTFS_S3_PART_SIZE"), NULL, 10);
	rc = s3_open(&s3, &cfg, &err);
	if (rc == 0)
		rc = s3_conn_open(s3, &c, &err);
	if (rc < 0)
		goto out;
	if (strcmp(op, "put") == 0 && argc >= 5) {
		struct s3_put_opts o = { 0 };
		char etag[S3_ETAG_MAX];
		struct stat st;
		int fd = open(argv[4], O_RDONLY);
		uint64_t len;

		if (argc == 6 && strcmp(argv[5], "--if-none-match") == 0)
			o.if_none_match = true;
		else if (argc == 7 && strcmp(argv[5], "--if-match") == 0)
			o.if_match = argv[6];
		else if (argc == 7 && strcmp(argv[5], "--epoch") == 0)
			o.epoch = strtoull(argv[6], NULL, 10);
		if (fd < 0 || fstat(fd, &st) < 0) {
			rc = ltfs_err_set(&err, -errno, "%s: %s", argv[4], strerror(errno));
			goto out;
		}
		len = argc == 7 && strcmp(argv[5], "--len") == 0 ? strtoull(argv[6], NULL, 10)
								: (uint64_t)st.st_size;
		rc = s3_put_fd(c, argv[3], fd, len, &o, etag, &err);
		close(fd);
		if (rc == 0)
			printf("%s\n", etag);
	} else if (strcmp(op, "get") == 0) {
		struct ltfs_buf b;

		ltfs_buf_init(&b, 1u << 30);
		rc = s3_get(c, argv[3], argc > 5 ? strtoull(argv[4], NULL, 10) : 0,
			    argc > 5 ? strtoull(argv[5], NULL, 10) : 0, &b, NULL, &err);
		if (rc == 0 && b.len)
			fwrite(b.data, 1, b.len, stdout);
		ltfs_buf_release(&b);
	} else if (strcmp(op, "getfd") == 0 && argc == 5) {
		int fd = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC, 0644);
		uint64_t n = 0;

		if (fd < 0) {
			rc = ltfs_err_set(&err, -errno, "%s: %s", argv[4], strerror(errno));
			goto out;
		}
		rc = s3_get_fd(c, argv[3], fd, &n, &err);
		close(fd);
	} else if (strcmp(op, "head") == 0) {
		struct s3_object o;

		rc = s3_head(c, argv[3], &o, &err);
		if (rc == 0)
			printf("%llu %s\n", (unsigned long long)o.size, o.etag);
	} else if (strcmp(op, "list") == 0) {
		rc = s3_list(c, argv[3], print_obj, NULL, &err);
	} else if (strcmp(op, "delete") == 0) {
		rc = s3_delete(c, argv[3], &err);
	} else {
		fprintf(stderr, "s3-tool: unknown operation '%s'\n", op);
		rc = 2;
	}
out:
	if (rc < 0)
		fprintf(stderr, "s3-tool: %s\n", err.msg);
	s3_conn_free(c);
	s3_free(s3);
	return rc == 2 ? 2 : exit_code(rc);
}
