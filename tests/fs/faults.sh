# Failures inside the commit path, injected by name in the test build
# (LTFS_FAULT=OP[:N]): SQLite must see an error or nothing at all, no
# acknowledged commit may be lost, and the history must stay a chain.
. tests/lib.sh

: "${LTFS_FAULTS_BIN:?run through tests/run}"

mount_faulty() {
	LTFS_FAULT=$1 LTFS="$LTFS_FAULTS_BIN" ltfs_mount "$M"
}

# Rollback mode: the LTX cannot be written, so the journal is not
# finalized: SQLite reports an I/O error, the journal stays hot and the
# next reader rolls the transaction back. Nothing is half-recorded.
case_rollback_commit_fails() {
	M=$T/mnt
	for op in commit-ltx-open commit-ltx-write; do
		mount_faulty "$op:1"
		db=r-$op.db
		sql "$M/$db" "CREATE TABLE t(x);" 2>"$T/sql.err" || true
		check "$op: the app saw the failure" contains "$T/sql.err" "disk I/O error"
		check "$op: logged" contains "$T/ltfs.log" "injected fault"
		# the fault is spent: the next transaction works
		sql "$M/$db" "CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1);"
		check "$op: data" [ "$(sql "$M/$db" 'SELECT count(*) FROM t')" = 1 ]
		check "$op: history" history_rebuilds "$db"
		ltfs_umount "$M"
	done
}

# WAL mode: the commit is durable in the WAL before the LTX exists. A
# failing history writer retries; commits go on, nothing is lost.
case_wal_writer_retries() {
	M=$T/mnt
	mount_faulty "writer-ltx:2"
	sql "$M/w.db" "PRAGMA journal_mode=wal; CREATE TABLE t(x);" >/dev/null
	for i in 1 2 3 4 5; do
		sql "$M/w.db" "INSERT INTO t VALUES ($i);"
	done
	check "commits went on" [ "$(sql "$M/w.db" 'SELECT count(*) FROM t')" = 5 ]
	sleep 2.5 # two retries, one second apart
	check "retry logged" contains "$T/ltfs.log" "retrying in 1 s"
	check "history complete" history_rebuilds w.db
	check "position" [ "$(printf '%d' "0x$(cut -d/ -f1 "$M/w.db-pos")")" -eq 7 ]
	ltfs_umount "$M"
	# and after a restart, nothing to repair
	ltfs_mount "$M"
	check "rows" [ "$(sql "$M/w.db" 'SELECT count(*) FROM t')" = 5 ]
	ltfs_umount "$M"
}

# The daemon dies while a WAL commit's LTX is still queued (the writer is
# failing): start-up records it from the WAL.
case_wal_crash_with_queued_commit() {
	M=$T/mnt
	mount_faulty "writer-ltx"
	sql "$M/q.db" "PRAGMA journal_mode=wal; CREATE TABLE t(x);" >/dev/null
	mkfifo "$T/fifo"
	sqlite3 "$M/q.db" <"$T/fifo" >/dev/null &
	sp=$!
	exec 4>"$T/fifo"
	echo "SELECT count(*) FROM t;" >&4 # keeps the WAL
	sql "$M/q.db" "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);"
	ltfs_kill "$M"
	exec 4>&-
	kill -9 $sp 2>/dev/null
	wait $sp 2>/dev/null || true
	ltfs_mount "$M"
	check "recorded from the wal" contains "$T/ltfs.log" "from the wal"
	check "rows" [ "$(sql "$M/q.db" 'SELECT count(*) FROM t')" = 2 ]
	check "history" history_rebuilds q.db
	ltfs_umount "$M"
}

run_case rollback_commit_fails
run_case wal_writer_retries
run_case wal_crash_with_queued_commit
finish
