/*
 * crc64.c - CRC-64/GO-ISO and the LTX page and database checksums.
 *
 * Two engines compute the same function:
 *   - carry-less multiplication (PCLMULQDQ), folding four 128-bit lanes
 *     64 bytes at a time; chosen at run time when the CPU has it;
 *   - slicing-by-16 tables, 16 bytes per step, everywhere else.
 * Both finish through the tables, which keeps the multiply path free of a
 * Barrett reduction: a folded 128-bit lane is just 16 more message bytes.
 *
 * Representation: reflected, bit i of a register holds the coefficient of
 * x^(63-i); P = x^64 + x^4 + x^3 + x + 1.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ltx/ltx_int.h"
#include "crc64_table.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC64_HAVE_CLMUL 1
#include <immintrin.h>
#endif

#define POLY UINT64_C(0xD800000000000000)

static inline uint64_t load_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

/* Raw register update (no pre/post inversion). */
static uint64_t crc_tables(uint64_t crc, const uint8_t *p, size_t n)
{
	while (n >= 16) {
		uint64_t a = load_le64(p) ^ crc;
		uint64_t b = load_le64(p + 8);

		crc = crc64_table[15][a & 0xff] ^
		      crc64_table[14][(a >> 8) & 0xff] ^
		      crc64_table[13][(a >> 16) & 0xff] ^
		      crc64_table[12][(a >> 24) & 0xff] ^
		      crc64_table[11][(a >> 32) & 0xff] ^
		      crc64_table[10][(a >> 40) & 0xff] ^
		      crc64_table[9][(a >> 48) & 0xff] ^
		      crc64_table[8][a >> 56] ^
		      crc64_table[7][b & 0xff] ^
		      crc64_table[6][(b >> 8) & 0xff] ^
		      crc64_table[5][(b >> 16) & 0xff] ^
		      crc64_table[4][(b >> 24) & 0xff] ^
		      crc64_table[3][(b >> 32) & 0xff] ^
		      crc64_table[2][(b >> 40) & 0xff] ^
		      crc64_table[1][(b >> 48) & 0xff] ^
		      crc64_table[0][b >> 56];
		p += 16;
		n -= 16;
	}
	while (n--)
		crc = crc64_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#ifdef CRC64_HAVE_CLMUL
__attribute__((target("pclmul,sse2"))) static inline __m128i
fold(__m128i x, __m128i k)
{
	return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00),
			     _mm_clmulepi64_si128(x, k, 0x11));
}

__attribute__((target("pclmul,sse2"))) static uint64_t
crc_clmul(uint64_t crc, const uint8_t *p, size_t n)
{
	const __m128i k128 = _mm_set_epi64x((long long)CRC64_FOLD128_HI,
					    (long long)CRC64_FOLD128_LO);
	uint8_t last[16];
	__m128i x;

	if (n >= 128) {
		const __m128i k512 = _mm_set_epi64x((long long)CRC64_FOLD512_HI,
						    (long long)CRC64_FOLD512_LO);
		__m128i x0 = _mm_loadu_si128((const __m128i *)p);
		__m128i x1 = _mm_loadu_si128((const __m128i *)(p + 16));
		__m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32));
		__m128i x3 = _mm_loadu_si128((const __m128i *)(p + 48));

		/* The initial register enters as the first 8 message bytes. */
		x0 = _mm_xor_si128(x0, _mm_set_epi64x(0, (long long)crc));
		p += 64;
		n -= 64;
		while (n >= 64) {
			x0 = _mm_xor_si128(fold(x0, k512),
					   _mm_loadu_si128((const __m128i *)p));
			x1 = _mm_xor_si128(fold(x1, k512),
					   _mm_loadu_si128((const __m128i *)(p + 16)));
			x2 = _mm_xor_si128(fold(x2, k512),
					   _mm_loadu_si128((const __m128i *)(p + 32)));
			x3 = _mm_xor_si128(fold(x3, k512),
					   _mm_loadu_si128((const __m128i *)(p + 48)));
			p += 64;
			n -= 64;
		}
		x = _mm_xor_si128(fold(x0, k128), x1);
		x = _mm_xor_si128(fold(x, k128), x2);
		x = _mm_xor_si128(fold(x, k128), x3);
	} else {
		x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p),
				  _mm_set_epi64x(0, (long long)crc));
		p += 16;
		n -= 16;
	}
	while (n >= 16) {
		x = _mm_xor_si128(fold(x, k128),
				  _mm_loadu_si128((const __m128i *)p));
		p += 16;
		n -= 16;
	}
	_mm_storeu_si128((__m128i *)last, x);
	return crc_tables(crc_tables(0, last, 16), p, n);
}

static int have_clmul(void)
{
	return __builtin_cpu_supports("pclmul");
}
#endif

uint64_t ltx_crc64_portable(uint64_t crc, const void *p, size_t n)
{
	return ~crc_tables(~crc, p, n);
}

uint64_t ltx_crc64(uint64_t crc, const void *p, size_t n)
{
#ifdef CRC64_HAVE_CLMUL
	if (n >= 32 && have_clmul())
		return ~crc_clmul(~crc, p, n);
#endif
	return ~crc_tables(~crc, p, n);
}

/* a * b mod P, reflected, one bit at a time (zlib's multmodp shape). */
static uint64_t mulmod_bits(uint64_t a, uint64_t b)
{
	uint64_t m = UINT64_C(1) << 63, prod = 0;

	while (m) {
		if (a & m)
			prod ^= b;
		m >>= 1;
		b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
	}
	return prod;
}

/* x^e mod P by square-and-multiply. */
static uint64_t xpow(uint64_t e)
{
	uint64_t result = UINT64_C(1) << 63; /* x^0 */
	uint64_t base = UINT64_C(1) << 62;   /* x^1 */

	while (e) {
		if (e & 1)
			result = mulmod_bits(result, base);
		base = mulmod_bits(base, base);
		e >>= 1;
	}
	return result;
}

void ltx_crc64_shift_init(struct ltx_crc64_shift *s, uint64_t len)
{
	s->len = len;
	if (len >= 512 && len <= 65536 && (len & (len - 1)) == 0) {
		unsigned b = (unsigned)__builtin_ctzll(len);

		s->op = crc64_page_shift[b - 9][0];
		s->op_clmul = crc64_page_shift[b - 9][1];
		return;
	}
	s->op = xpow(8 * len);
	/*
	 * The multiply path computes a*b*x (PCLMULQDQ) and then runs that
	 * product through 16 table steps (another x^64): pre-divide by x^65.
	 */
	s->op_clmul = len >= 9 ? xpow(8 * len - 65) : 0;
}

#ifdef CRC64_HAVE_CLMUL
__attribute__((target("pclmul,sse2"))) static uint64_t
mulmod_clmul(uint64_t a, uint64_t op_clmul)
{
	uint8_t prod[16];
	__m128i x = _mm_clmulepi64_si128(_mm_set_epi64x(0, (long long)a),
					 _mm_set_epi64x(0, (long long)op_clmul),
					 0x00);

	_mm_storeu_si128((__m128i *)prod, x);
	return crc_tables(0, prod, 16);
}
#endif

uint64_t ltx_crc64_shift_combine(const struct ltx_crc64_shift *s,
				 uint64_t crc_a, uint64_t crc_b)
{
#ifdef CRC64_HAVE_CLMUL
	if (s->len >= 9 && have_clmul())
		return mulmod_clmul(crc_a, s->op_clmul) ^ crc_b;
#endif
	return mulmod_bits(crc_a, s->op) ^ crc_b;
}

uint64_t ltx_crc64_combine(uint64_t crc_a, uint64_t crc_b, uint64_t len_b)
{
	return mulmod_bits(crc_a, xpow(8 * len_b)) ^ crc_b;
}

uint64_t ltx_page_checksum(uint32_t pgno, const void *page, uint32_t page_size)
{
	uint8_t be[4];

	ltx_put_be32(be, pgno);
	return LTX_CHECKSUM_FLAG |
	       ltx_crc64(ltx_crc64(0, be, 4), page, page_size);
}

uint64_t ltx_page_checksum_from_crc(uint32_t pgno, uint64_t page_crc,
				    const struct ltx_crc64_shift *page_shift)
{
	uint8_t be[4];

	ltx_put_be32(be, pgno);
	return LTX_CHECKSUM_FLAG |
	       ltx_crc64_shift_combine(page_shift, ltx_crc64(0, be, 4),
				       page_crc);
}

uint32_t ltx_lock_pgno(uint32_t page_size)
{
	return (uint32_t)(UINT32_C(0x40000000) / page_size) + 1;
}

#define DB_CHUNK (1u << 20)

int ltx_db_checksum_fd(int fd, uint32_t page_size, uint32_t npages,
		       uint64_t *out, struct ltfs_err *err)
{
	uint32_t lock = ltx_lock_pgno(page_size);
	uint32_t per_chunk, pgno = 1;
	uint64_t sum = 0;
	uint8_t *chunk;

	if (!ltx_page_size_valid(page_size))
		return ltfs_err_set(err, LTFS_E_USAGE, "invalid page size %u",
				    page_size);
	chunk = malloc(DB_CHUNK > page_size ? DB_CHUNK : page_size);
	if (!chunk)
		return ltfs_err_set(err, -ENOMEM, NULL);
	per_chunk = DB_CHUNK > page_size ? DB_CHUNK / page_size : 1;
	while (pgno <= npages) {
		uint32_t want = npages - pgno + 1;
		size_t len;
		int rc;

		if (want > per_chunk)
			want = per_chunk;
		len = (size_t)want * page_size;
		rc = ltx_pread_full(fd, chunk, len, (uint64_t)(pgno - 1) * page_size);
		if (rc < 0) {
			free(chunk);
			return ltfs_err_set(err, rc, "read pages %u..%u: %s", pgno,
					    pgno + want - 1,
					    rc == LTFS_E_TRUNCATED
						    ? "file shorter than its page count"
						    : ltfs_strerror(rc));
		}
		for (uint32_t i = 0; i < want; i++, pgno++) {
			if (pgno == lock)
				continue;
			sum ^= ltx_page_checksum(pgno, chunk + (size_t)i * page_size,
						 page_size);
		}
	}
	free(chunk);
	*out = LTX_CHECKSUM_FLAG | sum;
	return 0;
}
