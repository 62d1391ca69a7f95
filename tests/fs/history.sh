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

# Files that leave the history are kept as spares (DATA/staging/spare-N)
# and become the next new files; a spare someone still reads is left alone.
case_spares() {
	M=$T/mnt
	S=$T/data/staging
	ltfs_mount "$M" --history-keep 4
	sql "$M/s.db" "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v);" >/dev/null
	# spares_after N [MIN]: N more one-row commits, then wait (at most
	# 20 s) for folds to leave more than MIN (0) spares
	spares_after() {
		for _k in $(seq 1 "$1"); do
			sql "$M/s.db" "INSERT INTO t(v) VALUES (randomblob(3000));"
		done
		_i=0
		while [ "$(ls "$S" | grep -c '^spare-')" -le "${2:-0}" ] && [ $_i -lt 200 ]; do
			sleep 0.1
			_i=$((_i + 1))
		done
	}
	spares_after 40
	n=$(ls "$S" | grep -c '^spare-')
	check "folded files became spares ($n)" [ "$n" -gt 0 ]
	held=$(ls "$S" | grep '^spare-' | sort -t- -k2 -n | head -n 1)
	held_ino=$(stat -c %i "$S/$held")
	cp "$S/$held" "$T/held.copy"
	ls -i "$S" | awk '{ print $1 }' | sort >"$T/spare.inodes"
	exec 3<"$S/$held"
	spares_after 40
	ls -i "$T/data/dbs/s.db/ltx" | awk '{ print $1 }' | sort >"$T/ltx.inodes"
	reused=$(comm -12 "$T/spare.inodes" "$T/ltx.inodes" | wc -l)
	check "spares became history files ($reused)" [ "$reused" -gt 0 ]
	check "the spare held open is still there" [ -f "$S/$held" ]
	check "and not reused" [ "$(stat -c %i "$S/$held")" = "$held_ino" ]
	check "its content is what the reader opened" cmp -s /dev/fd/3 "$T/held.copy"
	exec 3<&-
	expect_exit 0 "$LTFS" ltx verify "$T/data/dbs/s.db/ltx/"*.ltx
	check "history rebuilds" history_rebuilds s.db
	check "rows" [ "$(sql "$M/s.db" 'SELECT count(*) FROM t')" = 80 ]
	# a start keeps the spares (and only them), and new files are made of
	# them (no fold after the start: history-keep 100)
	spares_after 20 4
	ltfs_umount "$M"
	ls "$S" | grep '^spare-' | sort >"$T/spares.before"
	n=$(wc -l <"$T/spares.before")
	: >"$S/spare-x"
	cp "$S/$(head -n 1 "$T/spares.before")" "$S/spare-0$n"
	ls -i "$S" | awk '{ print $1 }' | sort >"$T/spare.inodes"
	ls "$T/data/dbs/s.db/ltx" >"$T/ltx.before"
	ltfs_mount "$M" --history-keep 100
	ls "$S" | grep '^spare-' | sort >"$T/spares.after"
	check "a start keeps the $n spares" cmp -s "$T/spares.before" "$T/spares.after"
	for _k in 1 2 3; do
		sql "$M/s.db" "INSERT INTO t(v) VALUES (randomblob(3000));"
	done
	ls -i "$T/data/dbs/s.db/ltx" | grep -vFf "$T/ltx.before" | awk '{ print $1 }' |
		sort >"$T/ltx.inodes"
	reused=$(comm -12 "$T/spare.inodes" "$T/ltx.inodes" | wc -l)
	check "new history files are spares kept across the start ($reused of $(wc -l <"$T/ltx.inodes"))" \
		[ "$reused" -gt 0 ] && [ "$reused" = "$(wc -l <"$T/ltx.inodes")" ]
	expect_exit 0 "$LTFS" ltx verify "$T/data/dbs/s.db/ltx/"*.ltx
	check "history rebuilds after the restart" history_rebuilds s.db
	check "rows" [ "$(sql "$M/s.db" 'SELECT count(*) FROM t')" = 103 ]
	ltfs_umount "$M"
}

run_case fold
run_case spares
finish
