/*
 * log.c - one-line log records, text or JSON.
 *
 * Each record is formatted into a stack buffer and written with a single
 * write(2): lines from concurrent threads never interleave, and a crash
 * never leaves half a line buffered in stdio.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ltx/ltx.h"

#define LOG_LINE_MAX 4096

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const char *const level_tags[] = { "ERROR", "WARN ", "INFO ", "DEBUG" };

void ltfs_log_init(struct ltfs_log *log, enum ltfs_log_level level,
		   enum ltfs_log_format format, int fd)
{
	log->level = level;
	log->format = format;
	log->fd = fd;
}

int ltfs_log_parse_level(const char *s, enum ltfs_log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum ltfs_log_level)i;
			return 0;
		}
	}
	return LTFS_E_USAGE;
}

int ltfs_log_parse_format(const char *s, enum ltfs_log_format *out)
{
	if (strcmp(s, "text") == 0)
		*out = LTFS_LOG_TEXT;
	else if (strcmp(s, "json") == 0)
		*out = LTFS_LOG_JSON;
	else if (strcmp(s, "journal") == 0)
		*out = LTFS_LOG_JOURNAL;
	else
		return LTFS_E_USAGE;
	return 0;
}

/* Append s JSON-escaped; returns the new length, never past cap - 1. */
static size_t json_escape(char *dst, size_t len, size_t cap, const char *s)
{
	for (; *s && len + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			dst[len++] = '\\';
			dst[len++] = (char)c;
		} else if (c == '\n') {
			dst[len++] = '\\';
			dst[len++] = 'n';
		} else if (c < 0x20) {
			len += (size_t)snprintf(dst + len, cap - len, "\\u%04x", c);
		} else {
			dst[len++] = (char)c;
		}
	}
	dst[len] = '\0';
	return len;
}

static size_t clamp(int n, size_t cap)
{
	if (n < 0)
		return 0;
	return (size_t)n < cap ? (size_t)n : cap - 1;
}

void ltfs_vlogf(const struct ltfs_log *log, enum ltfs_log_level level,
		const char *subsys, const char *fmt, va_list ap)
{
	char msg[LOG_LINE_MAX / 2];
	char line[LOG_LINE_MAX];
	char when[40];
	struct timespec ts;
	struct tm tm;
	size_t len;
	int saved_errno = errno;

	if (!log || level > log->level)
		return;
	if ((unsigned)level > LTFS_LOG_DEBUG)
		level = LTFS_LOG_DEBUG;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	len = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + len, sizeof(when) - len, ".%03ldZ",
		 ts.tv_nsec / 1000000);
	vsnprintf(msg, sizeof(msg), fmt, ap);

	if (log->format == LTFS_LOG_JSON) {
		len = clamp(snprintf(line, sizeof(line),
				     "{\"time\":\"%s\",\"level\":\"%s\",\"subsys\":\"",
				     when, level_names[level]),
			    sizeof(line));
		len = json_escape(line, len, sizeof(line), subsys);
		len += clamp(snprintf(line + len, sizeof(line) - len,
				      "\",\"msg\":\""),
			     sizeof(line) - len);
		len = json_escape(line, len, sizeof(line) - 3, msg);
		memcpy(line + len, "\"}\n", 3);
		len += 3;
	} else if (log->format == LTFS_LOG_JOURNAL) {
		/* syslog priorities: err, warning, info, debug */
		static const char prio[] = { '3', '4', '6', '7' };

		len = clamp(snprintf(line, sizeof(line), "<%c>%s: %s\n", prio[level], subsys, msg),
			    sizeof(line));
		if (len == sizeof(line) - 1)
			line[len - 1] = '\n';
	} else {
		len = clamp(snprintf(line, sizeof(line), "%s %s %s: %s\n", when,
				     level_tags[level], subsys, msg),
			    sizeof(line));
		if (len == sizeof(line) - 1)
			line[len - 1] = '\n';
	}
	/* A lost log line must not turn into an error of the caller. */
	if (write(log->fd, line, len) < 0)
		(void)0;
	errno = saved_errno;
}

void ltfs_logf(const struct ltfs_log *log, enum ltfs_log_level level,
	       const char *subsys, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ltfs_vlogf(log, level, subsys, fmt, ap);
	va_end(ap);
}
