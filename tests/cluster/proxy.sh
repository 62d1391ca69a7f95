#!/bin/sh
# The write-forwarding proxy between real nodes: node 1 the primary, node 2
# a replica (--replica-of), each with its proxy and its own copy of the test
# app (build/proxy-app) reading and writing app.db on its mount.
. tests/lib.sh

APP=${LTFS_BUILD:?LTFS_BUILD must point at the build dir}/proxy-app
# ports: node N's app at PORT_BASE+6+N, its proxy at PORT_BASE+10+N
app_port() { echo $((PORT_BASE + 6 + $1)); }
proxy_port() { echo $((PORT_BASE + 10 + $1)); }
purl() { echo "http://127.0.0.1:$(proxy_port "$1")"; }

# The proxy's settings of node N (config file: the keys not given as flags).
proxy_conf() {
	cat >"$T/proxy$1.yml" <<EOF
proxy:
  addr: 127.0.0.1:$(proxy_port "$1")
  target: 127.0.0.1:$(app_port "$1")
  db: app.db
  max-lag: 2s
  wait: 1500ms
  timeout: 8s
  max-body: 1MiB
  always-forward: ["/rpc/*"]
  passthrough: ["/raw/*", "/static"]
EOF
	echo "$T/proxy$1.yml"
}

# app_start N: node N's app on its mount (pid file under ltfs.pid* so
# that a failed case's leftovers are killed).
app_start() {
	"$APP" serve "$(app_port "$1")" "$T/m$1/app.db" >>"$T/app$1.log" 2>&1 &
	echo $! >"$T/ltfs.pid.app$1"
	_i=0
	until curl -s -o /dev/null "http://127.0.0.1:$(app_port "$1")/static"; do
		_i=$((_i + 1))
		check "app $1 up" [ $_i -lt 100 ]
		sleep 0.05
	done
}

app_stop() {
	kill "$(cat "$T/ltfs.pid.app$1")" 2>/dev/null || true
	wait "$(cat "$T/ltfs.pid.app$1")" 2>/dev/null || true
}

# The two nodes with their proxies and apps; table t on the primary.
setup() {
	node_start 1 --config "$(proxy_conf 1)"
	sql "$T/m1/app.db" "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
		INSERT INTO t(v) VALUES ('first');" >/dev/null
	node_replica 2 1 --config "$(proxy_conf 2)"
	wait_sync app.db 1 2
	app_start 1
	app_start 2
}

teardown() {
	app_stop 2
	app_stop 1
	node_stop 2
	node_stop 1
}

# get N PATH [CURL ARGS]: body of a GET through node N's proxy (status in $T/code)
get() {
	_n=$1
	_p=$2
	shift 2
	curl -s --max-time 20 -o "$T/body" -w '%{http_code}' "$@" "$(purl "$_n")$_p" >"$T/code" || true
	cat "$T/body"
}

# post N PATH DATA [CURL ARGS]: the same for a POST; headers in $T/hdr
post() {
	_n=$1
	_p=$2
	_d=$3
	shift 3
	curl -s --max-time 20 -D "$T/hdr" -o "$T/body" -w '%{http_code}' --data-binary "$_d" "$@" \
		"$(purl "$_n")$_p" >"$T/code" || true
	cat "$T/body"
}

code() { cat "$T/code"; }

# lacks FILE TEXT: FILE does not hold TEXT (case-insensitive).
lacks() {
	if grep -qiF -- "$2" "$1"; then
		echo "    '$1' holds '$2'" >&2
		return 1
	fi
}

# send N: stdin to node N's proxy as raw bytes; the answer's status line
send() { "$APP" send "127.0.0.1:$(proxy_port "$1")" | head -n 1 | tr -d '\r'; }

txid_of() { pos "$1" app.db | cut -c1-16; }

# Reads on a replica go to its own app: they work with the primary's app
# down, carry Via and X-Forwarded-For, and get no cookie.
case_read_local() {
	setup
	app_stop 1
	check "replica read" [ "$(get 2 /rows)" = "1 first" ]
	check "200" [ "$(code)" = 200 ]
	get 2 /headers >/dev/null
	contains "$T/body" "X-Forwarded-For: 127.0.0.1"
	contains "$T/body" "Via: 1.1 ltfs"
	contains "$T/body" "X-Forwarded-Proto: http"
	lacks "$T/body" "Ltfs-Forwarded"
	curl -s -D "$T/h" -o /dev/null "$(purl 2)/rows"
	lacks "$T/h" "Set-Cookie"
	teardown
}

# A POST on the replica is forwarded to the primary (the replica's own
# app could not write): the row is on both nodes, the answer carries the
# primary's TXID as a cookie, and a read with it right after sees the row.
case_write_forward() {
	setup
	check "forwarded write answered" [ "$(post 2 /write from-replica)" = ok ]
	check "201" [ "$(code)" = 201 ]
	check "on the primary" [ "$(sql "$T/m1/app.db" 'SELECT v FROM t ORDER BY id DESC LIMIT 1')" = from-replica ]
	_cookie=$(tr -d '\r' <"$T/hdr" | sed -n 's/^Set-Cookie: __txid=\([0-9a-f]\{16\}\); Path=\/; HttpOnly; Max-Age=[0-9]*$/\1/p')
	check "cookie is the primary's TXID" [ "$_cookie" = "$(txid_of 1)" ]
	wait_sync app.db 1 2
	check "on the replica" [ "$(sql "$T/m2/app.db" 'SELECT v FROM t ORDER BY id DESC LIMIT 1')" = from-replica ]
	contains "$T/n1.log" "listening on 127.0.0.1:$(proxy_port 1)"
	# read-your-writes, many times in a row, always through the replica
	for i in 1 2 3 4 5 6 7 8 9 10; do
		post 2 /write "v$i" -c "$T/jar" >/dev/null
		check "write $i" [ "$(code)" = 201 ]
		check "read $i sees write $i" [ "$(get 2 /rows -b "$T/jar")" = "$((i + 2)) v$i" ]
	done
	# a chunked request body is forwarded as well
	post 2 /write chunky -H 'Transfer-Encoding: chunked' >/dev/null
	check "chunked write" [ "$(code)" = 201 ]
	check "chunked row" [ "$(sql "$T/m1/app.db" 'SELECT v FROM t ORDER BY id DESC LIMIT 1')" = chunky ]
	curl -s "$(node_url 2)/metrics" >"$T/metrics"
	contains "$T/metrics" 'ltfs_proxy_requests_total{to="primary"} 12'
	contains "$T/metrics" 'ltfs_proxy_errors_total 0'
	# on the primary the write goes to its app and sets the cookie too
	post 1 /write on-primary >/dev/null
	check "primary write" [ "$(code)" = 201 ]
	contains "$T/hdr" "Set-Cookie: __txid=$(txid_of 1)"
	teardown
}

# The cookie really holds a read back: a read asking for the next TXID
# waits until it is applied (and then sees it); one for a TXID that never
# comes gets 504 after proxy.wait.
case_cookie_wait() {
	setup
	_next=$(printf '%016x' $((0x$(txid_of 2) + 1)))
	curl -s --max-time 10 -b "__txid=$_next" -o "$T/waited" -w '%{http_code}' "$(purl 2)/rows" >"$T/wcode" &
	_reader=$!
	sleep 0.7
	check "the read waits for the TXID" kill -0 $_reader
	sql "$T/m1/app.db" "INSERT INTO t(v) VALUES ('later')"
	wait $_reader
	check "then answers" [ "$(cat "$T/wcode")" = 200 ]
	check "with the row" [ "$(cat "$T/waited")" = "2 later" ]
	_far=$(printf '%016x' $((0x$(txid_of 2) + 1000)))
	_t0=$(date +%s%N)
	get 2 /rows -b "__txid=$_far" >/dev/null
	_ms=$((($(date +%s%N) - _t0) / 1000000))
	check "504 for a TXID that never comes" [ "$(code)" = 504 ]
	contains "$T/body" "has not applied TXID"
	check "after about proxy.wait (1.5 s), took $_ms ms" [ $_ms -ge 1400 ] && [ $_ms -lt 4000 ]
	# a malformed cookie is no cookie
	check "bad cookie ignored" [ "$(get 2 /rows -b '__txid=zz')" = "2 later" ]
	teardown
}

# /ltfs/health: 200 on the primary and on a replica in sync; 503 once the
# replica is cut off from its primary for longer than max-lag.
case_health() {
	setup
	check "primary healthy" [ "$(get 1 /ltfs/health)" = "ok: primary" ]
	# HEAD: the same status without a body (else the next answer on the
	# connection would be garbled)
	curl -s -I -o /dev/null -o /dev/null -w '%{http_code} %{num_connects} ' \
		"$(purl 1)/ltfs/health" "$(purl 1)/ltfs/health" >"$T/heads"
	check "two HEADs on one connection ($(cat "$T/heads"))" [ "$(cat "$T/heads")" = "200 1 200 0 " ]
	get 2 /ltfs/health >/dev/null
	check "replica healthy" [ "$(code)" = 200 ]
	contains "$T/body" "ok: replica"
	app_stop 1
	node_kill 1
	_i=0
	while get 2 /ltfs/health >/dev/null && [ "$(code)" = 200 ]; do
		_i=$((_i + 1))
		check "replica unhealthy within 6 s" [ $_i -lt 60 ]
		sleep 0.1
	done
	check "503" [ "$(code)" = 503 ]
	contains "$T/body" "max-lag 2000 ms"
	# and a write now has no primary to go to
	post 2 /write nobody >/dev/null
	check "write without a primary: 503" [ "$(code)" = 503 ]
	contains "$T/hdr" "Retry-After: 1"
	app_stop 2
	node_stop 2
}

# WebSocket: after the 101 the bytes go both ways; through the replica's
# proxy to its app, and through an always-forward path to the primary's.
case_websocket() {
	setup
	"$APP" ws "127.0.0.1:$(proxy_port 2)" /ws "hello websocket" >"$T/ws" 2>&1
	contains "$T/ws" "HTTP/1.1 101"
	check "two echoes" [ "$(grep -c '^echo: hello websocket$' "$T/ws")" = 2 ]
	"$APP" ws "127.0.0.1:$(proxy_port 1)" /ws "on the primary" >"$T/ws1" 2>&1
	check "primary echoes" [ "$(grep -c '^echo: on the primary$' "$T/ws1")" = 2 ]
	teardown
}

# always-forward sends a GET to the primary (the primary's cookie comes
# back); passthrough keeps a POST local (no forwarding, no cookie).
case_routes() {
	setup
	curl -s -D "$T/h" -o /dev/null "$(purl 2)/rpc/x"
	contains "$T/h" "Set-Cookie: __txid="
	contains "$T/h" "Via: 1.1 ltfs, 1.1 ltfs"
	curl -s -D "$T/h2" -o /dev/null -d x "$(purl 2)/raw/x"
	lacks "$T/h2" "Set-Cookie"
	contains "$T/h2" "Via: 1.1 ltfs"
	lacks "$T/h2" "ltfs, 1.1"
	# keep-alive: three requests on one client connection
	curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects} ' "$(purl 2)/static" "$(purl 2)/rows" "$(purl 2)/static" >"$T/nc"
	check "one connection for three requests ($(cat "$T/nc"))" [ "$(cat "$T/nc")" = "1 0 0 " ]
	# a chunked response (with trailers) comes through whole, then the next
	printf 'GET /chunked HTTP/1.1\r\nHost: x\r\n\r\nGET /static HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' |
		"$APP" send "127.0.0.1:$(proxy_port 2)" | tr -d '\r' >"$T/two"
	check "chunked then static on one connection" [ "$(grep -c '^HTTP/1.1 200' "$T/two")" = 2 ]
	check "three chunks" [ "$(grep -c '^0123456789$' "$T/two")" = 3 ]
	contains "$T/two" "X-Trailer: 1"
	contains "$T/two" "hello"
	teardown
}

# Bad requests get their status and the proxy keeps serving.
case_badinput() {
	setup
	check "garbage: 400" [ "$(printf 'GARBAGE\r\n\r\n' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	check "no colon: 400" [ "$(printf 'GET / HTTP/1.1\r\nHost: x\r\nbad\r\n\r\n' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	check "no Host: 400" [ "$(printf 'GET / HTTP/1.1\r\n\r\n' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	check "folded line: 400" [ "$(printf 'GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	check "absolute target: 400" [ "$(printf 'GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	check "bad length: 400" [ "$(printf 'POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	check "two lengths: 400" [ "$(printf 'POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	check "TE and length: 400" [ "$(printf 'POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	check "gzip TE: 501" [ "$(printf 'POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n' | send 2)" = "HTTP/1.1 501 Not Implemented" ]
	check "HTTP/2.0: 505" [ "$(printf 'GET / HTTP/2.0\r\nHost: x\r\n\r\n' | send 2)" = "HTTP/1.1 505 HTTP Version Not Supported" ]
	check "bad chunk: 400" [ "$(printf 'POST /raw/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n' | send 2)" = "HTTP/1.1 400 Bad Request" ]
	{
		printf 'GET /rows HTTP/1.1\r\nHost: x\r\nX-Big: '
		head -c 70000 /dev/zero | tr '\0' a
		printf '\r\n\r\n'
	} | send 2 >"$T/s"
	check "70 KiB head: 431" [ "$(cat "$T/s")" = "HTTP/1.1 431 Request Header Fields Too Large" ]
	{
		printf 'GET /rows HTTP/1.1\r\nHost: x\r\n'
		for i in $(seq 1 200); do printf 'X-H%d: v\r\n' "$i"; done
		printf '\r\n'
	} | send 2 >"$T/s"
	check "200 header lines: 431" [ "$(cat "$T/s")" = "HTTP/1.1 431 Request Header Fields Too Large" ]
	check "2 MiB declared: 413" [ "$(printf 'POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n' | send 2)" = "HTTP/1.1 413 Content Too Large" ]
	head -c 2000000 /dev/zero | tr '\0' b >"$T/big"
	post 2 /write @"$T/big" -H 'Transfer-Encoding: chunked' >/dev/null
	check "2 MB chunked body: 413 (got $(code))" [ "$(code)" = 413 ]
	post 1 /write @"$T/big" >/dev/null
	check "2 MB body on the primary: 413" [ "$(code)" = 413 ]
	check "nothing of them written" [ "$(sql "$T/m1/app.db" 'SELECT count(*) FROM t')" = 1 ]
	check "still serving" [ "$(get 2 /rows)" = "1 first" ]
	check "health is GET only" [ "$(post 2 /ltfs/health x)" != "" ] && [ "$(code)" = 405 ]
	teardown
}

# The app down: 502, fast, and the proxy recovers when it is back.
case_app_down() {
	setup
	app_stop 2
	get 2 /rows >/dev/null
	check "502 with the app down" [ "$(code)" = 502 ]
	contains "$T/body" "cannot connect to the app"
	app_stop 1
	post 2 /write x >/dev/null
	check "502 with the primary's app down" [ "$(code)" = 502 ]
	app_start 2
	check "back" [ "$(get 2 /rows)" = "1 first" ]
	app_stop 2
	node_stop 2
	node_stop 1
}

# The primary killed while it handles a forwarded write: the client gets
# 502 promptly (no hang), and later writes 503 (no primary to reach).
case_primary_killed() {
	setup
	_t0=$(date +%s)
	curl -s --max-time 15 -o "$T/slow" -w '%{http_code}' -d x "$(purl 2)/slow" >"$T/scode" &
	_client=$!
	sleep 1
	node_kill 1
	wait $_client || true
	_secs=$(($(date +%s) - _t0))
	check "502 when the primary dies mid-request (got $(cat "$T/scode"))" [ "$(cat "$T/scode")" = 502 ]
	check "no hang ($_secs s)" [ $_secs -lt 6 ]
	post 2 /write after >/dev/null
	check "then 503 (got $(code))" [ "$(code)" = 503 ]
	check "reads still local" [ "$(get 2 /rows)" = "1 first" ]
	app_stop 1
	app_stop 2
	node_stop 2
}

# An app slower than proxy.timeout: 504 after about that long.
case_app_timeout() {
	printf 'proxy:\n  addr: 127.0.0.1:%s\n  target: 127.0.0.1:%s\n  timeout: 1s\n' \
		"$(proxy_port 1)" "$(app_port 1)" >"$T/slowapp.yml"
	node_start 1 --config "$T/slowapp.yml"
	app_start 1
	_t0=$(date +%s%N)
	post 1 /slow x >/dev/null
	_ms=$((($(date +%s%N) - _t0) / 1000000))
	check "504 (got $(code))" [ "$(code)" = 504 ]
	contains "$T/body" "did not answer within 1000 ms"
	check "after about 1 s, took $_ms ms" [ $_ms -ge 900 ] && [ $_ms -lt 2900 ]
	check "then serves again" [ "$(get 1 /static)" = hello ]
	app_stop 1
	node_stop 1
}

# Flags and config: --proxy-addr without a target is a usage error; a bad
# key names its line.
case_config() {
	mkdir -p "$T/m1"
	expect_exit 2 "$LTFS" mount --data "$T/d1" --proxy-addr 127.0.0.1:1 "$T/m1"
	contains "$T/err" "--proxy-target"
	printf 'proxy:\n  addr: 127.0.0.1:1\n  max-body: lots\n' >"$T/bad.yml"
	expect_exit 2 "$LTFS" mount --config "$T/bad.yml" "$T/m1"
	contains "$T/err" "line 3: 'max-body' must be a size"
	printf 'proxy:\n  addr: 0.0.0.0:%s\n  target: 127.0.0.1:1\n' "$(proxy_port 1)" >"$T/any.yml"
	expect_exit 2 "$LTFS" mount --data "$T/d1" --http "127.0.0.1:$((PORT_BASE + 1))" --config "$T/any.yml" "$T/m1"
	contains "$T/err" "advertise-url"
	# every proxy key of the example config parses
	{
		echo "proxy:"
		grep -E '^  # [a-z-]+: ' docs/ltfs.example.yml | sed -n '/# addr:/,/# passthrough:/p' | sed 's/^  # /  /'
		echo "threads: 999" # the first error, once every key before it parsed
	} >"$T/example.yml"
	check "example has the proxy keys" [ "$(grep -c '^  [a-z-]*:' "$T/example.yml")" = 10 ]
	HOST_IP=127.0.0.1 expect_exit 2 "$LTFS" mount --config "$T/example.yml" "$T/m1"
	contains "$T/err" "line 12: 'threads' must be a number"
	node_start 1 --proxy-addr "127.0.0.1:$(proxy_port 1)" --proxy-target "127.0.0.1:$(app_port 1)"
	curl -s "$(node_url 1)/v1/info" >"$T/info"
	contains "$T/info" "\"proxy_url\": \"http://127.0.0.1:$(proxy_port 1)\""
	node_stop 1
}

# A node stops with a WebSocket tunnel and a keep-alive connection open
# through its proxy: it exits promptly and the tunnel is closed.
case_stop_with_tunnel() {
	node_start 1 --proxy-addr "127.0.0.1:$(proxy_port 1)" --proxy-target "127.0.0.1:$(app_port 1)"
	app_start 1
	"$APP" ws "127.0.0.1:$(proxy_port 1)" /ws "held" 30 >"$T/ws" 2>&1 &
	_ws=$!
	{ printf 'GET /static HTTP/1.1\r\nHost: x\r\n\r\n'; sleep 8; } |
		"$APP" send "127.0.0.1:$(proxy_port 1)" >"$T/ka" 2>&1 &
	_i=0
	until [ "$(grep -sc '^echo: held$' "$T/ws")" = 2 ] && grep -qs hello "$T/ka"; do
		_i=$((_i + 1))
		check "tunnel and keep-alive connection up" [ $_i -lt 100 ]
		sleep 0.05
	done
	_t0=$(date +%s)
	node_stop 1
	wait $_ws
	check "stopped within 5 s" [ $(($(date +%s) - _t0)) -le 5 ]
	contains "$T/ws" "closed after"
	app_stop 1
}

run_case read_local
run_case write_forward
run_case cookie_wait
run_case health
run_case websocket
run_case routes
run_case badinput
run_case app_down
run_case primary_killed
run_case app_timeout
run_case config
run_case stop_with_tunnel
finish
