#!/bin/sh
# The app supervisor: "ltfs mount DIR -- CMD" and exec: in the config.
# Commands start once the node serves, migrations run before the app and
# stop everything when they fail, signals reach the app, and ltfs exits
# with the app's code after unmounting (and releasing its lease).
. tests/lib.sh

s3_suite_start

# xstart N ARGS...: start node N (ARGS may end in "-- CMD ..."), not waiting
# for its mount (a failing command may end it at once).
xstart() {
	_n=$1
	shift
	mkdir -p "$T/m$_n"
	"$LTFS" mount --data "$T/d$_n" --http "127.0.0.1:$((PORT_BASE + _n))" "$@" \
		>>"$T/n$_n.log" 2>&1 &
	echo $! >"$T/ltfs.pid.$_n"
}

# xwait N: wait (at most 20 s) for node N's ltfs to exit; its code in $code.
xwait() {
	_pid=$(cat "$T/ltfs.pid.$1")
	_i=0
	while kill -0 "$_pid" 2>/dev/null; do
		_i=$((_i + 1))
		if [ $_i -gt 400 ]; then
			echo "    node $1 (pid $_pid) did not exit; its log ends:" >&2
			tail -5 "$T/n$1.log" | sed 's/^/    | /' >&2
			return 1
		fi
		sleep 0.05
	done
	set +e
	wait "$_pid"
	code=$?
	set -e
	_wait_exit "$T/ltfs.pid.$1" "$T/n$1.log"
}

# until_file FILE [TRIES]: wait (0.05 s steps, default 20 s) for FILE.
until_file() {
	_i=0
	while [ ! -s "$1" ]; do
		_i=$((_i + 1))
		if [ $_i -gt "${2:-400}" ]; then
			echo "    '$1' did not appear" >&2
			return 1
		fi
		sleep 0.05
	done
}

not_mounted() { ! grep -q " $1 fuse" /proc/mounts; }

# The app's exit code is ltfs's, the mount is gone, and the app held no
# descriptor of the daemon (/dev/fuse, sockets, data-dir files).
case_app_exit_code() {
	xstart 1 "$T/m1" -- sh -c "sqlite3 '$T/m1/app.db' 'CREATE TABLE t(x); INSERT INTO t VALUES (1)' &&
		ls /proc/\$\$/fd | tr '\n' ' ' >'$T/fds'; exit 7"
	xwait 1
	check "exit code 7 (got $code)" [ "$code" = 7 ]
	check "unmounted" not_mounted "$T/m1"
	check "only stdio in the app: $(cat "$T/fds")" [ "$(cat "$T/fds")" = "0 1 2 " ]
	check "commit recorded" [ -n "$(ls "$T/d1/dbs/app.db/ltx/")" ]
	contains "$T/n1.log" "the app 'sh' exited with 7"
}
run_case app_exit_code

# A command that cannot be run: exit 127, its name in the log, no mount.
case_not_found() {
	xstart 1 "$T/m1" -- ltfs-no-such-command --flag
	xwait 1
	check "exit code 127 (got $code)" [ "$code" = 127 ]
	contains "$T/n1.log" "cannot run 'ltfs-no-such-command': No such file or directory"
	check "unmounted" not_mounted "$T/m1"
}
run_case not_found

# exec: in the config: migrations in order, then the app; a failing
# migration stops the node with its code and the app never starts.
case_migrations() {
	cat >"$T/good.yml" <<EOF
exec:
  - cmd: "sqlite3 '$T/m1/app.db' 'CREATE TABLE t(x)'"
    if-primary: true
  - "sqlite3 '$T/m1/app.db' \"INSERT INTO t VALUES ('from a migration')\""
  - sh -c "sqlite3 '$T/m1/app.db' 'SELECT x FROM t' >'$T/seen'"
EOF
	xstart 1 -c "$T/good.yml" "$T/m1"
	xwait 1
	check "exit code 0 (got $code)" [ "$code" = 0 ]
	check "the app saw the migrations" [ "$(cat "$T/seen")" = "from a migration" ]
	cat >"$T/bad.yml" <<EOF
exec:
  - sh -c 'exit 4'
  - touch '$T/app-ran'
EOF
	xstart 1 -c "$T/bad.yml" "$T/m1"
	xwait 1
	check "exit code 4 (got $code)" [ "$code" = 4 ]
	check "the app did not run" [ ! -e "$T/app-ran" ]
	contains "$T/n1.log" "exited with 4: the app is not started"
	check "unmounted" not_mounted "$T/m1"
}
run_case migrations

# SIGHUP reaches the app and the mount stays; SIGTERM reaches it, and
# ltfs exits with the code the app chose.
case_signals() {
	cat >"$T/app.sh" <<EOF
trap 'echo hup >>"$T/got"' HUP
trap 'echo term >>"$T/got"; exit 3' TERM
echo up >"$T/up"
i=0
while [ \$i -lt 600 ]; do sleep 0.05; i=\$((i + 1)); done
EOF
	xstart 1 "$T/m1" -- sh "$T/app.sh"
	until_file "$T/up"
	kill -HUP "$(cat "$T/ltfs.pid.1")"
	until_file "$T/got"
	check "still mounted after SIGHUP" grep -q " $T/m1 fuse" /proc/mounts
	kill -TERM "$(cat "$T/ltfs.pid.1")"
	xwait 1
	check "exit code 3 (got $code)" [ "$code" = 3 ]
	check "the app saw HUP then TERM" [ "$(cat "$T/got" | tr '\n' ' ')" = "hup term " ]
	check "unmounted" not_mounted "$T/m1"
}
run_case signals

# An unmount from outside asks the app to stop (SIGTERM) and waits for it.
case_external_umount() {
	cat >"$T/app.sh" <<EOF
trap 'exit 5' TERM
echo up >"$T/up"
i=0
while [ \$i -lt 600 ]; do sleep 0.05; i=\$((i + 1)); done
EOF
	xstart 1 "$T/m1" -- sh "$T/app.sh"
	until_file "$T/up"
	_wait_mounted "$T/m1" "$T/ltfs.pid.1" "$T/n1.log"
	umount "$T/m1"
	xwait 1
	check "exit code 5 (got $code)" [ "$code" = 5 ]
	contains "$T/n1.log" "the mount stopped: sending SIGTERM"
}
run_case external_umount

# A replica starts its commands only once it caught up with its primary:
# the app reads the primary's rows at its first query. if-candidate
# commands are skipped on a replica.
case_replica_waits() {
	node_start 1
	sql "$T/m1/app.db" "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)"
	node_stop 1
	cat >"$T/r.yml" <<EOF
exec:
  - cmd: touch '$T/migrated'
    if-candidate: true
  - sh -c "sqlite3 '$T/m2/app.db' 'SELECT count(*) FROM t' >'$T/count'; exec sleep 30"
EOF
	xstart 2 -c "$T/r.yml" --replica-of "$(node_url 1)" "$T/m2"
	_wait_mounted "$T/m2" "$T/ltfs.pid.2" "$T/n2.log"
	sleep 1.5
	check "no app before the primary is there" [ ! -e "$T/count" ]
	node_start 1
	until_file "$T/count"
	check "the app's first read has the rows" [ "$(cat "$T/count")" = 3 ]
	check "if-candidate skipped" [ ! -e "$T/migrated" ]
	contains "$T/n2.log" "skipping 'touch"
	kill -TERM "$(cat "$T/ltfs.pid.2")"
	xwait 2
	check "exit code of sleep on SIGTERM (got $code)" [ "$code" = 143 ]
	node_stop 1
}
run_case replica_waits

# Bad exec settings are refused before anything is mounted, naming the
# line; "--" needs a command.
case_config_errors() {
	printf 'exec:\n  - "sqlite3 x.db '"'"'SELECT 1"\n' >"$T/q.yml"
	expect_exit 2 "$LTFS" mount -c "$T/q.yml" "$T/m1"
	contains "$T/err" "line 2: exec command"
	contains "$T/err" "quote is not closed"
	printf 'exec:\n  - cmd: true\n    if-leader: true\n' >"$T/k.yml"
	expect_exit 2 "$LTFS" mount -c "$T/k.yml" "$T/m1"
	contains "$T/err" "line 3: unknown key 'if-leader'"
	printf 'exec:\n  - if-primary: true\n' >"$T/c.yml"
	expect_exit 2 "$LTFS" mount -c "$T/c.yml" "$T/m1"
	contains "$T/err" "has no 'cmd'"
	expect_exit 2 "$LTFS" mount "$T/m1" --
	contains "$T/err" "'--' must be followed by the command"
	check "nothing mounted" not_mounted "$T/m1"
}
run_case config_errors

# ltfs run --on-primary from a replica: the primary runs the command in its
# mount dir, the output and exit code come back, and what it wrote
# replicates. Timeouts, missing commands, a node without --allow-run and a
# wrong token each end with a clear message.
case_run_on_primary() {
	export LTFS_TOKEN=exec-test-token
	node_start 1 --allow-run
	node_start 3
	node_replica 2 1
	expect_exit 3 "$LTFS" run --url "$(node_url 2)" --on-primary -- sh -c \
		"pwd; sqlite3 app.db 'CREATE TABLE t(x); INSERT INTO t VALUES (42)'; echo to-stderr >&2; exit 3"
	check "ran in the primary's mount" [ "$(head -1 "$T/out")" = "$T/m1" ]
	contains "$T/out" "to-stderr"
	wait_sync app.db 1 2
	check "replicated" [ "$(sql "$T/m2/app.db" 'SELECT x FROM t')" = 42 ]
	expect_exit 124 "$LTFS" run --url "$(node_url 2)" --timeout 1s -- sh -c 'echo started; sleep 20; echo never'
	contains "$T/out" "started"
	lacks "$T/out" never
	contains "$T/n1.log" "killed at its deadline"
	expect_exit 127 "$LTFS" run --url "$(node_url 1)" -- ltfs-no-such-command
	contains "$T/out" "cannot run 'ltfs-no-such-command'"
	expect_exit 1 "$LTFS" run --url "$(node_url 3)" -- true
	contains "$T/err" "start it with --allow-run"
	LTFS_TOKEN=wrong expect_exit 1 "$LTFS" run --url "$(node_url 2)" -- true
	contains "$T/err" "answered 401"
	expect_exit 2 "$LTFS" run --url "$(node_url 2)" true
	node_stop 2
	node_stop 3
	node_stop 1
	unset LTFS_TOKEN
	expect_exit 2 "$LTFS" mount --data "$T/d4" --http "127.0.0.1:$((PORT_BASE + 4))" --allow-run "$T/m1"
	contains "$T/err" "allow-run needs a token"
}
run_case run_on_primary

# With a lease: the app's exit releases the lease, and a waiting candidate
# takes over at once instead of after the TTL.
case_lease_release() {
	lease="--s3 $(url lease) --lease s3 --lease-ttl 10s --upload-interval 0"
	# shellcheck disable=SC2086
	xstart 1 $lease "$T/m1" -- sh -c "sqlite3 '$T/m1/app.db' 'CREATE TABLE t(x)';
		echo up >'$T/up'; while [ ! -e '$T/go' ]; do sleep 0.05; done"
	until_file "$T/up"
	# shellcheck disable=SC2086
	node_start 2 $lease
	sleep 1
	t0=$(date +%s%3N)
	touch "$T/go"
	xwait 1
	check "exit code 0 (got $code)" [ "$code" = 0 ]
	_i=0
	until curl -sf "$(node_url 2)/v1/info" | grep -q '"role": "primary"'; do
		_i=$((_i + 1))
		[ $_i -lt 100 ] || { echo "    node 2 never became the primary" >&2; return 1; }
		sleep 0.05
	done
	ms=$(($(date +%s%3N) - t0))
	echo "    takeover ${ms} ms after the app exited (TTL 10 s)"
	check "takeover within 3 s (TTL 10 s), got $ms ms" [ "$ms" -lt 3000 ]
	sql "$T/m2/app.db" "INSERT INTO t VALUES (1)"
	node_stop 2
}
run_case lease_release

finish
