/*
 * buf.c - growable byte buffers with a hard cap.
 *
 * Every input that grows a buffer (HTTP bodies, config files, LTX indexes)
 * goes through one of these, so a size limit is enforced in one place and a
 * failed append can never leave a half-owned allocation behind.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ltx/ltx.h"

void ltfs_buf_init(struct ltfs_buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void ltfs_buf_release(struct ltfs_buf *b)
{
	free(b->data);
	ltfs_buf_init(b, b->max);
}

void ltfs_buf_reset(struct ltfs_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

int ltfs_buf_reserve(struct ltfs_buf *b, size_t n, uint8_t **out)
{
	size_t need, cap;
	uint8_t *p;

	if (n > b->max || b->len > b->max - n) {
		ltfs_buf_release(b);
		return LTFS_E_LIMIT;
	}
	need = b->len + n + 1; /* room for the terminating NUL */
	if (need > b->cap) {
		cap = b->cap ? b->cap : 256;
		while (cap < need)
			cap = cap > SIZE_MAX / 2 ? need : cap * 2;
		p = realloc(b->data, cap);
		if (!p) {
			ltfs_buf_release(b);
			return -ENOMEM;
		}
		b->data = p;
		b->cap = cap;
	}
	if (out)
		*out = b->data + b->len;
	return 0;
}

int ltfs_buf_append(struct ltfs_buf *b, const void *p, size_t n)
{
	uint8_t *dst;
	int rc = ltfs_buf_reserve(b, n, &dst);

	if (rc < 0)
		return rc;
	if (n)
		memcpy(dst, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int ltfs_buf_printf(struct ltfs_buf *b, const char *fmt, ...)
{
	va_list ap;
	uint8_t *dst;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	rc = ltfs_buf_reserve(b, (size_t)n, &dst);
	if (rc < 0)
		return rc;
	va_start(ap, fmt);
	vsnprintf((char *)dst, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}
