/*
 * header.c - the LTX header and trailer, file names, timestamps, and the
 * ready-made byte sinks and sources.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ltx/ltx_int.h"

bool ltx_page_size_valid(uint32_t page_size)
{
	return page_size >= LTX_MIN_PAGE_SIZE &&
	       page_size <= LTX_MAX_PAGE_SIZE &&
	       (page_size & (page_size - 1)) == 0;
}

void ltx_header_encode(const struct ltx_header *h, uint8_t out[LTX_HEADER_SIZE])
{
	memset(out, 0, LTX_HEADER_SIZE);
	memcpy(out, LTX_MAGIC, 4);
	ltx_put_be32(out + 4, h->flags);
	ltx_put_be32(out + 8, h->page_size);
	ltx_put_be32(out + 12, h->commit);
	ltx_put_be64(out + 16, h->min_txid);
	ltx_put_be64(out + 24, h->max_txid);
	ltx_put_be64(out + 32, (uint64_t)h->timestamp);
	ltx_put_be64(out + 40, h->pre_apply_checksum);
	ltx_put_be64(out + 48, (uint64_t)h->wal_offset);
	ltx_put_be64(out + 56, (uint64_t)h->wal_size);
	ltx_put_be32(out + 64, h->wal_salt1);
	ltx_put_be32(out + 68, h->wal_salt2);
	ltx_put_be64(out + 72, h->node_id);
}

int ltx_header_decode(const uint8_t in[LTX_HEADER_SIZE], struct ltx_header *h,
		      struct ltfs_err *err)
{
	if (memcmp(in, LTX_MAGIC, 4) != 0)
		return ltfs_err_set(err, LTFS_E_FORMAT,
				    "header: bad magic %02x%02x%02x%02x at offset 0, want 'LTX1'",
				    in[0], in[1], in[2], in[3]);
	h->flags = ltx_get_be32(in + 4);
	h->page_size = ltx_get_be32(in + 8);
	h->commit = ltx_get_be32(in + 12);
	h->min_txid = ltx_get_be64(in + 16);
	h->max_txid = ltx_get_be64(in + 24);
	h->timestamp = (int64_t)ltx_get_be64(in + 32);
	h->pre_apply_checksum = ltx_get_be64(in + 40);
	h->wal_offset = (int64_t)ltx_get_be64(in + 48);
	h->wal_size = (int64_t)ltx_get_be64(in + 56);
	h->wal_salt1 = ltx_get_be32(in + 64);
	h->wal_salt2 = ltx_get_be32(in + 68);
	h->node_id = ltx_get_be64(in + 72);
	for (int i = 80; i < LTX_HEADER_SIZE; i++) {
		if (in[i] != 0)
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "header: reserved byte at offset %d is 0x%02x, must be zero",
					    i, in[i]);
	}
	return 0;
}

int ltx_header_validate(const struct ltx_header *h, enum ltx_version version,
			struct ltfs_err *err)
{
	uint32_t mask = LTX_HEADER_FLAG_NO_CHECKSUM;

	if (version == LTX_VERSION_1)
		mask |= LTX_HEADER_FLAG_COMPRESS_LZ4;
	if (h->flags & ~mask)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "header: invalid flags 0x%08x at offset 4 (allowed mask 0x%08x)",
				    h->flags, mask);
	if (!ltx_page_size_valid(h->page_size))
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "header: page size %u at offset 8 is not a power of two in 512..65536",
				    h->page_size);
	if (h->min_txid == 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "header: min TXID at offset 16 is zero");
	if (h->max_txid < h->min_txid)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "header: max TXID %llu at offset 24 is below min TXID %llu",
				    (unsigned long long)h->max_txid,
				    (unsigned long long)h->min_txid);
	if (h->wal_offset < 0 || h->wal_size < 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "header: negative WAL offset or size at offset 48");
	if (h->wal_offset == 0 && h->wal_size != 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "header: WAL size %lld at offset 56 without a WAL offset",
				    (long long)h->wal_size);
	if ((h->wal_salt1 || h->wal_salt2) && h->wal_offset == 0)
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "header: WAL salt at offset 64 without a WAL offset");
	if (!ltx_header_has_checksums(h)) {
		if (h->pre_apply_checksum != 0)
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "header: pre-apply checksum %016llx at offset 40 not allowed with NoChecksum",
					    (unsigned long long)h->pre_apply_checksum);
	} else if (ltx_header_is_snapshot(h)) {
		if (h->pre_apply_checksum != 0)
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "header: snapshot (min TXID 1) has pre-apply checksum %016llx at offset 40, must be 0",
					    (unsigned long long)h->pre_apply_checksum);
	} else if (!(h->pre_apply_checksum & LTX_CHECKSUM_FLAG)) {
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "header: pre-apply checksum %016llx at offset 40 lacks bit 63",
				    (unsigned long long)h->pre_apply_checksum);
	}
	return 0;
}

int ltx_trailer_validate(const struct ltx_header *h, const struct ltx_trailer *t,
			 struct ltfs_err *err)
{
	if (!ltx_header_has_checksums(h)) {
		if (t->post_apply_checksum != 0)
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "trailer: post-apply checksum %016llx not allowed with NoChecksum",
					    (unsigned long long)t->post_apply_checksum);
	} else if (h->commit == 0) {
		if (t->post_apply_checksum != LTX_CHECKSUM_FLAG)
			return ltfs_err_set(err, LTFS_E_CORRUPT,
					    "trailer: deletion file (commit 0) has post-apply %016llx, must be 8000000000000000",
					    (unsigned long long)t->post_apply_checksum);
	} else if (!(t->post_apply_checksum & LTX_CHECKSUM_FLAG)) {
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "trailer: post-apply checksum %016llx lacks bit 63",
				    (unsigned long long)t->post_apply_checksum);
	}
	if (!(t->file_checksum & LTX_CHECKSUM_FLAG))
		return ltfs_err_set(err, LTFS_E_CORRUPT,
				    "trailer: file checksum %016llx lacks bit 63",
				    (unsigned long long)t->file_checksum);
	return 0;
}

void ltx_format_filename(uint64_t min_txid, uint64_t max_txid, char *out)
{
	snprintf(out, LTX_FILENAME_SIZE, "%016llx-%016llx.ltx",
		 (unsigned long long)min_txid, (unsigned long long)max_txid);
}

static int parse_hex16(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	for (int i = 0; i < 16; i++) {
		char c = s[i];

		if (c >= '0' && c <= '9')
			v = v << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = v << 4 | (uint64_t)(c - 'a' + 10);
		else
			return LTFS_E_USAGE;
	}
	*out = v;
	return 0;
}

int ltx_parse_filename(const char *name, uint64_t *min_txid, uint64_t *max_txid)
{
	if (strlen(name) != LTX_FILENAME_SIZE - 1 || name[16] != '-' ||
	    strcmp(name + 33, ".ltx") != 0)
		return LTFS_E_USAGE;
	if (parse_hex16(name, min_txid) < 0 || parse_hex16(name + 17, max_txid) < 0)
		return LTFS_E_USAGE;
	return 0;
}

void ltx_format_timestamp(int64_t ms, char *out, size_t n)
{
	time_t secs = (time_t)(ms / 1000);
	int64_t frac = ms % 1000;
	struct tm tm;
	size_t len;

	if (frac < 0) {
		frac += 1000;
		secs--;
	}
	if (!gmtime_r(&secs, &tm)) {
		snprintf(out, n, "(invalid time %lld)", (long long)ms);
		return;
	}
	len = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
	if (len > 0 && len < n)
		snprintf(out + len, n - len, ".%03dZ", (int)frac);
}

int ltx_write_fd(void *fd_ptr, const void *p, size_t n)
{
	int fd = *(int *)fd_ptr;
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t w = write(fd, b, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

int ltx_write_buf(void *buf, const void *p, size_t n)
{
	return ltfs_buf_append(buf, p, n);
}

ssize_t ltx_read_fd(void *fd_ptr, void *p, size_t n)
{
	int fd = *(int *)fd_ptr;

	for (;;) {
		ssize_t r = read(fd, p, n);

		if (r >= 0)
			return r;
		if (errno != EINTR)
			return -errno;
	}
}

ssize_t ltx_read_mem(void *mem_source, void *p, size_t n)
{
	struct ltx_mem_source *m = mem_source;
	size_t left = m->len - m->pos;

	if (n > left)
		n = left;
	if (n == 0)
		return 0;
	memcpy(p, m->data + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

int ltx_pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	uint8_t *p = buf;

	while (n > 0) {
		ssize_t r = pread(fd, p, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return LTFS_E_TRUNCATED;
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

int ltx_pwrite_full(int fd, const void *buf, size_t n, uint64_t off)
{
	const uint8_t *p = buf;

	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	return 0;
}
