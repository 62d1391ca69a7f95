/*
 * http1.c - HTTP/1.1 message heads for the write-forwarding proxy
 * (cluster/proxy.c): parsing and the rules about headers. Plain functions
 * on buffers, with no I/O, so that the unit tests and a fuzzer can drive
 * them alone. RFC 9110/9112, strictly: what could be read two ways
 * (folded lines, two lengths, a length and chunked) is refused, since a
 * proxy and the app reading one request differently is request smuggling.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster/cluster.h"

static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!is_tchar((unsigned char)*s))
			return false;
	return true;
}

size_t http1_head_end(const uint8_t *d, size_t len, size_t from)
{
	for (size_t i = from; i + 1 < len; i++) {
		if (d[i] != '\n')
			continue;
		if (d[i + 1] == '\n')
			return i + 2;
		if (d[i + 1] == '\r' && i + 2 < len && d[i + 2] == '\n')
			return i + 3;
	}
	return 0;
}

const char *http1_get(const struct http1_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nh; i++)
		if (strcasecmp(m->h[i].name, name) == 0)
			return m->h[i].val;
	return NULL;
}

bool http1_list_has(const char *v, const char *t)
{
	size_t tl = strlen(t);

	while (v && *v) {
		const char *end;
		size_t n;

		v += strspn(v, " \t,");
		end = strchr(v, ',');
		n = end ? (size_t)(end - v) : strlen(v);
		while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
			n--;
		if (n == tl && strncasecmp(v, t, tl) == 0)
			return true;
		v = end;
	}
	return false;
}

int http1_parse_head(struct http1_msg *m, size_t len, bool is_resp, const char **why)
{
	char *s = m->raw, *line, *end;
	const char *te = NULL, *cl = NULL, *conn;

	m->raw[len] = '\0';
	m->nh = 0;
	m->chunked = m->has_len = false;
	m->len = 0;
	*why = "NUL byte in the head";
	if (memchr(m->raw, '\0', len)) /* would end a line early: lines read two ways */
		return is_resp ? 502 : 400;
	*why = "malformed request line";
	end = strchr(s, '\n');
	if (!end)
		return is_resp ? 502 : 400;
	*end = '\0';
	if (end > s && end[-1] == '\r')
		end[-1] = '\0';
	line = s;
	s = end + 1;
	if (is_resp) {
		char *sp = strchr(line, ' ');
		char *endp;
		long code;

		*why = "malformed status line";
		if (!sp || strncmp(line, "HTTP/1.", 7) != 0)
			return 502;
		*sp = '\0';
		m->version = line;
		code = strtol(sp + 1, &endp, 10);
		if (code < 100 || code > 999 || endp != sp + 4 || (*endp && *endp != ' '))
			return 502;
		m->status = (int)code;
		m->reason = *endp ? endp + 1 : endp;
	} else {
		char *a = strchr(line, ' '), *b = a ? strchr(a + 1, ' ') : NULL;

		if (!a || !b || strchr(b + 1, ' '))
			return 400;
		*a = *b = '\0';
		m->method = line;
		m->target = a + 1;
		m->version = b + 1;
		if (!is_token(m->method) || m->target[0] != '/')
			return 400;
		for (const char *t = m->target; *t; t++)
			if ((unsigned char)*t <= ' ' || *t == 0x7f)
				return 400;
		if (strncmp(m->version, "HTTP/", 5) != 0)
			return 400;
		if (strcmp(m->version, "HTTP/1.1") != 0 && strcmp(m->version, "HTTP/1.0") != 0) {
			*why = "only HTTP/1.0 and HTTP/1.1 are served";
			return 505;
		}
	}
	m->http10 = strcmp(m->version, "HTTP/1.0") == 0;
	*why = "malformed header line";
	while (*s) {
		char *colon, *v;
		size_t n;

		end = strchr(s, '\n');
		if (!end)
			return is_resp ? 502 : 400;
		*end = '\0';
		if (end > s && end[-1] == '\r')
			end[-1] = '\0';
		if (!*s) /* the blank line */
			break;
		if (*s == ' ' || *s == '\t') /* obsolete line folding */
			return is_resp ? 502 : 400;
		colon = strchr(s, ':');
		if (!colon)
			return is_resp ? 502 : 400;
		*colon = '\0';
		if (!is_token(s))
			return is_resp ? 502 : 400;
		v = colon + 1 + strspn(colon + 1, " \t");
		n = strlen(v);
		while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
			v[--n] = '\0';
		for (size_t i = 0; i < n; i++)
			if (((unsigned char)v[i] < ' ' && v[i] != '\t') || v[i] == 0x7f)
				return is_resp ? 502 : 400;
		if (m->nh >= HTTP1_HEADERS_MAX) {
			*why = "too many header lines";
			return is_resp ? 502 : 431;
		}
		m->h[m->nh].name = s;
		m->h[m->nh].val = v;
		m->nh++;
		if (strcasecmp(s, "Transfer-Encoding") == 0) {
			if (te)
				return is_resp ? 502 : 400;
			te = v;
		} else if (strcasecmp(s, "Content-Length") == 0) {
			char *e;
			unsigned long long l;

			*why = "bad Content-Length";
			if (!*v || strspn(v, "0123456789") != n || n > 18)
				return is_resp ? 502 : 400;
			l = strtoull(v, &e, 10);
			if (cl && l != m->len)
				return is_resp ? 502 : 400;
			cl = v;
			m->len = l;
			m->has_len = true;
		}
		s = end + 1;
	}
	if (te) {
		*why = "Transfer-Encoding other than chunked";
		if (strcasecmp(te, "chunked") != 0)
			return is_resp ? 502 : 501;
		*why = "both Transfer-Encoding and Content-Length";
		if (cl) /* a request smuggling shape: refuse rather than guess */
			return is_resp ? 502 : 400;
		m->chunked = true;
	}
	conn = http1_get(m, "Connection");
	m->conn_close = http1_list_has(conn, "close");
	m->conn_upgrade = http1_list_has(conn, "upgrade") && http1_get(m, "Upgrade");
	if (!is_resp && !m->http10 && !http1_get(m, "Host")) {
		*why = "HTTP/1.1 request without Host";
		return 400;
	}
	return 0;
}

bool http1_hop_header(const struct http1_msg *m, const char *name)
{
	static const char *const hop[] = { "Connection", "Keep-Alive", "Proxy-Connection", "TE",
					   "Trailer", "Upgrade", "Proxy-Authorization", "Expect",
					   "Ltfs-Forwarded" };
	const char *conn = http1_get(m, "Connection");

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (strcasecmp(name, hop[i]) == 0)
			return true;
	/* and whatever Connection names */
	return conn && http1_list_has(conn, name);
}

/* Greedy with one back-track point: O(len(path) * len(pattern)), no
 * recursion whatever the pattern. */
bool http1_glob_match(const char *pat, const char *s)
{
	const char *star = NULL, *mark = NULL;

	while (*s) {
		if (*pat == '*') {
			star = pat++;
			mark = s;
		} else if (*pat == *s) {
			pat++;
			s++;
		} else if (star) {
			pat = star + 1;
			s = ++mark;
		} else {
			return false;
		}
	}
	while (*pat == '*')
		pat++;
	return *pat == '\0';
}

uint64_t http1_cookie_txid(const struct http1_msg *m)
{
	for (size_t i = 0; i < m->nh; i++) {
		const char *v = m->h[i].val;

		if (strcasecmp(m->h[i].name, "Cookie") != 0)
			continue;
		while (*v) {
			v += strspn(v, " ;\t");
			if (strncmp(v, "__txid=", 7) == 0) {
				uint64_t t = 0;
				size_t n = strcspn(v + 7, "; \t");

				if (n != 16 || strspn(v + 7, "0123456789abcdefABCDEF") < 16)
					return 0;
				for (size_t k = 0; k < 16; k++) {
					char ch = v[7 + k];

					t = t << 4 | (unsigned)(ch <= '9' ? ch - '0' : (ch | 0x20) - 'a' + 10);
				}
				return t;
			}
			v += strcspn(v, ";");
		}
	}
	return 0;
}
