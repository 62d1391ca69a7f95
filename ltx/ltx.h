/*
 * ltx.h - the LTX file format, SQLite file-format helpers, and the base layer
 * (errors, bounded buffers, logging) that every other ltfs folder builds on.
 *
 * This folder depends on libc and liblz4 only: no threads, no FUSE, no
 * network, so every parser here can be fuzzed on its own.
 *
 * Conventions used throughout ltfs:
 *   - functions return 0 (or a count, where documented) on success and a
 *     negative code on failure: -errno, or one of the LTFS_E_* codes below;
 *   - an optional last parameter `struct ltfs_err *err` receives a message
 *     that names the field, rule and byte offset; NULL is always allowed;
 *   - objects follow git's vocabulary: _init/_release for caller-allocated
 *     structs, _open/_free for heap objects the library allocates.
 *
 * The LTX byte format is described in docs/ltx.md; format version 3 is
 * written, versions 3 (block and frame page encodings) and 1 (LiteFS,
 * uncompressed or LZ4 body) are read.
 */
#ifndef LTFS_LTX_H
#define LTFS_LTX_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LTFS_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ------------------------------------------------------------------------
 * Errors
 *
 * Project codes sit below -10000 so they never collide with -errno.
 */
#define LTFS_ERRORS(X)                                                        \
	X(LTFS_E_CORRUPT, -10001, "corrupt data")                             \
	X(LTFS_E_CHECKSUM, -10002, "checksum mismatch")                       \
	X(LTFS_E_TRUNCATED, -10003, "unexpected end of data")                 \
	X(LTFS_E_FORMAT, -10004, "unsupported format")                        \
	X(LTFS_E_TXID, -10005, "transaction does not continue the chain")     \
	X(LTFS_E_LIMIT, -10006, "size limit exceeded")                        \
	X(LTFS_E_USAGE, -10007, "invalid argument")                           \
	X(LTFS_E_STATE, -10008, "operation not valid in this state")          \
	X(LTFS_E_NOT_PRIMARY, -10009, "node is not the primary")              \
	X(LTFS_E_CONFIG, -10010, "invalid configuration")                     \
	X(LTFS_E_CONFLICT, -10011, "conditional write lost (precondition failed)")

enum ltfs_error {
#define LTFS_ERROR_ENUM(name, code, text) name = code,
	LTFS_ERRORS(LTFS_ERROR_ENUM)
#undef LTFS_ERROR_ENUM
};

#define LTFS_ERR_MSG_MAX 512

/* Error context: the code plus a human message naming what went wrong. */
struct ltfs_err {
	int code;
	char msg[LTFS_ERR_MSG_MAX];
};

/* Text for any code: LTFS_E_*, -errno, or 0. Never NULL. */
const char *ltfs_strerror(int code);

/*
 * Record an error and return `code`, so callers can write
 * `return ltfs_err_set(err, LTFS_E_CORRUPT, "page %u: ...", pgno);`.
 * `err` may be NULL. When fmt is NULL the message is ltfs_strerror(code).
 */
int ltfs_err_set(struct ltfs_err *err, int code, const char *fmt, ...)
	LTFS_PRINTF(3, 4);

/* Put "PREFIX: " in front of the current message (e.g. a file name). */
void ltfs_err_prefix(struct ltfs_err *err, const char *fmt, ...)
	LTFS_PRINTF(2, 3);

/* Reset to "no error". */
void ltfs_err_clear(struct ltfs_err *err);

/* ------------------------------------------------------------------------
 * Bounded buffers
 *
 * A growable byte buffer with a hard cap. Appending past `max` fails with
 * LTFS_E_LIMIT; any failed append releases the buffer, so error paths
 * cannot leak (callers may still call ltfs_buf_release()). `data` is always
 * NUL-terminated one byte past `len` once anything was appended.
 */
struct ltfs_buf {
	uint8_t *data; /* NULL until the first append */
	size_t len;    /* bytes in use */
	size_t cap;    /* bytes allocated (private) */
	size_t max;    /* hard cap on len */
};

void ltfs_buf_init(struct ltfs_buf *b, size_t max);
int ltfs_buf_append(struct ltfs_buf *b, const void *p, size_t n);
int ltfs_buf_printf(struct ltfs_buf *b, const char *fmt, ...) LTFS_PRINTF(2, 3);
/* Make room for n more bytes and return a pointer to them (len unchanged). */
int ltfs_buf_reserve(struct ltfs_buf *b, size_t n, uint8_t **out);
void ltfs_buf_reset(struct ltfs_buf *b);   /* len = 0, memory kept */
void ltfs_buf_release(struct ltfs_buf *b); /* free memory, back to init */

/* ------------------------------------------------------------------------
 * Logging
 *
 * One logger object, owned by the process context and passed to whoever
 * logs. A line is written with a single write(2), so lines from several
 * threads never interleave.
 *   text: 2026-11-21T10:14:24.123Z INFO  fs: mounted '/data'
 *   json: {"time":"...","level":"info","subsys":"fs","msg":"mounted '/data'"}
 *   journal: <6>fs: mounted '/data'
 */
enum ltfs_log_level {
	LTFS_LOG_ERROR = 0,
	LTFS_LOG_WARN = 1,
	LTFS_LOG_INFO = 2,
	LTFS_LOG_DEBUG = 3,
};

enum ltfs_log_format {
	LTFS_LOG_TEXT = 0,
	LTFS_LOG_JSON = 1,
	LTFS_LOG_JOURNAL = 2, /* <3>fs: msg - journald stamps the time and takes
			       * the priority from the <N> prefix */
};

struct ltfs_log {
	enum ltfs_log_level level;
	enum ltfs_log_format format;
	int fd; /* usually 2 */
};

void ltfs_log_init(struct ltfs_log *log, enum ltfs_log_level level,
		   enum ltfs_log_format format, int fd);
/* Parse "error|warn|info|debug" and "text|json|journal"; 0 or LTFS_E_USAGE. */
int ltfs_log_parse_level(const char *s, enum ltfs_log_level *out);
int ltfs_log_parse_format(const char *s, enum ltfs_log_format *out);
void ltfs_logf(const struct ltfs_log *log, enum ltfs_log_level level,
	       const char *subsys, const char *fmt, ...) LTFS_PRINTF(4, 5);
void ltfs_vlogf(const struct ltfs_log *log, enum ltfs_log_level level,
		const char *subsys, const char *fmt, va_list ap)
	LTFS_PRINTF(4, 0);

/* The level test happens before the arguments are evaluated. */
#define LTFS_LOG(log, lvl, subsys, ...)                                       \
	do {                                                                  \
		if ((log) != NULL && (lvl) <= (log)->level)                   \
			ltfs_logf((log), (lvl), (subsys), __VA_ARGS__);       \
	} while (0)
#define ltfs_error(log, subsys, ...) LTFS_LOG(log, LTFS_LOG_ERROR, subsys, __VA_ARGS__)
#define ltfs_warn(log, subsys, ...) LTFS_LOG(log, LTFS_LOG_WARN, subsys, __VA_ARGS__)
#define ltfs_info(log, subsys, ...) LTFS_LOG(log, LTFS_LOG_INFO, subsys, __VA_ARGS__)
#define ltfs_debug(log, subsys, ...) LTFS_LOG(log, LTFS_LOG_DEBUG, subsys, __VA_ARGS__)

/* ------------------------------------------------------------------------
 * Checksums: CRC-64/GO-ISO and the LTX page and database checksums
 */
#define LTX_CHECKSUM_FLAG UINT64_C(0x8000000000000000)

/*
 * Continue a CRC-64/GO-ISO over p[0..n). Semantics of Go's crc64.Update: pass
 * 0 to start, pass the previous result to continue. Uses carry-less
 * multiplication when the CPU has it, slicing-by-16 tables otherwise.
 */
uint64_t ltx_crc64(uint64_t crc, const void *p, size_t n);

/* Portable path only, for tests and for comparing the two. */
uint64_t ltx_crc64_portable(uint64_t crc, const void *p, size_t n);

/* CRC of A‖B from crc(A), crc(B) and len(B), without touching the bytes. */
uint64_t ltx_crc64_combine(uint64_t crc_a, uint64_t crc_b, uint64_t len_b);

/*
 * A precomputed combine for a fixed length (one page): a single carry-less
 * multiply per call instead of an exponentiation.
 */
struct ltx_crc64_shift {
	uint64_t op;       /* x^(8*len) mod P, reflected */
	uint64_t op_clmul; /* x^(8*len-65) mod P, reflected (see crc64.c) */
	uint64_t len;
};
void ltx_crc64_shift_init(struct ltx_crc64_shift *s, uint64_t len);
uint64_t ltx_crc64_shift_combine(const struct ltx_crc64_shift *s,
				 uint64_t crc_a, uint64_t crc_b);

/* FLAG | CRC64(be32(pgno) ‖ page[0..page_size)). */
uint64_t ltx_page_checksum(uint32_t pgno, const void *page, uint32_t page_size);

/* Same, when crc64(page) is already known (saves a pass over the bytes). */
uint64_t ltx_page_checksum_from_crc(uint32_t pgno, uint64_t page_crc,
				    const struct ltx_crc64_shift *page_shift);

/* The page holding SQLite's PENDING_BYTE: never stored, never checksummed. */
uint32_t ltx_lock_pgno(uint32_t page_size);

/*
 * Database checksum of the first `npages` pages of a SQLite file:
 * FLAG | XOR of the page checksums, lock page excluded. An empty database
 * is exactly FLAG. Reads with pread(2) in large chunks.
 */
int ltx_db_checksum_fd(int fd, uint32_t page_size, uint32_t npages,
		       uint64_t *out, struct ltfs_err *err);

/* ------------------------------------------------------------------------
 * LTX header and trailer
 */
#define LTX_MAGIC "LTX1"
#define LTX_HEADER_SIZE 100
#define LTX_TRAILER_SIZE 16
#define LTX_MIN_PAGE_SIZE 512
#define LTX_MAX_PAGE_SIZE 65536

/* Header flags. */
#define LTX_HEADER_FLAG_COMPRESS_LZ4 0x00000001u /* format 1 only */
#define LTX_HEADER_FLAG_NO_CHECKSUM 0x00000002u

/* Page-header flags (format 3). */
#define LTX_PAGE_FLAG_SIZE 0x0001u /* LZ4 block with a u32 size prefix */

enum ltx_version {
	LTX_VERSION_AUTO = 0, /* decoder: find out (needs the file size) */
	LTX_VERSION_1 = 1,    /* LiteFS */
	LTX_VERSION_3 = 3,    /* current */
};

/* Page encoding used by the writer (format 3). */
enum ltx_page_encoding {
	LTX_ENC_BLOCK = 1, /* flag 0x0001: size + LZ4 block (ltx >= v0.5.2) */
	LTX_ENC_FRAME = 0, /* flag 0x0000: LZ4 frame (Litestream v0.5.0-15) */
};

struct ltx_header {
	uint32_t flags;
	uint32_t page_size;
	uint32_t commit; /* database size in pages after applying */
	uint64_t min_txid;
	uint64_t max_txid;
	int64_t timestamp; /* ms since the Unix epoch, UTC */
	uint64_t pre_apply_checksum;
	int64_t wal_offset;
	int64_t wal_size;
	uint32_t wal_salt1;
	uint32_t wal_salt2;
	uint64_t node_id;
};

struct ltx_trailer {
	uint64_t post_apply_checksum;
	uint64_t file_checksum;
};

static inline bool ltx_header_is_snapshot(const struct ltx_header *h)
{
	return h->min_txid == 1;
}

static inline bool ltx_header_has_checksums(const struct ltx_header *h)
{
	return (h->flags & LTX_HEADER_FLAG_NO_CHECKSUM) == 0;
}

bool ltx_page_size_valid(uint32_t page_size);

/* Serialize / parse the 100-byte header. Parse checks only the magic. */
void ltx_header_encode(const struct ltx_header *h, uint8_t out[LTX_HEADER_SIZE]);
int ltx_header_decode(const uint8_t in[LTX_HEADER_SIZE], struct ltx_header *h,
		      struct ltfs_err *err);

/*
 * Validate a header against the format rules (flags, page size, TXIDs,
 * WAL fields, pre-apply rules). `version` picks the flag mask.
 */
int ltx_header_validate(const struct ltx_header *h, enum ltx_version version,
			struct ltfs_err *err);

/* Validate a trailer against its header (post-apply rules). */
int ltx_trailer_validate(const struct ltx_header *h, const struct ltx_trailer *t,
			 struct ltfs_err *err);

/* "%016x-%016x.ltx" into out (at least LTX_FILENAME_SIZE bytes). */
#define LTX_FILENAME_SIZE 38
void ltx_format_filename(uint64_t min_txid, uint64_t max_txid, char *out);
/* Strict parse of a file name (no directory); LTFS_E_USAGE if it is not one. */
int ltx_parse_filename(const char *name, uint64_t *min_txid, uint64_t *max_txid);

/* "2025-01-01T00:00:01.000Z" (UTC, milliseconds); out >= 32 bytes. */
void ltx_format_timestamp(int64_t ms, char *out, size_t n);

/* ------------------------------------------------------------------------
 * Byte sinks and sources
 *
 * The encoder writes through a sink, the decoder reads from a source. A
 * write returns 0 or a negative code; a read returns the number of bytes
 * read (0 = end of data) or a negative code.
 */
typedef int (*ltx_write_fn)(void *ctx, const void *p, size_t n);
typedef ssize_t (*ltx_read_fn)(void *ctx, void *p, size_t n);

/* Ready-made sinks and sources. ctx is an `int *` (fd) or an ltfs_buf. */
int ltx_write_fd(void *fd_ptr, const void *p, size_t n);
int ltx_write_buf(void *buf, const void *p, size_t n);
ssize_t ltx_read_fd(void *fd_ptr, void *p, size_t n);

/* Exactly n bytes at off, retrying short transfers and EINTR:
 * 0, -errno, or LTFS_E_TRUNCATED when the file ends first. */
int ltx_pread_full(int fd, void *buf, size_t n, uint64_t off);
int ltx_pwrite_full(int fd, const void *buf, size_t n, uint64_t off);

/* Pages with consecutive offsets gathered into one pwrite of up to
 * LTX_PAGE_RUN_MAX bytes: a snapshot is one long run, and a write per page
 * costs more than decoding it. Add pages, flush at the end, release. */
#define LTX_PAGE_RUN_MAX (1u << 20)
struct ltx_page_run {
	uint8_t *data;      /* LTX_PAGE_RUN_MAX bytes, allocated at the first add */
	size_t len;
	uint64_t off;       /* file offset of data[0] */
};
int ltx_page_run_add(struct ltx_page_run *w, int fd, const uint8_t *page, uint32_t page_size,
		     uint64_t off, struct ltfs_err *err);
int ltx_page_run_flush(struct ltx_page_run *w, int fd, struct ltfs_err *err);
void ltx_page_run_release(struct ltx_page_run *w);

/* Source over a memory region: ctx is a struct ltx_mem_source. */
struct ltx_mem_source {
	const uint8_t *data;
	size_t len;
	size_t pos;
};
ssize_t ltx_read_mem(void *mem_source, void *p, size_t n);

/* ------------------------------------------------------------------------
 * Encoder (format 3)
 *
 * Streaming: memory is one page plus its compressed form, plus the page
 * index (a few bytes per page), whatever the file size. Output is buffered
 * and handed to the sink in chunks of up to 64 KiB.
 *
 *   ltx_encoder_open(&enc, &hdr, &opts, sink, ctx, err)
 *   ltx_encoder_add_page(enc, pgno, data, &cksum, err)   repeated, pgno ascending
 *   ltx_encoder_finish(enc, post_apply, &trailer, err)
 *   ltx_encoder_free(enc)                                always
 *
 * Rules enforced as the reference encoder does, and stricter: 1 <= pgno <=
 * commit, no lock page, strictly ascending, a snapshot holds every page
 * 1..commit, and a snapshot's post-apply must equal the XOR of its pages.
 */
struct ltx_encoder;

struct ltx_encoder_opts {
	enum ltx_page_encoding encoding; /* default LTX_ENC_BLOCK */
	int lz4_acceleration;            /* 0 or 1 = default speed */
};

int ltx_encoder_open(struct ltx_encoder **out, const struct ltx_header *h,
		     const struct ltx_encoder_opts *opts, ltx_write_fn write,
		     void *ctx, struct ltfs_err *err);

/*
 * Add one page of header.page_size bytes. If page_checksum is non-NULL it
 * receives FLAG | CRC64(be32(pgno) ‖ data), computed in the same pass.
 */
int ltx_encoder_add_page(struct ltx_encoder *enc, uint32_t pgno,
			 const void *data, uint64_t *page_checksum,
			 struct ltfs_err *err);

/*
 * Write the end marker, index and trailer. For checksummed snapshots,
 * post_apply may be 0 to use the XOR of the pages added. Under NoChecksum
 * post_apply must be 0.
 */
int ltx_encoder_finish(struct ltx_encoder *enc, uint64_t post_apply,
		       struct ltx_trailer *out, struct ltfs_err *err);

/*
 * A snapshot of the first h->commit pages of a database file (h: page size,
 * commit, TXIDs with min 1, timestamp, flags), pages read with pread(2).
 */
int ltx_encode_db_fd(int db_fd, const struct ltx_header *h, const struct ltx_encoder_opts *opts,
		     ltx_write_fn write, void *ctx, struct ltx_trailer *out, struct ltfs_err *err);

/* XOR of the page checksums added so far (without FLAG). */
uint64_t ltx_encoder_pages_xor(const struct ltx_encoder *enc);
uint64_t ltx_encoder_bytes_written(const struct ltx_encoder *enc);
void ltx_encoder_free(struct ltx_encoder *enc);

/* ------------------------------------------------------------------------
 * Decoder (formats 3 and 1)
 *
 * Streaming: pages come out in file order. Memory is bounded (a few page
 * buffers plus a fixed read buffer) whatever the input. Every rule of the
 * format is checked, including those the reference decoder skips: page
 * order and range, the lock page, exact decompressed size, snapshot
 * completeness, index entries equal to the frames read, the index size
 * field, trailer rules, reserved bytes, and nothing after the trailer.
 * Errors name the rule and the byte offset.
 *
 *   ltx_decoder_open(&dec, source, ctx, &opts, err)   reads + validates the header
 *   while ((rc = ltx_decoder_next(dec, &pgno, &page, err)) == 1) ...
 *   ltx_decoder_finish(dec, &trailer, err)            index, trailer, checksum
 *   ltx_decoder_free(dec)
 */
struct ltx_decoder;

struct ltx_decoder_opts {
	/*
	 * LTX_VERSION_AUTO: format 1 if header flag 0x1 (LZ4 body) is set,
	 * else format 3. An uncompressed format-1 file cannot be told from
	 * its first bytes: use ltx_detect_version_fd() for files on disk.
	 */
	enum ltx_version version;
	/* bytes of input read ahead (0: LTX_DEC_IN_DEFAULT; at least
	 * LTX_DEC_IN_MIN): a merge of a thousand files wants little each */
	size_t in_cap;
};
#define LTX_DEC_IN_DEFAULT (128u * 1024)
#define LTX_DEC_IN_MERGE (16u * 1024)
#define LTX_DEC_IN_MIN 4096u

/*
 * Tell format 1 from format 3 by the file's tail: a format-3 file ends with
 * a page index whose terminator and size field sit just before the trailer.
 */
int ltx_detect_version_fd(int fd, enum ltx_version *out, struct ltfs_err *err);

int ltx_decoder_open(struct ltx_decoder **out, ltx_read_fn read, void *ctx,
		     const struct ltx_decoder_opts *opts, struct ltfs_err *err);
/* A decoder over a whole file from its first byte, the format detected
 * from its tail. It reads through `fd` (a pointer): *fd must outlive it.
 * in_cap as in struct ltx_decoder_opts. */
int ltx_decoder_open_fd(struct ltx_decoder **out, int *fd, size_t in_cap,
			struct ltfs_err *err);
const struct ltx_header *ltx_decoder_header(const struct ltx_decoder *dec);
enum ltx_version ltx_decoder_version(const struct ltx_decoder *dec);

/*
 * Next page: 1 with *pgno and *page set (page_size bytes, valid until the
 * next call), 0 after the last page, < 0 on error. The decoder is unusable
 * after an error.
 */
int ltx_decoder_next(struct ltx_decoder *dec, uint32_t *pgno,
		     const uint8_t **page, struct ltfs_err *err);

/* Details of the frame returned by the last ltx_decoder_next(). */
struct ltx_frame_info {
	uint64_t offset;     /* file offset of the page header */
	uint64_t size;       /* whole frame (0 for format 1) */
	uint16_t flags;      /* page-header flags */
	uint32_t payload;    /* compressed bytes (0 for format 1) */
	uint64_t checksum;   /* page checksum (FLAG set) */
};
void ltx_decoder_frame_info(const struct ltx_decoder *dec,
			    struct ltx_frame_info *out);

/* Read the rest (pages not yet read are decoded and checked too). */
int ltx_decoder_finish(struct ltx_decoder *dec, struct ltx_trailer *out,
		       struct ltfs_err *err);

/* After finish: page index bytes read (entries + terminator) and offset. */
uint64_t ltx_decoder_index_offset(const struct ltx_decoder *dec);
uint64_t ltx_decoder_index_size(const struct ltx_decoder *dec);
uint32_t ltx_decoder_page_count(const struct ltx_decoder *dec);
void ltx_decoder_free(struct ltx_decoder *dec);

/* Decode a whole file from an fd (format detected from its size). */
int ltx_verify_fd(int fd, struct ltx_header *h, struct ltx_trailer *t,
		  struct ltfs_err *err);

/* ------------------------------------------------------------------------
 * Random access through the page index (format 3, seekable files)
 */
struct ltx_index_entry {
	uint32_t pgno;
	uint64_t offset; /* file offset of the frame */
	uint64_t size;   /* frame size */
};

struct ltx_index {
	struct ltx_header header;
	struct ltx_trailer trailer;
	struct ltx_index_entry *entries; /* ascending pgno */
	uint32_t count;
	uint64_t file_size;
};

/*
 * Read header, trailer and page index of a format-3 file with pread(2).
 * Checks the index's internal consistency, not the file checksum (use the
 * decoder for that). Release with ltx_index_release().
 */
int ltx_index_read(int fd, struct ltx_index *idx, struct ltfs_err *err);
void ltx_index_release(struct ltx_index *idx);

/* Read one page by number: 1 found, 0 not in the file, < 0 error. */
int ltx_index_read_page(int fd, const struct ltx_index *idx, uint32_t pgno,
			uint8_t *page, struct ltfs_err *err);

/* ------------------------------------------------------------------------
 * Applying a file to a database file
 *
 * All or nothing against bad input: a first pass decodes and verifies the
 * whole LTX file and computes the database checksum it will produce (reading
 * only the pages it replaces or cuts off); pages are written only if the
 * file is valid, continues the database (pre-apply == current checksum,
 * unless it is a snapshot or NoChecksum) and yields its post-apply checksum.
 * Then the file is truncated to commit pages. No fsync: the caller decides.
 *
 * *db_checksum is the database's current checksum on entry (FLAG for an
 * empty file; see ltx_db_checksum_fd) and the new one on return.
 */
int ltx_apply_fd(int db_fd, int ltx_fd, uint64_t *db_checksum,
		 struct ltx_header *out_header, struct ltfs_err *err);

/*
 * LTX_APPLY_OVERLAP: the database already holds some of the file's
 * transactions (it is at a TXID in [min, max) of the file, as when a
 * compacted file reaches back before the end of a snapshot). Its pages are
 * the state at its max TXID, so writing them is right; the pre-apply
 * checksum cannot match and is not checked, the post-apply one still is.
 */
#define LTX_APPLY_OVERLAP 0x1u
int ltx_apply_fd_flags(int db_fd, int ltx_fd, uint64_t *db_checksum, unsigned flags,
		       struct ltx_header *out_header, struct ltfs_err *err);

/*
 * Building a new database file that nobody reads until it is complete (a
 * restore's OUT.tmp): each file is applied in one pass as it is decoded,
 * straight from a stream, its pages written before the file is known to
 * be valid. The caller discards the file on any error. Pre- and
 * post-apply checksums are checked as ltx_apply_fd does, from per-page
 * checksums kept in memory (8 bytes a page). The file grows and shrinks
 * with each commit; it starts empty.
 */
struct ltx_build {
	uint64_t checksum;  /* FLAG | XOR of the pages (FLAG when empty) */
	uint32_t page_size, pages;
	uint64_t *cksums;   /* [0..cap), 0 where no page */
	uint32_t cap;
	struct ltx_wb *wb;  /* write-behind, or NULL: pages written in place */
};
void ltx_build_init(struct ltx_build *b);
void ltx_build_release(struct ltx_build *b);
/* Write the pages of every later apply from a thread of their own, long
 * runs through direct_fd (the same file opened with O_DIRECT; -1: none).
 * Each apply returns once its pages are written. */
int ltx_build_write_behind(struct ltx_build *b, int fd, int direct_fd, struct ltfs_err *err);
int ltx_build_apply(struct ltx_build *b, int db_fd, ltx_read_fn read, void *ctx, unsigned flags,
		    struct ltx_header *out_header, struct ltfs_err *err);

/*
 * Write-behind (writebehind.c): pages added in file order are gathered
 * into runs of consecutive offsets and written by a thread of its own,
 * while the caller goes on; runs of 256 KiB and more through direct_fd
 * when it is not -1 (a file system that refuses it gets the page cache).
 * A failed write is returned by a later add or by wait, which returns
 * once everything added is written.
 */
struct ltx_wb;
int ltx_wb_open(struct ltx_wb **out, int fd, int direct_fd, struct ltfs_err *err);
int ltx_wb_add(struct ltx_wb *wb, const uint8_t *page, uint32_t page_size, uint64_t off,
	       struct ltfs_err *err);
int ltx_wb_wait(struct ltx_wb *wb, struct ltfs_err *err);
void ltx_wb_close(struct ltx_wb *wb);

/* ------------------------------------------------------------------------
 * Compactor
 *
 * Merge N decoders holding a contiguous TXID run (each file's min <= the
 * previous max + 1 and its max > the previous max) into one file: for each
 * page the newest copy wins, pages beyond the last file's commit are
 * dropped, a snapshot first input gives a snapshot. Pre-apply comes from
 * the first input, post-apply, commit and timestamp from the last; WAL
 * fields and node id are zero. Inputs must agree on the checksum mode and
 * page size, and are fully verified (trailers and file checksums).
 */
struct ltx_compact_opts {
	struct ltx_encoder_opts enc;
	bool keep_node_id; /* reference drops it; default false */
};

int ltx_compact(struct ltx_decoder **inputs, size_t n,
		const struct ltx_compact_opts *opts, ltx_write_fn write,
		void *ctx, struct ltx_header *out_header,
		struct ltx_trailer *out_trailer, struct ltfs_err *err);

/* ------------------------------------------------------------------------
 * SQLite file helpers
 */
#define LTX_SQLITE_HEADER_SIZE 100
#define LTX_WAL_HEADER_SIZE 32
#define LTX_WAL_FRAME_HEADER_SIZE 24
#define LTX_JOURNAL_HEADER_SIZE 28
#define LTX_WAL_MAGIC_LE 0x377f0682u
#define LTX_WAL_MAGIC_BE 0x377f0683u
#define LTX_WAL_VERSION 3007000u

extern const uint8_t ltx_journal_magic[8];

/* The 100-byte database header at the start of page 1. */
struct ltx_db_header {
	uint32_t page_size;     /* decoded: the stored 1 means 65536 */
	uint8_t write_version;  /* 1 = rollback journal, 2 = WAL */
	uint8_t read_version;
	uint8_t reserved_space; /* bytes unused at the end of each page */
	uint32_t change_counter;
	uint32_t page_count;    /* "in-header database size" */
	uint32_t freelist_trunk;
	uint32_t freelist_count;
	uint32_t schema_cookie;
	uint32_t schema_format;
	uint32_t text_encoding;
	uint32_t version_valid_for;
	uint32_t sqlite_version;
};

/* Parse and check magic + page size; `n` must be >= 100. */
int ltx_db_header_parse(const uint8_t *p, size_t n, struct ltx_db_header *out,
			struct ltfs_err *err);
/* True if the buffer starts with "SQLite format 3\0". */
bool ltx_db_header_is_sqlite(const uint8_t *p, size_t n);
static inline bool ltx_db_header_is_wal(const struct ltx_db_header *h)
{
	return h->write_version == 2 && h->read_version == 2;
}

struct ltx_wal_header {
	uint32_t magic;
	bool big_endian; /* checksum word order: magic & 1 */
	uint32_t version;
	uint32_t page_size;
	uint32_t checkpoint_seq;
	uint32_t salt1;
	uint32_t salt2;
	uint32_t cksum1;
	uint32_t cksum2;
};

/* Parse and validate (magic, version, page size, header checksum). */
int ltx_wal_header_parse(const uint8_t *p, size_t n, struct ltx_wal_header *out,
			 struct ltfs_err *err);

struct ltx_wal_frame_header {
	uint32_t pgno;
	uint32_t commit; /* db size in pages for a commit frame, else 0 */
	uint32_t salt1;
	uint32_t salt2;
	uint32_t cksum1;
	uint32_t cksum2;
};

/*
 * SQLite's WAL checksum over n bytes (n a multiple of 8), continuing from
 * s[0], s[1]. big_endian selects the word order named by the WAL magic.
 */
void ltx_wal_checksum(bool big_endian, const uint8_t *p, size_t n,
		      uint32_t s[2]);

/*
 * Check one frame (24-byte header + page_size bytes) against the WAL
 * header's salts and the running checksum, which is advanced on success.
 * LTFS_E_CHECKSUM (salt or checksum) or LTFS_E_CORRUPT (pgno 0).
 */
int ltx_wal_frame_check(const struct ltx_wal_header *wh, uint32_t running[2],
			const uint8_t *frame, size_t n,
			struct ltx_wal_frame_header *out, struct ltfs_err *err);

struct ltx_journal_header {
	uint32_t nrec;       /* 0xffffffff: "until end of file" (no-sync) */
	uint32_t nonce;      /* seed of the record checksums */
	uint32_t db_pages;   /* database size before the transaction */
	uint32_t sector_size;
	uint32_t page_size;
};

/*
 * Parse a rollback-journal header. Returns 0 if the magic is there,
 * LTFS_E_STATE if the header is zeroed or not yet finalized (not a valid
 * hot journal: nothing to commit or roll back), LTFS_E_CORRUPT for
 * impossible sizes.
 */
int ltx_journal_header_parse(const uint8_t *p, size_t n,
			     struct ltx_journal_header *out,
			     struct ltfs_err *err);

/* ------------------------------------------------------------------------
 * Big-endian helpers (used by all layers that parse wire formats)
 */
static inline uint16_t ltx_get_be16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}
static inline uint32_t ltx_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static inline uint64_t ltx_get_be64(const uint8_t *p)
{
	return (uint64_t)ltx_get_be32(p) << 32 | ltx_get_be32(p + 4);
}
static inline void ltx_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static inline void ltx_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}
static inline void ltx_put_be64(uint8_t *p, uint64_t v)
{
	ltx_put_be32(p, (uint32_t)(v >> 32));
	ltx_put_be32(p + 4, (uint32_t)v);
}

#endif /* LTFS_LTX_H */
