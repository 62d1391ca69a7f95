#!/bin/sh
# Primary election through the lease object in a real S3 bucket (Ceph RGW
# on loopback): several candidates racing on a fresh prefix, kill -9 and
# SIGSTOP of the primary under write load, the bucket going away, clean
# shutdown, non-candidates, ltfs promote, synchronous mode, a long run of
# random kills and pauses, and bad input. Every node runs the same flags
# except its ports: no node is told who the primary is.
. tests/lib.sh

s3_suite_start

TTL=${TTL:-2s}
TTL_MS=2000

# lstart N CASE [ARGS...]: node N in lease mode on the case's prefix.
lstart() {
	_n=$1
	_p=$2
	shift 2
	node_start "$_n" --s3 "$(url "$_p")" --lease s3 --lease-ttl "$TTL" --upload-interval 0 "$@"
}

# field N KEY: a top-level string field of node N's /v1/info ("" if down).
field() {
	curl -sf -m 2 "$(node_url "$1")/v1/info" 2>/dev/null |
		sed -n "s/^  \"$2\": \"\\([^\"]*\\)\".*/\\1/p" | head -1
}
role() { field "$1" role; }

# primaries N...: the nodes that say they are the primary.
primaries() {
	_out=""
	for _n in "$@"; do
		[ "$(role "$_n")" = primary ] && _out="$_out $_n"
	done
	echo $_out
}

# wait_primary N...: until exactly one of the nodes is the primary; prints
# it (at most 15 s).
wait_primary() {
	_i=0
	while :; do
		_p=$(primaries "$@")
		case "$_p" in
		*" "*) ;;
		?*) echo "$_p"; return 0 ;;
		esac
		_i=$((_i + 1))
		if [ $_i -gt 150 ]; then
			echo "    no single primary among $* (have: '$_p')" >&2
			for _n in "$@"; do tail -4 "$T/n$_n.log" | sed "s/^/    n$_n | /" >&2; done
			return 1
		fi
		sleep 0.1
	done
}

now_ms() { date +%s%3N; }

# The lease object of a case, as JSON text.
lease_of() { s3 get "$SUITE-$1/.ltfs/lease.json"; }

# ins N DB SQL: one write on node N; quiet, the exit status says (SQLite's
# message goes to $INS_ERR if set).
ins() { sqlite3 -cmd ".timeout 3000" "$T/m$1/$2" "$3" >/dev/null 2>"${INS_ERR:-/dev/null}"; }

# writer NAME MODE COUNT NODES...: in the background, insert ids 1..COUNT
# into app.db table t (row tag NAME) on whichever node is the primary,
# appending every acknowledged id to $T/acked.NAME; at most 120 s.
writer() {
	_name=$1
	_mode=$2
	_count=$3
	shift 3
	: >"$T/acked.$_name"
	(
		_end=$(($(date +%s) + 120))
		_i=1
		_at=$1
		INS_ERR="$T/writer.$_name.err"
		while [ $_i -le "$_count" ] && [ "$(date +%s)" -lt $_end ]; do
			_t=$(now_ms)
			if ins "$_at" app.db "PRAGMA journal_mode=$_mode; INSERT INTO t VALUES('$_name', $_i)"; then
				echo $_i >>"$T/acked.$_name"
				echo "$_i node $_at at $_t-$(now_ms)" >>"$T/acked.$_name.at"
				_i=$((_i + 1))
			else
				# for a failure report: when, where, what SQLite said
				echo "$_t-$(now_ms) node $_at id $_i: $(head -c 200 "$INS_ERR")" \
					>>"$T/writer.$_name.log"
				# find the primary again
				for _n in "$@"; do
					[ "$(role "$_n")" = primary ] && _at=$_n && break
				done
				sleep 0.05
			fi
		done
	) &
	echo $! >"$T/writer.$_name"
}
# crash N: node N dies as a machine would, its apps with it. An app left
# behind on the dead mount can sit in SQLite's lock retries for seconds
# (every lock fails as busy), which would hold up a writer's failover.
crash() {
	node_kill "$1"
	pkill -9 -f "$T/m$1/" 2>/dev/null || true
}
acked() { grep -c '^[0-9]' "$T/acked.$1" 2>/dev/null || true; }
fails() { ! "$@" >/dev/null 2>&1; }
wait_writer() {
	_i=0
	while kill -0 "$(cat "$T/writer.$1")" 2>/dev/null; do
		_i=$((_i + 1))
		[ $_i -gt 1300 ] && { echo "    writer $1 did not finish" >&2; return 1; }
		sleep 0.1
	done
}
# wait_acked NAME N: until writer NAME has N acknowledged ids (30 s).
wait_acked() {
	_i=0
	while [ "$(acked "$1")" -lt "$2" ]; do
		_i=$((_i + 1))
		[ $_i -gt 300 ] && { echo "    writer $1 stuck at $(acked "$1") acks" >&2; return 1; }
		sleep 0.1
	done
}

# make_table N MODE: the table the writers use, on node N.
make_table() {
	sql "$T/m$1/app.db" "PRAGMA journal_mode=$2; CREATE TABLE t(tag TEXT, id INTEGER)" >/dev/null
}

# same_everywhere N...: app.db has one position on all nodes, passes
# integrity_check on each, and the same rows.
same_everywhere() {
	wait_sync app.db "$@"
	_rows=""
	for _n in "$@"; do
		check "integrity on node $_n" [ "$(sql "$T/m$_n/app.db" 'PRAGMA integrity_check')" = ok ]
		_r=$(sql "$T/m$_n/app.db" "SELECT count(*), total(id) FROM t")
		[ -z "$_rows" ] && _rows=$_r
		check "node $_n has the rows of the others ($_r vs $_rows)" [ "$_r" = "$_rows" ]
	done
}

# ---- election -----------------------------------------------------------

case_election_race() {
	# candidates started at once on a fresh prefix: one winner each round
	for r in 1 2 3 4 5 6; do
		rm -rf "$T"/d1 "$T"/d2 "$T"/d3
		for n in 1 2 3; do
			lstart $n "race$r" &
		done
		wait
		p=$(wait_primary 1 2 3)
		for k in 1 2 3 4 5 6 7 8; do
			check "round $r: one primary" [ "$(primaries 1 2 3)" = "$p" ]
			sleep 0.1
		done
		lease_of "race$r" >"$T/lease.json"
		contains "$T/lease.json" "\"node\":\"$(field "$p" node)\""
		contains "$T/lease.json" '"epoch":"0000000000000001"'
		won=$(cat "$T"/n1.log "$T"/n2.log "$T"/n3.log | grep -c "took the lease" || true)
		check "round $r: one node took the lease (took it $won times)" [ "$won" -eq 1 ]
		for n in 1 2 3; do node_stop $n; done
		: >"$T/n1.log"
		: >"$T/n2.log"
		: >"$T/n3.log"
	done
}

# ---- failures of the primary -------------------------------------------

case_kill_primary() {
	for n in 1 2 3; do lstart $n kill; done
	p=$(wait_primary 1 2 3)
	make_table "$p" wal
	writer w wal 400 1 2 3
	wait_acked w 50
	t0=$(now_ms)
	crash "$p"
	before=$(acked w)
	# the first write on a new primary: within TTL + 2 s
	while [ "$(acked w)" -le "$before" ]; do
		if [ $(($(now_ms) - t0)) -ge $((TTL_MS + 2000)) ]; then
			echo "    killed at $t0; the writer's last failures:" >&2
			tail -n 8 "$T/writer.w.log" 2>/dev/null | sed 's/^/    /' >&2
			for n in 1 2 3; do grep lease "$T/n$n.log" | tail -n 3 | sed "s/^/    n$n | /" >&2; done
			check "writes resume within TTL + 2 s" false
		fi
		sleep 0.02
	done
	echo "    failover: $(($(now_ms) - t0)) ms (TTL $TTL)" >&2
	q=$(wait_primary 1 2 3)
	check "a new primary" [ "$q" != "$p" ]
	wait_acked w 150
	# the old node comes back as a replica of the new primary
	lstart "$p" kill
	wait_writer w
	same_everywhere 1 2 3
	check "the old primary is a replica" [ "$(role "$p")" = replica ]
	contains "$T/n$p.log" "primary is node $(field "$q" node)"
}

case_sigstop_primary() {
	# rollback mode: the commit point is a request ltfs answers, so a
	# deposed primary's commits fail where the app sees it
	for n in 1 2 3; do lstart $n stop; done
	p=$(wait_primary 1 2 3)
	make_table "$p" delete
	writer old delete 100000 "$p"
	wait_acked old 30
	kill -STOP "$(cat "$T/ltfs.pid.$p")"
	echo STOP >>"$T/acked.old"
	others=$(echo 1 2 3 | tr ' ' '\n' | grep -vx "$p" | tr '\n' ' ')
	# shellcheck disable=SC2086
	q=$(wait_primary $others)
	for i in 1 2 3 4 5 6 7 8 9 10; do
		check "the new primary takes writes" ins "$q" app.db "INSERT INTO t VALUES('new', $i)"
	done
	sleep 1
	echo CONT >>"$T/acked.old"
	kill -CONT "$(cat "$T/ltfs.pid.$p")"
	sleep 3
	kill "$(cat "$T/writer.old")" 2>/dev/null || true
	# The write in flight at the pause may be reported after the wake: its
	# commit was answered before the pause, but sqlite3 exits (and the
	# writer records it) only once its close is answered too. Any other
	# write reported after the wake was taken by the deposed primary.
	# (paused_mid_commit holds a commit across the pause on purpose.)
	last=$(sed -n '/^STOP$/q;p' "$T/acked.old" | tail -1)
	after=$(sed -n '/^CONT$/,$p' "$T/acked.old" | grep '^[0-9]' | grep -vx "$((last + 1))" |
		tr '\n' ' ')
	check "the deposed primary acknowledged no write begun after it woke (did: $after)" \
		[ -z "$after" ]
	check "the old primary is a replica" [ "$(role "$p")" = replica ]
	check "writes on it are refused" fails ins "$p" app.db "INSERT INTO t VALUES('late', 1)"
	same_everywhere 1 2 3
	# no row of the deposed primary that it did not acknowledge before the
	# pause, on any node and in the bucket
	maxold=$(sql "$T/m$q/app.db" "SELECT coalesce(max(id), 0) FROM t WHERE tag = 'old'")
	check "old rows end at the last acknowledged ($maxold > $last + 1)" [ "$maxold" -le $((last + 1)) ]
	check "the new primary's rows are there" \
		[ "$(sql "$T/m$q/app.db" "SELECT count(*) FROM t WHERE tag = 'new'")" -eq 10 ]
	"$LTFS" restore -o "$T/restored.db" "$(url stop)/app.db" >/dev/null 2>"$T/restore.err"
	check "the bucket holds what the nodes hold" \
		[ "$(sqlite3 "$T/restored.db" "SELECT count(*), total(id) FROM t")" = \
		  "$(sql "$T/m$q/app.db" "SELECT count(*), total(id) FROM t")" ]
}

# stalled_pair CASE MODE FAULT: node 1 the primary with the writers' table
# in journal MODE, restarted so that its next commit hits FAULT once; node 2
# its replica, in sync.
stalled_pair() {
	lstart 1 "$1"
	wait_primary 1 >/dev/null
	make_table 1 "$2"
	node_stop 1
	LTFS_FAULT=$3:1 LTFS="$LTFS_FAULTS_BIN" lstart 1 "$1"
	wait_primary 1 >/dev/null
	lstart 2 "$1"
	wait_sync app.db 1 2
}

# wait_stall N: until node N's commit has reached its injected stall.
wait_stall() {
	_i=0
	while ! grep -q 'injected stall' "$T/n$1.log"; do
		_i=$((_i + 1))
		check "the commit reaches the stall" [ $_i -lt 100 ]
		sleep 0.05
	done
}

case_paused_mid_commit() {
	# A commit in flight as the primary pauses past its lease: its answer,
	# once the node wakes to a new primary, must be a failure. The stall
	# holds the commit between the lease check as the request began and
	# the answer; the pause lands inside it.
	stalled_pair midcommit delete commit-stall
	ins 1 app.db "INSERT INTO t VALUES('paused', 1)" &
	w=$!
	wait_stall 1
	kill -STOP "$(cat "$T/ltfs.pid.1")"
	check "node 2 takes over" [ "$(wait_primary 2)" = 2 ]
	kill -CONT "$(cat "$T/ltfs.pid.1")"
	check "the commit the deposed node made is reported as failed" fails wait $w
	contains "$T/n1.log" "the commit is reported as failed"
	check "node 2 takes writes" ins 2 app.db "INSERT INTO t VALUES('new', 1)"
	i=0
	while [ "$(role 1)" != replica ]; do
		i=$((i + 1))
		check "node 1 becomes a replica" [ $i -lt 100 ]
		sleep 0.1
	done
	same_everywhere 1 2
	check "no row of the failed commit" \
		[ "$(sql "$T/m2/app.db" "SELECT count(*) FROM t WHERE tag = 'paused'")" -eq 0 ]
}

case_s3_down() {
	for n in 1 2; do lstart $n down; done
	p=$(wait_primary 1 2)
	make_table "$p" wal
	check "writes work" ins "$p" app.db "INSERT INTO t VALUES('a', 1)"
	"$S3SERVER" pause "$S3DIR"
	t0=$(now_ms)
	while [ "$(role "$p")" = primary ]; do
		if [ $(($(now_ms) - t0)) -gt $((TTL_MS + 1000)) ]; then
			"$S3SERVER" resume "$S3DIR"
			check "the primary steps down within its TTL" false
		fi
		sleep 0.05
	done
	echo "    stepped down $(($(now_ms) - t0)) ms after the bucket stopped" >&2
	check "writes are refused without the bucket" fails ins "$p" app.db "INSERT INTO t VALUES('b', 1)"
	"$S3SERVER" resume "$S3DIR"
	q=$(wait_primary 1 2)
	check "writes work again" ins "$q" app.db "INSERT INTO t VALUES('c', 1)"
	same_everywhere 1 2
}

case_clean_shutdown() {
	for n in 1 2; do lstart $n clean; done
	p=$(wait_primary 1 2)
	o=$((3 - p))
	make_table "$p" wal
	wait_sync app.db 1 2
	t0=$(now_ms)
	node_stop "$p"
	while ! ins "$o" app.db "INSERT INTO t VALUES('x', 1)"; do
		check "takeover within 1 s of a clean shutdown" [ $(($(now_ms) - t0)) -lt 1000 ]
		sleep 0.02
	done
	echo "    takeover: $(($(now_ms) - t0)) ms after the unmount began" >&2
	contains "$T/n$p.log" "released the lease"
}

case_non_candidate() {
	lstart 1 nocand --no-candidate
	sleep $((TTL_MS * 2 / 1000 + 1))
	check "a non-candidate alone stays a replica" [ "$(role 1)" = replica ]
	check "and wrote no lease" fails s3 head "$SUITE-nocand/.ltfs/lease.json"
	lstart 2 nocand
	check "the candidate becomes the primary" [ "$(wait_primary 1 2)" = 2 ]
	make_table 2 wal
	wait_sync app.db 1 2
	node_kill 2
	sleep $((TTL_MS * 2 / 1000 + 1))
	check "the non-candidate never promotes" [ "$(role 1)" = replica ]
	check "and refuses writes" fails ins 1 app.db "INSERT INTO t VALUES('x', 1)"
	check "promote refuses it" fails "$LTFS" promote --url "$(node_url 1)"
}

case_promote() {
	for n in 1 2 3; do lstart $n promote; done
	p=$(wait_primary 1 2 3)
	make_table "$p" wal
	writer w wal 300 1 2 3
	wait_acked w 40
	t=$(( p % 3 + 1 ))
	t0=$(now_ms)
	expect_exit 0 "$LTFS" promote --url "$(node_url "$t")"
	took=$(($(now_ms) - t0))
	echo "    ltfs promote: $took ms" >&2
	check "promote returned within 1 s ($took ms)" [ "$took" -lt 1000 ]
	check "the target is the primary" [ "$(role "$t")" = primary ]
	check "the old primary is not" [ "$(role "$p")" != primary ]
	check "the target takes writes" ins "$t" app.db "INSERT INTO t VALUES('p', 1)"
	wait_writer w
	same_everywhere 1 2 3
	rows=$(sql "$T/m$t/app.db" "SELECT count(*) || ' ' || count(DISTINCT id) FROM t WHERE tag = 'w'")
	if [ "$rows" != "300 300" ]; then
		echo "    rows, distinct ids: $rows; the writer's failures:" >&2
		sed 's/^/    /' "$T/writer.w.log" >&2 2>/dev/null
	fi
	check "every acknowledged write is there (handoff ships everything)" [ "${rows#* }" -eq 300 ]
	check "and no refused write either" [ "${rows% *}" -eq 300 ]
	expect_exit 0 "$LTFS" promote --url "$(node_url "$t")" # already: a no-op
}

# promote_mid FAULT PREFIX: a WAL commit held by a stall as node 1 hands
# the lease to node 2; it must reach node 2 and be answered as done.
promote_mid() {
	stalled_pair "$2" wal "$1"
	INS_ERR="$T/mid.err" ins 1 app.db "INSERT INTO t VALUES('mid', 1)" &
	w=$!
	wait_stall 1
	expect_exit 0 "$LTFS" promote --url "$(node_url 2)"
	check "the commit in flight is answered as done ($(cat "$T/mid.err" 2>/dev/null))" wait $w
	check "the new primary has it once" \
		[ "$(sql "$T/m2/app.db" "SELECT count(*) FROM t WHERE tag = 'mid'")" -eq 1 ]
	same_everywhere 1 2
}

# Recorded, its answer on the way as the handoff fences writes: the
# handoff carries it, so a failure would make the app write it twice.
case_promote_mid_answer() { promote_mid answer-stall handans; }

# Past the write check, not yet recorded: the fence waits for it, and the
# handoff carries it (else the answer would be a success that node 2
# never received).
case_promote_mid_record() { promote_mid record-stall handrec; }

case_promote_lagging_history() {
	# The uploads read the local history, which the LTX writer fills a few
	# ms behind the WAL commits (here a second: a slow disk). A handoff
	# must wait for it, or the last acknowledged commits miss the head it
	# publishes and the new primary goes on without them. The app keeps
	# its connection open across the handoff: the last close checkpoints,
	# and a checkpoint waits for the history itself.
	LTFS_FAULT=writer-slow LTFS="$LTFS_FAULTS_BIN" lstart 1 lagging
	wait_primary 1 >/dev/null
	lstart 2 lagging
	make_table 1 wal
	wait_sync app.db 1 2
	printf '%s\n' "PRAGMA busy_timeout=3000;" "INSERT INTO t VALUES('x', 1);" \
		"INSERT INTO t VALUES('x', 2);" "INSERT INTO t VALUES('x', 3);" \
		".shell '$LTFS' promote --url $(node_url 2) && echo PROMOTED" |
		sqlite3 -bail "$T/m1/app.db" >"$T/app.out" 2>&1 || true
	contains "$T/app.out" PROMOTED
	check "node 2 is the primary" [ "$(role 2)" = primary ]
	check "every acknowledged write is on the new primary" \
		[ "$(sql "$T/m2/app.db" "SELECT count(*) FROM t WHERE tag = 'x'")" -eq 3 ]
	check "node 2 takes writes" ins 2 app.db "INSERT INTO t VALUES('y', 1)"
	same_everywhere 1 2
}

case_catch_up_from_bucket() {
	# a node that was away must not open for writes at its old position
	for n in 1 2; do lstart $n catch; done
	p=$(wait_primary 1 2)
	o=$((3 - p))
	make_table "$p" wal
	wait_sync app.db 1 2
	node_stop "$o"
	for i in $(seq 1 20); do ins "$p" app.db "INSERT INTO t VALUES('away', $i)"; done
	want=$(pos "$p" app.db)
	sleep 0.5 # uploads land (interval 0)
	node_kill "$p"
	lstart "$o" catch
	check "the returning node becomes the primary" [ "$(wait_primary "$o")" = "$o" ]
	check "at the bucket's head ($(pos "$o" app.db), want $want)" [ "$(pos "$o" app.db)" = "$want" ]
	contains "$T/n$o.log" "caught up with the bucket"
	check "with the rows" [ "$(sql "$T/m$o/app.db" "SELECT count(*) FROM t")" -eq 20 ]
}

# behind_on_3: node 3 paused while node 1 commits 20 transactions of 800 KB
# (more than the socket buffers hold for it) and node 2 takes them all.
behind_on_3() {
	kill -STOP "$(cat "$T/ltfs.pid.3")"
	for i in $(seq 1 20); do
		ins 1 app.db "INSERT INTO t VALUES('p', $i); CREATE TABLE IF NOT EXISTS b(x);
			WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 8)
			INSERT INTO b SELECT randomblob(100000) FROM n"
	done
	wait_sync app.db 1 2
}

case_catch_up_from_peer() {
	# the winner is behind another replica and the bucket is behind too
	# (uploads every 10 s): it takes the missing TXIDs from that replica
	lstart 1 peer --upload-interval 10s
	check "node 1 is the primary" [ "$(wait_primary 1)" = 1 ]
	lstart 2 peer --upload-interval 10s --no-candidate
	lstart 3 peer --upload-interval 10s
	make_table 1 wal
	wait_sync app.db 1 2 3
	behind_on_3
	want=$(pos 2 app.db)
	node_kill 1
	kill -CONT "$(cat "$T/ltfs.pid.3")"
	check "node 3 becomes the primary" [ "$(wait_primary 2 3)" = 3 ]
	check "at the newest position a node had ($(pos 3 app.db), want $want)" \
		[ "$(pos 3 app.db)" = "$want" ]
	contains "$T/n3.log" "from $(node_url 2)"
	took=$(sed -n 's/.*took TXIDs \([0-9]*\)\.\..*/\1/p' "$T/n3.log" | head -1)
	check "node 3 took TXIDs from $took on from node 2, before $((s + 20))" [ "$took" -lt $((s + 20)) ]
	check "with every row" [ "$(sql "$T/m3/app.db" "SELECT count(*) FROM t")" -eq 20 ]
	ins 3 app.db "INSERT INTO t VALUES('q', 1)"
	wait_sync app.db 2 3
}

# backup_txid N DB: the bucket's (published) TXID of DB as node N reports
# it, decimal.
backup_txid() {
	_h=$(curl -sf -m 2 "$(node_url "$1")/v1/info" 2>/dev/null |
		awk -v db="\"name\": \"$2\"" 'index($0, db) { f = 1 } f && /"backup_txid"/ { print; exit }' |
		sed 's/.*"backup_txid": "\([0-9a-f]*\)".*/\1/')
	echo $((0x${_h:-0}))
}
txid_at() { _p=$(pos "$1" "$2"); echo $((0x${_p%/*})); }
# wait_published N DB: until node N has published DB up to its own TXID
# (at most 10 s; the caller checks what it needs)
wait_published() {
	_i=0
	while [ "$(backup_txid "$1" "$2")" -ne "$(txid_at "$1" "$2")" ] && [ $_i -lt 100 ]; do
		_i=$((_i + 1))
		sleep 0.1
	done
}
metric() { curl -sf -m 2 "$(node_url "$1")/metrics" | awk -v k="$2" '$1 == k { print $2 }'; }

# level0_chain CASE DB: the level-0 objects of DB form one chain from 1
# with no gap or overlap; prints "OBJECTS LAST_TXID".
level0_chain() {
	_next=1
	_k=0
	for _f in $(s3 list "$SUITE-$1/$2/0000/" | awk '{ print $1 }' | sed 's|.*/||; s|\.ltx$||' | sort); do
		[ $((0x${_f%-*})) -ne $_next ] && { echo "gap at $_f"; return 0; }
		_next=$((0x${_f#*-} + 1))
		_k=$((_k + 1))
	done
	echo "$_k $((_next - 1))"
}

case_batch_publish() {
	# interval 0 under a fast writer of two databases: what piles up during
	# an upload goes up as one object per database, and one lease write
	# publishes the round's objects of both
	lstart 1 batchpub
	wait_primary 1 >/dev/null
	for db in app.db two.db; do
		sql "$T/m1/$db" "PRAGMA journal_mode=wal; CREATE TABLE t(tag TEXT, id INTEGER)" >/dev/null
	done
	{
		echo "ATTACH '$T/m1/two.db' AS two;"
		for i in $(seq 1 400); do
			echo "BEGIN; INSERT INTO t VALUES('b', $i); INSERT INTO two.t VALUES('b', $i); COMMIT;"
		done
	} | sqlite3 -bail -cmd ".timeout 5000" "$T/m1/app.db" >/dev/null
	for db in app.db two.db; do
		i=0
		while [ "$(backup_txid 1 $db)" -ne "$(txid_at 1 $db)" ]; do
			i=$((i + 1))
			[ $i -gt 200 ] && break
			sleep 0.1
		done
		check "$db: published up to the node's TXID" [ "$(backup_txid 1 $db)" -eq "$(txid_at 1 $db)" ]
		set -- $(level0_chain batchpub $db)
		check "$db: a chain without gaps ($*)" [ "${2:-0}" -eq "$(txid_at 1 $db)" ]
		# one object per commit before: each batch counts
		echo "    $db: $2 commits in $1 level-0 objects" >&2
		check "$db: fewer level-0 objects ($1) than commits ($2)" [ "$1" -lt "$2" ]
		lease_of batchpub >"$T/lease.json"
		contains "$T/lease.json" "\"$db\":{\"checksum\":\"$(pos 1 $db | cut -d/ -f2)\",\"txid\":\"$(pos 1 $db | cut -d/ -f1)\"}"
	done
	up=$(metric 1 ltfs_backup_uploads_total)
	pub=$(metric 1 ltfs_lease_publishes_total)
	echo "    $up uploads, $pub lease writes to publish them" >&2
	check "lease writes were counted" [ "${pub:-0}" -gt 0 ]
	check "fewer lease writes ($pub) than uploads ($up): one per round" [ "$pub" -lt "$up" ]
	for db in app.db two.db; do
		"$LTFS" restore -o "$T/r-$db" "$(url batchpub)/$db" >/dev/null 2>"$T/restore.err"
		check "$db restores exactly" [ "$("$LTFS" ltx checksum "$T/r-$db")" = "$(pos 1 $db | cut -d/ -f2)" ]
		check "$db: every row" [ "$(sqlite3 "$T/r-$db" "SELECT count(*), total(id) FROM t")" = "400|80200.0" ]
	done
}

case_cover_orphan() {
	# a deposed primary's run of several commits, never published, lies in
	# the bucket where the next primary's uploads (at other boundaries)
	# would not replace it: once its history reaches the end of it, the
	# new primary puts its own run over that exact range at that key
	lstart 1 cover
	wait_primary 1 >/dev/null
	make_table 1 wal
	ins 1 app.db "INSERT INTO t VALUES('a', 1)"
	h=$(txid_at 1 app.db)
	wait_published 1 app.db
	node_stop 1
	key=$(printf 'app.db/0000/%016x-%016x.ltx' $((h + 1)) $((h + 3)))
	echo "not what the chain holds" >"$T/orphan"
	s3 put "$SUITE-cover/$key" "$T/orphan" >/dev/null
	lstart 1 cover
	wait_primary 1 >/dev/null
	for i in 2 3 4 5 6; do ins 1 app.db "INSERT INTO t VALUES('a', $i)"; done
	wait_published 1 app.db
	contains "$T/n1.log" "covered TXIDs $((h + 1))..$((h + 3))"
	s3 get "$SUITE-cover/$key" >"$T/now"
	check "the orphan's key holds our run now" fails cmp -s "$T/orphan" "$T/now"
	# the planner takes the longest file at a TXID: the orphan's key
	expect_exit 0 "$LTFS" restore --txid $((h + 3)) -o "$T/r.db" "$(url cover)/app.db"
	check "restored at its end" [ "$(sqlite3 "$T/r.db" "SELECT count(*), total(id) FROM t")" = "4|10.0" ]
	expect_exit 0 "$LTFS" restore -o "$T/r2.db" "$(url cover)/app.db"
	check "and at the head" [ "$(sqlite3 "$T/r2.db" "SELECT count(*), total(id) FROM t")" = "6|21.0" ]
}

case_dead_end_orphan() {
	# an unpublished file reaching further than the published chain's file
	# at the same TXID, ending inside the next one (no file continues it):
	# the catch-up of a returning node must take the chain, not stop there
	# and give the lease back (which wedged every candidate); a damaged file
	# that would lead there is set aside
	for n in 1 2; do lstart $n deadend --upload-interval 1s; done
	p=$(wait_primary 1 2)
	o=$((3 - p))
	make_table "$p" wal
	wait_sync app.db 1 2
	base=$(txid_at "$o" app.db)
	node_stop "$o"
	for round in 1 2 3; do
		# ten commits in a fraction of the upload interval: one object, mostly
		sqlite3 "$T/m$p/app.db" "$(for i in $(seq 1 10); do
			printf "INSERT INTO t VALUES('r%s', %s);" "$round" "$i"; done)"
		h=$(txid_at "$p" app.db)
		wait_published "$p" app.db
	done
	want=$(pos "$p" app.db)
	# A then B in the chain after the returning node's position, B holding
	# several TXIDs: the orphan runs from A's start into B
	s3 list "$SUITE-deadend/app.db/0000/" | awk '{ print $1 }' | sed 's|.*/||; s|\.ltx$||' |
		sort >"$T/keys"
	a=
	b=
	prev=
	while IFS=- read -r lo hi; do
		if [ -n "$prev" ] && [ $((0x$hi)) -gt $((0x$lo)) ]; then
			a=$prev
			b=$lo
			bhi=$hi
			break
		fi
		[ $((0x$lo)) -gt "$base" ] && prev=$lo
	done <"$T/keys"
	check "the chain has a file of several TXIDs after another ($(tr '\n' ' ' <"$T/keys"))" \
		[ -n "$a" -a -n "$b" ]
	echo "a deposed primary's unpublished file" >"$T/orphan"
	s3 put "$SUITE-deadend/app.db/0000/$a-$b.ltx" "$T/orphan" >/dev/null
	# and one that would lead to the head but is damaged: set aside
	s3 put "$SUITE-deadend/app.db/0000/$a-$bhi.ltx" "$T/orphan" >/dev/null
	node_kill "$p"
	lstart "$o" deadend --upload-interval 1s
	check "the returning node becomes the primary" [ "$(wait_primary "$o")" = "$o" ]
	check "at the bucket's head ($(pos "$o" app.db), want $want)" [ "$(pos "$o" app.db)" = "$want" ]
	check "with the rows" [ "$(sql "$T/m$o/app.db" "SELECT count(*) FROM t")" -eq 30 ]
	lacks "$T/n$o.log" "has no file from TXID"
	# the damaged one is set aside when the walk reaches it (under ASan the
	# walk once reached the head without trying it)
	if grep -q "app.db/0000/$a-$bhi.ltx" "$T/n$o.log"; then
		contains "$T/n$o.log" "app.db/0000/$a-$bhi.ltx aside"
	fi
}

case_delete_orphan() {
	# an orphan of an earlier epoch that the new primary's history cannot
	# cover (what it took from a peer is one file): it is deleted, and the
	# bucket restores to the head. Left there, it would be the longest file
	# at its TXID and a restore would take it.
	lstart 1 delorphan --upload-interval 60s
	check "node 1 is the primary" [ "$(wait_primary 1)" = 1 ]
	make_table 1 wal
	s=$(txid_at 1 app.db)
	node_stop 1 # a clean stop publishes what is pending: the head is TXID $s
	lstart 1 delorphan --upload-interval 60s
	check "node 1 is the primary again" [ "$(wait_primary 1)" = 1 ]
	lstart 2 delorphan --upload-interval 60s --no-candidate
	lstart 3 delorphan --upload-interval 1s
	wait_sync app.db 1 2 3
	behind_on_3
	check "published up to TXID $s ($(backup_txid 1 app.db))" [ "$(backup_txid 1 app.db)" -eq "$s" ]
	# from the last of the 20 commits, inside what node 3 will take from
	# node 2 as one file (so its history cannot form this range), to past
	# them: the longest file at its TXIDs once the head passes it
	key=$(printf '%s/app.db/0000/%016x-%016x.ltx' "$SUITE-delorphan" $((s + 20)) $((s + 50)))
	echo "a deposed primary's unpublished file" >"$T/orphan"
	s3 put "$key" "$T/orphan" --epoch 1 >/dev/null
	node_kill 1
	kill -CONT "$(cat "$T/ltfs.pid.3")"
	check "node 3 becomes the primary" [ "$(wait_primary 2 3)" = 3 ]
	contains "$T/n3.log" "from $(node_url 2)"
	took=$(sed -n 's/.*took TXIDs \([0-9]*\)\.\..*/\1/p' "$T/n3.log" | head -1)
	check "node 3 took TXIDs from $took on from node 2, before $((s + 20))" [ "$took" -lt $((s + 20)) ]
	# upload rounds: what node 3 took, then 5 commits (an object ending
	# before the orphan does, which it would outreach), then 30 (passing it)
	for n in 0 5 30; do
		for i in $(seq 1 $n); do ins 3 app.db "INSERT INTO t VALUES('q$n', $i)"; done
		h=$(txid_at 3 app.db)
		wait_published 3 app.db
	done
	sleep 1.5 # the orphan is dealt with after the round that passes it
	expect_exit 0 "$LTFS" restore -o "$T/r.db" "$(url delorphan)/app.db"
	check "the bucket restores to the head" [ "$(sqlite3 "$T/r.db" "SELECT count(*) FROM t")" = \
		"$(sql "$T/m3/app.db" "SELECT count(*) FROM t")" ]
	contains "$T/n3.log" "deleted $key"
	check "the orphan is gone" fails s3 head "$key"
}

case_first_upload_unpublished() {
	# the first primary of a database died between its first upload and
	# the lease write: the lease has no head for the database, so that
	# object is an orphan, not the head of the bucket's chain
	lstart 1 first --upload-interval 60s
	check "node 1 is the primary" [ "$(wait_primary 1)" = 1 ]
	lstart 2 first --upload-interval 1s
	make_table 1 wal
	for i in 1 2 3; do ins 1 app.db "INSERT INTO t VALUES('a', $i)"; done
	wait_sync app.db 1 2
	h=$(txid_at 1 app.db)
	check "nothing published ($(backup_txid 1 app.db))" [ "$(backup_txid 1 app.db)" -eq 0 ]
	key=$(printf '%s/app.db/0000/%016x-%016x.ltx' "$SUITE-first" 1 $((h + 3)))
	echo "a deposed primary's unpublished file" >"$T/orphan"
	s3 put "$key" "$T/orphan" --epoch 1 >/dev/null
	node_kill 1
	check "node 2 becomes the primary" [ "$(wait_primary 2)" = 2 ]
	for i in $(seq 1 10); do ins 2 app.db "INSERT INTO t VALUES('b', $i)"; done
	h=$(txid_at 2 app.db)
	wait_published 2 app.db
	sleep 1.5 # the orphan is dealt with after the round that passes it
	expect_exit 0 "$LTFS" restore -o "$T/r.db" "$(url first)/app.db"
	check "the bucket restores to the head" [ "$(sqlite3 "$T/r.db" "SELECT count(*) FROM t")" = 13 ]
	lacks "$T/n2.log" "no file continuing"
	s3 get "$key" >"$T/now" 2>/dev/null || true
	check "the orphan was covered or deleted" fails cmp -s "$T/orphan" "$T/now"
}

case_replica_history_folds() {
	# With a bucket, folding takes only files the bucket holds. A replica
	# ships nothing itself: the lease's published heads say what the
	# bucket holds, so it folds as the primary does instead of keeping
	# every file.
	for n in 1 2; do lstart $n rfold --history-keep 5; done
	p=$(wait_primary 1 2)
	r=$((3 - p))
	make_table "$p" wal
	i=0
	while [ $i -lt 80 ]; do
		i=$((i + 1))
		ins "$p" app.db "INSERT INTO t VALUES('f', $i)"
	done
	wait_sync app.db 1 2
	sleep 3 # a fold looks every second; the lease is read every poll
	pf=$(ls "$T/d$p/dbs/app.db/ltx" | wc -l)
	rf=$(ls "$T/d$r/dbs/app.db/ltx" | wc -l)
	echo "    history files after 81 commits, keep 5: primary $pf, replica $rf" >&2
	check "the primary folded ($pf files)" [ "$pf" -lt 40 ]
	check "the replica folded too ($rf files)" [ "$rf" -lt 40 ]
	same_everywhere 1 2
}

case_static_to_lease() {
	# a prefix backed up by a static primary, then the same node in lease
	# mode: the bucket restores to the new head, old and new rows
	node_start 1 --s3 "$(url static)" --upload-interval 0
	make_table 1 wal
	for i in 1 2 3; do ins 1 app.db "INSERT INTO t VALUES('static', $i)"; done
	node_stop 1
	lstart 1 static
	check "node 1 is the primary" [ "$(wait_primary 1)" = 1 ]
	for i in 1 2 3; do ins 1 app.db "INSERT INTO t VALUES('lease', $i)"; done
	h=$(txid_at 1 app.db)
	wait_published 1 app.db
	check "published to the head ($(backup_txid 1 app.db), want $h)" [ "$(backup_txid 1 app.db)" -eq "$h" ]
	expect_exit 0 "$LTFS" restore -o "$T/r.db" "$(url static)/app.db"
	check "the bucket restores to the head" [ "$(sqlite3 "$T/r.db" "SELECT count(*) FROM t")" = 6 ]
}

# ---- synchronous mode ----------------------------------------------------

# no_commit_lost TAG PREFIX ARGS...: three nodes with ARGS, a WAL writer,
# three kill -9 of the primary: every acknowledged commit survives.
no_commit_lost() {
	_tag=$1
	_pfx=$2
	shift 2
	for n in 1 2 3; do lstart $n "$_pfx" "$@"; done
	p=$(wait_primary 1 2 3)
	make_table "$p" wal
	writer "$_tag" wal 100000 1 2 3
	for round in 1 2 3; do
		wait_acked "$_tag" $((round * 40))
		p=$(wait_primary 1 2 3)
		crash "$p"
		sleep 0.3
		lstart "$p" "$_pfx" "$@"
	done
	wait_acked "$_tag" 160
	kill "$(cat "$T/writer.$_tag")" 2>/dev/null || true
	sleep 0.5
	q=$(wait_primary 1 2 3)
	same_everywhere 1 2 3
	n=$(acked "$_tag")
	have=$(sql "$T/m$q/app.db" "SELECT count(DISTINCT id) FROM t WHERE tag = '$_tag' AND id <= $n")
	[ "$have" -eq "$n" ] || lost_report "$_tag" "$n" "$q"
	check "every acknowledged commit survived the kills ($have of $n)" [ "$have" -eq "$n" ]
}

# lost_report TAG N Q: for a failure report, each acknowledged id of
# writer TAG that node Q lacks, where and when it was acknowledged, and
# what the nodes logged from 3 s before to 1 s after.
lost_report() {
	for _id in $(sql "$T/m$3/app.db" "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL
			SELECT i + 1 FROM s WHERE i < $2) SELECT i FROM s
			WHERE i NOT IN (SELECT id FROM t WHERE tag = '$1')" | head -3); do
		_line=$(grep "^$_id node " "$T/acked.$1.at")
		echo "    lost: id $_line (ms)" >&2
		_ms=${_line##*-}
		_from=$(date -u -d "@$(((_ms - 3000) / 1000))" +%T)
		_to=$(date -u -d "@$(((_ms + 1000) / 1000))" +%T)
		for _l in "$T"/n*.log; do
			awk -v a="$_from" -v b="$_to" '{ t = substr($1, 12, 8) } t >= a && t <= b' "$_l" |
				cut -c1-200 | sed "s#^#    $(basename "$_l") | #" >&2
		done
	done
}

case_sync_no_loss() { no_commit_lost s sync --sync s3; }

# commits wait for one replica's ack (the bucket lags 10 s behind)
case_sync_replicas() { no_commit_lost r syncr --sync replicas=1 --upload-interval 10s; }

case_sync_replicas_alone() {
	# with no replica to acknowledge, a rollback-mode commit does not return
	lstart 1 syncalone --sync replicas=1
	wait_primary 1 >/dev/null
	sql "$T/m1/app.db" "PRAGMA journal_mode=delete; CREATE TABLE t(x)" >/dev/null &
	commit=$!
	sleep 2
	check "the commit waits for an ack" kill -0 $commit
	lstart 2 syncalone
	check "and returns once a replica has it" wait $commit
}

# ---- a long run of failures ---------------------------------------------

case_flip_flop() {
	for n in 1 2 3; do lstart $n flip; done
	p=$(wait_primary 1 2 3)
	make_table "$p" wal
	writer f wal 100000 1 2 3
	seed=${SEED:-$$}
	echo "    seed $seed" >&2
	for e in 1 2 3 4 5 6 7 8; do
		seed=$(((seed * 1103515245 + 12345) % 2147483648))
		p=$(wait_primary 1 2 3)
		if [ $((seed % 2)) -eq 0 ]; then
			crash "$p"
			sleep 0.$((seed % 9))
			lstart "$p" flip
		else
			kill -STOP "$(cat "$T/ltfs.pid.$p")"
			sleep $((TTL_MS / 1000 + 1))
			kill -CONT "$(cat "$T/ltfs.pid.$p")"
		fi
		sleep 0.5
	done
	kill "$(cat "$T/writer.f")" 2>/dev/null || true
	sleep 0.5
	wait_primary 1 2 3 >/dev/null
	ins "$(wait_primary 1 2 3)" app.db "INSERT INTO t VALUES('end', 1)"
	same_everywhere 1 2 3
	check "writes went on through it all ($(acked f) acks)" [ "$(acked f)" -gt 20 ]
	"$LTFS" restore -o "$T/restored.db" "$(url flip)/app.db" >/dev/null 2>"$T/restore.err"
	check "the bucket restores to what the nodes hold" \
		[ "$(sqlite3 "$T/restored.db" "SELECT count(*), total(id) FROM t")" = \
		  "$(sql "$T/m1/app.db" "SELECT count(*), total(id) FROM t")" ]
}

# ---- bad input -------------------------------------------------------------

case_bad_lease_object() {
	printf '{"version":1,"node":"zz"' >"$T/bad.json"
	s3 put "$SUITE-badlease/.ltfs/lease.json" "$T/bad.json" >/dev/null
	lstart 1 badlease
	p=$(wait_primary 1)
	contains "$T/n1.log" "badlease/.ltfs/lease.json: not JSON"
	lease_of badlease >"$T/lease.json"
	contains "$T/lease.json" '"version":1'
	# a lease from a future version is not overwritten before its TTL
	sed 's/"version":1/"version":7/' "$T/lease.json" >"$T/v7.json"
	node_stop 1
	s3 put "$SUITE-badlease/.ltfs/lease.json" "$T/v7.json" >/dev/null
	lstart 1 badlease
	sleep 0.5
	check "not the primary at once" [ "$(role 1)" = replica ]
	contains "$T/n1.log" "field 'version' is 7"
}

case_store_ignores_conditions() {
	# behind a relay that turns the server's 412 answers into 200, the
	# store looks as if it ignored If-None-Match and If-Match: a node must
	# refuse lease mode, not elect itself on it
	rp=$((PORT_BASE + 10))
	relay_start "$rp" unconditional
	mkdir -p "$T/m"
	(
		export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$rp
		expect_exit 2 "$LTFS" mount --data "$T/d" --s3 "$(url ignores)" --lease s3 \
			--lease-ttl 2s --http "127.0.0.1:$((PORT_BASE + 11))" \
			--advertise-url http://127.0.0.1:1 "$T/m"
	)
	contains "$T/err" "does not honor conditional writes"
	contains "$T/err" "accepted a second If-None-Match: * PUT"
	check "nothing mounted" fails grep -q " $T/m " /proc/mounts
	lacks_obj=$(s3 list "$SUITE-ignores/.ltfs/" | grep -c 'lease.json' || true)
	check "no lease written" [ "$lacks_obj" -eq 0 ]
	# the same node through the server itself starts as the primary
	lstart 1 ignores
	check "the primary without the relay" [ "$(wait_primary 1)" = 1 ]
	relay_stop
}

case_config_errors() {
	expect_exit 2 "$LTFS" mount --data "$T/d" --lease s3 "$T/m"
	contains "$T/err" "needs a bucket"
	expect_exit 2 "$LTFS" mount --data "$T/d" --lease s3 --lease-ttl 1s "$T/m"
	contains "$T/err" "--lease-ttl"
	expect_exit 2 "$LTFS" mount --data "$T/d" --lease etcd "$T/m"
	contains "$T/err" "want s3 or none"
	expect_exit 2 "$LTFS" mount --data "$T/d" --s3 "$(url cfg)" --lease s3 \
		--replica-of http://127.0.0.1:1 "$T/m"
	contains "$T/err" "exclude each other"
	expect_exit 2 "$LTFS" mount --data "$T/d" --s3 "$(url cfg)" --lease s3 --http 0.0.0.0:1 "$T/m"
	contains "$T/err" "--advertise-url"
	printf 'mount-dir: %s\nlease: consul\n' "$T/m" >"$T/c.yml"
	expect_exit 2 "$LTFS" mount --config "$T/c.yml"
	contains "$T/err" "line 2: 'lease' must be one of s3|none"
	printf 'mount-dir: %s\nlease-ttl: 500ms\n' "$T/m" >"$T/c.yml"
	expect_exit 2 "$LTFS" mount --config "$T/c.yml"
	contains "$T/err" "line 2: 'lease-ttl'"
	expect_exit 2 "$LTFS" mount --data "$T/d" --sync replicas=0 "$T/m"
	contains "$T/err" "replicas=N (N 1..16)"
	printf 'mount-dir: %s\nsync: all\n' "$T/m" >"$T/c.yml"
	expect_exit 2 "$LTFS" mount --config "$T/c.yml"
	contains "$T/err" "line 2: 'sync' must be none, s3 or replicas=N"
	expect_exit 1 "$LTFS" promote --url http://127.0.0.1:1
}

run_case config_errors
run_case election_race
run_case kill_primary
run_case sigstop_primary
run_case paused_mid_commit
run_case s3_down
run_case clean_shutdown
run_case non_candidate
run_case promote
run_case promote_mid_answer
run_case promote_mid_record
run_case promote_lagging_history
run_case catch_up_from_bucket
run_case catch_up_from_peer
run_case batch_publish
run_case cover_orphan
run_case dead_end_orphan
run_case delete_orphan
run_case first_upload_unpublished
run_case replica_history_folds
run_case static_to_lease
run_case sync_no_loss
run_case sync_replicas
run_case sync_replicas_alone
run_case flip_flop
run_case bad_lease_object
run_case store_ignores_conditions
finish
