#!/bin/sh
# Replication under faults: the primary killed mid-stream or restarted, a
# replica killed mid-apply and restarted. Replicas must always converge to
# the primary's exact checksum with a sound database.
. tests/lib.sh

: "${LTFS_CRASH_ITERATIONS:=100}"
# Rounds of kills per case: a tenth of the crash loop's, at least 5.
ROUNDS=$((LTFS_CRASH_ITERATIONS / 10))
[ "$ROUNDS" -lt 5 ] && ROUNDS=5

w() {
	sqlite3 -bail -cmd ".timeout 10000" -cmd ".output /dev/null" \
		-cmd "PRAGMA journal_mode=$MODE" -cmd ".output stdout" "$T/m$1/app.db" "$2"
}
r() { sql "$T/m$1/app.db" "$2"; }
checksum_of() { pos "$1" app.db | cut -d/ -f2; }

# converged N...: every node has the primary's position, checksum and a
# sound database.
converged() {
	wait_sync app.db 1 "$@"
	for n in "$@"; do
		check "node $n checksum" [ "$(checksum_of "$n")" = "$(checksum_of 1)" ]
		check "node $n integrity" [ "$(r "$n" 'PRAGMA integrity_check')" = ok ]
		check "node $n rows" [ "$(r "$n" 'SELECT count(*) FROM t')" = "$(r 1 'SELECT count(*) FROM t')" ]
	done
}

# A background writer on the primary: transactions of a few hundred KB,
# so that applies on replicas take long enough to be interrupted.
start_writer() {
	(
		i=0
		while [ $i -lt 400 ]; do
			w 1 "INSERT INTO t(v) SELECT randomblob(2000) FROM (SELECT 1 UNION ALL SELECT 2) , (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) LIMIT 5" 2>/dev/null || true
			i=$((i + 1))
		done
	) &
	WRITER=$!
}

stop_writer() {
	kill "$WRITER" 2>/dev/null || true
	wait "$WRITER" 2>/dev/null || true
}

# random_sleep MAX_MS
random_sleep() { sleep "0.$(printf '%03d' $(($(od -An -N2 -tu2 /dev/urandom) % $1)))"; }

setup() {
	node_start 1
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t(v) VALUES (randomblob(100));"
	node_replica 2 1
	wait_sync app.db 1 2
}

scenario_kill_replica() {
	setup
	for i in $(seq 1 "$ROUNDS"); do
		start_writer
		random_sleep 800
		node_kill 2
		stop_writer
		node_replica 2 1
		converged 2
	done
	node_stop 2
	node_stop 1
}

scenario_kill_primary() {
	setup
	for i in $(seq 1 "$ROUNDS"); do
		start_writer
		random_sleep 800
		node_kill 1
		stop_writer
		node_start 1
		converged 2
	done
	contains "$T/n2.log" "reconnecting"
	node_stop 2
	node_stop 1
}

# A clean restart of the primary: streams end with END, replicas come back
# and follow the writes made after the restart.
scenario_restart_primary() {
	setup
	node_stop 1
	check ".primary gone while disconnected" sh -c "sleep 0.3; [ ! -e '$T/m2/.primary' ]"
	node_start 1
	w 1 "INSERT INTO t(v) VALUES (randomblob(10))"
	converged 2
	contains "$T/n2.log" "the primary closed the stream"
	curl -sf "$(node_url 2)/v1/info" >"$T/info"
	# why the last stream ended: the stop, or the refused reconnects after it
	contains "$T/info" "\"last_error\": \""
	contains "$T/info" '"connected": true'
	node_stop 2
	node_stop 1
}

# The primary dies while a new replica receives a large snapshot: the
# half-received file is discarded, nothing is applied, and the replica
# gets the whole snapshot once the primary is back.
scenario_snapshot_cut() {
	node_start 1
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
		WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 40000)
		INSERT INTO t(v) SELECT randomblob(1000) FROM n;"
	node_replica 2 1
	_i=0
	while ! ls "$T/d2/staging/" 2>/dev/null | grep -q .; do
		_i=$((_i + 1))
		[ $_i -gt 2000 ] && break
		sleep 0.001
	done
	node_kill 1
	# whatever the replica has is whole: no table yet, or all 40000 rows
	if [ -n "$(pos 2 app.db)" ]; then
		check "sound after the cut" [ "$(r 2 'PRAGMA integrity_check')" = ok ]
		_rows=$(r 2 "SELECT count(*) FROM sqlite_master WHERE name = 't'")
		[ "$_rows" = 0 ] || _rows=$(r 2 'SELECT count(*) FROM t')
		check "nothing half applied: $_rows rows" [ "$_rows" = 0 -o "$_rows" = 40000 ]
	fi
	node_start 1
	converged 2
	check "staging emptied" [ -z "$(ls "$T/d2/staging")" ]
	node_stop 2
	node_stop 1
}

# A replica's database that fails verification at start-up (a page the
# newest file does not hold is damaged) is not served, is reported to the
# primary as TXID 0, and comes back whole from the primary's history.
scenario_broken_replica() {
	setup
	w 1 "INSERT INTO t(v) VALUES (randomblob(30000))"
	w 1 "INSERT INTO t(v) VALUES (randomblob(10))"
	wait_sync app.db 1 2
	node_stop 2
	# page 4: an overflow page of the big row, not in the newest file
	_ps=$(r 1 'PRAGMA page_size')
	printf 'XXXXXXXX' | dd of="$T/d2/dbs/app.db/database" bs=1 seek=$((_ps * 3 + 100)) conv=notrunc 2>/dev/null
	node_replica 2 1
	wait_sync app.db 1 2
	contains "$T/n2.log" "NOT SERVED"
	converged 2
	node_stop 2
	node_stop 1
}

for MODE in wal delete; do
	for s in kill_replica kill_primary restart_primary snapshot_cut broken_replica; do
		eval "case_${s}_$MODE() { scenario_$s; }"
		run_case "${s}_$MODE"
	done
done

finish
