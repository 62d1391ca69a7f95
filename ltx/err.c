/*
 * err.c - error codes and error context.
 *
 * One int carries every error: 0, -errno, or an LTFS_E_* code below -10000.
 * The message travels separately in a caller-owned struct ltfs_err, so deep
 * code can say exactly which field and offset was wrong without allocating.
 */
#include <stdio.h>
#include <string.h>

#include "ltx/ltx.h"

const char *ltfs_strerror(int code)
{
	switch (code) {
	case 0:
		return "success";
#define LTFS_ERROR_CASE(name, value, text) \
	case name:                         \
		return text;
		LTFS_ERRORS(LTFS_ERROR_CASE)
#undef LTFS_ERROR_CASE
	default:
		break;
	}
	if (code < 0 && code > -4096)
		return strerror(-code);
	return "unknown error";
}

int ltfs_err_set(struct ltfs_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return code;
	err->code = code;
	if (!fmt) {
		snprintf(err->msg, sizeof(err->msg), "%s", ltfs_strerror(code));
		return code;
	}
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

void ltfs_err_prefix(struct ltfs_err *err, const char *fmt, ...)
{
	char prefix[LTFS_ERR_MSG_MAX];
	char old[LTFS_ERR_MSG_MAX];
	va_list ap;

	if (!err)
		return;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix,
		 old[0] ? old : ltfs_strerror(err->code));
}

void ltfs_err_clear(struct ltfs_err *err)
{
	if (!err)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}
