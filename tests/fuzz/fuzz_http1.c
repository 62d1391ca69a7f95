/*
 * fuzz_http1.c - libFuzzer target for the proxy's HTTP/1.1 head parser
 * (cluster/http1.c), which reads whatever a client or an app sends.
 *
 * Each input is scanned for the end of a head in one go and resumed at
 * every offset (the results must agree: a head arriving piecemeal must be
 * found where a whole one is), parsed as a request and as a response, and
 * a parsed head's fields are checked against the parser's contract. The
 * input split at its first NUL also serves as a path pattern and a path.
 *
 *   make fuzz FUZZ_TIME=120
 *   build-fuzz/fuzz-http1 CRASH_FILE     replay one input
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_msg(const struct http1_msg *m, size_t len, bool is_resp)
{
	if (m->nh > HTTP1_HEADERS_MAX)
		abort();
	for (size_t i = 0; i < m->nh; i++) {
		const char *n = m->h[i].name, *v = m->h[i].val;

		/* every string lies inside the copy */
		if (n < m->raw || n > m->raw + len || v < m->raw || v > m->raw + len || !*n)
			abort();
		(void)http1_hop_header(m, n);
		if (http1_get(m, n) == NULL)
			abort();
	}
	if (m->chunked && m->has_len)
		abort(); /* refused, never guessed */
	if (!is_resp && (m->target[0] != '/' || !*m->method))
		abort();
	if (is_resp && (m->status < 100 || m->status > 999))
		abort();
	(void)http1_cookie_txid(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http1_msg m; /* 70 KiB: not on the stack */
	size_t whole = http1_head_end(data, size, 0), len = size < HTTP1_HEAD_MAX ? size : HTTP1_HEAD_MAX;
	const char *why = NULL;
	const uint8_t *nul;

	/* resumed scans, as the proxy does them while bytes arrive */
	for (size_t have = 0, from = 0; have <= size; have += 1 + have / 8) {
		size_t end = http1_head_end(data, have, from);

		if (end) {
			if (end != http1_head_end(data, have, 0) || (whole && end != whole))
				abort();
			break;
		}
		from = have > 2 ? have - 2 : 0;
	}
	for (int is_resp = 0; is_resp < 2; is_resp++) {
		int st;

		memcpy(m.raw, data, len);
		st = http1_parse_head(&m, len, is_resp, &why);
		if (st == 0)
			check_msg(&m, len, is_resp);
		else if (!why || (is_resp ? st != 502 : st != 400 && st != 431 && st != 501 && st != 505))
			abort();
	}
	nul = memchr(data, 0, size);
	if (nul && (size_t)(nul - data) < 512 && size - (size_t)(nul - data) < 4096) {
		char pat[512], path[4096];

		memcpy(pat, data, (size_t)(nul - data));
		pat[nul - data] = '\0';
		memcpy(path, nul + 1, size - (size_t)(nul - data) - 1);
		path[size - (size_t)(nul - data) - 1] = '\0';
		(void)http1_glob_match(pat, path);
	}
	return 0;
}
