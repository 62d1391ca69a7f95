/*
 * ltx_cmd.c - "ltfs ltx": inspect, verify, checksum, encode, apply and
 * compact LTX files. Every file is fully verified before it is trusted;
 * outputs are written to a temp file, synced and renamed into place.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmd/cmd.h"

static const char ltx_usage[] =
	"usage: ltfs ltx SUBCOMMAND [OPTIONS] ARGS\n"
	"\n"
	"  dump [--json] FILE              header, pages with checksums, index, trailer\n"
	"  verify FILE...                  decode and check every file; a list of\n"
	"                                  files must also form a contiguous chain\n"
	"  checksum DB                     database checksum of a SQLite file\n"
	"  encode-db [OPTIONS] DB -o OUT   snapshot of a SQLite file as one LTX file\n"
	"  apply DB FILE...                apply a chain of LTX files onto DB\n"
	"  compact [OPTIONS] -o OUT FILE...  merge a contiguous chain into one file\n"
	"\n"
	"Reads LTX format 3 (both page encodings) and format 1 (LiteFS);\n"
	"writes format 3. 'ltfs ltx SUBCOMMAND --help' for details.\n"
	"Exit status: 0 ok, 1 invalid file or runtime error, 2 usage error.\n";

static const char dump_usage[] =
	"usage: ltfs ltx dump [--json] FILE\n"
	"\n"
	"Decodes FILE completely and prints its header, one line per page (page\n"
	"number, frame offset and size, page checksum), the page index and the\n"
	"trailer. The file checksum is verified; an invalid file prints what was\n"
	"read, then the error, and exits 1.\n"
	"\n"
	"  --json    one JSON object instead of text\n";

static const char verify_usage[] =
	"usage: ltfs ltx verify FILE...\n"
	"\n"
	"Decodes every file and checks every rule of the format (checksums, page\n"
	"order, index, trailer). With several files, they must also form a chain\n"
	"in the order given: each file starts at the previous file's max TXID + 1\n"
	"and, with checksums, its pre-apply checksum equals the previous file's\n"
	"post-apply checksum. Exits 0 only if everything holds.\n";

static const char checksum_usage[] =
	"usage: ltfs ltx checksum DB\n"
	"\n"
	"Prints the database checksum of a SQLite file (hex): the XOR of the\n"
	"CRC-64 page checksums of every page except the lock page, with bit 63\n"
	"set. This is the value LTX files carry as post-apply checksum.\n";

static const char encode_usage[] =
	"usage: ltfs ltx encode-db [OPTIONS] DB -o OUT.ltx\n"
	"\n"
	"Writes a snapshot of the SQLite file DB (TXID 1..N, every page).\n"
	"Copy DB first if it may change while being read.\n"
	"\n"
	"  -o, --output FILE     output path (written atomically)\n"
	"  --txid N              max TXID of the snapshot (default 1)\n"
	"  --encoding block|frame  page encoding: block (default; ltx >= 0.5.2,\n"
	"                        Litestream >= 0.5.16) or frame (readable by\n"
	"                        every Litestream 0.5.x)\n"
	"  --no-checksum         write NoChecksum files, as Litestream does\n";

static const char apply_usage[] =
	"usage: ltfs ltx apply DB FILE...\n"
	"\n"
	"Applies the LTX files in order onto the SQLite file DB (created if\n"
	"missing). Each file is verified before any page is written, must\n"
	"continue the database (its pre-apply checksum equals the database's\n"
	"checksum, unless it is a snapshot) and must produce its post-apply\n"
	"checksum. DB is synced at the end. Prints the final TXID and checksum.\n"
	"Do not apply to a database that is open in another program.\n";

static const char compact_usage[] =
	"usage: ltfs ltx compact [OPTIONS] -o OUT FILE...\n"
	"\n"
	"Merges LTX files that form a contiguous TXID run into one file: the\n"
	"newest copy of each page wins, pages beyond the final commit are\n"
	"dropped, a snapshot first file gives a snapshot. All inputs must share\n"
	"the page size and checksum mode.\n"
	"\n"
	"  -o, --output FILE     output path (written atomically)\n"
	"  --encoding block|frame  page encoding of the output (default block)\n";

/* ---- helpers ---------------------------------------------------------- */

static int open_ltx(const char *path, struct ltx_decoder **dec, int *fd,
		    struct ltfs_err *err)
{
	int rc;

	*dec = NULL;
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0)
		return ltfs_err_set(err, -errno, "%s", strerror(errno));
	rc = ltx_decoder_open_fd(dec, fd, 0, err);
	if (rc < 0) {
		close(*fd);
		*fd = -1;
	}
	return rc;
}

static int parse_encoding(const char *s, enum ltx_page_encoding *out)
{
	if (strcmp(s, "block") == 0)
		*out = LTX_ENC_BLOCK;
	else if (strcmp(s, "frame") == 0)
		*out = LTX_ENC_FRAME;
	else
		return -1;
	return 0;
}

/* Output written to "OUT.tmp-PID", synced, renamed, directory synced. */
struct out_file {
	char path[4096];
	char tmp[4200];
	int fd;
};

static int out_open(struct out_file *o, const char *path)
{
	struct stat st;

	/* The temp file is renamed over the output: never over a device. */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		o->fd = -1;
		return -EEXIST;
	}
	snprintf(o->path, sizeof(o->path), "%s", path);
	snprintf(o->tmp, sizeof(o->tmp), "%s.tmp-%ld", path, (long)getpid());
	o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	return o->fd < 0 ? -errno : 0;
}

static int fsync_dir_of(const char *path)
{
	char copy[4096];
	int dfd, rc = 0;

	snprintf(copy, sizeof(copy), "%s", path);
	dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	if (fsync(dfd) < 0)
		rc = -errno;
	close(dfd);
	return rc;
}

static int out_commit(struct out_file *o)
{
	int rc = 0;

	if (fsync(o->fd) < 0)
		rc = -errno;
	if (close(o->fd) < 0 && rc == 0)
		rc = -errno;
	o->fd = -1;
	if (rc == 0 && rename(o->tmp, o->path) < 0)
		rc = -errno;
	if (rc == 0)
		rc = fsync_dir_of(o->path);
	if (rc < 0)
		unlink(o->tmp);
	return rc;
}

static void out_abort(struct out_file *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
	unlink(o->tmp);
}

/* Parse an unsigned decimal with range check. */
static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -1;
	*out = v;
	return 0;
}

/* ---- dump ------------------------------------------------------------- */

static const char *version_name(enum ltx_version v, const struct ltx_header *h)
{
	if (v == LTX_VERSION_1)
		return (h->flags & LTX_HEADER_FLAG_COMPRESS_LZ4) ? "1 (lz4 body)"
								  : "1";
	return "3";
}

static void dump_header_text(const struct ltx_header *h, enum ltx_version v)
{
	char ts[40];

	ltx_format_timestamp(h->timestamp, ts, sizeof(ts));
	printf("# HEADER\n");
	printf("version:    %s\n", version_name(v, h));
	printf("flags:      0x%08x%s\n", h->flags,
	       (h->flags & LTX_HEADER_FLAG_NO_CHECKSUM) ? " (no checksum)" : "");
	printf("page size:  %u\n", h->page_size);
	printf("commit:     %u\n", h->commit);
	printf("min txid:   %016" PRIx64 " (%" PRIu64 ")\n", h->min_txid, h->min_txid);
	printf("max txid:   %016" PRIx64 " (%" PRIu64 ")\n", h->max_txid, h->max_txid);
	printf("timestamp:  %s (%" PRId64 ")\n", ts, h->timestamp);
	printf("pre-apply:  %016" PRIx64 "\n", h->pre_apply_checksum);
	printf("wal offset: %" PRId64 "\n", h->wal_offset);
	printf("wal size:   %" PRId64 "\n", h->wal_size);
	printf("wal salt:   %08x %08x\n", h->wal_salt1, h->wal_salt2);
	printf("node id:    %016" PRIx64 "\n", h->node_id);
	printf("\n# PAGES\n");
	if (v == LTX_VERSION_3)
		printf("%-8s %-10s %-12s %-8s %-6s %s\n", "frame", "pgno",
		       "offset", "size", "flags", "checksum");
	else
		printf("%-8s %-10s %s\n", "frame", "pgno", "checksum");
}

static json_t *header_json(const struct ltx_header *h, enum ltx_version v)
{
	char buf[40];
	json_t *o = json_object();

	json_object_set_new(o, "version", json_integer(v));
	snprintf(buf, sizeof(buf), "0x%08x", h->flags);
	json_object_set_new(o, "flags", json_string(buf));
	json_object_set_new(o, "page_size", json_integer(h->page_size));
	json_object_set_new(o, "commit", json_integer(h->commit));
	json_object_set_new(o, "min_txid", json_integer((json_int_t)h->min_txid));
	json_object_set_new(o, "max_txid", json_integer((json_int_t)h->max_txid));
	json_object_set_new(o, "timestamp_ms", json_integer(h->timestamp));
	ltx_format_timestamp(h->timestamp, buf, sizeof(buf));
	json_object_set_new(o, "timestamp", json_string(buf));
	snprintf(buf, sizeof(buf), "%016" PRIx64, h->pre_apply_checksum);
	json_object_set_new(o, "pre_apply_checksum", json_string(buf));
	json_object_set_new(o, "wal_offset", json_integer(h->wal_offset));
	json_object_set_new(o, "wal_size", json_integer(h->wal_size));
	snprintf(buf, sizeof(buf), "%08x", h->wal_salt1);
	json_object_set_new(o, "wal_salt1", json_string(buf));
	snprintf(buf, sizeof(buf), "%08x", h->wal_salt2);
	json_object_set_new(o, "wal_salt2", json_string(buf));
	snprintf(buf, sizeof(buf), "%016" PRIx64, h->node_id);
	json_object_set_new(o, "node_id", json_string(buf));
	return o;
}

static int cmd_dump(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ltx_decoder *dec;
	struct ltx_frame_info fi;
	struct ltx_trailer tr;
	struct ltfs_err err = { 0 };
	const struct ltx_header *h;
	const uint8_t *page;
	json_t *root = NULL, *pages = NULL;
	bool json = false;
	uint32_t pgno, frame = 0;
	char buf[40];
	int c, fd, rc;

	while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'h')
			return fputs(dump_usage, stdout), EXIT_OK;
		else
			return EXIT_USAGE;
	}
	if (argc - optind != 1)
		return cmd_usage_error("ltx dump", "expected exactly one FILE (see --help)");
	rc = open_ltx(argv[optind], &dec, &fd, &err);
	if (rc < 0)
		return cmd_fail("ltx dump", "'%s': %s", argv[optind], err.msg);
	h = ltx_decoder_header(dec);
	if (json) {
		root = json_object();
		json_object_set_new(root, "file", json_string(argv[optind]));
		json_object_set_new(root, "header",
				    header_json(h, ltx_decoder_version(dec)));
		pages = json_array();
		json_object_set_new(root, "pages", pages);
	} else {
		dump_header_text(h, ltx_decoder_version(dec));
	}
	while ((rc = ltx_decoder_next(dec, &pgno, &page, &err)) == 1) {
		ltx_decoder_frame_info(dec, &fi);
		if (json) {
			json_t *p = json_object();

			json_object_set_new(p, "pgno", json_integer(pgno));
			snprintf(buf, sizeof(buf), "%016" PRIx64, fi.checksum);
			json_object_set_new(p, "checksum", json_string(buf));
			if (ltx_decoder_version(dec) == LTX_VERSION_3) {
				json_object_set_new(p, "offset", json_integer((json_int_t)fi.offset));
				json_object_set_new(p, "size", json_integer((json_int_t)fi.size));
				json_object_set_new(p, "flags", json_integer(fi.flags));
				json_object_set_new(p, "payload", json_integer(fi.payload));
			}
			json_array_append_new(pages, p);
		} else if (ltx_decoder_version(dec) == LTX_VERSION_3) {
			printf("%-8u %-10u %-12" PRIu64 " %-8" PRIu64 " 0x%04x %016" PRIx64 "\n",
			       frame, pgno, fi.offset, fi.size, fi.flags, fi.checksum);
		} else {
			printf("%-8u %-10u %016" PRIx64 "\n", frame, pgno, fi.checksum);
		}
		frame++;
	}
	if (rc == 0)
		rc = ltx_decoder_finish(dec, &tr, &err);
	if (rc == 0) {
		if (json) {
			json_t *t = json_object();

			if (ltx_decoder_version(dec) == LTX_VERSION_3) {
				json_t *ix = json_object();

				json_object_set_new(ix, "offset",
						    json_integer((json_int_t)ltx_decoder_index_offset(dec)));
				json_object_set_new(ix, "size",
						    json_integer((json_int_t)ltx_decoder_index_size(dec)));
				json_object_set_new(root, "index", ix);
			}
			snprintf(buf, sizeof(buf), "%016" PRIx64, tr.post_apply_checksum);
			json_object_set_new(t, "post_apply_checksum", json_string(buf));
			snprintf(buf, sizeof(buf), "%016" PRIx64, tr.file_checksum);
			json_object_set_new(t, "file_checksum", json_string(buf));
			json_object_set_new(root, "trailer", t);
			json_object_set_new(root, "valid", json_true());
		} else {
			if (ltx_decoder_version(dec) == LTX_VERSION_3)
				printf("\n# INDEX\noffset:     %" PRIu64 "\nsize:       %" PRIu64
				       " bytes, %u entries\n",
				       ltx_decoder_index_offset(dec),
				       ltx_decoder_index_size(dec), frame);
			printf("\n# TRAILER\npost-apply: %016" PRIx64
			       "\nfile checksum: %016" PRIx64 " (verified)\n",
			       tr.post_apply_checksum, tr.file_checksum);
		}
	}
	if (json) {
		if (rc < 0) {
			json_object_set_new(root, "valid", json_false());
			json_object_set_new(root, "error", json_string(err.msg));
		}
		json_dumpf(root, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(root);
	}
	ltx_decoder_free(dec);
	close(fd);
	if (rc < 0)
		return cmd_fail("ltx dump", "'%s': %s", argv[optind], err.msg);
	return EXIT_OK;
}

/* ---- verify ----------------------------------------------------------- */

static int cmd_verify(int argc, char **argv)
{
	struct ltx_header prev_h = { 0 }, h;
	struct ltx_trailer prev_t = { 0 }, t;
	bool have_prev = false;
	int ok = 0, bad = 0;

	if (cmd_wants_help(argc, argv))
		return fputs(verify_usage, stdout), EXIT_OK;
	if (argc < 2)
		return cmd_usage_error("ltx verify", "expected one or more FILEs (see --help)");
	for (int i = 1; i < argc; i++) {
		struct ltfs_err err = { 0 };
		int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
		int rc;

		if (fd < 0) {
			rc = ltfs_err_set(&err, -errno, "%s", strerror(errno));
		} else {
			rc = ltx_verify_fd(fd, &h, &t, &err);
			close(fd);
		}
		if (rc < 0) {
			/* the next file cannot be linked to an unreadable one */
			have_prev = false;
			printf("%s: %s\n", argv[i], err.msg);
			bad++;
			continue;
		}
		if (have_prev && h.min_txid != prev_h.max_txid + 1)
			rc = ltfs_err_set(&err, LTFS_E_TXID,
					  "chain broken: starts at TXID %" PRIu64
					  ", previous file ends at %" PRIu64,
					  h.min_txid, prev_h.max_txid);
		else if (have_prev && ltx_header_has_checksums(&h) &&
			 ltx_header_has_checksums(&prev_h) &&
			 !ltx_header_is_snapshot(&h) &&
			 h.pre_apply_checksum != prev_t.post_apply_checksum)
			rc = ltfs_err_set(&err, LTFS_E_CHECKSUM,
					  "chain broken: pre-apply %016" PRIx64
					  " differs from the previous post-apply %016" PRIx64,
					  h.pre_apply_checksum, prev_t.post_apply_checksum);
		if (rc < 0) {
			printf("%s: %s\n", argv[i], err.msg);
			bad++;
		} else {
			printf("%s: ok (txid %" PRIu64 "-%" PRIu64 ", commit %u)\n",
			       argv[i], h.min_txid, h.max_txid, h.commit);
			ok++;
		}
		prev_h = h;
		prev_t = t;
		have_prev = true;
	}
	printf("%d ok, %d invalid\n", ok, bad);
	return bad ? EXIT_FAIL : EXIT_OK;
}

/* ---- checksum --------------------------------------------------------- */

/* Open a SQLite file and learn its page size and page count. */
static int open_db(const char *path, int flags, int *fd, uint32_t *page_size,
		   uint32_t *npages, struct ltfs_err *err)
{
	uint8_t hdr[LTX_SQLITE_HEADER_SIZE];
	struct ltx_db_header dbh;
	struct stat st;
	ssize_t n;
	int rc;

	*fd = open(path, flags | O_CLOEXEC, 0644);
	if (*fd < 0)
		return ltfs_err_set(err, -errno, "%s", strerror(errno));
	if (fstat(*fd, &st) < 0) {
		rc = ltfs_err_set(err, -errno, "%s", strerror(errno));
		goto fail;
	}
	*npages = 0;
	*page_size = 0;
	if (st.st_size == 0)
		return 0;
	n = pread(*fd, hdr, sizeof(hdr), 0);
	if (n != (ssize_t)sizeof(hdr)) {
		rc = ltfs_err_set(err, LTFS_E_FORMAT,
				  "not a SQLite database (shorter than its header)");
		goto fail;
	}
	rc = ltx_db_header_parse(hdr, sizeof(hdr), &dbh, err);
	if (rc < 0)
		goto fail;
	if (st.st_size % dbh.page_size != 0 ||
	    (uint64_t)st.st_size / dbh.page_size > UINT32_MAX) {
		rc = ltfs_err_set(err, LTFS_E_CORRUPT,
				  "file size %lld is not a whole number of %u-byte pages",
				  (long long)st.st_size, dbh.page_size);
		goto fail;
	}
	*page_size = dbh.page_size;
	*npages = (uint32_t)((uint64_t)st.st_size / dbh.page_size);
	return 0;
fail:
	close(*fd);
	*fd = -1;
	return rc;
}

static int cmd_checksum(int argc, char **argv)
{
	struct ltfs_err err = { 0 };
	uint32_t ps, npages;
	uint64_t sum;
	int fd, rc;

	if (cmd_wants_help(argc, argv))
		return fputs(checksum_usage, stdout), EXIT_OK;
	if (argc != 2)
		return cmd_usage_error("ltx checksum", "expected exactly one DB (see --help)");
	rc = open_db(argv[1], O_RDONLY, &fd, &ps, &npages, &err);
	if (rc == 0) {
		sum = LTX_CHECKSUM_FLAG;
		if (npages > 0)
			rc = ltx_db_checksum_fd(fd, ps, npages, &sum, &err);
		close(fd);
	}
	if (rc < 0)
		return cmd_fail("ltx checksum", "'%s': %s", argv[1], err.msg);
	printf("%016" PRIx64 "\n", sum);
	return EXIT_OK;
}

/* ---- encode-db -------------------------------------------------------- */

static int cmd_encode_db(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "txid", required_argument, NULL, 't' },
		{ "encoding", required_argument, NULL, 'e' },
		{ "no-checksum", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ltx_encoder_opts eopts = { .encoding = LTX_ENC_BLOCK };
	struct ltx_header h = { 0 };
	struct ltx_trailer tr;
	struct ltfs_err err = { 0 };
	struct out_file out = { .fd = -1 };
	const char *output = NULL;
	uint64_t txid = 1;
	uint32_t ps, npages;
	struct timespec now;
	int c, fd = -1, rc;

	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			output = optarg;
			break;
		case 't':
			if (parse_u64(optarg, &txid) < 0 || txid == 0)
				return cmd_usage_error("ltx encode-db", "--txid: '%s' is not a TXID >= 1", optarg);
			break;
		case 'e':
			if (parse_encoding(optarg, &eopts.encoding) < 0)
				return cmd_usage_error("ltx encode-db", "--encoding: '%s' is not block or frame", optarg);
			break;
		case 'n':
			h.flags |= LTX_HEADER_FLAG_NO_CHECKSUM;
			break;
		case 'h':
			return fputs(encode_usage, stdout), EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1 || !output)
		return cmd_usage_error("ltx encode-db", "expected DB and -o OUT (see --help)");
	rc = open_db(argv[optind], O_RDONLY, &fd, &ps, &npages, &err);
	if (rc == 0 && npages == 0)
		rc = ltfs_err_set(&err, LTFS_E_USAGE, "database is empty");
	if (rc < 0)
		goto fail;
	clock_gettime(CLOCK_REALTIME, &now);
	h.page_size = ps;
	h.commit = npages;
	h.min_txid = 1;
	h.max_txid = txid;
	h.timestamp = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	rc = out_open(&out, output);
	if (rc < 0) {
		ltfs_err_set(&err, rc, "output '%s': %s", output,
			     rc == -EEXIST ? "exists and is not a regular file"
					   : strerror(-rc));
		goto fail;
	}
	rc = ltx_encode_db_fd(fd, &h, &eopts, ltx_write_fd, &out.fd, &tr, &err);
	if (rc == 0 && (rc = out_commit(&out)) < 0)
		ltfs_err_set(&err, rc, "'%s': %s", output, strerror(-rc));
	if (rc < 0)
		goto fail;
	close(fd);
	printf("%s: txid %" PRIu64 "-%" PRIu64 ", %u pages, post-apply %016" PRIx64 "\n",
	       output, h.min_txid, h.max_txid, npages, tr.post_apply_checksum);
	return EXIT_OK;
fail:
	if (out.fd >= 0)
		out_abort(&out);
	if (fd >= 0)
		close(fd);
	return cmd_fail("ltx encode-db", "'%s': %s", argv[optind], err.msg);
}

/* ---- apply ------------------------------------------------------------ */

static int cmd_apply(int argc, char **argv)
{
	struct ltfs_err err = { 0 };
	struct ltx_header h = { 0 };
	uint64_t sum = LTX_CHECKSUM_FLAG, prev_max = 0;
	uint32_t ps, npages;
	int fd, rc;

	if (cmd_wants_help(argc, argv))
		return fputs(apply_usage, stdout), EXIT_OK;
	if (argc < 3)
		return cmd_usage_error("ltx apply", "expected DB and one or more FILEs (see --help)");
	rc = open_db(argv[1], O_RDWR | O_CREAT, &fd, &ps, &npages, &err);
	if (rc == 0 && npages > 0)
		rc = ltx_db_checksum_fd(fd, ps, npages, &sum, &err);
	if (rc < 0)
		return cmd_fail("ltx apply", "'%s': %s", argv[1], err.msg);
	for (int i = 2; i < argc; i++) {
		int lfd = open(argv[i], O_RDONLY | O_CLOEXEC);
		struct ltx_header fh;

		if (lfd < 0) {
			rc = cmd_fail("ltx apply", "'%s': %s", argv[i], strerror(errno));
			goto out;
		}
		rc = ltx_apply_fd(fd, lfd, &sum, &fh, &err);
		close(lfd);
		if (rc == 0 && i > 2 && !ltx_header_is_snapshot(&fh) &&
		    fh.min_txid != prev_max + 1)
			rc = ltfs_err_set(&err, LTFS_E_TXID,
					  "starts at TXID %" PRIu64 ", previous file ends at %" PRIu64
					  " (checked after applying: the database now holds this file)",
					  fh.min_txid, prev_max);
		if (rc < 0) {
			rc = cmd_fail("ltx apply", "'%s': %s", argv[i], err.msg);
			goto out;
		}
		prev_max = fh.max_txid;
		h = fh;
	}
	if (fsync(fd) < 0) {
		rc = cmd_fail("ltx apply", "'%s': fsync: %s", argv[1], strerror(errno));
		goto out;
	}
	printf("%s: txid %" PRIu64 ", %u pages, checksum %016" PRIx64 "\n",
	       argv[1], h.max_txid, h.commit, sum);
	rc = EXIT_OK;
out:
	close(fd);
	return rc;
}

/* ---- compact ---------------------------------------------------------- */

static int cmd_compact(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "encoding", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ltx_compact_opts copts = { .enc = { .encoding = LTX_ENC_BLOCK } };
	struct ltx_decoder **decs = NULL;
	struct out_file out = { .fd = -1 };
	struct ltx_header oh;
	struct ltx_trailer ot;
	struct ltfs_err err = { 0 };
	const char *output = NULL;
	int *fds = NULL, n, c, rc = 0;

	while ((c = getopt_long(argc, argv, "+o:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			output = optarg;
			break;
		case 'e':
			if (parse_encoding(optarg, &copts.enc.encoding) < 0)
				return cmd_usage_error("ltx compact", "--encoding: '%s' is not block or frame", optarg);
			break;
		case 'h':
			return fputs(compact_usage, stdout), EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	n = argc - optind;
	if (n < 1 || !output)
		return cmd_usage_error("ltx compact", "expected -o OUT and one or more FILEs (see --help)");
	decs = calloc((size_t)n, sizeof(*decs));
	fds = calloc((size_t)n, sizeof(*fds));
	if (!decs || !fds) {
		rc = cmd_fail("ltx compact", "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++)
		fds[i] = -1;
	for (int i = 0; i < n; i++) {
		if (open_ltx(argv[optind + i], &decs[i], &fds[i], &err) < 0) {
			rc = cmd_fail("ltx compact", "'%s': %s", argv[optind + i], err.msg);
			goto out;
		}
	}
	if ((rc = out_open(&out, output)) < 0) {
		rc = cmd_fail("ltx compact", "output '%s': %s", output,
			      rc == -EEXIST ? "exists and is not a regular file"
					    : strerror(-rc));
		goto out;
	}
	if (ltx_compact(decs, (size_t)n, &copts, ltx_write_fd, &out.fd, &oh, &ot,
			&err) < 0) {
		out_abort(&out);
		rc = cmd_fail("ltx compact", "%s", err.msg);
		goto out;
	}
	if ((rc = out_commit(&out)) < 0) {
		rc = cmd_fail("ltx compact", "'%s': %s", output, strerror(-rc));
		goto out;
	}
	printf("%s: txid %" PRIu64 "-%" PRIu64 ", commit %u, post-apply %016" PRIx64 "\n",
	       output, oh.min_txid, oh.max_txid, oh.commit, ot.post_apply_checksum);
	rc = EXIT_OK;
out:
	for (int i = 0; decs && i < n; i++) {
		ltx_decoder_free(decs[i]);
		if (fds[i] >= 0)
			close(fds[i]);
	}
	free(decs);
	free(fds);
	return rc;
}

/* ---- dispatch --------------------------------------------------------- */

int cmd_ltx(struct cmd_ctx *ctx, int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} subs[] = {
		{ "dump", cmd_dump },
		{ "verify", cmd_verify },
		{ "checksum", cmd_checksum },
		{ "encode-db", cmd_encode_db },
		{ "apply", cmd_apply },
		{ "compact", cmd_compact },
	};

	(void)ctx;
	if (argc < 2) {
		fputs(ltx_usage, stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(ltx_usage, stdout);
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (strcmp(argv[1], subs[i].name) == 0) {
			optind = 0; /* glibc: 0 also resets the scan order the "+" of the first parse set */
			return subs[i].fn(argc - 1, argv + 1);
		}
	}
	return cmd_usage_error("ltx", "unknown subcommand '%s' (see 'ltfs ltx --help')",
			       argv[1]);
}
