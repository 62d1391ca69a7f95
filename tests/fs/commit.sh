# Commit detection through a real mount, driven by the sqlite3 CLI: every
# scenario in all four journal modes and with 512- and 65536-byte pages.
. tests/lib.sh

MODES="delete truncate persist wal"
SIZES="512 65536"

# The history of DB, applied to an empty file, must give the database's
# bytes exactly (after a checkpoint, so WAL frames are in the file), and
# the -pos file must name the last TXID and that state's checksum.
check_history() {
	_name=$1
	_esc=$(esc "$_name")
	sql "$M/$_name" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
	rm -f "$T/applied.db"
	"$LTFS" ltx apply "$T/applied.db" "$T/data/dbs/$_esc/ltx/"*.ltx >"$T/apply.out" 2>&1 ||
		{ cat "$T/apply.out" >&2; return 1; }
	cmp "$T/applied.db" "$T/data/dbs/$_esc/database" ||
		{ echo "    history of $_name does not rebuild it" >&2; return 1; }
	_sum=$("$LTFS" ltx checksum "$T/applied.db")
	_pos=$(cat "$M/$_name-pos")
	[ "${_pos#*/}" = "$_sum" ] ||
		{ echo "    $_name-pos says $_pos, database checksum is $_sum" >&2; return 1; }
}

txid() {
	printf '%d' "0x$(cut -d/ -f1 "$M/$1-pos")"
}

ltx_count() {
	ls "$T/data/dbs/$1/ltx" | grep -c '\.ltx$'
}

files_after() { # DB TXID: "N M", history files after TXID, M of them holding several
	_n=0
	_m=0
	for _f in $(ls "$T/data/dbs/$1/ltx"); do
		case $_f in *-*.ltx) ;; *) continue ;; esac
		_min=$(printf '%d' "0x${_f%%-*}")
		_max=${_f#*-}
		_max=$(printf '%d' "0x${_max%.ltx}")
		[ "$_min" -gt "$2" ] || continue
		_n=$((_n + 1))
		[ "$_min" -eq "$_max" ] || _m=$((_m + 1))
	done
	echo "$_n $_m"
}

new_db() { # name mode pagesize
	sql "$M/$1" "PRAGMA page_size=$3; PRAGMA journal_mode=$2;" >/dev/null
	sql "$M/$1" "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
}

case_ok() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in $MODES; do
		for ps in $SIZES; do
			db=ok-$mode-$ps.db
			new_db "$db" "$mode" "$ps"
			t0=$(txid "$db")
			for i in 1 2 3; do
				sql "$M/$db" "INSERT INTO t(v) VALUES ('row $i');"
			done
			check "$db: three commits, three TXIDs" [ "$(txid "$db")" -eq $((t0 + 3)) ]
			check "$db: rows" [ "$(sql "$M/$db" 'SELECT count(*) FROM t')" = 3 ]
			check_history "$db"
		done
	done
	ltfs_umount "$M"
	# Everything survives a remount.
	ltfs_mount "$M"
	check "remount" [ "$(sql "$M/ok-wal-512.db" 'SELECT count(*) FROM t')" = 3 ]
	check_history ok-delete-65536.db
	ltfs_umount "$M"
}

case_rollback_and_no_write() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in $MODES; do
		for ps in $SIZES; do
			db=rb-$mode-$ps.db
			new_db "$db" "$mode" "$ps"
			sql "$M/$db" "INSERT INTO t(v) VALUES ('kept');"
			t0=$(txid "$db")
			n0=$(ltx_count "$db")
			# a rollback after pages were spilled to the file
			sql "$M/$db" "PRAGMA cache_size=2; BEGIN;
				WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<500)
				INSERT INTO t(v) SELECT hex(randomblob(300)) FROM c; ROLLBACK;"
			sql "$M/$db" "BEGIN IMMEDIATE; COMMIT;"
			sql "$M/$db" "BEGIN; SELECT count(*) FROM t; COMMIT;" >/dev/null
			check "$db: no new TXID" [ "$(txid "$db")" -eq "$t0" ]
			check "$db: no new LTX" [ "$(ltx_count "$db")" -eq "$n0" ]
			check "$db: rows" [ "$(sql "$M/$db" 'SELECT count(*) FROM t')" = 1 ]
			check_history "$db"
		done
	done
	ltfs_umount "$M"
}

# Transactions larger than the page cache (several journal segments in
# rollback modes), growth, then VACUUM shrinking the file.
case_big_and_vacuum() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in $MODES; do
		for ps in $SIZES; do
			db=big-$mode-$ps.db
			new_db "$db" "$mode" "$ps"
			t0=$(txid "$db")
			sql "$M/$db" "PRAGMA cache_size=10; BEGIN;
				WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<2000)
				INSERT INTO t(v) SELECT hex(randomblob(200)) FROM c;
				UPDATE t SET v = v || 'x' WHERE id % 3 = 0; COMMIT;"
			check "$db: one big commit" [ "$(txid "$db")" -eq $((t0 + 1)) ]
			check_history "$db"
			before=$(stat -c %s "$T/data/dbs/$db/database")
			sql "$M/$db" "DELETE FROM t WHERE id > 100; VACUUM;"
			after=$(stat -c %s "$T/data/dbs/$db/database")
			check "$db: vacuum shrank ($before -> $after)" [ "$after" -lt "$before" ]
			check "$db: integrity" [ "$(sql "$M/$db" 'PRAGMA integrity_check')" = ok ]
			check_history "$db"
		done
	done
	ltfs_umount "$M"
}

case_wal_checkpoints() {
	M=$T/mnt
	ltfs_mount "$M"
	for ps in 512 4096 65536; do
		db=ckpt-$ps.db
		new_db "$db" wal "$ps"
		for mode in PASSIVE FULL RESTART TRUNCATE; do
			sql "$M/$db" "INSERT INTO t(v) VALUES ('$mode');
				PRAGMA wal_checkpoint($mode);" >/dev/null
			sql "$M/$db" "INSERT INTO t(v) VALUES ('after $mode');"
		done
		check "$db: rows" [ "$(sql "$M/$db" 'SELECT count(*) FROM t')" = 8 ]
		check_history "$db"
	done
	ltfs_umount "$M"
}

# locking_mode=EXCLUSIVE in WAL mode: the WAL write lock is never released
# and the -shm is not used, yet every commit is seen.
case_wal_exclusive() {
	M=$T/mnt
	ltfs_mount "$M"
	new_db ex.db wal 4096
	t0=$(txid ex.db)
	sql "$M/ex.db" "PRAGMA locking_mode=EXCLUSIVE; INSERT INTO t(v) VALUES (1);
		INSERT INTO t(v) VALUES (2); INSERT INTO t(v) VALUES (3);"
	check "three commits seen" [ "$(txid ex.db)" -eq $((t0 + 3)) ]
	check_history ex.db
	ltfs_umount "$M"
}

# A writer and readers in other processes at the same time.
case_concurrent_readers() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in $MODES; do
		for ps in $SIZES; do
			db=conc-$mode-$ps.db
			new_db "$db" "$mode" "$ps"
			(
				for i in $(seq 1 60); do
					sql "$M/$db" "INSERT INTO t(v) VALUES ('w$i');" || exit 1
				done
			) &
			wpid=$!
			fails=0
			for r in $(seq 1 30); do
				sql "$M/$db" "SELECT count(*) FROM t;" >/dev/null || fails=$((fails + 1))
			done
			wait $wpid || { echo "    writer failed" >&2; exit 1; }
			check "$db: readers never failed ($fails)" [ "$fails" -eq 0 ]
			check "$db: all rows" [ "$(sql "$M/$db" 'SELECT count(*) FROM t')" = 60 ]
			check "$db: integrity" [ "$(sql "$M/$db" 'PRAGMA integrity_check')" = ok ]
			check_history "$db"
		done
	done
	ltfs_umount "$M"
}

case_drop_db() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in $MODES; do
		db=drop-$mode.db
		new_db "$db" "$mode" 4096
		sql "$M/$db" "INSERT INTO t(v) VALUES (1);"
		t0=$(txid "$db")
		rm "$M/$db"
		check "$db gone" [ ! -e "$M/$db" ]
		check "$db-pos gone" [ ! -e "$M/$db-pos" ]
		check "backing file gone" [ ! -e "$T/data/dbs/$db/database" ]
		last=$(ls "$T/data/dbs/$db/ltx" | tail -n 1)
		"$LTFS" ltx dump --json "$T/data/dbs/$db/ltx/$last" >"$T/del.json"
		got=$(sqlite3 :memory: "select json_extract(readfile('$T/del.json'), '\$.header.commit'), json_extract(readfile('$T/del.json'), '\$.header.min_txid'), json_extract(readfile('$T/del.json'), '\$.trailer.post_apply_checksum')")
		check "deletion recorded ($got)" [ "$got" = "0|$((t0 + 1))|8000000000000000" ]
		# the name can be used again; TXIDs go on
		new_db "$db" "$mode" 65536
		check "recreated" [ "$(txid "$db")" -gt $((t0 + 1)) ]
		check_history "$db"
	done
	ltfs_umount "$M"
}

case_readdir_and_files() {
	M=$T/mnt
	ltfs_mount "$M"
	new_db a.db delete 4096
	new_db b.db wal 4096
	# b.db keeps its -wal and -shm while a connection is open
	sqlite3 "$M/b.db" "SELECT 1;" >/dev/null
	ls -a "$M" >"$T/ls"
	check "listing" [ "$(tr '\n' ' ' <"$T/ls")" = ". .. .lag a.db a.db-pos b.db b.db-pos " ]
	# directories, subdirectories and plain files
	mkdir -p "$M/sub/deeper"
	echo hello >"$M/sub/notes.txt"
	check "plain file" [ "$(cat "$M/sub/notes.txt")" = hello ]
	check "plain file is not a database" [ ! -e "$M/sub/notes.txt-pos" ]
	new_db sub/deeper/c.db wal 4096
	sql "$M/sub/deeper/c.db" "INSERT INTO t(v) VALUES ('deep');"
	check_history sub/deeper/c.db
	check "escaped name" [ -d "$T/data/dbs/sub%2fdeeper%2fc.db" ]
	ls "$M/sub/deeper" >"$T/ls2"
	check "subdir listing" [ "$(tr '\n' ' ' <"$T/ls2")" = "c.db c.db-pos " ]
	expect_exit 1 rmdir "$M/sub/deeper"
	mv "$M/sub/notes.txt" "$M/sub/renamed.txt"
	check "rename" [ "$(cat "$M/sub/renamed.txt")" = hello ]
	rm "$M/sub/renamed.txt"
	check "statfs" df "$M" >/dev/null
	check "lag" [ "$(cat "$M/.lag")" = "+000000000" ]
	ltfs_umount "$M"
}

case_pos_file() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in $MODES; do
		for ps in $SIZES; do
			db=p-$mode-$ps.db
			new_db "$db" "$mode" "$ps"
			sql "$M/$db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
			t=$(txid "$db")
			want="$(printf '%016x' "$t")/$("$LTFS" ltx checksum "$T/data/dbs/$db/database")"
			check "$db: pos names the database checksum" [ "$(cat "$M/$db-pos")" = "$want" ]
			check "$db: 34 bytes" [ "$(wc -c <"$M/$db-pos")" -eq 34 ]
			# a handle kept open sees new positions on re-read
			exec 3<"$M/$db-pos"
			sql "$M/$db" "INSERT INTO t(v) VALUES (1);"
			got=$(cat <&3)
			exec 3<&-
			check "$db: re-read ($got)" [ "${got%/*}" = "$(printf '%016x' $((t + 1)))" ]
		done
	done
	ltfs_umount "$M"
}

# poll() (and select, epoll) on a -pos file waits for the next commit
# instead of answering at once: rollback and WAL commits wake it, with the
# new position to read; a poller that goes away while it waits leaves
# nothing behind.
case_pos_poll() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in delete wal; do
		db=w-$mode.db
		new_db "$db" "$mode" 4096
		for how in poll select epoll; do
			expect_exit 2 "$LTFS_BUILD/pos-wait" "$M/$db-pos" 300 $how
			check "$db: $how waits when nothing commits" contains "$T/out" timeout
		done
		pos_waiter "$M/$db-pos" 10000
		sql "$M/$db" "INSERT INTO t(v) VALUES (1);"
		rc=0
		wait "$PW" || rc=$?
		check "$db: a commit wakes it (exit $rc)" [ "$rc" = 0 ]
		check "$db: with the new position" contains "$T/pw.out" "now $(cat "$M/$db-pos")"
		pos_waiter "$M/$db-pos" 10000
		kill -9 "$PW"
		wait "$PW" 2>/dev/null || true
		sql "$M/$db" "INSERT INTO t(v) VALUES (2);"
		pos_waiter "$M/$db-pos" 10000 "$([ $mode = wal ] && echo epoll || echo select)"
		sql "$M/$db" "INSERT INTO t(v) VALUES (3);"
		wait "$PW"
		check "$db: after a poller died" contains "$T/pw.out" "now $(cat "$M/$db-pos")"
	done
	ltfs_umount "$M"
	check "daemon exited cleanly" lacks "$T/ltfs.log" "ERROR"
}

# A database growing past 1 GiB: the page holding SQLite's lock byte is
# never written by SQLite and never recorded; everything else is.
case_lock_page() {
	M=$T/mnt
	ltfs_mount "$M"
	modes=delete
	[ -n "${LTFS_LONG:-}" ] && modes="delete wal" # WAL doubles the I/O
	for mode in $modes; do
		db=lock-$mode.db
		new_db "$db" "$mode" 65536
		sql "$M/$db" "INSERT INTO t(v) VALUES (zeroblob(600000000));"
		sql "$M/$db" "INSERT INTO t(v) VALUES (zeroblob(600000000)); INSERT INTO t(v) VALUES ('tail');"
		pages=$(sql "$M/$db" "PRAGMA page_count")
		check "$db: past the lock page ($pages pages)" [ "$pages" -gt 16385 ]
		check "$db: integrity" [ "$(sql "$M/$db" 'PRAGMA integrity_check')" = ok ]
		check_history "$db"
		rm "$M/$db"
	done
	ltfs_umount "$M"
}

# Without a journal (journal_mode=MEMORY or OFF) nothing marks the end of a
# transaction but SQLite's sync of the database: each commit is recorded
# there, while the connection stays open (and not only at its close).
case_unjournaled() {
	M=$T/mnt
	ltfs_mount "$M"
	for jm in memory off; do
		db=nj-$jm.db
		new_db "$db" delete 4096
		t0=$(txid "$db")
		rm -f "$T/nj-done"
		{
			echo "PRAGMA journal_mode=$jm; PRAGMA synchronous=FULL;"
			echo "INSERT INTO t(v) VALUES ('a');"
			echo "INSERT INTO t(v) VALUES (hex(randomblob(20000)));"
			echo ".output $T/nj-done"
			echo "SELECT 'committed';"
			sleep 2
		} | sql "$M/$db" >/dev/null &
		_open=$!
		_i=0
		while [ ! -s "$T/nj-done" ] && [ $_i -lt 200 ]; do
			_i=$((_i + 1))
			sleep 0.05
		done
		check "$db: two commits recorded with the connection open" \
			[ "$(txid "$db")" -eq $((t0 + 2)) ]
		wait $_open
		check "$db: rows" [ "$(sql "$M/$db" 'SELECT count(*) FROM t')" = 2 ]
		check_history "$db"
	done
	ltfs_umount "$M"
}

# A WAL commit of one page costs the app four FUSE requests, as on a bare
# passthrough: the frame in three writes (its header; the page, split where
# the kernel lacks the WAL's partial last page whole) and the WAL's sync
# (the CLI's synchronous=FULL). SQLite's locks are the kernel's and never
# reach ltfs: when ltfs served them, they were four more requests.
case_wal_requests_per_commit() {
	M=$T/mnt
	ltfs_mount "$M" -d
	new_db rq.db wal 4096
	sql "$M/rq.db" "INSERT INTO t(v) VALUES ('warm');"
	for i in $(seq 1 200); do echo "INSERT INTO t(v) VALUES ('r$i');"; done >"$T/rq.sql"
	mark=$(wc -l <"$T/ltfs.log")
	sql "$M/rq.db" <"$T/rq.sql"
	tail -n +"$((mark + 1))" "$T/ltfs.log" | tr -d '\000' >"$T/rq.log"
	locks=$(grep -a -c "opcode: [GS]ETLK" "$T/rq.log" || true)
	writes=$(grep -a -c "opcode: WRITE" "$T/rq.log")
	all=$(grep -a -c "opcode: " "$T/rq.log")
	check "rows" [ "$(sql "$M/rq.db" 'SELECT count(*) FROM t')" = 201 ]
	check "a TXID for each of the 201 commits" [ "$(txid rq.db)" -ge 203 ]
	ltfs_umount "$M"
	check "lock requests for 200 commits: $locks" [ "$locks" -eq 0 ]
	check "write requests for 200 commits: $writes" [ "$writes" -le 650 ]
	check "requests for 200 commits: $all" [ "$all" -le 900 ]
}

# The WAL writer paces a database's history files by its commit rate
# (docs/datadir.md): commits far apart get a file each, a burst is written
# as at most about one file per pace interval (1 us per commit/s, 8 ms at
# most), whatever the machine's speed.
case_wal_pacing() {
	M=$T/mnt
	ltfs_mount "$M" --history-keep 100000 # no folding: every file counts
	new_db pace.db wal 4096
	base=$(txid pace.db)
	# one connection: a closing one would checkpoint, which writes what
	# is queued at once
	for i in $(seq 1 10); do
		echo "INSERT INTO t(v) VALUES ('q$i');"
		sleep 0.03
	done | sql "$M/pace.db"
	quiet=$(files_after pace.db "$base")
	check "10 quiet commits, a file each (files, merged: $quiet)" [ "$quiet" = "10 0" ]

	n=4000
	base=$(txid pace.db)
	{
		echo "PRAGMA synchronous=NORMAL;"
		for i in $(seq 1 $n); do echo "INSERT INTO t(v) VALUES ('b$i');"; done
	} >"$T/burst.sql"
	t0=$(date +%s.%N)
	sql "$M/pace.db" <"$T/burst.sql"
	t1=$(date +%s.%N)
	check "every burst commit has its TXID" [ "$(txid pace.db)" -eq $((base + n)) ]
	paced pace.db "$base" $n "$t0" "$t1"

	# two busy databases at once: the commits of one do not cut the
	# other's files short
	new_db pace2.db wal 4096
	b1=$(txid pace.db)
	b2=$(txid pace2.db)
	for d in pace pace2; do
		(
			s=$(date +%s.%N)
			sql "$M/$d.db" <"$T/burst.sql"
			echo "$s $(date +%s.%N)" >"$T/$d.time"
		) &
		echo $! >"$T/$d.pid"
	done
	wait "$(cat "$T/pace.pid")" "$(cat "$T/pace2.pid")"
	check "every commit of both has its TXID" \
		[ "$(txid pace.db) $(txid pace2.db)" = "$((b1 + n)) $((b2 + n))" ]
	read -r t0 t1 <"$T/pace.time"
	paced pace.db "$b1" $n "$t0" "$t1"
	read -r t0 t1 <"$T/pace2.time"
	paced pace2.db "$b2" $n "$t0" "$t1"
	check_history pace.db
	check_history pace2.db
	ltfs_umount "$M"
}

# paced DB TXID N T0 T1: N commits after TXID between T0 and T1 (seconds)
# made at most 50% more files than one per pace interval at their rate,
# plus 100 for the first 50 ms in which the smoothed rate climbs.
paced() {
	_files=$(files_after "$1" "$2")
	_files=${_files% *}
	_most=$(awk -v n="$3" -v t0="$4" -v t1="$5" 'BEGIN {
		t = t1 - t0; s = n / t * 1e-6; if (s > 0.008) s = 0.008
		printf "%d", 1.5 * t / s + 100 }')
	_what="$1: $3 commits in $(awk -v a="$4" -v b="$5" 'BEGIN { printf "%.2f", b - a }') s: $_files files, at most $_most"
	echo "    $_what" >&2
	check "$_what" [ "$_files" -le "$_most" ]
}

# Writers in three processes, readers that hold a read transaction open
# across commits, and checkpoints of every kind, all at once: each reader
# sees one snapshot for its whole transaction, no commit is lost, and the
# history rebuilds the database.
case_wal_writers_readers_checkpoints() {
	M=$T/mnt
	ltfs_mount "$M"
	for ps in 512 4096; do
		db=mix-$ps.db
		new_db "$db" wal "$ps"
		pids=
		for w in 1 2 3; do
			for i in $(seq 1 100); do
				echo "INSERT INTO t(v) VALUES ('w$w-$i');"
			done >"$T/w$w.sql"
			sql "$M/$db" <"$T/w$w.sql" &
			pids="$pids $!"
		done
		(
			for i in $(seq 1 10); do
				for mode in PASSIVE FULL RESTART TRUNCATE; do
					sql "$M/$db" "PRAGMA wal_checkpoint($mode);" >/dev/null || exit 1
				done
			done
		) &
		pids="$pids $!"
		for r in 1 2; do
			(
				for i in $(seq 1 8); do
					out=$(sql "$M/$db" "BEGIN; SELECT count(*) FROM t;" \
						".system sleep 0.05" "SELECT count(*) FROM t; COMMIT;") || exit 1
					set -- $out
					[ "$1" = "$2" ] || { echo "    snapshot moved: $1 then $2" >&2; exit 1; }
				done
			) &
			pids="$pids $!"
		done
		for p in $pids; do
			wait "$p" || { echo "    a writer, reader or checkpointer failed" >&2; exit 1; }
		done
		check "$db: all rows" [ "$(sql "$M/$db" 'SELECT count(*) FROM t')" = 300 ]
		check "$db: integrity" [ "$(sql "$M/$db" 'PRAGMA integrity_check')" = ok ]
		check_history "$db"
	done
	ltfs_umount "$M"
}

run_case ok
run_case rollback_and_no_write
run_case big_and_vacuum
run_case wal_checkpoints
run_case wal_exclusive
run_case concurrent_readers
run_case drop_db
run_case readdir_and_files
run_case pos_file
run_case pos_poll
run_case lock_page
run_case unjournaled
run_case wal_requests_per_commit
run_case wal_pacing
run_case wal_writers_readers_checkpoints
finish
