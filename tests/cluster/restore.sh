#!/bin/sh
# ltfs restore against a real S3 server (Ceph RGW on loopback,
# tests/tools/s3-server): a bucket in the Litestream layout built from the
# reference LTX fixtures (both page encodings, a compacted level and a
# snapshot), random point-in-time restores of a node's backup checked
# against the checksum of every state it went through, and the errors of a
# bucket that holds nothing, does not exist, refuses the key, or cannot be
# reached. Each case uses its own prefix in one bucket.
#
# The random parts print their seed on failure; SEED=N repeats the same
# kinds of commits and the same choice of restore targets.
. tests/lib.sh

s3_suite_start

SEED=${SEED:-$(date +%s)}
FX=$LTFS_TEST_DATA

# put KEY FILE: upload FILE as KEY (the object gets no metadata).
put() { s3 put "$1" "$2" >/dev/null; }

# ltxname MIN MAX: an LTX file name.
ltxname() { printf '%016x-%016x.ltx' "$1" "$2"; }

# src_sum N: the database checksum of src/db-vN as the fixtures state it.
src_sum() { awk -v f="db-v$1.sqlite" '$1 == f { print $4 }' "$FX/src/checksums.txt"; }

# now_ms: wall clock in ms. iso MS: the moment in RFC 3339 with ms.
now_ms() { date +%s%3N; }
iso() { date -u -d "@$(($1 / 1000)).$(printf %03d $(($1 % 1000)))" +%Y-%m-%dT%H:%M:%S.%3NZ; }

# nothing_at OUT: no OUT and no OUT.tmp.
nothing_at() { [ ! -e "$1" ] && [ ! -e "$1.tmp" ]; }

# also DESCRIPTION COMMAND...: like check, but the case goes on and fails
# at its end (see failed_later), so one run shows every broken rule.
also() {
	_what=$1
	shift
	if ! "$@"; then
		echo "    check failed: $_what" >&2
		echo "$_what" >>"$T/later"
	fi
}
failed_later() {
	if [ -s "$T/later" ]; then
		echo "    $(wc -l <"$T/later") check(s) failed above" >&2
		return 1
	fi
}

# same_as OUT N: OUT is src/db-vN byte for byte, and `ltfs ltx checksum`
# gives the checksum the fixtures state for it.
same_as() {
	cmp "$1" "$FX/src/db-v$2.sqlite" >&2 &&
		[ "$("$LTFS" ltx checksum "$1")" = "$(src_sum "$2")" ]
}

# Litestream layout from the reference fixtures: PREFIX/NAME/LLLL/MIN-MAX.ltx.
case_litestream_layout() {
	p=$SUITE-ls
	fr=$FX/v3-frame
	bl=$FX/v3-block/chain-nochecksum
	ck=$FX/v3-block/chain-checksum
	# frame.db: NoChecksum, frame encoding (Litestream 0.5.0-0.5.15), level 0
	for n in 1 2 3; do put "$p/frame.db/0000/$(ltxname $n $n)" "$fr/$(ltxname $n $n)"; done
	# block.db: NoChecksum, block encoding (Litestream >= 0.5.16), level 0,
	# and Litestream's compaction of 1-3 as the snapshot at level 9
	for n in 1 2 3; do put "$p/block.db/0000/$(ltxname $n $n)" "$bl/$(ltxname $n $n)"; done
	put "$p/block.db/0009/$(ltxname 1 3)" "$bl/compacted/$(ltxname 1 3)"
	# comp.db: the same compaction at level 1, over level-0 files 2 and 3 only
	for n in 2 3; do put "$p/comp.db/0000/$(ltxname $n $n)" "$bl/$(ltxname $n $n)"; done
	put "$p/comp.db/0001/$(ltxname 1 3)" "$bl/compacted/$(ltxname 1 3)"
	# ck.db: checksummed chain 1-5 (LiteFS style), 2-4 at level 1, 1-5 at level 9
	for n in 1 2 3 4 5; do put "$p/ck.db/0000/$(ltxname $n $n)" "$ck/$(ltxname $n $n)"; done
	put "$p/ck.db/0001/$(ltxname 2 4)" "$ck/compacted/$(ltxname 2 4)"
	put "$p/ck.db/0009/$(ltxname 1 5)" "$ck/compacted/$(ltxname 1 5)"
	# gone.db: chain 1-5, then the deletion file 6
	for n in 1 2 3 4 5; do put "$p/gone.db/0000/$(ltxname $n $n)" "$ck/$(ltxname $n $n)"; done
	put "$p/gone.db/0000/$(ltxname 6 6)" "$FX/v3-block/edge/$(ltxname 6 6)"
	check "layout uploaded" [ "$(s3 list "$p/" | wc -l)" = 23 ]

	# newest state
	expect_exit 0 "$LTFS" restore --integrity-check -o "$T/frame.db" "$(url ls)/frame.db"
	contains "$T/out" "restored TXID 3, 9 pages, checksum $(src_sum 3)"
	contains "$T/out" "integrity_check ok"
	check "frame chain gives db-v3" same_as "$T/frame.db" 3
	expect_exit 0 "$LTFS" restore --integrity-check -o "$T/block.db" "$(url ls)/block.db"
	contains "$T/out" "integrity_check ok"
	contains "$T/out" "from 1 file"
	check "block snapshot gives db-v3" same_as "$T/block.db" 3
	expect_exit 0 "$LTFS" restore --integrity-check --json -o "$T/comp.db" "$(url ls)/comp.db"
	contains "$T/out" '"ok":true'
	contains "$T/out" '"txid":3'
	contains "$T/out" '"files":1'
	check "level-1 compaction gives db-v3" same_as "$T/comp.db" 3
	expect_exit 0 "$LTFS" restore --integrity-check -o "$T/ck.db" "$(url ls)/ck.db"
	contains "$T/out" "integrity_check ok"
	check "checksummed snapshot gives db-v5" same_as "$T/ck.db" 5
	# the default output is ./NAME
	(cd "$T" && mkdir -p here && cd here && "$LTFS" restore "$(url ls)/frame.db" >/dev/null 2>&1)
	check "default output ./frame.db" same_as "$T/here/frame.db" 3

	# intermediate TXIDs (decimal and as in file names)
	for n in 1 2; do
		expect_exit 0 "$LTFS" restore --txid $n -o "$T/frame-$n.db" "$(url ls)/frame.db"
		check "frame --txid $n gives db-v$n" same_as "$T/frame-$n.db" $n
		expect_exit 0 "$LTFS" restore --txid "$(printf %016x $n)" -o "$T/block-$n.db" "$(url ls)/block.db"
		contains "$T/out" "from $n file"
		check "block --txid $n gives db-v$n" same_as "$T/block-$n.db" $n
	done
	expect_exit 0 "$LTFS" restore --txid 4 -o "$T/ck-4.db" "$(url ls)/ck.db"
	contains "$T/out" "from 2 files" # 1, then 2-4 from level 1
	check "ck --txid 4 gives db-v4" same_as "$T/ck-4.db" 4
	expect_exit 0 "$LTFS" restore --txid 3 --integrity-check -o "$T/ck-3.db" "$(url ls)/ck.db"
	check "ck --txid 3 gives db-v3" same_as "$T/ck-3.db" 3
	expect_exit 1 "$LTFS" restore --txid 1 -o "$T/comp-1.db" "$(url ls)/comp.db"
	contains "$T/err" "no snapshot or chain from TXID 1 within the target"
	check "comp --txid 1: nothing written" nothing_at "$T/comp-1.db"
	expect_exit 0 "$LTFS" restore --dry-run "$(url ls)/ck.db"
	contains "$T/out" "would restore TXID 5"

	# a deleted database restores only before its deletion
	expect_exit 1 "$LTFS" restore -o "$T/gone.db" "$(url ls)/gone.db"
	contains "$T/err" "deleted at TXID 6"
	check "deleted: nothing written" nothing_at "$T/gone.db"
	expect_exit 0 "$LTFS" restore --txid 5 -o "$T/gone-5.db" "$(url ls)/gone.db"
	check "gone --txid 5 gives db-v5" same_as "$T/gone-5.db" 5

	# --timestamp goes by commit time: objects without commit-time metadata
	# (these were uploaded now, long after their commits) are judged by
	# the timestamp in their LTX header (2025-01-01T00:00:00, :01, :02).
	put "$p/late.db/0000/$(ltxname 1 1)" "$fr/$(ltxname 1 1)"
	put "$p/late.db/0000/$(ltxname 2 2)" "$fr/$(ltxname 2 2)"
	put "$p/late.db/0000/$(ltxname 3 3)" "$fr/$(ltxname 3 3)"
	expect_exit 0 "$LTFS" restore --timestamp "$(iso "$(now_ms)")" -o "$T/late-2.db" "$(url ls)/late.db"
	check "--timestamp now gives db-v3" same_as "$T/late-2.db" 3
	expect_exit 0 "$LTFS" restore --timestamp 2025-01-01T00:00:01.500Z -o "$T/late-1.db" "$(url ls)/late.db"
	check "--timestamp between commits 2 and 3 gives db-v2" same_as "$T/late-1.db" 2
	expect_exit 0 "$LTFS" restore --timestamp 2025-01-01T00:00:00.500Z -o "$T/late-3.db" "$(url ls)/late.db"
	check "--timestamp between commits 1 and 2 gives db-v1" same_as "$T/late-3.db" 1
	expect_exit 1 "$LTFS" restore --timestamp 2020-01-01T00:00:00Z -o "$T/late-0.db" "$(url ls)/late.db"
	contains "$T/err" "no snapshot or chain from TXID 1 within the target"
	check "before all: nothing written" nothing_at "$T/late-0.db"
	failed_later
}
run_case litestream_layout

# w SQL: one write on node 1's app.db (WAL mode, set at the start).
w() { sqlite3 -bail -cmd ".timeout 10000" "$T/m1/app.db" "$1" </dev/null >/dev/null; }

# workload SEED N: N commits, one a line, "GAP<TAB>SQL": inserts of small
# and large rows, updates, deletes, multi-statement transactions, tiny
# updates, and a big delete plus VACUUM two thirds in. GAP 1: pause
# before the next commit, long enough for a moment with margins.
workload() {
	awk -v seed="$1" -v n="$2" 'BEGIN {
		srand(seed)
		for (i = 1; i <= n; i++) {
			r = int(rand() * 100)
			s = 1 + int(rand() * 6000)
			k = 1 + int(rand() * 5)
			rows = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < " k ") "
			ins = rows "INSERT INTO t(k, v) SELECT abs(random()) % 1000, randomblob(" s ") FROM c"
			upd = "UPDATE t SET v = randomblob(" s "), k = k + 1 WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT " k ")"
			del = "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT " k ")"
			if (i == int(n * 2 / 3) - 1)
				sql = "DELETE FROM t WHERE id % 3 <> 0"
			else if (i == int(n * 2 / 3))
				sql = "VACUUM"
			else if (r < 35)
				sql = ins
			else if (r < 45)
				sql = "INSERT INTO t(k, v) VALUES (-1, randomblob(" (20000 + int(rand() * 60000)) "))"
			else if (r < 65)
				sql = upd
			else if (r < 80)
				sql = del
			else if (r < 92)
				sql = "BEGIN; " ins "; " upd "; " del "; COMMIT"
			else
				sql = "UPDATE t SET k = k + 1 WHERE id = (SELECT max(id) FROM t)"
			printf "%d\t%s\n", rand() < 0.6, sql
		}
	}'
}

# pick N SEED: N of the lines of stdin at random (all of them if fewer).
pick() {
	awk -v n="$1" -v seed="$2" '{ a[NR] = $0 }
	END {
		srand(seed)
		for (i = NR; i > 1; i--) { j = int(rand() * i) + 1; t = a[i]; a[i] = a[j]; a[j] = t }
		for (i = 1; i <= NR && i <= n; i++) print a[i]
	}'
}

txid_of() { echo $((0x$(pos 1 app.db | cut -d/ -f1))); }
shipped() {
	_h=$(curl -sf "$(node_url 1)/v1/info" | sed -n 's/.*"backup_txid": "\([0-9a-f]*\)".*/\1/p' | head -1)
	echo $((0x${_h:-0}))
}
wait_shipped() {
	_i=0
	while [ "$(shipped)" != "$(txid_of)" ]; do
		_i=$((_i + 1))
		if [ $_i -gt 400 ]; then
			echo "    bucket at $(shipped), node at $(txid_of)" >&2
			tail -5 "$T/n1.log" | sed 's/^/    | /' >&2
			return 1
		fi
		sleep 0.05
	done
}

# restore_is WHAT CHECKSUM ARGS...: restore app.db ($U) with ARGS into
# $T/rW.db (W: the worker, $W); the result has CHECKSUM. Says why not.
restore_is() {
	_what=$1
	_want=$2
	shift 2
	_r=$T/r${W:-0}.db
	rm -f "$_r" "$_r-wal" "$_r-shm"
	if ! "$LTFS" restore "$@" -o "$_r" "$U" >"$_r.out" 2>"$_r.err"; then
		echo "    $_what: restore failed: $(tail -1 "$_r.err")" >&2
		return 1
	fi
	_got=$("$LTFS" ltx checksum "$_r")
	if [ "$_got" != "$_want" ]; then
		echo "    $_what: checksum $_got, want $_want ($(head -1 "$_r.out"))" >&2
		return 1
	fi
	case " $* " in
	*" --integrity-check "*)
		grep -q "integrity_check ok" "$_r.out" || {
			echo "    $_what: $(head -1 "$_r.out")" >&2
			return 1
		}
		;;
	esac
}

# restores FILE: run the restores listed in FILE, four at a time, each
# line "CHECKSUM ARGS... # WHAT" (every tenth with --integrity-check);
# prints how many gave another state.
restores() {
	awk '{ print > (FILENAME "." (NR % 4)) }' "$1"
	for W in 0 1 2 3; do
		touch "$1.$W"
		(
			bad=0
			n=0
			while read -r c a1 a2 what; do
				n=$((n + 1))
				ic=
				[ $((n % 10)) != 0 ] || ic=--integrity-check
				restore_is "$what" "$c" "$a1" "$a2" $ic || bad=$((bad + 1))
			done <"$1.$W"
			echo $bad >"$1.$W.bad"
		) &
	done
	wait
	cat "$1".?.bad | awk '{ n += $1 } END { print n + 0 }'
}

# pitr_run TAG INTERVAL: ~150 commits on a node backing up with INTERVAL,
# then restores at random TXIDs and moments, each compared with the
# checksum the node reported for that state.
pitr_run() {
	tag=$1
	iv=$2
	seed=$((SEED + ${#tag}))
	U=$(url "pitr-$tag")/app.db
	log=$T/$tag.log
	t0=$(date +%s)
	rm -rf "$T/d1"
	node_start 1 --s3 "$(url "pitr-$tag")" --upload-interval "$iv"
	w "PRAGMA journal_mode=wal; CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB);
	   CREATE INDEX t_k ON t(k);
	   WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20)
	   INSERT INTO t(k, v) SELECT x, randomblob(x * 100) FROM c"
	# log lines: "c TXID/CHECKSUM" after each commit, "m MS" for a moment
	echo "c $(pos 1 app.db)" >"$log"
	workload "$seed" 150 >"$T/$tag.sql"
	tab=$(printf '\t')
	while IFS="$tab" read -r gap sql; do
		w "$sql"
		echo "c $(pos 1 app.db)" >>"$log"
		if [ "$gap" = 1 ]; then
			sleep 0.03
			echo "m $(now_ms)" >>"$log"
			sleep 0.03
		fi
	done <"$T/$tag.sql"
	check "$tag: the node committed ($(txid_of) TXIDs)" [ "$(txid_of)" -gt 140 ]
	check "$tag: integrity on the node" [ "$(sql "$T/m1/app.db" 'PRAGMA integrity_check')" = ok ]
	wait_shipped
	t1=$(date +%s)

	# states: "TXID CHECKSUM" (decimal TXID); the bucket's level-0 MAX values
	awk '$1 == "c" { split($2, a, "/"); print a[1], a[2] }' "$log" | sort -u |
		while read -r h c; do echo "$((0x$h)) $c"; done | sort -n >"$T/$tag.states"
	s3 list "$SUITE-pitr-$tag/app.db/0000/" | awk '{ print $1 }' | sed 's|.*/||; s|\.ltx$||' |
		while IFS=- read -r a z; do echo "$((0x$a)) $((0x$z))"; done | sort -n >"$T/$tag.objects"
	# one chain from 1, no gap, no overlap, up to the node's TXID
	check "$tag: bucket chain" awk -v last="$(txid_of)" '
		$1 != next_min { bad = 1; exit } { next_min = $2 + 1 } END { exit bad || next_min - 1 != last }
	' next_min=1 "$T/$tag.objects"
	awk '{ print $2 }' "$T/$tag.objects" >"$T/$tag.bounds"
	nobj=$(wc -l <"$T/$tag.bounds")
	nstates=$(wc -l <"$T/$tag.states")
	# restorable states: the recorded ones at an object's MAX
	awk 'NR == FNR { b[$1] = 1; next } b[$1]' "$T/$tag.bounds" "$T/$tag.states" >"$T/$tag.restorable"
	nrest=$(wc -l <"$T/$tag.restorable")
	if [ "$iv" = 0 ]; then
		# each commit its own object, but for the odd burst that the
		# writer thread recorded as one file (docs/datadir.md)
		check "$tag: $nrest of $nstates states restorable exactly" [ "$nrest" -ge $((nstates * 9 / 10)) ]
	else
		check "$tag: batched ($nobj objects for $nstates states)" [ "$nobj" -lt $((nstates / 2)) ]
	fi

	# random TXIDs
	pick 50 "$seed" <"$T/$tag.restorable" >"$T/$tag.txids"
	ntx=$(wc -l <"$T/$tag.txids")
	check "$tag: enough restorable TXIDs ($ntx)" [ "$ntx" -ge 20 ]
	awk -v tag="$tag" '{ print $2, "--txid", $1, tag ": --txid " $1 }' "$T/$tag.txids" >"$T/$tag.jobs"
	bad=$(restores "$T/$tag.jobs")
	check "$tag: $bad of $ntx --txid restores wrong (SEED=$SEED)" [ "$bad" = 0 ]

	# random moments: "MS EXPECTED-TXID CHECKSUM KIND", the expected state
	# being the newest restorable one at or before the last commit that
	# completed before the moment; KIND "between" when that commit ends an
	# object, "inside" when the moment falls within a batch
	moments_of "$tag" >"$T/$tag.moments.all"
	grep ' between$' "$T/$tag.moments.all" | pick 50 "$seed" >"$T/$tag.moments"
	nb=$(wc -l <"$T/$tag.moments")
	check "$tag: enough moments between objects ($nb)" [ "$nb" -ge 10 ]
	more=$((50 - nb))
	[ $more -ge 15 ] || more=15
	grep ' inside$' "$T/$tag.moments.all" | pick $more "$seed" >>"$T/$tag.moments"
	nm=$(wc -l <"$T/$tag.moments")
	while read -r ms x c kind; do
		echo "$c --timestamp $(iso "$ms") $tag: --timestamp $(iso "$ms") ($kind, want TXID $x)"
	done <"$T/$tag.moments" >"$T/$tag.mjobs"
	bad=$(restores "$T/$tag.mjobs")
	check "$tag: $bad of $nm --timestamp restores wrong (SEED=$SEED)" [ "$bad" = 0 ]

	# a TXID inside a batch is not restorable, and says so
	inside=$(awk 'NR == FNR { b[$1] = 1; if (!first) first = $1; next }
		!b[$1] && $1 > first { print $1 }' "$T/$tag.bounds" "$T/$tag.states" | head -1)
	if [ -n "$inside" ]; then
		expect_exit 1 "$LTFS" restore --txid "$inside" -o "$T/in.db" "$U"
		contains "$T/err" "TXID $inside is not in the bucket"
		check "$tag: nothing written" nothing_at "$T/in.db"
	fi
	# the newest state; the check leaves nothing beside the output
	restore_is "$tag: newest" "$(pos 1 app.db | cut -d/ -f2)" --integrity-check
	also "$tag: --integrity-check left no -wal or -shm beside its output" nothing_beside "$T/r0.db"
	node_stop 1
	echo "$tag: $nstates states, $nobj objects, $nrest restorable; restored $ntx TXIDs, $nm moments ($nb between objects); $((t1 - t0)) s writing, $(($(date +%s) - t1)) s restoring" >>"$T/summary"
}

# moments_of TAG: the moments of TAG's log with their expected state (see
# pitr_run), from $T/TAG.bounds, $T/TAG.states and $T/TAG.log.
moments_of() {
	_last=
	_kind=
	while read -r _t _v; do
		if [ "$_t" = c ]; then
			_x=$((0x${_v%/*}))
			if grep -qx "$_x" "$T/$1.bounds"; then
				_kind=between
				grep -q "^$_x " "$T/$1.states" && _last=$_x
			else
				_kind=inside
			fi
		elif [ -n "$_last" ]; then
			echo "$_v $_last $(awk -v x="$_last" '$1 == x { print $2 }' "$T/$1.states") $_kind"
		fi
	done <"$T/$1.log"
}

nothing_beside() { [ ! -e "$1-wal" ] && [ ! -e "$1-shm" ] && [ ! -e "$1-journal" ]; }

case_pitr_random() {
	pitr_run each 0
	pitr_run batch 300ms
	if [ -n "${VERBOSE:-}" ]; then sed 's/^/    /' "$T/summary" >&2; fi
	failed_later
}
run_case pitr_random

# A bucket without the name, a bucket that does not exist, a bad key, an
# endpoint that does not answer: exit 1, the cause on stderr, no output.
case_fresh_bucket_errors() {
	p=$SUITE-fresh
	U=$(url fresh)
	out=$T/out.db
	# nothing at all under the prefix
	expect_exit 1 "$LTFS" restore -o "$out" "$U/app.db"
	contains "$T/err" "no LTX files for 'app.db'"
	check "empty prefix: nothing written" nothing_at "$out"
	# neighbours, other files and a level beyond 9 do not count
	fr=$FX/v3-frame
	for n in 1 2 3; do put "$p/app.db2/0000/$(ltxname $n $n)" "$fr/$(ltxname $n $n)"; done
	put "$p/app.db/000a/$(ltxname 1 3)" "$FX/v3-block/chain-nochecksum/compacted/$(ltxname 1 3)"
	put "$p/app.db/0000/notes.txt" "$FX/README.md"
	put "$p/app.db/0000/$(ltxname 1 1).tmp" "$fr/$(ltxname 1 1)"
	put "$p/app.db.ltx" "$fr/$(ltxname 1 1)"
	expect_exit 1 "$LTFS" restore -o "$out" "$U/app.db"
	contains "$T/err" "no LTX files for 'app.db'"
	check "no files for the name: nothing written" nothing_at "$out"
	expect_exit 1 "$LTFS" restore --txid 1 --json -o "$out" "$U/app.db"
	contains "$T/out" '"ok":false'
	check "json: nothing written" nothing_at "$out"
	expect_exit 0 "$LTFS" restore -o "$T/db2.db" "$U/app.db2"
	check "the neighbour restores" same_as "$T/db2.db" 3

	# a bucket that does not exist
	expect_exit 1 "$LTFS" restore -o "$out" "s3://no-such-bucket-$$/x/app.db2"
	contains "$T/err" "NoSuchBucket"
	contains "$T/err" "no-such-bucket-$$"
	check "no bucket: nothing written" nothing_at "$out"
	# a wrong secret, an unknown key
	AWS_SECRET_ACCESS_KEY=wrong-secret-1234 expect_exit 1 "$LTFS" restore -o "$out" "$U/app.db2"
	contains "$T/err" "403"
	contains "$T/err" "SignatureDoesNotMatch"
	check "secret not printed" sh -c '! grep -q wrong-secret-1234 "$1"' - "$T/err"
	check "wrong secret: nothing written" nothing_at "$out"
	AWS_ACCESS_KEY_ID=nobody expect_exit 1 "$LTFS" restore -o "$out" "$U/app.db2"
	contains "$T/err" "InvalidAccessKeyId"
	check "unknown key: nothing written" nothing_at "$out"
	# an endpoint that refuses connections
	AWS_ENDPOINT_URL_S3=http://127.0.0.1:1 expect_exit 1 "$LTFS" restore -o "$out" "$U/app.db2"
	contains "$T/err" "http://127.0.0.1:1"
	check "unreachable: nothing written" nothing_at "$out"

	# with --force, a failed restore leaves the existing OUT and its -wal
	# and -shm as they were
	echo keep >"$out"
	echo wal >"$out-wal"
	echo shm >"$out-shm"
	AWS_ENDPOINT_URL_S3=http://127.0.0.1:1 expect_exit 1 "$LTFS" restore --force -o "$out" "$U/app.db2"
	check "--force, unreachable: OUT kept" [ "$(cat "$out")" = keep ]
	check "--force, unreachable: no OUT.tmp" [ ! -e "$out.tmp" ]
	also "--force, unreachable: OUT-wal kept" [ "$(cat "$out-wal" 2>/dev/null)" = wal ]
	also "--force, unreachable: OUT-shm kept" [ "$(cat "$out-shm" 2>/dev/null)" = shm ]
	echo wal >"$out-wal"
	expect_exit 1 "$LTFS" restore --force -o "$out" "$U/app.db"
	check "--force, no files: OUT kept" [ "$(cat "$out")" = keep ]
	also "--force, no files: OUT-wal kept" [ -e "$out-wal" ]
	rm -f "$out" "$out-wal" "$out-shm"

	# the message about a missing name names the whole place it looked
	expect_exit 1 "$LTFS" restore -o "$out" "$U/app.db"
	also "'no LTX files' names s3://$LTFS_S3_BUCKET/$p" contains "$T/err" "s3://$LTFS_S3_BUCKET/$p"
	failed_later
}
run_case fresh_bucket_errors

# The restore writes long runs of pages with O_DIRECT from a thread of its
# own, short ones through the page cache (ltx/writebehind.c). Snapshots of
# 512- and 65536-byte pages, restored onto the suite's file system, a
# tmpfs, and an ext4 on a loop device with 4096-byte sectors, which refuses
# direct writes of 512-byte pages at an offset that is not a multiple of
# 4096 (the restore then writes them through the page cache): the same
# bytes everywhere.
case_output_filesystems() {
	U=$(url outfs)
	for ps in 512 65536; do
		db=$T/src-$ps.db
		sqlite3 "$db" "PRAGMA page_size=$ps; CREATE TABLE t(v);
			WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000)
			INSERT INTO t SELECT randomblob(3000) FROM c;"
		# a page count that is not a multiple of 8: with 512-byte pages the
		# last run of the snapshot ends off a 4096-byte boundary
		while [ $(($(stat -c %s "$db") / ps % 8)) = 0 ]; do
			sqlite3 "$db" "INSERT INTO t VALUES (randomblob($ps))"
		done
		"$LTFS" ltx encode-db "$db" -o "$T/snap.ltx" >/dev/null
		put "$SUITE-outfs/app$ps.db/0009/$(ltxname 1 1)" "$T/snap.ltx"
	done
	truncate -s 96M "$T/img"
	loop=$(losetup -f --show -b 4096 "$T/img")
	trap 'umount -l "$T/loop" 2>/dev/null; losetup -d "$loop"' EXIT
	mkfs.ext4 -q -F "$loop"
	mkdir "$T/loop" "$T/tmpfs"
	mount "$loop" "$T/loop"
	mount -t tmpfs -o size=64M tmpfs "$T/tmpfs"
	check "the loop device has 4096-byte sectors" [ "$(blockdev --getss "$loop")" = 4096 ]
	for dir in "$T" "$T/tmpfs" "$T/loop"; do
		for ps in 512 65536; do
			out=$dir/out-$ps.db
			expect_exit 0 "$LTFS" restore -o "$out" "$U/app$ps.db"
			also "$ps-byte pages restored in $dir are the source" cmp "$out" "$T/src-$ps.db"
			rm -f "$out"
		done
	done
	umount "$T/tmpfs"
	failed_later
}
run_case output_filesystems

finish
