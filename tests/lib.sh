# tests/lib.sh - helpers for the shell test suites (sourced, POSIX sh).
#
#   . tests/lib.sh
#   case_foo() { ...; check "text" [ "$a" = "$b" ]; }
#   run_case foo
#   finish
#
# Each case runs in a subshell with its own temp dir ($T) and `set -e`; a
# failing command or check fails the case and prints why.

: "${LTFS:?LTFS must point at the ltfs binary (run through tests/run)}"
: "${LTFS_TEST_DATA:=tests/data}"
SUITE=$(basename "$0" .sh)
_passed=0
_failed=0
_base=$(mktemp -d "/tmp/ltfs-$SUITE-XXXXXX")
trap '_cleanup' EXIT

# Unmount whatever a failed case left mounted below the suite's dir.
_cleanup() {
	for m in $(awk -v b="$_base" 'index($2, b) == 1 { print $2 }' /proc/mounts); do
		umount -l "$m" 2>/dev/null
	done
	for p in $(cat "$_base"/*/ltfs.pid* 2>/dev/null); do
		kill -9 "$p" 2>/dev/null
	done
	rm -rf "$_base"
}

# _wait_mounted MNT PIDFILE LOG: until the mount answers (statfs reaches
# the daemon; a stale mount left by a kill answers ENOTCONN and stat may
# come from the kernel cache), or the daemon died.
_wait_mounted() {
	_i=0
	while ! { grep -q " $1 fuse" /proc/mounts && stat -f "$1" >/dev/null 2>&1; }; do
		_i=$((_i + 1))
		if [ $_i -gt 200 ] || ! kill -0 "$(cat "$2")" 2>/dev/null; then
			echo "    mount of $1 did not come up:" >&2
			sed 's/^/    | /' "$3" | tail -20 >&2
			return 1
		fi
		sleep 0.05
	done
}

# _wait_exit PIDFILE LOG: the daemon exited, and left no sanitizer report.
_wait_exit() {
	_pid=$(cat "$1")
	_i=0
	while kill -0 "$_pid" 2>/dev/null; do
		_i=$((_i + 1))
		if [ $_i -gt 200 ]; then
			echo "    daemon $_pid did not exit; its log ends:" >&2
			tail -5 "$2" | sed 's/^/    | /' >&2
			# where its threads wait, for the report
			command -v gdb >/dev/null && timeout 30 gdb -batch -p "$_pid" \
				-ex "thread apply all bt 8" 2>/dev/null | grep -E '^(Thread|#)' | head -60 | sed 's/^/    gdb| /' >&2
			return 1
		fi
		sleep 0.05
	done
	wait "$_pid" 2>/dev/null || true
	# a sanitizer build reports into the daemon's log
	if grep -qE 'runtime error|AddressSanitizer|LeakSanitizer' "$2"; then
		echo "    sanitizer report in the daemon log:" >&2
		grep -A20 -E 'runtime error|AddressSanitizer|LeakSanitizer' "$2" | head -40 | sed 's/^/    | /' >&2
		return 1
	fi
}

# ltfs_mount MNT [ARGS...]: start the daemon (data dir $T/data unless ARGS
# say otherwise), wait until the mount answers. Log in $T/ltfs.log.
ltfs_mount() {
	_mnt=$1
	shift
	mkdir -p "$_mnt" 2>/dev/null || true # may be a stale mount
	"$LTFS" mount --data "$T/data" --http "127.0.0.1:$((PORT_BASE + 19))" "$@" "$_mnt" \
		>>"$T/ltfs.log" 2>&1 &
	echo $! >"$T/ltfs.pid"
	_wait_mounted "$_mnt" "$T/ltfs.pid" "$T/ltfs.log"
}

# ltfs_umount MNT: unmount and wait for the daemon to exit cleanly.
ltfs_umount() {
	umount "$1" || return 1
	_wait_exit "$T/ltfs.pid" "$T/ltfs.log"
}

# ltfs_kill MNT: kill -9 the daemon and detach its dead mount.
ltfs_kill() {
	kill -9 "$(cat "$T/ltfs.pid")" 2>/dev/null || true
	wait "$(cat "$T/ltfs.pid")" 2>/dev/null || true
	umount -l "$1" 2>/dev/null || true
}

# Nodes of a cluster on loopback: node N has mount $T/mN, data dir $T/dN,
# HTTP port PORT_BASE+N and log $T/nN.log.
: "${PORT_BASE:=$((21000 + ($$ % 400) * 20))}"
node_url() { echo "http://127.0.0.1:$((PORT_BASE + $1))"; }

# node_start N [ARGS...]: start node N (a primary unless ARGS say
# --replica-of) and wait until its mount answers.
node_start() {
	_n=$1
	shift
	mkdir -p "$T/m$_n" 2>/dev/null || true
	"$LTFS" mount --data "$T/d$_n" --http "127.0.0.1:$((PORT_BASE + _n))" "$@" "$T/m$_n" \
		>>"$T/n$_n.log" 2>&1 &
	echo $! >"$T/ltfs.pid.$_n"
	_wait_mounted "$T/m$_n" "$T/ltfs.pid.$_n" "$T/n$_n.log"
}

# node_replica N PRIMARY [ARGS...]: start node N as a replica of node PRIMARY.
node_replica() {
	_n=$1
	_p=$2
	shift 2
	node_start "$_n" --replica-of "$(node_url "$_p")" "$@"
}

node_stop() {
	umount "$T/m$1" || return 1
	_wait_exit "$T/ltfs.pid.$1" "$T/n$1.log"
}

node_kill() {
	kill -9 "$(cat "$T/ltfs.pid.$1")" 2>/dev/null || true
	wait "$(cat "$T/ltfs.pid.$1")" 2>/dev/null || true
	umount -l "$T/m$1" 2>/dev/null || true
}

# pos N DB: the position of DB on node N ("" if it has none).
pos() { cat "$T/m$1/$2-pos" 2>/dev/null || true; }

# wait_sync DB N M...: until DB has the same position on every node given
# (at most 20 s).
wait_sync() {
	_db=$1
	shift
	_i=0
	while :; do
		_want=$(pos "$1" "$_db")
		_same=1
		for _n in "$@"; do
			[ "$(pos "$_n" "$_db")" = "$_want" ] || _same=0
		done
		[ $_same = 1 ] && [ -n "$_want" ] && return 0
		_i=$((_i + 1))
		if [ $_i -gt 400 ]; then
			echo "    '$_db' not in sync:" >&2
			for _n in "$@"; do echo "    node $_n: $(pos "$_n" "$_db")" >&2; done
			for _n in "$@"; do tail -5 "$T/n$_n.log" | sed "s/^/    n$_n | /" >&2; done
			return 1
		fi
		sleep 0.05
	done
}

# esc NAME: a database's directory name under DATA/dbs.
esc() { printf '%s' "$1" | sed 's|%|%25|g; s|/|%2f|g'; }

# history_rebuilds NAME: after a checkpoint through the mount $M, the LTX
# history of NAME applied to an empty file gives the database file exactly.
history_rebuilds() {
	sql "$M/$1" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
	rm -f "$T/applied.db"
	"$LTFS" ltx apply "$T/applied.db" "$T/data/dbs/$(esc "$1")/ltx/"*.ltx >/dev/null &&
		cmp -s "$T/applied.db" "$T/data/dbs/$(esc "$1")/database"
}

# sql DB SQL...: the sqlite3 CLI with a busy timeout, failing on errors.
sql() {
	_db=$1
	shift
	sqlite3 -bail -cmd ".timeout 10000" "$_db" "$@"
}

# check DESCRIPTION COMMAND...: fail the case unless COMMAND succeeds.
check() {
	_what=$1
	shift
	if ! "$@"; then
		echo "    check failed: $_what" >&2
		exit 1
	fi
}

# expect_exit CODE COMMAND...: run COMMAND, its output in $T/out and
# $T/err, and require exit status CODE.
expect_exit() {
	_want=$1
	shift
	set +e
	"$@" >"$T/out" 2>"$T/err"
	_got=$?
	set -e
	if [ "$_got" -ne "$_want" ]; then
		echo "    '$*' exited $_got, want $_want" >&2
		sed 's/^/    out: /' "$T/out" | head -20 >&2
		sed 's/^/    err: /' "$T/err" | head -20 >&2
		exit 1
	fi
}

# contains FILE TEXT: FILE holds TEXT (fixed string).
contains() {
	if ! grep -qF -- "$2" "$1"; then
		echo "    '$1' lacks '$2':" >&2
		sed 's/^/    | /' "$1" | head -20 >&2
		return 1
	fi
}

# lacks FILE TEXT: FILE does not hold TEXT.
lacks() {
	if grep -qF -- "$2" "$1"; then
		echo "    '$1' holds '$2':" >&2
		grep -F -- "$2" "$1" | head -5 | sed 's/^/    | /' >&2
		return 1
	fi
}

# s3_suite_start: a private S3 server for the suite (tests/tools/s3-server),
# its settings exported (AWS_*, LTFS_S3_BUCKET), stopped when the suite
# exits. A suite whose server does not start fails as a whole.
s3_suite_start() {
	: "${LTFS_S3_TOOL:?LTFS_S3_TOOL must point at build/s3-tool}"
	S3DIR="$_base/s3"
	S3SERVER="$(pwd)/tests/tools/s3-server"
	# one more try: a server just stopped by another suite may hold a port
	if ! "$S3SERVER" start "$S3DIR" >"$_base/s3.out" 2>"$_base/s3.err" &&
		! { sleep 2 && "$S3SERVER" start "$S3DIR" >"$_base/s3.out" 2>"$_base/s3.err"; }; then
		echo "FAIL s3 server did not start:"
		sed 's/^/    | /' "$_base/s3.err" | tail -20
		echo "$SUITE: 0 passed, 1 failed"
		exit 1
	fi
	. "$S3DIR/s3.env"
	trap '"$S3SERVER" stop "$S3DIR" >/dev/null 2>&1; _cleanup' EXIT
}

# url CASE: the case's prefix in the suite's bucket; s3 ARGS: build/s3-tool
# on that bucket.
url() { echo "s3://$LTFS_S3_BUCKET/$SUITE-$1"; }
s3() { "$LTFS_S3_TOOL" "s3://$LTFS_S3_BUCKET" "$@"; }

# relay_start PORT MODE: tests/tools/s3_relay.c in front of the suite's
# server on PORT (its output in $T/relay.out), once it listens (5 s);
# relay_stop ends it.
relay_start() {
	"$LTFS_BUILD/s3-relay" "$1" "${AWS_ENDPOINT_URL_S3##*:}" "$2" >"$T/relay.out" 2>&1 &
	echo $! >"$T/relay.pid"
	_i=0
	until grep -q listening "$T/relay.out" || [ $_i -gt 50 ]; do _i=$((_i + 1)); sleep 0.1; done
}
relay_stop() { kill "$(cat "$T/relay.pid")" 2>/dev/null || true; }

# run_case NAME: run case_NAME (only the cases listed in $CASES, if set).
run_case() {
	case " ${CASES:-$1} " in *" $1 "*) ;; *) return 0 ;; esac
	T="$_base/$1"
	mkdir -p "$T"
	# Not inside `if`: the shell ignores set -e in a tested command.
	(set -e; "case_$1")
	_rc=$?
	# what a failed case left running must not disturb the next one
	for _m in $(awk -v b="$T/" 'index($2, b) == 1 { print $2 }' /proc/mounts); do
		umount -l "$_m" 2>/dev/null
	done
	for _p in $(cat "$T"/ltfs.pid* 2>/dev/null); do
		kill -9 "$_p" 2>/dev/null
	done
	if [ $_rc -eq 0 ]; then
		echo "ok   $1"
		_passed=$((_passed + 1))
	else
		echo "FAIL $1"
		# LTFS_TEST_KEEP=DIR: keep a failed case's logs and data there
		if [ -n "${LTFS_TEST_KEEP:-}" ]; then
			mkdir -p "$LTFS_TEST_KEEP" && cp -a "$T" "$LTFS_TEST_KEEP/$SUITE-$1-$$" 2>/dev/null
			echo "    kept in $LTFS_TEST_KEEP/$SUITE-$1-$$"
		fi
		# what the case's daemons said last, for the report
		for _l in "$T"/n*.log "$T"/ltfs.log; do
			[ -s "$_l" ] && tail -n 6 "$_l" | cut -c1-240 | sed "s#^#    $(basename "$_l") | #"
		done
		_failed=$((_failed + 1))
	fi
}

finish() {
	echo "$SUITE: $_passed passed, $_failed failed"
	[ "$_failed" -eq 0 ]
}

# pos_waiter FILE TIMEOUT_MS [poll|select|epoll]: pos-wait on a -pos FILE
# in the background (pid in PW, output in T/pw.out), back once it read the
# file and waits.
pos_waiter() {
	: >"$T/pw.out"
	"${LTFS_BUILD:?LTFS_BUILD must point at the build dir}/pos-wait" "$1" "$2" ${3:-poll} \
		>"$T/pw.out" 2>&1 &
	PW=$!
	_i=0
	while ! grep -q '^at ' "$T/pw.out" && [ $_i -lt 100 ]; do
		sleep 0.05
		_i=$((_i + 1))
	done
	sleep 0.1 # from its read into poll()
}
