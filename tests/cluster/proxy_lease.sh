#!/bin/sh
# The write-forwarding proxy in lease mode (a real S3 bucket on loopback):
# the proxies find the primary through the lease, and follow it when it
# moves (tests/cluster/proxy.sh covers static roles and the HTTP details).
. tests/lib.sh

s3_suite_start

APP=${LTFS_BUILD:?LTFS_BUILD must point at the build dir}/proxy-app
app_port() { echo $((PORT_BASE + 6 + $1)); }
proxy_port() { echo $((PORT_BASE + 10 + $1)); }
purl() { echo "http://127.0.0.1:$(proxy_port "$1")"; }

# lstart N [ARGS]: node N in lease mode with its proxy.
lstart() {
	_n=$1
	shift
	node_start "$_n" "$@" --s3 "$(url failover)" --lease s3 --lease-ttl 2s --upload-interval 0 \
		--proxy-addr "127.0.0.1:$(proxy_port "$_n")" --proxy-target "127.0.0.1:$(app_port "$_n")" \
		--proxy-db app.db
}

app_start() {
	"$APP" serve "$(app_port "$1")" "$T/m$1/app.db" >>"$T/app$1.log" 2>&1 &
	echo $! >"$T/ltfs.pid.app$1"
}

app_stop() {
	kill "$(cat "$T/ltfs.pid.app$1")" 2>/dev/null || true
	wait "$(cat "$T/ltfs.pid.app$1")" 2>/dev/null || true
}

role() {
	curl -sf -m 2 "$(node_url "$1")/v1/info" 2>/dev/null | sed -n 's/^  "role": "\([a-z]*\)".*/\1/p'
}

# wait_role N ROLE: at most 20 s.
wait_role() {
	_i=0
	until [ "$(role "$1")" = "$2" ]; do
		_i=$((_i + 1))
		check "node $1 becomes $2" [ $_i -lt 200 ]
		sleep 0.1
	done
}

# post N VALUE: POST /write through node N's proxy until it answers 201
# (a failover in progress answers 503), at most 20 s; headers in $T/hdr.
post() {
	_i=0
	while :; do
		_code=$(curl -s -m 10 -D "$T/hdr" -o "$T/body" -w '%{http_code}' --data-binary "$2" \
			"$(purl "$1")/write" || true)
		[ "$_code" = 201 ] && return 0
		_i=$((_i + 1))
		if [ $_i -gt 80 ]; then
			echo "    POST on node $1: $_code $(cat "$T/body")" >&2
			return 1
		fi
		sleep 0.25
	done
}

last_row() { sql "$T/m$1/app.db" 'SELECT v FROM t ORDER BY id DESC LIMIT 1'; }

case_failover() {
	lstart 1
	wait_role 1 primary
	sql "$T/m1/app.db" "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" >/dev/null
	lstart 2
	lstart 3 --no-candidate
	wait_role 2 replica
	wait_role 3 replica
	wait_sync app.db 1 2 3
	app_start 1
	app_start 2
	app_start 3
	post 2 via-replica
	check "forwarded to the primary" [ "$(last_row 1)" = via-replica ]
	contains "$T/hdr" "Set-Cookie: __txid="
	post 3 via-node-3
	check "node 3 forwards to node 1" [ "$(last_row 1)" = via-node-3 ]
	wait_sync app.db 1 2 3
	# the primary dies: node 2 takes the lease, and its proxy writes locally
	app_stop 1
	node_kill 1
	wait_role 2 primary
	post 2 after-failover
	check "written on the new primary" [ "$(last_row 2)" = after-failover ]
	# node 3's proxy knew node 1's: it follows the lease to node 2's
	post 3 node-3-after-failover
	check "node 3 forwards to node 2 now" [ "$(last_row 2)" = node-3-after-failover ]
	# the old primary comes back as a replica: its proxy forwards to node 2
	lstart 1
	wait_role 1 replica
	wait_sync app.db 2 1
	app_start 1
	post 1 via-old-primary
	check "forwarded to the new primary" [ "$(last_row 2)" = via-old-primary ]
	wait_sync app.db 2 1
	check "and replicated back" [ "$(last_row 1)" = via-old-primary ]
	curl -s -o /dev/null -w '%{http_code}' "$(purl 1)/ltfs/health" >"$T/h"
	check "replica healthy" [ "$(cat "$T/h")" = 200 ]
	app_stop 1
	app_stop 2
	app_stop 3
	node_stop 3
	node_stop 1
	node_stop 2
}

run_case failover
finish
