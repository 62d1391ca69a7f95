/*
 * t.h - the unit-test runner's interface.
 *
 *   TEST(crc64_vectors) { CHECK_EQ(ltx_crc64(0, "123456789", 9), ...); }
 *
 * Tests register themselves at load time; tests/unit/main.c runs each one in
 * its own child process with a time limit, so a crash or a hang fails that
 * test only. A failed CHECK prints file:line, the expression and the values,
 * and ends the test.
 */
#ifndef LTFS_TESTS_T_H
#define LTFS_TESTS_T_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx.h"

typedef void (*t_fn)(void);
void t_register(const char *name, const char *file, t_fn fn);
void t_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

/* Directory with the golden files (LTFS_TEST_DATA, default tests/data). */
const char *t_data_dir(void);
/* Path below t_data_dir() in a static buffer per call site (caller copies). */
char *t_data_path(char *out, size_t n, const char *rel);
/* A fresh private temp dir for this test (removed by the runner). */
const char *t_tmpdir(void);
/* Read a whole file into a malloc'd buffer (test fails on error). */
uint8_t *t_read_file(const char *path, size_t *len);
void t_write_file(const char *path, const void *p, size_t n);

#define TEST(name)                                                            \
	static void test_##name(void);                                        \
	__attribute__((constructor)) static void test_register_##name(void)   \
	{                                                                     \
		t_register(#name, __FILE__, test_##name);                     \
	}                                                                     \
	static void test_##name(void)

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond))                                                  \
			t_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);       \
	} while (0)

#define CHECK_EQ(a, b)                                                        \
	do {                                                                  \
		uint64_t t_a_ = (uint64_t)(a), t_b_ = (uint64_t)(b);          \
		if (t_a_ != t_b_)                                             \
			t_fail(__FILE__, __LINE__,                            \
			       "CHECK_EQ(%s, %s): 0x%" PRIx64 " (%" PRIu64    \
			       ") != 0x%" PRIx64 " (%" PRIu64 ")",            \
			       #a, #b, t_a_, t_a_, t_b_, t_b_);               \
	} while (0)

#define CHECK_STR(a, b)                                                       \
	do {                                                                  \
		const char *t_a_ = (a), *t_b_ = (b);                          \
		if (strcmp(t_a_, t_b_) != 0)                                  \
			t_fail(__FILE__, __LINE__,                            \
			       "CHECK_STR(%s, %s): \"%s\" != \"%s\"", #a, #b, \
			       t_a_, t_b_);                                   \
	} while (0)

#define CHECK_MEM(a, b, n)                                                    \
	do {                                                                  \
		if (memcmp((a), (b), (n)) != 0)                               \
			t_fail(__FILE__, __LINE__, "CHECK_MEM(%s, %s, %s)",   \
			       #a, #b, #n);                                   \
	} while (0)

const char *t_errmsg(const struct ltfs_err *err);

/* rc must be >= 0; on failure shows the code's text and the error message. */
#define CHECK_OK(expr, errp)                                                  \
	do {                                                                  \
		int t_rc_ = (expr);                                           \
		if (t_rc_ < 0)                                                \
			t_fail(__FILE__, __LINE__, "%s = %d (%s): %s", #expr, \
			       t_rc_, ltfs_strerror(t_rc_), t_errmsg(errp));  \
	} while (0)

/* rc must equal `want` (a negative code). */
#define CHECK_RC(expr, want)                                                  \
	do {                                                                  \
		int t_rc_ = (expr), t_w_ = (want);                            \
		if (t_rc_ != t_w_)                                            \
			t_fail(__FILE__, __LINE__,                            \
			       "%s = %d (%s), want %d (%s)", #expr, t_rc_,    \
			       ltfs_strerror(t_rc_), t_w_,                    \
			       ltfs_strerror(t_w_));                          \
	} while (0)

#endif /* LTFS_TESTS_T_H */
