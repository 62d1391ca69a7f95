#!/bin/sh
# Replication between real nodes on loopback: each node its own mount, data
# dir and HTTP port; node 1 is the primary. Every scenario runs in the four
# journal modes, each mode with its own page size.
. tests/lib.sh

MODES=${MODES:-"delete:512 truncate:65536 persist:4096 wal:1024"}

# w N SQL: run SQL on node N's app.db in this case's journal mode.
w() {
	sqlite3 -bail -cmd ".timeout 10000" -cmd ".output /dev/null" \
		-cmd "PRAGMA page_size=$PAGE" -cmd "PRAGMA journal_mode=$MODE" -cmd ".output stdout" "$T/m$1/app.db" "$2"
}

# r N SQL: read on node N.
r() { sql "$T/m$1/app.db" "$2"; }

# A primary with app.db: table t(id, v) holding rows 1..3.
setup() {
	node_start 1
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
		INSERT INTO t(v) VALUES ('a'), ('b'), ('c');"
}

# checksum_of N: the database's checksum as the -pos file states it.
checksum_of() { pos "$1" app.db | cut -d/ -f2; }

# wait_file FILE: until FILE has content (at most 10 s).
wait_file() {
	_i=0
	while [ ! -s "$1" ]; do
		_i=$((_i + 1))
		check "$1 written" [ $_i -lt 200 ]
		sleep 0.05
	done
}

integrity_ok() { [ "$(r "$1" 'PRAGMA integrity_check')" = ok ]; }

# Write on the primary, see it on a replica, including on a connection that
# was open before the write (the kernel cache and SQLite's cache must go).
scenario_simple() {
	setup
	node_replica 2 1
	wait_sync app.db 1 2
	check "replica reads the rows" [ "$(r 2 'SELECT group_concat(v) FROM t')" = "a,b,c" ]
	check "page size replicated" [ "$(r 2 'PRAGMA page_size')" = "$PAGE" ]
	check "journal mode" [ "$(r 2 'PRAGMA journal_mode')" = "$([ "$MODE" = wal ] && echo wal || echo delete)" ]
	# an open connection on the replica sees the next write
	{
		echo ".output $T/first"
		echo "SELECT count(*) FROM t;"
		echo ".output $T/reads"
		sleep 1.5
		echo "SELECT count(*) FROM t;"
	} | sql "$T/m2/app.db" &
	_reader=$!
	wait_file "$T/first"
	w 1 "INSERT INTO t(v) VALUES ('d')"
	wait $_reader
	check "open connection sees the new row" [ "$(cat "$T/first" "$T/reads" | tr '\n' ' ')" = "3 4 " ]
	wait_sync app.db 1 2
	# an app waiting in poll() on the replica's -pos wakes with the apply
	pos_waiter "$T/m2/app.db-pos" 10000
	w 1 "INSERT INTO t(v) VALUES ('e')"
	_rc=0
	wait "$PW" || _rc=$?
	check "poll on the replica's -pos wakes (exit $_rc)" [ "$_rc" = 0 ]
	wait_sync app.db 1 2
	check "with the primary's position" contains "$T/pw.out" "now $(pos 1 app.db)"
	check ".primary names the primary" [ "$(cat "$T/m2/.primary")" = "$(node_url 1)" ]
	check ".primary absent on the primary" [ ! -e "$T/m1/.primary" ]
	check ".lag small" [ "$(cat "$T/m2/.lag" | tr -d '+\n' | sed 's/^0*//')" -lt 5000 ]
	integrity_ok 2
	node_stop 2
	node_stop 1
}

# Writes on a replica fail with SQLite's clearest error for the mode.
scenario_readonly() {
	setup
	node_replica 2 1
	wait_sync app.db 1 2
	set +e
	w 2 "INSERT INTO t(v) VALUES ('x')" 2>"$T/err"
	_rc=$?
	set -e
	check "write refused" [ $_rc -ne 0 ]
	if [ "$MODE" = wal ]; then
		contains "$T/err" "disk I/O error"
	else
		contains "$T/err" "attempt to write a readonly database"
	fi
	check "nothing changed" [ "$(r 2 'SELECT count(*) FROM t')" = 3 ]
	check "primary unaffected" [ "$(pos 1 app.db)" = "$(pos 2 app.db)" ]
	node_stop 2
	node_stop 1
}

# Deleting the database on the primary deletes it on replicas; recreating
# it replicates the new one.
scenario_drop() {
	setup
	node_replica 2 1
	wait_sync app.db 1 2
	rm "$T/m1/app.db"
	rm -f "$T/m1/app.db-wal" "$T/m1/app.db-shm"
	_i=0
	while [ -e "$T/m2/app.db" ]; do
		_i=$((_i + 1))
		check "gone on the replica" [ $_i -lt 200 ]
		sleep 0.05
	done
	w 1 "CREATE TABLE u(x); INSERT INTO u VALUES (42);"
	wait_sync app.db 1 2
	check "recreated on the replica" [ "$(r 2 'SELECT x FROM u')" = 42 ]
	check "old table gone" [ "$(r 2 "SELECT count(*) FROM sqlite_master WHERE name='t'")" = 0 ]
	integrity_ok 2
	node_stop 2
	node_stop 1
}

# A replica offline while the primary advances and folds its history comes
# back through a snapshot; a new replica joins the same way.
scenario_rejoin() {
	node_start 1 --history-keep 1
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
		INSERT INTO t(v) VALUES ('a'), ('b'), ('c');"
	node_replica 2 1
	wait_sync app.db 1 2
	node_stop 2
	_before=$(pos 2 app.db)
	for i in 1 2 3 4 5; do
		w 1 "INSERT INTO t(v) SELECT hex(randomblob(300)) FROM t LIMIT 40"
	done
	# the writer folds the history while idle: wait for the snapshot
	_esc=$(esc app.db)
	_i=0
	while [ "$(ls "$T/d1/dbs/$_esc/ltx" | grep -c '\.ltx$')" -gt 2 ]; do
		_i=$((_i + 1))
		check "history folded" [ $_i -lt 100 ]
		sleep 0.1
	done
	check "a snapshot 1-N exists" ls "$T/d1/dbs/$_esc/ltx/0000000000000001-"*.ltx >/dev/null
	node_replica 2 1
	wait_sync app.db 1 2
	check "moved on" [ "$(pos 2 app.db)" != "$_before" ]
	contains "$T/n1.log" "sending a snapshot"
	node_replica 3 1
	wait_sync app.db 1 2 3
	check "late joiner has the rows" [ "$(r 3 'SELECT count(*) FROM t')" = "$(r 1 'SELECT count(*) FROM t')" ]
	integrity_ok 2
	integrity_ok 3
	node_stop 3
	node_stop 2
	node_stop 1
}

# A node that was a primary on its own (its data diverged) joins as a
# replica: ahead, same TXID with another checksum, or behind on another
# branch. It ends with exactly the primary's data.
scenario_mismatch() {
	for shape in ahead same behind; do
		rm -rf "$T/d1" "$T/d2"
		node_start 1
		node_start 2
		w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('primary');"
		w 2 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('other');"
		case $shape in
		ahead) w 2 "INSERT INTO t(v) VALUES ('more'); INSERT INTO t(v) VALUES ('more');" ;;
		behind) w 1 "INSERT INTO t(v) VALUES ('more'); INSERT INTO t(v) VALUES ('more');" ;;
		esac
		node_stop 2
		node_replica 2 1
		wait_sync app.db 1 2
		check "$shape: same data" [ "$(r 2 'SELECT group_concat(v) FROM t')" = "$(r 1 'SELECT group_concat(v) FROM t')" ]
		check "$shape: same checksum" [ "$(checksum_of 2)" = "$(checksum_of 1)" ]
		integrity_ok 2
		# and it follows from there
		w 1 "INSERT INTO t(v) VALUES ('next')"
		wait_sync app.db 1 2
		node_stop 2
		node_stop 1
	done
}

# A long read transaction on a replica delays the apply, never tears it;
# the primary and the other replicas do not wait for it.
scenario_reader() {
	setup
	node_replica 2 1
	node_replica 3 1
	wait_sync app.db 1 2 3
	{
		echo ".output $T/first"
		echo "BEGIN; SELECT count(*) FROM t;"
		echo ".output $T/reads"
		sleep 2
		echo "SELECT count(*) FROM t; COMMIT;"
		# the held apply needs the read lock this connection just let go;
		# reading again at once may legitimately win the race for it
		sleep 0.5
		echo "SELECT count(*) FROM t;"
	} | sql "$T/m2/app.db" &
	_reader=$!
	wait_file "$T/first"
	_t0=$(date +%s%N)
	w 1 "INSERT INTO t(v) VALUES ('d')"
	w 1 "INSERT INTO t(v) VALUES ('e')"
	_t1=$(date +%s%N)
	check "primary commits do not wait for the replica" [ $(((_t1 - _t0) / 1000000)) -lt 1000 ]
	wait_sync app.db 1 3
	check "the held replica is behind meanwhile" [ "$(pos 2 app.db)" != "$(pos 1 app.db)" ]
	wait $_reader
	_reads=$(cat "$T/first" "$T/reads" | tr '\n' ' ')
	# after the commit the applies go on: the last read may see 'd' alone
	case $_reads in
	"3 3 4 " | "3 3 5 ") ;;
	*) check "stable inside the transaction, new rows after: $_reads" false ;;
	esac
	wait_sync app.db 1 2
	check "all rows in the end" [ "$(r 2 'SELECT count(*) FROM t')" = 5 ]
	integrity_ok 2
	node_stop 3
	node_stop 2
	node_stop 1
}

for m in $MODES; do
	MODE=${m%%:*}
	PAGE=${m##*:}
	for s in simple readonly drop rejoin mismatch reader; do
		eval "case_${s}_$MODE() { scenario_$s; }"
		run_case "${s}_$MODE"
	done
done

# Three nodes, writers on the primary, readers on both replicas, all at
# once; every node ends with the same checksum and a sound database.
case_three_nodes() {
	for MODE in wal delete truncate persist; do
		rm -rf "$T"/d* "$T/reads"*
		PAGE=4096
		setup
		node_replica 2 1
		node_replica 3 1
		wait_sync app.db 1 2 3
		_pids=
		for wr in 1 2; do
			(for i in $(seq 1 60); do w 1 "INSERT INTO t(v) VALUES ('w$wr-$i')"; done) &
			_pids="$_pids $!"
		done
		for n in 2 3; do
			(for i in $(seq 1 40); do r $n "SELECT count(*) FROM t" >>"$T/reads$n"; done) &
			_pids="$_pids $!"
		done
		for p in $_pids; do
			wait "$p" || { echo "    a writer or reader failed" >&2; exit 1; }
		done
		wait_sync app.db 1 2 3
		check "$MODE: 123 rows everywhere" [ "$(r 2 'SELECT count(*) FROM t')$(r 3 'SELECT count(*) FROM t')" = 123123 ]
		for n in 2 3; do
			check "$MODE: node $n counts only grow" sort -n -c "$T/reads$n"
			check "$MODE: node $n checksum" [ "$(checksum_of $n)" = "$(checksum_of 1)" ]
			integrity_ok $n
		done
		node_stop 3
		node_stop 2
		node_stop 1
	done
}
run_case three_nodes

# Readers that each open the replica's database anew, while the primary
# commits transactions that move amounts from table a to table b, keeping
# the total. A replica applying to a database that no app has open takes no
# lock; an app that opens it meanwhile must wait for the apply, never read
# half of it. The replica (a test build) pauses each apply between its page
# writes and the cache invalidation; readers that scan only table a keep
# its old pages in the kernel's cache, so a reader of both tables in that
# pause would add old a to new b.
case_fresh_readers() {
	for MODE in wal delete; do
		rm -rf "$T"/d* "$T/sums"
		PAGE=4096
		node_start 1
		w 1 "CREATE TABLE a(id INTEGER PRIMARY KEY, n INTEGER, pad BLOB);
			CREATE TABLE b(id INTEGER PRIMARY KEY, n INTEGER);
			WITH RECURSIVE k(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM k WHERE x < 3000)
			INSERT INTO a SELECT x, 100, randomblob(300) FROM k;
			INSERT INTO b VALUES (1, 0);"
		LTFS_FAULT=apply-slow LTFS="$LTFS_FAULTS_BIN" node_replica 2 1
		wait_sync app.db 1 2
		(for i in $(seq 1 40); do
			w 1 "BEGIN; UPDATE a SET n = n - 1 WHERE id % 7 = $((i % 7)) AND id <= 2996;
				UPDATE b SET n = n + 428; COMMIT;"
		done) &
		_writer=$!
		for i in $(seq 1 40); do
			r 2 "SELECT sum(n) FROM a" >/dev/null 2>&1
			r 2 "SELECT (SELECT sum(n) FROM a) + (SELECT n FROM b)" >>"$T/sums" 2>&1 ||
				echo "read $i failed" >>"$T/sums"
		done
		wait $_writer || { echo "    the writer failed" >&2; exit 1; }
		wait_sync app.db 1 2
		check "$MODE: every fresh reader saw a whole transaction: $(sort "$T/sums" | uniq -c | tr '\n' ' ')" \
			[ "$(sort -u "$T/sums")" = 300000 ]
		check "$MODE: the applies paused" [ "$(grep -c "injected stall: 'apply-slow'" "$T/n2.log")" -ge 20 ]
		check "$MODE: checksum" [ "$(checksum_of 2)" = "$(checksum_of 1)" ]
		integrity_ok 2
		node_stop 2
		node_stop 1
	done
}
run_case fresh_readers

# The endpoints and `ltfs status`, on a primary and a replica.
case_http_endpoints() {
	MODE=wal
	PAGE=4096
	node_replica 2 1 # before its primary: not ready
	check "replica not ready" [ "$(curl -s -o /dev/null -w '%{http_code}' "$(node_url 2)/healthz")" = 503 ]
	setup
	wait_sync app.db 1 2
	check "primary healthy" [ "$(curl -s -o /dev/null -w '%{http_code}' "$(node_url 1)/healthz")" = 200 ]
	check "replica ready" [ "$(curl -s -o /dev/null -w '%{http_code}' "$(node_url 2)/healthz")" = 200 ]

	curl -sf "$(node_url 1)/metrics" >"$T/metrics"
	_txid=$((0x$(pos 1 app.db | cut -d/ -f1)))
	contains "$T/metrics" "ltfs_db_txid{db=\"app.db\"} $_txid"
	contains "$T/metrics" "ltfs_primary 1"
	contains "$T/metrics" "ltfs_streams 1"
	curl -sf "$(node_url 2)/metrics" >"$T/metrics2"
	contains "$T/metrics2" "ltfs_replica_connected 1"
	contains "$T/metrics2" "ltfs_db_txid{db=\"app.db\"} $_txid"

	expect_exit 0 "$LTFS" status --url "$(node_url 2)"
	contains "$T/out" "role    replica of $(node_url 1), in sync"
	contains "$T/out" "app.db"
	expect_exit 0 "$LTFS" status --url "$(node_url 1)" --json
	contains "$T/out" '"role": "primary"'
	contains "$T/out" "\"txid\": \"$(pos 1 app.db | cut -d/ -f1)\""
	expect_exit 1 "$LTFS" status --url "http://127.0.0.1:1"
	contains "$T/err" "127.0.0.1:1"

	# the history as one file rebuilds the database
	r 1 "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
	curl -sf -o "$T/all.ltx" "$(node_url 1)/v1/db/app.db/ltx"
	expect_exit 0 "$LTFS" ltx verify "$T/all.ltx"
	rm -f "$T/rebuilt.db"
	expect_exit 0 "$LTFS" ltx apply "$T/rebuilt.db" "$T/all.ltx"
	check "rebuilt rows" [ "$(sql "$T/rebuilt.db" 'SELECT group_concat(v) FROM t')" = "a,b,c" ]
	check "not a file boundary" [ "$(curl -s -o /dev/null -w '%{http_code}' "$(node_url 1)/v1/db/app.db/ltx?from=99")" = 404 ]
	check "bad from" [ "$(curl -s -o /dev/null -w '%{http_code}' "$(node_url 1)/v1/db/app.db/ltx?from=x")" = 400 ]
	check "unknown endpoint" [ "$(curl -s -o /dev/null -w '%{http_code}' "$(node_url 1)/v2/nothing")" = 404 ]
	check "stream refused by a replica" [ "$(curl -s -o /dev/null -w '%{http_code}' -d '{"dbs":[]}' "$(node_url 2)/v1/stream")" = 503 ]
	node_stop 2
	node_stop 1
}
run_case http_endpoints

finish
