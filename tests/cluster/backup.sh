#!/bin/sh
# Backup to a real S3 server (Ceph RGW on loopback, tests/tools/s3-server)
# and restore from it: every journal mode, point-in-time targets, bad and
# missing objects, the server going away, kill -9 while uploading, and
# refusals at start. Each case uses its own prefix in one bucket.
. tests/lib.sh

s3_suite_start

MODES=${MODES:-"delete:512 truncate:65536 persist:4096 wal:1024"}


# bstart N CASE [ARGS...]: node N backing up to the case's prefix.
bstart() {
	_n=$1
	_p=$2
	shift 2
	node_start "$_n" --s3 "$(url "$_p")" "$@"
}

# w N SQL: write on node N's app.db in the case's journal mode.
w() {
	sqlite3 -bail -cmd ".timeout 10000" -cmd ".output /dev/null" \
		-cmd "PRAGMA page_size=${PAGE:-4096}" -cmd "PRAGMA journal_mode=${MODE:-wal}" \
		-cmd ".output stdout" "$T/m$1/app.db" "$2"
}

txid_of() { echo $((0x$(pos "$1" app.db | cut -d/ -f1))); }
checksum_of() { pos "$1" app.db | cut -d/ -f2; }

# shipped N: the bucket's TXID of app.db as node N reports it (decimal).
shipped() {
	_h=$(curl -sf "$(node_url "$1")/v1/info" |
		awk '/"name": "app.db"/ { f = 1 } f && /"backup_txid"/ { print; exit }' |
		sed 's/.*"backup_txid": "\([0-9a-f]*\)".*/\1/')
	echo $((0x${_h:-0}))
}

# wait_shipped N: until the bucket holds node N's newest TXID (20 s).
wait_shipped() {
	_i=0
	while [ "$(shipped "$1")" != "$(txid_of "$1")" ]; do
		_i=$((_i + 1))
		if [ $_i -gt 400 ]; then
			echo "    bucket at $(shipped "$1"), node at $(txid_of "$1")" >&2
			tail -5 "$T/n$1.log" | sed 's/^/    | /' >&2
			return 1
		fi
		sleep 0.05
	done
}

# chain_ok CASE: the level-0 files of app.db form one chain from 1, with
# no gap and no overlap; prints its last TXID.
chain_ok() {
	_next=1
	for _f in $(s3 list "$SUITE-$1/app.db/0000/" | awk '{ print $1 }' | sed 's|.*/||; s|\.ltx$||' | sort); do
		if [ $((0x${_f%-*})) -ne $_next ]; then
			echo "gap or overlap at $_f (want $_next)"
			return 0
		fi
		_next=$((0x${_f#*-} + 1))
	done
	echo $((_next - 1))
}

restored_same() { # OUT N: OUT holds node N's rows and checksum
	[ "$("$LTFS" ltx checksum "$1")" = "$(checksum_of "$2")" ] &&
		[ "$(sql "$1" 'SELECT count(*), sum(id) FROM t')" = "$(sql "$T/m$2/app.db" 'SELECT count(*), sum(id) FROM t')" ] &&
		[ "$(sql "$1" 'PRAGMA integrity_check')" = ok ]
}

case_modes() {
	for mp in $MODES; do
		MODE=${mp%:*}
		PAGE=${mp#*:}
		p="modes-$MODE"
		bstart 1 "$p" --upload-interval 0
		w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t(v) VALUES (randomblob(3000));"
		for i in 1 2 3 4 5 6 7 8 9 10; do w 1 "INSERT INTO t(v) VALUES (randomblob(100 * $i))"; done
		w 1 "UPDATE t SET v = randomblob(10) WHERE id % 2 = 0; DELETE FROM t WHERE id = 3;"
		wait_shipped 1
		check "$MODE: chain" [ "$(chain_ok "$p")" = "$(txid_of 1)" ]
		expect_exit 0 "$LTFS" restore --integrity-check -o "$T/r-$MODE.db" "$(url "$p")/app.db"
		contains "$T/out" "integrity_check ok"
		check "$MODE: restored exactly" restored_same "$T/r-$MODE.db" 1
		check "$MODE: page size" [ "$(sql "$T/r-$MODE.db" 'PRAGMA page_size')" = "$PAGE" ]
		node_stop 1
		rm -rf "$T/d1"
	done
}
run_case modes

# Commits gathered over the interval go up as one object per round.
case_batching() {
	bstart 1 batch --upload-interval 500ms
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
	for i in $(seq 1 40); do w 1 "INSERT INTO t(v) VALUES ('$i')"; done
	wait_shipped 1
	n=$(s3 list "$SUITE-batch/app.db/0000/" | wc -l)
	check "fewer objects ($n) than commits (41)" [ "$n" -lt 20 ]
	check "chain" [ "$(chain_ok batch)" = "$(txid_of 1)" ]
	curl -sf "$(node_url 1)/metrics" >"$T/metrics"
	contains "$T/metrics" "ltfs_backup_uploads_total $n"
	contains "$T/metrics" "ltfs_backup_backlog_txids 0"
	expect_exit 0 "$LTFS" status --url "$(node_url 1)"
	contains "$T/out" "backup  $(url batch): $n uploads, 0 TXIDs waiting"
	expect_exit 0 "$LTFS" restore --json -o "$T/r.db" "$(url batch)/app.db"
	contains "$T/out" '"ok":true'
	contains "$T/out" "\"txid\":$(txid_of 1)"
	check "restored" restored_same "$T/r.db" 1
	node_stop 1
}
run_case batching

# --txid and --timestamp give earlier states, exactly.
case_point_in_time() {
	bstart 1 pit --upload-interval 0
	MODE=wal
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a')"
	for i in 1 2 3 4; do w 1 "INSERT INTO t(v) VALUES ('b$i')"; done
	wait_shipped 1
	mid=$(txid_of 1)
	mid_sum=$(checksum_of 1)
	sleep 1.2
	moment=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
	sleep 1.2
	for i in 1 2 3; do w 1 "INSERT INTO t(v) VALUES ('c$i')"; done
	wait_shipped 1
	expect_exit 0 "$LTFS" restore --txid "$mid" -o "$T/txid.db" "$(url pit)/app.db"
	check "txid: rows" [ "$(sql "$T/txid.db" 'SELECT count(*) FROM t')" = 5 ]
	check "txid: checksum" [ "$("$LTFS" ltx checksum "$T/txid.db")" = "$mid_sum" ]
	hex=$(printf '%016x' "$mid")
	expect_exit 0 "$LTFS" restore --txid "$hex" -o "$T/hex.db" "$(url pit)/app.db"
	check "hex txid" cmp -s "$T/txid.db" "$T/hex.db"
	expect_exit 0 "$LTFS" restore --timestamp "$moment" -o "$T/ts.db" "$(url pit)/app.db"
	check "timestamp: rows" [ "$(sql "$T/ts.db" 'SELECT count(*) FROM t')" = 5 ]
	check "timestamp: checksum" [ "$("$LTFS" ltx checksum "$T/ts.db")" = "$mid_sum" ]
	expect_exit 1 "$LTFS" restore --txid 9999 -o "$T/no.db" "$(url pit)/app.db"
	contains "$T/err" "TXID 9999 is not in the bucket"
	check "nothing written" [ ! -e "$T/no.db" ] && [ ! -e "$T/no.db.tmp" ]
	expect_exit 1 "$LTFS" restore --timestamp 2001-01-01T00:00:00Z -o "$T/no.db" "$(url pit)/app.db"
	contains "$T/err" "no snapshot or chain from TXID 1 within the target"
	expect_exit 2 "$LTFS" restore --txid 1 --timestamp "$moment" "$(url pit)/app.db"
	expect_exit 2 "$LTFS" restore --timestamp yesterday "$(url pit)/app.db"
	contains "$T/err" "RFC 3339"
	expect_exit 0 "$LTFS" restore --dry-run "$(url pit)/app.db"
	contains "$T/out" "would restore TXID $(txid_of 1)"
	node_stop 1
}
run_case point_in_time

# An existing output is refused without --force; --force also drops a
# stale -wal that would otherwise corrupt the result.
case_output_rules() {
	bstart 1 out --upload-interval 0
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x')"
	wait_shipped 1
	echo keep >"$T/r.db"
	expect_exit 2 "$LTFS" restore -o "$T/r.db" "$(url out)/app.db"
	contains "$T/err" "without --force"
	check "untouched" [ "$(cat "$T/r.db")" = keep ]
	echo junk >"$T/r.db-wal"
	expect_exit 0 "$LTFS" restore --force -o "$T/r.db" "$(url out)/app.db"
	check "stale wal removed" [ ! -e "$T/r.db-wal" ]
	check "restored" restored_same "$T/r.db" 1
	# a progress bar only on a terminal (script(1) gives the restore one)
	check "no bar without a terminal" [ "$(grep -c ' files ' "$T/err")" = 0 ]
	script -qec "'$LTFS' restore --force -o '$T/r.db' '$(url out)/app.db'" /dev/null >"$T/tty.out"
	check "a bar on a terminal" grep -qE '\[#{20}\] 100%  ([0-9]+)/\1 files' "$T/tty.out"
	check "restored on a terminal" restored_same "$T/r.db" 1
	expect_exit 1 "$LTFS" restore -o "$T/none.db" "$(url out)/other.db"
	contains "$T/err" "no LTX files for 'other.db'"
	node_stop 1
}
run_case output_rules

# served_back KEY FILE: until the server answers a GET of KEY with FILE's
# bytes (at most 5 s): what a restore reads next is the object just put.
served_back() {
	_i=0
	until s3 get "$1" 2>/dev/null | cmp -s - "$2"; do
		_i=$((_i + 1))
		if [ $_i -gt 50 ]; then
			echo "    the server does not serve '$1' as it was put:" >&2
			s3 list "${1%/*}/" >&2
			return 1
		fi
		sleep 0.1
	done
}

# refused_when_bad CASE KEY CUT: KEY with a byte flipped in the middle, then
# cut to CUT bytes: each restore fails naming KEY and writes nothing; the
# object is left intact (its bytes in $T/good.ltx).
refused_when_bad() {
	s3 get "$2" >"$T/good.ltx"
	size=$(stat -c %s "$T/good.ltx")
	cp "$T/good.ltx" "$T/flip.ltx"
	# invert the byte: writing a fixed value changes nothing 1 time in 256
	byte=$(od -An -tu1 -j $((size / 2)) -N1 "$T/good.ltx" | tr -d ' ')
	printf "\\$(printf %03o $((byte ^ 255)))" |
		dd of="$T/flip.ltx" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
	cmp -s "$T/good.ltx" "$T/flip.ltx" && { echo "    the flip changed nothing" >&2; exit 1; }
	head -c "$3" "$T/good.ltx" >"$T/short.ltx"
	for bad in flip short; do
		s3 put "$2" "$T/$bad.ltx" >/dev/null
		served_back "$2" "$T/$bad.ltx"
		expect_exit 1 timeout "${RESTORE_TIMEOUT:-60}" "$LTFS" restore -o "$T/r.db" "$(url "$1")/app.db"
		contains "$T/err" "$2"
		check "$bad: no output" [ ! -e "$T/r.db" ] && [ ! -e "$T/r.db.tmp" ]
	done
	s3 put "$2" "$T/good.ltx" >/dev/null
}

# still_config FILE: level-0 uploads of each commit and no compaction
# within a case's time (the default's first level, 30 s, can outrun a
# slow run, and a restore then takes the compacted file instead of the
# level-0 object a case has spoiled).
still_config() {
	printf 's3:\n  upload-interval: 0\n  levels: [1h]\n' >"$1"
}

# A corrupt or truncated object stops the restore with its key named, and
# no output is written; the intact chain still restores after a repair.
case_bad_objects() {
	still_config "$T/c.yml"
	bstart 1 bad --config "$T/c.yml"
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t(v) VALUES (randomblob(5000))"
	# each commit shipped before the next: one object each, so that the
	# second is in the middle of the chain (commits made together may go
	# up as one object, and a gap at the end is no gap)
	for i in 1 2 3; do
		wait_shipped 1
		w 1 "INSERT INTO t(v) VALUES (randomblob(2000))"
	done
	wait_shipped 1
	check "the second object is not the last" [ "$(s3 list "$SUITE-bad/app.db/0000/" | wc -l)" -ge 3 ]
	key=$(s3 list "$SUITE-bad/app.db/0000/" | sed -n 2p | cut -d' ' -f1)
	refused_when_bad bad "$key" $(($(s3 head "$key" | cut -d' ' -f1) - 7))
	# a missing file in the middle: the chain has a gap
	s3 delete "$key"
	expect_exit 1 "$LTFS" restore -o "$T/r.db" "$(url bad)/app.db"
	contains "$T/err" "missing"
	s3 put "$key" "$T/good.ltx" >/dev/null
	expect_exit 0 "$LTFS" restore -o "$T/r.db" "$(url bad)/app.db"
	check "restored" restored_same "$T/r.db" 1
	node_stop 1
}
run_case bad_objects

# Objects over 4 MiB are applied as they stream in, one at a time: a
# flipped byte or a cut in the middle of the first of two still stops the
# restore with its key (while the second waits to stream), and writes
# nothing; intact, they restore exactly.
case_big_object() {
	still_config "$T/c.yml"
	bstart 1 big --config "$T/c.yml"
	MODE=wal
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t(v) SELECT randomblob(3000) FROM generate_series(1, 3000)"
	w 1 "INSERT INTO t(v) VALUES ('small')"
	w 1 "INSERT INTO t(v) SELECT randomblob(3000) FROM generate_series(1, 3000)"
	w 1 "INSERT INTO t(v) VALUES ('small')"
	wait_shipped 1
	key=$(s3 list "$SUITE-big/app.db/0000/" | awk '$2 > 4194304 { print $1; exit }')
	check "two objects over 4 MiB" [ "$(s3 list "$SUITE-big/app.db/0000/" | awk '$2 > 4194304' | wc -l)" = 2 ]
	RESTORE_TIMEOUT=60 refused_when_bad big "$key" $(($(s3 head "$key" | cut -d' ' -f1) / 3))
	expect_exit 0 "$LTFS" restore --integrity-check --parallel 3 -o "$T/r.db" "$(url big)/app.db"
	check "restored" restored_same "$T/r.db" 1
	# a network that drops every connection after 3 MB: each big object
	# arrives in pieces, each resumed where the last broke off
	rp=$((PORT_BASE + 10))
	relay_start "$rp" cut:3000000
	rm -f "$T/r.db"
	(
		export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$rp
		expect_exit 0 "$LTFS" restore -o "$T/r.db" "$(url big)/app.db"
	) || { relay_stop; exit 1; }
	relay_stop
	check "connections were cut" [ "$(grep -c '^cut after' "$T/relay.out")" -ge 4 ]
	check "restored through the cuts" restored_same "$T/r.db" 1
	# the big object deleted (retention) as the restore reads it: each
	# time a new plan, from a new listing; when it stays gone, an error
	# naming it, and no output
	rp=$((PORT_BASE + 11))
	relay_start "$rp" "gone:${key##*/}"
	(
		export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$rp
		expect_exit 1 "$LTFS" restore -o "$T/gone.db" "$(url big)/app.db"
	) || { relay_stop; exit 1; }
	relay_stop
	contains "$T/err" "${key##*/}"
	contains "$T/err" "NoSuchKey"
	check "three plans" [ "$(grep -c '^gone' "$T/relay.out")" = 3 ]
	check "gone: no output" [ ! -e "$T/gone.db" ] && [ ! -e "$T/gone.db.tmp" ]
	node_stop 1
}
run_case big_object

# The server stops answering: commits go on, the backlog is reported and
# kept locally (folding holds back), and it drains once S3 is back.
# unshipped_alone MIN-MAX SHIPPED: the file is all shipped or all not
unshipped_alone() { [ $((0x${1%-*})) -gt "$2" ] || [ $((0x${1#*-})) -le "$2" ]; }

case_s3_down() {
	bstart 1 down --upload-interval 0 --history-keep 2
	MODE=wal
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a')"
	wait_shipped 1
	before=$(shipped 1)
	"$S3SERVER" kill-rgw "$S3DIR"
	trap '"$S3SERVER" start-rgw "$S3DIR" >/dev/null 2>&1 || true' EXIT
	t0=$(date +%s%N)
	for i in $(seq 1 60); do w 1 "INSERT INTO t(v) VALUES ('$i')"; done
	ms=$((($(date +%s%N) - t0) / 1000000))
	check "commits did not wait for S3 ($ms ms for 60)" [ "$ms" -lt 6000 ]
	sleep 1.5 # the writer's idle folding gets its chance
	curl -sf "$(node_url 1)/v1/info" >"$T/info"
	contains "$T/info" '"last_error"'
	contains "$T/info" "127.0.0.1"
	check "backlog reported" grep -q '"backlog_txids": [1-9]' "$T/info"
	check "bucket did not move" [ "$(shipped 1)" = "$before" ]
	# every unshipped transaction is still its own file in the history
	for f in "$T/d1/dbs/app.db/ltx/"*.ltx; do
		b=$(basename "$f" .ltx)
		check "no fold past the bucket ($b)" unshipped_alone "$b" "$before"
	done
	expect_exit 0 "$LTFS" status --url "$(node_url 1)"
	contains "$T/out" "(backup)"
	"$S3SERVER" start-rgw "$S3DIR" >/dev/null
	trap - EXIT
	wait_shipped 1
	check "chain" [ "$(chain_ok down)" = "$(txid_of 1)" ]
	contains "$T/n1.log" "answers again"
	# interval 0 gathers nothing on purpose, but a backlog goes up in one
	# object, not one per commit
	n=0
	for f in $(s3 list "$SUITE-down/app.db/0000/" | awk '{ print $1 }' | sed 's|.*/||; s|\.ltx$||'); do
		[ $((0x${f%-*})) -gt "$before" ] && n=$((n + 1))
	done
	check "the backlog of 60 commits went up as one object ($n)" [ "$n" -eq 1 ]
	# the states at the object boundaries are restorable: the one before
	# the outage, and the newest
	expect_exit 0 "$LTFS" restore --txid "$before" -o "$T/mid.db" "$(url down)/app.db"
	check "rows before the outage" [ "$(sql "$T/mid.db" 'SELECT count(*) FROM t')" = 1 ]
	expect_exit 0 "$LTFS" restore -o "$T/r.db" "$(url down)/app.db"
	check "restored" restored_same "$T/r.db" 1
	node_stop 1
}
run_case s3_down

# kill -9 while uploading, then restart: the bucket's chain has no gap and
# no overlap, and restores to the database exactly.
case_kill_uploads() {
	MODE=wal
	bstart 1 kill --upload-interval 0
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"
	n=0
	for round in 1 2 3 4 5 6 7 8; do
		(for i in $(seq 1 200); do w 1 "INSERT INTO t(v) VALUES (randomblob(500))" 2>/dev/null || exit 0; done) &
		wl=$!
		sleep "0.$(shuf -i 1-9 -n 1)"
		node_kill 1
		wait $wl 2>/dev/null || true
		bstart 1 kill --upload-interval 0
	done
	w 1 "INSERT INTO t(v) VALUES ('last')"
	wait_shipped 1
	check "chain after 8 kills" [ "$(chain_ok kill)" = "$(txid_of 1)" ]
	expect_exit 0 "$LTFS" restore --integrity-check -o "$T/r.db" "$(url kill)/app.db"
	check "restored" restored_same "$T/r.db" 1
	node_stop 1
}
run_case kill_uploads

# fast_config FILE CASE: a schedule that compacts, snapshots and expires
# within seconds.
fast_config() {
	cat >"$1" <<-EOF
	s3:
	  url: $(url "$2")
	  upload-interval: 0
	  levels: [1s, 3s]
	  snapshot-interval: 4s
	  retention: 6s
	  l0-retention: 2s
	EOF
}

# level_count CASE LEVEL: objects of app.db at that level.
level_count() { s3 list "$SUITE-$1/app.db/$2/" | wc -l; }

# Compaction, snapshots and retention run while a writer commits and
# restores run; every restore succeeds and matches a state the database
# really had, and the bucket keeps far fewer objects than commits.
case_compaction() {
	fast_config "$T/c.yml" comp
	bstart 1 comp --config "$T/c.yml"
	MODE=wal
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"
	wait_shipped 1
	p=$(pos 1 app.db)
	echo "$((0x${p%/*})) ${p#*/}" >"$T/states"
	(
		for i in $(seq 1 120); do
			w 1 "BEGIN; INSERT INTO t(v) VALUES (randomblob(200)); UPDATE t SET v = randomblob(50) WHERE id = abs(random()) % $i + 1; COMMIT"
			p=$(pos 1 app.db)
			echo "$((0x${p%/*})) ${p#*/}" >>"$T/states"
			sleep 0.08
		done
	) &
	wl=$!
	k=0
	while kill -0 $wl 2>/dev/null; do
		k=$((k + 1))
		expect_exit 0 "$LTFS" restore --force -o "$T/live.db" "$(url comp)/app.db"
		got=$("$LTFS" ltx checksum "$T/live.db")
		if ! grep -q " $got\$" "$T/states"; then
			kill $wl
			check "restore $k ($got) is a state the database had" false
		fi
		sleep 0.3
	done
	wait $wl
	check "restores ran during the writes ($k)" [ "$k" -ge 5 ]
	k=0
	sleep 7 # one more snapshot and a retention pass
	wait_shipped 1
	check "level 1 written" [ "$(level_count comp 0001)" -gt 0 ]
	check "level 2 written" [ "$(level_count comp 0002)" -gt 0 ]
	check "snapshots written" [ "$(level_count comp 0009)" -gt 0 ]
	n0=$(level_count comp 0000)
	check "level 0 expired ($n0 left of 121)" [ "$n0" -lt 60 ]
	curl -sf "$(node_url 1)/metrics" >"$T/metrics"
	expect_exit 0 "$LTFS" restore --integrity-check -o "$T/r.db" "$(url comp)/app.db"
	check "latest restored" restored_same "$T/r.db" 1
	# every level-1 boundary from the oldest snapshot on restores to its
	# own state (older ones are past the retention); with the node stopped,
	# retention does not move the window meanwhile
	node_stop 1
	snap=$(s3 list "$SUITE-comp/app.db/0009/" | head -1 | awk '{ print $1 }' | sed 's|.*-||; s|\.ltx$||')
	for f in $(s3 list "$SUITE-comp/app.db/0001/" | awk '{ print $1 }' | sed 's|.*-||; s|\.ltx$||'); do
		tx=$((0x$f))
		[ "$tx" -ge $((0x$snap)) ] || continue
		want=$(awk -v t="$tx" '$1 == t { print $2 }' "$T/states")
		[ -n "$want" ] || continue
		expect_exit 0 "$LTFS" restore --force --txid "$tx" -o "$T/b.db" "$(url comp)/app.db"
		check "txid $tx" [ "$("$LTFS" ltx checksum "$T/b.db")" = "$want" ]
		k=$((k + 1))
	done
	check "boundaries checked" [ "$k" -gt 0 ]
}
run_case compaction

# kill -9 while compacting and expiring: after restarts every restore is
# still exact.
case_kill_compaction() {
	fast_config "$T/c.yml" killc
	MODE=wal
	bstart 1 killc --config "$T/c.yml"
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)"
	for round in 1 2 3 4 5 6; do
		(for i in $(seq 1 60); do w 1 "INSERT INTO t(v) VALUES (randomblob(300))" 2>/dev/null || exit 0; sleep 0.05; done) &
		wl=$!
		sleep "$(shuf -i 1-3 -n 1).$(shuf -i 0-9 -n 1)"
		node_kill 1
		wait $wl 2>/dev/null || true
		bstart 1 killc --config "$T/c.yml"
	done
	w 1 "INSERT INTO t(v) VALUES ('last')"
	wait_shipped 1
	sleep 4
	expect_exit 0 "$LTFS" restore --integrity-check -o "$T/r.db" "$(url killc)/app.db"
	check "restored after 6 kills" restored_same "$T/r.db" 1
	node_stop 1
}
run_case kill_compaction

# A node with an empty data dir starts from the bucket: every database
# (subdirectories too, deleted ones not), the same positions, and its next
# commit continues the bucket's chain. An interrupted bootstrap resumes.
case_bootstrap() {
	bstart 1 boot --upload-interval 0
	MODE=wal
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'), ('b')"
	mkdir "$T/m1/sub"
	sql "$T/m1/sub/two.db" "PRAGMA page_size=512; CREATE TABLE u(x); INSERT INTO u VALUES ('two')"
	sql "$T/m1/gone.db" "CREATE TABLE g(x)"
	rm "$T/m1/gone.db"
	for i in 1 2 3; do w 1 "INSERT INTO t(v) VALUES ('c$i')"; done
	wait_shipped 1
	sleep 0.5 # sub/two.db and the deletion
	p1=$(pos 1 app.db)
	s1=$(pos 1 sub/two.db)
	node_stop 1
	bstart 2 boot --upload-interval 0
	contains "$T/n2.log" "2 databases restored"
	contains "$T/n2.log" "'gone.db': skipped"
	check "same position" [ "$(pos 2 app.db)" = "$p1" ]
	check "subdirectory database" [ "$(pos 2 sub/two.db)" = "$s1" ]
	check "rows" [ "$(sql "$T/m2/sub/two.db" 'SELECT x FROM u')" = two ]
	check "deleted stays deleted" [ ! -e "$T/m2/gone.db" ]
	w 2 "INSERT INTO t(v) VALUES ('after')"
	check "chain continues" [ "$(txid_of 2)" = $((0x${p1%/*} + 1)) ]
	wait_shipped 2
	check "bucket chain" [ "$(chain_ok boot)" = "$(txid_of 2)" ]
	node_stop 2
	# interrupted: one database missing and the marker left behind
	rm -rf "$T/d2/dbs/sub%2ftwo.db"
	: >"$T/d2/bootstrap.pending"
	bstart 2 boot --upload-interval 0
	check "resumed" [ "$(pos 2 sub/two.db)" = "$s1" ]
	check "kept the local one" [ "$(pos 2 app.db | cut -d/ -f1)" = "$(printf '%016x' "$(txid_of 2)")" ]
	check "marker gone" [ ! -e "$T/d2/bootstrap.pending" ]
	node_stop 2
	# a bucket that cannot be read: no empty start
	mkdir -p "$T/m3"
	AWS_ENDPOINT_URL_S3=http://127.0.0.1:1 expect_exit 1 "$LTFS" mount --http off --data "$T/d3" \
		--s3 "$(url boot)" "$T/m3"
	contains "$T/err" "bootstrap from the bucket"
	contains "$T/err" "127.0.0.1:1"
}
run_case bootstrap

# Wrong credentials and a missing bucket stop the mount with the S3 error
# code and endpoint; an unreachable endpoint is logged, the node serves.
case_start_errors() {
	mkdir -p "$T/m1"
	AWS_SECRET_ACCESS_KEY=wrong expect_exit 1 "$LTFS" mount --http off --data "$T/d1" \
		--s3 "$(url start)" "$T/m1"
	contains "$T/err" "SignatureDoesNotMatch"
	contains "$T/err" "$AWS_ENDPOINT_URL_S3"
	check "secret not logged" lacks "$T/err" "$AWS_SECRET_ACCESS_KEY"
	expect_exit 1 "$LTFS" mount --http off --data "$T/d1" --s3 s3://no-such-bucket/x "$T/m1"
	contains "$T/err" "NoSuchBucket"
	AWS_ACCESS_KEY_ID= expect_exit 2 "$LTFS" mount --http off --data "$T/d1" --s3 "$(url start)" "$T/m1"
	contains "$T/err" "AWS_ACCESS_KEY_ID"
	expect_exit 2 "$LTFS" mount --http off --data "$T/d1" --s3 "http://x" "$T/m1"
	contains "$T/err" "s3://BUCKET"
	expect_exit 2 "$LTFS" mount --upload-interval 5 --s3 "$(url start)" "$T/m1"
	contains "$T/err" "--upload-interval"
	# a node that has run before (its data dir holds a database) serves
	# while the endpoint does not answer, and says so
	check "a failed bootstrap that seeded nothing leaves no marker" [ ! -e "$T/d1/bootstrap.pending" ]
	node_start 1
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY)"
	node_stop 1
	AWS_ENDPOINT_URL_S3=http://127.0.0.1:1 bstart 1 start
	contains "$T/n1.log" "http://127.0.0.1:1"
	w 1 "INSERT INTO t VALUES (1)"
	check "serves without S3" [ "$(sql "$T/m1/app.db" 'SELECT count(*) FROM t')" = 1 ]
	node_stop 1
	# the config file form, with a bad key named
	cat >"$T/c.yml" <<-EOF
	s3:
	  url: $(url cfg)
	  endpoint: $AWS_ENDPOINT_URL_S3
	  upload-interval: 0
	EOF
	bstart 2 cfg --config "$T/c.yml"
	w 2 "CREATE TABLE t(id INTEGER PRIMARY KEY); INSERT INTO t VALUES (7)"
	wait_shipped 2
	expect_exit 0 "$LTFS" restore --config "$T/c.yml" -o "$T/r.db" app.db
	check "config restore" [ "$(sql "$T/r.db" 'SELECT * FROM t')" = 7 ]
	expect_exit 2 "$LTFS" restore --config "$T/c.yml" -o "$T/x.db" ../app.db
	contains "$T/err" "'..'"
	node_stop 2
	printf 's3:\n  url: %s\n  upload-every: 1s\n' "$(url cfg)" >"$T/bad.yml"
	expect_exit 2 "$LTFS" mount --config "$T/bad.yml" "$T/m1"
	contains "$T/err" "line 3: unknown key 'upload-every' in 's3'"
}
run_case start_errors

# Virtual-hosted-style URLs (s3.path-style: false): BUCKET.localhost:PORT,
# which the server only serves as a bucket because it knows the name
# (rgw dns name); a backup and a restore through them, exact.
case_virtual_hosted() {
	_ep=$(echo "$AWS_ENDPOINT_URL_S3" | sed 's|//127\.0\.0\.1:|//localhost:|')
	printf 's3:\n  url: %s\n  endpoint: %s\n  path-style: false\n  upload-interval: 0s\n' \
		"$(url vhost)" "$_ep" >"$T/vhost.yml"
	node_start 1 --config "$T/vhost.yml"
	w 1 "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('x')"
	wait_shipped 1
	check "the log names the endpoint" grep -q "at $_ep" "$T/n1.log"
	expect_exit 0 "$LTFS" restore --config "$T/vhost.yml" -o "$T/r.db" app.db
	check "restored" restored_same "$T/r.db" 1
	check "the objects under the prefix" [ -n "$(s3 list "$SUITE-vhost/app.db/0000/")" ]
	node_stop 1
}
run_case virtual_hosted

# uploads SUBKEY: the in-progress multipart uploads whose key holds SUBKEY.
uploads() {
	curl -sf --aws-sigv4 "aws:amz:${AWS_REGION:-us-east-1}:s3" \
		--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
		-H 'x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' \
		"$AWS_ENDPOINT_URL_S3/$LTFS_S3_BUCKET?uploads=" | grep -o "<Key>[^<]*$1[^<]*</Key>" || true
}

# An object over s3.part-size goes up in parts (S3 takes at most 5 GiB in
# one PUT): the client's conditions, an upload that breaks off (aborted,
# nothing left), and a node whose snapshots go up in parts, restored and
# bootstrapped from them. The database's name has four characters: such
# names were once not recognised in the bucket's listing.
case_multipart() {
	k="$SUITE-mp/obj"
	head -c 12000000 /dev/urandom >"$T/o1"
	head -c 11000000 /dev/urandom >"$T/o2"
	export LTFS_S3_PART_SIZE=$((5 << 20))
	expect_exit 0 s3 put "$k" "$T/o1" --if-none-match
	check "three parts" grep -q -- '-3$' "$T/out"
	expect_exit 0 s3 getfd "$k" "$T/back"
	check "same bytes back" cmp "$T/o1" "$T/back"
	expect_exit 4 s3 put "$k" "$T/o2" --if-none-match
	contains "$T/err" "the object exists"
	expect_exit 4 s3 put "$k" "$T/o2" --if-match 0123
	expect_exit 0 s3 getfd "$k" "$T/back"
	check "the object kept" cmp "$T/o1" "$T/back"
	expect_exit 0 s3 put "$k" "$T/o2" --if-match "$(s3 head "$k" | cut -d' ' -f2)"
	expect_exit 0 s3 getfd "$k" "$T/back"
	check "replaced under If-Match" cmp "$T/o2" "$T/back"
	expect_exit 1 s3 put "$SUITE-mp/short" "$T/o1" --len 14000000
	contains "$T/err" "s3 PUT '$SUITE-mp/short': reading the local file"
	expect_exit 3 s3 head "$SUITE-mp/short"
	check "the broken upload was aborted" [ -z "$(uploads "$SUITE-mp/")" ]
	unset LTFS_S3_PART_SIZE

	printf 's3:\n  url: %s\n  part-size: 5MiB\n  snapshot-interval: 1s\n' "$(url mp)" >"$T/mp.yml"
	node_start 1 --config "$T/mp.yml"
	sqlite3 "$T/m1/a.db" "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
		WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM n WHERE x < 16000)
		INSERT INTO t(v) SELECT randomblob(1000) FROM n;" >/dev/null
	head=$(pos 1 a.db | cut -d/ -f1)
	i=0
	until s3 list "$SUITE-mp/a.db/0009/" | grep -q -- "-$head.ltx .*-[0-9]*$"; do
		i=$((i + 1))
		if [ $i -gt 300 ]; then
			s3 list "$SUITE-mp/a.db/" | sed 's/^/    bucket: /' >&2
			tail -5 "$T/n1.log" | sed 's/^/    | /' >&2
			return 1
		fi
		sleep 0.1
	done
	want=$(pos 1 a.db)
	rows=$(sql "$T/m1/a.db" "SELECT count(*), sum(length(v)) FROM t")
	node_stop 1
	s3 list "$SUITE-mp/a.db/0000/" | awk '{ print $1 }' | while read -r key; do s3 delete "$key"; done
	expect_exit 0 "$LTFS" restore --config "$T/mp.yml" --json -o "$T/r.db" a.db
	contains "$T/out" '"files":1'
	check "restored from the snapshot in parts" [ "$("$LTFS" ltx checksum "$T/r.db")" = "${want#*/}" ]
	check "its rows" [ "$(sql "$T/r.db" "SELECT count(*), sum(length(v)) FROM t")" = "$rows" ]

	node_start 2 --config "$T/mp.yml"
	check "a new node bootstrapped a.db" [ "$(pos 2 a.db)" = "$want" ]
	check "its rows" [ "$(sql "$T/m2/a.db" "SELECT count(*), sum(length(v)) FROM t")" = "$rows" ]
	node_stop 2
}
run_case multipart

finish
