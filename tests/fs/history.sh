# The local history stays bounded: old files are folded into one snapshot
# that still rebuilds the database from nothing.
. tests/lib.sh

case_fold() {
	M=$T/mnt
	ltfs_mount "$M" --history-keep 4
	for mode in delete wal; do
		db=f-$mode.db
		sqlite3 "$M/$db" "PRAGMA journal_mode=$mode; CREATE TABLE t(id INTEGER PRIMARY KEY, v);" >/dev/null
		for i in $(seq 1 40); do
			sql "$M/$db" "INSERT INTO t(v) VALUES (randomblob(3000));"
		done
		# Folding runs only when it pays, so when it ran during the loop
		# (a slow machine) the small files after it may never pay. One
		# commit bigger than any snapshot so far, then keep + 1 small
		# ones, makes the last fold certain whatever the timing.
		sql "$M/$db" "INSERT INTO t(v) VALUES (randomblob(400000));"
		for i in 1 2 3 4 5; do
			sql "$M/$db" "INSERT INTO t(v) VALUES (randomblob(3000));"
		done
	done
	# folding runs on its own thread once a second: wait (at most 20 s) for
	# both histories, not for a count of log lines (two folds of one
	# database would satisfy that on a loaded machine)
	i=0
	while [ $i -lt 200 ]; do
		n1=$(ls "$T/data/dbs/f-delete.db/ltx" | grep -c '\.ltx$')
		n2=$(ls "$T/data/dbs/f-wal.db/ltx" | grep -c '\.ltx$')
		[ "$n1" -le 10 ] && [ "$n2" -le 10 ] && break
		sleep 0.1
		i=$((i + 1))
	done
	for mode in delete wal; do
		db=f-$mode.db
		dir=$T/data/dbs/$db/ltx
		n=$(ls "$dir" | grep -c '\.ltx$')
		check "$db: folded ($n files)" [ "$n" -le 10 ]
		first=$(ls "$dir" | head -n 1)
		check "$db: starts with a snapshot ($first)" [ "${first%%-*}" = 0000000000000001 ]
		expect_exit 0 "$LTFS" ltx verify "$dir"/*.ltx
		check "$db: history rebuilds" history_rebuilds "$db"
	done
	ltfs_umount "$M"

	# a crash between the new snapshot and the removal of what it covers
	dir=$T/data/dbs/f-delete.db/ltx
	snap=$(ls "$dir" | head -n 1)
	"$LTFS" ltx compact -o "$T/old.ltx" "$dir/$snap" >/dev/null
	cp "$T/old.ltx" "$dir/0000000000000001-0000000000000001.ltx"
	ltfs_mount "$M" --history-keep 4
	check "covered file removed" contains "$T/ltfs.log" "covered by a newer snapshot"
	check "rows" [ "$(sql "$M/f-delete.db" 'SELECT count(*) FROM t')" = 46 ]
	ltfs_umount "$M"
}

run_case fold
finish
