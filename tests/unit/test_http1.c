/*
 * HTTP/1.1 heads as the write-forwarding proxy reads them (cluster/http1.c):
 * framing, the refusals that keep a proxy and an app from reading one
 * request two ways, patterns and the __txid cookie.
 */
#include "cluster/cluster.h"
#include "t.h"

/* Parse text as a head: the status parse gives (0 = accepted). */
static int parse(struct http1_msg *m, const char *text, bool is_resp)
{
	const char *why = "";
	size_t len = strlen(text);

	CHECK(len <= HTTP1_HEAD_MAX);
	memcpy(m->raw, text, len);
	return http1_parse_head(m, len, is_resp, &why);
}

static struct http1_msg *msg(void)
{
	struct http1_msg *m = calloc(1, sizeof(*m));

	CHECK(m != NULL);
	return m;
}

TEST(http1_head_end)
{
	const char *a = "GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
	const char *b = "GET / HTTP/1.1\nHost: x\n\nrest";

	CHECK_EQ(http1_head_end((const uint8_t *)a, strlen(a), 0), strlen(a) - 4);
	CHECK_EQ(http1_head_end((const uint8_t *)b, strlen(b), 0), strlen(b) - 4);
	CHECK_EQ(http1_head_end((const uint8_t *)a, strlen(a) - 5, 0), 0);
	/* a scan resumed just before the end still finds it */
	CHECK_EQ(http1_head_end((const uint8_t *)a, strlen(a), strlen(a) - 7), strlen(a) - 4);
}

TEST(http1_request_framing)
{
	struct http1_msg *m = msg();

	CHECK_EQ(parse(m, "POST /w?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n"
			  "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\r\n", false), 0);
	CHECK(strcmp(m->method, "POST") == 0 && strcmp(m->target, "/w?x=1") == 0);
	CHECK(m->has_len && m->len == 12 && !m->chunked && !m->http10 && !m->conn_close);
	CHECK(http1_hop_header(m, "x-hop") && http1_hop_header(m, "Connection"));
	CHECK(!http1_hop_header(m, "Host"));
	CHECK(strcmp(http1_get(m, "host"), "h") == 0);

	CHECK_EQ(parse(m, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", false), 0);
	CHECK(m->chunked && !m->has_len);
	CHECK_EQ(parse(m, "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		       false), 0);
	CHECK(m->conn_upgrade);
	/* Connection: upgrade without an Upgrade header is no upgrade */
	CHECK_EQ(parse(m, "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n", false), 0);
	CHECK(!m->conn_upgrade);
	CHECK_EQ(parse(m, "GET / HTTP/1.0\r\n\r\n", false), 0); /* no Host needed in 1.0 */
	CHECK(m->http10);
	free(m);
}

TEST(http1_request_refusals)
{
	static const struct {
		const char *head;
		int status;
	} bad[] = {
		{ "GARBAGE\r\n\r\n", 400 },
		{ "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
		{ "GET / HTTP/1.1 x\r\nHost: h\r\n\r\n", 400 },
		{ "G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
		{ "GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400 },
		{ "GET / FTP/1.1\r\nHost: h\r\n\r\n", 400 },
		{ "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505 },
		{ "GET / HTTP/1.1\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: h\r\nno colon\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n", 400 },
		{ "GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400 },
		{ "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501 },
	};
	struct http1_msg *m = msg();

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int got = parse(m, bad[i].head, false);

		if (got != bad[i].status)
			t_fail(__FILE__, __LINE__, "case %zu: %d, want %d", i, got, bad[i].status);
	}
	{
		/* a NUL would hide what follows it from a parser that stops there */
		static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\n\0Content-Length: 5\r\n\r\n";

		memcpy(m->raw, nul, sizeof(nul) - 1);
		CHECK_EQ(http1_parse_head(m, sizeof(nul) - 1, false, &(const char *){ "" }), 400);
	}
	/* two equal lengths are one length */
	CHECK_EQ(parse(m, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
		       false), 0);
	free(m);
}

TEST(http1_too_many_headers)
{
	struct http1_msg *m = msg();
	char *head = malloc(HTTP1_HEAD_MAX);
	size_t n = 0;

	CHECK(head != NULL);
	n += (size_t)snprintf(head + n, HTTP1_HEAD_MAX - n, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (int i = 0; i < HTTP1_HEADERS_MAX; i++)
		n += (size_t)snprintf(head + n, HTTP1_HEAD_MAX - n, "X-%d: v\r\n", i);
	snprintf(head + n, HTTP1_HEAD_MAX - n, "\r\n");
	CHECK_EQ(parse(m, head, false), 431);
	CHECK_EQ(parse(m, head, true), 502);
	free(head);
	free(m);
}

TEST(http1_response)
{
	struct http1_msg *m = msg();

	CHECK_EQ(parse(m, "HTTP/1.1 204 No Content\r\nVia: 1.1 a\r\n\r\n", true), 0);
	CHECK_EQ(m->status, 204);
	CHECK(strcmp(m->reason, "No Content") == 0 && !m->has_len && !m->chunked);
	CHECK_EQ(parse(m, "HTTP/1.1 200\r\n\r\n", true), 0); /* empty reason */
	CHECK_EQ(parse(m, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", true), 0);
	CHECK(m->http10 && m->len == 5);
	CHECK_EQ(parse(m, "HTTP/2 200 OK\r\n\r\n", true), 502);
	CHECK_EQ(parse(m, "HTTP/1.1 20 OK\r\n\r\n", true), 502);
	CHECK_EQ(parse(m, "HTTP/1.1 2000 OK\r\n\r\n", true), 502);
	CHECK_EQ(parse(m, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", true), 502);
	free(m);
}

TEST(http1_lists_and_patterns)
{
	CHECK(http1_list_has("keep-alive,  Upgrade ", "upgrade"));
	CHECK(!http1_list_has("upgraded", "upgrade"));
	CHECK(!http1_list_has(NULL, "close"));
	CHECK(http1_glob_match("/admin/*", "/admin/users/1"));
	CHECK(http1_glob_match("/admin/*", "/admin/"));
	CHECK(!http1_glob_match("/admin/*", "/admin"));
	CHECK(http1_glob_match("*.css", "/a/b/site.css"));
	CHECK(http1_glob_match("/a*b*c", "/axxbyyc"));
	CHECK(!http1_glob_match("/a*b*c", "/axxbyyd"));
	CHECK(http1_glob_match("/exact", "/exact") && !http1_glob_match("/exact", "/exactly"));
	CHECK(http1_glob_match("*", ""));
}

TEST(http1_cookie)
{
	struct http1_msg *m = msg();

	CHECK_EQ(parse(m, "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=b; __txid=00000000000000Ff; c=d\r\n\r\n",
		       false), 0);
	CHECK_EQ(http1_cookie_txid(m), 255);
	CHECK_EQ(parse(m, "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\nCookie: __txid=0000000000000010\r\n\r\n",
		       false), 0);
	CHECK_EQ(http1_cookie_txid(m), 16);
	CHECK_EQ(parse(m, "GET / HTTP/1.1\r\nHost: h\r\nCookie: __txid=10\r\n\r\n", false), 0);
	CHECK_EQ(http1_cookie_txid(m), 0); /* not 16 digits */
	CHECK_EQ(parse(m, "GET / HTTP/1.1\r\nHost: h\r\nCookie: __txid=000000000000001g\r\n\r\n", false), 0);
	CHECK_EQ(http1_cookie_txid(m), 0);
	CHECK_EQ(parse(m, "GET / HTTP/1.1\r\nHost: h\r\nCookie: x__txid=0000000000000001\r\n\r\n", false), 0);
	CHECK_EQ(http1_cookie_txid(m), 0);
	free(m);
}
