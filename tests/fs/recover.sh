# Crashes and damage: hot journals, torn or missing files, corrupt
# history, a WAL ahead of the history, and a loop of kill -9s under load.
. tests/lib.sh

rows() { sql "$M/$1" "SELECT count(*) FROM t"; }

# Start a transaction that spills pages into the database file, then kill
# the sqlite3 process: a hot journal stays behind.
leave_hot_journal() {
	mkfifo "$T/fifo"
	sqlite3 "$M/$1" <"$T/fifo" &
	_sp=$!
	exec 4>"$T/fifo"
	echo "PRAGMA cache_size=2; BEGIN; WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<400) INSERT INTO t(v) SELECT hex(randomblob(200)) FROM c; SELECT 'spilled';" >&4
	_i=0
	while [ ! -s "$T/data/dbs/$1/journal" ] && [ $_i -lt 100 ]; do
		sleep 0.05
		_i=$((_i + 1))
	done
	sleep 0.3
	kill -9 $_sp
	wait $_sp 2>/dev/null || true
	exec 4>&-
	rm -f "$T/fifo"
}

case_hot_journal() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in delete truncate persist; do
		for ps in 512 65536; do
			db=hot-$mode-$ps.db
			sql "$M/$db" "PRAGMA page_size=$ps; PRAGMA journal_mode=$mode;
				CREATE TABLE t(id INTEGER PRIMARY KEY, v);
				INSERT INTO t(v) VALUES (1), (2);" >/dev/null
			leave_hot_journal "$db"
			check "$db: journal is hot" [ -s "$T/data/dbs/$db/journal" ]
		done
	done
	# ltfs itself dies too, then starts over the hot journals
	ltfs_kill "$M"
	ltfs_mount "$M"
	for mode in delete truncate persist; do
		for ps in 512 65536; do
			db=hot-$mode-$ps.db
			check "$db: rolled back" [ "$(rows "$db")" = 2 ]
			check "$db: integrity" [ "$(sql "$M/$db" 'PRAGMA integrity_check')" = ok ]
			check "$db: history" history_rebuilds "$db"
			sql "$M/$db" "INSERT INTO t(v) VALUES (3);"
			check "$db: writable" [ "$(rows "$db")" = 3 ]
		done
	done
	check "logged" contains "$T/ltfs.log" "rolled back a hot journal"
	ltfs_umount "$M"
}

# The database file lost its last page (torn write): the newest LTX holds
# it, so start-up writes it again.
case_truncated_database() {
	M=$T/mnt
	ltfs_mount "$M"
	for mode in delete truncate persist wal; do
		for ps in 512 65536; do
			db=tr-$mode-$ps.db
			sql "$M/$db" "PRAGMA page_size=$ps; PRAGMA journal_mode=$mode;
				CREATE TABLE t(id INTEGER PRIMARY KEY, v);" >/dev/null
			sql "$M/$db" "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<300)
				INSERT INTO t(v) SELECT hex(randomblob(100)) FROM c;"
		done
	done
	ltfs_umount "$M"
	for mode in delete truncate persist wal; do
		for ps in 512 65536; do
			f=$T/data/dbs/tr-$mode-$ps.db/database
			truncate -s $(($(stat -c %s "$f") - ps)) "$f"
		done
	done
	ltfs_mount "$M"
	for mode in delete truncate persist wal; do
		for ps in 512 65536; do
			db=tr-$mode-$ps.db
			check "$db: rows" [ "$(rows "$db")" = 300 ]
			check "$db: integrity" [ "$(sql "$M/$db" 'PRAGMA integrity_check')" = ok ]
		done
	done
	check "repaired" [ "$(grep -c "repaired by re-applying" "$T/ltfs.log")" -eq 8 ]
	ltfs_umount "$M"
}

# A corrupt newest LTX, or a database page that no LTX explains: that
# database is not served, the others are.
case_corruption_refused() {
	M=$T/mnt
	ltfs_mount "$M"
	for db in good.db badltx.db badpage.db; do
		sql "$M/$db" "CREATE TABLE t(id INTEGER PRIMARY KEY, v);
			WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<300)
			INSERT INTO t(v) SELECT hex(randomblob(100)) FROM c;"
		sql "$M/$db" "INSERT INTO t(v) VALUES ('last');"
	done
	ltfs_umount "$M"
	last=$(ls "$T/data/dbs/badltx.db/ltx" | tail -n 1)
	printf '\377\377\377\377' | dd of="$T/data/dbs/badltx.db/ltx/$last" bs=1 seek=96 conv=notrunc 2>/dev/null
	# page 3 is not in the last transaction (an insert at the end)
	printf 'garbage!' | dd of="$T/data/dbs/badpage.db/database" bs=1 seek=$((2 * 4096 + 200)) conv=notrunc 2>/dev/null
	cp "$T/data/dbs/badpage.db/database" "$T/badpage.before"
	ltfs_mount "$M"
	check "good db served" [ "$(rows good.db)" = 301 ]
	expect_exit 1 sqlite3 "$M/badltx.db" "SELECT count(*) FROM t"
	expect_exit 1 sqlite3 "$M/badpage.db" "SELECT count(*) FROM t"
	check "names the ltx" contains "$T/ltfs.log" "'badltx.db': newest ltx file '$last' is invalid"
	check "both checksums" contains "$T/ltfs.log" "'badpage.db': database checksum"
	check "recovery command" contains "$T/ltfs.log" "ltfs ltx apply NEW.db"
	check "refused on access" contains "$T/ltfs.log" "refusing access"
	check "data untouched" cmp -s "$T/data/dbs/badpage.db/database" "$T/badpage.before"
	ltfs_umount "$M"
}

# The daemon dies after SQLite committed to the WAL; newer LTX files are
# gone too (never made durable). Start-up records them from the WAL.
case_wal_ahead_of_history() {
	M=$T/mnt
	ltfs_mount "$M"
	sql "$M/w.db" "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v);" >/dev/null
	mkfifo "$T/fifo"
	sqlite3 "$M/w.db" <"$T/fifo" >/dev/null &
	sp=$!
	exec 4>"$T/fifo"
	echo "SELECT count(*) FROM t;" >&4 # an open reader keeps the WAL from being removed
	for i in 1 2 3 4 5; do
		sql "$M/w.db" "INSERT INTO t(v) VALUES ($i);"
	done
	ltfs_kill "$M"
	exec 4>&-
	kill -9 $sp 2>/dev/null
	wait $sp 2>/dev/null || true
	rm -f "$T/fifo"
	check "wal kept" [ -s "$T/data/dbs/w.db/wal" ]
	ls "$T/data/dbs/w.db/ltx" | tail -n 3 | while read -r f; do
		rm "$T/data/dbs/w.db/ltx/$f"
	done
	ltfs_mount "$M"
	check "recorded from the wal" contains "$T/ltfs.log" "from the wal"
	check "rows" [ "$(rows w.db)" = 5 ]
	sql "$M/w.db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
	check "history rebuilds" history_rebuilds w.db
	ltfs_umount "$M"
}

# kill -9 of the daemon at random moments of a write load with
# synchronous=FULL: every acknowledged commit survives, the database
# checks out, and the history rebuilds it.
case_crash_loop() {
	M=$T/mnt
	n=${LTFS_CRASH_ITERATIONS:-100}
	set -- wal:512 delete:65536 truncate:512 persist:65536 wal:65536 delete:512
	ltfs_mount "$M"
	for mp in "$@"; do
		db=c-${mp%:*}-${mp#*:}.db
		sql "$M/$db" "PRAGMA page_size=${mp#*:}; PRAGMA journal_mode=${mp%:*};
			CREATE TABLE t(id INTEGER PRIMARY KEY, v);" >/dev/null
		: >"$T/acked-$db"
	done
	for i in $(seq 1 "$n"); do
		k=$(( (i - 1) % $# + 1 ))
		eval "mp=\${$k}"
		db=c-${mp%:*}-${mp#*:}.db
		(
			j=0
			while [ $j -lt 200 ]; do
				j=$((j + 1))
				id="$i$(printf '%04d' $j)"
				sqlite3 -cmd ".timeout 2000" "$M/$db" \
					"PRAGMA synchronous=FULL; INSERT INTO t(id, v) VALUES ($id, randomblob(50));" \
					>/dev/null 2>&1 || exit 0
				echo "$id" >>"$T/acked-$db"
			done
		) &
		wpid=$!
		# die somewhere between 20 and 400 ms into the load
		sleep "0.$(printf '%03d' $(( ($(od -An -N2 -tu2 /dev/urandom) % 380) + 20 )))"
		ltfs_kill "$M"
		wait $wpid 2>/dev/null || true
		ltfs_mount "$M"
		last=$(tail -n 1 "$T/acked-$db")
		if [ -n "$last" ]; then
			got=$(sql "$M/$db" "SELECT count(*) FROM t WHERE id = $last")
			check "iteration $i: acknowledged row $last in $db" [ "$got" = 1 ]
		fi
		check "iteration $i: integrity of $db" [ "$(sql "$M/$db" 'PRAGMA integrity_check')" = ok ]
	done
	for mp in "$@"; do
		db=c-${mp%:*}-${mp#*:}.db
		acked=$(wc -l <"$T/acked-$db")
		have=$(sql "$M/$db" "SELECT count(*) FROM t")
		check "$db: all $acked acknowledged rows present ($have)" [ "$have" -ge "$acked" ]
		sql "$M/$db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
		check "$db: history rebuilds" history_rebuilds "$db"
	done
	check "no daemon error but the kills" [ "$(grep -c ' ERROR ' "$T/ltfs.log")" -eq 0 ]
	ltfs_umount "$M"
}

run_case hot_journal
run_case truncated_database
run_case corruption_refused
run_case wal_ahead_of_history
run_case crash_loop
finish
