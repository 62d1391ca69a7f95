#!/bin/sh
# Operations on whole databases: ltfs export from any node, ltfs import on
# the primary as one transaction that replicates, cp over a live database
# refused, and a crash in the middle of an import.
. tests/lib.sh

# rows N DB TABLE: the row count of TABLE on node N.
rows() { sql "$T/m$1/$2" "SELECT count(*) FROM $3"; }
txid_of() { pos "$1" "$2" | cut -d/ -f1; }

# A replica's database out as a plain file: same rows, integrity ok, the
# TXID the node reports; OUT is never overwritten without --force, and
# --force drops a stale -wal beside it.
case_export() {
	node_start 1
	node_replica 2 1
	sql "$T/m1/app.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(x);
		INSERT INTO t SELECT randomblob(300) FROM generate_series(1, 2000)" >/dev/null
	for i in 1 2 3; do sql "$T/m1/app.db" "INSERT INTO t VALUES ($i)"; done
	wait_sync app.db 1 2
	expect_exit 0 "$LTFS" export --url "$(node_url 2)" app.db "$T/out.db"
	contains "$T/out" "at TXID $((0x$(txid_of 2 app.db)))"
	check "rows" [ "$(sql "$T/out.db" 'SELECT count(*) FROM t')" = "$(rows 1 app.db t)" ]
	check "integrity" [ "$(sql "$T/out.db" 'PRAGMA integrity_check')" = ok ]
	check "same content as the primary" [ "$(sql "$T/out.db" 'SELECT sum(length(x)) FROM t')" = \
		"$(sql "$T/m1/app.db" 'SELECT sum(length(x)) FROM t')" ]
	cp "$T/out.db" "$T/before.db"
	expect_exit 1 "$LTFS" export --url "$(node_url 2)" app.db "$T/out.db"
	contains "$T/err" "not overwritten without --force"
	check "OUT untouched" cmp -s "$T/out.db" "$T/before.db"
	echo stale >"$T/out.db-wal"
	sql "$T/m1/app.db" "INSERT INTO t VALUES (4)"
	wait_sync app.db 1 2
	expect_exit 0 "$LTFS" export --url "$(node_url 1)" -f app.db "$T/out.db"
	check "stale -wal removed" [ ! -e "$T/out.db-wal" ]
	check "newer rows" [ "$(sql "$T/out.db" 'SELECT count(*) FROM t')" = 2004 ]
	expect_exit 1 "$LTFS" export --url "$(node_url 1)" nosuch.db "$T/n.db"
	contains "$T/err" "answered 404"
	check "nothing written" [ ! -e "$T/n.db" ] && [ ! -e "$T/n.db.tmp" ]
	node_stop 2
	node_stop 1
}
run_case export

# Import on the primary: one new TXID, on the replica too; the reader sees
# the imported content. Both journal modes.
case_import() {
	node_start 1
	node_replica 2 1
	sql "$T/m1/wal.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)" >/dev/null
	sql "$T/m1/roll.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1)"
	sql "$T/in.db" "CREATE TABLE u(y); INSERT INTO u SELECT value FROM generate_series(1, 500)"
	for db in wal.db roll.db; do
		wait_sync "$db" 1 2
		before=$((0x$(txid_of 1 "$db")))
		expect_exit 0 "$LTFS" import --url "$(node_url 1)" "$db" "$T/in.db"
		check "$db: one transaction" [ "$((0x$(txid_of 1 "$db")))" = $((before + 1)) ]
		wait_sync "$db" 1 2
		check "$db: replica has the import" [ "$(rows 2 "$db" u)" = 500 ]
		check "$db: old table gone" [ -z "$(sql "$T/m2/$db" "SELECT name FROM sqlite_master WHERE name = 't'")" ]
	done
	check "WAL mode kept" [ "$(sql "$T/m1/wal.db" 'PRAGMA journal_mode')" = wal ]
	# a database that did not exist
	expect_exit 0 "$LTFS" import --url "$(node_url 1)" new.db "$T/in.db"
	wait_sync new.db 1 2
	check "new database replicated" [ "$(rows 2 new.db u)" = 500 ]
	node_stop 2
	node_stop 1
}
run_case import

# Refusals leave the database as it was: a replica, a file that is not a
# database, a WAL database offered another page size, a bad name.
case_import_refused() {
	node_start 1
	node_replica 2 1
	sql "$T/m1/app.db" "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)" >/dev/null
	wait_sync app.db 1 2
	p0=$(pos 1 app.db)
	sql "$T/in.db" "CREATE TABLE u(y)"
	expect_exit 1 "$LTFS" import --url "$(node_url 2)" app.db "$T/in.db"
	contains "$T/err" "is a replica: import on the primary's machine ($(node_url 1))"
	head -c 8192 /dev/urandom >"$T/junk.db"
	expect_exit 1 "$LTFS" import --url "$(node_url 1)" app.db "$T/junk.db"
	contains "$T/err" "'$T/junk.db'"
	sql "$T/small.db" "PRAGMA page_size=1024; CREATE TABLE z(a); VACUUM"
	expect_exit 1 "$LTFS" import --url "$(node_url 1)" app.db "$T/small.db"
	contains "$T/err" "keeps its page size"
	expect_exit 2 "$LTFS" import --url "$(node_url 1)" ../app.db "$T/in.db"
	check "unchanged" [ "$(pos 1 app.db)" = "$p0" ]
	check "rows" [ "$(rows 1 app.db t)" = 1 ]
	node_stop 2
	node_stop 1
}
run_case import_refused

# cp over a live database is refused with EPERM and a log line that says
# what to do; cp to a new name makes a database at TXID 1 that replicates.
case_cp() {
	node_start 1
	node_replica 2 1
	sql "$T/m1/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1)"
	sql "$T/in.db" "CREATE TABLE u(y); INSERT INTO u VALUES ('copied')"
	wait_sync app.db 1 2
	p0=$(pos 1 app.db)
	expect_exit 1 cp "$T/in.db" "$T/m1/app.db"
	contains "$T/err" "Operation not permitted"
	contains "$T/n1.log" "use 'ltfs import app.db FILE' to replace it"
	check "unchanged" [ "$(pos 1 app.db)" = "$p0" ] && [ "$(rows 1 app.db t)" = 1 ]
	cp "$T/in.db" "$T/m1/copy.db"
	check "a database at TXID 1" [ "$(txid_of 1 copy.db)" = 0000000000000001 ]
	wait_sync copy.db 1 2
	check "replicated" [ "$(sql "$T/m2/copy.db" 'SELECT y FROM u')" = copied ]
	node_stop 2
	node_stop 1
}
run_case cp

# kill -9 of the primary in the middle of a large import: after a restart
# the database is the old one or the new one, whole, and the replica
# agrees with it.
case_kill_import() {
	sql "$T/in.db" "CREATE TABLE u(y); INSERT INTO u SELECT randomblob(1000) FROM generate_series(1, 30000)"
	node_start 1
	node_replica 2 1
	sql "$T/m1/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1)"
	wait_sync app.db 1 2
	for round in 1 2 3 4 5; do
		"$LTFS" import --url "$(node_url 1)" app.db "$T/in.db" >"$T/imp.out" 2>&1 &
		imp=$!
		# the import takes about a second here: kill anywhere in it, or after
		sleep "$(shuf -i 100-1500 -n 1 | awk '{ print $1 / 1000 }')"
		node_kill 1
		wait $imp 2>/dev/null || true
		node_start 1
		check "integrity (round $round)" [ "$(sql "$T/m1/app.db" 'PRAGMA integrity_check')" = ok ]
		old=$(sql "$T/m1/app.db" "SELECT count(*) FROM sqlite_master WHERE name = 't'")
		new=$(sql "$T/m1/app.db" "SELECT count(*) FROM sqlite_master WHERE name = 'u'")
		check "old or new, not both (round $round: t=$old u=$new)" [ $((old + new)) = 1 ]
		[ "$new" = 0 ] || check "all rows" [ "$(rows 1 app.db u)" = 30000 ]
		wait_sync app.db 1 2
		check "replica integrity" [ "$(sql "$T/m2/app.db" 'PRAGMA integrity_check')" = ok ]
		[ "$new" = 1 ] && break
	done
	echo "    import survived kill in round $round ($([ "$new" = 1 ] && echo imported || echo old kept))"
	node_stop 2
	node_stop 1
}
run_case kill_import

finish
