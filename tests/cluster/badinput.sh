#!/bin/sh
# Bad input on both sides of replication.
#
# Replica side: a fake primary (tests/tools/fake_primary.c) sends a replica
# crafted streams: broken frames, cut streams, corrupt or non-continuing
# LTX files, hostile database names. Each must be refused with an error
# that says exactly what was wrong, and leave the replica as it was: same
# position, a sound database, nothing half-applied or created.
#
# Primary side: curl sends a real primary bad requests (JSON, size, names,
# tokens); each gets the right status and message, and the primary still
# serves a normal replica afterwards.
#
# Ports: node N (lib.sh) listens on PORT_BASE+N; the fake primary on
# PORT_BASE+10, the replica under test on PORT_BASE+11.
PORT_BASE=$((20000 + ($$ % 600) * 20))
. tests/lib.sh
: "${LTFS_FAKE_PRIMARY:?LTFS_FAKE_PRIMARY must point at the fake-primary binary (run through tests/run)}"

FP=$((PORT_BASE + 10))
RP=$((PORT_BASE + 11))

# wait_for DESCRIPTION COMMAND...: until COMMAND succeeds (at most 10 s).
wait_for() {
	_what=$1
	shift
	_i=0
	until "$@" >/dev/null 2>&1; do
		_i=$((_i + 1))
		if [ $_i -gt 200 ]; then
			echo "    timed out waiting for: $_what" >&2
			[ -e "$T/ltfs.log" ] && tail -8 "$T/ltfs.log" | sed 's/^/    | /' >&2
			return 1
		fi
		sleep 0.05
	done
}

# ---- the fixture: real LTX files from a real primary ----------------------

# app.db on a primary: TXID 1 creates t, TXIDs 2..5 insert one row each.
# Leaves $T/ltx/N.ltx (the file of TXID N) and $T/pos.N (the position).
case_fixture() {
	node_start 1
	sql "$T/m1/app.db" "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"
	cat "$T/m1/app.db-pos" >"$T/pos.1"
	for n in 2 3 4 5; do
		sql "$T/m1/app.db" "INSERT INTO t(v) VALUES ('row $n')"
		cat "$T/m1/app.db-pos" >"$T/pos.$n"
	done
	node_stop 1
	mkdir "$T/ltx"
	for n in 1 2 3 4 5; do
		check "txid $n: position" [ "$(cut -d/ -f1 "$T/pos.$n")" = "000000000000000$n" ]
		cp "$T/d1/dbs/app.db/ltx/000000000000000$n-000000000000000$n.ltx" "$T/ltx/$n.ltx"
	done
	# TXID 3 with one bit flipped in page 1's data: in the LZ4 literals
	# ("SQLite format 3"), so the page decodes but the checksums disagree
	_at=$(grep -obUaF 'SQLite format 3' "$T/ltx/3.ltx" | head -1 | cut -d: -f1)
	check "page 1 found" [ -n "$_at" ]
	cp "$T/ltx/3.ltx" "$T/ltx/3-flipped.ltx"
	printf 'P' | dd of="$T/ltx/3-flipped.ltx" bs=1 seek=$((_at + 1)) conv=notrunc 2>/dev/null
	check "one byte differs" [ "$(cmp -l "$T/ltx/3.ltx" "$T/ltx/3-flipped.ltx" | wc -l)" -eq 1 ]
	expect_exit 1 "$LTFS" ltx verify "$T/ltx/3-flipped.ltx"
	check "the flip is a checksum error" contains "$T/out" "checksum mismatch"
	# big.ltx: a snapshot of a 12 MiB database, over the 1 MiB from which a
	# replica writes a new database out while its frame still arrives, and
	# over the 8 MiB ring that carries the frame to that writer;
	# big-flipped.ltx: the same with one byte in its middle inverted
	sql "$T/big.db" "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
		INSERT INTO t(v) SELECT randomblob(3000) FROM generate_series(1, 4000)"
	sql "$T/big.db" "SELECT count(*), sum(length(v)) FROM t" >"$T/big.rows"
	"$LTFS" ltx checksum "$T/big.db" >"$T/big.sum"
	"$LTFS" ltx encode-db "$T/big.db" -o "$T/ltx/big.ltx" >/dev/null
	_size=$(wc -c <"$T/ltx/big.ltx")
	check "big.ltx over 9 MiB" [ "$_size" -gt 9437184 ]
	cp "$T/ltx/big.ltx" "$T/ltx/big-flipped.ltx"
	_byte=$(od -An -tu1 -j $((_size / 2)) -N1 "$T/ltx/big.ltx" | tr -d ' ')
	printf "\\$(printf %03o $((_byte ^ 255)))" |
		dd of="$T/ltx/big-flipped.ltx" bs=1 seek=$((_size / 2)) conv=notrunc 2>/dev/null
	expect_exit 1 "$LTFS" ltx verify "$T/ltx/big-flipped.ltx"
}
run_case fixture
FIX=$T

# ---- replica side ----------------------------------------------------------

# size N: bytes in the frame of $FIX/ltx/N.ltx for app.db.
size() { echo $((12 + 6 + $(wc -c <"$FIX/ltx/$1.ltx"))); }

# good_len: bytes before SPEC in a stream made by fake().
good_len() { echo $(($(size 1) + $(size 2) + 20)); }

# fake SPEC...: a fake primary serving TXIDs 1 and 2 of app.db, READY, then
# SPEC, to two connections; requests in $T/requests.
fake() {
	"$LTFS_FAKE_PRIMARY" --max-conns 2 --requests "$T/requests" "$FP" \
		ltx app.db "$FIX/ltx/1.ltx" ltx app.db "$FIX/ltx/2.ltx" ready "$@" \
		>"$T/fake.out" 2>"$T/fake.log" &
	echo $! >"$T/ltfs.pid.fake"
	wait_for "the fake primary listening" grep -q "listening on $FP" "$T/fake.out"
}

# replica: a replica of the fake primary, mounted on $T/m.
replica() {
	ltfs_mount "$T/m" --http "127.0.0.1:$RP" --replica-of "http://127.0.0.1:$FP"
}

# logged TEXT: the replica's log shows TEXT (waits up to 10 s).
logged() { wait_for "'$1' in the replica log" grep -qF -- "$1" "$T/ltfs.log"; }

# fake_done: the fake primary served both connections and exited 0, so
# the replica got the bad stream twice and nothing moves any more.
fake_done() {
	_pid=$(cat "$T/ltfs.pid.fake")
	wait_for "the fake primary to finish" \
		sh -c "[ \"\$(cut -d' ' -f3 /proc/$_pid/stat 2>/dev/null)\" = Z ] || [ ! -e /proc/$_pid ]"
	wait "$_pid"
}

# at_txid2: the replica holds TXID 2 of the fixture and nothing else.
at_txid2() {
	# the second connection sends TXIDs 1 and 2 again: the replica may
	# still be applying them after the fake primary has exited
	wait_for "position is TXID 2's" sh -c "[ \"\$(cat '$T/m/app.db-pos')\" = \"\$(cat '$FIX/pos.2')\" ]"
	check "integrity" [ "$(sql "$T/m/app.db" 'PRAGMA integrity_check')" = ok ]
	check "rows of TXID 2" [ "$(sql "$T/m/app.db" 'SELECT group_concat(v) FROM t')" = "row 2" ]
	check "history is TXIDs 1, 2" [ "$(ls "$T/data/dbs/app.db/ltx" | tr '\n' ' ')" = \
		"0000000000000001-0000000000000001.ltx 0000000000000002-0000000000000002.ltx " ]
	check "staging empty" [ -z "$(ls -A "$T/data/staging")" ]
	check "no other database" [ "$(ls "$T/data/dbs")" = app.db ]
	check "tree empty" [ -z "$(ls -A "$T/data/tree")" ]
}

case_good_stream() {
	fake end
	replica
	logged "caught up with http://127.0.0.1:$FP (2 files applied)"
	fake_done
	at_txid2
	check "first request: no databases" [ "$(sed -n 1p "$T/requests" | grep -c '"dbs":\[\]')" = 1 ]
	ltfs_umount "$T/m"
}

case_unknown_frame_type() {
	printf '\011\000\000\000\000\000\000\000\000\000\000\000' >"$T/bad"
	fake raw "$T/bad" end
	replica
	logged "stream: stream offset $(good_len): frame type 9 is unknown"
	fake_done
	at_txid2
	ltfs_umount "$T/m"
}

# An LTX frame announcing a 4096-byte name (over FRAME_NAME_MAX).
case_oversized_name_length() {
	printf '\001\000\020\000\000\000\000\000\000\000\001\000' >"$T/bad"
	head -c 5000 /dev/zero | tr '\0' 'n' >>"$T/bad"
	fake raw "$T/bad" end
	replica
	logged "stream: stream offset $(($(good_len) + 2)): ltx frame name length 4096, want 1..4031"
	fake_done
	at_txid2
	ltfs_umount "$T/m"
}

# The connection drops in the middle of TXID 3's payload.
case_truncated_stream() {
	fake ltx app.db "$FIX/ltx/3.ltx" end cut $(($(good_len) + 18 + 100))
	replica
	logged "stream ended without an END frame (in the middle of a frame)"
	fake_done
	check "cut where asked" contains "$T/fake.log" "sent $(($(good_len) + 118)) body bytes"
	at_txid2
	ltfs_umount "$T/m"
}

case_flipped_page_byte() {
	fake ltx app.db "$FIX/ltx/3-flipped.ltx" end
	replica
	logged "stream: 'app.db': "
	fake_done
	check "checksum error" grep -q "stream: 'app.db': .*checksum mismatch" "$T/ltfs.log"
	at_txid2
	ltfs_umount "$T/m"
}

# TXID 4 after TXID 2: refused as not continuing; the next connection asks
# from the position the replica really has.
case_txid_gap() {
	fake ltx app.db "$FIX/ltx/4.ltx" end
	replica
	logged "stream: 'app.db': 0000000000000004-0000000000000004.ltx: file starts at txid 4, the database is at txid 2"
	fake_done
	at_txid2
	check "two requests" [ "$(wc -l <"$T/requests")" -eq 2 ]
	check "the first from nothing" [ "$(sed -n 1p "$T/requests" | grep -c '"dbs":\[\]')" = 1 ]
	_want="{\"name\":\"app.db\",\"txid\":\"0000000000000002\",\"checksum\":\"$(cut -d/ -f2 "$FIX/pos.2")\"}"
	check "the second from TXID 2" [ "$(sed -n 2p "$T/requests" | grep -cF "$_want")" = 1 ]
	ltfs_umount "$T/m"
}

# A snapshot without checksums (as Litestream writes them) cannot be
# verified, so a replica must not take it.
case_file_without_checksums() {
	sqlite3 "$T/plain.db" "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('other');"
	"$LTFS" ltx encode-db --no-checksum -o "$T/nock.ltx" "$T/plain.db" >/dev/null
	fake ltx app.db "$T/nock.ltx" end
	replica
	logged "stream: 'app.db': 0000000000000001-0000000000000001.ltx: file has no checksums: replication needs them"
	fake_done
	at_txid2
	ltfs_umount "$T/m"
}

# names that would leave the data dir or clash with a companion file
case_hostile_names() {
	for name in ../evil.db "$T/abs.db" app.db-wal sub/../../evil.db .lag drop:../evil.db; do
		case $name in
		drop:*) spec="drop ${name#drop:}"; name=${name#drop:} ;;
		*) spec="ltx $name $FIX/ltx/1.ltx" ;;
		esac
		# shellcheck disable=SC2086
		fake $spec end
		replica
		case $name in
		/*) logged "stream: database name '$name' is an absolute path" ;;
		*-wal) logged "stream: database name '$name' ends in a companion file suffix" ;;
		.lag) logged "stream: database name '$name' is reserved" ;;
		*) logged "stream: database name '$name' has an empty, '.' or '..' component" ;;
		esac
		fake_done
		at_txid2
		check "$name: nothing beside the mount" [ ! -e "$T/evil.db" ]
		check "$name: nothing at the absolute path" [ ! -e "$T/abs.db" ]
		check "$name: nothing beside the tree" [ ! -e "$T/data/evil.db" ]
		check "$name: only app.db in the mount" [ "$(ls "$T/m" | tr '\n' ' ')" = "app.db app.db-pos " ]
		ltfs_umount "$T/m"
		rm -rf "$T/data" "$T/requests"
		: >"$T/ltfs.log"
	done
}

case_drop() {
	fake drop app.db end
	replica
	logged "'app.db': removed (the primary has no such database)"
	fake_done
	# the second connection brings app.db back, then drops it again
	wait_for "the second drop" sh -c "[ \$(grep -c \"'app.db': removed\" '$T/ltfs.log') -ge 2 ]"
	check "gone from the mount" [ ! -e "$T/m/app.db" ]
	check "no position" [ ! -e "$T/m/app.db-pos" ]
	check "database file gone" [ ! -e "$T/data/dbs/app.db/database" ]
	check "history gone" [ -z "$(ls -A "$T/data/dbs/app.db/ltx" 2>/dev/null)" ]
	check "second request has nothing" [ "$(sed -n 2p "$T/requests" | grep -c '"dbs":\[\]')" = 1 ]
	ltfs_umount "$T/m"
}

# A refused file for a database the replica does not have must not leave
# that database behind (not in the mount, not in the data dir).
case_refused_file_creates_nothing() {
	fake ltx new.db "$FIX/ltx/3.ltx" end
	replica
	logged "stream: 'new.db': 0000000000000003-0000000000000003.ltx: file starts at txid 3, the database is at txid 0"
	fake_done
	check "not in the mount" [ ! -e "$T/m/new.db" ]
	at_txid2
	ltfs_umount "$T/m"
}

# A database name under an existing database ("app.db/inner.db") would
# make app.db a directory too: refused, and the mount lists app.db once.
case_name_under_a_database() {
	fake ltx app.db/inner.db "$FIX/ltx/1.ltx" end
	replica
	wait_for "the fake primary's two connections" grep -q "connection 2" "$T/fake.log"
	fake_done
	check "app.db listed once" [ "$(ls "$T/m" | grep -c '^app\.db$')" = 1 ]
	check "no directory app.db in the tree" [ ! -d "$T/data/tree/app.db" ]
	check "no app.db/inner.db" [ ! -e "$T/data/dbs/app.db%2finner.db" ]
	at_txid2
	ltfs_umount "$T/m"
}

# A big snapshot of a new database is written out as it arrives, and
# comes out exact.
case_big_snapshot() {
	fake ltx big.db "$FIX/ltx/big.ltx" end
	replica
	logged "'big.db': snapshot 0000000000000001-0000000000000001.ltx written out as it arrived"
	fake_done
	check "big.db's checksum" [ "$(cut -d/ -f2 "$T/m/big.db-pos")" = "$(cat "$FIX/big.sum")" ]
	check "the file's checksum" [ "$("$LTFS" ltx checksum "$T/data/dbs/big.db/database")" = "$(cat "$FIX/big.sum")" ]
	check "big.db's rows" [ "$(sql "$T/m/big.db" 'SELECT count(*), sum(length(v)) FROM t')" = "$(cat "$FIX/big.rows")" ]
	check "big.db sound" [ "$(sql "$T/m/big.db" 'PRAGMA integrity_check')" = ok ]
	check "staging empty" [ -z "$(ls -A "$T/data/staging")" ]
	ltfs_umount "$T/m"
}

# The same while the writer-out lags: a test build stalls it for a second
# after the header, so the frame fills the ring it is read from and the
# receiving side must wait for room rather than overwrite unread bytes.
case_big_snapshot_slow_writer() {
	fake ltx big.db "$FIX/ltx/big.ltx" end
	LTFS_FAULT=prebuild-slow LTFS="$LTFS_FAULTS_BIN" replica
	logged "injected stall: 'prebuild-slow'"
	logged "'big.db': snapshot 0000000000000001-0000000000000001.ltx written out as it arrived"
	fake_done
	check "big.db's checksum" [ "$(cut -d/ -f2 "$T/m/big.db-pos")" = "$(cat "$FIX/big.sum")" ]
	check "big.db's rows" [ "$(sql "$T/m/big.db" 'SELECT count(*), sum(length(v)) FROM t')" = "$(cat "$FIX/big.rows")" ]
	ltfs_umount "$T/m"
}

# The same snapshot damaged in its middle: refused with the file named,
# and neither the database nor the half written out is left.
case_big_snapshot_flipped() {
	fake ltx big.db "$FIX/ltx/big-flipped.ltx" end
	replica
	logged "stream: 'big.db': 0000000000000001-0000000000000001.ltx: "
	fake_done
	check "not in the mount" [ ! -e "$T/m/big.db" ]
	at_txid2
	ltfs_umount "$T/m"
}

# The connection drops in the middle of the big snapshot.
case_big_snapshot_cut() {
	fake ltx big.db "$FIX/ltx/big.ltx" end cut $(($(good_len) + 18 + 1572864))
	replica
	logged "stream ended without an END frame (in the middle of a frame)"
	fake_done
	check "not in the mount" [ ! -e "$T/m/big.db" ]
	at_txid2
	ltfs_umount "$T/m"
}

# A new replica killed -9 while it writes out a big snapshot (the fake
# primary holds the stream in the middle of the frame): its restart
# discards the half and takes the whole snapshot exactly.
case_big_snapshot_killed() {
	# the stream's bytes: READY-less, just the frame, then END
	"$LTFS_FAKE_PRIMARY" --max-conns 1 "$FP" ltx big.db "$FIX/ltx/big.ltx" end \
		>"$T/fake.out" 2>"$T/fake.log" &
	echo $! >"$T/ltfs.pid.fake"
	wait_for "the fake primary listening" grep -q "listening on $FP" "$T/fake.out"
	curl -s -X POST -d '{}' "http://127.0.0.1:$FP/v1/stream" -o "$T/stream.bin"
	fake_done
	head -c 1572864 "$T/stream.bin" >"$T/part1"
	tail -c +1572865 "$T/stream.bin" >"$T/part2"
	"$LTFS_FAKE_PRIMARY" --max-conns 1 "$FP" raw "$T/part1" hold 30 raw "$T/part2" \
		>"$T/fake.out" 2>"$T/fake.log" &
	echo $! >"$T/ltfs.pid.fake"
	wait_for "the fake primary listening" grep -q "listening on $FP" "$T/fake.out"
	replica
	wait_for "the snapshot being written out" sh -c "ls '$T/data/staging' | grep -q 'ltx\.db\$'"
	kill -9 "$(cat "$T/ltfs.pid")"
	wait "$(cat "$T/ltfs.pid")" 2>/dev/null || true
	umount -l "$T/m" 2>/dev/null || true
	kill "$(cat "$T/ltfs.pid.fake")"
	wait "$(cat "$T/ltfs.pid.fake")" 2>/dev/null || true
	"$LTFS_FAKE_PRIMARY" --max-conns 2 "$FP" ltx big.db "$FIX/ltx/big.ltx" ready end \
		>"$T/fake.out" 2>"$T/fake.log" &
	echo $! >"$T/ltfs.pid.fake"
	wait_for "the fake primary listening" grep -q "listening on $FP" "$T/fake.out"
	replica
	logged "'big.db': snapshot 0000000000000001-0000000000000001.ltx written out as it arrived"
	check "big.db's checksum" [ "$(cut -d/ -f2 "$T/m/big.db-pos")" = "$(cat "$FIX/big.sum")" ]
	check "big.db's rows" [ "$(sql "$T/m/big.db" 'SELECT count(*), sum(length(v)) FROM t')" = "$(cat "$FIX/big.rows")" ]
	check "staging empty" [ -z "$(ls -A "$T/data/staging")" ]
	ltfs_umount "$T/m"
	kill "$(cat "$T/ltfs.pid.fake")" 2>/dev/null || true
}

run_case good_stream
run_case big_snapshot
run_case big_snapshot_slow_writer
run_case big_snapshot_flipped
run_case big_snapshot_cut
run_case big_snapshot_killed
run_case unknown_frame_type
run_case oversized_name_length
run_case truncated_stream
run_case flipped_page_byte
run_case txid_gap
run_case file_without_checksums
run_case hostile_names
run_case drop
run_case refused_file_creates_nothing
run_case name_under_a_database

# ---- primary side ------------------------------------------------------------

# post BODY_FILE [CURL_ARGS...]: POST /v1/stream on node 1; the status in
# $T/status, the answer in $T/answer.
post() {
	_body=$1
	shift
	curl -s -m 10 -o "$T/answer" -w '%{http_code}' "$@" --data-binary "@$_body" \
		"$(node_url 1)/v1/stream" >"$T/status" || true
}

# refused STATUS TEXT: the last answer had STATUS and an error naming TEXT.
refused() {
	check "status $1 (got $(cat "$T/status"))" [ "$(cat "$T/status")" = "$1" ]
	contains "$T/answer" "$2"
}

# replica_syncs [ARGS...]: a new replica (node 2) of node 1 gets app.db.
replica_syncs() {
	node_replica 2 1 "$@"
	wait_sync app.db 1 2
	check "replica integrity" [ "$(sql "$T/m2/app.db" 'PRAGMA integrity_check')" = ok ]
	node_stop 2
}

case_primary_bad_requests() {
	unset LTFS_TOKEN
	node_start 1
	sql "$T/m1/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1);"
	b=$T/body
	printf '{"dbs":[' >"$b"
	post "$b"
	refused 400 "request body: ']' expected near end of file at line 1 column 8"
	printf '[]' >"$b"
	post "$b"
	refused 400 'request body: want an object with a \"dbs\" array'
	printf '{"dbs":{"name":"app.db"}}' >"$b"
	post "$b"
	refused 400 'request body: want an object with a \"dbs\" array'
	printf '{"dbs":[{"name":"app.db","txid":"1x","checksum":"0"}]}' >"$b"
	post "$b"
	refused 400 'request body: dbs[0] needs \"name\", and \"txid\" and \"checksum\" as 1..16 hex digits'
	printf '{"dbs":[{"name":"a.db","txid":"1","checksum":"0"},{"name":"app.db","txid":"00000000000000001","checksum":"0"}]}' >"$b"
	post "$b"
	refused 400 'request body: dbs[1] needs'
	printf '{"dbs":[{"name":"x.db","txid":"1","checksum":"0"},{"name":"x.db","txid":"2","checksum":"0"}]}' >"$b"
	post "$b"
	refused 400 "request body: database 'x.db' twice"
	printf '{"dbs":[{"name":"../x.db","txid":"1","checksum":"0"}]}' >"$b"
	post "$b"
	refused 400 "request body: dbs[0]: database name '../x.db' has an empty, '.' or '..' component"
	printf '{"dbs":[{"name":"a/../../x.db","txid":"1","checksum":"0"}]}' >"$b"
	post "$b"
	refused 400 "dbs[0]: database name 'a/../../x.db' has an empty, '.' or '..' component"
	printf '{"dbs":[{"name":"/etc/x.db","txid":"1","checksum":"0"}]}' >"$b"
	post "$b"
	refused 400 "dbs[0]: database name '/etc/x.db' is an absolute path"
	check "refusals logged" contains "$T/n1.log" "stream from ?@127.0.0.1 refused: request body: dbs[0]: database name '../x.db'"
	# the body limit is 1 MiB: one byte over is refused, exactly 1 MiB streams
	{ printf '{"dbs":[]}'; head -c $((1048576 - 10)) /dev/zero | tr '\0' ' '; } >"$b"
	cp "$b" "$b.over"
	printf ' ' >>"$b.over"
	post "$b.over"
	refused 413 "request body over 1 MiB"
	curl -s -m 2 -o "$T/stream" -w '%{http_code}' --data-binary "@$b" \
		"$(node_url 1)/v1/stream" >"$T/status" || true
	check "1 MiB: streamed" [ "$(cat "$T/status")" = 200 ]
	# app.db (TXIDs 1, 2), READY: the first frame is app.db's snapshot
	check "1 MiB: an LTX frame for app.db" [ "$(head -c 18 "$T/stream" | tail -c 6)" = app.db ]
	# GET is not a stream
	curl -s -m 10 -o "$T/answer" -w '%{http_code}' "$(node_url 1)/v1/stream" >"$T/status" || true
	refused 405 "use POST"
	replica_syncs
	node_stop 1
}

# An empty body is refused with a message that says so.
case_primary_empty_body() {
	unset LTFS_TOKEN
	node_start 1
	: >"$T/empty"
	post "$T/empty"
	refused 400 "request body"
	check "the message says the body is empty" grep -q empty "$T/answer"
	node_stop 1
}

case_primary_token() {
	export LTFS_TOKEN=secret
	node_start 1
	sql "$T/m1/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1);"
	contains "$T/n1.log" "listening on 127.0.0.1:$((PORT_BASE + 1)) (bearer token required)"
	printf '{"dbs":[]}' >"$T/body"
	post "$T/body"
	refused 401 unauthorized
	contains "$T/n1.log" "401 for POST /v1/stream from 127.0.0.1: missing or wrong bearer token"
	for bad in wrong secre secretsecret "" Secret; do
		post "$T/body" -H "Authorization: Bearer $bad"
		refused 401 unauthorized
	done
	post "$T/body" -H "Authorization: Basic secret"
	refused 401 unauthorized
	check "each refusal logged" [ "$(grep -c '401 for POST /v1/stream' "$T/n1.log")" -eq 7 ]
	# /v1/info with the token only
	curl -s -m 10 -o "$T/answer" -w '%{http_code}' "$(node_url 1)/v1/info" >"$T/status" || true
	refused 401 unauthorized
	contains "$T/n1.log" "401 for GET /v1/info from 127.0.0.1"
	curl -s -m 10 -o "$T/answer" -w '%{http_code}' -H "Authorization: Bearer secret" \
		"$(node_url 1)/v1/info" >"$T/status"
	check "info with the token" [ "$(cat "$T/status")" = 200 ]
	contains "$T/answer" '"role": "primary"'
	contains "$T/answer" '"name": "app.db"'
	# a replica with another token is refused and gets nothing
	LTFS_TOKEN=other
	node_replica 2 1
	LTFS_TOKEN=secret
	wait_for "the refused replica's warning" grep -qF "answered 401" "$T/n2.log"
	check "nothing replicated" [ ! -e "$T/m2/app.db" ]
	node_stop 2
	rm -rf "$T/d2"
	# with the token it replicates
	replica_syncs
	node_stop 1
}

# Listening beyond loopback needs a token: refused at start, exit 2.
case_non_loopback_needs_token() {
	unset LTFS_TOKEN
	mkdir -p "$T/m"
	for addr in "0.0.0.0:$((PORT_BASE + 5))" ":$((PORT_BASE + 5))"; do
		expect_exit 2 timeout 20 "$LTFS" mount --data "$T/data" --http "$addr" "$T/m"
		check "$addr: names http.addr" contains "$T/err" "http.addr '$addr' is not a loopback address"
		check "$addr: not mounted" [ -z "$(grep " $T/m " /proc/mounts)" ]
	done
}

run_case primary_bad_requests
run_case primary_empty_body
run_case primary_token
run_case non_loopback_needs_token

finish
